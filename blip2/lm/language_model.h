// The frozen LLM behind one narrow interface: a teacher-forced forward (for
// parity and training) and incremental decoding with a KV cache (for
// generation). OPT (decoder-only) and T5 (encoder-decoder) implement it.
#pragma once

#include <torch/torch.h>

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "blip2/config/config.h"

namespace blip2 {

struct LMOutput {
  torch::Tensor logits;  // (B, T, V): decoder-only over the inputs, enc-dec over decoder_input_ids
  // Decoder-only: input to the first layer, then each layer's output; the
  // last entry is after the final norm (HF's convention).
  std::vector<torch::Tensor> hidden_states;
  // Encoder-decoder: the same for the encoder and the decoder stacks.
  std::vector<torch::Tensor> encoder_hidden_states;
  std::vector<torch::Tensor> decoder_hidden_states;
  torch::Tensor encoder_last_hidden_state;
};

// Per-sequence decoding state (KV caches, masks); one row per sequence.
class DecodeState {
 public:
  virtual ~DecodeState() = default;
};

class LanguageModel : public torch::nn::Module {
 public:
  // ---- the family's facts: code around the LM asks these, never the family.
  virtual LmFamily family() const = 0;
  virtual bool is_encoder_decoder() const = 0;
  virtual int64_t hidden_size() const = 0;  // width of inputs_embeds
  virtual int64_t vocab_size() const = 0;
  // The token BLIP-2 puts in front of generated text: BOS for decoder-only
  // models (also an unprompted decoder-only LM's first input), the decoder
  // start token for encoder-decoder models.
  virtual int64_t bos_token_id() const = 0;
  virtual int64_t eos_token_id() const = 0;
  virtual int64_t pad_token_id() const = 0;
  // Most positions the LM reads (visual prompt + text): learned positions
  // (OPT) bound it; nullopt = unbounded (T5's relative positions).
  virtual std::optional<int64_t> context_length() const = 0;
  // BLIP-2's zero-shot VQA prompt for this family (LAVIS); "{}" = the question.
  virtual std::string vqa_template() const = 0;
  // Whether a checkpoint tensor (name inside the LM, e.g. "lm_head.weight")
  // is a copy of a weight this model ties, and so is not loaded.
  virtual bool is_tied_copy(const std::string& name) const = 0;
  // Whether a matrix weight (name inside the LM, e.g. "encoder.block.0.layer.1.
  // DenseReluDense.wo.weight") stays float32 under --dtype int8: HF's
  // _keep_in_fp32_modules, which its 8-bit loading also leaves unconverted
  // (T5's FFN output `wo`, whose inputs carry outliers; none for OPT).
  virtual bool keeps_float(const std::string& name) const = 0;
  // From-scratch initialisation as the reference implementation's
  // _init_weights (HF): OPT normal(0, init_std 0.02) for every matrix and
  // embedding; T5 per module (embeddings and an untied lm_head std 1, q
  // (d_model d_kv)^-1/2, k, v, wi and the relative biases d_model^-1/2, o
  // (heads d_kv)^-1/2, wo d_ff^-1/2); norms at 1, biases 0.
  virtual void init_reference_weights() = 0;
  // Teacher forcing: labels (B, T) (-100 = ignored) -> decoder_input_ids
  // (B, T) for encoder-decoder models; undefined for decoder-only ones.
  virtual torch::Tensor decoder_input_ids(const torch::Tensor& labels) const = 0;

  // (B, T) token ids -> (B, T, hidden_size) input embeddings.
  virtual torch::Tensor embed_tokens(const torch::Tensor& ids) = 0;

  // Teacher-forced forward. inputs_embeds (B, S, D) with keep-mask (B, S)
  // (decoder-only: the whole sequence; enc-dec: the encoder input).
  // decoder_input_ids (B, Td) for enc-dec, ignored otherwise.
  virtual LMOutput forward(const torch::Tensor& inputs_embeds, const torch::Tensor& attention_mask,
                           const torch::Tensor& decoder_input_ids, bool output_hidden_states) = 0;

  // Starts decoding after a prompt. Decoder-only: runs the prompt; enc-dec:
  // runs the encoder and the decoder start token. Writes the logits for the
  // first generated token (N, V) to *next_logits.
  virtual std::unique_ptr<DecodeState> start(const torch::Tensor& inputs_embeds,
                                             const torch::Tensor& attention_mask,
                                             torch::Tensor* next_logits) = 0;
  // Feeds one token per row (N), returns logits (N, V) for the next one.
  virtual torch::Tensor step(DecodeState& state, const torch::Tensor& tokens) = 0;
  // Keeps rows `index` (N') of the state, in that order (beam reordering).
  virtual void select(DecodeState& state, const torch::Tensor& index) = 0;
  // Token ids that start the returned sequences for enc-dec (decoder start), empty otherwise.
  virtual std::vector<int64_t> decoder_prefix() const = 0;
};

// Builds the language model of text.family.
std::shared_ptr<LanguageModel> make_language_model(const TextConfig& text);

// T5's _shift_right: [start] + labels[:, :-1], -100 -> pad.
torch::Tensor shift_right(const torch::Tensor& labels, int64_t decoder_start_token_id, int64_t pad_token_id);

}  // namespace blip2
