// The CLI's shared pieces: the subcommand registry and the flags several
// subcommands take. Flags are std::optional overrides applied onto the
// library's own config structs, so every default lives once, in the library.
#pragma once

#include <CLI/CLI.hpp>

#include <functional>
#include <nlohmann/json_fwd.hpp>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "blip2/blip2.h"
#include "blip2/eval/evaluate.h"

namespace blip2::cli {

// Subcommands register here with the action to run when they were given.
class Registry {
 public:
  explicit Registry(CLI::App& app) : app_(app) {}
  CLI::App& app() { return app_; }
  bool verbose = false;  // the global -v/--verbose flag

  // A subcommand of `parent` (nullptr: top level) whose action runs when it
  // is the one given on the command line.
  CLI::App* add(CLI::App* parent, const std::string& name, const std::string& description,
                std::function<int()> action);
  // A group of subcommands (`blip2 eval`, `blip2 shapes`): one of them is
  // required. Asking again for a group's name returns the same group.
  CLI::App* group(const std::string& name, const std::string& description);
  // Whether `name` is a top-level command, and all of them, comma-separated.
  bool is_command(const std::string& name) const;
  std::string command_names() const;
  // Runs the action of the parsed subcommand (0 when there is none).
  int run() const;

 private:
  CLI::App& app_;
  std::vector<std::pair<CLI::App*, std::function<int()>>> actions_;
};

// -m/--model, --dtype, --device, --threads.
struct ModelFlags {
  std::string model;  // empty: resolve_model_dir's default
  std::optional<std::string> dtype, device, bf16_gemm, int8_gemm, fp32_gemm;
  std::optional<int> threads;
  RuntimeOptions runtime() const;
  std::string dir() const { return resolve_model_dir(model); }
};
void add_model_flags(CLI::App* app, ModelFlags& flags);

// The generation flags; each overrides its GenerationConfig field when given.
struct GenerationFlags {
  std::optional<int64_t> beams, max_new_tokens, min_new_tokens, top_k, no_repeat_ngram;
  std::optional<double> length_penalty, temperature, top_p, repetition_penalty;
  std::optional<uint64_t> seed;
  bool sample = false;
  GenerationConfig apply(GenerationConfig defaults) const;
};
// `defaults` is what the subcommand generates with when no flag is given
// (shown in --help).
void add_generation_flags(CLI::App* app, GenerationFlags& flags, const GenerationConfig& defaults);

// Loads the model of `flags` with a progress line (and its load time and
// memory under --verbose).
Pipeline load_pipeline(const ModelFlags& flags, bool verbose);
// --max-pixels: the decompression-bomb limit (DecodeOptions::max_pixels).
struct DecodeFlags {
  std::optional<int64_t> max_pixels;
  DecodeOptions options() const;
};
void add_decode_flags(CLI::App* app, DecodeFlags& flags);
std::vector<Image> load_images(const std::vector<std::string>& paths, const DecodeFlags& decode = {});
// The images that decode, with their paths; each one that does not is
// reported on stderr as one line (`failed` counts them).
struct DecodedImages {
  std::vector<std::string> paths;
  std::vector<Image> images;
  int failed = 0;
};
DecodedImages load_images_reporting(const std::vector<std::string>& paths, const DecodeFlags& decode);
// One line per result (prefixed with the image when there are several or
// `name_each`), or one JSON object per result.
void print_results(const std::vector<std::string>& images, const std::vector<TextResult>& results, bool as_json,
                   const std::string& question = "", bool name_each = false);

// The flags every `blip2 eval` kind takes.
struct EvalFlags {
  std::string data;
  bool json = false;
  EvalOptions options;
};
void add_eval_flags(CLI::App* app, EvalFlags& flags);
// Runs `evaluate` (a library evaluation) with a progress line and prints its
// numeric metrics, one per line, or the whole result as one JSON object.
int run_evaluation(const std::string& kind, EvalFlags& flags,
                   const std::function<nlohmann::json(const EvalOptions&)>& evaluate);

// The subcommand groups, one file each.
void add_inference_commands(Registry& r);  // caption, ask
void add_tool_commands(Registry& r);       // verify, tokenize, preprocess, convert, tokenizer train, plot
void add_train_commands(Registry& r);      // train, launch
void add_eval_commands(Registry& r);       // eval caption|vqa|retrieval
void add_shapes_commands(Registry& r);     // shapes generate|corpus, pretrain lm|vit, eval text-vqa
void add_bench_commands(Registry& r);      // bench
void add_search_commands(Registry& r);     // index build|update|info|bench, search
void add_serve_commands(Registry& r);      // serve (apps/server)

}  // namespace blip2::cli
