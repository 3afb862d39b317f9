// Decoding tests: images are built at test time with libpng / TurboJPEG /
// libwebp encoders (tests/image_fixtures.h) and decoded back.
#include "image_fixtures.h"

namespace blip2 {
namespace {

using namespace test_images;

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

}  // namespace
}  // namespace blip2
