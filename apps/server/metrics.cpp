#include "apps/server/metrics.h"

#include <cstdio>

namespace blip2::server {

namespace {
std::string num(double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.9g", v);
  return buf;
}
const std::vector<double> kLatencyBounds = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60};
}  // namespace

void Metrics::Histogram::observe(double v) {
  for (size_t i = 0; i < bounds.size(); ++i)
    if (v <= bounds[i]) {
      ++counts[i];
      break;
    }
  ++count;
  sum += v;
}

void Metrics::Histogram::render(std::string& out, const std::string& name, const std::string& labels) const {
  const std::string sep = labels.empty() ? "" : ",";
  uint64_t cumulative = 0;
  for (size_t i = 0; i < bounds.size(); ++i) {
    cumulative += counts[i];
    out += name + "_bucket{" + labels + sep + "le=\"" + num(bounds[i]) + "\"} " + std::to_string(cumulative) + "\n";
  }
  out += name + "_bucket{" + labels + sep + "le=\"+Inf\"} " + std::to_string(count) + "\n";
  const std::string l = labels.empty() ? "" : "{" + labels + "}";
  out += name + "_sum" + l + " " + num(sum) + "\n";
  out += name + "_count" + l + " " + std::to_string(count) + "\n";
}

void Metrics::request(const std::string& route, int status, double seconds) {
  std::lock_guard<std::mutex> lock(mutex_);
  ++requests_[{route, status}];
  latency_.try_emplace(route, kLatencyBounds).first->second.observe(seconds);
}

void Metrics::batch(int64_t size, int64_t tokens, double seconds) {
  std::lock_guard<std::mutex> lock(mutex_);
  batch_sizes_.observe(static_cast<double>(size));
  tokens_ += static_cast<uint64_t>(tokens);
  generation_seconds_ += seconds;
  if (seconds > 0) last_rate_ = static_cast<double>(tokens) / seconds;
}

std::string Metrics::render(int64_t queue_depth, int64_t in_flight) const {
  std::lock_guard<std::mutex> lock(mutex_);
  std::string out;
  out += "# HELP blip2_requests_total HTTP requests answered, by route and status.\n";
  out += "# TYPE blip2_requests_total counter\n";
  for (const auto& [key, n] : requests_)
    out += "blip2_requests_total{route=\"" + key.first + "\",status=\"" + std::to_string(key.second) + "\"} " +
           std::to_string(n) + "\n";
  out += "# HELP blip2_request_duration_seconds Time from a request's arrival to its answer, by route.\n";
  out += "# TYPE blip2_request_duration_seconds histogram\n";
  for (const auto& [route, h] : latency_) h.render(out, "blip2_request_duration_seconds", "route=\"" + route + "\"");
  out += "# HELP blip2_queue_depth Generation requests waiting for the model.\n";
  out += "# TYPE blip2_queue_depth gauge\n";
  out += "blip2_queue_depth " + std::to_string(queue_depth) + "\n";
  out += "# HELP blip2_requests_in_flight Requests being handled.\n";
  out += "# TYPE blip2_requests_in_flight gauge\n";
  out += "blip2_requests_in_flight " + std::to_string(in_flight) + "\n";
  out += "# HELP blip2_batch_size Generation requests run together in one batch.\n";
  out += "# TYPE blip2_batch_size histogram\n";
  batch_sizes_.render(out, "blip2_batch_size", "");
  out += "# HELP blip2_generated_tokens_total Tokens generated (EOS included, padding not).\n";
  out += "# TYPE blip2_generated_tokens_total counter\n";
  out += "blip2_generated_tokens_total " + std::to_string(tokens_) + "\n";
  out += "# HELP blip2_generation_seconds_total Time the model spent generating.\n";
  out += "# TYPE blip2_generation_seconds_total counter\n";
  out += "blip2_generation_seconds_total " + num(generation_seconds_) + "\n";
  out += "# HELP blip2_tokens_per_second Generated tokens per second of generation, over the server's life.\n";
  out += "# TYPE blip2_tokens_per_second gauge\n";
  out += "blip2_tokens_per_second " + num(generation_seconds_ > 0 ? tokens_ / generation_seconds_ : 0) + "\n";
  out += "# HELP blip2_last_batch_tokens_per_second Generated tokens per second of the last batch.\n";
  out += "# TYPE blip2_last_batch_tokens_per_second gauge\n";
  out += "blip2_last_batch_tokens_per_second " + num(last_rate_) + "\n";
  return out;
}

}  // namespace blip2::server
