// PIL-compatible resampling and BlipImageProcessor arithmetic.
//
// Resampling follows the algorithm of Pillow 9.4 libImaging/Resample.c (our
// own code): separable convolution, horizontal pass first, then vertical;
// the filter support grows with the reduction factor (antialiasing); each
// output pixel's weights are normalised to sum 1, then converted to fixed
// point with PRECISION_BITS = 22 (rounded away from zero); each pass adds
// 1 << 21, shifts right by 22 (floor) and clips to 0..255. A pass whose size
// does not change is skipped; same size in both is a plain copy.
// NEAREST follows Pillow's affine "scale" path (libImaging/Geometry.c).
#include "blip2/data/image_processor.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "blip2/util/error.h"

namespace blip2 {

namespace {

constexpr int kPrecisionBits = 32 - 8 - 2;

// Filters, as Pillow 9.4 defines them.
double box_filter(double x) { return (x > -0.5 && x <= 0.5) ? 1.0 : 0.0; }
double bilinear_filter(double x) {
  x = std::fabs(x);
  return x < 1.0 ? 1.0 - x : 0.0;
}
double hamming_filter(double x) {
  x = std::fabs(x);
  if (x == 0.0) return 1.0;
  if (x >= 1.0) return 0.0;
  x = x * M_PI;
  return std::sin(x) / x * (0.54f + 0.46f * std::cos(x));  // float constants, as in Pillow
}
double bicubic_filter(double x) {
  constexpr double a = -0.5;  // Keys
  x = std::fabs(x);
  if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
  if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
  return 0.0;
}
double sinc_filter(double x) {
  if (x == 0.0) return 1.0;
  x = x * M_PI;
  return std::sin(x) / x;
}
double lanczos_filter(double x) {
  if (-3.0 <= x && x < 3.0) return sinc_filter(x) * sinc_filter(x / 3);
  return 0.0;
}

struct Filter {
  double (*fn)(double);
  double support;
};

Filter filter_for(Resample r) {
  switch (r) {
    case Resample::Box: return {box_filter, 0.5};
    case Resample::Bilinear: return {bilinear_filter, 1.0};
    case Resample::Hamming: return {hamming_filter, 1.0};
    case Resample::Bicubic: return {bicubic_filter, 2.0};
    case Resample::Lanczos: return {lanczos_filter, 3.0};
    default: break;
  }
  throw InputError("resize: unsupported resample filter " + std::to_string(static_cast<int>(r)) +
                   "; expected 0 (nearest), 1 (lanczos), 2 (bilinear), 3 (bicubic), 4 (box) or 5 (hamming)");
}

// Per output index: the first input index, the tap count and ksize fixed-point
// weights (only the first `count` are meaningful).
struct Coeffs {
  int ksize = 0;
  std::vector<int> first, count;
  std::vector<int32_t> k;
};

Coeffs precompute_coeffs(int in_size, int out_size, const Filter& f) {
  const double scale = static_cast<double>(in_size) / out_size;  // box = (0, in_size)
  const double filterscale = std::max(scale, 1.0);
  const double support = f.support * filterscale;
  Coeffs c;
  c.ksize = static_cast<int>(std::ceil(support)) * 2 + 1;
  c.first.resize(out_size);
  c.count.resize(out_size);
  c.k.assign(static_cast<size_t>(out_size) * c.ksize, 0);
  std::vector<double> w(c.ksize);
  const double ss = 1.0 / filterscale;
  for (int xx = 0; xx < out_size; ++xx) {
    const double center = (xx + 0.5) * scale;
    // Truncation toward zero, then clamping, exactly as Pillow rounds bounds.
    int xmin = static_cast<int>(center - support + 0.5);
    if (xmin < 0) xmin = 0;
    int xmax = static_cast<int>(center + support + 0.5);
    if (xmax > in_size) xmax = in_size;
    int n = std::clamp(xmax - xmin, 0, c.ksize);
    double ww = 0.0;
    for (int x = 0; x < n; ++x) {
      w[x] = f.fn((x + xmin - center + 0.5) * ss);
      ww += w[x];
    }
    int32_t* k = &c.k[static_cast<size_t>(xx) * c.ksize];
    for (int x = 0; x < n; ++x) {
      const double v = ww != 0.0 ? w[x] / ww : w[x];
      k[x] = v < 0 ? static_cast<int32_t>(-0.5 + v * (1 << kPrecisionBits))
                   : static_cast<int32_t>(0.5 + v * (1 << kPrecisionBits));
    }
    c.first[xx] = xmin;
    c.count[xx] = n;
  }
  return c;
}

inline uint8_t clip8(int32_t ss) {
  const int32_t v = ss >> kPrecisionBits;  // arithmetic shift: floor
  return static_cast<uint8_t>(v < 0 ? 0 : (v > 255 ? 255 : v));
}

// Horizontal pass over rows [row0, row0 + rows) of `in` (width in_w) into
// `out` (width out_w, `rows` rows).
void resample_horizontal(const uint8_t* in, int in_w, int row0, int rows, uint8_t* out, int out_w,
                         const Coeffs& c) {
  at::parallel_for(0, rows, 16, [&](int64_t begin, int64_t end) {
    for (int64_t yy = begin; yy < end; ++yy) {
      const uint8_t* src = in + (static_cast<size_t>(row0 + yy) * in_w) * 3;
      uint8_t* dst = out + static_cast<size_t>(yy) * out_w * 3;
      for (int xx = 0; xx < out_w; ++xx) {
        const int32_t* k = &c.k[static_cast<size_t>(xx) * c.ksize];
        const uint8_t* p = src + static_cast<size_t>(c.first[xx]) * 3;
        int32_t s0 = 1 << (kPrecisionBits - 1), s1 = s0, s2 = s0;
        for (int x = 0; x < c.count[xx]; ++x) {
          s0 += p[x * 3 + 0] * k[x];
          s1 += p[x * 3 + 1] * k[x];
          s2 += p[x * 3 + 2] * k[x];
        }
        dst[xx * 3 + 0] = clip8(s0);
        dst[xx * 3 + 1] = clip8(s1);
        dst[xx * 3 + 2] = clip8(s2);
      }
    }
  });
}

// Vertical pass: out row yy from in rows first[yy] - row_offset ... (width w).
void resample_vertical(const uint8_t* in, int w, int row_offset, uint8_t* out, int out_h,
                       const Coeffs& c) {
  const size_t stride = static_cast<size_t>(w) * 3;
  at::parallel_for(0, out_h, 8, [&](int64_t begin, int64_t end) {
    for (int64_t yy = begin; yy < end; ++yy) {
      const int32_t* k = &c.k[static_cast<size_t>(yy) * c.ksize];
      const uint8_t* src = in + static_cast<size_t>(c.first[yy] - row_offset) * stride;
      const int n = c.count[yy];
      uint8_t* dst = out + static_cast<size_t>(yy) * stride;
      for (size_t i = 0; i < stride; ++i) {
        int32_t s = 1 << (kPrecisionBits - 1);
        for (int y = 0; y < n; ++y) s += src[static_cast<size_t>(y) * stride + i] * k[y];
        dst[i] = clip8(s);
      }
    }
  });
}

void check_image(const Image& img, const char* what) {
  if (img.width <= 0 || img.height <= 0) {
    throw InputError(std::string(what) + ": image is " + std::to_string(img.width) + "x" +
                     std::to_string(img.height) + "; expected at least 1x1 (was it decoded?)");
  }
  if (img.rgb.size() != img.num_pixels() * 3) {
    throw InputError(std::string(what) + ": image buffer holds " + std::to_string(img.rgb.size()) +
                     " bytes, expected width*height*3 = " + std::to_string(img.num_pixels() * 3) +
                     "; build Image with HWC RGB data");
  }
}

Image resize_nearest_impl(const Image& in, int width, int height) {
  // Pillow: affine scale with a = (in_w / out_w, in_h / out_h), sampling at
  // COORD(a * 0.5 + i * a) accumulated by repeated addition.
  auto table = [](int in_size, int out_size) {
    std::vector<int> t(out_size);
    const double a = static_cast<double>(in_size) / out_size;
    double o = a * 0.5;
    for (int i = 0; i < out_size; ++i) {
      const int v = o < 0.0 ? -1 : static_cast<int>(o);
      t[i] = (v >= 0 && v < in_size) ? v : -1;  // -1: outside, filled with 0
      o += a;
    }
    return t;
  };
  const std::vector<int> xt = table(in.width, width), yt = table(in.height, height);
  Image out;
  out.width = width;
  out.height = height;
  out.rgb.assign(out.num_pixels() * 3, 0);
  for (int y = 0; y < height; ++y) {
    if (yt[y] < 0) continue;
    for (int x = 0; x < width; ++x) {
      if (xt[x] < 0) continue;
      const uint8_t* s = in.pixel(xt[x], yt[y]);
      uint8_t* d = out.pixel(x, y);
      d[0] = s[0];
      d[1] = s[1];
      d[2] = s[2];
    }
  }
  return out;
}

}  // namespace

Image resize(const Image& in, int width, int height, Resample filter) {
  check_image(in, "resize");
  if (width < 1 || height < 1) {
    throw InputError("resize: target size " + std::to_string(width) + "x" + std::to_string(height) +
                     " is invalid; expected width and height >= 1");
  }
  if (width == in.width && height == in.height) return in;  // Pillow returns a copy
  if (filter == Resample::Nearest) return resize_nearest_impl(in, width, height);
  const Filter f = filter_for(filter);

  const bool need_h = width != in.width;
  const bool need_v = height != in.height;
  Coeffs cv = precompute_coeffs(in.height, height, f);
  // Rows of the input the vertical pass reads.
  const int y_first = cv.first[0];
  const int y_last = cv.first[height - 1] + cv.count[height - 1];

  Image tmp;
  const Image* src = &in;
  int row_offset = 0;
  if (need_h) {
    const Coeffs ch = precompute_coeffs(in.width, width, f);
    const int rows = need_v ? y_last - y_first : in.height;
    const int row0 = need_v ? y_first : 0;
    tmp.width = width;
    tmp.height = rows;
    tmp.rgb.resize(static_cast<size_t>(width) * rows * 3);
    resample_horizontal(in.rgb.data(), in.width, row0, rows, tmp.rgb.data(), width, ch);
    src = &tmp;
    row_offset = row0;
  }
  if (!need_v) return tmp;
  Image out;
  out.width = src->width;
  out.height = height;
  out.rgb.resize(out.num_pixels() * 3);
  resample_vertical(src->rgb.data(), src->width, row_offset, out.rgb.data(), height, cv);
  return out;
}

Image resize_bicubic(const Image& image, int width, int height) {
  return resize(image, width, height, Resample::Bicubic);
}
Image resize_bilinear(const Image& image, int width, int height) {
  return resize(image, width, height, Resample::Bilinear);
}
Image resize_nearest(const Image& image, int width, int height) {
  return resize(image, width, height, Resample::Nearest);
}

// ---------------------------------------------------------------------------
// Config
// ---------------------------------------------------------------------------

namespace {

using nlohmann::json;

std::string field(const std::string& src, const std::string& key) { return src + ": " + key; }

bool present(const json& o, const char* key) { return o.contains(key) && !o[key].is_null(); }

int read_size_int(const json& v, const std::string& name) {
  if (!v.is_number_integer()) throw ConfigError(name + " must be an integer, got " + v.dump());
  const int64_t i = v.get<int64_t>();
  if (i < 1 || i > (1 << 20)) throw ConfigError(name + " must be in 1..1048576, got " + v.dump());
  return static_cast<int>(i);
}

std::array<double, 3> read_triple(const json& v, const std::string& name) {
  if (v.is_number()) {
    const double d = v.get<double>();
    return {d, d, d};
  }
  if (!v.is_array() || v.size() != 3) {
    throw ConfigError(name + " must be a list of 3 numbers (one per RGB channel) or a number, got " +
                      v.dump());
  }
  std::array<double, 3> out{};
  for (size_t i = 0; i < 3; ++i) {
    if (!v[i].is_number()) throw ConfigError(name + "[" + std::to_string(i) + "] must be a number, got " + v[i].dump());
    out[i] = v[i].get<double>();
  }
  return out;
}

}  // namespace

ImageProcessorConfig ImageProcessorConfig::from_json_text(const std::string& text, const std::string& src) {
  json root;
  try {
    root = json::parse(text);
  } catch (const json::exception& e) {
    throw ConfigError(src + ": not valid JSON (" + e.what() + "); expected a preprocessor_config.json object");
  }
  if (!root.is_object()) {
    throw ConfigError(src + ": expected a JSON object (preprocessor_config.json), got " +
                      std::string(root.type_name()));
  }
  ImageProcessorConfig c;
  if (present(root, "size")) {
    const json& s = root["size"];
    const std::string name = field(src, "size");
    if (s.is_number_integer()) {
      c.height = c.width = read_size_int(s, name);
    } else if (s.is_object()) {
      if (s.contains("height") || s.contains("width")) {
        if (!s.contains("height") || !s.contains("width"))
          throw ConfigError(name + " must have both \"height\" and \"width\", got " + s.dump());
        c.height = read_size_int(s["height"], name + ".height");
        c.width = read_size_int(s["width"], name + ".width");
      } else if (s.contains("shortest_edge")) {
        c.height = c.width = read_size_int(s["shortest_edge"], name + ".shortest_edge");
      } else {
        throw ConfigError(name + " must be {\"height\": H, \"width\": W}, {\"shortest_edge\": S} or an "
                          "integer, got " + s.dump());
      }
    } else {
      throw ConfigError(name + " must be {\"height\": H, \"width\": W}, {\"shortest_edge\": S} or an integer, got " +
                        s.dump());
    }
  }
  auto boolean = [&](const char* key, bool& out) {
    if (!present(root, key)) return;
    if (!root[key].is_boolean()) throw ConfigError(field(src, key) + " must be true or false, got " + root[key].dump());
    out = root[key].get<bool>();
  };
  boolean("do_resize", c.do_resize);
  boolean("do_rescale", c.do_rescale);
  boolean("do_normalize", c.do_normalize);
  boolean("do_convert_rgb", c.do_convert_rgb);
  if (present(root, "rescale_factor")) {
    if (!root["rescale_factor"].is_number())
      throw ConfigError(field(src, "rescale_factor") + " must be a number, got " + root["rescale_factor"].dump());
    c.rescale_factor = root["rescale_factor"].get<double>();
  }
  if (present(root, "image_mean")) c.image_mean = read_triple(root["image_mean"], field(src, "image_mean"));
  if (present(root, "image_std")) c.image_std = read_triple(root["image_std"], field(src, "image_std"));
  if (present(root, "resample")) {
    if (!root["resample"].is_number_integer())
      throw ConfigError(field(src, "resample") + " must be an integer PIL filter (0..5), got " + root["resample"].dump());
    const int64_t r = root["resample"].get<int64_t>();
    if (r < 0 || r > 5)
      throw ConfigError(field(src, "resample") + " must be 0 (nearest), 1 (lanczos), 2 (bilinear), 3 (bicubic), "
                        "4 (box) or 5 (hamming), got " + std::to_string(r));
    c.resample = static_cast<int>(r);
  }
  c.validate(src);
  return c;
}

ImageProcessorConfig ImageProcessorConfig::from_json_file(const std::string& path) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec))
    throw ConfigError(path + " is a directory; expected the preprocessor_config.json file");
  std::ifstream in(path, std::ios::binary);
  if (!in) throw ConfigError(path + ": cannot open preprocessor config; check the path (expected preprocessor_config.json)");
  std::stringstream ss;
  ss << in.rdbuf();
  return from_json_text(ss.str(), path);
}

void ImageProcessorConfig::validate(const std::string& src) const {
  if (height < 1 || width < 1)
    throw ConfigError(src + ": size must be at least 1x1, got " + std::to_string(height) + "x" + std::to_string(width));
  if (height > kMaxProcessedSide || width > kMaxProcessedSide)
    throw ConfigError(src + ": size " + std::to_string(height) + "x" + std::to_string(width) + " is above " +
                      std::to_string(kMaxProcessedSide) + " pixels a side (BLIP-2 encoders read 224-490 px)");
  if (!std::isfinite(rescale_factor))
    throw ConfigError(src + ": rescale_factor must be finite, got " + std::to_string(rescale_factor));
  for (int i = 0; i < 3; ++i) {
    if (!std::isfinite(image_mean[i]))
      throw ConfigError(src + ": image_mean[" + std::to_string(i) + "] must be finite");
    if (!std::isfinite(image_std[i]) || image_std[i] == 0.0)
      throw ConfigError(src + ": image_std[" + std::to_string(i) + "] must be finite and non-zero, got " +
                        std::to_string(image_std[i]));
  }
  if (resample < 0 || resample > 5)
    throw ConfigError(src + ": resample must be 0..5 (PIL filter), got " + std::to_string(resample));
}

// ---------------------------------------------------------------------------
// preprocess
// ---------------------------------------------------------------------------

namespace {

// Writes one image as float32 CHW at `dst` (3 * h * w floats).
void to_chw(const Image& img, const ImageProcessorConfig& cfg, float* dst) {
  // transformers: rescale = (uint8 as float64 * factor) cast to float32;
  // normalize = (x - float32(mean)) / float32(std) in float32.
  const size_t n = img.num_pixels();
  for (int c = 0; c < 3; ++c) {
    const float mean = static_cast<float>(cfg.image_mean[c]);
    const float std = static_cast<float>(cfg.image_std[c]);
    float lut[256];
    for (int v = 0; v < 256; ++v) {
      float x = cfg.do_rescale ? static_cast<float>(static_cast<double>(v) * cfg.rescale_factor)
                               : static_cast<float>(v);
      if (cfg.do_normalize) x = (x - mean) / std;  // two float32 roundings, as numpy
      lut[v] = x;
    }
    float* out = dst + static_cast<size_t>(c) * n;
    const uint8_t* in = img.rgb.data() + c;
    for (size_t i = 0; i < n; ++i) out[i] = lut[in[i * 3]];
  }
}

Image prepared(const Image& image, const ImageProcessorConfig& cfg) {
  check_image(image, "preprocess");
  if (!cfg.do_resize) return image;
  return resize(image, cfg.width, cfg.height, static_cast<Resample>(cfg.resample));
}

}  // namespace

at::Tensor preprocess(const Image& image, const ImageProcessorConfig& config) {
  config.validate();
  const Image img = prepared(image, config);
  at::Tensor out = at::empty({3, img.height, img.width}, at::kFloat);
  to_chw(img, config, out.data_ptr<float>());
  return out;
}

at::Tensor preprocess_batch(const std::vector<Image>& images, const ImageProcessorConfig& config) {
  config.validate();
  if (images.empty()) throw InputError("preprocess_batch: no images given; expected at least one");
  std::vector<Image> ready;
  ready.reserve(images.size());
  for (const Image& im : images) ready.push_back(prepared(im, config));
  const int h = ready[0].height, w = ready[0].width;
  for (size_t i = 1; i < ready.size(); ++i) {
    if (ready[i].height != h || ready[i].width != w) {
      throw InputError("preprocess_batch: image " + std::to_string(i) + " is " + std::to_string(ready[i].width) +
                       "x" + std::to_string(ready[i].height) + " but image 0 is " + std::to_string(w) + "x" +
                       std::to_string(h) + "; enable do_resize or pass images of one size");
    }
  }
  at::Tensor out = at::empty({static_cast<int64_t>(ready.size()), 3, h, w}, at::kFloat);
  float* p = out.data_ptr<float>();
  for (size_t i = 0; i < ready.size(); ++i) to_chw(ready[i], config, p + i * 3 * static_cast<size_t>(h) * w);
  return out;
}

}  // namespace blip2
