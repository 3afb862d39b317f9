// Training-time image augmentation, torchvision semantics on our PIL-exact
// resize. LAVIS's BLIP-2 training transform (Blip2ImageTrainProcessor) is
//   RandomResizedCrop(size, scale=(0.5, 1.0), interpolation=BICUBIC)
//   -> RandomHorizontalFlip(p=0.5) -> ToTensor -> Normalize
// and its eval transform (BlipImageEvalProcessor) is a plain bicubic
// Resize((size, size)) -> ToTensor -> Normalize. This file does the uint8
// Image part; normalisation is preprocess() in image_processor.h.
//
// Randomness comes from a caller-owned std::mt19937_64 and is drawn with our
// own portable formulas (not std::uniform_*_distribution, whose output differs
// between standard libraries), so results are identical everywhere for a given
// seed. The stream is not torch's, so the crops are torchvision's *algorithm*,
// not torchvision's exact numbers for a torch seed. See docs/data.md.
#pragma once

#include <array>
#include <cstdint>
#include <initializer_list>
#include <random>

#include "blip2/data/image.h"

namespace blip2 {

// ---------------------------------------------------------------------------
// Portable random helpers
// ---------------------------------------------------------------------------

// A 64-bit seed mixed (splitmix64) from a list of values, e.g.
// mix_seed({seed, epoch, index}); distinct lists give unrelated streams.
uint64_t mix_seed(std::initializer_list<uint64_t> values);
// Uniform double in [0, 1) from the top 53 bits of one draw.
double uniform01(std::mt19937_64& rng);
// Uniform double in [lo, hi) (lo when lo == hi).
double uniform_real(std::mt19937_64& rng, double lo, double hi);
// Uniform integer in [lo, hi] (inclusive), unbiased (rejection sampling).
int64_t uniform_int(std::mt19937_64& rng, int64_t lo, int64_t hi);

// ---------------------------------------------------------------------------
// RandomResizedCrop / flip
// ---------------------------------------------------------------------------

// torchvision's (i, j, h, w): top row, left column, height, width.
struct CropBox {
  int top = 0, left = 0, height = 0, width = 0;
  bool operator==(const CropBox& o) const {
    return top == o.top && left == o.left && height == o.height && width == o.width;
  }
};

struct RandomResizedCropConfig {
  std::array<double, 2> scale{0.5, 1.0};              // crop area / image area (LAVIS blip2: min_scale 0.5)
  std::array<double, 2> ratio{3.0 / 4.0, 4.0 / 3.0};  // crop width / height
  void validate() const;  // ConfigError: need 0 < scale[0] <= scale[1], 0 < ratio[0] <= ratio[1]
};

// torchvision RandomResizedCrop.get_params on an image of width x height:
// up to 10 attempts of area ~ U(scale) * W*H and aspect ratio
// exp(U(log ratio)), w = round(sqrt(area * r)), h = round(sqrt(area / r))
// (round half to even, as Python's round), accepted when 0 < w <= W and
// 0 < h <= H, then top ~ U{0..H-h}, left ~ U{0..W-w}; otherwise the central
// crop clamped to the ratio range. Exactly 2 draws per attempt + 2 on success.
CropBox random_resized_crop_params(int width, int height, const RandomResizedCropConfig& config,
                                   std::mt19937_64& rng);

// The pixels inside `box` (InputError if it is not inside the image).
Image crop(const Image& image, const CropBox& box);
// Mirror left-right.
Image hflip(const Image& image);

// Training transform: RandomResizedCrop (bicubic, PIL-exact) to
// out_width x out_height, then a horizontal flip with probability flip_prob
// (one uniform01 draw after the crop's draws; flipped when it is < flip_prob).
struct TrainTransformConfig {
  RandomResizedCropConfig crop;
  double flip_prob = 0.5;
  void validate() const;
};
Image train_transform(const Image& image, int out_width, int out_height, const TrainTransformConfig& config,
                      std::mt19937_64& rng);
// Evaluation transform: bicubic resize to out_width x out_height (no randomness).
Image eval_transform(const Image& image, int out_width, int out_height);

}  // namespace blip2
