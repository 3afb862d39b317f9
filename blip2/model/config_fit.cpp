#include "blip2/model/config_fit.h"

#include <algorithm>
#include <cstdio>
#include <vector>

#include "blip2/io/tensor_store.h"
#include "blip2/model/blip2_model.h"
#include "blip2/util/error.h"

namespace blip2 {

namespace {

// 1 + the largest N of names "<prefix>N." in the store, or -1.
int64_t layers_under(const std::vector<std::string>& names, const std::vector<std::string>& prefixes) {
  int64_t most = -1;
  for (const auto& n : names) {
    for (const auto& p : prefixes) {
      if (n.compare(0, p.size(), p) != 0) continue;
      int64_t i = 0;
      size_t k = p.size();
      bool digits = false;
      while (k < n.size() && n[k] >= '0' && n[k] <= '9' && i < (int64_t{1} << 40)) i = i * 10 + (n[k++] - '0'), digits = true;
      if (digits && k < n.size() && n[k] == '.') most = std::max(most, i + 1);
    }
  }
  return most;
}

std::string count_str(double v) {
  char b[32];
  std::snprintf(b, sizeof b, "%.3g", v);
  return b;
}

}  // namespace

StoredLayers count_stored_layers(const io::TensorStore& store) {
  const auto names = store.names();
  StoredLayers s;
  s.vision = layers_under(names, {"vision_model.encoder.layers.", "visual_encoder.blocks."});
  s.qformer = layers_under(names, {"qformer.encoder.layer.", "Qformer.bert.encoder.layer."});
  s.text = layers_under(names, {"language_model.model.decoder.layers.", "opt_model.model.decoder.layers.",
                                "language_model.encoder.block.", "t5_model.encoder.block."});
  s.text_decoder = layers_under(names, {"language_model.decoder.block.", "t5_model.decoder.block."});
  return s;
}

double implied_parameters(const Blip2Config& c, const Blip2Parts& parts) {
  auto d = [](int64_t v) { return static_cast<double>(v); };
  double n = d(c.num_query_tokens) * d(c.qformer.hidden_size);
  const auto& q = c.qformer;
  n += d(q.num_hidden_layers) * (4 * d(q.hidden_size) * d(q.hidden_size) + 2 * d(q.hidden_size) * d(q.intermediate_size));
  if (parts.vision_tower) {
    const auto& v = c.vision;
    n += d(v.num_hidden_layers) * (4 * d(v.hidden_size) * d(v.hidden_size) + 2 * d(v.hidden_size) * d(v.intermediate_size));
    n += d(v.hidden_size) * d(v.num_channels) * d(v.patch_size) * d(v.patch_size);
  }
  if (parts.retrieval || parts.qformer_text) n += d(q.vocab_size) * d(q.hidden_size);
  if (parts.language) {
    if (c.text.family == LmFamily::kOpt) {
      const auto& o = c.text.opt;
      n += d(o.num_hidden_layers) * (4 * d(o.hidden_size) * d(o.hidden_size) + 2 * d(o.hidden_size) * d(o.ffn_dim));
      n += d(o.vocab_size) * d(o.word_embed_proj_dim) + d(o.max_position_embeddings) * d(o.hidden_size);
    } else {
      const auto& t = c.text.t5;
      const double inner = d(t.num_heads) * d(t.d_kv);
      const double dec = t.num_decoder_layers < 0 ? d(t.num_layers) : d(t.num_decoder_layers);
      n += d(t.num_layers) * (4 * d(t.d_model) * inner + 2 * d(t.d_model) * d(t.d_ff));
      n += dec * (8 * d(t.d_model) * inner + 2 * d(t.d_model) * d(t.d_ff));
      n += d(t.vocab_size) * d(t.d_model);
    }
  }
  return n;
}

void check_config_fits(const Blip2Config& c, const Blip2Parts& parts, const io::TensorStore& store,
                       const std::string& config_path) {
  const auto stored = count_stored_layers(store);
  const std::string fix = "; config.json does not match the checkpoint (use the config.json it was saved with)";
  auto layers = [&](int64_t want, int64_t have, const char* field) {
    if (have >= 0 && want > have)
      throw ConfigError(config_path + ": " + field + " is " + std::to_string(want) + " but the checkpoint " +
                        store.description() + " stores " + std::to_string(have) + " such layers" + fix);
  };
  if (parts.vision_tower) layers(c.vision.num_hidden_layers, stored.vision, "vision_config.num_hidden_layers");
  layers(c.qformer.num_hidden_layers, stored.qformer, "qformer_config.num_hidden_layers");
  if (parts.language) {
    if (c.text.family == LmFamily::kOpt) {
      layers(c.text.opt.num_hidden_layers, stored.text, "text_config.num_hidden_layers");
    } else {
      layers(c.text.t5.num_layers, stored.text, "text_config.num_layers");
      layers(c.text.t5.num_decoder_layers < 0 ? c.text.t5.num_layers : c.text.t5.num_decoder_layers,
             stored.text_decoder, "text_config.num_decoder_layers");
    }
  }
  double held = 0;
  for (const auto& n : store.names()) held += static_cast<double>(store.info(n).numel());
  const double implied = implied_parameters(c, parts);
  // The bound counts only what every such model has, so an honest config is
  // well below it; the slack covers tied copies counted once.
  if (implied > 1.05 * held + 1e6)
    throw ConfigError(config_path + ": its sizes (hidden sizes, vocab_size, num_query_tokens, layers) imply at "
                      "least " + count_str(implied) + " parameters but the checkpoint " + store.description() +
                      " holds " + count_str(held) + fix);
}

}  // namespace blip2
