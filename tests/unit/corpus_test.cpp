// The varied text-only corpus of the shapes world (issue 11): its lines are
// well-formed corpus lines, the plain corpus stays exactly as it was, the
// context slot holds several description styles and orders, and every extra
// question's answer is right for its scene.
#include "blip2/shapes/corpus.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <regex>
#include <set>
#include <string>
#include <vector>

#include "blip2/util/error.h"
#include "test_util.h"

namespace blip2::shapes {
namespace {

ShapeObject obj(const std::string& shape, const std::string& color, const std::string& size, double cx, double cy) {
  ShapeObject o;
  o.shape = shape, o.color = color, o.size = size;
  o.cx = cx, o.cy = cy, o.bbox = 40;
  o.rgb = base_color(color);
  return o;
}

struct Line {
  std::string context, prompt, target;
};

Line split_line(const std::string& l) {
  const size_t a = l.find('\t'), b = l.find('\t', a + 1);
  EXPECT_NE(b, std::string::npos) << l;
  EXPECT_EQ(l.find('\t', b + 1), std::string::npos) << l;
  return {l.substr(0, a), l.substr(a + 1, b - a - 1), l.substr(b + 1)};
}

const char* const kWords[] = {"zero", "one", "two", "three"};

// The answer to an extra or spec question about `s`, computed here from the
// scene; "" for a question this oracle does not know.
std::string oracle(const Scene& s, const std::string& q) {
  std::smatch m;
  auto count = [&](auto pred) { return static_cast<size_t>(std::count_if(s.objects.begin(), s.objects.end(), pred)); };
  auto the = [&](auto pred) -> const ShapeObject& {
    EXPECT_EQ(count(pred), 1u) << "the question names one object: " << q;
    return *std::find_if(s.objects.begin(), s.objects.end(), pred);
  };
  auto shape_is = [](const std::string& x) { return [x](const ShapeObject& o) { return o.shape == x; }; };
  auto color_is = [](const std::string& x) { return [x](const ShapeObject& o) { return o.color == x; }; };
  auto size_is = [](const std::string& x) { return [x](const ShapeObject& o) { return o.size == x; }; };
  if (q == "how many shapes are there?") return kWords[s.objects.size()];
  if (std::regex_match(q, m, std::regex("how many (\\w+) shapes are there\\?"))) return kWords[count(color_is(m[1]))];
  if (std::regex_match(q, m, std::regex("how many (\\w+)s are there\\?"))) return kWords[count(shape_is(m[1]))];
  if (std::regex_match(q, m, std::regex("is there an? (\\w+) shape\\?"))) return count(color_is(m[1])) ? "yes" : "no";
  if (std::regex_match(q, m, std::regex("is there an? (\\w+)\\?"))) return count(shape_is(m[1])) ? "yes" : "no";
  if (std::regex_match(q, m, std::regex("is there an? (\\w+) (\\w+)\\?")))
    return count([&](const ShapeObject& o) { return o.color == m[1] && o.shape == m[2]; }) ? "yes" : "no";
  if (std::regex_match(q, m, std::regex("what size is the (\\w+)\\?"))) return the(shape_is(m[1])).size;
  if (std::regex_match(q, m, std::regex("is the (\\w+) large or small\\?"))) return the(shape_is(m[1])).size;
  if (std::regex_match(q, m, std::regex("(what is the color of|what color is) the (\\w+)\\?")))
    return the(shape_is(m[2])).color;
  if (std::regex_match(q, m, std::regex("is the (\\w+) (\\w+)\\?"))) return the(shape_is(m[1])).color == m[2] ? "yes" : "no";
  if (std::regex_match(q, m, std::regex("(which shape is|what is the shape of the|what shape is the) (\\w+)( object)?\\?"))) {
    if (m[2] == "large" || m[2] == "small") return the(size_is(m[2])).shape;
    return the(color_is(m[2])).shape;
  }
  if (std::regex_match(q, m, std::regex("what color is the (large|small) object\\?"))) return the(size_is(m[1])).color;
  return "";
}

TEST(CorpusTest, StyleNamesRoundTrip) {
  for (CorpusStyle s : {CorpusStyle::kPlain, CorpusStyle::kVaried, CorpusStyle::kLookups})
    EXPECT_EQ(parse_corpus_style(corpus_style_name(s)), s);
  EXPECT_THROW_WITH(parse_corpus_style("fancy"), ConfigError, "plain, varied or lookups");
}

TEST(CorpusTest, VariedCorpusKeepsThePlainLinesAndAddsWellFormedOnes) {
  const std::string tmpl = "Question: {} Answer:";
  const auto plain = corpus_lines(300, 5, tmpl);
  EXPECT_EQ(corpus_lines(300, 5, tmpl, CorpusStyle::kPlain), plain);
  const auto varied = corpus_lines(300, 5, tmpl, CorpusStyle::kVaried);
  ASSERT_GT(varied.size(), 2 * plain.size());
  EXPECT_TRUE(std::equal(plain.begin(), plain.end(), varied.begin())) << "the plain corpus comes first, unchanged";
  EXPECT_EQ(corpus_lines(300, 5, tmpl, CorpusStyle::kVaried), varied);
  EXPECT_NE(corpus_lines(300, 6, tmpl, CorpusStyle::kVaried), varied);
  EXPECT_THROW(corpus_lines(1, 5, "no slot", CorpusStyle::kVaried), ConfigError);

  std::set<std::string> questions;
  size_t lists = 0;
  for (size_t i = plain.size(); i < varied.size(); ++i) {
    const Line l = split_line(varied[i]);
    ASSERT_EQ(varied[i].find("purple triangle"), std::string::npos) << varied[i];
    ASSERT_EQ(varied[i].find("orange circle"), std::string::npos) << varied[i];
    ASSERT_EQ(l.prompt.rfind("Question: ", 0), 0u) << l.prompt;
    ASSERT_FALSE(l.target.empty());
    EXPECT_EQ(l.target.find(' '), std::string::npos) << "one-word answer: " << l.target;
    questions.insert(l.prompt.substr(10, l.prompt.find(' ', 10) - 10) + " " + l.target);
    // A list description ("X and Y") has no relation words; captions of two objects do.
    if (l.context.find(" and ") != std::string::npos && l.context.find(',') == std::string::npos) ++lists;
  }
  EXPECT_GT(lists, 100u) << "objects listed in drawn orders stand in the context slot";
  for (const char* a : {"how zero", "how one", "how two", "is yes", "is no", "what large", "which circle"})
    EXPECT_TRUE(questions.count(a)) << a;
}

TEST(CorpusTest, ExtraQuestionsAreAnsweredRightAndReadAnyDescription) {
  Scene s;
  s.image_size = 224;
  s.objects = {obj("circle", "red", "large", 50, 100), obj("square", "blue", "small", 170, 110),
               obj("star", "red", "small", 110, 190)};
  const auto captions = scene_captions(s);
  std::set<std::string> contexts;
  size_t checked = 0;
  for (uint64_t seed = 0; seed < 40; ++seed) {
    std::mt19937_64 rng(seed);
    for (const auto& line : varied_scene_lines(s, rng, Split::kTrain, "{}")) {
      const Line l = split_line(line);
      contexts.insert(l.context);
      const std::string want = oracle(s, l.prompt);
      if (want.empty()) continue;  // relation questions: checked by their grammar in shapes_test
      EXPECT_EQ(l.target, want) << l.prompt;
      ++checked;
    }
  }
  EXPECT_GT(checked, 40u * 10);
  // The canonical caption and lists of the three objects in several orders.
  EXPECT_TRUE(contexts.count(captions.front()));
  EXPECT_TRUE(contexts.count("a small red star, a large red circle and a small blue square"));
  EXPECT_GE(contexts.size(), 4u);
  for (const auto& c : contexts) {
    for (const char* d : {"a large red circle", "a small blue square", "a small red star"})
      EXPECT_NE(c.find(d), std::string::npos) << "every description names every object: " << c;
  }
}

// The lookups style: every look-up of a scene, each answered right, under the
// canonical caption; yes/no binding questions both ways; nothing held out.
TEST(CorpusTest, LookupsAskEveryBindingOfTheSceneUnderItsCaption) {
  Scene s;
  s.image_size = 224;
  // A red circle left of a blue square, a red star below both (the colour red
  // is not unique, so no "what shape is the red object?").
  s.objects = {obj("circle", "red", "large", 50, 100), obj("square", "blue", "small", 170, 110),
               obj("star", "red", "small", 110, 190)};
  const auto lines = lookup_scene_lines(s, Split::kTrain, "{}");
  std::set<std::string> asked;
  for (const auto& line : lines) {
    const Line l = split_line(line);
    EXPECT_EQ(l.context, scene_captions(s).front());
    EXPECT_TRUE(asked.insert(l.prompt).second) << "asked twice: " << l.prompt;
    const std::string want = oracle(s, l.prompt);
    if (!want.empty()) EXPECT_EQ(l.target, want) << l.prompt;
  }
  for (const char* q : {"what color is the circle?", "what color is the square?", "what color is the star?",
                        "is the circle large or small?", "is the star large or small?",
                        "what shape is the blue object?", "is there a red circle?", "is there a blue square?",
                        "is there a red star?", "is there a red square?", "is there a blue circle?",
                        "is there a blue star?", "what color is the shape to the right of the circle?"})
    EXPECT_TRUE(asked.count(q)) << q;
  EXPECT_FALSE(asked.count("what shape is the red object?"));
  for (const auto& line : lines)
    if (line.find("to the right of the circle?") != std::string::npos) EXPECT_EQ(split_line(line).target, "blue");

  // Held-out compositions are never asked about outside the compositional split.
  s.objects = {obj("triangle", "red", "large", 50, 100), obj("star", "purple", "small", 170, 110)};
  for (const auto& line : lookup_scene_lines(s, Split::kTrain, "{}"))
    EXPECT_EQ(line.find("purple triangle"), std::string::npos) << line;
  bool asked_held_out = false;
  for (const auto& line : lookup_scene_lines(s, Split::kCompositional, "{}"))
    asked_held_out |= line.find("is there a purple triangle?\tno") != std::string::npos;
  EXPECT_TRUE(asked_held_out);

  const std::string tmpl = "Question: {} Answer:";
  const auto plain = corpus_lines(100, 5, tmpl);
  const auto lookups = corpus_lines(100, 5, tmpl, CorpusStyle::kLookups);
  ASSERT_GT(lookups.size(), 2 * plain.size());
  EXPECT_TRUE(std::equal(plain.begin(), plain.end(), lookups.begin())) << "the plain corpus comes first, unchanged";
}

// --repeat KIND=N: every plain line asking that kind of question N times in
// all, the copies after the rest in corpus order; other lines once.
TEST(CorpusTest, RepeatsWeightAQuestionKindAndNothingElse) {
  const std::string tmpl = "Question: {} Answer:";
  const auto plain = corpus_lines_with_kinds(200, 5, tmpl);
  const auto lines = corpus_lines(200, 5, tmpl, CorpusStyle::kPlain, {{"color_of_shape", 3}, {"exists", 2}});
  std::map<std::string, int> in_plain, in_weighted;
  size_t colour = 0, exists = 0;
  for (const auto& [line, kind] : plain) {
    ++in_plain[line];
    colour += kind == "color_of_shape";
    exists += kind == "exists";
    // The kinds are the questions' own (the spec's forms).
    if (kind == "color_of_shape") EXPECT_NE(line.find("what color is the "), std::string::npos) << line;
    if (kind == "exists") EXPECT_NE(line.find("is there a"), std::string::npos) << line;
  }
  ASSERT_GT(colour, 50u);
  ASSERT_GT(exists, 100u);
  EXPECT_EQ(lines.size(), plain.size() + 2 * colour + exists);
  for (size_t i = 0; i < plain.size(); ++i) ASSERT_EQ(lines[i], plain[i].first) << "the plain corpus first";
  for (const auto& l : lines) ++in_weighted[l];
  for (const auto& [line, kind] : plain) {
    const int times = kind == "color_of_shape" ? 3 : kind == "exists" ? 2 : 1;
    EXPECT_EQ(in_weighted[line], times * in_plain[line]) << kind << ": " << line;
  }
  // Repeats with another style come after its lines.
  const auto lookups = corpus_lines(200, 5, tmpl, CorpusStyle::kLookups);
  const auto both = corpus_lines(200, 5, tmpl, CorpusStyle::kLookups, {{"exists", 2}});
  ASSERT_EQ(both.size(), lookups.size() + exists);
  EXPECT_TRUE(std::equal(lookups.begin(), lookups.end(), both.begin()));

  EXPECT_EQ(parse_kind_repeat("size_of_shape=4"), std::make_pair(std::string("size_of_shape"), 4));
  for (const char* bad : {"size_of_shape", "=4", "size_of_shape=", "size_of_shape=4x", "a=b"})
    EXPECT_THROW_WITH(parse_kind_repeat(bad), ConfigError, "KIND=N");
  EXPECT_THROW_WITH(corpus_lines(5, 5, tmpl, CorpusStyle::kPlain, {{"colour", 2}}), ConfigError,
                    "no kind 'colour' to repeat; the kinds are caption, color_by_relation");
  EXPECT_THROW_WITH(corpus_lines(5, 5, tmpl, CorpusStyle::kPlain, {{"count", 21}}), ConfigError, "1..20");
  EXPECT_THROW_WITH(corpus_lines(5, 5, tmpl, CorpusStyle::kPlain, {{"count", 0}}), ConfigError, "1..20");
}

}  // namespace
}  // namespace blip2::shapes
