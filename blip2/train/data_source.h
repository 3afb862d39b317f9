// The trainer's BatchSource over the data pipeline: LAVIS caption JSON + an
// image root (random access) or WebDataset shards (streaming), with the
// paper's augmentation, prefetched by worker threads, resumable.
#pragma once

#include <memory>

#include "blip2/train/train_config.h"
#include "blip2/train/trainer.h"

namespace blip2 {

struct ImageProcessorConfig;

// Throws ConfigError when neither data.annotations nor data.shards is set.
std::unique_ptr<BatchSource> make_batch_source(const TrainConfig& config, const ImageProcessorConfig& processor,
                                               int rank, int world_size);

}  // namespace blip2
