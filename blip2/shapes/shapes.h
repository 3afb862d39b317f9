// The "shapes world" (issue 5): a synthetic image-text world the project can
// generate on any machine, so BLIP-2's recipe can be reproduced end to end
// without downloads. A scene is 1-3 non-overlapping filled shapes on a light
// gray background; captions and one-word-answer questions are derived from
// the scene by fixed grammars. Two compositions (purple triangle, orange
// circle) are held out of every split but `compositional`.
//
// Everything here is deterministic: the RNG helpers draw from the raw 64-bit
// outputs of std::mt19937_64 (whose sequence the standard fixes), never from
// the implementation-defined std::*_distribution classes, so a seed gives the
// same data set with every standard library. See docs/shapes.md.
#pragma once

#include <array>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "blip2/data/image.h"

namespace blip2::shapes {

enum class Split { kTrain, kVal, kTest, kCompositional };

// "train" / "val" / "test" / "compositional".
const char* split_name(Split split);
// The inverse of split_name; ConfigError listing the four names otherwise.
Split parse_split(const std::string& name);

// The vocabulary of the world, in a fixed order.
const std::vector<std::string>& shape_names();  // circle square triangle star
const std::vector<std::string>& color_names();  // red green blue yellow purple orange
const std::vector<std::string>& size_names();   // small large
// The nominal RGB of a colour name (InputError for an unknown name).
std::array<uint8_t, 3> base_color(const std::string& color);
// True for the held-out compositions: purple triangle, orange circle.
bool is_held_out(const std::string& shape, const std::string& color);

// Maximum per-channel deviation of an object's colour from base_color().
constexpr int kColorJitter = 15;
// Bounding-box side as a fraction of the image side, per size.
constexpr double kSmallMin = 0.15, kSmallMax = 0.22;
constexpr double kLargeMin = 0.30, kLargeMax = 0.40;
// Background gray level range (R = G = B).
constexpr int kBackgroundMin = 200, kBackgroundMax = 245;
// Sampling margin that keeps the grammar unambiguous, as a fraction of the
// image side (see sample_scene).
constexpr double kRelationMargin = 0.04;

struct ShapeObject {
  std::string shape;  // circle | square | triangle | star
  std::string color;  // red | green | blue | yellow | purple | orange
  std::string size;   // small | large
  double cx = 0, cy = 0;  // centre of the bounding box, pixels (x right, y down)
  double bbox = 0;        // side of the square bounding box, pixels
  std::array<uint8_t, 3> rgb{};  // the jittered fill colour
};

struct Scene {
  int image_size = 224;
  std::array<uint8_t, 3> background{220, 220, 220};  // gray: R = G = B
  std::vector<ShapeObject> objects;
  // Mild background noise: each background pixel's gray level moves by a
  // uniform integer in [-noise, noise] (clamped to the 200..245 range),
  // drawn from noise_seed. 0 = plain background. Never touches the shapes.
  int noise = 0;
  uint64_t noise_seed = 0;
};

// Samples a scene: 1-3 objects with uniformly drawn shape, colour and size,
// bounding boxes inside the image and at least 2 px apart, colours jittered
// within +-kColorJitter, a background level in 200..245, and background noise
// in half the scenes (amplitude 1 or 2).
// Splits train/val/test never contain a held-out composition; every
// compositional scene contains at least one. To keep the grammar
// unambiguous, every pair of centres differs by >= 4% of the side between
// its |dx| and |dy| (so the relation is clear), and in three-object scenes
// the centres' x differ pairwise by >= 4% (so left-to-right order is clear):
// kRelationMargin.
// ConfigError for image_size < 32.
Scene sample_scene(std::mt19937_64& rng, int image_size, Split split);

// Anti-aliased rendering with cairo: background (plus noise), then each
// object filled in its rgb. Deterministic for a given Scene.
Image render_scene(const Scene& scene);

// "a large red circle"
std::string describe(const ShapeObject& object);
// The relation of a to b by the centres' larger offset: "to the left of",
// "to the right of", "above" or "below" (y grows downwards; a tie of |dx|
// and |dy| counts as horizontal).
std::string relation(const ShapeObject& a, const ShapeObject& b);

// The reference captions of a scene, the canonical one first:
//  1 object:  {"a large red circle"}
//  2 objects: {"<left/upper> to the left of|above <other>",
//              "<other> to the right of|below <left/upper>"} (both are correct)
//  3 objects: {"<a>, <b> and <c>"} listed left to right
std::vector<std::string> scene_captions(const Scene& scene);

struct QuestionAnswer {
  std::string question;  // e.g. "what color is the circle?"
  std::string answer;    // one word
  std::string kind;      // color_of_shape | shape_of_color | count | exists | size_of_shape | color_by_relation
};

// One question of each kind that is well defined for the scene, in the order
// of `kind` above (the instance is drawn with rng):
//  color_of_shape    "what color is the <shape>?"        exactly one object of that shape
//  shape_of_color    "what shape is the <color> object?" exactly one object of that colour
//  count             "how many shapes are there?"        one / two / three
//  exists            "is there a <color> <shape>?"       yes / no with probability 1/2 each
//                    ("is there an orange ...?" for orange);
//                    outside `compositional` never about a held-out composition
//  size_of_shape     "is the <shape> large or small?"    exactly one object of that shape
//  color_by_relation "what color is the shape <relation> the <shape>?"
//                    the anchor shape occurs once and exactly one other object
//                    stands in that relation to it
std::vector<QuestionAnswer> scene_questions(const Scene& scene, std::mt19937_64& rng, Split split);

// The RNG of image `index` of a split: seeded from (seed, split, index) by
// splitmix64, so splits with the same seed differ and an image does not
// depend on how many were generated.
std::mt19937_64 scene_rng(uint64_t seed, Split split, int64_t index);

// Writes `count` scenes of `split` to out_dir (created if needed):
//   images/000000.png ...   the rendered scenes (PNG, 8-bit RGB)
//   captions.json           [{"image": "images/000000.png", "caption": [..], "image_id": 0}, ..]
//   questions.json          [{"image": .., "question": .., "answer": [".."], "question_id": 0}, ..]
//   scenes.json             [{"image": .., "image_id": .., "image_size": .., "background": [r,g,b],
//                             "objects": [{"shape", "color", "size", "cx", "cy", "bbox", "rgb"}]}, ..]
// Paths in the JSON files are relative to out_dir. Deterministic per
// (seed, split, image_size). ConfigError for count < 0 or image_size < 32,
// InputError naming the path when out_dir cannot be created or written.
void generate_split(const std::string& out_dir, Split split, int count, uint64_t seed,
                    int image_size = 224);

// The text-only corpus of the language-model pretraining (docs/pretraining.md):
// `count` train-split scenes drawn with scene_rng(seed, kTrain, i) and never
// rendered, as corpus lines "context<TAB>prompt<TAB>target" (parse_lm_text):
//   each caption c:  "c<TAB><TAB>c"           read a description, say it
//   each question:   "<canonical caption><TAB><vqa_template with the question><TAB><answer>"
// The context slot is where BLIP-2 puts the visual prompt. ConfigError for
// count < 0 or a template without "{}".
std::vector<std::string> corpus_lines(int count, uint64_t seed, const std::string& vqa_template);
// The same lines, each with the kind of its question (QuestionAnswer::kind;
// "caption" for a caption line).
std::vector<std::pair<std::string, std::string>> corpus_lines_with_kinds(int count, uint64_t seed,
                                                                         const std::string& vqa_template);

}  // namespace blip2::shapes
