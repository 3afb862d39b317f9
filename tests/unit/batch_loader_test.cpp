// BatchLoader: determinism across worker counts, epoch permutation, rank
// sharding, resume, error propagation, shutdown. Data sets are written to a
// TempDir (libpng images, libarchive shards).
#include <archive.h>
#include <archive_entry.h>
#include <png.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "blip2/data/batch_loader.h"
#include "blip2/util/error.h"
#include "test_util.h"

namespace blip2 {
namespace {

using test::TempDir;
using Bytes = std::vector<uint8_t>;

Bytes png_bytes(int w, int h, int id) {
  std::vector<uint8_t> rgb(static_cast<size_t>(w) * h * 3);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) {
      uint8_t* p = &rgb[(static_cast<size_t>(y) * w + x) * 3];
      p[0] = static_cast<uint8_t>(id * 23 + x * 9);
      p[1] = static_cast<uint8_t>(y * 17 + id);
      p[2] = static_cast<uint8_t>((x * y + id * 5) % 256);
    }
  png_image img{};
  img.version = PNG_IMAGE_VERSION;
  img.width = static_cast<png_uint_32>(w);
  img.height = static_cast<png_uint_32>(h);
  img.format = PNG_FORMAT_RGB;
  png_alloc_size_t size = 0;
  EXPECT_TRUE(png_image_write_to_memory(&img, nullptr, &size, 0, rgb.data(), 0, nullptr));
  Bytes out(size);
  EXPECT_TRUE(png_image_write_to_memory(&img, out.data(), &size, 0, rgb.data(), 0, nullptr)) << img.message;
  out.resize(size);
  return out;
}

void write_file(const std::string& path, const Bytes& b) {
  std::ofstream(path, std::ios::binary).write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
}

// n images img<i>.png (varied sizes) with 3 captions each; image `broken`
// (if >= 0) holds bytes that are not an image.
std::shared_ptr<CaptionDataset> make_dataset(const TempDir& dir, int n, int broken = -1) {
  std::string ann = "[";
  for (int i = 0; i < n; ++i) {
    const std::string name = "img" + std::to_string(i) + ".png";
    if (i == broken) write_file(dir.file(name), Bytes(100, 0x42));
    else write_file(dir.file(name), png_bytes(20 + i % 5, 14 + i % 3, i));
    ann += (i ? "," : "") + std::string("{\"image\": \"") + name + "\", \"caption\": [\"c" + std::to_string(i) +
           "a\", \"c" + std::to_string(i) + "b\", \"c" + std::to_string(i) + "c\"], \"image_id\": " +
           std::to_string(1000 + i) + "}";
  }
  ann += "]";
  std::ofstream(dir.file("ann.json")) << ann;
  return std::make_shared<CaptionDataset>(dir.file("ann.json"), dir.path());
}

BatchLoaderOptions small_options(int workers) {
  BatchLoaderOptions o;
  o.batch_size = 3;
  o.num_workers = workers;
  o.prefetch_depth = 2;
  o.seed = 17;
  o.processor.height = 8;
  o.processor.width = 10;
  return o;
}

std::vector<Batch> drain(BatchLoader& l, int max_batches = 1000) {
  std::vector<Batch> out;
  Batch b;
  while (static_cast<int>(out.size()) < max_batches && l.next(&b)) out.push_back(b);
  return out;
}

void expect_same(const std::vector<Batch>& a, const std::vector<Batch>& b) {
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i].indices, b[i].indices) << "batch " << i;
    EXPECT_EQ(a[i].captions, b[i].captions) << "batch " << i;
    EXPECT_EQ(a[i].image_ids, b[i].image_ids) << "batch " << i;
    EXPECT_TRUE(at::equal(a[i].pixel_values, b[i].pixel_values)) << "batch " << i;
  }
}

TEST(BatchLoaderTest, SameBatchesWithZeroOneAndThreeWorkers) {
  TempDir dir;
  auto ds = make_dataset(dir, 11);
  std::vector<std::vector<Batch>> runs;
  for (int workers : {0, 1, 3}) {
    BatchLoader l(ds, small_options(workers));
    std::vector<Batch> epochs = drain(l);       // epoch 0
    const auto e1 = drain(l);                   // epoch 1
    epochs.insert(epochs.end(), e1.begin(), e1.end());
    runs.push_back(epochs);
  }
  ASSERT_EQ(runs[0].size(), 6u);  // 11 samples, batch 3, drop_last: 3 per epoch
  expect_same(runs[0], runs[1]);
  expect_same(runs[0], runs[2]);
  const Batch& b = runs[0][0];
  EXPECT_EQ(b.pixel_values.sizes().vec(), (std::vector<int64_t>{3, 3, 8, 10}));
  EXPECT_EQ(b.pixel_values.scalar_type(), at::kFloat);
  for (size_t k = 0; k < 3; ++k) {
    const std::string idx = std::to_string(b.indices[k]);
    EXPECT_EQ(b.image_ids[k], std::to_string(1000 + b.indices[k]));
    EXPECT_EQ(b.captions[k].substr(0, 1 + idx.size()), "c" + idx);  // one of the record's captions
  }
}

// data.caption_choice: random draws among a record's captions, first always
// takes its first; the images (the draws after the choice) are the same.
TEST(BatchLoaderTest, CaptionChoiceFirstAlwaysTakesTheFirstCaption) {
  TempDir dir;
  auto ds = make_dataset(dir, 12);
  BatchLoaderOptions o = small_options(1);
  BatchLoader random(ds, o);
  o.caption_choice = CaptionChoice::kFirst;
  BatchLoader first(ds, o);
  const auto a = drain(random, 8), b = drain(first, 8);  // two epochs
  ASSERT_EQ(a.size(), b.size());
  std::set<char> suffixes;
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i].indices, b[i].indices);
    EXPECT_TRUE(at::equal(a[i].pixel_values, b[i].pixel_values));
    for (size_t k = 0; k < b[i].captions.size(); ++k) {
      EXPECT_EQ(b[i].captions[k], "c" + std::to_string(b[i].indices[k]) + "a");
      suffixes.insert(a[i].captions[k].back());
    }
  }
  EXPECT_EQ(suffixes.size(), 3u) << "random draws each of the three captions somewhere";
}

TEST(BatchLoaderTest, EpochPermutationCoversDataAndChangesPerEpoch) {
  TempDir dir;
  auto ds = make_dataset(dir, 12);
  BatchLoaderOptions o = small_options(2);
  BatchLoader l(ds, o);
  EXPECT_EQ(l.batches_per_epoch(), 4);
  const auto e0 = l.epoch_indices(0), e1 = l.epoch_indices(1);
  std::vector<int64_t> s0 = e0, s1 = e1;
  std::sort(s0.begin(), s0.end());
  std::sort(s1.begin(), s1.end());
  std::vector<int64_t> all(12);
  for (int i = 0; i < 12; ++i) all[i] = i;
  EXPECT_EQ(s0, all);
  EXPECT_EQ(s1, all);
  EXPECT_NE(e0, e1);
  const auto batches = drain(l);
  std::vector<int64_t> seen;
  for (const Batch& b : batches) seen.insert(seen.end(), b.indices.begin(), b.indices.end());
  EXPECT_EQ(seen, e0);
  EXPECT_EQ(l.state(), (LoaderState{1, 0}));

  o.shuffle = false;
  BatchLoader ordered(ds, o);
  EXPECT_EQ(ordered.epoch_indices(5), all);
}

TEST(BatchLoaderTest, RanksGetDisjointSamplesAndEqualBatchCounts) {
  TempDir dir;
  auto ds = make_dataset(dir, 10);
  std::set<int64_t> seen;
  int64_t total = 0;
  for (int rank = 0; rank < 2; ++rank) {
    BatchLoaderOptions o = small_options(1);
    o.rank = rank;
    o.world_size = 2;
    o.batch_size = 2;
    BatchLoader l(ds, o);
    EXPECT_EQ(l.batches_per_epoch(), 2);  // 5 samples per rank, drop_last
    const auto idx = l.epoch_indices(3);
    EXPECT_EQ(idx.size(), 5u);
    total += static_cast<int64_t>(idx.size());
    seen.insert(idx.begin(), idx.end());
  }
  EXPECT_EQ(total, 10);
  EXPECT_EQ(seen.size(), 10u);  // disjoint, union is everything

  // Without drop_last, 7 samples on 3 ranks: padded to 3 each, last batch partial.
  auto ds7 = make_dataset(dir, 7);
  std::multiset<int64_t> padded;
  for (int rank = 0; rank < 3; ++rank) {
    BatchLoaderOptions o = small_options(0);
    o.rank = rank;
    o.world_size = 3;
    o.batch_size = 2;
    o.drop_last = false;
    BatchLoader l(ds7, o);
    EXPECT_EQ(l.batches_per_epoch(), 2);
    const auto batches = drain(l);
    ASSERT_EQ(batches.size(), 2u);
    EXPECT_EQ(batches[1].size(), 1);
    for (const Batch& b : batches) padded.insert(b.indices.begin(), b.indices.end());
  }
  EXPECT_EQ(padded.size(), 9u);
  EXPECT_EQ(std::set<int64_t>(padded.begin(), padded.end()).size(), 7u);
}

TEST(BatchLoaderTest, ResumeFromStateGivesTheSameFollowingBatches) {
  TempDir dir;
  auto ds = make_dataset(dir, 10);
  BatchLoaderOptions o = small_options(3);
  BatchLoader a(ds, o);
  Batch b;
  ASSERT_TRUE(a.next(&b));
  ASSERT_TRUE(a.next(&b));
  const LoaderState saved = a.state();
  EXPECT_EQ(saved, (LoaderState{0, 2}));
  // The rest of epoch 0 (1 batch), the end, and all of epoch 1.
  auto rest = drain(a);
  const auto e1 = drain(a);
  rest.insert(rest.end(), e1.begin(), e1.end());
  ASSERT_EQ(rest.size(), 4u);

  BatchLoader resumed(ds, small_options(1));
  resumed.set_state(saved);
  auto again = drain(resumed);
  const auto again1 = drain(resumed);
  again.insert(again.end(), again1.begin(), again1.end());
  expect_same(rest, again);

  // set_state on a running loader discards its prefetched batches.
  BatchLoader c(ds, o);
  ASSERT_TRUE(c.next(&b));
  c.set_state({1, 1});
  ASSERT_TRUE(c.next(&b));
  expect_same({b}, {e1[1]});
}

TEST(BatchLoaderTest, WorkerExceptionIsRethrownNamingTheSample) {
  TempDir dir;
  auto ds = make_dataset(dir, 9, /*broken=*/4);
  BatchLoaderOptions o = small_options(3);
  o.shuffle = false;  // sample 4 is in batch 1
  BatchLoader l(ds, o);
  Batch b;
  ASSERT_TRUE(l.next(&b));
  for (int attempt = 0; attempt < 2; ++attempt) {  // stays at the failing batch
    try {
      l.next(&b);
      FAIL() << "expected InputError";
    } catch (const InputError& e) {
      const std::string msg = e.what();
      EXPECT_NE(msg.find("epoch 0 batch 1: sample 4 (image '" + dir.file("img4.png") + "')"), std::string::npos) << msg;
      EXPECT_NE(msg.find("PNG, JPEG or WebP"), std::string::npos) << msg;  // the decoder's own words
    }
  }
  EXPECT_EQ(l.state(), (LoaderState{0, 1}));
  l.set_state({0, 2});
  ASSERT_TRUE(l.next(&b));
  EXPECT_EQ(b.indices, (std::vector<int64_t>{6, 7, 8}));
}

TEST(BatchLoaderTest, EarlyDestructionAndStopNeverHang) {
  TempDir dir;
  auto ds = make_dataset(dir, 30);
  const auto t0 = std::chrono::steady_clock::now();
  for (int round = 0; round < 5; ++round) {
    BatchLoaderOptions o = small_options(4);
    o.batch_size = 2;
    o.prefetch_depth = 2;
    BatchLoader l(ds, o);
    Batch b;
    if (round % 2) ASSERT_TRUE(l.next(&b));  // workers blocked on a full queue
    if (round == 3) {
      l.stop();
      ASSERT_TRUE(l.next(&b));  // restarts where it was
      EXPECT_EQ(l.state(), (LoaderState{0, 2}));
    }
  }  // destructors join
  {
    BatchLoader never_started(ds, small_options(3));
  }
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(30));
}

TEST(BatchLoaderTest, EvalModeIsThePlainProcessor) {
  TempDir dir;
  auto ds = make_dataset(dir, 4);
  BatchLoaderOptions o = small_options(2);
  o.augment = false;
  o.shuffle = false;
  o.batch_size = 4;
  BatchLoader l(ds, o);
  Batch b;
  ASSERT_TRUE(l.next(&b));
  for (int i = 0; i < 4; ++i) {
    EXPECT_TRUE(at::equal(b.pixel_values[i], preprocess(ds->load(i).image, o.processor))) << i;
  }
}

TEST(BatchLoaderTest, InvalidOptionsAreConfigErrors) {
  TempDir dir;
  auto ds = make_dataset(dir, 2);
  BatchLoaderOptions o;
  o.batch_size = 0;
  EXPECT_THROW_WITH(BatchLoader(ds, o), ConfigError, "batch_size = 0");
  o = {};
  o.rank = 3;
  o.world_size = 2;
  EXPECT_THROW_WITH(BatchLoader(ds, o), ConfigError, "rank 3 of world size 2");
  EXPECT_THROW_WITH(BatchLoader(std::shared_ptr<const CaptionDataset>(), {}), ConfigError, "null");
}

// ---------------------------------------------------------------------------
// Streaming
// ---------------------------------------------------------------------------

std::string make_shard(const TempDir& dir, int shard, int n) {
  const std::string path = dir.file("wds-" + std::to_string(shard) + ".tar");
  archive* a = archive_write_new();
  archive_write_set_format_pax_restricted(a);
  EXPECT_EQ(archive_write_open_filename(a, path.c_str()), ARCHIVE_OK);
  auto add = [&](const std::string& name, const Bytes& data) {
    archive_entry* e = archive_entry_new();
    archive_entry_set_pathname(e, name.c_str());
    archive_entry_set_size(e, static_cast<la_int64_t>(data.size()));
    archive_entry_set_filetype(e, AE_IFREG);
    archive_entry_set_perm(e, 0644);
    archive_write_header(a, e);
    archive_write_data(a, data.data(), data.size());
    archive_entry_free(e);
  };
  for (int i = 0; i < n; ++i) {
    const int id = shard * 100 + i;
    const std::string key = "k" + std::to_string(id);
    add(key + ".png", png_bytes(16 + i % 3, 12, id));
    const std::string js = "{\"caption\": [\"x" + std::to_string(id) + "\", \"y" + std::to_string(id) +
                           "\"], \"image_id\": " + std::to_string(id) + "}";
    add(key + ".json", Bytes(js.begin(), js.end()));
  }
  archive_write_close(a);
  archive_write_free(a);
  return path;
}

std::unique_ptr<WebDatasetReader> make_reader(const std::vector<std::string>& shards) {
  return std::make_unique<WebDatasetReader>(shards, 0, 1, 5);
}

TEST(BatchLoaderTest, StreamingIsDeterministicAndResumable) {
  TempDir dir;
  const std::vector<std::string> shards = {make_shard(dir, 0, 5), make_shard(dir, 1, 4), make_shard(dir, 2, 3)};
  std::vector<std::vector<Batch>> runs;
  for (int workers : {0, 1, 3}) {
    BatchLoaderOptions o = small_options(workers);
    o.batch_size = 5;
    o.drop_last = false;
    BatchLoader l(make_reader(shards), o);
    EXPECT_EQ(l.batches_per_epoch(), -1);
    auto all = drain(l);
    const auto e1 = drain(l);
    all.insert(all.end(), e1.begin(), e1.end());
    runs.push_back(all);
  }
  ASSERT_EQ(runs[0].size(), 6u);  // 12 samples: 5 + 5 + 2, two epochs
  EXPECT_EQ(runs[0][2].size(), 2);
  expect_same(runs[0], runs[1]);
  expect_same(runs[0], runs[2]);
  std::set<std::string> ids;
  for (int i = 0; i < 3; ++i) ids.insert(runs[0][i].image_ids.begin(), runs[0][i].image_ids.end());
  EXPECT_EQ(ids.size(), 12u);
  EXPECT_EQ(runs[0][0].indices, (std::vector<int64_t>{0, 1, 2, 3, 4}));

  // Resume at epoch 0, batch 1.
  BatchLoaderOptions o = small_options(2);
  o.batch_size = 5;
  o.drop_last = false;
  BatchLoader r(make_reader(shards), o);
  r.set_state({0, 1});
  auto rest = drain(r);
  expect_same(rest, {runs[0][1], runs[0][2]});

  // drop_last drops the partial tail.
  o.drop_last = true;
  BatchLoader d(make_reader(shards), o);
  EXPECT_EQ(drain(d).size(), 2u);
}

TEST(BatchLoaderTest, StreamingBadShardIsRethrownNamingIt) {
  TempDir dir;
  const std::string good = make_shard(dir, 0, 4);
  const std::string bad = dir.file("bad.tar");
  std::ofstream(bad, std::ios::binary) << std::string(2048, 'z');
  WebDatasetOptions wo;
  wo.shuffle_shards = false;
  BatchLoaderOptions o = small_options(2);
  o.batch_size = 3;
  BatchLoader l(std::make_unique<WebDatasetReader>(std::vector<std::string>{good, bad}, 0, 1, 0, wo), o);
  Batch b;
  ASSERT_TRUE(l.next(&b));
  EXPECT_THROW_WITH(l.next(&b), InputError, "shard '" + bad + "'");
}

}  // namespace
}  // namespace blip2
