#include "blip2/vision/vision_encoder.h"

#include <cmath>

#include "blip2/nn/ops.h"
#include "blip2/util/error.h"

namespace blip2 {

namespace F = torch::nn::functional;

VisionEmbeddingsImpl::VisionEmbeddingsImpl(const VisionConfig& c) : config_(c) {
  const int64_t D = c.hidden_size;
  class_embedding = register_parameter("class_embedding", torch::zeros({1, 1, D}));
  patch_embedding = register_module(
      "patch_embedding",
      nn::PatchConv(c.num_channels, D, c.patch_size));
  position_embedding =
      register_parameter("position_embedding", torch::zeros({1, c.num_patches() + 1, D}));
}

torch::Tensor VisionEmbeddingsImpl::forward(const torch::Tensor& pixel_values,
                                            bool interpolate_pos_encoding) {
  const auto& c = config_;
  const std::string hint = "images are preprocessed to (B, " + std::to_string(c.num_channels) +
                           ", " + std::to_string(c.image_size) + ", " +
                           std::to_string(c.image_size) + ")";
  nn::check_shape(pixel_values, {-1, c.num_channels, -1, -1}, "VisionEncoder", "pixel_values", hint);
  const int64_t H = pixel_values.size(2), W = pixel_values.size(3);
  if (!interpolate_pos_encoding && (H != c.image_size || W != c.image_size))
    nn::check_shape(pixel_values, {-1, c.num_channels, c.image_size, c.image_size}, "VisionEncoder",
                    "pixel_values", hint);
  if (H % c.patch_size != 0 || W % c.patch_size != 0 || H < c.patch_size || W < c.patch_size)
    throw InputError("[VisionEncoder] pixel_values height and width must be multiples of the patch size " +
                     std::to_string(c.patch_size) + ", got " + std::to_string(H) + "x" +
                     std::to_string(W));
  const auto B = pixel_values.size(0);
  auto x = patch_embedding->forward(pixel_values.to(patch_embedding->weight.scalar_type()));
  x = x.flatten(2).transpose(1, 2);  // (B, N, D)
  auto cls = class_embedding.expand({B, 1, -1}).to(x.scalar_type());
  x = torch::cat({cls, x}, 1);  // (B, N+1, D)
  auto pos = position_embedding;
  if (x.size(1) != pos.size(1)) {
    // Bicubic interpolation of the patch grid's position embeddings (HF
    // Blip2VisionEmbeddings.interpolate_pos_encoding).
    const int64_t D = pos.size(2);
    const int64_t n_old = pos.size(1) - 1;
    const int64_t side = static_cast<int64_t>(std::llround(std::sqrt(static_cast<double>(n_old))));
    if (side * side != n_old)
      throw InputError("[VisionEncoder] cannot interpolate a non-square grid of " +
                       std::to_string(n_old) + " position embeddings");
    const int64_t nh = H / c.patch_size, nw = W / c.patch_size;
    auto grid = pos.slice(1, 1).reshape({1, side, side, D}).permute({0, 3, 1, 2});
    grid = F::interpolate(grid.to(torch::kFloat),
                          F::InterpolateFuncOptions()
                              .size(std::vector<int64_t>{nh, nw})
                              .mode(torch::kBicubic)
                              .align_corners(false))
               .to(pos.scalar_type());
    grid = grid.permute({0, 2, 3, 1}).reshape({1, nh * nw, D});
    pos = torch::cat({pos.slice(1, 0, 1), grid}, 1);
  }
  return x + pos.to(x.scalar_type());
}

VisionAttentionImpl::VisionAttentionImpl(const VisionConfig& c)
    : heads_(c.num_attention_heads), scale_(1.0 / std::sqrt(static_cast<double>(c.head_dim()))) {
  const int64_t D = c.hidden_size;
  qkv = register_module("qkv", nn::Linear(D, 3 * D, c.qkv_bias));
  projection = register_module("projection", nn::Linear(D, D));
}

torch::Tensor VisionAttentionImpl::forward(const torch::Tensor& x) {
  const auto B = x.size(0), L = x.size(1), D = x.size(2);
  auto qkv_ = qkv->forward(x).view({B, L, 3, heads_, D / heads_}).permute({2, 0, 3, 1, 4});
  auto ctx = nn::attention(qkv_[0], qkv_[1], qkv_[2], {}, scale_);  // (B, H, L, Dh)
  return projection->forward(nn::merge_heads(ctx));
}

VisionMlpImpl::VisionMlpImpl(const VisionConfig& c) : act_(c.hidden_act) {
  fc1 = register_module("fc1", nn::Linear(c.hidden_size, c.intermediate_size));
  fc2 = register_module("fc2", nn::Linear(c.intermediate_size, c.hidden_size));
}

torch::Tensor VisionMlpImpl::forward(const torch::Tensor& x) {
  return fc2->forward(nn::activation(fc1->forward(x), act_));
}

VisionLayerImpl::VisionLayerImpl(const VisionConfig& c) {
  self_attn = register_module("self_attn", VisionAttention(c));
  layer_norm1 = register_module("layer_norm1", nn::LayerNorm(c.hidden_size, c.layer_norm_eps));
  mlp = register_module("mlp", VisionMlp(c));
  layer_norm2 = register_module("layer_norm2", nn::LayerNorm(c.hidden_size, c.layer_norm_eps));
}

torch::Tensor VisionLayerImpl::forward(const torch::Tensor& x) {
  auto h = x + self_attn->forward(layer_norm1->forward(x));
  return h + mlp->forward(layer_norm2->forward(h));
}

VisionEncoderImpl::VisionEncoderImpl(const VisionConfig& c, bool with_tower) : config_(c) {
  if (with_tower) {
    embeddings = register_module("embeddings", VisionEmbeddings(c));
    layers = torch::nn::ModuleList();
    for (int64_t i = 0; i < c.num_hidden_layers; ++i) layers->push_back(VisionLayer(c));
    auto enc = std::make_shared<torch::nn::Module>();
    enc->register_module("layers", layers);
    register_module("encoder", enc);
  }
  post_layernorm = register_module(
      "post_layernorm",
      nn::LayerNorm(c.hidden_size, c.layer_norm_eps));
}

namespace {

// Images per chunk of an inference batch: as many as keep the MLP's
// intermediate activations (tokens x intermediate_size floats) near 8 MiB,
// at least one (ViT-L/14 and ViT-g/14 at 224 px: one image).
int64_t images_per_chunk(const VisionConfig& c, int64_t width, int64_t height) {
  const int64_t p = std::max<int64_t>(1, c.patch_size);
  const int64_t tokens = (width / p) * (height / p) + 1;
  const int64_t budget_rows = (int64_t{2} << 20) / std::max<int64_t>(1, c.intermediate_size);
  return std::max<int64_t>(1, budget_rows / std::max<int64_t>(1, tokens));
}

}  // namespace

torch::Tensor VisionEncoderImpl::run_layers(const torch::Tensor& pixel_values, bool interpolate_pos_encoding,
                                            std::vector<torch::Tensor>* hidden_states) {
  if (!has_tower())
    throw InputError("[VisionEncoder] this model was built without the image encoder (feature-only); "
                     "pass precomputed image features instead of pixel_values");
  const int64_t B = pixel_values.dim() == 4 ? pixel_values.size(0) : 1;
  const int64_t per_chunk = images_per_chunk(config_, pixel_values.size(-1), pixel_values.size(-2));
  if (!hidden_states && !torch::GradMode::is_enabled() && B > per_chunk) {
    // Inference on many images: a few at a time, so each layer's activations
    // stay in cache (one big batch ran 10-30% slower per image than one image
    // alone, docs/performance.md); the weights are re-read per chunk, which
    // costs far less. Each image's result is the same either way.
    std::vector<torch::Tensor> parts;
    for (int64_t i = 0; i < B; i += per_chunk)
      parts.push_back(run_layers(pixel_values.slice(0, i, std::min(B, i + per_chunk)), interpolate_pos_encoding, nullptr));
    return torch::cat(parts, 0);
  }
  auto h = embeddings->forward(pixel_values, interpolate_pos_encoding);  // (B, N+1, Dv)
  if (hidden_states) hidden_states->push_back(h);
  for (const auto& layer : *layers) {
    h = layer->as<VisionLayerImpl>()->forward(h);
    if (hidden_states) hidden_states->push_back(h);
  }
  return h;
}

torch::Tensor VisionEncoderImpl::features(const torch::Tensor& pixel_values, bool interpolate_pos_encoding) {
  return run_layers(pixel_values, interpolate_pos_encoding, nullptr);
}

VisionOutput VisionEncoderImpl::forward(const torch::Tensor& pixel_values, bool output_hidden_states,
                                        bool interpolate_pos_encoding) {
  VisionOutput out;
  auto h = run_layers(pixel_values, interpolate_pos_encoding, output_hidden_states ? &out.hidden_states : nullptr);
  // post_layernorm (ln_vision) may be kept in float32 while the tower is bf16.
  out.last_hidden_state = post_layernorm->forward(h.to(post_layernorm->weight.scalar_type()));
  // HF applies post_layernorm a second time to the CLS row for the pooler.
  out.pooler_output = post_layernorm->forward(out.last_hidden_state.select(1, 0));
  return out;
}

}  // namespace blip2
