// The int8 x int8 products (nn/int8_gemm.h), the paths nn::linear takes for
// int8 weights where oneDNN has an int8 kernel for this CPU (its GEMM for
// many rows, our GEMV for few):
// - it computes exactly the stated algorithm (rows quantised per row, round
//   to nearest even, int32 sums, rescaled), checked against the same steps
//   written with libtorch ops in double precision;
// - our GEMV for few rows gives the oneDNN GEMM's result exactly, with the
//   AVX-512 VNNI kernel and the AVX2 one;
// - its distance from the weight-only product stays within the bound the
//   rows' rounding allows, sx[m] / 2 * sw[n] * sum_k |Q[n, k]|;
// - the path and the --int8-gemm switch are chosen as documented.
// Skipped where the path is not available (no oneDNN, no AVX2).
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "blip2/nn/gemm.h"
#include "blip2/nn/int8_gemm.h"
#include "blip2/nn/quant.h"
#include "blip2/util/error.h"
#include "blip2/util/threads.h"

namespace blip2 {
namespace {

#define SKIP_WITHOUT_INT8_GEMM() \
  if (!nn::int8_gemm_available()) GTEST_SKIP() << "int8 x int8 GEMM " << nn::int8_gemm_impl()

// The algorithm of nn/int8_gemm.h in double precision.
at::Tensor reference(const at::Tensor& x, const nn::Int8Rows& w, const at::Tensor& b) {
  const auto xd = x.to(at::kDouble);
  auto sx = xd.abs().amax(1) / 127;
  sx = at::where(sx > 0, sx, at::ones_like(sx));
  // Scaled by the float32 reciprocal, as the kernel does, then rounded to even.
  const auto inv = (1.0f / sx.to(at::kFloat)).to(at::kDouble);
  const auto xq = (xd * inv.unsqueeze(1)).to(at::kFloat).round().clamp(-127, 127).to(at::kDouble);
  auto y = at::mm(xq, w.q.to(at::kDouble).t()) * sx.to(at::kFloat).to(at::kDouble).unsqueeze(1) *
           w.scale.to(at::kDouble).unsqueeze(0);
  if (b.defined()) y = y + b.to(at::kDouble);
  return y;
}

TEST(Int8GemmTest, ComputesTheStatedAlgorithmOnOddShapes) {
  SKIP_WITHOUT_INT8_GEMM();
  torch::manual_seed(21);
  for (const int64_t m : {9, 16, 33, 70}) {
    for (const int64_t k : {1, 7, 31, 32, 33, 100, 257}) {
      for (const int64_t n : {1, 5, 17, 64}) {
        const auto x = torch::randn({m, k}) * 3;
        const auto w = nn::quantize_rows(torch::randn({n, k}) * 0.1);
        const auto b = torch::randn({n});
        for (const bool bias : {true, false}) {
          const auto got = nn::int8_gemm(x, w.q, w.scale, bias ? b.data_ptr<float>() : nullptr);
          const auto want = reference(x, w, bias ? b : at::Tensor());
          ASSERT_EQ(got.sizes(), want.sizes());
          // Integer sums are exact; what is left is float32 rounding of the rescale.
          const double err = (got.to(at::kDouble) - want).abs().max().item<double>();
          EXPECT_LE(err, 2e-6 * std::max(1.0, want.abs().max().item<double>()))
              << "m " << m << " k " << k << " n " << n << " bias " << bias;
        }
      }
    }
  }
}

TEST(Int8GemmTest, GemvKernelsComputeTheSameAlgorithmForEveryRowCount) {
  SKIP_WITHOUT_INT8_GEMM();
  torch::manual_seed(25);
  std::printf("  int8 x int8 GEMV kernel here: %s\n", nn::int8_gemv_kernel());
  for (int64_t m = 1; m <= nn::kGemvRows; ++m) {
    // K around both kernels' widths (32 and 64 bytes) and their tails.
    for (const int64_t k : {1, 7, 31, 32, 33, 63, 64, 65, 100, 257}) {
      for (const int64_t n : {1, 17, 40}) {
        const auto x = torch::randn({m, k}) * 2;
        auto w = nn::quantize_rows(torch::randn({n, k}) * 0.1);
        w.q[0][0] = -127;  // the extremes of the rows' steps
        const auto b = torch::randn({n});
        const auto want = reference(x, w, b);
        const auto gemm = nn::int8_gemm(x, w.q, w.scale, b.data_ptr<float>());
        for (const bool avx2_only : {false, true}) {
          const auto got = nn::int8_gemv(x, w.q, w.scale, b.data_ptr<float>(), avx2_only);
          // Same integer sums, same rescale: the oneDNN GEMM's result exactly.
          EXPECT_TRUE(torch::equal(got, gemm)) << "m " << m << " k " << k << " n " << n << " avx2 " << avx2_only;
          const double err = (got.to(at::kDouble) - want).abs().max().item<double>();
          EXPECT_LE(err, 2e-6 * std::max(1.0, want.abs().max().item<double>()));
        }
      }
    }
  }
  apply_threads(2);  // rows of Q split over threads: the same sums
  const auto x = torch::randn({3, 96});
  const auto w = nn::quantize_rows(torch::randn({1000, 96}));
  EXPECT_TRUE(torch::equal(nn::int8_gemv(x, w.q, w.scale, nullptr), nn::int8_gemm(x, w.q, w.scale, nullptr)));
  apply_threads(0);
}

TEST(Int8GemmTest, StaysWithinTheRowsRoundingBoundOfTheWeightOnlyProduct) {
  SKIP_WITHOUT_INT8_GEMM();
  torch::manual_seed(22);
  const int64_t m = 50, k = 300, n = 40;
  // Rows of very different sizes, one with an outlier: each row has its own step.
  auto x = torch::randn({m, k});
  x.slice(0, 0, 10).mul_(100);
  x[20][7] = 500;
  const auto w = nn::quantize_rows(torch::randn({n, k}) * 0.05);
  const auto b = torch::randn({n});
  const auto got = nn::linear(x, w.q, b, w.scale).to(at::kDouble);
  const auto exact = at::linear(x.to(at::kDouble), nn::dequantize_rows(w.q, w.scale).to(at::kDouble), b.to(at::kDouble));
  const auto sx = x.to(at::kDouble).abs().amax(1) / 127;
  const auto bound = (sx / 2).unsqueeze(1) * (w.scale.to(at::kDouble) * w.q.to(at::kDouble).abs().sum(1)).unsqueeze(0);
  const auto excess = (got - exact).abs() - bound - 1e-5 * exact.abs();
  EXPECT_LE(excess.max().item<double>(), 0.0);
  // Not the weight-only product: the rows really were quantised.
  EXPECT_GT((got - exact).abs().max().item<double>(), 1e-4);
}

TEST(Int8GemmTest, ZeroRowsGiveTheBiasAndLeadingDimensionsAreKept) {
  SKIP_WITHOUT_INT8_GEMM();
  torch::manual_seed(23);
  const auto w = nn::quantize_rows(torch::randn({12, 40}));
  const auto b = torch::randn({12});
  const auto zeros = nn::linear(torch::zeros({3, 5, 40}), w.q, b, w.scale);
  EXPECT_EQ(zeros.sizes(), (std::vector<int64_t>{3, 5, 12}));
  EXPECT_TRUE(torch::equal(zeros, b.expand({3, 5, 12})));
}

TEST(Int8GemmTest, ThreadCountsGiveTheSameResult) {
  SKIP_WITHOUT_INT8_GEMM();
  torch::manual_seed(24);
  const auto x = torch::randn({200, 96});
  const auto w = nn::quantize_rows(torch::randn({130, 96}));
  apply_threads(1);
  const auto one = nn::int8_gemm(x, w.q, w.scale, nullptr);
  apply_threads(2);
  const auto two = nn::int8_gemm(x, w.q, w.scale, nullptr);
  apply_threads(0);
  EXPECT_TRUE(torch::equal(one, two));
}

TEST(Int8GemmTest, PathFollowsRowsAndTheSwitch) {
  const auto w = nn::quantize_rows(torch::randn({8, 16}));
  const auto many = torch::randn({nn::kGemvRows + 1, 16});
  const auto few = torch::randn({nn::kGemvRows, 16});
  if (nn::int8_gemm_available()) {
    EXPECT_EQ(nn::linear_path(many, w.q), nn::LinearPath::kInt8Gemm);
    EXPECT_EQ(nn::linear_path(few, w.q), nn::LinearPath::kInt8Gemv);
    EXPECT_EQ(nn::parse_int8_gemm("int8", "--int8-gemm"), nn::Int8Gemm::kInt8);
  } else {
    EXPECT_EQ(nn::linear_path(many, w.q), nn::LinearPath::kDequantI8);
    EXPECT_THROW(nn::parse_int8_gemm("int8", "--int8-gemm"), ConfigError);
  }
  nn::set_int8_gemm(nn::parse_int8_gemm("fp32", "--int8-gemm"));
  EXPECT_EQ(nn::linear_path(many, w.q), nn::LinearPath::kDequantI8);
  EXPECT_NE(nn::linear_path(few, w.q), nn::LinearPath::kInt8Gemv);  // the widening GEMV (AVX2) or dequantised
  nn::set_int8_gemm(nn::Int8Gemm::kAuto);
  EXPECT_EQ(nn::linear_path(torch::randn({0, 16}), w.q), nn::LinearPath::kDequantI8);  // nothing to quantise
  try {
    nn::parse_int8_gemm("vnni", "--int8-gemm");
    FAIL() << "accepted";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("--int8-gemm 'vnni' is not one of auto, int8"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace blip2
