#include "blip2/nn/dnnl_matmul.h"

#include <omp.h>

#include <c10/util/Exception.h>

#include <array>
#include <map>
#include <mutex>
#include <unordered_map>
#include <vector>

#ifdef BLIP2_HAVE_DNNL
#include <oneapi/dnnl/dnnl.hpp>
#endif

#include "blip2/util/cpu.h"
#include "blip2/util/threads.h"

namespace blip2::nn::dnnl_mm {

namespace {

// One product: `batch` independent (M, K) x (K, N) products. w is stored as
// (batch, N, K) rows when `w_rows` (a Linear weight, the keys of attention),
// else as (batch, K, N); `bias`: N floats added to every row (float32 only).
struct Shape {
  Kind kind;
  int64_t batch, M, K, N;
  bool w_rows, bias;
  std::array<int64_t, 7> key() const { return {static_cast<int64_t>(kind), batch, M, K, N, w_rows, bias}; }
};

#ifdef BLIP2_HAVE_DNNL

dnnl::engine& cpu_engine() {
  static dnnl::engine e(dnnl::engine::kind::cpu, 0);
  return e;
}

dnnl::matmul::primitive_desc describe(const Shape& s) {
  using dt = dnnl::memory::data_type;
  using tag = dnnl::memory::format_tag;
  const dt in = s.kind == Kind::kS8 ? dt::s8 : dt::f32, out = s.kind == Kind::kS8 ? dt::s32 : dt::f32;
  const dnnl::memory::desc a({s.batch, s.M, s.K}, in, tag::abc);
  const dnnl::memory::desc w({s.batch, s.K, s.N}, in, s.w_rows ? tag::acb : tag::abc);  // rows: w^T's columns
  const dnnl::memory::desc c({s.batch, s.M, s.N}, out, tag::abc);
  if (!s.bias) return dnnl::matmul::primitive_desc(dnnl::matmul::desc(a, w, c), cpu_engine());
  const dnnl::memory::desc b({1, 1, s.N}, dt::f32, tag::abc);
  return dnnl::matmul::primitive_desc(dnnl::matmul::desc(a, w, b, c), cpu_engine());
}

// Executing a primitive from several threads at once is allowed.
struct Matmul {
  dnnl::matmul::primitive_desc pd;
  dnnl::matmul prim;
  bool reference = false;  // only oneDNN's reference kernel for this shape
};

Matmul primitive_for(const Shape& shape) {
  static std::mutex mu;
  static std::map<std::array<int64_t, 7>, Matmul> cache;
  std::lock_guard<std::mutex> lock(mu);
  auto it = cache.find(shape.key());
  if (it != cache.end()) return it->second;
  if (cache.size() >= 256) cache.clear();  // many prompt lengths: start over rather than grow
  auto pd = describe(shape);
  const bool reference = std::string(pd.impl_info_str()).rfind("ref", 0) == 0;
  dnnl::matmul prim(pd);
  return cache.emplace(shape.key(), Matmul{std::move(pd), std::move(prim), reference}).first->second;
}

// False (nothing run) where oneDNN has only its reference kernel for the shape.
bool run(const Shape& shape, void* a, void* w, void* bias, void* c, bool refuse_reference = false) {
  dnnl::engine& e = cpu_engine();
  const Matmul mm = primitive_for(shape);
  if (mm.reference && refuse_reference) return false;
  dnnl::memory am(mm.pd.src_desc(), e, a), wm(mm.pd.weights_desc(), e, w), cm(mm.pd.dst_desc(), e, c);
  std::unordered_map<int, dnnl::memory> args{{DNNL_ARG_SRC, am}, {DNNL_ARG_WEIGHTS, wm}, {DNNL_ARG_DST, cm}};
  if (shape.bias) args.emplace(DNNL_ARG_BIAS, dnnl::memory(mm.pd.bias_desc(), e, bias));
  // oneDNN runs on the calling thread's OpenMP team: give it our kernels' count.
  struct Team {
    int before = omp_get_max_threads();
    explicit Team(int n) { omp_set_num_threads(n); }
    ~Team() { omp_set_num_threads(before); }
  } team(kernel_threads());
  dnnl::stream s(e);
  mm.prim.execute(s, args);
  s.wait();
  return true;
}

// Whether oneDNN's int8 product gives exact int32 sums at the extremes our
// quantisation produces (+-127 both sides). Without VNNI its kernels multiply
// with vpmaddubsw, whose 16-bit pair sums saturate once the signed
// activations are shifted to unsigned (255 * 127 * 2 > 32767): measured with
// oneDNN 2.6 on AVX2 and on AVX-512 without VNNI, the products came out wrong.
bool int8_sums_exact(int64_t M) {
  const int64_t K = 64, N = 16;
  for (const int8_t av : {int8_t{127}, int8_t{-127}}) {
    std::vector<int8_t> a(static_cast<size_t>(M * K), av), w(static_cast<size_t>(N * K), 127);
    std::vector<int32_t> c(static_cast<size_t>(M * N), 0);
    run(Shape{Kind::kS8, 1, M, K, N, true, false}, a.data(), w.data(), nullptr, c.data());
    for (const int32_t v : c)
      if (v != int32_t{av} * 127 * K) return false;
  }
  return true;
}

std::string probe(Kind kind) {
  const auto& f = cpu_features();
  if (!(f.avx2 && f.fma)) return "not available: the CPU has no AVX2+FMA";
  try {
    const std::string impl = describe(Shape{kind, 1, 64, 64, 64, true, false}).impl_info_str();
    if (impl.rfind("ref", 0) == 0)
      return std::string("not available: oneDNN has only its reference ") + (kind == Kind::kS8 ? "int8" : "float32") +
             " kernel here (" + impl + ")";
    if (kind == Kind::kS8 && !(int8_sums_exact(16) && int8_sums_exact(257)))
      return "not available: oneDNN's int8 kernel here (" + impl +
             ") saturates full-range int8 sums (no VNNI); int8 weights are multiplied in float32 instead";
    return impl;
  } catch (const dnnl::error& e) {
    return std::string("not available: oneDNN: ") + e.what();
  }
}

#else

std::string probe(Kind) { return "not available: built without oneDNN (libdnnl-dev)"; }
bool run(const Shape&, void*, void*, void*, void*, bool = false) { return false; }

#endif

}  // namespace

const std::string& impl(Kind kind) {
  static const std::string s8 = probe(Kind::kS8), f32 = probe(Kind::kF32);
  return kind == Kind::kS8 ? s8 : f32;
}

bool available(Kind kind) { return impl(kind).rfind("not available", 0) != 0; }

void matmul_s8(const int8_t* a, const int8_t* w, int32_t* c, int64_t M, int64_t K, int64_t N) {
  TORCH_CHECK(available(Kind::kS8), "dnnl_mm::matmul_s8: ", impl(Kind::kS8));
  run(Shape{Kind::kS8, 1, M, K, N, true, false}, const_cast<int8_t*>(a), const_cast<int8_t*>(w), nullptr, c);
}

void matmul_f32(const float* a, const float* w, const float* bias, float* c, int64_t M, int64_t K, int64_t N) {
  TORCH_CHECK(available(Kind::kF32), "dnnl_mm::matmul_f32: ", impl(Kind::kF32));
  run(Shape{Kind::kF32, 1, M, K, N, true, bias != nullptr}, const_cast<float*>(a), const_cast<float*>(w),
      const_cast<float*>(bias), c);
}

bool batched_f32(const float* a, const float* w, float* c, int64_t batch, int64_t M, int64_t K, int64_t N,
                 bool w_rows) {
  if (!available(Kind::kF32)) return false;
  return run(Shape{Kind::kF32, batch, M, K, N, w_rows, false}, const_cast<float*>(a), const_cast<float*>(w), nullptr, c,
             /*refuse_reference=*/true);
}

}  // namespace blip2::nn::dnnl_mm
