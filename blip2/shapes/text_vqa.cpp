#include "blip2/shapes/text_vqa.h"

#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <map>

#include "blip2/data/text_batch.h"
#include "blip2/data/tokenizer.h"
#include "blip2/eval/annotations.h"
#include "blip2/lm/language_model.h"
#include "blip2/shapes/lm_pretrain.h"
#include "blip2/model/generation.h"
#include "blip2/util/error.h"
#include "blip2/util/progress.h"

namespace fs = std::filesystem;

namespace blip2 {

using namespace annotations;
using nlohmann::json;
using Clock = std::chrono::steady_clock;

nlohmann::json evaluate_text_vqa(const std::string& lm_dir, const TextConfig& text, const std::string& data_dir,
                       const EvalOptions& options) {
  const auto t0 = Clock::now();
  options.validate();
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
  auto lm = load_language_model(lm_dir, text);
  lm->eval();
  torch::NoGradGuard g;
  const bool t5 = lm->is_encoder_decoder();
  const std::string tmpl = options.prompt_template.empty() ? lm->vqa_template() : options.prompt_template;
  text::fill_template(tmpl, "");  // InputError for a template without {}, before any work
  GenerationConfig gen = options.has_generation ? options.generation : Pipeline::vqa_defaults();
  const int64_t pad = tok->pad_id().value_or(lm->pad_token_id());
  const int64_t n = static_cast<int64_t>(set.questions.size());
  std::vector<std::string> preds;
  options.report(0, n);
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
    options.report(e, n);
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

}  // namespace blip2
