// Image decoding into 8-bit RGB with Pillow 9.4 `convert('RGB')` semantics.
//
// Format sniffing, JPEG (TurboJPEG) and WebP (libwebp), which report errors
// by return value; PNG is in image_png.cpp.
#include "blip2/data/image.h"

#include <turbojpeg.h>
#include <webp/decode.h>

#include <algorithm>
#include <cerrno>
#include <csetjmp>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <limits>
#include <string>

#include "blip2/data/detail/image_decoders.h"
#include "blip2/util/error.h"

namespace blip2 {

namespace image_detail {

[[noreturn]] void fail(const std::string& name, const std::string& what) {
  throw InputError("image '" + name + "': " + what);
}

// Rejects 0-sized images and images over the pixel limit, from the header,
// before the pixel buffer is allocated.
void check_dimensions(const std::string& name, const char* format, int64_t width, int64_t height,
                      const DecodeOptions& opt) {
  if (width <= 0 || height <= 0) {
    fail(name, std::string(format) + " header says the image is " + std::to_string(width) + "x" +
                   std::to_string(height) +
                   "; expected a width and height of at least 1; the file is corrupt, re-export it");
  }
  const int64_t pixels = width * height;
  if (opt.max_pixels > 0 && pixels > opt.max_pixels) {
    fail(name, std::string(format) + " image is " + std::to_string(width) + "x" +
                   std::to_string(height) + " = " + std::to_string(pixels) +
                   " pixels, over the limit of " + std::to_string(opt.max_pixels) +
                   " pixels (could be a decompression bomb); downscale the image first or raise "
                   "the limit with --max-pixels");
  }
}

}  // namespace image_detail

namespace {

using namespace image_detail;

constexpr const char* kSupported = "PNG, JPEG or WebP";

std::string hex_prefix(const uint8_t* data, size_t size) {
  static const char* digits = "0123456789abcdef";
  std::string s;
  for (size_t i = 0; i < std::min<size_t>(size, 8); ++i) {
    if (i) s += ' ';
    s += digits[data[i] >> 4];
    s += digits[data[i] & 15];
  }
  return s;
}

bool starts_with(const uint8_t* data, size_t size, const char* magic, size_t n) {
  return size >= n && std::memcmp(data, magic, n) == 0;
}

// A name for well-known formats we do not decode, for the error message.
std::string describe_unsupported(const uint8_t* d, size_t n) {
  if (starts_with(d, n, "GIF87a", 6) || starts_with(d, n, "GIF89a", 6)) return "GIF data";
  if (starts_with(d, n, "BM", 2)) return "BMP data";
  if (starts_with(d, n, "II*\0", 4) || starts_with(d, n, "MM\0*", 4)) return "TIFF data";
  if (n >= 12 && std::memcmp(d + 4, "ftyp", 4) == 0) {
    const std::string brand(reinterpret_cast<const char*>(d + 8), 4);
    if (brand == "avif" || brand == "avis") return "AVIF data";
    if (brand == "heic" || brand == "heix" || brand == "mif1" || brand == "msf1") return "HEIF/HEIC data";
    return "an ISO media file (brand '" + brand + "')";
  }
  if (starts_with(d, n, "\xff\x0a", 2) || starts_with(d, n, "\0\0\0\x0cJXL ", 8)) return "JPEG XL data";
  if (starts_with(d, n, "RIFF", 4)) return "a RIFF file that is not WebP";
  if (starts_with(d, n, "8BPS", 4)) return "Photoshop PSD data";
  if (starts_with(d, n, "\0\0\1\0", 4)) return "ICO data";
  if (starts_with(d, n, "qoif", 4)) return "QOI data";
  if (starts_with(d, n, "%PDF", 4)) return "PDF data";
  if (starts_with(d, n, "<svg", 4) || starts_with(d, n, "<?xml", 5)) return "SVG/XML text";
  if (starts_with(d, n, "P1", 2) || starts_with(d, n, "P2", 2) || starts_with(d, n, "P3", 2) ||
      starts_with(d, n, "P4", 2) || starts_with(d, n, "P5", 2) || starts_with(d, n, "P6", 2))
    return "possibly PNM/PPM data";
  return "unrecognised data (first bytes " + hex_prefix(d, n) + ")";
}

// ---------------------------------------------------------------------------
// JPEG
// ---------------------------------------------------------------------------

struct TjGuard {
  tjhandle h = nullptr;
  ~TjGuard() {
    if (h) tjDestroy(h);
  }
};

// Whether the marker structure of the JPEG at `d` reaches its EOI marker
// within the data (the way libjpeg walks it: length-prefixed segments, and
// entropy-coded data after SOS up to the next marker that is not a stuffed
// 0xFF00 or RSTn). Pillow reports "image file is truncated" exactly when the
// data ends before EOI; TurboJPEG only shows its last message, which after a
// premature end can be any later warning or error, so this decides instead.
bool jpeg_reaches_eoi(const uint8_t* d, size_t n) {
  size_t i = 2;  // after SOI
  while (true) {
    while (i < n && d[i] != 0xFF) ++i;  // stray bytes (libjpeg warns and skips)
    while (i < n && d[i] == 0xFF) ++i;  // fill bytes
    if (i >= n) return false;
    const uint8_t m = d[i++];
    if (m == 0xD9) return true;                                      // EOI
    if (m == 0x00 || m == 0x01 || m == 0xD8 || (m >= 0xD0 && m <= 0xD7)) continue;  // no length
    if (i + 2 > n) return false;
    const size_t len = (size_t(d[i]) << 8) | d[i + 1];
    if (len < 2) return true;  // corrupt, not truncated: libjpeg reports it
    if (len > n - i) return false;
    i += len;
    if (m == 0xDA) {  // SOS: skip the entropy-coded segment
      while (i + 1 < n) {
        if (d[i] == 0xFF) {
          const uint8_t nx = d[i + 1];
          if (nx != 0x00 && nx != 0xFF && !(nx >= 0xD0 && nx <= 0xD7)) break;
        }
        ++i;
      }
      if (i + 1 >= n) return false;
    }
  }
}

// libjpeg's warning texts (JWRN_*): everything else TurboJPEG reports is fatal.
bool is_libjpeg_warning(const std::string& msg) {
  static const char* kPrefixes[] = {"Corrupt JPEG data", "Warning:", "Premature end of JPEG file",
                                    "Inconsistent progression sequence", "Invalid SOS parameters",
                                    "Unknown Adobe color transform", "Application transferred too many"};
  for (const char* p : kPrefixes)
    if (msg.rfind(p, 0) == 0) return true;
  return false;
}

[[noreturn]] void fail_jpeg_truncated(const std::string& name) {
  fail(name, "JPEG data ends before its end-of-image marker; the file is truncated, re-download or "
             "re-export it");
}

inline uint8_t muldiv255(int a, int b) {
  const int t = a * b + 128;
  return static_cast<uint8_t>(((t >> 8) + t) >> 8);
}

Image decode_jpeg(const uint8_t* data, size_t size, const std::string& name, const DecodeOptions& opt) {
  TjGuard g;
  g.h = tjInitDecompress();
  if (!g.h) fail(name, std::string("TurboJPEG could not create a decoder: ") + tjGetErrorStr2(nullptr));
  int w = 0, h = 0, subsamp = 0, colorspace = 0;
  const bool complete = jpeg_reaches_eoi(data, size);
  if (tjDecompressHeader3(g.h, data, static_cast<unsigned long>(size), &w, &h, &subsamp, &colorspace) != 0 &&
      !(tjGetErrorCode(g.h) == TJERR_WARNING && is_libjpeg_warning(tjGetErrorStr2(g.h)) && w > 0 && h > 0)) {
    // (-1 with only a warning, e.g. stray bytes before a marker, still filled
    // in the header fields; Pillow tolerates such files.)
    if (!complete) fail_jpeg_truncated(name);
    fail(name, std::string("corrupt or truncated JPEG header: TurboJPEG says \"") + tjGetErrorStr2(g.h) +
                   "\"; expected a baseline or progressive 8-bit JPEG, re-export the image");
  }
  check_dimensions(name, "JPEG", w, h, opt);

  const bool cmyk = colorspace == TJCS_CMYK || colorspace == TJCS_YCCK;
  const int pf = cmyk ? TJPF_CMYK : TJPF_RGB;  // gray is replicated to RGB by libjpeg
  const int ch = cmyk ? 4 : 3;
  std::vector<uint8_t> buf(static_cast<size_t>(w) * h * ch);
  // Default (accurate) IDCT and fancy upsampling: what Pillow's decoder uses.
  // LIMITSCANS bounds pathological progressive files (>500 scans) so decoding
  // cannot take unbounded time.
  const int flags = TJFLAG_LIMITSCANS;
  if (tjDecompress2(g.h, data, static_cast<unsigned long>(size), buf.data(), w, 0, h, pf, flags) != 0) {
    // -1 also reports warnings. libjpeg pads a truncated stream with gray and
    // warns; Pillow raises "image file is truncated" there. Other warnings
    // (e.g. extraneous bytes before a marker) Pillow tolerates, and so do we.
    // The error code stays TJERR_WARNING when a fatal error follows a
    // warning, so the text of the last message decides.
    const std::string msg = tjGetErrorStr2(g.h);
    const bool warning_only = tjGetErrorCode(g.h) == TJERR_WARNING && is_libjpeg_warning(msg);
    if (!complete || msg.rfind("Premature end of JPEG file", 0) == 0) fail_jpeg_truncated(name);
    if (!warning_only) {
      fail(name, "corrupt JPEG data: TurboJPEG says \"" + msg +
                     "\"; expected a decodable 8-bit JPEG, re-export the image");
    }
  }

  Image img;
  img.width = w;
  img.height = h;
  if (!cmyk) {
    img.rgb = std::move(buf);
    return img;
  }
  // Pillow reads 4-component JPEGs as "CMYK;I" (Adobe polarity: inverted) and
  // converts CMYK -> RGB with r = (255-k) - (255-k)*c/255 (rounded, MULDIV255).
  img.rgb.resize(img.num_pixels() * 3);
  const size_t n = img.num_pixels();
  for (size_t i = 0; i < n; ++i) {
    const uint8_t* p = &buf[i * 4];
    const int k = 255 - p[3];
    const int nk = 255 - k;
    for (int c = 0; c < 3; ++c) {
      const int v = 255 - p[c];
      img.rgb[i * 3 + c] = static_cast<uint8_t>(std::clamp(nk - int(muldiv255(v, nk)), 0, 255));
    }
  }
  return img;
}

// ---------------------------------------------------------------------------
// WebP
// ---------------------------------------------------------------------------

std::string vp8_status_text(VP8StatusCode st) {
  switch (st) {
    case VP8_STATUS_OUT_OF_MEMORY: return "out of memory";
    case VP8_STATUS_INVALID_PARAM: return "invalid parameter";
    case VP8_STATUS_BITSTREAM_ERROR: return "corrupt bitstream";
    case VP8_STATUS_UNSUPPORTED_FEATURE: return "unsupported feature";
    case VP8_STATUS_SUSPENDED: return "suspended";
    case VP8_STATUS_USER_ABORT: return "aborted";
    case VP8_STATUS_NOT_ENOUGH_DATA: return "not enough data";
    default: return "status " + std::to_string(static_cast<int>(st));
  }
}

std::string webp_failure(VP8StatusCode st) {
  if (st == VP8_STATUS_NOT_ENOUGH_DATA) {
    return "WebP data ends early (libwebp: not enough data); the file is truncated, re-download or "
           "re-export it";
  }
  return "corrupt WebP data: libwebp says \"" + vp8_status_text(st) +
         "\"; expected a still lossy or lossless WebP, re-export the image";
}

Image decode_webp(const uint8_t* data, size_t size, const std::string& name, const DecodeOptions& opt) {
  WebPDecoderConfig config;
  if (!WebPInitDecoderConfig(&config)) fail(name, "libwebp version mismatch (WebPInitDecoderConfig failed)");
  VP8StatusCode st = WebPGetFeatures(data, size, &config.input);
  if (st != VP8_STATUS_OK) fail(name, webp_failure(st));
  if (config.input.has_animation) {
    fail(name, "animated WebP is not supported; expected a still WebP image, extract one frame "
               "(e.g. `webpmux -get frame 1 in.webp -o out.webp`)");
  }
  check_dimensions(name, "WebP", config.input.width, config.input.height, opt);

  Image img;
  img.width = config.input.width;
  img.height = config.input.height;
  img.rgb.resize(img.num_pixels() * 3);
  // Alpha (if any) is dropped: the RGB samples are the decoder's own, the same
  // bytes Pillow's RGBA decode holds before convert('RGB').
  config.output.colorspace = MODE_RGB;
  config.output.is_external_memory = 1;
  config.output.u.RGBA.rgba = img.rgb.data();
  config.output.u.RGBA.stride = img.width * 3;
  config.output.u.RGBA.size = img.rgb.size();
  st = WebPDecode(data, size, &config);
  WebPFreeDecBuffer(&config.output);
  if (st != VP8_STATUS_OK) fail(name, webp_failure(st));
  return img;
}

}  // namespace

ImageFormat sniff_image_format(const uint8_t* data, size_t size) {
  if (!data) return ImageFormat::Unknown;
  if (starts_with(data, size, "\x89PNG\r\n\x1a\n", 8)) return ImageFormat::PNG;
  if (starts_with(data, size, "\xff\xd8\xff", 3)) return ImageFormat::JPEG;
  if (size >= 12 && std::memcmp(data, "RIFF", 4) == 0 && std::memcmp(data + 8, "WEBP", 4) == 0)
    return ImageFormat::WebP;
  return ImageFormat::Unknown;
}

const char* image_format_name(ImageFormat f) {
  switch (f) {
    case ImageFormat::PNG: return "PNG";
    case ImageFormat::JPEG: return "JPEG";
    case ImageFormat::WebP: return "WebP";
    default: return "unknown";
  }
}

Image decode_image(const uint8_t* data, size_t size, const std::string& name, const DecodeOptions& options) {
  if (!data || size == 0) {
    fail(name, std::string("file is empty (0 bytes); expected ") + kSupported +
                   " data; check the path and re-export the image");
  }
  switch (sniff_image_format(data, size)) {
    case ImageFormat::PNG: return decode_png(data, size, name, options);
    case ImageFormat::JPEG: return decode_jpeg(data, size, name, options);
    case ImageFormat::WebP: return decode_webp(data, size, name, options);
    default: break;
  }
  fail(name, std::string("unsupported image format: expected ") + kSupported + " (detected from the leading bytes), found " +
                 describe_unsupported(data, size) + "; convert the image to PNG, JPEG or WebP");
}

Image decode_image(const std::vector<uint8_t>& bytes, const std::string& name, const DecodeOptions& options) {
  return decode_image(bytes.data(), bytes.size(), name, options);
}

Image load_image(const std::string& path, const DecodeOptions& options) {
  namespace fs = std::filesystem;
  std::error_code ec;
  const fs::file_status st = fs::status(path, ec);
  if (ec || !fs::exists(st)) fail(path, "no such file; expected a PNG, JPEG or WebP file, check the path");
  if (fs::is_directory(st)) fail(path, "is a directory; expected a PNG, JPEG or WebP file");
  if (!fs::is_regular_file(st)) {
    fail(path, "is not a regular file (device, pipe or socket); expected a PNG, JPEG or WebP file");
  }
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) fail(path, std::string("cannot open: ") + std::strerror(errno) + "; check the permissions");
  std::vector<uint8_t> bytes;
  uint8_t chunk[1 << 16];
  size_t n = 0;
  while ((n = std::fread(chunk, 1, sizeof chunk, f)) > 0) bytes.insert(bytes.end(), chunk, chunk + n);
  const bool read_error = std::ferror(f) != 0;
  std::fclose(f);
  if (read_error) fail(path, "read error while loading the file; check the disk / permissions");
  return decode_image(bytes, path, options);
}

}  // namespace blip2
