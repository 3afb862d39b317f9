#include "blip2/qformer/qformer.h"

#include <cmath>

#include "blip2/nn/ops.h"
#include "blip2/util/error.h"

namespace blip2 {

torch::Tensor qformer_self_attention_bias(const torch::Tensor& mask, int64_t query_length,
                                          QFormerMask kind, torch::ScalarType dtype) {
  const auto B = mask.size(0), L = mask.size(1);
  const auto opts = torch::TensorOptions().dtype(torch::kFloat).device(mask.device());
  auto keep = mask.to(torch::kFloat).view({B, 1, 1, L}).expand({B, 1, L, L}).clone();
  if (kind != QFormerMask::kBidirectional) {
    // allowed[i][j] for row i (query or text) and column j.
    auto allowed = torch::ones({L, L}, opts);
    const int64_t Q = query_length;
    if (Q > 0 && L > Q) {
      allowed.slice(0, 0, Q).slice(1, Q, L).zero_();  // queries never see text
      if (kind == QFormerMask::kUnimodal)
        allowed.slice(0, Q, L).slice(1, 0, Q).zero_();  // text does not see queries
    }
    if (kind == QFormerMask::kMultimodalCausal && L > Q)
      allowed.slice(0, Q, L).slice(1, Q, L).copy_(torch::tril(torch::ones({L - Q, L - Q}, opts)));
    keep = keep * allowed.view({1, 1, L, L});
  }
  return ((1.0 - keep) * -10000.0).to(dtype);
}

QFormerMultiHeadAttentionImpl::QFormerMultiHeadAttentionImpl(const QFormerConfig& c, bool cross)
    : heads_(c.num_attention_heads),
      scale_(1.0 / std::sqrt(static_cast<double>(c.head_dim()))),
      dropout_(c.attention_probs_dropout_prob) {
  const int64_t D = c.hidden_size;
  const int64_t Dkv = cross ? c.encoder_hidden_size : D;
  query = register_module("query", nn::Linear(D, D));
  key = register_module("key", nn::Linear(Dkv, D));
  value = register_module("value", nn::Linear(Dkv, D));
}

torch::Tensor QFormerMultiHeadAttentionImpl::forward(const torch::Tensor& x, const torch::Tensor& kv,
                                                     const torch::Tensor& bias) {
  auto q = nn::split_heads(query->forward(x), heads_);
  auto k = nn::split_heads(key->forward(kv), heads_);
  auto v = nn::split_heads(value->forward(kv), heads_);
  return nn::merge_heads(nn::attention(q, k, v, bias, scale_, dropout_, is_training()));
}

QFormerResidualOutputImpl::QFormerResidualOutputImpl(int64_t in, int64_t out, double eps, double dropout)
    : dropout_(dropout) {
  dense = register_module("dense", nn::Linear(in, out));
  LayerNorm = register_module("LayerNorm", nn::LayerNorm(out, eps));
}

torch::Tensor QFormerResidualOutputImpl::forward(const torch::Tensor& h, const torch::Tensor& residual) {
  return LayerNorm->forward(torch::dropout(dense->forward(h), dropout_, is_training()) + residual);
}

QFormerAttentionImpl::QFormerAttentionImpl(const QFormerConfig& c, bool cross) {
  attention = register_module("attention", QFormerMultiHeadAttention(c, cross));
  output = register_module("output", QFormerResidualOutput(c.hidden_size, c.hidden_size, c.layer_norm_eps, c.hidden_dropout_prob));
}

torch::Tensor QFormerAttentionImpl::forward(const torch::Tensor& x, const torch::Tensor& kv,
                                            const torch::Tensor& bias) {
  return output->forward(attention->forward(x, kv, bias), x);
}

QFormerIntermediateImpl::QFormerIntermediateImpl(const QFormerConfig& c) : act_(c.hidden_act) {
  dense = register_module("dense", nn::Linear(c.hidden_size, c.intermediate_size));
}

torch::Tensor QFormerIntermediateImpl::forward(const torch::Tensor& x) {
  return nn::activation(dense->forward(x), act_);
}

QFormerLayerImpl::QFormerLayerImpl(const QFormerConfig& c, int64_t layer_idx) : layer_idx_(layer_idx) {
  attention = register_module("attention", QFormerAttention(c, false));
  if (c.has_cross_attention(layer_idx))
    crossattention = register_module("crossattention", QFormerAttention(c, true));
  if (c.use_qformer_text_input) {
    intermediate = register_module("intermediate", QFormerIntermediate(c));
    output = register_module("output",
                             QFormerResidualOutput(c.intermediate_size, c.hidden_size, c.layer_norm_eps, c.hidden_dropout_prob));
  }
  intermediate_query = register_module("intermediate_query", QFormerIntermediate(c));
  output_query = register_module(
      "output_query", QFormerResidualOutput(c.intermediate_size, c.hidden_size, c.layer_norm_eps, c.hidden_dropout_prob));
}

torch::Tensor QFormerLayerImpl::forward(const torch::Tensor& h, const torch::Tensor& self_bias,
                                        int64_t query_length, const torch::Tensor& encoder_hidden_states,
                                        const torch::Tensor& encoder_bias) {
  auto a = attention->forward(h, h, self_bias);  // (B, L, D)
  const int64_t L = a.size(1);
  auto text_ffn = [&](const torch::Tensor& t) {
    if (!has_text_ffn())
      throw InputError("[QFormer] text tokens need the text feed-forward (intermediate/output) of layer " +
                       std::to_string(layer_idx_) +
                       ", which this model does not have; set qformer_config.use_qformer_text_input");
    return output->forward(intermediate->forward(t), t);
  };
  if (query_length <= 0) return text_ffn(a);
  auto q = a.slice(1, 0, query_length);
  if (has_cross_attention()) {
    if (!encoder_hidden_states.defined())
      throw InputError("[QFormer] layer " + std::to_string(layer_idx_) +
                       " cross-attends to image features, but none were given");
    q = crossattention->forward(q, encoder_hidden_states, encoder_bias);
  }
  auto out = output_query->forward(intermediate_query->forward(q), q);
  if (L > query_length) out = torch::cat({out, text_ffn(a.slice(1, query_length, L))}, 1);
  return out;
}

QFormerImpl::QFormerImpl(const QFormerConfig& c) : config_(c) {
  layernorm = register_module(
      "layernorm", nn::LayerNorm(c.hidden_size, c.layer_norm_eps));
  layer = torch::nn::ModuleList();
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) layer->push_back(QFormerLayer(c, i));
  auto enc = std::make_shared<torch::nn::Module>();
  enc->register_module("layer", layer);
  register_module("encoder", enc);
}

QFormerOutput QFormerImpl::forward(const torch::Tensor& embeds, int64_t query_length,
                                   const torch::Tensor& self_bias, const torch::Tensor& encoder_hidden_states,
                                   const torch::Tensor& encoder_mask, bool output_hidden_states) {
  const auto& c = config_;
  nn::check_shape(embeds, {-1, -1, c.hidden_size}, "QFormer", "embeds",
                  "check qformer_config.hidden_size");
  torch::Tensor enc_bias;
  if (encoder_hidden_states.defined()) {
    nn::check_shape(encoder_hidden_states, {embeds.size(0), -1, c.encoder_hidden_size}, "QFormer",
                    "image_embeds", "check vision_config.hidden_size");
    if (encoder_mask.defined())
      enc_bias = nn::padding_bias(encoder_mask, embeds.scalar_type(), nn::finfo_min(embeds.scalar_type()));
  }
  QFormerOutput out;
  auto h = torch::dropout(layernorm->forward(embeds), c.hidden_dropout_prob, is_training());
  if (output_hidden_states) out.hidden_states.push_back(h);
  for (const auto& l : *layer) {
    h = l->as<QFormerLayerImpl>()->forward(h, self_bias, query_length, encoder_hidden_states, enc_bias);
    if (output_hidden_states) out.hidden_states.push_back(h);
  }
  out.last_hidden_state = h;
  return out;
}

QFormerTextEmbeddingsImpl::QFormerTextEmbeddingsImpl(const QFormerConfig& c) : config_(c) {
  word_embeddings = register_module(
      "word_embeddings",
      nn::Embedding(c.vocab_size, c.hidden_size, c.pad_token_id));
  position_embeddings = register_module(
      "position_embeddings", nn::Embedding(c.max_position_embeddings, c.hidden_size));
}

torch::Tensor QFormerTextEmbeddingsImpl::forward(const torch::Tensor& input_ids,
                                                 const torch::Tensor& query_embeds) {
  nn::check_shape(input_ids, {-1, -1}, "QFormerTextEmbeddings", "input_ids");
  const int64_t T = input_ids.size(1);
  if (T > config_.max_position_embeddings)
    throw InputError("[QFormerTextEmbeddings] text of " + std::to_string(T) +
                     " tokens is longer than qformer_config.max_position_embeddings (" +
                     std::to_string(config_.max_position_embeddings) + "); truncate it");
  if (input_ids.numel() > 0) {
    auto mn = input_ids.min().item<int64_t>(), mx = input_ids.max().item<int64_t>();
    if (mn < 0 || mx >= config_.vocab_size)
      throw InputError("[QFormerTextEmbeddings] token ids must be in [0, " +
                       std::to_string(config_.vocab_size) + "), got " + std::to_string(mn) + ".." +
                       std::to_string(mx));
  }
  auto pos = torch::arange(T, input_ids.options().dtype(torch::kLong));
  auto e = word_embeddings->forward(input_ids) + position_embeddings->forward(pos).unsqueeze(0);
  if (query_embeds.defined()) e = torch::cat({query_embeds.to(e.scalar_type()), e}, 1);
  return e;
}

}  // namespace blip2
