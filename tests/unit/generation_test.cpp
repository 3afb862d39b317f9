// Generation logic against a fake bigram language model whose next-token
// logits depend only on the last token: every expected sequence and score
// can be worked out by hand.
#include "blip2/model/generation.h"

#include <limits>

#include "blip2/lm/language_model.h"
#include "blip2/util/error.h"
#include "test_util.h"

namespace blip2 {
namespace {

constexpr int64_t kV = 6, kPad = 0, kEos = 5;

class BigramLm : public LanguageModel {
 public:
  // first: logits of the first token; table[t]: logits after token t.
  BigramLm(std::vector<float> first, std::vector<std::vector<float>> table)
      : first_(torch::tensor(first)), table_(torch::zeros({kV, kV})) {
    for (int64_t i = 0; i < kV; ++i) table_[i] = torch::tensor(table[static_cast<size_t>(i)]);
  }
  LmFamily family() const override { return LmFamily::kOpt; }
  bool is_encoder_decoder() const override { return false; }
  int64_t bos_token_id() const override { return kPad; }
  int64_t eos_token_id() const override { return kEos; }
  int64_t pad_token_id() const override { return kPad; }
  std::optional<int64_t> context_length() const override { return std::nullopt; }
  std::string vqa_template() const override { return "{}"; }
  bool is_tied_copy(const std::string&) const override { return false; }
  bool keeps_float(const std::string&) const override { return false; }
  void init_reference_weights() override {}
  torch::Tensor decoder_input_ids(const torch::Tensor&) const override { return {}; }
  int64_t hidden_size() const override { return 2; }
  int64_t vocab_size() const override { return kV; }
  torch::Tensor embed_tokens(const torch::Tensor& ids) override { return torch::zeros({ids.size(0), ids.size(1), 2}); }
  LMOutput forward(const torch::Tensor&, const torch::Tensor&, const torch::Tensor&, bool) override { return {}; }
  struct State : DecodeState {};
  std::unique_ptr<DecodeState> start(const torch::Tensor& e, const torch::Tensor&, torch::Tensor* next) override {
    *next = first_.unsqueeze(0).expand({e.size(0), kV}).clone();
    return std::make_unique<State>();
  }
  torch::Tensor step(DecodeState&, const torch::Tensor& tokens) override { return table_.index_select(0, tokens); }
  void select(DecodeState&, const torch::Tensor&) override {}
  std::vector<int64_t> decoder_prefix() const override { return {}; }
  // Log-probability of a whole sequence (no EOS appended).
  double logprob(const std::vector<int64_t>& seq) const {
    double s = 0;
    torch::Tensor logits = first_;
    for (auto t : seq) {
      s += logits.log_softmax(0)[t].item<double>();
      logits = table_[t];
    }
    return s;
  }

 private:
  torch::Tensor first_, table_;
};

// 1 -> 2 -> 3 -> 4 -> EOS is the greedy chain; 3 prefers going back to 1.
BigramLm chain() {
  return BigramLm({0, 5, 1, 0, 0, 0},
                  {{0, 0, 0, 0, 0, 0},
                   {0, 0, 6, 1, 0, 0},
                   {0, 1, 0, 6, 0, 0},
                   {0, 3, 0, 0, 2.5, 0},
                   {0, 0, 0, 0, 0, 7},
                   {0, 0, 0, 0, 0, 0}});
}

std::vector<int64_t> row(const torch::Tensor& t, int64_t r) {
  auto x = t[r].contiguous();
  return std::vector<int64_t>(x.data_ptr<int64_t>(), x.data_ptr<int64_t>() + x.numel());
}

torch::Tensor prompt(int64_t n = 1) { return torch::zeros({n, 1, 2}); }
torch::Tensor mask(int64_t n = 1) { return torch::ones({n, 1}, torch::kLong); }

TEST(GenerationTest, GreedyFollowsTheArgmaxChainAndStopsAtEos) {
  auto lm = chain();
  GenerationConfig g;
  g.num_beams = 1;
  g.max_new_tokens = 10;
  g.output_logits = true;
  auto out = generate(lm, prompt(2), mask(2), g, kEos, kPad);
  // 1 2 3 then 3 -> 1 (logit 3) beats 4 (2.5): the chain loops 1 2 3 1 2 3 ...
  EXPECT_EQ(row(out.sequences, 0), (std::vector<int64_t>{1, 2, 3, 1, 2, 3, 1, 2, 3, 1}));
  EXPECT_EQ(out.step_logits.sizes(), (std::vector<int64_t>{2, 10, kV}));
}

TEST(GenerationTest, RepetitionPenaltyBreaksTheLoop) {
  auto lm = chain();
  GenerationConfig g;
  g.num_beams = 1;
  g.max_new_tokens = 6;
  g.repetition_penalty = 2.0;  // after 1 2 3: logit of 1 (3) becomes 1.5 < 2.5 of token 4
  auto out = generate(lm, prompt(), mask(), g, kEos, kPad);
  EXPECT_EQ(row(out.sequences, 0), (std::vector<int64_t>{1, 2, 3, 4, 5}));
}

TEST(GenerationTest, NoRepeatNgramForbidsRepeatingABigram) {
  auto lm = chain();
  GenerationConfig g;
  g.num_beams = 1;
  g.max_new_tokens = 6;
  g.no_repeat_ngram_size = 2;
  auto out = generate(lm, prompt(), mask(), g, kEos, kPad);
  // 1 2 3 1, then "1 2" again is forbidden: after 1 the next best is 3.
  EXPECT_EQ(row(out.sequences, 0), (std::vector<int64_t>{1, 2, 3, 1, 3, 4}));
}

TEST(GenerationTest, MinNewTokensDelaysEosAndFinishedRowsArePadded) {
  // Token 4 is best first and EOS best after it.
  // After 3, EOS (2) beats 4 (1).
  auto lm = BigramLm({0, 0, 0, 1, 3, 0}, {{0, 0, 0, 0, 0, 0}, {0, 0, 0, 0, 0, 0}, {0, 0, 0, 0, 0, 0},
                                          {0, 0, 0, 0, 1, 2}, {0, 0, 0, 2, 0, 4}, {0, 0, 0, 0, 0, 0}});
  GenerationConfig g;
  g.num_beams = 1;
  g.max_new_tokens = 4;
  EXPECT_EQ(row(generate(lm, prompt(), mask(), g, kEos, kPad).sequences, 0), (std::vector<int64_t>{4, 5}));
  // EOS is masked for the first 3 tokens: 4, 3 (not EOS), 4 (not EOS), then EOS.
  g.min_new_tokens = 3;
  EXPECT_EQ(row(generate(lm, prompt(), mask(), g, kEos, kPad).sequences, 0), (std::vector<int64_t>{4, 3, 4, 5}));
  // eos_token_id override: 4 now ends the text at once.
  g.min_new_tokens = 0;
  g.eos_token_id = 4;
  EXPECT_EQ(row(generate(lm, prompt(), mask(), g, kEos, kPad).sequences, 0), (std::vector<int64_t>{4}));
  // Rows finish independently; a finished row is padded with pad_token_id.
  auto two = BigramLm({0, 0, 0, 1, 3, 0}, {{0, 0, 0, 0, 0, 0}, {0, 0, 0, 0, 0, 0}, {0, 0, 0, 0, 0, 0},
                                           {0, 0, 0, 0, 1, 2}, {0, 0, 0, 2, 0, 4}, {0, 0, 0, 0, 0, 0}});
  GenerationConfig s;
  s.num_beams = 1;
  s.do_sample = true;
  s.top_k = 2;
  s.temperature = 0.3;
  s.max_new_tokens = 4;
  s.seed = 1;
  auto out = generate(two, prompt(8), mask(8), s, kEos, kPad).sequences;
  for (int64_t r = 0; r < out.size(0); ++r) {
    bool ended = false;
    for (auto t : row(out, r)) {
      if (ended) EXPECT_EQ(t, kPad) << "row " << r;
      ended = ended || t == kEos;
    }
  }
}

TEST(GenerationTest, BeamScoresAreLengthNormalisedLogProbsAndSorted) {
  auto lm = chain();
  GenerationConfig g;
  g.num_beams = 3;
  g.num_return_sequences = 3;
  g.max_new_tokens = 5;
  auto out = generate(lm, prompt(), mask(), g, kEos, kPad);
  ASSERT_EQ(out.sequences.size(0), 3);
  double prev = 1e9;
  for (int64_t r = 0; r < 3; ++r) {
    auto seq = row(out.sequences, r);
    // The stored hypothesis excludes EOS; its score divides by the generated length.
    std::vector<int64_t> body;
    for (auto t : seq) {
      if (t == kEos) break;
      body.push_back(t);
    }
    const bool ended = body.size() < seq.size();
    const double lp = lm.logprob(body) + (ended ? lm.logprob([&] {
                                           auto b = body;
                                           b.push_back(kEos);
                                           return b;
                                         }()) - lm.logprob(body)
                                                : 0.0);
    const double len = static_cast<double>(body.size() + (ended ? 1 : 0));
    EXPECT_NEAR(out.sequences_scores[r].item<double>(), lp / len, 1e-5) << r;
    EXPECT_LE(out.sequences_scores[r].item<double>(), prev + 1e-9);
    prev = out.sequences_scores[r].item<double>();
  }
}

TEST(GenerationTest, SamplingIsReproducibleBySeedAndTopKOneIsGreedy) {
  auto lm = chain();
  GenerationConfig g;
  g.num_beams = 1;
  g.do_sample = true;
  g.max_new_tokens = 8;
  g.temperature = 3.0;
  g.top_k = 0;
  g.seed = 7;
  auto a = generate(lm, prompt(4), mask(4), g, kEos, kPad).sequences;
  auto b = generate(lm, prompt(4), mask(4), g, kEos, kPad).sequences;
  EXPECT_TRUE(torch::equal(a, b));
  g.seed = 8;
  auto c = generate(lm, prompt(4), mask(4), g, kEos, kPad).sequences;
  EXPECT_FALSE(torch::equal(a, c.slice(1, 0, std::min(a.size(1), c.size(1)))) && a.sizes() == c.sizes());
  g.top_k = 1;
  g.num_return_sequences = 2;
  auto greedy_like = generate(lm, prompt(), mask(), g, kEos, kPad).sequences;
  EXPECT_EQ(greedy_like.size(0), 2);
  EXPECT_EQ(row(greedy_like, 1), (std::vector<int64_t>{1, 2, 3, 1, 2, 3, 1, 2}));
}

TEST(GenerationTest, TokenCallbackSeesEachGreedyStepAndCanStopARow) {
  auto lm = chain();
  GenerationConfig g;
  g.num_beams = 1;
  g.max_new_tokens = 6;
  g.repetition_penalty = 2.0;  // 1 2 3 4 EOS
  std::vector<std::vector<int64_t>> seen(2);
  g.on_tokens = [&seen](int64_t r, const std::vector<int64_t>& tokens) {
    EXPECT_EQ(tokens.size(), 1u);
    seen[static_cast<size_t>(r)].push_back(tokens[0]);
    return !(r == 1 && seen[1].size() == 2);  // row 1 asks to stop after two tokens
  };
  auto out = generate(lm, prompt(2), mask(2), g, kEos, kPad);
  EXPECT_EQ(seen[0], (std::vector<int64_t>{1, 2, 3, 4, 5}));  // EOS reported, nothing after it
  EXPECT_EQ(row(out.sequences, 0), (std::vector<int64_t>{1, 2, 3, 4, 5}));
  EXPECT_EQ(seen[1], (std::vector<int64_t>{1, 2}));
  EXPECT_EQ(row(out.sequences, 1), (std::vector<int64_t>{1, 2, kPad, kPad, kPad}));
}

TEST(GenerationTest, BeamCallbackGetsTheChosenSequencesOnceAndSameOutput) {
  auto lm = chain();
  GenerationConfig g;
  g.num_beams = 3;
  g.num_return_sequences = 2;
  g.max_new_tokens = 5;
  const auto plain = generate(lm, prompt(2), mask(2), g, kEos, kPad).sequences;
  std::vector<std::vector<int64_t>> final_tokens(4);
  int polls = 0;
  g.on_tokens = [&](int64_t r, const std::vector<int64_t>& tokens) {
    if (tokens.empty()) {
      ++polls;
    } else {
      EXPECT_TRUE(final_tokens[static_cast<size_t>(r)].empty()) << "row " << r << " reported twice";
      final_tokens[static_cast<size_t>(r)] = tokens;
    }
    return true;
  };
  const auto streamed = generate(lm, prompt(2), mask(2), g, kEos, kPad).sequences;
  EXPECT_TRUE(torch::equal(plain, streamed));
  EXPECT_GT(polls, 0);
  for (int64_t r = 0; r < 4; ++r) {
    auto seq = row(streamed, r);
    while (!seq.empty() && seq.back() == kPad) seq.pop_back();
    EXPECT_EQ(final_tokens[static_cast<size_t>(r)], seq) << "row " << r;
  }
  // An input whose rows all ask to stop ends early; the other is unchanged.
  g.on_tokens = [](int64_t r, const std::vector<int64_t>&) { return r >= 2; };
  const auto half = generate(lm, prompt(2), mask(2), g, kEos, kPad).sequences;
  auto trimmed = [](std::vector<int64_t> v) {
    while (!v.empty() && v.back() == kPad) v.pop_back();
    return v;
  };
  EXPECT_EQ(trimmed(row(half, 2)), trimmed(row(plain, 2)));
  EXPECT_EQ(trimmed(row(half, 3)), trimmed(row(plain, 3)));
}

TEST(GenerationTest, TopPKeepsTheSmallestSetAboveTheMass) {
  // First-token logits give probabilities ~ (0, .64, .24, .09, .03, 0): top_p 0.5 keeps only token 1.
  auto lm = BigramLm({-50, 3, 2, 1, 0, -50}, std::vector<std::vector<float>>(kV, std::vector<float>(kV, 0)));
  GenerationConfig g;
  g.num_beams = 1;
  g.do_sample = true;
  g.top_k = 0;
  g.top_p = 0.5;
  g.max_new_tokens = 1;
  for (uint64_t s = 0; s < 20; ++s) {
    g.seed = s;
    EXPECT_EQ(generate(lm, prompt(), mask(), g, kEos, kPad).sequences[0][0].item<int64_t>(), 1);
  }
}

TEST(GenerationTest, NonFiniteLogitsAreAnErrorNotACaption) {
  // A NaN row after token 2 (as NaN weights give): greedy and beam search
  // stop with an error naming the step instead of emitting tokens.
  const float nan = std::numeric_limits<float>::quiet_NaN();
  auto lm = BigramLm({0, 5, 1, 0, 0, 0}, {{0, 0, 0, 0, 0, 0},
                                          {0, 0, 6, 1, 0, 0},
                                          {nan, nan, nan, nan, nan, nan},
                                          {0, 0, 0, 0, 0, 7},
                                          {0, 0, 0, 0, 0, 7},
                                          {0, 0, 0, 0, 0, 0}});
  for (int64_t beams : {1, 3}) {
    GenerationConfig g;
    g.num_beams = beams;
    g.max_new_tokens = 6;
    EXPECT_THROW_WITH(generate(lm, prompt(), mask(), g, kEos, kPad), CheckpointError, "are not finite");
  }
  auto inf = BigramLm({0, std::numeric_limits<float>::infinity(), 0, 0, 0, 0}, std::vector<std::vector<float>>(6, std::vector<float>(6, 0)));
  GenerationConfig g;
  g.num_beams = 1;
  EXPECT_THROW_WITH(generate(inf, prompt(), mask(), g, kEos, kPad), CheckpointError, "generation step 0");
}

TEST(GenerationTest, ImpossibleOptionsAreNamed) {
  auto lm = chain();
  GenerationConfig g;
  g.num_beams = 2;
  g.num_return_sequences = 3;
  EXPECT_THROW_WITH(generate(lm, prompt(), mask(), g, kEos, kPad), ConfigError, "num_return_sequences (3)");
  GenerationConfig h;
  h.max_new_tokens = 0;
  EXPECT_THROW_WITH(generate(lm, prompt(), mask(), h, kEos, kPad), ConfigError, "max_new_tokens");
  GenerationConfig e;
  e.eos_token_id = 99;
  EXPECT_THROW_WITH(generate(lm, prompt(), mask(), e, kEos, kPad), ConfigError, "eos_token_id 99");
  GenerationConfig t;
  t.do_sample = true;
  t.temperature = 0;
  EXPECT_THROW_WITH(generate(lm, prompt(), mask(), t, kEos, kPad), ConfigError, "temperature");
}

}  // namespace
}  // namespace blip2
