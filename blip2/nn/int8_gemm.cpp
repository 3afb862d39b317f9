#include "blip2/nn/int8_gemm.h"

#include <immintrin.h>
#include <omp.h>

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "blip2/nn/dnnl_matmul.h"
#include "blip2/nn/gemm.h"
#include "blip2/util/cpu.h"
#include "blip2/util/threads.h"

namespace blip2::nn {

namespace {

// Row x (K floats) -> q = round(x / s) with s = max|x| / 127 (1 for a row of
// zeros, whose q is all 0); returns s. 32 floats at a time: four vectors of
// int32 packed with saturation to 32 int8 and put back in order.
__attribute__((target("avx2,fma"))) float quantize_row(const float* x, int8_t* q, int64_t K) {
  const __m256 sign = _mm256_set1_ps(-0.0f);
  __m256 mx = _mm256_setzero_ps();
  const int64_t K8 = K / 8 * 8, K32 = K / 32 * 32;
  for (int64_t k = 0; k < K8; k += 8) mx = _mm256_max_ps(mx, _mm256_andnot_ps(sign, _mm256_loadu_ps(x + k)));
  __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(mx), _mm256_extractf128_ps(mx, 1));
  m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
  m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
  float amax = _mm_cvtss_f32(m4);
  for (int64_t k = K8; k < K; ++k) amax = std::max(amax, std::fabs(x[k]));
  const float s = amax > 0 ? amax / 127.0f : 1.0f;
  const float inv = 1.0f / s;
  const __m256 iv = _mm256_set1_ps(inv);
  const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
  for (int64_t k = 0; k < K32; k += 32) {
    const __m256i a = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + k), iv));
    const __m256i b = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + k + 8), iv));
    const __m256i c = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + k + 16), iv));
    const __m256i d = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + k + 24), iv));
    // packs work per 128-bit lane: the result holds a0-3 b0-3 c0-3 d0-3 a4-7 ...
    const __m256i abcd = _mm256_packs_epi16(_mm256_packs_epi32(a, b), _mm256_packs_epi32(c, d));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(q + k), _mm256_permutevar8x32_epi32(abcd, order));
  }
  // The tail rounds like cvtps (to nearest, ties to even: the default mode).
  for (int64_t k = K32; k < K; ++k) q[k] = static_cast<int8_t>(std::clamp(std::nearbyint(x[k] * inv), -127.0f, 127.0f));
  return s;
}

// In place over the int32 sums: y[n] = acc[n] * (sx * sw[n]) + b[n] for one row.
__attribute__((target("avx2,fma"))) void rescale_row(float* y, float sx, const float* sw, const float* b, int64_t N) {
  auto* acc = reinterpret_cast<const int32_t*>(y);
  const int64_t N8 = N / 8 * 8;
  const __m256 vs = _mm256_set1_ps(sx);
  for (int64_t n = 0; n < N8; n += 8) {
    const __m256 a = _mm256_cvtepi32_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(acc + n)));
    const __m256 s = _mm256_mul_ps(vs, _mm256_loadu_ps(sw + n));
    _mm256_storeu_ps(y + n, b ? _mm256_fmadd_ps(a, s, _mm256_loadu_ps(b + n)) : _mm256_mul_ps(a, s));
  }
  for (int64_t n = N8; n < N; ++n) {
    const float a = static_cast<float>(acc[n]);
    y[n] = a * (sx * sw[n]) + (b ? b[n] : 0.0f);
  }
}

// Few rows (decoding, beams): int32 sums acc[m, n] = Xq[m] . Q[n] for rows
// n0..n1 of Q, each weight row read once for all M rows of Xq. int8 x int8
// products with an unsigned operand: |Q| times Xq with Q's sign moved onto it.
// AVX2: vpmaddubsw (pairs into int16: 2 x 127 x 127 fits) + vpmaddwd.
template <int M>
__attribute__((target("avx2,fma"))) void gemv_sums_avx2(const int8_t* xq, const int8_t* w, int32_t* acc, int64_t K,
                                                        int64_t n0, int64_t n1, int64_t N) {
  const int64_t K32 = K / 32 * 32;
  const __m256i ones = _mm256_set1_epi16(1);
  for (int64_t n = n0; n < n1; ++n) {
    const int8_t* row = w + n * K;
    __m256i s[M];
    for (int m = 0; m < M; ++m) s[m] = _mm256_setzero_si256();
    for (int64_t k = 0; k < K32; k += 32) {
      const __m256i wv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(row + k));
      const __m256i aw = _mm256_sign_epi8(wv, wv);
      for (int m = 0; m < M; ++m) {
        const __m256i xv = _mm256_sign_epi8(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq + m * K + k)), wv);
        s[m] = _mm256_add_epi32(s[m], _mm256_madd_epi16(_mm256_maddubs_epi16(aw, xv), ones));
      }
    }
    for (int m = 0; m < M; ++m) {
      __m128i t = _mm_add_epi32(_mm256_castsi256_si128(s[m]), _mm256_extracti128_si256(s[m], 1));
      t = _mm_add_epi32(t, _mm_shuffle_epi32(t, 0x4e));
      t = _mm_add_epi32(t, _mm_shuffle_epi32(t, 0xb1));
      int32_t sum = _mm_cvtsi128_si32(t);
      for (int64_t k = K32; k < K; ++k) sum += int32_t{xq[m * K + k]} * row[k];
      acc[m * N + n] = sum;
    }
  }
}

// AVX-512 VNNI: vpdpbusd multiplies 64 byte pairs and adds them in groups of 4.
template <int M>
__attribute__((target("avx512f,avx512bw,avx512vnni"))) void gemv_sums_vnni(const int8_t* xq, const int8_t* w,
                                                                           int32_t* acc, int64_t K, int64_t n0,
                                                                           int64_t n1, int64_t N) {
  const int64_t K64 = K / 64 * 64;
  const __m512i zero = _mm512_setzero_si512();
  for (int64_t n = n0; n < n1; ++n) {
    const int8_t* row = w + n * K;
    __m512i s[M];
    for (int m = 0; m < M; ++m) s[m] = _mm512_setzero_si512();
    for (int64_t k = 0; k < K64; k += 64) {
      const __m512i wv = _mm512_loadu_si512(row + k);
      const __m512i aw = _mm512_abs_epi8(wv);
      const __mmask64 negative = _mm512_movepi8_mask(wv);
      for (int m = 0; m < M; ++m) {
        const __m512i xv = _mm512_loadu_si512(xq + m * K + k);
        s[m] = _mm512_dpbusd_epi32(s[m], aw, _mm512_mask_sub_epi8(xv, negative, zero, xv));
      }
    }
    for (int m = 0; m < M; ++m) {
      int32_t sum = _mm512_reduce_add_epi32(s[m]);
      for (int64_t k = K64; k < K; ++k) sum += int32_t{xq[m * K + k]} * row[k];
      acc[m * N + n] = sum;
    }
  }
}

bool has_vnni() {
  return cpu_features().avx512_vnni && cpu_features().avx512bw;
}

template <int M>
void gemv_sums(const int8_t* xq, const int8_t* w, int32_t* acc, int64_t K, int64_t N, bool vnni) {
  constexpr int64_t kChunk = 16;  // rows of Q per work item
  const int64_t chunks = (N + kChunk - 1) / kChunk;
  const int threads = static_cast<int>(std::min<int64_t>(kernel_threads(), chunks));
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int64_t c = 0; c < chunks; ++c) {
    const int64_t n0 = c * kChunk, n1 = std::min(N, n0 + kChunk);
    if (vnni) gemv_sums_vnni<M>(xq, w, acc, K, n0, n1, N);
    else gemv_sums_avx2<M>(xq, w, acc, K, n0, n1, N);
  }
}

// Rows per thread below which one thread does the element-wise passes.
constexpr int64_t kRowsPerThread = 16;

}  // namespace

const std::string& int8_gemm_impl() { return dnnl_mm::impl(dnnl_mm::Kind::kS8); }

const char* int8_gemv_kernel() { return has_vnni() ? "avx512-vnni" : "avx2"; }

bool int8_gemm_available() { return int8_gemm_impl().rfind("not available", 0) != 0; }

at::Tensor int8_gemv(const at::Tensor& x, const at::Tensor& q, const at::Tensor& scale, const float* bias,
                     bool avx2_only) {
  TORCH_CHECK(int8_gemm_available(), "int8_gemv: ", int8_gemm_impl());
  const int64_t M = x.size(0), K = x.size(1), N = q.size(0);
  TORCH_CHECK(M >= 1 && M <= kGemvRows, "int8_gemv: ", M, " rows, at most ", kGemvRows);
  std::vector<int8_t> xq(static_cast<size_t>(M * K));
  float sx[kGemvRows];
  for (int64_t m = 0; m < M; ++m) sx[m] = quantize_row(x.data_ptr<float>() + m * K, xq.data() + m * K, K);
  auto y = at::empty({M, N}, x.options());  // the int32 sums first, then y in place
  float* yp = y.data_ptr<float>();
  auto* acc = reinterpret_cast<int32_t*>(yp);
  const int8_t* w = q.data_ptr<int8_t>();
  const bool vnni = has_vnni() && !avx2_only;
  switch (M) {
    case 1: gemv_sums<1>(xq.data(), w, acc, K, N, vnni); break;
    case 2: gemv_sums<2>(xq.data(), w, acc, K, N, vnni); break;
    case 3: gemv_sums<3>(xq.data(), w, acc, K, N, vnni); break;
    case 4: gemv_sums<4>(xq.data(), w, acc, K, N, vnni); break;
    case 5: gemv_sums<5>(xq.data(), w, acc, K, N, vnni); break;
    case 6: gemv_sums<6>(xq.data(), w, acc, K, N, vnni); break;
    case 7: gemv_sums<7>(xq.data(), w, acc, K, N, vnni); break;
    default: gemv_sums<8>(xq.data(), w, acc, K, N, vnni); break;
  }
  for (int64_t m = 0; m < M; ++m) rescale_row(yp + m * N, sx[m], scale.data_ptr<float>(), bias, N);
  return y;
}

at::Tensor int8_gemm(const at::Tensor& x, const at::Tensor& q, const at::Tensor& scale, const float* bias) {
  TORCH_CHECK(int8_gemm_available(), "int8_gemm: ", int8_gemm_impl());
  const int64_t M = x.size(0), K = x.size(1), N = q.size(0);
  auto xq = at::empty({M, K}, x.options().dtype(at::kChar));
  auto sx = at::empty({M}, x.options());
  auto y = at::empty({M, N}, x.options());  // the int32 sums first, then y in place
  const float* xp = x.data_ptr<float>();
  int8_t* xqp = xq.data_ptr<int8_t>();
  float* sxp = sx.data_ptr<float>();
  float* yp = y.data_ptr<float>();
  const float* sw = scale.data_ptr<float>();
  const int threads = static_cast<int>(std::clamp<int64_t>(M / kRowsPerThread, 1, kernel_threads()));
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int64_t m = 0; m < M; ++m) sxp[m] = quantize_row(xp + m * K, xqp + m * K, K);
  dnnl_mm::matmul_s8(xqp, q.data_ptr<int8_t>(), reinterpret_cast<int32_t*>(yp), M, K, N);
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int64_t m = 0; m < M; ++m) rescale_row(yp + m * N, sxp[m], sw, bias, N);
  return y;
}

}  // namespace blip2::nn
