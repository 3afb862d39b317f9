#include "blip2/config/config.h"

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "blip2/util/error.h"
#include "test_util.h"

namespace blip2 {
namespace {

using nlohmann::json;

json read(const std::string& p) {
  std::ifstream in(p);
  return json::parse(in);
}

// Every golden case has config.json (only non-default fields) and
// config_full.json (every field): our defaults must fill the gap exactly.
TEST(ConfigTest, DefaultsFillTheSameFieldsAsTransformers) {
  int cases = 0;
  for (const auto& e : std::filesystem::directory_iterator(test::golden_dir())) {
    if (!std::filesystem::exists(e.path() / "config_full.json")) continue;
    ++cases;
    SCOPED_TRACE(e.path().string());
    auto a = Blip2Config::from_file(e.path().string());
    auto b = Blip2Config::from_file((e.path() / "config_full.json").string());
    EXPECT_EQ(a.to_json_string(), b.to_json_string());
    // And the full config's own values are what we parsed.
    json full = read((e.path() / "config_full.json").string());
    EXPECT_EQ(a.vision.layer_norm_eps, full["vision_config"]["layer_norm_eps"].get<double>());
    EXPECT_EQ(a.qformer.max_position_embeddings, full["qformer_config"]["max_position_embeddings"].get<int64_t>());
    EXPECT_EQ(lm_family_name(a.text.family), full["text_config"]["model_type"].get<std::string>());
    if (a.text.family == LmFamily::kOpt) {
      EXPECT_EQ(a.text.opt.bos_token_id, full["text_config"]["bos_token_id"].get<int64_t>());
      EXPECT_EQ(a.text.opt.word_embed_proj_dim, full["text_config"]["word_embed_proj_dim"].get<int64_t>());
    } else {
      EXPECT_EQ(a.text.t5.is_gated_act, full["text_config"]["is_gated_act"].get<bool>());
      EXPECT_EQ(a.text.t5.dense_act_fn, full["text_config"]["dense_act_fn"].get<std::string>());
    }
  }
  EXPECT_GE(cases, 4);
}

TEST(ConfigTest, HubDefaultsAreThoseOfBlip2Opt27b) {
  auto c = Blip2Config::from_json_string(R"({"vision_config":{},"qformer_config":{},"text_config":{}})", "x");
  EXPECT_EQ(c.vision.hidden_size, 1408);
  EXPECT_EQ(c.vision.num_hidden_layers, 39);
  EXPECT_EQ(c.vision.num_patches(), 256);
  EXPECT_EQ(c.qformer.hidden_size, 768);
  EXPECT_EQ(c.qformer.cross_attention_frequency, 2);
  EXPECT_EQ(c.num_query_tokens, 32);
  EXPECT_EQ(c.text.family, LmFamily::kOpt);
  EXPECT_FALSE(c.image_token_index.has_value());
}

TEST(ConfigTest, T5FeedForwardProjDerivesGatedGelu) {
  auto c = Blip2Config::from_json_string(
      R"({"vision_config":{},"qformer_config":{},"text_config":{"model_type":"t5","feed_forward_proj":"gated-gelu"}})",
      "x");
  EXPECT_TRUE(c.text.t5.is_gated_act);
  EXPECT_EQ(c.text.t5.dense_act_fn, "gelu_new");
  EXPECT_EQ(c.text.t5.num_decoder_layers, c.text.t5.num_layers);
  EXPECT_THROW_WITH(Blip2Config::from_json_string(
                        R"({"vision_config":{},"qformer_config":{},"text_config":{"model_type":"t5","feed_forward_proj":"gatedgelu-x"}})",
                        "x"),
                    ConfigError, "feed_forward_proj");
}

TEST(ConfigTest, ErrorsNameTheFileTheFieldAndWhatWasFound) {
  EXPECT_THROW_WITH(Blip2Config::from_json_string("{", "cfg.json"), ConfigError, "cfg.json is not valid JSON");
  EXPECT_THROW_WITH(Blip2Config::from_json_string(R"({"qformer_config":{}})", "cfg.json"), ConfigError,
                    "missing required field 'vision_config'");
  EXPECT_THROW_WITH(
      Blip2Config::from_json_string(R"({"vision_config":{"hidden_size":"big"},"qformer_config":{}})", "cfg.json"),
      ConfigError, "cfg.json: vision_config.hidden_size must be an integer, got \"big\"");
  EXPECT_THROW_WITH(
      Blip2Config::from_json_string(R"({"vision_config":{"hidden_size":100,"num_attention_heads":16},"qformer_config":{"encoder_hidden_size":100},"text_config":{}})", "c"),
      ConfigError, "must be divisible by num_attention_heads");
  EXPECT_THROW_WITH(Blip2Config::from_json_string(
                        R"({"vision_config":{},"qformer_config":{},"text_config":{"model_type":"llama"}})", "c"),
                    ConfigError, "'llama' is not supported (supported: opt, t5)");
  EXPECT_THROW_WITH(Blip2Config::from_json_string(R"({"vision_config":{},"qformer_config":{"encoder_hidden_size":1024},"text_config":{}})", "c"),
                    ConfigError, "encoder_hidden_size (1024) must equal vision_config.hidden_size (1408)");
  EXPECT_THROW_WITH(Blip2Config::from_json_string(R"({"vision_config":{"patch_size":15},"qformer_config":{},"text_config":{}})", "c"),
                    ConfigError, "multiple of patch_size");
  EXPECT_THROW_WITH(Blip2Config::from_json_string(R"({"model_type":"clip","vision_config":{},"qformer_config":{}})", "c"),
                    ConfigError, "not a BLIP-2 checkpoint config");
  EXPECT_THROW_WITH(Blip2Config::from_json_string(R"({"vision_config":{},"qformer_config":{},"num_query_tokens":0,"text_config":{}})", "c"),
                    ConfigError, "num_query_tokens must be positive, got 0");
  EXPECT_THROW_WITH(Blip2Config::from_json_string(R"({"vision_config":{},"qformer_config":{},"image_token_index":60000,"text_config":{}})", "c"),
                    ConfigError, "image_token_index 60000 is outside");
  EXPECT_THROW_WITH(Blip2Config::from_file("/nonexistent/dir"), ConfigError, "/nonexistent/dir/config.json");
}

TEST(ConfigTest, NullSizesAndAMissingLanguageModelConfigAreNamedNotDefaulted) {
  EXPECT_THROW_WITH(Blip2Config::from_json_string(R"({"vision_config":{},"qformer_config":{}})", "cfg.json"),
                    ConfigError, "cfg.json: text_config is missing");
  EXPECT_THROW_WITH(
      Blip2Config::from_json_string(R"({"vision_config":{},"qformer_config":{},"text_config":null})", "cfg.json"),
      ConfigError, "cfg.json: text_config is null");
  EXPECT_THROW_WITH(Blip2Config::from_json_string(
                        R"({"vision_config":{"hidden_size":null},"qformer_config":{},"text_config":{}})", "cfg.json"),
                    ConfigError, "cfg.json: vision_config.hidden_size is null; give an integer");
  EXPECT_THROW_WITH(Blip2Config::from_json_string(
                        R"({"vision_config":{},"qformer_config":{},"text_config":{"hidden_size":null}})", "c"),
                    ConfigError, "text_config.hidden_size is null");
  EXPECT_THROW_WITH(Blip2Config::from_json_string(
                        R"({"vision_config":{},"qformer_config":{"hidden_act":null},"text_config":{}})", "c"),
                    ConfigError, "qformer_config.hidden_act is null; give a string");
  // Keys whose HF default is None stay legal as null; a retrieval model needs no LM.
  auto c = Blip2Config::from_json_string(
      R"({"vision_config":{},"qformer_config":{"pad_token_id":null},"text_config":{"word_embed_proj_dim":null,"pad_token_id":null,"eos_token_id":null},"image_token_index":null})",
      "c");
  EXPECT_EQ(c.text.opt.word_embed_proj_dim, c.text.opt.hidden_size);
  EXPECT_NO_THROW(Blip2Config::from_json_string(
      R"({"architectures":["Blip2ForImageTextRetrieval"],"vision_config":{},"qformer_config":{}})", "c"));
}

TEST(ConfigTest, SerialisedConfigParsesBackToTheSame) {
  auto c = Blip2Config::from_file(test::golden("t5"));
  auto again = Blip2Config::from_json_string(c.to_json_string(), "roundtrip");
  EXPECT_EQ(again.to_json_string(), c.to_json_string());
}

}  // namespace
}  // namespace blip2
