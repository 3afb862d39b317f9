#include "blip2/util/threads.h"

#include <dlfcn.h>
#include <sched.h>

#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>

#include "blip2/util/error.h"

namespace blip2 {

namespace {

std::atomic<int> g_kernel_threads{0};
std::atomic<bool> g_float32_on_openmp{false};

// OpenBLAS exports these; resolved at run time so that another BLAS (or none
// visible) only means the BLAS pool is left alone.
using SetThreads = void (*)(int);

SetThreads openblas_setter() {
  static const auto f = reinterpret_cast<SetThreads>(dlsym(RTLD_DEFAULT, "openblas_set_num_threads"));
  return f;
}

}  // namespace

int available_cores() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) == 0) return std::max(1, CPU_COUNT(&set));
  return 1;
}

void check_threads(int threads) {
  const int cores = available_cores();
  const int most = kMaxThreadsPerCore * cores;
  if (threads < 0 || threads > most)
    throw ConfigError("--threads " + std::to_string(threads) + " is out of range: give 0 (one per core) or 1.." +
                      std::to_string(most) + " (" + std::to_string(kMaxThreadsPerCore) + " x the " +
                      std::to_string(cores) + " cores this process may use)");
}

ThreadSettings apply_threads(int threads, GemmPool gemms) {
  check_threads(threads);
  ThreadSettings s;
  s.threads = threads == 0 ? available_cores() : threads;
  s.gemm_pool = gemms;
  if (auto set = openblas_setter()) {
    const bool blas = gemms == GemmPool::kOpenBlas;
    s.blas_threads = blas ? s.threads : 1;
    s.torch_threads = blas ? 1 : s.threads;
    set(s.blas_threads);
  } else {
    s.torch_threads = s.threads;  // libtorch's own BLAS/oneDNN follow its pool
  }
  at::set_num_threads(s.torch_threads);
  g_kernel_threads = s.threads;
  g_float32_on_openmp = s.blas_threads == 1 && s.torch_threads > 1;
  return s;
}

bool float32_gemm_on_openmp() { return g_float32_on_openmp.load(); }

int kernel_threads() {
  const int n = g_kernel_threads.load();
  return n > 0 ? n : available_cores();
}

std::string ThreadSettings::describe() const {
  std::string s = "threads " + std::to_string(threads) + ": ";
  if (blas_threads > 0)
    s += "OpenBLAS " + std::to_string(blas_threads) + ", libtorch/oneDNN " + std::to_string(torch_threads) +
         ", our kernels " + std::to_string(threads);
  else
    s += "libtorch " + std::to_string(torch_threads) + " (no OpenBLAS found to set)";
  return s;
}

}  // namespace blip2
