// blip2/eval/evaluate.h: the caption / VQA / retrieval evaluations on tiny
// random models and a small generated shapes split. The metrics themselves
// are tested in metrics_test.cpp; here the wiring (fields, counts, batching,
// LAVIS's ITC + ITM re-ranking) and the error messages.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>

#include "blip2/blip2.h"
#include "blip2/data/image_processor.h"
#include "blip2/shapes/shapes.h"
#include "blip2/data/tokenizer.h"
#include "blip2/eval/evaluate.h"
#include "blip2/model/blip2_model.h"
#include "e2e_util.h"
#include "model_fixtures.h"
#include "test_util.h"

namespace blip2 {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

constexpr int kImageSize = 32;  // shapes::generate_split needs >= 32

Blip2Config eval_config() {
  auto c = test::tiny_config("opt");
  c.vision.image_size = kImageSize;
  c.vision.patch_size = 8;
  c.text.opt.vocab_size = 100;                // write_opt_tokenizer's 100 ids
  c.text.opt.max_position_embeddings = 128;   // character-level prompts are long
  return c;
}

void make_opt_model(const std::string& dir) {
  auto c = eval_config();
  Blip2Model m(c, Blip2Parts::from_config(c));
  test::randomize(*m, 11);
  test::save_checkpoint(*m, dir);
  test::write_opt_tokenizer(dir);
}

void make_retrieval_model(const std::string& dir) {
  auto c = eval_config();
  c.architectures = {"Blip2ForImageTextRetrieval"};
  Blip2Model m(c, Blip2Parts::from_config(c));
  ASSERT_TRUE(m->parts().retrieval);
  test::randomize(*m, 12);
  test::save_checkpoint(*m, dir);
  std::vector<std::string> words = {"a", "small", "large", "to", "the", "left", "right", "of", "above", "below",
                                    ",", "and"};
  for (const auto& w : shapes::shape_names()) words.push_back(w);
  for (const auto& w : shapes::color_names()) words.push_back(w);
  test::write_bert_vocab(dir, words);
}

class EvaluateTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    tmp_ = new test::TempDir();
    fs::create_directories(opt_dir());
    fs::create_directories(ret_dir());
    make_opt_model(opt_dir());
    make_retrieval_model(ret_dir());
    shapes::generate_split(data_dir(), shapes::Split::kTest, 6, 7, kImageSize);
  }
  static void TearDownTestSuite() {
    delete tmp_;
    tmp_ = nullptr;
  }
  static std::string opt_dir() { return tmp_->file("opt"); }
  static std::string ret_dir() { return tmp_->file("retrieval"); }
  static std::string data_dir() { return tmp_->file("data"); }
  static json read(const std::string& path) {
    std::ifstream in(path);
    return json::parse(in);
  }
  static EvalOptions quick() {
    EvalOptions o;
    o.batch_size = 4;
    o.has_generation = true;
    o.generation.num_beams = 1;
    o.generation.max_new_tokens = 4;
    o.generation.min_new_tokens = 1;
    return o;
  }
  static test::TempDir* tmp_;
};
test::TempDir* EvaluateTest::tmp_ = nullptr;

// ---- metric wiring with known answers ----

TEST(EvaluateMetricsTest, PredictionsEqualToReferencesScorePerfectly) {
  const std::vector<std::vector<std::string>> refs = {
      {"a large red circle"},
      {"a small blue square to the left of a large green star", "a large green star to the right of a small blue square"},
      {"a small red circle, a large blue star and a small green triangle"}};
  // Each prediction equals one reference (case, final period and the comma
  // do not matter after PTB tokenisation).
  const std::vector<std::string> preds = {"A large red circle.", "a large green star to the right of a small blue square",
                                          "a small red circle , a large blue star and a small green triangle"};
  const json m = caption_metrics(preds, refs);
  EXPECT_DOUBLE_EQ(m["exact_match"].get<double>(), 1.0);
  EXPECT_EQ(m["count"].get<int64_t>(), 3);
  EXPECT_NEAR(m["bleu4"].get<double>(), 1.0, 1e-6);
  ASSERT_EQ(m["bleu"].size(), 4u);
  for (const auto& b : m["bleu"]) EXPECT_NEAR(b.get<double>(), 1.0, 1e-6);
  // One reference per image, candidate == reference: every per-n cosine is 1,
  // so CIDEr-D = 10 (x10 of the mean of 1s, no length penalty).
  const std::vector<std::vector<std::string>> single = {{"a large red circle"}, {"a small blue square"},
                                                        {"a large green star"}};
  const json s = caption_metrics({"a large red circle", "a small blue square", "a large green star"}, single);
  EXPECT_NEAR(s["cider"].get<double>(), 10.0, 1e-9);
  EXPECT_DOUBLE_EQ(s["exact_match"].get<double>(), 1.0);
}

TEST(EvaluateMetricsTest, WrongPredictionsLowerEveryScore) {
  const std::vector<std::vector<std::string>> refs = {{"a large red circle"}, {"a small blue square"},
                                                      {"a large green star"}, {"a small yellow triangle"}};
  const json m = caption_metrics({"a large red circle", "a small blue square", "a large red star", "a circle"}, refs);
  EXPECT_DOUBLE_EQ(m["exact_match"].get<double>(), 0.5);
  EXPECT_LT(m["cider"].get<double>(), 10.0);
  EXPECT_GT(m["cider"].get<double>(), 0.0);
  EXPECT_LT(m["bleu4"].get<double>(), 1.0);
  // Hand check of the metrics module's own values.
  std::vector<std::string> c = {"a large red circle", "a small blue square", "a large red star", "a circle"};
  std::vector<std::vector<std::string>> r = refs;
  EXPECT_NEAR(m["cider"].get<double>(), cider_d(c, r).score, 1e-12);
  EXPECT_NEAR(m["bleu4"].get<double>(), bleu(c, r).bleu[3], 1e-12);
  EXPECT_THROW_WITH(caption_metrics({"a"}, {}), InputError, "1 predictions but 0");
  EXPECT_THROW_WITH(caption_metrics({}, {}), InputError, "no captions");
}

TEST(EvaluateMetricsTest, VqaMetricsPerQuestionType) {
  const std::vector<std::string> preds = {"red", "Two", "yes", "circle"};
  const std::vector<std::vector<std::string>> answers = {{"red"}, {"two"}, {"no"}, {"square"}};
  const json m = vqa_metrics(preds, answers, {"color", "count", "exists", "color"});
  EXPECT_DOUBLE_EQ(m["accuracy"].get<double>(), 0.5);
  EXPECT_EQ(m["count"].get<int64_t>(), 4);
  EXPECT_DOUBLE_EQ(m["per_type"]["color"]["accuracy"].get<double>(), 0.5);
  EXPECT_EQ(m["per_type"]["color"]["count"].get<int64_t>(), 2);
  EXPECT_DOUBLE_EQ(m["per_type"]["count"]["accuracy"].get<double>(), 1.0);
  EXPECT_DOUBLE_EQ(m["per_type"]["exists"]["accuracy"].get<double>(), 0.0);
  EXPECT_FALSE(vqa_metrics(preds, answers).contains("per_type"));
}

// ---- captioning ----

TEST_F(EvaluateTest, CaptionsOnTinyOptModel) {
  auto p = Pipeline::load(opt_dir());
  auto o = quick();
  std::vector<std::pair<int64_t, int64_t>> calls;
  o.progress = [&](int64_t d, int64_t t) { calls.emplace_back(d, t); };
  const json r = evaluate_captions(p, data_dir(), o);
  for (const char* k : {"cider", "bleu4", "exact_match", "count", "seconds", "samples"})
    EXPECT_TRUE(r.contains(k)) << k;
  EXPECT_EQ(r["count"].get<int64_t>(), 6);
  EXPECT_GE(r["cider"].get<double>(), 0.0);
  EXPECT_GE(r["bleu4"].get<double>(), 0.0);
  EXPECT_LE(r["bleu4"].get<double>(), 1.0);
  EXPECT_GE(r["exact_match"].get<double>(), 0.0);
  EXPECT_LE(r["exact_match"].get<double>(), 1.0);
  EXPECT_GE(r["seconds"].get<double>(), 0.0);
  ASSERT_EQ(r["samples"].size(), 6u);
  const json caps = read(data_dir() + "/captions.json");
  std::vector<std::string> preds;
  std::vector<std::vector<std::string>> refs;
  for (size_t i = 0; i < 6; ++i) {
    const auto& s = r["samples"][i];
    EXPECT_EQ(s["image"], caps[i]["image"]);
    EXPECT_EQ(s["references"], caps[i]["caption"]);
    preds.push_back(s["prediction"].get<std::string>());
    refs.push_back(s["references"].get<std::vector<std::string>>());
  }
  // The reported metrics are those of the reported predictions.
  const json m = caption_metrics(preds, refs);
  EXPECT_DOUBLE_EQ(r["cider"].get<double>(), m["cider"].get<double>());
  EXPECT_DOUBLE_EQ(r["bleu4"].get<double>(), m["bleu4"].get<double>());
  EXPECT_DOUBLE_EQ(r["exact_match"].get<double>(), m["exact_match"].get<double>());
  // Batches of 4: 0/6, 4/6, 6/6.
  ASSERT_EQ(calls.size(), 3u);
  EXPECT_EQ(calls.back().first, 6);
  EXPECT_EQ(calls.back().second, 6);
  // Same predictions one image at a time (greedy): batching does not change them.
  auto o1 = quick();
  o1.batch_size = 1;
  o1.limit = 3;
  const json r1 = evaluate_captions(p, data_dir(), o1);
  EXPECT_EQ(r1["count"].get<int64_t>(), 3);
  for (size_t i = 0; i < 3; ++i) EXPECT_EQ(r1["samples"][i]["prediction"], r["samples"][i]["prediction"]);
}

// ---- VQA ----

TEST_F(EvaluateTest, VqaOnTinyOptModel) {
  auto p = Pipeline::load(opt_dir());
  auto o = quick();
  o.generation.max_new_tokens = 2;
  const json r = evaluate_vqa(p, data_dir(), o);
  const json qs = read(data_dir() + "/questions.json");
  EXPECT_EQ(r["count"].get<size_t>(), qs.size());
  EXPECT_GE(r["accuracy"].get<double>(), 0.0);
  EXPECT_LE(r["accuracy"].get<double>(), 1.0);
  ASSERT_TRUE(r.contains("per_type"));
  int64_t sum = 0;
  for (const auto& [type, v] : r["per_type"].items()) {
    sum += v["count"].get<int64_t>();
    EXPECT_GE(v["accuracy"].get<double>(), 0.0);
    EXPECT_LE(v["accuracy"].get<double>(), 1.0);
  }
  EXPECT_EQ(sum, static_cast<int64_t>(qs.size()));
  ASSERT_EQ(r["samples"].size(), std::min<size_t>(20, qs.size()));
  double acc = 0;
  for (const auto& s : r["samples"]) {
    EXPECT_TRUE(s.contains("question") && s.contains("prediction") && s.contains("answers"));
    acc += s["accuracy"].get<double>();
  }
  if (qs.size() <= 20) EXPECT_NEAR(acc / static_cast<double>(qs.size()), r["accuracy"].get<double>(), 1e-12);
  auto o2 = o;
  o2.limit = 5;
  EXPECT_EQ(evaluate_vqa(p, data_dir(), o2)["count"].get<int64_t>(), 5);
}

// ---- retrieval ----

// Brute force: every (image, text) pair scored independently through the
// model's own itm() on pixels and its ITC features, unbatched.
struct BruteForce {
  std::vector<std::vector<double>> itc, full;  // images x texts
};

BruteForce brute_force(Blip2ModelImpl& m, const Tokenizer& tok, const ImageProcessorConfig& proc,
                       const RetrievalSet& set) {
  torch::NoGradGuard g;
  m.eval();
  BruteForce b;
  std::vector<torch::Tensor> ids;
  for (const auto& t : set.texts) ids.push_back(torch::tensor(tok.encode(t, true), torch::kLong).view({1, -1}));
  for (const auto& path : set.images) {
    auto px = preprocess_batch({load_image(path)}, proc);
    auto img = m.image_features(m.encode_image(px).last_hidden_state)[0];  // (Q, E)
    std::vector<double> itc_row, full_row;
    for (const auto& id : ids) {
      auto txt = m.text_features(id, torch::ones_like(id)).first[0][0];  // (E)
      const double sim = torch::matmul(img, txt).max().item<double>();
      const double logit = m.itm(px, id, torch::ones_like(id)).logits[0][1].item<double>();
      itc_row.push_back(sim);
      full_row.push_back(logit + sim);
    }
    b.itc.push_back(itc_row);
    b.full.push_back(full_row);
  }
  return b;
}

TEST_F(EvaluateTest, RetrievalEqualsBruteForceWhenEveryPairIsReranked) {
  const RetrievalSet set = read_retrieval_set(data_dir());
  ASSERT_EQ(set.images.size(), 6u);
  ASSERT_GE(set.texts.size(), 6u);
  for (size_t t = 0; t < set.texts.size(); ++t) {
    ASSERT_FALSE(set.txt2img[t].empty());
    for (int64_t i : set.txt2img[t]) {
      const auto& mine = set.img2txt[static_cast<size_t>(i)];
      EXPECT_NE(std::find(mine.begin(), mine.end(), static_cast<int64_t>(t)), mine.end());
    }
  }
  auto model = load_blip2(ret_dir());
  auto tok = load_tokenizer(ret_dir());
  ImageProcessorConfig proc;
  proc.height = proc.width = kImageSize;
  const BruteForce bf = brute_force(*model, *tok, proc, set);
  const int64_t Ni = 6, Nt = static_cast<int64_t>(set.texts.size());

  EvalOptions o;
  o.batch_size = 4;
  o.itm_batch_size = 5;  // pairs from several images in one pass
  o.rerank_k = Nt;       // every pair re-ranked both ways
  const RetrievalScores s = retrieval_scores(*model, *tok, proc, set, o);
  ASSERT_EQ(s.i2t.rows, Ni);
  ASSERT_EQ(s.i2t.cols, Nt);
  ASSERT_EQ(s.t2i.rows, Nt);
  ASSERT_EQ(s.t2i.cols, Ni);
  for (int64_t i = 0; i < Ni; ++i)
    for (int64_t t = 0; t < Nt; ++t) {
      EXPECT_NEAR(s.itc.at(i, t), bf.itc[i][t], 1e-6);
      EXPECT_NEAR(s.i2t.at(i, t), bf.full[i][t], 1e-5);
      EXPECT_NEAR(s.t2i.at(t, i), bf.full[i][t], 1e-5);
    }

  const json r = evaluate_retrieval(ret_dir(), data_dir(), o);
  const auto full = ScoreMatrix::from_rows(bf.full);
  const RetrievalMetrics want = retrieval_recall(full, full.transposed(), set.img2txt, set.txt2img);
  const auto itc = ScoreMatrix::from_rows(bf.itc);
  const RetrievalMetrics want_itc = retrieval_recall(itc, itc.transposed(), set.img2txt, set.txt2img);
  EXPECT_NEAR(r["txt_r1"].get<double>(), want.txt_r1, 1e-9);
  EXPECT_NEAR(r["txt_r5"].get<double>(), want.txt_r5, 1e-9);
  EXPECT_NEAR(r["txt_r10"].get<double>(), want.txt_r10, 1e-9);
  EXPECT_NEAR(r["img_r1"].get<double>(), want.img_r1, 1e-9);
  EXPECT_NEAR(r["img_r5"].get<double>(), want.img_r5, 1e-9);
  EXPECT_NEAR(r["img_r10"].get<double>(), want.img_r10, 1e-9);
  EXPECT_NEAR(r["r_mean"].get<double>(), want.r_mean, 1e-9);
  ASSERT_TRUE(r.contains("itc_only"));
  EXPECT_NEAR(r["itc_only"]["txt_r1"].get<double>(), want_itc.txt_r1, 1e-9);
  EXPECT_NEAR(r["itc_only"]["img_r1"].get<double>(), want_itc.img_r1, 1e-9);
  EXPECT_NEAR(r["itc_only"]["r_mean"].get<double>(), want_itc.r_mean, 1e-9);
  EXPECT_EQ(r["count"].get<int64_t>(), Ni);
  EXPECT_EQ(r["texts"].get<int64_t>(), Nt);
  for (const char* k : {"txt_r1", "txt_r5", "txt_r10", "img_r1", "img_r5", "img_r10", "r_mean"}) {
    EXPECT_GE(r[k].get<double>(), 0.0) << k;
    EXPECT_LE(r[k].get<double>(), 100.0) << k;
  }
  // 6 images: R@10 covers every image and text.
  EXPECT_DOUBLE_EQ(r["img_r10"].get<double>(), 100.0);
}

TEST_F(EvaluateTest, RetrievalRerankScoresOnlyTheItcTopK) {
  const RetrievalSet set = read_retrieval_set(data_dir());
  auto model = load_blip2(ret_dir());
  auto tok = load_tokenizer(ret_dir());
  ImageProcessorConfig proc;
  proc.height = proc.width = kImageSize;
  const BruteForce bf = brute_force(*model, *tok, proc, set);
  EvalOptions o;
  o.rerank_k = 2;
  const RetrievalScores s = retrieval_scores(*model, *tok, proc, set, o);
  // Per row: exactly k entries scored (ITM + ITC of that pair), at the row's k
  // largest ITC similarities; -100 elsewhere, as LAVIS.
  auto check_rows = [&](const ScoreMatrix& m, bool images_are_rows) {
    for (int64_t r = 0; r < m.rows; ++r) {
      std::vector<std::pair<double, int64_t>> itc;
      for (int64_t c = 0; c < m.cols; ++c) itc.emplace_back(images_are_rows ? s.itc.at(r, c) : s.itc.at(c, r), c);
      std::sort(itc.begin(), itc.end(), [](auto& a, auto& b) { return a.first > b.first; });
      int64_t scored = 0;
      for (int64_t c = 0; c < m.cols; ++c) {
        const bool top = c == itc[0].second || c == itc[1].second;
        if (top) {
          ++scored;
          const double want = images_are_rows ? bf.full[r][c] : bf.full[c][r];
          EXPECT_NEAR(m.at(r, c), want, 1e-4);
        } else {
          EXPECT_EQ(m.at(r, c), -100.0);
        }
      }
      EXPECT_EQ(scored, 2);
    }
  };
  check_rows(s.i2t, true);
  check_rows(s.t2i, false);
  // Every submodule's train/eval mode is restored (a frozen part stays in eval).
  model->train();
  model->vision_model->eval();
  retrieval_scores(*model, *tok, proc, set, o);
  EXPECT_TRUE(model->is_training());
  EXPECT_TRUE(model->qformer->is_training());
  EXPECT_FALSE(model->vision_model->is_training());
}

TEST_F(EvaluateTest, RetrievalLimitAndProgress) {
  EvalOptions o;
  o.limit = 3;
  o.rerank_k = 4;
  int64_t last_done = -1, last_total = -1;
  bool monotone = true;
  o.progress = [&](int64_t d, int64_t t) {
    monotone = monotone && d >= last_done && (last_total < 0 || t == last_total);
    last_done = d;
    last_total = t;
  };
  const json r = evaluate_retrieval(ret_dir(), data_dir(), o);
  EXPECT_EQ(r["count"].get<int64_t>(), 3);
  EXPECT_EQ(r["rerank_k"].get<int64_t>(), 4);
  EXPECT_TRUE(monotone);
  EXPECT_EQ(last_done, last_total);
}

TEST_F(EvaluateTest, RetrievalSetMergesIdenticalCaptions) {
  test::TempDir d;
  std::filesystem::copy(data_dir() + "/images", d.file("images"));
  std::ofstream(d.file("captions.json")) << R"([
    {"image": "images/000000.png", "caption": ["a large red circle", "a large red circle"], "image_id": 0},
    {"image": "images/000001.png", "caption": ["a small blue star"], "image_id": 1},
    {"image": "images/000002.png", "caption": ["a large red circle", "a red thing"], "image_id": 2}])";
  const RetrievalSet set = read_retrieval_set(d.path());
  ASSERT_EQ(set.texts, (std::vector<std::string>{"a large red circle", "a small blue star", "a red thing"}));
  EXPECT_EQ(set.img2txt, (std::vector<std::vector<int64_t>>{{0}, {1}, {0, 2}}));
  EXPECT_EQ(set.txt2img, (std::vector<std::vector<int64_t>>{{0, 2}, {1}, {2}}));
}

// ---- errors ----

TEST_F(EvaluateTest, ErrorsNameTheFileAndTheFix) {
  auto opt = Pipeline::load(opt_dir());
  auto ret = Pipeline::load(ret_dir());
  test::TempDir empty;
  EXPECT_THROW_WITH(evaluate_captions(opt, empty.path(), quick()), InputError, "captions.json");
  EXPECT_THROW_WITH(evaluate_captions(opt, empty.path(), quick()), InputError, "blip2 shapes generate");
  EXPECT_THROW_WITH(evaluate_vqa(opt, empty.path(), quick()), InputError, "questions.json");
  EXPECT_THROW_WITH(evaluate_retrieval(ret_dir(), empty.path()), InputError, "captions.json");
  EXPECT_THROW_WITH(evaluate_captions(opt, empty.file("nope"), quick()), InputError, "does not exist");

  std::ofstream(empty.file("captions.json")) << "[]";
  EXPECT_THROW_WITH(evaluate_captions(opt, empty.path(), quick()), InputError, "empty data set");
  std::ofstream(empty.file("captions.json")) << "{\"image\": 1}";
  EXPECT_THROW_WITH(evaluate_captions(opt, empty.path(), quick()), InputError, "must be a JSON list");
  std::ofstream(empty.file("captions.json")) << "[{\"image\": \"images/x.png\", \"caption\": [\"a red star\"]}]";
  EXPECT_THROW_WITH(evaluate_captions(opt, empty.path(), quick()), InputError, "images/x.png");
  EXPECT_THROW_WITH(evaluate_retrieval(ret_dir(), empty.path()), InputError, "does not exist");
  std::ofstream(empty.file("captions.json")) << "[{\"image\": \"images/x.png\"}]";
  EXPECT_THROW_WITH(evaluate_captions(opt, empty.path(), quick()), InputError, "\"caption\"");

  EXPECT_THROW_WITH(evaluate_captions(ret, data_dir(), quick()), ConfigError, "retrieval model");
  EXPECT_THROW_WITH(evaluate_vqa(ret, data_dir(), quick()), ConfigError, "retrieval model");
  EXPECT_THROW_WITH(evaluate_retrieval(opt_dir(), data_dir()), ConfigError, "without retrieval heads");
  EXPECT_THROW_WITH(evaluate_retrieval(opt_dir(), data_dir()), ConfigError, "config.json");
  auto opt_model = load_blip2(opt_dir());
  auto tok = load_tokenizer(opt_dir());
  EXPECT_THROW_WITH(evaluate_retrieval(*opt_model, *tok, ImageProcessorConfig{}, data_dir()), ConfigError,
                    "Blip2ForImageTextRetrieval");
  EvalOptions bad = quick();
  bad.limit = -1;
  EXPECT_THROW_WITH(evaluate_captions(opt, data_dir(), bad), ConfigError, "--limit");
  bad = quick();
  bad.batch_size = 0;
  EXPECT_THROW_WITH(evaluate_vqa(opt, data_dir(), bad), ConfigError, "--batch-size");
}

}  // namespace
}  // namespace blip2
