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
#include "blip2/eval/annotations.h"
#include "blip2/model/blip2_model.h"
#include "blip2/nn/ops.h"
#include "blip2/util/progress.h"
#include "blip2/data/text_batch.h"
#include "blip2/io/tensor_store.h"
#include "blip2/lm/language_model.h"
#include "blip2/model/generation.h"
#include "blip2/model/model_dir.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace blip2 {

using namespace annotations;
using Clock = std::chrono::steady_clock;

void EvalOptions::validate() const {
  if (batch_size < 1) throw ConfigError("--batch-size must be >= 1, got " + std::to_string(batch_size));
  if (limit < 0) throw ConfigError("--limit must be >= 0 (0 = all), got " + std::to_string(limit));
  if (num_samples < 0)
    throw ConfigError("--samples must be >= 0 (how many predictions the JSON lists), got " +
                      std::to_string(num_samples));
}

void EvalOptions::report(int64_t done, int64_t total) const {
  if (progress) progress(done, total);
}

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
  options.validate();
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
  options.report(0, n);
  for (int64_t b = 0; b < n; b += options.batch_size) {
    const int64_t e = std::min<int64_t>(n, b + options.batch_size);
    std::vector<Image> imgs;
    for (int64_t i = b; i < e; ++i) imgs.push_back(load_image(paths[i]));
    auto res = pipeline.caption(imgs, options.prompt, gen);
    if (static_cast<int64_t>(res.size()) != e - b)
      throw InputError("captioning returned " + std::to_string(res.size()) + " results for " +
                       std::to_string(e - b) + " images (num_return_sequences must be 1 for evaluation)");
    for (auto& r : res) preds.push_back(r.text);
    options.report(e, n);
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

json evaluate_vqa(Pipeline& pipeline, const std::string& data_dir, const EvalOptions& options) {
  const auto t0 = Clock::now();
  options.validate();
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
  options.report(0, n);
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
    options.report(e, n);
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


}  // namespace blip2
