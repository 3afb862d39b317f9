#include "blip2/config/config.h"

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "blip2/util/error.h"

namespace blip2 {

using nlohmann::json;

namespace {

// Reads obj[key] into `out` when present; checks its JSON type. An absent key
// keeps HF's default; null is accepted only where HF's default is None
// (token ids, word_embed_proj_dim, num_decoder_layers): a null size or flag
// is an error naming the key, never a silent default.
struct Reader {
  const json& obj;
  std::string where;  // e.g. "config.json: vision_config"

  std::string field(const std::string& key) const { return where + "." + key; }
  // False when absent; ConfigError when null.
  bool given(const char* key, const char* expected) const {
    if (!obj.contains(key)) return false;
    if (obj[key].is_null())
      throw ConfigError(field(key) + " is null; give " + expected + " or leave the key out for the default");
    return true;
  }

  void i64(const char* key, int64_t& out) const {
    if (!given(key, "an integer")) return;
    const json& v = obj[key];
    if (!v.is_number_integer())
      throw ConfigError(field(key) + " must be an integer, got " + v.dump());
    out = v.get<int64_t>();
  }
  // An integer whose HF default is None: null keeps `out`.
  void i64_or_null(const char* key, int64_t& out) const {
    if (obj.contains(key) && !obj[key].is_null()) i64(key, out);
  }
  void f64(const char* key, double& out) const {
    if (!given(key, "a number")) return;
    const json& v = obj[key];
    if (!v.is_number()) throw ConfigError(field(key) + " must be a number, got " + v.dump());
    out = v.get<double>();
  }
  void boolean(const char* key, bool& out) const {
    if (!given(key, "true or false")) return;
    const json& v = obj[key];
    if (!v.is_boolean()) throw ConfigError(field(key) + " must be true or false, got " + v.dump());
    out = v.get<bool>();
  }
  void str(const char* key, std::string& out) const {
    if (!given(key, "a string")) return;
    const json& v = obj[key];
    if (!v.is_string()) throw ConfigError(field(key) + " must be a string, got " + v.dump());
    out = v.get<std::string>();
  }
  // Token ids may be null (HF: None, unset); eos_token_id may be a list in
  // some configs, of which the first entry is used.
  void token(const char* key, int64_t& out) const {
    if (!obj.contains(key) || obj[key].is_null()) return;
    const json& v = obj[key];
    if (v.is_array() && !v.empty() && v[0].is_number_integer()) {
      out = v[0].get<int64_t>();
      return;
    }
    i64(key, out);
  }
};

const json& sub_object(const json& root, const char* key, const std::string& source) {
  static const json empty = json::object();
  if (!root.contains(key) || root[key].is_null()) return empty;
  if (!root[key].is_object())
    throw ConfigError(source + ": " + key + " must be an object, got " + root[key].dump());
  return root[key];
}

void positive(int64_t v, const std::string& name) {
  if (v <= 0) throw ConfigError(name + " must be positive, got " + std::to_string(v));
}

void known_activation(const std::string& act, const std::string& name) {
  static const char* kActs[] = {"gelu", "relu", "gelu_new", "gelu_pytorch_tanh", "quick_gelu",
                                "silu", "swish"};
  for (const char* a : kActs)
    if (act == a) return;
  throw ConfigError(name + " '" + act +
                    "' is not supported (supported: gelu, gelu_new, gelu_pytorch_tanh, "
                    "quick_gelu, relu, silu)");
}

}  // namespace

const char* lm_family_name(LmFamily family) {
  switch (family) {
    case LmFamily::kOpt: return "opt";
    case LmFamily::kT5: return "t5";
  }
  return "?";
}

Blip2Config Blip2Config::from_json_string(const std::string& text, const std::string& source) {
  json root;
  try {
    root = json::parse(text);
  } catch (const std::exception& e) {
    throw ConfigError(source + " is not valid JSON: " + e.what());
  }
  if (!root.is_object()) throw ConfigError(source + " must hold a JSON object");

  Blip2Config c;
  if (root.contains("model_type") && root["model_type"].is_string()) {
    const std::string mt = root["model_type"].get<std::string>();
    if (mt != "blip-2" && mt != "blip_2")
      throw ConfigError(source + ": model_type is '" + mt +
                        "', expected 'blip-2'; this is not a BLIP-2 checkpoint config");
  }
  for (const char* required : {"vision_config", "qformer_config"})
    if (!root.contains(required))
      throw ConfigError(source + ": missing required field '" + std::string(required) +
                        "' (a BLIP-2 config.json has vision_config, qformer_config and "
                        "text_config)");

  Reader top{root, source};
  top.i64("num_query_tokens", c.num_query_tokens);
  top.i64("image_text_hidden_size", c.image_text_hidden_size);
  if (root.contains("image_token_index") && !root["image_token_index"].is_null()) {
    int64_t idx = 0;
    top.i64("image_token_index", idx);
    c.image_token_index = idx;
  }
  if (root.contains("architectures") && root["architectures"].is_array())
    for (const auto& a : root["architectures"])
      if (a.is_string()) c.architectures.push_back(a.get<std::string>());

  {
    Reader r{sub_object(root, "vision_config", source), source + ": vision_config"};
    auto& v = c.vision;
    r.i64("hidden_size", v.hidden_size);
    r.i64("intermediate_size", v.intermediate_size);
    r.i64("num_hidden_layers", v.num_hidden_layers);
    r.i64("num_attention_heads", v.num_attention_heads);
    r.i64("image_size", v.image_size);
    r.i64("patch_size", v.patch_size);
    r.i64("num_channels", v.num_channels);
    r.str("hidden_act", v.hidden_act);
    r.f64("layer_norm_eps", v.layer_norm_eps);
    r.boolean("qkv_bias", v.qkv_bias);
  }
  {
    Reader r{sub_object(root, "qformer_config", source), source + ": qformer_config"};
    auto& q = c.qformer;
    r.i64("vocab_size", q.vocab_size);
    r.i64("hidden_size", q.hidden_size);
    r.i64("num_hidden_layers", q.num_hidden_layers);
    r.i64("num_attention_heads", q.num_attention_heads);
    r.i64("intermediate_size", q.intermediate_size);
    r.str("hidden_act", q.hidden_act);
    r.i64("max_position_embeddings", q.max_position_embeddings);
    r.f64("layer_norm_eps", q.layer_norm_eps);
    r.token("pad_token_id", q.pad_token_id);
    r.str("position_embedding_type", q.position_embedding_type);
    r.i64("cross_attention_frequency", q.cross_attention_frequency);
    r.i64("encoder_hidden_size", q.encoder_hidden_size);
    r.boolean("use_qformer_text_input", q.use_qformer_text_input);
    r.f64("hidden_dropout_prob", q.hidden_dropout_prob);
    r.f64("attention_probs_dropout_prob", q.attention_probs_dropout_prob);
  }
  // The language model has no HF default worth loading weights into: a model
  // that generates text needs text_config (retrieval-only models do not).
  bool retrieval_only = !c.architectures.empty();
  for (const auto& a : c.architectures)
    retrieval_only = retrieval_only && (a == "Blip2ForImageTextRetrieval" || a == "Blip2VisionModelWithProjection" ||
                                        a == "Blip2TextModelWithProjection");
  if (!retrieval_only && (!root.contains("text_config") || root["text_config"].is_null()))
    throw ConfigError(source + ": text_config is " + (root.contains("text_config") ? "null" : "missing") +
                      "; a BLIP-2 model that generates text needs the language model's config (model_type opt or t5 "
                      "and its sizes), as HF's config.json has it");
  {
    const json& t = sub_object(root, "text_config", source);
    Reader r{t, source + ": text_config"};
    std::string model_type = lm_family_name(c.text.family);
    r.str("model_type", model_type);
    if (model_type == lm_family_name(LmFamily::kOpt)) {
      c.text.family = LmFamily::kOpt;
      auto& o = c.text.opt;
      r.i64("vocab_size", o.vocab_size);
      r.i64("hidden_size", o.hidden_size);
      r.i64("num_hidden_layers", o.num_hidden_layers);
      r.i64("ffn_dim", o.ffn_dim);
      r.i64("num_attention_heads", o.num_attention_heads);
      r.i64("max_position_embeddings", o.max_position_embeddings);
      r.boolean("do_layer_norm_before", o.do_layer_norm_before);
      r.boolean("_remove_final_layer_norm", o.remove_final_layer_norm);
      o.word_embed_proj_dim = -1;
      r.i64_or_null("word_embed_proj_dim", o.word_embed_proj_dim);
      r.str("activation_function", o.activation_function);
      r.boolean("enable_bias", o.enable_bias);
      r.boolean("layer_norm_elementwise_affine", o.layer_norm_elementwise_affine);
      r.boolean("tie_word_embeddings", o.tie_word_embeddings);
      r.token("bos_token_id", o.bos_token_id);
      r.token("eos_token_id", o.eos_token_id);
      r.token("pad_token_id", o.pad_token_id);
      if (o.word_embed_proj_dim < 0) o.word_embed_proj_dim = o.hidden_size;
    } else if (model_type == lm_family_name(LmFamily::kT5)) {
      c.text.family = LmFamily::kT5;
      auto& o = c.text.t5;
      r.i64("vocab_size", o.vocab_size);
      r.i64("d_model", o.d_model);
      r.i64("d_kv", o.d_kv);
      r.i64("d_ff", o.d_ff);
      r.i64("num_layers", o.num_layers);
      r.i64_or_null("num_decoder_layers", o.num_decoder_layers);
      r.i64("num_heads", o.num_heads);
      r.i64("relative_attention_num_buckets", o.relative_attention_num_buckets);
      r.i64("relative_attention_max_distance", o.relative_attention_max_distance);
      r.f64("layer_norm_epsilon", o.layer_norm_epsilon);
      r.str("feed_forward_proj", o.feed_forward_proj);
      r.boolean("tie_word_embeddings", o.tie_word_embeddings);
      r.token("pad_token_id", o.pad_token_id);
      r.token("eos_token_id", o.eos_token_id);
      o.decoder_start_token_id = o.pad_token_id;
      r.token("decoder_start_token_id", o.decoder_start_token_id);
      if (o.num_decoder_layers < 0) o.num_decoder_layers = o.num_layers;
      // T5Config.__init__: "gated-gelu" -> is_gated_act, dense_act_fn "gelu_new".
      const std::string& ff = o.feed_forward_proj;
      const auto dash = ff.rfind('-');
      o.dense_act_fn = dash == std::string::npos ? ff : ff.substr(dash + 1);
      o.is_gated_act = ff.rfind("gated-", 0) == 0;
      const bool valid = dash == std::string::npos || (o.is_gated_act && dash == 5);
      if (!valid)
        throw ConfigError(source + ": text_config.feed_forward_proj '" + ff +
                          "' is not valid; use 'relu', 'gelu', 'gated-gelu' or 'gated-relu'");
      if (o.dense_act_fn == "gelu" && o.is_gated_act) o.dense_act_fn = "gelu_new";
    } else {
      throw ConfigError(source + ": text_config.model_type '" + model_type +
                        "' is not supported (supported: opt, t5)");
    }
  }
  // The top-level tie_word_embeddings of Blip2Config mirrors the LM's.
  c.validate(source);
  return c;
}

void Blip2Config::validate(const std::string& source) const {
  const std::string s = source + ": ";
  positive(vision.hidden_size, s + "vision_config.hidden_size");
  positive(vision.intermediate_size, s + "vision_config.intermediate_size");
  positive(vision.num_hidden_layers, s + "vision_config.num_hidden_layers");
  positive(vision.num_attention_heads, s + "vision_config.num_attention_heads");
  positive(vision.image_size, s + "vision_config.image_size");
  positive(vision.patch_size, s + "vision_config.patch_size");
  positive(vision.num_channels, s + "vision_config.num_channels");
  if (vision.hidden_size % vision.num_attention_heads != 0)
    throw ConfigError(s + "vision_config.hidden_size (" + std::to_string(vision.hidden_size) +
                      ") must be divisible by num_attention_heads (" +
                      std::to_string(vision.num_attention_heads) + ")");
  if (vision.image_size % vision.patch_size != 0)
    throw ConfigError(s + "vision_config.image_size (" + std::to_string(vision.image_size) +
                      ") must be a multiple of patch_size (" +
                      std::to_string(vision.patch_size) + ")");
  known_activation(vision.hidden_act, s + "vision_config.hidden_act");

  positive(qformer.vocab_size, s + "qformer_config.vocab_size");
  positive(qformer.hidden_size, s + "qformer_config.hidden_size");
  positive(qformer.num_hidden_layers, s + "qformer_config.num_hidden_layers");
  positive(qformer.num_attention_heads, s + "qformer_config.num_attention_heads");
  positive(qformer.intermediate_size, s + "qformer_config.intermediate_size");
  positive(qformer.max_position_embeddings, s + "qformer_config.max_position_embeddings");
  positive(qformer.cross_attention_frequency, s + "qformer_config.cross_attention_frequency");
  positive(qformer.encoder_hidden_size, s + "qformer_config.encoder_hidden_size");
  if (qformer.hidden_size % qformer.num_attention_heads != 0)
    throw ConfigError(s + "qformer_config.hidden_size (" + std::to_string(qformer.hidden_size) +
                      ") must be divisible by num_attention_heads (" +
                      std::to_string(qformer.num_attention_heads) + ")");
  if (qformer.position_embedding_type != "absolute")
    throw ConfigError(s + "qformer_config.position_embedding_type '" +
                      qformer.position_embedding_type + "' is not supported (only 'absolute')");
  known_activation(qformer.hidden_act, s + "qformer_config.hidden_act");
  for (auto [v, n] : {std::pair<double, const char*>{qformer.hidden_dropout_prob, "hidden_dropout_prob"},
                      {qformer.attention_probs_dropout_prob, "attention_probs_dropout_prob"}})
    if (!(v >= 0 && v < 1))
      throw ConfigError(s + "qformer_config." + n + " must be in [0, 1), got " + std::to_string(v));
  if (qformer.encoder_hidden_size != vision.hidden_size)
    throw ConfigError(s + "qformer_config.encoder_hidden_size (" +
                      std::to_string(qformer.encoder_hidden_size) +
                      ") must equal vision_config.hidden_size (" +
                      std::to_string(vision.hidden_size) +
                      "): the Q-Former cross-attends to the image encoder's output");

  positive(num_query_tokens, s + "num_query_tokens");
  positive(image_text_hidden_size, s + "image_text_hidden_size");

  int64_t vocab_size = 0;
  if (text.family == LmFamily::kOpt) {
    const auto& o = text.opt;
    vocab_size = o.vocab_size;
    positive(o.vocab_size, s + "text_config.vocab_size");
    positive(o.hidden_size, s + "text_config.hidden_size");
    positive(o.num_hidden_layers, s + "text_config.num_hidden_layers");
    positive(o.ffn_dim, s + "text_config.ffn_dim");
    positive(o.num_attention_heads, s + "text_config.num_attention_heads");
    positive(o.max_position_embeddings, s + "text_config.max_position_embeddings");
    positive(o.word_embed_proj_dim, s + "text_config.word_embed_proj_dim");
    if (o.hidden_size % o.num_attention_heads != 0)
      throw ConfigError(s + "text_config.hidden_size (" + std::to_string(o.hidden_size) +
                        ") must be divisible by num_attention_heads (" +
                        std::to_string(o.num_attention_heads) + ")");
    known_activation(o.activation_function, s + "text_config.activation_function");
  } else {
    const auto& o = text.t5;
    vocab_size = o.vocab_size;
    positive(o.vocab_size, s + "text_config.vocab_size");
    positive(o.d_model, s + "text_config.d_model");
    positive(o.d_kv, s + "text_config.d_kv");
    positive(o.d_ff, s + "text_config.d_ff");
    positive(o.num_layers, s + "text_config.num_layers");
    positive(o.num_decoder_layers, s + "text_config.num_decoder_layers");
    positive(o.num_heads, s + "text_config.num_heads");
    positive(o.relative_attention_num_buckets, s + "text_config.relative_attention_num_buckets");
    positive(o.relative_attention_max_distance,
             s + "text_config.relative_attention_max_distance");
    known_activation(o.dense_act_fn, s + "text_config.dense_act_fn");
  }
  if (image_token_index && (*image_token_index < 0 || *image_token_index >= vocab_size))
    throw ConfigError(s + "image_token_index " + std::to_string(*image_token_index) +
                      " is outside the language model's vocabulary (size " +
                      std::to_string(vocab_size) + ")");
}

Blip2Config Blip2Config::from_file(const std::string& path) {
  namespace fs = std::filesystem;
  fs::path p(path);
  std::error_code ec;
  if (fs::is_directory(p, ec) || p.extension() != ".json") p /= "config.json";
  if (fs::is_directory(p, ec))
    throw ConfigError("'" + p.string() + "' is a directory; expected the config.json file");
  if (!fs::exists(p, ec))
    throw ConfigError("config file '" + p.string() +
                      "' does not exist; a HuggingFace BLIP-2 checkpoint directory holds "
                      "config.json beside model.safetensors");
  std::ifstream in(p);
  if (!in) throw ConfigError("cannot read config file '" + p.string() + "'");
  std::stringstream ss;
  ss << in.rdbuf();
  return from_json_string(ss.str(), p.string());
}

std::string Blip2Config::to_json_string() const {
  json j;
  j["model_type"] = "blip-2";
  if (!architectures.empty()) j["architectures"] = architectures;
  j["num_query_tokens"] = num_query_tokens;
  j["image_text_hidden_size"] = image_text_hidden_size;
  j["image_token_index"] = image_token_index ? json(*image_token_index) : json(nullptr);
  j["vision_config"] = {{"model_type", "blip_2_vision_model"},
                        {"hidden_size", vision.hidden_size},
                        {"intermediate_size", vision.intermediate_size},
                        {"num_hidden_layers", vision.num_hidden_layers},
                        {"num_attention_heads", vision.num_attention_heads},
                        {"image_size", vision.image_size},
                        {"patch_size", vision.patch_size},
                        {"num_channels", vision.num_channels},
                        {"hidden_act", vision.hidden_act},
                        {"layer_norm_eps", vision.layer_norm_eps},
                        {"qkv_bias", vision.qkv_bias}};
  j["qformer_config"] = {{"model_type", "blip_2_qformer"},
                         {"vocab_size", qformer.vocab_size},
                         {"hidden_size", qformer.hidden_size},
                         {"num_hidden_layers", qformer.num_hidden_layers},
                         {"num_attention_heads", qformer.num_attention_heads},
                         {"intermediate_size", qformer.intermediate_size},
                         {"hidden_act", qformer.hidden_act},
                         {"max_position_embeddings", qformer.max_position_embeddings},
                         {"layer_norm_eps", qformer.layer_norm_eps},
                         {"pad_token_id", qformer.pad_token_id},
                         {"position_embedding_type", qformer.position_embedding_type},
                         {"cross_attention_frequency", qformer.cross_attention_frequency},
                         {"encoder_hidden_size", qformer.encoder_hidden_size},
                         {"use_qformer_text_input", qformer.use_qformer_text_input},
                         {"hidden_dropout_prob", qformer.hidden_dropout_prob},
                         {"attention_probs_dropout_prob", qformer.attention_probs_dropout_prob}};
  if (text.family == LmFamily::kOpt) {
    const auto& o = text.opt;
    j["text_config"] = {{"model_type", lm_family_name(LmFamily::kOpt)},
                        {"vocab_size", o.vocab_size},
                        {"hidden_size", o.hidden_size},
                        {"num_hidden_layers", o.num_hidden_layers},
                        {"ffn_dim", o.ffn_dim},
                        {"num_attention_heads", o.num_attention_heads},
                        {"max_position_embeddings", o.max_position_embeddings},
                        {"do_layer_norm_before", o.do_layer_norm_before},
                        {"_remove_final_layer_norm", o.remove_final_layer_norm},
                        {"word_embed_proj_dim", o.word_embed_proj_dim},
                        {"activation_function", o.activation_function},
                        {"enable_bias", o.enable_bias},
                        {"layer_norm_elementwise_affine", o.layer_norm_elementwise_affine},
                        {"tie_word_embeddings", o.tie_word_embeddings},
                        {"bos_token_id", o.bos_token_id},
                        {"eos_token_id", o.eos_token_id},
                        {"pad_token_id", o.pad_token_id}};
    j["use_decoder_only_language_model"] = true;
  } else {
    const auto& o = text.t5;
    j["text_config"] = {{"model_type", lm_family_name(LmFamily::kT5)},
                        {"vocab_size", o.vocab_size},
                        {"d_model", o.d_model},
                        {"d_kv", o.d_kv},
                        {"d_ff", o.d_ff},
                        {"num_layers", o.num_layers},
                        {"num_decoder_layers", o.num_decoder_layers},
                        {"num_heads", o.num_heads},
                        {"relative_attention_num_buckets", o.relative_attention_num_buckets},
                        {"relative_attention_max_distance", o.relative_attention_max_distance},
                        {"layer_norm_epsilon", o.layer_norm_epsilon},
                        {"feed_forward_proj", o.feed_forward_proj},
                        {"tie_word_embeddings", o.tie_word_embeddings},
                        {"pad_token_id", o.pad_token_id},
                        {"eos_token_id", o.eos_token_id},
                        {"decoder_start_token_id", o.decoder_start_token_id},
                        {"is_encoder_decoder", true}};
    j["use_decoder_only_language_model"] = false;
    j["is_encoder_decoder"] = true;
  }
  return j.dump(2);
}

}  // namespace blip2
