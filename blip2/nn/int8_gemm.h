// int8 x int8 matrix products: how nn::linear multiplies many rows of
// activations by int8 weights (nn/quant.h) when the CPU has an int8 GEMM.
//
//   y[m, n] = sum_k x[m, k] W[n, k] + b[n],   W[n, k] = Q[n, k] * sw[n]
//
// Each row of x is quantised on the fly, symmetric with its own scale
// (sx[m] = max_k |x[m, k]| / 127, Xq = round(x / sx) in [-127, 127]); oneDNN
// multiplies Xq by Q in int8 with int32 sums (its kernel for this CPU, chosen
// by oneDNN at run time: AVX-512 VNNI, AVX-512, AVX2 ...), and
//
//   y[m, n] = acc[m, n] * sx[m] * sw[n] + b[n].
//
// This is W8A8: besides the weights' rounding (at most sw[n] / 2 each), each
// activation moves by at most sx[m] / 2, so |y - x W^T| is bounded by
// sx[m] / 2 * sw[n] * sum_k |Q[n, k]| (tests/unit/int8_gemm_test.cpp checks
// that bound). Per-row activation scales keep one outlier token from
// coarsening every other token's steps.
//
// Built only where oneDNN's headers were found (BLIP2_HAVE_DNNL); elsewhere,
// and on CPUs where oneDNN has no int8 kernel but its reference one, it is
// not available and linear() dequantises the weights instead (nn/gemm.h).
#pragma once

#include <torch/types.h>

#include <string>

namespace blip2::nn {

// Whether the int8 x int8 product can run here (oneDNN present, an AVX2 CPU,
// and oneDNN has a non-reference int8 matmul for it). Decided once.
bool int8_gemm_available();
// oneDNN's name for the kernel it uses ("brg:avx512_core_vnni", ...), or why
// the path is not available.
const std::string& int8_gemm_impl();
// int8_gemv's kernel on this CPU: "avx512-vnni" or "avx2".
const char* int8_gemv_kernel();

// x (M, K) float32 contiguous, q (N, K) int8 contiguous, scale (N) float32,
// bias (N) float32 or null -> y (M, N) float32. int8_gemm_available() must
// hold. Threads: kernel_threads().
at::Tensor int8_gemm(const at::Tensor& x, const at::Tensor& q, const at::Tensor& scale, const float* bias);
// The same product for 1..kGemvRows rows (decoding, beams) without oneDNN:
// our kernel, each weight row read once for all rows (AVX-512 VNNI vpdpbusd
// where the CPU has it, else AVX2 vpmaddubsw + vpmaddwd). Same arguments, same
// result as int8_gemm bit for bit up to the rescale's float rounding.
// `avx2_only`: the AVX2 kernel even on a VNNI CPU (tests check both).
at::Tensor int8_gemv(const at::Tensor& x, const at::Tensor& q, const at::Tensor& scale, const float* bias,
                     bool avx2_only = false);

}  // namespace blip2::nn
