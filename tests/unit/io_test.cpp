#include "blip2/io/safetensors.h"

#include <fstream>
#include <nlohmann/json.hpp>

#include "blip2/io/tensor_store.h"
#include "blip2/util/error.h"
#include "test_util.h"

namespace blip2 {
namespace {

using test::TempDir;

// Writes raw bytes: an 8-byte header length, the header, then `data`.
void write_raw(const std::string& path, const std::string& header, const std::string& data,
               int64_t claimed_len = -1) {
  std::ofstream out(path, std::ios::binary);
  uint64_t n = claimed_len >= 0 ? static_cast<uint64_t>(claimed_len) : header.size();
  for (int i = 0; i < 8; ++i) out.put(static_cast<char>((n >> (8 * i)) & 0xff));
  out << header << data;
}

TEST(SafetensorsTest, RoundTripsEveryDtypeAndShape) {
  TempDir dir;
  const std::string path = dir.file("t.safetensors");
  std::vector<std::pair<std::string, at::Tensor>> ts = {
      {"f32", torch::randn({3, 4})},
      {"f16", torch::randn({5}).to(torch::kHalf)},
      {"bf16", torch::randn({2, 2}).to(torch::kBFloat16)},
      {"i64", torch::arange(7, torch::kLong)},
      {"u8", torch::arange(9, torch::kByte).view({3, 3})},
      {"scalar", torch::tensor(3.5f)},
      {"empty", torch::zeros({0, 4})},
  };
  io::save_safetensors(path, ts);
  auto f = io::SafetensorsFile::open(path);
  EXPECT_EQ(f->tensors().size(), ts.size());
  EXPECT_EQ(f->metadata().at("format"), "pt");
  for (const auto& [name, t] : ts) {
    auto got = f->tensor(name);
    EXPECT_EQ(got.scalar_type(), t.scalar_type()) << name;
    EXPECT_EQ(got.sizes(), t.sizes()) << name;
    EXPECT_TRUE(torch::equal(got, t)) << name;
  }
}

TEST(SafetensorsTest, F32TensorsShareTheMappingAndStayWritable) {
  TempDir dir;
  const std::string path = dir.file("t.safetensors");
  io::save_safetensors(path, {{"w", torch::ones({64})}});
  auto f = io::SafetensorsFile::open(path);
  EXPECT_TRUE(f->zero_copy("w"));
  auto t = f->tensor("w");
  t.mul_(2);  // copy-on-write: the file is untouched
  EXPECT_EQ(t[0].item<float>(), 2.0f);
  EXPECT_EQ(io::SafetensorsFile::open(path)->tensor("w")[0].item<float>(), 1.0f);
}

TEST(SafetensorsTest, TensorOutlivesTheFileObject) {
  TempDir dir;
  const std::string path = dir.file("t.safetensors");
  io::save_safetensors(path, {{"w", torch::full({16}, 7.0f)}});
  at::Tensor t;
  {
    auto f = io::SafetensorsFile::open(path);
    t = f->tensor("w");
  }
  EXPECT_EQ(t.sum().item<float>(), 7.0f * 16);
}

TEST(SafetensorsTest, MissingFileNamesThePath) {
  EXPECT_THROW_WITH(io::SafetensorsFile::open("/nonexistent/x.safetensors"), CheckpointError,
                    "/nonexistent/x.safetensors");
}

TEST(SafetensorsTest, FileShorterThanHeaderLengthIsTruncated) {
  TempDir dir;
  std::ofstream(dir.file("a"), std::ios::binary) << "abc";
  EXPECT_THROW_WITH(io::SafetensorsFile::open(dir.file("a")), CheckpointError, "truncated");
  write_raw(dir.file("b"), "{}", "", 1000);
  EXPECT_THROW_WITH(io::SafetensorsFile::open(dir.file("b")), CheckpointError, "header length 1000");
}

TEST(SafetensorsTest, HeaderThatIsNotJsonIsRejected) {
  TempDir dir;
  write_raw(dir.file("a"), "{not json", "");
  EXPECT_THROW_WITH(io::SafetensorsFile::open(dir.file("a")), CheckpointError, "not valid JSON");
}

TEST(SafetensorsTest, OffsetsPastTheEndOfTheDataAreRejected) {
  TempDir dir;
  write_raw(dir.file("a"), R"({"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", std::string(8, '\0'));
  EXPECT_THROW_WITH(io::SafetensorsFile::open(dir.file("a")), CheckpointError, "tensor 'w': data ends at byte 16");
}

TEST(SafetensorsTest, SizeThatDisagreesWithShapeIsRejected) {
  TempDir dir;
  write_raw(dir.file("a"), R"({"w":{"dtype":"F32","shape":[3],"data_offsets":[0,16]}})", std::string(16, '\0'));
  EXPECT_THROW_WITH(io::SafetensorsFile::open(dir.file("a")), CheckpointError, "needs 12");
}

TEST(SafetensorsTest, UnsupportedDtypeIsNamed) {
  TempDir dir;
  write_raw(dir.file("a"), R"({"w":{"dtype":"F8_E4M3","shape":[1],"data_offsets":[0,1]}})", std::string(1, '\0'));
  EXPECT_THROW_WITH(io::SafetensorsFile::open(dir.file("a")), CheckpointError, "dtype F8_E4M3 is not supported");
}

TEST(SafetensorsTest, OverlappingTensorsAreRejected) {
  TempDir dir;
  write_raw(dir.file("a"),
            R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
            std::string(12, '\0'));
  EXPECT_THROW_WITH(io::SafetensorsFile::open(dir.file("a")), CheckpointError, "overlap");
}

TEST(SafetensorsTest, NegativeOrHugeShapesAreRejected) {
  TempDir dir;
  write_raw(dir.file("a"), R"({"w":{"dtype":"F32","shape":[-1],"data_offsets":[0,0]}})", "");
  EXPECT_THROW_WITH(io::SafetensorsFile::open(dir.file("a")), CheckpointError, "non-negative integers");
  write_raw(dir.file("b"),
            R"({"w":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,0]}})", "");
  EXPECT_THROW_WITH(io::SafetensorsFile::open(dir.file("b")), CheckpointError, "overflows");
}

TEST(SafetensorsTest, MisalignedDataIsCopiedNotMapped) {
  TempDir dir;
  // Header of odd length puts the data at an odd address.
  std::string data(4 + 1, '\0');
  float one = 1.0f;
  std::memcpy(&data[1], &one, 4);
  write_raw(dir.file("a"), R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[1,5]},"pad":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}})", data);
  auto f = io::SafetensorsFile::open(dir.file("a"));
  EXPECT_FALSE(f->zero_copy("w"));
  EXPECT_EQ(f->tensor("w").item<float>(), 1.0f);
}

TEST(SafetensorsTest, WriteIsAtomicAndLeavesNoTemporaryFiles) {
  TempDir dir;
  const std::string path = dir.file("ckpt.safetensors");
  io::save_safetensors(path, {{"a", torch::ones({2})}});
  io::save_safetensors(path, {{"a", torch::zeros({2})}});
  int files = 0;
  for (auto& e : std::filesystem::directory_iterator(dir.path())) {
    (void)e;
    ++files;
  }
  EXPECT_EQ(files, 1);
  EXPECT_EQ(io::load_safetensors(path).at("a").sum().item<float>(), 0.0f);
  EXPECT_THROW_WITH(io::save_safetensors("/nonexistent-dir/x.safetensors", {{"a", torch::ones({1})}}), Error,
                    "/nonexistent-dir/x.safetensors");
}

TEST(TensorStoreTest, ReadsShardsThroughTheIndex) {
  TempDir dir;
  io::save_safetensors(dir.file("model-00001-of-00002.safetensors"), {{"a", torch::ones({2})}});
  io::save_safetensors(dir.file("model-00002-of-00002.safetensors"), {{"b", torch::zeros({3})}});
  nlohmann::json idx = {{"metadata", {{"total_size", 20}}},
                        {"weight_map", {{"a", "model-00001-of-00002.safetensors"},
                                        {"b", "model-00002-of-00002.safetensors"}}}};
  std::ofstream(dir.file("model.safetensors.index.json")) << idx.dump();
  auto store = io::TensorStore::open(dir.path());
  EXPECT_EQ(store.names(), (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(store.get("b").numel(), 3);
  EXPECT_NE(store.file_of("b").find("00002"), std::string::npos);
  EXPECT_THROW_WITH(store.get("c"), CheckpointError, "tensor 'c' is not in checkpoint");
}

TEST(TensorStoreTest, IndexNamingAMissingShardIsAnError) {
  TempDir dir;
  nlohmann::json idx = {{"weight_map", {{"a", "model-00001-of-00002.safetensors"}}}};
  std::ofstream(dir.file("model.safetensors.index.json")) << idx.dump();
  EXPECT_THROW_WITH(io::TensorStore::open(dir.path()), CheckpointError, "model-00001-of-00002.safetensors");
}

TEST(TensorStoreTest, IndexThatLiesAboutAShardIsAnError) {
  TempDir dir;
  io::save_safetensors(dir.file("s1.safetensors"), {{"a", torch::ones({2})}});
  nlohmann::json idx = {{"weight_map", {{"zzz", "s1.safetensors"}}}};
  std::ofstream(dir.file("model.safetensors.index.json")) << idx.dump();
  EXPECT_THROW_WITH(io::TensorStore::open(dir.path()), CheckpointError, "does not hold it");
}

TEST(TensorStoreTest, DirectoryWithoutWeightsSaysWhatItLooksFor) {
  TempDir dir;
  EXPECT_THROW_WITH(io::TensorStore::open(dir.path()), CheckpointError, "model.safetensors");
}

}  // namespace
}  // namespace blip2
