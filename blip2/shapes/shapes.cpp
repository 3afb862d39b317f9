// The shapes world: scene sampling, cairo rendering, caption / question
// grammars and the split writer. See shapes.h and docs/shapes.md.
#include "blip2/shapes/shapes.h"

#include <cairo.h>

#include <algorithm>
#include <cmath>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <system_error>

#include "blip2/data/image_write.h"
#include "blip2/data/tokenizer.h"
#include "blip2/util/atomic_file.h"
#include "blip2/util/error.h"

namespace blip2::shapes {
namespace {

namespace fs = std::filesystem;

// ---- portable RNG helpers (raw mt19937_64 outputs only) ----

// Uniform integer in [0, n), by rejection (no modulo bias).
uint64_t below(std::mt19937_64& rng, uint64_t n) {
  const uint64_t limit = UINT64_MAX - UINT64_MAX % n;
  uint64_t x;
  do x = rng(); while (x >= limit);
  return x % n;
}

// Uniform double in [0, 1) with 53 random bits.
double uniform01(std::mt19937_64& rng) { return static_cast<double>(rng() >> 11) * 0x1.0p-53; }

double uniform(std::mt19937_64& rng, double lo, double hi) { return lo + (hi - lo) * uniform01(rng); }

uint64_t splitmix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ULL;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
  return x ^ (x >> 31);
}

struct ColorDef {
  const char* name;
  std::array<uint8_t, 3> rgb;
};

const ColorDef kColors[] = {
    {"red", {220, 40, 40}},     {"green", {40, 170, 60}},   {"blue", {40, 80, 220}},
    {"yellow", {235, 210, 40}}, {"purple", {140, 60, 190}}, {"orange", {245, 135, 25}},
};

const char* const kRelations[] = {"to the left of", "to the right of", "above", "below"};

const char* const kCountWords[] = {"zero", "one", "two", "three"};

void check_image_size(int image_size) {
  if (image_size < 32)
    throw ConfigError("[shapes] image_size must be >= 32 pixels, got " + std::to_string(image_size) +
                      "; use e.g. 224");
}

// ---- scene sampling ----

// Draws shape and colour of one object. Outside the compositional split the
// held-out compositions are redrawn; `force_held_out` draws one of them.
void sample_kind(std::mt19937_64& rng, bool allow_held_out, bool force_held_out, ShapeObject& o) {
  const auto& shapes = shape_names();
  const auto& colors = color_names();
  if (force_held_out) {
    if (below(rng, 2) == 0) {
      o.shape = "triangle", o.color = "purple";
    } else {
      o.shape = "circle", o.color = "orange";
    }
    return;
  }
  do {
    o.shape = shapes[below(rng, shapes.size())];
    o.color = colors[below(rng, colors.size())];
  } while (!allow_held_out && is_held_out(o.shape, o.color));
}

void sample_look(std::mt19937_64& rng, int image_size, ShapeObject& o) {
  const bool large = below(rng, 2) == 1;
  o.size = large ? "large" : "small";
  const double frac = large ? uniform(rng, kLargeMin, kLargeMax) : uniform(rng, kSmallMin, kSmallMax);
  o.bbox = frac * image_size;
  const auto base = base_color(o.color);
  for (int c = 0; c < 3; ++c) {
    const int v = static_cast<int>(base[c]) + static_cast<int>(below(rng, 2 * kColorJitter + 1)) - kColorJitter;
    o.rgb[c] = static_cast<uint8_t>(std::clamp(v, 0, 255));
  }
}

// Bounding boxes at least `gap` apart along x or y.
bool boxes_apart(const ShapeObject& a, const ShapeObject& b, double gap) {
  const double half = (a.bbox + b.bbox) / 2 + gap;
  return std::abs(a.cx - b.cx) >= half || std::abs(a.cy - b.cy) >= half;
}

bool placement_ok(const std::vector<ShapeObject>& objs, int image_size) {
  const double gap = std::max(2.0, 0.01 * image_size);
  const double margin = kRelationMargin * image_size;
  for (size_t i = 0; i < objs.size(); ++i) {
    for (size_t j = i + 1; j < objs.size(); ++j) {
      const ShapeObject &a = objs[i], &b = objs[j];
      if (!boxes_apart(a, b, gap)) return false;
      const double dx = std::abs(a.cx - b.cx), dy = std::abs(a.cy - b.cy);
      if (std::abs(dx - dy) < margin) return false;             // relation would be near-diagonal
      if (objs.size() == 3 && dx < margin) return false;        // left-to-right order unclear
    }
  }
  return true;
}

// ---- rendering helpers ----

void star_path(cairo_t* cr, const ShapeObject& o) {
  // Five points, one up. Outer radius R chosen so the width (2 R sin 72deg)
  // equals the bbox; the height is R (1 + cos 36deg) = 0.951 bbox, centred
  // vertically in the bbox. Inner radius R / 2 (chunkier than a pentagram).
  const double pi = 3.14159265358979323846;
  const double R = o.bbox / (2 * std::sin(72 * pi / 180));
  const double r = 0.5 * R;
  const double centre_y = o.cy + (R - R * std::cos(36 * pi / 180)) / 2;
  for (int k = 0; k < 10; ++k) {
    const double theta = k * pi / 5;  // from the top, clockwise
    const double rad = (k % 2 == 0) ? R : r;
    const double x = o.cx + rad * std::sin(theta), y = centre_y - rad * std::cos(theta);
    if (k == 0) cairo_move_to(cr, x, y); else cairo_line_to(cr, x, y);
  }
  cairo_close_path(cr);
}

void shape_path(cairo_t* cr, const ShapeObject& o) {
  const double h = o.bbox / 2;
  if (o.shape == "circle") {
    cairo_new_sub_path(cr);
    cairo_arc(cr, o.cx, o.cy, h, 0, 2 * 3.14159265358979323846);
    cairo_close_path(cr);
  } else if (o.shape == "square") {
    cairo_rectangle(cr, o.cx - h, o.cy - h, o.bbox, o.bbox);
  } else if (o.shape == "triangle") {
    // Isosceles, apex up: base = height = bbox.
    cairo_move_to(cr, o.cx, o.cy - h);
    cairo_line_to(cr, o.cx + h, o.cy + h);
    cairo_line_to(cr, o.cx - h, o.cy + h);
    cairo_close_path(cr);
  } else if (o.shape == "star") {
    star_path(cr, o);
  } else {
    throw InputError("[shapes] unknown shape '" + o.shape + "'; expected circle, square, triangle or star");
  }
}

// ---- text helpers ----

template <class Key>
std::map<Key, int> count_by(const std::vector<ShapeObject>& objs, Key (*key)(const ShapeObject&)) {
  std::map<Key, int> m;
  for (const auto& o : objs) ++m[key(o)];
  return m;
}

std::string shape_of(const ShapeObject& o) { return o.shape; }
std::string color_of(const ShapeObject& o) { return o.color; }

// Objects whose `field` value occurs exactly once in the scene.
std::vector<size_t> unique_by(const std::vector<ShapeObject>& objs, std::string (*key)(const ShapeObject&)) {
  const auto counts = count_by(objs, key);
  std::vector<size_t> out;
  for (size_t i = 0; i < objs.size(); ++i)
    if (counts.at(key(objs[i])) == 1) out.push_back(i);
  return out;
}

std::string image_name(int64_t index) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "images/%06lld.png", static_cast<long long>(index));
  return buf;
}


}  // namespace

// ---- vocabulary ----

const char* split_name(Split split) {
  switch (split) {
    case Split::kTrain: return "train";
    case Split::kVal: return "val";
    case Split::kTest: return "test";
    case Split::kCompositional: return "compositional";
  }
  return "?";
}

Split parse_split(const std::string& name) {
  for (Split s : {Split::kTrain, Split::kVal, Split::kTest, Split::kCompositional})
    if (name == split_name(s)) return s;
  throw ConfigError("[shapes] unknown split '" + name + "'; expected train, val, test or compositional");
}

const std::vector<std::string>& shape_names() {
  static const std::vector<std::string> v{"circle", "square", "triangle", "star"};
  return v;
}

const std::vector<std::string>& color_names() {
  static const std::vector<std::string> v = [] {
    std::vector<std::string> names;
    for (const auto& c : kColors) names.emplace_back(c.name);
    return names;
  }();
  return v;
}

const std::vector<std::string>& size_names() {
  static const std::vector<std::string> v{"small", "large"};
  return v;
}

std::array<uint8_t, 3> base_color(const std::string& color) {
  for (const auto& c : kColors)
    if (color == c.name) return c.rgb;
  throw InputError("[shapes] unknown color '" + color + "'; expected red, green, blue, yellow, purple or orange");
}

bool is_held_out(const std::string& shape, const std::string& color) {
  return (shape == "triangle" && color == "purple") || (shape == "circle" && color == "orange");
}

// ---- sampling ----

Scene sample_scene(std::mt19937_64& rng, int image_size, Split split) {
  check_image_size(image_size);
  const bool compositional = split == Split::kCompositional;
  Scene scene;
  scene.image_size = image_size;
  const uint8_t level = static_cast<uint8_t>(kBackgroundMin + below(rng, kBackgroundMax - kBackgroundMin + 1));
  scene.background = {level, level, level};
  // Half the scenes plain, half with noise +-1 or +-2 (noisy PNGs are ~20x
  // larger, so noise is not on every image).
  scene.noise = below(rng, 2) == 0 ? 0 : 1 + static_cast<int>(below(rng, 2));
  scene.noise_seed = rng();

  const int n = 1 + static_cast<int>(below(rng, 3));
  const int forced = compositional ? static_cast<int>(below(rng, n)) : -1;
  std::vector<ShapeObject> objs(n);
  for (int i = 0; i < n; ++i) sample_kind(rng, compositional, i == forced, objs[i]);

  // Sizes and colours, then positions by rejection; after many failed
  // placements redraw the sizes (three large boxes can be hard to fit).
  for (;;) {
    for (auto& o : objs) sample_look(rng, image_size, o);
    for (int attempt = 0; attempt < 200; ++attempt) {
      for (auto& o : objs) {
        const double lo = o.bbox / 2 + 1, hi = image_size - o.bbox / 2 - 1;
        o.cx = uniform(rng, lo, hi);
        o.cy = uniform(rng, lo, hi);
      }
      if (placement_ok(objs, image_size)) {
        scene.objects = std::move(objs);
        return scene;
      }
    }
  }
}

std::mt19937_64 scene_rng(uint64_t seed, Split split, int64_t index) {
  uint64_t s = splitmix64(seed);
  s = splitmix64(s ^ (0xA5A5A5A5ULL + static_cast<uint64_t>(split) * 0x632BE59BD9B4E019ULL));
  s = splitmix64(s ^ static_cast<uint64_t>(index));
  std::seed_seq seq{static_cast<uint32_t>(s), static_cast<uint32_t>(s >> 32)};
  return std::mt19937_64(seq);
}

// ---- rendering ----

Image render_scene(const Scene& scene) {
  check_image_size(scene.image_size);
  const int S = scene.image_size;
  const int stride = cairo_format_stride_for_width(CAIRO_FORMAT_ARGB32, S);
  std::vector<unsigned char> buf(static_cast<size_t>(stride) * S);

  // Background: gray level (+ noise), opaque. ARGB32 is a native-endian
  // uint32 0xAARRGGBB per pixel.
  std::mt19937_64 noise_rng(scene.noise_seed);
  for (int y = 0; y < S; ++y) {
    auto* row = reinterpret_cast<uint32_t*>(buf.data() + static_cast<size_t>(y) * stride);
    for (int x = 0; x < S; ++x) {
      uint32_t px = 0xFF000000u;
      int delta = 0;
      if (scene.noise > 0) delta = static_cast<int>(below(noise_rng, 2 * scene.noise + 1)) - scene.noise;
      for (int c = 0; c < 3; ++c) {
        int v = scene.background[c] + delta;
        if (scene.noise > 0) v = std::clamp(v, kBackgroundMin, kBackgroundMax);
        px |= static_cast<uint32_t>(std::clamp(v, 0, 255)) << (16 - 8 * c);
      }
      row[x] = px;
    }
  }

  std::unique_ptr<cairo_surface_t, decltype(&cairo_surface_destroy)> surface(
      cairo_image_surface_create_for_data(buf.data(), CAIRO_FORMAT_ARGB32, S, S, stride), &cairo_surface_destroy);
  if (cairo_surface_status(surface.get()) != CAIRO_STATUS_SUCCESS)
    throw InputError(std::string("[shapes] cairo cannot create a surface: ") +
                     cairo_status_to_string(cairo_surface_status(surface.get())));
  std::unique_ptr<cairo_t, decltype(&cairo_destroy)> cr(cairo_create(surface.get()), &cairo_destroy);
  cairo_set_antialias(cr.get(), CAIRO_ANTIALIAS_GOOD);
  for (const auto& o : scene.objects) {
    cairo_new_path(cr.get());
    shape_path(cr.get(), o);
    cairo_set_source_rgb(cr.get(), o.rgb[0] / 255.0, o.rgb[1] / 255.0, o.rgb[2] / 255.0);
    cairo_fill(cr.get());
  }
  if (cairo_status(cr.get()) != CAIRO_STATUS_SUCCESS)
    throw InputError(std::string("[shapes] cairo drawing failed: ") + cairo_status_to_string(cairo_status(cr.get())));
  cairo_surface_flush(surface.get());

  Image img;
  img.width = img.height = S;
  img.rgb.resize(img.num_pixels() * 3);
  for (int y = 0; y < S; ++y) {
    const auto* row = reinterpret_cast<const uint32_t*>(buf.data() + static_cast<size_t>(y) * stride);
    for (int x = 0; x < S; ++x) {
      const uint32_t px = row[x];  // opaque, so no un-premultiplying
      uint8_t* out = img.pixel(x, y);
      out[0] = static_cast<uint8_t>(px >> 16);
      out[1] = static_cast<uint8_t>(px >> 8);
      out[2] = static_cast<uint8_t>(px);
    }
  }
  return img;
}

// ---- text ----

std::string describe(const ShapeObject& o) { return "a " + o.size + " " + o.color + " " + o.shape; }

std::string relation(const ShapeObject& a, const ShapeObject& b) {
  const double dx = a.cx - b.cx, dy = a.cy - b.cy;
  if (std::abs(dx) >= std::abs(dy)) return dx < 0 ? kRelations[0] : kRelations[1];
  return dy < 0 ? kRelations[2] : kRelations[3];
}

std::vector<std::string> scene_captions(const Scene& scene) {
  const auto& objs = scene.objects;
  if (objs.empty()) throw InputError("[shapes] a scene needs at least one object to be captioned");
  if (objs.size() == 1) return {describe(objs[0])};
  if (objs.size() == 2) {
    // Canonical: the left (or upper) object first.
    const std::string r = relation(objs[0], objs[1]);
    const bool first_leads = r == kRelations[0] || r == kRelations[2];
    const ShapeObject& a = first_leads ? objs[0] : objs[1];
    const ShapeObject& b = first_leads ? objs[1] : objs[0];
    return {describe(a) + " " + relation(a, b) + " " + describe(b),
            describe(b) + " " + relation(b, a) + " " + describe(a)};
  }
  if (objs.size() == 3) {
    std::vector<const ShapeObject*> order{&objs[0], &objs[1], &objs[2]};
    std::stable_sort(order.begin(), order.end(),
                     [](const ShapeObject* p, const ShapeObject* q) { return p->cx < q->cx; });
    return {describe(*order[0]) + ", " + describe(*order[1]) + " and " + describe(*order[2])};
  }
  throw InputError("[shapes] a scene has 1 to 3 objects, got " + std::to_string(objs.size()));
}

std::vector<QuestionAnswer> scene_questions(const Scene& scene, std::mt19937_64& rng, Split split) {
  const auto& objs = scene.objects;
  if (objs.empty() || objs.size() > 3)
    throw InputError("[shapes] a scene has 1 to 3 objects, got " + std::to_string(objs.size()));
  std::vector<QuestionAnswer> qa;

  const auto unique_shape = unique_by(objs, shape_of);
  const auto unique_color = unique_by(objs, color_of);

  if (!unique_shape.empty()) {
    const auto& o = objs[unique_shape[below(rng, unique_shape.size())]];
    qa.push_back({"what color is the " + o.shape + "?", o.color, "color_of_shape"});
  }
  if (!unique_color.empty()) {
    const auto& o = objs[unique_color[below(rng, unique_color.size())]];
    qa.push_back({"what shape is the " + o.color + " object?", o.shape, "shape_of_color"});
  }
  qa.push_back({"how many shapes are there?", kCountWords[objs.size()], "count"});
  {
    const bool allow_held_out = split == Split::kCompositional;
    auto present = [&](const std::string& shape, const std::string& color) {
      for (const auto& o : objs)
        if (o.shape == shape && o.color == color) return true;
      return false;
    };
    std::vector<std::pair<std::string, std::string>> yes, no;  // (color, shape)
    for (const auto& color : color_names())
      for (const auto& shape : shape_names()) {
        if (!allow_held_out && is_held_out(shape, color)) continue;
        (present(shape, color) ? yes : no).emplace_back(color, shape);
      }
    const bool ask_yes = below(rng, 2) == 0;
    const auto& pool = (ask_yes && !yes.empty()) || no.empty() ? yes : no;
    const auto& [color, shape] = pool[below(rng, pool.size())];
    const char* article = color == "orange" ? "an " : "a ";  // the only colour starting with a vowel
    qa.push_back({"is there " + std::string(article) + color + " " + shape + "?", present(shape, color) ? "yes" : "no",
                  "exists"});
  }
  if (!unique_shape.empty()) {
    const auto& o = objs[unique_shape[below(rng, unique_shape.size())]];
    qa.push_back({"is the " + o.shape + " large or small?", o.size, "size_of_shape"});
  }
  {
    struct Candidate {
      size_t anchor, target;
      std::string rel;
    };
    std::vector<Candidate> cands;
    for (size_t a : unique_shape) {
      for (const char* rel : kRelations) {
        size_t hits = 0, target = 0;
        for (size_t x = 0; x < objs.size(); ++x)
          if (x != a && relation(objs[x], objs[a]) == rel) ++hits, target = x;
        if (hits == 1) cands.push_back({a, target, rel});
      }
    }
    if (!cands.empty()) {
      const auto& c = cands[below(rng, cands.size())];
      qa.push_back({"what color is the shape " + c.rel + " the " + objs[c.anchor].shape + "?", objs[c.target].color,
                    "color_by_relation"});
    }
  }
  return qa;
}

// ---- files ----

std::vector<std::string> corpus_lines(int count, uint64_t seed, const std::string& vqa_template) {
  std::vector<std::string> lines;
  for (auto& [line, kind] : corpus_lines_with_kinds(count, seed, vqa_template)) lines.push_back(std::move(line));
  return lines;
}

std::vector<std::pair<std::string, std::string>> corpus_lines_with_kinds(int count, uint64_t seed,
                                                                         const std::string& vqa_template) {
  if (count < 0) throw ConfigError("[shapes] corpus count must be >= 0, got " + std::to_string(count));
  if (vqa_template.find("{}") == std::string::npos)
    throw ConfigError("[shapes] the VQA template '" + vqa_template + "' has no {} where the question goes");
  std::vector<std::pair<std::string, std::string>> lines;
  for (int i = 0; i < count; ++i) {
    std::mt19937_64 rng = scene_rng(seed, Split::kTrain, i);
    const Scene scene = sample_scene(rng, 224, Split::kTrain);
    const auto captions = scene_captions(scene);
    for (const auto& c : captions) lines.emplace_back(c + "\t\t" + c, "caption");
    for (const auto& q : scene_questions(scene, rng, Split::kTrain))
      lines.emplace_back(captions.front() + "\t" + text::fill_template(vqa_template, q.question) + "\t" + q.answer,
                         q.kind);
  }
  return lines;
}

void generate_split(const std::string& out_dir, Split split, int count, uint64_t seed, int image_size) {
  check_image_size(image_size);
  if (count < 0) throw ConfigError("[shapes] count must be >= 0, got " + std::to_string(count));
  if (out_dir.empty()) throw InputError("[shapes] the output directory is empty; pass --out DIR");
  const fs::path root(out_dir);
  std::error_code ec;
  fs::create_directories(root / "images", ec);
  if (ec || !fs::is_directory(root / "images"))
    throw InputError("[shapes] cannot create output directory '" + (root / "images").string() +
                     "': " + (ec ? ec.message() : "not a directory") +
                     "; choose a writable --out directory");

  using ordered_json = nlohmann::ordered_json;
  ordered_json captions = ordered_json::array(), questions = ordered_json::array(),
               scenes = ordered_json::array();
  int64_t question_id = 0;
  for (int i = 0; i < count; ++i) {
    std::mt19937_64 rng = scene_rng(seed, split, i);
    const Scene scene = sample_scene(rng, image_size, split);
    const auto qas = scene_questions(scene, rng, split);
    const std::string name = image_name(i);
    write_png((root / name).string(), render_scene(scene));

    captions.push_back({{"image", name}, {"caption", scene_captions(scene)}, {"image_id", i}});
    for (const auto& q : qas)
      questions.push_back({{"image", name},
                           {"question", q.question},
                           {"answer", ordered_json::array({q.answer})},
                           {"question_id", question_id++},
                           {"question_type", q.kind},
                           {"image_id", i}});
    ordered_json objects = ordered_json::array();
    for (const auto& o : scene.objects)
      objects.push_back({{"shape", o.shape}, {"color", o.color}, {"size", o.size}, {"cx", o.cx},
                         {"cy", o.cy}, {"bbox", o.bbox}, {"rgb", o.rgb}});
    scenes.push_back({{"image", name},
                      {"image_id", i},
                      {"image_size", scene.image_size},
                      {"background", scene.background},
                      {"noise", scene.noise},
                      {"objects", std::move(objects)}});
  }
  write_atomic((root / "captions.json").string(), captions.dump(1));
  write_atomic((root / "questions.json").string(), questions.dump(1));
  write_atomic((root / "scenes.json").string(), scenes.dump(1));
}

}  // namespace blip2::shapes
