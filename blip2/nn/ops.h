// Small tensor operations shared by the vision encoder, the Q-Former and the
// language models: activations, attention with additive biases, masks.
#pragma once

#include <torch/types.h>

#include <string>

namespace blip2::nn {

// Activation by HuggingFace name: gelu (erf), gelu_new / gelu_pytorch_tanh
// (tanh approximation), quick_gelu, relu, silu / swish.
at::Tensor activation(const at::Tensor& x, const std::string& name);

// The most negative finite value of `dtype` (torch.finfo(dtype).min).
double finfo_min(at::ScalarType dtype);

// (B, S) keep-mask (1 = attend, 0 = masked; any dtype) -> additive bias
// (B, 1, 1, S) with 0 where kept and `fill` where masked: HF's
// get_extended_attention_mask ((1 - m) * fill).
at::Tensor padding_bias(const at::Tensor& mask, at::ScalarType dtype, double fill);

// (B, L, H*D) -> (B, H, L, D) and back.
at::Tensor split_heads(const at::Tensor& x, int64_t heads);
at::Tensor merge_heads(const at::Tensor& x);

// softmax(q k^T * scale + bias) v for q (B,H,Lq,D), k/v (B,H,Lk,D); bias
// broadcastable to (B,H,Lq,Lk) or undefined. Softmax runs in float32 for
// half-precision inputs, as the references do.
at::Tensor attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                     const at::Tensor& bias, double scale, double dropout_p = 0.0, bool training = false);

// Checks that `t` has `dims` dimensions and, for each non-negative entry of
// `expect`, that size; throws InputError "[who] name must be (..), got (..); hint".
void check_shape(const at::Tensor& t, const std::vector<int64_t>& expect, const std::string& who,
                 const std::string& name, const std::string& hint = "");

}  // namespace blip2::nn
