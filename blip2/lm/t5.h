// T5 / Flan-T5 (encoder-decoder): RMSNorm, relative position buckets (bias
// in block 0, shared by later blocks), unscaled attention, (gated-)GELU FFN.
// Module names follow HF T5ForConditionalGeneration.
#pragma once

#include "blip2/lm/language_model.h"
#include "blip2/nn/layers.h"
#include "blip2/nn/kv_cache.h"

#include <array>

namespace blip2 {

class T5LayerNormImpl : public torch::nn::Module {
 public:
  T5LayerNormImpl(int64_t d, double eps);
  torch::Tensor forward(const torch::Tensor& x);
  torch::Tensor weight;

 private:
  double eps_;
};
TORCH_MODULE(T5LayerNorm);

class T5AttentionImpl : public torch::nn::Module {
 public:
  T5AttentionImpl(const T5Config& c, bool has_relative_attention_bias);
  // x (N, Lq, D), kv (N, Lk, D) or undefined for self-attention with cache;
  // position_bias (1 or N, H, Lq, Lk) including the mask.
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& kv, const torch::Tensor& position_bias,
                        KVCache* cache, bool static_kv);
  // Relative position bias (1, H, Lq, Lk) for queries at positions
  // [q_offset, q_offset + Lq) and keys [0, Lk).
  torch::Tensor compute_bias(int64_t q_len, int64_t k_len, int64_t q_offset, bool bidirectional,
                             const torch::Device& device);
  nn::Linear q{nullptr}, k{nullptr}, v{nullptr}, o{nullptr};
  nn::Embedding relative_attention_bias{nullptr};

 private:
  T5Config c_;
};
TORCH_MODULE(T5Attention);

class T5DenseImpl : public torch::nn::Module {
 public:
  explicit T5DenseImpl(const T5Config& c);
  torch::Tensor forward(const torch::Tensor& x);
  nn::Linear wi{nullptr}, wi_0{nullptr}, wi_1{nullptr}, wo{nullptr};

 private:
  T5Config c_;
};
TORCH_MODULE(T5Dense);

class T5StackImpl : public torch::nn::Module {
 public:
  T5StackImpl(const T5Config& c, bool is_decoder);
  // Full forward. x (N, L, D) embeddings; mask (N, L) keep-mask; for the
  // decoder, enc (N, S, D) and enc_mask (N, S).
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& mask, const torch::Tensor& enc,
                        const torch::Tensor& enc_mask, std::vector<torch::Tensor>* hidden_states);
  // One decoder step at position `pos` with caches (self: grows; cross: fixed).
  torch::Tensor step(const torch::Tensor& x, int64_t pos, const torch::Tensor& enc_bias,
                     std::vector<KVCache>& self_cache, std::vector<KVCache>& cross_cache, const torch::Tensor& enc);

  torch::nn::ModuleList block{nullptr};
  T5LayerNorm final_layer_norm{nullptr};

 private:
  struct Sub {  // the sub-layers of one block, for direct access
    T5Attention self_attn{nullptr}, cross_attn{nullptr};
    T5Dense ffn{nullptr};
    T5LayerNorm norms[3] = {T5LayerNorm{nullptr}, T5LayerNorm{nullptr}, T5LayerNorm{nullptr}};  // self, cross, ffn
  };
  std::vector<Sub> subs_;
  T5Config c_;
  bool is_decoder_;
};
TORCH_MODULE(T5Stack);

class T5LanguageModel : public LanguageModel {
 public:
  explicit T5LanguageModel(const T5Config& c);
  LmFamily family() const override { return LmFamily::kT5; }
  bool is_encoder_decoder() const override { return true; }
  int64_t hidden_size() const override { return c_.d_model; }
  int64_t vocab_size() const override { return c_.vocab_size; }
  int64_t bos_token_id() const override { return c_.decoder_start_token_id; }
  int64_t eos_token_id() const override { return c_.eos_token_id; }
  int64_t pad_token_id() const override { return c_.pad_token_id; }
  std::optional<int64_t> context_length() const override { return std::nullopt; }
  static constexpr const char* kVqaTemplate = "Question: {} Short answer:";
  std::string vqa_template() const override { return kVqaTemplate; }
  bool is_tied_copy(const std::string& name) const override;
  bool keeps_float(const std::string& name) const override;
  void init_reference_weights() override;
  torch::Tensor decoder_input_ids(const torch::Tensor& labels) const override {
    return shift_right(labels, c_.decoder_start_token_id, c_.pad_token_id);
  }
  torch::Tensor embed_tokens(const torch::Tensor& ids) override;
  LMOutput forward(const torch::Tensor& inputs_embeds, const torch::Tensor& attention_mask,
                   const torch::Tensor& decoder_input_ids, bool output_hidden_states) override;
  std::unique_ptr<DecodeState> start(const torch::Tensor& inputs_embeds, const torch::Tensor& attention_mask,
                                     torch::Tensor* next_logits) override;
  torch::Tensor step(DecodeState& state, const torch::Tensor& tokens) override;
  void select(DecodeState& state, const torch::Tensor& index) override;
  std::vector<int64_t> decoder_prefix() const override { return {c_.decoder_start_token_id}; }

  torch::Tensor lm_head_forward(const torch::Tensor& h);

  nn::Embedding shared{nullptr};
  T5Stack encoder{nullptr}, decoder{nullptr};
  nn::Linear lm_head{nullptr};

 private:
  T5Config c_;
};

}  // namespace blip2
