#include "blip2/shapes/lm_pretrain.h"

#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>

#include <nlohmann/json.hpp>

#include "blip2/data/text_batch.h"
#include "blip2/data/tokenizer.h"
#include "blip2/io/safetensors.h"
#include "blip2/io/tensor_store.h"
#include "blip2/nn/layers.h"
#include "blip2/train/losses.h"
#include "blip2/train/trainer.h"
#include "blip2/util/atomic_file.h"
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

// A [B, L] mask widened with false columns to [B, T] (T >= L).
torch::Tensor pad_to(const torch::Tensor& m, int64_t T) {
  return m.size(1) >= T ? m.slice(1, 0, T) : torch::cat({m, torch::zeros({m.size(0), T - m.size(1)}, m.options())}, 1);
}

// Marks a filler position in a row of ids until the batch is padded.
constexpr int64_t kFiller = -2;

// Context ids with fillers inserted at random places up to a.fill_to
// positions, in half the rows (drawn), so the LM reads plain descriptions too.
std::vector<int64_t> fill_context(std::vector<int64_t> ids, const ContextAugment& a, std::mt19937_64& rng) {
  if (draw(rng, 2) == 0) return ids;
  while (static_cast<int64_t>(ids.size()) < a.fill_to)
    ids.insert(ids.begin() + draw(rng, static_cast<int64_t>(ids.size()) + 1), kFiller);
  return ids;
}

// The input embeddings of a padded batch under ContextAugment: `context`
// [B, T] marks the context positions (fillers included), fillers are the ids
// equal to kFiller (set to `pad` here). Random draws come from libtorch's
// seeded generator.
torch::Tensor embed_with_context(LanguageModel& model, torch::Tensor& ids, const torch::Tensor& context, int64_t pad,
                                 const ContextAugment& a) {
  const auto filler = ids == kFiller;
  ids.masked_fill_(filler, pad);
  auto e = model.embed_tokens(ids);
  if (!a.enabled()) return e;
  const auto ctx = context.unsqueeze(-1).to(e.scalar_type());  // [B, T, 1]
  const int64_t B = e.size(0), T = e.size(1), D = e.size(2);
  if (a.mix > 0) {
    const auto where = context.reshape({-1}).nonzero().reshape({-1});
    if (where.numel() > 0) {
      const auto pick = where.index_select(0, torch::randint(where.numel(), {B * T}, torch::kLong));
      const auto other = e.reshape({-1, D}).index_select(0, pick).reshape({B, T, D});
      const auto l = torch::rand({B, T, 1}, e.options()) * a.mix;
      e = e + ctx * l * (other - e);
    }
  }
  if (a.noise > 0) {
    const auto norm = e.detach().norm(2, -1, true);
    e = e + ctx * (a.noise / std::sqrt(static_cast<double>(D))) * norm * torch::randn_like(e);
  }
  auto zero = filler;
  if (a.drop > 0) zero = zero | ((torch::rand({B, T}) < a.drop) & context);
  return e * (~zero).unsqueeze(-1).to(e.scalar_type());
}

}  // namespace

void ContextAugment::validate() const {
  if (!(noise >= 0)) throw ConfigError("[pretrain_language_model] context.noise must be >= 0, got " + std::to_string(noise));
  if (!(mix >= 0 && mix <= 1))
    throw ConfigError("[pretrain_language_model] context.mix must be in [0, 1], got " + std::to_string(mix));
  if (!(drop >= 0 && drop < 1))
    throw ConfigError("[pretrain_language_model] context.drop must be in [0, 1), got " + std::to_string(drop));
  if (fill_to < 0)
    throw ConfigError("[pretrain_language_model] context.fill_to must be >= 0 (0 = no fillers), got " +
                      std::to_string(fill_to));
}

LmText parse_lm_text(const std::string& line, const std::string& where) {
  const std::vector<std::string> f = text::split_fields(line, '\t');
  if (f.size() != 1 && f.size() != 3)
    throw InputError(where + ": a corpus line is a text, or context<TAB>prompt<TAB>target; this one has " +
                     std::to_string(f.size() - 1) + " tabs");
  LmText t = f.size() == 1 ? LmText{"", "", f[0]} : LmText{f[0], f[1], f[2]};
  if (split_words(t.target).empty()) throw InputError(where + ": the target text is empty");
  return t;
}

std::vector<LmText> read_lm_corpus(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw InputError("corpus file '" + path + "' cannot be read");
  std::vector<LmText> texts;
  size_t line_no = 0;
  for (std::string line; std::getline(in, line);)
    if (++line_no, !line.empty()) texts.push_back(parse_lm_text(line, path + ":" + std::to_string(line_no)));
  return texts;
}

namespace {

std::string first_line(const std::string& s) { return s.substr(0, s.find('\n')); }

// The weights of dir/model.safetensors copied into `lm` (in place: an
// optimizer holding its parameters keeps them). CheckpointError naming the
// tensor when one is missing or has another shape.
void copy_weights(LanguageModel& lm, const std::string& dir) {
  const auto store = io::TensorStore::open((std::filesystem::path(dir) / "model.safetensors").string());
  torch::NoGradGuard g;
  for (auto& p : lm.named_parameters(true)) {
    if (!store.has(p.key()))
      throw CheckpointError("'" + dir + "/model.safetensors' lacks '" + p.key() +
                            "'; give a `blip2 pretrain lm` output whose dimensions match text_config");
    auto t = store.get(p.key());
    if (t.sizes() != p.value().sizes())
      throw CheckpointError("'" + dir + "/model.safetensors': '" + p.key() + "' has another shape than "
                            "text_config gives; use the config the LM was pretrained with");
    p.value().copy_(t);
  }
}

// What a checkpoint must share with the run that continues it.
nlohmann::json run_identity(const LmPretrainConfig& c) {
  return {{"steps", c.steps},        {"batch_size", c.batch_size}, {"seed", c.seed},
          {"texts", c.texts.size()}, {"max_len", c.max_len},       {"lr", c.optim.lr},
          {"target_only", c.target_only}};
}

// checkpoint_dir as a whole: written beside it, then swapped in (the previous
// one stays as "<dir>.prev" until the new one is in place).
void save_checkpoint(const LmPretrainConfig& c, const LanguageModel& model, torch::optim::AdamW& opt, int64_t step,
                     const std::vector<double>& losses, const std::mt19937_64& rng) {
  namespace fs = std::filesystem;
  const fs::path dir(c.checkpoint_dir), tmp = c.checkpoint_dir + ".tmp", prev = c.checkpoint_dir + ".prev";
  std::error_code ec;
  fs::remove_all(tmp, ec);
  try {
    save_language_model(model, tmp.string());
    write_atomic_stream((tmp / "optimizer.pt").string(), [&](std::ostream& out) { torch::save(opt, out); });
    io::save_safetensors((tmp / "rng.safetensors").string(),
                         {{"torch_default", at::detail::getDefaultCPUGenerator().get_state()}});
    std::ostringstream sampler;
    sampler << rng;
    const nlohmann::json st = {
        {"step", step}, {"run", run_identity(c)}, {"sampler", sampler.str()}, {"losses", losses}};
    write_atomic((tmp / "state.json").string(), st.dump());
    fsync_path(tmp.string());
    fs::remove_all(prev);
    if (fs::exists(dir)) fs::rename(dir, prev);
    fs::rename(tmp, dir);
    fs::remove_all(prev);
  } catch (const std::exception& e) {
    fs::remove_all(tmp, ec);
    throw Error("[pretrain_language_model] the checkpoint at step " + std::to_string(step) +
                " could not be written to '" + c.checkpoint_dir + "': " + first_line(e.what()) +
                " (free space or choose another --out)");
  }
}

// Continues from checkpoint_dir (or the "<dir>.prev" a crash mid-swap left):
// the step it was written at, 0 when there is none.
int64_t load_checkpoint(const LmPretrainConfig& c, LanguageModel& model, torch::optim::AdamW& opt,
                        std::vector<double>& losses, std::mt19937_64& rng) {
  namespace fs = std::filesystem;
  std::string dir = c.checkpoint_dir;
  if (!fs::exists(fs::path(dir) / "state.json")) dir += ".prev";
  if (!fs::exists(fs::path(dir) / "state.json")) return 0;
  nlohmann::json st;
  try {
    std::ifstream in(fs::path(dir) / "state.json");
    in >> st;
    (void)st.at("step").get<int64_t>();
    (void)st.at("run").at("steps");
  } catch (const std::exception& e) {
    throw CheckpointError("'" + dir + "/state.json' is damaged (" + first_line(e.what()) + "); delete '" + dir +
                          "' to start over");
  }
  const auto want = run_identity(c);
  for (const auto& [key, value] : want.items())
    if (st["run"].value(key, nlohmann::json()) != value)
      throw ConfigError("[pretrain_language_model] the checkpoint in '" + dir + "' was written with " + key + " " +
                        st["run"].value(key, nlohmann::json()).dump() + ", this run has " + value.dump() +
                        ": resume with the same settings, or delete it to start over");
  try {
    copy_weights(model, dir);
    torch::load(opt, (fs::path(dir) / "optimizer.pt").string());
    const auto gen = io::load_safetensors((fs::path(dir) / "rng.safetensors").string());
    at::Generator def = at::detail::getDefaultCPUGenerator();
    std::lock_guard<std::mutex> lock(def.mutex());
    def.set_state(gen.at("torch_default"));
    std::istringstream sampler(st.at("sampler").get<std::string>());
    sampler >> rng;
    if (!sampler) throw Error("state.json's sampler state cannot be read");
    losses = st.at("losses").get<std::vector<double>>();
  } catch (const CheckpointError&) {
    throw;
  } catch (const std::exception& e) {
    throw CheckpointError("checkpoint '" + dir + "' is damaged: " + first_line(e.what()) + "; delete it to start over");
  }
  const int64_t step = st.at("step").get<int64_t>();
  if (step < 1 || step > c.steps || static_cast<int64_t>(losses.size()) != step)
    throw CheckpointError("checkpoint '" + dir + "' is damaged: step " + std::to_string(step) + " with " +
                          std::to_string(losses.size()) + " losses; delete it to start over");
  return step;
}

}  // namespace

std::shared_ptr<LanguageModel> load_language_model(const std::string& dir, const TextConfig& text) {
  auto lm = make_language_model(text);
  copy_weights(*lm, dir);
  return lm;
}

LmPretrainResult pretrain_language_model(const LmPretrainConfig& c,
                                         std::function<void(int64_t, double)> on_step) {
  if (c.texts.empty()) throw ConfigError("[pretrain_language_model] the corpus (texts) is empty");
  if (c.steps < 1 || c.batch_size < 1 || c.max_len < 2)
    throw ConfigError("[pretrain_language_model] steps and batch_size must be >= 1 and max_len >= 2");
  c.optim.validate();
  c.context.validate();
  if (c.save_every < 0)
    throw ConfigError("[pretrain_language_model] save_every must be >= 0 (0 = no checkpoints), got " +
                      std::to_string(c.save_every));
  if ((c.save_every > 0 || c.resume) && c.checkpoint_dir.empty())
    throw ConfigError("[pretrain_language_model] save_every and resume need a checkpoint_dir");
  if (c.reference_init && !c.init_dir.empty())
    throw ConfigError("[pretrain_language_model] reference_init initialises a fresh model; with init_dir ('" +
                      c.init_dir + "') the weights come from there: drop one of the two");
  auto tok = load_tokenizer(c.tokenizer_dir);

  torch::manual_seed(c.seed);
  std::mt19937_64 rng(c.seed ^ 0x9e3779b97f4a7c15ULL);
  LmPretrainResult out;
  out.model = c.init_dir.empty() ? make_language_model(c.text) : load_language_model(c.init_dir, c.text);
  auto& model = *out.model;
  if (c.init_dir.empty()) {
    // nn::init_normal leaves T5LayerNorm alone: it keeps its weight of 1.
    torch::NoGradGuard g;
    if (c.reference_init)
      model.init_reference_weights();
    else
      nn::init_normal(model, 0.02);
  }
  model.train();
  auto opt = make_adamw(model, c.optim);
  if (c.resume) out.resumed_from = load_checkpoint(c, model, *opt, out.losses, rng);
  const bool t5 = model.is_encoder_decoder();
  const int64_t pad = model.pad_token_id();
  int64_t max_len = c.max_len;
  if (model.context_length()) max_len = std::min(max_len, *model.context_length());
  const int64_t n = static_cast<int64_t>(c.texts.size());
  auto ids_of = [&](const std::string& t, bool special) {
    return t.empty() && !special ? std::vector<int64_t>{} : tok->encode(t, special);
  };
  // The special tokens the tokenizer puts in front of a text (OPT: BOS).
  const std::vector<int64_t> bos = tok->encode("", true);

  for (int64_t step = out.resumed_from; step < c.steps; ++step) {
    set_learning_rate(*opt, learning_rate(c.optim, step));
    opt->zero_grad();
    torch::Tensor loss;
    if (!t5) {
      // context, BOS, prompt + " " + target + "\n"; BOS and pads are not targets.
      std::vector<std::vector<int64_t>> rows, targets, contexts;
      for (int64_t b = 0; b < c.batch_size; ++b) {
        const LmText& t = c.texts[static_cast<size_t>(draw(rng, n))];
        std::vector<int64_t> row = ids_of(t.context, false);
        if (c.context.fill_to > 0 && !row.empty()) row = fill_context(std::move(row), c.context, rng);
        const size_t bos_at = row.size();
        row.insert(row.end(), bos.begin(), bos.end());
        for (int64_t id : ids_of((t.prompt.empty() ? "" : t.prompt + " ") + t.target + "\n", false)) row.push_back(id);
        if (static_cast<int64_t>(row.size()) > max_len) row.resize(static_cast<size_t>(max_len));
        std::vector<int64_t> target = row;
        // Not predicted: BOS; with target_only also the context and the prompt
        // (the prompt's own tokens: a word-level tokenizer never merges them
        // with the space in front of the target).
        size_t first_target = bos_at + bos.size();
        if (c.target_only && !t.prompt.empty()) first_target += ids_of(t.prompt, false).size();
        for (size_t i = c.target_only ? 0 : bos_at; i < std::min(first_target, target.size()); ++i) target[i] = -100;
        for (auto& id : target)
          if (id == kFiller) id = -100;
        contexts.emplace_back(std::min(bos_at, row.size()), 1);
        rows.push_back(std::move(row));
        targets.push_back(std::move(target));
      }
      auto [ids, mask] = pad_batch(rows, pad);
      auto labels = pad_batch(targets, -100).first;
      const auto context = pad_batch(contexts, 0, false, true).first.to(torch::kBool);
      auto embeds = embed_with_context(model, ids, pad_to(context, ids.size(1)), pad, c.context);
      auto logits = model.forward(embeds, mask, {}, false).logits.to(torch::kFloat);
      const int64_t V = logits.size(2);
      loss = F::cross_entropy(logits.slice(1, 0, logits.size(1) - 1).reshape({-1, V}),
                              labels.slice(1, 1).reshape({-1}), F::CrossEntropyFuncOptions().ignore_index(-100));
    } else {
      std::vector<std::vector<int64_t>> enc, dec, contexts;
      for (int64_t b = 0; b < c.batch_size; ++b) {
        const LmText& t = c.texts[static_cast<size_t>(draw(rng, n))];
        std::string prompt = t.prompt, target = t.target;
        if (prompt.empty()) {  // prefix LM: a random word split of the target
          auto w = split_words(t.target);
          const int64_t k = w.size() > 1 ? draw(rng, static_cast<int64_t>(w.size())) : 0;
          prompt = join(w, 0, static_cast<size_t>(k));
          target = join(w, static_cast<size_t>(k), w.size());
        }
        std::vector<int64_t> e = ids_of(t.context, false);
        if (c.context.fill_to > 0 && !e.empty()) e = fill_context(std::move(e), c.context, rng);
        const size_t context_len = e.size();
        for (int64_t id : ids_of(prompt, true)) e.push_back(id);
        std::vector<int64_t> d = ids_of(target, true);
        // Keep the closing </s> when cutting.
        for (auto* r : {&e, &d})
          if (static_cast<int64_t>(r->size()) > max_len) {
            const int64_t last = r->back();
            r->resize(static_cast<size_t>(max_len));
            r->back() = last;
          }
        contexts.emplace_back(std::min(context_len, e.size()), 1);
        enc.push_back(std::move(e));
        dec.push_back(std::move(d));
      }
      auto [ids, mask] = pad_batch(enc, pad);
      auto labels = pad_batch(dec, -100).first;
      auto dec_in = model.decoder_input_ids(labels);
      const auto context = pad_batch(contexts, 0, false, true).first.to(torch::kBool);
      auto embeds = embed_with_context(model, ids, pad_to(context, ids.size(1)), pad, c.context);
      auto logits = model.forward(embeds, mask, dec_in, false).logits.to(torch::kFloat);
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
    if (c.save_every > 0 && (step + 1) % c.save_every == 0 && step + 1 < c.steps)
      save_checkpoint(c, model, *opt, step + 1, out.losses, rng);
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
