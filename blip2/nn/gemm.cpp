#include "blip2/nn/gemm.h"

#include <immintrin.h>
#include <omp.h>

#include <ATen/ATen.h>

#include <algorithm>
#include <atomic>

#include "blip2/nn/dnnl_matmul.h"
#include "blip2/nn/int8_gemm.h"
#include "blip2/util/cpu.h"
#include "blip2/util/error.h"
#include "blip2/util/threads.h"

namespace blip2::nn {

namespace {

std::atomic<Bf16Gemm> g_bf16_gemm{Bf16Gemm::kAuto};
std::atomic<Int8Gemm> g_int8_gemm{Int8Gemm::kAuto};

bool has_avx2_fma() {
  const auto& f = cpu_features();
  return f.avx2 && f.fma;
}

// Weight rows widened to float32 at a time by the 16-bit path: ~8 MiB,
// big enough for BLAS to run at full speed, well inside the last-level cache.
int64_t widen_block_rows(int64_t k) { return std::max<int64_t>(64, (int64_t{1} << 21) / std::max<int64_t>(1, k)); }

// 8 floats of weight row `w` at column k, as float32.
__attribute__((target("avx2,fma"))) inline __m256 load8(const float* w, int64_t k) { return _mm256_loadu_ps(w + k); }
__attribute__((target("avx2,fma"))) inline __m256 load8(const at::BFloat16* w, int64_t k) {
  // bf16 is the top half of a float32: widen 16 -> 32 bits and shift.
  const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(w + k));
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}
// int8 -> int32 -> float32 (exact: |q| <= 127).
__attribute__((target("avx2,fma"))) inline __m256 load8(const int8_t* w, int64_t k) {
  return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(w + k))));
}
__attribute__((target("avx2,fma"))) void widen_bf16(const at::BFloat16* src, float* dst, int64_t n) {
  const int64_t n8 = n / 8 * 8;
  for (int64_t i = 0; i < n8; i += 8) _mm256_storeu_ps(dst + i, load8(src, i));
  for (int64_t i = n8; i < n; ++i) dst[i] = static_cast<float>(src[i]);
}

// rows x K int8 weights times one scale per row, into float32.
__attribute__((target("avx2,fma"))) void dequantize_i8(const int8_t* src, const float* scale, float* dst, int64_t rows,
                                                       int64_t K) {
  const int64_t K8 = K / 8 * 8;
  for (int64_t r = 0; r < rows; ++r) {
    const int8_t* q = src + r * K;
    float* d = dst + r * K;
    const __m256 s = _mm256_set1_ps(scale[r]);
    for (int64_t k = 0; k < K8; k += 8) _mm256_storeu_ps(d + k, _mm256_mul_ps(load8(q, k), s));
    for (int64_t k = K8; k < K; ++k) d[k] = q[k] * scale[r];
  }
}

inline float to_float(float v) { return v; }
inline float to_float(at::BFloat16 v) { return static_cast<float>(v); }
inline float to_float(int8_t v) { return static_cast<float>(v); }

__attribute__((target("avx2,fma"))) inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// y (M, N) = x (M, K) W^T (+ b) for M <= kGemvRows: each weight row is read
// once and multiplied into every row of x. Rows of W are split over threads.
// `s`: one scale per row of W (int8 weights), or null.
template <typename W, int M>
__attribute__((target("avx2,fma"))) void gemv_rows(const float* x, const W* w, const float* s, const float* b, float* y,
                                                   int64_t K, int64_t n0, int64_t n1, int64_t N) {
  const int64_t K8 = K / 8 * 8;
  for (int64_t n = n0; n < n1; ++n) {
    const W* row = w + n * K;
    __m256 acc[M];
    for (int m = 0; m < M; ++m) acc[m] = _mm256_setzero_ps();
    for (int64_t k = 0; k < K8; k += 8) {
      const __m256 wv = load8(row, k);
      for (int m = 0; m < M; ++m) acc[m] = _mm256_fmadd_ps(wv, _mm256_loadu_ps(x + m * K + k), acc[m]);
    }
    for (int m = 0; m < M; ++m) {
      float sum = hsum(acc[m]);
      for (int64_t k = K8; k < K; ++k) sum += to_float(row[k]) * x[m * K + k];
      y[m * N + n] = (s ? sum * s[n] : sum) + (b ? b[n] : 0.f);
    }
  }
}

template <typename W, int M>
void gemv_split(const float* x, const W* w, const float* s, const float* b, float* y, int64_t K, int64_t N) {
  constexpr int64_t kChunk = 16;  // rows of W per work item
  const int64_t chunks = (N + kChunk - 1) / kChunk;
  const int threads = static_cast<int>(std::min<int64_t>(kernel_threads(), chunks));
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int64_t c = 0; c < chunks; ++c)
    gemv_rows<W, M>(x, w, s, b, y, K, c * kChunk, std::min(N, (c + 1) * kChunk), N);
}

template <typename W>
void gemv(const float* x, const W* w, const float* s, const float* b, float* y, int64_t M, int64_t K, int64_t N) {
  switch (M) {
    case 1: return gemv_split<W, 1>(x, w, s, b, y, K, N);
    case 2: return gemv_split<W, 2>(x, w, s, b, y, K, N);
    case 3: return gemv_split<W, 3>(x, w, s, b, y, K, N);
    case 4: return gemv_split<W, 4>(x, w, s, b, y, K, N);
    case 5: return gemv_split<W, 5>(x, w, s, b, y, K, N);
    case 6: return gemv_split<W, 6>(x, w, s, b, y, K, N);
    case 7: return gemv_split<W, 7>(x, w, s, b, y, K, N);
    default: return gemv_split<W, 8>(x, w, s, b, y, K, N);
  }
}


}  // namespace

void set_bf16_gemm(Bf16Gemm mode) { g_bf16_gemm = mode; }

bool native_bf16_gemm() {
  const auto m = g_bf16_gemm.load();
  return m == Bf16Gemm::kAuto ? cpu_features().native_bf16() : m == Bf16Gemm::kNative;
}

Bf16Gemm parse_bf16_gemm(const std::string& name, const std::string& what) {
  if (name == "auto") return Bf16Gemm::kAuto;
  if (name == "native") return Bf16Gemm::kNative;
  if (name == "fp32" || name == "float32") return Bf16Gemm::kWidened;
  throw ConfigError(what + " '" + name + "' is not one of auto, native (the CPU's bf16 GEMM), fp32 (widen the "
                    "weights and multiply in float32)");
}

void set_int8_gemm(Int8Gemm mode) { g_int8_gemm = mode; }

bool int8_int8_gemm() { return g_int8_gemm.load() != Int8Gemm::kDequantised && int8_gemm_available(); }

Int8Gemm parse_int8_gemm(const std::string& name, const std::string& what) {
  if (name == "auto") return Int8Gemm::kAuto;
  if (name == "fp32" || name == "float32") return Int8Gemm::kDequantised;
  if (name == "int8") {
    if (!int8_gemm_available())
      throw ConfigError(what + " int8: the int8 x int8 GEMM is " + int8_gemm_impl() + "; use auto or fp32");
    return Int8Gemm::kInt8;
  }
  throw ConfigError(what + " '" + name + "' is not one of auto, int8 (int8 x int8 products where the CPU has an "
                    "int8 GEMM), fp32 (int8 weights only, multiplied in float32)");
}

Fp32Gemm parse_fp32_gemm(const std::string& name, const std::string& what) {
  if (name == "auto") return Fp32Gemm::kAuto;
  if (name == "openblas") return Fp32Gemm::kOpenBlas;
  if (name == "onednn") {
    if (!dnnl_mm::available(dnnl_mm::Kind::kF32))
      throw ConfigError(what + " onednn cannot run here (" + dnnl_mm::impl(dnnl_mm::Kind::kF32) +
                        "); use auto or openblas");
    return Fp32Gemm::kOneDnn;
  }
  throw ConfigError(what + " '" + name + "' is not one of auto, openblas (OpenBLAS's sgemm), onednn (oneDNN's "
                    "float32 matmul on the OpenMP pool)");
}

bool fp32_gemm_onednn(Fp32Gemm mode) {
  if (mode == Fp32Gemm::kOpenBlas) return false;
  if (mode == Fp32Gemm::kOneDnn) return dnnl_mm::available(dnnl_mm::Kind::kF32);
  return dnnl_mm::impl(dnnl_mm::Kind::kF32).rfind("brg:avx512", 0) == 0;
}

LinearPath linear_path(const at::Tensor& x, const at::Tensor& weight) {
  const auto wt = weight.scalar_type();
  const bool f32_x = x.scalar_type() == at::kFloat;
  const bool half_w = wt == at::kBFloat16 || wt == at::kHalf;
  const bool i8_w = wt == at::kChar;
  const bool grad = at::GradMode::is_enabled() && (x.requires_grad() || weight.requires_grad());
  if (!x.device().is_cpu() || !weight.device().is_cpu() || grad ||
      !weight.is_contiguous() || weight.dim() != 2 || !f32_x || !(wt == at::kFloat || half_w || i8_w))
    return LinearPath::kTorch;
  const int64_t rows = x.dim() == 0 ? 0 : x.numel() / std::max<int64_t>(1, x.size(-1));
  if (i8_w) {
    if (rows >= 1 && int8_int8_gemm()) return rows <= kGemvRows ? LinearPath::kInt8Gemv : LinearPath::kInt8Gemm;
    return rows >= 1 && rows <= kGemvRows && has_avx2_fma() ? LinearPath::kGemvI8 : LinearPath::kDequantI8;
  }
  if (rows >= 1 && rows <= kGemvRows && has_avx2_fma() && wt != at::kHalf)
    return wt == at::kFloat ? LinearPath::kGemvF32 : LinearPath::kGemvBF16;
  if (wt == at::kFloat && rows >= 1 && float32_gemm_on_openmp() && dnnl_mm::available(dnnl_mm::Kind::kF32))
    return LinearPath::kDnnlF32;
  if (!half_w) return LinearPath::kTorch;
  return wt == at::kBFloat16 && native_bf16_gemm() ? LinearPath::kNativeBF16 : LinearPath::kWidened;
}

const char* linear_path_name(LinearPath p) {
  switch (p) {
    case LinearPath::kGemvF32: return "gemv-fp32";
    case LinearPath::kGemvBF16: return "gemv-bf16";
    case LinearPath::kNativeBF16: return "bf16-native-gemm";
    case LinearPath::kWidened: return "widened-fp32-gemm";
    case LinearPath::kGemvI8: return "gemv-int8";
    case LinearPath::kDequantI8: return "int8-dequantised-fp32-gemm";
    case LinearPath::kInt8Gemm: return "int8-int8-gemm";
    case LinearPath::kInt8Gemv: return "int8-int8-gemv";
    case LinearPath::kDnnlF32: return "onednn-fp32-gemm";
    default: return "torch";
  }
}

namespace {

// Rows n0..n1 of a 16-bit or int8 weight as float32 into wb, split over `threads`.
void widen_rows(const at::Tensor& weight, const at::Tensor& scale, int64_t n0, int64_t n1, at::Tensor& wb,
                int threads) {
  const int64_t K = weight.size(1);
  const bool i8 = weight.scalar_type() == at::kChar;
  if (!has_avx2_fma() || !(i8 || weight.scalar_type() == at::kBFloat16)) {
    wb.copy_(i8 ? weight.slice(0, n0, n1).to(at::kFloat).mul_(scale.slice(0, n0, n1).unsqueeze(1))
                : weight.slice(0, n0, n1));
    return;
  }
  constexpr int64_t kRowsPerTask = 16;
  const int64_t tasks = (n1 - n0 + kRowsPerTask - 1) / kRowsPerTask;
  float* dst = wb.data_ptr<float>();
  const int8_t* q = i8 ? weight.data_ptr<int8_t>() : nullptr;
  const float* sw = i8 ? scale.data_ptr<float>() : nullptr;
  const at::BFloat16* h = i8 ? nullptr : weight.data_ptr<at::BFloat16>();
#pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1)
  for (int64_t t = 0; t < tasks; ++t) {
    const int64_t r0 = n0 + t * kRowsPerTask, r1 = std::min(n1, r0 + kRowsPerTask);
    if (i8) dequantize_i8(q + r0 * K, sw + r0, dst + (r0 - n0) * K, r1 - r0, K);
    else widen_bf16(h + r0 * K, dst + (r0 - n0) * K, (r1 - r0) * K);
  }
}

// x2 (M, K) float32 times a 16-bit or int8 weight: blocks of weight rows
// widened to float32 into one cache-sized buffer and multiplied there. In a
// run whose GEMMs live on the OpenMP pool (float32_gemm_on_openmp()) both the
// widening and oneDNN's product use all its threads; on OpenBLAS's pool the
// widening stays on one core (an OpenMP team beside OpenBLAS's threads would
// spin against them) and BLAS multiplies.
at::Tensor widened_linear(const at::Tensor& x2, const at::Tensor& weight, const at::Tensor& scale,
                          const at::Tensor& b) {
  const int64_t M = x2.size(0), K = weight.size(1), N = weight.size(0);
  const bool dnnl = float32_gemm_on_openmp() && dnnl_mm::available(dnnl_mm::Kind::kF32);
  const int threads = dnnl ? kernel_threads() : 1;
  const int64_t rows = widen_block_rows(K);
  auto buf = at::empty({std::min(rows, N), K}, x2.options());
  at::Tensor y, part;  // part: one block's product when there are several
  for (int64_t n0 = 0; n0 < N; n0 += rows) {
    const int64_t n1 = std::min(N, n0 + rows);
    const bool whole = n0 == 0 && n1 == N;
    auto wb = buf.slice(0, 0, n1 - n0);
    widen_rows(weight, scale, n0, n1, wb, threads);
    if (dnnl) {
      if (!y.defined()) y = at::empty({M, N}, x2.options());
      if (!whole && !part.defined()) part = at::empty({M * rows}, x2.options());  // (M, n1 - n0) in its front
      float* out = whole ? y.data_ptr<float>() : part.data_ptr<float>();
      dnnl_mm::matmul_f32(x2.data_ptr<float>(), wb.data_ptr<float>(), b.defined() ? b.data_ptr<float>() + n0 : nullptr,
                          out, M, K, n1 - n0);
      if (!whole) y.slice(1, n0, n1).copy_(part.narrow(0, 0, M * (n1 - n0)).view({M, n1 - n0}));
      continue;
    }
    if (whole) return b.defined() ? at::addmm(b, x2, wb.t()) : at::mm(x2, wb.t());
    if (!y.defined()) y = at::empty({M, N}, x2.options());
    y.slice(1, n0, n1).copy_(b.defined() ? at::addmm(b.slice(0, n0, n1), x2, wb.t()) : at::mm(x2, wb.t()));
  }
  return y;
}

}  // namespace

at::Tensor linear(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias, const at::Tensor& scale) {
  const auto path = linear_path(x, weight);
  if (weight.scalar_type() == at::kChar) {
    TORCH_CHECK(scale.defined() && scale.scalar_type() == at::kFloat && scale.dim() == 1 &&
                    scale.size(0) == weight.size(0) && scale.is_contiguous(),
                "linear: an int8 weight of ", weight.size(0), " rows needs a contiguous float32 scale per row");
    if (path == LinearPath::kTorch) {  // another device, autograd: the weight dequantised
      const auto t = x.scalar_type();
      const auto w = (weight.to(at::kFloat) * scale.to(weight.device()).unsqueeze(1)).to(t);
      return at::linear(x, w, bias.defined() ? bias.to(t) : bias);
    }
  }
  if (path == LinearPath::kTorch) {
    if (weight.scalar_type() == x.scalar_type()) return at::linear(x, weight, bias);
    // Mixed dtypes the kernels do not take (autograd through 16-bit weights):
    // the weight in the activations' dtype.
    const auto t = x.scalar_type();
    return at::linear(x, weight.to(t), bias.defined() ? bias.to(t) : bias);
  }
  const int64_t K = weight.size(1), N = weight.size(0);
  TORCH_CHECK(x.size(-1) == K, "linear: input has ", x.size(-1), " features, the weight ", K);
  auto out_shape = x.sizes().vec();
  out_shape.back() = N;
  const auto x2 = x.reshape({-1, K}).contiguous();
  const int64_t M = x2.size(0);
  const at::Tensor b = bias.defined() ? bias.to(at::kFloat).contiguous() : at::Tensor();
  const float* bp = b.defined() ? b.data_ptr<float>() : nullptr;
  if (path == LinearPath::kInt8Gemm) return int8_gemm(x2, weight, scale, bp).view(out_shape);
  if (path == LinearPath::kInt8Gemv) return int8_gemv(x2, weight, scale, bp).view(out_shape);
  if (path == LinearPath::kDnnlF32) {
    auto y = at::empty({M, N}, x2.options());
    dnnl_mm::matmul_f32(x2.data_ptr<float>(), weight.data_ptr<float>(), bp, y.data_ptr<float>(), M, K, N);
    return y.view(out_shape);
  }
  if (path == LinearPath::kNativeBF16) {
    auto y = at::linear(x2.to(at::kBFloat16), weight).to(at::kFloat);
    if (b.defined()) y.add_(b);
    return y.view(out_shape);
  }
  if (path == LinearPath::kWidened || path == LinearPath::kDequantI8)
    return widened_linear(x2, weight, scale, b).view(out_shape);
  auto y = at::empty({M, N}, x2.options());
  if (path == LinearPath::kGemvF32)
    gemv(x2.data_ptr<float>(), weight.data_ptr<float>(), nullptr, bp, y.data_ptr<float>(), M, K, N);
  else if (path == LinearPath::kGemvI8)
    gemv(x2.data_ptr<float>(), weight.data_ptr<int8_t>(), scale.data_ptr<float>(), bp, y.data_ptr<float>(), M, K, N);
  else
    gemv(x2.data_ptr<float>(), weight.data_ptr<at::BFloat16>(), nullptr, bp, y.data_ptr<float>(), M, K, N);
  return y.view(out_shape);
}

// Rows below which a batched product stays on libtorch's matmul. The vision
// encoder's 257 tokens gain from oneDNN's two threads (vision 433 -> 376 ms in
// int8, docs/performance.md); a prompt's length changes from request to
// request and each new shape costs oneDNN a new kernel, so the Q-Former's 32
// queries, prefills and decoding stay where they were.
constexpr int64_t kBatchedRows = 64;

at::Tensor matmul(const at::Tensor& a, const at::Tensor& b) {
  const bool grad = at::GradMode::is_enabled() && (a.requires_grad() || b.requires_grad());
  const auto d = a.dim();
  if (!float32_gemm_on_openmp() || grad || !a.device().is_cpu() || !b.device().is_cpu() ||
      a.scalar_type() != at::kFloat || b.scalar_type() != at::kFloat || d < 3 || b.dim() != d ||
      a.sizes().slice(0, d - 2) != b.sizes().slice(0, d - 2) || a.size(-1) != b.size(-2) ||
      a.size(-2) < kBatchedRows || a.numel() == 0 || b.numel() == 0)
    return at::matmul(a, b);
  const int64_t M = a.size(-2), K = a.size(-1), N = b.size(-1), batch = a.numel() / (M * K);
  const auto a3 = a.contiguous();
  // Keys arrive as k.transpose(-1, -2): read them as (N, K) rows, copied only if k is a view.
  const bool rows = b.stride(-2) == 1;
  const auto w = rows ? b.transpose(-1, -2).contiguous() : b.contiguous();
  auto shape = a.sizes().vec();
  shape.back() = N;
  auto c = at::empty(shape, a.options());
  if (!dnnl_mm::batched_f32(a3.data_ptr<float>(), w.data_ptr<float>(), c.data_ptr<float>(), batch, M, K, N, rows))
    return at::matmul(a, b);
  return c;
}

}  // namespace blip2::nn
