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

// Detected once, on first use, then capped by BLIP2_MAX_ISA when it is set:
// `avx2` hides AVX-512, its BF16/VNNI and AMX (the kernels of an AVX2-only CPU
// run), `baseline` hides AVX2 too, `native` (or unset) hides nothing. Set with
// DNNL_MAX_CPU_ISA, OPENBLAS_CORETYPE and ATEN_CPU_CAPABILITY it makes this
// CPU time what an older one would run (docs/performance.md). ConfigError
// naming the variable and its values for anything else.
const CpuFeatures& cpu_features();

// The features with an ISA cap applied (the rule above, as a pure function).
CpuFeatures cap_features(CpuFeatures f, const std::string& max_isa);

// The CPU's name from /proc/cpuinfo ("AMD EPYC 7B13"), or "unknown".
std::string cpu_model_name();

}  // namespace blip2
