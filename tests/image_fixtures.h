// Test images made at test time: PNG / JPEG / WebP encoders (libpng,
// TurboJPEG, libwebp) and hand-built chunks for malformed files; shared by
// the decoding tests (image_test.cpp) and the error tests (image_errors_test.cpp).
#pragma once

#include <png.h>
#include <turbojpeg.h>
#include <webp/encode.h>

#include <algorithm>
#include <cmath>
#include <csetjmp>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "blip2/data/image.h"
#include "blip2/util/error.h"
#include "test_util.h"

namespace blip2::test_images {

using Bytes = std::vector<uint8_t>;

// ---------------------------------------------------------------------------
// Encoders
// ---------------------------------------------------------------------------

struct PngSpec {
  int width = 0, height = 0;
  int color_type = PNG_COLOR_TYPE_RGB;
  int bit_depth = 8;
  bool interlaced = false;
  Bytes samples;  // packed rows as libpng expects them (big-endian 16-bit)
  std::vector<png_color> palette;
  Bytes trns_alpha;                   // palette tRNS
  png_color_16 trns_color{};          // gray / rgb tRNS
  bool has_trns_color = false;
};

inline void png_write_cb(png_structp png, png_bytep data, size_t n) {
  auto* out = static_cast<Bytes*>(png_get_io_ptr(png));
  out->insert(out->end(), data, data + n);
}
inline void png_flush_cb(png_structp) {}

// C-style, setjmp-safe (no objects with destructors in this frame).
inline bool png_encode_raw(png_structp png, png_infop info, const PngSpec* s, png_bytepp rows) {
  if (setjmp(png_jmpbuf(png))) return false;
  png_set_IHDR(png, info, s->width, s->height, s->bit_depth, s->color_type,
               s->interlaced ? PNG_INTERLACE_ADAM7 : PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT,
               PNG_FILTER_TYPE_DEFAULT);
  if (!s->palette.empty()) png_set_PLTE(png, info, s->palette.data(), static_cast<int>(s->palette.size()));
  if (!s->trns_alpha.empty())
    png_set_tRNS(png, info, s->trns_alpha.data(), static_cast<int>(s->trns_alpha.size()), nullptr);
  if (s->has_trns_color) png_set_tRNS(png, info, nullptr, 0, &s->trns_color);
  png_write_info(png, info);
  png_write_image(png, rows);
  png_write_end(png, nullptr);
  return true;
}

inline Bytes encode_png(const PngSpec& s) {
  Bytes out;
  png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, nullptr, nullptr, nullptr);
  png_infop info = png_create_info_struct(png);
  png_set_write_fn(png, &out, png_write_cb, png_flush_cb);
  int channels = 1;
  if (s.color_type == PNG_COLOR_TYPE_RGB) channels = 3;
  if (s.color_type == PNG_COLOR_TYPE_RGB_ALPHA) channels = 4;
  if (s.color_type == PNG_COLOR_TYPE_GRAY_ALPHA) channels = 2;
  const size_t rowbytes = (static_cast<size_t>(s.width) * channels * s.bit_depth + 7) / 8;
  EXPECT_EQ(s.samples.size(), rowbytes * s.height) << "bad PngSpec";
  std::vector<png_bytep> rows(s.height);
  Bytes copy = s.samples;
  for (int y = 0; y < s.height; ++y) rows[y] = copy.data() + y * rowbytes;
  const bool ok = png_encode_raw(png, info, &s, rows.data());
  png_destroy_write_struct(&png, &info);
  EXPECT_TRUE(ok) << "libpng could not encode the test image";
  return out;
}

inline Bytes encode_jpeg(const Bytes& pixels, int w, int h, int pf, int subsamp, int quality, int flags = 0) {
  tjhandle tj = tjInitCompress();
  unsigned char* buf = nullptr;
  unsigned long size = 0;
  const int rc = tjCompress2(tj, pixels.data(), w, 0, h, pf, &buf, &size, subsamp, quality, flags);
  EXPECT_EQ(rc, 0) << tjGetErrorStr2(tj);
  Bytes out(buf, buf + (rc == 0 ? size : 0));
  tjFree(buf);
  tjDestroy(tj);
  return out;
}

// Independent CRC-32 (PNG chunk checksums) for hand-made files.
inline uint32_t crc32(const uint8_t* p, size_t n, uint32_t crc = 0) {
  crc = ~crc;
  for (size_t i = 0; i < n; ++i) {
    crc ^= p[i];
    for (int k = 0; k < 8; ++k) crc = (crc >> 1) ^ (0xEDB88320u & (0u - (crc & 1u)));
  }
  return ~crc;
}

inline void put_be32(Bytes& b, uint32_t v) {
  for (int s = 24; s >= 0; s -= 8) b.push_back(static_cast<uint8_t>(v >> s));
}

inline void png_chunk(Bytes& b, const char* type, const Bytes& data) {
  put_be32(b, static_cast<uint32_t>(data.size()));
  Bytes td(type, type + 4);
  td.insert(td.end(), data.begin(), data.end());
  b.insert(b.end(), td.begin(), td.end());
  put_be32(b, crc32(td.data(), td.size()));
}

// Signature + IHDR (+ an empty IDAT) claiming `w` x `h` 8-bit RGB.
inline Bytes png_header_only(uint32_t w, uint32_t h) {
  Bytes b = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
  Bytes ihdr;
  put_be32(ihdr, w);
  put_be32(ihdr, h);
  ihdr.insert(ihdr.end(), {8, 2, 0, 0, 0});
  png_chunk(b, "IHDR", ihdr);
  png_chunk(b, "IDAT", {});
  return b;
}

inline Bytes gradient_rgb(int w, int h) {
  Bytes px(static_cast<size_t>(w) * h * 3);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) {
      uint8_t* p = &px[(static_cast<size_t>(y) * w + x) * 3];
      p[0] = static_cast<uint8_t>(x * 255 / std::max(1, w - 1));
      p[1] = static_cast<uint8_t>(y * 255 / std::max(1, h - 1));
      p[2] = static_cast<uint8_t>((x + y) * 4);
    }
  return px;
}

inline Bytes random_bytes(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  Bytes b(n);
  for (auto& v : b) v = static_cast<uint8_t>(rng());
  return b;
}

inline double mean_abs_diff(const Bytes& a, const Bytes& b) {
  EXPECT_EQ(a.size(), b.size());
  double s = 0;
  for (size_t i = 0; i < std::min(a.size(), b.size()); ++i) s += std::abs(int(a[i]) - int(b[i]));
  return a.empty() ? 0 : s / a.size();
}

inline int max_abs_diff(const Bytes& a, const Bytes& b) {
  int m = 0;
  for (size_t i = 0; i < std::min(a.size(), b.size()); ++i) m = std::max(m, std::abs(int(a[i]) - int(b[i])));
  return m;
}

inline void write_file(const std::string& path, const Bytes& b) {
  std::ofstream f(path, std::ios::binary);
  f.write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
}

// A libwebp encoder's output as bytes (and the encoder's buffer freed).
inline Bytes webp_from(uint8_t* out, size_t size) {
  Bytes b(out, out + size);
  WebPFree(out);
  return b;
}

}  // namespace blip2::test_images
