// convert_checkpoint on tests/fixtures/pth/lavis_blip2_opt.pth: a fake LAVIS
// BLIP-2 OPT state dict with LAVIS's real key names, whose k-th tensor (in the
// order of make_pth_fixtures.py's lavis_blip2_state_dict) is arange(numel) + 100 * k.
#include "blip2/io/convert.h"

#include <filesystem>
#include <fstream>

#include "blip2/io/safetensors.h"
#include "blip2/io/torch_checkpoint.h"
#include "blip2/io/weight_map.h"
#include "blip2/util/error.h"
#include "test_util.h"

namespace blip2 {
namespace {

using test::TempDir;
namespace fs = std::filesystem;

const std::string kLavis = std::string(BLIP2_SOURCE_DIR) + "/tests/fixtures/pth/lavis_blip2_opt.pth";

at::Tensor formula(int64_t k, std::vector<int64_t> shape, at::ScalarType dtype) {
  int64_t n = 1;
  for (auto s : shape) n *= s;
  return (torch::arange(n, torch::kFloat) + 100 * k).reshape(shape).to(dtype);
}

void expect_equal(const at::Tensor& got, const at::Tensor& want, const std::string& what) {
  ASSERT_TRUE(got.defined()) << what;
  EXPECT_EQ(got.scalar_type(), want.scalar_type()) << what;
  EXPECT_EQ(got.sizes(), want.sizes()) << what;
  EXPECT_TRUE(torch::equal(got, want)) << what;
}

bool contains(const std::vector<std::string>& v, const std::string& needle) {
  for (const auto& s : v)
    if (s.find(needle) != std::string::npos) return true;
  return false;
}

TEST(ConvertTest, LavisToHfMapsNamesMergesQkvBiasAndDropsTiedCopies) {
  TempDir dir;
  auto rep = io::convert_checkpoint(kLavis, dir.file("hf"));
  EXPECT_EQ(rep.direction, "lavis->hf");
  EXPECT_EQ(rep.output, dir.file("hf") + "/model.safetensors");
  EXPECT_EQ(rep.tensors_read, 36u);
  EXPECT_EQ(rep.tensors_written, 34u);  // 36 - position_ids - (q_bias, v_bias) + qkv.bias
  EXPECT_EQ(rep.bytes_written, fs::file_size(rep.output));
  ASSERT_EQ(rep.skipped.size(), 1u);
  EXPECT_NE(rep.skipped[0].find("Qformer.bert.embeddings.position_ids"), std::string::npos);
  ASSERT_EQ(rep.merged.size(), 1u);
  EXPECT_TRUE(rep.config_output.empty());
  EXPECT_FALSE(fs::exists(dir.file("hf") + "/config.json"));
  EXPECT_TRUE(contains(rep.notes, "no config.json written"));
  EXPECT_NE(rep.summary().find("lavis->hf: wrote 34 tensors"), std::string::npos) << rep.summary();

  auto hf = io::load_safetensors(rep.output);
  ASSERT_EQ(hf.size(), 34u);
  const int64_t D = 8;
  auto q = torch::arange(1, D + 1, torch::kFloat);
  expect_equal(hf.at("vision_model.encoder.layers.0.self_attn.qkv.bias"),
               torch::cat({q, torch::zeros({D}), -q}).to(torch::kHalf), "qkv.bias");
  EXPECT_EQ(hf.count("vision_model.encoder.layers.0.self_attn.q_bias"), 0u);
  expect_equal(hf.at("vision_model.embeddings.class_embedding"), formula(0, {1, 1, D}, torch::kHalf), "cls");
  expect_equal(hf.at("vision_model.embeddings.patch_embedding.weight"), formula(2, {D, 3, 2, 2}, torch::kHalf), "patch");
  expect_equal(hf.at("vision_model.encoder.layers.0.self_attn.qkv.weight"), formula(8, {3 * D, D}, torch::kHalf), "qkv.w");
  expect_equal(hf.at("vision_model.encoder.layers.0.self_attn.projection.weight"), formula(9, {D, D}, torch::kHalf), "proj");
  expect_equal(hf.at("vision_model.encoder.layers.0.mlp.fc1.weight"), formula(13, {2 * D, D}, torch::kHalf), "fc1");
  expect_equal(hf.at("vision_model.post_layernorm.weight"), formula(17, {D}, torch::kFloat), "ln_vision");
  expect_equal(hf.at("query_tokens"), formula(19, {1, 4, 8}, torch::kFloat), "query_tokens");
  expect_equal(hf.at("qformer.layernorm.bias"), formula(21, {8}, torch::kFloat), "qformer ln");
  expect_equal(hf.at("qformer.encoder.layer.0.attention.attention.query.weight"), formula(22, {8, 8}, torch::kFloat), "query");
  expect_equal(hf.at("qformer.encoder.layer.0.attention.output.dense.weight"), formula(24, {8, 8}, torch::kFloat), "dense");
  expect_equal(hf.at("qformer.encoder.layer.0.crossattention.attention.key.weight"), formula(26, {8, D}, torch::kFloat), "xkey");
  expect_equal(hf.at("qformer.encoder.layer.0.intermediate_query.dense.weight"), formula(27, {16, 8}, torch::kFloat), "iq");
  expect_equal(hf.at("language_projection.weight"), formula(30, {6, 8}, torch::kFloat), "proj");
  expect_equal(hf.at("language_model.model.decoder.embed_tokens.weight"), formula(32, {10, 6}, torch::kFloat), "embed");
  expect_equal(hf.at("language_model.lm_head.weight"), formula(32, {10, 6}, torch::kFloat), "lm_head (tied)");

  // Every LAVIS tensor that maps one to one is there under its HF name, unchanged.
  auto lavis = io::load_torch_checkpoint(kLavis);
  for (const auto& [name, t] : lavis) {
    auto n = io::lavis_to_hf(name);
    if (!n || name.find("_bias") != std::string::npos) continue;
    ASSERT_EQ(hf.count(*n), 1u) << name << " -> " << *n;
    expect_equal(hf.at(*n), t.contiguous(), name);
  }
}

TEST(ConvertTest, HfToLavisRoundTripsEveryParameter) {
  TempDir dir;
  io::convert_checkpoint(kLavis, dir.file("hf"));
  auto rep = io::convert_checkpoint(dir.file("hf"), dir.file("lavis"));
  EXPECT_EQ(rep.direction, "hf->lavis");
  EXPECT_EQ(rep.output, dir.file("lavis") + "/model.pth");
  EXPECT_EQ(rep.tensors_read, 34u);
  EXPECT_EQ(rep.tensors_written, 35u);
  ASSERT_EQ(rep.merged.size(), 1u);
  EXPECT_NE(rep.merged[0].find("visual_encoder.blocks.0.attn.q_bias"), std::string::npos);

  auto back = io::load_torch_checkpoint(rep.output);
  auto orig = io::load_torch_checkpoint(kLavis);
  orig.erase("Qformer.bert.embeddings.position_ids");
  ASSERT_EQ(back.size(), orig.size());
  for (const auto& [name, t] : orig) {
    ASSERT_EQ(back.count(name), 1u) << name;
    expect_equal(back.at(name), t, name);
  }
  // An explicit .pth destination.
  auto rep2 = io::convert_checkpoint(dir.file("hf") + "/model.safetensors", dir.file("out/x.pth"));
  EXPECT_EQ(rep2.output, dir.file("out/x.pth"));
  EXPECT_EQ(io::load_torch_checkpoint(rep2.output).size(), orig.size());
}

TEST(ConvertTest, CopiesConfigAndCastsDtype) {
  TempDir dir;
  {
    std::ofstream(dir.file("config.json")) << R"({"model_type": "blip-2", "num_query_tokens": 4})";
  }
  io::ConvertOptions o;
  o.config_json = dir.file("config.json");
  o.dtype = "bf16";
  auto rep = io::convert_checkpoint(kLavis, dir.file("hf"), o);
  EXPECT_EQ(rep.config_output, dir.file("hf") + "/config.json");
  EXPECT_TRUE(fs::exists(rep.config_output));
  EXPECT_FALSE(contains(rep.notes, "no config.json"));
  auto hf = io::load_safetensors(rep.output);
  for (const auto& [n, t] : hf) EXPECT_EQ(t.scalar_type(), torch::kBFloat16) << n;

  { std::ofstream(dir.file("bad.json")) << "{not json"; }
  o.config_json = dir.file("bad.json");
  EXPECT_THROW_WITH(io::convert_checkpoint(kLavis, dir.file("hf2"), o), ConfigError, "not valid JSON");
  o.config_json.clear();
  o.dtype = "int4";
  EXPECT_THROW_WITH(io::convert_checkpoint(kLavis, dir.file("hf3"), o), InputError, "dtype 'int4'");
}

TEST(ConvertTest, HfToLavisDetectsT5AndWarnsAboutAKeyBias) {
  TempDir dir;
  fs::create_directories(dir.file("hf"));
  auto qkv = torch::arange(1, 7, torch::kFloat);  // k part (3, 4) non-zero
  io::save_safetensors(dir.file("hf") + "/model.safetensors",
                       {{"vision_model.encoder.layers.3.self_attn.qkv.bias", qkv},
                        {"language_projection.weight", torch::ones({2, 2})},
                        {"language_model.encoder.block.0.layer.0.SelfAttention.q.weight", torch::ones({2, 2})},
                        {"language_model.shared.weight", torch::ones({4, 2})}});
  auto rep = io::convert_checkpoint(dir.file("hf"), dir.file("l.pth"));
  EXPECT_TRUE(contains(rep.notes, "non-zero key bias"));
  auto sd = io::load_torch_checkpoint(rep.output);
  expect_equal(sd.at("visual_encoder.blocks.3.attn.q_bias"), torch::tensor({1.0f, 2.0f}), "q");
  expect_equal(sd.at("visual_encoder.blocks.3.attn.v_bias"), torch::tensor({5.0f, 6.0f}), "v");
  EXPECT_EQ(sd.count("t5_proj.weight"), 1u);
  EXPECT_EQ(sd.count("t5_model.encoder.block.0.layer.0.SelfAttention.q.weight"), 1u);
  EXPECT_EQ(sd.count("t5_model.shared.weight"), 1u);
  io::ConvertOptions o;
  o.lm = "opt";
  auto rep2 = io::convert_checkpoint(dir.file("hf"), dir.file("o.pth"), o);
  EXPECT_EQ(io::load_torch_checkpoint(rep2.output).count("opt_proj.weight"), 1u);
}

TEST(ConvertTest, HfNamedPthConvertsUnchangedAndErrorsAreClear) {
  TempDir dir;
  io::save_torch_checkpoint(dir.file("pytorch_model.bin"), {{"qformer.layernorm.weight", torch::ones({3})}});
  auto rep = io::convert_checkpoint(dir.file("pytorch_model.bin"), dir.file("hf"));
  EXPECT_TRUE(contains(rep.notes, "no LAVIS names"));
  EXPECT_EQ(io::load_safetensors(rep.output).count("qformer.layernorm.weight"), 1u);

  EXPECT_THROW_WITH(io::convert_checkpoint(dir.file("missing.pth"), dir.file("o")), CheckpointError, "does not exist");
  EXPECT_THROW_WITH(io::convert_checkpoint(std::string(BLIP2_SOURCE_DIR) + "/tests/fixtures/pth/legacy.pth", dir.file("o")),
                    CheckpointError, "legacy (non-zip) .pth format is not supported");
  fs::create_directories(dir.file("empty"));
  EXPECT_THROW_WITH(io::convert_checkpoint(dir.file("empty"), dir.file("o")), CheckpointError, "holds neither");
}

}  // namespace
}  // namespace blip2
