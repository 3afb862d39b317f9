// Prefetching, deterministic batch loader (see batch_loader.h).
//
// Pipeline for one epoch: workers claim batch numbers in increasing order
// (never more than prefetch_depth ahead of the consumer), fix the batch's
// samples at claim time (a slice of the epoch permutation, or the next
// batch_size samples of the stream, read under the claim lock so the stream
// is consumed in batch order), then decode / augment / normalise outside any
// lock and file the result under its batch number. The consumer takes batch
// `consumed` when it is there. Content never depends on which thread built it.
#include "blip2/data/batch_loader.h"

#include <atomic>
#include <condition_variable>
#include <limits>
#include <map>
#include <mutex>
#include <random>
#include <thread>
#include <utility>

#include "blip2/util/error.h"

namespace blip2 {

namespace {

constexpr int64_t kUnknownEnd = std::numeric_limits<int64_t>::max();

// The caption a sample carries among its n. The random draw is made either
// way, so the augmentation after it sees the same stream of numbers.
int64_t caption_index(std::mt19937_64& rng, int64_t n, CaptionChoice choice) {
  const auto drawn = uniform_int(rng, 0, n - 1);
  return choice == CaptionChoice::kFirst ? 0 : drawn;
}

// Rethrows the exception being handled with `prefix` added to its message,
// keeping the blip2 error type. Call only inside a catch block.
std::exception_ptr wrap_current(const std::string& prefix) {
  try {
    throw;
  } catch (const InputError& e) {
    return std::make_exception_ptr(InputError(prefix + e.what()));
  } catch (const ConfigError& e) {
    return std::make_exception_ptr(ConfigError(prefix + e.what()));
  } catch (const CheckpointError& e) {
    return std::make_exception_ptr(CheckpointError(prefix + e.what()));
  } catch (const std::exception& e) {
    return std::make_exception_ptr(Error(prefix + e.what()));
  } catch (...) {
    return std::make_exception_ptr(Error(prefix + "unknown exception"));
  }
}

}  // namespace

struct BatchLoader::Impl {
  // What a batch is made of, fixed when it is claimed.
  struct Job {
    int64_t batch = 0;
    std::vector<int64_t> indices;              // random access
    std::vector<WebDatasetSample> samples;     // streaming (not decoded)
    bool end = false;                          // the epoch has no batch `batch`
    std::exception_ptr error;                  // reading the stream failed
  };
  struct Slot {
    Batch batch;
    std::exception_ptr error;
  };

  BatchLoaderOptions opt;
  std::shared_ptr<const CaptionDataset> dataset;
  std::unique_ptr<WebDatasetReader> reader;
  ImageProcessorConfig to_tensor;  // opt.processor without resizing
  DecodeOptions decode;            // the reader's, copied for the workers

  LoaderState state;  // the consumer's position
  bool running = false;

  // --- pipeline of the running epoch ---
  int64_t epoch = 0;
  std::vector<int64_t> indices;  // random access: this rank's order
  std::mutex m;
  std::condition_variable cv_room, cv_ready;
  std::mutex claim_m;                 // serialises claims (and stream reads)
  int64_t next_claim = 0;             // under m
  int64_t consumed = 0;               // under m
  int64_t end_batch = kUnknownEnd;    // under m
  std::map<int64_t, Slot> results;    // under m
  std::atomic<bool> stop_flag{false};
  std::vector<std::thread> workers;

  bool streaming() const { return reader != nullptr; }

  void validate() {
    const auto bad = [](const std::string& what) {
      throw ConfigError("[BatchLoader] " + what);
    };
    if (opt.batch_size < 1) bad("batch_size = " + std::to_string(opt.batch_size) + "; expected >= 1");
    if (opt.num_workers < 0) bad("num_workers = " + std::to_string(opt.num_workers) + "; expected >= 0 (0 = no threads)");
    if (opt.prefetch_depth < 1) bad("prefetch_depth = " + std::to_string(opt.prefetch_depth) + "; expected >= 1");
    if (opt.world_size < 1 || opt.rank < 0 || opt.rank >= opt.world_size) {
      bad("rank " + std::to_string(opt.rank) + " of world size " + std::to_string(opt.world_size) +
          "; expected world_size >= 1 and 0 <= rank < world_size");
    }
    opt.transform.validate();
    opt.processor.validate("[BatchLoader] processor");
    to_tensor = opt.processor;
    to_tensor.do_resize = false;
  }

  // ---- sample order -------------------------------------------------------

  int64_t per_rank(int64_t n) const {
    if (n == 0) return 0;
    return opt.drop_last ? n / opt.world_size : (n + opt.world_size - 1) / opt.world_size;
  }

  int64_t num_batches(int64_t samples) const {
    return opt.drop_last ? samples / opt.batch_size : (samples + opt.batch_size - 1) / opt.batch_size;
  }

  std::vector<int64_t> rank_indices(int64_t e) const {
    const int64_t n = static_cast<int64_t>(dataset->size());
    std::vector<int64_t> perm(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) perm[static_cast<size_t>(i)] = i;
    if (opt.shuffle && n > 1) {
      std::mt19937_64 rng(mix_seed({opt.seed, static_cast<uint64_t>(e), 0x5045524DULL /* "PERM" */}));
      for (int64_t i = n - 1; i > 0; --i) std::swap(perm[static_cast<size_t>(i)], perm[static_cast<size_t>(uniform_int(rng, 0, i))]);
    }
    const int64_t k = per_rank(n);
    std::vector<int64_t> mine(static_cast<size_t>(k));
    for (int64_t j = 0; j < k; ++j) {
      const int64_t pos = opt.rank + j * opt.world_size;  // < n, or padding wrapped from the start
      mine[static_cast<size_t>(j)] = perm[static_cast<size_t>(pos % n)];
    }
    return mine;
  }

  // ---- building -----------------------------------------------------------

  std::string batch_prefix(int64_t b) const {
    return "[BatchLoader] epoch " + std::to_string(epoch) + " batch " + std::to_string(b) + ": ";
  }

  Image transform(const Image& img, std::mt19937_64& rng) const {
    const int w = opt.processor.width, h = opt.processor.height;
    if (opt.augment) return train_transform(img, w, h, opt.transform, rng);
    return resize(img, w, h, static_cast<Resample>(opt.processor.resample));
  }

  // Called with claim_m held (the stream is read here).
  Job make_job(int64_t b) {
    Job job;
    job.batch = b;
    if (!streaming()) {
      const int64_t n = static_cast<int64_t>(indices.size());
      const int64_t begin = b * opt.batch_size;
      const int64_t end = std::min(n, begin + opt.batch_size);
      if (begin >= end) {
        job.end = true;
        return job;
      }
      job.indices.assign(indices.begin() + begin, indices.begin() + end);
      return job;
    }
    try {
      for (int64_t k = 0; k < opt.batch_size; ++k) {
        if (stop_flag.load()) break;
        WebDatasetSample s;
        if (!reader->next(&s)) break;
        job.samples.push_back(std::move(s));
      }
    } catch (...) {
      job.error = wrap_current(batch_prefix(b) + "reading the stream after sample " +
                               std::to_string(reader->position()) + ": ");
      return job;
    }
    const int64_t got = static_cast<int64_t>(job.samples.size());
    if (got == 0 || (opt.drop_last && got < opt.batch_size)) job.end = true;
    return job;
  }

  // Records what a job says about the end of the epoch. Called with m held.
  void note_end(const Job& job) {
    if (job.end) {
      end_batch = std::min(end_batch, job.batch);
    } else if (job.error || (streaming() && static_cast<int64_t>(job.samples.size()) < opt.batch_size)) {
      end_batch = std::min(end_batch, job.batch + 1);
    }
  }

  Slot build(Job& job) {
    Slot slot;
    if (job.error) {
      slot.error = job.error;
      return slot;
    }
    Batch& out = slot.batch;
    const size_t n = streaming() ? job.samples.size() : job.indices.size();
    std::vector<Image> images(n);
    out.captions.reserve(n);
    out.image_ids.reserve(n);
    out.indices.reserve(n);
    for (size_t k = 0; k < n; ++k) {
      if (stop_flag.load()) return slot;  // abandoned: nobody will read it
      std::string what;
      try {
        if (!streaming()) {
          const int64_t idx = job.indices[k];
          what = "sample " + std::to_string(idx) + " (image '" + dataset->image_path(static_cast<size_t>(idx)) + "')";
          std::mt19937_64 rng(mix_seed({opt.seed, static_cast<uint64_t>(epoch), static_cast<uint64_t>(idx)}));
          CaptionSample cs = dataset->load(static_cast<size_t>(idx));
          const auto c = caption_index(rng, static_cast<int64_t>(cs.captions.size()), opt.caption_choice);
          images[k] = transform(cs.image, rng);
          out.captions.push_back(std::move(cs.captions[static_cast<size_t>(c)]));
          out.image_ids.push_back(std::move(cs.image_id));
          out.questions.push_back(std::move(cs.question));
          out.indices.push_back(idx);
        } else {
          WebDatasetSample& s = job.samples[k];
          what = "sample " + std::to_string(s.index) + " ('" + s.name() + "')";
          std::mt19937_64 rng(mix_seed({opt.seed, static_cast<uint64_t>(epoch), static_cast<uint64_t>(reader->rank()),
                                        static_cast<uint64_t>(s.index), 0x57445321ULL /* "WDS!" */}));
          const Image img = s.image.empty() ? decode_sample_image(s, decode) : std::move(s.image);
          const auto c = caption_index(rng, static_cast<int64_t>(s.captions.size()), opt.caption_choice);
          images[k] = transform(img, rng);
          out.captions.push_back(std::move(s.captions[static_cast<size_t>(c)]));
          out.image_ids.push_back(std::move(s.image_id));
          out.questions.emplace_back();
          out.indices.push_back(s.index);
        }
      } catch (...) {
        slot.error = wrap_current(batch_prefix(job.batch) + what + ": ");
        return slot;
      }
    }
    try {
      out.pixel_values = preprocess_batch(images, to_tensor);  // (B, 3, H, W)
    } catch (...) {
      slot.error = wrap_current(batch_prefix(job.batch) + "normalising: ");
    }
    return slot;
  }

  // ---- pipeline -----------------------------------------------------------

  void worker_loop() {
    for (;;) {
      Job job;
      {
        std::unique_lock<std::mutex> claim(claim_m);
        {
          std::unique_lock<std::mutex> l(m);
          cv_room.wait(l, [&] {
            return stop_flag.load() || next_claim >= end_batch || next_claim < consumed + opt.prefetch_depth;
          });
          if (stop_flag.load() || next_claim >= end_batch) return;
          job.batch = next_claim++;
        }
        job = make_job(job.batch);
        {
          std::lock_guard<std::mutex> l(m);
          note_end(job);
        }
        cv_ready.notify_all();
        cv_room.notify_all();
      }
      if (job.end) continue;
      Slot slot = build(job);
      if (stop_flag.load()) return;
      {
        std::lock_guard<std::mutex> l(m);
        results[job.batch] = std::move(slot);
      }
      cv_ready.notify_all();
    }
  }

  void start() {
    epoch = state.epoch;
    results.clear();
    stop_flag = false;
    next_claim = consumed = state.position;
    end_batch = kUnknownEnd;
    if (!streaming()) {
      indices = rank_indices(epoch);
      end_batch = num_batches(static_cast<int64_t>(indices.size()));
    } else {
      reader->set_epoch(epoch);
      const int64_t want = state.position * opt.batch_size;
      const int64_t got = reader->skip(want);
      if (got < want) end_batch = std::min(end_batch, state.position);
    }
    running = true;
    for (int i = 0; i < opt.num_workers; ++i) workers.emplace_back([this] { worker_loop(); });
  }

  void stop_pipeline() {
    {
      std::lock_guard<std::mutex> l(m);
      stop_flag = true;
    }
    cv_room.notify_all();
    cv_ready.notify_all();
    for (std::thread& t : workers) {
      if (t.joinable()) t.join();
    }
    workers.clear();
    results.clear();
    running = false;
  }

  bool next(Batch* out) {
    if (!running) start();
    if (workers.empty()) {  // num_workers == 0: build here, same steps
      bool need = false;
      {
        std::lock_guard<std::mutex> l(m);
        need = !results.count(consumed) && consumed < end_batch && next_claim == consumed;
        if (need) ++next_claim;
      }
      if (need) {
        Job job = make_job(consumed);
        {
          std::lock_guard<std::mutex> l(m);
          note_end(job);
        }
        if (!job.end) {
          Slot slot = build(job);
          std::lock_guard<std::mutex> l(m);
          results[job.batch] = std::move(slot);
        }
      }
    }
    std::unique_lock<std::mutex> l(m);
    cv_ready.wait(l, [&] { return results.count(consumed) > 0 || consumed >= end_batch; });
    auto it = results.find(consumed);
    if (it == results.end()) {  // consumed >= end_batch: the epoch is over
      l.unlock();
      stop_pipeline();
      state = LoaderState{epoch + 1, 0};
      return false;
    }
    if (it->second.error) std::rethrow_exception(it->second.error);  // stays at this batch
    *out = std::move(it->second.batch);
    results.erase(it);
    ++consumed;
    state.position = consumed;
    l.unlock();
    cv_room.notify_all();
    return true;
  }
};

BatchLoader::BatchLoader(std::shared_ptr<const CaptionDataset> dataset, BatchLoaderOptions options)
    : impl_(std::make_unique<Impl>()) {
  if (!dataset) throw ConfigError("[BatchLoader] the data set is null; expected an opened CaptionDataset");
  impl_->opt = std::move(options);
  impl_->validate();
  impl_->dataset = std::move(dataset);
}

BatchLoader::BatchLoader(std::unique_ptr<WebDatasetReader> reader, BatchLoaderOptions options)
    : impl_(std::make_unique<Impl>()) {
  if (!reader) throw ConfigError("[BatchLoader] the WebDatasetReader is null; expected an opened reader");
  impl_->opt = std::move(options);
  impl_->validate();
  reader->set_decode_images(false);
  impl_->decode = reader->options().decode;
  impl_->reader = std::move(reader);
}

BatchLoader::~BatchLoader() {
  if (impl_) impl_->stop_pipeline();
}

bool BatchLoader::next(Batch* out) {
  if (!out) throw InputError("[BatchLoader] next(nullptr); expected a Batch to fill");
  return impl_->next(out);
}

LoaderState BatchLoader::state() const { return impl_->state; }

void BatchLoader::set_state(const LoaderState& state) {
  if (state.epoch < 0 || state.position < 0) {
    throw InputError("[BatchLoader] set_state(epoch " + std::to_string(state.epoch) + ", position " +
                     std::to_string(state.position) + "); expected both >= 0");
  }
  impl_->stop_pipeline();
  impl_->state = state;
}

int64_t BatchLoader::batches_per_epoch() const {
  if (impl_->streaming()) return -1;
  return impl_->num_batches(impl_->per_rank(static_cast<int64_t>(impl_->dataset->size())));
}

std::vector<int64_t> BatchLoader::epoch_indices(int64_t epoch) const {
  if (impl_->streaming()) return {};
  return impl_->rank_indices(epoch);
}

void BatchLoader::stop() { impl_->stop_pipeline(); }

const BatchLoaderOptions& BatchLoader::options() const { return impl_->opt; }

}  // namespace blip2
