// Internal to the image decoders (image.cpp, image_png.cpp): the checks they
// share and the per-format entry points decode_image dispatches to.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "blip2/data/image.h"

namespace blip2::image_detail {

// InputError "image '<name>': <what>".
[[noreturn]] void fail(const std::string& name, const std::string& what);

// Rejects 0-sized images and images over the pixel limit, from the header,
// before the pixel buffer is allocated.
void check_dimensions(const std::string& name, const char* format, int64_t width, int64_t height,
                      const DecodeOptions& opt);

Image decode_png(const uint8_t* data, size_t size, const std::string& name, const DecodeOptions& opt);

}  // namespace blip2::image_detail
