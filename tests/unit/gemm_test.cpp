// nn::linear's kernels against libtorch's float32 linear on the same
// (widened) weights: every path, row count, odd widths, with and without bias.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "blip2/blip2.h"
#include "blip2/model/model_dir.h"
#include "blip2/nn/dnnl_matmul.h"
#include "blip2/nn/gemm.h"
#include "blip2/nn/quant.h"
#include "blip2/util/cpu.h"
#include "blip2/util/error.h"
#include "blip2/util/threads.h"

namespace blip2::nn {
namespace {

bool avx2() { return cpu_features().avx2 && cpu_features().fma; }

struct Restore {
  ~Restore() { set_bf16_gemm(Bf16Gemm::kAuto); }
};

void expect_matches(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b, double tol) {
  torch::NoGradGuard g;
  const auto want = at::linear(x, w.to(at::kFloat), b.defined() ? b.to(at::kFloat) : b);
  const auto got = nn::linear(x, w, b);
  ASSERT_EQ(got.sizes(), want.sizes());
  ASSERT_EQ(got.scalar_type(), at::kFloat);
  const double err = (got - want).abs().max().item<double>();
  const double scale = want.abs().max().item<double>();
  EXPECT_LE(err, tol * std::max(1.0, scale)) << "rows " << x.numel() / x.size(-1) << " K " << w.size(1) << " N "
                                             << w.size(0) << " path " << linear_path_name(linear_path(x, w));
}

TEST(GemmTest, GemvMatchesTorchForEveryRowCountAndOddWidths) {
  Restore r;
  set_bf16_gemm(Bf16Gemm::kWidened);  // rows past kGemvRows: exact float32 too
  torch::manual_seed(1);
  for (const auto dtype : {at::kFloat, at::kBFloat16}) {
    for (int64_t rows = 1; rows <= kGemvRows + 1; ++rows) {
      for (const int64_t k : {5, 64, 77}) {
        for (const int64_t n : {3, 33}) {
          const auto x = torch::randn({rows, k});
          const auto w = torch::randn({n, k}).to(dtype);
          expect_matches(x, w, torch::randn({n}), 1e-5);
          expect_matches(x, w, {}, 1e-5);
          if (avx2() && rows <= kGemvRows)
            EXPECT_EQ(linear_path(x, w), dtype == at::kFloat ? LinearPath::kGemvF32 : LinearPath::kGemvBF16);
        }
      }
    }
  }
}

TEST(GemmTest, KeepsLeadingDimensionsAndSplitsOverThreads) {
  torch::manual_seed(2);
  apply_threads(2);
  const auto x = torch::randn({2, 3, 40});  // 6 rows in a (2, 3) batch
  const auto w = torch::randn({1000, 40}).to(at::kBFloat16);
  const auto y = nn::linear(x, w, at::Tensor());
  EXPECT_EQ(y.sizes(), (std::vector<int64_t>{2, 3, 1000}));
  expect_matches(x, w, {}, 1e-5);
  apply_threads(0);
}

TEST(GemmTest, WidenedPathIsExactFloat32ArithmeticOnTheStoredWeights) {
  Restore r;
  set_bf16_gemm(Bf16Gemm::kWidened);
  torch::manual_seed(3);
  for (const auto dtype : {at::kBFloat16, at::kHalf}) {
    for (const int64_t n : {7, 700, 5000}) {  // one block and several
      const auto x = torch::randn({50, 96});
      const auto w = torch::randn({n, 96}).to(dtype);
      EXPECT_EQ(linear_path(x, w), LinearPath::kWidened);
      expect_matches(x, w, torch::randn({n}), 1e-5);
    }
  }
}

TEST(GemmTest, NativeBf16PathRoundsOnlyTheActivations) {
  Restore r;
  set_bf16_gemm(Bf16Gemm::kNative);
  torch::manual_seed(4);
  const auto x = torch::randn({40, 64});
  const auto w = torch::randn({30, 64}).to(at::kBFloat16);
  EXPECT_EQ(linear_path(x, w), LinearPath::kNativeBF16);
  // Activations rounded to bf16 (8 bits of mantissa): ~2^-8 relative error.
  expect_matches(x, w, torch::randn({30}), 3e-2);
}

TEST(GemmTest, AutogradAndOtherDevicesTakeLibtorch) {
  const auto x = torch::randn({2, 8}, torch::requires_grad());
  const auto w = torch::randn({4, 8});
  EXPECT_EQ(linear_path(x, w), LinearPath::kTorch);
  auto y = nn::linear(x, w, at::Tensor());
  y.sum().backward();
  EXPECT_TRUE(x.grad().defined());
  // A bf16 weight under autograd is widened by libtorch, not refused.
  const auto y16 = nn::linear(x, w.to(at::kBFloat16), at::Tensor());
  EXPECT_EQ(y16.scalar_type(), at::kFloat);
}

TEST(GemmTest, Float32ProductsFollowTheGemmsOntoTheOpenMPPool) {
  torch::manual_seed(3);
  const auto s = apply_threads(2, GemmPool::kOpenMP);  // as an int8 x int8 or native bf16 run sets it
  EXPECT_EQ(float32_gemm_on_openmp(), s.blas_threads == 1);
  const bool dnnl = float32_gemm_on_openmp() && dnnl_mm::available(dnnl_mm::Kind::kF32);
  if (dnnl_mm::available(dnnl_mm::Kind::kF32)) EXPECT_NE(dnnl_mm::impl(dnnl_mm::Kind::kF32).rfind("ref", 0), 0u);
  for (const int64_t rows : {kGemvRows + 1, int64_t{33}, int64_t{257}}) {
    for (const auto& [k, n] : std::vector<std::pair<int64_t, int64_t>>{{5, 3}, {77, 33}, {768, 1000}}) {
      const auto x = torch::randn({rows, k});
      const auto w = torch::randn({n, k});
      EXPECT_EQ(linear_path(x, w), dnnl ? LinearPath::kDnnlF32 : LinearPath::kTorch);
      expect_matches(x, w, torch::randn({n}), 1e-5);
      expect_matches(x, w, {}, 1e-5);
      expect_matches(x.view({1, rows, k}), w, torch::randn({n}), 1e-5);
    }
  }
  // Few rows stay on our GEMV; a run on OpenBLAS's pool, or on one thread, stays on libtorch's.
  EXPECT_NE(linear_path(torch::randn({kGemvRows, 64}), torch::randn({8, 64})), LinearPath::kDnnlF32);
  apply_threads(2);
  EXPECT_FALSE(float32_gemm_on_openmp());
  EXPECT_EQ(linear_path(torch::randn({33, 64}), torch::randn({8, 64})), LinearPath::kTorch);
  apply_threads(1, GemmPool::kOpenMP);
  EXPECT_FALSE(float32_gemm_on_openmp());
  apply_threads(0);
}

TEST(GemmTest, BatchedProductsOfAttentionViewsMatchTorchOnEitherPool) {
  torch::NoGradGuard g;
  torch::manual_seed(4);
  for (const auto pool : {GemmPool::kOpenMP, GemmPool::kOpenBlas}) {
    apply_threads(2, pool);
    for (const int64_t L : {int64_t{3}, kGemvRows + 1, int64_t{33}, int64_t{64}, int64_t{257}}) {
      // q, k, v as the vision encoder makes them: views into one (B, L, 3, H, Dh) projection.
      const int64_t B = 2, H = 3, Dh = 40;
      const auto qkv = torch::randn({B, L, 3, H, Dh}).permute({2, 0, 3, 1, 4});
      const auto q = qkv[0], k = qkv[1], v = qkv[2];
      const auto scores = nn::matmul(q, k.transpose(-1, -2));
      const auto want = at::matmul(q, k.transpose(-1, -2));
      ASSERT_EQ(scores.sizes(), want.sizes());
      EXPECT_LE((scores - want).abs().max().item<double>(), 1e-4) << "L " << L;
      const auto probs = at::softmax(want, -1);
      const auto ctx = nn::matmul(probs, v);
      EXPECT_LE((ctx - at::matmul(probs, v)).abs().max().item<double>(), 1e-5) << "L " << L;
      // Contiguous operands, and keys already laid out as rows.
      const auto kc = k.contiguous();
      EXPECT_LE((nn::matmul(q.contiguous(), kc.transpose(-1, -2)) - want).abs().max().item<double>(), 1e-4);
      // The oneDNN product itself (nn::matmul falls back silently): it runs wherever its
      // float32 kernel is not the reference one, at the sizes nn::matmul sends it, and agrees.
      if (pool == GemmPool::kOpenMP && dnnl_mm::available(dnnl_mm::Kind::kF32) && L >= 64) {
        const auto qc = q.contiguous();
        auto c = torch::empty_like(want);
        ASSERT_TRUE(dnnl_mm::batched_f32(qc.data_ptr<float>(), kc.data_ptr<float>(), c.data_ptr<float>(), B * H, L, Dh,
                                         L, /*w_rows=*/true));
        EXPECT_LE((c - want).abs().max().item<double>(), 1e-4) << "L " << L;
      }
    }
  }
  apply_threads(0);
}

TEST(GemmTest, WidenedProductsOnEitherPoolMatchTorchAcrossBlocks) {
  torch::NoGradGuard g;
  Restore r;
  set_bf16_gemm(Bf16Gemm::kWidened);  // the path of CPUs without native bf16, on any CPU
  set_int8_gemm(Int8Gemm::kDequantised);
  torch::manual_seed(5);
  for (const auto pool : {GemmPool::kOpenMP, GemmPool::kOpenBlas}) {
    apply_threads(2, pool);
    // K = 4096: 512 weight rows a block, so N = 1100 takes three blocks (the last one short).
    for (const auto& [k, n] : std::vector<std::pair<int64_t, int64_t>>{{77, 33}, {4096, 1100}}) {
      const auto x = torch::randn({2, 20, k});
      const auto w = torch::randn({n, k});
      const auto bias = torch::randn({n});
      const auto wh = w.to(at::kBFloat16);
      EXPECT_EQ(linear_path(x, wh), LinearPath::kWidened);
      expect_matches(x, wh, bias, 1e-5);
      expect_matches(x, wh, {}, 1e-5);
      const auto rows = quantize_rows(w);
      EXPECT_EQ(linear_path(x, rows.q), LinearPath::kDequantI8);
      const auto want = at::linear(x, dequantize_rows(rows.q, rows.scale), bias);
      const auto got = nn::linear(x, rows.q, bias, rows.scale);
      EXPECT_LE((got - want).abs().max().item<double>(), 1e-5 * std::max(1.0, want.abs().max().item<double>()))
          << "K " << k << " N " << n;
    }
  }
  set_int8_gemm(Int8Gemm::kAuto);
  apply_threads(0);
}

TEST(GemmTest, Fp32GemmChoosesTheLibraryAndThePool) {
  using dnnl_mm::Kind;
  EXPECT_EQ(parse_fp32_gemm("openblas", "--fp32-gemm"), Fp32Gemm::kOpenBlas);
  EXPECT_EQ(parse_fp32_gemm("auto", "--fp32-gemm"), Fp32Gemm::kAuto);
  EXPECT_THROW(parse_fp32_gemm("mkl", "--fp32-gemm"), ConfigError);
  if (!dnnl_mm::available(Kind::kF32)) EXPECT_THROW(parse_fp32_gemm("onednn", "--fp32-gemm"), ConfigError);
  EXPECT_FALSE(fp32_gemm_onednn(Fp32Gemm::kOpenBlas));
  EXPECT_EQ(fp32_gemm_onednn(Fp32Gemm::kOneDnn), dnnl_mm::available(Kind::kF32));
  EXPECT_EQ(fp32_gemm_onednn(Fp32Gemm::kAuto), dnnl_mm::impl(Kind::kF32).rfind("brg:avx512", 0) == 0);

  RuntimeOptions o;
  o.threads = 2;
  o.fp32_gemm = "openblas";
  auto r = apply_runtime(o);
  EXPECT_FALSE(float32_gemm_on_openmp()) << r.line;
  if (dnnl_mm::available(Kind::kF32) && r.threads.blas_threads == 1) {
    o.fp32_gemm = "onednn";
    r = apply_runtime(o);
    EXPECT_TRUE(float32_gemm_on_openmp()) << r.line;
    EXPECT_NE(r.line.find("float32 Linear layers on oneDNN"), std::string::npos) << r.line;
    EXPECT_EQ(linear_path(torch::randn({33, 64}), torch::randn({8, 64})), LinearPath::kDnnlF32);
  }
  apply_threads(0);
}

TEST(CpuTest, MaxIsaCapHidesTheNewerExtensions) {
  CpuFeatures all;
  all.avx2 = all.fma = all.f16c = all.avx512f = all.avx512bw = all.avx512_bf16 = all.avx512_vnni = true;
  all.amx_bf16 = all.avx_vnni = true;
  const auto avx2 = cap_features(all, "avx2");
  EXPECT_TRUE(avx2.avx2 && avx2.fma && avx2.f16c && avx2.avx_vnni);
  EXPECT_FALSE(avx2.avx512f || avx2.avx512bw || avx2.avx512_vnni || avx2.native_bf16());
  const auto base = cap_features(all, "baseline");
  EXPECT_FALSE(base.avx2 || base.fma || base.avx512f || base.native_bf16());
  EXPECT_EQ(base.summary().rfind("baseline", 0), 0u);
  EXPECT_TRUE(cap_features(all, "native").avx512_bf16);
  EXPECT_TRUE(cap_features(all, "").amx_bf16);
  try {
    cap_features(all, "avx512");
    FAIL() << "an unknown cap must be refused";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("BLIP2_MAX_ISA"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("native, avx2, baseline"), std::string::npos) << e.what();
  }
}

TEST(ThreadsTest, OneKnobSetsEveryPool) {
  const auto s = apply_threads(1);
  EXPECT_EQ(s.threads, 1);
  EXPECT_EQ(kernel_threads(), 1);
  EXPECT_EQ(at::get_num_threads(), 1);
  const auto d = apply_threads(0);
  EXPECT_EQ(d.threads, available_cores());
  EXPECT_NE(d.describe().find("threads " + std::to_string(available_cores())), std::string::npos);
  const auto omp = apply_threads(0, GemmPool::kOpenMP);
  EXPECT_EQ(omp.torch_threads, available_cores());
  apply_threads(0);
}

}  // namespace
}  // namespace blip2::nn
