#include "blip2/train/train_config.h"

#include <yaml-cpp/yaml.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <sstream>

#include "blip2/util/error.h"

namespace blip2 {

namespace {

// A table of known keys per section, each with a setter that checks the type.
using Setter = std::function<void(const YAML::Node&, const std::string& where)>;

template <typename T>
Setter set(T* dst) {
  return [dst](const YAML::Node& n, const std::string& where) {
    try {
      *dst = n.as<T>();
    } catch (const YAML::Exception&) {
      std::ostringstream os;
      os << n;
      throw ConfigError(where + ": cannot read '" + os.str() + "' as the expected type");
    }
  };
}

constexpr TrainMode kModes[] = {TrainMode::kPretrain, TrainMode::kRetrieval, TrainMode::kCaption, TrainMode::kVqa};

Setter set_mode(TrainMode* dst) {
  return [dst](const YAML::Node& n, const std::string& where) {
    std::string s;
    set(&s)(n, where);
    std::string known;
    for (TrainMode m : kModes) {
      if (s == train_mode_name(m)) {
        *dst = m;
        return;
      }
      known += std::string(known.empty() ? "" : ", ") + train_mode_name(m);
    }
    throw ConfigError(where + " '" + s + "' is not one of " + known);
  };
}

Setter set_caption_choice(CaptionChoice* dst) {
  return [dst](const YAML::Node& n, const std::string& where) {
    std::string s;
    set(&s)(n, where);
    for (CaptionChoice c : {CaptionChoice::kRandom, CaptionChoice::kFirst})
      if (s == caption_choice_name(c)) {
        *dst = c;
        return;
      }
    throw ConfigError(where + " '" + s + "' is not one of random, first");
  };
}

Setter set_list(std::vector<std::string>* dst) {
  return [dst](const YAML::Node& n, const std::string& where) {
    dst->clear();
    if (n.IsScalar()) {
      dst->push_back(n.as<std::string>());
      return;
    }
    if (!n.IsSequence()) throw ConfigError(where + ": expected a list of strings");
    for (const auto& x : n) {
      if (!x.IsScalar()) throw ConfigError(where + ": expected a list of strings, an entry is not a string");
      dst->push_back(x.Scalar());
    }
  };
}

std::map<std::string, std::map<std::string, Setter>> schema(TrainConfig& c) {
  return {
      {"", {{"stage", set(&c.stage)}}},
      {"model",
       {{"config", set(&c.model_config)},
        {"init", set(&c.init)},
        {"vision_init", set(&c.vision_init)},
        {"language_model_init", set(&c.language_model_init)},
        {"qformer_tokenizer", set(&c.qformer_tokenizer)},
        {"lm_tokenizer", set(&c.lm_tokenizer)},
        {"train_vision", set(&c.train_vision)}}},
      {"data",
       {{"annotations", set(&c.annotations)},
        {"image_root", set(&c.image_root)},
        {"shards", set_list(&c.shards)},
        {"skip_missing_images", set(&c.skip_missing_images)},
        {"image_size", set(&c.image_size)},
        {"workers", set(&c.workers)},
        {"augment", set(&c.augment)},
        {"caption_choice", set_caption_choice(&c.caption_choice)},
        {"feature_cache", set(&c.feature_cache)}}},
      {"objective",
       {{"max_txt_len", set(&c.max_txt_len)},
        {"prompt", set(&c.prompt)},
        {"itc", set(&c.itc)},
        {"itm", set(&c.itm)},
        {"itg", set(&c.itg)},
        {"caption_positives", set(&c.caption_positives)},
        {"mode", set_mode(&c.mode)},
        {"vqa_template", set(&c.vqa_template)},
        {"empty_prefix", set(&c.empty_prefix)},
        {"query_embed_reg", set(&c.query_embed_reg)},
        {"context_distill", set(&c.context_distill)},
        {"context_distill_encoder", set(&c.context_distill_encoder)},
        {"context_distill_fill", set(&c.context_distill_fill)},
        {"context_distill_slots", set(&c.context_distill_slots)}}},
      {"optim",
       {{"lr", set(&c.optim.lr)},
        {"min_lr", set(&c.optim.min_lr)},
        {"warmup_lr", set(&c.optim.warmup_lr)},
        {"warmup_steps", set(&c.optim.warmup_steps)},
        {"weight_decay", set(&c.optim.weight_decay)},
        {"beta1", set(&c.optim.beta1)},
        {"beta2", set(&c.optim.beta2)},
        {"eps", set(&c.optim.eps)},
        {"grad_clip", set(&c.optim.grad_clip)},
        {"layer_decay", set(&c.optim.layer_decay)}}},
      {"train",
       {{"batch_size", set(&c.batch_size)},
        {"grad_accum", set(&c.grad_accum)},
        {"max_steps", set(&c.max_steps)},
        {"seed", set(&c.seed)},
        {"bf16", set(&c.bf16)},
        {"output_dir", set(&c.output_dir)},
        {"log_every", set(&c.log_every)},
        {"save_every", set(&c.save_every)},
        {"keep_checkpoints", set(&c.keep_checkpoints)}}},
  };
}

std::string keys_of(const std::map<std::string, Setter>& m) {
  std::string s;
  for (const auto& [k, v] : m) s += (s.empty() ? "" : ", ") + k;
  return s;
}

// Resolves a relative path against the YAML file's directory.
void resolve(std::string& p, const std::string& base) {
  if (p.empty() || base.empty() || std::filesystem::path(p).is_absolute()) return;
  p = (std::filesystem::path(base) / p).lexically_normal().string();
}

}  // namespace

const char* train_mode_name(TrainMode mode) {
  switch (mode) {
    case TrainMode::kPretrain: return "pretrain";
    case TrainMode::kRetrieval: return "retrieval";
    case TrainMode::kCaption: return "caption";
    case TrainMode::kVqa: return "vqa";
  }
  return "?";
}

const char* caption_choice_name(CaptionChoice choice) {
  return choice == CaptionChoice::kFirst ? "first" : "random";
}

TrainConfig TrainConfig::from_yaml_string(const std::string& yaml, const std::string& source) {
  YAML::Node root;
  try {
    root = YAML::Load(yaml);
  } catch (const YAML::Exception& e) {
    throw ConfigError(source + " is not valid YAML: " + e.what());
  }
  TrainConfig c;
  if (root.IsNull()) throw ConfigError(source + " is empty; see configs/stage1.yaml for the options");
  if (!root.IsMap()) throw ConfigError(source + " must be a mapping of sections (model, data, objective, optim, train)");
  auto table = schema(c);
  // Keys must be plain names (YAML also allows lists or mappings as keys).
  auto key_name = [&](const YAML::Node& k, const std::string& in) {
    if (!k.IsScalar())
      throw ConfigError(source + ": " + (in.empty() ? std::string("a top-level key") : "a key in '" + in + "'") +
                        " is a " + (k.IsMap() ? "mapping" : k.IsSequence() ? "list" : "null") +
                        ", expected a name (a '?' at the start of a line makes a complex key)");
    return k.Scalar();
  };
  for (auto it = root.begin(); it != root.end(); ++it) {
    const std::string key = key_name(it->first, "");
    if (table[""].count(key)) {
      table[""][key](it->second, source + ": " + key);
      continue;
    }
    auto sec = table.find(key);
    if (sec == table.end() || key.empty())
      throw ConfigError(source + ": unknown key '" + key + "' (known: stage, model, data, objective, optim, train)");
    if (!it->second.IsMap()) throw ConfigError(source + ": '" + key + "' must be a mapping");
    for (auto jt = it->second.begin(); jt != it->second.end(); ++jt) {
      const std::string k = key_name(jt->first, key);
      auto s = sec->second.find(k);
      if (s == sec->second.end())
        throw ConfigError(source + ": unknown key '" + key + "." + k + "' (known in " + key + ": " +
                          keys_of(sec->second) + ")");
      s->second(jt->second, source + ": " + key + "." + k);
    }
  }
  if (c.mode == TrainMode::kCaption && c.prompt.empty()) c.prompt = "a photo of";
  c.validate(source);
  return c;
}

TrainConfig TrainConfig::from_yaml_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw ConfigError("training config '" + path + "' cannot be read; see configs/ for examples");
  std::stringstream ss;
  ss << in.rdbuf();
  auto c = from_yaml_string(ss.str(), path);
  const std::string base = std::filesystem::path(path).parent_path().string();
  for (auto* p : {&c.model_config, &c.init, &c.vision_init, &c.language_model_init, &c.qformer_tokenizer,
                  &c.lm_tokenizer, &c.annotations, &c.image_root, &c.feature_cache, &c.output_dir})
    resolve(*p, base);
  for (auto& s : c.shards) resolve(s, base);
  return c;
}

void TrainConfig::validate(const std::string& source) const {
  auto bad = [&](const std::string& s) { throw ConfigError(source + ": " + s); };
  if (stage != 1 && stage != 2) bad("stage must be 1 or 2, got " + std::to_string(stage));
  if (batch_size < 1) bad("train.batch_size must be >= 1");
  if (grad_accum < 1) bad("train.grad_accum must be >= 1");
  if (max_steps < 1) bad("train.max_steps must be >= 1");
  if (log_every < 1) bad("train.log_every must be >= 1");
  if (save_every < 1) bad("train.save_every must be >= 1");
  if (keep_checkpoints < 1) bad("train.keep_checkpoints must be >= 1");
  if (max_txt_len < 2) bad("objective.max_txt_len must be >= 2");
  if (workers < 0) bad("data.workers must be >= 0");
  if (image_size < 0) bad("data.image_size must be >= 0 (0 = the model's)");
  if (stage == 1 && !itc && !itm && !itg) bad("stage 1 needs at least one of objective.itc, itm, itg");
  if (mode == TrainMode::kVqa && stage != 2) bad("objective.mode vqa is a stage-2 fine-tuning (set stage: 2)");
  if (!vqa_template.empty() && vqa_template.find("{}") == std::string::npos)
    bad("objective.vqa_template must contain {} where the question goes");
  if (!(empty_prefix >= 0 && empty_prefix <= 1))
    bad("objective.empty_prefix must be a fraction in [0, 1], got " + std::to_string(empty_prefix));
  if (empty_prefix > 0 && stage != 2) bad("objective.empty_prefix is a stage-2 option (set stage: 2)");
  if (!(query_embed_reg >= 0)) bad("objective.query_embed_reg must be >= 0 (0 = off), got " + std::to_string(query_embed_reg));
  if (query_embed_reg > 0 && stage != 2) bad("objective.query_embed_reg is a stage-2 option (set stage: 2)");
  if (!(context_distill >= 0)) bad("objective.context_distill must be >= 0 (0 = off), got " + std::to_string(context_distill));
  if (context_distill > 0 && stage != 2) bad("objective.context_distill is a stage-2 option (set stage: 2)");
  if (!(context_distill_encoder >= 0))
    bad("objective.context_distill_encoder must be >= 0 (0 = the decoder's states alone), got " +
        std::to_string(context_distill_encoder));
  if (context_distill_encoder > 0 && !(context_distill > 0))
    bad("objective.context_distill_encoder weighs a part of context distillation; set objective.context_distill > 0 "
        "too");
  if (!(context_distill_slots >= 0))
    bad("objective.context_distill_slots must be >= 0 (0 = off), got " + std::to_string(context_distill_slots));
  if (context_distill_slots > 0 && !(context_distill > 0))
    bad("objective.context_distill_slots weighs a part of context distillation; set objective.context_distill > 0 "
        "too");
  if (context_distill_fill && !(context_distill > 0))
    bad("objective.context_distill_fill sets how context distillation's teacher reads; set objective.context_distill > "
        "0 too");
  if (caption_positives && stage != 1) bad("objective.caption_positives is a stage-1 option (set stage: 1)");
  if (mode == TrainMode::kRetrieval && stage != 1) bad("objective.mode retrieval is a stage-1 fine-tuning (set stage: 1)");
  if (mode == TrainMode::kCaption && stage != 2) bad("objective.mode caption is a stage-2 fine-tuning (set stage: 2)");
  if (!annotations.empty() && !shards.empty()) bad("give data.annotations or data.shards, not both");
  if (!feature_cache.empty()) {
    if (augment)
      bad("data.feature_cache needs data.augment: false (augmentation changes an image's pixels every epoch, so its "
          "cached features would be wrong); set data.augment: false or remove data.feature_cache");
    if (train_vision)
      bad("data.feature_cache needs a frozen image encoder, but model.train_vision: true changes its output every "
          "step; remove data.feature_cache or set model.train_vision: false");
    if (!shards.empty())
      bad("data.feature_cache needs data.annotations: a WebDataset stream (data.shards) has no fixed index per image "
          "to key features by; remove data.feature_cache or train from data.annotations");
  }
  optim.validate();
}

std::string TrainConfig::to_yaml() const {
  YAML::Emitter e;
  e << YAML::BeginMap << YAML::Key << "stage" << YAML::Value << stage;
  e << YAML::Key << "model" << YAML::Value << YAML::BeginMap << YAML::Key << "config" << YAML::Value << model_config
    << YAML::Key << "init" << YAML::Value << init << YAML::Key << "vision_init" << YAML::Value << vision_init
    << YAML::Key << "language_model_init" << YAML::Value << language_model_init << YAML::Key << "qformer_tokenizer"
    << YAML::Value << qformer_tokenizer << YAML::Key << "lm_tokenizer" << YAML::Value << lm_tokenizer << YAML::Key
    << "train_vision" << YAML::Value << train_vision << YAML::EndMap;
  e << YAML::Key << "data" << YAML::Value << YAML::BeginMap << YAML::Key << "annotations" << YAML::Value
    << annotations << YAML::Key << "image_root" << YAML::Value << image_root << YAML::Key << "shards" << YAML::Value
    << shards << YAML::Key << "skip_missing_images" << YAML::Value << skip_missing_images << YAML::Key
    << "image_size" << YAML::Value << image_size << YAML::Key << "workers" << YAML::Value << workers << YAML::Key
    << "augment" << YAML::Value << augment << YAML::Key << "caption_choice" << YAML::Value
    << caption_choice_name(caption_choice) << YAML::Key << "feature_cache" << YAML::Value << feature_cache
    << YAML::EndMap;
  e << YAML::Key << "objective" << YAML::Value << YAML::BeginMap << YAML::Key << "max_txt_len" << YAML::Value
    << max_txt_len << YAML::Key << "prompt" << YAML::Value << prompt << YAML::Key << "itc" << YAML::Value << itc
    << YAML::Key << "itm" << YAML::Value << itm << YAML::Key << "itg" << YAML::Value << itg << YAML::Key << "caption_positives" << YAML::Value
    << caption_positives << YAML::Key << "mode"
    << YAML::Value << train_mode_name(mode) << YAML::Key << "vqa_template" << YAML::Value << vqa_template << YAML::Key << "empty_prefix" << YAML::Value << empty_prefix
    << YAML::Key << "query_embed_reg" << YAML::Value << query_embed_reg << YAML::Key << "context_distill"
    << YAML::Value << context_distill << YAML::Key << "context_distill_encoder" << YAML::Value
    << context_distill_encoder << YAML::Key << "context_distill_fill" << YAML::Value << context_distill_fill
    << YAML::Key << "context_distill_slots" << YAML::Value << context_distill_slots << YAML::EndMap;
  e << YAML::Key << "optim" << YAML::Value << YAML::BeginMap << YAML::Key << "lr" << YAML::Value << optim.lr
    << YAML::Key << "min_lr" << YAML::Value << optim.min_lr << YAML::Key << "warmup_lr" << YAML::Value
    << optim.warmup_lr << YAML::Key << "warmup_steps" << YAML::Value << optim.warmup_steps << YAML::Key
    << "weight_decay" << YAML::Value << optim.weight_decay << YAML::Key << "beta1" << YAML::Value << optim.beta1
    << YAML::Key << "beta2" << YAML::Value << optim.beta2 << YAML::Key << "eps" << YAML::Value << optim.eps
    << YAML::Key << "grad_clip" << YAML::Value << optim.grad_clip << YAML::Key << "layer_decay" << YAML::Value
    << optim.layer_decay << YAML::EndMap;
  e << YAML::Key << "train" << YAML::Value << YAML::BeginMap << YAML::Key << "batch_size" << YAML::Value
    << batch_size << YAML::Key << "grad_accum" << YAML::Value << grad_accum << YAML::Key << "max_steps"
    << YAML::Value << max_steps << YAML::Key << "seed" << YAML::Value << seed << YAML::Key << "bf16" << YAML::Value
    << bf16 << YAML::Key << "output_dir" << YAML::Value << output_dir << YAML::Key << "log_every" << YAML::Value
    << log_every << YAML::Key << "save_every" << YAML::Value << save_every << YAML::Key << "keep_checkpoints"
    << YAML::Value << keep_checkpoints << YAML::EndMap;
  e << YAML::EndMap;
  return e.c_str();
}

}  // namespace blip2
