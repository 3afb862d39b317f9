// The training progress bar: steps out of the run's total, also after a resume.
#include "blip2/util/progress.h"

#include "test_util.h"

namespace blip2 {
namespace {

TEST(ProgressBarTest, AResumedRunCountsFromTheResumePointOutOfTheTotal) {
  // Resumed at step 60 of 120, now at step 70 after 10 s: 10 s per 10 steps,
  // so 50 steps (50 s) remain.
  const std::string bar = progress_bar(70, 120, 10.0, 60, 12);
  EXPECT_EQ(bar.rfind("70/120 [", 0), 0u) << bar;
  EXPECT_NE(bar.find("[#######-----]"), std::string::npos) << bar;
  EXPECT_NE(bar.find("00:10<00:50"), std::string::npos) << bar;
}

TEST(ProgressBarTest, AFreshRunEstimatesFromStepZeroAndClampsTheBar) {
  EXPECT_NE(progress_bar(30, 120, 30.0).find("00:30<01:30"), std::string::npos);
  EXPECT_NE(progress_bar(130, 120, 30.0, 0, 4).find("[####]"), std::string::npos);
  EXPECT_NE(progress_bar(60, 120, 5.0, 60, 4).find("<--:--"), std::string::npos);  // no step run yet: no estimate
}

}  // namespace
}  // namespace blip2
