#include "blip2/bench/benchmark.h"

#include <malloc.h>
#include <sys/resource.h>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <sstream>

#include "blip2/io/safetensors.h"
#include "blip2/lm/language_model.h"
#include "blip2/model/blip2_model.h"
#include "blip2/model/model_dir.h"
#include "blip2/model/quantize.h"
#include "blip2/nn/quant.h"
#include "blip2/util/atomic_file.h"
#include "blip2/util/cpu.h"
#include "blip2/util/dtype.h"
#include "blip2/util/error.h"
#include "blip2/util/progress.h"
#include "blip2/util/threads.h"

namespace fs = std::filesystem;

namespace blip2::bench {

std::vector<std::string> preset_names() { return {"tiny", "vitl-opt125m", "vitg-opt2.7b"}; }

Blip2Config preset_config(const std::string& name) {
  Blip2Config c;  // the defaults are BLIP-2's ViT-g/14 + BERT-base Q-Former + OPT-125m
  c.architectures = {"Blip2ForConditionalGeneration"};
  c.text.family = LmFamily::kOpt;
  if (name == "vitl-opt125m") {
    // ViT-L/14 at 224 px (24 x 1024), the Q-Former reading 1024-wide features, OPT-125m.
    c.vision.hidden_size = 1024;
    c.vision.intermediate_size = 4096;
    c.vision.num_hidden_layers = 24;
    c.vision.num_attention_heads = 16;
    c.qformer.encoder_hidden_size = 1024;
  } else if (name == "vitg-opt2.7b") {
    // The paper's ViT-g/14 (39 x 1408, the defaults) and OPT-2.7B: Salesforce/blip2-opt-2.7b.
    auto& o = c.text.opt;
    o.hidden_size = o.word_embed_proj_dim = 2560;
    o.num_hidden_layers = 32;
    o.ffn_dim = 10240;
    o.num_attention_heads = 32;
  } else if (name == "tiny") {
    auto& v = c.vision;
    v.hidden_size = 64, v.intermediate_size = 128, v.num_hidden_layers = 2, v.num_attention_heads = 4;
    v.image_size = 32, v.patch_size = 8;
    auto& q = c.qformer;
    q.vocab_size = 128, q.hidden_size = 64, q.num_hidden_layers = 2, q.num_attention_heads = 4;
    q.intermediate_size = 128, q.max_position_embeddings = 64, q.encoder_hidden_size = 64;
    c.num_query_tokens = 8;
    auto& o = c.text.opt;
    o.vocab_size = 256, o.hidden_size = o.word_embed_proj_dim = 64, o.num_hidden_layers = 2;
    o.ffn_dim = 128, o.num_attention_heads = 4, o.max_position_embeddings = 128;
  } else {
    std::string names;
    for (const auto& n : preset_names()) names += (names.empty() ? "" : ", ") + n;
    throw ConfigError("--preset '" + name + "' is not a benchmark preset; choose one of " + names);
  }
  c.validate("bench preset " + name);
  return c;
}

void BenchOptions::validate() const {
  preset_config(preset);
  parse_weight_dtype(runtime.dtype, "--dtype");
  if (runtime.device != "cpu") throw ConfigError("the benchmark runs on the CPU (--device cpu)");
  check_threads(runtime.threads);
  if (repeats < 1 || repeats > 1000) throw ConfigError("--repeats must be in 1..1000, got " + std::to_string(repeats));
  if (new_tokens < 1 || new_tokens > 1000)
    throw ConfigError("--new-tokens must be in 1..1000, got " + std::to_string(new_tokens));
  if (beams < 1 || beams > 64) throw ConfigError("--beams must be in 1..64, got " + std::to_string(beams));
  if (train_batch < 0 || train_batch > 256)
    throw ConfigError("--train-batch must be in 0..256 (0 = no training steps), got " + std::to_string(train_batch));
}

namespace {

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// Median wall time in ms of `repeats` runs of f after one warm-up run.
double median_ms(int repeats, const std::function<void()>& f) {
  f();
  std::vector<double> t;
  for (int i = 0; i < repeats; ++i) {
    const double t0 = now_s();
    f();
    t.push_back((now_s() - t0) * 1e3);
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

// The peak resident set is measured over the stages only: building the
// random model (and writing it, with --from-file) is not what a user's
// process holds. Linux resets the peak (VmHWM) on "5" > clear_refs.
bool reset_peak_rss() {
  std::ofstream f("/proc/self/clear_refs");
  f << "5";
  f.flush();
  return static_cast<bool>(f);
}

double peak_rss_mb() {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("VmHWM:", 0) == 0) return std::stod(line.substr(6)) / 1024.0;  // "VmHWM:  123 kB"
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return u.ru_maxrss / 1024.0;  // KiB on Linux
}

// Every parameter ~ N(0, 0.02), norms at (1, 0): random weights of real
// shapes and magnitudes (uninitialised memory could hold NaNs or denormals,
// which change the speed).
// Each parameter is replaced by one of `dtype` before it is written, so the
// float32 tensors of construction (never touched) cost no memory. int8: the
// matrices --dtype int8 quantises are drawn directly as int8 rows (uniform in
// [-127, 127], scaled to std 0.02), never as float32 first; the rest float32.
void randomise(Blip2ModelImpl& m, torch::ScalarType dtype) {
  torch::NoGradGuard g;
  const bool int8 = dtype == torch::kChar;
  const auto owners = int8 ? matrix_modules(m) : std::map<std::string, torch::nn::Module*>{};
  for (auto& item : m.named_parameters()) {
    auto& p = item.value();
    const auto owner = owners.find(item.key());
    if (owner != owners.end() && int8_quantized(item.key(), m.language_model.get())) {
      const double uniform_std = 73.6;  // of the integers -127..127
      nn::set_int8_weight(*owner->second, {torch::randint(-127, 128, p.sizes(), torch::kChar),
                                           torch::full({p.size(0)}, 0.02 / uniform_std)});
      continue;
    }
    p.set_data(torch::empty(p.sizes(), p.options().dtype(int8 ? torch::kFloat : dtype)));
    p.normal_(0.0, 0.02);
    p.set_requires_grad(false);
  }
  nn::init_normal(m, 0.02);
}

double vision_gflop(const VisionConfig& v) {
  const double n = v.num_patches() + 1, d = v.hidden_size, i = v.intermediate_size;
  const double layer = 2 * n * (4 * d * d + 2 * d * i) + 4 * n * n * d;
  const double patch = 2.0 * v.num_patches() * d * (v.num_channels * v.patch_size * v.patch_size);
  return (layer * v.num_hidden_layers + patch) / 1e9;
}

double bytes_of(const std::vector<torch::Tensor>& ps) {
  double b = 0;
  for (const auto& p : ps) b += static_cast<double>(p.numel()) * p.element_size();
  return b;
}

std::string fmt(double v, int digits = 1) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", digits, v);
  return buf;
}

}  // namespace

double BenchResult::vision_of_gemm() const {
  return ceilings.gemm_gflops_fp32 > 0 ? vision_gflop / (vision_ms_b1 / 1e3) / ceilings.gemm_gflops_fp32 : 0;
}

double BenchResult::decode_of_bandwidth() const {
  return ceilings.bandwidth_gbs > 0 ? lm_weight_mb_per_token * 1e6 * decode_tok_s / 1e9 / ceilings.bandwidth_gbs : 0;
}

BenchResult run_benchmark(const BenchOptions& options, void (*log)(const std::string&)) {
  options.validate();
  auto say = [&](const std::string& s) {
    if (log) log(s);
  };
  torch::NoGradGuard no_grad;
  BenchResult r;
  r.preset = options.preset;
  r.new_tokens = options.new_tokens;
  r.beams = options.beams;
  const Runtime rt = apply_runtime(options.runtime);
  const auto dtype = rt.dtype, compute = rt.compute_dtype;
  r.dtype = dtype == torch::kBFloat16 ? "bf16" : dtype == torch::kHalf ? "fp16" : dtype == torch::kChar ? "int8" : "fp32";
  r.threads = rt.threads.threads;
  r.threads_line = rt.threads.describe();
  r.cpu = cpu_model_name();
  r.cpu_features = cpu_features().summary();
  r.compute_path = rt.line.substr(0, rt.line.find(';'));

  const Blip2Config config = preset_config(options.preset);
  say("building " + options.preset + " with random weights");
  double t0 = now_s();
  Blip2Model model(config, Blip2Parts::from_config(config));
  randomise(*model, dtype);
  if (compute != dtype) nn::compute_in(*model, compute);
  model->eval();
  r.build_s = now_s() - t0;

  if (options.from_file) {
    const fs::path dir = fs::temp_directory_path() / ("blip2-bench-" + std::to_string(::getpid()));
    fs::create_directories(dir);
    say("writing the checkpoint to " + dir.string());
    auto tensors = checkpoint_tensors(*model);
    write_atomic((dir / "config.json").string(), config.to_json_string());
    io::save_safetensors((dir / "model.safetensors").string(), tensors);
    tensors.clear();
    model = Blip2Model(nullptr);
    malloc_trim(0);  // give the in-memory model's pages back before loading the file
    LoadOptions lo;
    lo.dtype = dtype;
    lo.compute_dtype = compute;
    t0 = now_s();
    model = load_blip2(dir.string(), lo);
    r.load_s = now_s() - t0;
    model->eval();
    std::error_code ec;
    fs::remove_all(dir, ec);
  }
  r.rss_after_load_mb = resident_memory_kb() / 1024.0;
  r.peak_rss_of_stages = reset_peak_rss();
  {
    const auto params = model->parameters();
    double n = 0;
    for (const auto& p : params) n += p.numel();
    r.params_m = n / 1e6;
    r.weight_mb = bytes_of(params) / 1e6;
  }
  r.lm_weight_mb_per_token = bytes_of(model->language_model->parameters()) / 1e6;
  r.vision_gflop = vision_gflop(config.vision);

  const auto& v = config.vision;
  auto pixels = [&](int64_t b) { return torch::randn({b, v.num_channels, v.image_size, v.image_size}).to(compute); };
  const auto px1 = pixels(1), px8 = pixels(8);
  const int reps = options.repeats;

  say("vision encoder, batch 1 and 8");
  torch::Tensor image;
  r.vision_ms_b1 = median_ms(reps, [&] { image = model->encode_image(px1).last_hidden_state; });
  r.vision_ms_b8 = median_ms(reps, [&] { model->encode_image(px8); }) / 8;
  say("Q-Former");
  torch::Tensor queries;
  r.qformer_ms = median_ms(reps, [&] { queries = model->query_image(image).last_hidden_state; });

  auto& lm = *model->language_model;
  const auto projected = model->language_projection->forward(queries);
  const auto bos = torch::full({1, 1}, lm.bos_token_id(), torch::kLong);
  const auto [embeds, mask] = model->lm_inputs(projected, bos, torch::ones_like(bos));
  say("LM prefill and decode");
  torch::Tensor logits;
  r.prefill_ms = median_ms(reps, [&] { lm.start(embeds, mask, &logits); });
  const int steps = options.new_tokens;
  const double decode_ms = median_ms(reps, [&] {
    torch::Tensor next;
    auto state = lm.start(embeds, mask, &next);
    for (int i = 0; i < steps; ++i) next = lm.step(*state, next.argmax(-1));
  });
  // decode_ms includes one prefill; take it out.
  r.decode_tok_s = steps / std::max(1e-9, (decode_ms - r.prefill_ms) / 1e3);

  GenerationConfig g;
  g.max_new_tokens = g.min_new_tokens = steps;
  say("end to end: " + std::to_string(steps) + " greedy tokens");
  r.e2e_greedy20_ms = median_ms(reps, [&] { model->generate(px1, {}, {}, g); });
  g.num_beams = options.beams;
  say("end to end: " + std::to_string(steps) + " tokens, " + std::to_string(options.beams) + " beams");
  r.e2e_beam5_ms = median_ms(reps, [&] { model->generate(px1, {}, {}, g); });
  r.peak_rss_mb = peak_rss_mb();  // before the ceilings' own buffers (and the training model)
  if (options.train_batch > 0) {
    model = Blip2Model(nullptr);  // the training model has its own copy of the tower
    malloc_trim(0);
    say("stage-1 training steps, batch " + std::to_string(options.train_batch) +
        ": the ViT run, and read back from the feature cache");
    const auto t = measure_stage1_training(config, options.train_batch, reps);
    r.train_batch = options.train_batch;
    r.stage1_samples_s = t.samples_s;
    r.stage1_cached_samples_s = t.cached_samples_s;
  }
  say("measuring this machine's GEMM and memory-bandwidth ceilings");
  r.ceilings = measure_ceilings(options.runtime.threads, rt.threads.gemm_pool);
  return r;
}

std::string BenchResult::to_json() const {
  nlohmann::ordered_json j;
  j["preset"] = preset;
  j["dtype"] = dtype;
  j["compute_path"] = compute_path;
  j["threads"] = threads;
  j["new_tokens"] = new_tokens;
  j["beams"] = beams;
  j["threads_detail"] = threads_line;
  j["cpu"] = cpu;
  j["cpu_features"] = cpu_features;
  j["load_s"] = load_s >= 0 ? nlohmann::ordered_json(load_s) : nlohmann::ordered_json(nullptr);
  j["build_s"] = build_s;
  j["params_m"] = params_m;
  j["weight_mb"] = weight_mb;
  j["rss_after_load_mb"] = rss_after_load_mb;
  j["vision_ms_b1"] = vision_ms_b1;
  j["vision_ms_b8"] = vision_ms_b8;
  j["qformer_ms"] = qformer_ms;
  j["prefill_ms"] = prefill_ms;
  j["decode_tok_s"] = decode_tok_s;
  j["e2e_greedy20_ms"] = e2e_greedy20_ms;
  j["e2e_beam5_ms"] = e2e_beam5_ms;
  j["peak_rss_mb"] = peak_rss_mb;
  j["peak_rss_scope"] = peak_rss_of_stages ? "stages after load" : "whole process";
  j["gemm_gflops"] = ceilings.gemm_gflops_fp32;
  j["gemm_gflops_bf16"] = ceilings.gemm_gflops_bf16;
  j["gemm_gops_int8"] = ceilings.gemm_gops_int8;
  j["bandwidth_gbs"] = ceilings.bandwidth_gbs;
  j["vision_gflop"] = vision_gflop;
  j["vision_of_gemm_ceiling"] = vision_of_gemm();
  j["lm_weight_mb_per_token"] = lm_weight_mb_per_token;
  j["decode_of_bandwidth_ceiling"] = decode_of_bandwidth();
  j["train_batch"] = train_batch;
  j["stage1_samples_s"] = stage1_samples_s;
  j["stage1_cached_samples_s"] = stage1_cached_samples_s;
  return j.dump(2);
}

std::string BenchResult::to_table() const {
  std::ostringstream o;
  const auto pct = [](double f) { return fmt(100 * f, 0) + "%"; };
  o << "preset " << preset << ", " << dtype << " (" << compute_path << "), " << params_m << " M parameters, "
    << fmt(weight_mb, 0) << " MB of weights\n"
    << cpu << " [" << cpu_features << "], " << threads_line << "\n"
    << "ceilings: GEMM fp32 " << fmt(ceilings.gemm_gflops_fp32) << " GFLOP/s, bf16 "
    << (ceilings.gemm_gflops_bf16 > 0 ? fmt(ceilings.gemm_gflops_bf16) + " GFLOP/s" : std::string("n/a (not native: widened to fp32)"))
    << ", int8 " << fmt(ceilings.gemm_gops_int8) << " GOP/s; memory " << fmt(ceilings.bandwidth_gbs) << " GB/s (triad)\n";
  o << "  load                 " << (load_s >= 0 ? fmt(load_s, 2) + " s" : std::string("- (use --from-file)"))
    << ", RSS " << fmt(rss_after_load_mb, 0) << " MB\n"
    << "  vision, batch 1      " << fmt(vision_ms_b1) << " ms/image  (" << fmt(vision_gflop) << " GFLOP, "
    << pct(vision_of_gemm()) << " of the GEMM ceiling)\n"
    << "  vision, batch 8      " << fmt(vision_ms_b8) << " ms/image\n"
    << "  Q-Former             " << fmt(qformer_ms) << " ms\n"
    << "  LM prefill           " << fmt(prefill_ms) << " ms\n"
    << "  LM decode            " << fmt(decode_tok_s) << " tokens/s  (" << fmt(lm_weight_mb_per_token, 0)
    << " MB read per token, " << pct(decode_of_bandwidth()) << " of the bandwidth bound)\n"
    << "  caption, greedy      " << fmt(e2e_greedy20_ms, 0) << " ms\n"
    << "  caption, beam search " << fmt(e2e_beam5_ms, 0) << " ms\n"
    << "  peak RSS             " << fmt(peak_rss_mb, 0) << " MB" << (peak_rss_of_stages ? " (stages after load)" : "") << "\n";
  if (train_batch > 0)
    o << "  stage-1 training     " << fmt(stage1_samples_s, 2) << " samples/s; " << fmt(stage1_cached_samples_s, 2)
      << " with the ViT's output from data.feature_cache (" << fmt(stage1_cached_samples_s / std::max(1e-9, stage1_samples_s), 1)
      << "x), batch " << train_batch << ", float32 tower\n";
  return o.str();
}

}  // namespace blip2::bench
