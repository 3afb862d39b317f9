// Parity with HuggingFace BlipImageProcessor + Pillow 9.4 on the golden set
// in shared/golden/image_processor (see its README.md). Data-driven: every
// image listed in meta.json, at every processor size listed there (size224
// files per image, size16 in one all.safetensors).
#include <torch/torch.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "blip2/data/image.h"
#include "blip2/data/image_processor.h"
#include "blip2/io/safetensors.h"
#include "test_util.h"

namespace blip2 {
namespace {

using nlohmann::json;

std::string ip_dir() { return test::golden("image_processor"); }

json read_meta() {
  std::ifstream in(ip_dir() + "/meta.json");
  if (!in) return json();
  return json::parse(in, nullptr, /*allow_exceptions=*/false);
}

std::vector<std::string> image_names() {
  std::vector<std::string> names;
  const json meta = read_meta();
  if (meta.is_object() && meta.contains("images") && meta["images"].is_object())
    for (const auto& [name, _] : meta["images"].items()) names.push_back(name);
  return names;
}

double g_max_diff = 0;  // over every image and size, reported by the summary test

// Golden tensors for `name` at processor `proc` ("size224", "size16").
bool golden_tensors(const std::string& proc, const std::string& name, at::Tensor& resized, at::Tensor& pixels) {
  const std::string per_image = ip_dir() + "/" + proc + "/" + name + ".safetensors";
  const std::string all = ip_dir() + "/" + proc + "/all.safetensors";
  if (std::filesystem::exists(per_image)) {
    auto t = io::load_safetensors(per_image);
    resized = t.at("resized_uint8");
    pixels = t.at("pixel_values");
    return true;
  }
  if (std::filesystem::exists(all)) {
    auto t = io::load_safetensors(all);
    if (!t.count(name + ".resized_uint8")) return false;
    resized = t.at(name + ".resized_uint8");
    pixels = t.at(name + ".pixel_values");
    return true;
  }
  return false;
}

class ImageProcessorParity : public ::testing::TestWithParam<std::string> {};

TEST_P(ImageProcessorParity, ResizedExactPixelValuesClose) {
  const std::string name = GetParam();
  const json meta = read_meta();
  const json& info = meta["images"][name];
  const Image img = load_image(ip_dir() + "/" + info["file"].get<std::string>());
  EXPECT_EQ(img.width, info["width"].get<int>());
  EXPECT_EQ(img.height, info["height"].get<int>());

  int checked = 0;
  for (const auto& [proc, pinfo] : meta["processors"].items()) {
    SCOPED_TRACE(name + " @ " + proc);
    ImageProcessorConfig cfg = ImageProcessorConfig::from_json_text(pinfo["config"].dump(), "meta.json:" + proc);
    at::Tensor want_u8, want_px;
    if (!golden_tensors(proc, name, want_u8, want_px)) {
      ADD_FAILURE() << "no golden tensors for " << name << " in " << proc;
      continue;
    }
    ++checked;
    ASSERT_EQ(want_u8.sizes(), (at::IntArrayRef{cfg.height, cfg.width, 3}));

    // resized_uint8: Pillow Image.resize(BICUBIC) on the RGB image, bit-exact.
    const Image r = resize(img, cfg.width, cfg.height, static_cast<Resample>(cfg.resample));
    const at::Tensor got_u8 =
        at::from_blob(const_cast<uint8_t*>(r.rgb.data()), {r.height, r.width, 3}, at::kByte).clone();
    const int64_t mismatches = got_u8.ne(want_u8.to(at::kByte)).sum().item<int64_t>();
    EXPECT_EQ(mismatches, 0) << "max |diff| "
                             << (got_u8.to(at::kInt) - want_u8.to(at::kInt)).abs().max().item<int>();

    // pixel_values: full BlipImageProcessor pipeline.
    const at::Tensor got = preprocess(img, cfg);
    ASSERT_EQ(got.sizes(), want_px.sizes());
    const double diff = (got - want_px.to(at::kFloat)).abs().max().item<double>();
    g_max_diff = std::max(g_max_diff, diff);
    EXPECT_LE(diff, 1e-5);
    RecordProperty("max_abs_diff_" + proc, std::to_string(diff));
  }
  EXPECT_GT(checked, 0);
}

INSTANTIATE_TEST_SUITE_P(Golden, ImageProcessorParity, ::testing::ValuesIn(image_names()),
                         [](const ::testing::TestParamInfo<std::string>& p) { return p.param; });
GTEST_ALLOW_UNINSTANTIATED_PARAMETERIZED_TEST(ImageProcessorParity);

// Also the batch path, and the summary line (runs after the per-image tests
// when the whole suite runs; then it also reports their max diff).
TEST(ImageProcessorParitySummary, BatchMatchesAndReport) {
  const std::vector<std::string> names = image_names();
  ASSERT_FALSE(names.empty()) << "no images in " << ip_dir() << "/meta.json";
  const json meta = read_meta();
  ImageProcessorConfig cfg = ImageProcessorConfig::from_json_text(meta["processors"]["size16"]["config"].dump());
  std::vector<Image> images;
  std::vector<at::Tensor> want;
  for (const std::string& n : names) {
    images.push_back(load_image(ip_dir() + "/" + meta["images"][n]["file"].get<std::string>()));
    at::Tensor u8, px;
    ASSERT_TRUE(golden_tensors("size16", n, u8, px));
    want.push_back(px.to(at::kFloat));
  }
  const at::Tensor batch = preprocess_batch(images, cfg);
  const double diff = (batch - at::stack(want)).abs().max().item<double>();
  g_max_diff = std::max(g_max_diff, diff);
  EXPECT_LE(diff, 1e-5);
  std::printf("[image parity] %zu images, max |pixel_values diff| = %.3g\n", names.size(), g_max_diff);
}

}  // namespace
}  // namespace blip2
