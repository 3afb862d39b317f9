// Image decoding: PNG (libpng), JPEG (libturbojpeg) and WebP (libwebp) into
// 8-bit RGB, reproducing what Pillow 9.4's `Image.open(path).convert('RGB')`
// gives (the first step of HuggingFace's BlipImageProcessor). See
// docs/images.md for the per-format semantics and the few deviations.
//
// Plain C++ on purpose (no torch here): the tensor side lives in
// image_processor.h.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace blip2 {

// An 8-bit RGB image, row-major HWC: pixel (x, y) channel c is
// rgb[(y * width + x) * 3 + c].
struct Image {
  int width = 0, height = 0;
  std::vector<uint8_t> rgb;  // HWC, 3 channels

  bool empty() const { return width <= 0 || height <= 0; }
  size_t num_pixels() const { return static_cast<size_t>(width) * static_cast<size_t>(height); }
  const uint8_t* pixel(int x, int y) const { return rgb.data() + (static_cast<size_t>(y) * width + x) * 3; }
  uint8_t* pixel(int x, int y) { return rgb.data() + (static_cast<size_t>(y) * width + x) * 3; }
};

enum class ImageFormat { Unknown, PNG, JPEG, WebP };

// Pillow's decompression-bomb error threshold: 2 * Image.MAX_IMAGE_PIXELS.
constexpr int64_t kDefaultMaxImagePixels = 2LL * 89478485LL;

struct DecodeOptions {
  // Images with more pixels than this are rejected from their header, before
  // any pixel buffer is allocated. <= 0 disables the check.
  int64_t max_pixels = kDefaultMaxImagePixels;
};

// The format named by the leading magic bytes (the extension is never used).
ImageFormat sniff_image_format(const uint8_t* data, size_t size);
const char* image_format_name(ImageFormat f);

// Decodes PNG / JPEG / WebP bytes to RGB. `name_for_errors` (usually the
// path) is quoted in every error. Throws blip2::InputError for empty, truncated,
// corrupt, unsupported or oversized input; never aborts or reads out of bounds.
Image decode_image(const uint8_t* data, size_t size, const std::string& name_for_errors,
                   const DecodeOptions& options = {});
Image decode_image(const std::vector<uint8_t>& bytes, const std::string& name_for_errors,
                   const DecodeOptions& options = {});

// Reads the file at `path` (must be a regular file) and decodes it.
Image load_image(const std::string& path, const DecodeOptions& options = {});

}  // namespace blip2
