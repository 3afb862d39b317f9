#include "blip2/model/blip2_model.h"

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include "blip2/io/tensor_store.h"
#include "blip2/io/weight_map.h"
#include "blip2/model/config_fit.h"
#include "blip2/model/quantize.h"
#include "blip2/nn/gemm.h"
#include "blip2/nn/ops.h"
#include "blip2/nn/quant.h"
#include "blip2/util/error.h"
#include "blip2/util/progress.h"

namespace blip2 {

namespace F = torch::nn::functional;

Blip2Parts Blip2Parts::from_config(const Blip2Config& c) {
  Blip2Parts p;
  for (const auto& a : c.architectures) {
    if (a == "Blip2ForImageTextRetrieval") {
      p.language = false;
      p.retrieval = true;
    }
  }
  return p;
}

TextDecoderHeadImpl::TextDecoderHeadImpl(const QFormerConfig& c) : act_(c.hidden_act) {
  auto t = std::make_shared<torch::nn::Module>();
  dense = t->register_module("dense", nn::Linear(c.hidden_size, c.hidden_size));
  layer_norm = t->register_module(
      "LayerNorm", nn::LayerNorm(c.hidden_size, c.layer_norm_eps));
  register_module("transform", t);
  bias = register_parameter("bias", torch::zeros({c.vocab_size}));
}

torch::Tensor TextDecoderHeadImpl::forward(const torch::Tensor& h, const torch::Tensor& word_embeddings) {
  auto x = layer_norm->forward(nn::activation(dense->forward(h), act_));
  return nn::linear(x, word_embeddings, bias);
}

Blip2ModelImpl::Blip2ModelImpl(const Blip2Config& config, Blip2Parts parts) : config_(config), parts_(parts) {
  config_.validate("Blip2Model config");
  if (parts.itg) parts_.retrieval = parts.retrieval = true;
  if ((parts.retrieval || parts.qformer_text) && !config_.qformer.use_qformer_text_input)
    config_.qformer.use_qformer_text_input = true;
  const auto& q = config_.qformer;
  vision_model = register_module("vision_model", VisionEncoder(config_.vision, parts.vision_tower));
  query_tokens = register_parameter("query_tokens", torch::zeros({1, config_.num_query_tokens, q.hidden_size}));
  qformer = register_module("qformer", QFormer(q));
  if (parts.language) {
    language_model = make_language_model(config_.text);
    // Projects to the LM's input-embedding width (OPT: word_embed_proj_dim,
    // which equals hidden_size in every BLIP-2 checkpoint).
    language_projection =
        register_module("language_projection", nn::Linear(q.hidden_size, language_model->hidden_size()));
    register_module("language_model", language_model);
  }
  if (parts.retrieval || parts.qformer_text) embeddings = register_module("embeddings", QFormerTextEmbeddings(q));
  if (parts.retrieval) {
    vision_projection =
        register_module("vision_projection", nn::Linear(q.hidden_size, config_.image_text_hidden_size));
    text_projection =
        register_module("text_projection", nn::Linear(q.hidden_size, config_.image_text_hidden_size));
    itm_head = register_module("itm_head", nn::Linear(q.hidden_size, 2));
  }
  if (parts.itg) {
    text_decoder_head = register_module("text_decoder_head", TextDecoderHead(q));
    temp = register_parameter("temp", torch::full({}, 0.07));
  }
}

void Blip2ModelImpl::require_language(const char* what) const {
  if (!parts_.language)
    throw InputError(std::string(what) +
                     " needs a language model, but this checkpoint is a retrieval model "
                     "(Blip2ForImageTextRetrieval); use an OPT or T5 BLIP-2 checkpoint");
}

void Blip2ModelImpl::require_retrieval(const char* what) const {
  if (!parts_.retrieval)
    throw InputError(std::string(what) +
                     " needs the retrieval heads (itm_head, vision/text projections), which this checkpoint "
                     "lacks; use a Blip2ForImageTextRetrieval checkpoint");
}

bool Blip2ModelImpl::interpolates(const torch::Tensor& pixel_values) const {
  return pixel_values.dim() == 4 && pixel_values.size(2) != config_.vision.image_size;
}

VisionOutput Blip2ModelImpl::encode_image(const torch::Tensor& pixel_values, bool output_hidden_states) {
  return vision_model->forward(pixel_values, output_hidden_states, interpolates(pixel_values));
}

torch::Tensor Blip2ModelImpl::vit_features(const torch::Tensor& pixel_values) {
  return vision_model->features(pixel_values, interpolates(pixel_values));
}

QFormerOutput Blip2ModelImpl::query_image(const torch::Tensor& image_embeds, bool output_hidden_states,
                                          const torch::Tensor& qformer_ids, const torch::Tensor& qformer_mask) {
  const auto B = image_embeds.size(0);
  const auto Q = config_.num_query_tokens;
  auto queries = query_tokens.expand({B, -1, -1});  // (B, Q, D)
  if (!qformer_ids.defined()) return qformer->forward(queries, Q, {}, image_embeds, {}, output_hidden_states);
  if (embeddings.is_empty())
    throw InputError("[Blip2Model] this model's Q-Former reads no text (no text embeddings); "
                     "give no Q-Former text, or use a model fine-tuned with the question as Q-Former input");
  nn::check_shape(qformer_ids, {B, -1}, "Blip2Model", "qformer_ids", "one Q-Former text per image");
  auto mask = qformer_mask.defined() ? qformer_mask.to(torch::kLong) : torch::ones_like(qformer_ids);
  auto e = embeddings->forward(qformer_ids, queries);  // (B, Q+T, D)
  auto full = torch::cat({torch::ones({B, Q}, mask.options()), mask}, 1);
  auto out = qformer->forward(e, Q, nn::padding_bias(full, e.scalar_type(), -10000.0), image_embeds, {},
                              output_hidden_states);
  out.last_hidden_state = out.last_hidden_state.slice(1, 0, Q);
  for (auto& h : out.hidden_states) h = h.slice(1, 0, Q);
  return out;
}

std::pair<torch::Tensor, torch::Tensor> Blip2ModelImpl::lm_inputs(const torch::Tensor& projected,
                                                                   const torch::Tensor& input_ids,
                                                                   const torch::Tensor& attention_mask) {
  require_language("building language-model inputs");
  const auto B = projected.size(0), Q = projected.size(1);
  auto lo = torch::TensorOptions().dtype(torch::kLong).device(projected.device());
  if (!input_ids.defined() || input_ids.size(1) == 0) {
    return {projected, torch::ones({B, Q}, lo)};
  }
  nn::check_shape(input_ids, {B, -1}, "Blip2Model", "input_ids", "one prompt row per image");
  auto mask = attention_mask.defined() ? attention_mask.to(torch::kLong) : torch::ones_like(input_ids);
  nn::check_shape(mask, {B, input_ids.size(1)}, "Blip2Model", "attention_mask", "same shape as input_ids");
  auto tok = language_model->embed_tokens(input_ids).to(projected.scalar_type());
  if (config_.image_token_index) {
    auto special = input_ids == *config_.image_token_index;  // (B, T)
    auto counts = special.sum(1);
    const auto total = counts.sum().item<int64_t>();
    if (total > 0) {
      if (!(counts == Q).all().item<bool>())
        throw InputError("[Blip2Model] each prompt must hold exactly num_query_tokens=" + std::to_string(Q) +
                         " image tokens (id " + std::to_string(*config_.image_token_index) + ") or none, got " +
                         std::to_string(total) + " in " + std::to_string(B) + " rows");
      auto embeds = tok.masked_scatter(special.unsqueeze(-1).expand_as(tok), projected);
      return {embeds, mask};
    }
  }
  return {torch::cat({projected, tok}, 1), torch::cat({torch::ones({B, Q}, lo), mask}, 1)};
}

Blip2ForwardOutput Blip2ModelImpl::forward(const torch::Tensor& pixel_values, const torch::Tensor& input_ids,
                                           const torch::Tensor& attention_mask, const torch::Tensor& decoder_input_ids,
                                           bool output_hidden_states, const torch::Tensor& qformer_ids,
                                           const torch::Tensor& qformer_mask) {
  require_language("forward");
  auto vision = encode_image(pixel_values, output_hidden_states);
  auto out = forward_embeds(vision.last_hidden_state, input_ids, attention_mask, decoder_input_ids,
                            output_hidden_states, qformer_ids, qformer_mask);
  out.vision = std::move(vision);
  return out;
}

Blip2ForwardOutput Blip2ModelImpl::forward_embeds(const torch::Tensor& image_embeds, const torch::Tensor& input_ids,
                                                  const torch::Tensor& attention_mask,
                                                  const torch::Tensor& decoder_input_ids, bool output_hidden_states,
                                                  const torch::Tensor& qformer_ids, const torch::Tensor& qformer_mask) {
  require_language("forward");
  Blip2ForwardOutput out;
  out.vision.last_hidden_state = image_embeds;
  out.qformer = query_image(image_embeds, output_hidden_states, qformer_ids, qformer_mask);
  out.language_projection = language_projection->forward(out.qformer.last_hidden_state);
  std::tie(out.inputs_embeds, out.attention_mask) = lm_inputs(out.language_projection, input_ids, attention_mask);
  out.lm = language_model->forward(out.inputs_embeds, out.attention_mask, decoder_input_ids, output_hidden_states);
  return out;
}

GenerationOutput Blip2ModelImpl::generate(const torch::Tensor& pixel_values, const torch::Tensor& input_ids,
                                          const torch::Tensor& attention_mask, const GenerationConfig& config,
                                          bool prepend_bos, const torch::Tensor& qformer_ids,
                                          const torch::Tensor& qformer_mask) {
  require_language("generate");
  torch::NoGradGuard no_grad;
  auto image = encode_image(pixel_values).last_hidden_state;
  auto projected =
      language_projection->forward(query_image(image, false, qformer_ids, qformer_mask).last_hidden_state);
  const auto B = projected.size(0);
  const bool decoder_only = !language_model->is_encoder_decoder();
  torch::Tensor ids = input_ids, mask = attention_mask;
  if (decoder_only && (!ids.defined() || ids.size(1) == 0)) {
    // HF starts an unprompted decoder-only LM from BOS.
    ids = torch::full({B, 1}, language_model->bos_token_id(),
                      torch::TensorOptions().dtype(torch::kLong).device(projected.device()));
    mask = torch::ones_like(ids);
  }
  auto [embeds, lm_mask] = lm_inputs(projected, ids, mask);
  auto out = blip2::generate(*language_model, embeds, lm_mask, config, language_model->eos_token_id(),
                             language_model->pad_token_id());
  if (decoder_only && prepend_bos) {
    auto bos = torch::full({out.sequences.size(0), 1}, language_model->bos_token_id(), out.sequences.options());
    out.sequences = torch::cat({bos, out.sequences}, 1);
  }
  return out;
}

torch::Tensor Blip2ModelImpl::image_features(const torch::Tensor& image_embeds) {
  require_retrieval("ITC image features");
  auto q = query_image(image_embeds).last_hidden_state;
  return F::normalize(vision_projection->forward(q), F::NormalizeFuncOptions().dim(-1));
}

std::pair<torch::Tensor, torch::Tensor> Blip2ModelImpl::text_features(const torch::Tensor& input_ids,
                                                                      const torch::Tensor& attention_mask) {
  require_retrieval("ITC text features");
  auto mask = attention_mask.defined() ? attention_mask : torch::ones_like(input_ids);
  nn::check_shape(mask, {input_ids.size(0), input_ids.size(1)}, "Blip2Model", "attention_mask",
                  "same shape as input_ids");
  auto e = embeddings->forward(input_ids);
  auto bias = nn::padding_bias(mask, e.scalar_type(), -10000.0);
  auto h = qformer->forward(e, 0, bias).last_hidden_state;  // (B, T, D)
  auto feats = F::normalize(text_projection->forward(h), F::NormalizeFuncOptions().dim(-1));
  return {feats, h};
}

torch::Tensor Blip2ModelImpl::itc_similarity(const torch::Tensor& image_features, const torch::Tensor& text_features) {
  nn::check_shape(image_features, {-1, -1, -1}, "Blip2Model", "image_features", "(images, queries, dim)");
  nn::check_shape(text_features, {-1, image_features.size(2)}, "Blip2Model", "text_features", "(texts, dim)");
  return std::get<0>(torch::matmul(image_features, text_features.t()).max(1));  // (Bi, Q, Bt) -> (Bi, Bt)
}

torch::Tensor Blip2ModelImpl::itm_logits(const torch::Tensor& image_embeds, const torch::Tensor& input_ids,
                                         const torch::Tensor& attention_mask, torch::Tensor* last_hidden_state) {
  require_retrieval("ITM");
  const auto B = image_embeds.size(0);
  const auto Q = config_.num_query_tokens;
  nn::check_shape(input_ids, {B, -1}, "Blip2Model", "input_ids", "one text per image for ITM");
  auto mask = attention_mask.defined() ? attention_mask.to(torch::kLong) : torch::ones_like(input_ids);
  auto e = embeddings->forward(input_ids, query_tokens.expand({B, -1, -1}));  // (B, Q+T, D)
  auto full = torch::cat({torch::ones({B, Q}, mask.options()), mask}, 1);
  auto bias = nn::padding_bias(full, e.scalar_type(), -10000.0);
  auto h = qformer->forward(e, Q, bias, image_embeds).last_hidden_state;
  if (last_hidden_state) *last_hidden_state = h;
  return itm_head->forward(h.slice(1, 0, Q)).mean(1);
}

ItmOutput Blip2ModelImpl::itm(const torch::Tensor& pixel_values, const torch::Tensor& input_ids,
                              const torch::Tensor& attention_mask) {
  require_retrieval("ITM");
  ItmOutput out;
  out.vision = encode_image(pixel_values, true);
  out.logits = itm_logits(out.vision.last_hidden_state, input_ids, attention_mask, &out.qformer_last_hidden_state);
  return out;
}

ItcOutput Blip2ModelImpl::itc(const torch::Tensor& pixel_values, const torch::Tensor& input_ids,
                              const torch::Tensor& attention_mask) {
  ItcOutput out;
  out.image_embeds = image_features(encode_image(pixel_values).last_hidden_state);  // (Bi, Q, E)
  auto [feats, h] = text_features(input_ids, attention_mask);
  out.text_last_hidden_state = h;
  out.text_embeds = feats.select(1, 0);                                          // (Bt, E)
  out.logits_per_image = itc_similarity(out.image_embeds, out.text_embeds);
  return out;
}

// ---------------------------------------------------------------------------
// Loading


namespace {

// Checkpoint tensors that are copies of tied weights we share instead.
bool is_tied_copy(const std::string& name, const Blip2ModelImpl& m) {
  const std::string lm = "language_model.";
  return m.language_model && name.rfind(lm, 0) == 0 && m.language_model->is_tied_copy(name.substr(lm.size()));
}

// Checkpoint names by the model name they load into.
using NameIndex = std::map<std::string, std::string>;

// Tensors some checkpoints store under other names: returns the value for
// `name` built from them, or an undefined tensor.
torch::Tensor from_alias(const std::string& name, const io::TensorStore& store, const NameIndex& index,
                         std::set<std::string>* used) {
  // Older HF / LAVIS ViT checkpoints: separate q_bias and v_bias, no K bias.
  const std::string suffix = "self_attn.qkv.bias";
  if (name.size() > suffix.size() && name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0) {
    const std::string base = name.substr(0, name.size() - std::string("qkv.bias").size());
    auto q = index.find(base + "q_bias"), v = index.find(base + "v_bias");
    if (q != index.end() && v != index.end()) {
      auto qt = store.get(q->second), vt = store.get(v->second);
      used->insert(q->second);
      used->insert(v->second);
      return torch::cat({qt, torch::zeros_like(vt), vt});
    }
  }
  return {};
}

// (1, 1 + g*g, D) -> (1, n, D): the class position kept, the g x g grid of
// patch positions resized bicubically to the new square grid (LAVIS
// interpolate_pos_embed / HF interpolate_pos_encoding).
torch::Tensor interpolate_position_embedding(const torch::Tensor& pos, int64_t n) {
  const int64_t D = pos.size(2);
  const int64_t old_g = static_cast<int64_t>(std::llround(std::sqrt(static_cast<double>(pos.size(1) - 1))));
  const int64_t new_g = static_cast<int64_t>(std::llround(std::sqrt(static_cast<double>(n - 1))));
  if (old_g * old_g != pos.size(1) - 1 || new_g * new_g != n - 1)
    throw CheckpointError("vision_model.embeddings.position_embedding: cannot interpolate " +
                          std::to_string(pos.size(1)) + " positions to " + std::to_string(n) +
                          " (both must be 1 + a square number of patches)");
  auto grid = pos.slice(1, 1).reshape({1, old_g, old_g, D}).permute({0, 3, 1, 2}).to(torch::kFloat);
  grid = F::interpolate(grid, F::InterpolateFuncOptions()
                                  .size(std::vector<int64_t>{new_g, new_g})
                                  .mode(torch::kBicubic)
                                  .align_corners(false));
  grid = grid.permute({0, 2, 3, 1}).reshape({1, new_g * new_g, D}).to(pos.scalar_type());
  return torch::cat({pos.slice(1, 0, 1), grid}, 1);
}

std::string list_some(const std::vector<std::string>& names, size_t n = 8) {
  std::string s;
  for (size_t i = 0; i < names.size() && i < n; ++i) s += (i ? ", " : "") + names[i];
  if (names.size() > n) s += ", ... (" + std::to_string(names.size()) + " in all)";
  return s;
}

}  // namespace

void load_weights(Blip2ModelImpl& model, const io::TensorStore& store, const LoadOptions& options,
                  LoadReport* report) {
  torch::NoGradGuard no_grad;
  auto t0 = std::chrono::steady_clock::now();
  LoadReport rep;
  rep.rss_before_kb = resident_memory_kb();
  rep.checkpoint = store.description();
  rep.file_bytes = store.total_bytes();
  std::set<std::string> used;
  std::vector<std::string> missing;
  // Index the checkpoint by model name (LAVIS names mapped to HF's).
  const auto all = store.names();
  bool lavis = options.names == NameStyle::kLavis;
  if (options.names == NameStyle::kAuto)
    for (const auto& n : all) lavis = lavis || io::looks_like_lavis(n);
  NameIndex index;
  for (const auto& n : all) {
    if (!lavis) {
      index[options.prefix + n] = n;
      continue;
    }
    auto m = io::lavis_to_hf(n);
    if (m) index[options.prefix + *m] = n;
    else used.insert(n);  // buffers and tied copies carry nothing of their own
  }
  auto wanted = [&](const std::string& name) {
    if (options.only.empty()) return true;
    for (const auto& p : options.only)
      if (name.compare(0, p.size(), p) == 0) return true;
    return false;
  };
  auto params = model.named_parameters(true);
  const bool int8 = options.dtype == torch::kChar;  // int8 weights compute in float32 on the CPU
  const auto compute = options.compute_dtype ? options.compute_dtype
                                             : int8 ? std::optional<torch::ScalarType>(torch::kFloat) : std::nullopt;
  const auto matrices = compute ? nn::matrix_parameters(model) : std::set<const void*>{};
  const auto matrix_owner = matrix_modules(model);
  for (auto& item : params) {
    const std::string& name = item.key();
    if (!wanted(name)) continue;
    torch::Tensor& p = item.value();
    torch::Tensor src;
    bool mapped = false;
    auto hit = index.find(name);
    if (hit != index.end()) {
      src = store.get(hit->second);
      mapped = store.zero_copy(hit->second);
      used.insert(hit->second);
    } else {
      src = from_alias(name, store, index, &used);
    }
    if (!src.defined()) {
      if (!options.allow_missing) missing.push_back(name);
      continue;
    }
    if (src.sizes() != p.sizes() && name == "vision_model.embeddings.position_embedding" && src.dim() == 3 &&
        p.dim() == 3 && src.size(2) == p.size(2))
      src = interpolate_position_embedding(src, p.size(1));  // e.g. a 224-px checkpoint run at 364 px
    if (src.sizes() != p.sizes())
      throw CheckpointError("tensor '" + (hit != index.end() ? hit->second : name) + "' in " +
                            (hit != index.end() ? store.file_of(hit->second) : store.description()) +
                            " has shape " + shape_str(src.sizes().vec()) + " but the config expects " +
                            shape_str(p.sizes().vec()) + "; the checkpoint does not match config.json");
    const auto owner = matrix_owner.find(name);
    if (src.scalar_type() == torch::kChar && owner != matrix_owner.end() && hit != index.end() &&
        options.device.is_cpu()) {
      // A quantised checkpoint (`blip2 quantize`): the int8 rows and their
      // scales, both mapped from the file, whatever dtype was asked for.
      const auto scale_name = nn::scale_name(hit->second);
      const auto scale = store.has(scale_name) ? store.get(scale_name) : torch::Tensor();
      if (!scale.defined() || scale.dim() != 1 || scale.size(0) != src.size(0) || scale.scalar_type() != torch::kFloat)
        throw CheckpointError("tensor '" + hit->second + "' in " + store.file_of(hit->second) +
                              " is I8 but its scales '" + scale_name + "' (F32, " + std::to_string(src.size(0)) +
                              " values) are " + (scale.defined() ? "of another shape or dtype" : "missing") +
                              "; write int8 checkpoints with `blip2 quantize`");
      used.insert(scale_name);
      nn::set_int8_weight(*owner->second, {src, scale});
      rep.zero_copy += mapped;
      ++rep.tensors;
      continue;
    }
    if (!src.is_floating_point())
      throw CheckpointError("tensor '" + name + "' in " + store.description() + " has integer dtype " +
                            std::string(c10::toString(src.scalar_type())) + "; weights must be F32, F16 or BF16");
    // 16-bit matrices under float32 compute: everything else loads straight
    // into the compute dtype (never rounded through 16 bits).
    if (int8 && owner != matrix_owner.end() && int8_quantized(name, model.language_model.get())) {  // quantised on load
      nn::set_int8_weight(*owner->second, nn::quantize_rows(src));
      ++rep.tensors;
      continue;
    }
    // Under int8 every matrix not quantised computes in float32 like the rest.
    const bool keep = matrices.count(p.unsafeGetTensorImpl()) && !int8;
    const auto dtype = compute && !keep ? *compute : options.dtype;
    const bool zero_copy = mapped && src.scalar_type() == dtype && options.device.is_cpu();
    if (zero_copy) {
      p.set_data(src);
      ++rep.zero_copy;
    } else {
      p.set_data(src.to(options.device, dtype, /*non_blocking=*/false, /*copy=*/true));
    }
    ++rep.tensors;
  }
  if (!missing.empty())
    throw CheckpointError("checkpoint " + store.description() + " lacks " + std::to_string(missing.size()) +
                          " tensor(s) the config needs: " + list_some(missing) +
                          "; check that config.json belongs to this checkpoint");
  if (options.strict) {
    std::vector<std::string> unexpected;
    for (const auto& n : store.names())
      if (!used.count(n) && !is_tied_copy(n, model)) unexpected.push_back(n);
    if (!unexpected.empty())
      throw CheckpointError("checkpoint " + store.description() + " has " + std::to_string(unexpected.size()) +
                            " tensor(s) this model does not use: " + list_some(unexpected) +
                            "; check config.json (architectures, layer counts) matches the checkpoint");
  }
  for (auto& b : model.buffers(true)) b.set_data(b.to(options.device));
  rep.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  rep.rss_after_kb = resident_memory_kb();
  if (report) *report = rep;
}

Blip2Model load_blip2(const std::string& dir, const LoadOptions& options, LoadReport* report) {
  auto t0 = std::chrono::steady_clock::now();
  const int64_t rss0 = resident_memory_kb();
  auto config = Blip2Config::from_file(dir);
  auto store = io::TensorStore::open(dir);
  Blip2Parts parts = Blip2Parts::from_config(config);
  if (config.architectures.empty()) {
    // No architectures field: decide from the tensors present.
    parts.language = store.has("language_projection.weight");
    parts.retrieval = store.has("itm_head.weight");
  }
  // Training heads (stage-1 checkpoints of ours), Q-Formers that read the
  // question (VQA fine-tuning) and feature-only models.
  parts.itg = store.has("text_decoder_head.bias");
  parts.qformer_text = parts.language && !parts.retrieval && store.has("embeddings.word_embeddings.weight");
  parts.vision_tower = store.has("vision_model.embeddings.class_embedding") || !store.has("vision_model.post_layernorm.weight");
  // Sizes against the checkpoint before building anything (a partial load,
  // allow_missing, is expected to hold less).
  if (!options.allow_missing) check_config_fits(config, parts, store, (std::filesystem::path(dir) / "config.json").string());
  Blip2Model model(config, parts);
  model->eval();
  for (auto& p : model->parameters()) p.set_requires_grad(false);
  LoadReport rep;
  load_weights(*model, store, options, &rep);
  if (options.dtype == torch::kChar) nn::compute_in(*model, options.compute_dtype.value_or(torch::kFloat));
  else if (options.compute_dtype && *options.compute_dtype != options.dtype) nn::compute_in(*model, *options.compute_dtype);
  rep.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  rep.rss_before_kb = rss0;
  if (report) *report = rep;
  return model;
}

}  // namespace blip2
