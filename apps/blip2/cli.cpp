#include "apps/blip2/cli.h"

#include <cmath>
#include <cstdio>
#include <iostream>
#include <unistd.h>
#include <utility>
#include <nlohmann/json.hpp>

#include "blip2/util/progress.h"

namespace blip2::cli {

CLI::App* Registry::add(CLI::App* parent, const std::string& name, const std::string& description,
                        std::function<int()> action) {
  CLI::App* sub = (parent ? parent : &app_)->add_subcommand(name, description);
  actions_.emplace_back(sub, std::move(action));
  return sub;
}

CLI::App* Registry::group(const std::string& name, const std::string& description) {
  for (CLI::App* existing : app_.get_subcommands(std::function<bool(CLI::App*)>{}))
    if (existing->get_name() == name) return existing;
  CLI::App* g = app_.add_subcommand(name, description);
  g->require_subcommand(1);
  return g;
}

bool Registry::is_command(const std::string& name) const {
  for (const CLI::App* sub : std::as_const(app_).get_subcommands(std::function<bool(const CLI::App*)>{}))
    if (sub->get_name() == name) return true;
  return false;
}

std::string Registry::command_names() const {
  std::string out;
  for (const CLI::App* sub : std::as_const(app_).get_subcommands(std::function<bool(const CLI::App*)>{}))
    out += (out.empty() ? "" : ", ") + sub->get_name();
  return out;
}

int Registry::run() const {
  for (const auto& [sub, action] : actions_)
    if (sub->parsed()) return action();
  return 0;
}

RuntimeOptions ModelFlags::runtime() const {
  RuntimeOptions o;
  if (dtype) o.dtype = *dtype;
  if (device) o.device = *device;
  if (threads) o.threads = *threads;
  if (bf16_gemm) o.bf16_gemm = *bf16_gemm;
  if (int8_gemm) o.int8_gemm = *int8_gemm;
  if (fp32_gemm) o.fp32_gemm = *fp32_gemm;
  return o;
}

void add_model_flags(CLI::App* app, ModelFlags& f) {
  const RuntimeOptions d;
  app->add_option("-m,--model", f.model,
                  "BLIP-2 checkpoint directory (HF layout); default: $BLIP2_MODEL or the bundled models/shapes/opt");
  app->add_option("--dtype", f.dtype, "weights dtype: float32, bfloat16, float16, int8 (CPU; quantised on load); on a CPU 16-bit and int8 weights compute in float32 (default " +
                                        d.dtype + ")");
  app->add_option("--device", f.device, "cpu, cuda or cuda:N (CUDA builds of libtorch; default " + d.device + ")");
  app->add_option("--threads", f.threads,
                  "CPU threads for all intra-op work, BLAS included; 1..4 x cores (default " +
                      std::to_string(d.threads) + " = one per core)");
  app->add_option("--bf16-gemm", f.bf16_gemm,
                  "bfloat16 weights: auto, native (the CPU's bf16 GEMM) or fp32 (widen; every CPU) (default " +
                      d.bf16_gemm + ")");
  app->add_option("--int8-gemm", f.int8_gemm,
                  "int8 weights: auto, int8 (int8 x int8 products, activation rows quantised too) or fp32 (weights "
                  "only; every CPU) (default " + d.int8_gemm + ")");
  app->add_option("--fp32-gemm", f.fp32_gemm,
                  "float32 weights: auto, openblas or onednn (oneDNN on the OpenMP pool) (default " + d.fp32_gemm +
                      ")");
}

GenerationConfig GenerationFlags::apply(GenerationConfig g) const {
  if (beams) g.num_beams = *beams;
  if (max_new_tokens) g.max_new_tokens = *max_new_tokens;
  if (min_new_tokens) g.min_new_tokens = *min_new_tokens;
  if (length_penalty) g.length_penalty = *length_penalty;
  if (sample) {
    g.do_sample = true;
    if (!beams) g.num_beams = 1;
  }
  if (temperature) g.temperature = *temperature;
  if (top_k) g.top_k = *top_k;
  if (top_p) g.top_p = *top_p;
  if (seed) g.seed = *seed;
  if (repetition_penalty) g.repetition_penalty = *repetition_penalty;
  if (no_repeat_ngram) g.no_repeat_ngram_size = *no_repeat_ngram;
  return g;  // GenerationConfig::validate (in generate) rejects impossible values
}

namespace {
std::string dflt(double v) {
  char b[32];
  std::snprintf(b, sizeof b, " (default %g)", v);
  return b;
}
}  // namespace

void add_generation_flags(CLI::App* app, GenerationFlags& f, const GenerationConfig& d) {
  app->add_option("--beams", f.beams, "beam width; 1 = greedy" + dflt(static_cast<double>(d.num_beams)));
  app->add_option("--max-new-tokens", f.max_new_tokens, "most tokens to generate" + dflt(static_cast<double>(d.max_new_tokens)));
  app->add_option("--min-new-tokens", f.min_new_tokens,
                  "fewest tokens before EOS is allowed" + dflt(static_cast<double>(d.min_new_tokens)));
  app->add_option("--length-penalty", f.length_penalty, "beam length penalty" + dflt(d.length_penalty));
  app->add_flag("--sample", f.sample, "sample instead of searching (greedy sampling unless --beams is given)");
  app->add_option("--temperature", f.temperature, "sampling temperature" + dflt(d.temperature));
  app->add_option("--top-k", f.top_k, "sample among the k most likely tokens; 0 = off" + dflt(static_cast<double>(d.top_k)));
  app->add_option("--top-p", f.top_p, "nucleus sampling mass" + dflt(d.top_p));
  app->add_option("--seed", f.seed, "sampling seed" + dflt(static_cast<double>(d.seed)));
  app->add_option("--repetition-penalty", f.repetition_penalty,
                  "penalise tokens already generated; 1 = off" + dflt(d.repetition_penalty));
  app->add_option("--no-repeat-ngram", f.no_repeat_ngram,
                  "forbid repeating n-grams of this size; 0 = off" + dflt(static_cast<double>(d.no_repeat_ngram_size)));
}

Pipeline load_pipeline(const ModelFlags& f, bool verbose) {
  const std::string dir = f.dir();
  Progress progress("loading model " + dir);
  auto p = Pipeline::load(dir, f.runtime());
  progress.done();
  if (verbose)
    std::fprintf(stderr, "loaded %s in %.3f s; resident memory %lld MiB\n%s\n", dir.c_str(), p.load_seconds(),
                 static_cast<long long>(resident_memory_kb() / 1024), p.runtime_description().c_str());
  return p;
}

DecodeOptions DecodeFlags::options() const {
  DecodeOptions o;
  if (max_pixels) {
    if (*max_pixels < 1)
      throw ConfigError("--max-pixels must be at least 1, got " + std::to_string(*max_pixels));
    o.max_pixels = *max_pixels;
  }
  return o;
}

void add_decode_flags(CLI::App* app, DecodeFlags& f) {
  app->add_option("--max-pixels", f.max_pixels,
                  "refuse images with more pixels than this, from their header (decompression bombs) (default " +
                      std::to_string(DecodeOptions{}.max_pixels) + ")");
}

std::vector<Image> load_images(const std::vector<std::string>& paths, const DecodeFlags& decode) {
  std::vector<Image> out;
  const DecodeOptions o = decode.options();
  Progress progress("decoding " + std::to_string(paths.size()) + " image(s)");
  for (const auto& p : paths) out.push_back(load_image(p, o));
  return out;
}

DecodedImages load_images_reporting(const std::vector<std::string>& paths, const DecodeFlags& decode) {
  DecodedImages out;
  const DecodeOptions o = decode.options();
  Progress progress("decoding " + std::to_string(paths.size()) + " image(s)");
  for (const auto& p : paths) {
    try {
      out.images.push_back(load_image(p, o));
      out.paths.push_back(p);
    } catch (const Error& e) {
      std::fprintf(stderr, "blip2: error: %s\n", e.what());
      ++out.failed;
    }
  }
  return out;
}

void print_results(const std::vector<std::string>& images, const std::vector<TextResult>& rs, bool as_json,
                   const std::string& question, bool name_each) {
  for (size_t i = 0; i < rs.size(); ++i) {
    if (as_json) {
      nlohmann::json j = {{"image", images[i]}, {"text", rs[i].text}, {"token_ids", rs[i].token_ids},
                          {"seconds", rs[i].seconds}};
      if (!question.empty()) j["question"] = question;
      std::cout << j.dump() << "\n";
    } else if (images.size() > 1 || name_each) {
      std::cout << images[i] << ": " << rs[i].text << "\n";
    } else {
      std::cout << rs[i].text << "\n";
    }
  }
}

void add_eval_flags(CLI::App* app, EvalFlags& f) {
  app->add_option("-d,--data", f.data, "data directory (images + captions.json / questions.json)")->required();
  app->add_flag("--json", f.json, "print the metrics as one JSON object");
  app->add_option("--limit", f.options.limit, "evaluate only the first N samples (0 = all)");
  app->add_option("--batch-size", f.options.batch_size, "images per forward pass")->capture_default_str();
  app->add_option("--samples", f.options.num_samples,
                  "how many per-sample predictions the JSON lists (a number past the data's size = all)")
      ->capture_default_str();
}

int run_evaluation(const std::string& kind, EvalFlags& f,
                   const std::function<nlohmann::json(const EvalOptions&)>& evaluate) {
  Progress progress("evaluating " + kind + " on " + f.data);
  int64_t last_pct = -1;
  const bool tty = ::isatty(2);
  EvalOptions opts = f.options;
  opts.progress = [&](int64_t done, int64_t total) {
    const int64_t pct = total > 0 ? done * 100 / total : 100;
    if (tty && pct != last_pct)
      std::fprintf(stderr, "\r%s: %lld/%lld", kind.c_str(), static_cast<long long>(done),
                   static_cast<long long>(total));
    last_pct = pct;
  };
  const nlohmann::json metrics = evaluate(opts);
  progress.done();
  if (tty) std::fprintf(stderr, "\n");
  if (f.json) {
    std::cout << metrics.dump() << "\n";
  } else {
    for (auto it = metrics.begin(); it != metrics.end(); ++it)
      if (it.value().is_number()) std::cout << it.key() << ": " << it.value().dump() << "\n";
  }
  return 0;
}

}  // namespace blip2::cli
