#include "blip2/train/trainer.h"

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <mutex>
#include <optional>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>

#include "blip2/data/text_batch.h"
#include "blip2/data/tokenizer.h"
#include "blip2/io/safetensors.h"
#include "blip2/io/tensor_store.h"
#include "blip2/nn/layers.h"
#include "blip2/train/losses.h"
#include "blip2/train/optim.h"
#include "blip2/util/atomic_file.h"
#include "blip2/util/error.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace blip2 {

namespace F = torch::nn::functional;

json StepMetrics::to_json() const {
  return {{"step", step},       {"loss", loss},         {"loss_itc", loss_itc},
          {"loss_itm", loss_itm}, {"loss_lm", loss_lm}, {"lr", lr},
          {"grad_norm", grad_norm}, {"samples_per_sec", samples_per_sec}, {"seconds", seconds}};
}

void init_bert_weights(torch::nn::Module& m, double std) { nn::init_normal(m, std); }

// ---------------------------------------------------------------------------
// Model assembly

Blip2Model build_training_model(const TrainConfig& c) {
  std::string cfg_path = c.model_config;
  if (cfg_path.empty() && !c.init.empty()) cfg_path = c.init;
  if (cfg_path.empty())
    throw ConfigError("training needs model.config (a BLIP-2 config.json) or model.init (a checkpoint directory)");
  auto mc = Blip2Config::from_file(cfg_path);
  Blip2Parts parts;
  parts.language = c.stage == 2;
  parts.retrieval = c.stage == 1;
  parts.itg = c.stage == 1;
  parts.qformer_text = c.mode == TrainMode::kVqa;  // the question is read by the Q-Former too
  Blip2Model m(mc, parts);
  {
    // Layers are built uninitialised (nn/layers.h): BERT initialisation
    // (LAVIS) for everything, queries N(0, 0.02); the frozen parts are then
    // overwritten from their checkpoints below.
    torch::NoGradGuard g;
    init_bert_weights(*m);
    m->query_tokens.normal_(0.0, 0.02);
  }
  auto load = [&](const std::string& path, LoadOptions o, const char* what) {
    if (path.empty()) return;
    try {
      auto store = io::TensorStore::open(path);
      load_weights(*m, store, o);
    } catch (const Error& e) {
      throw ConfigError(std::string("loading model.") + what + " '" + path + "': " + e.what());
    }
  };
  LoadOptions vision;
  vision.only = {"vision_model."};
  vision.strict = false;
  load(c.vision_init, vision, "vision_init");
  LoadOptions init;
  init.strict = false;
  init.allow_missing = true;
  load(c.init, init, "init");
  if (c.stage == 2) {
    LoadOptions lm;
    lm.prefix = "language_model.";
    lm.only = {"language_model."};
    lm.strict = false;
    load(c.language_model_init, lm, "language_model_init");
  }
  // Frozen: the ViT tower and the LLM. ln_vision (post_layernorm) trains, as in LAVIS.
  for (auto& p : m->named_parameters()) {
    const auto& n = p.key();
    const bool frozen = n.rfind("language_model.", 0) == 0 ||
                        (!c.train_vision && n.rfind("vision_model.", 0) == 0 &&
                         n.rfind("vision_model.post_layernorm.", 0) != 0);
    p.value().set_requires_grad(!frozen);
  }
  m->train();
  m->vision_model->eval();  // the ViT has no dropout; fine-tuning it changes its weights only
  if (m->language_model) m->language_model->eval();
  // post_layernorm has no dropout; eval() on the tower is what matters.
  return m;
}

// ---------------------------------------------------------------------------
// Trainer

namespace {
// libtorch seeds its default generator from /dev/urandom at start-up: seed it
// before the fresh parts are initialised so a run is reproducible.
Blip2Model seeded_model(const TrainConfig& config) {
  torch::manual_seed(config.seed);
  return build_training_model(config);
}
}  // namespace

Trainer::Trainer(const TrainConfig& config, Collective& collective)
    : Trainer(config, seeded_model(config), collective) {}

Trainer::Trainer(const TrainConfig& config, Blip2Model model, Collective& collective)
    : config_(config), coll_(collective), model_(std::move(model)) {
  setup();
}

Trainer::~Trainer() = default;

void Trainer::setup() {
  config_.optim.total_steps = config_.max_steps;
  if (config_.bf16) {
    // Paper Sec. 3.4: the frozen models are held in half precision (bf16
    // here); the trained bridge stays in float32. Casts happen at the joins.
    torch::NoGradGuard g;
    for (auto& p : model_->named_parameters()) {
      const auto& n = p.key();
      if (!p.value().requires_grad() && (n.rfind("language_model.", 0) == 0 || n.rfind("vision_model.", 0) == 0))
        p.value().set_data(p.value().to(torch::kBFloat16));
    }
  }
  if (coll_.world_size() > 1) {
    // Every rank starts from rank 0's weights (as torch's DDP does).
    torch::NoGradGuard g;
    auto params = model_->parameters();
    coll_.broadcast(params, 0);
  }
  torch::manual_seed(config_.seed + static_cast<uint64_t>(coll_.rank()));
  gen_ = at::detail::createCPUGenerator(config_.seed * 7919 + static_cast<uint64_t>(coll_.rank()));
  if (config_.stage == 1) {
    if (config_.qformer_tokenizer.empty())
      throw ConfigError("stage 1 needs model.qformer_tokenizer (a directory with the BERT vocab.txt and [DEC])");
    qformer_tok_ = load_tokenizer(config_.qformer_tokenizer);
    if (!qformer_tok_->token_to_id("[DEC]"))
      throw ConfigError("the Q-Former tokenizer in '" + config_.qformer_tokenizer +
                        "' has no [DEC] token; add it (added_tokens.json) as BLIP-2 does");
  } else {
    if (config_.lm_tokenizer.empty())
      throw ConfigError("stage 2 needs model.lm_tokenizer (the language model's tokenizer directory)");
    lm_tok_ = load_tokenizer(config_.lm_tokenizer);
    if (model_->language_model && !model_->language_model->is_encoder_decoder()) {
      if (config_.context_distill_encoder > 0)
        throw ConfigError("objective.context_distill_encoder is for encoder-decoder LMs (T5); this model's LM is "
                          "decoder-only, whose context distillation compares its text positions already: remove it");
      if (config_.context_distill_fill)
        throw ConfigError("objective.context_distill_fill is for encoder-decoder LMs (T5); this model's LM is "
                          "decoder-only, whose teacher's context is always filled so: remove it");
    } else if (model_->language_model && config_.context_distill_slots > 0 && !config_.context_distill_fill) {
      throw ConfigError("objective.context_distill_slots compares each query with the caption's slot, which for an "
                        "encoder-decoder LM (T5) needs the filled teacher: set objective.context_distill_fill: true");
    }
    if (config_.mode == TrainMode::kVqa) {
      if (config_.qformer_tokenizer.empty())
        throw ConfigError("objective.mode vqa needs model.qformer_tokenizer: the question is given to the Q-Former");
      qformer_tok_ = load_tokenizer(config_.qformer_tokenizer);
    }
  }
  optimizer_ = make_adamw(*model_, config_.optim, model_->config().vision.num_hidden_layers, &lr_scales_);
}

namespace {

// Positive-group ids for stage-1 ITC (image ids, or with caption_positives
// the caption texts) as integers: numeric ids as they are, others hashed
// (FNV-1a), the same on every rank.
torch::Tensor group_ids(const std::vector<std::string>& keys) {
  std::vector<int64_t> ids;
  for (const auto& s : keys) {
    char* end = nullptr;
    long long v = std::strtoll(s.c_str(), &end, 10);
    if (!s.empty() && *end == '\0') {
      ids.push_back(v);
    } else {
      uint64_t h = 1469598103934665603ULL;
      for (unsigned char ch : s) h = (h ^ ch) * 1099511628211ULL;
      ids.push_back(static_cast<int64_t>(h >> 1));
    }
  }
  return torch::tensor(ids, torch::kLong);
}

}  // namespace

std::map<std::string, torch::Tensor> Trainer::losses(const TrainBatch& batch) {
  const auto B = static_cast<int64_t>(batch.captions.size());
  if (batch.pixel_values.size(0) != B)
    throw InputError("[trainer] batch has " + std::to_string(batch.pixel_values.size(0)) + " images but " +
                     std::to_string(B) + " captions");
  if (config_.stage == 1) {
    auto [ids, mask] = tokenize_batch(*qformer_tok_, batch.captions, config_.max_txt_len,
                                      qformer_tok_->pad_id().value_or(0));
    Stage1Inputs in;
    in.pixel_values = batch.pixel_values;
    in.vit_embeds = cached_vit_embeds(batch);  // used instead of the pixels when defined
    in.text_ids = ids;
    in.text_mask = mask;
    in.generator = gen_;
    in.train_vision = config_.train_vision;
    if (config_.mode == TrainMode::kRetrieval || config_.caption_positives)
      in.image_ids = group_ids(config_.caption_positives ? batch.captions : batch.image_ids);
    Stage1Options o;
    o.dec_token_id = *qformer_tok_->token_to_id("[DEC]");
    o.pad_token_id = qformer_tok_->pad_id().value_or(0);
    o.use_itc = config_.itc;
    o.use_itm = config_.itm;
    o.use_itg = config_.itg;
    auto r = stage1_forward(*model_, in, o, coll_);
    return {{"loss", r.loss}, {"loss_itc", r.loss_itc}, {"loss_itm", r.loss_itm}, {"loss_lm", r.loss_lm}};
  }
  Stage2Text text;
  text.tokenizer = lm_tok_.get();
  text.max_txt_len = config_.max_txt_len;
  text.prompt = config_.prompt;
  text.empty_prefix = config_.empty_prefix;
  text.query_embed_reg = config_.query_embed_reg;
  text.context_distill = config_.context_distill;
  text.context_distill_encoder = config_.context_distill_encoder;
  text.context_distill_fill = config_.context_distill_fill;
  text.context_distill_slots = config_.context_distill_slots;
  const auto vit = cached_vit_embeds(batch);
  const ImageInput image = vit.defined() ? ImageInput::features(vit) : ImageInput(batch.pixel_values);
  torch::Tensor lm;
  if (config_.mode == TrainMode::kVqa) {
    VqaTargets vqa{batch.questions, batch.captions, batch.image_ids};
    lm = vqa_answer_loss(*model_, image, vqa, text, *qformer_tok_, config_.vqa_template);
  } else {
    lm = caption_lm_loss(*model_, image, batch.captions, text, gen_);
  }
  return {{"loss", lm}, {"loss_lm", lm}};
}

void Trainer::open_feature_cache(const BatchSource& data) {
  const auto images = data.images();
  if (!images)
    throw ConfigError("data.feature_cache needs random-access data (data.annotations): this data source is a stream "
                      "whose positions name no fixed image; remove data.feature_cache");
  cache_ = FeatureCache::open(config_.feature_cache, FeatureCacheSpec::of(*model_, *images), coll_.rank(),
                              [this] { coll_.barrier(); }, on_notice);
}

torch::Tensor Trainer::cached_vit_embeds(const TrainBatch& batch) {
  if (!cache_) return {};
  return cache_->features(batch.indices, batch.pixel_values, [this](const torch::Tensor& pixels) {
    torch::NoGradGuard frozen;
    return model_->vit_features(pixels);
  });
}

StepMetrics Trainer::train_step(BatchSource& data) {
  auto t0 = std::chrono::steady_clock::now();
  if (!config_.feature_cache.empty() && !cache_) open_feature_cache(data);
  StepMetrics m;
  const double lr = learning_rate(config_.optim, step_);
  set_learning_rate(*optimizer_, lr, lr_scales_);
  optimizer_->zero_grad();
  int64_t samples = 0;
  for (int64_t micro = 0; micro < config_.grad_accum; ++micro) {
    TrainBatch b = data.next();
    samples += static_cast<int64_t>(b.captions.size());
    std::map<std::string, torch::Tensor> l = losses(b);
    if (config_.stage == 2 && l.count("loss_lm") && std::isnan(l["loss_lm"].item<double>()))
      throw InputError("[trainer] step " + std::to_string(step_) +
                       ": a batch has no target tokens (every text truncated to its prompt?); raise "
                       "objective.max_txt_len or shorten the prompt");
    if (!std::isfinite(l["loss"].item<double>()))
      throw Error("training diverged at step " + std::to_string(step_) + ": loss is " +
                  std::to_string(l["loss"].item<double>()) + "; lower optim.lr or enable optim.grad_clip");
    (l["loss"] / static_cast<double>(config_.grad_accum)).backward();
    const double k = 1.0 / static_cast<double>(config_.grad_accum);
    m.loss += l["loss"].item<double>() * k;
    for (auto [name, dst] : {std::pair<const char*, double*>{"loss_itc", &m.loss_itc}, {"loss_itm", &m.loss_itm},
                             {"loss_lm", &m.loss_lm}})
      if (l.count(name)) *dst += l[name].item<double>() * k;
  }
  std::vector<torch::Tensor> params, grads;
  for (auto& p : model_->parameters())
    if (p.requires_grad()) {
      if (!p.grad().defined()) p.mutable_grad() = torch::zeros_like(p);
      params.push_back(p);
      grads.push_back(p.grad());
    }
  if (coll_.world_size() > 1) coll_.all_reduce_mean(grads);
  if (config_.optim.grad_clip > 0) {
    m.grad_norm = torch::nn::utils::clip_grad_norm_(params, config_.optim.grad_clip);
  } else {
    double sq = 0;
    for (auto& g : grads) sq += g.pow(2).sum().item<double>();
    m.grad_norm = std::sqrt(sq);
  }
  optimizer_->step();
  ++step_;
  samples_ += samples * coll_.world_size();
  m.step = step_;
  m.lr = lr;
  m.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  m.samples_per_sec = static_cast<double>(samples * coll_.world_size()) / std::max(1e-9, m.seconds);
  return m;
}

// ---------------------------------------------------------------------------
// Checkpoints

namespace {

std::string checkpoint_name(int64_t step) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "checkpoint-%08lld", static_cast<long long>(step));
  return buf;
}

// The checkpoint named by output_dir/latest ("" when none).
std::string latest_checkpoint(const fs::path& out_dir) {
  std::ifstream in(out_dir / "latest");
  std::string name;
  std::getline(in, name);
  return name.empty() ? "" : (out_dir / name).string();
}

// The newest checkpoint-* directory in `dir` older than `except` ("" when none).
std::string previous_checkpoint(const fs::path& dir, const fs::path& except) {
  std::error_code ec;
  std::vector<fs::path> all;
  for (const auto& e : fs::directory_iterator(dir, ec))
    if (e.is_directory() && e.path().filename().string().rfind("checkpoint-", 0) == 0 &&
        fs::exists(e.path() / "trainer_state.json") && e.path().filename() < except.filename())
      all.push_back(e.path());
  std::sort(all.begin(), all.end());
  return all.empty() ? "" : all.back().string();
}

// Temporary checkpoint directories of runs that died while saving (their
// process is gone): removed so they do not keep a full disk full.
void remove_stale_temporaries(const fs::path& out_dir) {
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(out_dir, ec)) {
    const std::string name = e.path().filename().string();
    if (name.rfind(".tmp-checkpoint-", 0) != 0) continue;
    const auto dash = name.rfind('-');
    const long pid = std::strtol(name.c_str() + dash + 1, nullptr, 10);
    if (pid > 0 && (pid == ::getpid() || ::kill(static_cast<pid_t>(pid), 0) != 0)) fs::remove_all(e.path(), ec);
  }
}

// The first line of an exception's text (libtorch appends a stack trace).
std::string first_line(const std::string& s) { return s.substr(0, s.find('\n')); }

}  // namespace

void Trainer::write_checkpoint_files(const fs::path& tmp, const BatchSource* data) {
  fs::create_directories(tmp);
  // Model in HF layout: loadable by `blip2 caption` / `blip2 verify`.
  std::vector<std::pair<std::string, at::Tensor>> ts;
  for (const auto& p : model_->named_parameters()) ts.emplace_back(p.key(), p.value());
  io::save_safetensors((tmp / "model.safetensors").string(), ts);
  {
    // The architecture the checkpoint holds: a stage-1 model (Q-Former with
    // ITC/ITM heads, no LLM) is a retrieval model, as HF names it.
    Blip2Config saved = model_->config();
    const auto& parts = model_->parts();
    saved.architectures = {parts.retrieval && !parts.language ? "Blip2ForImageTextRetrieval"
                                                              : "Blip2ForConditionalGeneration"};
    write_atomic(tmp / "config.json", saved.to_json_string());
  }
  // Self-contained: the tokenizer the model reads text with, and the image size.
  const std::string tok_dir = config_.stage == 1 ? config_.qformer_tokenizer : config_.lm_tokenizer;
  const char* tok_files[] = {"vocab.json", "merges.txt", "tokenizer.json", "tokenizer_config.json",
                             "special_tokens_map.json", "added_tokens.json", "spiece.model", "vocab.txt"};
  for (const char* f : tok_files)
    if (!tok_dir.empty() && fs::exists(fs::path(tok_dir) / f)) copy_atomic(fs::path(tok_dir) / f, tmp / f);
  if (config_.stage == 2 && config_.mode == TrainMode::kVqa) {
    // The Q-Former's own tokenizer, where HF's InstructBLIP processor keeps it.
    fs::create_directories(tmp / "qformer_tokenizer");
    for (const char* f : tok_files)
      if (fs::exists(fs::path(config_.qformer_tokenizer) / f))
        copy_atomic(fs::path(config_.qformer_tokenizer) / f, tmp / "qformer_tokenizer" / f);
  }
  {
    const int64_t size = config_.image_size > 0 ? config_.image_size : model_->config().vision.image_size;
    write_atomic(tmp / "preprocessor_config.json",
                 json({{"image_processor_type", "BlipImageProcessor"},
                       {"size", {{"height", size}, {"width", size}}},
                       {"do_resize", true},
                       {"do_rescale", true},
                       {"do_normalize", true},
                       {"resample", 3},
                       {"image_mean", {0.48145466, 0.4578275, 0.40821073}},
                       {"image_std", {0.26862954, 0.26130258, 0.27577711}}})
                     .dump(2));
  }
  // libtorch's archive writer aborts the process when its file fails (it
  // throws again from a destructor), so it writes into a stream that never
  // fails; the write error is thrown afterwards.
  write_atomic_stream(tmp / "optimizer.pt", [&](std::ostream& out) { torch::save(*optimizer_, out); });
  io::save_safetensors((tmp / "rng.safetensors").string(),
                       {{"torch_default", at::detail::getDefaultCPUGenerator().get_state()},
                        {"sampler", gen_.get_state()}});
  json st = {{"step", step_},
             {"samples", samples_},
             {"world_size", coll_.world_size()},
             {"data", data ? data->state() : json(nullptr)},
             {"config", config_.to_yaml()}};
  write_atomic(tmp / "trainer_state.json", st.dump(2));
  fsync_path(tmp);
}

std::string Trainer::save_checkpoint(const BatchSource* data) {
  const fs::path out_dir(config_.output_dir);
  const fs::path final_dir = out_dir / checkpoint_name(step_);
  if (coll_.rank() != 0) {
    coll_.barrier();
    return final_dir.string();
  }
  std::error_code ec;
  fs::create_directories(out_dir, ec);
  if (ec) throw Error("cannot create output directory '" + out_dir.string() + "': " + ec.message());
  remove_stale_temporaries(out_dir);
  // Every file goes into a temporary directory that is renamed into place
  // only when complete; any failure (disk full, I/O error) removes it and
  // leaves the previous checkpoint and `latest` as they were.
  const fs::path tmp = out_dir / (".tmp-" + checkpoint_name(step_) + "-" + std::to_string(::getpid()));
  try {
    fs::remove_all(tmp);
    write_checkpoint_files(tmp, data);
    if (fs::exists(final_dir)) fs::remove_all(final_dir);
    fs::rename(tmp, final_dir);
    fsync_path(out_dir);
  } catch (const std::exception& e) {
    fs::remove_all(tmp, ec);
    const std::string last = latest_checkpoint(out_dir);
    throw Error("checkpoint at step " + std::to_string(step_) + " was not saved: " + first_line(e.what()) + "; " +
                (last.empty() ? std::string("no earlier checkpoint exists")
                              : "the last good checkpoint is '" + last + "' (free space, then train --resume)"));
  }
  try {
    write_atomic(out_dir / "latest", checkpoint_name(step_) + "\n");
  } catch (const std::exception& e) {
    throw Error("checkpoint '" + final_dir.string() + "' was saved but '" + (out_dir / "latest").string() +
                "' could not be updated: " + first_line(e.what()) + "; resume with --resume-from " +
                final_dir.string());
  }
  // Keep the newest keep_checkpoints.
  std::vector<fs::path> all;
  for (const auto& e : fs::directory_iterator(out_dir))
    if (e.is_directory() && e.path().filename().string().rfind("checkpoint-", 0) == 0) all.push_back(e.path());
  std::sort(all.begin(), all.end());
  for (size_t i = 0; i + static_cast<size_t>(config_.keep_checkpoints) < all.size(); ++i) fs::remove_all(all[i], ec);
  coll_.barrier();
  return final_dir.string();
}

bool Trainer::resume(BatchSource* data, const std::string& checkpoint) {
  fs::path dir = checkpoint;
  if (dir.empty()) {
    if (!fs::exists(fs::path(config_.output_dir) / "latest")) return false;
    dir = latest_checkpoint(config_.output_dir);
  }
  // A damaged file names itself and where to go instead.
  const std::string previous = previous_checkpoint(dir.parent_path().empty() ? fs::path(".") : dir.parent_path(), dir);
  const std::string instead = previous.empty()
                                  ? "delete '" + dir.string() + "' and train from the start"
                                  : "resume from the previous one with --resume-from " + previous +
                                        " (and delete '" + dir.string() + "')";
  auto damaged = [&](const char* file, const std::exception& e) {
    return CheckpointError("checkpoint '" + dir.string() + "' is damaged: " + file + " cannot be read (" +
                           first_line(e.what()) + "); " + instead);
  };
  for (const char* f : {"model.safetensors", "optimizer.pt", "trainer_state.json", "rng.safetensors"})
    if (!fs::is_regular_file(dir / f))
      throw CheckpointError("checkpoint '" + dir.string() + "' is incomplete: " + f +
                            (fs::exists(dir / f) ? " is not a regular file; " : " is missing; ") + instead);
  json st;
  try {
    std::ifstream in(dir / "trainer_state.json");
    in >> st;
    if (!st.is_object() || !st.contains("step") || !st.at("step").is_number_integer())
      throw Error("no integer 'step'");
  } catch (const std::exception& e) {
    throw damaged("trainer_state.json", e);
  }
  if (st.value("world_size", 1) != coll_.world_size())
    throw CheckpointError("checkpoint '" + dir.string() + "' was written with " +
                          std::to_string(st.value("world_size", 1)) + " processes, this run has " +
                          std::to_string(coll_.world_size()) + "; resume with the same number of processes");
  {
    torch::NoGradGuard g;
    std::optional<io::TensorStore> store;
    try {
      store.emplace(io::TensorStore::open(dir.string()));
    } catch (const std::exception& e) {
      throw damaged("model.safetensors", e);
    }
    // Copy (not map) so the parameters stay the optimizer's own tensors.
    for (auto& p : model_->named_parameters()) {
      if (!store->has(p.key()))
        throw CheckpointError("checkpoint '" + dir.string() + "' lacks '" + p.key() +
                              "'; it was written for another model");
      torch::Tensor t;
      try {
        t = store->get(p.key());
      } catch (const std::exception& e) {
        throw damaged("model.safetensors", e);
      }
      if (t.sizes() != p.value().sizes())
        throw CheckpointError("checkpoint '" + dir.string() + "': '" + p.key() + "' has shape " +
                              shape_str(t.sizes().vec()) + ", the model has " + shape_str(p.value().sizes().vec()) +
                              "; it was written for another model");
      p.value().copy_(t);
    }
  }
  try {
    torch::load(*optimizer_, (dir / "optimizer.pt").string());
  } catch (const std::exception& e) {
    throw damaged("optimizer.pt", e);
  }
  std::map<std::string, at::Tensor> rng;
  try {
    rng = io::load_safetensors((dir / "rng.safetensors").string());
    if (!rng.count("torch_default") || !rng.count("sampler")) throw Error("no generator states");
  } catch (const std::exception& e) {
    throw damaged("rng.safetensors", e);
  }
  {
    at::Generator def = at::detail::getDefaultCPUGenerator();  // a handle on the process-wide generator
    std::lock_guard<std::mutex> lock(def.mutex());
    def.set_state(rng.at("torch_default"));
  }
  gen_.set_state(rng.at("sampler"));
  step_ = st.at("step").get<int64_t>();
  samples_ = st.value("samples", int64_t{0});
  if (data && !st["data"].is_null()) data->restore(st["data"]);
  return true;
}

void Trainer::fit(BatchSource& data) {
  const fs::path out_dir(config_.output_dir);
  const fs::path metrics = out_dir / "metrics.jsonl";
  if (coll_.rank() == 0) {
    std::error_code ec;
    fs::create_directories(out_dir, ec);
    if (ec) throw Error("cannot create output directory '" + out_dir.string() + "': " + ec.message());
    // Drop lines logged after the checkpoint we resumed from (a crash between
    // logging and saving) so metrics.jsonl describes one continuous run.
    if (fs::exists(metrics)) {
      std::ifstream in(metrics);
      std::string line, kept;
      while (std::getline(in, line)) {
        auto j = json::parse(line, nullptr, false);
        if (j.is_object() && j.value("step", int64_t{0}) <= step_) kept += line + "\n";
      }
      write_atomic(metrics, kept);
    }
  }
  // Logged losses are means over the steps since the previous line (as HF's
  // Trainer logs them), so a curve is not one noisy batch per point.
  StepMetrics window;
  int64_t in_window = 0;
  while (step_ < config_.max_steps) {
    auto m = train_step(data);
    window.loss += m.loss, window.loss_itc += m.loss_itc, window.loss_itm += m.loss_itm, window.loss_lm += m.loss_lm;
    ++in_window;
    const bool log_now = step_ % config_.log_every == 0 || step_ == config_.max_steps;
    if (coll_.rank() == 0 && log_now) {
      StepMetrics logged = m;
      const double n = static_cast<double>(in_window);
      logged.loss = window.loss / n, logged.loss_itc = window.loss_itc / n;
      logged.loss_itm = window.loss_itm / n, logged.loss_lm = window.loss_lm / n;
      std::ofstream out(metrics, std::ios::app);
      out << logged.to_json().dump() << "\n";
      out.flush();
      if (!out) throw Error("cannot append to '" + metrics.string() + "': " + std::strerror(errno) + " (disk full?)");
    }
    if (log_now) window = StepMetrics{}, in_window = 0;
    if (on_step) on_step(m);
    if (step_ % config_.save_every == 0 || step_ == config_.max_steps) save_checkpoint(&data);
  }
}

}  // namespace blip2
