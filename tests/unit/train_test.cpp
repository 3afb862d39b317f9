// The training loop: overfitting, frozen parameters, bit-exact resume,
// checkpoints that survive write failures (stage-1 losses and masks:
// stage1_loss_test.cpp).
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
