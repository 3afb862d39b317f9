// Decoding tests: images are built at test time with libpng / TurboJPEG /
// libwebp encoders (or by hand, for malformed files) and decoded back.
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

namespace blip2 {
namespace {

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

void png_write_cb(png_structp png, png_bytep data, size_t n) {
  auto* out = static_cast<Bytes*>(png_get_io_ptr(png));
  out->insert(out->end(), data, data + n);
}
void png_flush_cb(png_structp) {}

// C-style, setjmp-safe (no objects with destructors in this frame).
bool png_encode_raw(png_structp png, png_infop info, const PngSpec* s, png_bytepp rows) {
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

Bytes encode_png(const PngSpec& s) {
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

Bytes encode_jpeg(const Bytes& pixels, int w, int h, int pf, int subsamp, int quality, int flags = 0) {
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
uint32_t crc32(const uint8_t* p, size_t n, uint32_t crc = 0) {
  crc = ~crc;
  for (size_t i = 0; i < n; ++i) {
    crc ^= p[i];
    for (int k = 0; k < 8; ++k) crc = (crc >> 1) ^ (0xEDB88320u & (0u - (crc & 1u)));
  }
  return ~crc;
}

void put_be32(Bytes& b, uint32_t v) {
  for (int s = 24; s >= 0; s -= 8) b.push_back(static_cast<uint8_t>(v >> s));
}

void png_chunk(Bytes& b, const char* type, const Bytes& data) {
  put_be32(b, static_cast<uint32_t>(data.size()));
  Bytes td(type, type + 4);
  td.insert(td.end(), data.begin(), data.end());
  b.insert(b.end(), td.begin(), td.end());
  put_be32(b, crc32(td.data(), td.size()));
}

// Signature + IHDR (+ an empty IDAT) claiming `w` x `h` 8-bit RGB.
Bytes png_header_only(uint32_t w, uint32_t h) {
  Bytes b = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
  Bytes ihdr;
  put_be32(ihdr, w);
  put_be32(ihdr, h);
  ihdr.insert(ihdr.end(), {8, 2, 0, 0, 0});
  png_chunk(b, "IHDR", ihdr);
  png_chunk(b, "IDAT", {});
  return b;
}

Bytes gradient_rgb(int w, int h) {
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

Bytes random_bytes(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  Bytes b(n);
  for (auto& v : b) v = static_cast<uint8_t>(rng());
  return b;
}

double mean_abs_diff(const Bytes& a, const Bytes& b) {
  EXPECT_EQ(a.size(), b.size());
  double s = 0;
  for (size_t i = 0; i < std::min(a.size(), b.size()); ++i) s += std::abs(int(a[i]) - int(b[i]));
  return a.empty() ? 0 : s / a.size();
}

int max_abs_diff(const Bytes& a, const Bytes& b) {
  int m = 0;
  for (size_t i = 0; i < std::min(a.size(), b.size()); ++i) m = std::max(m, std::abs(int(a[i]) - int(b[i])));
  return m;
}

void write_file(const std::string& path, const Bytes& b) {
  std::ofstream f(path, std::ios::binary);
  f.write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
}

// ---------------------------------------------------------------------------
// PNG
// ---------------------------------------------------------------------------

TEST(ImageDecodePng, Rgb8IsExact) {
  PngSpec s{37, 23};
  s.samples = random_bytes(37 * 23 * 3, 1);
  const Image img = decode_image(encode_png(s), "rgb.png");
  EXPECT_EQ(img.width, 37);
  EXPECT_EQ(img.height, 23);
  EXPECT_EQ(img.rgb, s.samples);
}

TEST(ImageDecodePng, RgbaDropsAlphaWithoutCompositing) {
  PngSpec s{5, 4, PNG_COLOR_TYPE_RGB_ALPHA};
  s.samples = random_bytes(5 * 4 * 4, 2);
  for (size_t i = 3; i < s.samples.size(); i += 16) s.samples[i] = 0;  // some fully transparent
  const Image img = decode_image(encode_png(s), "rgba.png");
  ASSERT_EQ(img.rgb.size(), 5u * 4 * 3);
  for (size_t i = 0; i < 20; ++i)
    for (int c = 0; c < 3; ++c) EXPECT_EQ(img.rgb[i * 3 + c], s.samples[i * 4 + c]);
}

TEST(ImageDecodePng, GrayReplicatesChannel) {
  PngSpec s{6, 3, PNG_COLOR_TYPE_GRAY};
  s.samples = random_bytes(18, 3);
  s.has_trns_color = true;  // gray tRNS is ignored, as by convert('RGB')
  s.trns_color.gray = s.samples[0];
  const Image img = decode_image(encode_png(s), "gray.png");
  for (size_t i = 0; i < 18; ++i)
    for (int c = 0; c < 3; ++c) EXPECT_EQ(img.rgb[i * 3 + c], s.samples[i]);
}

TEST(ImageDecodePng, GrayAlphaDropsAlpha) {
  PngSpec s{4, 4, PNG_COLOR_TYPE_GRAY_ALPHA};
  s.samples = random_bytes(32, 4);
  const Image img = decode_image(encode_png(s), "la.png");
  for (size_t i = 0; i < 16; ++i)
    for (int c = 0; c < 3; ++c) EXPECT_EQ(img.rgb[i * 3 + c], s.samples[i * 2]);
}

TEST(ImageDecodePng, LowBitGrayIsScaledToFullRange) {
  // 2-bit gray 0,1,2,3 -> 0,85,170,255 (Pillow "L;2"); 1-bit -> 0/255; 4-bit x17.
  PngSpec s2{4, 1, PNG_COLOR_TYPE_GRAY, 2};
  s2.samples = {0b00011011};
  Image img = decode_image(encode_png(s2), "g2.png");
  EXPECT_EQ(img.rgb, (Bytes{0, 0, 0, 85, 85, 85, 170, 170, 170, 255, 255, 255}));
  PngSpec s1{3, 1, PNG_COLOR_TYPE_GRAY, 1};
  s1.samples = {0b10100000};
  img = decode_image(encode_png(s1), "g1.png");
  EXPECT_EQ(img.rgb, (Bytes{255, 255, 255, 0, 0, 0, 255, 255, 255}));
  PngSpec s4{2, 1, PNG_COLOR_TYPE_GRAY, 4};
  s4.samples = {0x3f};
  img = decode_image(encode_png(s4), "g4.png");
  EXPECT_EQ(img.rgb, (Bytes{51, 51, 51, 255, 255, 255}));
}

TEST(ImageDecodePng, PaletteWithTrnsIgnoresAlphaAndOutOfRangeIndexIsGrayRamp) {
  PngSpec s{4, 1, PNG_COLOR_TYPE_PALETTE, 8};
  s.palette = {{10, 20, 30}, {40, 50, 60}, {70, 80, 90}};
  s.trns_alpha = {0, 128};
  s.samples = {0, 1, 2, 1};
  Image img = decode_image(encode_png(s), "p.png");
  EXPECT_EQ(img.rgb, (Bytes{10, 20, 30, 40, 50, 60, 70, 80, 90, 40, 50, 60}));

  // 4-bit palette, index past PLTE: Pillow's palette starts as a gray ramp.
  PngSpec p4{2, 1, PNG_COLOR_TYPE_PALETTE, 4};
  p4.palette = {{1, 2, 3}, {4, 5, 6}};
  p4.samples = {0x1c};  // indices 1 and 12
  // libpng refuses to *write* an out-of-range index only with checks on; it
  // accepts it here, and the reader must not read past the palette.
  img = decode_image(encode_png(p4), "p4.png");
  EXPECT_EQ(img.rgb, (Bytes{4, 5, 6, 12, 12, 12}));
}

TEST(ImageDecodePng, Rgb16KeepsHighByte) {
  PngSpec s{2, 1, PNG_COLOR_TYPE_RGB, 16};
  s.samples = {0x12, 0x34, 0x80, 0xff, 0xff, 0x00, 0x00, 0xff, 0x01, 0x00, 0xff, 0xff};
  const Image img = decode_image(encode_png(s), "rgb16.png");
  EXPECT_EQ(img.rgb, (Bytes{0x12, 0x80, 0xff, 0x00, 0x01, 0xff}));
  PngSpec a{1, 1, PNG_COLOR_TYPE_RGB_ALPHA, 16};
  a.samples = {0xaa, 0x01, 0xbb, 0x02, 0xcc, 0x03, 0x00, 0x00};
  EXPECT_EQ(decode_image(encode_png(a), "rgba16.png").rgb, (Bytes{0xaa, 0xbb, 0xcc}));
  PngSpec la{1, 1, PNG_COLOR_TYPE_GRAY_ALPHA, 16};
  la.samples = {0x7f, 0xff, 0x00, 0x10};
  EXPECT_EQ(decode_image(encode_png(la), "la16.png").rgb, (Bytes{0x7f, 0x7f, 0x7f}));
}

TEST(ImageDecodePng, Gray16ClipsLikePillowModeI) {
  // Pillow opens 16-bit gray as mode "I"; convert('RGB') clips to 255.
  PngSpec s{5, 1, PNG_COLOR_TYPE_GRAY, 16};
  s.samples = {0x00, 0x00, 0x00, 0x64, 0x00, 0xff, 0x01, 0x00, 0xff, 0xff};
  const Image img = decode_image(encode_png(s), "gray16.png");
  EXPECT_EQ(img.rgb, (Bytes{0, 0, 0, 100, 100, 100, 255, 255, 255, 255, 255, 255, 255, 255, 255}));
}

TEST(ImageDecodePng, InterlacedMatchesNonInterlaced) {
  PngSpec s{29, 17};
  s.samples = random_bytes(29 * 17 * 3, 5);
  PngSpec si = s;
  si.interlaced = true;
  const Bytes a = encode_png(s), b = encode_png(si);
  ASSERT_NE(a, b);
  EXPECT_EQ(decode_image(b, "adam7.png").rgb, s.samples);

  PngSpec g{7, 9, PNG_COLOR_TYPE_GRAY, 16};
  g.interlaced = true;
  g.samples = random_bytes(7 * 9 * 2, 6);
  const Image gi = decode_image(encode_png(g), "adam7-gray16.png");
  for (int i = 0; i < 63; ++i) {
    const unsigned v = (unsigned(g.samples[i * 2]) << 8) | g.samples[i * 2 + 1];
    EXPECT_EQ(gi.rgb[i * 3], std::min(v, 255u));
  }
}

TEST(ImageDecodePng, OneByOneWorks) {
  PngSpec s{1, 1};
  s.samples = {1, 2, 3};
  const Image img = decode_image(encode_png(s), "1x1.png");
  EXPECT_EQ(img.width, 1);
  EXPECT_EQ(img.height, 1);
  EXPECT_EQ(img.rgb, (Bytes{1, 2, 3}));
}

// ---------------------------------------------------------------------------
// JPEG
// ---------------------------------------------------------------------------

TEST(ImageDecodeJpeg, BaselineRgbWithinTolerance) {
  const Bytes px = gradient_rgb(64, 48);
  const Bytes jpg = encode_jpeg(px, 64, 48, TJPF_RGB, TJSAMP_444, 95);
  const Image img = decode_image(jpg, "a.jpg");
  EXPECT_EQ(img.width, 64);
  EXPECT_EQ(img.height, 48);
  EXPECT_LT(mean_abs_diff(img.rgb, px), 2.0);
  EXPECT_LE(max_abs_diff(img.rgb, px), 12);
}

TEST(ImageDecodeJpeg, SubsampledAndProgressive) {
  const Bytes px = gradient_rgb(50, 33);  // odd sizes: partial MCUs
  const Bytes base = encode_jpeg(px, 50, 33, TJPF_RGB, TJSAMP_420, 90);
  const Bytes prog = encode_jpeg(px, 50, 33, TJPF_RGB, TJSAMP_420, 90, TJFLAG_PROGRESSIVE);
  ASSERT_NE(base, prog);
  const Image a = decode_image(base, "base.jpg"), b = decode_image(prog, "prog.jpg");
  EXPECT_LT(mean_abs_diff(a.rgb, px), 3.0);
  // Same coefficients, different scan layout: the decoded pixels agree.
  EXPECT_EQ(a.rgb, b.rgb);
}

TEST(ImageDecodeJpeg, GrayscaleReplicatesChannel) {
  Bytes gray(40 * 30);
  for (size_t i = 0; i < gray.size(); ++i) gray[i] = static_cast<uint8_t>(i * 7 / 5);
  const Image img = decode_image(encode_jpeg(gray, 40, 30, TJPF_GRAY, TJSAMP_GRAY, 95), "gray.jpg");
  ASSERT_EQ(img.rgb.size(), gray.size() * 3);
  Bytes first(gray.size());
  for (size_t i = 0; i < gray.size(); ++i) {
    EXPECT_EQ(img.rgb[i * 3], img.rgb[i * 3 + 1]);
    EXPECT_EQ(img.rgb[i * 3], img.rgb[i * 3 + 2]);
    first[i] = img.rgb[i * 3];
  }
  EXPECT_LT(mean_abs_diff(first, gray), 3.0);
}

TEST(ImageDecodeJpeg, CmykUsesPillowAdobeConversion) {
  // TurboJPEG stores the CMYK bytes as given (YCCK + Adobe marker). Pillow
  // reads them as inverted ("CMYK;I") and converts with
  // r = (255-k) - round((255-k)*c/255) on the inverted values.
  const int w = 16, h = 8;
  Bytes cmyk(w * h * 4);
  for (int i = 0; i < w * h; ++i) {
    cmyk[i * 4 + 0] = static_cast<uint8_t>(i * 2);
    cmyk[i * 4 + 1] = static_cast<uint8_t>(255 - i);
    cmyk[i * 4 + 2] = 128;
    cmyk[i * 4 + 3] = static_cast<uint8_t>(200 + (i % 56));
  }
  const Bytes jpg = encode_jpeg(cmyk, w, h, TJPF_CMYK, TJSAMP_444, 100);
  const Image img = decode_image(jpg, "cmyk.jpg");
  Bytes expect(w * h * 3);
  for (int i = 0; i < w * h; ++i) {
    const int k = 255 - cmyk[i * 4 + 3], nk = 255 - k;
    for (int c = 0; c < 3; ++c) {
      const int v = 255 - cmyk[i * 4 + c];
      const int t = v * nk + 128;
      expect[i * 3 + c] = static_cast<uint8_t>(nk - (((t >> 8) + t) >> 8));
    }
  }
  EXPECT_LE(max_abs_diff(img.rgb, expect), 6);
  // Plain (non-inverted) reading would give ~255-x: clearly different.
  EXPECT_LT(mean_abs_diff(img.rgb, expect), 1.5);
}

TEST(ImageDecodeJpeg, OneByOneWorks) {
  const Image img = decode_image(encode_jpeg(Bytes{200, 100, 50}, 1, 1, TJPF_RGB, TJSAMP_444, 100), "1x1.jpg");
  EXPECT_EQ(img.width, 1);
  EXPECT_EQ(img.height, 1);
  EXPECT_LE(max_abs_diff(img.rgb, Bytes{200, 100, 50}), 3);
}

// ---------------------------------------------------------------------------
// WebP
// ---------------------------------------------------------------------------

Bytes webp_from(uint8_t* out, size_t size) {
  Bytes b(out, out + size);
  WebPFree(out);
  return b;
}

TEST(ImageDecodeWebp, LosslessIsExact) {
  const Bytes px = random_bytes(31 * 19 * 3, 7);
  uint8_t* out = nullptr;
  const size_t n = WebPEncodeLosslessRGB(px.data(), 31, 19, 31 * 3, &out);
  ASSERT_GT(n, 0u);
  const Image img = decode_image(webp_from(out, n), "ll.webp");
  EXPECT_EQ(img.width, 31);
  EXPECT_EQ(img.height, 19);
  EXPECT_EQ(img.rgb, px);
}

TEST(ImageDecodeWebp, LosslessAlphaIsDropped) {
  Bytes rgba = random_bytes(9 * 5 * 4, 8);
  for (size_t i = 3; i < rgba.size(); i += 4) rgba[i] = static_cast<uint8_t>(i % 7 == 0 ? 255 : 77);
  WebPConfig cfg;
  ASSERT_TRUE(WebPConfigInit(&cfg));
  cfg.lossless = 1;
  cfg.exact = 1;  // keep RGB under transparent pixels
  WebPPicture pic;
  ASSERT_TRUE(WebPPictureInit(&pic));
  pic.use_argb = 1;
  pic.width = 9;
  pic.height = 5;
  ASSERT_TRUE(WebPPictureImportRGBA(&pic, rgba.data(), 9 * 4));
  WebPMemoryWriter wr;
  WebPMemoryWriterInit(&wr);
  pic.writer = WebPMemoryWrite;
  pic.custom_ptr = &wr;
  ASSERT_TRUE(WebPEncode(&cfg, &pic));
  WebPPictureFree(&pic);
  const Bytes file(wr.mem, wr.mem + wr.size);
  WebPMemoryWriterClear(&wr);
  const Image img = decode_image(file, "alpha.webp");
  for (size_t i = 0; i < 45; ++i)
    for (int c = 0; c < 3; ++c) EXPECT_EQ(img.rgb[i * 3 + c], rgba[i * 4 + c]);
}

TEST(ImageDecodeWebp, LossyWithinTolerance) {
  const Bytes px = gradient_rgb(64, 40);
  uint8_t* out = nullptr;
  const size_t n = WebPEncodeRGB(px.data(), 64, 40, 64 * 3, 95, &out);
  ASSERT_GT(n, 0u);
  const Image img = decode_image(webp_from(out, n), "lossy.webp");
  EXPECT_EQ(img.width, 64);
  EXPECT_LT(mean_abs_diff(img.rgb, px), 4.0);
}

// ---------------------------------------------------------------------------
// Files, sniffing, errors
// ---------------------------------------------------------------------------

TEST(ImageLoad, FormatIsSniffedNotTakenFromExtension) {
  test::TempDir dir;
  PngSpec s{3, 2};
  s.samples = random_bytes(18, 9);
  write_file(dir.file("really_a_png.jpg"), encode_png(s));
  EXPECT_EQ(load_image(dir.file("really_a_png.jpg")).rgb, s.samples);
  const Bytes jpg = encode_jpeg(gradient_rgb(8, 8), 8, 8, TJPF_RGB, TJSAMP_444, 90);
  EXPECT_EQ(sniff_image_format(jpg.data(), jpg.size()), ImageFormat::JPEG);
  write_file(dir.file("noext"), jpg);
  EXPECT_EQ(load_image(dir.file("noext")).width, 8);
}

TEST(ImageLoad, MissingEmptyAndDirectory) {
  test::TempDir dir;
  EXPECT_THROW_WITH(load_image(dir.file("nope.png")), InputError, "no such file");
  EXPECT_THROW_WITH(load_image(dir.file("nope.png")), InputError, "nope.png");
  write_file(dir.file("empty.png"), {});
  EXPECT_THROW_WITH(load_image(dir.file("empty.png")), InputError, "empty");
  EXPECT_THROW_WITH(load_image(dir.path()), InputError, "directory");
  EXPECT_THROW_WITH(decode_image(Bytes{}, "x"), InputError, "empty");
}

TEST(ImageErrors, RandomBytesAndOtherFormatsAreUnsupported) {
  EXPECT_THROW_WITH(decode_image(random_bytes(100, 10), "rand.bin"), InputError, "unsupported image format");
  EXPECT_THROW_WITH(decode_image(random_bytes(100, 10), "rand.bin"), InputError, "PNG, JPEG or WebP");
  const std::string gif = "GIF89a\x01\x00\x01\x00";
  EXPECT_THROW_WITH(decode_image(Bytes(gif.begin(), gif.end()), "a.gif"), InputError, "GIF");
  EXPECT_THROW_WITH(decode_image(Bytes{'B', 'M', 0, 0}, "a.bmp"), InputError, "BMP");
  EXPECT_THROW_WITH(decode_image(Bytes{0x89}, "short"), InputError, "unsupported image format");
}

TEST(ImageErrors, TruncatedPng) {
  PngSpec s{40, 30};
  s.samples = random_bytes(40 * 30 * 3, 11);
  const Bytes full = encode_png(s);
  const Bytes cut(full.begin(), full.begin() + full.size() / 2);
  EXPECT_THROW_WITH(decode_image(cut, "cut.png"), InputError, "truncated");
  EXPECT_THROW_WITH(decode_image(cut, "cut.png"), InputError, "cut.png");
  const Bytes sig_only(full.begin(), full.begin() + 8);
  EXPECT_THROW_WITH(decode_image(sig_only, "sig.png"), InputError, "truncated");
}

TEST(ImageErrors, CorruptPngChecksumIsReported) {
  PngSpec s{4, 4};
  s.samples = random_bytes(48, 12);
  Bytes b = encode_png(s);
  b[16] ^= 0x01;  // inside IHDR: CRC no longer matches
  EXPECT_THROW_WITH(decode_image(b, "crc.png"), InputError, "corrupt PNG");
}

size_t find_chunk(const Bytes& png, const char* type) {
  for (size_t i = 8; i + 8 <= png.size(); ++i)
    if (std::memcmp(&png[i + 4], type, 4) == 0) return i;  // offset of the length field
  return std::string::npos;
}

TEST(ImagePngLikePillow, MissingTrailerAfterCompletePixelDataStillDecodes) {
  // Pillow stops reading once every row is inflated: no IEND, no IDAT CRC and
  // even a missing zlib Adler-32 are fine; one byte of deflate data more is not.
  PngSpec s{23, 11};
  s.samples = random_bytes(23 * 11 * 3, 16);
  for (bool interlaced : {false, true}) {
    s.interlaced = interlaced;
    const Bytes full = encode_png(s);
    const size_t iend = find_chunk(full, "IEND");
    ASSERT_NE(iend, std::string::npos);
    for (size_t missing = 0; missing <= 8; ++missing) {
      const Bytes cut(full.begin(), full.begin() + (iend - missing));
      EXPECT_EQ(decode_image(cut, "cut.png").rgb, s.samples) << "missing " << missing;
    }
    const Bytes cut9(full.begin(), full.begin() + (iend - 9));
    EXPECT_THROW_WITH(decode_image(cut9, "cut9.png"), InputError, "truncated");
  }
}

TEST(ImagePngLikePillow, IdatCrcIgnoredButZlibChecksumChecked) {
  PngSpec s{8, 8};
  s.samples = random_bytes(8 * 8 * 3, 17);
  const Bytes full = encode_png(s);
  const size_t iend = find_chunk(full, "IEND");
  Bytes bad_crc = full;
  bad_crc[iend - 1] ^= 0x5a;  // last byte of the IDAT CRC
  EXPECT_EQ(decode_image(bad_crc, "crc.png").rgb, s.samples);
  Bytes bad_adler = full;
  bad_adler[iend - 5] ^= 0x5a;  // last byte of the zlib Adler-32
  EXPECT_THROW_WITH(decode_image(bad_adler, "adler.png"), InputError, "corrupt PNG");
}

TEST(ImageJpegLikePillow, StrayBytesBeforeMarkerAreTolerated) {
  const Bytes px = gradient_rgb(16, 16);
  const Bytes jpg = encode_jpeg(px, 16, 16, TJPF_RGB, TJSAMP_444, 90);
  const Image ref = decode_image(jpg, "ok.jpg");
  // Insert junk between the first two segments (after SOI + the first segment).
  const size_t seg_end = 4 + ((size_t(jpg[4]) << 8) | jpg[5]);
  Bytes junk(jpg.begin(), jpg.begin() + seg_end);
  junk.insert(junk.end(), {0x12, 0x34, 0x56});
  junk.insert(junk.end(), jpg.begin() + seg_end, jpg.end());
  const Image img = decode_image(junk, "junk.jpg");  // libjpeg: "extraneous bytes" warning
  EXPECT_EQ(img.rgb, ref.rgb);
  // Trailing bytes after EOI are ignored too.
  Bytes trailing = jpg;
  trailing.insert(trailing.end(), {1, 2, 3, 4});
  EXPECT_EQ(decode_image(trailing, "trailing.jpg").rgb, ref.rgb);
}

TEST(ImageErrors, ProgressiveJpegCutBetweenScansIsTruncated) {
  // libjpeg can render the scans it got without complaint at a scan boundary;
  // Pillow still calls that truncated (no EOI), and so do we.
  const Bytes full = encode_jpeg(gradient_rgb(32, 32), 32, 32, TJPF_RGB, TJSAMP_420, 90, TJFLAG_PROGRESSIVE);
  std::vector<size_t> sos;
  for (size_t i = 2; i + 1 < full.size(); ++i)
    if (full[i] == 0xFF && full[i + 1] == 0xDA) sos.push_back(i);
  ASSERT_GE(sos.size(), 3u);
  for (size_t k = 1; k < sos.size(); ++k) {
    const Bytes cut(full.begin(), full.begin() + sos[k]);
    EXPECT_THROW_WITH(decode_image(cut, "prog-cut.jpg"), InputError, "truncated");
  }
  const Bytes no_eoi(full.begin(), full.end() - 2);
  EXPECT_THROW_WITH(decode_image(no_eoi, "no-eoi.jpg"), InputError, "truncated");
}

TEST(ImageErrors, TruncatedJpeg) {
  const Bytes full = encode_jpeg(gradient_rgb(64, 64), 64, 64, TJPF_RGB, TJSAMP_420, 90);
  const Bytes cut(full.begin(), full.begin() + full.size() * 2 / 3);
  EXPECT_THROW_WITH(decode_image(cut, "cut.jpg"), InputError, "truncated");
  const Bytes header_cut(full.begin(), full.begin() + 20);
  EXPECT_THROW_WITH(decode_image(header_cut, "hcut.jpg"), InputError, "JPEG");
}

TEST(ImageErrors, TruncatedWebp) {
  const Bytes px = gradient_rgb(64, 40);
  uint8_t* out = nullptr;
  const size_t n = WebPEncodeRGB(px.data(), 64, 40, 64 * 3, 90, &out);
  const Bytes full = webp_from(out, n);
  const Bytes cut(full.begin(), full.begin() + full.size() / 2);
  EXPECT_THROW_WITH(decode_image(cut, "cut.webp"), InputError, "truncated");
}

TEST(ImageErrors, HugeHeaderIsRejectedBeforeAllocating) {
  // 20000 x 20000 = 4e8 pixels > 2 * 89478485: rejected from IHDR alone (the
  // file has no pixel data; a decoder that allocated first would still fail
  // later, but with a truncation error, not this one).
  EXPECT_THROW_WITH(decode_image(png_header_only(20000, 20000), "bomb.png"), InputError,
                    "over the limit of 178956970 pixels");
  // Same for JPEG: patch the SOF of a tiny JPEG to claim 20000 x 20000.
  Bytes jpg = encode_jpeg(gradient_rgb(8, 8), 8, 8, TJPF_RGB, TJSAMP_444, 90);
  bool patched = false;
  for (size_t i = 0; i + 8 < jpg.size(); ++i) {
    if (jpg[i] == 0xFF && (jpg[i + 1] == 0xC0 || jpg[i + 1] == 0xC2)) {
      jpg[i + 5] = 20000 >> 8;
      jpg[i + 6] = 20000 & 0xff;
      jpg[i + 7] = 20000 >> 8;
      jpg[i + 8] = 20000 & 0xff;
      patched = true;
      break;
    }
  }
  ASSERT_TRUE(patched);
  EXPECT_THROW_WITH(decode_image(jpg, "bomb.jpg"), InputError, "over the limit");
}

TEST(ImageErrors, PixelLimitIsConfigurable) {
  PngSpec s{100, 100};
  s.samples = random_bytes(100 * 100 * 3, 13);
  const Bytes png = encode_png(s);
  DecodeOptions small;
  small.max_pixels = 5000;
  EXPECT_THROW_WITH(decode_image(png, "big.png", small), InputError, "10000 pixels, over the limit of 5000");
  small.max_pixels = 10000;  // the limit itself is allowed
  EXPECT_EQ(decode_image(png, "ok.png", small).width, 100);
  DecodeOptions off;
  off.max_pixels = 0;
  EXPECT_EQ(decode_image(png, "ok.png", off).height, 100);
}

TEST(ImageErrors, ZeroSizedPng) {
  EXPECT_THROW_WITH(decode_image(png_header_only(0, 10), "zero.png"), InputError, "zero");
}

// Every prefix and a batch of single-byte corruptions of valid files either
// decode or throw InputError: no crash, hang or out-of-bounds read (run under
// ASan/valgrind to make the last part strict).
TEST(ImageErrors, PrefixesAndBitFlipsNeverCrash) {
  PngSpec s{12, 9};
  s.samples = random_bytes(12 * 9 * 3, 14);
  PngSpec si = s;
  si.interlaced = true;
  uint8_t* wout = nullptr;
  const Bytes px = gradient_rgb(20, 12);
  const size_t wn = WebPEncodeRGB(px.data(), 20, 12, 60, 80, &wout);
  const std::vector<Bytes> files = {
      encode_png(s), encode_png(si), encode_jpeg(px, 20, 12, TJPF_RGB, TJSAMP_420, 80),
      encode_jpeg(px, 20, 12, TJPF_RGB, TJSAMP_420, 80, TJFLAG_PROGRESSIVE), webp_from(wout, wn)};
  std::mt19937 rng(15);
  int decoded = 0, rejected = 0;
  for (const Bytes& f : files) {
    for (size_t len = 0; len < f.size(); ++len) {
      try {
        decode_image(Bytes(f.begin(), f.begin() + len), "prefix");
        ++decoded;
      } catch (const InputError&) {
        ++rejected;
      }
    }
    for (int t = 0; t < 300; ++t) {
      Bytes g = f;
      g[rng() % g.size()] ^= static_cast<uint8_t>(1 + rng() % 255);
      try {
        const Image img = decode_image(g, "flip");
        EXPECT_EQ(img.rgb.size(), img.num_pixels() * 3);
        ++decoded;
      } catch (const InputError&) {
        ++rejected;
      }
    }
  }
  EXPECT_GT(rejected, 0);
  EXPECT_GT(decoded, 0);
}

}  // namespace
}  // namespace blip2
