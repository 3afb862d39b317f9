#include "blip2/train/vit_pretrain.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>

#include "blip2/data/image.h"
#include "blip2/data/image_processor.h"
#include "blip2/data/shapes.h"
#include "blip2/io/safetensors.h"
#include "blip2/nn/layers.h"
#include "blip2/util/error.h"

namespace blip2 {

namespace F = torch::nn::functional;

namespace {

int64_t index_of(const std::vector<std::string>& names, const std::string& v, const char* what) {
  auto it = std::find(names.begin(), names.end(), v);
  if (it == names.end()) throw InputError(std::string("[pretrain_vision] unknown ") + what + " '" + v + "' in scenes.json");
  return it - names.begin();
}

// The tower plus the attribute heads (not saved).
struct AttributeModelImpl : torch::nn::Module {
  explicit AttributeModelImpl(const VisionConfig& c) {
    vision_model = register_module("vision_model", VisionEncoder(c));
    attr_head = register_module("attr_head", nn::Linear(c.hidden_size, kShapeAttributeClasses));
    count_head = register_module("count_head", nn::Linear(c.hidden_size, 3));
  }
  std::pair<torch::Tensor, torch::Tensor> forward(const torch::Tensor& pixels) {
    auto h = vision_model->forward(pixels).last_hidden_state.mean(1);
    return {attr_head->forward(h), count_head->forward(h)};
  }
  VisionEncoder vision_model{nullptr};
  nn::Linear attr_head{nullptr}, count_head{nullptr};
};
TORCH_MODULE(AttributeModel);

}  // namespace

std::pair<torch::Tensor, int64_t> shape_attribute_targets(const nlohmann::json& scene) {
  auto t = torch::zeros({kShapeAttributeClasses});
  const auto& objects = scene.at("objects");
  if (!objects.is_array() || objects.empty() || objects.size() > 3)
    throw InputError("[pretrain_vision] a scene must hold 1-3 objects");
  for (const auto& o : objects) {
    const int64_t s = index_of(shapes::shape_names(), o.at("shape").get<std::string>(), "shape");
    const int64_t c = index_of(shapes::color_names(), o.at("color").get<std::string>(), "color");
    const int64_t z = index_of(shapes::size_names(), o.at("size").get<std::string>(), "size");
    t[(s * 6 + c) * 2 + z] = 1.0;
  }
  return {t, static_cast<int64_t>(objects.size()) - 1};
}

VitPretrainResult pretrain_vision(const VisionConfig& vision, const std::string& data_dir, int64_t steps,
                                  int64_t batch_size, const OptimConfig& optim, uint64_t seed,
                                  std::function<void(int64_t, double)> on_step) {
  if (steps < 1 || batch_size < 1) throw ConfigError("[pretrain_vision] steps and batch_size must be >= 1");
  optim.validate();
  const std::string scenes_path = data_dir + "/scenes.json";
  std::ifstream in(scenes_path);
  if (!in) throw InputError("[pretrain_vision] cannot read '" + scenes_path + "'");
  nlohmann::json scenes;
  try {
    in >> scenes;
  } catch (const std::exception& e) {
    throw InputError("[pretrain_vision] '" + scenes_path + "' is not valid JSON: " + e.what());
  }
  if (!scenes.is_array() || scenes.empty()) throw InputError("[pretrain_vision] '" + scenes_path + "' lists no scenes");

  ImageProcessorConfig pc;
  pc.height = pc.width = static_cast<int>(vision.image_size);
  std::vector<torch::Tensor> pixels, attrs;
  std::vector<int64_t> counts;
  for (const auto& s : scenes) {
    try {
      pixels.push_back(preprocess(load_image(data_dir + "/" + s.at("image").get<std::string>()), pc));
      auto [a, n] = shape_attribute_targets(s);
      attrs.push_back(a);
      counts.push_back(n);
    } catch (const nlohmann::json::exception& e) {
      throw InputError("[pretrain_vision] '" + scenes_path + "': " + e.what());
    }
  }
  const auto all_pixels = torch::stack(pixels), all_attrs = torch::stack(attrs);
  const auto all_counts = torch::tensor(counts, torch::kLong);
  const int64_t n = all_pixels.size(0);

  torch::manual_seed(seed);
  std::mt19937_64 rng(seed ^ 0x5851f42d4c957f2dULL);
  AttributeModel model(vision);
  {
    torch::NoGradGuard g;
    nn::init_normal(*model, 0.02);
    model->vision_model->embeddings->class_embedding.normal_(0.0, 0.02);
    model->vision_model->embeddings->position_embedding.normal_(0.0, 0.02);
  }
  model->train();
  auto opt = make_adamw(*model, optim);
  VitPretrainResult out;
  for (int64_t step = 0; step < steps; ++step) {
    set_learning_rate(*opt, learning_rate(optim, step));
    std::vector<int64_t> idx;
    for (int64_t b = 0; b < batch_size; ++b) idx.push_back(static_cast<int64_t>(rng() % static_cast<uint64_t>(n)));
    auto index = torch::tensor(idx, torch::kLong);
    opt->zero_grad();
    auto [attr_logits, count_logits] = model->forward(all_pixels.index_select(0, index));
    auto la = F::binary_cross_entropy_with_logits(attr_logits, all_attrs.index_select(0, index));
    auto lc = F::cross_entropy(count_logits, all_counts.index_select(0, index));
    auto loss = la + lc;
    const double l = loss.item<double>();
    if (!std::isfinite(l))
      throw Error("[pretrain_vision] training diverged at step " + std::to_string(step) +
                  "; lower optim.lr or set optim.grad_clip");
    loss.backward();
    if (optim.grad_clip > 0) torch::nn::utils::clip_grad_norm_(model->parameters(), optim.grad_clip);
    opt->step();
    out.losses.push_back(l);
    out.attribute_losses.push_back(la.item<double>());
    out.count_losses.push_back(lc.item<double>());
    if (on_step) on_step(step + 1, l);
  }
  out.model = model->vision_model;
  out.model->eval();
  return out;
}

void save_vision_encoder(const VisionEncoderImpl& model, const std::string& path) {
  const auto parent = std::filesystem::path(path).parent_path();
  if (!parent.empty()) {
    std::error_code ec;
    std::filesystem::create_directories(parent, ec);
    if (ec) throw InputError("[save_vision_encoder] cannot create '" + parent.string() + "': " + ec.message());
  }
  std::vector<std::pair<std::string, at::Tensor>> ts;
  for (const auto& p : model.named_parameters(true)) ts.emplace_back("vision_model." + p.key(), p.value().detach());
  io::save_safetensors(path, ts);
}

}  // namespace blip2
