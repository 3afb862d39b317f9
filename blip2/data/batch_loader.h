// Batches of (image tensor, one caption per image) for BLIP-2 training, from a
// random-access CaptionDataset or a streaming WebDatasetReader, built ahead of
// the consumer by worker threads.
//
// Determinism: a batch's content is a pure function of (seed, epoch, batch
// number, rank, world size, options): which samples it holds is fixed before
// any worker runs, and each sample's caption choice and augmentation draw from
// the sample's own RNG stream mix_seed(seed, epoch, index) (streaming:
// mix_seed(seed, epoch, rank, stream index)). Batches come out in batch order
// whatever the thread timing, so 0, 1 or 8 workers give identical batches.
//
// Resume: state() = {epoch, position} where position is the number of batches
// already returned in that epoch; set_state() on a fresh loader (same options)
// continues with exactly the batch that would have come next.
//
// Usage:
//   BatchLoader loader(std::make_shared<CaptionDataset>(ann, root), opts);
//   loader.set_state(saved);                  // optional resume
//   Batch b;
//   while (loader.next(&b)) train_step(b);    // false once at each epoch end
// See docs/data.md.
#pragma once

#include <torch/types.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "blip2/data/augment.h"
#include "blip2/data/caption_choice.h"
#include "blip2/data/caption_dataset.h"
#include "blip2/data/image_processor.h"
#include "blip2/data/webdataset.h"

namespace blip2 {

struct Batch {
  at::Tensor pixel_values;            // (B, 3, H, W) float32, normalised
  std::vector<std::string> captions;  // (B) one caption sampled per image
  std::vector<std::string> image_ids;  // (B)
  std::vector<std::string> questions;  // (B) VQA data: the question each caption (answer) replies to
  // (B) data-set record index (CaptionDataset) or position in the reader's
  // stream for the epoch (WebDatasetReader).
  std::vector<int64_t> indices;
  int64_t size() const { return static_cast<int64_t>(indices.size()); }
};

// Where the loader is: `position` batches of `epoch` have been returned.
struct LoaderState {
  int64_t epoch = 0;
  int64_t position = 0;
  bool operator==(const LoaderState& o) const { return epoch == o.epoch && position == o.position; }
};

struct BatchLoaderOptions {
  int64_t batch_size = 32;  // per rank
  int num_workers = 2;      // 0: batches are built on the thread calling next()
  // Batches built or being built ahead of the consumer (at most); keep it
  // >= num_workers so every worker has work.
  int prefetch_depth = 4;
  uint64_t seed = 0;
  // Random access only (a WebDatasetReader carries its own seed / rank /
  // world size / shard shuffle):
  bool shuffle = true;  // per-epoch permutation from (seed, epoch)
  int rank = 0, world_size = 1;
  // Drop the last, partial batch. Random access with world_size > 1 also
  // drops the permutation's tail so every rank gets N / world_size samples;
  // without drop_last the tail is padded from the permutation's start so
  // every rank gets ceil(N / world_size) (as torch's DistributedSampler), so
  // all ranks run the same number of steps.
  bool drop_last = true;
  // true: RandomResizedCrop + flip (LAVIS blip2 training); false: plain
  // resize with processor.resample (evaluation).
  bool augment = true;
  CaptionChoice caption_choice = CaptionChoice::kRandom;
  TrainTransformConfig transform;
  // Output size (height, width) and normalisation (mean / std / rescale).
  ImageProcessorConfig processor;
};

class BatchLoader {
 public:
  // ConfigError for invalid options or a null data set (shared with the
  // workers; CaptionDataset::load is thread-safe).
  BatchLoader(std::shared_ptr<const CaptionDataset> dataset, BatchLoaderOptions options);
  // Takes the reader; it is re-positioned (set_epoch / skip) by the loader and
  // its images are decoded in the workers (decode_images is turned off).
  BatchLoader(std::unique_ptr<WebDatasetReader> reader, BatchLoaderOptions options);
  ~BatchLoader();  // stops and joins the workers; never blocks on a full queue
  BatchLoader(const BatchLoader&) = delete;
  BatchLoader& operator=(const BatchLoader&) = delete;

  // The next batch of the current epoch. Returns false (once) at the end of
  // an epoch and moves to {epoch + 1, 0}; the next call starts that epoch.
  // A failure while building a batch (undecodable image, bad shard, ...) is
  // rethrown here with its type (InputError, ...) and the sample named; the
  // loader stays at that batch (calling again rethrows; set_state() to move).
  bool next(Batch* out);

  LoaderState state() const;
  // Positions the loader so the next batch is batch `position` of `epoch`.
  // Discards prefetched batches. InputError on negative values.
  void set_state(const LoaderState& state);

  // Random access: batches per epoch for this rank (the same on every rank);
  // streaming: -1 (unknown).
  int64_t batches_per_epoch() const;
  // Random access: this rank's sample indices for `epoch` in batch order (the
  // padded / truncated permutation slice). Empty for streaming.
  std::vector<int64_t> epoch_indices(int64_t epoch) const;

  // Stops the workers now; prefetched batches are dropped. next() restarts
  // them at state().
  void stop();

  const BatchLoaderOptions& options() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace blip2
