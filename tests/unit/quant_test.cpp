// int8 weight-only quantisation (nn/quant.h, model/quantize.h) and the int8
// paths of nn::linear: quantise -> dequantise error bounds, every kernel
// against the float32 product of the dequantised weight on odd shapes, int8
// Embeddings, loading with --dtype int8, and `blip2 quantize` round trips
// (the written directory maps its I8 tensors and runs exactly like
// quantising on load).
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>
#include <fstream>

#include "blip2/io/safetensors.h"
#include "blip2/model/blip2_model.h"
#include "blip2/model/quantize.h"
#include "blip2/nn/gemm.h"
#include "blip2/nn/layers.h"
#include "blip2/nn/quant.h"
#include "blip2/util/cpu.h"
#include "blip2/util/error.h"
#include "blip2/util/threads.h"
#include "model_fixtures.h"
#include "test_util.h"

namespace blip2 {
namespace {

using test::TempDir;

bool avx2() { return cpu_features().avx2 && cpu_features().fma; }

// The exactness tests below are about weight-only int8 (the widening GEMV
// and the dequantised GEMM): the int8 x int8 paths quantise the activation
// rows too and have their own bound (int8_gemm_test.cpp).
struct DequantisedGemm {
  DequantisedGemm() { nn::set_int8_gemm(nn::Int8Gemm::kDequantised); }
  ~DequantisedGemm() { nn::set_int8_gemm(nn::Int8Gemm::kAuto); }
};

// nn::linear on int8 rows against libtorch's float32 linear on the same rows
// dequantised: the kernels add no error of their own beyond float rounding.
void expect_matches_dequantised(const at::Tensor& x, const nn::Int8Rows& w, const at::Tensor& b) {
  torch::NoGradGuard g;
  const auto want = at::linear(x, nn::dequantize_rows(w.q, w.scale), b);
  const auto got = nn::linear(x, w.q, b, w.scale);
  ASSERT_EQ(got.sizes(), want.sizes());
  ASSERT_EQ(got.scalar_type(), at::kFloat);
  const double err = (got - want).abs().max().item<double>();
  EXPECT_LE(err, 1e-5 * std::max(1.0, want.abs().max().item<double>()))
      << "rows " << x.numel() / x.size(-1) << " K " << w.q.size(1) << " N " << w.q.size(0) << " path "
      << nn::linear_path_name(nn::linear_path(x, w.q));
}

TEST(QuantTest, EachWeightMovesAtMostHalfItsRowsScale) {
  torch::manual_seed(3);
  // Rows of very different magnitudes, an all-zero row and a row with one outlier.
  auto w = torch::randn({37, 51}) * torch::logspace(-4, 2, 37).unsqueeze(1);
  w[5].zero_();
  w[9][13] = 1000.0f;
  const auto r = nn::quantize_rows(w);
  ASSERT_EQ(r.q.scalar_type(), at::kChar);
  ASSERT_EQ(r.scale.sizes(), (std::vector<int64_t>{37}));
  EXPECT_LE(r.q.abs().max().item<int>(), 127);
  const auto back = nn::dequantize_rows(r.q, r.scale);
  const auto err = (back - w).abs();
  // Rounding to the nearest step of scale[n] = max|row| / 127: at most half a step.
  EXPECT_TRUE((err <= r.scale.unsqueeze(1) * 0.5 * (1 + 1e-5) + 1e-30).all().item<bool>())
      << (err / r.scale.unsqueeze(1).clamp_min(1e-30)).max().item<double>();
  EXPECT_TRUE(torch::allclose(r.scale, w.abs().amax(1) / 127));
  // The largest weight of each row is exactly +-127 steps.
  EXPECT_EQ(r.q[9][13].item<int>(), 127);
  EXPECT_EQ(r.scale[5].item<float>(), 0.0f);
  EXPECT_EQ(r.q[5].abs().sum().item<int>(), 0);
  EXPECT_EQ(back[5].abs().sum().item<float>(), 0.0f);
}

TEST(QuantTest, QuantisesBf16MatricesLikeTheirFloat32Values) {
  torch::manual_seed(4);
  const auto w = torch::randn({9, 20}).to(at::kBFloat16);
  const auto a = nn::quantize_rows(w), b = nn::quantize_rows(w.to(at::kFloat));
  EXPECT_TRUE(torch::equal(a.q, b.q));
  EXPECT_TRUE(torch::equal(a.scale, b.scale));
}

TEST(QuantTest, Int8LinearMatchesTheDequantisedProductForEveryRowCountAndOddWidths) {
  DequantisedGemm dequantised;
  torch::manual_seed(5);
  for (int64_t rows = 1; rows <= nn::kGemvRows + 1; ++rows) {
    for (const int64_t k : {1, 7, 13, 33, 100}) {
      for (const int64_t n : {1, 5, 17}) {
        const auto x = torch::randn({rows, k});
        const auto w = nn::quantize_rows(torch::randn({n, k}));
        expect_matches_dequantised(x, w, torch::randn({n}));
        expect_matches_dequantised(x, w, {});
        const auto path = nn::linear_path(x, w.q);
        if (rows > nn::kGemvRows) EXPECT_EQ(path, nn::LinearPath::kDequantI8);
        else EXPECT_EQ(path, avx2() ? nn::LinearPath::kGemvI8 : nn::LinearPath::kDequantI8);
      }
    }
  }
}

TEST(QuantTest, ManyRowsDequantiseInSeveralBlocksAndKeepLeadingDimensions) {
  DequantisedGemm dequantised;
  torch::manual_seed(6);
  // 4096 columns: 512 rows per dequantised block, so 1100 rows take three blocks.
  const auto w = nn::quantize_rows(torch::randn({1100, 4096}) * 0.02);
  const auto x = torch::randn({3, 4, 4096});
  const auto y = nn::linear(x, w.q, {}, w.scale);
  EXPECT_EQ(y.sizes(), (std::vector<int64_t>{3, 4, 1100}));
  expect_matches_dequantised(x, w, torch::randn({1100}));
}

TEST(QuantTest, GemvSplitsRowsOverThreads) {
  DequantisedGemm dequantised;
  torch::manual_seed(7);
  apply_threads(2);
  const auto w = nn::quantize_rows(torch::randn({1000, 72}));
  expect_matches_dequantised(torch::randn({5, 72}), w, torch::randn({1000}));
  apply_threads(0);
}

TEST(QuantTest, Int8WeightWithoutScalesIsRefused) {
  const auto q = torch::zeros({4, 8}, torch::kChar);
  EXPECT_THROW(nn::linear(torch::randn({1, 8}), q), c10::Error);
  EXPECT_THROW(nn::linear(torch::randn({1, 8}), q, {}, torch::ones({3})), c10::Error);
}

TEST(QuantTest, AutogradThroughInt8WeightsUsesTheDequantisedMatrix) {
  const auto w = nn::quantize_rows(torch::randn({6, 10}));
  const auto x = torch::randn({2, 10}, torch::requires_grad());
  const auto y = nn::linear(x, w.q, {}, w.scale);
  y.sum().backward();
  EXPECT_TRUE(torch::allclose(x.grad(), nn::dequantize_rows(w.q, w.scale).sum(0).expand({2, 10}), 1e-5, 1e-5));
}

TEST(QuantTest, Int8LinearAndEmbeddingModulesRunTheDequantisedWeights) {
  DequantisedGemm dequantised;
  torch::manual_seed(8);
  torch::NoGradGuard g;
  nn::Linear lin(30, 11);
  lin->weight.normal_();
  lin->bias.normal_();
  const auto w = lin->weight.clone();
  nn::quantize_weight(*lin);
  EXPECT_EQ(lin->weight.scalar_type(), at::kChar);
  ASSERT_TRUE(lin->weight_scale.defined());
  EXPECT_TRUE(lin->named_buffers().contains("weight_scale"));
  const auto x = torch::randn({3, 30});
  EXPECT_TRUE(torch::allclose(lin->forward(x), at::linear(x, nn::dequantize_rows(lin->weight, lin->weight_scale),
                                                          lin->bias), 1e-5, 1e-5));
  // Quantising twice is a no-op.
  const auto q = lin->weight.clone();
  nn::quantize_weight(*lin);
  EXPECT_TRUE(torch::equal(q, lin->weight));

  nn::Embedding emb(20, 7);
  emb->weight.normal_();
  nn::quantize_weight(*emb);
  const auto ids = torch::tensor({{3, 0, 19}, {3, 5, 5}}, torch::kLong);
  const auto rows = emb->forward(ids);
  EXPECT_EQ(rows.sizes(), (std::vector<int64_t>{2, 3, 7}));
  EXPECT_EQ(rows.scalar_type(), at::kFloat);
  EXPECT_TRUE(torch::equal(rows, nn::dequantize_rows(emb->weight, emb->weight_scale).index({ids})));
}

TEST(SafetensorsInt8Test, I8RoundTripsAndOddSizesDoNotMisalignF32Tensors) {
  TempDir dir;
  const auto q = torch::randint(-127, 128, {3, 5}, torch::kChar);  // 15 bytes, written first by the caller
  const auto s = torch::rand({3});
  io::save_safetensors(dir.file("m.safetensors"), {{"a.weight", q}, {"a.weight_scale", s}, {"b", torch::randn({4})}});
  auto f = io::SafetensorsFile::open(dir.file("m.safetensors"));
  EXPECT_EQ(f->info("a.weight").dtype, io::DType::I8);
  EXPECT_TRUE(torch::equal(f->tensor("a.weight"), q));
  EXPECT_TRUE(torch::equal(f->tensor("a.weight_scale"), s));
  EXPECT_TRUE(f->zero_copy("a.weight"));
  EXPECT_TRUE(f->zero_copy("a.weight_scale"));
  EXPECT_TRUE(f->zero_copy("b"));
}

class Int8ModelTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    const auto c = test::tiny_config(GetParam());
    model_ = Blip2Model(c, Blip2Parts::from_config(c));
    model_->eval();
    test::randomize(*model_, 11);
    test::save_checkpoint(*model_, dir_.path());
  }
  at::Tensor logits(Blip2Model& m) {
    torch::NoGradGuard g;
    torch::manual_seed(12);
    const auto px = torch::randn({2, 3, 12, 12});
    const auto ids = torch::tensor({{1, 5, 7}, {1, 9, 3}}, torch::kLong);
    const auto dec = m->language_model->is_encoder_decoder() ? ids : torch::Tensor();
    return m->forward(px, ids, torch::ones_like(ids), dec).lm.logits;
  }
  static LoadOptions int8() {
    LoadOptions o;
    o.dtype = torch::kChar;
    o.compute_dtype = torch::kFloat;
    return o;
  }
  TempDir dir_;
  Blip2Model model_{nullptr};
};

TEST_P(Int8ModelTest, LoadingInInt8QuantisesTheVisionEncoderAndTheLanguageModelOnly) {
  auto m = load_blip2(dir_.path(), int8());
  for (const auto& p : m->named_parameters()) {
    const bool matrix = matrix_modules(*m).count(p.key()) > 0;
    EXPECT_EQ(p.value().scalar_type(), matrix && int8_quantized(p.key(), m->language_model.get()) ? torch::kChar : torch::kFloat) << p.key();
  }
  EXPECT_EQ(m->language_projection->weight.scalar_type(), torch::kFloat);
  // T5's FFN output `wo` stays float32, as HF's 8-bit loading leaves it; its `wi` is int8.
  if (m->language_model->is_encoder_decoder()) {
    int wo = 0, wi = 0;
    for (const auto& p : m->named_parameters()) {
      if (p.key().find(".DenseReluDense.wo.weight") != std::string::npos) {
        ++wo;
        EXPECT_EQ(p.value().scalar_type(), torch::kFloat) << p.key();
      }
      if (p.key().find(".DenseReluDense.wi") != std::string::npos) {
        ++wi;
        EXPECT_EQ(p.value().scalar_type(), torch::kChar) << p.key();
      }
    }
    EXPECT_GT(wo, 0);
    EXPECT_GT(wi, 0);
  }
  // Quantising on load equals quantising the float32 model's matrices in place.
  auto ref = load_blip2(dir_.path());
  EXPECT_GT(quantize_int8(*ref), 0u);
  EXPECT_TRUE(torch::equal(logits(m), logits(ref)));
  // And stays close to float32: O(1) random weights through 3-layer stacks,
  // each weight off by at most 1/254 of its row's largest.
  const auto want = logits(model_), got = logits(m);
  EXPECT_LE((got - want).abs().max().item<double>(), 0.05 * want.abs().max().item<double>());
  GenerationConfig gc;
  gc.max_new_tokens = gc.min_new_tokens = 4;
  EXPECT_EQ(m->generate(torch::randn({1, 3, 12, 12}), {}, {}, gc).sequences.size(1) > 0, true);
}

TEST_P(Int8ModelTest, QuantizedDirectoryMapsInt8AndRunsLikeQuantisingOnLoad) {
  TempDir out;
  std::ofstream(dir_.file("tokenizer_config.json")) << "{}";
  std::filesystem::create_directories(dir_.file("qformer_tokenizer"));
  std::ofstream(dir_.file("qformer_tokenizer/vocab.txt")) << "[PAD]\n";
  const auto rep = quantize_model_dir(dir_.path(), out.path());
  EXPECT_GT(rep.quantized, 0u);
  EXPECT_EQ(rep.files_copied, 3u);  // config.json, tokenizer_config.json, qformer_tokenizer/
  EXPECT_TRUE(std::filesystem::exists(out.file("qformer_tokenizer/vocab.txt")));
  EXPECT_LT(rep.bytes_out, rep.bytes_in);
  // Loaded with the default options: the I8 tensors are mapped as they are.
  LoadReport lr;
  auto m = load_blip2(out.path(), {}, &lr);
  EXPECT_EQ(lr.zero_copy, lr.tensors);
  size_t int8_params = 0;
  for (const auto& p : m->parameters()) int8_params += p.scalar_type() == torch::kChar;
  EXPECT_EQ(int8_params, rep.quantized);
  auto on_load = load_blip2(dir_.path(), int8());
  EXPECT_TRUE(torch::equal(logits(m), logits(on_load)));
  // Asking for int8 again does not quantise twice.
  auto again = load_blip2(out.path(), int8());
  EXPECT_TRUE(torch::equal(logits(again), logits(on_load)));
}

TEST_P(Int8ModelTest, I8WeightWithoutItsScalesIsACheckpointError) {
  auto w = io::load_safetensors(dir_.file("model.safetensors"));
  std::vector<std::pair<std::string, at::Tensor>> ts(w.begin(), w.end());
  for (auto& [name, t] : ts)
    if (name == "language_projection.weight") t = nn::quantize_rows(t).q;
  io::save_safetensors(dir_.file("model.safetensors"), ts);
  EXPECT_THROW_WITH(load_blip2(dir_.path()), CheckpointError,
                    "'language_projection.weight' in " + dir_.file("model.safetensors") +
                        " is I8 but its scales 'language_projection.weight_scale'");
}

INSTANTIATE_TEST_SUITE_P(Lm, Int8ModelTest, ::testing::Values("opt", "t5"), [](const auto& i) { return i.param; });

TEST(QuantizeTest, RefusesOtherDtypesAndWritingOverTheInput) {
  TempDir dir;
  QuantizeOptions o;
  o.dtype = "int4";
  EXPECT_THROW_WITH(quantize_model_dir(dir.path(), dir.file("o"), o), ConfigError,
                    "--dtype 'int4' is not supported; the quantised dtype is int8");
  EXPECT_THROW_WITH(quantize_model_dir(dir.path(), dir.path()), ConfigError, "is the input");
  EXPECT_THROW_WITH(quantize_model_dir(dir.file("nope"), dir.file("o")), ConfigError, "is not a directory");
}

}  // namespace
}  // namespace blip2
