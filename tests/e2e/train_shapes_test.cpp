// The reduced shapes-world recipe (QUICK=1 scripts/train_shapes): every step
// of issue 5's pipeline runs on real generated data, and the unimodal
// pretraining learns. (Targets are the full recipe's business, not CI's.)
#include <nlohmann/json.hpp>

#include "e2e_util.h"

namespace blip2 {
namespace {

TEST(TrainShapesTest, QuickRecipeRunsEveryStageAndLearns) {
  test::TempDir dir;
  const std::string log = dir.file("log");
  const std::string cmd = "QUICK=1 BLIP2=" + std::string(BLIP2_CLI) + " " + std::string(BLIP2_SOURCE_DIR) + "/scripts/train_shapes " + dir.file("out") +
                          " >" + log + " 2>&1";
  const int status = std::system(cmd.c_str());
  std::stringstream ss;
  ss << std::ifstream(log).rdbuf();
  const std::string out = ss.str();
  ASSERT_EQ(status, 0) << out;
  // "pretrained <what> for N steps: loss A -> B": each falls.
  size_t pos = 0;
  int seen = 0;
  while ((pos = out.find("pretrained ", pos)) != std::string::npos) {
    double a = 0, b = 0;
    const auto l = out.find("loss ", pos);
    ASSERT_EQ(std::sscanf(out.c_str() + l + 5, "%lf -> %lf", &a, &b), 2);
    EXPECT_LT(b, a) << out.substr(pos, 80);
    ++seen;
    pos = l;
  }
  EXPECT_EQ(seen, 3);  // ViT, OPT, T5
  for (const char* lm : {"opt", "t5"})
    for (const char* split : {"test", "compositional"}) {
      auto cap = nlohmann::json::parse(std::ifstream(dir.file(std::string("out/eval_caption_") + lm + "_" + split + ".json")));
      EXPECT_EQ(cap.at("count"), 16);
      auto vqa = nlohmann::json::parse(std::ifstream(dir.file(std::string("out/eval_vqa_") + lm + "_" + split + ".json")));
      EXPECT_GT(vqa.at("count").get<int>(), 16);
    }
}

}  // namespace
}  // namespace blip2
