// Evaluation metrics against hand-computed values (worked out in the
// comments) and against values from a throwaway re-implementation of the
// reference formulas (pycocoevalcap's cider_scorer.py / bleu_scorer.py, the
// official vqaEval.py normalisation run with Python's own `re`), which is not
// part of the repository.
#include "blip2/eval/metrics.h"

#include <cmath>
#include <string>
#include <vector>

#include "blip2/util/error.h"
#include "test_util.h"

namespace blip2 {
namespace {

using Refs = std::vector<std::vector<std::string>>;

// ---------------------------------------------------------------- tokeniser

TEST(MetricsTest, PtbTokenizeLowerCasesAndDropsPunctuation) {
  EXPECT_EQ(ptb_tokenize("A Large RED circle."), "a large red circle");
  EXPECT_EQ(ptb_tokenize("a small red circle, a large blue star and a small green triangle"),
            "a small red circle a large blue star and a small green triangle");
  EXPECT_EQ(ptb_tokenize("A man's dog, running!"), "a man 's dog running");
  EXPECT_EQ(ptb_tokenize("Don't stop?"), "do n't stop");
  EXPECT_EQ(ptb_tokenize("  \"Hello\"  (she) said;  "), "hello she said");
  EXPECT_EQ(ptb_tokenize("the u.s. flag."), "the u.s. flag");
  EXPECT_EQ(ptb_tokenize("3.5 kg and 1,000 people: 10:30"), "3.5 kg and 1,000 people 10:30");
  EXPECT_EQ(ptb_tokenize("a t-shirt - on -- sale..."), "a t-shirt on sale");
  EXPECT_EQ(ptb_tokenize("the dogs' toys"), "the dogs toys");
  EXPECT_EQ(ptb_tokenize(""), "");
  EXPECT_EQ(split_words(" a\tb\n c "), (std::vector<std::string>{"a", "b", "c"}));
}

// ---------------------------------------------------------------- CIDEr-D

TEST(CiderTest, HandComputedUnigramExample) {
  // max_n = 1, two images, ref_len = log(2).
  //   image 0: candidate "a b", references {"a b"}
  //   image 1: candidate "c",   references {"a d"}
  // df: a = 2 (both images' references), b = 1, d = 1; c unseen -> log(max(1, 0)) = 0.
  // weights w = tf * (log 2 - log df): a -> 0, b -> log 2, d -> log 2, c -> log 2.
  // image 0: hyp = ref = {a: 0, b: log2}; cos = log2^2 / (log2 * log2) = 1;
  //          lengths (bigram counts) are 0 with max_n = 1, penalty 1 -> 1 * 10 = 10.
  // image 1: hyp {c} and ref {a, d} share nothing -> 0.   corpus: (10 + 0) / 2 = 5.
  const CiderResult r = cider_d({"a b", "c"}, Refs{{"a b"}, {"a d"}}, 1);
  EXPECT_DOUBLE_EQ(r.per_image[0], 10.0);
  EXPECT_DOUBLE_EQ(r.per_image[1], 0.0);
  EXPECT_DOUBLE_EQ(r.score, 5.0);
}

TEST(CiderTest, HandComputedFourGramExampleWithLengthPenalty) {
  //   image 0: candidate "x y z", references {"x y z w"}
  //   image 1: candidate "p",     references {"q r"}
  // Every reference n-gram has df = 1, every candidate n-gram df <= 1, so every
  // weight is L = log 2 and the cosines are plain set overlaps:
  //   n=1: 3 shared / (sqrt3 * 2)        = 0.8660254
  //   n=2: 2 shared / (sqrt2 * sqrt3)    = 0.8164966
  //   n=3: 1 shared / (1 * sqrt2)        = 0.7071068
  //   n=4: the candidate has no 4-gram   = 0 (norm 0: left undivided)
  // lengths = bigram counts 2 vs 3 -> penalty exp(-1 / (2 * 36)) = 0.9862071
  // image 0 = mean(...) * penalty * 10 = 0.5974072 * 0.9862071 * 10 = 5.8916722
  // image 1 = 0; corpus 2.9458361.
  const CiderResult r = cider_d({"x y z", "p"}, Refs{{"x y z w"}, {"q r"}});
  const double want0 = (std::sqrt(3.0) / 2 + 2 / std::sqrt(6.0) + 1 / std::sqrt(2.0)) / 4 * std::exp(-1.0 / 72) * 10;
  EXPECT_NEAR(r.per_image[0], want0, 1e-12);
  EXPECT_NEAR(r.per_image[0], 5.89167223826323, 1e-12);  // reference re-implementation
  EXPECT_DOUBLE_EQ(r.per_image[1], 0.0);
  EXPECT_NEAR(r.score, 2.945836119131615, 1e-12);
}

TEST(CiderTest, MatchesReferenceFormulasOnAMixedCorpus) {
  const std::vector<std::string> cands{"a large red circle", "a small blue square to the left of a large green star",
                                       "a red star", "two dogs play in the grass", "a man riding a horse on a beach"};
  const Refs refs{{"a large red circle", "a big red circle"},
                  {"a small blue square to the left of a large green star",
                   "a large green star to the right of a small blue square"},
                  {"a small red circle, a large blue star and a small green triangle"},
                  {"two dogs are playing on the grass", "dogs playing in a field", "a pair of dogs running through grass"},
                  {"a person rides a horse along the beach", "a man on a horse at the shore",
                   "horseback riding on a beach"}};
  const CiderResult r = cider_d(cands, refs);
  const std::vector<double> want{6.407466676260995, 7.620672328259027, 0.21034260370927127, 1.4638349376678306,
                                 2.1759628915599025};
  ASSERT_EQ(r.per_image.size(), want.size());
  for (size_t i = 0; i < want.size(); ++i) EXPECT_NEAR(r.per_image[i], want[i], 1e-9) << i;
  EXPECT_NEAR(r.score, 3.575655887491405, 1e-9);
}

TEST(CiderTest, EmptyCandidateScoresZeroAndLengthCountsBigrams) {
  // From the reference re-implementation: an empty candidate gets 0; a
  // 5-word candidate against a 3-word reference (bigram lengths 4 vs 2).
  const CiderResult r = cider_d({"", "a b c d e"}, Refs{{"a b"}, {"a b c"}});
  EXPECT_DOUBLE_EQ(r.per_image[0], 0.0);
  EXPECT_NEAR(r.per_image[1], 4.096124655118474, 1e-12);
  EXPECT_NEAR(r.score, 2.048062327559237, 1e-12);
}

TEST(CiderTest, RejectsMismatchedOrEmptyReferences) {
  EXPECT_THROW_WITH(cider_d({"a"}, Refs{}), InputError, "1 candidates but 0 reference lists");
  EXPECT_THROW_WITH(cider_d({"a", "b"}, Refs{{"a"}, {}}), InputError, "item 1 has no reference");
  EXPECT_EQ(cider_d({}, Refs{}).score, 0.0);
}

// ---------------------------------------------------------------- BLEU

TEST(BleuTest, HandComputedExample) {
  // candidate "the cat sat on the mat" (6 words)
  // refs "the cat is on the mat" (6), "there is a cat on the mat" (7); closest length 6.
  // clipped matches (max count over refs): 1-grams the:2 cat:1 sat:0 on:1 mat:1 = 5 of 6;
  // 2-grams the-cat, on-the, the-mat = 3 of 5; 3-grams on-the-mat = 1 of 4; 4-grams 0 of 3.
  // BLEU-1 = 5/6, BLEU-2 = sqrt(5/6 * 3/5) = sqrt(1/2), BLEU-3 = (1/8)^(1/3) = 1/2,
  // BLEU-4 = (1/8 * 1e-15/3)^(1/4) = 8.034e-5 (the reference's tiny/small constants).
  // ratio = (6 + 1e-15) / (6 + 1e-9) is just below 1: brevity penalty exp(-1.67e-10).
  const BleuResult r = bleu({"the cat sat on the mat"}, Refs{{"the cat is on the mat", "there is a cat on the mat"}});
  ASSERT_EQ(r.bleu.size(), 4u);
  EXPECT_NEAR(r.bleu[0], 5.0 / 6, 1e-9);
  EXPECT_NEAR(r.bleu[1], std::sqrt(0.5), 1e-9);
  EXPECT_NEAR(r.bleu[2], 0.5, 1e-9);
  EXPECT_NEAR(r.bleu[3], std::pow(0.125 * 1e-15 / 3, 0.25), 1e-12);
  // Reference re-implementation, to the last digits the constants leave.
  EXPECT_NEAR(r.bleu[0], 0.8333333330555557, 1e-15);
  EXPECT_NEAR(r.bleu[1], 0.7071067809390603, 1e-15);
  EXPECT_NEAR(r.bleu[2], 0.49999999981388915, 1e-15);
  EXPECT_NEAR(r.bleu[3], 8.034284186199331e-05, 1e-18);
  EXPECT_EQ(r.testlen, 6);
  EXPECT_EQ(r.reflen, 6);
}

TEST(BleuTest, MatchesReferenceFormulasOnACorpus) {
  const std::vector<std::string> cands{"a large red circle", "a small blue square to the left of a large green star",
                                       "a red star", "two dogs play in the grass", "a man riding a horse on a beach"};
  const Refs refs{{"a large red circle", "a big red circle"},
                  {"a small blue square to the left of a large green star",
                   "a large green star to the right of a small blue square"},
                  {"a small red circle, a large blue star and a small green triangle"},
                  {"two dogs are playing on the grass", "dogs playing in a field", "a pair of dogs running through grass"},
                  {"a person rides a horse along the beach", "a man on a horse at the shore",
                   "horseback riding on a beach"}};
  const BleuResult r = bleu(cands, refs);
  const std::vector<double> want{0.7151609692779628, 0.6236140761869365, 0.5510628431195934, 0.5157885924318297};
  for (int k = 0; k < 4; ++k) EXPECT_NEAR(r.bleu[k], want[k], 1e-12) << "BLEU-" << k + 1;
  EXPECT_EQ(r.testlen, 33);
  EXPECT_EQ(r.reflen, 42);  // closest lengths 4, 11, 12, 7, 8
}

TEST(BleuTest, BrevityPenaltyAndClosestTieTakesTheShorter) {
  // "a cat" vs {"a cat sat here"(4), "a cat"(2)} -> closest 2; "dog" vs
  // {"the dog runs fast"(4), "dog runs"(2)}: |4-1| = 3, |2-1| = 1 -> 2.
  // testlen 3, reflen 4: BP = exp(1 - 4/3) = 0.7165313.
  // 1-grams 3/3, 2-grams 1/1 ("a cat"), 3-grams 0/0 -> (1e-15 / 1e-9) = 1e-6 factor.
  const BleuResult r = bleu({"a cat", "dog"}, Refs{{"a cat sat here", "a cat"}, {"the dog runs fast", "dog runs"}});
  EXPECT_EQ(r.reflen, 4);
  EXPECT_NEAR(r.bleu[0], std::exp(1 - 4.0 / 3), 1e-9);
  EXPECT_NEAR(r.bleu[0], 0.7165313100961022, 1e-12);
  EXPECT_NEAR(r.bleu[1], 0.7165313098572585, 1e-12);
  EXPECT_NEAR(r.bleu[2], 0.007165313100164878, 1e-14);
  EXPECT_NEAR(r.bleu[3], 0.0007165313100961022, 1e-15);
  // A tie in distance (lengths 3 and 5 around 4) picks the shorter one.
  EXPECT_EQ(bleu({"a b c d"}, Refs{{"a b c d e", "a b c"}}).reflen, 3);
}

// ---------------------------------------------------------------- exact match

TEST(MetricsTest, CaptionExactMatchAfterNormalisation) {
  // 1: differs only by case and the final period -> match; 2: matches the
  // second reference up to spacing; 3: wrong colour.
  EXPECT_DOUBLE_EQ(caption_exact_match({"A large red circle.", "a small blue square", "a red star"},
                                       Refs{{"a large red circle"}, {"x", "a small  blue square"}, {"a blue star"}}),
                   2.0 / 3);
  EXPECT_EQ(normalize_caption("A Red,  Star."), "a red star");
  EXPECT_EQ(caption_exact_match({}, Refs{}), 0.0);
}

// ---------------------------------------------------------------- VQA

TEST(VqaTest, OfficialNormalisation) {
  // Expected strings produced by the official processPunctuation /
  // processDigitArticle, run with Python's `re`.
  const std::vector<std::pair<std::string, std::string>> cases{
      {"The Dog.", "dog"},
      {"3.5", "3.5"},
      {"1,000", "1000"},
      {"red, white", "red white"},
      {"yes/no", "yes no"},
      {"dont", "don’t"},
      {"an apple", "apple"},
      {"none", "0"},
      {"ten", "10"},
      {"Two ", "2"},
      {"what's up?", "what s up"},
      {"hello . world", "hello world"},
      {"e.g. this", "eg this"},
      {"  \tYes\n", "yes"},
      {"it's 3 o'clock.", "it s 3 o clock"},
      {"a.b.c", "abc"},
      {std::string(40, '.'), std::string(8, '.')},  // re.sub(..., re.UNICODE): count = 32
      {"(yes)", "yes"},
      {"x=y", "x y"},
      {"2,50 and a/b", "250 and ab"},
  };
  for (const auto& [in, want] : cases) EXPECT_EQ(vqa_normalize_answer(in), want) << "input: " << in;
}

TEST(VqaTest, LeaveOneOutAccuracyWithTenAnswers) {
  auto answers = [](int yes) {
    std::vector<std::string> a(10, "no");
    for (int i = 0; i < yes; ++i) a[i] = "yes";
    return a;
  };
  // k of 10 annotators said "yes". For each of the 10 leave-one-out subsets:
  // dropping a "yes" leaves k-1 matches, dropping another leaves k.
  // k=1: (1*0 + 9*(1/3)) / 10 = 0.3
  // k=2: (2*(1/3) + 8*(2/3)) / 10 = 0.6
  // k=3: (3*(2/3) + 7*1) / 10 = 0.9
  // k=4: every subset has >= 3 matches -> 1
  EXPECT_DOUBLE_EQ(vqa_accuracy("yes", answers(0)), 0.0);
  EXPECT_NEAR(vqa_accuracy("yes", answers(1)), 0.3, 1e-12);
  EXPECT_NEAR(vqa_accuracy("yes", answers(2)), 0.6, 1e-12);
  EXPECT_NEAR(vqa_accuracy("Yes.", answers(3)), 0.9, 1e-12);
  EXPECT_DOUBLE_EQ(vqa_accuracy("yes", answers(4)), 1.0);
  EXPECT_DOUBLE_EQ(vqa_accuracy("yes", answers(10)), 1.0);
}

TEST(VqaTest, FewerThanTenAnswersAreRepeatedToTen) {
  // One answer -> ten copies: exact match after normalisation.
  EXPECT_DOUBLE_EQ(vqa_accuracy("two", {"two"}), 1.0);
  EXPECT_DOUBLE_EQ(vqa_accuracy("2", {"two"}), 1.0);
  EXPECT_DOUBLE_EQ(vqa_accuracy("The red one", {"red"}), 0.0);
  // Five answers, each counted twice (OK-VQA): "cat" given once -> 2 of 10 -> 0.6.
  EXPECT_NEAR(vqa_accuracy("cat", {"cat", "dog", "dog", "dog", "dog"}), 0.6, 1e-12);
  EXPECT_THROW_WITH(vqa_accuracy("x", std::vector<std::string>{}), InputError, "no ground-truth answers");
}

TEST(VqaTest, OfficialGroundTruthHandlingIsAvailable) {
  // The official script does not digit-normalise ground truths (VQA's are
  // pre-normalised): a raw "two" never matches a prediction that becomes "2".
  VqaOptions official;
  official.normalize_ground_truth = false;
  EXPECT_DOUBLE_EQ(vqa_accuracy("two", std::vector<std::string>(10, "two"), official), 0.0);
  EXPECT_DOUBLE_EQ(vqa_accuracy("two", std::vector<std::string>(10, "2"), official), 1.0);
  // Ground truths that disagree go through processPunctuation (and nothing
  // else): "yes." loses its period and matches; "yes," becomes "yes " (the
  // comma is replaced by a space that is never stripped) and does not.
  std::vector<std::string> gts(10, "no");
  gts[0] = gts[1] = gts[2] = "yes.";
  EXPECT_NEAR(vqa_accuracy("yes", gts, official), 0.9, 1e-12);
  gts[0] = gts[1] = gts[2] = "yes,";
  EXPECT_DOUBLE_EQ(vqa_accuracy("yes", gts, official), 0.0);
  EXPECT_NEAR(vqa_accuracy("yes", gts), 0.9, 1e-12);  // default: full normalisation
  EXPECT_EQ(vqa_process_punctuation("yes,"), "yes ");
}

TEST(VqaTest, CorpusAccuracyIsTheMean) {
  const VqaResult r = vqa_accuracy({"red", "three", "no"}, {{"red"}, {"3"}, {"yes"}});
  ASSERT_EQ(r.per_question.size(), 3u);
  EXPECT_DOUBLE_EQ(r.per_question[0], 1.0);
  EXPECT_DOUBLE_EQ(r.per_question[1], 1.0);
  EXPECT_DOUBLE_EQ(r.per_question[2], 0.0);
  EXPECT_NEAR(r.accuracy, 2.0 / 3, 1e-12);
  EXPECT_THROW_WITH(vqa_accuracy({"a"}, Refs{}), InputError, "1 predictions but 0 answer lists");
}

// ---------------------------------------------------------------- Recall@K

TEST(RecallTest, HandComputedLavisRanks) {
  // 3 images, 4 texts: image 0 <-> texts 0, 1; image 1 <-> text 2; image 2 <-> text 3.
  const ScoreMatrix i2t = ScoreMatrix::from_rows({{0.1, 0.9, 0.3, 0.2},    // best GT text 1: rank 0
                                                  {0.5, 0.4, 0.3, 0.6},    // text 2: 3 higher -> rank 3
                                                  {0.2, 0.1, 0.7, 0.7}});  // text 3 ties text 2: higher index first -> rank 0
  const std::vector<std::vector<int64_t>> img2txt{{0, 1}, {2}, {3}};
  const std::vector<int64_t> txt2img{0, 0, 1, 2};
  // TR: ranks {0, 3, 0} -> R@1 2/3, R@5 1, R@10 1.
  // IR (transpose): text 0 {0.1,0.5,0.2} gt 0 -> rank 2; text 1 {0.9,0.4,0.1} -> 0;
  //     text 2 {0.3,0.3,0.7} gt 1 -> 1 (0.7 above; the tie at index 0 ranks below);
  //     text 3 {0.2,0.6,0.7} gt 2 -> 0.  R@1 2/4, R@5 1, R@10 1.
  const RetrievalMetrics m = retrieval_recall(i2t, img2txt, txt2img);
  EXPECT_NEAR(m.txt_r1, 200.0 / 3, 1e-9);
  EXPECT_DOUBLE_EQ(m.txt_r5, 100.0);
  EXPECT_DOUBLE_EQ(m.txt_r10, 100.0);
  EXPECT_DOUBLE_EQ(m.img_r1, 50.0);
  EXPECT_DOUBLE_EQ(m.img_r5, 100.0);
  EXPECT_DOUBLE_EQ(m.img_r10, 100.0);
  EXPECT_NEAR(m.txt_r_mean, (200.0 / 3 + 200) / 3, 1e-9);
  EXPECT_NEAR(m.img_r_mean, 250.0 / 3, 1e-9);
  EXPECT_NEAR(m.r_mean, (m.txt_r_mean + m.img_r_mean) / 2, 1e-12);
  EXPECT_DOUBLE_EQ(m.agg_metrics, m.txt_r_mean);
}

TEST(RecallTest, TextsWithSeveralGroundTruthImages) {
  // Text 0 describes images 0 and 1 (a shared caption), text 1 image 2.
  const ScoreMatrix i2t = ScoreMatrix::from_rows({{0.9, 0.1},    // image 0: text 0 first -> rank 0
                                                  {0.8, 0.2},    // image 1: text 0 first -> rank 0
                                                  {0.7, 0.3}});  // image 2: text 1 second -> rank 1
  using Truth = std::vector<std::vector<int64_t>>;
  const Truth img2txt{{0}, {0}, {1}};
  // IR: text 0 scores {0.9, 0.8, 0.7}: its best ground truth (image 0) is first;
  //     text 1 scores {0.1, 0.2, 0.3}: image 2 first. Both hits.
  const RetrievalMetrics m = retrieval_recall(i2t, i2t.transposed(), img2txt, Truth{{0, 1}, {2}});
  EXPECT_NEAR(m.txt_r1, 200.0 / 3, 1e-9);
  EXPECT_DOUBLE_EQ(m.txt_r5, 100.0);
  EXPECT_DOUBLE_EQ(m.img_r1, 100.0);
  // With image 1 alone as text 0's truth, image 0 outranks it: rank 1.
  const RetrievalMetrics one = retrieval_recall(i2t, i2t.transposed(), img2txt, Truth{{1}, {2}});
  EXPECT_DOUBLE_EQ(one.img_r1, 50.0);
  // The single-image form is the same computation.
  const RetrievalMetrics same = retrieval_recall(i2t, img2txt, std::vector<int64_t>{1, 2});
  EXPECT_DOUBLE_EQ(same.img_r1, one.img_r1);
  EXPECT_DOUBLE_EQ(same.txt_r1, one.txt_r1);
  EXPECT_THROW_WITH(retrieval_recall(i2t, i2t.transposed(), img2txt, Truth{{0, 1}, {}}), InputError,
                    "text 1 has no ground-truth image");
}

TEST(RecallTest, KBoundariesAndSeparateT2iMatrix) {
  // 12 images, 12 texts, text i belongs to image i. Image i's own text is
  // placed at rank i by scores 100 - |rank position|.
  const int n = 12;
  std::vector<double> v(n * n);
  for (int i = 0; i < n; ++i) {
    // Order texts: the own text at position i, the others filling the rest.
    std::vector<int> order;
    for (int t = 0; t < n; ++t)
      if (t != i) order.push_back(t);
    order.insert(order.begin() + i, i);
    for (int pos = 0; pos < n; ++pos) v[i * n + order[pos]] = 100.0 - pos;
  }
  const ScoreMatrix i2t(n, n, v);
  std::vector<std::vector<int64_t>> img2txt;
  std::vector<int64_t> txt2img;
  for (int i = 0; i < n; ++i) img2txt.push_back({i}), txt2img.push_back(i);
  // t2i: a separate matrix where every text ranks its image first.
  std::vector<double> w(n * n, 0.0);
  for (int t = 0; t < n; ++t) w[t * n + t] = 1.0;
  const RetrievalMetrics m = retrieval_recall(i2t, ScoreMatrix(n, n, w), img2txt, txt2img);
  // Ranks 0..11: R@1 = 1/12, R@5 = 5/12, R@10 = 10/12.
  EXPECT_NEAR(m.txt_r1, 100.0 / 12, 1e-9);
  EXPECT_NEAR(m.txt_r5, 500.0 / 12, 1e-9);
  EXPECT_NEAR(m.txt_r10, 1000.0 / 12, 1e-9);
  EXPECT_DOUBLE_EQ(m.img_r1, 100.0);
  const double s[] = {1.0, 2.0, 2.0, 0.5};
  EXPECT_EQ(descending_rank(s, 4, 1), 1);  // the tie at index 2 goes first
  EXPECT_EQ(descending_rank(s, 4, 2), 0);
  EXPECT_EQ(descending_rank(s, 4, 3), 3);
}

TEST(RecallTest, RejectsBadShapesAndIndices) {
  const ScoreMatrix m = ScoreMatrix::from_rows({{1, 2}, {3, 4}});
  EXPECT_THROW_WITH(retrieval_recall(m, {{0}, {1}, {0}}, {0, 1}), InputError, "must be (3, 2)");
  EXPECT_THROW_WITH(retrieval_recall(m, {{0}, {5}}, {0, 1}), InputError, "names text 5");
  EXPECT_THROW_WITH(retrieval_recall(m, {{0}, {}}, {0, 1}), InputError, "image 1 has no ground-truth text");
  EXPECT_THROW_WITH(retrieval_recall(m, {{0}, {1}}, {0, 2}), InputError, "txt2img[1] = 2");
  EXPECT_THROW_WITH(retrieval_recall(ScoreMatrix(2, 2, {1, NAN, 3, 4}), {{0}, {1}}, {0, 1}), InputError, "NaN");
  EXPECT_THROW_WITH(ScoreMatrix::from_rows({{1, 2}, {3}}), InputError, "row 1 has 1 values");
}

}  // namespace
}  // namespace blip2
