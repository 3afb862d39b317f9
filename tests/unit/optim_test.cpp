// train/optim: the warm-up + cosine schedule, layer-wise decay, no decay on biases and norms.
#include <gtest/gtest.h>

#include <algorithm>
#include <set>

#include "blip2/train/optim.h"
#include "model_fixtures.h"
#include "test_util.h"

namespace blip2 {
namespace {

// The tiny test config's image encoder and Q-Former (no LM), random weights.
Blip2Model tiny_retrieval_model() {
  Blip2Parts parts;
  parts.language = false;
  Blip2Model m(test::tiny_config("opt"), parts);
  test::randomize(*m, 11);
  return m;
}

TEST(OptimTest, WarmupThenCosineToMinLr) {
  OptimConfig c;
  c.lr = 1e-4;
  c.min_lr = 1e-5;
  c.warmup_lr = 1e-6;
  c.warmup_steps = 10;
  c.total_steps = 110;
  EXPECT_DOUBLE_EQ(learning_rate(c, 0), 1e-6);
  EXPECT_NEAR(learning_rate(c, 5), 1e-6 + 0.5 * (1e-4 - 1e-6), 1e-12);
  EXPECT_DOUBLE_EQ(learning_rate(c, 10), 1e-4);
  EXPECT_NEAR(learning_rate(c, 60), 5.5e-5, 1e-12);
  EXPECT_NEAR(learning_rate(c, 110), 1e-5, 1e-12);
}

TEST(OptimTest, LayerDecayGivesEarlierVitLayersSmallerRates) {
  EXPECT_DOUBLE_EQ(layer_lr_scale("vision_model.embeddings.patch_embedding.weight", 3, 0.5), 0.0625);
  EXPECT_DOUBLE_EQ(layer_lr_scale("vision_model.encoder.layers.0.mlp.fc1.weight", 3, 0.5), 0.125);
  EXPECT_DOUBLE_EQ(layer_lr_scale("vision_model.encoder.layers.2.mlp.fc1.weight", 3, 0.5), 0.5);
  EXPECT_DOUBLE_EQ(layer_lr_scale("vision_model.post_layernorm.weight", 3, 0.5), 1.0);
  EXPECT_DOUBLE_EQ(layer_lr_scale("qformer.layernorm.weight", 3, 0.5), 1.0);
  EXPECT_DOUBLE_EQ(layer_lr_scale("vision_model.encoder.layers.0.mlp.fc1.weight", 3, 1.0), 1.0);
  auto m = tiny_retrieval_model();
  for (auto& p : m->parameters()) p.set_requires_grad(true);
  OptimConfig c;
  c.layer_decay = 0.5;
  c.warmup_steps = 0;
  std::vector<double> scales;
  auto opt = make_adamw(*m, c, 3, &scales);
  set_learning_rate(*opt, 1e-4, scales);
  ASSERT_EQ(scales.size(), opt->param_groups().size());
  std::set<double> lrs;
  for (auto& g : opt->param_groups()) lrs.insert(static_cast<torch::optim::AdamWOptions&>(g.options()).lr());
  // 1e-4 times 1, 1/2, 1/4, 1/8, 1/16 (layers 2, 1, 0, embeddings).
  EXPECT_EQ(lrs.size(), 5u);
  EXPECT_NEAR(*lrs.begin(), 1e-4 / 16, 1e-12);
}

TEST(OptimTest, NoWeightDecayOnBiasesAndNorms) {
  auto m = tiny_retrieval_model();
  for (auto& p : m->parameters()) p.set_requires_grad(true);
  auto g = split_for_weight_decay(*m);
  for (const auto& n : g.no_decay_names)
    EXPECT_TRUE(n.find("bias") != std::string::npos || m->named_parameters()[n].dim() < 2) << n;
  for (const auto& n : g.decay_names) EXPECT_GE(m->named_parameters()[n].dim(), 2) << n;
  EXPECT_NE(std::find(g.no_decay_names.begin(), g.no_decay_names.end(), "qformer.layernorm.weight"),
            g.no_decay_names.end());
  EXPECT_NE(std::find(g.decay_names.begin(), g.decay_names.end(), "query_tokens"), g.decay_names.end());
}

}  // namespace
}  // namespace blip2
