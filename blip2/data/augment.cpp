// RandomResizedCrop / horizontal flip / eval resize (see augment.h).
#include "blip2/data/augment.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>

#include "blip2/data/image_processor.h"
#include "blip2/util/error.h"

namespace blip2 {

// ---------------------------------------------------------------------------
// Random helpers
// ---------------------------------------------------------------------------

namespace {

uint64_t splitmix64(uint64_t x) {
  uint64_t z = x + 0x9E3779B97F4A7C15ULL;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

// Python's round(): to nearest, ties to even (IEEE default), independent of
// the current floating-point rounding mode.
double round_half_even(double x) {
  const double f = std::floor(x);
  const double d = x - f;
  if (d < 0.5) return f;
  if (d > 0.5) return f + 1.0;
  return std::fmod(f, 2.0) == 0.0 ? f : f + 1.0;
}

std::string size_str(int w, int h) { return std::to_string(w) + "x" + std::to_string(h); }

void check_image(const Image& img, const char* what) {
  if (img.width <= 0 || img.height <= 0 || img.rgb.size() != img.num_pixels() * 3) {
    throw InputError(std::string("[augment] ") + what + ": image is " + size_str(img.width, img.height) + " with " +
                     std::to_string(img.rgb.size()) +
                     " bytes; expected at least 1x1 with width*height*3 bytes of RGB (was it decoded?)");
  }
}

void check_out_size(int w, int h, const char* what) {
  if (w < 1 || h < 1) {
    throw InputError(std::string("[augment] ") + what + ": output size " + size_str(w, h) +
                     "; expected at least 1x1");
  }
}

}  // namespace

uint64_t mix_seed(std::initializer_list<uint64_t> values) {
  uint64_t h = 0x6A09E667F3BCC908ULL;
  for (uint64_t v : values) h = splitmix64(h ^ splitmix64(v));
  return h;
}

double uniform01(std::mt19937_64& rng) { return static_cast<double>(rng() >> 11) * 0x1.0p-53; }

double uniform_real(std::mt19937_64& rng, double lo, double hi) { return lo + (hi - lo) * uniform01(rng); }

int64_t uniform_int(std::mt19937_64& rng, int64_t lo, int64_t hi) {
  if (hi < lo) {
    throw InputError("uniform_int: empty range [" + std::to_string(lo) + ", " + std::to_string(hi) +
                     "]; expected lo <= hi");
  }
  const uint64_t range = static_cast<uint64_t>(hi) - static_cast<uint64_t>(lo) + 1;  // 0 means 2^64
  if (range == 0) return static_cast<int64_t>(rng());
  const uint64_t threshold = (0 - range) % range;  // 2^64 mod range
  uint64_t x = rng();
  while (x < threshold) x = rng();
  return static_cast<int64_t>(static_cast<uint64_t>(lo) + x % range);
}

// ---------------------------------------------------------------------------
// RandomResizedCrop
// ---------------------------------------------------------------------------

void RandomResizedCropConfig::validate() const {
  if (!(scale[0] > 0.0) || !(scale[0] <= scale[1]) || !std::isfinite(scale[1])) {
    throw ConfigError("RandomResizedCrop: scale = (" + std::to_string(scale[0]) + ", " + std::to_string(scale[1]) +
                      "); expected 0 < scale[0] <= scale[1] (LAVIS BLIP-2 uses (0.5, 1.0))");
  }
  if (!(ratio[0] > 0.0) || !(ratio[0] <= ratio[1]) || !std::isfinite(ratio[1])) {
    throw ConfigError("RandomResizedCrop: ratio = (" + std::to_string(ratio[0]) + ", " + std::to_string(ratio[1]) +
                      "); expected 0 < ratio[0] <= ratio[1] (default (3/4, 4/3))");
  }
}

void TrainTransformConfig::validate() const {
  crop.validate();
  if (!(flip_prob >= 0.0 && flip_prob <= 1.0)) {
    throw ConfigError("train transform: flip_prob = " + std::to_string(flip_prob) + "; expected a value in [0, 1]");
  }
}

CropBox random_resized_crop_params(int width, int height, const RandomResizedCropConfig& config,
                                   std::mt19937_64& rng) {
  config.validate();
  if (width < 1 || height < 1) {
    throw InputError("RandomResizedCrop: image is " + size_str(width, height) + "; expected at least 1x1");
  }
  const double area = static_cast<double>(width) * static_cast<double>(height);
  const double log_lo = std::log(config.ratio[0]), log_hi = std::log(config.ratio[1]);
  for (int attempt = 0; attempt < 10; ++attempt) {
    const double target_area = area * uniform_real(rng, config.scale[0], config.scale[1]);
    const double aspect = std::exp(uniform_real(rng, log_lo, log_hi));
    const double wf = round_half_even(std::sqrt(target_area * aspect));
    const double hf = round_half_even(std::sqrt(target_area / aspect));
    if (wf > 0 && wf <= width && hf > 0 && hf <= height) {
      CropBox b;
      b.width = static_cast<int>(wf);
      b.height = static_cast<int>(hf);
      b.top = static_cast<int>(uniform_int(rng, 0, height - b.height));
      b.left = static_cast<int>(uniform_int(rng, 0, width - b.width));
      return b;
    }
  }
  // Fallback: central crop, clamped to the ratio range.
  CropBox b;
  const double in_ratio = static_cast<double>(width) / static_cast<double>(height);
  if (in_ratio < config.ratio[0]) {
    b.width = width;
    b.height = static_cast<int>(round_half_even(width / config.ratio[0]));
  } else if (in_ratio > config.ratio[1]) {
    b.height = height;
    b.width = static_cast<int>(round_half_even(height * config.ratio[1]));
  } else {
    b.width = width;
    b.height = height;
  }
  // Degenerate extremes (e.g. a 1-pixel-high strip): keep the box inside.
  b.width = std::clamp(b.width, 1, width);
  b.height = std::clamp(b.height, 1, height);
  b.top = (height - b.height) / 2;
  b.left = (width - b.width) / 2;
  return b;
}

Image crop(const Image& image, const CropBox& box) {
  check_image(image, "crop");
  if (box.width < 1 || box.height < 1 || box.left < 0 || box.top < 0 || box.left + box.width > image.width ||
      box.top + box.height > image.height) {
    throw InputError("[augment] crop: box (top " + std::to_string(box.top) + ", left " + std::to_string(box.left) +
                     ", " + size_str(box.width, box.height) + ") is not inside the " +
                     size_str(image.width, image.height) + " image; expected a non-empty box within it");
  }
  Image out;
  out.width = box.width;
  out.height = box.height;
  out.rgb.resize(out.num_pixels() * 3);
  const size_t row = static_cast<size_t>(box.width) * 3;
  for (int y = 0; y < box.height; ++y) {
    std::memcpy(out.pixel(0, y), image.pixel(box.left, box.top + y), row);
  }
  return out;
}

Image hflip(const Image& image) {
  check_image(image, "hflip");
  Image out;
  out.width = image.width;
  out.height = image.height;
  out.rgb.resize(image.rgb.size());
  for (int y = 0; y < image.height; ++y) {
    for (int x = 0; x < image.width; ++x) {
      const uint8_t* s = image.pixel(image.width - 1 - x, y);
      uint8_t* d = out.pixel(x, y);
      d[0] = s[0];
      d[1] = s[1];
      d[2] = s[2];
    }
  }
  return out;
}

Image train_transform(const Image& image, int out_width, int out_height, const TrainTransformConfig& config,
                      std::mt19937_64& rng) {
  config.validate();
  check_image(image, "train_transform");
  check_out_size(out_width, out_height, "train_transform");
  const CropBox box = random_resized_crop_params(image.width, image.height, config.crop, rng);
  Image out = resize_bicubic(crop(image, box), out_width, out_height);
  if (uniform01(rng) < config.flip_prob) out = hflip(out);
  return out;
}

Image eval_transform(const Image& image, int out_width, int out_height) {
  check_image(image, "eval_transform");
  check_out_size(out_width, out_height, "eval_transform");
  return resize_bicubic(image, out_width, out_height);
}

}  // namespace blip2
