// HuggingFace BlipImageProcessor (the image half of Blip2Processor), exactly:
//   RGB uint8 -> PIL Image.resize((width, height), resample) -> * rescale_factor
//   -> (x - mean) / std -> float32 CHW.
// resize() reproduces Pillow 9.4's 8-bit resampling bit for bit
// (libImaging/Resample.c); the arithmetic of rescale/normalize follows
// transformers' numpy code (float64 multiply, float32 subtract/divide).
// See docs/images.md.
#pragma once

#include <torch/types.h>

#include <array>
#include <string>
#include <vector>

#include "blip2/data/image.h"

namespace blip2 {

// PIL.Image.Resampling values (also what preprocessor_config.json stores).
enum class Resample : int { Nearest = 0, Lanczos = 1, Bilinear = 2, Bicubic = 3, Box = 4, Hamming = 5 };

// The largest output side preprocessing accepts (a config or --size): a
// BLIP-2 image encoder reads 224-490 px; this bounds the pixel buffers.
constexpr int kMaxProcessedSide = 4096;

struct ImageProcessorConfig {
  int height = 224, width = 224;
  bool do_resize = true, do_rescale = true, do_normalize = true, do_convert_rgb = true;
  double rescale_factor = 1 / 255.0;
  std::array<double, 3> image_mean{0.48145466, 0.4578275, 0.40821073};
  std::array<double, 3> image_std{0.26862954, 0.26130258, 0.27577711};
  int resample = 3;  // PIL BICUBIC

  // preprocessor_config.json. `size` may be {"height": H, "width": W}, an int
  // (square) or {"shortest_edge": S} (taken as S x S, see docs/images.md);
  // image_mean/std a list of 3 numbers or one number; absent or null fields
  // keep their defaults; unknown fields are ignored. Throws ConfigError naming
  // the field on a wrong type or value.
  static ImageProcessorConfig from_json_file(const std::string& path);
  static ImageProcessorConfig from_json_text(const std::string& json_text,
                                             const std::string& name_for_errors = "<json>");
  // Throws ConfigError if a value is out of range (sizes < 1, std == 0, ...).
  void validate(const std::string& name_for_errors = "ImageProcessorConfig") const;
};

// Pillow 9.4 Image.resize((width, height), resample) on an 8-bit RGB image.
// Same size returns a copy. Throws InputError on an empty image or size < 1.
Image resize(const Image& image, int width, int height, Resample filter);
Image resize_bicubic(const Image& image, int width, int height);
Image resize_bilinear(const Image& image, int width, int height);
Image resize_nearest(const Image& image, int width, int height);

// float32 [3, H, W] (H, W = config size when do_resize, else the image's).
at::Tensor preprocess(const Image& image, const ImageProcessorConfig& config);
// float32 [B, 3, H, W]; all images must end up the same size (InputError if
// do_resize is off and they differ). B = 0 is an InputError.
at::Tensor preprocess_batch(const std::vector<Image>& images, const ImageProcessorConfig& config);

}  // namespace blip2
