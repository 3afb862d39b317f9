// nn::linear's kernels against libtorch's float32 linear on the same
// (widened) weights: every path, row count, odd widths, with and without bias.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "blip2/nn/gemm.h"
#include "blip2/util/cpu.h"
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
