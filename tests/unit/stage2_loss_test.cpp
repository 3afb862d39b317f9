// Stage-2 objectives of train/losses beyond the plain LM loss: the T5
// prefix LM's empty-prefix fraction and the query-embedding regulariser.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>

#include "blip2/data/spm_runtime.h"
#include "blip2/data/text_batch.h"
#include "blip2/data/tokenizer.h"
#include "blip2/train/losses.h"
#include "blip2/train/train_config.h"
#include "blip2/train/trainer.h"
#include "blip2/util/error.h"
#include "e2e_util.h"
#include "model_fixtures.h"
#include "test_util.h"

namespace blip2 {
namespace {

// The T5 caption start (issue 11): with objective.empty_prefix = 1 the prefix
// LM keeps every caption whole (empty prefix: the decoder starts the
// caption), exactly lm_loss with empty encoder texts; with 0 the split point
// is drawn and the loss differs for some draw.
// A small T5 (SentencePiece) tokenizer trained into `dir`.
std::unique_ptr<Tokenizer> t5_tokenizer(const test::TempDir& dir) {
  {
    std::ofstream f(dir.file("corpus.txt"));
    for (int i = 0; i < 200; ++i) f << "a small red circle above a large blue square number " << i * 7919 % 1000 << "\n";
  }
  SpmModel::train("--input=" + dir.file("corpus.txt") + " --model_prefix=" + dir.file("spiece") +
                  " --vocab_size=60 --model_type=unigram --character_coverage=1.0 --pad_id=0 --eos_id=1"
                  " --unk_id=2 --bos_id=-1 --hard_vocab_limit=false");
  std::filesystem::remove(dir.file("corpus.txt"));
  std::filesystem::remove(dir.file("spiece.vocab"));
  std::ofstream(dir.file("tokenizer_config.json")) << R"({"tokenizer_class": "T5Tokenizer", "extra_ids": 0})";
  return load_tokenizer(dir.path());
}

// The context slots' share of context_distance written out: over the
// layers (entries 1.. of the hidden states), the squared distance of the
// student to the teacher at the first Q positions of the rows in `rows`,
// over the teacher's squared norm there.
double slot_share_by_hand(const std::vector<torch::Tensor>& student, const std::vector<torch::Tensor>& teacher,
                          int64_t Q, int64_t rows) {
  double total = 0;
  for (size_t l = 1; l < student.size(); ++l) {
    const auto s = student[l].slice(0, 0, rows).slice(1, 0, Q), t = teacher[l].slice(0, 0, rows).slice(1, 0, Q);
    total += ((s - t).pow(2).mean(-1).sum() / t.pow(2).mean(-1).sum()).item<double>();
  }
  return total / static_cast<double>(student.size() - 1);
}

// A tiny BLIP-2 with its language model (vocabulary 100), random weights
// drawn with `seed`, in eval mode; queries > 0 sets the number of queries.
Blip2Model lm_model(const std::string& lm, uint64_t seed, int64_t queries = 0) {
  auto mc = test::tiny_config(lm);
  (lm == "t5" ? mc.text.t5.vocab_size : mc.text.opt.vocab_size) = 100;
  if (queries > 0) mc.num_query_tokens = queries;
  Blip2Parts parts;
  parts.language = true;
  Blip2Model m(mc, parts);
  test::randomize(*m, seed);
  m->eval();
  return m;
}

TEST(Stage2LossTest, EmptyPrefixFractionKeepsCaptionsWhole) {
  test::TempDir dir;
  auto tok = t5_tokenizer(dir);
  auto m = lm_model("t5", 4);
  const auto& mc = m->config();
  torch::NoGradGuard g;
  const auto pixels = torch::randn({2, 3, mc.vision.image_size, mc.vision.image_size});
  const std::vector<std::string> captions{"a small red circle above a large blue square", "a large blue square"};
  Stage2Text text;
  text.tokenizer = tok.get();
  text.empty_prefix = 1;
  torch::Generator gen = at::detail::createCPUGenerator(3);
  const auto whole = caption_lm_loss(*m, pixels, captions, text, gen);
  const int64_t pad = m->language_model->pad_token_id();
  auto [ids, mask] = tokenize_batch(*tok, {"", ""}, 32, pad);
  auto [tgt, tmask] = tokenize_batch(*tok, captions, 32, pad);
  const auto want = lm_loss(*m, pixels, ids, mask, tgt.masked_fill(tmask == 0, -100)).loss;
  EXPECT_NEAR(whole.item<double>(), want.item<double>(), 1e-6);
  text.empty_prefix = 0;
  bool differs = false;
  for (uint64_t seed = 0; seed < 10 && !differs; ++seed) {
    torch::Generator g2 = at::detail::createCPUGenerator(seed);
    differs = std::abs(caption_lm_loss(*m, pixels, captions, text, g2).item<double>() - want.item<double>()) > 1e-4;
  }
  EXPECT_TRUE(differs) << "without empty_prefix the captions are split at drawn words";
  EXPECT_THROW_WITH(TrainConfig::from_yaml_string("stage: 2\nobjective:\n  empty_prefix: 1.5\n", "s.yaml"), ConfigError,
                    "objective.empty_prefix must be a fraction");
  EXPECT_THROW_WITH(TrainConfig::from_yaml_string("stage: 1\nobjective:\n  empty_prefix: 0.5\n", "s.yaml"), ConfigError,
                    "stage-2 option");
  EXPECT_EQ(TrainConfig::from_yaml_string("stage: 2\nobjective:\n  empty_prefix: 0.25\n", "s.yaml").empty_prefix, 0.25);
}

// The stage-2 regulariser (issue 11): zero for queries that are token
// embeddings, positive off them, added to the OPT caption loss with its
// weight, and its gradient moves queries toward the embeddings.
TEST(Stage2LossTest, QueryEmbeddingDistancePullsQueriesTowardTokenEmbeddings) {
  test::TempDir dir;
  test::write_opt_tokenizer(dir.path());
  auto tok = load_tokenizer(dir.path());
  auto m = lm_model("opt", 6);
  const auto& mc = m->config();
  auto& lm = *m->language_model;
  const int64_t V = tok->vocab_size();
  const auto E = lm.embed_tokens(torch::arange(V, torch::kLong).unsqueeze(0)).squeeze(0).detach();
  const auto on = E.index_select(0, torch::tensor({1, 5, 7}, torch::kLong)).unsqueeze(0);  // (1, 3, D)
  EXPECT_NEAR(query_embedding_distance(lm, on, V).item<double>(), 0.0, 1e-5);
  const auto off = on + 0.5 * torch::randn_like(on);
  EXPECT_GT(query_embedding_distance(lm, off, V).item<double>(), 1e-3);

  const auto pixels = torch::randn({2, 3, mc.vision.image_size, mc.vision.image_size});
  const std::vector<std::string> captions{"a red circle", "a blue square below"};
  Stage2Text text;
  text.tokenizer = tok.get();
  torch::Generator gen = at::detail::createCPUGenerator(1);
  double plain, reg, dist;
  {
    torch::NoGradGuard g;
    plain = caption_lm_loss(*m, pixels, captions, text, gen).item<double>();
    text.query_embed_reg = 0.3;
    reg = caption_lm_loss(*m, pixels, captions, text, gen).item<double>();
    auto [ids, mask] = tokenize_batch(*tok, captions, 32, lm.pad_token_id());
    dist = query_embedding_distance(lm, m->forward(pixels, ids, mask).language_projection, V).item<double>();
  }
  EXPECT_GT(dist, 0.0);
  EXPECT_NEAR(reg, plain + 0.3 * dist, 1e-5);

  auto q = off.clone().requires_grad_(true);
  torch::optim::SGD sgd({q}, torch::optim::SGDOptions(0.5));
  const double before = query_embedding_distance(lm, q, V).item<double>();
  for (int i = 0; i < 20; ++i) {
    sgd.zero_grad();
    query_embedding_distance(lm, q, V).backward();
    sgd.step();
  }
  EXPECT_LT(query_embedding_distance(lm, q, V).item<double>(), before / 2);
  EXPECT_THROW_WITH(TrainConfig::from_yaml_string("stage: 2\nobjective:\n  query_embed_reg: -1\n", "s.yaml"),
                    ConfigError, "objective.query_embed_reg must be >= 0");
}

// Context distillation (issue 11): zero when the queries are the caption's
// own context slot (its token embeddings, zeros after them), positive
// otherwise; added to the OPT caption loss with its weight; its gradient
// moves the queries toward acting like the caption; a bad weight is
// refused. (T5: the next test.)
TEST(Stage2LossTest, ContextDistanceIsZeroForTheCaptionsOwnContext) {
  test::TempDir dir;
  test::write_opt_tokenizer(dir.path());
  auto tok = load_tokenizer(dir.path());
  auto m = lm_model("opt", 8, 12);
  const auto& mc = m->config();
  auto& lm = *m->language_model;
  const int64_t Q = mc.num_query_tokens, pad = lm.pad_token_id();
  // The test tokenizer's tokens are mostly single characters: the third
  // caption is longer than the queries and has no teacher.
  const std::vector<std::string> captions{"a red dot", "blue sq", "a large green triangle on the left"};
  auto [ids, mask] = tokenize_batch(*tok, captions, 32, pad);
  // A student run of the LM with `queries` in front of the captions' text.
  auto run = [&](const torch::Tensor& queries) {
    Blip2ForwardOutput f;
    f.language_projection = queries;
    f.inputs_embeds = torch::cat({queries, lm.embed_tokens(ids)}, 1);
    f.attention_mask = torch::cat({torch::ones({3, Q}, mask.options()), mask}, 1);
    f.lm = lm.forward(f.inputs_embeds, f.attention_mask, {}, true);
    return f;
  };
  ASSERT_GT(static_cast<int64_t>(tok->encode(captions[2], false).size()), Q);
  auto own = torch::zeros({3, Q, lm.hidden_size()});  // the third row: not its caption (left out)
  for (int64_t b = 0; b < 2; ++b) {
    const auto row = tok->encode(captions[static_cast<size_t>(b)], false);
    ASSERT_LE(static_cast<int64_t>(row.size()), Q);
    own[b].slice(0, 0, static_cast<int64_t>(row.size())) =
        lm.embed_tokens(torch::tensor(row, torch::kLong).unsqueeze(0)).squeeze(0).detach();
  }
  {
    torch::NoGradGuard g;
    EXPECT_NEAR(context_distance(lm, run(own), mask, captions, *tok, pad).item<double>(), 0.0, 1e-6);
    // The other caption's context: the text after it is read differently.
    const auto swapped = torch::cat({own.slice(0, 1, 2), own.slice(0, 0, 1), own.slice(0, 2)}, 0);
    EXPECT_GT(context_distance(lm, run(swapped), mask, captions, *tok, pad).item<double>(), 1e-3);
    // The context slots' share: zero for the captions' own slots, linear in
    // its weight on top of the text positions' distance for another's.
    auto slots = [&](const torch::Tensor& queries, double w) {
      return context_distance(lm, run(queries), mask, captions, *tok, pad, {}, {}, 0, false, w).item<double>();
    };
    EXPECT_NEAR(slots(own, 2.0), 0.0, 1e-6);
    EXPECT_GT(slots(swapped, 1) - slots(swapped, 0), 1e-3);
    EXPECT_NEAR(slots(swapped, 2) - slots(swapped, 0), 2 * (slots(swapped, 1) - slots(swapped, 0)), 1e-5);
    // By hand, at the Q query positions of the two rows whose captions fit
    // (the teacher: the captions' own slots).
    EXPECT_NEAR(slots(swapped, 1) - slots(swapped, 0),
                slot_share_by_hand(run(swapped).lm.hidden_states, run(own).lm.hidden_states, Q, 2), 1e-5);
  }

  auto q = (0.05 * torch::randn({3, Q, lm.hidden_size()})).requires_grad_(true);
  torch::optim::Adam adam({q}, torch::optim::AdamOptions(0.02));
  const double before = context_distance(lm, run(q), mask, captions, *tok, pad).item<double>();
  for (int i = 0; i < 60; ++i) {
    adam.zero_grad();
    context_distance(lm, run(q), mask, captions, *tok, pad).backward();
    adam.step();
  }
  EXPECT_LT(context_distance(lm, run(q), mask, captions, *tok, pad).item<double>(), before / 2);

  const auto pixels = torch::randn({3, 3, mc.vision.image_size, mc.vision.image_size});
  Stage2Text text;
  text.tokenizer = tok.get();
  torch::Generator gen = at::detail::createCPUGenerator(1);
  torch::NoGradGuard g;
  const double plain = caption_lm_loss(*m, pixels, captions, text, gen).item<double>();
  text.context_distill = 0.5;
  const double with = caption_lm_loss(*m, pixels, captions, text, gen).item<double>();
  std::vector<std::string> texts;
  for (const auto& c : captions) texts.push_back(c + "\n");
  auto [cids, cmask] = tokenize_batch(*tok, texts, 32, pad);
  const double d = context_distance(lm, m->forward(pixels, cids, cmask, {}, true), cmask, captions, *tok, pad)
                       .item<double>();
  EXPECT_GT(d, 0.0);
  EXPECT_NEAR(with, plain + 0.5 * d, 1e-5);
  text.context_distill_slots = 1.5;
  const double with_slots = caption_lm_loss(*m, pixels, captions, text, gen).item<double>();
  const double ds = context_distance(lm, m->forward(pixels, cids, cmask, {}, true), cmask, captions, *tok, pad, {}, {},
                                     0, false, 1.5)
                        .item<double>();
  EXPECT_GT(ds, d);
  EXPECT_NEAR(with_slots, plain + 0.5 * ds, 1e-5);

  EXPECT_THROW_WITH(TrainConfig::from_yaml_string("stage: 2\nobjective:\n  context_distill: -1\n", "s.yaml"),
                    ConfigError, "objective.context_distill must be >= 0");
  EXPECT_THROW_WITH(TrainConfig::from_yaml_string("stage: 1\nobjective:\n  context_distill: 1\n", "s.yaml"),
                    ConfigError, "stage-2 option");
  EXPECT_EQ(TrainConfig::from_yaml_string("stage: 2\nobjective:\n  context_distill: 2\n", "s.yaml").context_distill, 2);
}

// Context distillation for T5 (prefix LM): the teacher reads the caption's
// tokens right before the encoder text (masked padding in front); zero when
// the queries are exactly that, positive for another caption's; added to
// the prefix-LM loss with its weight. With an encoder weight the encoder's
// states at the text positions count too: the queries here have two slots
// more than the longest caption, so the student's text starts later than
// the teacher's and a term that compared them at the same index would not
// be zero for the captions' own context. With `fill` the teacher reads the
// caption, then zero vectors up to the queries' count.
TEST(Stage2LossTest, ContextDistanceForT5ComparesTheDecoderStates) {
  test::TempDir dir;
  auto tok = t5_tokenizer(dir);
  const std::vector<std::string> captions{"a red circle", "a small blue square above"};
  const auto rows = std::vector<std::vector<int64_t>>{tok->encode(captions[0], false), tok->encode(captions[1], false)};
  const auto Q = static_cast<int64_t>(std::max(rows[0].size(), rows[1].size())) + 2;
  ASSERT_NE(rows[0].size(), rows[1].size());
  auto m = lm_model("t5", 5, Q);
  const auto& mc = m->config();
  auto& lm = *m->language_model;
  const int64_t pad = lm.pad_token_id();
  torch::NoGradGuard g;
  auto [ids, mask] = tokenize_batch(*tok, {"a", "a small"}, 32, pad);
  auto [tgt, tmask] = tokenize_batch(*tok, {"red circle", "blue square above"}, 32, pad);
  const auto labels = tgt.masked_fill(tmask == 0, -100);
  const auto dec = lm.decoder_input_ids(labels);
  // Each row's caption, right-aligned in the Q query slots (masked in front).
  auto own = torch::zeros({2, Q, lm.hidden_size()});
  auto own_mask = torch::zeros({2, Q}, mask.options());
  for (int64_t b = 0; b < 2; ++b) {
    const auto& r = rows[static_cast<size_t>(b)];
    const auto n = static_cast<int64_t>(r.size());
    own[b].slice(0, Q - n) = lm.embed_tokens(torch::tensor(r, torch::kLong).unsqueeze(0)).squeeze(0);
    own_mask[b].slice(0, Q - n).fill_(1);
  }
  auto run = [&](const torch::Tensor& queries, const torch::Tensor& qmask) {
    Blip2ForwardOutput f;
    f.language_projection = queries;
    f.inputs_embeds = torch::cat({queries, lm.embed_tokens(ids)}, 1);
    f.attention_mask = torch::cat({qmask, mask}, 1);
    f.lm = lm.forward(f.inputs_embeds, f.attention_mask, dec, true);
    return f;
  };
  const auto where = labels != -100;
  EXPECT_NEAR(context_distance(lm, run(own, own_mask), mask, captions, *tok, pad, dec, where).item<double>(), 0.0,
              1e-6);
  EXPECT_GT(context_distance(lm, run(own.flip({0}), own_mask.flip({0})), mask, captions, *tok, pad, dec, where)
                .item<double>(),
            1e-3);
  EXPECT_NEAR(context_distance(lm, run(own, own_mask), mask, captions, *tok, pad, dec, where, 3.0).item<double>(),
              0.0, 1e-6);
  {
    // The encoder's share: positive for another caption's context, and
    // weighted linearly on top of the decoder's.
    const auto swapped = run(own.flip({0}), own_mask.flip({0}));
    auto d = [&](double w) {
      return context_distance(lm, swapped, mask, captions, *tok, pad, dec, where, w).item<double>();
    };
    EXPECT_GT(d(1) - d(0), 1e-3);
    EXPECT_NEAR(d(2) - d(0), 2 * (d(1) - d(0)), 1e-5);
  }
  {
    // The filled teacher: each caption's tokens from the first slot, then zero
    // vectors, every slot attended. Zero for exactly that context (both
    // parts), not for the masked layout above.
    auto filled = torch::zeros({2, Q, lm.hidden_size()});
    for (int64_t b = 0; b < 2; ++b) {
      const auto& r = rows[static_cast<size_t>(b)];
      filled[b].slice(0, 0, static_cast<int64_t>(r.size())) =
          lm.embed_tokens(torch::tensor(r, torch::kLong).unsqueeze(0)).squeeze(0);
    }
    const auto all = torch::ones({2, Q}, mask.options());
    EXPECT_NEAR(context_distance(lm, run(filled, all), mask, captions, *tok, pad, dec, where, 1.0, true).item<double>(),
                0.0, 1e-6);
    EXPECT_GT(context_distance(lm, run(own, own_mask), mask, captions, *tok, pad, dec, where, 1.0, true).item<double>(),
              1e-3);
    EXPECT_GT(context_distance(lm, run(filled, all), mask, captions, *tok, pad, dec, where, 1.0).item<double>(), 1e-3);
    // The context slots' share (the encoder's states at the Q query
    // positions): zero for the filled context; a change to one zero filler
    // slot alone shows in it, as its definition computed by hand says.
    auto slots = [&](const torch::Tensor& queries, double w) {
      return context_distance(lm, run(queries, all), mask, captions, *tok, pad, dec, where, 0, true, w).item<double>();
    };
    EXPECT_NEAR(slots(filled, 2.0), 0.0, 1e-6);
    auto moved = filled.clone();
    moved[0][Q - 1] = lm.embed_tokens(torch::tensor({rows[0][0]}, torch::kLong).unsqueeze(0)).squeeze(0).squeeze(0);
    EXPECT_GT(slots(moved, 1) - slots(moved, 0), 1e-4);
    // By hand, over the encoder's layers at the Q query positions.
    EXPECT_NEAR(slots(moved, 1) - slots(moved, 0),
                slot_share_by_hand(run(moved, all).lm.encoder_hidden_states,
                                   run(filled, all).lm.encoder_hidden_states, Q, 2),
                1e-5);
    EXPECT_NEAR(slots(moved, 3) - slots(moved, 0), 3 * (slots(moved, 1) - slots(moved, 0)), 1e-5);
    EXPECT_THROW_WITH(context_distance(lm, run(filled, all), mask, captions, *tok, pad, dec, where, 0, false, 1.0),
                      InputError, "only with the filled teacher");
  }
  EXPECT_THROW_WITH(context_distance(lm, run(own, own_mask), mask, captions, *tok, pad), InputError,
                    "its decoder inputs");
  {
    torch::AutoGradMode grad(true);
    auto q = own.flip({0}).clone().requires_grad_(true);
    context_distance(lm, run(q, own_mask.flip({0})), mask, captions, *tok, pad, dec, where).backward();
    ASSERT_TRUE(q.grad().defined());
    EXPECT_GT(q.grad().abs().sum().item<double>(), 0.0);
  }

  // In the prefix-LM loss: whole captions (empty_prefix 1), so the split is known.
  const auto pixels = torch::randn({2, 3, mc.vision.image_size, mc.vision.image_size});
  Stage2Text text;
  text.tokenizer = tok.get();
  text.empty_prefix = 1;
  torch::Generator gen = at::detail::createCPUGenerator(2);
  const double plain = caption_lm_loss(*m, pixels, captions, text, gen).item<double>();
  text.context_distill = 0.5;
  const double with = caption_lm_loss(*m, pixels, captions, text, gen).item<double>();
  auto [eids, emask] = tokenize_batch(*tok, {"", ""}, 32, pad);
  auto [ctgt, ctmask] = tokenize_batch(*tok, captions, 32, pad);
  const auto clabels = ctgt.masked_fill(ctmask == 0, -100);
  const auto cdec = lm.decoder_input_ids(clabels);
  const double d = context_distance(lm, m->forward(pixels, eids, emask, cdec, true), emask, captions, *tok, pad, cdec,
                                    clabels != -100)
                       .item<double>();
  EXPECT_GT(d, 0.0);
  EXPECT_NEAR(with, plain + 0.5 * d, 1e-5);
  text.context_distill_encoder = 2;
  const double with_encoder = caption_lm_loss(*m, pixels, captions, text, gen).item<double>();
  const double de = context_distance(lm, m->forward(pixels, eids, emask, cdec, true), emask, captions, *tok, pad,
                                     cdec, clabels != -100, 2.0)
                        .item<double>();
  EXPECT_GT(de, d);
  EXPECT_NEAR(with_encoder, plain + 0.5 * de, 1e-5);
  text.context_distill_fill = true;
  text.context_distill_slots = 1.5;
  const double with_slots = caption_lm_loss(*m, pixels, captions, text, gen).item<double>();
  const double ds = context_distance(lm, m->forward(pixels, eids, emask, cdec, true), emask, captions, *tok, pad,
                                     cdec, clabels != -100, 2.0, true, 1.5)
                        .item<double>();
  EXPECT_GT(ds, context_distance(lm, m->forward(pixels, eids, emask, cdec, true), emask, captions, *tok, pad, cdec,
                                 clabels != -100, 2.0, true)
                    .item<double>());
  EXPECT_NEAR(with_slots, plain + 0.5 * ds, 1e-5);

  EXPECT_THROW_WITH(
      TrainConfig::from_yaml_string("stage: 2\nobjective:\n  context_distill: 1\n  context_distill_encoder: -1\n",
                                    "s.yaml"),
      ConfigError, "objective.context_distill_encoder must be >= 0");
  EXPECT_THROW_WITH(TrainConfig::from_yaml_string("stage: 2\nobjective:\n  context_distill_encoder: 1\n", "s.yaml"),
                    ConfigError, "set objective.context_distill > 0");
  EXPECT_THROW_WITH(TrainConfig::from_yaml_string("stage: 2\nobjective:\n  context_distill_fill: true\n", "s.yaml"),
                    ConfigError, "set objective.context_distill > 0");
  EXPECT_THROW_WITH(
      TrainConfig::from_yaml_string("stage: 2\nobjective:\n  context_distill: 1\n  context_distill_slots: -1\n",
                                    "s.yaml"),
      ConfigError, "objective.context_distill_slots must be >= 0");
  EXPECT_THROW_WITH(TrainConfig::from_yaml_string("stage: 2\nobjective:\n  context_distill_slots: 1\n", "s.yaml"),
                    ConfigError, "set objective.context_distill > 0");
  EXPECT_EQ(TrainConfig::from_yaml_string("stage: 2\nobjective:\n  context_distill: 1\n  context_distill_slots: 0.5\n",
                                          "s.yaml")
                .context_distill_slots,
            0.5);
  EXPECT_TRUE(TrainConfig::from_yaml_string("stage: 2\nobjective:\n  context_distill: 1\n  context_distill_fill: true\n",
                                            "s.yaml")
                  .context_distill_fill);
  EXPECT_EQ(TrainConfig::from_yaml_string("stage: 2\nobjective:\n  context_distill: 1\n  context_distill_encoder: 0.5\n",
                                          "s.yaml")
                .context_distill_encoder,
            0.5);
}

// The T5 teacher's two options are refused for a decoder-only LM (its
// distillation already compares the text positions after a filled context)
// and accepted for T5; the context slots' share is accepted for both, for T5
// only with the filled teacher.
TEST(Stage2LossTest, EachLmFamilyRefusesTheTeacherOptionsItCannotUse) {
  test::TempDir dir, t5_dir;
  test::write_opt_tokenizer(dir.path());
  t5_tokenizer(t5_dir);
  TrainConfig c;
  c.stage = 2;
  c.context_distill = 1;
  c.output_dir = dir.file("out");
  for (const bool fill : {false, true}) {
    c.context_distill_encoder = fill ? 0 : 0.5;
    c.context_distill_fill = fill;
    c.lm_tokenizer = dir.path();
    EXPECT_THROW_WITH(Trainer(c, lm_model("opt", 1)), ConfigError,
                      fill ? "objective.context_distill_fill is for encoder-decoder LMs"
                           : "objective.context_distill_encoder is for encoder-decoder LMs");
    c.lm_tokenizer = t5_dir.path();
    EXPECT_NO_THROW(Trainer(c, lm_model("t5", 1)));
  }
  // The context slots' share: either family, T5 only with the filled teacher.
  c.context_distill_encoder = 0;
  c.context_distill_slots = 1;
  for (const bool fill : {false, true}) {
    c.context_distill_fill = fill;
    if (fill)
      EXPECT_NO_THROW(Trainer(c, lm_model("t5", 1)));
    else
      EXPECT_THROW_WITH(Trainer(c, lm_model("t5", 1)), ConfigError, "set objective.context_distill_fill: true");
  }
  c.context_distill_fill = false;
  c.lm_tokenizer = dir.path();
  EXPECT_NO_THROW(Trainer(c, lm_model("opt", 1)));
}

}  // namespace
}  // namespace blip2
