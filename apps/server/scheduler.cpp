#include "apps/server/scheduler.h"

#include <algorithm>
#include <sstream>

#include "apps/server/metrics.h"
#include "blip2/config/config.h"

namespace blip2::server {

bool Job::wait_until(Clock::time_point deadline) {
  std::unique_lock<std::mutex> lock(mutex_);
  return cv_.wait_until(lock, deadline, [this] { return done_; });
}

bool Job::is_done() {
  std::lock_guard<std::mutex> lock(mutex_);
  return done_;
}

void Job::complete() {
  finished = Clock::now();
  {
    std::lock_guard<std::mutex> lock(mutex_);
    done_ = true;
  }
  cv_.notify_all();
  if (on_done) on_done();
}

std::string batch_key(const Job& job) {
  const GenerationConfig& g = job.config;
  std::ostringstream k;
  k.precision(17);
  k << static_cast<int>(job.kind) << '|' << g.max_new_tokens << '|' << g.min_new_tokens << '|' << g.num_beams << '|'
    << g.num_return_sequences << '|' << g.length_penalty << '|' << static_cast<int>(g.early_stopping) << '|'
    << g.eos_token_id.value_or(-1) << '|' << g.pad_token_id.value_or(-1) << '|' << g.do_sample << '|'
    << g.temperature << '|' << g.top_k << '|' << g.top_p << '|' << g.seed << '|' << g.repetition_penalty << '|'
    << g.no_repeat_ngram_size;
  return k.str();
}

std::pair<int64_t, int64_t> eos_and_pad(const Pipeline& p) {
  const TextConfig& t = p.config().text;
  if (t.family == LmFamily::kT5) return {t.t5.eos_token_id, t.t5.pad_token_id};
  return {t.opt.eos_token_id, t.opt.pad_token_id};
}

int64_t generated_tokens(const TextResult& r, int64_t eos, int64_t pad) {
  int64_t n = 0, pads = 0;
  for (size_t i = 1; i < r.token_ids.size(); ++i) {
    if (r.token_ids[i] == eos) return n + pads + 1;
    if (r.token_ids[i] == pad) {
      ++pads;
    } else {
      n += pads + 1;
      pads = 0;
    }
  }
  return n;
}

Scheduler::Scheduler(Pipeline& pipeline, const SchedulerOptions& options, Metrics& metrics, std::timed_mutex& compute)
    : pipeline_(pipeline), options_(options), metrics_(metrics), compute_(compute), worker_([this] { run(); }) {}

Scheduler::~Scheduler() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  cv_.notify_all();
  worker_.join();
}

bool Scheduler::submit(const std::shared_ptr<Job>& job) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (static_cast<int>(queue_.size()) >= options_.max_queue) return false;
    job->enqueued = Clock::now();
    queue_.push_back(job);
  }
  cv_.notify_all();
  return true;
}

int64_t Scheduler::depth() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return static_cast<int64_t>(queue_.size());
}

std::vector<std::shared_ptr<Job>> Scheduler::next_batch() {
  std::unique_lock<std::mutex> lock(mutex_);
  std::vector<std::shared_ptr<Job>> batch;
  while (batch.empty()) {
    cv_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
    if (queue_.empty()) return batch;  // stopping, nothing left
    auto first = queue_.front();
    queue_.pop_front();
    if (first->cancelled) {
      first->complete();
      continue;
    }
    batch.push_back(first);
  }
  const auto& first = batch.front();
  if (first->config.do_sample || options_.max_batch <= 1) return batch;
  const std::string key = batch_key(*first);
  const auto deadline = first->enqueued + std::chrono::milliseconds(options_.max_wait_ms);
  while (static_cast<int>(batch.size()) < options_.max_batch) {
    for (auto it = queue_.begin(); it != queue_.end() && static_cast<int>(batch.size()) < options_.max_batch;) {
      if (!(*it)->cancelled && !(*it)->config.do_sample && batch_key(**it) == key) {
        batch.push_back(*it);
        it = queue_.erase(it);
      } else {
        ++it;
      }
    }
    if (static_cast<int>(batch.size()) >= options_.max_batch || stopping_ || Clock::now() >= deadline) break;
    cv_.wait_until(lock, deadline);
  }
  return batch;
}

void Scheduler::run() {
  while (true) {
    auto batch = next_batch();
    if (batch.empty()) return;
    execute(batch);
  }
}

void Scheduler::execute(const std::vector<std::shared_ptr<Job>>& batch) {
  try {
    execute_one_batch(batch);
  } catch (const std::exception& e) {
    if (batch.size() > 1) {  // find the job at fault: the others still get their answers
      for (const auto& job : batch) execute({job});
      return;
    }
    auto& job = *batch.front();
    job.error_status = dynamic_cast<const InputError*>(&e) || dynamic_cast<const ConfigError*>(&e) ? 400 : 500;
    job.error = e.what();
    job.complete();
  }
}

void Scheduler::execute_one_batch(const std::vector<std::shared_ptr<Job>>& batch) {
  std::lock_guard<std::timed_mutex> lock(compute_);
  const auto started = Clock::now();
  for (const auto& job : batch) job->started = started;
  std::vector<Image> images;
  std::vector<std::string> texts;
  for (const auto& job : batch) {
    images.push_back(job->image);
    texts.push_back(job->text);
  }
  GenerationConfig config = batch.front()->config;
  const int64_t R = config.num_return_sequences;
  // Rows are job-major: job i's sequence j is row i * R + j.
  config.on_tokens = [&batch, R](int64_t row, const std::vector<int64_t>& tokens) {
    Job& job = *batch[static_cast<size_t>(row / R)];
    if (job.cancelled) return false;
    return job.on_tokens && !tokens.empty() ? job.on_tokens(row % R, tokens) : true;
  };
  std::vector<TextResult> results = batch.front()->kind == JobKind::kAnswer
                                        ? pipeline_.answer(images, texts, config)
                                        : pipeline_.generate(images, texts, config);
  const double seconds = std::chrono::duration<double>(Clock::now() - started).count();
  const auto [eos, pad] = eos_and_pad(pipeline_);
  int64_t tokens = 0;
  for (auto& r : results) {
    const int64_t n = generated_tokens(r, eos, pad);
    tokens += n;
    // A row's own tokens: the batch pads shorter rows to its longest.
    r.token_ids.resize(std::min(r.token_ids.size(), static_cast<size_t>(n + 1)));
  }
  metrics_.batch(static_cast<int64_t>(batch.size()), tokens, seconds);
  for (size_t i = 0; i < batch.size(); ++i) {
    auto& job = *batch[i];
    job.results.assign(results.begin() + static_cast<std::ptrdiff_t>(i * R),
                       results.begin() + static_cast<std::ptrdiff_t>((i + 1) * R));
    job.complete();
  }
}

}  // namespace blip2::server
