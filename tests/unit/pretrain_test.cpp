// Pretraining of the shapes world's unimodal models (issue 5): a tiny OPT, a
// tiny T5 and a tiny ViT learn, and what they save loads into a Blip2Model
// under the names BLIP-2 training expects.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <numeric>
#include <random>

#include "blip2/data/image.h"
#include "blip2/data/image_processor.h"
#include "blip2/shapes/shapes.h"
#include "blip2/data/spm_runtime.h"
#include "blip2/data/tokenizer.h"
#include "blip2/io/tensor_store.h"
#include "blip2/model/blip2_model.h"
#include "blip2/shapes/lm_pretrain.h"
#include "blip2/train/losses.h"
#include "blip2/train/trainer.h"
#include "blip2/shapes/vit_pretrain.h"
#include "blip2/data/text_batch.h"
#include "blip2/shapes/text_vqa.h"
#include "blip2/data/tokenizer_train.h"
#include "blip2/util/error.h"
#include "e2e_util.h"
#include "model_fixtures.h"
#include "test_util.h"

namespace blip2 {
namespace {

using test::TempDir;

double mean_of(const std::vector<double>& v, size_t from, size_t to) {
  return std::accumulate(v.begin() + static_cast<long>(from), v.begin() + static_cast<long>(to), 0.0) /
         static_cast<double>(to - from);
}

std::vector<std::string> captions() {
  return {"a red circle above a blue square", "a green star left of a red circle",
          "a small blue square",              "a large yellow star",
          "a red circle",                     "a blue square below a green star"};
}

// Plain texts and texts with a context slot (shapes corpus lines).
std::vector<LmText> corpus() {
  std::vector<LmText> t;
  for (const auto& c : captions()) t.push_back({"", "", c});
  t.push_back(parse_lm_text("a red circle\t\ta red circle", "test"));
  t.push_back(parse_lm_text("a large yellow star\tQuestion: what color is the star? Answer:\tyellow", "test"));
  return t;
}

// A tiny OPT's pretraining config with a character-level tokenizer written to dir.
LmPretrainConfig tiny_opt_pretraining(const TempDir& dir) {
  test::write_opt_tokenizer(dir.path());
  auto mc = test::tiny_config("opt");
  mc.text.opt.vocab_size = 100;
  LmPretrainConfig c;
  c.text = mc.text;
  c.tokenizer_dir = dir.path();
  return c;
}

TEST(PretrainTest, CorpusLinesParseIntoContextPromptTarget) {
  auto t = parse_lm_text("a red circle\tQuestion: what shape? Answer:\tcircle", "c.txt:3");
  EXPECT_EQ(t.context, "a red circle");
  EXPECT_EQ(t.prompt, "Question: what shape? Answer:");
  EXPECT_EQ(t.target, "circle");
  t = parse_lm_text("just a text", "c.txt:1");
  EXPECT_EQ(t.context, "");
  EXPECT_EQ(t.target, "just a text");
  EXPECT_THROW_WITH(parse_lm_text("a\tb", "c.txt:7"), InputError, "c.txt:7");
  EXPECT_THROW_WITH(parse_lm_text("a\tb\t ", "c.txt:8"), InputError, "target text is empty");
}

OptimConfig fast_optim(int64_t steps, double lr) {
  OptimConfig o;
  o.lr = lr;
  o.min_lr = lr * 0.1;
  o.warmup_lr = lr * 0.1;
  o.warmup_steps = 5;
  o.total_steps = steps;
  o.weight_decay = 0.0;
  return o;
}

// tiny_opt_pretraining on corpus(): batches of 8, rows of up to 40 tokens,
// lr 1e-2, seed 3.
LmPretrainConfig tiny_opt_on_corpus(const TempDir& dir, int64_t steps) {
  LmPretrainConfig c = tiny_opt_pretraining(dir);
  c.texts = corpus();
  c.steps = steps;
  c.batch_size = 8;
  c.max_len = 40;
  c.optim = fast_optim(steps, 1e-2);
  c.seed = 3;
  return c;
}

// Loads `dir`'s model.safetensors into a fresh Blip2Model and checks the LM
// gives the pretrained model's logits.
void expect_loads_identically(const Blip2Config& mc, LanguageModel& lm, const std::string& dir,
                              const Tokenizer& tok) {
  Blip2Model m(mc, Blip2Parts{});
  LoadOptions o;
  o.prefix = "language_model.";
  o.only = {"language_model."};
  o.strict = false;
  load_weights(*m, io::TensorStore::open(dir + "/model.safetensors"), o);
  m->eval();
  torch::NoGradGuard g;
  const int64_t pad = m->language_model->pad_token_id();
  auto [ids, mask] = tokenize_batch(tok, {"a red circle", "a blue square below"}, 32, pad);
  torch::Tensor dec;
  if (m->language_model->is_encoder_decoder())
    dec = shift_right(tokenize_batch(tok, {"above a star", "a star"}, 32, pad).first, 0, pad);
  auto a = lm.forward(lm.embed_tokens(ids), mask, dec, false).logits;
  auto b = m->language_model->forward(m->language_model->embed_tokens(ids), mask, dec, false).logits;
  EXPECT_TRUE(torch::equal(a, b)) << (a - b).abs().max().item<double>();
}

TEST(PretrainTest, TinyOptLearnsAndLoadsIntoBlip2) {
  TempDir dir, out;
  LmPretrainConfig c = tiny_opt_on_corpus(dir, 60);
  auto mc = test::tiny_config("opt");
  mc.text = c.text;
  int64_t calls = 0;
  auto r = pretrain_language_model(c, [&](int64_t step, double) { EXPECT_EQ(step, ++calls); });
  ASSERT_EQ(r.losses.size(), 60u);
  EXPECT_EQ(calls, 60);
  const double first = mean_of(r.losses, 0, 5), last = mean_of(r.losses, 55, 60);
  std::cout << "[pretrain] OPT loss " << first << " -> " << last << "\n";
  EXPECT_LT(last, first - 1.5);

  // Deterministic per seed.
  c.steps = 3;
  auto r1 = pretrain_language_model(c), r2 = pretrain_language_model(c);
  EXPECT_EQ(r1.losses, r2.losses);

  save_language_model(*r.model, out.path(), dir.path());
  EXPECT_TRUE(std::filesystem::exists(out.file("vocab.json")));
  auto names = io::load_safetensors(out.file("model.safetensors"));
  EXPECT_TRUE(names.count("model.decoder.embed_tokens.weight"));
  auto tok = load_tokenizer(out.path());
  expect_loads_identically(mc, *r.model, out.path(), *tok);

  // init_dir: a next phase starts where the saved model ended, not from scratch.
  c.init_dir = out.path();
  const auto next = pretrain_language_model(c).losses;
  std::cout << "[pretrain] OPT continued from its save: first loss " << next.front() << "\n";
  EXPECT_LT(next.front(), first - 1.0);
  auto wider = c;
  wider.text.opt.hidden_size *= 2;
  wider.text.opt.word_embed_proj_dim = wider.text.opt.hidden_size;
  EXPECT_THROW_WITH(pretrain_language_model(wider), CheckpointError, "another shape");
  c.reference_init = true;
  EXPECT_THROW_WITH(pretrain_language_model(c), ConfigError, "drop one of the two");
  c.reference_init = false;
  c.init_dir = out.file("missing");
  EXPECT_THROW(pretrain_language_model(c), Error);
}

TEST(PretrainTest, TextVqaReadsTheCaptionWhereTheLmLearnedTo) {
  // An OPT that memorised the shapes corpus of six scenes answers their
  // questions when evaluate_text_vqa lays the caption and prompt out as the
  // pretraining did (context, BOS, prompt); the corpus of (n, seed) describes
  // exactly the train split generate_split(n, seed) renders.
  TempDir data, tok_dir, lm_dir;
  shapes::generate_split(data.path(), shapes::Split::kTrain, 6, 3, 32);
  const auto lines = shapes::corpus_lines(6, 3, "Question: {} Answer:");
  std::vector<std::string> fields;
  for (const auto& l : lines)
    for (auto& f : text::split_fields(l, '\t')) fields.push_back(std::move(f));
  TokenizerTrainOptions to;
  to.kind = "bpe";
  to.vocab_size = 160;
  const auto rep = train_tokenizer(fields, tok_dir.path(), to);
  auto mc = test::tiny_config("opt");
  mc.text.opt.vocab_size = rep.vocab_size;
  mc.text.opt.eos_token_id = 4;  // "\n" ends texts (the shapes OPT config)
  mc.text.opt.max_position_embeddings = 64;
  LmPretrainConfig c;
  c.text = mc.text;
  c.tokenizer_dir = tok_dir.path();
  for (size_t i = 0; i < lines.size(); ++i) c.texts.push_back(parse_lm_text(lines[i], "corpus"));
  c.steps = 300;
  c.batch_size = 16;
  c.max_len = 64;
  c.optim = fast_optim(c.steps, 1e-2);
  auto r = pretrain_language_model(c);
  save_language_model(*r.model, lm_dir.path(), tok_dir.path());

  EvalOptions o;
  o.batch_size = 4;
  o.has_generation = true;
  o.generation.num_beams = 1;
  o.generation.max_new_tokens = 4;
  const auto m = evaluate_text_vqa(lm_dir.path(), mc.text, data.path(), o);
  const auto qs = nlohmann::json::parse(std::ifstream(data.file("questions.json")));
  EXPECT_EQ(m.at("count").get<size_t>(), qs.size());
  std::cout << "[pretrain] text VQA accuracy of a memorising OPT " << m.at("accuracy") << " (loss "
            << r.losses.back() << ")\n";
  EXPECT_GT(m.at("accuracy").get<double>(), 0.6);
  EXPECT_THROW_WITH(evaluate_text_vqa(tok_dir.path(), mc.text, data.path(), o), Error, "model.safetensors");
}

// Context-slot augmentation (issue 11): noise, mixing, dropped positions and
// fillers change the batches only when set, keep the run deterministic, and
// the LM still learns its texts through the perturbed context.
TEST(PretrainTest, ContextAugmentPerturbsTheContextOnlyWhenSetAndStillLearns) {
  TempDir dir;
  LmPretrainConfig c = tiny_opt_pretraining(dir);
  for (int i = 0; i < 3; ++i)  // weight the context rows up
    for (const auto& t : corpus())
      if (!t.context.empty()) c.texts.push_back(t);
  c.steps = 3;
  c.batch_size = 8;
  c.max_len = 40;
  c.optim = fast_optim(60, 1e-2);
  c.seed = 3;
  const auto plain = pretrain_language_model(c).losses;
  for (const ContextAugment a : {ContextAugment{0.5, 0, 0, 0}, ContextAugment{0, 0.3, 0, 0},
                                 ContextAugment{0, 0, 0.3, 0}, ContextAugment{0, 0, 0, 12}}) {
    c.context = a;
    const auto r1 = pretrain_language_model(c).losses, r2 = pretrain_language_model(c).losses;
    EXPECT_EQ(r1, r2) << "deterministic per seed";
    EXPECT_NE(r1, plain) << "noise " << a.noise << " mix " << a.mix << " drop " << a.drop << " fill " << a.fill_to;
  }
  c.context = ContextAugment{0.5, 0.3, 0.1, 12};
  c.steps = 60;
  const auto r = pretrain_language_model(c);
  const double first = mean_of(r.losses, 0, 5), last = mean_of(r.losses, 55, 60);
  std::cout << "[pretrain] OPT loss with context augmentation " << first << " -> " << last << "\n";
  EXPECT_LT(last, first - 1.5);

  c.steps = 1;
  c.context = ContextAugment{-0.1, 0, 0, 0};
  EXPECT_THROW_WITH(pretrain_language_model(c), ConfigError, "context.noise");
  c.context = ContextAugment{0, 1.5, 0, 0};
  EXPECT_THROW_WITH(pretrain_language_model(c), ConfigError, "context.mix");
  c.context = ContextAugment{0, 0, 1, 0};
  EXPECT_THROW_WITH(pretrain_language_model(c), ConfigError, "context.drop");
  c.context = ContextAugment{0, 0, 0, -1};
  EXPECT_THROW_WITH(pretrain_language_model(c), ConfigError, "context.fill_to");
}

// target_only (issue 11): the OPT predicts each text's target alone. Contexts
// and prompts of random letters (each text drawn about once, so they cannot be
// memorised) and the same target everywhere: with target_only the loss falls
// to near zero, while the plain loss stays near the letters' entropy.
TEST(PretrainTest, TargetOnlyPredictsTheTargetAlone) {
  TempDir dir;
  LmPretrainConfig c = tiny_opt_pretraining(dir);
  std::mt19937 g(5);
  auto letters = [&](int n) {
    std::string s;
    for (int i = 0; i < n; ++i) s += static_cast<char>('a' + g() % 16);
    return s;
  };
  // The prompt ends in a random letter: a target that began one token early
  // would have to predict it, and its loss would stay far above 0.1.
  for (int i = 0; i < 4000; ++i) c.texts.push_back({letters(8), letters(4), "ok"});
  c.steps = 80;
  c.batch_size = 16;
  c.max_len = 40;
  c.optim = fast_optim(c.steps, 1e-2);
  c.seed = 3;
  const auto plain = pretrain_language_model(c).losses;
  c.target_only = true;
  const auto only = pretrain_language_model(c).losses;
  std::cout << "[pretrain] last losses: plain " << mean_of(plain, 70, 80) << ", target only "
            << mean_of(only, 70, 80) << "\n";
  EXPECT_GT(mean_of(plain, 70, 80), 1.5);  // log 16 = 2.77 per random letter, most of the tokens
  EXPECT_LT(mean_of(only, 70, 80), 0.1);
  EXPECT_GT(only.front(), 3.0) << "the target is predicted: a random model's loss on it is about log 100";
  // The reference initialisation (OPT: normal 0.02, as the default) learns the same way.
  c.reference_init = true;
  EXPECT_EQ(pretrain_language_model(c).losses, only);
}

// Checkpoints (save_every) and resume: a run stopped after its checkpoint and
// resumed gives the losses and the weights of the uninterrupted run, bit for
// bit (model, AdamW moments, the batch sampler and libtorch's generator, which
// the context augmentation draws from, all restored).
TEST(PretrainTest, ResumedRunEqualsTheUninterruptedOne) {
  TempDir dir, ck;
  LmPretrainConfig c = tiny_opt_on_corpus(dir, 12);
  c.context = ContextAugment{0.5, 0.3, 0.1, 12};
  const auto straight = pretrain_language_model(c);

  c.checkpoint_dir = ck.path() + "/checkpoint";
  c.save_every = 4;
  c.resume = true;  // nothing there yet: a fresh start
  struct Stop {};
  EXPECT_THROW(pretrain_language_model(c, [](int64_t step, double) {
                 if (step == 10) throw Stop{};
               }),
               Stop);
  const auto resumed = pretrain_language_model(c);
  EXPECT_EQ(resumed.resumed_from, 8);
  EXPECT_EQ(resumed.losses, straight.losses);
  auto a = straight.model->named_parameters(true), b = resumed.model->named_parameters(true);
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) EXPECT_TRUE(torch::equal(a[i].value(), b[i].value())) << a[i].key();

  // A crash between moving the old checkpoint aside and putting the new one in
  // place leaves "<dir>.prev": it is found.
  std::filesystem::rename(c.checkpoint_dir, c.checkpoint_dir + ".prev");
  const auto from_prev = pretrain_language_model(c);
  EXPECT_EQ(from_prev.resumed_from, 8);  // a fresh start would give the same losses
  EXPECT_EQ(from_prev.losses, straight.losses);

  // Other settings than the checkpoint's name the field; a damaged one says so.
  std::filesystem::rename(c.checkpoint_dir + ".prev", c.checkpoint_dir);
  c.steps = 13;
  EXPECT_THROW_WITH(pretrain_language_model(c), ConfigError, "written with steps 12, this run has 13");
  c.steps = 12;
  c.batch_size = 4;
  EXPECT_THROW_WITH(pretrain_language_model(c), ConfigError, "batch_size");
  c.batch_size = 8;
  std::ofstream(c.checkpoint_dir + "/state.json") << "{\"step\": ";
  EXPECT_THROW_WITH(pretrain_language_model(c), CheckpointError, "state.json' is damaged");
  c.save_every = -1;
  EXPECT_THROW_WITH(pretrain_language_model(c), ConfigError, "save_every must be >= 0");
  c.save_every = 4;
  c.checkpoint_dir.clear();
  EXPECT_THROW_WITH(pretrain_language_model(c), ConfigError, "need a checkpoint_dir");
}

TEST(PretrainTest, TinyT5LearnsPrefixLmAndLoadsIntoBlip2) {
  TempDir dir, out;
  {
    std::ofstream f(dir.file("corpus.txt"));
    for (int i = 0; i < 300; ++i) f << captions()[static_cast<size_t>(i) % 6] << " number " << i * 7919 % 1000 << "\n";
  }
  SpmModel::train("--input=" + dir.file("corpus.txt") + " --model_prefix=" + dir.file("spiece") +
                  " --vocab_size=100 --model_type=unigram --character_coverage=1.0 --pad_id=0 --eos_id=1"
                  " --unk_id=2 --bos_id=-1 --hard_vocab_limit=false");
  std::filesystem::remove(dir.file("corpus.txt"));
  std::filesystem::remove(dir.file("spiece.vocab"));
  std::ofstream(dir.file("tokenizer_config.json")) << R"({"tokenizer_class": "T5Tokenizer", "extra_ids": 0})";
  auto mc = test::tiny_config("t5");
  mc.text.t5.vocab_size = 100;
  LmPretrainConfig c;
  c.text = mc.text;
  c.tokenizer_dir = dir.path();
  c.texts = corpus();
  c.steps = 60;
  c.batch_size = 8;
  c.max_len = 32;
  c.optim = fast_optim(c.steps, 1e-2);
  c.seed = 5;
  auto r = pretrain_language_model(c);
  const double first = mean_of(r.losses, 0, 5), last = mean_of(r.losses, 55, 60);
  std::cout << "[pretrain] T5 loss " << first << " -> " << last << "\n";
  EXPECT_LT(last, first - 1.0);
  {  // the encoder's context slot takes the same augmentation
    LmPretrainConfig a = c;
    a.steps = 3;
    const auto plain = pretrain_language_model(a).losses;
    a.context = ContextAugment{0.5, 0.3, 0.1, 12};
    const auto aug = pretrain_language_model(a).losses;
    EXPECT_NE(aug, plain);
    EXPECT_EQ(pretrain_language_model(a).losses, aug);
  }
  {  // HF's initialisation scales (d_model 20, d_kv 6, 3 heads, d_ff 28), and it learns too
    auto lm = make_language_model(mc.text);
    lm->init_reference_weights();
    const std::map<std::string, double> want = {{"shared.weight", 1.0},
                                                {"lm_head.weight", 1.0},
                                                {"encoder.block.0.layer.0.SelfAttention.q.weight", 1 / std::sqrt(120.0)},
                                                {"encoder.block.0.layer.0.SelfAttention.k.weight", 1 / std::sqrt(20.0)},
                                                {"decoder.block.1.layer.1.EncDecAttention.o.weight", 1 / std::sqrt(18.0)},
                                                {"decoder.block.0.layer.2.DenseReluDense.wo.weight", 1 / std::sqrt(28.0)},
                                                {"encoder.block.1.layer.1.DenseReluDense.wi_0.weight", 1 / std::sqrt(20.0)}};
    const auto params = lm->named_parameters();
    for (const auto& [name, sd] : want) {
      ASSERT_TRUE(params.contains(name)) << name;
      EXPECT_NEAR(params[name].std().item<double>(), sd, 0.25 * sd) << name;
    }
    EXPECT_EQ(params["encoder.final_layer_norm.weight"].min().item<double>(), 1.0);
    LmPretrainConfig a = c;
    a.reference_init = true;
    const auto l = pretrain_language_model(a).losses;
    EXPECT_LT(mean_of(l, 55, 60), mean_of(l, 0, 5) - 1.0);
  }

  save_language_model(*r.model, out.path(), dir.path());
  auto names = io::load_safetensors(out.file("model.safetensors"));
  EXPECT_TRUE(names.count("shared.weight"));
  EXPECT_TRUE(names.count("lm_head.weight"));
  auto tok = load_tokenizer(out.path());
  expect_loads_identically(mc, *r.model, out.path(), *tok);
}

// Issue 11: with the position heads the tokens learn their row and column
// (chance on the 4 x 4 grid: 1/16), and the heads' loss is in the total;
// without them the probe reports no position.
TEST(PretrainTest, TinyVitPositionHeadsNamePatchPositions) {
  TempDir data;
  shapes::generate_split(data.path(), shapes::Split::kTrain, 64, 11, 32);
  auto mc = test::tiny_config("opt");
  mc.vision.image_size = 32;
  mc.vision.patch_size = 8;
  VitPretrainOptions o;
  o.position_head = true;
  auto r = pretrain_vision(mc.vision, data.path(), 150, 16, fast_optim(150, 3e-3), 2, {}, {data.path()}, o);
  ASSERT_EQ(r.probes.size(), 1u);
  std::cout << "[pretrain] ViT patch position " << r.probes[0].position << "\n";
  EXPECT_GT(r.probes[0].position, 0.5);
  EXPECT_LE(r.probes[0].position, 1.0);
  for (size_t i = 0; i < r.losses.size(); ++i) EXPECT_GT(r.losses[i], r.patch_losses[i] + r.count_losses[i] + 1e-6);
  auto plain = pretrain_vision(mc.vision, data.path(), 2, 4, fast_optim(2, 3e-3), 2, {}, {data.path()});
  EXPECT_EQ(plain.probes[0].position, -1);
}

TEST(PretrainTest, TinyVitLearnsShapeAttributesAndLoadsIntoBlip2) {
  TempDir data, out;
  shapes::generate_split(data.path(), shapes::Split::kTrain, 64, 11, 32);
  auto mc = test::tiny_config("opt");
  mc.vision.image_size = 32;
  mc.vision.patch_size = 8;
  auto r = pretrain_vision(mc.vision, data.path(), 40, 16, fast_optim(40, 3e-3), 2, {}, {data.path()});
  ASSERT_EQ(r.patch_losses.size(), 40u);
  const double first = mean_of(r.patch_losses, 0, 3), last = mean_of(r.patch_losses, 35, 40);
  std::cout << "[pretrain] ViT patch loss " << first << " -> " << last << "; total " << mean_of(r.losses, 0, 3)
            << " -> " << mean_of(r.losses, 35, 40) << "\n";
  EXPECT_LT(last, 0.75 * first);
  EXPECT_LT(mean_of(r.losses, 35, 40), mean_of(r.losses, 0, 3));
  ASSERT_EQ(r.probes.size(), 1u);
  EXPECT_GT(r.probes[0].objects, 64);
  EXPECT_GE(r.probes[0].all, 0.0);
  EXPECT_LE(r.probes[0].all, std::min({r.probes[0].shape, r.probes[0].color, r.probes[0].size}));

  save_vision_encoder(*r.model, out.file("vit.safetensors"));
  auto names = io::load_safetensors(out.file("vit.safetensors"));
  EXPECT_TRUE(names.count("vision_model.embeddings.position_embedding"));
  for (const auto& [n, t] : names) EXPECT_EQ(n.rfind("vision_model.", 0), 0u) << n;

  Blip2Model m(mc, Blip2Parts{});
  LoadOptions o;
  o.only = {"vision_model."};
  o.strict = false;
  load_weights(*m, io::TensorStore::open(out.file("vit.safetensors")), o);
  m->eval();
  torch::NoGradGuard g;
  ImageProcessorConfig pc;
  pc.height = pc.width = 32;
  auto px = preprocess(load_image(data.file("images/000000.png")), pc).unsqueeze(0);
  auto a = r.model->forward(px).last_hidden_state, b = m->vision_model->forward(px).last_hidden_state;
  EXPECT_TRUE(torch::equal(a, b));

  // Targets on a 4 x 4 grid of a rendered 32 px scene: a large star centred
  // in patch (1, 1) covers it; a small circle in the top-right corner.
  shapes::Scene sc;
  sc.image_size = 32;
  sc.background = {230, 230, 230};
  sc.objects = {{"star", "orange", "large", 12.0, 12.0, 11.0, {245, 135, 25}},
                {"circle", "red", "small", 28.0, 4.0, 5.0, {220, 40, 40}}};
  nlohmann::json scene = {{"image_size", 32}, {"objects", nlohmann::json::array()}};
  for (const auto& o : sc.objects)
    scene["objects"].push_back({{"shape", o.shape}, {"color", o.color}, {"size", o.size}, {"cx", o.cx},
                                {"cy", o.cy}, {"bbox", o.bbox}, {"rgb", {o.rgb[0], o.rgb[1], o.rgb[2]}}});
  const Image img = shapes::render_scene(sc);
  auto t = shape_patch_targets(scene, img, 4);
  EXPECT_EQ(t.count, 1);
  EXPECT_EQ(t.shape[1 * 4 + 1].item<int64_t>(), 1 + 3);  // star
  EXPECT_EQ(t.color[1 * 4 + 1].item<int64_t>(), 1 + 5);  // orange
  EXPECT_EQ(t.size[1 * 4 + 1].item<int64_t>(), 1 + 1);   // large
  EXPECT_EQ(t.shape[0 * 4 + 3].item<int64_t>(), 1 + 0);  // the circle's centre patch
  EXPECT_EQ(t.shape[3 * 4 + 3].item<int64_t>(), 0);      // background
  EXPECT_EQ(t.shape[3 * 4 + 0].item<int64_t>(), 0);
  EXPECT_EQ(t.centre_patch, (std::vector<int64_t>{1 * 4 + 1, 0 * 4 + 3}));
  // Every patch the star covers by >= 20% is the star's; none is unlabelled
  // far from both objects.
  int64_t star_patches = 0;
  for (int64_t p = 0; p < 16; ++p) star_patches += t.shape[p].item<int64_t>() == 4;
  EXPECT_GE(star_patches, 1);
  EXPECT_LE(star_patches, 4);
  EXPECT_THROW(shape_patch_targets({{"image_size", 32}, {"objects", nlohmann::json::array()}}, img, 4), InputError);
}

// Colour-invariant pretraining (issue 11): the gray copy keeps every object's
// outline and anti-aliased edge, paints it in its own gray level, and leaves
// no colour in the image.
TEST(PretrainTest, GrayCopyKeepsOutlinesAndDropsColour) {
  shapes::Scene sc;
  sc.image_size = 32;
  sc.background = {200, 200, 200};
  sc.objects = {{"star", "orange", "large", 12.0, 12.0, 11.0, {245, 135, 25}},
                {"circle", "blue", "small", 27.0, 5.0, 5.0, {40, 60, 220}}};
  nlohmann::json scene = {{"image_size", 32}, {"background", {200, 200, 200}}, {"objects", nlohmann::json::array()}};
  for (const auto& o : sc.objects)
    scene["objects"].push_back({{"shape", o.shape}, {"color", o.color}, {"size", o.size}, {"cx", o.cx},
                                {"cy", o.cy}, {"bbox", o.bbox}, {"rgb", {o.rgb[0], o.rgb[1], o.rgb[2]}}});
  const Image img = shapes::render_scene(sc);
  const Image gray = gray_scene_copy(scene, img, {40, 120});
  ASSERT_EQ(gray.width, img.width);
  int64_t object_before = 0, object_after = 0, colour_left = 0;
  for (int y = 0; y < 32; ++y)
    for (int x = 0; x < 32; ++x) {
      const uint8_t *a = img.pixel(x, y), *b = gray.pixel(x, y);
      colour_left += !(b[0] == b[1] && b[1] == b[2]);
      object_before += !(a[0] == 200 && a[1] == 200 && a[2] == 200);
      object_after += b[0] != 200;
    }
  EXPECT_EQ(colour_left, 0);
  EXPECT_GT(object_before, 40);
  EXPECT_NEAR(static_cast<double>(object_after), static_cast<double>(object_before), 0.05 * object_before);
  EXPECT_EQ(gray.pixel(12, 12)[0], 40);  // inside the star: its level
  EXPECT_EQ(gray.pixel(27, 5)[0], 120);  // inside the circle
  // An edge pixel keeps its partial coverage: strictly between the two.
  int64_t edges = 0;
  for (int x = 0; x < 32; ++x) edges += gray.pixel(x, 12)[0] > 40 && gray.pixel(x, 12)[0] < 200;
  EXPECT_GE(edges, 1);
  EXPECT_THROW(gray_scene_copy(scene, img, {40}), InputError);

  // Training with half the images gray still learns; the fraction is checked.
  TempDir data;
  shapes::generate_split(data.path(), shapes::Split::kTrain, 32, 5, 32);
  auto mc = test::tiny_config("opt");
  mc.vision.image_size = 32;
  mc.vision.patch_size = 8;
  auto r = pretrain_vision(mc.vision, data.path(), 30, 16, fast_optim(30, 3e-3), 2, {}, {}, {0.5});
  EXPECT_LT(mean_of(r.patch_losses, 25, 30), 0.75 * mean_of(r.patch_losses, 0, 3));
  EXPECT_THROW(pretrain_vision(mc.vision, data.path(), 3, 4, fast_optim(3, 3e-3), 2, {}, {}, {1.5}), ConfigError);
}

}  // namespace
}  // namespace blip2
