// The shapes world (issue 5): sampling constraints, rendering, caption and
// question grammars, held-out compositions, the split writer.
#include "blip2/shapes/shapes.h"

#include "blip2/data/image_write.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "blip2/data/image.h"
#include "blip2/util/error.h"
#include "test_util.h"

namespace blip2::shapes {
namespace {

using test::TempDir;

ShapeObject obj(const std::string& shape, const std::string& color, const std::string& size, double cx,
                double cy, double bbox = 40) {
  ShapeObject o;
  o.shape = shape, o.color = color, o.size = size;
  o.cx = cx, o.cy = cy, o.bbox = bbox;
  o.rgb = base_color(color);
  return o;
}

Scene scene_of(std::vector<ShapeObject> objects) {
  Scene s;
  s.image_size = 224;
  s.objects = std::move(objects);
  return s;
}

std::string read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// Every question of a scene as a map kind -> (question, answer).
std::map<std::string, QuestionAnswer> questions_by_kind(const Scene& s, uint64_t seed = 1,
                                                        Split split = Split::kTrain) {
  std::mt19937_64 rng(seed);
  std::map<std::string, QuestionAnswer> m;
  for (const auto& q : scene_questions(s, rng, split)) m[q.kind] = q;
  return m;
}

TEST(ShapesTest, SplitNamesRoundTrip) {
  for (Split s : {Split::kTrain, Split::kVal, Split::kTest, Split::kCompositional})
    EXPECT_EQ(parse_split(split_name(s)), s);
  EXPECT_THROW_WITH(parse_split("dev"), ConfigError, "train, val, test or compositional");
}

TEST(ShapesTest, SamplingIsDeterministicPerSeed) {
  for (Split split : {Split::kTrain, Split::kCompositional}) {
    for (int i = 0; i < 20; ++i) {
      auto r1 = scene_rng(7, split, i), r2 = scene_rng(7, split, i);
      const Scene a = sample_scene(r1, 224, split), b = sample_scene(r2, 224, split);
      ASSERT_EQ(a.objects.size(), b.objects.size());
      EXPECT_EQ(a.background, b.background);
      EXPECT_EQ(scene_captions(a), scene_captions(b));
      for (size_t k = 0; k < a.objects.size(); ++k) {
        EXPECT_EQ(a.objects[k].cx, b.objects[k].cx);
        EXPECT_EQ(a.objects[k].rgb, b.objects[k].rgb);
      }
      EXPECT_EQ(render_scene(a).rgb, render_scene(b).rgb);
    }
  }
}

TEST(ShapesTest, SplitsAndSeedsGiveDifferentScenes) {
  auto caps = [](uint64_t seed, Split split) {
    std::vector<std::string> out;
    for (int i = 0; i < 30; ++i) {
      auto rng = scene_rng(seed, split, i);
      const Scene s = sample_scene(rng, 224, split);
      std::ostringstream key;
      key << scene_captions(s)[0] << "@" << s.objects[0].cx;
      out.push_back(key.str());
    }
    return out;
  };
  const auto train = caps(3, Split::kTrain);
  EXPECT_NE(train, caps(3, Split::kVal));
  EXPECT_NE(train, caps(3, Split::kTest));
  EXPECT_NE(caps(3, Split::kVal), caps(3, Split::kTest));
  EXPECT_NE(train, caps(4, Split::kTrain));
}

TEST(ShapesTest, ObjectsDoNotOverlapAndSizesAreInBounds) {
  std::map<size_t, int> per_count;
  std::set<std::string> shapes_seen, colors_seen;
  for (Split split : {Split::kTrain, Split::kCompositional}) {
    for (int i = 0; i < 500; ++i) {
      auto rng = scene_rng(11, split, i);
      const Scene s = sample_scene(rng, 224, split);
      ASSERT_GE(s.objects.size(), 1u);
      ASSERT_LE(s.objects.size(), 3u);
      ++per_count[s.objects.size()];
      EXPECT_EQ(s.background[0], s.background[1]);
      EXPECT_EQ(s.background[1], s.background[2]);
      EXPECT_GE(s.background[0], kBackgroundMin);
      EXPECT_LE(s.background[0], kBackgroundMax);
      for (size_t a = 0; a < s.objects.size(); ++a) {
        const auto& o = s.objects[a];
        shapes_seen.insert(o.shape);
        colors_seen.insert(o.color);
        const double frac = o.bbox / 224;
        if (o.size == "small") {
          EXPECT_GE(frac, kSmallMin);
          EXPECT_LE(frac, kSmallMax);
        } else {
          ASSERT_EQ(o.size, "large");
          EXPECT_GE(frac, kLargeMin);
          EXPECT_LE(frac, kLargeMax);
        }
        EXPECT_GE(o.cx - o.bbox / 2, 0);
        EXPECT_GE(o.cy - o.bbox / 2, 0);
        EXPECT_LE(o.cx + o.bbox / 2, 224);
        EXPECT_LE(o.cy + o.bbox / 2, 224);
        for (size_t b = a + 1; b < s.objects.size(); ++b) {
          const auto& p = s.objects[b];
          const double half = (o.bbox + p.bbox) / 2;
          const bool apart = std::abs(o.cx - p.cx) >= half || std::abs(o.cy - p.cy) >= half;
          EXPECT_TRUE(apart) << "scene " << i << " objects " << a << "," << b << " overlap";
        }
      }
    }
  }
  EXPECT_EQ(per_count.size(), 3u);
  for (const auto& [n, c] : per_count) EXPECT_GT(c, 200) << n << " objects";
  EXPECT_EQ(shapes_seen.size(), 4u);
  EXPECT_EQ(colors_seen.size(), 6u);
}

TEST(ShapesTest, RenderedCentresCarryTheJitteredColour) {
  int checked = 0;
  for (int i = 0; i < 150; ++i) {
    auto rng = scene_rng(5, Split::kTest, i);
    const Scene s = sample_scene(rng, 224, Split::kTest);
    const Image img = render_scene(s);
    ASSERT_EQ(img.width, 224);
    ASSERT_EQ(img.height, 224);
    ASSERT_EQ(img.rgb.size(), 224u * 224u * 3u);
    for (const auto& o : s.objects) {
      const uint8_t* px = img.pixel(static_cast<int>(o.cx), static_cast<int>(o.cy));
      const auto base = base_color(o.color);
      for (int c = 0; c < 3; ++c) {
        EXPECT_EQ(px[c], o.rgb[c]) << describe(o) << " channel " << c;
        EXPECT_LE(std::abs(int(px[c]) - int(base[c])), kColorJitter) << describe(o) << " channel " << c;
      }
      ++checked;
    }
    // The corner (never covered: boxes keep 1 px from the border) is background gray.
    const uint8_t* corner = img.pixel(0, 0);
    EXPECT_EQ(corner[0], corner[1]);
    EXPECT_EQ(corner[1], corner[2]);
    EXPECT_GE(corner[0], kBackgroundMin);
    EXPECT_LE(corner[0], kBackgroundMax);
    EXPECT_LE(std::abs(int(corner[0]) - int(s.background[0])), s.noise);
  }
  EXPECT_GT(checked, 250);
}

TEST(ShapesTest, RenderingIsAntiAliasedAndShapesDiffer) {
  // One large object of each shape at the same place: different pixel
  // coverage, and edge pixels that blend object and background.
  std::map<std::string, int> covered;
  for (const auto& shape : shape_names()) {
    Scene s = scene_of({obj(shape, "blue", "large", 112, 112, 80)});
    s.background = {230, 230, 230};
    const Image img = render_scene(s);
    int inside = 0, blended = 0;
    for (int y = 0; y < 224; ++y)
      for (int x = 0; x < 224; ++x) {
        const uint8_t* p = img.pixel(x, y);
        if (p[0] == 40 && p[1] == 80 && p[2] == 220) ++inside;
        else if (p[0] != 230 && shape != "square") ++blended;
      }
    covered[shape] = inside;
    if (shape != "square") EXPECT_GT(blended, 20) << shape;
    // Nothing is drawn outside the bounding box.
    for (int y = 0; y < 224; ++y)
      for (int x = 0; x < 224; ++x)
        if (x < 71 || x > 152 || y < 71 || y > 152) ASSERT_EQ(img.pixel(x, y)[0], 230) << shape << " " << x << "," << y;
  }
  // Area ordering: square (6400) > circle (~5027) > triangle (3200) and star.
  EXPECT_NEAR(covered["square"], 6400, 100);
  EXPECT_NEAR(covered["circle"], 5027, 200);
  EXPECT_NEAR(covered["triangle"], 3200, 200);
  EXPECT_GT(covered["star"], 1500);
  EXPECT_LT(covered["star"], 3200);
}

TEST(ShapesTest, BackgroundNoiseIsMildAndOnlyOnTheBackground) {
  int noisy = 0;
  for (int i = 0; i < 100; ++i) {
    auto rng = scene_rng(8, Split::kTrain, i);
    const Scene s = sample_scene(rng, 224, Split::kTrain);
    EXPECT_GE(s.noise, 0);
    EXPECT_LE(s.noise, 2);
    noisy += s.noise > 0;
  }
  EXPECT_GT(noisy, 30);
  EXPECT_LT(noisy, 70);

  Scene s = scene_of({obj("square", "red", "large", 112, 112, 80)});
  s.background = {201, 201, 201};
  s.noise = 2;
  s.noise_seed = 99;
  const Image img = render_scene(s);
  std::set<int> levels;
  for (int y = 0; y < 60; ++y)
    for (int x = 0; x < 224; ++x) {
      const uint8_t* p = img.pixel(x, y);
      ASSERT_EQ(p[0], p[1]);
      ASSERT_EQ(p[1], p[2]);
      levels.insert(p[0]);
    }
  EXPECT_EQ(levels, (std::set<int>{200, 201, 202, 203}));  // 201 +- 2, clamped at 200
  for (int y = 73; y < 151; ++y)
    for (int x = 73; x < 151; ++x) ASSERT_EQ(img.pixel(x, y)[0], 220);
}

TEST(ShapesTest, WritePngRoundTrips) {
  TempDir dir;
  auto rng = scene_rng(2, Split::kTrain, 0);
  const Image img = render_scene(sample_scene(rng, 96, Split::kTrain));
  write_png(dir.file("a.png"), img);
  const Image back = load_image(dir.file("a.png"));
  EXPECT_EQ(back.width, 96);
  EXPECT_EQ(back.height, 96);
  EXPECT_EQ(back.rgb, img.rgb);
  EXPECT_THROW_WITH(write_png(dir.file("missing/a.png"), img), InputError, dir.file("missing/a.png"));
  EXPECT_THROW_WITH(write_png(dir.file("b.png"), Image{}), InputError, "empty");
}

TEST(ShapesTest, CaptionForOneObject) {
  EXPECT_EQ(scene_captions(scene_of({obj("circle", "red", "large", 100, 100)})),
            std::vector<std::string>{"a large red circle"});
  EXPECT_EQ(describe(obj("star", "yellow", "small", 0, 0)), "a small yellow star");
}

TEST(ShapesTest, CaptionRelationsFollowTheLargerOffset) {
  const auto a = obj("circle", "red", "large", 50, 100);
  const auto b = obj("square", "blue", "small", 150, 120);  // dx = 100 > dy = 20: horizontal
  EXPECT_EQ(relation(a, b), "to the left of");
  EXPECT_EQ(relation(b, a), "to the right of");
  const std::vector<std::string> want_h{"a large red circle to the left of a small blue square",
                                        "a small blue square to the right of a large red circle"};
  EXPECT_EQ(scene_captions(scene_of({a, b})), want_h);
  EXPECT_EQ(scene_captions(scene_of({b, a})), want_h);  // object order does not matter

  const auto c = obj("triangle", "green", "small", 120, 40);
  const auto d = obj("star", "orange", "large", 90, 170);  // dy = 130 > dx = 30: vertical
  EXPECT_EQ(relation(c, d), "above");
  EXPECT_EQ(relation(d, c), "below");
  const std::vector<std::string> want_v{"a small green triangle above a large orange star",
                                        "a large orange star below a small green triangle"};
  EXPECT_EQ(scene_captions(scene_of({d, c})), want_v);
  EXPECT_EQ(scene_captions(scene_of({c, d})), want_v);
}

TEST(ShapesTest, ThreeObjectCaptionListsLeftToRight) {
  const auto l = obj("circle", "red", "small", 30, 150);
  const auto m = obj("star", "blue", "large", 110, 40);
  const auto r = obj("triangle", "green", "small", 190, 190);
  const std::string want = "a small red circle, a large blue star and a small green triangle";
  EXPECT_EQ(scene_captions(scene_of({l, m, r})), std::vector<std::string>{want});
  EXPECT_EQ(scene_captions(scene_of({r, l, m})), std::vector<std::string>{want});
  EXPECT_EQ(scene_captions(scene_of({m, r, l})), std::vector<std::string>{want});
}

TEST(ShapesTest, SampledCaptionsMatchTheGrammar) {
  const std::string obj_re = "a (small|large) (red|green|blue|yellow|purple|orange) (circle|square|triangle|star)";
  const std::regex one("^" + obj_re + "$");
  const std::regex two("^" + obj_re + " (to the left of|to the right of|above|below) " + obj_re + "$");
  const std::regex three("^" + obj_re + ", " + obj_re + " and " + obj_re + "$");
  std::set<std::string> relations;
  for (int i = 0; i < 300; ++i) {
    auto rng = scene_rng(9, Split::kVal, i);
    const Scene s = sample_scene(rng, 224, Split::kVal);
    const auto caps = scene_captions(s);
    const std::regex& re = s.objects.size() == 1 ? one : s.objects.size() == 2 ? two : three;
    ASSERT_EQ(caps.size(), s.objects.size() == 2 ? 2u : 1u);
    for (const auto& c : caps) {
      EXPECT_TRUE(std::regex_match(c, re)) << c;
      std::smatch m;
      if (s.objects.size() == 2 && std::regex_match(c, m, two)) relations.insert(m[4]);
    }
  }
  EXPECT_EQ(relations.size(), 4u);
}

TEST(ShapesTest, HeldOutCompositionsNeverInTrainAlwaysInCompositional) {
  auto text_has_held_out = [](const std::string& t) {
    return t.find("purple triangle") != std::string::npos || t.find("orange circle") != std::string::npos;
  };
  for (Split split : {Split::kTrain, Split::kVal, Split::kTest}) {
    const int n = split == Split::kTrain ? 2000 : 300;
    for (int i = 0; i < n; ++i) {
      auto rng = scene_rng(21, split, i);
      const Scene s = sample_scene(rng, 224, split);
      for (const auto& o : s.objects) ASSERT_FALSE(is_held_out(o.shape, o.color)) << split_name(split) << " " << i;
      for (const auto& c : scene_captions(s)) ASSERT_FALSE(text_has_held_out(c)) << c;
      for (const auto& q : scene_questions(s, rng, split)) {
        ASSERT_FALSE(text_has_held_out(q.question)) << q.question;
        // "what shape is the purple object?" -> "triangle" would reveal one.
        ASSERT_FALSE(q.kind == "shape_of_color" && q.question.find("purple") != std::string::npos &&
                     q.answer == "triangle");
        ASSERT_FALSE(q.kind == "color_of_shape" && q.question.find("circle") != std::string::npos &&
                     q.answer == "orange");
      }
    }
  }
  int with_held_out_text = 0;
  for (int i = 0; i < 300; ++i) {
    auto rng = scene_rng(21, Split::kCompositional, i);
    const Scene s = sample_scene(rng, 224, Split::kCompositional);
    const bool has = std::any_of(s.objects.begin(), s.objects.end(),
                                 [](const ShapeObject& o) { return is_held_out(o.shape, o.color); });
    EXPECT_TRUE(has) << "compositional scene " << i;
    with_held_out_text += text_has_held_out(scene_captions(s)[0]);
  }
  EXPECT_EQ(with_held_out_text, 300);
}

TEST(ShapesTest, CorpusLinesPutTheDescriptionInTheContextSlot) {
  const auto lines = corpus_lines(200, 5, "Question: {} Short answer:");
  int copies = 0, questions = 0;
  for (const auto& l : lines) {
    const size_t a = l.find('\t'), b = l.find('\t', a + 1);
    ASSERT_NE(b, std::string::npos) << l;
    ASSERT_EQ(l.find('\t', b + 1), std::string::npos) << l;
    const std::string context = l.substr(0, a), prompt = l.substr(a + 1, b - a - 1), target = l.substr(b + 1);
    ASSERT_EQ(l.find("purple triangle"), std::string::npos) << l;
    ASSERT_EQ(l.find("orange circle"), std::string::npos) << l;
    if (prompt.empty()) {
      EXPECT_EQ(context, target);
      ++copies;
    } else {
      EXPECT_EQ(prompt.rfind("Question: ", 0), 0u) << prompt;
      EXPECT_EQ(prompt.substr(prompt.size() - 14), " Short answer:") << prompt;
      EXPECT_EQ(target.find(' '), std::string::npos) << "one-word answer: " << target;
      ++questions;
    }
  }
  EXPECT_GE(copies, 200);  // one or two captions per scene
  EXPECT_GE(questions, 200 * 3);
  EXPECT_EQ(corpus_lines(200, 5, "Question: {} Short answer:"), lines);
  EXPECT_NE(corpus_lines(200, 6, "Question: {} Short answer:"), lines);
  EXPECT_THROW(corpus_lines(1, 5, "no slot"), ConfigError);
}

TEST(ShapesTest, QuestionAnswersOnConstructedScenes) {
  // red circle left, blue square right: everything is unique.
  {
    const auto q = questions_by_kind(scene_of({obj("circle", "red", "large", 50, 100), obj("square", "blue", "small", 170, 110)}));
    ASSERT_EQ(q.size(), 6u);
    const auto& c = q.at("color_of_shape");
    EXPECT_EQ(c.answer, c.question == "what color is the circle?" ? "red" : "blue");
    EXPECT_TRUE(c.question == "what color is the circle?" || c.question == "what color is the square?");
    const auto& s = q.at("shape_of_color");
    EXPECT_EQ(s.answer, s.question == "what shape is the red object?" ? "circle" : "square");
    EXPECT_EQ(q.at("count").question, "how many shapes are there?");
    EXPECT_EQ(q.at("count").answer, "two");
    const auto& z = q.at("size_of_shape");
    EXPECT_EQ(z.answer, z.question == "is the circle large or small?" ? "large" : "small");
    const auto& r = q.at("color_by_relation");
    if (r.question == "what color is the shape to the left of the square?") EXPECT_EQ(r.answer, "red");
    else {
      EXPECT_EQ(r.question, "what color is the shape to the right of the circle?");
      EXPECT_EQ(r.answer, "blue");
    }
  }
  // Two circles: no colour-of-circle question; the square is the only anchor.
  {
    const Scene s = scene_of({obj("circle", "red", "small", 30, 40), obj("circle", "green", "small", 190, 40),
                              obj("square", "blue", "large", 100, 170)});
    for (uint64_t seed = 0; seed < 20; ++seed) {
      const auto q = questions_by_kind(s, seed);
      EXPECT_EQ(q.at("color_of_shape").question, "what color is the square?");
      EXPECT_EQ(q.at("color_of_shape").answer, "blue");
      EXPECT_EQ(q.at("size_of_shape").question, "is the square large or small?");
      EXPECT_EQ(q.at("size_of_shape").answer, "large");
      EXPECT_EQ(q.at("count").answer, "three");
      // Both circles are above the square: no unique "above" target, so no relation question.
      EXPECT_EQ(q.count("color_by_relation"), 0u);
    }
  }
  // Two red objects: "what shape is the red object?" is never asked.
  {
    const Scene s = scene_of({obj("circle", "red", "small", 30, 40), obj("star", "red", "large", 160, 160)});
    for (uint64_t seed = 0; seed < 20; ++seed) EXPECT_EQ(questions_by_kind(s, seed).count("shape_of_color"), 0u);
  }
  // The relation question picks the unique object in that relation.
  {
    const Scene s = scene_of({obj("circle", "red", "small", 30, 100), obj("square", "blue", "small", 112, 100),
                              obj("star", "yellow", "small", 200, 130)});
    std::set<std::string> asked;
    for (uint64_t seed = 0; seed < 60; ++seed) {
      const auto q = questions_by_kind(s, seed);
      const auto& r = q.at("color_by_relation");
      asked.insert(r.question);
      if (r.question == "what color is the shape to the left of the square?") EXPECT_EQ(r.answer, "red");
      if (r.question == "what color is the shape to the right of the square?") EXPECT_EQ(r.answer, "yellow");
      if (r.question == "what color is the shape to the right of the circle?") ADD_FAILURE() << "two objects right of the circle";
    }
    EXPECT_TRUE(asked.count("what color is the shape to the left of the square?"));
  }
  // exists: the answer agrees with the scene.
  {
    const Scene s = scene_of({obj("star", "blue", "small", 30, 100)});
    int yes = 0;
    for (uint64_t seed = 0; seed < 200; ++seed) {
      const auto q = questions_by_kind(s, seed);
      const auto& e = q.at("exists");
      if (e.question == "is there a blue star?") {
        EXPECT_EQ(e.answer, "yes");
        ++yes;
      } else {
        EXPECT_EQ(e.answer, "no") << e.question;
      }
    }
    EXPECT_GT(yes, 60);
    EXPECT_LT(yes, 140);
  }
}

TEST(ShapesTest, SampledQuestionsAreConsistentAndYesNoBalanced) {
  int yes = 0, no = 0;
  std::map<std::string, int> kinds;
  for (int i = 0; i < 1000; ++i) {
    auto rng = scene_rng(33, Split::kTrain, i);
    const Scene s = sample_scene(rng, 224, Split::kTrain);
    for (const auto& q : scene_questions(s, rng, Split::kTrain)) {
      ++kinds[q.kind];
      EXPECT_EQ(q.answer.find(' '), std::string::npos) << q.answer;
      EXPECT_EQ(q.question.back(), '?');
      if (q.kind == "exists") (q.answer == "yes" ? yes : no)++;
      if (q.kind == "count") EXPECT_EQ(q.answer, (std::vector<std::string>{"", "one", "two", "three"}[s.objects.size()]));
      if (q.kind == "color_of_shape") {
        int matches = 0;
        for (const auto& o : s.objects)
          if (q.question == "what color is the " + o.shape + "?") {
            ++matches;
            EXPECT_EQ(q.answer, o.color);
          }
        EXPECT_EQ(matches, 1);
      }
    }
  }
  EXPECT_EQ(kinds.size(), 6u);
  EXPECT_EQ(kinds["count"], 1000);
  EXPECT_EQ(yes + no, 1000);
  EXPECT_NEAR(yes, 500, 60);
}

TEST(ShapesTest, GenerateSplitWritesImagesAndAnnotations) {
  TempDir dir;
  const std::string out = dir.file("train");
  generate_split(out, Split::kTrain, 12, 42, 64);
  namespace fs = std::filesystem;
  for (const char* f : {"captions.json", "questions.json", "scenes.json"}) ASSERT_TRUE(fs::exists(out + "/" + f)) << f;

  const auto caps = nlohmann::json::parse(read_file(out + "/captions.json"));
  ASSERT_TRUE(caps.is_array());
  ASSERT_EQ(caps.size(), 12u);
  for (size_t i = 0; i < caps.size(); ++i) {
    const auto& r = caps[i];
    ASSERT_TRUE(r["image"].is_string());
    ASSERT_TRUE(r["caption"].is_array());
    ASSERT_GE(r["caption"].size(), 1u);
    ASSERT_TRUE(r["caption"][0].is_string());
    EXPECT_EQ(r["image_id"].get<int>(), static_cast<int>(i));
    const Image img = load_image(out + "/" + r["image"].get<std::string>());
    EXPECT_EQ(img.width, 64);
    EXPECT_EQ(img.height, 64);
  }
  const auto qs = nlohmann::json::parse(read_file(out + "/questions.json"));
  ASSERT_TRUE(qs.is_array());
  ASSERT_GE(qs.size(), 12u * 2);
  std::set<int64_t> ids;
  for (const auto& q : qs) {
    ASSERT_TRUE(q["image"].is_string());
    ASSERT_TRUE(q["question"].is_string());
    ASSERT_TRUE(q["answer"].is_array());
    ASSERT_EQ(q["answer"].size(), 1u);
    ASSERT_TRUE(q["question_id"].is_number_integer());
    ids.insert(q["question_id"].get<int64_t>());
  }
  EXPECT_EQ(ids.size(), qs.size());
  const auto scenes = nlohmann::json::parse(read_file(out + "/scenes.json"));
  ASSERT_EQ(scenes.size(), 12u);
  EXPECT_TRUE(scenes[0]["objects"][0].contains("shape"));

  // Rendered pixels agree with the scene record.
  const auto& o = scenes[3]["objects"][0];
  const Image img = load_image(out + "/" + scenes[3]["image"].get<std::string>());
  const uint8_t* px = img.pixel(static_cast<int>(o["cx"].get<double>()), static_cast<int>(o["cy"].get<double>()));
  EXPECT_EQ(px[0], o["rgb"][0].get<int>());
  EXPECT_EQ(px[1], o["rgb"][1].get<int>());
  EXPECT_EQ(px[2], o["rgb"][2].get<int>());

  // Same seed -> identical files; another split -> different scenes.
  const std::string again = dir.file("again");
  generate_split(again, Split::kTrain, 12, 42, 64);
  EXPECT_EQ(read_file(out + "/captions.json"), read_file(again + "/captions.json"));
  EXPECT_EQ(read_file(out + "/questions.json"), read_file(again + "/questions.json"));
  EXPECT_EQ(read_file(out + "/images/000007.png"), read_file(again + "/images/000007.png"));
  const std::string val = dir.file("val");
  generate_split(val, Split::kVal, 12, 42, 64);
  EXPECT_NE(read_file(out + "/scenes.json"), read_file(val + "/scenes.json"));
}

TEST(ShapesTest, GenerateSplitErrorsNameThePathAndTheFix) {
  TempDir dir;
  std::ofstream(dir.file("file")) << "x";
  EXPECT_THROW_WITH(generate_split(dir.file("file/sub"), Split::kTrain, 1, 0), InputError, dir.file("file/sub"));
  EXPECT_THROW_WITH(generate_split(dir.file("file/sub"), Split::kTrain, 1, 0), InputError, "writable --out");
  EXPECT_THROW_WITH(generate_split(dir.file("x"), Split::kTrain, -1, 0), ConfigError, "count must be >= 0");
  EXPECT_THROW_WITH(generate_split(dir.file("x"), Split::kTrain, 1, 0, 16), ConfigError, "image_size must be >= 32");
  EXPECT_THROW_WITH(base_color("pink"), InputError, "unknown color 'pink'");
}

}  // namespace
}  // namespace blip2::shapes
