// load_torch_checkpoint / save_torch_checkpoint against files written by real
// PyTorch (tests/fixtures/make_pth_fixtures.py: the expected values below are
// the formulas used there) and against torch.load itself.
#include "blip2/io/torch_checkpoint.h"

#include <cstdlib>
#include <fstream>
#include <iterator>

#include "blip2/util/error.h"
#include "test_util.h"

namespace blip2 {
namespace {

using test::TempDir;

std::string fixture(const std::string& name) { return std::string(BLIP2_SOURCE_DIR) + "/tests/fixtures/pth/" + name; }

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}
void write_file(const std::string& path, const std::string& data) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(data.data(), static_cast<std::streamsize>(data.size()));
}

at::Tensor arange_f(int64_t n) { return torch::arange(n, torch::kFloat); }

void expect_equal(const at::Tensor& got, const at::Tensor& want, const std::string& what) {
  ASSERT_TRUE(got.defined()) << what;
  EXPECT_EQ(got.scalar_type(), want.scalar_type()) << what;
  EXPECT_EQ(got.sizes(), want.sizes()) << what;
  EXPECT_TRUE(torch::equal(got, want)) << what << ": got " << got << " want " << want;
}

// ---- reading

TEST(TorchCheckpointTest, LoadsEveryDtypeWithItsValues) {
  auto sd = io::load_torch_checkpoint(fixture("plain.pth"));
  ASSERT_EQ(sd.size(), 12u);
  expect_equal(sd.at("f32"), arange_f(12).reshape({3, 4}) / 4, "f32");
  expect_equal(sd.at("f16"), (arange_f(6) - 2.5).to(torch::kHalf), "f16");
  expect_equal(sd.at("bf16"), (arange_f(8) * 0.5).to(torch::kBFloat16).reshape({2, 4}), "bf16");
  expect_equal(sd.at("f64"), torch::arange(3, torch::kDouble) / 3, "f64");
  expect_equal(sd.at("i64"), torch::tensor({-(int64_t{1} << 40), int64_t{-1}, int64_t{0}, int64_t{1}, int64_t{1} << 40}), "i64");
  expect_equal(sd.at("i32"), torch::arange(4, torch::kInt) - 2, "i32");
  expect_equal(sd.at("i16"), torch::arange(4, torch::kShort) * 1000, "i16");
  expect_equal(sd.at("i8"), torch::arange(4, torch::kChar) - 100, "i8");
  expect_equal(sd.at("u8"), torch::arange(4, torch::kByte) + 250, "u8");
  expect_equal(sd.at("bool"), torch::tensor({true, false, true}), "bool");
  expect_equal(sd.at("scalar"), torch::tensor(2.5f), "scalar");
  expect_equal(sd.at("empty"), torch::zeros({0, 3}), "empty");
  EXPECT_EQ(sd.at("scalar").dim(), 0);
  EXPECT_FALSE(sd.at("f32").requires_grad());
}

TEST(TorchCheckpointTest, LavisCheckpointYieldsItsModelEntryAndSkipsTheRest) {
  // {"model": sd, "optimizer": {... tensors ...}, "config": {argparse.Namespace,
  // numpy scalars, 2**70, bytes, a set, ...}, "epoch": 3}
  const auto path = fixture("lavis_style.pth");
  auto sd = io::load_torch_checkpoint(path);
  ASSERT_EQ(sd.size(), 2u);
  expect_equal(sd.at("layer.weight"), arange_f(6).reshape({2, 3}), "weight");
  expect_equal(sd.at("layer.bias"), -arange_f(2), "bias");
  auto explicit_key = io::load_torch_checkpoint(path, "model");
  EXPECT_EQ(explicit_key.size(), 2u);
  EXPECT_THROW_WITH(io::load_torch_checkpoint(path, "optimizer"), CheckpointError, "state dict entry 'state' (in entry 'optimizer') is a dict, not a tensor");
  EXPECT_THROW_WITH(io::load_torch_checkpoint(path, "nope"), CheckpointError,
                    "keys found: ['model', 'optimizer', 'config', 'epoch']");
  EXPECT_THROW_WITH(io::load_torch_checkpoint(path, "epoch"), CheckpointError, "entry 'epoch' is an int, not a state dict");
}

TEST(TorchCheckpointTest, FindsStateDictEntryAndNamesKeysWhenThereIsNone) {
  auto sd = io::load_torch_checkpoint(fixture("state_dict_key.pth"));
  expect_equal(sd.at("layer.weight"), arange_f(6).reshape({2, 3}), "weight");
  EXPECT_THROW_WITH(io::load_torch_checkpoint(fixture("no_state_dict.pth")), CheckpointError,
                    "keys found: ['epoch', 'config']");
}

TEST(TorchCheckpointTest, SharedStoragesComeBackAsViewsOfOneBuffer) {
  auto sd = io::load_torch_checkpoint(fixture("shared.pth"));
  const auto base = arange_f(24).reshape({4, 6});
  expect_equal(sd.at("base"), base, "base");
  expect_equal(sd.at("tied"), base, "tied");
  expect_equal(sd.at("transposed"), base.t(), "transposed");
  expect_equal(sd.at("row2"), base[2], "row2");
  expect_equal(sd.at("window"), base.slice(0, 1, 3).slice(1, 2, 5), "window");
  expect_equal(sd.at("param"), arange_f(3), "param");
  EXPECT_EQ(sd.at("transposed").strides(), (std::vector<int64_t>{1, 6}));
  EXPECT_FALSE(sd.at("transposed").is_contiguous());
  EXPECT_EQ(sd.at("row2").storage_offset(), 12);
  EXPECT_EQ(sd.at("window").storage_offset(), 8);
  EXPECT_EQ(sd.at("window").strides(), (std::vector<int64_t>{6, 1}));
  for (const char* view : {"tied", "transposed", "row2", "window"})
    EXPECT_TRUE(sd.at(view).is_alias_of(sd.at("base"))) << view;
  EXPECT_FALSE(sd.at("param").is_alias_of(sd.at("base")));
  // One buffer: a write through one name shows through the others, and stays
  // private to the process (the mapping is copy-on-write).
  sd.at("base")[2][3] = -1.0f;
  EXPECT_EQ(sd.at("tied")[2][3].item<float>(), -1.0f);
  EXPECT_EQ(sd.at("row2")[3].item<float>(), -1.0f);
  EXPECT_EQ(sd.at("transposed")[3][2].item<float>(), -1.0f);
  EXPECT_EQ(io::load_torch_checkpoint(fixture("shared.pth")).at("base")[2][3].item<float>(), 15.0f);
}

TEST(TorchCheckpointTest, ReadsArchivesOfOtherWritersAndZip64) {
  // Python's zipfile: entries not aligned (data copied), archive folder "a",
  // storages located on "cuda:0" (loaded to the CPU).
  auto u = io::load_torch_checkpoint(fixture("unaligned.pth"));
  expect_equal(u.at("w"), torch::tensor({1.0f, 2.0f, 3.0f}), "unaligned");
  EXPECT_TRUE(u.at("w").device().is_cpu());
  // Every size and offset in ZIP64 extra fields, ZIP64 end records.
  auto z = io::load_torch_checkpoint(fixture("zip64.pth"));
  expect_equal(z.at("w"), torch::tensor({0.0f, 1.0f, 2.0f, 3.0f}).reshape({2, 2}).t(), "zip64");
}

TEST(TorchCheckpointTest, MalformedPicklesAndStoragesAreCheckpointErrors) {
  EXPECT_THROW_WITH(io::load_torch_checkpoint(fixture("legacy.pth")), CheckpointError,
                    "legacy (non-zip) .pth format is not supported; re-save with torch.save in PyTorch >= 1.6");
  EXPECT_THROW_WITH(io::load_torch_checkpoint(fixture("bad_opcode.pth")), CheckpointError,
                    "unsupported pickle opcode 0x82 (at offset 2)");
  EXPECT_THROW_WITH(io::load_torch_checkpoint(fixture("bad_opcode.pth")), CheckpointError, "bad_opcode.pth");
  EXPECT_THROW_WITH(io::load_torch_checkpoint(fixture("past_storage.pth")), CheckpointError,
                    "extends past its storage '0' of 4 elements");
  EXPECT_THROW_WITH(io::load_torch_checkpoint(fixture("missing_storage.pth")), CheckpointError,
                    "storage '1' is referenced but the archive has no entry 'a/data/1'");
  EXPECT_THROW_WITH(io::load_torch_checkpoint(fixture("short_storage.pth")), CheckpointError,
                    "should hold 8 float32 elements but its entry has 16 bytes");
  EXPECT_THROW_WITH(io::load_torch_checkpoint(fixture("not_tensor_value.pth")), CheckpointError,
                    "state dict entry 'n' (in entry 'model') is an int, not a tensor");
  EXPECT_THROW_WITH(io::load_torch_checkpoint(fixture("deflated.pth")), CheckpointError, "is compressed (method 8)");
  EXPECT_THROW_WITH(io::load_torch_checkpoint("/nonexistent/x.pth"), CheckpointError, "cannot open");
}

// ---- corrupt zips

// Offset of the central-directory record of the entry whose name ends with `suffix`.
size_t central_record(const std::string& zip, const std::string& suffix) {
  for (size_t p = zip.find("PK\x01\x02"); p != std::string::npos; p = zip.find("PK\x01\x02", p + 1)) {
    const auto* b = reinterpret_cast<const uint8_t*>(zip.data() + p);
    const size_t nlen = b[28] | (b[29] << 8);
    const std::string name = zip.substr(p + 46, nlen);
    if (name.size() >= suffix.size() && name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0) return p;
  }
  return std::string::npos;
}
uint32_t crc32(const uint8_t* p, size_t n) {
  uint32_t c = 0xffffffffu;
  for (size_t i = 0; i < n; ++i) {
    c ^= p[i];
    for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
  }
  return ~c;
}
uint32_t get32(const std::string& s, size_t at) {
  const auto* b = reinterpret_cast<const uint8_t*>(s.data() + at);
  return b[0] | (b[1] << 8) | (b[2] << 16) | (static_cast<uint32_t>(b[3]) << 24);
}
void put32(std::string& s, size_t at, uint32_t v) {
  for (int i = 0; i < 4; ++i) s[at + i] = static_cast<char>((v >> (8 * i)) & 0xff);
}
// (data offset, size) of the entry whose central record is at `cd` (no ZIP64).
std::pair<size_t, size_t> entry_data(const std::string& zip, size_t cd) {
  const size_t local = get32(zip, cd + 42);
  const auto* l = reinterpret_cast<const uint8_t*>(zip.data() + local);
  return {local + 30 + (l[26] | (l[27] << 8)) + (l[28] | (l[29] << 8)), get32(zip, cd + 24)};
}

TEST(TorchCheckpointTest, CorruptZipsAreCheckpointErrors) {
  TempDir dir;
  const std::string good = read_file(fixture("plain.pth"));
  const std::string path = dir.file("x.pth");
  ASSERT_GT(good.size(), 1000u);

  write_file(path, "");
  EXPECT_THROW_WITH(io::load_torch_checkpoint(path), CheckpointError, "is empty");
  write_file(path, "this is not a checkpoint at all, just some text that is long enough");
  EXPECT_THROW_WITH(io::load_torch_checkpoint(path), CheckpointError, "not a zip archive");
  write_file(path, good.substr(0, good.size() / 2));
  EXPECT_THROW_WITH(io::load_torch_checkpoint(path), CheckpointError, "truncated");

  // A flipped byte in a storage: the CRC-32 names the entry.
  const size_t cd0 = central_record(good, "/data/0");
  ASSERT_NE(cd0, std::string::npos);
  auto [off0, size0] = entry_data(good, cd0);
  ASSERT_GT(size0, 0u);
  std::string bad = good;
  bad[off0 + 5] ^= 0x40;
  write_file(path, bad);
  EXPECT_THROW_WITH(io::load_torch_checkpoint(path), CheckpointError, "zip entry 'plain/data/0' is corrupt: CRC-32");

  // A storage entry claiming more bytes than the file has.
  bad = good;
  put32(bad, cd0 + 20, 0x7ffffff0u);
  put32(bad, cd0 + 24, 0x7ffffff0u);
  write_file(path, bad);
  EXPECT_THROW_WITH(io::load_torch_checkpoint(path), CheckpointError, "extends past the end of the file");

  // Central directory offset pointing outside the file / at garbage.
  const size_t eocd = good.rfind("PK\x05\x06");
  ASSERT_NE(eocd, std::string::npos);
  bad = good;
  const size_t locator = good.rfind("PK\x06\x07");
  ASSERT_NE(locator, std::string::npos);  // torch writes ZIP64 end records even for small files
  const size_t z64 = get32(good, locator + 8);
  put32(bad, z64 + 48, 0x00ffffffu);
  write_file(path, bad);
  EXPECT_THROW_WITH(io::load_torch_checkpoint(path), CheckpointError, "lies outside the file");
  bad = good;
  put32(bad, z64 + 48, get32(good, z64 + 48) - 3);
  write_file(path, bad);
  EXPECT_THROW_WITH(io::load_torch_checkpoint(path), CheckpointError, "central directory entry 0");
  // A local header offset pointing at the wrong place.
  bad = good;
  put32(bad, cd0 + 42, get32(good, cd0 + 42) + 1);
  write_file(path, bad);
  EXPECT_THROW_WITH(io::load_torch_checkpoint(path), CheckpointError, "no local header");
}

TEST(TorchCheckpointTest, EveryTruncationIsACheckpointError) {
  TempDir dir;
  const std::string good = read_file(fixture("shared.pth"));
  const std::string path = dir.file("x.pth");
  for (size_t n = 0; n < good.size(); n += 7) {
    write_file(path, good.substr(0, n));
    EXPECT_THROW(io::load_torch_checkpoint(path), CheckpointError) << n << " bytes";
  }
}

// Flips bytes of data.pkl (fixing its CRC so that the pickle VM sees them):
// every outcome must be a clean load or a CheckpointError, never a crash.
TEST(TorchCheckpointTest, MutatedPicklesNeverCrash) {
  TempDir dir;
  const std::string good = read_file(fixture("shared.pth"));
  const std::string path = dir.file("x.pth");
  const size_t cd = central_record(good, "/data.pkl");
  ASSERT_NE(cd, std::string::npos);
  auto [off, size] = entry_data(good, cd);
  int loaded = 0, rejected = 0;
  for (size_t i = 0; i < size; ++i) {
    for (uint8_t x : {0x01, 0x80, 0xff}) {
      std::string bad = good;
      bad[off + i] = static_cast<char>(bad[off + i] ^ x);
      put32(bad, cd + 16, crc32(reinterpret_cast<const uint8_t*>(bad.data() + off), size));
      write_file(path, bad);
      try {
        auto sd = io::load_torch_checkpoint(path);
        for (auto& [k, t] : sd) t.sum();  // touch every element
        ++loaded;
      } catch (const CheckpointError&) {
        ++rejected;
      }
    }
  }
  EXPECT_GT(rejected, 0);
  EXPECT_EQ(loaded + rejected, static_cast<int>(3 * size));
}

// ---- writing

std::vector<std::pair<std::string, at::Tensor>> sample_state_dict() {
  auto base = arange_f(24).reshape({4, 6});
  return {
      {"f32", arange_f(12).reshape({3, 4}) / 4},
      {"f16", (arange_f(6) - 2.5).to(torch::kHalf)},
      {"bf16", (arange_f(8) * 0.5).to(torch::kBFloat16).reshape({2, 4})},
      {"f64", torch::arange(3, torch::kDouble) / 3},
      {"i64", torch::tensor({-(int64_t{1} << 40), int64_t{5}})},
      {"i32", torch::arange(4, torch::kInt) - 2},
      {"i16", torch::arange(4, torch::kShort) * 1000},
      {"i8", torch::arange(4, torch::kChar) - 100},
      {"u8", torch::arange(4, torch::kByte) + 250},
      {"bool", torch::tensor({true, false, true})},
      {"scalar", torch::tensor(2.5f)},
      {"empty", torch::zeros({0, 3})},
      {"base", base},
      {"transposed", base.t()},
      {"window", base.slice(0, 1, 3).slice(1, 2, 5)},
      {"tail", base.view(-1).slice(0, 20)},  // only the span a group touches is written
  };
}

void expect_round_trip(const std::string& path) {
  auto want = sample_state_dict();
  auto got = io::load_torch_checkpoint(path);
  ASSERT_EQ(got.size(), want.size());
  for (const auto& [name, t] : want) {
    expect_equal(got.at(name), t, name);
    EXPECT_EQ(got.at(name).strides(), t.strides()) << name;
  }
  EXPECT_TRUE(got.at("transposed").is_alias_of(got.at("base")));
  EXPECT_TRUE(got.at("window").is_alias_of(got.at("base")));
  EXPECT_TRUE(got.at("tail").is_alias_of(got.at("base")));
}

TEST(TorchCheckpointTest, SaveRoundTripsDtypesViewsAndSharing) {
  TempDir dir;
  io::save_torch_checkpoint(dir.file("a.pth"), sample_state_dict());
  expect_round_trip(dir.file("a.pth"));
  io::TorchSaveOptions z64;
  z64.force_zip64 = true;
  io::save_torch_checkpoint(dir.file("z.pth"), sample_state_dict(), z64);
  expect_round_trip(dir.file("z.pth"));
  // Storages are 64-byte aligned, so loading shares the mapping.
  auto sd = io::load_torch_checkpoint(dir.file("a.pth"));
  EXPECT_EQ(reinterpret_cast<uintptr_t>(sd.at("f32").data_ptr()) % 64, 0u);
  // Re-saving what was loaded (tensors backed by the mapping) round-trips too.
  std::vector<std::pair<std::string, at::Tensor>> again(sd.begin(), sd.end());
  io::save_torch_checkpoint(dir.file("b.pth"), again);
  auto sd2 = io::load_torch_checkpoint(dir.file("b.pth"));
  for (const auto& [k, t] : sd) expect_equal(sd2.at(k), t, k);
}

TEST(TorchCheckpointTest, SaveRejectsWhatAStorageCannotHold) {
  TempDir dir;
  EXPECT_THROW_WITH(io::save_torch_checkpoint(dir.file("c.pth"), {{"c", torch::zeros({2}, torch::kComplexFloat)}}),
                    InputError, "dtype");
  EXPECT_THROW_WITH(io::save_torch_checkpoint(dir.file("d.pth"), {{"a", torch::zeros({2})}, {"a", torch::ones({2})}}),
                    InputError, "appears twice");
  EXPECT_FALSE(std::filesystem::exists(dir.file("c.pth")));
  EXPECT_THROW_WITH(io::save_torch_checkpoint("/nonexistent-dir/x.pth", {{"a", torch::zeros({2})}}), CheckpointError,
                    "cannot create");
}

bool python_has_torch() {
  static const bool ok = std::system("/usr/bin/python3 -c 'import torch' >/dev/null 2>&1") == 0;
  return ok;
}

TEST(TorchCheckpointTest, TorchLoadReadsWhatWeSave) {
  if (!python_has_torch()) GTEST_SKIP() << "/usr/bin/python3 has no torch (apt-get install -y python3-torch)";
  TempDir dir;
  io::save_torch_checkpoint(dir.file("a.pth"), sample_state_dict());
  io::TorchSaveOptions z64;
  z64.force_zip64 = true;
  z64.archive_name = "other";
  io::save_torch_checkpoint(dir.file("z.pth"), sample_state_dict(), z64);
  const std::string script = R"PY(
import sys, zipfile, collections, torch
for path in sys.argv[1:]:
    z = zipfile.ZipFile(path)
    assert z.testzip() is None, "bad CRC"
    for i in z.infolist():
        assert i.compress_type == zipfile.ZIP_STORED
    sd = torch.load(path)
    assert type(sd) is collections.OrderedDict, type(sd)
    base = torch.arange(24.).reshape(4, 6)
    want = {
        "f32": torch.arange(12.).reshape(3, 4) / 4,
        "f16": (torch.arange(6.) - 2.5).half(),
        "bf16": (torch.arange(8.) * 0.5).bfloat16().reshape(2, 4),
        "f64": torch.arange(3, dtype=torch.float64) / 3,
        "i64": torch.tensor([-(2 ** 40), 5]),
        "i32": torch.arange(4, dtype=torch.int32) - 2,
        "i16": torch.arange(4, dtype=torch.int16) * 1000,
        "i8": torch.arange(4, dtype=torch.int8) - 100,
        "u8": torch.arange(4, dtype=torch.uint8) + 250,
        "bool": torch.tensor([True, False, True]),
        "scalar": torch.tensor(2.5),
        "empty": torch.zeros(0, 3),
        "base": base, "transposed": base.t(), "window": base[1:3, 2:5], "tail": base.view(-1)[20:],
    }
    assert list(sd.keys()) == list(want.keys()), list(sd.keys())
    for k, v in want.items():
        assert sd[k].dtype == v.dtype and sd[k].shape == v.shape and torch.equal(sd[k], v), k
        assert sd[k].stride() == v.stride(), (k, sd[k].stride())
    for k in ("transposed", "window", "tail"):
        assert sd[k].storage().data_ptr() == sd["base"].storage().data_ptr(), k
print("OK")
)PY";
  write_file(dir.file("check.py"), script);
  const std::string out = dir.file("out.txt");
  const std::string cmd = "/usr/bin/python3 " + dir.file("check.py") + " " + dir.file("a.pth") + " " + dir.file("z.pth") +
                          " >" + out + " 2>&1";
  const int rc = std::system(cmd.c_str());
  EXPECT_EQ(rc, 0) << read_file(out);
  EXPECT_NE(read_file(out).find("OK"), std::string::npos) << read_file(out);
}

TEST(TorchCheckpointTest, SavedStoragesAre64ByteAligned) {
  TempDir dir;
  io::save_torch_checkpoint(dir.file("a.pth"), sample_state_dict());
  const std::string zip = read_file(dir.file("a.pth"));
  int n = 0;
  for (size_t p = zip.find("PK\x01\x02"); p != std::string::npos; p = zip.find("PK\x01\x02", p + 1), ++n) {
    auto [off, size] = entry_data(zip, p);
    EXPECT_EQ(off % 64, 0u) << "entry " << n;
    EXPECT_EQ(get32(zip, p + 16), crc32(reinterpret_cast<const uint8_t*>(zip.data() + off), size)) << "entry " << n;
  }
  EXPECT_GT(n, 10);
}

}  // namespace
}  // namespace blip2
