// The machine's own limits, measured in the run that reports against them:
// the best GEMM throughput per dtype (libtorch's matmul, i.e. OpenBLAS for
// float32; our int8 x int8 product on oneDNN) and the memory bandwidth of a STREAM-like triad.
#include <omp.h>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <memory>

#include "blip2/bench/benchmark.h"
#include "blip2/nn/int8_gemm.h"
#include "blip2/util/cpu.h"
#include "blip2/util/threads.h"

namespace blip2::bench {

namespace {

double best_seconds(int runs, const std::function<void()>& f) {
  f();  // warm-up
  double best = 1e30;
  for (int i = 0; i < runs; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    f();
    best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  return best;
}

double gemm_gflops(torch::ScalarType dtype, const std::vector<int64_t>& sizes) {
  torch::NoGradGuard g;
  double best = 0;
  for (const int64_t n : sizes) {
    auto a = torch::randn({n, n}).to(dtype), b = torch::randn({n, n}).to(dtype);
    auto c = torch::empty({n, n}, a.options());
    const double s = best_seconds(3, [&] { at::mm_out(c, a, b); });
    best = std::max(best, 2.0 * n * n * n / s / 1e9);
  }
  return best;
}

// nn::int8_gemm on square float32 rows and int8 weights: what --dtype int8's
// many-row products reach at best (the rows' quantisation included).
double int8_gops(const std::vector<int64_t>& sizes) {
  torch::NoGradGuard g;
  double best = 0;
  for (const int64_t n : sizes) {
    const auto x = torch::randn({n, n});
    const auto q = torch::randint(-127, 128, {n, n}, torch::kChar);
    const auto s = torch::rand({n}) * 0.01;
    const double t = best_seconds(3, [&] { nn::int8_gemm(x, q, s, nullptr); });
    best = std::max(best, 2.0 * n * n * n / t / 1e9);
  }
  return best;
}

// a = b + s * c over arrays well beyond the last-level cache, on the
// threads our kernels use; 3 streams of bytes per element (STREAM's count).
double triad_gbs() {
  const int64_t n = int64_t{1} << 25;  // 32 Mi floats = 128 MiB per array
  std::unique_ptr<float[]> a(new float[n]), b(new float[n]), c(new float[n]);
  const int threads = kernel_threads();
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    a[i] = 0.f;
    b[i] = 1.f;
    c[i] = 2.f;
  }
  float* pa = a.get();
  const float* pb = b.get();
  const float* pc = c.get();
  const double s = best_seconds(4, [&] {
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t i = 0; i < n; ++i) pa[i] = pb[i] + 3.f * pc[i];
  });
  return 3.0 * n * sizeof(float) / s / 1e9;
}

}  // namespace

Ceilings measure_ceilings(int threads, GemmPool restore) {
  // Each GEMM with its pool at `threads` (the other at 1), as the model runs them.
  apply_threads(threads, GemmPool::kOpenBlas);
  Ceilings c;
  c.gemm_gflops_fp32 = gemm_gflops(torch::kFloat, {512, 1024, 2048});
  apply_threads(threads, GemmPool::kOpenMP);
  // libtorch's bf16 matmul, where the engine uses it: on CPUs without native
  // bf16 the engine widens bf16 weights to float32 (the float32 ceiling
  // applies), and libtorch's emulation is never run.
  if (cpu_features().native_bf16()) c.gemm_gflops_bf16 = gemm_gflops(torch::kBFloat16, {512, 1024});
  if (nn::int8_gemm_available()) c.gemm_gops_int8 = int8_gops({512, 1024, 2048});
  c.bandwidth_gbs = triad_gbs();
  apply_threads(threads, restore);
  return c;
}

}  // namespace blip2::bench
