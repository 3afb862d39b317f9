// blip2 bench end to end on the tiny preset: valid JSON with every field the
// benchmark promises, plausible numbers, and clear errors for bad flags.
#include <cstdlib>

#include <nlohmann/json.hpp>

#include "e2e_util.h"

namespace blip2 {
namespace {

using nlohmann::json;
using test::run_cli;

TEST(BenchCliTest, TinyPresetPrintsEveryFieldAsJson) {
  for (const std::string dtype : {"float32", "bfloat16", "int8"}) {
    auto r = run_cli("bench --preset tiny --repeats 1 --new-tokens 4 --beams 2 --json --from-file --dtype " + dtype);
    ASSERT_EQ(r.code, 0) << r.err;
    const json j = json::parse(r.out);
    for (const char* k : {"vision_ms_b1", "vision_ms_b8", "qformer_ms", "prefill_ms", "decode_tok_s", "e2e_greedy20_ms",
                          "e2e_beam5_ms", "peak_rss_mb", "gemm_gflops", "bandwidth_gbs", "load_s",
                          "stage1_samples_s", "stage1_cached_samples_s"}) {
      ASSERT_TRUE(j.contains(k) && j[k].is_number()) << k << " in " << r.out;
      EXPECT_GT(j[k].get<double>(), 0) << k;
    }
    EXPECT_EQ(j["preset"], "tiny");
    EXPECT_EQ(j["dtype"], dtype == "float32" ? "fp32" : dtype == "int8" ? "int8" : "bf16");
    EXPECT_EQ(j["new_tokens"], 4);
    EXPECT_EQ(j["train_batch"], 4);
    EXPECT_GE(j["threads"].get<int>(), 1);
    // The 16-bit model holds half the bytes of the float32 one (matrices dominate).
    if (dtype == "bfloat16") EXPECT_LT(j["weight_mb"].get<double>(), 0.6);
    // int8: the vision encoder's and LM's matrices in one byte (the Q-Former stays float32).
    if (dtype == "int8") {
      EXPECT_LT(j["lm_weight_mb_per_token"].get<double>(), 0.2);
      EXPECT_NE(j["compute_path"].get<std::string>().find("int8"), std::string::npos) << j["compute_path"];
    }
    EXPECT_GE(j["peak_rss_mb"].get<double>(), j["rss_after_load_mb"].get<double>() * 0.5);
  }
}

// The ISA caps make this CPU run what an AVX2-only one runs. There oneDNN's
// int8 kernel (no VNNI) saturates full-range int8 sums, so int8 x int8 must
// not be used: int8 weights are multiplied in float32 instead.
TEST(BenchCliTest, AnAvx2CapRunsWithoutTheInt8ProductThatSaturates) {
  ::setenv("BLIP2_MAX_ISA", "avx2", 1);
  ::setenv("DNNL_MAX_CPU_ISA", "AVX2", 1);
  auto r = run_cli("bench --preset tiny --repeats 1 --new-tokens 2 --beams 2 --train-batch 0 --json --dtype int8");
  ::unsetenv("BLIP2_MAX_ISA");
  ::unsetenv("DNNL_MAX_CPU_ISA");
  ASSERT_EQ(r.code, 0) << r.err;
  const json j = json::parse(r.out);
  const auto path = j["compute_path"].get<std::string>();
  EXPECT_NE(path.find("int8 x int8 not available"), std::string::npos) << path;
  EXPECT_NE(j["cpu_features"].get<std::string>().find("capped: BLIP2_MAX_ISA=avx2"), std::string::npos)
      << j["cpu_features"];
  EXPECT_EQ(j["cpu_features"].get<std::string>().find("avx512"), std::string::npos) << j["cpu_features"];
  ::setenv("BLIP2_MAX_ISA", "avx1024", 1);
  auto bad = run_cli("bench --preset tiny --repeats 1 --train-batch 0");
  ::unsetenv("BLIP2_MAX_ISA");
  EXPECT_EQ(bad.code, 1);
  EXPECT_NE(bad.err.find("BLIP2_MAX_ISA='avx1024' is not one of native, avx2, baseline"), std::string::npos) << bad.err;
}

TEST(BenchCliTest, BadFlagsNameTheFlagAndTheChoices) {
  auto p = run_cli("bench --preset huge");
  EXPECT_EQ(p.code, 1);
  EXPECT_NE(p.err.find("--preset 'huge' is not a benchmark preset; choose one of tiny, vitl-opt125m, vitg-opt2.7b"),
            std::string::npos)
      << p.err;
  auto r = run_cli("bench --repeats 0");
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("--repeats must be in 1..1000"), std::string::npos) << r.err;
  auto g = run_cli("bench --bf16-gemm fast");
  EXPECT_EQ(g.code, 1);
  EXPECT_NE(g.err.find("--bf16-gemm 'fast' is not one of auto, native"), std::string::npos) << g.err;
  auto i = run_cli("caption --dtype int8 --int8-gemm vnni " + std::string(BLIP2_SOURCE_DIR) + "/examples/shapes-1.png");
  EXPECT_EQ(i.code, 1);
  EXPECT_NE(i.err.find("--int8-gemm 'vnni' is not one of auto, int8"), std::string::npos) << i.err;
  auto f = run_cli("bench --fp32-gemm mkl");
  EXPECT_EQ(f.code, 1);
  EXPECT_NE(f.err.find("--fp32-gemm 'mkl' is not one of auto, openblas (OpenBLAS's sgemm), onednn"), std::string::npos)
      << f.err;
}

}  // namespace
}  // namespace blip2
