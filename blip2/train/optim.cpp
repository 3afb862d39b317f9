#include "blip2/train/optim.h"

#include <algorithm>
#include <cmath>
#include <tuple>

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

OptimConfig pretraining_optim(double lr, int64_t steps) {
  OptimConfig o;
  o.lr = lr;
  o.min_lr = lr / 10;
  o.warmup_lr = lr / 100;
  o.warmup_steps = std::max<int64_t>(1, steps / 20);
  o.total_steps = steps;
  o.grad_clip = 1.0;
  return o;
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

double layer_lr_scale(const std::string& name, int64_t L, double decay) {
  if (decay == 1.0) return 1.0;
  int64_t layer = L + 1;
  if (name.rfind("vision_model.embeddings.", 0) == 0) {
    layer = 0;
  } else {
    const std::string p = "vision_model.encoder.layers.";
    if (name.rfind(p, 0) == 0) layer = std::stoll(name.substr(p.size())) + 1;
  }
  return std::pow(decay, static_cast<double>(L + 1 - layer));
}

std::unique_ptr<torch::optim::AdamW> make_adamw(const torch::nn::Module& m, const OptimConfig& c, int64_t L,
                                                std::vector<double>* lr_scales) {
  c.validate();
  // (no_decay, scale) -> parameters, in first-seen order.
  std::vector<std::tuple<bool, double, std::vector<torch::Tensor>>> groups;
  for (const auto& p : m.named_parameters(true)) {
    if (!p.value().requires_grad()) continue;
    const bool no_decay = p.value().dim() < 2 || p.key().find("bias") != std::string::npos;
    const double scale = layer_lr_scale(p.key(), L, c.layer_decay);
    auto it = std::find_if(groups.begin(), groups.end(),
                           [&](const auto& g) { return std::get<0>(g) == no_decay && std::get<1>(g) == scale; });
    if (it == groups.end()) {
      groups.emplace_back(no_decay, scale, std::vector<torch::Tensor>{});
      it = groups.end() - 1;
    }
    std::get<2>(*it).push_back(p.value());
  }
  if (groups.empty())
    throw ConfigError("nothing to train: every parameter is frozen (requires_grad is false everywhere)");
  std::vector<torch::optim::OptimizerParamGroup> pg;
  if (lr_scales) lr_scales->clear();
  for (auto& [no_decay, scale, params] : groups) {
    auto o = std::make_unique<torch::optim::AdamWOptions>(torch::optim::AdamWOptions(learning_rate(c, 0) * scale)
                                                              .betas({c.beta1, c.beta2})
                                                              .eps(c.eps)
                                                              .weight_decay(no_decay ? 0.0 : c.weight_decay));
    pg.emplace_back(params, std::move(o));
    if (lr_scales) lr_scales->push_back(scale);
  }
  return std::make_unique<torch::optim::AdamW>(pg, torch::optim::AdamWOptions(learning_rate(c, 0))
                                                       .betas({c.beta1, c.beta2})
                                                       .eps(c.eps)
                                                       .weight_decay(c.weight_decay));
}

void set_learning_rate(torch::optim::Optimizer& opt, double lr, const std::vector<double>& scales) {
  auto& groups = opt.param_groups();
  for (size_t i = 0; i < groups.size(); ++i)
    static_cast<torch::optim::AdamWOptions&>(groups[i].options()).lr(lr * (i < scales.size() ? scales[i] : 1.0));
}

}  // namespace blip2
