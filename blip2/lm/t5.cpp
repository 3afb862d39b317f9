#include "blip2/lm/t5.h"

#include <cmath>

#include "blip2/nn/gemm.h"
#include "blip2/nn/ops.h"
#include "blip2/util/error.h"

namespace blip2 {

namespace F = torch::nn::functional;

T5LayerNormImpl::T5LayerNormImpl(int64_t d, double eps) : eps_(eps) {
  weight = register_parameter("weight", torch::ones({d}));
}

torch::Tensor T5LayerNormImpl::forward(const torch::Tensor& x) {
  // RMSNorm in float32, no mean subtraction, no bias.
  auto var = x.to(torch::kFloat).pow(2).mean(-1, true);
  auto h = x * torch::rsqrt(var + eps_);
  if (weight.scalar_type() == torch::kHalf || weight.scalar_type() == torch::kBFloat16)
    h = h.to(weight.scalar_type());
  return weight * h;
}

T5AttentionImpl::T5AttentionImpl(const T5Config& c, bool has_bias) : c_(c) {
  const int64_t inner = c.num_heads * c.d_kv;
  auto lin = [&](int64_t i, int64_t o) { return nn::Linear(i, o, false); };
  q = register_module("q", lin(c.d_model, inner));
  k = register_module("k", lin(c.d_model, inner));
  v = register_module("v", lin(c.d_model, inner));
  o = register_module("o", lin(inner, c.d_model));
  if (has_bias)
    relative_attention_bias = register_module(
        "relative_attention_bias", nn::Embedding(c.relative_attention_num_buckets, c.num_heads));
}

namespace {

// HF T5Attention._relative_position_bucket.
torch::Tensor relative_position_bucket(const torch::Tensor& rel, bool bidirectional, int64_t num_buckets,
                                       int64_t max_distance) {
  auto buckets = torch::zeros_like(rel);
  auto r = rel;
  if (bidirectional) {
    num_buckets /= 2;
    buckets = buckets + (r > 0).to(torch::kLong) * num_buckets;
    r = torch::abs(r);
  } else {
    r = -torch::min(r, torch::zeros_like(r));
  }
  const int64_t max_exact = num_buckets / 2;
  auto is_small = r < max_exact;
  auto large = max_exact + (torch::log(r.to(torch::kFloat) / static_cast<double>(max_exact)) /
                            std::log(static_cast<double>(max_distance) / max_exact) *
                            static_cast<double>(num_buckets - max_exact))
                               .to(torch::kLong);
  large = torch::min(large, torch::full_like(large, num_buckets - 1));
  return buckets + torch::where(is_small, r, large);
}

}  // namespace

torch::Tensor T5AttentionImpl::compute_bias(int64_t q_len, int64_t k_len, int64_t q_offset, bool bidirectional,
                                            const torch::Device& device) {
  auto lo = torch::TensorOptions().dtype(torch::kLong).device(device);
  auto ctx = torch::arange(q_offset, q_offset + q_len, lo).view({q_len, 1});
  auto mem = torch::arange(0, k_len, lo).view({1, k_len});
  auto b = relative_position_bucket(mem - ctx, bidirectional, c_.relative_attention_num_buckets,
                                    c_.relative_attention_max_distance);
  auto values = relative_attention_bias->forward(b);  // (q, k, H)
  return values.permute({2, 0, 1}).unsqueeze(0);      // (1, H, q, k)
}

torch::Tensor T5AttentionImpl::forward(const torch::Tensor& x, const torch::Tensor& kv,
                                       const torch::Tensor& position_bias, KVCache* cache, bool static_kv) {
  const int64_t H = c_.num_heads;
  auto qh = nn::split_heads(q->forward(x), H);
  torch::Tensor kh, vh;
  if (static_kv && cache && cache->k.defined()) {
    kh = cache->k;
    vh = cache->v;
  } else {
    const auto& src = kv.defined() ? kv : x;
    kh = nn::split_heads(k->forward(src), H);
    vh = nn::split_heads(v->forward(src), H);
    if (cache && !static_kv && cache->k.defined()) {
      kh = torch::cat({cache->k, kh}, 2);
      vh = torch::cat({cache->v, vh}, 2);
    }
    if (cache) {
      cache->k = kh;
      cache->v = vh;
    }
  }
  return o->forward(nn::merge_heads(nn::attention(qh, kh, vh, position_bias, 1.0)));
}

T5DenseImpl::T5DenseImpl(const T5Config& c) : c_(c) {
  auto lin = [&](int64_t i, int64_t o) { return nn::Linear(i, o, false); };
  if (c.is_gated_act) {
    wi_0 = register_module("wi_0", lin(c.d_model, c.d_ff));
    wi_1 = register_module("wi_1", lin(c.d_model, c.d_ff));
  } else {
    wi = register_module("wi", lin(c.d_model, c.d_ff));
  }
  wo = register_module("wo", lin(c.d_ff, c.d_model));
}

torch::Tensor T5DenseImpl::forward(const torch::Tensor& x) {
  torch::Tensor h;
  if (c_.is_gated_act)
    h = nn::activation(wi_0->forward(x), c_.dense_act_fn) * wi_1->forward(x);
  else
    h = nn::activation(wi->forward(x), c_.dense_act_fn);
  // HF keeps wo in float32 under a 16-bit model; float32 activations stay so.
  return wo->forward(h.to(at::promote_types(h.scalar_type(), wo->weight.scalar_type())));
}

namespace {

std::shared_ptr<torch::nn::Module> make_sublayer(const char* name, std::shared_ptr<torch::nn::Module> inner,
                                                 std::shared_ptr<T5LayerNormImpl> norm) {
  auto m = std::make_shared<torch::nn::Module>();
  m->register_module(name, std::move(inner));
  m->register_module("layer_norm", std::move(norm));
  return m;
}

}  // namespace

T5StackImpl::T5StackImpl(const T5Config& c, bool is_decoder) : c_(c), is_decoder_(is_decoder) {
  block = register_module("block", torch::nn::ModuleList());
  const int64_t n = is_decoder ? c.num_decoder_layers : c.num_layers;
  for (int64_t i = 0; i < n; ++i) {
    auto b = std::make_shared<torch::nn::Module>();
    auto layer = torch::nn::ModuleList();
    Sub s;
    s.self_attn = T5Attention(c, i == 0);
    for (auto& ln : s.norms) ln = T5LayerNorm(c.d_model, c.layer_norm_epsilon);
    s.ffn = T5Dense(c);
    layer->push_back(make_sublayer("SelfAttention", s.self_attn.ptr(), s.norms[0].ptr()));
    if (is_decoder) {
      s.cross_attn = T5Attention(c, false);
      layer->push_back(make_sublayer("EncDecAttention", s.cross_attn.ptr(), s.norms[1].ptr()));
    }
    layer->push_back(make_sublayer("DenseReluDense", s.ffn.ptr(), s.norms[2].ptr()));
    b->register_module("layer", layer);
    block->push_back(b);
    subs_.push_back(s);
  }
  final_layer_norm = register_module("final_layer_norm", T5LayerNorm(c.d_model, c.layer_norm_epsilon));
}

torch::Tensor T5StackImpl::forward(const torch::Tensor& x, const torch::Tensor& mask, const torch::Tensor& enc,
                                   const torch::Tensor& enc_mask, std::vector<torch::Tensor>* hidden_states) {
  const auto L = x.size(1);
  const double neg = nn::finfo_min(x.scalar_type());
  auto keep = mask.to(x.scalar_type()).view({mask.size(0), 1, 1, L});
  if (is_decoder_) keep = keep * torch::tril(torch::ones({L, L}, x.options())).view({1, 1, L, L});
  auto position_bias =
      subs_[0].self_attn->compute_bias(L, L, 0, !is_decoder_, x.device()).to(x.scalar_type()) + (1.0 - keep) * neg;
  torch::Tensor cross_bias;
  if (is_decoder_) cross_bias = nn::padding_bias(enc_mask, x.scalar_type(), neg);
  auto h = x;
  if (hidden_states) hidden_states->push_back(h);
  for (size_t i = 0; i < subs_.size(); ++i) {
    h = h + subs_[i].self_attn->forward(subs_[i].norms[0]->forward(h), {}, position_bias, nullptr, false);
    if (is_decoder_) h = h + subs_[i].cross_attn->forward(subs_[i].norms[1]->forward(h), enc, cross_bias, nullptr, true);
    h = h + subs_[i].ffn->forward(subs_[i].norms[2]->forward(h));
    if (hidden_states && i + 1 < subs_.size()) hidden_states->push_back(h);
  }
  h = final_layer_norm->forward(h);
  if (hidden_states) hidden_states->push_back(h);
  return h;
}

torch::Tensor T5StackImpl::step(const torch::Tensor& x, int64_t pos, const torch::Tensor& enc_bias,
                                std::vector<KVCache>& self_cache, std::vector<KVCache>& cross_cache,
                                const torch::Tensor& enc) {
  if (self_cache.empty()) self_cache.resize(subs_.size());
  if (cross_cache.empty()) cross_cache.resize(subs_.size());
  auto position_bias = subs_[0].self_attn->compute_bias(1, pos + 1, pos, false, x.device()).to(x.scalar_type());
  auto h = x;
  for (size_t i = 0; i < subs_.size(); ++i) {
    h = h + subs_[i].self_attn->forward(subs_[i].norms[0]->forward(h), {}, position_bias, &self_cache[i], false);
    h = h + subs_[i].cross_attn->forward(subs_[i].norms[1]->forward(h), enc, enc_bias, &cross_cache[i], true);
    h = h + subs_[i].ffn->forward(subs_[i].norms[2]->forward(h));
  }
  return final_layer_norm->forward(h);
}

T5LanguageModel::T5LanguageModel(const T5Config& c) : c_(c) {
  shared = register_module("shared", nn::Embedding(c.vocab_size, c.d_model));
  encoder = register_module("encoder", T5Stack(c, false));
  decoder = register_module("decoder", T5Stack(c, true));
  if (!c.tie_word_embeddings)
    lm_head = register_module("lm_head",
                              nn::Linear(c.d_model, c.vocab_size, false));
}

void T5LanguageModel::init_reference_weights() {
  torch::NoGradGuard g;
  auto ends = [](const std::string& name, const std::string& tail) {
    return name.size() >= tail.size() && name.compare(name.size() - tail.size(), tail.size(), tail) == 0;
  };
  const double d = static_cast<double>(c_.d_model), kv = static_cast<double>(c_.d_kv);
  for (auto& p : named_parameters()) {
    const std::string& name = p.key();
    if (!p.value().is_floating_point()) continue;
    double sd = 0;
    if (ends(name, "layer_norm.weight")) {
      p.value().fill_(1.0);
      continue;
    } else if (name == "shared.weight" || name == "lm_head.weight") {
      sd = 1.0;
    } else if (ends(name, ".q.weight")) {
      sd = 1.0 / std::sqrt(d * kv);
    } else if (ends(name, ".o.weight")) {
      sd = 1.0 / std::sqrt(static_cast<double>(c_.num_heads) * kv);
    } else if (ends(name, ".wo.weight")) {
      sd = 1.0 / std::sqrt(static_cast<double>(c_.d_ff));
    } else {  // k, v, wi, wi_0, wi_1, relative_attention_bias
      sd = 1.0 / std::sqrt(d);
    }
    p.value().normal_(0.0, sd);
  }
}

bool T5LanguageModel::is_tied_copy(const std::string& name) const {
  // Both stacks' embed_tokens are the shared matrix.
  if (name == "encoder.embed_tokens.weight" || name == "decoder.embed_tokens.weight") return true;
  return c_.tie_word_embeddings && name == "lm_head.weight";
}

bool T5LanguageModel::keeps_float(const std::string& name) const {
  const std::string wo = ".DenseReluDense.wo.weight";
  return name.size() > wo.size() && name.compare(name.size() - wo.size(), wo.size(), wo) == 0;
}

torch::Tensor T5LanguageModel::embed_tokens(const torch::Tensor& ids) {
  if (ids.numel() > 0) {
    auto mn = ids.min().item<int64_t>(), mx = ids.max().item<int64_t>();
    if (mn < 0 || mx >= c_.vocab_size)
      throw InputError("[T5] token ids must be in [0, " + std::to_string(c_.vocab_size) + "), got " +
                       std::to_string(mn) + ".." + std::to_string(mx) + "; check the tokenizer matches the model");
  }
  return shared->forward(ids);
}

torch::Tensor T5LanguageModel::lm_head_forward(const torch::Tensor& h) {
  if (!lm_head.is_empty()) return lm_head->forward(h);
  return nn::linear(h * std::pow(static_cast<double>(c_.d_model), -0.5), shared->weight, {}, shared->weight_scale);
}

LMOutput T5LanguageModel::forward(const torch::Tensor& inputs_embeds, const torch::Tensor& attention_mask,
                                  const torch::Tensor& decoder_input_ids, bool output_hidden_states) {
  nn::check_shape(inputs_embeds, {-1, -1, c_.d_model}, "T5", "inputs_embeds");
  nn::check_shape(attention_mask, {inputs_embeds.size(0), inputs_embeds.size(1)}, "T5", "attention_mask");
  nn::check_shape(decoder_input_ids, {inputs_embeds.size(0), -1}, "T5", "decoder_input_ids",
                  "an encoder-decoder forward needs decoder ids (labels shifted right)");
  LMOutput out;
  auto enc = encoder->forward(inputs_embeds.to(shared->dtype()), attention_mask, {}, {},
                              output_hidden_states ? &out.encoder_hidden_states : nullptr);
  out.encoder_last_hidden_state = enc;
  auto dec_in = embed_tokens(decoder_input_ids);
  auto dec_mask = torch::ones({decoder_input_ids.size(0), decoder_input_ids.size(1)}, attention_mask.options());
  auto dec = decoder->forward(dec_in, dec_mask, enc, attention_mask,
                              output_hidden_states ? &out.decoder_hidden_states : nullptr);
  out.logits = lm_head_forward(dec);
  return out;
}

namespace {
struct T5State : DecodeState {
  torch::Tensor enc, enc_bias;
  std::vector<KVCache> self_cache, cross_cache;
  int64_t pos = 0;
};
}  // namespace

std::unique_ptr<DecodeState> T5LanguageModel::start(const torch::Tensor& inputs_embeds,
                                                    const torch::Tensor& attention_mask, torch::Tensor* next_logits) {
  nn::check_shape(inputs_embeds, {-1, -1, c_.d_model}, "T5", "inputs_embeds");
  nn::check_shape(attention_mask, {inputs_embeds.size(0), inputs_embeds.size(1)}, "T5", "attention_mask");
  auto st = std::make_unique<T5State>();
  st->enc = encoder->forward(inputs_embeds.to(shared->dtype()), attention_mask, {}, {}, nullptr);
  st->enc_bias = nn::padding_bias(attention_mask, st->enc.scalar_type(), nn::finfo_min(st->enc.scalar_type()));
  auto start_ids = torch::full({inputs_embeds.size(0)}, c_.decoder_start_token_id,
                               torch::TensorOptions().dtype(torch::kLong).device(inputs_embeds.device()));
  *next_logits = step(*st, start_ids);
  return st;
}

torch::Tensor T5LanguageModel::step(DecodeState& state, const torch::Tensor& tokens) {
  auto& st = static_cast<T5State&>(state);
  auto x = embed_tokens(tokens.view({-1, 1}));
  auto h = decoder->step(x, st.pos, st.enc_bias, st.self_cache, st.cross_cache, st.enc);
  st.pos += 1;
  return lm_head_forward(h.select(1, 0));
}

void T5LanguageModel::select(DecodeState& state, const torch::Tensor& index) {
  auto& st = static_cast<T5State&>(state);
  st.enc = st.enc.index_select(0, index);
  st.enc_bias = st.enc_bias.index_select(0, index);
  for (auto* caches : {&st.self_cache, &st.cross_cache})
    for (auto& kv : *caches) {
      if (!kv.k.defined()) continue;
      kv.k = kv.k.index_select(0, index);
      kv.v = kv.v.index_select(0, index);
    }
}

}  // namespace blip2
