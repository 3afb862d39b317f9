// The server's Prometheus metrics (GET /metrics, text format 0.0.4):
// requests by route and status, request latency and batch-size histograms,
// queue depth, generated tokens and the generation rate.
#pragma once

#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

namespace blip2::server {

class Metrics {
 public:
  void request(const std::string& route, int status, double seconds);
  void batch(int64_t size, int64_t tokens, double seconds);
  std::string render(int64_t queue_depth, int64_t in_flight) const;

 private:
  struct Histogram {
    std::vector<double> bounds;
    std::vector<uint64_t> counts;  // cumulative per bound is computed when rendering
    uint64_t count = 0;
    double sum = 0;
    explicit Histogram(std::vector<double> b) : bounds(std::move(b)), counts(bounds.size(), 0) {}
    void observe(double v);
    void render(std::string& out, const std::string& name, const std::string& labels) const;
  };
  mutable std::mutex mutex_;
  std::map<std::pair<std::string, int>, uint64_t> requests_;
  std::map<std::string, Histogram> latency_;  // by route
  Histogram batch_sizes_{{1, 2, 4, 8, 16, 32, 64}};
  uint64_t tokens_ = 0;
  double generation_seconds_ = 0;
  double last_rate_ = 0;
};

}  // namespace blip2::server
