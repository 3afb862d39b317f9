// Typed configs with HuggingFace key names and HuggingFace defaults.
//
// A config.json written by transformers holds only the fields that differ from
// the defaults, so every default below is the one of the transformers class
// named beside it (transformers 4.45). Parsing checks types and values and
// names the field on any error.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace blip2 {

// Blip2VisionConfig
struct VisionConfig {
  int64_t hidden_size = 1408;
  int64_t intermediate_size = 6144;
  int64_t num_hidden_layers = 39;
  int64_t num_attention_heads = 16;
  int64_t image_size = 224;
  int64_t patch_size = 14;
  int64_t num_channels = 3;
  std::string hidden_act = "gelu";
  double layer_norm_eps = 1e-6;
  bool qkv_bias = true;

  int64_t num_patches() const { return (image_size / patch_size) * (image_size / patch_size); }
  int64_t head_dim() const { return hidden_size / num_attention_heads; }
};

// Blip2QFormerConfig
struct QFormerConfig {
  int64_t vocab_size = 30522;
  int64_t hidden_size = 768;
  int64_t num_hidden_layers = 12;
  int64_t num_attention_heads = 12;
  int64_t intermediate_size = 3072;
  std::string hidden_act = "gelu";
  int64_t max_position_embeddings = 512;
  double layer_norm_eps = 1e-12;
  int64_t pad_token_id = 0;
  std::string position_embedding_type = "absolute";
  int64_t cross_attention_frequency = 2;
  int64_t encoder_hidden_size = 1408;
  bool use_qformer_text_input = false;
  double hidden_dropout_prob = 0.1;           // active only in training mode
  double attention_probs_dropout_prob = 0.1;  // active only in training mode

  int64_t head_dim() const { return hidden_size / num_attention_heads; }
  bool has_cross_attention(int64_t layer) const { return layer % cross_attention_frequency == 0; }
};

// OPTConfig
struct OptConfig {
  int64_t vocab_size = 50272;
  int64_t hidden_size = 768;
  int64_t num_hidden_layers = 12;
  int64_t ffn_dim = 3072;
  int64_t num_attention_heads = 12;
  int64_t max_position_embeddings = 2048;
  bool do_layer_norm_before = true;
  bool remove_final_layer_norm = false;  // "_remove_final_layer_norm"
  int64_t word_embed_proj_dim = 768;     // when absent from config.json: hidden_size
  std::string activation_function = "relu";
  bool enable_bias = true;
  bool layer_norm_elementwise_affine = true;
  bool tie_word_embeddings = true;
  int64_t bos_token_id = 2;
  int64_t eos_token_id = 2;
  int64_t pad_token_id = 1;
};

// T5Config
struct T5Config {
  int64_t vocab_size = 32128;
  int64_t d_model = 512;
  int64_t d_kv = 64;
  int64_t d_ff = 2048;
  int64_t num_layers = 6;
  int64_t num_decoder_layers = -1;  // defaults to num_layers
  int64_t num_heads = 8;
  int64_t relative_attention_num_buckets = 32;
  int64_t relative_attention_max_distance = 128;
  double layer_norm_epsilon = 1e-6;
  std::string feed_forward_proj = "relu";
  bool is_gated_act = false;     // derived from feed_forward_proj
  std::string dense_act_fn = "relu";  // derived: "gated-gelu" -> "gelu_new"
  bool tie_word_embeddings = true;
  int64_t pad_token_id = 0;
  int64_t eos_token_id = 1;
  int64_t decoder_start_token_id = 0;
};

// The language-model families BLIP-2 pairs with (HF text_config.model_type).
// Everything that differs between them at run time (BOS, VQA template, tied
// weights, context length) is a LanguageModel method (lm/language_model.h);
// the config holds only each family's own fields.
enum class LmFamily { kOpt, kT5 };

// "opt" / "t5", as text_config.model_type spells it.
const char* lm_family_name(LmFamily family);

struct TextConfig {
  LmFamily family = LmFamily::kOpt;  // text_config.model_type
  OptConfig opt;                     // read when family == kOpt
  T5Config t5;                       // read when family == kT5
};

// Blip2Config
struct Blip2Config {
  VisionConfig vision;
  QFormerConfig qformer;
  TextConfig text;
  int64_t num_query_tokens = 32;
  int64_t image_text_hidden_size = 256;
  std::optional<int64_t> image_token_index;
  std::vector<std::string> architectures;

  // Parse a config.json (already read into a string). `source` names it in errors.
  static Blip2Config from_json_string(const std::string& json, const std::string& source);
  // Read `path` (a config.json, or a directory holding one).
  static Blip2Config from_file(const std::string& path);
  // Serialise with every field (HF key names), loadable by from_json_string.
  std::string to_json_string() const;

  // Throws ConfigError on impossible values (e.g. hidden size not divisible by heads).
  void validate(const std::string& source) const;
};

}  // namespace blip2
