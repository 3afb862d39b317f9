// The Q-Former: a BERT whose first `num_query_tokens` positions are learned
// queries. Queries and text share self-attention; only queries cross-attend
// to the image (every `cross_attention_frequency` layers) and they have their
// own feed-forward (`intermediate_query` / `output_query`). Module names follow
// HuggingFace's Blip2QFormerModel so `qformer.*` keys map one to one.
#pragma once

#include <torch/torch.h>

#include "blip2/nn/layers.h"

#include <vector>

#include "blip2/config/config.h"

namespace blip2 {

struct QFormerOutput {
  torch::Tensor last_hidden_state;           // (B, L, D)
  std::vector<torch::Tensor> hidden_states;  // layernormed input, then each layer
};

// Self-attention mask kinds of the paper (Figure 2), for a sequence of
// `query_length` queries followed by text.
enum class QFormerMask {
  kBidirectional,       // ITM: all see all (padding aside)
  kUnimodal,            // ITC: queries see queries, text sees text
  kMultimodalCausal,    // ITG: queries see queries; text sees queries and earlier text
};

// (B, L) keep-mask -> additive self-attention bias (B, 1, L, L) of the kind,
// with HF's -10000 fill.
torch::Tensor qformer_self_attention_bias(const torch::Tensor& mask, int64_t query_length,
                                          QFormerMask kind, torch::ScalarType dtype);

class QFormerMultiHeadAttentionImpl : public torch::nn::Module {
 public:
  QFormerMultiHeadAttentionImpl(const QFormerConfig& c, bool is_cross_attention);
  // x (B, Lq, D); kv (B, Lk, Dkv) (= x for self-attention); bias additive.
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& kv, const torch::Tensor& bias);
  nn::Linear query{nullptr}, key{nullptr}, value{nullptr};

 private:
  int64_t heads_;
  double scale_;
  double dropout_;
};
TORCH_MODULE(QFormerMultiHeadAttention);

// dense + dropout + LayerNorm(residual): BERT's SelfOutput / Output.
class QFormerResidualOutputImpl : public torch::nn::Module {
 public:
  QFormerResidualOutputImpl(int64_t in, int64_t out, double eps, double dropout);
  torch::Tensor forward(const torch::Tensor& h, const torch::Tensor& residual);
  nn::Linear dense{nullptr};
  nn::LayerNorm LayerNorm{nullptr};

 private:
  double dropout_;
};
TORCH_MODULE(QFormerResidualOutput);

class QFormerAttentionImpl : public torch::nn::Module {
 public:
  QFormerAttentionImpl(const QFormerConfig& c, bool is_cross_attention);
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& kv, const torch::Tensor& bias);
  QFormerMultiHeadAttention attention{nullptr};
  QFormerResidualOutput output{nullptr};
};
TORCH_MODULE(QFormerAttention);

class QFormerIntermediateImpl : public torch::nn::Module {
 public:
  explicit QFormerIntermediateImpl(const QFormerConfig& c);
  torch::Tensor forward(const torch::Tensor& x);
  nn::Linear dense{nullptr};

 private:
  std::string act_;
};
TORCH_MODULE(QFormerIntermediate);

class QFormerLayerImpl : public torch::nn::Module {
 public:
  QFormerLayerImpl(const QFormerConfig& c, int64_t layer_idx);
  torch::Tensor forward(const torch::Tensor& h, const torch::Tensor& self_bias, int64_t query_length,
                        const torch::Tensor& encoder_hidden_states, const torch::Tensor& encoder_bias);
  bool has_cross_attention() const { return !crossattention.is_empty(); }
  bool has_text_ffn() const { return !intermediate.is_empty(); }

  QFormerAttention attention{nullptr};
  QFormerAttention crossattention{nullptr};
  QFormerIntermediate intermediate{nullptr}, intermediate_query{nullptr};
  QFormerResidualOutput output{nullptr}, output_query{nullptr};

 private:
  int64_t layer_idx_;
};
TORCH_MODULE(QFormerLayer);

class QFormerImpl : public torch::nn::Module {
 public:
  explicit QFormerImpl(const QFormerConfig& c);

  // embeds (B, L, D): queries (first `query_length` rows) then text
  // embeddings, before the input LayerNorm. self_bias: additive (B,1,L,L) or
  // (B,1,1,L) or undefined. encoder_hidden_states (B, N, Dv) or undefined (no
  // cross-attention, e.g. text-only); encoder_mask (B, N) keep-mask or undefined.
  QFormerOutput forward(const torch::Tensor& embeds, int64_t query_length,
                        const torch::Tensor& self_bias,
                        const torch::Tensor& encoder_hidden_states = {},
                        const torch::Tensor& encoder_mask = {}, bool output_hidden_states = false);
  const QFormerConfig& config() const { return config_; }

  nn::LayerNorm layernorm{nullptr};
  torch::nn::ModuleList layer{nullptr};

 private:
  QFormerConfig config_;
};
TORCH_MODULE(QFormer);

// Text embeddings of the Q-Former's text side (Blip2TextEmbeddings):
// word + absolute position embeddings, optionally after the query embeddings.
class QFormerTextEmbeddingsImpl : public torch::nn::Module {
 public:
  explicit QFormerTextEmbeddingsImpl(const QFormerConfig& c);
  // ids (B, T) -> (B, T, D), or (B, Q+T, D) with query_embeds (B, Q, D) in front.
  torch::Tensor forward(const torch::Tensor& input_ids, const torch::Tensor& query_embeds = {});
  nn::Embedding word_embeddings{nullptr}, position_embeddings{nullptr};

 private:
  QFormerConfig config_;
};
TORCH_MODULE(QFormerTextEmbeddings);

}  // namespace blip2
