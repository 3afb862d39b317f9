// Dynamic batching of generation requests. Handlers submit jobs; one worker
// thread takes the oldest job, waits up to max_wait for compatible ones
// (same kind, same generation options; sampled jobs run alone so a seed
// gives the same text whatever else is queued), runs them as one Pipeline
// batch and hands each job its results. A batch that throws is re-run job
// by job so only the job at fault fails. Cancelled jobs (client gone,
// timed out) are skipped in the queue and stopped mid-generation.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "blip2/blip2.h"

namespace blip2::server {

class Metrics;
using Clock = std::chrono::steady_clock;

enum class JobKind { kCaption, kAnswer };  // prompt continued / question in the VQA template

struct Job {
  JobKind kind = JobKind::kCaption;
  Image image;
  std::string text;            // the prompt (caption) or the question (answer)
  GenerationConfig config;     // its on_tokens is ignored: see on_tokens below
  // Streaming: sequence `seq` (of n) got these tokens; called on the worker thread.
  // Returns false to stop that sequence.
  std::function<bool(int64_t seq, const std::vector<int64_t>& tokens)> on_tokens;

  std::function<void()> on_done;  // called once the results (or the error) are set

  std::atomic<bool> cancelled{false};
  Clock::time_point enqueued, started, finished;

  // Set once by the worker, then `done`.
  std::vector<TextResult> results;  // n of them; token_ids without the batch's padding
  int error_status = 0;             // 0 ok, else HTTP status
  std::string error;

  // Waits until done or `deadline`; false on timeout.
  bool wait_until(Clock::time_point deadline);
  bool is_done();
  void complete();

 private:
  std::mutex mutex_;
  std::condition_variable cv_;
  bool done_ = false;
};

struct SchedulerOptions {
  int max_batch = 8;
  int max_wait_ms = 10;
  int max_queue = 64;
};

class Scheduler {
 public:
  // `compute` is held while a batch runs (other users of the models take it too).
  Scheduler(Pipeline& pipeline, const SchedulerOptions& options, Metrics& metrics, std::timed_mutex& compute);
  ~Scheduler();  // finishes the queue, then joins the worker
  Scheduler(const Scheduler&) = delete;
  Scheduler& operator=(const Scheduler&) = delete;

  // False when the queue is full.
  bool submit(const std::shared_ptr<Job>& job);
  int64_t depth() const;

 private:
  void run();
  std::vector<std::shared_ptr<Job>> next_batch();
  void execute(const std::vector<std::shared_ptr<Job>>& batch);
  void execute_one_batch(const std::vector<std::shared_ptr<Job>>& batch);

  Pipeline& pipeline_;
  SchedulerOptions options_;
  Metrics& metrics_;
  std::timed_mutex& compute_;
  mutable std::mutex mutex_;
  std::condition_variable cv_;
  std::deque<std::shared_ptr<Job>> queue_;
  bool stopping_ = false;
  std::thread worker_;
};

// A key equal for jobs that may share a batch.
std::string batch_key(const Job& job);
// The language model's EOS and pad ids (from its config: OPT BLIP-2 models end with "\n", not </s>).
std::pair<int64_t, int64_t> eos_and_pad(const Pipeline& p);
// Generated tokens of a result: after the BOS / decoder prefix, up to and
// including EOS, no padding.
int64_t generated_tokens(const TextResult& r, int64_t eos, int64_t pad);

}  // namespace blip2::server
