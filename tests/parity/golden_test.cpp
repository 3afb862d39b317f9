// Replays every reference dump under ../shared/golden whose meta.json has a
// `plan` through the same code path as `blip2 verify`, and checks that every
// tensor of outputs.safetensors passes. One test instance per case directory,
// discovered at run time: no case is named here.
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "blip2/eval/verify.h"
#include "test_util.h"

namespace blip2 {
namespace {

std::vector<std::string> golden_cases() {
  std::vector<std::string> out;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(test::golden_dir(), ec)) {
    auto meta = e.path() / "meta.json";
    if (!std::filesystem::exists(meta)) continue;
    std::ifstream in(meta);
    auto j = nlohmann::json::parse(in, nullptr, false);
    if (j.is_object() && j.contains("plan")) out.push_back(e.path().filename().string());
  }
  std::sort(out.begin(), out.end());
  return out;
}

class GoldenParityTest : public ::testing::TestWithParam<std::string> {};

TEST_P(GoldenParityTest, EveryOutputTensorMatchesTheReference) {
  auto r = verify_case(test::golden(GetParam()));
  for (const auto& l : r.lines) {
    EXPECT_TRUE(l.ok) << l.name << " max|diff| " << l.max_abs_diff << " " << l.note;
    std::printf("  %-50s %.3g %s\n", l.name.c_str(), l.max_abs_diff, l.ok ? "ok" : "FAIL");
  }
  EXPECT_GT(r.passed, 0);
  EXPECT_EQ(r.failed, 0);
}

INSTANTIATE_TEST_SUITE_P(Golden, GoldenParityTest, ::testing::ValuesIn(golden_cases()),
                         [](const auto& info) { return info.param; });

TEST(GoldenParityTest, AllModelCasesAreDiscovered) {
  auto cases = golden_cases();
  for (const char* c : {"opt", "opt_imgtok", "t5", "itm"})
    EXPECT_NE(std::find(cases.begin(), cases.end(), c), cases.end()) << c;
}

}  // namespace
}  // namespace blip2
