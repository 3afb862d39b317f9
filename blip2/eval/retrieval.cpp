// Image-text retrieval evaluation: ITC ranking of every pair, ITM
// re-ranking of each row's top k (LAVIS), TR@k / IR@k.
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <numeric>
#include <unordered_map>

#include "blip2/config/config.h"
#include "blip2/data/image_processor.h"
#include "blip2/data/text_batch.h"
#include "blip2/data/tokenizer.h"
#include "blip2/eval/annotations.h"
#include "blip2/eval/evaluate.h"
#include "blip2/model/blip2_model.h"
#include "blip2/model/model_dir.h"
#include "blip2/nn/ops.h"
#include "blip2/util/progress.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace blip2 {

using namespace annotations;
using Clock = std::chrono::steady_clock;

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
  options.validate();
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
  options.report(0, total);

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
    options.report(e, total);
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
    options.report(Ni + e, total);
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
    auto logit = model.itm_logits(image_in, ids, mask).select(1, 1).to(torch::kCPU, torch::kFloat).contiguous();
    const float* lp = logit.data_ptr<float>();
    for (int64_t j = 0; j < B; ++j) itm[static_cast<size_t>(b + j)] = lp[j];
    options.report(Ni + Nt + (Ni + Nt) * e / std::max<int64_t>(P, 1), total);
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
  options.report(total, total);
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
