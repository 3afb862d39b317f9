// Line charts as PNG (cairo), for training curves in docs/results.md:
// `blip2 plot` draws any numeric key of metrics.jsonl files. No Python.
#pragma once

#include <string>
#include <vector>

namespace blip2 {

struct PlotSeries {
  std::string label;
  std::vector<double> x, y;  // same length; non-finite points are skipped
};

struct PlotOptions {
  std::string title, x_label = "step", y_label;
  int width = 720, height = 420;
  bool log_y = false;  // logarithmic y axis (values <= 0 are skipped)
};

// Draws the series (axes with ticks, one colour per series, a legend) and
// writes an 8-bit RGB(A) PNG. InputError when there is nothing to draw or the
// file cannot be written (naming the path).
void plot_png(const std::string& path, const std::vector<PlotSeries>& series, const PlotOptions& options = {});

// The series `key` of a metrics.jsonl (one JSON object per line, x = "step"):
// InputError naming the file and line for unreadable input, or when no line
// has the key (listing the keys the first line has).
PlotSeries read_metrics_series(const std::string& jsonl_path, const std::string& key, const std::string& label);

}  // namespace blip2
