// OPT (decoder-only): pre-LN (or post-LN for 350m), learned positions with
// offset 2 computed from the attention mask, ReLU FFN, tied LM head.
// Module names follow HF OPTForCausalLM ("model.decoder.layers.N...").
#pragma once

#include "blip2/lm/language_model.h"
#include "blip2/nn/kv_cache.h"
#include "blip2/nn/layers.h"

namespace blip2 {


class OptAttentionImpl : public torch::nn::Module {
 public:
  explicit OptAttentionImpl(const OptConfig& c);
  // x (N, S, D); bias additive (N, 1, S, P+S); cache extended in place when given.
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& bias, KVCache* cache);
  nn::Linear q_proj{nullptr}, k_proj{nullptr}, v_proj{nullptr}, out_proj{nullptr};

 private:
  int64_t heads_;
  double scaling_;
};
TORCH_MODULE(OptAttention);

class OptDecoderLayerImpl : public torch::nn::Module {
 public:
  explicit OptDecoderLayerImpl(const OptConfig& c);
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& bias, KVCache* cache);
  OptAttention self_attn{nullptr};
  nn::LayerNorm self_attn_layer_norm{nullptr}, final_layer_norm{nullptr};
  nn::Linear fc1{nullptr}, fc2{nullptr};

 private:
  OptConfig c_;
};
TORCH_MODULE(OptDecoderLayer);

class OptDecoderImpl : public torch::nn::Module {
 public:
  explicit OptDecoderImpl(const OptConfig& c);
  // inputs_embeds (N, S, Dw) for the new positions; mask (N, P+S) keep-mask
  // over cached and new positions. Returns (N, S, Dw) after the final norm
  // and project_out.
  torch::Tensor forward(const torch::Tensor& inputs_embeds, const torch::Tensor& mask,
                        std::vector<KVCache>* cache, std::vector<torch::Tensor>* hidden_states);

  nn::Embedding embed_tokens{nullptr}, embed_positions{nullptr};
  nn::Linear project_in{nullptr}, project_out{nullptr};
  nn::LayerNorm final_layer_norm{nullptr};
  torch::nn::ModuleList layers{nullptr};

 private:
  OptConfig c_;
};
TORCH_MODULE(OptDecoder);

class OptLanguageModel : public LanguageModel {
 public:
  explicit OptLanguageModel(const OptConfig& c);
  LmFamily family() const override { return LmFamily::kOpt; }
  bool is_encoder_decoder() const override { return false; }
  int64_t hidden_size() const override { return c_.word_embed_proj_dim; }
  int64_t vocab_size() const override { return c_.vocab_size; }
  int64_t bos_token_id() const override { return c_.bos_token_id; }
  int64_t eos_token_id() const override { return c_.eos_token_id; }
  int64_t pad_token_id() const override { return c_.pad_token_id; }
  std::optional<int64_t> context_length() const override { return c_.max_position_embeddings; }
  static constexpr const char* kVqaTemplate = "Question: {} Answer:";
  std::string vqa_template() const override { return kVqaTemplate; }
  bool is_tied_copy(const std::string& name) const override;
  bool keeps_float(const std::string& /*name*/) const override { return false; }
  void init_reference_weights() override;
  torch::Tensor decoder_input_ids(const torch::Tensor&) const override { return {}; }
  torch::Tensor embed_tokens(const torch::Tensor& ids) override;
  LMOutput forward(const torch::Tensor& inputs_embeds, const torch::Tensor& attention_mask,
                   const torch::Tensor& decoder_input_ids, bool output_hidden_states) override;
  std::unique_ptr<DecodeState> start(const torch::Tensor& inputs_embeds, const torch::Tensor& attention_mask,
                                     torch::Tensor* next_logits) override;
  torch::Tensor step(DecodeState& state, const torch::Tensor& tokens) override;
  void select(DecodeState& state, const torch::Tensor& index) override;
  std::vector<int64_t> decoder_prefix() const override { return {}; }

  torch::Tensor lm_head_forward(const torch::Tensor& h);

  OptDecoder decoder{nullptr};
  nn::Linear lm_head{nullptr};  // only when embeddings are not tied

 private:
  OptConfig c_;
};

}  // namespace blip2
