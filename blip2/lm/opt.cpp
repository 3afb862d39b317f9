#include "blip2/lm/opt.h"

#include <cmath>

#include "blip2/nn/gemm.h"
#include "blip2/nn/ops.h"
#include "blip2/util/error.h"

namespace blip2 {

namespace F = torch::nn::functional;

OptAttentionImpl::OptAttentionImpl(const OptConfig& c)
    : heads_(c.num_attention_heads),
      scaling_(1.0 / std::sqrt(static_cast<double>(c.hidden_size / c.num_attention_heads))) {
  const int64_t D = c.hidden_size;
  k_proj = register_module("k_proj", nn::Linear(D, D, c.enable_bias));
  v_proj = register_module("v_proj", nn::Linear(D, D, c.enable_bias));
  q_proj = register_module("q_proj", nn::Linear(D, D, c.enable_bias));
  out_proj = register_module("out_proj", nn::Linear(D, D, c.enable_bias));
}

torch::Tensor OptAttentionImpl::forward(const torch::Tensor& x, const torch::Tensor& bias, KVCache* cache) {
  auto q = nn::split_heads(q_proj->forward(x) * scaling_, heads_);
  auto k = nn::split_heads(k_proj->forward(x), heads_);
  auto v = nn::split_heads(v_proj->forward(x), heads_);
  if (cache) {
    if (cache->k.defined()) {
      k = torch::cat({cache->k, k}, 2);
      v = torch::cat({cache->v, v}, 2);
    }
    cache->k = k;
    cache->v = v;
  }
  return out_proj->forward(nn::merge_heads(nn::attention(q, k, v, bias, 1.0)));
}

OptDecoderLayerImpl::OptDecoderLayerImpl(const OptConfig& c) : c_(c) {
  self_attn = register_module("self_attn", OptAttention(c));
  self_attn_layer_norm =
      register_module("self_attn_layer_norm", nn::LayerNorm(c.hidden_size, 1e-5, c.layer_norm_elementwise_affine));
  fc1 = register_module("fc1", nn::Linear(c.hidden_size, c.ffn_dim, c.enable_bias));
  fc2 = register_module("fc2", nn::Linear(c.ffn_dim, c.hidden_size, c.enable_bias));
  final_layer_norm =
      register_module("final_layer_norm", nn::LayerNorm(c.hidden_size, 1e-5, c.layer_norm_elementwise_affine));
}

torch::Tensor OptDecoderLayerImpl::forward(const torch::Tensor& x, const torch::Tensor& bias, KVCache* cache) {
  const bool pre = c_.do_layer_norm_before;
  auto h = x + self_attn->forward(pre ? self_attn_layer_norm->forward(x) : x, bias, cache);
  if (!pre) h = self_attn_layer_norm->forward(h);
  auto f = fc2->forward(nn::activation(fc1->forward(pre ? final_layer_norm->forward(h) : h), c_.activation_function));
  h = h + f;
  if (!pre) h = final_layer_norm->forward(h);
  return h;
}

OptDecoderImpl::OptDecoderImpl(const OptConfig& c) : c_(c) {
  embed_tokens = register_module(
      "embed_tokens",
      nn::Embedding(c.vocab_size, c.word_embed_proj_dim, c.pad_token_id));
  embed_positions =
      register_module("embed_positions", nn::Embedding(c.max_position_embeddings + 2, c.hidden_size));
  if (c.word_embed_proj_dim != c.hidden_size) {
    project_out = register_module(
        "project_out", nn::Linear(c.hidden_size, c.word_embed_proj_dim, false));
    project_in = register_module(
        "project_in", nn::Linear(c.word_embed_proj_dim, c.hidden_size, false));
  }
  if (c.do_layer_norm_before && !c.remove_final_layer_norm)
    final_layer_norm = register_module(
        "final_layer_norm",
        nn::LayerNorm(c.hidden_size, 1e-5, c.layer_norm_elementwise_affine));
  layers = register_module("layers", torch::nn::ModuleList());
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) layers->push_back(OptDecoderLayer(c));
}

torch::Tensor OptDecoderImpl::forward(const torch::Tensor& inputs_embeds, const torch::Tensor& mask,
                                      std::vector<KVCache>* cache, std::vector<torch::Tensor>* hidden_states) {
  const auto N = inputs_embeds.size(0), S = inputs_embeds.size(1);
  const auto total = mask.size(1), past = total - S;
  if (total > c_.max_position_embeddings)
    throw InputError("[OPT] sequence of " + std::to_string(total) +
                     " positions exceeds text_config.max_position_embeddings (" +
                     std::to_string(c_.max_position_embeddings) + "); shorten the prompt or max_new_tokens");
  auto m = mask.to(torch::kLong);
  // positions = cumsum(mask) * mask - 1, offset 2 (OPTLearnedPositionalEmbedding).
  auto positions = (torch::cumsum(m, 1) * m - 1).slice(1, past, total) + 2;
  auto h = inputs_embeds.to(embed_positions->dtype());  // a bf16 LLM under a float32 bridge
  if (!project_in.is_empty()) h = project_in->forward(h);
  h = h + embed_positions->forward(positions).to(h.scalar_type());
  // Causal + padding bias (N, 1, S, total) with finfo.min where masked.
  const double neg = nn::finfo_min(h.scalar_type());
  auto qpos = torch::arange(past, total, m.options()).view({S, 1});
  auto kpos = torch::arange(0, total, m.options()).view({1, total});
  auto allowed = (kpos <= qpos).view({1, 1, S, total}) & (m.view({N, 1, 1, total}) != 0);
  auto bias = torch::zeros({N, 1, S, total}, h.options()).masked_fill(allowed.logical_not(), neg);
  if (cache && cache->empty()) cache->resize(layers->size());
  if (hidden_states) hidden_states->push_back(h);
  for (size_t i = 0; i < layers->size(); ++i) {
    h = layers[i]->as<OptDecoderLayerImpl>()->forward(h, bias, cache ? &(*cache)[i] : nullptr);
    if (hidden_states && i + 1 < layers->size()) hidden_states->push_back(h);
  }
  if (!final_layer_norm.is_empty()) h = final_layer_norm->forward(h);
  if (hidden_states) hidden_states->push_back(h);
  if (!project_out.is_empty()) h = project_out->forward(h);
  return h;
}

OptLanguageModel::OptLanguageModel(const OptConfig& c) : c_(c) {
  auto model = std::make_shared<torch::nn::Module>();
  decoder = OptDecoder(c);
  model->register_module("decoder", decoder);
  register_module("model", model);
  if (!c.tie_word_embeddings)
    lm_head = register_module(
        "lm_head", nn::Linear(c.word_embed_proj_dim, c.vocab_size, false));
}

void OptLanguageModel::init_reference_weights() { nn::init_normal(*this, 0.02); }

bool OptLanguageModel::is_tied_copy(const std::string& name) const {
  return c_.tie_word_embeddings && name == "lm_head.weight";
}

torch::Tensor OptLanguageModel::embed_tokens(const torch::Tensor& ids) {
  if (ids.numel() > 0) {
    auto mn = ids.min().item<int64_t>(), mx = ids.max().item<int64_t>();
    if (mn < 0 || mx >= c_.vocab_size)
      throw InputError("[OPT] token ids must be in [0, " + std::to_string(c_.vocab_size) + "), got " +
                       std::to_string(mn) + ".." + std::to_string(mx) + "; check the tokenizer matches the model");
  }
  return decoder->embed_tokens->forward(ids);
}

torch::Tensor OptLanguageModel::lm_head_forward(const torch::Tensor& h) {
  if (!lm_head.is_empty()) return lm_head->forward(h);
  return nn::linear(h, decoder->embed_tokens->weight, {}, decoder->embed_tokens->weight_scale);
}

LMOutput OptLanguageModel::forward(const torch::Tensor& inputs_embeds, const torch::Tensor& attention_mask,
                                   const torch::Tensor&, bool output_hidden_states) {
  nn::check_shape(inputs_embeds, {-1, -1, c_.word_embed_proj_dim}, "OPT", "inputs_embeds");
  nn::check_shape(attention_mask, {inputs_embeds.size(0), inputs_embeds.size(1)}, "OPT", "attention_mask");
  LMOutput out;
  auto h = decoder->forward(inputs_embeds, attention_mask, nullptr,
                            output_hidden_states ? &out.hidden_states : nullptr);
  out.logits = lm_head_forward(h);
  return out;
}

namespace {
struct OptState : DecodeState {
  std::vector<KVCache> cache;
  torch::Tensor mask;  // (N, P)
};
}  // namespace

std::unique_ptr<DecodeState> OptLanguageModel::start(const torch::Tensor& inputs_embeds,
                                                     const torch::Tensor& attention_mask, torch::Tensor* next_logits) {
  nn::check_shape(inputs_embeds, {-1, -1, c_.word_embed_proj_dim}, "OPT", "inputs_embeds");
  nn::check_shape(attention_mask, {inputs_embeds.size(0), inputs_embeds.size(1)}, "OPT", "attention_mask");
  auto st = std::make_unique<OptState>();
  st->mask = attention_mask.to(torch::kLong);
  auto h = decoder->forward(inputs_embeds, st->mask, &st->cache, nullptr);
  *next_logits = lm_head_forward(h.select(1, h.size(1) - 1));
  return st;
}

torch::Tensor OptLanguageModel::step(DecodeState& state, const torch::Tensor& tokens) {
  auto& st = static_cast<OptState&>(state);
  st.mask = torch::cat({st.mask, torch::ones({st.mask.size(0), 1}, st.mask.options())}, 1);
  auto e = embed_tokens(tokens.view({-1, 1}));
  auto h = decoder->forward(e, st.mask, &st.cache, nullptr);
  return lm_head_forward(h.select(1, 0));
}

void OptLanguageModel::select(DecodeState& state, const torch::Tensor& index) {
  auto& st = static_cast<OptState&>(state);
  st.mask = st.mask.index_select(0, index);
  for (auto& kv : st.cache) {
    kv.k = kv.k.index_select(0, index);
    kv.v = kv.v.index_select(0, index);
  }
}

}  // namespace blip2
