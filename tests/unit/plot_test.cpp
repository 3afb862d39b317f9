// blip2 plot: PNG line charts of metrics.jsonl keys (training curves).
#include "blip2/util/plot.h"

#include <gtest/gtest.h>

#include <fstream>

#include "blip2/data/image.h"
#include "blip2/util/error.h"
#include "test_util.h"

namespace blip2 {
namespace {

TEST(PlotTest, DrawsSeriesIntoAPngOfTheRequestedSize) {
  test::TempDir d;
  {
    std::ofstream m(d.file("metrics.jsonl"));
    for (int s = 10; s <= 200; s += 10) m << "{\"step\": " << s << ", \"loss\": " << 5.0 / s << ", \"lr\": 0.001}\n";
    m << "{\"step\": 210}\n";  // a line without the key is skipped
  }
  const PlotSeries s = read_metrics_series(d.file("metrics.jsonl"), "loss", "run");
  ASSERT_EQ(s.x.size(), 20u);
  EXPECT_EQ(s.x.front(), 10.0);
  EXPECT_DOUBLE_EQ(s.y.back(), 5.0 / 200);
  PlotOptions o;
  o.width = 400, o.height = 300, o.title = "loss", o.log_y = true;
  plot_png(d.file("p.png"), {s, PlotSeries{"flat", {0, 100, 200}, {0.1, 0.1, 0.1}}}, o);
  const Image img = load_image(d.file("p.png"));
  ASSERT_EQ(img.width, 400);
  ASSERT_EQ(img.height, 300);
  // The first series' colour (blue) and the second's (red) are both drawn.
  int blue = 0, red = 0;
  for (int y = 0; y < img.height; ++y)
    for (int x = 0; x < img.width; ++x) {
      const uint8_t* p = img.pixel(x, y);
      blue += p[2] > 150 && p[0] < 80;
      red += p[0] > 180 && p[1] < 80 && p[2] < 80;
    }
  EXPECT_GT(blue, 100);
  EXPECT_GT(red, 100);
}

TEST(PlotTest, ErrorsNameTheFileAndTheFix) {
  test::TempDir d;
  EXPECT_THROW_WITH(read_metrics_series(d.file("none.jsonl"), "loss", "x"), InputError, "none.jsonl");
  std::ofstream(d.file("m.jsonl")) << "{\"step\": 1, \"loss\": 2}\nnot json\n";
  EXPECT_THROW_WITH(read_metrics_series(d.file("m.jsonl"), "loss", "x"), InputError, "line 2");
  std::ofstream(d.file("k.jsonl")) << "{\"step\": 1, \"loss\": 2}\n";
  EXPECT_THROW_WITH(read_metrics_series(d.file("k.jsonl"), "loss_itc", "x"), InputError, "its keys are: loss, step");
  EXPECT_THROW_WITH(plot_png(d.file("e.png"), {PlotSeries{"e", {}, {}}}), InputError, "nothing to draw");
  EXPECT_THROW_WITH(plot_png(d.file("no/such/dir/p.png"), {PlotSeries{"a", {1, 2}, {1, 2}}}), InputError,
                    "cannot write");
  EXPECT_THROW_WITH(plot_png(d.file("b.png"), {PlotSeries{"a", {1, 2}, {1}}}), InputError, "2 x values but 1");
}

}  // namespace
}  // namespace blip2
