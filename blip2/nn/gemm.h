// The one matrix product of every Linear layer and LM head: y = x W^T + b.
//
// Which code runs is chosen at run time from the shapes, the weight's dtype
// and the CPU (util/cpu.h):
// - few rows (decoding, beam search: at most kGemvRows) with float32 or
//   bfloat16 weights on an AVX2+FMA CPU: our GEMV kernel, which reads each
//   weight once for all rows, split over kernel_threads() (OpenBLAS 0.3.21's
//   sgemm with one row runs far below the memory bound);
// - 16-bit weights with float32 activations (how --dtype bfloat16/float16
//   runs on a CPU: weights in 16 bits, half the memory and bandwidth, compute
//   in float32) and more rows: where the CPU has native bf16 (AVX-512 BF16,
//   AMX) and the weights are bf16, libtorch's bf16 GEMM (oneDNN) on the rows
//   rounded to bf16; otherwise the weight is widened to float32 a block of
//   rows at a time, in cache, and multiplied there: by oneDNN with every
//   thread widening, in a run whose GEMMs live on the OpenMP pool (bf16 runs
//   without native bf16 put them there where oneDNN has a float32 kernel),
//   else by BLAS;
// - int8 weights (--dtype int8: int8 rows with one float32 scale per output
//   row, see nn/quant.h): where the CPU has an int8 GEMM (oneDNN's, see
//   nn/int8_gemm.h) the activation rows are quantised to int8 too and
//   multiplied in int8: our int8 x int8 GEMV for few rows, oneDNN's GEMM for
//   more; otherwise (or --int8-gemm fp32) the same GEMV kernel widening int8
//   to float32 for few rows and, for more, blocks of weight rows dequantised
//   into the cache-sized float32 buffer and multiplied by BLAS;
// - float32 weights and more rows in a run whose GEMMs live on libtorch's
//   OpenMP pool (int8 x int8, native bf16; OpenBLAS then has one thread, see
//   util/threads.h): oneDNN's float32 GEMM on that pool (nn/dnnl_matmul.h);
// - otherwise libtorch's linear (OpenBLAS for float32).
#pragma once

#include <torch/types.h>

#include <cstdint>
#include <string>

namespace blip2::nn {

constexpr int64_t kGemvRows = 8;

// x (..., K), weight (N, K), bias (N) or undefined -> (..., N) in x's dtype.
// An int8 weight needs `scale` (N) float32: row n of W is weight[n] * scale[n].
at::Tensor linear(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias = {},
                  const at::Tensor& scale = {});

// a (..., M, K) x b (..., K, N) with the same batch dimensions (attention's
// scores and context). libtorch's matmul (OpenBLAS, one small matrix at a
// time), except in a run whose GEMMs live on the OpenMP pool
// (float32_gemm_on_openmp(): OpenBLAS has one thread there) for float32
// without autograd and at least 64 rows (the vision encoder's tokens):
// oneDNN's batched product on that pool (nn/dnnl_matmul.h). Fewer rows
// (queries, prompts, decoding) stay on libtorch: their shapes change from
// call to call and each new shape costs oneDNN a new kernel.
at::Tensor matmul(const at::Tensor& a, const at::Tensor& b);

// Which path linear() takes for these operands (for tests and --verbose).
enum class LinearPath {
  kTorch, kGemvF32, kGemvBF16, kNativeBF16, kWidened, kGemvI8, kDequantI8, kInt8Gemm, kInt8Gemv, kDnnlF32
};
LinearPath linear_path(const at::Tensor& x, const at::Tensor& weight);
const char* linear_path_name(LinearPath p);

// Whether bf16 weights with many rows use the CPU's native bf16 GEMM.
// kAuto: where cpu_features().native_bf16(); kWidened forces the float32
// path (the one every CPU has; tests use it to check it on any machine).
enum class Bf16Gemm { kAuto, kNative, kWidened };
void set_bf16_gemm(Bf16Gemm mode);
bool native_bf16_gemm();  // what kAuto resolved to, or the forced choice
// "auto", "native", "fp32"; ConfigError naming `what` otherwise.
Bf16Gemm parse_bf16_gemm(const std::string& name, const std::string& what);

// Whether int8 weights are multiplied in int8 (the activation rows quantised
// too: nn/int8_gemm.h). kAuto: where int8_gemm_available(); kDequantised
// forces the weight-only paths every CPU has (widening GEMV, dequantised
// GEMM); kInt8 where it is available (parse_int8_gemm says why not).
enum class Int8Gemm { kAuto, kInt8, kDequantised };
void set_int8_gemm(Int8Gemm mode);
bool int8_int8_gemm();  // what kAuto resolved to, or the forced choice
// "auto", "int8", "fp32"; ConfigError naming `what` otherwise, or when "int8"
// is asked for where it cannot run.
Int8Gemm parse_int8_gemm(const std::string& name, const std::string& what);

// Which library multiplies float32 weights (RuntimeOptions::fp32_gemm; the
// choice moves the run's GEMMs to libtorch's OpenMP pool, util/threads.h).
enum class Fp32Gemm { kAuto, kOpenBlas, kOneDnn };
// "auto", "openblas", "onednn"; ConfigError naming `what` otherwise, or when
// "onednn" is asked for where oneDNN has no float32 kernel but its reference one.
Fp32Gemm parse_fp32_gemm(const std::string& name, const std::string& what);
// Whether `mode` means oneDNN here (kAuto: where its float32 kernel is AVX-512 brgemm).
bool fp32_gemm_onednn(Fp32Gemm mode);

}  // namespace blip2::nn
