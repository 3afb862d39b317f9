// The stage-1 objectives: the Q-Former's three self-attention masks position
// by position, ITC / ITM / ITG losses against hand computation, hard
// negatives, and finite-difference gradients.
#include <cmath>
#include <set>

#include "blip2/qformer/qformer.h"
#include "blip2/train/losses.h"
#include "blip2/util/error.h"
#include "model_fixtures.h"
#include "test_util.h"

namespace blip2 {
namespace {

// ---- masks --------------------------------------------------------------

// allowed(kind)[i][j] for Q=2 queries and 3 text tokens, the last one padding.
std::vector<std::vector<int>> allowed(QFormerMask kind) {
  auto mask = torch::tensor({1, 1, 1, 1, 0}, torch::kLong).view({1, 5});
  auto bias = qformer_self_attention_bias(mask, 2, kind, torch::kFloat);  // (1,1,5,5)
  std::vector<std::vector<int>> out(5, std::vector<int>(5));
  for (int i = 0; i < 5; ++i)
    for (int j = 0; j < 5; ++j) out[i][j] = bias[0][0][i][j].item<float>() == 0.0f ? 1 : 0;
  return out;
}

TEST(QFormerMaskTest, ItmIsBidirectionalExceptPadding) {
  std::vector<std::vector<int>> want = {
      {1, 1, 1, 1, 0}, {1, 1, 1, 1, 0}, {1, 1, 1, 1, 0}, {1, 1, 1, 1, 0}, {1, 1, 1, 1, 0}};
  EXPECT_EQ(allowed(QFormerMask::kBidirectional), want);
}

TEST(QFormerMaskTest, ItcIsUnimodal) {
  std::vector<std::vector<int>> want = {
      {1, 1, 0, 0, 0}, {1, 1, 0, 0, 0}, {0, 0, 1, 1, 0}, {0, 0, 1, 1, 0}, {0, 0, 1, 1, 0}};
  EXPECT_EQ(allowed(QFormerMask::kUnimodal), want);
}

TEST(QFormerMaskTest, ItgIsMultimodalCausal) {
  std::vector<std::vector<int>> want = {
      {1, 1, 0, 0, 0}, {1, 1, 0, 0, 0}, {1, 1, 1, 0, 0}, {1, 1, 1, 1, 0}, {1, 1, 1, 1, 0}};
  EXPECT_EQ(allowed(QFormerMask::kMultimodalCausal), want);
}

TEST(QFormerMaskTest, MaskedEntriesUseHfFill) {
  auto bias = qformer_self_attention_bias(torch::tensor({1, 0}, torch::kLong).view({1, 2}), 1,
                                          QFormerMask::kBidirectional, torch::kFloat);
  EXPECT_EQ(bias[0][0][0][1].item<float>(), -10000.0f);
}

// ---- stage 1 -------------------------------------------------------------

Blip2Model stage1_model(torch::ScalarType dtype = torch::kFloat) {
  auto c = test::tiny_config("opt");
  c.qformer.hidden_dropout_prob = 0;
  c.qformer.attention_probs_dropout_prob = 0;
  Blip2Parts parts;
  parts.language = false;
  parts.itg = true;
  Blip2Model m(c, parts);
  test::randomize(*m, 11);
  {
    torch::NoGradGuard g;
    m->temp.fill_(0.1);
  }
  m->to(dtype);
  m->eval();
  return m;
}

Stage1Inputs stage1_inputs(torch::ScalarType dtype = torch::kFloat) {
  torch::manual_seed(5);
  Stage1Inputs in;
  in.vit_embeds = torch::randn({3, 17, 24}).to(dtype);
  in.text_ids = torch::tensor({{1, 7, 8, 9, 2}, {1, 10, 11, 2, 0}, {1, 12, 2, 0, 0}}, torch::kLong);
  in.text_mask = (in.text_ids != 0).to(torch::kLong);
  in.neg_image_idx = torch::tensor({2, 0, 1}, torch::kLong);
  in.neg_text_idx = torch::tensor({1, 2, 0}, torch::kLong);
  return in;
}

Stage1Options stage1_options() {
  Stage1Options o;
  o.dec_token_id = 49;
  return o;
}

// Cross-entropy with label smoothing, written out: (1-e) * -log p[y] + e * mean_k(-log p[k]).
double smoothed_ce(const torch::Tensor& logits, const torch::Tensor& targets, double eps) {
  auto lp = logits.to(torch::kDouble).log_softmax(-1);
  double total = 0;
  int n = 0;
  for (int64_t i = 0; i < logits.size(0); ++i) {
    const int64_t y = targets[i].item<int64_t>();
    if (y == -100) continue;
    total += (1 - eps) * -lp[i][y].item<double>() + eps * -lp[i].mean().item<double>();
    ++n;
  }
  return total / n;
}

TEST(Stage1LossTest, LossesMatchHandComputation) {
  auto m = stage1_model();
  auto out = stage1_forward(*m, stage1_inputs(), stage1_options());
  auto tgt = torch::arange(3, torch::kLong);
  const double itc = (smoothed_ce(out.sim_i2t, tgt, 0.1) + smoothed_ce(out.sim_t2i, tgt, 0.1)) / 2;
  EXPECT_NEAR(out.loss_itc.item<double>(), itc, 1e-5);
  EXPECT_NEAR(out.loss_itm.item<double>(), smoothed_ce(out.itm_logits, out.itm_labels, 0.0), 1e-5);
  auto V = out.itg_logits.size(2);
  EXPECT_NEAR(out.loss_lm.item<double>(),
              smoothed_ce(out.itg_logits.reshape({-1, V}), out.itg_labels.reshape({-1}), 0.1), 1e-5);
  EXPECT_NEAR(out.loss.item<double>(),
              out.loss_itc.item<double>() + out.loss_itm.item<double>() + out.loss_lm.item<double>(), 1e-5);
  // Similarity = max over queries of the cosine, divided by the temperature.
  auto cos = torch::einsum("iqe,te->itq", {out.image_feats, out.text_feat});
  EXPECT_TRUE(torch::allclose(out.sim_i2t, std::get<0>(cos.max(-1)) / 0.1, 1e-5, 1e-5));
  // ITM pairs: positives, (text, negative image), (negative text, image).
  EXPECT_EQ(out.itm_labels.sizes(), (std::vector<int64_t>{9}));
  EXPECT_EQ(out.itm_labels.sum().item<int64_t>(), 3);
  // ITG targets: the text after [DEC], pads ignored.
  EXPECT_TRUE(torch::equal(out.itg_labels, torch::tensor({{7, 8, 9, 2}, {10, 11, 2, -100}, {12, 2, -100, -100}})));
}

TEST(Stage1LossTest, RetrievalFineTuningTreatsEveryCaptionOfAnImageAsPositive) {
  auto m = stage1_model();
  auto in = stage1_inputs();
  in.image_ids = torch::tensor({7, 7, 9}, torch::kLong);  // texts 0 and 1 describe the same image
  in.neg_image_idx = torch::Tensor();
  in.neg_text_idx = torch::Tensor();
  in.generator = at::detail::createCPUGenerator(4);
  auto out = stage1_forward(*m, in, stage1_options());
  // Targets: rows 0 and 1 put half the (0.9) mass on columns 0 and 1, plus 0.1 spread uniformly.
  double want = 0;
  const double t[3][3] = {{0.45 + 0.1 / 3, 0.45 + 0.1 / 3, 0.1 / 3},
                          {0.45 + 0.1 / 3, 0.45 + 0.1 / 3, 0.1 / 3},
                          {0.1 / 3, 0.1 / 3, 0.9 + 0.1 / 3}};
  for (auto* sim : {&out.sim_i2t, &out.sim_t2i}) {
    auto lp = sim->to(torch::kDouble).log_softmax(1);
    for (int i = 0; i < 3; ++i)
      for (int j = 0; j < 3; ++j) want -= t[i][j] * lp[i][j].item<double>() / 3 / 2;
  }
  EXPECT_NEAR(out.loss_itc.item<double>(), want, 1e-5);
  // No hard negative shows the same image.
  EXPECT_LT(out.weights_i2t[0][1].item<float>(), 1e-6);
  EXPECT_LT(out.weights_t2i[1][0].item<float>(), 1e-6);
  EXPECT_EQ(out.neg_image_idx[0].item<int64_t>(), 2);
  EXPECT_EQ(out.neg_image_idx[1].item<int64_t>(), 2);
}

TEST(Stage1LossTest, HardNegativesExcludeTheOwnPair) {
  auto m = stage1_model();
  auto in = stage1_inputs();
  in.neg_image_idx = torch::Tensor();
  in.neg_text_idx = torch::Tensor();
  in.generator = at::detail::createCPUGenerator(3);
  auto out = stage1_forward(*m, in, stage1_options());
  for (int64_t b = 0; b < 3; ++b) {
    EXPECT_LT(out.weights_i2t[b][b].item<float>(), 1e-6);
    EXPECT_NE(out.neg_image_idx[b].item<int64_t>(), b);
    EXPECT_NE(out.neg_text_idx[b].item<int64_t>(), b);
  }
  EXPECT_TRUE(torch::allclose(out.weights_t2i.sum(1), torch::ones({3}), 1e-5, 1e-5));
}

// LAVIS detaches the gathered ITC features (gradients flow through the local
// side only), which is not the loss's full derivative; this collective keeps
// them attached so autograd can be compared with finite differences.
class AttachedGather : public Collective {
 public:
  at::Tensor all_gather(const at::Tensor& t) override { return t; }
};

TEST(Stage1LossTest, GradientsMatchFiniteDifferences) {
  auto m = stage1_model(torch::kDouble);
  auto in = stage1_inputs(torch::kDouble);
  auto o = stage1_options();
  AttachedGather coll;
  auto loss_of = [&] { return stage1_forward(*m, in, o, coll).loss; };
  for (auto& p : m->parameters()) p.set_requires_grad(true);
  loss_of().backward();
  torch::NoGradGuard g;
  auto params = m->named_parameters();
  int checked = 0;
  for (const char* name : {"query_tokens", "qformer.encoder.layer.0.crossattention.attention.value.weight",
                           "qformer.encoder.layer.1.intermediate.dense.weight", "embeddings.word_embeddings.weight",
                           "text_decoder_head.transform.dense.weight", "itm_head.weight", "vision_projection.bias",
                           "vision_model.post_layernorm.weight", "temp"}) {
    auto p = params[name];
    auto flat = p.view({-1});
    auto grad = p.grad().view({-1});
    for (int64_t k : {int64_t{0}, flat.numel() / 2, flat.numel() - 1}) {
      const double h = 1e-6, orig = flat[k].item<double>();
      flat[k] = orig + h;
      const double up = loss_of().item<double>();
      flat[k] = orig - h;
      const double down = loss_of().item<double>();
      flat[k] = orig;
      const double numeric = (up - down) / (2 * h);
      EXPECT_NEAR(grad[k].item<double>(), numeric, 1e-6 + 1e-4 * std::abs(numeric)) << name << "[" << k << "]";
      ++checked;
    }
  }
  EXPECT_EQ(checked, 27);
}

// ---- training loop -------------------------------------------------------

}  // namespace
}  // namespace blip2
