// Image encoding, beside the decoders of image.h: PNG via libpng.
#pragma once

#include <string>

#include "blip2/data/image.h"

namespace blip2 {

// Writes an RGB image as an 8-bit PNG (libpng; zlib level 1 and the SUB
// filter, fast for flat-colour images); InputError naming the path when it
// cannot be written (a partial file is removed).
void write_png(const std::string& path, const Image& image);

}  // namespace blip2
