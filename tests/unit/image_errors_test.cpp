// Image files and hostile bytes: format sniffing, missing / empty files,
// truncation, corrupt checksums, decompression bombs, random bit flips.
#include "image_fixtures.h"

namespace blip2 {
namespace {

using namespace test_images;

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
