// The frozen image encoder: a pre-LN ViT (EVA-CLIP ViT-g / CLIP ViT-L in
// BLIP-2), with HuggingFace's Blip2VisionModel module names so that
// `vision_model.*` checkpoint keys map one to one.
#pragma once

#include <torch/torch.h>

#include "blip2/nn/layers.h"

#include <vector>

#include "blip2/config/config.h"

namespace blip2 {

struct VisionOutput {
  torch::Tensor last_hidden_state;           // (B, N+1, Dv) after post_layernorm
  torch::Tensor pooler_output;               // (B, Dv) post_layernorm(last_hidden_state[:, 0])
  std::vector<torch::Tensor> hidden_states;  // embeddings, then each layer (pre post_layernorm)
};

class VisionEmbeddingsImpl : public torch::nn::Module {
 public:
  explicit VisionEmbeddingsImpl(const VisionConfig& c);
  // (B, C, H, W) -> (B, N+1, Dv). H and W must be the configured image size,
  // or any multiple of the patch size when position embeddings are
  // interpolated (see interpolate_pos_encoding).
  torch::Tensor forward(const torch::Tensor& pixel_values, bool interpolate_pos_encoding = false);

  torch::Tensor class_embedding;     // (1, 1, Dv)
  nn::PatchConv patch_embedding{nullptr};  // Dv x C x P x P
  torch::Tensor position_embedding;  // (1, N+1, Dv)

 private:
  VisionConfig config_;
};
TORCH_MODULE(VisionEmbeddings);

class VisionAttentionImpl : public torch::nn::Module {
 public:
  explicit VisionAttentionImpl(const VisionConfig& c);
  torch::Tensor forward(const torch::Tensor& x);  // (B, L, Dv) -> (B, L, Dv)

  nn::Linear qkv{nullptr};         // 3Dv x Dv; bias = cat(q_bias, 0, v_bias)
  nn::Linear projection{nullptr};  // Dv x Dv

 private:
  int64_t heads_;
  double scale_;
};
TORCH_MODULE(VisionAttention);

class VisionMlpImpl : public torch::nn::Module {
 public:
  explicit VisionMlpImpl(const VisionConfig& c);
  torch::Tensor forward(const torch::Tensor& x);
  nn::Linear fc1{nullptr}, fc2{nullptr};

 private:
  std::string act_;
};
TORCH_MODULE(VisionMlp);

class VisionLayerImpl : public torch::nn::Module {
 public:
  explicit VisionLayerImpl(const VisionConfig& c);
  torch::Tensor forward(const torch::Tensor& x);
  VisionAttention self_attn{nullptr};
  nn::LayerNorm layer_norm1{nullptr}, layer_norm2{nullptr};
  VisionMlp mlp{nullptr};
};
TORCH_MODULE(VisionLayer);

class VisionEncoderImpl : public torch::nn::Module {
 public:
  // with_tower=false builds only post_layernorm: a feature-only model fed with
  // precomputed ViT outputs (stage-1 training on cached features).
  explicit VisionEncoderImpl(const VisionConfig& c, bool with_tower = true);
  bool has_tower() const { return !embeddings.is_empty(); }
  VisionOutput forward(const torch::Tensor& pixel_values, bool output_hidden_states = false,
                       bool interpolate_pos_encoding = false);
  // The last layer's output before post_layernorm (B, N+1, Dv): what
  // ln_vision reads, what a feature cache stores. Keeps no hidden states.
  torch::Tensor features(const torch::Tensor& pixel_values, bool interpolate_pos_encoding = false);
  const VisionConfig& config() const { return config_; }

  VisionEmbeddings embeddings{nullptr};
  torch::nn::ModuleList layers{nullptr};
  nn::LayerNorm post_layernorm{nullptr};

 private:
  torch::Tensor run_layers(const torch::Tensor& pixel_values, bool interpolate_pos_encoding,
                           std::vector<torch::Tensor>* hidden_states);
  VisionConfig config_;
};
TORCH_MODULE(VisionEncoder);

}  // namespace blip2
