// The shipped recipes parse and hold the paper's optimisation settings.
#include "blip2/train/train_config.h"
#include "blip2/util/error.h"
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

// Found by fuzz_recipe: a YAML complex key ("? warmup_steps: 2000") or a
// list entry that is a mapping escaped as yaml-cpp's TypedBadConversion and
// aborted the process.
TEST(RecipesTest, KeysAndListEntriesThatAreNotNamesAreConfigErrors) {
  EXPECT_THROW_WITH(TrainConfig::from_yaml_string("optim:\n  lr: 0.1\n? warmup_steps: 2000\n", "r.yaml"),
                    ConfigError, "r.yaml: a top-level key is a mapping");
  EXPECT_THROW_WITH(TrainConfig::from_yaml_string("optim:\n  ? [a, b]\n  : 1\n", "r.yaml"), ConfigError,
                    "a key in 'optim' is a list");
  EXPECT_THROW_WITH(TrainConfig::from_yaml_string("data:\n  shards: [a.tar, {b: 1}]\n", "r.yaml"), ConfigError,
                    "data.shards: expected a list of strings");
}

}  // namespace
}  // namespace blip2
