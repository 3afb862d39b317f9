// Resize (Pillow 9.4 semantics) and BlipImageProcessor arithmetic.
// Expected arrays below were produced with Pillow 9.4.0
// Image.fromarray(a).resize((w, h), resample=f) on the 5x4 image `sample()`.
#include <torch/torch.h>

#include <cmath>
#include <string>
#include <vector>

#include "blip2/data/image_processor.h"
#include "blip2/util/error.h"
#include "test_util.h"

namespace blip2 {
namespace {

Image sample() {
  Image im;
  im.width = 5;
  im.height = 4;
  im.rgb.resize(60);
  for (int y = 0; y < 4; ++y)
    for (int x = 0; x < 5; ++x) {
      uint8_t* p = im.pixel(x, y);
      p[0] = static_cast<uint8_t>(x * 60);
      p[1] = static_cast<uint8_t>(y * 80);
      p[2] = static_cast<uint8_t>((x * 37 + y * 91) % 256);
    }
  return im;
}

Image solid(int w, int h, uint8_t r, uint8_t g, uint8_t b) {
  Image im;
  im.width = w;
  im.height = h;
  for (int i = 0; i < w * h; ++i) im.rgb.insert(im.rgb.end(), {r, g, b});
  return im;
}

using Bytes = std::vector<uint8_t>;

TEST(ImageResize, MatchesPillowOnSmallImage) {
  const Image a = sample();
  struct Case {
    Resample f;
    int w, h;
    Bytes expect;
  };
  const std::vector<Case> cases = {
      {Resample::Bicubic, 3, 3, {21, 15, 30, 120, 15, 103, 219, 15, 167, 21, 120, 163, 120, 120, 111, 219, 120, 139, 21, 225, 78, 120, 225, 76, 219, 225, 118}},
      // upscale horizontally, downscale vertically
      {Resample::Bicubic, 7, 2, {0, 47, 62, 30, 47, 83, 77, 47, 103, 120, 47, 106, 163, 47, 131, 210, 47, 162, 243, 47, 182, 0, 193, 100, 30, 193, 128, 77, 193, 122, 120, 193, 59, 163, 193, 82, 210, 193, 115, 243, 193, 135}},
      {Resample::Bilinear, 3, 3, {26, 24, 43, 120, 24, 101, 214, 24, 159, 26, 120, 153, 120, 120, 111, 214, 120, 141, 26, 216, 82, 120, 216, 81, 214, 216, 122}},
      {Resample::Nearest, 3, 3, {0, 0, 0, 120, 0, 74, 240, 0, 148, 0, 160, 182, 120, 160, 0, 240, 160, 74, 0, 240, 17, 120, 240, 91, 240, 240, 165}},
      {Resample::Lanczos, 2, 3, {48, 13, 47, 192, 13, 158, 48, 120, 149, 192, 120, 124, 48, 227, 74, 192, 227, 93}},
      {Resample::Box, 2, 3, {60, 0, 37, 210, 0, 130, 60, 120, 131, 210, 120, 139, 60, 240, 54, 210, 240, 147}},
      {Resample::Hamming, 2, 3, {50, 12, 45, 190, 12, 131, 50, 120, 145, 190, 120, 126, 50, 228, 66, 190, 228, 120}},
  };
  for (const Case& c : cases) {
    const Image r = resize(a, c.w, c.h, c.f);
    EXPECT_EQ(r.width, c.w);
    EXPECT_EQ(r.height, c.h);
    EXPECT_EQ(r.rgb, c.expect) << "filter " << static_cast<int>(c.f) << " to " << c.w << "x" << c.h;
  }
  EXPECT_EQ(resize_bicubic(a, 3, 3).rgb, cases[0].expect);
  EXPECT_EQ(resize_bilinear(a, 3, 3).rgb, cases[2].expect);
  EXPECT_EQ(resize_nearest(a, 3, 3).rgb, cases[3].expect);
}

TEST(ImageResize, SameSizeIsACopy) {
  const Image a = sample();
  for (Resample f : {Resample::Nearest, Resample::Bilinear, Resample::Bicubic}) {
    const Image r = resize(a, 5, 4, f);
    EXPECT_EQ(r.rgb, a.rgb);
  }
}

TEST(ImageResize, SolidColourStaysSolid) {
  const Image a = solid(37, 23, 0, 128, 255);
  for (auto [w, h] : std::vector<std::pair<int, int>>{{224, 224}, {16, 16}, {1, 1}, {37, 5}, {3, 23}}) {
    const Image r = resize_bicubic(a, w, h);
    EXPECT_EQ(r.rgb, solid(w, h, 0, 128, 255).rgb) << w << "x" << h;
  }
  // 1x1 up to 224x224
  EXPECT_EQ(resize_bicubic(solid(1, 1, 9, 8, 7), 224, 224).rgb, solid(224, 224, 9, 8, 7).rgb);
}

TEST(ImageResize, BadArgumentsThrow) {
  EXPECT_THROW_WITH(resize_bicubic(Image{}, 4, 4), InputError, "0x0");
  EXPECT_THROW_WITH(resize_bicubic(sample(), 0, 4), InputError, "0x4");
  Image broken = sample();
  broken.rgb.pop_back();
  EXPECT_THROW_WITH(resize_bicubic(broken, 4, 4), InputError, "width*height*3");
  EXPECT_THROW_WITH(resize(sample(), 3, 3, static_cast<Resample>(9)), InputError, "unsupported resample");
}

// ---------------------------------------------------------------------------
// preprocess
// ---------------------------------------------------------------------------

TEST(ImagePreprocess, ValuesFollowTransformersArithmetic) {
  ImageProcessorConfig cfg;
  cfg.height = 2;
  cfg.width = 3;
  const Image img = solid(3, 2, 0, 128, 255);
  const at::Tensor t = preprocess(img, cfg);
  ASSERT_EQ(t.sizes(), (at::IntArrayRef{3, 2, 3}));
  ASSERT_EQ(t.scalar_type(), at::kFloat);
  const uint8_t vals[3] = {0, 128, 255};
  for (int c = 0; c < 3; ++c) {
    const float x = static_cast<float>(vals[c] * (1 / 255.0));
    const float expect = (x - static_cast<float>(cfg.image_mean[c])) / static_cast<float>(cfg.image_std[c]);
    EXPECT_EQ(t[c][1][2].item<float>(), expect);
  }
  // CLIP normalisation: 0 -> -mean/std
  EXPECT_NEAR(t[0][0][0].item<float>(), -0.48145466 / 0.26862954, 1e-6);
}

TEST(ImagePreprocess, FlagsAndNoResize) {
  const Image img = sample();
  ImageProcessorConfig cfg;
  cfg.do_resize = false;
  cfg.do_normalize = false;
  at::Tensor t = preprocess(img, cfg);
  ASSERT_EQ(t.sizes(), (at::IntArrayRef{3, 4, 5}));
  EXPECT_FLOAT_EQ(t[0][0][4].item<float>(), static_cast<float>(240 / 255.0));
  EXPECT_FLOAT_EQ(t[1][3][0].item<float>(), static_cast<float>(240 / 255.0));
  cfg.do_rescale = false;
  t = preprocess(img, cfg);
  EXPECT_EQ(t[2][1][1].item<float>(), 128.0f);
  cfg.do_normalize = true;  // normalise the raw 0..255 values in float32, as numpy would
  t = preprocess(img, cfg);
  EXPECT_EQ(t[2][1][1].item<float>(), (128.0f - static_cast<float>(0.40821073)) / static_cast<float>(0.27577711));
}

TEST(ImagePreprocess, BatchStacksAndChecksSizes) {
  ImageProcessorConfig cfg;
  cfg.height = cfg.width = 16;
  const at::Tensor b = preprocess_batch({sample(), solid(7, 9, 1, 2, 3)}, cfg);
  ASSERT_EQ(b.sizes(), (at::IntArrayRef{2, 3, 16, 16}));
  EXPECT_TRUE(at::equal(b[0], preprocess(sample(), cfg)));
  EXPECT_TRUE(at::equal(b[1], preprocess(solid(7, 9, 1, 2, 3), cfg)));
  cfg.do_resize = false;
  EXPECT_THROW_WITH(preprocess_batch({sample(), solid(7, 9, 1, 2, 3)}, cfg), InputError, "do_resize");
  EXPECT_THROW_WITH(preprocess_batch({}, cfg), InputError, "no images");
  EXPECT_THROW_WITH(preprocess(Image{}, cfg), InputError, "0x0");
}

// ---------------------------------------------------------------------------
// config
// ---------------------------------------------------------------------------

TEST(ImageProcessorConfigTest, DefaultsAreBlip2) {
  const ImageProcessorConfig c;
  EXPECT_EQ(c.height, 224);
  EXPECT_EQ(c.width, 224);
  EXPECT_EQ(c.resample, 3);
  EXPECT_DOUBLE_EQ(c.rescale_factor, 0.00392156862745098);
  EXPECT_DOUBLE_EQ(c.image_std[2], 0.27577711);
}

TEST(ImageProcessorConfigTest, ParsesHfFormats) {
  ImageProcessorConfig c = ImageProcessorConfig::from_json_text(R"({
    "do_convert_rgb": true, "do_normalize": true, "do_rescale": true, "do_resize": true,
    "image_mean": [0.5, 0.25, 0.125], "image_processor_type": "BlipImageProcessor",
    "image_std": [1, 2, 4], "processor_class": "Blip2Processor", "resample": 2,
    "rescale_factor": 0.5, "size": {"height": 32, "width": 48}})");
  EXPECT_EQ(c.height, 32);
  EXPECT_EQ(c.width, 48);
  EXPECT_EQ(c.resample, 2);
  EXPECT_DOUBLE_EQ(c.rescale_factor, 0.5);
  EXPECT_DOUBLE_EQ(c.image_mean[1], 0.25);
  EXPECT_DOUBLE_EQ(c.image_std[2], 4);
  c = ImageProcessorConfig::from_json_text(R"({"size": 384, "image_mean": 0.5, "do_resize": null})");
  EXPECT_EQ(c.height, 384);
  EXPECT_EQ(c.width, 384);
  EXPECT_TRUE(c.do_resize);
  EXPECT_DOUBLE_EQ(c.image_mean[2], 0.5);
  c = ImageProcessorConfig::from_json_text(R"({"size": {"shortest_edge": 64}, "do_normalize": false})");
  EXPECT_EQ(c.height, 64);
  EXPECT_EQ(c.width, 64);
  EXPECT_FALSE(c.do_normalize);
  c = ImageProcessorConfig::from_json_text("{}");
  EXPECT_EQ(c.height, 224);
}

TEST(ImageProcessorConfigTest, ErrorsNameTheField) {
  auto parse = [](const std::string& s) { return ImageProcessorConfig::from_json_text(s, "pp.json"); };
  EXPECT_THROW_WITH(parse(R"({"size": {"height": "224", "width": 224}})"), ConfigError, "pp.json: size.height");
  EXPECT_THROW_WITH(parse(R"({"size": {"height": 224}})"), ConfigError, "both");
  EXPECT_THROW_WITH(parse(R"({"size": {"longest_edge": 224}})"), ConfigError, "size");
  EXPECT_THROW_WITH(parse(R"({"size": 0})"), ConfigError, "size must be in 1..");
  EXPECT_THROW_WITH(parse(R"({"size": [224, 224]})"), ConfigError, "size");
  EXPECT_THROW_WITH(parse(R"({"image_mean": [0.5, 0.5]})"), ConfigError, "image_mean must be a list of 3");
  EXPECT_THROW_WITH(parse(R"({"image_std": [0.5, "x", 0.5]})"), ConfigError, "image_std[1]");
  EXPECT_THROW_WITH(parse(R"({"image_std": [0.5, 0, 0.5]})"), ConfigError, "image_std[1] must be finite and non-zero");
  EXPECT_THROW_WITH(parse(R"({"do_resize": "yes"})"), ConfigError, "do_resize must be true or false");
  EXPECT_THROW_WITH(parse(R"({"rescale_factor": "1/255"})"), ConfigError, "rescale_factor");
  EXPECT_THROW_WITH(parse(R"({"resample": 7})"), ConfigError, "resample");
  EXPECT_THROW_WITH(parse(R"({"resample": 3.0})"), ConfigError, "resample must be an integer");
  EXPECT_THROW_WITH(parse("[1]"), ConfigError, "expected a JSON object");
  EXPECT_THROW_WITH(parse("{"), ConfigError, "not valid JSON");
  EXPECT_THROW_WITH(ImageProcessorConfig::from_json_file("/nonexistent/preprocessor_config.json"), ConfigError,
                    "cannot open");
}

TEST(ImageProcessorConfigTest, FromFile) {
  test::TempDir dir;
  {
    std::FILE* f = std::fopen(dir.file("preprocessor_config.json").c_str(), "w");
    ASSERT_NE(f, nullptr);
    std::fputs(R"({"size": {"height": 16, "width": 16}, "resample": 3})", f);
    std::fclose(f);
  }
  const ImageProcessorConfig c = ImageProcessorConfig::from_json_file(dir.file("preprocessor_config.json"));
  EXPECT_EQ(c.height, 16);
  EXPECT_EQ(c.width, 16);
}

}  // namespace
}  // namespace blip2
