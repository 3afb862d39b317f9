// BLIP-2: frozen image encoder -> Q-Former (learned queries) -> projection ->
// frozen LLM, plus the retrieval heads (ITM, ITC). Module names are
// HuggingFace's (Blip2ForConditionalGeneration / Blip2ForImageTextRetrieval),
// so named_parameters() are the checkpoint's keys.
#pragma once

#include <torch/torch.h>

#include "blip2/nn/layers.h"

#include <memory>
#include <optional>
#include <string>

#include "blip2/config/config.h"
#include "blip2/lm/language_model.h"
#include "blip2/model/generation.h"
#include "blip2/qformer/qformer.h"
#include "blip2/vision/vision_encoder.h"

namespace blip2 {

namespace io {
class TensorStore;
}

// Which heads a model carries besides the image encoder and Q-Former.
struct Blip2Parts {
  bool language = true;    // language_projection + language_model
  bool retrieval = false;  // embeddings, vision/text projections, itm_head
  bool itg = false;        // stage-1 training heads: text_decoder_head (ITG) and temp (ITC)
  bool vision_tower = true;  // false: only post_layernorm (ln_vision), fed with ViT features
  // The Q-Former also reads text (the question, in VQA fine-tuning): its text
  // embeddings and text feed-forward exist in a language model too.
  bool qformer_text = false;
  // From config.architectures (Blip2ForImageTextRetrieval -> retrieval, ...).
  static Blip2Parts from_config(const Blip2Config& c);
};

struct Blip2ForwardOutput {
  VisionOutput vision;
  QFormerOutput qformer;
  torch::Tensor language_projection;  // (B, Q, Dlm)
  torch::Tensor inputs_embeds;        // (B, S, Dlm) what the LM (encoder) sees
  torch::Tensor attention_mask;       // (B, S)
  LMOutput lm;
};

struct ItmOutput {
  torch::Tensor logits;                     // (B, 2): (no match, match), averaged over queries
  torch::Tensor qformer_last_hidden_state;  // (B, Q+T, D)
  VisionOutput vision;
};

struct ItcOutput {
  torch::Tensor image_embeds;            // (Bi, Q, E) L2-normalised
  torch::Tensor text_embeds;             // (Bt, E) L2-normalised [CLS] features
  torch::Tensor logits_per_image;        // (Bi, Bt) max over queries, no temperature
  torch::Tensor text_last_hidden_state;  // (Bt, T, D)
};

// The Q-Former's text-generation head for ITG (BERT's LM prediction head,
// LAVIS Qformer.cls.predictions): dense + act + LayerNorm, then the word
// embedding matrix (tied) plus a bias.
class TextDecoderHeadImpl : public torch::nn::Module {
 public:
  explicit TextDecoderHeadImpl(const QFormerConfig& c);
  // h (B, T, D), word_embeddings (V, D) -> logits (B, T, V)
  torch::Tensor forward(const torch::Tensor& h, const torch::Tensor& word_embeddings);
  nn::Linear dense{nullptr};
  nn::LayerNorm layer_norm{nullptr};
  torch::Tensor bias;

 private:
  std::string act_;
};
TORCH_MODULE(TextDecoderHead);

class Blip2ModelImpl : public torch::nn::Module {
 public:
  Blip2ModelImpl(const Blip2Config& config, Blip2Parts parts);
  const Blip2Config& config() const { return config_; }
  const Blip2Parts& parts() const { return parts_; }

  // pixel_values (B, C, H, W) -> image features.
  VisionOutput encode_image(const torch::Tensor& pixel_values, bool output_hidden_states = false);
  // The image tower's output before ln_vision (B, N+1, Dv): encode_image is
  // post_layernorm of it (what a feature cache stores for a frozen tower).
  torch::Tensor vit_features(const torch::Tensor& pixel_values);
  // Learned queries cross-attending to image features (B, N, Dv) -> (B, Q, D).
  // With qformer_ids (B, T) (+ keep-mask), the text (e.g. the question) is
  // read alongside the queries, all attending to all; the output is still the
  // Q query rows.
  QFormerOutput query_image(const torch::Tensor& image_embeds, bool output_hidden_states = false,
                            const torch::Tensor& qformer_ids = {}, const torch::Tensor& qformer_mask = {});
  // Joins the projected queries (B, Q, Dlm) with the prompt: concatenated in
  // front (legacy) or scattered into image_token_index slots. input_ids may be
  // undefined (no prompt). Returns {inputs_embeds, attention_mask}.
  std::pair<torch::Tensor, torch::Tensor> lm_inputs(const torch::Tensor& projected, const torch::Tensor& input_ids,
                                                    const torch::Tensor& attention_mask);

  Blip2ForwardOutput forward(const torch::Tensor& pixel_values, const torch::Tensor& input_ids,
                             const torch::Tensor& attention_mask, const torch::Tensor& decoder_input_ids = {},
                             bool output_hidden_states = false, const torch::Tensor& qformer_ids = {},
                             const torch::Tensor& qformer_mask = {});
  // forward() from image_embeds (B, N, Dv), encode_image's last_hidden_state
  // (after ln_vision), instead of pixels; out.vision holds only them.
  Blip2ForwardOutput forward_embeds(const torch::Tensor& image_embeds, const torch::Tensor& input_ids,
                                    const torch::Tensor& attention_mask, const torch::Tensor& decoder_input_ids = {},
                                    bool output_hidden_states = false, const torch::Tensor& qformer_ids = {},
                                    const torch::Tensor& qformer_mask = {});
  // Image-conditioned generation. input_ids undefined = no prompt (decoder-only
  // models then start from BOS, as HF). With prepend_bos, decoder-only outputs
  // start with BOS as HF's Blip2ForConditionalGeneration.generate returns them.
  GenerationOutput generate(const torch::Tensor& pixel_values, const torch::Tensor& input_ids,
                            const torch::Tensor& attention_mask, const GenerationConfig& config,
                            bool prepend_bos = true, const torch::Tensor& qformer_ids = {},
                            const torch::Tensor& qformer_mask = {});

  // From pixels: ITM of (image, text) pairs and ITC of every image with every text.
  ItmOutput itm(const torch::Tensor& pixel_values, const torch::Tensor& input_ids, const torch::Tensor& attention_mask);
  ItcOutput itc(const torch::Tensor& pixel_values, const torch::Tensor& input_ids, const torch::Tensor& attention_mask);

  // ---- the retrieval heads at feature level: the one place ITC and ITM are
  // computed (the heads above, the stage-1 losses, evaluation, search).
  // image_embeds are encode_image(...).last_hidden_state (B, N, Dv), i.e.
  // after ln_vision; keep them to score many texts against one image.
  // ITC features: (B, Q, E) normalised query features of images; (B, T, E)
  // normalised projections of every text position (index 0 is [CLS]) with
  // the Q-Former text output (B, T, D).
  torch::Tensor image_features(const torch::Tensor& image_embeds);
  std::pair<torch::Tensor, torch::Tensor> text_features(const torch::Tensor& input_ids,
                                                        const torch::Tensor& attention_mask);
  // ITC similarity of image features (Bi, Q, E) and text [CLS] features
  // (Bt, E): (Bi, Bt), the max over queries, without the temperature.
  static torch::Tensor itc_similarity(const torch::Tensor& image_features, const torch::Tensor& text_features);
  // ITM logits (B, 2) (no match, match), averaged over the queries, of image
  // i with text i: queries and text read together, cross-attending to
  // image_embeds (B, N, Dv). With last_hidden_state, the Q-Former output
  // (B, Q+T, D) is written there.
  torch::Tensor itm_logits(const torch::Tensor& image_embeds, const torch::Tensor& input_ids,
                           const torch::Tensor& attention_mask, torch::Tensor* last_hidden_state = nullptr);

  VisionEncoder vision_model{nullptr};
  torch::Tensor query_tokens;  // (1, Q, D)
  QFormer qformer{nullptr};
  nn::Linear language_projection{nullptr};
  std::shared_ptr<LanguageModel> language_model;
  QFormerTextEmbeddings embeddings{nullptr};
  nn::Linear vision_projection{nullptr}, text_projection{nullptr}, itm_head{nullptr};
  TextDecoderHead text_decoder_head{nullptr};
  torch::Tensor temp;  // () ITC temperature (LAVIS init 0.07)

 private:
  void require_language(const char* what) const;
  bool interpolates(const torch::Tensor& pixel_values) const;  // not the configured image size
  void require_retrieval(const char* what) const;
  Blip2Config config_;
  Blip2Parts parts_;
};
TORCH_MODULE(Blip2Model);

enum class NameStyle { kAuto, kHuggingFace, kLavis };

struct LoadOptions {
  // dtype of the weights. torch::kChar: int8 weight-only quantisation on load
  // (model/quantize.h: the vision encoder's and LM's matrices), computed in
  // float32. I8 tensors of a quantised checkpoint load as int8 whatever this is.
  torch::ScalarType dtype = torch::kFloat;
  // When set and not `dtype`: the matrices stay in `dtype` and everything
  // else computes in this one (nn::compute_in): 16-bit weights on a CPU.
  std::optional<torch::ScalarType> compute_dtype;
  torch::Device device = torch::kCPU;
  bool strict = true;  // unexpected checkpoint tensors are an error
  NameStyle names = NameStyle::kAuto;  // kAuto: LAVIS names are recognised and mapped
  // Partial loads (training assembly): only parameters whose model name
  // starts with one of `only` are loaded (empty = all); `prefix` is put in
  // front of every checkpoint name (an OPT checkpoint's "model.decoder..."
  // becomes "language_model.model.decoder..."); with allow_missing, absent
  // parameters keep their current values.
  std::vector<std::string> only;
  std::string prefix;
  bool allow_missing = false;
};

struct LoadReport {
  double seconds = 0;
  size_t tensors = 0;
  size_t zero_copy = 0;  // tensors that share the file mapping
  uint64_t file_bytes = 0;
  int64_t rss_before_kb = 0, rss_after_kb = 0;
  std::string checkpoint;
};

// Copies (or, for F32 on CPU, maps) every parameter of `model` from `store`,
// checking names and shapes; throws CheckpointError naming the tensor/file.
void load_weights(Blip2ModelImpl& model, const io::TensorStore& store, const LoadOptions& options,
                  LoadReport* report = nullptr);

// config.json + model.safetensors (or shards) from a HF checkpoint directory.
Blip2Model load_blip2(const std::string& dir, const LoadOptions& options = {}, LoadReport* report = nullptr);


}  // namespace blip2
