#include "blip2/util/plot.h"

#include <cairo.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>

#include "blip2/util/error.h"

namespace blip2 {

namespace {

// A "nice" tick step (1, 2 or 5 times a power of ten) for about n ticks.
double tick_step(double span, int n) {
  const double raw = span / std::max(1, n);
  const double mag = std::pow(10.0, std::floor(std::log10(raw)));
  for (double m : {1.0, 2.0, 5.0, 10.0})
    if (raw <= m * mag) return m * mag;
  return 10 * mag;
}

std::string format_tick(double v) {
  char buf[32];
  if (v != 0 && (std::abs(v) >= 1e5 || std::abs(v) < 1e-3))
    std::snprintf(buf, sizeof buf, "%.0e", v);
  else
    std::snprintf(buf, sizeof buf, "%g", v);
  return buf;
}

const double kColors[][3] = {{0.12, 0.47, 0.71}, {0.84, 0.15, 0.16}, {0.17, 0.63, 0.17}, {1.00, 0.50, 0.05},
                             {0.58, 0.40, 0.74}, {0.55, 0.34, 0.29}, {0.89, 0.47, 0.76}, {0.50, 0.50, 0.50}};

}  // namespace

void plot_png(const std::string& path, const std::vector<PlotSeries>& series, const PlotOptions& o) {
  auto usable = [&](double x, double y) { return std::isfinite(x) && std::isfinite(y) && (!o.log_y || y > 0); };
  double x0 = std::numeric_limits<double>::infinity(), x1 = -x0, y0 = x0, y1 = -x0;
  size_t points = 0;
  for (const auto& s : series) {
    if (s.x.size() != s.y.size())
      throw InputError("[plot] series '" + s.label + "' has " + std::to_string(s.x.size()) + " x values but " +
                       std::to_string(s.y.size()) + " y values");
    for (size_t i = 0; i < s.x.size(); ++i) {
      if (!usable(s.x[i], s.y[i])) continue;
      const double y = o.log_y ? std::log10(s.y[i]) : s.y[i];
      x0 = std::min(x0, s.x[i]), x1 = std::max(x1, s.x[i]), y0 = std::min(y0, y), y1 = std::max(y1, y);
      ++points;
    }
  }
  if (points == 0) throw InputError("[plot] nothing to draw for '" + path + "': every series is empty");
  if (x1 == x0) x1 = x0 + 1;
  if (y1 == y0) y1 = y0 + 1;
  const double pad = 0.05 * (y1 - y0);
  y0 -= pad, y1 += pad;

  const int W = std::max(200, o.width), H = std::max(150, o.height);
  const double left = 70, right = 20, top = o.title.empty() ? 20 : 40, bottom = 50;
  const double pw = W - left - right, ph = H - top - bottom;
  auto X = [&](double x) { return left + (x - x0) / (x1 - x0) * pw; };
  auto Y = [&](double y) { return top + (1 - (y - y0) / (y1 - y0)) * ph; };

  cairo_surface_t* surf = cairo_image_surface_create(CAIRO_FORMAT_RGB24, W, H);
  cairo_t* cr = cairo_create(surf);
  cairo_set_source_rgb(cr, 1, 1, 1);
  cairo_paint(cr);
  cairo_select_font_face(cr, "sans-serif", CAIRO_FONT_SLANT_NORMAL, CAIRO_FONT_WEIGHT_NORMAL);
  auto text = [&](double x, double y, const std::string& s, double align_x, double size) {
    cairo_set_font_size(cr, size);
    cairo_text_extents_t e;
    cairo_text_extents(cr, s.c_str(), &e);
    cairo_move_to(cr, x - align_x * e.width, y);
    cairo_show_text(cr, s.c_str());
  };

  // Grid and ticks.
  cairo_set_line_width(cr, 1);
  const double xs = tick_step(x1 - x0, 6), ys = tick_step(y1 - y0, 5);
  for (double v = std::ceil(x0 / xs) * xs; v <= x1 + 1e-9 * xs; v += xs) {
    cairo_set_source_rgb(cr, 0.9, 0.9, 0.9);
    cairo_move_to(cr, X(v), top), cairo_line_to(cr, X(v), top + ph), cairo_stroke(cr);
    cairo_set_source_rgb(cr, 0.2, 0.2, 0.2);
    text(X(v), top + ph + 16, format_tick(v), 0.5, 11);
  }
  std::vector<double> y_ticks;  // in plotted units (log10 of the value on a log axis)
  if (o.log_y) {
    // 1, 2 and 5 times the powers of ten in range (only the powers when they are many).
    const bool dense = y1 - y0 < 3;
    for (double k = std::floor(y0); k <= std::ceil(y1); ++k)
      for (double m : {1.0, 2.0, 5.0})
        if ((dense || m == 1.0) && k + std::log10(m) >= y0 && k + std::log10(m) <= y1) y_ticks.push_back(k + std::log10(m));
  } else {
    for (double v = std::ceil(y0 / ys) * ys; v <= y1 + 1e-9 * ys; v += ys) y_ticks.push_back(v);
  }
  for (double v : y_ticks) {
    cairo_set_source_rgb(cr, 0.9, 0.9, 0.9);
    cairo_move_to(cr, left, Y(v)), cairo_line_to(cr, left + pw, Y(v)), cairo_stroke(cr);
    cairo_set_source_rgb(cr, 0.2, 0.2, 0.2);
    text(left - 6, Y(v) + 4, format_tick(o.log_y ? std::pow(10.0, v) : v), 1.0, 11);
  }
  cairo_set_source_rgb(cr, 0.2, 0.2, 0.2);
  cairo_rectangle(cr, left, top, pw, ph);
  cairo_stroke(cr);
  if (!o.title.empty()) text(W / 2.0, 24, o.title, 0.5, 15);
  text(left + pw / 2, H - 12, o.x_label, 0.5, 12);
  if (!o.y_label.empty()) {
    cairo_save(cr);
    cairo_translate(cr, 16, top + ph / 2);
    cairo_rotate(cr, -M_PI / 2);
    text(0, 0, o.y_label + (o.log_y ? " (log)" : ""), 0.5, 12);
    cairo_restore(cr);
  }

  // Lines, clipped to the plot area, then the legend.
  for (size_t k = 0; k < series.size(); ++k) {
    const auto* c = kColors[k % 8];
    cairo_save(cr);
    cairo_rectangle(cr, left, top, pw, ph);
    cairo_clip(cr);
    cairo_set_source_rgb(cr, c[0], c[1], c[2]);
    cairo_set_line_width(cr, 1.6);
    bool open = false;
    for (size_t i = 0; i < series[k].x.size(); ++i) {
      if (!usable(series[k].x[i], series[k].y[i])) continue;
      const double y = o.log_y ? std::log10(series[k].y[i]) : series[k].y[i];
      if (open)
        cairo_line_to(cr, X(series[k].x[i]), Y(y));
      else
        cairo_move_to(cr, X(series[k].x[i]), Y(y)), open = true;
    }
    cairo_stroke(cr);
    cairo_restore(cr);
    const double ly = top + 14 + 16 * static_cast<double>(k);
    cairo_set_source_rgb(cr, c[0], c[1], c[2]);
    cairo_rectangle(cr, left + pw - 150, ly - 8, 14, 4);
    cairo_fill(cr);
    cairo_set_source_rgb(cr, 0.1, 0.1, 0.1);
    text(left + pw - 130, ly, series[k].label, 0.0, 11);
  }
  cairo_destroy(cr);
  const cairo_status_t st = cairo_surface_write_to_png(surf, path.c_str());
  cairo_surface_destroy(surf);
  if (st != CAIRO_STATUS_SUCCESS)
    throw InputError("[plot] cannot write '" + path + "': " + cairo_status_to_string(st) +
                     "; choose a writable output path");
}

PlotSeries read_metrics_series(const std::string& path, const std::string& key, const std::string& label) {
  std::ifstream in(path);
  if (!in) throw InputError("[plot] cannot read '" + path + "'; give a metrics.jsonl that `blip2 train` wrote");
  PlotSeries s;
  s.label = label;
  std::string line, first_keys;
  for (size_t n = 1; std::getline(in, line); ++n) {
    if (line.empty()) continue;
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(line);
    } catch (const std::exception& e) {
      throw InputError("[plot] '" + path + "' line " + std::to_string(n) + " is not JSON: " + e.what());
    }
    if (first_keys.empty() && j.is_object())
      for (auto it = j.begin(); it != j.end(); ++it) first_keys += (first_keys.empty() ? "" : ", ") + it.key();
    if (!j.is_object() || !j.contains(key) || !j[key].is_number()) continue;
    s.x.push_back(j.contains("step") && j["step"].is_number() ? j["step"].get<double>()
                                                                : static_cast<double>(s.x.size()));
    s.y.push_back(j[key].get<double>());
  }
  if (s.x.empty())
    throw InputError("[plot] no line of '" + path + "' has a numeric \"" + key + "\"; its keys are: " + first_keys);
  return s;
}

}  // namespace blip2
