#include "blip2/train/lm_pretrain.h"

#include <filesystem>
#include <random>
#include <sstream>

#include "blip2/data/tokenizer.h"
#include "blip2/io/safetensors.h"
#include "blip2/nn/layers.h"
#include "blip2/train/losses.h"
#include "blip2/train/trainer.h"
#include "blip2/util/error.h"

namespace blip2 {

namespace F = torch::nn::functional;

namespace {

// Uniform integer in [0, n) from the raw 64-bit output (no std::*_distribution,
// whose results are implementation-defined).
int64_t draw(std::mt19937_64& rng, int64_t n) { return static_cast<int64_t>(rng() % static_cast<uint64_t>(n)); }

std::vector<std::string> split_words(const std::string& s) {
  std::istringstream is(s);
  std::vector<std::string> words;
  for (std::string w; is >> w;) words.push_back(w);
  return words;
}

std::string join(const std::vector<std::string>& w, size_t from, size_t to) {
  std::string s;
  for (size_t i = from; i < to; ++i) s += (s.empty() ? "" : " ") + w[i];
  return s;
}

}  // namespace

LmPretrainResult pretrain_language_model(const LmPretrainConfig& c,
                                         std::function<void(int64_t, double)> on_step) {
  if (c.texts.empty()) throw ConfigError("[pretrain_language_model] the corpus (texts) is empty");
  if (c.steps < 1 || c.batch_size < 1 || c.max_len < 2)
    throw ConfigError("[pretrain_language_model] steps and batch_size must be >= 1 and max_len >= 2");
  if (c.text.model_type != "opt" && c.text.model_type != "t5")
    throw ConfigError("[pretrain_language_model] text.model_type must be \"opt\" or \"t5\", not \"" +
                      c.text.model_type + "\"");
  c.optim.validate();
  auto tok = load_tokenizer(c.tokenizer_dir);

  torch::manual_seed(c.seed);
  std::mt19937_64 rng(c.seed ^ 0x9e3779b97f4a7c15ULL);
  LmPretrainResult out;
  out.model = make_language_model(c.text);
  auto& model = *out.model;
  {
    // nn::init_normal leaves T5LayerNorm alone: it keeps its weight of 1.
    torch::NoGradGuard g;
    nn::init_normal(model, 0.02);
  }
  model.train();
  auto opt = make_adamw(model, c.optim);
  const bool t5 = c.text.is_encoder_decoder();
  const int64_t pad = c.text.pad_token_id();
  int64_t max_len = c.max_len;
  if (!t5) max_len = std::min(max_len, c.text.opt.max_position_embeddings);
  const int64_t n = static_cast<int64_t>(c.texts.size());

  for (int64_t step = 0; step < c.steps; ++step) {
    set_learning_rate(*opt, learning_rate(c.optim, step));
    std::vector<std::string> batch;
    for (int64_t b = 0; b < c.batch_size; ++b) batch.push_back(c.texts[static_cast<size_t>(draw(rng, n))]);
    opt->zero_grad();
    torch::Tensor loss;
    if (!t5) {
      auto [ids, mask] = tokenize_batch(*tok, batch, max_len, pad);
      auto labels = ids.masked_fill(mask == 0, -100);
      auto logits = model.forward(model.embed_tokens(ids), mask, {}, false).logits.to(torch::kFloat);
      const int64_t V = logits.size(2);
      loss = F::cross_entropy(logits.slice(1, 0, logits.size(1) - 1).reshape({-1, V}),
                              labels.slice(1, 1).reshape({-1}), F::CrossEntropyFuncOptions().ignore_index(-100));
    } else {
      std::vector<std::string> prefixes, suffixes;
      for (const auto& t : batch) {
        auto w = split_words(t);
        const int64_t k = w.size() > 1 ? draw(rng, static_cast<int64_t>(w.size())) : 0;
        prefixes.push_back(join(w, 0, static_cast<size_t>(k)));
        suffixes.push_back(join(w, static_cast<size_t>(k), w.size()));
      }
      auto [ids, mask] = tokenize_batch(*tok, prefixes, max_len, pad);
      auto [tgt, tmask] = tokenize_batch(*tok, suffixes, max_len, pad);
      auto labels = tgt.masked_fill(tmask == 0, -100);
      auto dec = shift_right(labels, c.text.t5.decoder_start_token_id, c.text.t5.pad_token_id);
      auto logits = model.forward(model.embed_tokens(ids), mask, dec, false).logits.to(torch::kFloat);
      loss = F::cross_entropy(logits.reshape({-1, logits.size(2)}), labels.reshape({-1}),
                              F::CrossEntropyFuncOptions().ignore_index(-100));
    }
    const double l = loss.item<double>();
    if (!std::isfinite(l))
      throw Error("[pretrain_language_model] training diverged at step " + std::to_string(step) +
                  "; lower optim.lr or set optim.grad_clip");
    loss.backward();
    if (c.optim.grad_clip > 0) torch::nn::utils::clip_grad_norm_(model.parameters(), c.optim.grad_clip);
    opt->step();
    out.losses.push_back(l);
    if (on_step) on_step(step + 1, l);
  }
  model.eval();
  return out;
}

void save_language_model(const LanguageModel& model, const std::string& dir, const std::string& tokenizer_dir) {
  namespace fs = std::filesystem;
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) throw InputError("[save_language_model] cannot create '" + dir + "': " + ec.message());
  std::vector<std::pair<std::string, at::Tensor>> ts;
  for (const auto& p : model.named_parameters(true)) ts.emplace_back(p.key(), p.value().detach());
  io::save_safetensors(dir + "/model.safetensors", ts);
  if (tokenizer_dir.empty()) return;
  for (const auto& e : fs::directory_iterator(tokenizer_dir)) {
    if (!e.is_regular_file() || e.path().filename() == "model.safetensors") continue;
    fs::copy_file(e.path(), fs::path(dir) / e.path().filename(), fs::copy_options::overwrite_existing, ec);
    if (ec) throw InputError("[save_language_model] cannot copy '" + e.path().string() + "': " + ec.message());
  }
}

}  // namespace blip2
