// data.feature_cache: the frozen ViT's output kept on disk after the first
// epoch. Training on it must give the losses training without it gives (bit
// for bit: entries are the tower's own dtype), and a stale or damaged cache
// must be rebuilt or recomputed, never trusted.
#include "blip2/train/feature_cache.h"

#include <gtest/gtest.h>

#include <condition_variable>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <thread>

#include "blip2/data/image_write.h"
#include "blip2/data/spm_runtime.h"
#include "blip2/train/data_source.h"
#include "blip2/train/trainer.h"
#include "blip2/util/error.h"
#include "model_fixtures.h"
#include "test_util.h"
#include "tmpfs_util.h"
#include "train_fixtures.h"

namespace blip2 {
namespace {

namespace fs = std::filesystem;

// Records 0..N-1 of a random-access data set, served in order in batches of
// 4 with their record indices; each record's image file exists (the
// fingerprint reads its size and time), the pixels are fixed tensors.
class RecordSource : public BatchSource {
 public:
  RecordSource(torch::Tensor pixels, std::vector<std::string> paths) : pixels_(std::move(pixels)), paths_(std::move(paths)) {}
  TrainBatch next() override {
    static const char* captions[] = {"a red circle", "a blue square", "a small green star", "a large red square"};
    TrainBatch b;
    for (int64_t i = 0; i < 4; ++i) {
      const int64_t r = (pos_ + i) % pixels_.size(0);
      b.indices.push_back(r);
      b.captions.push_back(captions[r % 4]);
      b.image_ids.push_back(std::to_string(r));
    }
    pos_ = (pos_ + 4) % pixels_.size(0);
    b.pixel_values = pixels_.index_select(0, torch::tensor(b.indices, torch::kLong));
    return b;
  }
  nlohmann::json state() const override { return {{"pos", pos_}}; }
  void restore(const nlohmann::json& s) override { pos_ = s.at("pos").get<int64_t>(); }
  std::optional<DatasetImages> images() const override {
    DatasetImages d{paths_, {}};
    d.processor.height = d.processor.width = static_cast<int>(pixels_.size(2));
    return d;
  }

 private:
  torch::Tensor pixels_;
  std::vector<std::string> paths_;
  int64_t pos_ = 0;
};

// Trainers over 8 records (2 batches an epoch) of a tiny model, with and
// without a feature cache.
class FeatureCacheTrainTest : public ::testing::Test {
 protected:
  void SetUp() override {
    cfg_ = test::tiny_stage1_recipe(dir_.path());
    cfg_.max_steps = 6;  // 3 epochs
    cfg_.optim.lr = 2e-3;
    cfg_.optim.warmup_steps = 1;
    cfg_.save_every = 1000;
    cfg_.augment = false;
    torch::manual_seed(1);
    pixels_ = torch::randn({8, 3, 12, 12});
    for (int i = 0; i < 8; ++i) {
      paths_.push_back(dir_.file("img" + std::to_string(i) + ".png"));
      std::ofstream(paths_.back()) << "image " << i;
    }
  }
  struct Run {
    std::vector<StepMetrics> steps;
    std::vector<std::string> notices;
    FeatureCache::Stats stats;
    at::ScalarType dtype = at::kFloat;  // of the cache's entries
  };
  // Trains cfg_.max_steps steps (from `resume_from` if given) into output
  // `out`, with the cache directory `cache` ("" = none).
  Run train(const std::string& out, const std::string& cache, const std::string& resume_from = "") {
    TrainConfig c = cfg_;
    c.output_dir = dir_.file(out);
    c.feature_cache = cache.empty() ? "" : dir_.file(cache);
    Run r;
    Trainer t(c);
    RecordSource src(pixels_, paths_);
    if (!resume_from.empty()) EXPECT_TRUE(t.resume(&src, dir_.file(resume_from)));
    t.on_step = [&](const StepMetrics& m) { r.steps.push_back(m); };
    t.on_notice = [&](const std::string& s) { r.notices.push_back(s); };
    t.fit(src);
    if (t.feature_cache()) r.stats = t.feature_cache()->stats(), r.dtype = t.feature_cache()->spec().dtype;
    return r;
  }
  static void expect_same_losses(const Run& a, const Run& b) {
    ASSERT_EQ(a.steps.size(), b.steps.size());
    for (size_t i = 0; i < a.steps.size(); ++i) {
      EXPECT_EQ(a.steps[i].loss, b.steps[i].loss) << "step " << i + 1;
      EXPECT_EQ(a.steps[i].loss_itc, b.steps[i].loss_itc) << "step " << i + 1;
      EXPECT_EQ(a.steps[i].loss_itm, b.steps[i].loss_itm) << "step " << i + 1;
      EXPECT_EQ(a.steps[i].loss_lm, b.steps[i].loss_lm) << "step " << i + 1;
    }
  }
  // Training with a fresh cache gives the losses training without one gives.
  Run expect_exact_with_a_fresh_cache(int64_t computed, int64_t hits) {
    const Run plain = train("plain", "");
    const Run cached = train("cached", "cache");
    expect_same_losses(plain, cached);
    EXPECT_EQ(cached.stats.computed, computed);
    EXPECT_EQ(cached.stats.hits, hits);
    EXPECT_EQ(cached.stats.rejected, 0);
    return cached;
  }
  static std::string joined(const std::vector<std::string>& lines) {
    std::string s;
    for (const auto& l : lines) s += l + "\n";
    return s;
  }
  test::TempDir dir_;
  TrainConfig cfg_;
  torch::Tensor pixels_;
  std::vector<std::string> paths_;
};

TEST_F(FeatureCacheTrainTest, Stage1LossesAreBitExactAndLaterEpochsReadTheCache) {
  const Run cached = expect_exact_with_a_fresh_cache(8, 16);  // epoch 1 computed, epochs 2 and 3 read back
  EXPECT_TRUE(fs::exists(dir_.file("cache/part-0.bin")));
  ASSERT_FALSE(cached.notices.empty());
  EXPECT_NE(cached.notices[0].find("0 of 8 images cached"), std::string::npos) << cached.notices[0];
}

TEST_F(FeatureCacheTrainTest, ABf16TowerIsCachedInBf16AndStaysExact) {
  cfg_.bf16 = true;
  cfg_.max_steps = 4;
  EXPECT_EQ(expect_exact_with_a_fresh_cache(8, 8).dtype, torch::kBFloat16);
}

TEST_F(FeatureCacheTrainTest, ANewRunAndAResumedRunReadEveryImageFromTheCache) {
  cfg_.save_every = 3;
  const Run first = train("first", "cache");
  const Run again = train("again", "cache");
  expect_same_losses(first, again);
  EXPECT_EQ(again.stats.computed, 0);
  EXPECT_EQ(again.stats.hits, 24);
  EXPECT_NE(joined(again.notices).find("8 of 8 images cached"), std::string::npos) << joined(again.notices);
  // --resume from step 3 replays steps 4-6 exactly, from the cache.
  const Run resumed = train("resumed", "cache", "first/checkpoint-00000003");
  ASSERT_EQ(resumed.steps.size(), 3u);
  for (size_t i = 0; i < 3; ++i) EXPECT_EQ(resumed.steps[i].loss, first.steps[3 + i].loss) << "step " << 4 + i;
  EXPECT_EQ(resumed.stats.hits, 12);
  EXPECT_EQ(resumed.stats.computed, 0);
}

TEST_F(FeatureCacheTrainTest, AStaleCacheIsRebuiltNeverReused) {
  train("first", "cache");
  // Other vision weights (another seed initialises another tower).
  cfg_.seed = 7;
  const Run other_weights = train("other", "cache");
  const std::string n = joined(other_weights.notices);
  EXPECT_NE(n.find("was built for another vision_weights; rebuilding it"), std::string::npos) << n;
  EXPECT_EQ(other_weights.stats.computed, 8);
  expect_same_losses(train("other_plain", ""), other_weights);
  // An image file that changed.
  std::ofstream(paths_[5]) << "another image";
  const Run other_images = train("images", "cache");
  EXPECT_NE(joined(other_images.notices).find("was built for another images"), std::string::npos)
      << joined(other_images.notices);
  EXPECT_EQ(other_images.stats.computed, 8);
}

TEST_F(FeatureCacheTrainTest, ADamagedEntryIsRecomputedAndTheLossesStayExact) {
  cfg_.max_steps = 2;
  const Run first = train("first", "cache");
  // Flip bytes in the middle of one entry's data, as a crash mid-write or a
  // bad disk would leave it.
  const std::string part = dir_.file("cache/part-0.bin");
  {
    std::fstream f(part, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(static_cast<std::streamoff>(fs::file_size(part) - 4096 + 100));  // inside the last slot's data
    f.write("\x7f\x7f\x7f\x7f", 4);
  }
  const Run again = train("again", "cache");
  EXPECT_EQ(again.stats.rejected, 1);
  EXPECT_EQ(again.stats.computed, 1);  // one row of a batch recomputed beside three read back
  EXPECT_EQ(again.stats.hits, 7);
  EXPECT_NE(joined(again.notices).find("fails its checksum"), std::string::npos) << joined(again.notices);
  expect_same_losses(first, again);
  // ... and rewritten: a third run reads all 8.
  EXPECT_EQ(train("third", "cache").stats.hits, 8);
}

TEST_F(FeatureCacheTrainTest, Stage2LossesAreBitExactWithTheCache) {
  {
    std::ofstream f(dir_.file("corpus.txt"));
    for (int i = 0; i < 200; ++i) f << "a small red circle above a large blue square number " << i * 7919 % 1000 << "\n";
  }
  fs::create_directories(dir_.file("t5"));
  SpmModel::train("--input=" + dir_.file("corpus.txt") + " --model_prefix=" + dir_.file("t5/spiece") +
                  " --vocab_size=60 --model_type=unigram --character_coverage=1.0 --pad_id=0 --eos_id=1"
                  " --unk_id=2 --bos_id=-1 --hard_vocab_limit=false");
  fs::remove(dir_.file("t5/spiece.vocab"));
  std::ofstream(dir_.file("t5/tokenizer_config.json")) << R"({"tokenizer_class": "T5Tokenizer", "extra_ids": 0})";
  auto mc = test::tiny_config("t5");
  mc.text.t5.vocab_size = 100;
  std::ofstream(dir_.file("config.json")) << mc.to_json_string();
  cfg_.stage = 2;
  cfg_.lm_tokenizer = dir_.file("t5");
  cfg_.max_steps = 4;
  expect_exact_with_a_fresh_cache(8, 8);
}

TEST_F(FeatureCacheTrainTest, TheRecipeRefusesAugmentationATrainedTowerAndStreams) {
  EXPECT_THROW_WITH(TrainConfig::from_yaml_string("data:\n  feature_cache: c\n", "r.yaml"), ConfigError,
                    "data.feature_cache needs data.augment: false");
  EXPECT_THROW_WITH(
      TrainConfig::from_yaml_string("model:\n  train_vision: true\ndata:\n  feature_cache: c\n  augment: false\n", "r.yaml"),
      ConfigError, "model.train_vision: true");
  EXPECT_THROW_WITH(
      TrainConfig::from_yaml_string("data:\n  feature_cache: c\n  augment: false\n  shards: [a.tar]\n", "r.yaml"),
      ConfigError, "a WebDataset stream (data.shards)");
  EXPECT_EQ(TrainConfig::from_yaml_string("data:\n  feature_cache: c\n  augment: false\n", "r.yaml").feature_cache, "c");
  // A source without record indices (a stream) is refused by the trainer too.
  class Stream : public RecordSource {
   public:
    using RecordSource::RecordSource;
    std::optional<DatasetImages> images() const override { return std::nullopt; }
  };
  TrainConfig c = cfg_;
  c.output_dir = dir_.file("out");
  c.feature_cache = dir_.file("cache");
  Trainer t(c);
  Stream s(pixels_, paths_);
  EXPECT_THROW_WITH(t.train_step(s), ConfigError, "needs random-access data (data.annotations)");
}

// The real data path: a caption JSON of PNG files through make_batch_source.
TEST_F(FeatureCacheTrainTest, CaptionDataFromARecipeCarriesRecordIndicesIntoTheCache) {
  std::string json = "[";
  for (int i = 0; i < 8; ++i) {
    Image im;
    im.width = im.height = 16;
    im.rgb.assign(16 * 16 * 3, static_cast<uint8_t>(30 * i));
    write_png(dir_.file("p" + std::to_string(i) + ".png"), im);
    json += std::string(i ? "," : "") + R"({"image": "p)" + std::to_string(i) + R"(.png", "caption": "a red circle"})";
  }
  std::ofstream(dir_.file("captions.json")) << json + "]";
  TrainConfig c = cfg_;
  c.annotations = dir_.file("captions.json");
  c.image_root = dir_.path();
  c.workers = 0;
  c.output_dir = dir_.file("out");
  c.feature_cache = dir_.file("cache");
  Trainer t(c);
  ImageProcessorConfig proc;
  proc.height = proc.width = 12;
  auto src = make_batch_source(c, proc, 0, 1);
  ASSERT_TRUE(src->images());
  EXPECT_EQ(src->images()->record_paths.size(), 8u);
  t.fit(*src);
  ASSERT_TRUE(t.feature_cache());
  EXPECT_EQ(t.feature_cache()->stats().computed, 8);
  EXPECT_EQ(t.feature_cache()->stats().hits, 16);
}

// ---- the cache on its own ------------------------------------------------

FeatureCacheSpec small_spec(int64_t records) {
  FeatureCacheSpec s;
  s.shape = {3, 5};
  s.dtype = torch::kFloat;
  for (int64_t r = 0; r < records; ++r) s.record_slot.push_back(r);
  s.slots = records;
  s.fingerprint = {{"format", 1}, {"what", "test"}};
  return s;
}

TEST(FeatureCacheTest, RecordsOfOneImageShareASlot) {
  Blip2Parts parts;
  parts.language = false;
  Blip2Model m(test::tiny_config("opt"), parts);
  test::randomize(*m, 3);
  DatasetImages images{{"a.png", "b.png", "a.png", "c.png", "b.png"}, {}};
  images.processor.height = images.processor.width = 12;
  const auto s = FeatureCacheSpec::of(*m, images);
  EXPECT_EQ(s.slots, 3);
  EXPECT_EQ(s.record_slot, (std::vector<int64_t>{0, 1, 0, 2, 1}));
  EXPECT_EQ(s.shape, (std::vector<int64_t>{17, 24}));  // (12/3)^2 patches + CLS, hidden 24
  EXPECT_EQ(s.dtype, torch::kFloat);
  // The fingerprint follows the weights and the preprocessing.
  images.processor.image_mean[0] = 0.5;
  EXPECT_NE(FeatureCacheSpec::of(*m, images).fingerprint.at("preprocessing"), s.fingerprint.at("preprocessing"));
  test::randomize(*m, 4);
  EXPECT_NE(FeatureCacheSpec::of(*m, images).fingerprint.at("vision_weights"), s.fingerprint.at("vision_weights"));
}

TEST(FeatureCacheTest, TruncatedOrForeignPartsAreRebuilt) {
  test::TempDir dir;
  const auto f = torch::randn({3, 5});
  {
    auto c = FeatureCache::open(dir.path(), small_spec(4), 0, {}, {});
    c->put(2, f);
    EXPECT_TRUE(torch::equal(c->get(2), f));
    EXPECT_FALSE(c->get(1).defined());
  }
  const std::string part = dir.file("part-0.bin");
  auto reopen = [&] {
    std::vector<std::string> notices;
    auto c = FeatureCache::open(dir.path(), small_spec(4), 0, {}, [&](const std::string& s) { notices.push_back(s); });
    return std::make_pair(std::move(c), notices.empty() ? std::string() : notices.front());
  };
  {
    auto [c, notice] = reopen();
    EXPECT_TRUE(torch::equal(c->get(2), f));  // intact: reused
    EXPECT_NE(notice.find("1 of 4 images cached"), std::string::npos) << notice;
  }
  fs::resize_file(part, fs::file_size(part) - 100);
  std::ofstream(part + ".tmp-99999") << "left by a killed rebuild";
  {
    auto [c, notice] = reopen();
    EXPECT_NE(notice.find("(truncated?); rebuilding it"), std::string::npos) << notice;
    EXPECT_FALSE(fs::exists(part + ".tmp-99999"));
    EXPECT_FALSE(c->get(2).defined());
    c->put(2, f);
  }
  std::ofstream(part, std::ios::in | std::ios::out | std::ios::binary).write("garbage!", 8);
  {
    auto [c, notice] = reopen();
    EXPECT_NE(notice.find("is not a feature cache part"), std::string::npos) << notice;
    EXPECT_FALSE(c->get(2).defined());
  }
  {
    std::fstream out(part, std::ios::in | std::ios::out | std::ios::binary);
    out.seekp(8);
    const uint64_t huge = ~0ULL;
    out.write(reinterpret_cast<const char*>(&huge), 8);
  }
  EXPECT_NE(reopen().second.find("has a damaged header"), std::string::npos);
  std::ofstream(part, std::ios::trunc) << "";
  EXPECT_NE(reopen().second.find("is not a feature cache part"), std::string::npos);
  // Wrong features for the cache are an error, not a silent write.
  auto [c, notice] = reopen();
  EXPECT_THROW_WITH(c->put(0, torch::randn({3, 4})), InputError, "the cache holds [3, 5]");
  EXPECT_THROW_WITH(c->get(9), InputError, "record index 9 is outside");
}

TEST(FeatureCacheTest, RanksReadEachOthersParts) {
  test::TempDir dir;
  // A two-party barrier, as the trainer's collective gives.
  std::mutex mu;
  std::condition_variable cv;
  int arrived = 0;
  auto barrier = [&] {
    std::unique_lock<std::mutex> lock(mu);
    ++arrived;
    cv.notify_all();
    cv.wait(lock, [&] { return arrived == 2; });
  };
  std::unique_ptr<FeatureCache> c0, c1;
  std::thread other([&] { c1 = FeatureCache::open(dir.path(), small_spec(4), 1, barrier, {}); });
  c0 = FeatureCache::open(dir.path(), small_spec(4), 0, barrier, {});
  other.join();
  const auto f = torch::randn({3, 5});
  c1->put(3, f);  // written after rank 0 opened its view
  EXPECT_TRUE(torch::equal(c0->get(3), f));
  EXPECT_FALSE(c0->get(2).defined());
  EXPECT_TRUE(fs::exists(dir.file("part-1.bin")));
  // A later run with one process reads what rank 1 wrote.
  auto alone = FeatureCache::open(dir.path(), small_spec(4), 0, {}, {});
  EXPECT_TRUE(torch::equal(alone->get(3), f));
}

TEST(FeatureCacheTest, ADiskTooSmallIsRefusedUpFrontWithTheSpaceNeeded) {
  test::TempDir dir;
  test::TmpfsDir small(dir.file("small"), 256 * 1024);
  if (!small.mounted()) GTEST_SKIP() << "no tmpfs: " << small.error();
  auto spec = small_spec(0);
  spec.shape = {256, 1024};  // 1 MB an image
  spec.record_slot = {0, 1, 2};
  spec.slots = 3;
  EXPECT_THROW_WITH(FeatureCache::open(dir.file("small/cache"), spec, 0, {}, {}), ConfigError,
                    "needs 3.2 MB more for 3 uncached images (1.1 MB each)");
}

TEST(FeatureCacheTest, ADiskThatFillsUpLaterStopsCachingNotTraining) {
  test::TempDir dir;
  test::TmpfsDir small(dir.file("small"), 512 * 1024);
  if (!small.mounted()) GTEST_SKIP() << "no tmpfs: " << small.error();
  auto spec = small_spec(3);
  spec.shape = {16, 1024};  // 64 KiB an image: 3 fit
  std::vector<std::string> notices;
  auto c = FeatureCache::open(dir.file("small/cache"), spec, 0, {}, [&](const std::string& s) { notices.push_back(s); });
  {
    // Something else fills the disk.
    std::ofstream filler(dir.file("small/filler"), std::ios::binary);
    const std::string mb(1 << 20, 'x');
    filler.write(mb.data(), static_cast<std::streamsize>(mb.size()));
  }
  const auto f = torch::randn({16, 1024});
  c->put(0, f);
  c->put(1, f);
  ASSERT_EQ(notices.size(), 2u);
  EXPECT_NE(notices[1].find("writing failed (No space left on device); training goes on"), std::string::npos)
      << notices[1];
  EXPECT_FALSE(c->get(0).defined());
  EXPECT_FALSE(c->get(1).defined());
}

}  // namespace
}  // namespace blip2
