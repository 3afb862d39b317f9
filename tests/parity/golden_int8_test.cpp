// The golden cases replayed with --dtype int8 (the vision encoder's and the
// language model's matrices quantised on load): every logits tensor must stay
// within kLogitsBound of the reference's largest |logit|, and nothing else may
// break (shapes, NaNs, missing outputs). `blip2 verify --dtype int8` prints
// the same numbers without failing; docs/performance.md lists them.
//
// The bound, reasoned: per-channel int8 moves each weight by at most
// max|row| / 254 (0.4% of its row's largest weight); the rounding errors are
// independent, so a product of K terms moves by about that / sqrt(3) relative
// to its typical size, and the golden models stack 5-9 quantised products
// between the pixels and the logits (2 vision layers x 4, 2-5 LM layers x 4,
// the quantised token embeddings and the tied head), whose errors add
// roughly in quadrature and grow through the residual stream: 1-3% of the
// largest logit. Where the CPU has an int8 x int8 GEMM (nn/int8_gemm.h) the
// products also round each activation row to int8 steps of max|row| / 127,
// an error of the same size as the weights', adding in quadrature: about
// sqrt(2) x, 1.5-5%. Measured with weights only: opt 1.5%, t5 3.3%, itm 0.8%;
// with the int8 x int8 products: opt 1.25%, t5 5.5%, itm 0.9%
// (docs/performance.md). 7% leaves room for other summation orders and still
// fails when a scale is misapplied or missing (the logits then move by tens
// of percent or more).
#include <gtest/gtest.h>

#include <filesystem>

#include "blip2/eval/verify.h"
#include "blip2/io/safetensors.h"
#include "blip2/nn/gemm.h"
#include "blip2/nn/int8_gemm.h"
#include "test_util.h"

namespace blip2 {
namespace {

// Weights only (the dequantised path every CPU has), and the int8 x int8
// GEMM where this CPU has one.
constexpr double kWeightsOnlyBound = 0.05;
constexpr double kLogitsBound = 0.07;

class GoldenInt8Test : public ::testing::TestWithParam<std::string> {};

TEST_P(GoldenInt8Test, LogitsStayWithinTheStatedBoundOfFloat32) {
  const std::string dir = test::golden(GetParam());
  if (!std::filesystem::exists(dir + "/meta.json")) GTEST_SKIP() << dir << " not present";
  const auto want = io::load_safetensors(dir + "/outputs.safetensors");
  for (const bool weights_only : {true, false}) {
    SCOPED_TRACE(weights_only ? "weights only (--int8-gemm fp32)" : "--int8-gemm auto");
    nn::set_int8_gemm(weights_only ? nn::Int8Gemm::kDequantised : nn::Int8Gemm::kAuto);
    const double bound = weights_only ? kWeightsOnlyBound : kLogitsBound;
    VerifyOptions o;
    o.dtype = "int8";
    const auto r = verify_case(dir, o);
    nn::set_int8_gemm(nn::Int8Gemm::kAuto);
    int logits = 0;
    for (const auto& l : r.lines) {
      EXPECT_TRUE(l.ok) << l.name << " " << l.note;
      if (l.name.find("logits") == std::string::npos) continue;
      ++logits;
      const double range = want.at(l.name).abs().max().item<double>();
      std::printf("  %-12s %-40s int8 max|diff| %.4g = %.2f%% of max|logit| %.3g\n",
                  weights_only ? "weights-only" : (nn::int8_gemm_available() ? "int8-gemm" : "auto"), l.name.c_str(),
                  l.max_abs_diff, 100 * l.max_abs_diff / range, range);
      EXPECT_LE(l.max_abs_diff, bound * range) << l.name;
    }
    EXPECT_GT(logits, 0);
    EXPECT_EQ(r.failed, 0);
  }
}

INSTANTIATE_TEST_SUITE_P(Golden, GoldenInt8Test, ::testing::Values("opt", "opt_imgtok", "t5", "itm"),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace blip2
