#include "blip2/train/optim.h"

#include <cmath>

#include "blip2/util/error.h"

namespace blip2 {

void OptimConfig::validate() const {
  auto bad = [](const std::string& s) { throw ConfigError("training option " + s); };
  if (!(lr > 0)) bad("lr must be positive, got " + std::to_string(lr));
  if (min_lr < 0 || min_lr > lr) bad("min_lr must be in [0, lr], got " + std::to_string(min_lr));
  if (warmup_lr < 0) bad("warmup_lr must be >= 0");
  if (warmup_steps < 0) bad("warmup_steps must be >= 0");
  if (total_steps < 1) bad("total_steps must be >= 1");
  if (weight_decay < 0) bad("weight_decay must be >= 0");
  if (!(beta1 >= 0 && beta1 < 1) || !(beta2 >= 0 && beta2 < 1)) bad("betas must be in [0, 1)");
  if (!(eps > 0)) bad("eps must be positive");
  if (grad_clip < 0) bad("grad_clip must be >= 0 (0 disables clipping)");
}

double learning_rate(const OptimConfig& c, int64_t step) {
  if (step < c.warmup_steps)
    return c.warmup_lr + (c.lr - c.warmup_lr) * static_cast<double>(step) / static_cast<double>(c.warmup_steps);
  const double span = std::max<int64_t>(1, c.total_steps - c.warmup_steps);
  const double t = std::min(1.0, static_cast<double>(step - c.warmup_steps) / span);
  return c.min_lr + 0.5 * (c.lr - c.min_lr) * (1.0 + std::cos(M_PI * t));
}

ParamGroups split_for_weight_decay(const torch::nn::Module& m) {
  ParamGroups g;
  for (const auto& p : m.named_parameters(true)) {
    if (!p.value().requires_grad()) continue;
    const bool no_decay = p.value().dim() < 2 || p.key().find("bias") != std::string::npos;
    (no_decay ? g.no_decay_names : g.decay_names).push_back(p.key());
    (no_decay ? g.no_decay : g.decay).push_back(p.value());
  }
  return g;
}

std::unique_ptr<torch::optim::AdamW> make_adamw(const torch::nn::Module& m, const OptimConfig& c) {
  c.validate();
  auto g = split_for_weight_decay(m);
  if (g.decay.empty() && g.no_decay.empty())
    throw ConfigError("nothing to train: every parameter is frozen (requires_grad is false everywhere)");
  auto opts = [&](double wd) {
    return std::make_unique<torch::optim::AdamWOptions>(torch::optim::AdamWOptions(learning_rate(c, 0))
                                                            .betas({c.beta1, c.beta2})
                                                            .eps(c.eps)
                                                            .weight_decay(wd));
  };
  std::vector<torch::optim::OptimizerParamGroup> groups;
  if (!g.decay.empty()) groups.emplace_back(g.decay, opts(c.weight_decay));
  if (!g.no_decay.empty()) groups.emplace_back(g.no_decay, opts(0.0));
  return std::make_unique<torch::optim::AdamW>(groups, torch::optim::AdamWOptions(learning_rate(c, 0))
                                                           .betas({c.beta1, c.beta2})
                                                           .eps(c.eps)
                                                           .weight_decay(c.weight_decay));
}

void set_learning_rate(torch::optim::Optimizer& opt, double lr) {
  for (auto& group : opt.param_groups()) static_cast<torch::optim::AdamWOptions&>(group.options()).lr(lr);
}

}  // namespace blip2
