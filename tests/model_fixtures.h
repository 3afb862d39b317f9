// Tiny random BLIP-2 models of arbitrary shape, saved as HF checkpoint
// directories, for tests that must not depend on the golden sizes.
#pragma once

#include <fstream>
#include <string>

#include "blip2/config/config.h"
#include "blip2/io/safetensors.h"
#include "blip2/model/blip2_model.h"

namespace blip2::test {

inline Blip2Config tiny_config(const std::string& lm = "opt") {
  Blip2Config c;
  c.vision.hidden_size = 24;
  c.vision.intermediate_size = 40;
  c.vision.num_hidden_layers = 3;
  c.vision.num_attention_heads = 3;
  c.vision.image_size = 12;
  c.vision.patch_size = 3;
  c.qformer.vocab_size = 50;
  c.qformer.hidden_size = 16;
  c.qformer.intermediate_size = 24;
  c.qformer.num_hidden_layers = 3;
  c.qformer.num_attention_heads = 2;
  c.qformer.cross_attention_frequency = 2;
  c.qformer.encoder_hidden_size = 24;
  c.qformer.max_position_embeddings = 20;
  c.num_query_tokens = 5;
  c.image_text_hidden_size = 8;
  c.text.family = lm == "t5" ? LmFamily::kT5 : LmFamily::kOpt;
  if (lm == "opt") {
    auto& o = c.text.opt;
    o.vocab_size = 60;
    o.hidden_size = 20;
    o.word_embed_proj_dim = 20;
    o.num_hidden_layers = 3;
    o.num_attention_heads = 5;
    o.ffn_dim = 28;
    o.max_position_embeddings = 48;
  } else {
    auto& t = c.text.t5;
    t.vocab_size = 60;
    t.d_model = 20;
    t.d_kv = 6;
    t.num_heads = 3;
    t.d_ff = 28;
    t.num_layers = 2;
    t.num_decoder_layers = 3;
    t.relative_attention_num_buckets = 6;
    t.relative_attention_max_distance = 12;
    t.feed_forward_proj = "gated-gelu";
    t.is_gated_act = true;
    t.dense_act_fn = "gelu_new";
    t.tie_word_embeddings = false;
  }
  return c;
}

// O(1) random weights (like the golden models) so every path shows.
inline void randomize(torch::nn::Module& m, uint64_t seed) {
  torch::NoGradGuard g;
  torch::manual_seed(seed);
  for (auto& p : m.parameters()) p.copy_(torch::randn_like(p) * 0.5);
}

// Writes config.json + model.safetensors of `model` to `dir`.
inline void save_checkpoint(Blip2ModelImpl& model, const std::string& dir) {
  std::vector<std::pair<std::string, at::Tensor>> ts;
  for (const auto& p : model.named_parameters(true)) ts.emplace_back(p.key(), p.value());
  io::save_safetensors(dir + "/model.safetensors", ts);
  std::ofstream(dir + "/config.json") << model.config().to_json_string();
}

}  // namespace blip2::test
