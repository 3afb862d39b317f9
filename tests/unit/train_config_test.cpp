// Training recipes (train/train_config): unknown keys and bad values named, YAML round trip.
#include <gtest/gtest.h>

#include "blip2/train/train_config.h"
#include "blip2/util/error.h"
#include "test_util.h"

namespace blip2 {
namespace {

TEST(TrainConfigTest, UnknownKeysAndBadValuesAreNamed) {
  EXPECT_THROW_WITH(TrainConfig::from_yaml_string("stage: 1\ntrain:\n  batchsize: 4\n", "s1.yaml"), ConfigError,
                    "unknown key 'train.batchsize'");
  EXPECT_THROW_WITH(TrainConfig::from_yaml_string("stage: 3\n", "s1.yaml"), ConfigError, "stage must be 1 or 2");
  EXPECT_THROW_WITH(TrainConfig::from_yaml_string("optim:\n  lr: -1\n", "s1.yaml"), ConfigError, "lr must be positive");
  EXPECT_THROW_WITH(TrainConfig::from_yaml_string("train:\n  max_steps: many\n", "s1.yaml"), ConfigError,
                    "train.max_steps: cannot read 'many'");
  EXPECT_THROW_WITH(TrainConfig::from_yaml_string("model: [1, 2\n", "s1.yaml"), ConfigError, "not valid YAML");
  EXPECT_THROW_WITH(TrainConfig::from_yaml_string("stage: 2\nobjective:\n  mode: retrieval\n", "s.yaml"), ConfigError,
                    "retrieval is a stage-1 fine-tuning");
  EXPECT_THROW_WITH(TrainConfig::from_yaml_string("objective:\n  mode: vqa2\n", "s.yaml"), ConfigError,
                    "'vqa2' is not one of");
  EXPECT_EQ(TrainConfig::from_yaml_string("stage: 2\nobjective:\n  mode: caption\n", "s.yaml").prompt, "a photo of");
  auto c = TrainConfig::from_yaml_string("stage: 2\noptim:\n  lr: 0.0002\ntrain:\n  max_steps: 7\n", "x");
  EXPECT_EQ(c.stage, 2);
  EXPECT_EQ(c.max_steps, 7);  // the schedule's total_steps is derived from it by the Trainer, once
  auto again = TrainConfig::from_yaml_string(c.to_yaml(), "roundtrip");
  EXPECT_EQ(again.to_yaml(), c.to_yaml());
  EXPECT_EQ(c.caption_choice, CaptionChoice::kRandom);
  EXPECT_THROW_WITH(TrainConfig::from_yaml_string("data:\n  caption_choice: last\n", "s.yaml"), ConfigError,
                    "data.caption_choice 'last' is not one of random, first");
  auto first = TrainConfig::from_yaml_string("data:\n  caption_choice: first\n", "s.yaml");
  EXPECT_EQ(first.caption_choice, CaptionChoice::kFirst);
  EXPECT_EQ(TrainConfig::from_yaml_string(first.to_yaml(), "roundtrip").caption_choice, CaptionChoice::kFirst);
}

}  // namespace
}  // namespace blip2
