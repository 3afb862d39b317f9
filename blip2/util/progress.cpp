#include "blip2/util/progress.h"

#include <algorithm>
#include <fstream>

#include <cstdio>

namespace blip2 {

Progress::Progress(std::string label, bool enabled) : label_(std::move(label)), start_(std::chrono::steady_clock::now()) {
  if (!enabled) {
    finished_ = true;
    return;
  }
  thread_ = std::thread([this] {
    std::unique_lock<std::mutex> lock(mu_);
    if (cv_.wait_for(lock, std::chrono::seconds(1), [this] { return finished_; })) return;
    announced_ = true;
    std::fprintf(stderr, "%s...\n", label_.c_str());
  });
}

void Progress::done() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (finished_ && !thread_.joinable()) return;
    finished_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
  if (announced_) {
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
    std::fprintf(stderr, "%s: done in %.1f s\n", label_.c_str(), s);
  }
}

Progress::~Progress() { done(); }

std::string format_duration(double s) {
  if (!(s >= 0) || s > 1e8) return "--:--";
  const long t = static_cast<long>(s + 0.5);
  char buf[32];
  if (t >= 3600) std::snprintf(buf, sizeof buf, "%ld:%02ld:%02ld", t / 3600, (t / 60) % 60, t % 60);
  else std::snprintf(buf, sizeof buf, "%02ld:%02ld", t / 60, t % 60);
  return buf;
}

std::string progress_bar(int64_t done, int64_t total, double elapsed, int64_t first, int width) {
  const double f = total > 0 ? std::clamp(static_cast<double>(done) / static_cast<double>(total), 0.0, 1.0) : 0;
  const int filled = static_cast<int>(f * width);
  std::string bar(static_cast<size_t>(filled), '#');
  bar.append(static_cast<size_t>(width - filled), '-');
  const int64_t ran = done - first;
  const double eta = ran > 0 ? elapsed / static_cast<double>(ran) * static_cast<double>(total - done) : -1;
  char buf[160];
  std::snprintf(buf, sizeof buf, "%lld/%lld [%s] %s<%s", static_cast<long long>(done), static_cast<long long>(total),
                bar.c_str(), format_duration(elapsed).c_str(), format_duration(eta).c_str());
  return buf;
}

int64_t resident_memory_kb() {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("VmRSS:", 0) == 0) return std::stoll(line.substr(6));
  return 0;
}

}  // namespace blip2
