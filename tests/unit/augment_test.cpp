// RandomResizedCrop parameters (torchvision algorithm), crop / flip, and the
// train / eval transforms on in-memory images.
#include <cmath>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "blip2/data/augment.h"
#include "blip2/data/image_processor.h"
#include "blip2/util/error.h"
#include "test_util.h"

namespace blip2 {
namespace {

Image pattern(int w, int h, int salt = 0) {
  Image im;
  im.width = w;
  im.height = h;
  im.rgb.resize(static_cast<size_t>(w) * h * 3);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) {
      uint8_t* p = im.pixel(x, y);
      p[0] = static_cast<uint8_t>(x * 13 + salt);
      p[1] = static_cast<uint8_t>(y * 29);
      p[2] = static_cast<uint8_t>((x * 7 + y * 3 + salt) % 256);
    }
  return im;
}

TEST(AugmentTest, RandomResizedCropParamsStayInsideAndWithinScaleAndRatio) {
  RandomResizedCropConfig cfg;  // scale (0.5, 1), ratio (3/4, 4/3)
  const std::vector<std::pair<int, int>> sizes = {{224, 224}, {640, 480}, {333, 500}, {31, 17}, {1000, 60}};
  int fallbacks = 0, total = 0;
  for (auto [w, h] : sizes) {
    std::mt19937_64 rng(mix_seed({7, static_cast<uint64_t>(w), static_cast<uint64_t>(h)}));
    for (int t = 0; t < 400; ++t, ++total) {
      const CropBox b = random_resized_crop_params(w, h, cfg, rng);
      ASSERT_GE(b.top, 0);
      ASSERT_GE(b.left, 0);
      ASSERT_GE(b.width, 1);
      ASSERT_GE(b.height, 1);
      ASSERT_LE(b.left + b.width, w);
      ASSERT_LE(b.top + b.height, h);
      const bool is_fallback = (b.top == (h - b.height) / 2 && b.left == (w - b.width) / 2 &&
                                (b.width == w || b.height == h));
      if (w == 1000) {  // aspect 16.7: no attempt can fit, always the central fallback
        EXPECT_TRUE(is_fallback);
        EXPECT_EQ(b.height, 60);
        EXPECT_EQ(b.width, 80);  // round(60 * 4/3)
        ++fallbacks;
        continue;
      }
      // Accepted attempts: area fraction and aspect ratio within the ranges up
      // to the rounding of w and h to integers.
      const double area = double(b.width) * b.height / (double(w) * h);
      const double ratio = double(b.width) / b.height;
      const double tol_w = 0.5 / b.width + 0.5 / b.height;
      EXPECT_GE(area, 0.5 * (1 - 2.5 * tol_w)) << w << "x" << h;
      EXPECT_LE(area, 1.0 * (1 + 2.5 * tol_w) + 1e-9);
      EXPECT_GE(ratio, (3.0 / 4.0) * (1 - 2.5 * tol_w));
      EXPECT_LE(ratio, (4.0 / 3.0) * (1 + 2.5 * tol_w));
    }
  }
  EXPECT_EQ(fallbacks, 400);
  EXPECT_GT(total, fallbacks);
}

TEST(AugmentTest, RandomResizedCropIsDeterministicPerSeed) {
  RandomResizedCropConfig cfg;
  auto draw = [&](uint64_t seed) {
    std::mt19937_64 rng(seed);
    std::vector<CropBox> v;
    for (int i = 0; i < 50; ++i) v.push_back(random_resized_crop_params(640, 480, cfg, rng));
    return v;
  };
  EXPECT_EQ(draw(1), draw(1));
  EXPECT_NE(draw(1), draw(2));
  // Boxes vary (not all the same crop).
  std::set<std::tuple<int, int, int, int>> distinct;
  for (const CropBox& b : draw(3)) distinct.insert({b.top, b.left, b.width, b.height});
  EXPECT_GT(distinct.size(), 40u);
}

TEST(AugmentTest, FallbackIsCentralCropWithPythonRounding) {
  // 2x10 with scale (1, 1): every attempt needs w >= 4 > 2, so the fallback:
  // in_ratio 0.2 < 0.8 -> w = 2, h = round(2 / 0.8) = round(2.5) = 2 (half to even).
  RandomResizedCropConfig cfg;
  cfg.scale = {1.0, 1.0};
  cfg.ratio = {0.8, 1.25};
  std::mt19937_64 rng(5);
  const CropBox b = random_resized_crop_params(2, 10, cfg, rng);
  EXPECT_EQ(b.width, 2);
  EXPECT_EQ(b.height, 2);
  EXPECT_EQ(b.top, 4);
  EXPECT_EQ(b.left, 0);
  // Within the ratio range the fallback is the whole image.
  cfg.scale = {1.0, 1.0};
  cfg.ratio = {1.0, 1.0};
  // 10x10, scale 1, ratio 1: the first attempt is exactly the whole image.
  const CropBox whole = random_resized_crop_params(10, 10, cfg, rng);
  EXPECT_EQ(whole, (CropBox{0, 0, 10, 10}));
}

TEST(AugmentTest, CropCopiesTheBoxAndRejectsOutside) {
  const Image im = pattern(9, 7);
  const CropBox box{2, 3, 4, 5};  // top 2, left 3, h 4, w 5
  const Image c = crop(im, box);
  ASSERT_EQ(c.width, 5);
  ASSERT_EQ(c.height, 4);
  for (int y = 0; y < 4; ++y)
    for (int x = 0; x < 5; ++x)
      for (int ch = 0; ch < 3; ++ch) EXPECT_EQ(c.pixel(x, y)[ch], im.pixel(x + 3, y + 2)[ch]);
  EXPECT_THROW_WITH(crop(im, CropBox{4, 0, 4, 2}), InputError, "not inside the 9x7 image");
}

TEST(AugmentTest, HflipMirrorsColumns) {
  const Image im = pattern(5, 3);
  const Image f = hflip(im);
  ASSERT_EQ(f.width, 5);
  ASSERT_EQ(f.height, 3);
  for (int y = 0; y < 3; ++y)
    for (int x = 0; x < 5; ++x)
      for (int ch = 0; ch < 3; ++ch) EXPECT_EQ(f.pixel(x, y)[ch], im.pixel(4 - x, y)[ch]);
  EXPECT_EQ(hflip(f).rgb, im.rgb);
}

TEST(AugmentTest, TrainTransformFlipIsTheLastDraw) {
  const Image im = pattern(40, 30);
  TrainTransformConfig never, always;
  never.flip_prob = 0.0;
  always.flip_prob = 1.0;
  std::mt19937_64 a(11), b(11);
  const Image plain = train_transform(im, 16, 12, never, a);
  const Image flipped = train_transform(im, 16, 12, always, b);
  EXPECT_EQ(plain.width, 16);
  EXPECT_EQ(plain.height, 12);
  EXPECT_EQ(hflip(plain).rgb, flipped.rgb);

  // The crop is RandomResizedCrop's box, resized bicubic.
  std::mt19937_64 c(11);
  const CropBox box = random_resized_crop_params(40, 30, never.crop, c);
  EXPECT_EQ(resize_bicubic(crop(im, box), 16, 12).rgb, plain.rgb);
}

TEST(AugmentTest, FlipHappensAboutHalfTheTime) {
  const Image im = pattern(8, 8);
  TrainTransformConfig cfg;
  cfg.crop.scale = {1.0, 1.0};
  cfg.crop.ratio = {1.0, 1.0};  // always the whole image: only the flip varies
  std::mt19937_64 rng(123);
  int flips = 0;
  const int n = 2000;
  for (int i = 0; i < n; ++i) {
    const Image out = train_transform(im, 8, 8, cfg, rng);
    if (out.rgb != im.rgb) {
      EXPECT_EQ(out.rgb, hflip(im).rgb);
      ++flips;
    }
  }
  EXPECT_NEAR(flips / double(n), 0.5, 0.05);
}

TEST(AugmentTest, TrainTransformDeterministicGivenRng) {
  const Image im = pattern(50, 37);
  TrainTransformConfig cfg;
  std::mt19937_64 a(99), b(99), c(100);
  const Image x = train_transform(im, 24, 24, cfg, a);
  EXPECT_EQ(x.rgb, train_transform(im, 24, 24, cfg, b).rgb);
  // Consecutive draws from one stream give different crops.
  EXPECT_NE(x.rgb, train_transform(im, 24, 24, cfg, a).rgb);
  (void)c;
}

TEST(AugmentTest, EvalTransformIsPlainBicubicResize) {
  const Image im = pattern(33, 21);
  EXPECT_EQ(eval_transform(im, 16, 16).rgb, resize_bicubic(im, 16, 16).rgb);
  EXPECT_THROW_WITH(eval_transform(im, 0, 16), InputError, "output size 0x16");
}

TEST(AugmentTest, InvalidConfigIsConfigError) {
  RandomResizedCropConfig cfg;
  cfg.scale = {0.9, 0.5};
  std::mt19937_64 rng(1);
  EXPECT_THROW_WITH(random_resized_crop_params(10, 10, cfg, rng), ConfigError, "scale");
  cfg = {};
  cfg.ratio = {0.0, 1.0};
  EXPECT_THROW_WITH(random_resized_crop_params(10, 10, cfg, rng), ConfigError, "ratio");
  TrainTransformConfig t;
  t.flip_prob = 1.5;
  EXPECT_THROW_WITH(train_transform(pattern(4, 4), 4, 4, t, rng), ConfigError, "flip_prob");
}

TEST(AugmentTest, RandomHelpersArePortableAndInRange) {
  std::mt19937_64 rng(42);
  for (int i = 0; i < 1000; ++i) {
    const int64_t v = uniform_int(rng, -3, 4);
    EXPECT_GE(v, -3);
    EXPECT_LE(v, 4);
    const double u = uniform01(rng);
    EXPECT_GE(u, 0.0);
    EXPECT_LT(u, 1.0);
  }
  EXPECT_EQ(uniform_int(rng, 5, 5), 5);
  EXPECT_THROW(uniform_int(rng, 2, 1), InputError);
  EXPECT_NE(mix_seed({1, 2}), mix_seed({2, 1}));
  EXPECT_NE(mix_seed({1, 2}), mix_seed({1, 2, 0}));
  EXPECT_EQ(mix_seed({1, 2, 3}), mix_seed({1, 2, 3}));
  // The first draws of a fixed seed never change (portable formulas).
  std::mt19937_64 fixed(0);
  EXPECT_EQ(uniform_int(fixed, 0, 9), static_cast<int64_t>(std::mt19937_64(0)() % 10));
}

}  // namespace
}  // namespace blip2
