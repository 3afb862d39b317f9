// int8 weight-only quantisation (--dtype int8, `blip2 quantize`).
//
// A matrix W (N, K) is stored as int8 rows Q and one float32 scale per
// output row (symmetric, per channel): W[n, k] ~ Q[n, k] * scale[n], with
// scale[n] = max_k |W[n, k]| / 127 and Q = round(W / scale) in [-127, 127],
// so each weight is off by at most scale[n] / 2. Activations stay float32;
// nn::linear multiplies them by the int8 rows (nn/gemm.h). Per-channel rather
// than per-group scales: measured on the bundled shapes models (width 96-128,
// the hardest case) and the golden cases, see docs/performance.md.
//
// In a checkpoint the pair is `<name>.weight` (I8, N x K) and
// `<name>.weight_scale` (F32, N) (docs/checkpoints.md).
#pragma once

#include <torch/nn/module.h>
#include <torch/types.h>

#include <string>

namespace blip2::nn {

// The checkpoint name of a weight's scales: "<weight name>_scale".
std::string scale_name(const std::string& weight_name);

struct Int8Rows {
  at::Tensor q;      // (N, K) int8
  at::Tensor scale;  // (N) float32
};

// Quantises a floating (N, K) matrix (any float dtype) a block of rows at a
// time, so no float32 copy of a whole large matrix is made.
Int8Rows quantize_rows(const at::Tensor& w);
// Q * scale as float32 (N, K).
at::Tensor dequantize_rows(const at::Tensor& q, const at::Tensor& scale);

// Whether `m` is a Linear or an Embedding (the modules whose weight can be int8).
bool has_matrix_weight(const torch::nn::Module& m);
// Stores `rows` as the weight of `m` (a Linear or an Embedding) and registers
// the scales as its buffer "weight_scale"; Embeddings then return float32 rows.
void set_int8_weight(torch::nn::Module& m, Int8Rows rows);
// Quantises the weight of `m` in place (no-op when it is already int8).
void quantize_weight(torch::nn::Module& m);

}  // namespace blip2::nn
