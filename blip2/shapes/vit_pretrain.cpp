#include "blip2/shapes/vit_pretrain.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <optional>
#include <random>
#include <sstream>

#include "blip2/data/image.h"
#include "blip2/data/image_processor.h"
#include "blip2/shapes/shapes.h"
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

// An object's box on a rendered image (scene coordinates scaled to its
// pixels, clamped to it) and its rgb.
struct ObjectBox {
  double cx = 0, cy = 0;
  int x0 = 0, x1 = 0, y0 = 0, y1 = 0;
  std::vector<int> rgb;
};

ObjectBox object_box(const nlohmann::json& scene, const nlohmann::json& o, int S) {
  const double k = S / scene.at("image_size").get<double>();  // scene -> image pixels
  ObjectBox b;
  b.cx = o.at("cx").get<double>() * k, b.cy = o.at("cy").get<double>() * k;
  const double half = o.at("bbox").get<double>() * k / 2;
  b.rgb = o.at("rgb").get<std::vector<int>>();
  if (b.rgb.size() != 3) throw InputError("[pretrain_vision] an object's rgb must hold 3 values");
  b.x0 = std::max(0, static_cast<int>(std::floor(b.cx - half))), b.x1 = std::min(S - 1, static_cast<int>(std::ceil(b.cx + half)));
  b.y0 = std::max(0, static_cast<int>(std::floor(b.cy - half))), b.y1 = std::min(S - 1, static_cast<int>(std::ceil(b.cy + half)));
  return b;
}

const nlohmann::json& scene_objects(const nlohmann::json& scene, const Image& image) {
  const auto& objects = scene.at("objects");
  if (!objects.is_array() || objects.empty() || objects.size() > 3)
    throw InputError("[pretrain_vision] a scene must hold 1-3 objects");
  if (image.empty() || image.width != image.height)
    throw InputError("[pretrain_vision] a shapes scene image must be square and non-empty");
  return objects;
}

int64_t grid_of(const VisionConfig& v) { return v.image_size / v.patch_size; }

// The tower plus the patch, count and (optional) position heads (not saved).
struct AttributeModelImpl : torch::nn::Module {
  AttributeModelImpl(const VisionConfig& c, bool position) {
    vision_model = register_module("vision_model", VisionEncoder(c));
    shape_head = register_module("shape_head", nn::Linear(c.hidden_size, 5));
    color_head = register_module("color_head", nn::Linear(c.hidden_size, 7));
    size_head = register_module("size_head", nn::Linear(c.hidden_size, 3));
    count_head = register_module("count_head", nn::Linear(c.hidden_size, 3));
    if (position) {
      row_head = register_module("row_head", nn::Linear(c.hidden_size, grid_of(c)));
      col_head = register_module("col_head", nn::Linear(c.hidden_size, grid_of(c)));
    }
  }
  struct Out {
    torch::Tensor shape, color, size, count;  // (B, P, classes) x3, (B, 3)
    torch::Tensor row, col;                   // (B, P, grid) with the position heads
  };
  Out forward(const torch::Tensor& pixels) {
    auto h = vision_model->forward(pixels).last_hidden_state;
    auto patches = h.slice(1, 1);  // drop CLS
    Out o{shape_head->forward(patches), color_head->forward(patches), size_head->forward(patches),
          count_head->forward(h.mean(1))};
    if (row_head) o.row = row_head->forward(patches), o.col = col_head->forward(patches);
    return o;
  }
  VisionEncoder vision_model{nullptr};
  nn::Linear shape_head{nullptr}, color_head{nullptr}, size_head{nullptr}, count_head{nullptr};
  nn::Linear row_head{nullptr}, col_head{nullptr};
};
TORCH_MODULE(AttributeModel);

// Each patch token's row and column on a grid x grid patch grid, row-major
// as the tokens: (1, grid * grid) each.
std::pair<torch::Tensor, torch::Tensor> patch_positions(int64_t grid) {
  const auto p = torch::arange(grid * grid, torch::kLong).unsqueeze(0);
  return {p.div(grid, "floor"), p.remainder(grid)};
}

struct SceneSet {
  int64_t grid = 1;  // patches per side
  torch::Tensor pixels, shape, color, size, count;
  torch::Tensor gray_pixels;  // gray_scene_copy of each image (defined when asked for)
  std::vector<std::vector<int64_t>> centre_patch;  // per scene, per object
};

nlohmann::json read_scenes(const std::string& data_dir) {
  const std::string path = data_dir + "/scenes.json";
  std::ifstream in(path);
  if (!in) throw InputError("[pretrain_vision] cannot read '" + path + "'; give a `blip2 shapes generate` directory");
  nlohmann::json scenes;
  try {
    in >> scenes;
  } catch (const std::exception& e) {
    throw InputError("[pretrain_vision] '" + path + "' is not valid JSON: " + e.what());
  }
  if (!scenes.is_array() || scenes.empty()) throw InputError("[pretrain_vision] '" + path + "' lists no scenes");
  return scenes;
}

// A gray level per object, at least 48 levels from the background's, so
// the object stays visible.
std::vector<uint8_t> gray_levels(const nlohmann::json& scene, std::mt19937_64& rng) {
  const int bg = scene.at("background").at(0).get<int>();
  std::vector<uint8_t> levels;
  for (size_t i = 0; i < scene.at("objects").size(); ++i) {
    int v = 0;
    do v = static_cast<int>(rng() % 256); while (std::abs(v - bg) < 48);
    levels.push_back(static_cast<uint8_t>(v));
  }
  return levels;
}

// gray_seed: also build gray_pixels (one gray copy per image, levels drawn from it).
SceneSet load_scene_set(const VisionConfig& vision, const std::string& data_dir,
                        std::optional<uint64_t> gray_seed = std::nullopt) {
  const auto scenes = read_scenes(data_dir);
  ImageProcessorConfig pc;
  pc.height = pc.width = static_cast<int>(vision.image_size);
  const int64_t grid = grid_of(vision);
  std::vector<torch::Tensor> pixels, shape, color, size, gray;
  std::vector<int64_t> counts;
  std::mt19937_64 gray_rng(gray_seed.value_or(0));
  SceneSet set;
  set.grid = grid;
  for (const auto& s : scenes) {
    try {
      const Image image = load_image(data_dir + "/" + s.at("image").get<std::string>());
      pixels.push_back(preprocess(image, pc));
      if (gray_seed) gray.push_back(preprocess(gray_scene_copy(s, image, gray_levels(s, gray_rng)), pc));
      auto t = shape_patch_targets(s, image, grid);
      shape.push_back(t.shape), color.push_back(t.color), size.push_back(t.size), counts.push_back(t.count);
      set.centre_patch.push_back(std::move(t.centre_patch));
    } catch (const nlohmann::json::exception& e) {
      throw InputError("[pretrain_vision] '" + data_dir + "/scenes.json': " + e.what());
    }
  }
  set.pixels = torch::stack(pixels), set.shape = torch::stack(shape), set.color = torch::stack(color);
  set.size = torch::stack(size), set.count = torch::tensor(counts, torch::kLong);
  if (gray_seed) set.gray_pixels = torch::stack(gray);
  return set;
}

VitProbeAccuracy probe(AttributeModel& model, const SceneSet& set, const std::string& dir) {
  torch::NoGradGuard g;
  VitProbeAccuracy acc;
  acc.data_dir = dir;
  const int64_t n = set.pixels.size(0);
  int64_t right_shape = 0, right_color = 0, right_size = 0, right_all = 0, right_count = 0, right_position = 0;
  const auto [rows, cols] = patch_positions(set.grid);
  for (int64_t from = 0; from < n; from += 64) {
    const int64_t to = std::min(n, from + 64);
    auto o = model->forward(set.pixels.slice(0, from, to));
    if (o.row.defined())
      right_position += (o.row.argmax(2).eq(rows) & o.col.argmax(2).eq(cols)).sum().item<int64_t>();
    auto ps = o.shape.argmax(2), pc = o.color.argmax(2), pz = o.size.argmax(2);
    right_count += o.count.argmax(1).eq(set.count.slice(0, from, to)).sum().item<int64_t>();
    for (int64_t i = from; i < to; ++i)
      for (int64_t p : set.centre_patch[static_cast<size_t>(i)]) {
        const bool s = ps[i - from][p].item<int64_t>() == set.shape[i][p].item<int64_t>();
        const bool c = pc[i - from][p].item<int64_t>() == set.color[i][p].item<int64_t>();
        const bool z = pz[i - from][p].item<int64_t>() == set.size[i][p].item<int64_t>();
        right_shape += s, right_color += c, right_size += z, right_all += s && c && z;
        ++acc.objects;
      }
  }
  const double no = static_cast<double>(std::max<int64_t>(1, acc.objects));
  acc.shape = right_shape / no, acc.color = right_color / no, acc.size = right_size / no, acc.all = right_all / no;
  acc.count = static_cast<double>(right_count) / static_cast<double>(n);
  if (model->row_head) acc.position = static_cast<double>(right_position) / static_cast<double>(n * rows.size(1));
  return acc;
}


}  // namespace

ShapePatchTargets shape_patch_targets(const nlohmann::json& scene, const Image& image, int64_t grid) {
  const auto& objects = scene_objects(scene, image);
  if (grid < 1) throw ConfigError("[pretrain_vision] the patch grid must be >= 1");
  const int S = image.width;
  ShapePatchTargets t;
  t.shape = torch::zeros({grid * grid}, torch::kLong);
  t.color = torch::zeros({grid * grid}, torch::kLong);
  t.size = torch::zeros({grid * grid}, torch::kLong);
  auto sh = t.shape.accessor<int64_t, 1>(), co = t.color.accessor<int64_t, 1>(), sz = t.size.accessor<int64_t, 1>();
  auto cell = [&](int v) { return std::min<int64_t>(grid - 1, static_cast<int64_t>(v) * grid / S); };
  for (const auto& o : objects) {
    const int64_t s = 1 + index_of(shapes::shape_names(), o.at("shape").get<std::string>(), "shape");
    const int64_t c = 1 + index_of(shapes::color_names(), o.at("color").get<std::string>(), "color");
    const int64_t z = 1 + index_of(shapes::size_names(), o.at("size").get<std::string>(), "size");
    const ObjectBox b = object_box(scene, o, S);
    // Coverage of each patch: pixels of the object's box whose colour is
    // nearer the object's than the background's (objects never overlap, and
    // boxes are apart, so the box tells objects of one colour apart).
    std::vector<double> cover(static_cast<size_t>(grid * grid), 0.0);
    for (int y = b.y0; y <= b.y1; ++y)
      for (int x = b.x0; x <= b.x1; ++x) {
        const uint8_t* p = image.pixel(x, y);
        double d_obj = 0, d_bg = 0;
        const double gray = (p[0] + p[1] + p[2]) / 3.0;  // the background is gray: R = G = B
        for (int ch = 0; ch < 3; ++ch) {
          d_obj += std::pow(p[ch] - b.rgb[static_cast<size_t>(ch)], 2);
          d_bg += std::pow(p[ch] - gray, 2);
        }
        if (d_obj < d_bg) cover[static_cast<size_t>(cell(y) * grid + cell(x))] += 1.0;
      }
    const double patch_pixels = static_cast<double>(S) * S / static_cast<double>(grid * grid);
    const int64_t centre_patch = cell(std::clamp(static_cast<int>(b.cy), 0, S - 1)) * grid + cell(std::clamp(static_cast<int>(b.cx), 0, S - 1));
    t.centre_patch.push_back(centre_patch);
    for (int64_t p = 0; p < grid * grid; ++p) {
      const double f = cover[static_cast<size_t>(p)] / patch_pixels;
      if (p == centre_patch || f >= 0.2) {
        sh[p] = s, co[p] = c, sz[p] = z;
      } else if (f > 0 && sh[p] == 0) {
        sh[p] = co[p] = sz[p] = -100;  // a sliver: neither the object's nor background
      }
    }
  }
  t.count = static_cast<int64_t>(objects.size()) - 1;
  return t;
}

Image gray_scene_copy(const nlohmann::json& scene, const Image& image, const std::vector<uint8_t>& levels) {
  const auto& objects = scene_objects(scene, image);
  if (levels.size() != objects.size())
    throw InputError("[pretrain_vision] gray_scene_copy needs one gray level per object");
  const auto background = scene.at("background").get<std::vector<int>>();
  if (background.size() != 3) throw InputError("[pretrain_vision] a scene's background must hold 3 values");
  const double bg = background[0];  // gray: R = G = B (+ pixel noise of at most 2 levels)
  Image out = image;
  for (size_t i = 0; i < objects.size(); ++i) {
    const ObjectBox b = object_box(scene, objects[i], image.width);
    for (int y = b.y0; y <= b.y1; ++y)
      for (int x = b.x0; x <= b.x1; ++x) {
        // How far the pixel goes from the background toward the object's
        // colour is the object's coverage of it (alpha).
        const uint8_t* p = image.pixel(x, y);
        double along = 0, norm = 0;
        for (int ch = 0; ch < 3; ++ch) {
          const double dir = b.rgb[static_cast<size_t>(ch)] - bg;
          along += (p[ch] - bg) * dir, norm += dir * dir;
        }
        const double alpha = norm < 1 ? 0.0 : std::clamp(along / norm, 0.0, 1.0);
        if (alpha == 0) continue;  // background, its pixel noise kept
        const auto v = static_cast<uint8_t>(std::lround(std::clamp(bg + alpha * (levels[i] - bg), 0.0, 255.0)));
        uint8_t* q = out.pixel(x, y);
        q[0] = q[1] = q[2] = v;
      }
  }
  return out;
}

VitPretrainResult pretrain_vision(const VisionConfig& vision, const std::string& data_dir, int64_t steps,
                                  int64_t batch_size, const OptimConfig& optim, uint64_t seed,
                                  std::function<void(int64_t, double)> on_step,
                                  const std::vector<std::string>& eval_dirs, const VitPretrainOptions& options) {
  if (steps < 1 || batch_size < 1) throw ConfigError("[pretrain_vision] steps and batch_size must be >= 1");
  options.validate();
  const double gray_fraction = options.gray_fraction;
  if (vision.patch_size < 1 || vision.image_size % vision.patch_size != 0)
    throw ConfigError("[pretrain_vision] vision_config.image_size must be a multiple of patch_size");
  optim.validate();
  const SceneSet data = load_scene_set(vision, data_dir,
                                       gray_fraction > 0 ? std::optional<uint64_t>(seed ^ 0x9e3779b97f4a7c15ULL) : std::nullopt);
  std::vector<SceneSet> evals;
  for (const auto& d : eval_dirs) evals.push_back(load_scene_set(vision, d));
  const int64_t n = data.pixels.size(0);

  torch::manual_seed(seed);
  std::mt19937_64 rng(seed ^ 0x5851f42d4c957f2dULL);
  AttributeModel model(vision, options.position_head);
  const auto [rows, cols] = patch_positions(grid_of(vision));
  {
    torch::NoGradGuard g;
    nn::init_normal(*model, 0.02);
    model->vision_model->embeddings->class_embedding.normal_(0.0, 0.02);
    model->vision_model->embeddings->position_embedding.normal_(0.0, 0.02);
  }
  model->train();
  auto opt = make_adamw(*model, optim);
  VitPretrainResult out;
  // Object patches are few (a small shape covers one or two of 64): the mean
  // over object patches and the mean over background patches count equally,
  // or the heads learn the background and guess the objects.
  auto ce = [](const torch::Tensor& logits, const torch::Tensor& target) {
    auto l = F::cross_entropy(logits.reshape({-1, logits.size(-1)}), target.reshape({-1}),
                              F::CrossEntropyFuncOptions().ignore_index(-100).reduction(torch::kNone));
    auto t = target.reshape({-1});
    auto obj = (t > 0).to(l.dtype()), bg = (t == 0).to(l.dtype());
    return (l * obj).sum() / obj.sum().clamp_min(1) + (l * bg).sum() / bg.sum().clamp_min(1);
  };
  for (int64_t step = 0; step < steps; ++step) {
    set_learning_rate(*opt, learning_rate(optim, step));
    std::vector<int64_t> idx;
    for (int64_t b = 0; b < batch_size; ++b) idx.push_back(static_cast<int64_t>(rng() % static_cast<uint64_t>(n)));
    auto index = torch::tensor(idx, torch::kLong);
    auto pixels = data.pixels.index_select(0, index);
    auto color = data.color.index_select(0, index);
    if (gray_fraction > 0) {  // rows shown gray: their colour targets are ignored
      std::vector<uint8_t> is_gray;
      std::uniform_real_distribution<double> u(0.0, 1.0);
      for (int64_t b = 0; b < batch_size; ++b) is_gray.push_back(u(rng) < gray_fraction);
      auto g = torch::tensor(std::vector<int64_t>(is_gray.begin(), is_gray.end()), torch::kLong).to(torch::kBool);
      pixels = torch::where(g.view({-1, 1, 1, 1}), data.gray_pixels.index_select(0, index), pixels);
      color = torch::where(g.view({-1, 1}), torch::full_like(color, -100), color);
    }
    opt->zero_grad();
    auto o = model->forward(pixels);
    auto lp = ce(o.shape, data.shape.index_select(0, index)) + ce(o.color, color) +
              ce(o.size, data.size.index_select(0, index));
    auto lc = F::cross_entropy(o.count, data.count.index_select(0, index));
    auto loss = lp + lc;
    if (o.row.defined()) {
      const auto B = o.row.size(0), P = o.row.size(1);
      loss = loss + F::cross_entropy(o.row.reshape({B * P, -1}), rows.expand({B, P}).reshape({-1})) +
             F::cross_entropy(o.col.reshape({B * P, -1}), cols.expand({B, P}).reshape({-1}));
    }
    const double l = loss.item<double>();
    if (!std::isfinite(l))
      throw Error("[pretrain_vision] training diverged at step " + std::to_string(step) +
                  "; lower optim.lr or set optim.grad_clip");
    loss.backward();
    if (optim.grad_clip > 0) torch::nn::utils::clip_grad_norm_(model->parameters(), optim.grad_clip);
    opt->step();
    out.losses.push_back(l);
    out.patch_losses.push_back(lp.item<double>());
    out.count_losses.push_back(lc.item<double>());
    if (on_step) on_step(step + 1, l);
  }
  model->eval();
  for (size_t i = 0; i < evals.size(); ++i) out.probes.push_back(probe(model, evals[i], eval_dirs[i]));
  out.model = model->vision_model;
  return out;
}

void VitPretrainOptions::validate() const {
  if (!(gray_fraction >= 0 && gray_fraction <= 1))
    throw ConfigError("[pretrain_vision] the gray fraction must be in [0, 1], e.g. 0.5; got " + std::to_string(gray_fraction));
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
