#include "blip2/nn/layers.h"

#include "blip2/nn/gemm.h"

namespace blip2::nn {

LinearImpl::LinearImpl(int64_t in, int64_t out, bool with_bias) {
  weight = register_parameter("weight", torch::empty({out, in}));
  if (with_bias) bias = register_parameter("bias", torch::empty({out}));
}

torch::Tensor LinearImpl::forward(const torch::Tensor& x) { return nn::linear(x, weight, bias, weight_scale); }

EmbeddingImpl::EmbeddingImpl(int64_t num, int64_t dim, int64_t padding_idx) : padding_idx_(padding_idx) {
  weight = register_parameter("weight", torch::empty({num, dim}));
}

torch::Tensor EmbeddingImpl::forward(const torch::Tensor& ids) {
  if (weight.scalar_type() == torch::kChar) {  // int8 rows times their scales
    const auto flat = ids.reshape({-1});
    auto rows = weight.index_select(0, flat).to(torch::kFloat).mul_(weight_scale.index_select(0, flat).unsqueeze(1));
    auto shape = ids.sizes().vec();
    shape.push_back(weight.size(1));
    return rows.view(shape).to(dtype());
  }
  auto rows = torch::embedding(weight, ids, padding_idx_);
  return output_dtype && rows.scalar_type() != *output_dtype ? rows.to(*output_dtype) : rows;
}

LayerNormImpl::LayerNormImpl(int64_t dim, double eps, bool affine) : dim_(dim), eps_(eps) {
  if (affine) {
    weight = register_parameter("weight", torch::empty({dim}));
    bias = register_parameter("bias", torch::empty({dim}));
  }
}

torch::Tensor LayerNormImpl::forward(const torch::Tensor& x) { return torch::layer_norm(x, {dim_}, weight, bias, eps_); }

PatchConvImpl::PatchConvImpl(int64_t in, int64_t out, int64_t patch) : patch_(patch) {
  weight = register_parameter("weight", torch::empty({out, in, patch, patch}));
  bias = register_parameter("bias", torch::empty({out}));
}

torch::Tensor PatchConvImpl::forward(const torch::Tensor& x) {
  return torch::conv2d(x, weight, bias, /*stride=*/{patch_, patch_});
}

std::set<const void*> matrix_parameters(torch::nn::Module& m) {
  std::set<const void*> matrices;
  for (auto& mod : m.modules(/*include_self=*/true)) {
    if (auto* l = mod->as<LinearImpl>()) matrices.insert(l->weight.unsafeGetTensorImpl());
    if (auto* e = mod->as<EmbeddingImpl>()) matrices.insert(e->weight.unsafeGetTensorImpl());
  }
  return matrices;
}

void compute_in(torch::nn::Module& m, at::ScalarType compute) {
  torch::NoGradGuard g;
  const auto matrices = matrix_parameters(m);
  for (auto& mod : m.modules(/*include_self=*/true))
    if (auto* e = mod->as<EmbeddingImpl>()) e->output_dtype = compute;
  for (auto& p : m.parameters())
    if (!matrices.count(p.unsafeGetTensorImpl()) && p.scalar_type() != compute) p.set_data(p.to(compute));
  for (auto& b : m.buffers())
    if (b.is_floating_point() && b.scalar_type() != compute) b.set_data(b.to(compute));
}

void init_normal(torch::nn::Module& m, double std) {
  torch::NoGradGuard g;
  for (auto& mod : m.modules(/*include_self=*/true)) {
    if (auto* l = mod->as<LinearImpl>()) {
      if (l->weight.is_floating_point()) l->weight.normal_(0.0, std);  // int8 weights come quantised
      if (l->bias.defined()) l->bias.zero_();
    } else if (auto* e = mod->as<EmbeddingImpl>()) {
      if (e->weight.is_floating_point()) e->weight.normal_(0.0, std);
    } else if (auto* c = mod->as<PatchConvImpl>()) {
      c->weight.normal_(0.0, std);
      c->bias.zero_();
    } else if (auto* n = mod->as<LayerNormImpl>()) {
      if (n->weight.defined()) n->weight.fill_(1.0);
      if (n->bias.defined()) n->bias.zero_();
    }
  }
}

}  // namespace blip2::nn
