// The one intra-op threads knob (--threads, RuntimeOptions::threads).
//
// Three thread pools can run a forward pass here: libtorch's OpenMP pool
// (element-wise ops, softmax, norms), OpenBLAS's own pthread pool (every
// float32 matrix product) and the OpenMP loops of our kernels (nn/gemm.h).
// Both libgomp and OpenBLAS busy-wait after each job, so two pools of N
// threads on N cores steal each other's cores: measured on a 2-core AVX2
// machine, 24 ViT-L layers take 2.3 s with both pools at 2 threads and 1.2 s
// (the GEMM ceiling) with BLAS at 2 and libtorch's pool at 1 (see
// docs/performance.md). So N goes to the pool that does the matrix products
// and to our kernels, and the other pool gets 1.
#pragma once

#include <string>

namespace blip2 {

// Intra-op threads beyond this many per core only oversubscribe the machine.
constexpr int kMaxThreadsPerCore = 4;

// The cores this process may run on (its affinity mask; at least 1).
int available_cores();

// ConfigError unless threads is 0 (= available_cores()) or
// 1..kMaxThreadsPerCore x cores; names --threads and the range.
void check_threads(int threads);

// Which pool does the heavy matrix products: OpenBLAS (float32) or
// libtorch's OpenMP pool (oneDNN's native bf16 GEMM). That pool gets the
// threads; the other gets 1.
enum class GemmPool { kOpenBlas, kOpenMP };

struct ThreadSettings {
  int threads = 1;        // the knob, resolved (0 -> cores)
  int torch_threads = 1;  // libtorch's intra-op pool
  int blas_threads = 0;   // OpenBLAS's pool; 0 = not an OpenBLAS we can set
  GemmPool gemm_pool = GemmPool::kOpenBlas;
  std::string describe() const;  // one line for --verbose / the benchmark
};

// Checks and applies `threads` to every pool; returns what was set.
ThreadSettings apply_threads(int threads, GemmPool gemms = GemmPool::kOpenBlas);

// The thread count our own kernels use (the last apply_threads, else cores).
int kernel_threads();

// Whether the last apply_threads gave the matrix products' threads (more than
// one) to the OpenMP pool and held OpenBLAS at one: then nn::linear sends its
// float32 products to oneDNN on that pool too (nn/dnnl_matmul.h).
bool float32_gemm_on_openmp();

}  // namespace blip2
