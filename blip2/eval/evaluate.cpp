#include "blip2/eval/evaluate.h"

#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <numeric>
#include <sstream>
#include <unordered_map>

#include "blip2/config/config.h"
#include "blip2/data/image_processor.h"
#include "blip2/data/tokenizer.h"
#include "blip2/model/blip2_model.h"
#include "blip2/nn/ops.h"
#include "blip2/data/text_batch.h"
#include "blip2/io/tensor_store.h"
#include "blip2/lm/language_model.h"
#include "blip2/model/generation.h"
#include "blip2/model/model_dir.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace blip2 {

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

const char* kGenerateHint =
    "generate a split with `blip2 shapes generate --out DIR --split test --count N`, or give --data a directory "
    "that holds one";

// data_dir/<name> parsed as a JSON list of objects.
json read_json_list(const std::string& data_dir, const std::string& name, const std::string& layout) {
  if (!fs::is_directory(data_dir))
    throw InputError("data directory '" + data_dir + "' does not exist; " + kGenerateHint);
  const fs::path path = fs::path(data_dir) / name;
  if (!fs::is_regular_file(path))
    throw InputError("'" + path.string() + "' not found: the data directory needs " + name + " (" + layout + "); " +
                     kGenerateHint);
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  json j;
  try {
    j = json::parse(ss.str());
  } catch (const json::parse_error& e) {
    throw InputError("'" + path.string() + "' is not valid JSON (" + e.what() + "); regenerate it");
  }
  if (!j.is_array())
    throw InputError("'" + path.string() + "' must be a JSON list (" + layout + "), found a " + j.type_name());
  if (j.empty())
    throw InputError("'" + path.string() + "' is an empty data set (no entries); " + kGenerateHint +
                     " with --count >= 1");
  for (size_t i = 0; i < j.size(); ++i)
    if (!j[i].is_object())
      throw InputError("'" + path.string() + "' entry " + std::to_string(i) + " is a " + j[i].type_name() +
                       ", expected an object (" + layout + ")");
  return j;
}

std::string entry_where(const std::string& file, size_t i) { return "'" + file + "' entry " + std::to_string(i); }

std::string get_string(const json& e, const char* key, const std::string& where) {
  auto it = e.find(key);
  if (it == e.end() || !it->is_string())
    throw InputError(where + " has no string \"" + key + "\"" + (it == e.end() ? "" : " (found a " +
                                                                  std::string(it->type_name()) + ")"));
  return it->get<std::string>();
}

// A string or a non-empty list of strings.
std::vector<std::string> get_strings(const json& e, const char* key, const std::string& where) {
  auto it = e.find(key);
  std::vector<std::string> out;
  if (it != e.end() && it->is_string()) {
    out.push_back(it->get<std::string>());
  } else if (it != e.end() && it->is_array()) {
    for (const auto& s : *it) {
      if (!s.is_string())
        throw InputError(where + ": \"" + key + "\" must hold strings, found a " + std::string(s.type_name()));
      out.push_back(s.get<std::string>());
    }
  }
  if (out.empty())
    throw InputError(where + " needs \"" + key + "\": a string or a non-empty list of strings");
  return out;
}

// An image path of an entry, resolved against data_dir and checked to exist.
std::string resolve_image(const std::string& data_dir, const std::string& rel, const std::string& where) {
  fs::path p(rel);
  if (p.is_relative()) p = fs::path(data_dir) / p;
  if (!fs::is_regular_file(p))
    throw InputError("image '" + p.string() + "' (" + where +
                     ") does not exist; image paths are relative to the data directory: regenerate the split or "
                     "fix the path");
  return p.string();
}

int64_t take(size_t n, int64_t limit) {
  if (limit < 0) throw ConfigError("--limit must be >= 0 (0 = all), got " + std::to_string(limit));
  return limit == 0 ? static_cast<int64_t>(n) : std::min<int64_t>(limit, static_cast<int64_t>(n));
}

void check_batch(const EvalOptions& o) {
  if (o.batch_size < 1) throw ConfigError("--batch-size must be >= 1, got " + std::to_string(o.batch_size));
}

void report(const EvalOptions& o, int64_t done, int64_t total) {
  if (o.progress) o.progress(done, total);
}

}  // namespace

// ---------------------------------------------------------------------------
// Metrics wiring

json caption_metrics(const std::vector<std::string>& predictions,
                     const std::vector<std::vector<std::string>>& references) {
  if (predictions.size() != references.size())
    throw InputError("caption_metrics: " + std::to_string(predictions.size()) + " predictions but " +
                     std::to_string(references.size()) + " reference lists");
  if (predictions.empty()) throw InputError("caption_metrics: no captions to score");
  std::vector<std::string> cands;
  std::vector<std::vector<std::string>> refs;
  for (const auto& p : predictions) cands.push_back(ptb_tokenize(p));
  for (const auto& rs : references) {
    std::vector<std::string> t;
    for (const auto& r : rs) t.push_back(ptb_tokenize(r));
    refs.push_back(std::move(t));
  }
  const CiderResult c = cider_d(cands, refs);
  const BleuResult b = bleu(cands, refs);
  return json{{"cider", c.score},
              {"bleu4", b.bleu.at(3)},
              {"bleu", b.bleu},
              {"exact_match", caption_exact_match(predictions, references)},
              {"count", predictions.size()}};
}

json vqa_metrics(const std::vector<std::string>& predictions, const std::vector<std::vector<std::string>>& answers,
                 const std::vector<std::string>& question_types) {
  if (predictions.empty()) throw InputError("vqa_metrics: no answers to score");
  if (!question_types.empty() && question_types.size() != predictions.size())
    throw InputError("vqa_metrics: " + std::to_string(predictions.size()) + " predictions but " +
                     std::to_string(question_types.size()) + " question types");
  const VqaResult r = vqa_accuracy(predictions, answers);
  json out{{"accuracy", r.accuracy}, {"count", predictions.size()}};
  if (!question_types.empty()) {
    std::map<std::string, std::pair<double, int64_t>> per;
    for (size_t i = 0; i < predictions.size(); ++i) {
      auto& s = per[question_types[i]];
      s.first += r.per_question[i];
      s.second += 1;
    }
    json pt = json::object();
    for (const auto& [type, s] : per)
      pt[type] = {{"accuracy", s.first / static_cast<double>(s.second)}, {"count", s.second}};
    out["per_type"] = pt;
  }
  return out;
}

// ---------------------------------------------------------------------------
// Captioning

json evaluate_captions(Pipeline& pipeline, const std::string& data_dir, const EvalOptions& options) {
  const auto t0 = Clock::now();
  check_batch(options);
  if (!pipeline.has_language_model())
    throw ConfigError(
        "this checkpoint is a retrieval model (Blip2ForImageTextRetrieval) without a language model: it cannot "
        "caption; evaluate it with `blip2 eval retrieval`, or give --model an OPT / T5 checkpoint");
  const std::string file = (fs::path(data_dir) / "captions.json").string();
  const json list = read_json_list(data_dir, "captions.json", "a list of {image, caption: [..], image_id}");
  const int64_t n = take(list.size(), options.limit);
  std::vector<std::string> rel(n), paths(n);
  std::vector<std::vector<std::string>> refs(n);
  for (int64_t i = 0; i < n; ++i) {
    const auto where = entry_where(file, static_cast<size_t>(i));
    const json& e = list[static_cast<size_t>(i)];
    rel[i] = get_string(e, "image", where);
    refs[i] = get_strings(e, "caption", where);
    paths[i] = resolve_image(data_dir, rel[i], where);
  }
  const GenerationConfig gen = options.has_generation ? options.generation : Pipeline::caption_defaults();
  std::vector<std::string> preds;
  preds.reserve(static_cast<size_t>(n));
  report(options, 0, n);
  for (int64_t b = 0; b < n; b += options.batch_size) {
    const int64_t e = std::min<int64_t>(n, b + options.batch_size);
    std::vector<Image> imgs;
    for (int64_t i = b; i < e; ++i) imgs.push_back(load_image(paths[i]));
    auto res = pipeline.caption(imgs, options.prompt, gen);
    if (static_cast<int64_t>(res.size()) != e - b)
      throw InputError("captioning returned " + std::to_string(res.size()) + " results for " +
                       std::to_string(e - b) + " images (num_return_sequences must be 1 for evaluation)");
    for (auto& r : res) preds.push_back(r.text);
    report(options, e, n);
  }
  json out = caption_metrics(preds, refs);
  json samples = json::array();
  for (int64_t i = 0; i < std::min<int64_t>(n, options.num_samples); ++i)
    samples.push_back({{"image", rel[i]}, {"prediction", preds[i]}, {"references", refs[i]}});
  out["samples"] = samples;
  out["seconds"] = seconds_since(t0);
  return out;
}

// ---------------------------------------------------------------------------
// VQA

namespace {

struct VqaSet {
  std::vector<std::string> rel, paths, questions, types;  // types empty unless every entry has one
  std::vector<std::vector<std::string>> answers;
};

VqaSet read_vqa_set(const std::string& data_dir, int64_t limit) {
  const std::string file = (fs::path(data_dir) / "questions.json").string();
  const json list =
      read_json_list(data_dir, "questions.json", "a list of {image, question, answer: [..], question_id}");
  const int64_t n = take(list.size(), limit);
  VqaSet s;
  bool has_types = true;
  for (int64_t i = 0; i < n; ++i) has_types = has_types && list[static_cast<size_t>(i)].contains("question_type");
  for (int64_t i = 0; i < n; ++i) {
    const auto where = entry_where(file, static_cast<size_t>(i));
    const json& e = list[static_cast<size_t>(i)];
    s.rel.push_back(get_string(e, "image", where));
    s.questions.push_back(get_string(e, "question", where));
    s.answers.push_back(get_strings(e, "answer", where));
    if (has_types) s.types.push_back(get_string(e, "question_type", where));
    s.paths.push_back(resolve_image(data_dir, s.rel.back(), where));
  }
  return s;
}

}  // namespace

json evaluate_vqa(Pipeline& pipeline, const std::string& data_dir, const EvalOptions& options) {
  const auto t0 = Clock::now();
  check_batch(options);
  if (!pipeline.has_language_model())
    throw ConfigError(
        "this checkpoint is a retrieval model (Blip2ForImageTextRetrieval) without a language model: it cannot "
        "answer questions; give --model an OPT / T5 checkpoint");
  const VqaSet set = read_vqa_set(data_dir, options.limit);
  const int64_t n = static_cast<int64_t>(set.questions.size());
  const auto& rel = set.rel;
  const auto& paths = set.paths;
  const auto& questions = set.questions;
  const auto& answers = set.answers;
  const auto& types = set.types;
  const GenerationConfig gen = options.has_generation ? options.generation : Pipeline::vqa_defaults();
  std::vector<std::string> preds;
  preds.reserve(static_cast<size_t>(n));
  report(options, 0, n);
  for (int64_t b = 0; b < n; b += options.batch_size) {
    const int64_t e = std::min<int64_t>(n, b + options.batch_size);
    std::map<std::string, Image> cache;  // questions about one image share its decode
    std::vector<Image> imgs;
    std::vector<std::string> qs;
    for (int64_t i = b; i < e; ++i) {
      auto it = cache.find(paths[i]);
      if (it == cache.end()) it = cache.emplace(paths[i], load_image(paths[i])).first;
      imgs.push_back(it->second);
      qs.push_back(questions[i]);
    }
    auto res = pipeline.answer(imgs, qs, gen, options.prompt_template);
    if (static_cast<int64_t>(res.size()) != e - b)
      throw InputError("answering returned " + std::to_string(res.size()) + " results for " +
                       std::to_string(e - b) + " questions (num_return_sequences must be 1 for evaluation)");
    for (auto& r : res) preds.push_back(r.text);
    report(options, e, n);
  }
  json out = vqa_metrics(preds, answers, types);
  json samples = json::array();
  for (int64_t i = 0; i < std::min<int64_t>(n, options.num_samples); ++i)
    samples.push_back({{"image", rel[i]},
                       {"question", questions[i]},
                       {"prediction", preds[i]},
                       {"answers", answers[i]},
                       {"accuracy", vqa_accuracy(preds[i], answers[i])}});
  out["samples"] = samples;
  out["seconds"] = seconds_since(t0);
  return out;
}

json evaluate_text_vqa(const std::string& lm_dir, const TextConfig& text, const std::string& data_dir,
                       const EvalOptions& options) {
  const auto t0 = Clock::now();
  check_batch(options);
  const VqaSet set = read_vqa_set(data_dir, options.limit);
  // The caption of every image: the first reference.
  std::map<std::string, std::string> caption_of;
  {
    const std::string file = (fs::path(data_dir) / "captions.json").string();
    const json caps = read_json_list(data_dir, "captions.json", "a list of {image, caption: [..], image_id}");
    for (size_t i = 0; i < caps.size(); ++i) {
      const auto where = entry_where(file, i);
      const auto refs = get_strings(caps[i], "caption", where);
      if (refs.empty()) throw InputError(where + ": \"caption\" is an empty list");
      caption_of[resolve_image(data_dir, get_string(caps[i], "image", where), where)] = refs.front();
    }
  }
  auto tok = load_tokenizer(lm_dir);
  auto lm = make_language_model(text);
  {
    const auto store = io::TensorStore::open((fs::path(lm_dir) / "model.safetensors").string());
    torch::NoGradGuard g;
    for (auto& p : lm->named_parameters(true)) {
      if (!store.has(p.key()))
        throw CheckpointError("'" + lm_dir + "/model.safetensors' lacks '" + p.key() +
                              "'; give a `blip2 pretrain lm` output whose dimensions match text_config");
      auto t = store.get(p.key());
      if (t.sizes() != p.value().sizes())
        throw CheckpointError("'" + lm_dir + "/model.safetensors': '" + p.key() + "' has another shape than "
                              "text_config gives; use the config the LM was pretrained with");
      p.value().copy_(t);
    }
  }
  lm->eval();
  torch::NoGradGuard g;
  const bool t5 = lm->is_encoder_decoder();
  const std::string tmpl = options.prompt_template.empty() ? lm->vqa_template() : options.prompt_template;
  text::fill_template(tmpl, "");  // InputError for a template without {}, before any work
  GenerationConfig gen = options.has_generation ? options.generation : Pipeline::vqa_defaults();
  const int64_t pad = tok->pad_id().value_or(lm->pad_token_id());
  const int64_t n = static_cast<int64_t>(set.questions.size());
  std::vector<std::string> preds;
  report(options, 0, n);
  for (int64_t b = 0; b < n; b += options.batch_size) {
    const int64_t e = std::min<int64_t>(n, b + options.batch_size);
    std::vector<std::vector<int64_t>> rows;
    for (int64_t i = b; i < e; ++i) {
      auto it = caption_of.find(set.paths[static_cast<size_t>(i)]);
      if (it == caption_of.end())
        throw InputError("questions.json asks about '" + set.rel[static_cast<size_t>(i)] +
                         "', which captions.json does not caption; text VQA reads the scene from its caption");
      std::vector<int64_t> row = tok->encode(it->second, false);
      for (int64_t id : tok->encode(text::fill_template(tmpl, set.questions[static_cast<size_t>(i)]), true)) row.push_back(id);  // OPT: BOS first; T5: </s> last
      rows.push_back(std::move(row));
    }
    auto [ids, mask] = pad_batch(rows, pad, /*left_pad=*/!t5);
    auto out = generate(*lm, lm->embed_tokens(ids), mask, gen, lm->eos_token_id(), lm->pad_token_id());
    auto seqs = out.sequences.to(torch::kCPU);
    for (int64_t r = 0; r < seqs.size(0); ++r) {
      std::vector<int64_t> t(seqs[r].data_ptr<int64_t>(), seqs[r].data_ptr<int64_t>() + seqs.size(1));
      preds.push_back(text::py_strip(tok->decode(t, /*skip_special_tokens=*/true)));
    }
    report(options, e, n);
  }
  json out = vqa_metrics(preds, set.answers, set.types);
  json samples = json::array();
  for (int64_t i = 0; i < std::min<int64_t>(n, options.num_samples); ++i)
    samples.push_back({{"image", set.rel[i]},
                       {"question", set.questions[i]},
                       {"prediction", preds[i]},
                       {"answers", set.answers[i]},
                       {"accuracy", vqa_accuracy(preds[i], set.answers[i])}});
  out["samples"] = samples;
  out["seconds"] = seconds_since(t0);
  return out;
}

// ---------------------------------------------------------------------------
// Retrieval

RetrievalSet read_retrieval_set(const std::string& data_dir, int64_t limit) {
  const std::string file = (fs::path(data_dir) / "captions.json").string();
  const json list = read_json_list(data_dir, "captions.json", "a list of {image, caption: [..], image_id}");
  const int64_t n = take(list.size(), limit);
  RetrievalSet s;
  std::unordered_map<std::string, int64_t> text_index;
  for (int64_t i = 0; i < n; ++i) {
    const auto where = entry_where(file, static_cast<size_t>(i));
    const json& e = list[static_cast<size_t>(i)];
    s.images.push_back(resolve_image(data_dir, get_string(e, "image", where), where));
    std::vector<int64_t> mine;
    for (auto& c : get_strings(e, "caption", where)) {
      auto [it, fresh] = text_index.emplace(c, static_cast<int64_t>(s.texts.size()));
      if (fresh) {
        s.texts.push_back(std::move(c));
        s.txt2img.emplace_back();
      }
      if (std::find(mine.begin(), mine.end(), it->second) != mine.end()) continue;  // repeated in one entry
      mine.push_back(it->second);
      s.txt2img[static_cast<size_t>(it->second)].push_back(i);
    }
    s.img2txt.push_back(std::move(mine));
  }
  return s;
}

namespace {

// Puts a module tree in eval mode and restores every submodule's own mode on
// scope exit (a training model may hold frozen parts in eval mode).
class EvalModeGuard {
 public:
  explicit EvalModeGuard(torch::nn::Module& root) {
    save(root);
    root.eval();
  }
  ~EvalModeGuard() {
    // Pre-order: a parent's train() recurses, then its children are set again.
    for (auto& [m, on] : saved_) m->train(on);
  }

 private:
  void save(torch::nn::Module& m) {
    saved_.emplace_back(&m, m.is_training());
    for (const auto& c : m.children()) save(*c);
  }
  std::vector<std::pair<torch::nn::Module*, bool>> saved_;
};

// Indices of the k largest values of row[0..n), best first; ties keep the lower index first.
std::vector<int64_t> top_k(const float* row, int64_t n, int64_t k) {
  std::vector<int64_t> idx(static_cast<size_t>(n));
  std::iota(idx.begin(), idx.end(), 0);
  std::partial_sort(idx.begin(), idx.begin() + k, idx.end(), [row](int64_t a, int64_t b) {
    return row[a] > row[b] || (row[a] == row[b] && a < b);
  });
  idx.resize(static_cast<size_t>(k));
  return idx;
}

}  // namespace

RetrievalScores retrieval_scores(Blip2ModelImpl& model, const Tokenizer& tokenizer,
                                 const ImageProcessorConfig& processor, const RetrievalSet& set,
                                 const EvalOptions& options) {
  check_batch(options);
  if (!model.parts().retrieval)
    throw ConfigError(
        "retrieval evaluation needs a checkpoint with retrieval heads (config.json architectures "
        "[\"Blip2ForImageTextRetrieval\"]: ITC projections and itm_head); this one has none: give --model a "
        "retrieval checkpoint");
  if (options.rerank_k < 1) throw ConfigError("--rerank-k must be >= 1, got " + std::to_string(options.rerank_k));
  if (options.itm_batch_size < 1)
    throw ConfigError("itm_batch_size must be >= 1, got " + std::to_string(options.itm_batch_size));
  const int64_t max_len = std::min<int64_t>(options.max_text_tokens, model.config().qformer.max_position_embeddings);
  if (max_len < 2) throw ConfigError("max_text_tokens must be >= 2, got " + std::to_string(options.max_text_tokens));
  const int64_t Ni = static_cast<int64_t>(set.images.size()), Nt = static_cast<int64_t>(set.texts.size());
  if (Ni == 0 || Nt == 0)
    throw InputError("the retrieval set is empty (" + std::to_string(Ni) + " images, " + std::to_string(Nt) +
                     " texts)");
  if (static_cast<int64_t>(set.img2txt.size()) != Ni || static_cast<int64_t>(set.txt2img.size()) != Nt)
    throw InputError("retrieval set: img2txt / txt2img sizes do not match the images / texts");

  torch::NoGradGuard no_grad;
  EvalModeGuard mode(model);
  const torch::Device device = model.query_tokens.device();
  const torch::ScalarType dtype = model.query_tokens.scalar_type();
  // Progress: images + texts (features), then Ni + Nt units for the re-ranking.
  const int64_t total = 2 * (Ni + Nt);
  report(options, 0, total);

  // Image side: ViT features (kept for ITM, as LAVIS's vit_feats) and ITC query features.
  std::vector<torch::Tensor> vit_chunks, img_chunks;
  for (int64_t b = 0; b < Ni; b += options.batch_size) {
    const int64_t e = std::min<int64_t>(Ni, b + options.batch_size);
    std::vector<Image> imgs;
    for (int64_t i = b; i < e; ++i) imgs.push_back(load_image(set.images[static_cast<size_t>(i)]));
    auto px = preprocess_batch(imgs, processor).to(device, dtype);
    auto v = model.encode_image(px).last_hidden_state;
    img_chunks.push_back(model.image_features(v).to(torch::kCPU, torch::kFloat));
    vit_chunks.push_back(v);
    report(options, e, total);
  }
  const torch::Tensor vit = torch::cat(vit_chunks, 0);        // (Ni, P, Dv) on the model's device
  const torch::Tensor img_feats = torch::cat(img_chunks, 0);  // (Ni, Q, E) float CPU
  vit_chunks.clear();

  // Text side: token ids padded to the longest (LAVIS pads to max_length; the
  // padding is masked out), [CLS] ITC features.
  const int64_t pad = tokenizer.pad_id().value_or(0);
  std::vector<std::vector<int64_t>> rows;
  int64_t L = 1;
  for (const auto& t : set.texts) {
    auto ids = tokenizer.encode(t, true);
    if (ids.empty()) throw InputError("text '" + t + "' tokenises to nothing");
    if (static_cast<int64_t>(ids.size()) > max_len) {
      const int64_t last = ids.back();
      ids.resize(static_cast<size_t>(max_len));
      ids.back() = last;
    }
    L = std::max<int64_t>(L, static_cast<int64_t>(ids.size()));
    rows.push_back(std::move(ids));
  }
  torch::Tensor text_ids = torch::full({Nt, L}, pad, torch::kLong);
  torch::Tensor text_mask = torch::zeros({Nt, L}, torch::kLong);
  {
    auto ia = text_ids.accessor<int64_t, 2>();
    auto ma = text_mask.accessor<int64_t, 2>();
    for (int64_t t = 0; t < Nt; ++t)
      for (size_t j = 0; j < rows[static_cast<size_t>(t)].size(); ++j) {
        ia[t][static_cast<int64_t>(j)] = rows[static_cast<size_t>(t)][j];
        ma[t][static_cast<int64_t>(j)] = 1;
      }
  }
  text_ids = text_ids.to(device);
  text_mask = text_mask.to(device);
  const int64_t text_bs = std::max<int64_t>(options.batch_size, options.itm_batch_size);
  std::vector<torch::Tensor> txt_chunks;
  for (int64_t b = 0; b < Nt; b += text_bs) {
    const int64_t e = std::min<int64_t>(Nt, b + text_bs);
    auto f = model.text_features(text_ids.slice(0, b, e), text_mask.slice(0, b, e)).first;
    txt_chunks.push_back(f.select(1, 0).to(torch::kCPU, torch::kFloat));
    report(options, Ni + e, total);
  }
  const torch::Tensor txt_feats = torch::cat(txt_chunks, 0);  // (Nt, E)

  // ITC similarity: max over queries.
  torch::Tensor sims = torch::empty({Ni, Nt}, torch::kFloat);
  for (int64_t b = 0; b < Ni; b += 256) {
    const int64_t e = std::min<int64_t>(Ni, b + 256);
    sims.slice(0, b, e).copy_(Blip2ModelImpl::itc_similarity(img_feats.slice(0, b, e), txt_feats));
  }
  sims = sims.contiguous();
  const torch::Tensor sims_t = sims.t().contiguous();

  RetrievalScores out;
  {
    std::vector<double> v(static_cast<size_t>(Ni * Nt));
    const float* s = sims.data_ptr<float>();
    for (size_t j = 0; j < v.size(); ++j) v[j] = s[j];
    out.itc = ScoreMatrix(Ni, Nt, std::move(v));
  }
  out.i2t = ScoreMatrix(Ni, Nt, std::vector<double>(static_cast<size_t>(Ni * Nt), -100.0));
  out.t2i = ScoreMatrix(Nt, Ni, std::vector<double>(static_cast<size_t>(Ni * Nt), -100.0));

  // The (image, text) pairs to re-rank: each image's top k texts and each
  // text's top k images by ITC; each distinct pair gets one ITM pass (its
  // logit does not depend on the direction).
  const int64_t k_t = std::min(options.rerank_k, Nt), k_i = std::min(options.rerank_k, Ni);
  std::vector<std::pair<int64_t, int64_t>> pairs;  // (image, text)
  std::unordered_map<int64_t, size_t> pair_index;  // image * Nt + text -> index in pairs
  std::vector<std::vector<int64_t>> i2t_top(static_cast<size_t>(Ni)), t2i_top(static_cast<size_t>(Nt));
  auto add_pair = [&](int64_t i, int64_t t) {
    if (pair_index.emplace(i * Nt + t, pairs.size()).second) pairs.emplace_back(i, t);
  };
  for (int64_t i = 0; i < Ni; ++i) {
    i2t_top[static_cast<size_t>(i)] = top_k(sims.data_ptr<float>() + i * Nt, Nt, k_t);
    for (int64_t t : i2t_top[static_cast<size_t>(i)]) add_pair(i, t);
  }
  for (int64_t t = 0; t < Nt; ++t) {
    t2i_top[static_cast<size_t>(t)] = top_k(sims_t.data_ptr<float>() + t * Ni, Ni, k_i);
    for (int64_t i : t2i_top[static_cast<size_t>(t)]) add_pair(i, t);
  }

  // ITM match logits (LAVIS compute_itm: itm_head over the query outputs,
  // logit 1 averaged over queries) on the cached ViT features.
  std::vector<double> itm(pairs.size());
  const int64_t P = static_cast<int64_t>(pairs.size());
  for (int64_t b = 0; b < P; b += options.itm_batch_size) {
    const int64_t e = std::min<int64_t>(P, b + options.itm_batch_size);
    std::vector<int64_t> ii, tt;
    for (int64_t j = b; j < e; ++j) {
      ii.push_back(pairs[static_cast<size_t>(j)].first);
      tt.push_back(pairs[static_cast<size_t>(j)].second);
    }
    auto ii_t = torch::tensor(ii, torch::kLong).to(device), tt_t = torch::tensor(tt, torch::kLong).to(device);
    auto image_in = vit.index_select(0, ii_t);
    auto ids = text_ids.index_select(0, tt_t), mask = text_mask.index_select(0, tt_t);
    const int64_t B = e - b;
    auto logit = model.itm_logits(image_in, ids, mask).select(1, 1).to(torch::kCPU, torch::kFloat);
    const float* lp = logit.data_ptr<float>();
    for (int64_t j = 0; j < B; ++j) itm[static_cast<size_t>(b + j)] = lp[j];
    report(options, Ni + Nt + (Ni + Nt) * e / std::max<int64_t>(P, 1), total);
  }

  // score = ITM logit + ITC similarity, as LAVIS (score + topk_sim).
  for (int64_t i = 0; i < Ni; ++i)
    for (int64_t t : i2t_top[static_cast<size_t>(i)])
      out.i2t.values[static_cast<size_t>(i * Nt + t)] =
          itm[pair_index.at(i * Nt + t)] + static_cast<double>(sims.data_ptr<float>()[i * Nt + t]);
  for (int64_t t = 0; t < Nt; ++t)
    for (int64_t i : t2i_top[static_cast<size_t>(t)])
      out.t2i.values[static_cast<size_t>(t * Ni + i)] =
          itm[pair_index.at(i * Nt + t)] + static_cast<double>(sims.data_ptr<float>()[i * Nt + t]);
  report(options, total, total);
  return out;
}

json retrieval_metrics_json(const RetrievalMetrics& m) {
  return json{{"txt_r1", m.txt_r1},         {"txt_r5", m.txt_r5}, {"txt_r10", m.txt_r10},
              {"txt_r_mean", m.txt_r_mean}, {"img_r1", m.img_r1}, {"img_r5", m.img_r5},
              {"img_r10", m.img_r10},       {"img_r_mean", m.img_r_mean}, {"r_mean", m.r_mean},
              {"agg_metrics", m.agg_metrics}};
}

json evaluate_retrieval(Blip2ModelImpl& model, const Tokenizer& tokenizer, const ImageProcessorConfig& processor,
                        const std::string& data_dir, const EvalOptions& options) {
  const auto t0 = Clock::now();
  if (!model.parts().retrieval)  // before reading any data
    throw ConfigError(
        "retrieval evaluation needs a checkpoint with retrieval heads (config.json architectures "
        "[\"Blip2ForImageTextRetrieval\"]: ITC projections and itm_head); this one has none: give --model a "
        "retrieval checkpoint");
  const RetrievalSet set = read_retrieval_set(data_dir, options.limit);
  const RetrievalScores s = retrieval_scores(model, tokenizer, processor, set, options);
  json out = retrieval_metrics_json(retrieval_recall(s.i2t, s.t2i, set.img2txt, set.txt2img));
  out["itc_only"] = retrieval_metrics_json(retrieval_recall(s.itc, s.itc.transposed(), set.img2txt, set.txt2img));
  out["count"] = set.images.size();
  out["texts"] = set.texts.size();
  out["rerank_k"] = options.rerank_k;
  out["seconds"] = seconds_since(t0);
  return out;
}

json evaluate_retrieval(const std::string& model_dir, const std::string& data_dir, const EvalOptions& options,
                        const PipelineOptions& pipeline_options) {
  const auto t0 = Clock::now();
  if (!fs::is_directory(model_dir))
    throw ConfigError("model directory '" + model_dir +
                      "' does not exist; give the path of a BLIP-2 retrieval checkpoint directory");
  const std::string config_path = (fs::path(model_dir) / "config.json").string();
  const Blip2Config config = Blip2Config::from_file(config_path);
  if (!Blip2Parts::from_config(config).retrieval) {
    std::string arch;
    for (const auto& a : config.architectures) arch += (arch.empty() ? "" : ", ") + a;
    throw ConfigError("'" + config_path + "' describes a model without retrieval heads (architectures [" + arch +
                      "]); retrieval evaluation needs a Blip2ForImageTextRetrieval checkpoint (ITC/ITM heads): give "
                      "--model a retrieval model, or evaluate this one with `blip2 eval caption` / `blip2 eval vqa`");
  }
  // The data are checked before the (possibly long) weight load.
  (void)read_retrieval_set(data_dir, options.limit);
  ModelDir m = load_model_dir(model_dir, pipeline_options);
  json out = evaluate_retrieval(*m.model, *m.tokenizer, m.processor, data_dir, options);
  out["seconds"] = seconds_since(t0);
  return out;
}

}  // namespace blip2
