// Stage-1/2 objectives and the training loop: masks position by position,
// losses against hand computation, finite-difference gradients, overfitting,
// frozen parameters, bit-exact resume.
#include <cmath>
#include <set>
#include <fstream>

#include "blip2/data/spm_runtime.h"
#include "blip2/data/text_batch.h"
#include "blip2/data/tokenizer.h"
#include "blip2/qformer/qformer.h"
#include "blip2/train/losses.h"
#include "blip2/train/optim.h"
#include "blip2/train/trainer.h"
#include "blip2/util/atomic_file.h"
#include "blip2/util/error.h"
#include "e2e_util.h"
#include "model_fixtures.h"
#include "test_util.h"
#include "tmpfs_util.h"
#include "train_fixtures.h"

namespace blip2 {
namespace {

using test::TempDir;
using test::TmpfsDir;
using test::tree_bytes;

// ---- masks --------------------------------------------------------------

// allowed(kind)[i][j] for Q=2 queries and 3 text tokens, the last one padding.
std::vector<std::vector<int>> allowed(QFormerMask kind) {
  auto mask = torch::tensor({1, 1, 1, 1, 0}, torch::kLong).view({1, 5});
  auto bias = qformer_self_attention_bias(mask, 2, kind, torch::kFloat);  // (1,1,5,5)
  std::vector<std::vector<int>> out(5, std::vector<int>(5));
  for (int i = 0; i < 5; ++i)
    for (int j = 0; j < 5; ++j) out[i][j] = bias[0][0][i][j].item<float>() == 0.0f ? 1 : 0;
  return out;
}

TEST(QFormerMaskTest, ItmIsBidirectionalExceptPadding) {
  std::vector<std::vector<int>> want = {
      {1, 1, 1, 1, 0}, {1, 1, 1, 1, 0}, {1, 1, 1, 1, 0}, {1, 1, 1, 1, 0}, {1, 1, 1, 1, 0}};
  EXPECT_EQ(allowed(QFormerMask::kBidirectional), want);
}

TEST(QFormerMaskTest, ItcIsUnimodal) {
  std::vector<std::vector<int>> want = {
      {1, 1, 0, 0, 0}, {1, 1, 0, 0, 0}, {0, 0, 1, 1, 0}, {0, 0, 1, 1, 0}, {0, 0, 1, 1, 0}};
  EXPECT_EQ(allowed(QFormerMask::kUnimodal), want);
}

TEST(QFormerMaskTest, ItgIsMultimodalCausal) {
  std::vector<std::vector<int>> want = {
      {1, 1, 0, 0, 0}, {1, 1, 0, 0, 0}, {1, 1, 1, 0, 0}, {1, 1, 1, 1, 0}, {1, 1, 1, 1, 0}};
  EXPECT_EQ(allowed(QFormerMask::kMultimodalCausal), want);
}

TEST(QFormerMaskTest, MaskedEntriesUseHfFill) {
  auto bias = qformer_self_attention_bias(torch::tensor({1, 0}, torch::kLong).view({1, 2}), 1,
                                          QFormerMask::kBidirectional, torch::kFloat);
  EXPECT_EQ(bias[0][0][0][1].item<float>(), -10000.0f);
}

// ---- stage 1 -------------------------------------------------------------

Blip2Model stage1_model(torch::ScalarType dtype = torch::kFloat) {
  auto c = test::tiny_config("opt");
  c.qformer.hidden_dropout_prob = 0;
  c.qformer.attention_probs_dropout_prob = 0;
  Blip2Parts parts;
  parts.language = false;
  parts.itg = true;
  Blip2Model m(c, parts);
  test::randomize(*m, 11);
  {
    torch::NoGradGuard g;
    m->temp.fill_(0.1);
  }
  m->to(dtype);
  m->eval();
  return m;
}

Stage1Inputs stage1_inputs(torch::ScalarType dtype = torch::kFloat) {
  torch::manual_seed(5);
  Stage1Inputs in;
  in.vit_embeds = torch::randn({3, 17, 24}).to(dtype);
  in.text_ids = torch::tensor({{1, 7, 8, 9, 2}, {1, 10, 11, 2, 0}, {1, 12, 2, 0, 0}}, torch::kLong);
  in.text_mask = (in.text_ids != 0).to(torch::kLong);
  in.neg_image_idx = torch::tensor({2, 0, 1}, torch::kLong);
  in.neg_text_idx = torch::tensor({1, 2, 0}, torch::kLong);
  return in;
}

Stage1Options stage1_options() {
  Stage1Options o;
  o.dec_token_id = 49;
  return o;
}

// Cross-entropy with label smoothing, written out: (1-e) * -log p[y] + e * mean_k(-log p[k]).
double smoothed_ce(const torch::Tensor& logits, const torch::Tensor& targets, double eps) {
  auto lp = logits.to(torch::kDouble).log_softmax(-1);
  double total = 0;
  int n = 0;
  for (int64_t i = 0; i < logits.size(0); ++i) {
    const int64_t y = targets[i].item<int64_t>();
    if (y == -100) continue;
    total += (1 - eps) * -lp[i][y].item<double>() + eps * -lp[i].mean().item<double>();
    ++n;
  }
  return total / n;
}

TEST(Stage1LossTest, LossesMatchHandComputation) {
  auto m = stage1_model();
  auto out = stage1_forward(*m, stage1_inputs(), stage1_options());
  auto tgt = torch::arange(3, torch::kLong);
  const double itc = (smoothed_ce(out.sim_i2t, tgt, 0.1) + smoothed_ce(out.sim_t2i, tgt, 0.1)) / 2;
  EXPECT_NEAR(out.loss_itc.item<double>(), itc, 1e-5);
  EXPECT_NEAR(out.loss_itm.item<double>(), smoothed_ce(out.itm_logits, out.itm_labels, 0.0), 1e-5);
  auto V = out.itg_logits.size(2);
  EXPECT_NEAR(out.loss_lm.item<double>(),
              smoothed_ce(out.itg_logits.reshape({-1, V}), out.itg_labels.reshape({-1}), 0.1), 1e-5);
  EXPECT_NEAR(out.loss.item<double>(),
              out.loss_itc.item<double>() + out.loss_itm.item<double>() + out.loss_lm.item<double>(), 1e-5);
  // Similarity = max over queries of the cosine, divided by the temperature.
  auto cos = torch::einsum("iqe,te->itq", {out.image_feats, out.text_feat});
  EXPECT_TRUE(torch::allclose(out.sim_i2t, std::get<0>(cos.max(-1)) / 0.1, 1e-5, 1e-5));
  // ITM pairs: positives, (text, negative image), (negative text, image).
  EXPECT_EQ(out.itm_labels.sizes(), (std::vector<int64_t>{9}));
  EXPECT_EQ(out.itm_labels.sum().item<int64_t>(), 3);
  // ITG targets: the text after [DEC], pads ignored.
  EXPECT_TRUE(torch::equal(out.itg_labels, torch::tensor({{7, 8, 9, 2}, {10, 11, 2, -100}, {12, 2, -100, -100}})));
}

TEST(Stage1LossTest, RetrievalFineTuningTreatsEveryCaptionOfAnImageAsPositive) {
  auto m = stage1_model();
  auto in = stage1_inputs();
  in.image_ids = torch::tensor({7, 7, 9}, torch::kLong);  // texts 0 and 1 describe the same image
  in.neg_image_idx = torch::Tensor();
  in.neg_text_idx = torch::Tensor();
  in.generator = at::detail::createCPUGenerator(4);
  auto out = stage1_forward(*m, in, stage1_options());
  // Targets: rows 0 and 1 put half the (0.9) mass on columns 0 and 1, plus 0.1 spread uniformly.
  double want = 0;
  const double t[3][3] = {{0.45 + 0.1 / 3, 0.45 + 0.1 / 3, 0.1 / 3},
                          {0.45 + 0.1 / 3, 0.45 + 0.1 / 3, 0.1 / 3},
                          {0.1 / 3, 0.1 / 3, 0.9 + 0.1 / 3}};
  for (auto* sim : {&out.sim_i2t, &out.sim_t2i}) {
    auto lp = sim->to(torch::kDouble).log_softmax(1);
    for (int i = 0; i < 3; ++i)
      for (int j = 0; j < 3; ++j) want -= t[i][j] * lp[i][j].item<double>() / 3 / 2;
  }
  EXPECT_NEAR(out.loss_itc.item<double>(), want, 1e-5);
  // No hard negative shows the same image.
  EXPECT_LT(out.weights_i2t[0][1].item<float>(), 1e-6);
  EXPECT_LT(out.weights_t2i[1][0].item<float>(), 1e-6);
  EXPECT_EQ(out.neg_image_idx[0].item<int64_t>(), 2);
  EXPECT_EQ(out.neg_image_idx[1].item<int64_t>(), 2);
}

TEST(Stage1LossTest, HardNegativesExcludeTheOwnPair) {
  auto m = stage1_model();
  auto in = stage1_inputs();
  in.neg_image_idx = torch::Tensor();
  in.neg_text_idx = torch::Tensor();
  in.generator = at::detail::createCPUGenerator(3);
  auto out = stage1_forward(*m, in, stage1_options());
  for (int64_t b = 0; b < 3; ++b) {
    EXPECT_LT(out.weights_i2t[b][b].item<float>(), 1e-6);
    EXPECT_NE(out.neg_image_idx[b].item<int64_t>(), b);
    EXPECT_NE(out.neg_text_idx[b].item<int64_t>(), b);
  }
  EXPECT_TRUE(torch::allclose(out.weights_t2i.sum(1), torch::ones({3}), 1e-5, 1e-5));
}

// LAVIS detaches the gathered ITC features (gradients flow through the local
// side only), which is not the loss's full derivative; this collective keeps
// them attached so autograd can be compared with finite differences.
class AttachedGather : public Collective {
 public:
  at::Tensor all_gather(const at::Tensor& t) override { return t; }
};

TEST(Stage1LossTest, GradientsMatchFiniteDifferences) {
  auto m = stage1_model(torch::kDouble);
  auto in = stage1_inputs(torch::kDouble);
  auto o = stage1_options();
  AttachedGather coll;
  auto loss_of = [&] { return stage1_forward(*m, in, o, coll).loss; };
  for (auto& p : m->parameters()) p.set_requires_grad(true);
  loss_of().backward();
  torch::NoGradGuard g;
  auto params = m->named_parameters();
  int checked = 0;
  for (const char* name : {"query_tokens", "qformer.encoder.layer.0.crossattention.attention.value.weight",
                           "qformer.encoder.layer.1.intermediate.dense.weight", "embeddings.word_embeddings.weight",
                           "text_decoder_head.transform.dense.weight", "itm_head.weight", "vision_projection.bias",
                           "vision_model.post_layernorm.weight", "temp"}) {
    auto p = params[name];
    auto flat = p.view({-1});
    auto grad = p.grad().view({-1});
    for (int64_t k : {int64_t{0}, flat.numel() / 2, flat.numel() - 1}) {
      const double h = 1e-6, orig = flat[k].item<double>();
      flat[k] = orig + h;
      const double up = loss_of().item<double>();
      flat[k] = orig - h;
      const double down = loss_of().item<double>();
      flat[k] = orig;
      const double numeric = (up - down) / (2 * h);
      EXPECT_NEAR(grad[k].item<double>(), numeric, 1e-6 + 1e-4 * std::abs(numeric)) << name << "[" << k << "]";
      ++checked;
    }
  }
  EXPECT_EQ(checked, 27);
}

// ---- training loop -------------------------------------------------------

// A fixed set of (image, caption) pairs served in order, forever.
class FixedSource : public BatchSource {
 public:
  FixedSource(torch::Tensor images, std::vector<std::string> captions, int64_t batch)
      : images_(std::move(images)), captions_(std::move(captions)), batch_(batch) {}
  TrainBatch next() override {
    TrainBatch b;
    std::vector<int64_t> idx;
    for (int64_t i = 0; i < batch_; ++i) idx.push_back((pos_ + i) % images_.size(0));
    pos_ = (pos_ + batch_) % images_.size(0);
    b.pixel_values = images_.index_select(0, torch::tensor(idx, torch::kLong));
    for (auto i : idx) {
      b.captions.push_back(captions_[static_cast<size_t>(i)]);
      b.image_ids.push_back(std::to_string(i));
    }
    return b;
  }
  nlohmann::json state() const override { return {{"pos", pos_}}; }
  void restore(const nlohmann::json& s) override { pos_ = s.at("pos").get<int64_t>(); }

 private:
  torch::Tensor images_;
  std::vector<std::string> captions_;
  int64_t batch_, pos_ = 0;
};

class TrainLoopTest : public ::testing::Test {
 protected:
  void SetUp() override {
    cfg_ = test::tiny_stage1_recipe(dir_.path());
    cfg_.max_steps = 60;
    cfg_.optim.lr = 2e-3;
    cfg_.optim.min_lr = 2e-4;
    cfg_.optim.warmup_steps = 2;
    cfg_.optim.warmup_lr = 1e-4;
    cfg_.output_dir = dir_.file("run");
    cfg_.log_every = 1;
    cfg_.save_every = 1000;
    torch::manual_seed(1);
    images_ = torch::randn({4, 3, 12, 12});
  }
  FixedSource source() {
    return FixedSource(images_, {"a red circle", "a blue square", "a small green star", "a large red square"}, 4);
  }
  TempDir dir_;
  TrainConfig cfg_;
  torch::Tensor images_;
};

TEST_F(TrainLoopTest, EveryStage1LossFallsWhenOverfittingABatch) {
  Trainer t(cfg_);
  auto src = source();
  std::vector<StepMetrics> ms;
  t.on_step = [&](const StepMetrics& m) { ms.push_back(m); };
  t.fit(src);
  ASSERT_EQ(ms.size(), 60u);
  // Means over the first and last 5 steps (dropout makes single steps noisy).
  auto mean = [&](size_t from, double StepMetrics::*f) {
    double s = 0;
    for (size_t i = from; i < from + 5; ++i) s += ms[i].*f;
    return s / 5;
  };
  for (auto [name, f, factor] : {std::tuple<const char*, double StepMetrics::*, double>{"itc", &StepMetrics::loss_itc, 0.85},
                                 {"itm", &StepMetrics::loss_itm, 0.95},
                                 {"itg", &StepMetrics::loss_lm, 0.8}}) {
    const double a = mean(0, f), b = mean(55, f);
    std::printf("  loss_%s %.4f -> %.4f\n", name, a, b);
    EXPECT_LT(b, a * factor) << name << " " << a << " -> " << b;
  }
  // metrics.jsonl has one line per logged step.
  std::ifstream in(cfg_.output_dir + "/metrics.jsonl");
  int lines = 0;
  for (std::string l; std::getline(in, l);) ++lines;
  EXPECT_EQ(lines, 60);
}

TEST_F(TrainLoopTest, FrozenParametersStayBitIdenticalAndHaveNoOptimizerState) {
  cfg_.max_steps = 3;
  Trainer t(cfg_);
  std::map<std::string, torch::Tensor> before;
  for (const auto& p : t.model()->named_parameters()) before[p.key()] = p.value().clone();
  auto src = source();
  t.fit(src);
  int frozen = 0, trained = 0;
  for (const auto& p : t.model()->named_parameters()) {
    const bool is_frozen = p.key().rfind("vision_model.", 0) == 0 && p.key().rfind("vision_model.post_layernorm", 0) != 0;
    EXPECT_EQ(p.value().requires_grad(), !is_frozen) << p.key();
    if (is_frozen) {
      EXPECT_TRUE(torch::equal(p.value(), before[p.key()])) << p.key();
      EXPECT_FALSE(p.value().grad().defined()) << p.key();
      ++frozen;
    } else if (!torch::equal(p.value(), before[p.key()])) {
      ++trained;
    }
  }
  EXPECT_GT(frozen, 10);
  EXPECT_GT(trained, 40);
  EXPECT_FALSE(t.model()->vision_model->is_training());  // frozen modules in eval mode
  EXPECT_TRUE(t.model()->qformer->is_training());
}

TEST_F(TrainLoopTest, FineTuningTheImageEncoderUpdatesIt) {
  cfg_.max_steps = 3;
  cfg_.train_vision = true;
  cfg_.optim.layer_decay = 0.9;
  Trainer t(cfg_);
  std::map<std::string, torch::Tensor> before;
  for (const auto& p : t.model()->named_parameters()) before[p.key()] = p.value().clone();
  auto src = source();
  t.fit(src);
  for (const char* n : {"vision_model.embeddings.patch_embedding.weight", "vision_model.encoder.layers.2.mlp.fc2.weight"})
    EXPECT_FALSE(torch::equal(t.model()->named_parameters()[n], before[n])) << n;
}

TEST_F(TrainLoopTest, RetrievalModeTrainsWithImageIds) {
  cfg_.max_steps = 2;
  cfg_.mode = TrainMode::kRetrieval;
  Trainer t(cfg_);
  auto src = source();
  std::vector<StepMetrics> ms;
  t.on_step = [&](const StepMetrics& m) { ms.push_back(m); };
  t.fit(src);
  ASSERT_EQ(ms.size(), 2u);
  EXPECT_TRUE(std::isfinite(ms.back().loss_itc));
}

TEST_F(TrainLoopTest, CaptionPositivesMakeSharedCaptionsPositives) {
  // Two of four images share a caption: with caption_positives their pair is
  // an ITC target (and no ITM negative), so the first step's ITC loss differs
  // from the plain one; with distinct captions it would not.
  cfg_.max_steps = 1;
  auto first_itc = [&](bool caption_positives) {
    cfg_.caption_positives = caption_positives;
    cfg_.output_dir = dir_.file(caption_positives ? "cp" : "plain");
    Trainer t(cfg_);
    FixedSource src(images_, {"a red circle", "a red circle", "a small green star", "a large red square"}, 4);
    double itc = 0;
    t.on_step = [&](const StepMetrics& m) { itc = m.loss_itc; };
    t.fit(src);
    return itc;
  };
  const double plain = first_itc(false), shared = first_itc(true);
  EXPECT_TRUE(std::isfinite(shared));
  EXPECT_GT(std::abs(plain - shared), 1e-4) << plain << " vs " << shared;
  // A stage-1 checkpoint is a retrieval model.
  const auto cfg = nlohmann::json::parse(std::ifstream(dir_.file("cp/checkpoint-00000001/config.json")));
  EXPECT_EQ(cfg.at("architectures"), nlohmann::json::array({"Blip2ForImageTextRetrieval"}));
  EXPECT_THROW_WITH(TrainConfig::from_yaml_string("stage: 2\nobjective:\n  caption_positives: true\n", "s.yaml"),
                    ConfigError, "caption_positives is a stage-1 option");
}

TEST_F(TrainLoopTest, ResumeContinuesBitExactly) {
  cfg_.max_steps = 6;
  cfg_.save_every = 3;
  cfg_.keep_checkpoints = 5;
  std::vector<double> straight;
  std::map<std::string, torch::Tensor> final_params;
  {
    Trainer t(cfg_);
    auto src = source();
    t.on_step = [&](const StepMetrics& m) { straight.push_back(m.loss); };
    t.fit(src);
    for (const auto& p : t.model()->named_parameters()) final_params[p.key()] = p.value().clone();
  }
  // A second run resumes from step 3 of the first and must replay steps 4-6.
  cfg_.output_dir = dir_.file("run2");
  std::filesystem::create_directories(cfg_.output_dir);
  Trainer t(cfg_);
  auto src = source();
  ASSERT_TRUE(t.resume(&src, dir_.file("run/checkpoint-00000003")));
  EXPECT_EQ(t.step(), 3);
  std::vector<double> resumed;
  t.on_step = [&](const StepMetrics& m) { resumed.push_back(m.loss); };
  t.fit(src);
  ASSERT_EQ(resumed.size(), 3u);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(resumed[i], straight[3 + i]) << "step " << 4 + i;
  for (const auto& p : t.model()->named_parameters())
    EXPECT_TRUE(torch::equal(p.value(), final_params[p.key()])) << p.key();
}

TEST_F(TrainLoopTest, CheckpointIsLoadableAsAnHfModelAndLatestPointsToIt) {
  cfg_.max_steps = 2;
  Trainer t(cfg_);
  auto src = source();
  t.fit(src);
  std::ifstream latest(cfg_.output_dir + "/latest");
  std::string name;
  std::getline(latest, name);
  EXPECT_EQ(name, "checkpoint-00000002");
  auto m = load_blip2(cfg_.output_dir + "/" + name);
  for (const auto& p : t.model()->named_parameters())
    EXPECT_TRUE(torch::equal(p.value(), m->named_parameters()[p.key()])) << p.key();
  // No temporary directory is left behind.
  for (const auto& e : std::filesystem::directory_iterator(cfg_.output_dir))
    EXPECT_EQ(e.path().filename().string().rfind(".tmp", 0), std::string::npos) << e.path();
}

TEST_F(TrainLoopTest, Bf16FrozenPartsTrainWithFiniteFallingLoss) {
  cfg_.max_steps = 12;
  cfg_.bf16 = true;
  Trainer t(cfg_);
  auto src = source();
  std::vector<double> losses;
  t.on_step = [&](const StepMetrics& m) { losses.push_back(m.loss); };
  t.fit(src);
  ASSERT_EQ(losses.size(), 12u);
  for (double l : losses) EXPECT_TRUE(std::isfinite(l));
  EXPECT_LT(losses.back(), losses.front());
  // The frozen tower is bf16, the trained bridge float32.
  EXPECT_EQ(t.model()->query_tokens.scalar_type(), torch::kFloat);
  EXPECT_EQ(t.model()->vision_model->post_layernorm->weight.scalar_type(), torch::kFloat);
  EXPECT_EQ(t.model()->vision_model->embeddings->patch_embedding->weight.scalar_type(), torch::kBFloat16);
}

TEST_F(TrainLoopTest, ResumingACheckpointOfAnotherModelIsAnError) {
  cfg_.max_steps = 1;
  {
    Trainer t(cfg_);
    auto src = source();
    t.fit(src);
  }
  auto c = test::tiny_config("opt");
  c.qformer.intermediate_size = 32;  // another Q-Former
  std::ofstream(dir_.file("config.json")) << c.to_json_string();
  Trainer other(cfg_);
  auto src = source();
  EXPECT_THROW_WITH(other.resume(&src), CheckpointError, "written for another model");
}

TEST_F(TrainLoopTest, ResumingAnIncompleteCheckpointIsAnError) {
  cfg_.max_steps = 1;
  Trainer t(cfg_);
  auto src = source();
  t.fit(src);
  std::filesystem::remove(cfg_.output_dir + "/checkpoint-00000001/optimizer.pt");
  Trainer t2(cfg_);
  EXPECT_THROW_WITH(t2.resume(&src), CheckpointError, "optimizer.pt is missing");
}

// ---- checkpoints under faults ---------------------------------------------

// Names (recursively) of temporary files or directories under `dir`.
std::vector<std::string> temporaries(const std::string& dir) {
  std::vector<std::string> out;
  for (const auto& e : std::filesystem::recursive_directory_iterator(dir))
    if (e.path().filename().string().find(".tmp") != std::string::npos) out.push_back(e.path().string());
  return out;
}

std::string latest_of(const std::string& out_dir) {
  std::ifstream in(out_dir + "/latest");
  std::string name;
  std::getline(in, name);
  return name;
}

struct FaultGuard {
  ~FaultGuard() { fault_injection::fail_writes_after(-1); }
};

TEST_F(TrainLoopTest, AWriteFailureAnywhereInACheckpointKeepsTheLastGoodOne) {
  // Checkpoint 1 is written normally; while checkpoint 2 is written the disk
  // "fills" after k bytes, for k across the whole checkpoint (model, configs,
  // tokenizer, optimizer.pt through libtorch's writer, rng, state, latest).
  cfg_.max_steps = 2;
  cfg_.save_every = 1;
  cfg_.keep_checkpoints = 1;  // pruning must not remove the good one either
  const std::string base = cfg_.output_dir;
  uint64_t size = 0;
  {
    cfg_.output_dir = base + "-R";
    Trainer t(cfg_);
    auto src = source();
    t.fit(src);
    size = tree_bytes(cfg_.output_dir + "/checkpoint-00000002");
  }
  ASSERT_GT(size, 1000u);
  FaultGuard guard;
  for (double frac : {0.0, 0.01, 0.2, 0.5, 0.8, 0.95, 0.999}) {
    const auto k = static_cast<int64_t>(frac * static_cast<double>(size));
    SCOPED_TRACE("disk full after " + std::to_string(k) + " of " + std::to_string(size) + " bytes");
    cfg_.output_dir = base + "-" + std::to_string(k);
    Trainer t(cfg_);
    auto src = source();
    t.on_step = [&](const StepMetrics& m) {
      if (m.step == 2) fault_injection::fail_writes_after(k);
    };
    EXPECT_THROW_WITH(t.fit(src), Error, "No space left on device");
    fault_injection::fail_writes_after(-1);
    EXPECT_EQ(temporaries(cfg_.output_dir), std::vector<std::string>{});
    EXPECT_FALSE(std::filesystem::exists(cfg_.output_dir + "/checkpoint-00000002"));
    EXPECT_EQ(latest_of(cfg_.output_dir), "checkpoint-00000001");
    Trainer again(cfg_);
    ASSERT_TRUE(again.resume(&src));
    EXPECT_EQ(again.step(), 1);
  }
  // `latest` cannot be replaced (here: a directory took its name) after the
  // new checkpoint is complete: the error says so and how to resume from it.
  cfg_.output_dir = base + "-L";
  Trainer t(cfg_);
  auto src = source();
  t.on_step = [&](const StepMetrics& m) {
    if (m.step != 2) return;
    std::filesystem::remove(cfg_.output_dir + "/latest");
    std::filesystem::create_directories(cfg_.output_dir + "/latest/x");
  };
  EXPECT_THROW_WITH(t.fit(src), Error, "/latest' could not be updated");
  EXPECT_EQ(temporaries(cfg_.output_dir), std::vector<std::string>{});
  Trainer again(cfg_);
  ASSERT_TRUE(again.resume(&src, cfg_.output_dir + "/checkpoint-00000002"));
  EXPECT_EQ(again.step(), 2);
}

TEST_F(TrainLoopTest, ResumingADamagedCheckpointNamesTheFileAndTheOneToUseInstead) {
  cfg_.max_steps = 2;
  cfg_.save_every = 1;
  cfg_.keep_checkpoints = 5;
  {
    Trainer t(cfg_);
    auto src = source();
    t.fit(src);
  }
  const std::string cp2 = cfg_.output_dir + "/checkpoint-00000002";
  const std::string cp1 = cfg_.output_dir + "/checkpoint-00000001";
  auto src = source();
  for (const char* file : {"optimizer.pt", "model.safetensors", "rng.safetensors", "trainer_state.json"}) {
    SCOPED_TRACE(file);
    const std::string path = cp2 + "/" + file;
    const std::string keep = path + ".orig";
    std::filesystem::copy_file(path, keep);
    std::filesystem::resize_file(path, std::filesystem::file_size(path) / 2);  // truncated
    Trainer t(cfg_);
    EXPECT_THROW_WITH(t.resume(&src), CheckpointError,
                      std::string(file) + " cannot be read");
    EXPECT_THROW_WITH(t.resume(&src), CheckpointError, "--resume-from " + cp1);
    std::filesystem::rename(keep, path);
  }
  // The oldest checkpoint has nothing before it.
  std::filesystem::resize_file(cp1 + "/optimizer.pt", 10);
  Trainer t(cfg_);
  EXPECT_THROW_WITH(t.resume(&src, cp1), CheckpointError, "train from the start");
  // A directory where a file belongs is "missing", not a parse error.
  std::filesystem::remove(cp2 + "/optimizer.pt");
  std::filesystem::create_directory(cp2 + "/optimizer.pt");
  EXPECT_THROW_WITH(t.resume(&src), CheckpointError, "optimizer.pt is not a regular file");
}

TEST_F(TrainLoopTest, DiskFullOnATmpfsKeepsTheLastGoodCheckpointAndResumes) {
  cfg_.max_steps = 3;
  cfg_.save_every = 1;
  cfg_.keep_checkpoints = 5;
  uint64_t size = 0;
  {
    TrainConfig c = cfg_;
    c.max_steps = 1;
    c.output_dir = dir_.file("measure");
    Trainer t(c);
    auto src = source();
    t.fit(src);
    size = tree_bytes(c.output_dir + "/checkpoint-00000001");
  }
  // Room for one checkpoint and a half: the second fills the disk.
  TmpfsDir disk(dir_.file("disk"), size * 3 / 2 + 64 * 1024);
  if (!disk.mounted()) GTEST_SKIP() << "cannot mount a tmpfs here (" << disk.error() << "); needs root";
  cfg_.output_dir = dir_.file("disk/run");
  auto src = source();
  {
    Trainer t(cfg_);
    EXPECT_THROW_WITH(t.fit(src), Error, "No space left on device");
  }
  EXPECT_EQ(temporaries(cfg_.output_dir), std::vector<std::string>{});
  const std::string good = latest_of(cfg_.output_dir);
  ASSERT_EQ(good, "checkpoint-00000001") << "the tmpfs should hold one checkpoint of " << size << " bytes";
  EXPECT_FALSE(std::filesystem::exists(cfg_.output_dir + "/checkpoint-00000002"));
  // The run continues from the last good checkpoint.
  Trainer again(cfg_);
  ASSERT_TRUE(again.resume(&src));
  EXPECT_EQ(again.step(), 1);
}

}  // namespace
}  // namespace blip2
