// PNG decoding (libpng) with Pillow 9.4 `convert('RGB')` semantics.
//
// libpng reports errors by longjmp. Every libpng call is made inside a small
// C-style "stage" function that calls setjmp itself and owns no object with a
// destructor, and the callbacks libpng jumps out of own none either, so no
// C++ destructor is ever skipped. The png_struct is released by a guard in
// the (C++) caller, outside the jumped-over frames.
#include <png.h>

#include <algorithm>
#include <csetjmp>
#include <cstdio>
#include <cstring>
#include <limits>
#include <string>

#include "blip2/data/detail/image_decoders.h"
#include "blip2/util/error.h"

namespace blip2::image_detail {
namespace {

// ---------------------------------------------------------------------------
// PNG
// ---------------------------------------------------------------------------

// Everything libpng's callbacks touch: trivially destructible.
struct PngSource {
  const uint8_t* data;
  size_t size;
  size_t pos;
  int hit_eof;
  int in_rows;         // reading pixel data (padding allowed, see png_read_cb)
  size_t padded;       // zero bytes supplied past the end of the data
  int bad_checksum;    // zlib reported an Adler-32 mismatch (as a warning)
  char message[256];
};

// Pillow decodes a PNG as soon as all pixel data has been inflated: a file
// that ends inside the final zlib checksum / IDAT CRC (at most 8 bytes) still
// decodes. libpng reads IDAT in blocks, so past-the-end bytes of the last
// block are supplied as zeros, up to 8 in total; any larger shortfall is a
// truncation error. Zeros can only land in the Adler-32 / CRC fields there,
// never in deflate data, and the rows must all complete anyway.
constexpr size_t kPngMaxPadding = 8;

struct PngLayout {
  png_uint_32 width, height;
  int bit_depth, color_type, interlace;
  int out_bit_depth, channels;  // after transforms (packing / gray expansion)
  size_t rowbytes;
  int num_palette;
  uint8_t palette[256 * 3];
};

void png_read_cb(png_structp png, png_bytep out, size_t n) {
  auto* src = static_cast<PngSource*>(png_get_io_ptr(png));
  const size_t avail = src->size - src->pos;
  if (n > avail) {
    const size_t missing = n - avail;
    if (!src->in_rows || src->padded + missing > kPngMaxPadding) {
      src->hit_eof = 1;
      png_error(png, "unexpected end of file");
    }
    std::memcpy(out, src->data + src->pos, avail);
    std::memset(out + avail, 0, missing);
    src->pos = src->size;
    src->padded += missing;
    return;
  }
  std::memcpy(out, src->data + src->pos, n);
  src->pos += n;
}

void png_error_cb(png_structp png, png_const_charp msg) {
  auto* src = static_cast<PngSource*>(png_get_error_ptr(png));
  if (src) std::snprintf(src->message, sizeof src->message, "%s", msg ? msg : "unknown error");
  png_longjmp(png, 1);
}

// Warnings are ancillary-chunk noise (Pillow ignores them too), except a zlib
// checksum mismatch, which libpng downgrades to a warning once all rows are
// read but Pillow reports as "broken data stream".
void png_warning_cb(png_structp png, png_const_charp msg) {
  auto* src = static_cast<PngSource*>(png_get_error_ptr(png));
  if (src && msg && std::strstr(msg, "incorrect data check")) src->bad_checksum = 1;
}

// Stage 1a: signature, IHDR and all chunks before IDAT. Stages return 0, or
// -1 with PngSource::message set.
int png_stage_header(png_structp png, png_infop info, PngLayout* lay) {
  if (setjmp(png_jmpbuf(png))) return -1;
  png_read_info(png, info);
  png_get_IHDR(png, info, &lay->width, &lay->height, &lay->bit_depth, &lay->color_type,
               &lay->interlace, nullptr, nullptr);
  return 0;
}

// Stage 1b (after the size check): palette, transforms, row layout.
int png_stage_setup(png_structp png, png_infop info, PngLayout* lay) {
  if (setjmp(png_jmpbuf(png))) return -1;
  lay->num_palette = 0;
  if (lay->color_type == PNG_COLOR_TYPE_PALETTE) {
    png_colorp pal = nullptr;
    int num = 0;
    if (png_get_PLTE(png, info, &pal, &num) && pal) {
      num = std::min(num, 256);
      for (int i = 0; i < num; ++i) {
        lay->palette[i * 3 + 0] = pal[i].red;
        lay->palette[i * 3 + 1] = pal[i].green;
        lay->palette[i * 3 + 2] = pal[i].blue;
      }
      lay->num_palette = num;
    }
    if (lay->bit_depth < 8) png_set_packing(png);  // one index per byte
  } else if (lay->color_type == PNG_COLOR_TYPE_GRAY && lay->bit_depth < 8) {
    png_set_expand_gray_1_2_4_to_8(png);  // 1/2/4-bit gray scaled to 0..255, as Pillow's 1/L;2/L;4
  }
  // No tRNS expansion, no 16-bit stripping (done per row below), no gamma.
  // Like Pillow, CRCs are checked for the chunks before the image data (read
  // above) but not for IDAT.
  png_set_crc_action(png, PNG_CRC_QUIET_USE, PNG_CRC_DEFAULT);
  if (lay->interlace != PNG_INTERLACE_NONE) png_set_interlace_handling(png);
  png_read_update_info(png, info);
  lay->out_bit_depth = png_get_bit_depth(png, info);
  lay->channels = png_get_channels(png, info);
  lay->rowbytes = png_get_rowbytes(png, info);
  return 0;
}

// One decoded libpng row to RGB (Pillow convert('RGB') semantics).
void png_convert_row(const PngLayout* lay, const uint8_t* in, uint8_t* out) {
  const png_uint_32 w = lay->width;
  const bool b16 = lay->out_bit_depth == 16;
  switch (lay->color_type) {
    case PNG_COLOR_TYPE_PALETTE:
      // Pillow's palette starts as a gray ramp, so an index past the PLTE
      // entries maps to (i, i, i). tRNS is ignored (alpha dropped).
      for (png_uint_32 x = 0; x < w; ++x) {
        const int i = in[x];
        if (i < lay->num_palette) {
          out[x * 3 + 0] = lay->palette[i * 3 + 0];
          out[x * 3 + 1] = lay->palette[i * 3 + 1];
          out[x * 3 + 2] = lay->palette[i * 3 + 2];
        } else {
          out[x * 3 + 0] = out[x * 3 + 1] = out[x * 3 + 2] = static_cast<uint8_t>(i);
        }
      }
      break;
    case PNG_COLOR_TYPE_GRAY:
      for (png_uint_32 x = 0; x < w; ++x) {
        uint8_t v;
        if (b16) {
          // Pillow opens 16-bit gray as mode "I" (full 0..65535 value) and
          // I -> RGB clips to 0..255.
          const unsigned full = (unsigned(in[x * 2]) << 8) | in[x * 2 + 1];
          v = static_cast<uint8_t>(full > 255 ? 255 : full);
        } else {
          v = in[x];
        }
        out[x * 3 + 0] = out[x * 3 + 1] = out[x * 3 + 2] = v;
      }
      break;
    case PNG_COLOR_TYPE_GRAY_ALPHA: {
      const int step = b16 ? 4 : 2;  // 16-bit: Pillow's LA;16B keeps the high byte
      for (png_uint_32 x = 0; x < w; ++x) {
        const uint8_t v = in[x * step];
        out[x * 3 + 0] = out[x * 3 + 1] = out[x * 3 + 2] = v;
      }
      break;
    }
    case PNG_COLOR_TYPE_RGB:
    case PNG_COLOR_TYPE_RGB_ALPHA: {
      const int ch = lay->color_type == PNG_COLOR_TYPE_RGB ? 3 : 4;
      const int bps = b16 ? 2 : 1;  // 16-bit: RGB;16B / RGBA;16B keep the high byte
      const int step = ch * bps;
      for (png_uint_32 x = 0; x < w; ++x) {
        out[x * 3 + 0] = in[x * step + 0 * bps];
        out[x * 3 + 1] = in[x * step + 1 * bps];
        out[x * 3 + 2] = in[x * step + 2 * bps];
      }
      break;
    }
    default:
      break;
  }
}

// Stage 2a (non-interlaced): reads and converts row by row into `rgb`.
int png_stage_rows(png_structp png, const PngLayout* lay, uint8_t* row, uint8_t* rgb) {
  if (setjmp(png_jmpbuf(png))) return -1;
  const size_t out_stride = static_cast<size_t>(lay->width) * 3;
  for (png_uint_32 y = 0; y < lay->height; ++y) {
    png_read_row(png, row, nullptr);
    png_convert_row(lay, row, rgb + y * out_stride);
  }
  return 0;
}

// Stage 2b (interlaced): all passes into the full raw buffer.
int png_stage_image(png_structp png, png_bytepp rows) {
  if (setjmp(png_jmpbuf(png))) return -1;
  png_read_image(png, rows);
  return 0;
}

struct PngGuard {
  png_structp png = nullptr;
  png_infop info = nullptr;
  ~PngGuard() {
    if (png) png_destroy_read_struct(&png, info ? &info : nullptr, nullptr);
  }
};

std::string png_failure(const PngSource& src) {
  if (src.hit_eof || src.padded) {
    return "PNG data ends early (" + std::to_string(src.size) + " bytes, libpng: \"" + src.message +
           "\"); the file is truncated, re-download or re-export it";
  }
  return std::string("corrupt PNG data: libpng says \"") + src.message +
         "\"; expected a valid PNG, re-export the image";
}

// One decoding attempt. Returns false (instead of throwing) when the data
// ended inside the final zlib checksum and zlib rejected the zero padding: the
// caller retries with the checksum check off (the pixel data was complete).
bool decode_png_once(const uint8_t* data, size_t size, const std::string& name, const DecodeOptions& opt,
                     bool ignore_adler, Image& out) {
  PngSource src{};
  src.data = data;
  src.size = size;
  PngGuard g;
  g.png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &src, png_error_cb, png_warning_cb);
  if (!g.png) fail(name, "libpng could not allocate a decoder (out of memory)");
  g.info = png_create_info_struct(g.png);
  if (!g.info) fail(name, "libpng could not allocate a decoder (out of memory)");
  png_set_read_fn(g.png, &src, png_read_cb);
  // Size is bounded by DecodeOptions::max_pixels (checked before any row
  // buffer exists), not by libpng's default 1e6 x 1e6 limit; Pillow has none.
  png_set_user_limits(g.png, PNG_UINT_31_MAX, PNG_UINT_31_MAX);
#ifdef PNG_IGNORE_ADLER32
  if (ignore_adler) png_set_option(g.png, PNG_IGNORE_ADLER32, PNG_OPTION_ON);
#endif

  PngLayout lay{};
  if (png_stage_header(g.png, g.info, &lay) != 0) fail(name, png_failure(src));
  check_dimensions(name, "PNG", lay.width, lay.height, opt);
  if (png_stage_setup(g.png, g.info, &lay) != 0) fail(name, png_failure(src));
  const size_t min_row = static_cast<size_t>(lay.width) * lay.channels * (lay.out_bit_depth / 8);
  if (lay.out_bit_depth < 8 || lay.rowbytes < min_row) {
    fail(name, "unsupported PNG layout (bit depth " + std::to_string(lay.bit_depth) +
                   ", color type " + std::to_string(lay.color_type) + "); re-export as 8-bit RGB PNG");
  }

  Image img;
  img.width = static_cast<int>(lay.width);
  img.height = static_cast<int>(lay.height);
  img.rgb.resize(img.num_pixels() * 3);
  src.in_rows = 1;
  auto rows_failed = [&]() -> bool {  // true: retry without the checksum check
    if (src.padded && !src.hit_eof && !ignore_adler && std::strstr(src.message, "incorrect data check")) return true;
    fail(name, png_failure(src));
  };
  if (lay.interlace == PNG_INTERLACE_NONE) {
    std::vector<uint8_t> row(lay.rowbytes);
    if (png_stage_rows(g.png, &lay, row.data(), img.rgb.data()) != 0 && rows_failed()) return false;
  } else {
    std::vector<uint8_t> raw(lay.rowbytes * lay.height);
    std::vector<png_bytep> rows(lay.height);
    for (png_uint_32 y = 0; y < lay.height; ++y) rows[y] = raw.data() + y * lay.rowbytes;
    if (png_stage_image(g.png, rows.data()) != 0 && rows_failed()) return false;
    const size_t out_stride = static_cast<size_t>(lay.width) * 3;
    for (png_uint_32 y = 0; y < lay.height; ++y) png_convert_row(&lay, rows[y], img.rgb.data() + y * out_stride);
  }
  if (src.bad_checksum && src.padded == 0) {
    fail(name, "corrupt PNG data: the zlib checksum of the image data does not match (libpng: "
               "\"incorrect data check\"); expected a valid PNG, re-export the image");
  }
  // Like Pillow, chunks after the image data (up to IEND) are not required.
  out = std::move(img);
  return true;
}

}  // namespace

Image decode_png(const uint8_t* data, size_t size, const std::string& name, const DecodeOptions& opt) {
  Image img;
  if (!decode_png_once(data, size, name, opt, /*ignore_adler=*/false, img))
    decode_png_once(data, size, name, opt, /*ignore_adler=*/true, img);
  return img;
}

}  // namespace blip2::image_detail
