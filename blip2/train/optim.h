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

  void validate() const;  // ConfigError naming the option
};

// Learning rate after `step` optimizer steps (0-based).
double learning_rate(const OptimConfig& c, int64_t step);

struct ParamGroups {
  std::vector<std::string> decay_names, no_decay_names;
  std::vector<torch::Tensor> decay, no_decay;
};
// Splits the module's trainable parameters as LAVIS does.
ParamGroups split_for_weight_decay(const torch::nn::Module& m);

std::unique_ptr<torch::optim::AdamW> make_adamw(const torch::nn::Module& m, const OptimConfig& c);
void set_learning_rate(torch::optim::Optimizer& opt, double lr);

}  // namespace blip2
