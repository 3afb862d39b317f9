// WebDataset tar shards: grouping by key, caption sources, rank assignment,
// per-epoch shard shuffling, bad shards and spec expansion. Shards are
// written with libarchive, images with libpng.
#include <archive.h>
#include <archive_entry.h>
#include <png.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "blip2/data/webdataset.h"
#include "blip2/util/error.h"
#include "test_util.h"

namespace blip2 {
namespace {

using test::TempDir;
using Bytes = std::vector<uint8_t>;
using Members = std::vector<std::pair<std::string, Bytes>>;

Bytes png_bytes(int w, int h, uint8_t shade) {
  std::vector<uint8_t> rgb(static_cast<size_t>(w) * h * 3, shade);
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

Bytes text(const std::string& s) { return Bytes(s.begin(), s.end()); }

void write_tar(const std::string& path, const Members& members) {
  archive* a = archive_write_new();
  archive_write_set_format_pax_restricted(a);
  ASSERT_EQ(archive_write_open_filename(a, path.c_str()), ARCHIVE_OK);
  for (const auto& [name, data] : members) {
    archive_entry* e = archive_entry_new();
    archive_entry_set_pathname(e, name.c_str());
    archive_entry_set_size(e, static_cast<la_int64_t>(data.size()));
    archive_entry_set_filetype(e, AE_IFREG);
    archive_entry_set_perm(e, 0644);
    ASSERT_EQ(archive_write_header(a, e), ARCHIVE_OK);
    if (!data.empty()) ASSERT_EQ(archive_write_data(a, data.data(), data.size()), static_cast<la_ssize_t>(data.size()));
    archive_entry_free(e);
  }
  archive_write_close(a);
  archive_write_free(a);
}

// A shard of `n` samples "s<shard>_<i>" with .png + .txt.
std::string make_shard(const TempDir& dir, int shard, int n) {
  char name[64];
  std::snprintf(name, sizeof name, "shard-%06d.tar", shard);
  Members m;
  for (int i = 0; i < n; ++i) {
    const std::string key = "s" + std::to_string(shard) + "_" + std::to_string(i);
    m.push_back({key + ".png", png_bytes(3, 2, static_cast<uint8_t>(shard * 16 + i))});
    m.push_back({key + ".txt", text("caption of " + key + "\n")});
  }
  write_tar(dir.file(name), m);
  return dir.file(name);
}

std::vector<std::string> read_keys(WebDatasetReader& r) {
  std::vector<std::string> keys;
  WebDatasetSample s;
  while (r.next(&s)) keys.push_back(s.key);
  return keys;
}

TEST(WebDatasetTest, GroupsMembersByKeyAndReadsCaptionSources) {
  TempDir dir;
  write_tar(dir.file("a.tar"),
            {{"./dir/0001.jpg.txt", text("ignored: not a sample field")},
             {"dir/0001.PNG", png_bytes(4, 3, 50)},
             {"dir/0001.txt", text("a caption from txt\n")},
             {"._junk.png", text("AppleDouble junk")},
             {"0002.png", png_bytes(2, 5, 60)},
             {"0002.json", text(R"({"caption": ["one", "", "two"], "image_id": 17})")},
             {"0002.txt", text("txt loses to json")},
             {"0003.webp.meta", text("other suffix")},
             {"0003.png", png_bytes(1, 1, 70)},
             {"0003.json", text(R"({"text": "from text field", "image_id": "img-3"})")}});
  WebDatasetReader r({dir.file("a.tar")}, 0, 1, 0);
  WebDatasetSample s;
  ASSERT_TRUE(r.next(&s));
  EXPECT_EQ(s.key, "dir/0001");
  EXPECT_EQ(s.image_ext, "png");
  EXPECT_EQ(s.captions, std::vector<std::string>{"a caption from txt"});
  EXPECT_EQ(s.image_id, "dir/0001");
  EXPECT_EQ(s.image.width, 4);
  EXPECT_EQ(s.image.height, 3);
  EXPECT_EQ(s.index, 0);
  EXPECT_EQ(s.shard, dir.file("a.tar"));
  ASSERT_TRUE(r.next(&s));
  EXPECT_EQ(s.key, "0002");
  EXPECT_EQ(s.captions, (std::vector<std::string>{"one", "two"}));
  EXPECT_EQ(s.image_id, "17");
  EXPECT_EQ(s.image.height, 5);
  ASSERT_TRUE(r.next(&s));
  EXPECT_EQ(s.key, "0003");
  EXPECT_EQ(s.captions, std::vector<std::string>{"from text field"});
  EXPECT_EQ(s.image_id, "img-3");
  EXPECT_EQ(s.index, 2);
  EXPECT_FALSE(r.next(&s));
  EXPECT_FALSE(r.next(&s));
  EXPECT_EQ(r.skipped_samples(), 0);
}

TEST(WebDatasetTest, BadSamplesAreSkippedAndCountedOrRejected) {
  TempDir dir;
  write_tar(dir.file("a.tar"), {{"k1.png", png_bytes(2, 2, 1)},                       // no caption
                                {"k2.txt", text("caption without image")},           // no image
                                {"k3.png", png_bytes(2, 2, 3)},
                                {"k3.json", text("{not json")},                       // invalid json
                                {"k4.png", png_bytes(2, 2, 4)},
                                {"k4.txt", text("good")}});
  WebDatasetReader lenient({dir.file("a.tar")}, 0, 1, 0);
  EXPECT_EQ(read_keys(lenient), std::vector<std::string>{"k4"});
  EXPECT_EQ(lenient.skipped_samples(), 3);

  WebDatasetOptions strict;
  strict.skip_bad_samples = false;
  WebDatasetReader r({dir.file("a.tar")}, 0, 1, 0, strict);
  WebDatasetSample s;
  try {
    r.next(&s);
    FAIL() << "expected InputError";
  } catch (const InputError& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("a.tar"), std::string::npos) << msg;
    EXPECT_NE(msg.find("sample 'k1' has no non-blank caption"), std::string::npos) << msg;
  }
}

TEST(WebDatasetTest, RanksReadDisjointShardsWhoseUnionIsEverything) {
  TempDir dir;
  std::vector<std::string> shards;
  for (int i = 0; i < 5; ++i) shards.push_back(make_shard(dir, i, 3));
  for (int64_t epoch : {0, 1, 2}) {
    std::set<std::string> all;
    size_t total = 0;
    for (int rank = 0; rank < 2; ++rank) {
      WebDatasetReader r(shards, rank, 2, 7);
      r.set_epoch(epoch);
      EXPECT_FALSE(r.splits_by_sample());
      EXPECT_EQ(r.epoch_shards().size(), rank == 0 ? 3u : 2u);
      const auto keys = read_keys(r);
      total += keys.size();
      all.insert(keys.begin(), keys.end());
    }
    EXPECT_EQ(total, 15u) << "epoch " << epoch;
    EXPECT_EQ(all.size(), 15u) << "epoch " << epoch;  // disjoint + complete
  }
}

TEST(WebDatasetTest, FewerShardsThanRanksSplitsBySampleIndex) {
  TempDir dir;
  const std::string shard = make_shard(dir, 0, 5);
  WebDatasetReader r0({shard}, 0, 2, 1), r1({shard}, 1, 2, 1);
  EXPECT_TRUE(r0.splits_by_sample());
  EXPECT_EQ(read_keys(r0), (std::vector<std::string>{"s0_0", "s0_2", "s0_4"}));
  EXPECT_EQ(read_keys(r1), (std::vector<std::string>{"s0_1", "s0_3"}));
}

TEST(WebDatasetTest, ShardOrderIsShuffledPerEpochDeterministically) {
  TempDir dir;
  std::vector<std::string> shards;
  for (int i = 0; i < 8; ++i) shards.push_back(make_shard(dir, i, 1));
  WebDatasetReader a(shards, 0, 1, 123), b(shards, 0, 1, 123), c(shards, 0, 1, 124);
  std::set<std::vector<std::string>> orders;
  for (int64_t e = 0; e < 4; ++e) {
    a.set_epoch(e);
    b.set_epoch(e);
    EXPECT_EQ(a.epoch_shards(), b.epoch_shards());
    auto sorted = a.epoch_shards();
    std::sort(sorted.begin(), sorted.end());
    EXPECT_EQ(sorted, shards);  // a permutation
    orders.insert(a.epoch_shards());
    EXPECT_EQ(read_keys(a).size(), 8u);
  }
  EXPECT_GE(orders.size(), 3u);  // changes across epochs
  c.set_epoch(0);
  a.set_epoch(0);
  EXPECT_NE(a.epoch_shards(), c.epoch_shards());  // and with the seed

  WebDatasetOptions ordered;
  ordered.shuffle_shards = false;
  WebDatasetReader d(shards, 0, 1, 123, ordered);
  EXPECT_EQ(d.epoch_shards(), shards);
}

TEST(WebDatasetTest, TruncatedShardIsAnErrorNamingItOrSkipped) {
  TempDir dir;
  const std::string good0 = make_shard(dir, 0, 2);
  const std::string bad = make_shard(dir, 1, 4);
  const std::string good2 = make_shard(dir, 2, 2);
  // Cut the middle shard inside the data of its 5th member (s1_2.png).
  {
    std::ifstream f(bad, std::ios::binary);
    const std::string all((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    const size_t pos = all.find("s1_2.png");
    ASSERT_NE(pos, std::string::npos);
    std::filesystem::resize_file(bad, pos - pos % 512 + 512 + 20);
  }
  WebDatasetOptions opt;
  opt.shuffle_shards = false;
  {
    WebDatasetReader r({good0, bad, good2}, 0, 1, 0, opt);
    WebDatasetSample s;
    ASSERT_TRUE(r.next(&s));
    ASSERT_TRUE(r.next(&s));
    try {
      while (r.next(&s)) {
      }
      FAIL() << "expected InputError";
    } catch (const InputError& e) {
      const std::string msg = e.what();
      EXPECT_NE(msg.find("shard '" + bad + "'"), std::string::npos) << msg;
      EXPECT_NE(msg.find("skip_bad_shards"), std::string::npos) << msg;
    }
  }
  opt.skip_bad_shards = true;
  WebDatasetReader r({good0, bad, good2}, 0, 1, 0, opt);
  const auto keys = read_keys(r);
  ASSERT_EQ(r.bad_shards().size(), 1u);
  EXPECT_EQ(r.bad_shards()[0].rfind(bad, 0), 0u) << r.bad_shards()[0];
  // Everything of the good shards; of the bad one at most what preceded the cut.
  EXPECT_EQ(std::count_if(keys.begin(), keys.end(), [](const std::string& k) { return k[1] != '1'; }), 4);
  EXPECT_LT(std::count_if(keys.begin(), keys.end(), [](const std::string& k) { return k[1] == '1'; }), 4);
}

TEST(WebDatasetTest, CorruptOrMissingShardIsAnError) {
  TempDir dir;
  std::ofstream(dir.file("garbage.tar"), std::ios::binary) << std::string(3000, 'x');
  WebDatasetSample s;
  {
    WebDatasetReader r({dir.file("garbage.tar")}, 0, 1, 0);
    EXPECT_THROW_WITH(r.next(&s), InputError, "garbage.tar");
  }
  {
    WebDatasetReader r({dir.file("missing.tar")}, 0, 1, 0);
    EXPECT_THROW_WITH(r.next(&s), InputError, "missing.tar");
  }
  // A damaged header in the middle of an otherwise valid shard.
  const std::string shard = make_shard(dir, 3, 4);
  {
    std::fstream f(shard, std::ios::in | std::ios::out | std::ios::binary);
    const auto size = std::filesystem::file_size(shard);
    // Find the third member's header ("s3_1.png") and scribble over its checksum area.
    std::string all(size, '\0');
    f.read(all.data(), static_cast<std::streamsize>(size));
    const size_t pos = all.find("s3_1.png");
    ASSERT_NE(pos, std::string::npos);
    const size_t header = pos - pos % 512;
    f.seekp(static_cast<std::streamoff>(header));
    const std::string junk(512, '\x7f');
    f.write(junk.data(), 512);
  }
  WebDatasetReader r({shard}, 0, 1, 0);
  EXPECT_THROW_WITH(
      {
        while (r.next(&s)) {
        }
      },
      InputError, shard);
}

TEST(WebDatasetTest, ShuffleBufferAndSkipAreDeterministic) {
  TempDir dir;
  std::vector<std::string> shards = {make_shard(dir, 0, 6), make_shard(dir, 1, 6)};
  WebDatasetOptions opt;
  opt.shuffle_buffer = 4;
  WebDatasetReader a(shards, 0, 1, 9, opt), b(shards, 0, 1, 9, opt);
  const auto ka = read_keys(a);
  EXPECT_EQ(ka, read_keys(b));
  ASSERT_EQ(ka.size(), 12u);
  WebDatasetOptions plain;
  WebDatasetReader c(shards, 0, 1, 9, plain);
  EXPECT_NE(ka, read_keys(c));  // the buffer reorders samples
  // skip(n) then next() continues exactly where n next() calls would.
  a.set_epoch(0);
  EXPECT_EQ(a.skip(5), 5);
  EXPECT_EQ(a.position(), 5);
  WebDatasetSample s;
  ASSERT_TRUE(a.next(&s));
  EXPECT_EQ(s.key, ka[5]);
  EXPECT_EQ(s.index, 5);
  EXPECT_EQ(a.skip(100), 6);
}

TEST(WebDatasetTest, ExpandsBraceRangesListsAndGlobs) {
  EXPECT_EQ(expand_shard_spec("data/shard-{000000..000002}.tar"),
            (std::vector<std::string>{"data/shard-000000.tar", "data/shard-000001.tar", "data/shard-000002.tar"}));
  EXPECT_EQ(expand_shard_spec("x{8..10}"), (std::vector<std::string>{"x8", "x9", "x10"}));
  EXPECT_EQ(expand_shard_spec("x{3..1}"), (std::vector<std::string>{"x3", "x2", "x1"}));
  EXPECT_EQ(expand_shard_spec("{a,b}-{0..1}.tar"),
            (std::vector<std::string>{"a-0.tar", "a-1.tar", "b-0.tar", "b-1.tar"}));
  EXPECT_EQ(expand_shard_spec("lit{x}.tar"), std::vector<std::string>{"lit{x}.tar"});
  EXPECT_THROW_WITH(expand_shard_spec("a{0..1.tar"), ConfigError, "unmatched '{'");

  TempDir dir;
  for (int i : {2, 0, 1}) make_shard(dir, i, 1);
  EXPECT_EQ(expand_shard_spec(dir.file("shard-*.tar")),
            (std::vector<std::string>{dir.file("shard-000000.tar"), dir.file("shard-000001.tar"),
                                      dir.file("shard-000002.tar")}));
  EXPECT_THROW_WITH(expand_shard_spec(dir.file("none-*.tar")), ConfigError, "matches no file");
  WebDatasetReader r({dir.file("shard-{000000..000002}.tar")}, 0, 1, 0);
  EXPECT_EQ(r.shards().size(), 3u);
  EXPECT_EQ(read_keys(r).size(), 3u);
}

TEST(WebDatasetTest, RejectsBadRankAndEmptyShardList) {
  EXPECT_THROW_WITH(WebDatasetReader({"a.tar"}, 2, 2, 0), ConfigError, "rank 2 of world size 2");
  EXPECT_THROW_WITH(WebDatasetReader({}, 0, 1, 0), ConfigError, "no shards");
}

}  // namespace
}  // namespace blip2
