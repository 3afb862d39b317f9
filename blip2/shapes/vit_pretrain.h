// Pretraining the small image encoder of the shapes world (issue 5): a
// VisionEncoder learns, for every patch token, which shape (or background),
// colour and size covers the patch (three factorised cross-entropy heads, so
// an unseen composition such as a purple triangle is two known facts), and
// from the mean of its tokens how many objects the scene has (1-3). Only the
// tower is kept: save_vision_encoder writes it under "vision_model.*", the
// names Blip2Model loads (trainer's vision_init). See docs/pretraining.md.
#pragma once


#include <torch/torch.h>

#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "blip2/config/config.h"
#include "blip2/data/image.h"
#include "blip2/train/optim.h"
#include "blip2/vision/vision_encoder.h"

namespace blip2 {

struct VitProbeAccuracy {
  std::string data_dir;
  int64_t objects = 0;                  // objects scored
  double shape = 0, color = 0, size = 0;  // fraction right at the patch holding the object's centre
  double all = 0;                       // all three right
  double count = 0;                     // fraction of scenes with the right object count
  // Fraction of patches whose row and column the position heads name right
  // (only with VitPretrainOptions::position_head; -1 otherwise).
  double position = -1;
};

// What pretrain_vision asks of the tower besides the attribute heads (issue
// 11's compositional pretraining, our additions; all off by default).
struct VitPretrainOptions {
  // 0-1: that share of each batch's images is shown with every object
  // repainted in a gray level of its own (gray_scene_copy) and trains only
  // the shape and size heads, so the trunk must tell shapes apart by their
  // outline, not by the colours they came in. No colour and no held-out
  // composition is synthesised.
  double gray_fraction = 0;
  // Two more heads name each patch token's row and column on the patch grid,
  // so the tokens keep *where* they are: the Q-Former's cross-attention reads
  // a set of tokens, and captions need left/right/above/below and the
  // left-to-right order. The attribute heads need no position, and the
  // position embeddings start near zero (N(0, 0.02)), so without this the
  // tower may let them fade.
  bool position_head = false;
  // ConfigError for a gray fraction outside [0, 1].
  void validate() const;
};

struct VitPretrainResult {
  VisionEncoder model{nullptr};  // in eval mode
  std::vector<double> losses;    // one per step: patch CEs + count CE (+ position CEs)
  std::vector<double> patch_losses, count_losses;
  std::vector<VitProbeAccuracy> probes;  // one per eval_dirs entry, after training
};

// Per-patch targets of a scenes.json entry and its rendered image on a
// grid x grid patch grid (row-major, the order of the ViT's patch tokens):
// class ids of the shape (0 background, 1 + index in shapes::shape_names),
// colour (0, 1 + colour index) and size (0, 1 + size index). A patch takes an
// object's classes when >= 20% of its pixels are the object's (inside its
// box, colour nearer the object's rgb than gray) or it holds the object's
// centre; a patch with a smaller sliver of an object is ignored (-100); the
// rest are background. count = objects - 1. InputError on unknown names, a
// scene without 1-3 objects or a non-square image.
struct ShapePatchTargets {
  torch::Tensor shape, color, size;  // (grid * grid,) int64
  int64_t count = 0;
  std::vector<int64_t> centre_patch;  // per object, the patch holding its centre
};
ShapePatchTargets shape_patch_targets(const nlohmann::json& scene, const Image& image, int64_t grid);

// Trains a fresh VisionEncoder(vision) (init N(0, 0.02)) with AdamW on every
// image of data_dir (a generate_split directory with scenes.json), images
// preprocessed to vision.image_size with the CLIP mean/std (BlipImageProcessor
// defaults). Batches are drawn with replacement, deterministically for a seed.
// on_step(step, loss) after every step (step counts from 1). After training,
// the heads are scored on every directory of eval_dirs (held-out splits:
// VitProbeAccuracy), so a frozen tower's attribute knowledge is measured.
// `options` adds the gray copies and the position heads (above).
VitPretrainResult pretrain_vision(const VisionConfig& vision, const std::string& data_dir, int64_t steps,
                                  int64_t batch_size, const OptimConfig& optim, uint64_t seed,
                                  std::function<void(int64_t step, double loss)> on_step = {},
                                  const std::vector<std::string>& eval_dirs = {}, const VitPretrainOptions& options = {});

// A copy of a rendered scene with each object's pixels (inside its box, by
// how far they go from the background toward the object's rgb, so
// anti-aliased edges blend as before) turned into gray level levels[i] of
// object i; the background, already gray, is kept. InputError as
// shape_patch_targets, or when levels has not one entry per object.
Image gray_scene_copy(const nlohmann::json& scene, const Image& image, const std::vector<uint8_t>& levels);

// Writes the tower's parameters to `path` (safetensors) as "vision_model.<name>".
void save_vision_encoder(const VisionEncoderImpl& model, const std::string& path);

}  // namespace blip2
