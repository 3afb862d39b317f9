// The parameterised layers of every BLIP-2 module: Linear, Embedding,
// LayerNorm, Conv2d. Unlike torch::nn's, their parameters are allocated but
// NOT initialised: a model is built to receive checkpoint weights (mapped from
// the file), so random initialisation would only cost time and memory (7 s and
// 4.8 GB for ViT-g + Q-Former). Training initialises fresh parts explicitly
// (train/trainer.cpp init_bert_weights). Parameter names are torch's
// ("weight", "bias"), so checkpoint keys are unchanged.
#pragma once

#include <torch/torch.h>

#include <optional>
#include <set>

namespace blip2::nn {

class LinearImpl : public torch::nn::Module {
 public:
  LinearImpl(int64_t in_features, int64_t out_features, bool bias = true);
  torch::Tensor forward(const torch::Tensor& x);
  torch::Tensor weight;  // (out, in)
  torch::Tensor bias;    // (out) or undefined
  // (out) float32 when weight is int8 (nn/quant.h: buffer "weight_scale"), else undefined.
  torch::Tensor weight_scale;
};
TORCH_MODULE(Linear);

class EmbeddingImpl : public torch::nn::Module {
 public:
  // padding_idx >= 0: that row gets no gradient (torch's Embedding semantics).
  EmbeddingImpl(int64_t num_embeddings, int64_t dim, int64_t padding_idx = -1);
  torch::Tensor forward(const torch::Tensor& ids);
  torch::Tensor weight;  // (num, dim)
  torch::Tensor weight_scale;  // (num) float32 when weight is int8 (nn/quant.h), else undefined
  // The dtype of the rows returned when the model computes in another dtype
  // than its matrices are stored in (see compute_in); undefined = weight's.
  std::optional<at::ScalarType> output_dtype;
  // The dtype of what forward returns (the model's compute dtype).
  at::ScalarType dtype() const { return output_dtype.value_or(weight.scalar_type()); }

 private:
  int64_t padding_idx_;
};
TORCH_MODULE(Embedding);

class LayerNormImpl : public torch::nn::Module {
 public:
  LayerNormImpl(int64_t dim, double eps, bool elementwise_affine = true);
  torch::Tensor forward(const torch::Tensor& x);
  torch::Tensor weight, bias;  // (dim) or undefined without affine

 private:
  int64_t dim_;
  double eps_;
};
TORCH_MODULE(LayerNorm);

// The ViT patch embedding: kernel = stride = patch.
class PatchConvImpl : public torch::nn::Module {
 public:
  PatchConvImpl(int64_t in_channels, int64_t out_channels, int64_t patch);
  torch::Tensor forward(const torch::Tensor& x);
  torch::Tensor weight, bias;

 private:
  int64_t patch_;
};
TORCH_MODULE(PatchConv);

// Weights in 16 bits, compute in float32: leaves the matrices below `m`
// (Linear and Embedding weights: nearly all the bytes) in the dtype they
// have and converts every other parameter (biases, norms, positions, query
// tokens) to `compute`; Embeddings then return `compute` rows, and
// nn::linear multiplies `compute` activations by the stored matrices.
void compute_in(torch::nn::Module& m, at::ScalarType compute);
// The matrices compute_in leaves alone (Linear and Embedding weights).
std::set<const void*> matrix_parameters(torch::nn::Module& m);

// Initialises every Linear / Embedding / PatchConv weight ~ N(0, std) with
// zero biases and every LayerNorm to (1, 0) below `m` (BERT's scheme).
void init_normal(torch::nn::Module& m, double std);

}  // namespace blip2::nn
