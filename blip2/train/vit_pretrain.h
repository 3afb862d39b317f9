// Pretraining the small image encoder of the shapes world (issue 5): a
// VisionEncoder learns, from the mean of its final tokens, which
// (shape, colour, size) combinations a scene holds (a multi-hot vector over
// 4 x 6 x 2 = 48, binary cross-entropy) and how many objects it has (1-3,
// cross-entropy). Only the tower is kept: save_vision_encoder writes it under
// "vision_model.*", the names Blip2Model loads (trainer's vision_init).
// See docs/pretraining.md.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "blip2/config/config.h"
#include "blip2/train/optim.h"
#include "blip2/vision/vision_encoder.h"

namespace blip2 {

// Number of (shape, colour, size) combinations: the multi-hot target width.
constexpr int64_t kShapeAttributeClasses = 4 * 6 * 2;

struct VitPretrainResult {
  VisionEncoder model{nullptr};  // in eval mode
  std::vector<double> losses;    // one per step: attribute BCE + count CE
  std::vector<double> attribute_losses, count_losses;
};

// The multi-hot (48,) attribute target and the count class (0..2) of a
// scenes.json entry (blip2/data/shapes.h generate_split). Index of a
// combination: (shape * 6 + colour) * 2 + size in the orders of
// shapes::shape_names / color_names / size_names. InputError on unknown names.
std::pair<torch::Tensor, int64_t> shape_attribute_targets(const nlohmann::json& scene);

// Trains a fresh VisionEncoder(vision) (init N(0, 0.02)) with AdamW on every
// image of data_dir (a generate_split directory with scenes.json), images
// preprocessed to vision.image_size with the CLIP mean/std (BlipImageProcessor
// defaults). Batches are drawn with replacement, deterministically for a seed.
// on_step(step, loss) after every step (step counts from 1).
VitPretrainResult pretrain_vision(const VisionConfig& vision, const std::string& data_dir, int64_t steps,
                                  int64_t batch_size, const OptimConfig& optim, uint64_t seed,
                                  std::function<void(int64_t step, double loss)> on_step = {});

// Writes the tower's parameters to `path` (safetensors) as "vision_model.<name>".
void save_vision_encoder(const VisionEncoderImpl& model, const std::string& path);

}  // namespace blip2
