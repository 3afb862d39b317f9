#include "blip2/nn/quant.h"

#include <algorithm>

#include "blip2/nn/layers.h"
#include "blip2/util/error.h"

namespace blip2::nn {

namespace {
// Rows quantised at a time: ~4 Mi weights, so the float32 temporaries stay small.
int64_t block_rows(int64_t k) { return std::max<int64_t>(1, (int64_t{1} << 22) / std::max<int64_t>(1, k)); }

at::Tensor& weight_of(torch::nn::Module& m) {
  if (auto* l = m.as<LinearImpl>()) return l->weight;
  if (auto* e = m.as<EmbeddingImpl>()) return e->weight;
  throw Error("set_int8_weight: module " + m.name() + " is neither a Linear nor an Embedding");
}
}  // namespace

std::string scale_name(const std::string& weight_name) { return weight_name + "_scale"; }

Int8Rows quantize_rows(const at::Tensor& w) {
  TORCH_CHECK(w.dim() == 2 && w.is_floating_point(), "quantize_rows: expected a floating matrix, got ", w.sizes(),
              " ", w.scalar_type());
  at::NoGradGuard g;
  const int64_t n = w.size(0), k = w.size(1);
  Int8Rows r{at::empty({n, k}, w.options().dtype(at::kChar).device(at::kCPU)),
             at::empty({n}, w.options().dtype(at::kFloat).device(at::kCPU))};
  const int64_t step = block_rows(k);
  for (int64_t n0 = 0; n0 < n; n0 += step) {
    const int64_t n1 = std::min(n, n0 + step);
    const auto block = w.slice(0, n0, n1).to(at::kCPU, at::kFloat);
    const auto scale = block.abs().amax(1).div_(127.0);
    // All-zero rows: scale 0, quantised zeros (divide by 1 instead of 0).
    const auto divisor = at::where(scale > 0, scale, at::ones_like(scale));
    r.q.slice(0, n0, n1).copy_(block.div(divisor.unsqueeze(1)).round_().clamp_(-127, 127));
    r.scale.slice(0, n0, n1).copy_(scale);
  }
  return r;
}

at::Tensor dequantize_rows(const at::Tensor& q, const at::Tensor& scale) {
  return q.to(at::kFloat) * scale.to(q.device(), at::kFloat).unsqueeze(1);
}

bool has_matrix_weight(const torch::nn::Module& m) {
  return m.as<LinearImpl>() != nullptr || m.as<EmbeddingImpl>() != nullptr;
}

void set_int8_weight(torch::nn::Module& m, Int8Rows rows) {
  at::NoGradGuard g;
  at::Tensor& weight = weight_of(m);
  TORCH_CHECK(rows.q.sizes() == weight.sizes() && rows.q.scalar_type() == at::kChar && rows.scale.dim() == 1 &&
                  rows.scale.size(0) == rows.q.size(0) && rows.scale.scalar_type() == at::kFloat,
              "set_int8_weight: ", m.name(), " weight ", weight.sizes(), " given int8 ", rows.q.sizes(), " and scale ",
              rows.scale.sizes());
  weight.set_requires_grad(false);  // int8 weights are not trained
  weight.set_data(rows.q);
  auto buffers = m.named_buffers(/*recurse=*/false);
  at::Tensor* slot = buffers.find("weight_scale");
  at::Tensor scale = slot ? (slot->set_data(rows.scale), *slot) : m.register_buffer("weight_scale", rows.scale);
  if (auto* l = m.as<LinearImpl>()) l->weight_scale = scale;
  if (auto* e = m.as<EmbeddingImpl>()) {
    e->weight_scale = scale;
    if (!e->output_dtype) e->output_dtype = at::kFloat;
  }
}

void quantize_weight(torch::nn::Module& m) {
  const at::Tensor& w = weight_of(m);
  if (w.scalar_type() == at::kChar) return;
  set_int8_weight(m, quantize_rows(w));
}

}  // namespace blip2::nn
