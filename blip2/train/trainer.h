// The BLIP-2 training loop, top to bottom: assemble the model (frozen ViT,
// Q-Former, frozen LLM), turn caption batches into the stage's loss, step
// AdamW with warm-up + cosine, log, checkpoint atomically, resume exactly.
#pragma once

#include <torch/torch.h>

#include <filesystem>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "blip2/model/blip2_model.h"
#include "blip2/train/collective.h"
#include "blip2/train/feature_cache.h"
#include "blip2/train/train_config.h"

namespace blip2 {

class Tokenizer;

struct TrainBatch {
  torch::Tensor pixel_values;         // (B, 3, H, W) preprocessed
  std::vector<std::string> captions;  // one per image (VQA: the answer)
  std::vector<std::string> image_ids;
  std::vector<std::string> questions;  // VQA: one per image; empty otherwise
  // Random-access data: each image's record index (BatchSource::images);
  // empty for a stream.
  std::vector<int64_t> indices;
};

// Where batches come from; resumable through an opaque JSON state.
class BatchSource {
 public:
  virtual ~BatchSource() = default;
  virtual TrainBatch next() = 0;  // endless: wraps around epochs
  virtual nlohmann::json state() const = 0;
  virtual void restore(const nlohmann::json& state) = 0;
  // Random-access data: the image file of each record TrainBatch::indices
  // names, and the preprocessing (what data.feature_cache keys features by).
  // nullopt for a stream, whose positions name no fixed image.
  virtual std::optional<DatasetImages> images() const { return std::nullopt; }
};

struct StepMetrics {
  int64_t step = 0;  // optimizer steps done after this one
  double loss = 0, loss_itc = 0, loss_itm = 0, loss_lm = 0;
  double lr = 0, grad_norm = 0, samples_per_sec = 0, seconds = 0;
  nlohmann::json to_json() const;
};

// Builds the model for a stage: the frozen parts loaded, the trainable parts
// loaded from `init` or freshly initialised (BERT init, std 0.02), and
// requires_grad set (only the Q-Former side and ln_vision train).
Blip2Model build_training_model(const TrainConfig& config);

// Initialises Linear/Embedding weights N(0, std), biases 0, LayerNorm 1/0 (BERT).
void init_bert_weights(torch::nn::Module& m, double std = 0.02);

class Trainer {
 public:
  Trainer(const TrainConfig& config, Collective& collective = local_collective());
  // With an already built model (tests); tokenizers are loaded from the config.
  Trainer(const TrainConfig& config, Blip2Model model, Collective& collective = local_collective());
  ~Trainer();

  // Runs until config.max_steps optimizer steps; logs to metrics.jsonl and the
  // terminal; checkpoints every save_every steps and at the end.
  void fit(BatchSource& data);
  // One optimizer step over grad_accum micro-batches drawn from `data`.
  StepMetrics train_step(BatchSource& data);
  // The stage's loss on one batch (no optimizer step).
  std::map<std::string, torch::Tensor> losses(const TrainBatch& batch);

  // Writes output_dir/checkpoint-<step> atomically (rank 0 only): on any
  // failure (disk full, I/O error) the temporary directory is removed, the
  // previous checkpoint and `latest` stay, and an Error names the cause.
  std::string save_checkpoint(const BatchSource* data);
  // Resumes from a checkpoint directory (or output_dir's latest when empty).
  // Returns false when there is none. A missing or damaged file is a
  // CheckpointError naming it and the checkpoint to use instead.
  bool resume(BatchSource* data, const std::string& checkpoint = "");

  int64_t step() const { return step_; }
  Blip2Model model() { return model_; }
  const TrainConfig& config() const { return config_; }
  // Called after every optimizer step (progress display, tests).
  std::function<void(const StepMetrics&)> on_step;
  // One-line reports on the run's state that need no action (the feature
  // cache opened or rebuilt); nothing is printed when unset.
  std::function<void(const std::string&)> on_notice;
  // The data.feature_cache, once the first step has opened it (else null).
  const FeatureCache* feature_cache() const { return cache_.get(); }

 private:
  void setup();
  void write_checkpoint_files(const std::filesystem::path& dir, const BatchSource* data);
  void open_feature_cache(const BatchSource& data);
  // The batch's ViT features from the feature cache; undefined without one.
  torch::Tensor cached_vit_embeds(const TrainBatch& batch);
  TrainConfig config_;
  Collective& coll_;
  Blip2Model model_{nullptr};
  std::unique_ptr<torch::optim::AdamW> optimizer_;
  std::shared_ptr<Tokenizer> qformer_tok_, lm_tok_;
  std::unique_ptr<FeatureCache> cache_;
  std::vector<double> lr_scales_;  // per param group (layer-wise decay)
  torch::Generator gen_;  // hard negatives, prefix splits
  int64_t step_ = 0;
  int64_t samples_ = 0;
};

}  // namespace blip2
