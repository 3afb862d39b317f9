// blip2 bench: the speed of every stage beside this machine's ceilings
// (the library's bench/benchmark.h does the work; this prints it).
#include <iostream>
#include <memory>

#include "apps/blip2/cli.h"
#include "blip2/bench/benchmark.h"

namespace blip2::cli {

void add_bench_commands(Registry& r) {
  struct Flags {
    bench::BenchOptions options;
    bool json = false;
  };
  auto f = std::make_shared<Flags>();
  const bench::BenchOptions d;
  const bool* verbose = &r.verbose;
  auto* b = r.add(nullptr, "bench", "time each stage on random weights of real shapes, against this machine's ceilings",
                  [f, verbose] {
                    auto log = *verbose ? +[](const std::string& s) { std::cerr << "bench: " << s << "\n"; }
                                        : nullptr;
                    const auto result = bench::run_benchmark(f->options, log);
                    std::cout << (f->json ? result.to_json() + "\n" : result.to_table());
                    return 0;
                  });
  std::string presets;
  for (const auto& p : bench::preset_names()) presets += (presets.empty() ? "" : ", ") + p;
  b->add_option("--preset", f->options.preset, "model shapes: " + presets + " (default " + d.preset + ")");
  b->add_option("--dtype", f->options.runtime.dtype,
                "weights: float32, bfloat16, float16 or int8, computed in float32 (default " + d.runtime.dtype + ")");
  b->add_option("--threads", f->options.runtime.threads, "CPU threads, BLAS included (default 0 = one per core)");
  b->add_option("--bf16-gemm", f->options.runtime.bf16_gemm,
                "bfloat16 weights: auto, native or fp32 (default " + d.runtime.bf16_gemm + ")");
  b->add_option("--int8-gemm", f->options.runtime.int8_gemm,
                "int8 weights: auto, int8 (int8 x int8) or fp32 (weights only) (default " + d.runtime.int8_gemm + ")");
  b->add_option("--fp32-gemm", f->options.runtime.fp32_gemm,
                "float32 weights: auto, openblas or onednn (default " + d.runtime.fp32_gemm + ")");
  b->add_option("--repeats", f->options.repeats,
                "timed runs per stage, the median is reported (default " + std::to_string(d.repeats) + ")");
  b->add_option("--new-tokens", f->options.new_tokens,
                "tokens generated, forced (default " + std::to_string(d.new_tokens) + ")");
  b->add_option("--beams", f->options.beams, "beams of the beam-search caption (default " + std::to_string(d.beams) + ")");
  b->add_option("--train-batch", f->options.train_batch,
                "images per stage-1 training step, timed with and without the feature cache (0 = skip; default " +
                    std::to_string(d.train_batch) + ")");
  b->add_flag("--from-file", f->options.from_file, "write the checkpoint to a temporary directory and time loading it");
  b->add_flag("--json", f->json, "print one JSON object");
}

}  // namespace blip2::cli
