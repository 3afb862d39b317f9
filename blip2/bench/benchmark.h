// `blip2 bench`: how fast each stage of BLIP-2 runs on this machine, beside
// what this machine can do at best (its GEMM and memory-bandwidth ceilings,
// measured in the same run). Models are built in memory with random weights
// of real shapes (no download); --from-file writes the checkpoint once to a
// temporary directory to time loading it.
#pragma once

#include <string>
#include <vector>

#include "blip2/blip2.h"
#include "blip2/config/config.h"
#include "blip2/util/threads.h"

namespace blip2::bench {

// Names of the presets: "tiny" (CI), "vitl-opt125m", "vitg-opt2.7b".
std::vector<std::string> preset_names();
// The model of a preset; ConfigError listing the presets for an unknown name.
Blip2Config preset_config(const std::string& name);

struct BenchOptions {
  std::string preset = "tiny";
  RuntimeOptions runtime;         // dtype, threads, bf16 GEMM choice (CPU only)
  int repeats = 3;                // timed runs per stage (median), after one warm-up
  int new_tokens = 20;            // forced: min = max
  int beams = 5;
  bool from_file = false;         // time loading a written checkpoint
  int train_batch = 4;            // stage-1 training steps: images per step (0 = skip them)
  void validate() const;          // ConfigError naming the flag
};

// This machine's ceilings with `threads` threads (0 = one per core), each
// GEMM on the pool the model uses for it; the caller's settings are restored.
struct Ceilings {
  double gemm_gflops_fp32 = 0;  // best of a few square sizes
  double gemm_gflops_bf16 = 0;  // libtorch's native bf16 matmul; 0 without native bf16 (bf16 weights run widened)
  // nn::int8_gemm (float32 rows quantised, int8 x int8, rescaled) in GOP/s;
  // 0 where the int8 x int8 GEMM is not available.
  double gemm_gops_int8 = 0;
  double bandwidth_gbs = 0;     // STREAM-like triad, counted as 3 streams
};
Ceilings measure_ceilings(int threads, GemmPool restore);

// Stage-1 training samples/s (train_bench.cpp): the Trainer's step on
// `batch` random images of `config`'s shapes, the ViT run on the batch, and
// the ViT's output read back from data.feature_cache; medians of `repeats`
// steps each, taken alternately after one warm-up step each.
struct TrainBench {
  double samples_s = 0, cached_samples_s = 0;
};
TrainBench measure_stage1_training(const Blip2Config& config, int batch, int repeats);

struct BenchResult {
  std::string preset, dtype, compute_path, cpu, cpu_features, threads_line;
  int threads = 0, new_tokens = 0, beams = 0;
  double load_s = -1;  // -1: not measured (no --from-file)
  double build_s = 0;  // building the random-weight model in memory
  double rss_after_load_mb = 0, peak_rss_mb = 0;
  bool peak_rss_of_stages = false;  // false: the whole process (no clear_refs)
  double params_m = 0, weight_mb = 0, lm_weight_mb_per_token = 0;
  double vision_ms_b1 = 0, vision_ms_b8 = 0, qformer_ms = 0, prefill_ms = 0, decode_tok_s = 0;
  double e2e_greedy20_ms = 0, e2e_beam5_ms = 0;
  double vision_gflop = 0;  // one image
  // Stage-1 training (the Trainer's step: ITC + ITM + ITG, backward, AdamW;
  // frozen float32 tower) at train_batch images: the ViT run on every batch,
  // and its output read back from data.feature_cache (0: not measured).
  int train_batch = 0;
  double stage1_samples_s = 0, stage1_cached_samples_s = 0;
  Ceilings ceilings;
  // Fractions of the ceilings: vision against fp32 GEMM, decode against bandwidth.
  double vision_of_gemm() const;
  double decode_of_bandwidth() const;
  std::string to_json() const;
  std::string to_table() const;
};

// Runs every stage; `log` (may be empty) receives progress lines.
BenchResult run_benchmark(const BenchOptions& options, void (*log)(const std::string&) = nullptr);

}  // namespace blip2::bench
