// Model behaviour on shapes other than the golden ones: KV-cached decoding
// against full forwards, both prompt-joining paths, retrieval heads, loading
// errors, bad inputs.
#include "blip2/model/blip2_model.h"

#include <chrono>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "blip2/io/tensor_store.h"
#include "blip2/nn/gemm.h"
#include "blip2/util/error.h"
#include "model_fixtures.h"
#include "test_util.h"

namespace blip2 {
namespace {

using test::TempDir;

Blip2Model make(const Blip2Config& c, Blip2Parts parts = {}) {
  Blip2Model m(c, parts);
  test::randomize(*m, 7);
  m->eval();
  return m;
}

// Greedy decoding with the KV cache must pick, at every step, the argmax of
// a full (uncached) forward over the whole sequence so far.
void expect_cached_decoding_matches_full_forward(const Blip2Config& c) {
  torch::NoGradGuard g;
  auto m = make(c);
  torch::manual_seed(3);
  auto pixels = torch::randn({2, 3, c.vision.image_size, c.vision.image_size});
  auto ids = torch::randint(3, 40, {2, 4}, torch::kLong);
  auto mask = torch::ones({2, 4}, torch::kLong);
  mask[1][0] = 0;  // row 1 left-padded
  GenerationConfig gc;
  gc.max_new_tokens = 6;
  gc.min_new_tokens = 6;  // EOS suppressed: every step decodes
  gc.output_logits = true;
  auto out = m->generate(pixels, ids, mask, gc, /*prepend_bos=*/false);
  const bool encdec = m->language_model->is_encoder_decoder();
  const int64_t prefix = encdec ? 1 : 0;
  ASSERT_EQ(out.step_logits.size(1), out.sequences.size(1) - prefix);
  for (int64_t s = 0; s < out.step_logits.size(1); ++s) {
    torch::Tensor logits;
    if (encdec) {
      auto dec = out.sequences.slice(1, 0, prefix + s);
      logits = m->forward(pixels, ids, mask, dec).lm.logits.select(1, s);
    } else {
      auto gen = out.sequences.slice(1, 0, s);
      auto full_ids = torch::cat({ids, gen}, 1);
      auto full_mask = torch::cat({mask, torch::ones_like(gen)}, 1);
      auto l = m->forward(pixels, full_ids, full_mask).lm.logits;
      logits = l.select(1, l.size(1) - 1);
    }
    EXPECT_TRUE(torch::allclose(out.step_logits.select(1, s), logits, 1e-4, 1e-4))
        << "step " << s << " max diff " << (out.step_logits.select(1, s) - logits).abs().max().item<float>()
        << " scale " << logits.abs().max().item<float>();
    auto no_eos = logits.clone();
    no_eos.select(1, m->language_model->eos_token_id()).fill_(-INFINITY);
    EXPECT_TRUE(torch::equal(out.sequences.select(1, prefix + s), no_eos.argmax(1))) << "step " << s;
  }
}

TEST(Blip2ModelTest, OptCachedDecodingMatchesFullForward) {
  expect_cached_decoding_matches_full_forward(test::tiny_config("opt"));
}

TEST(Blip2ModelTest, OptWithProjectedEmbeddingsAndPostLayerNormDecodesConsistently) {
  auto c = test::tiny_config("opt");
  c.text.opt.word_embed_proj_dim = 12;  // project_in / project_out (OPT-350m style)
  c.text.opt.do_layer_norm_before = false;
  expect_cached_decoding_matches_full_forward(c);
}

TEST(Blip2ModelTest, T5CachedDecodingMatchesFullForward) {
  expect_cached_decoding_matches_full_forward(test::tiny_config("t5"));
}

TEST(Blip2ModelTest, TiedReluT5DecodesConsistently) {
  auto c = test::tiny_config("t5");
  c.text.t5.feed_forward_proj = "relu";
  c.text.t5.is_gated_act = false;
  c.text.t5.dense_act_fn = "relu";
  c.text.t5.tie_word_embeddings = true;
  expect_cached_decoding_matches_full_forward(c);
}

TEST(Blip2ModelTest, CrossAttentionOnlyOnConfiguredLayers) {
  auto c = test::tiny_config("opt");
  c.qformer.num_hidden_layers = 5;
  c.qformer.cross_attention_frequency = 2;
  Blip2Model m(c, Blip2Parts{});
  std::vector<bool> has;
  for (const auto& l : *m->qformer->layer) has.push_back(l->as<QFormerLayerImpl>()->has_cross_attention());
  EXPECT_EQ(has, (std::vector<bool>{true, false, true, false, true}));
}

TEST(Blip2ModelTest, ImageTokenSlotsGiveTheSameLogitsAsConcatenation) {
  torch::NoGradGuard g;
  auto c = test::tiny_config("opt");
  auto legacy = make(c);
  auto c2 = c;
  c2.image_token_index = 55;
  Blip2Model slots(c2, Blip2Parts{});
  for (auto& p : slots->named_parameters()) p.value().set_data(legacy->named_parameters()[p.key()].clone());
  slots->eval();
  auto pixels = torch::randn({2, 3, 12, 12});
  auto ids = torch::randint(3, 40, {2, 3}, torch::kLong);
  auto with_slots = torch::cat({torch::full({2, c.num_query_tokens}, 55, torch::kLong), ids}, 1);
  auto a = legacy->forward(pixels, ids, {}).lm.logits;
  auto b = slots->forward(pixels, with_slots, {}).lm.logits;
  EXPECT_TRUE(torch::allclose(a, b, 1e-5, 1e-5));
  // A wrong number of image tokens is an input error.
  auto bad = torch::cat({torch::full({2, 2}, 55, torch::kLong), ids}, 1);
  EXPECT_THROW_WITH(slots->forward(pixels, bad, {}), InputError, "exactly num_query_tokens=5 image tokens");
}

TEST(Blip2ModelTest, RetrievalHeadsHaveThePaperShapes) {
  torch::NoGradGuard g;
  auto c = test::tiny_config("opt");
  auto m = make(c, Blip2Parts{false, true});
  auto pixels = torch::randn({3, 3, 12, 12});
  auto ids = torch::randint(1, 50, {2, 6}, torch::kLong);
  auto itc = m->itc(pixels, ids, {});
  EXPECT_EQ(itc.image_embeds.sizes(), (std::vector<int64_t>{3, 5, 8}));
  EXPECT_EQ(itc.logits_per_image.sizes(), (std::vector<int64_t>{3, 2}));
  EXPECT_TRUE(torch::allclose(itc.image_embeds.norm(2, -1), torch::ones({3, 5}), 1e-5, 1e-5));
  // Similarity is the max over queries of the per-query cosine.
  auto per_query = torch::einsum("iqe,te->iqt", {itc.image_embeds, itc.text_embeds});
  EXPECT_TRUE(torch::allclose(itc.logits_per_image, std::get<0>(per_query.max(1)), 1e-6, 1e-6));
  auto pix2 = pixels.slice(0, 0, 2);
  auto itm = m->itm(pix2, ids, {});
  EXPECT_EQ(itm.logits.sizes(), (std::vector<int64_t>{2, 2}));
  EXPECT_EQ(itm.qformer_last_hidden_state.sizes(), (std::vector<int64_t>{2, 11, 16}));
  EXPECT_THROW_WITH(m->generate(pix2, ids, {}, {}), InputError, "retrieval model");
}

TEST(Blip2ModelTest, PaddedTextDoesNotChangeItcTextFeatures) {
  torch::NoGradGuard g;
  auto m = make(test::tiny_config("opt"), Blip2Parts{false, true});
  auto ids = torch::randint(1, 50, {1, 4}, torch::kLong);
  auto padded = torch::cat({ids, torch::zeros({1, 3}, torch::kLong)}, 1);
  auto mask = torch::cat({torch::ones({1, 4}, torch::kLong), torch::zeros({1, 3}, torch::kLong)}, 1);
  auto a = m->text_features(ids, {}).first.select(1, 0);
  auto b = m->text_features(padded, mask).first.select(1, 0);
  // -10000 masking (HF) leaves ~exp(-10000) leakage: equal in float32.
  EXPECT_TRUE(torch::allclose(a, b, 1e-6, 1e-6));
}

TEST(Blip2ModelTest, WrongPixelShapeIsAnInputErrorWithTheExpectedShape) {
  auto m = make(test::tiny_config("opt"));
  EXPECT_THROW_WITH(m->encode_image(torch::randn({2, 4, 12, 12})), InputError,
                    "[VisionEncoder] pixel_values must be (*, 3, *, *), got (2, 4, 12, 12)");
  EXPECT_THROW_WITH(m->encode_image(torch::randn({2, 3, 11, 11})), InputError, "multiples of the patch size 3");
  EXPECT_THROW_WITH(m->forward(torch::randn({1, 3, 12, 12}), torch::full({1, 2}, 999, torch::kLong), {}),
                    InputError, "token ids must be in [0, 60)");
}

TEST(Blip2ModelTest, LargerImagesInterpolatePositionEmbeddings) {
  torch::NoGradGuard g;
  auto m = make(test::tiny_config("opt"));
  auto out = m->encode_image(torch::randn({1, 3, 18, 18}));
  EXPECT_EQ(out.last_hidden_state.sizes(), (std::vector<int64_t>{1, 37, 24}));
}

// Inference on many images runs them a few at a time (activations in cache);
// each image's features must not depend on that.
TEST(Blip2ModelTest, ManyImagesRunInChunksWithTheSameResult) {
  auto c = test::tiny_config("opt");
  c.vision.intermediate_size = 1 << 17;  // 1 image per chunk at 12 px (17 tokens)
  auto m = make(c);
  auto& v = m->vision_model;
  const auto px = torch::randn({3, 3, 12, 12});
  torch::NoGradGuard g;
  const auto chunked = v->forward(px).last_hidden_state;            // chunks of one image
  const auto whole = v->forward(px, true).last_hidden_state;        // hidden states asked for: one batch
  ASSERT_EQ(chunked.sizes(), whole.sizes());
  EXPECT_TRUE(torch::allclose(chunked, whole, 1e-5, 1e-5)) << (chunked - whole).abs().max() << " " << whole.abs().max();
  std::vector<torch::Tensor> one_by_one;
  for (int64_t i = 0; i < 3; ++i) one_by_one.push_back(v->features(px.slice(0, i, i + 1)));
  EXPECT_TRUE(torch::allclose(v->features(px), torch::cat(one_by_one), 1e-5, 1e-5));
}

class LoadTest : public ::testing::Test {
 protected:
  void SetUp() override {
    model_ = make(test::tiny_config("opt"));
    test::save_checkpoint(*model_, dir_.path());
  }
  TempDir dir_;
  Blip2Model model_{nullptr};
};

TEST_F(LoadTest, RoundTripsEveryParameterAndMapsF32) {
  LoadReport rep;
  auto loaded = load_blip2(dir_.path(), {}, &rep);
  EXPECT_EQ(rep.tensors, model_->parameters().size());
  EXPECT_EQ(rep.zero_copy, rep.tensors);
  for (const auto& p : model_->named_parameters())
    EXPECT_TRUE(torch::equal(p.value(), loaded->named_parameters()[p.key()])) << p.key();
  EXPECT_FALSE(loaded->is_training());
}

TEST_F(LoadTest, BFloat16LoadConvertsAndStillRuns) {
  LoadOptions o;
  o.dtype = torch::kBFloat16;
  LoadReport rep;
  auto m = load_blip2(dir_.path(), o, &rep);
  EXPECT_EQ(rep.zero_copy, 0u);
  EXPECT_EQ(m->query_tokens.scalar_type(), torch::kBFloat16);
  torch::NoGradGuard g;
  auto out = m->forward(torch::randn({1, 3, 12, 12}).to(torch::kBFloat16), torch::ones({1, 2}, torch::kLong), {});
  EXPECT_EQ(out.lm.logits.size(2), 60);
}

// How --dtype bfloat16 runs on a CPU: matrices in bf16, everything else and
// the arithmetic in float32. It must equal a float32 model whose matrices
// were rounded to bf16 (the widened path is exact float32 arithmetic).
TEST(Bf16OnCpuTest, Bf16WeightsComputeInFloat32AsTheRoundedFloat32Model) {
  nn::set_bf16_gemm(nn::Bf16Gemm::kWidened);
  for (const std::string lm : {"opt", "t5"}) {
    SCOPED_TRACE(lm);
    TempDir dir;
    test::save_checkpoint(*make(test::tiny_config(lm)), dir.path());
    LoadOptions o;
    o.dtype = torch::kBFloat16;
    o.compute_dtype = torch::kFloat;
    auto m = load_blip2(dir.path(), o);
    EXPECT_EQ(m->query_tokens.scalar_type(), torch::kFloat);
    EXPECT_EQ(m->language_projection->weight.scalar_type(), torch::kBFloat16);
    EXPECT_EQ(m->language_projection->bias.scalar_type(), torch::kFloat);
    auto ref = load_blip2(dir.path());
    torch::NoGradGuard g;
    for (auto& mod : ref->modules()) {
      if (auto* l = mod->as<nn::LinearImpl>()) l->weight.copy_(l->weight.to(torch::kBFloat16).to(torch::kFloat));
      if (auto* e = mod->as<nn::EmbeddingImpl>()) e->weight.copy_(e->weight.to(torch::kBFloat16).to(torch::kFloat));
    }
    const auto px = torch::randn({2, 3, 12, 12});
    const auto ids = torch::tensor({{1, 5, 7}, {1, 9, 3}}, torch::kLong);
    const auto dec = m->language_model->is_encoder_decoder() ? ids : torch::Tensor();
    const auto a = m->forward(px, ids, torch::ones_like(ids), dec).lm.logits;
    const auto b = ref->forward(px, ids, torch::ones_like(ids), dec).lm.logits;
    EXPECT_EQ(a.scalar_type(), torch::kFloat);
    EXPECT_TRUE(torch::allclose(a, b, 1e-4, 1e-4)) << (a - b).abs().max().item<double>();
    GenerationConfig gc;
    gc.max_new_tokens = gc.min_new_tokens = 5;
    EXPECT_TRUE(torch::equal(m->generate(px, {}, {}, gc).sequences, ref->generate(px, {}, {}, gc).sequences));
  }
  nn::set_bf16_gemm(nn::Bf16Gemm::kAuto);
}

// Hostile or mismatched config values are refused before any module is
// built: no 10^9-layer stacks, no 10^12-row embeddings (issue 12).
TEST_F(LoadTest, ConfigSizesBeyondTheCheckpointAreRefusedBeforeBuilding) {
  const std::string path = dir_.file("config.json");
  std::stringstream orig;
  orig << std::ifstream(path).rdbuf();
  const auto base = nlohmann::json::parse(orig.str());
  struct Case {
    std::vector<std::string> key;
    double value;
    std::string expect;
  };
  const std::vector<Case> cases = {
      {{"vision_config", "num_hidden_layers"}, 1e9, "vision_config.num_hidden_layers is 1000000000 but the checkpoint"},
      {{"qformer_config", "num_hidden_layers"}, 1e9, "qformer_config.num_hidden_layers is 1000000000"},
      {{"text_config", "num_hidden_layers"}, 1099511627776.0, "text_config.num_hidden_layers is 1099511627776"},
      {{"text_config", "vocab_size"}, 1e12, "imply at least"},
      {{"num_query_tokens"}, 1e9, "imply at least"},
      {{"vision_config", "intermediate_size"}, 1e9, "imply at least"},
  };
  for (const auto& c : cases) {
    auto j = base;
    if (c.key.size() == 1)
      j[c.key[0]] = static_cast<int64_t>(c.value);
    else
      j[c.key[0]][c.key[1]] = static_cast<int64_t>(c.value);
    std::ofstream(path) << j.dump();
    const auto t0 = std::chrono::steady_clock::now();
    EXPECT_THROW_WITH(load_blip2(dir_.path()), ConfigError, c.expect);
    EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 5.0) << c.expect;
  }
  std::ofstream(path) << orig.str();
  EXPECT_NO_THROW(load_blip2(dir_.path()));
}

TEST_F(LoadTest, WrongShapeNamesTheTensorTheFileAndBothShapes) {
  auto store = io::TensorStore::open(dir_.path());
  std::vector<std::pair<std::string, at::Tensor>> ts;
  for (const auto& n : store.names()) ts.emplace_back(n, store.get(n).clone());
  for (auto& [n, t] : ts)
    if (n == "query_tokens") t = torch::zeros({1, 4, 16});
  io::save_safetensors(dir_.file("model.safetensors"), ts);
  EXPECT_THROW_WITH(load_blip2(dir_.path()), CheckpointError,
                    "tensor 'query_tokens' in " + dir_.file("model.safetensors") +
                        " has shape [1, 4, 16] but the config expects [1, 5, 16]");
}

TEST_F(LoadTest, MissingAndUnexpectedTensorsAreListed) {
  auto store = io::TensorStore::open(dir_.path());
  std::vector<std::pair<std::string, at::Tensor>> ts;
  for (const auto& n : store.names())
    if (n != "language_projection.bias") ts.emplace_back(n, store.get(n).clone());
  io::save_safetensors(dir_.file("model.safetensors"), ts);
  EXPECT_THROW_WITH(load_blip2(dir_.path()), CheckpointError, "lacks 1 tensor(s) the config needs: language_projection.bias");
  ts.emplace_back("language_projection.bias", torch::zeros({20}));
  ts.emplace_back("qformer.encoder.layer.9.output.dense.weight", torch::zeros({1}));
  io::save_safetensors(dir_.file("model.safetensors"), ts);
  EXPECT_THROW_WITH(load_blip2(dir_.path()), CheckpointError, "qformer.encoder.layer.9.output.dense.weight");
}

TEST_F(LoadTest, SeparateQAndVBiasesAreMergedIntoQkvBias) {
  auto store = io::TensorStore::open(dir_.path());
  std::vector<std::pair<std::string, at::Tensor>> ts;
  const std::string qkv = "vision_model.encoder.layers.1.self_attn.qkv.bias";
  auto full = store.get(qkv).clone();
  full.slice(0, 24, 48).zero_();  // K bias is zero by construction in BLIP-2's ViT
  for (const auto& n : store.names())
    if (n != qkv) ts.emplace_back(n, store.get(n).clone());
  ts.emplace_back("vision_model.encoder.layers.1.self_attn.q_bias", full.slice(0, 0, 24).clone());
  ts.emplace_back("vision_model.encoder.layers.1.self_attn.v_bias", full.slice(0, 48, 72).clone());
  io::save_safetensors(dir_.file("model.safetensors"), ts);
  auto m = load_blip2(dir_.path());
  EXPECT_TRUE(torch::equal(m->named_parameters()[qkv], full));
}

TEST_F(LoadTest, ConfigThatDoesNotMatchTheCheckpointIsCaught) {
  auto c = model_->config();
  c.qformer.num_hidden_layers = 2;
  std::ofstream(dir_.file("config.json")) << c.to_json_string();
  EXPECT_THROW_WITH(load_blip2(dir_.path()), CheckpointError, "does not use");
}

TEST_F(LoadTest, CheckpointPositionsAreInterpolatedToALargerConfiguredImageSize) {
  // The checkpoint was made at 12 px (4 x 4 patches); the config asks for 18 px (6 x 6).
  auto c = model_->config();
  c.vision.image_size = 18;
  std::ofstream(dir_.file("config.json")) << c.to_json_string();
  auto m = load_blip2(dir_.path());
  EXPECT_EQ(m->vision_model->embeddings->position_embedding.sizes(), (std::vector<int64_t>{1, 37, 24}));
  // The class position is kept; the grid is a smooth resize (same corner-ish values, same mean).
  auto old = model_->vision_model->embeddings->position_embedding;
  auto now = m->vision_model->embeddings->position_embedding;
  EXPECT_TRUE(torch::equal(now.slice(1, 0, 1), old.slice(1, 0, 1)));
  EXPECT_NEAR(now.slice(1, 1).mean().item<double>(), old.slice(1, 1).mean().item<double>(), 0.05);
  torch::NoGradGuard g;
  EXPECT_EQ(m->encode_image(torch::randn({1, 3, 18, 18})).last_hidden_state.size(1), 37);
}

TEST_F(LoadTest, TruncatedWeightsFileIsACheckpointError) {
  std::filesystem::resize_file(dir_.file("model.safetensors"), 4000);
  EXPECT_THROW_WITH(load_blip2(dir_.path()), CheckpointError, "truncated");
}

}  // namespace
}  // namespace blip2
