// Streaming reader of WebDataset tar shards (libarchive; plain or compressed
// tar). A sample is the run of consecutive tar members sharing a key, the
// member path up to the first '.' of its file name ("dir/000123.jpg" and
// "dir/000123.json" -> key "dir/000123", extensions "jpg", "json"; extensions
// are lower-cased, members whose file name starts with '.' or "__" or has no
// '.' are ignored). Per sample:
//   image     the .jpg / .jpeg / .png / .webp member (first of them in that order)
//   captions  .json "caption" (else "text"): a string or a list of strings;
//             else the whole .txt member. Blank captions are dropped.
//   image_id  .json "image_id" (string or integer), else the key.
//
// Distribution (rank r of world size W) and shuffling, per epoch e:
//   the full shard list is shuffled with (seed, e) -- identical on every rank;
//   if there are at least W shards, rank r reads positions r, r+W, r+2W, ...
//   of that order (disjoint shards, their union is every shard); otherwise every
//   rank reads every shard and keeps the samples whose stream index i has
//   i % W == r (disjoint samples, union is everything).
// An optional shuffle buffer then shuffles samples (stream-level, seeded with
// (seed, e, r)). Everything is deterministic for a given (shards, seed, epoch,
// rank, world size, options). See docs/data.md.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "blip2/data/image.h"

namespace blip2 {

struct WebDatasetSample {
  std::string key;    // member path up to the first '.' of its file name
  std::string shard;  // path of the shard it came from
  int64_t index = 0;  // position in this reader's stream for the epoch (0, 1, 2, ...)
  std::vector<uint8_t> image_bytes;  // the encoded image member
  std::string image_ext;             // "jpg", "jpeg", "png" or "webp"
  Image image;                       // decoded when WebDatasetOptions::decode_images, else empty
  std::vector<std::string> captions;  // >= 1, non-blank
  std::string image_id;

  // "shard.tar:key.jpg", the name used in error messages.
  std::string name() const { return shard + ":" + key + "." + image_ext; }
};

// Decodes a sample's image_bytes (InputError naming shard:key.ext).
Image decode_sample_image(const WebDatasetSample& sample, const DecodeOptions& options = {});

struct WebDatasetOptions {
  // An unreadable, truncated or corrupt shard: false -> InputError naming the
  // shard; true -> the rest of that shard is skipped and it is recorded in
  // bad_shards() (samples already returned from it stay returned).
  bool skip_bad_shards = false;
  // A sample without an image member, without a caption, with invalid .json or
  // with a repeated extension: true -> skipped and counted in
  // skipped_samples(); false -> InputError naming the shard and key.
  bool skip_bad_samples = true;
  bool shuffle_shards = true;  // per-epoch shard order from (seed, epoch)
  // Sample-level shuffle buffer (0 = off): samples come out in a random order
  // drawn from a buffer of this many.
  int64_t shuffle_buffer = 0;
  // Decode the image in next(). A BatchLoader turns this off and decodes in
  // its worker threads instead.
  bool decode_images = true;
  DecodeOptions decode;
};

// Expands "{000000..000009}" numeric ranges (zero padded when an endpoint has
// a leading zero; descending ranges count down) and "{a,b,c}" alternatives
// (several groups multiply), then shell globs (* ? [..]) against the file
// system (sorted). A pattern with glob characters that matches nothing is a
// ConfigError; a plain path is returned as is (checked when read).
std::vector<std::string> expand_shard_spec(const std::string& spec);
std::vector<std::string> expand_shard_specs(const std::vector<std::string>& specs);

class WebDatasetReader {
 public:
  using Sample = WebDatasetSample;

  // `shards`: paths or specs (see expand_shard_spec). ConfigError when the
  // expansion is empty or rank / world_size are out of range. Positioned at
  // the start of epoch 0.
  WebDatasetReader(std::vector<std::string> shards, int rank, int world_size, uint64_t seed,
                   WebDatasetOptions options = {});
  ~WebDatasetReader();
  WebDatasetReader(WebDatasetReader&&) noexcept;
  WebDatasetReader& operator=(WebDatasetReader&&) noexcept;

  // The next sample of this rank's stream for the current epoch; false at the
  // end of the epoch (and on every call after, until set_epoch()).
  bool next(Sample* out);
  // Skips up to n samples exactly as next() would return them (without
  // decoding); returns how many were skipped.
  int64_t skip(int64_t n);
  // Restarts the stream at the beginning of `epoch` (new shard order).
  void set_epoch(int64_t epoch);

  int64_t epoch() const;
  int64_t position() const;  // samples returned (or skipped) so far this epoch
  const std::vector<std::string>& shards() const;  // every shard, expanded, in spec order
  std::vector<std::string> epoch_shards() const;   // what this rank reads this epoch, in order
  bool splits_by_sample() const;                   // fewer shards than ranks
  int rank() const;
  int world_size() const;
  uint64_t seed() const;

  // "shard: reason" for every shard skipped under skip_bad_shards (all epochs).
  const std::vector<std::string>& bad_shards() const;
  int64_t skipped_samples() const;  // under skip_bad_samples (all epochs, all ranks' samples seen)

  void set_decode_images(bool decode);
  const WebDatasetOptions& options() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace blip2
