// The varied text-only corpus of the shapes world. See corpus.h and
// docs/pretraining.md.
#include "blip2/shapes/corpus.h"

#include <algorithm>
#include <cstdint>
#include <map>
#include <set>

#include "blip2/data/tokenizer.h"
#include "blip2/util/error.h"

namespace blip2::shapes {
namespace {

// Uniform integer in [0, n) by rejection, from the raw engine outputs (as
// shapes.cpp: no implementation-defined distributions).
size_t pick(std::mt19937_64& rng, size_t n) {
  const uint64_t limit = UINT64_MAX - UINT64_MAX % n;
  uint64_t x;
  do x = rng(); while (x >= limit);
  return static_cast<size_t>(x % n);
}

bool coin(std::mt19937_64& rng) { return pick(rng, 2) == 0; }

const char* const kCountWords[] = {"zero", "one", "two", "three"};
const char* const kRelations[] = {"to the left of", "to the right of", "above", "below"};

std::string article(const std::string& word) { return word == "orange" ? "an " : "a "; }

// Indices of the objects whose key occurs exactly once in the scene.
template <class Key>
std::vector<size_t> unique_by(const std::vector<ShapeObject>& objs, Key key) {
  std::map<std::string, int> counts;
  for (const auto& o : objs) ++counts[key(o)];
  std::vector<size_t> out;
  for (size_t i = 0; i < objs.size(); ++i)
    if (counts[key(objs[i])] == 1) out.push_back(i);
  return out;
}

}  // namespace

const char* corpus_style_name(CorpusStyle style) {
  switch (style) {
    case CorpusStyle::kVaried: return "varied";
    case CorpusStyle::kLookups: return "lookups";
    case CorpusStyle::kPlain: break;
  }
  return "plain";
}

CorpusStyle parse_corpus_style(const std::string& name) {
  for (CorpusStyle s : {CorpusStyle::kPlain, CorpusStyle::kVaried, CorpusStyle::kLookups})
    if (name == corpus_style_name(s)) return s;
  throw ConfigError("[shapes] unknown corpus style '" + name + "'; expected plain, varied or lookups");
}

std::vector<std::string> scene_descriptions(const Scene& scene, std::mt19937_64& rng) {
  std::vector<std::string> out = scene_captions(scene);
  std::vector<const ShapeObject*> order;
  for (const auto& o : scene.objects) order.push_back(&o);
  for (size_t i = order.size(); i > 1; --i) std::swap(order[i - 1], order[pick(rng, i)]);  // Fisher-Yates
  std::string list;
  for (size_t i = 0; i < order.size(); ++i)
    list += (i == 0 ? "" : i + 1 == order.size() ? " and " : ", ") + describe(*order[i]);
  out.push_back(list);
  return out;
}

std::vector<std::string> varied_scene_lines(const Scene& scene, std::mt19937_64& rng, Split split,
                                            const std::string& vqa_template) {
  const auto& objs = scene.objects;
  std::vector<std::string> lines;
  auto add = [&](const std::string& question, const std::string& answer) {
    const auto descriptions = scene_descriptions(scene, rng);
    lines.push_back(descriptions[pick(rng, descriptions.size())] + "\t" +
                    text::fill_template(vqa_template, question) + "\t" + answer);
  };
  // The spec's questions under other descriptions and orders.
  for (const auto& q : scene_questions(scene, rng, split)) add(q.question, q.answer);

  const auto unique_shape = unique_by(objs, [](const ShapeObject& o) { return o.shape; });
  const auto unique_color = unique_by(objs, [](const ShapeObject& o) { return o.color; });
  const auto unique_size = unique_by(objs, [](const ShapeObject& o) { return o.size; });
  const auto& colors = color_names();
  const auto& shapes = shape_names();
  auto count_where = [&](auto pred) {
    return static_cast<size_t>(std::count_if(objs.begin(), objs.end(), pred));
  };

  if (!unique_shape.empty()) {
    const auto& o = objs[unique_shape[pick(rng, unique_shape.size())]];
    add("what size is the " + o.shape + "?", o.size);
    add("what is the color of the " + o.shape + "?", o.color);
    std::string c = coin(rng) ? o.color : colors[pick(rng, colors.size())];
    if (split != Split::kCompositional && is_held_out(o.shape, c)) c = o.color;
    add("is the " + o.shape + " " + c + "?", c == o.color ? "yes" : "no");
  }
  if (!unique_color.empty()) {
    const auto& o = objs[unique_color[pick(rng, unique_color.size())]];
    add("which shape is " + o.color + "?", o.shape);
    add("what is the shape of the " + o.color + " object?", o.shape);
  }
  if (!unique_size.empty() && objs.size() > 1) {
    const auto& o = objs[unique_size[pick(rng, unique_size.size())]];
    add("what color is the " + o.size + " object?", o.color);
    add("what shape is the " + o.size + " object?", o.shape);
  }
  {  // counts per colour and per shape: half about a present one
    const std::string c = coin(rng) ? objs[pick(rng, objs.size())].color : colors[pick(rng, colors.size())];
    add("how many " + c + " shapes are there?",
        kCountWords[count_where([&](const ShapeObject& o) { return o.color == c; })]);
    const std::string s = coin(rng) ? objs[pick(rng, objs.size())].shape : shapes[pick(rng, shapes.size())];
    add("how many " + s + "s are there?", kCountWords[count_where([&](const ShapeObject& o) { return o.shape == s; })]);
  }
  {  // existence of a shape or a colour alone, yes / no about equally often
    const std::string s = coin(rng) ? objs[pick(rng, objs.size())].shape : shapes[pick(rng, shapes.size())];
    add("is there a " + s + "?", count_where([&](const ShapeObject& o) { return o.shape == s; }) ? "yes" : "no");
    const std::string c = coin(rng) ? objs[pick(rng, objs.size())].color : colors[pick(rng, colors.size())];
    add("is there " + article(c) + c + " shape?",
        count_where([&](const ShapeObject& o) { return o.color == c; }) ? "yes" : "no");
  }
  {  // shape and size by relation (the spec asks the colour)
    std::vector<std::pair<size_t, size_t>> cands;  // (anchor, target)
    std::vector<const char*> rels;
    for (size_t a : unique_shape)
      for (const char* rel : kRelations) {
        size_t hits = 0, target = 0;
        for (size_t x = 0; x < objs.size(); ++x)
          if (x != a && relation(objs[x], objs[a]) == rel) ++hits, target = x;
        if (hits == 1) cands.emplace_back(a, target), rels.push_back(rel);
      }
    if (!cands.empty()) {
      const size_t k = pick(rng, cands.size());
      const auto& [a, t] = cands[k];
      if (coin(rng))
        add("what shape is " + std::string(rels[k]) + " the " + objs[a].shape + "?", objs[t].shape);
      else
        add("what size is the shape " + std::string(rels[k]) + " the " + objs[a].shape + "?", objs[t].size);
    }
  }
  return lines;
}

std::vector<std::string> lookup_scene_lines(const Scene& scene, Split split, const std::string& vqa_template) {
  const auto& objs = scene.objects;
  const std::string caption = scene_captions(scene).front();
  std::vector<std::string> lines;
  auto add = [&](const std::string& question, const std::string& answer) {
    lines.push_back(caption + "\t" + text::fill_template(vqa_template, question) + "\t" + answer);
  };
  const auto unique_shape = unique_by(objs, [](const ShapeObject& o) { return o.shape; });
  const auto unique_color = unique_by(objs, [](const ShapeObject& o) { return o.color; });
  for (size_t i : unique_shape) {
    add("what color is the " + objs[i].shape + "?", objs[i].color);
    add("is the " + objs[i].shape + " large or small?", objs[i].size);
  }
  for (size_t i : unique_color) add("what shape is the " + objs[i].color + " object?", objs[i].shape);
  for (size_t a : unique_shape)
    for (const char* rel : kRelations) {
      size_t hits = 0, target = 0;
      for (size_t x = 0; x < objs.size(); ++x)
        if (x != a && relation(objs[x], objs[a]) == rel) ++hits, target = x;
      if (hits == 1) add("what color is the shape " + std::string(rel) + " the " + objs[a].shape + "?", objs[target].color);
    }
  auto present = [&](const std::string& color, const std::string& shape) {
    return std::any_of(objs.begin(), objs.end(), [&](const ShapeObject& o) { return o.color == color && o.shape == shape; });
  };
  for (const auto& o : objs) add("is there " + article(o.color) + o.color + " " + o.shape + "?", "yes");
  std::set<std::string> absent;
  for (const auto& a : objs)
    for (const auto& b : objs)
      if (!present(a.color, b.shape) && (split == Split::kCompositional || !is_held_out(b.shape, a.color)) &&
          absent.insert(a.color + " " + b.shape).second)
        add("is there " + article(a.color) + a.color + " " + b.shape + "?", "no");
  return lines;
}

std::pair<std::string, int> parse_kind_repeat(const std::string& text) {
  const size_t eq = text.find('=');
  int n = 0;
  size_t used = 0;
  try {
    if (eq != std::string::npos) n = std::stoi(text.substr(eq + 1), &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (eq == std::string::npos || eq == 0 || used == 0 || eq + 1 + used != text.size())
    throw ConfigError("[shapes] a corpus repeat is KIND=N (e.g. color_of_shape=5), got '" + text + "'");
  return {text.substr(0, eq), n};
}

std::vector<std::string> corpus_lines(int count, uint64_t seed, const std::string& vqa_template, CorpusStyle style,
                                      const std::map<std::string, int>& repeats) {
  static const std::set<std::string> kinds = {"caption", "color_of_shape", "shape_of_color",   "count",
                                              "exists",  "size_of_shape",  "color_by_relation"};
  for (const auto& [kind, n] : repeats) {
    if (!kinds.count(kind)) {
      std::string all;
      for (const auto& k : kinds) all += (all.empty() ? "" : ", ") + k;
      throw ConfigError("[shapes] no kind '" + kind + "' to repeat; the kinds are " + all);
    }
    if (n < 1 || n > 20)
      throw ConfigError("[shapes] the corpus repeat of " + kind + " must be 1..20 (times in all), got " +
                        std::to_string(n));
  }
  const auto plain = corpus_lines_with_kinds(count, seed, vqa_template);
  std::vector<std::string> lines;
  for (const auto& p : plain) lines.push_back(p.first);
  if (style != CorpusStyle::kPlain)
    for (int i = 0; i < count; ++i) {
      std::mt19937_64 rng = scene_rng(seed, Split::kTrain, i);
      const Scene scene = sample_scene(rng, 224, Split::kTrain);  // the plain corpus' scene i
      std::mt19937_64 extra = scene_rng(~seed, Split::kTrain, i);  // its own stream for the extra draws
      auto more = style == CorpusStyle::kLookups ? lookup_scene_lines(scene, Split::kTrain, vqa_template)
                                                 : varied_scene_lines(scene, extra, Split::kTrain, vqa_template);
      for (auto& l : more) lines.push_back(std::move(l));
    }
  int most = 1;
  for (const auto& r : repeats) most = std::max(most, r.second);
  for (int copy = 1; copy < most; ++copy)
    for (const auto& [line, kind] : plain) {
      const auto r = repeats.find(kind);
      if (r != repeats.end() && copy < r->second) lines.push_back(line);
    }
  return lines;
}

}  // namespace blip2::shapes
