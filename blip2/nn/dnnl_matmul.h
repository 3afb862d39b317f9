// oneDNN matrix products on libtorch's OpenMP pool: c (M, N) = a (M, K) w^T,
// with w stored as our (N, K) weight rows. Two kinds:
// - int8 x int8 -> exact int32 sums (nn/int8_gemm.h quantises and rescales);
// - float32 (+ bias; or batched, for attention): the float32 products of a run whose GEMMs live on the
//   OpenMP pool (int8 x int8, native bf16: util/threads.h), where OpenBLAS is
//   kept at one thread so that the two pools do not spin against each other.
//   Without it the Q-Former, float32 in an int8 run, would get one core.
//
// One primitive per (kind, M, K, N), built once: building one costs more than
// running a small one. oneDNN picks its kernel for this CPU at run time;
// where it has only its reference kernel the kind is "not available" and the
// callers keep their other paths. Built with oneDNN only where its headers
// were found (BLIP2_HAVE_DNNL).
#pragma once

#include <cstdint>
#include <string>

namespace blip2::nn::dnnl_mm {

enum class Kind { kS8, kF32 };

// oneDNN's name for the kernel it runs for `kind` here ("brg:avx512_core_vnni",
// ...), or a sentence starting "not available" saying why not. Decided once.
const std::string& impl(Kind kind);
bool available(Kind kind);

// int8 a (M, K) x int8 w (N, K) -> int32 c (M, N). available(kS8) must hold.
void matmul_s8(const int8_t* a, const int8_t* w, int32_t* c, int64_t M, int64_t K, int64_t N);
// float32 c = a w^T + bias (bias: N floats or null). available(kF32) must hold.
void matmul_f32(const float* a, const float* w, const float* bias, float* c, int64_t M, int64_t K, int64_t N);
// `batch` float32 products c[i] (M, N) = a[i] (M, K) x w[i], all contiguous;
// w[i] is (N, K) rows when `w_rows` (attention's keys), else (K, N).
// False, with nothing written, where this cannot run here (oneDNN absent, or
// only its reference kernel for these shapes): the caller multiplies instead.
bool batched_f32(const float* a, const float* w, float* c, int64_t batch, int64_t M, int64_t K, int64_t N, bool w_rows);

}  // namespace blip2::nn::dnnl_mm
