#include "blip2/nn/ops.h"

#include <ATen/ATen.h>

#include <cmath>
#include <limits>
#include <sstream>

#include "blip2/nn/gemm.h"
#include "blip2/util/error.h"

namespace blip2::nn {

at::Tensor activation(const at::Tensor& x, const std::string& name) {
  if (name == "gelu") return at::gelu(x);
  if (name == "gelu_new" || name == "gelu_pytorch_tanh") return at::gelu(x, "tanh");
  if (name == "relu") return at::relu(x);
  if (name == "quick_gelu") return x * at::sigmoid(1.702 * x);
  if (name == "silu" || name == "swish") return at::silu(x);
  throw ConfigError("activation '" + name + "' is not supported");
}

double finfo_min(at::ScalarType dtype) {
  switch (dtype) {
    case at::kHalf: return -65504.0;
    case at::kBFloat16: return -3.3895313892515355e38;
    case at::kDouble: return std::numeric_limits<double>::lowest();
    default: return static_cast<double>(std::numeric_limits<float>::lowest());
  }
}

at::Tensor padding_bias(const at::Tensor& mask, at::ScalarType dtype, double fill) {
  auto m = mask.to(dtype);
  return ((1.0 - m) * fill).unsqueeze(1).unsqueeze(1);
}

at::Tensor split_heads(const at::Tensor& x, int64_t heads) {
  const auto B = x.size(0), L = x.size(1), D = x.size(2);
  return x.view({B, L, heads, D / heads}).transpose(1, 2);
}

at::Tensor merge_heads(const at::Tensor& x) {
  const auto B = x.size(0), H = x.size(1), L = x.size(2), D = x.size(3);
  return x.transpose(1, 2).contiguous().view({B, L, H * D});
}

at::Tensor attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                     const at::Tensor& bias, double scale, double dropout_p, bool training) {
  auto scores = nn::matmul(q, k.transpose(-1, -2));
  if (scale != 1.0) scores = scores * scale;
  if (bias.defined()) scores = scores + bias;
  at::Tensor probs;
  if (scores.scalar_type() == at::kHalf || scores.scalar_type() == at::kBFloat16)
    probs = at::softmax(scores.to(at::kFloat), -1).to(scores.scalar_type());
  else
    probs = at::softmax(scores, -1);
  if (training && dropout_p > 0) probs = at::dropout(probs, dropout_p, true);
  return nn::matmul(probs, v);
}

void check_shape(const at::Tensor& t, const std::vector<int64_t>& expect, const std::string& who,
                 const std::string& name, const std::string& hint) {
  auto fmt = [](const std::vector<int64_t>& s) {
    std::ostringstream os;
    os << "(";
    for (size_t i = 0; i < s.size(); ++i) {
      if (i) os << ", ";
      if (s[i] < 0) os << "*"; else os << s[i];
    }
    os << ")";
    return os.str();
  };
  bool ok = t.defined() && t.dim() == static_cast<int64_t>(expect.size());
  for (size_t i = 0; ok && i < expect.size(); ++i)
    if (expect[i] >= 0 && t.size(i) != expect[i]) ok = false;
  if (ok) return;
  std::string got = t.defined() ? fmt(t.sizes().vec()) : "nothing";
  throw InputError("[" + who + "] " + name + " must be " + fmt(expect) + ", got " + got +
                   (hint.empty() ? "" : "; " + hint));
}

}  // namespace blip2::nn
