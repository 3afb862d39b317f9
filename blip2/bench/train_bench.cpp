// blip2 bench's training numbers: stage-1 samples/s of the Trainer's own
// step with the frozen ViT run on every batch, and with its output read back
// from the feature cache (train/feature_cache.h), interleaved in one process
// (new images, the same images again, new, again, ...) so that both see the
// same machine load.
#include <torch/torch.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>

#include "blip2/bench/benchmark.h"
#include "blip2/train/trainer.h"
#include "blip2/util/atomic_file.h"
#include "blip2/util/error.h"

namespace fs = std::filesystem;

namespace blip2::bench {

namespace {

// Random images with short captions. Batch 2k holds B records never seen
// (every image a cache miss, as in a first epoch), batch 2k + 1 the same
// records again (every image a hit, as in later epochs).
class AlternatingSource : public BatchSource {
 public:
  AlternatingSource(int64_t batch, int64_t image_size, int64_t pairs)
      : batch_(batch), image_size_(image_size), pixels_(torch::randn({pairs * batch, 3, image_size, image_size})) {}
  TrainBatch next() override {
    static const char* captions[] = {"a photo of a red car", "a dog on a sofa", "two cats", "a plate of food"};
    const int64_t first = (n_++ / 2) * batch_ % pixels_.size(0);
    TrainBatch b;
    for (int64_t i = first; i < first + batch_; ++i) {
      b.indices.push_back(i);
      b.captions.push_back(captions[i % 4]);
      b.image_ids.push_back(std::to_string(i));
    }
    b.pixel_values = pixels_.slice(0, first, first + batch_);
    return b;
  }
  nlohmann::json state() const override { return {{"n", n_}}; }
  void restore(const nlohmann::json& s) override { n_ = s.at("n").get<int64_t>(); }
  std::optional<DatasetImages> images() const override {
    DatasetImages d;
    for (int64_t i = 0; i < pixels_.size(0); ++i) d.record_paths.push_back("bench-image-" + std::to_string(i));
    d.processor.height = d.processor.width = static_cast<int>(image_size_);
    return d;
  }

 private:
  int64_t batch_, image_size_;
  torch::Tensor pixels_;  // (pairs * B, 3, S, S)
  int64_t n_ = 0;
};

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace

TrainBench measure_stage1_training(const Blip2Config& config, int batch, int repeats) {
  torch::AutoGradMode grad(true);  // the benchmark otherwise runs without gradients
  const fs::path dir = fs::temp_directory_path() / ("blip2-bench-train-" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  struct Cleanup {
    fs::path dir;
    ~Cleanup() {
      std::error_code ec;
      fs::remove_all(dir, ec);
    }
  } cleanup{dir};
  write_atomic((dir / "config.json").string(), config.to_json_string());
  std::string vocab;
  for (const char* t : {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "photo", "of", "red", "car", "dog", "on",
                        "sofa", "two", "cats", "plate", "food", "[DEC]"})
    vocab += std::string(t) + "\n";
  write_atomic((dir / "vocab.txt").string(), vocab);
  TrainConfig c;
  c.stage = 1;
  c.model_config = (dir / "config.json").string();
  c.qformer_tokenizer = dir.string();
  c.batch_size = batch;
  c.max_steps = 1 << 30;
  c.augment = false;
  c.output_dir = (dir / "run").string();
  c.feature_cache = (dir / "cache").string();
  Trainer trainer(c);
  AlternatingSource data(batch, config.vision.image_size, repeats + 1);
  std::vector<double> recomputed, cached;
  for (int k = 0; k <= repeats; ++k) {  // k = 0 warms both up
    const double a = trainer.train_step(data).samples_per_sec;
    const double b = trainer.train_step(data).samples_per_sec;
    if (k > 0) recomputed.push_back(a), cached.push_back(b);
  }
  const auto& stats = trainer.feature_cache()->stats();
  if (stats.hits != static_cast<int64_t>(repeats + 1) * batch)
    throw Error("bench: the feature cache read back " + std::to_string(stats.hits) + " images, expected " +
                std::to_string((repeats + 1) * batch) + "; the cached timing would not be one");
  return {median(recomputed), median(cached)};
}

}  // namespace blip2::bench
