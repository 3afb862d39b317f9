// A disk cache of the frozen image tower's output per image (recipe key
// data.feature_cache: DIR), so training epochs after the first skip the ViT:
// with the tower frozen and no augmentation, an image's features are the same
// every epoch. Entries are Blip2ModelImpl::vit_features rows (N, Dv) in the
// tower's dtype, bit for bit, so training on them gives the losses it gives
// without the cache.
//
// Layout: DIR/part-<rank>.bin, one file per data-parallel rank, written only
// by that rank; every rank reads every part (an image cached by rank 1 in
// epoch 1 is a hit for rank 0 in epoch 2). A part is a header (magic, the
// fingerprint as JSON) and one fixed-size slot per image of the data set,
// created sparse at full size; a slot holds a 16-byte entry header (tag,
// checksum) and the data. The data is written first and the header after it,
// and a read recomputes the checksum, so a run killed mid-write (or a file
// damaged later) leaves an entry that is recomputed, never trusted.
//
// The fingerprint is everything an entry depends on: the vision config, a
// hash of every tower weight, the dtype, the image list (path, size and
// modification time of each file, in slot order) and the preprocessing. A
// part with another fingerprint, a wrong size or a damaged header is rebuilt
// (empty) with a one-line notice naming why; it is never read.
#pragma once

#include <torch/types.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "blip2/data/image_processor.h"

namespace blip2 {

class Blip2ModelImpl;

// The images of a random-access data set, as a feature cache keys them.
struct DatasetImages {
  std::vector<std::string> record_paths;  // the image file of each record (TrainBatch::indices)
  ImageProcessorConfig processor;         // how a file becomes pixels (without augmentation)
};

// What a cache holds: one slot per distinct image file (records of the same
// file, e.g. several VQA questions, share it).
struct FeatureCacheSpec {
  std::vector<int64_t> shape;        // (N, Dv): one image's features
  at::ScalarType dtype = at::kFloat;  // the tower's
  std::vector<int64_t> record_slot;  // record index -> slot
  int64_t slots = 0;
  nlohmann::json fingerprint;
  // The spec of `model`'s tower on `images`. ConfigError without a tower.
  static FeatureCacheSpec of(Blip2ModelImpl& model, const DatasetImages& images);
};

class FeatureCache {
 public:
  using Notice = std::function<void(const std::string&)>;
  // Opens DIR/part-<rank>.bin (created, or rebuilt when stale or damaged),
  // calls `barrier` (every rank has its part ready), then reads the other
  // parts' headers. ConfigError naming data.feature_cache when DIR cannot be
  // created or its disk lacks the space the uncached images need (saying
  // how much). `notice` receives one-line reports (may be empty).
  static std::unique_ptr<FeatureCache> open(const std::string& dir, FeatureCacheSpec spec, int rank,
                                            const std::function<void()>& barrier, Notice notice);
  ~FeatureCache();
  FeatureCache(const FeatureCache&) = delete;
  FeatureCache& operator=(const FeatureCache&) = delete;

  // The features (B, N, Dv) of a batch's records, on pixel_values' device:
  // cached rows read back; when any row is missing, `compute` runs once on the
  // whole of pixel_values (B, C, H, W), as training without the cache does
  // (so the missing rows get the bits that run gives them), and the missing
  // rows are taken from it and stored.
  at::Tensor features(const std::vector<int64_t>& records, const at::Tensor& pixel_values,
                      const std::function<at::Tensor(const at::Tensor&)>& compute);
  // One record's cached features (N, Dv) on the CPU, or an undefined tensor
  // when no part holds a valid entry for its image.
  at::Tensor get(int64_t record);
  // Stores features (N, Dv) of `record` in this rank's part. A write that
  // fails (disk full) stops further writes with one notice; training goes on.
  void put(int64_t record, const at::Tensor& features);

  struct Stats {
    int64_t hits = 0;      // rows read back
    int64_t computed = 0;  // rows computed (and stored)
    int64_t rejected = 0;  // entries that failed their checksum (recomputed)
  };
  const Stats& stats() const { return stats_; }
  const FeatureCacheSpec& spec() const { return spec_; }
  const std::string& path() const;  // this rank's part
  uint64_t slot_bytes() const { return slot_bytes_; }

 private:
  struct Part;
  FeatureCache(FeatureCacheSpec spec, Notice notice);
  int64_t slot_of(int64_t record) const;
  bool read_entry(const Part& part, int64_t slot, void* data);  // counts a failed checksum
  FeatureCacheSpec spec_;
  Notice notice_;
  uint64_t data_bytes_ = 0, slot_bytes_ = 0, header_bytes_ = 0, seed_ = 0;
  std::unique_ptr<Part> own_;
  std::vector<std::unique_ptr<Part>> peers_;
  bool writes_off_ = false, told_rejected_ = false;
  Stats stats_;
};

}  // namespace blip2
