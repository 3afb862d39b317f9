// What this CPU can do, detected at run time (never assumed at build time):
// the vector extensions the kernels in nn/ choose between.
#pragma once

#include <string>

namespace blip2 {

struct CpuFeatures {
  bool avx2 = false, fma = false, f16c = false;
  bool avx512f = false, avx512bw = false;
  bool avx512_bf16 = false;  // AVX-512 BF16 (Cooper Lake, Sapphire Rapids, Zen 4)
  bool amx_bf16 = false;     // AMX tiles (Sapphire Rapids)
  bool avx512_vnni = false, avx_vnni = false;
  // Whether bf16 matrix products run natively (AVX-512 BF16 or AMX); without
  // it they are emulated and bf16 weights are computed in float32.
  bool native_bf16() const { return avx512_bf16 || amx_bf16; }
  // "avx2 fma f16c" and so on, for --verbose and the benchmark report.
  std::string summary() const;
};

// Detected once, on first use.
const CpuFeatures& cpu_features();

// The CPU's name from /proc/cpuinfo ("AMD EPYC 7B13"), or "unknown".
std::string cpu_model_name();

}  // namespace blip2
