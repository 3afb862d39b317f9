// The varied text-only corpus of the shapes world (issue 11): besides the
// plain corpus (shapes.h corpus_lines: the canonical caption in the context
// slot, the spec's questions), texts that make "read the context" one skill
// instead of one per task: several description styles and object orders in
// the context slot, and paraphrased and extra questions (sizes, counts per
// colour or shape, look-ups by size or relation). Only the LM's pretraining
// reads it; the world spec (captions, evaluation questions) is unchanged.
// See docs/pretraining.md.
#pragma once

#include <map>
#include <random>
#include <string>
#include <vector>

#include "blip2/shapes/shapes.h"

namespace blip2::shapes {

enum class CorpusStyle {
  kPlain,   // corpus_lines' texts only (the default)
  kVaried,  // the plain texts plus varied_scene_lines per scene
  kLookups,  // the plain texts plus lookup_scene_lines per scene
};

// "plain" / "varied" / "lookups".
const char* corpus_style_name(CorpusStyle style);
// The inverse; ConfigError listing the names otherwise.
CorpusStyle parse_corpus_style(const std::string& name);

// The descriptions of a scene the varied corpus puts in the context slot:
// its reference captions, then its objects as a list ("X", "X and Y",
// "X, Y and Z") in a random order drawn from rng.
std::vector<std::string> scene_descriptions(const Scene& scene, std::mt19937_64& rng);

// The extra corpus lines of one scene ("context<TAB>prompt<TAB>target", as
// corpus_lines): each spec question again under a description drawn from
// scene_descriptions, and the paraphrased / extra questions that are well
// defined for the scene (vqa_template around each), one-word answers, each
// under a drawn description. Deterministic for the rng state.
std::vector<std::string> varied_scene_lines(const Scene& scene, std::mt19937_64& rng, Split split,
                                            const std::string& vqa_template);

// Every look-up the spec's questions can make in a scene, under its canonical
// caption (the plain corpus draws one of each kind): the colour and the size
// of each object whose shape is unique, the shape of each object whose colour
// is unique, the colour of each object a relation to a unique shape names, and
// "is there a C S?" for each object (yes) and for each colour of one object
// with the shape of another (no, unless present or held out of training).
// These questions need the LM to bind an attribute to the right object, which
// it learns slowly when they are a sixth of its texts (docs/results.md).
// Deterministic (no draws).
std::vector<std::string> lookup_scene_lines(const Scene& scene, Split split, const std::string& vqa_template);

// corpus_lines(count, seed, vqa_template) (shapes.h) and, for kVaried,
// varied_scene_lines (for kLookups, lookup_scene_lines) of the same `count`
// scenes appended (their draws from a stream of their own, so the plain lines
// stay exactly the plain corpus).
// `repeats` weights kinds of lines (a question's QuestionAnswer::kind, e.g.
// {"color_of_shape", 5}, or "caption" for the description -> caption lines):
// each plain line of that kind appears that many times in all, the extra
// copies after everything else in corpus order, so a skill the LM learns
// slowly (binding an attribute to its object) gets more of its steps. The
// other lines are unchanged.
// ConfigError as corpus_lines, and naming the kind for an unknown one (the
// list of kinds in the message) or a count outside 1..20.
std::vector<std::string> corpus_lines(int count, uint64_t seed, const std::string& vqa_template, CorpusStyle style,
                                      const std::map<std::string, int>& repeats = {});

// "kind=N" (a `blip2 shapes corpus --repeat` value) as a repeats entry;
// ConfigError naming the text when it is not of that form.
std::pair<std::string, int> parse_kind_repeat(const std::string& text);

}  // namespace blip2::shapes
