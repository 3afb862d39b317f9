// The shipped recipes parse and hold the paper's optimisation settings.
#include "blip2/train/train_config.h"
#include "test_util.h"

namespace blip2 {
namespace {

TEST(RecipesTest, ShippedStageRecipesParseWithThePapersSettings) {
  for (const char* name : {"stage1.yaml", "stage2_opt.yaml", "stage2_t5.yaml"}) {
    SCOPED_TRACE(name);
    auto c = TrainConfig::from_yaml_file(std::string(BLIP2_SOURCE_DIR) + "/configs/" + name);
    EXPECT_EQ(c.stage, std::string(name) == "stage1.yaml" ? 1 : 2);
    EXPECT_DOUBLE_EQ(c.optim.lr, 1e-4);
    EXPECT_DOUBLE_EQ(c.optim.beta2, 0.98);
    EXPECT_DOUBLE_EQ(c.optim.weight_decay, 0.05);
    EXPECT_EQ(c.optim.warmup_steps, 2000);
    // Relative paths resolve against the recipe's directory.
    EXPECT_EQ(c.model_config.rfind(BLIP2_SOURCE_DIR, 0), 0u) << c.model_config;
  }
}

}  // namespace
}  // namespace blip2
