// Optimisation of BLIP-2 training (paper, Sec. 3.4; LAVIS defaults): AdamW
// with betas (0.9, 0.98) and weight decay 0.05 on matrices only (LAVIS: no
// decay for parameters with < 2 dims or "bias" in the name), linear warm-up
// then cosine decay to min_lr, optional gradient clipping. Only trainable
// parameters (requires_grad) get optimizer state.
#pragma once

#include <torch/torch.h>

#include <memory>
#include <string>
#include <vector>

namespace blip2 {

struct OptimConfig {
  double lr = 1e-4;          // peak learning rate
  double min_lr = 1e-5;      // end of the cosine
  double warmup_lr = 1e-6;   // start of the warm-up
  int64_t warmup_steps = 2000;
  int64_t total_steps = 100000;  // cosine length (warm-up included)
  double weight_decay = 0.05;
  double beta1 = 0.9, beta2 = 0.98, eps = 1e-8;
  double grad_clip = 0.0;  // max global L2 norm; 0 = off
  // Image-encoder fine-tuning (paper Sec. 4.1, BEiT-style): ViT layer i of L
  // gets lr * layer_decay^(L + 1 - i) (embeddings i = 0); 1 = off.
  double layer_decay = 1.0;

  void validate() const;  // ConfigError naming the option
};

// The schedule of the unimodal pretraining runs (`blip2 pretrain lm|vit`):
// warm-up over 5% of `steps` from lr/100, cosine to lr/10, gradients clipped
// at norm 1.
OptimConfig pretraining_optim(double lr, int64_t steps);

// Learning rate after `step` optimizer steps (0-based).
double learning_rate(const OptimConfig& c, int64_t step);

struct ParamGroups {
  std::vector<std::string> decay_names, no_decay_names;
  std::vector<torch::Tensor> decay, no_decay;
};
// Splits the module's trainable parameters as LAVIS does.
ParamGroups split_for_weight_decay(const torch::nn::Module& m);

// lr multiplier of a parameter under layer-wise decay (1 outside the ViT tower).
double layer_lr_scale(const std::string& name, int64_t num_vision_layers, double layer_decay);

// One param group per (weight decay, lr scale); `lr_scales` receives each group's multiplier.
std::unique_ptr<torch::optim::AdamW> make_adamw(const torch::nn::Module& m, const OptimConfig& c,
                                                int64_t num_vision_layers = 0, std::vector<double>* lr_scales = nullptr);
void set_learning_rate(torch::optim::Optimizer& opt, double lr, const std::vector<double>& lr_scales = {});

}  // namespace blip2
