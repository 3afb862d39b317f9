// Progress reporting on stderr for work that may take more than a second.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <cstdint>
#include <string>
#include <thread>

namespace blip2 {

// Prints "<label>..." once the work has taken over a second, then
// "<label>: done in 2.3 s" when it ends. Silent for quick work.
class Progress {
 public:
  explicit Progress(std::string label, bool enabled = true);
  ~Progress();
  void done();

 private:
  std::string label_;
  std::chrono::steady_clock::time_point start_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool finished_ = false, announced_ = false;
  std::thread thread_;
};

// "12/100 [####------] 00:10<01:23" for training loops: `done` of `total`,
// the remaining time estimated from the rate since `first` (the step a
// resumed run started from), over which `seconds_elapsed` were spent.
std::string progress_bar(int64_t done, int64_t total, double seconds_elapsed, int64_t first = 0, int width = 24);
std::string format_duration(double seconds);
// Seconds from t0 to now (steady clock).
inline double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// Resident set size of this process in KiB (0 where unknown).
int64_t resident_memory_kb();

}  // namespace blip2
