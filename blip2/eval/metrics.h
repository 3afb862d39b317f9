// Evaluation metrics with the reference implementations' exact semantics:
//   CIDEr-D and BLEU-1..4 as pycocoevalcap (cider_scorer.py, bleu_scorer.py),
//   VQA accuracy as the official VQA evaluation (vqaEval.py, used by LAVIS),
//   Recall@K for retrieval as LAVIS's RetrievalTask.itm_eval,
//   plus the caption exact-match rate.
// Plain C++ (no torch). Inputs are validated first; a mismatch throws
// blip2::InputError naming both sizes. See docs/metrics.md for the formulas,
// the worked examples and every deviation.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace blip2 {

// ---- text normalisation ----

// What pycocoevalcap does to every caption before scoring: Stanford
// PTBTokenizer with -lowerCase, then the tokens in its PUNCTUATIONS list
// ('' ' `` ` -LRB- -RRB- -LCB- -RCB- . ? ! , : - -- ... ;) dropped, tokens
// joined by single spaces. Re-implemented (no Java): ASCII lower-casing, PTB
// splitting of punctuation and clitics ("dog's" -> "dog 's", "don't" ->
// "do n't"), brackets and quotes dropped. Exact for ordinary English
// captions; see docs/metrics.md for the approximations.
std::string ptb_tokenize(const std::string& text);

// Whitespace split as Python's str.split() (ASCII whitespace).
std::vector<std::string> split_words(const std::string& text);

// ---- captioning ----

struct CiderResult {
  double score = 0;                // mean over images (the corpus CIDEr-D)
  std::vector<double> per_image;   // in input order
};

// CIDEr-D of pycocoevalcap's Cider scorer. candidates[i] is the one
// generated caption of image i, references[i] its >= 1 reference captions;
// all already tokenised (see ptb_tokenize): words are split on whitespace.
// n-grams n = 1..4; tf-idf vectors with idf = log(#images) - log(max(1, df)),
// df = number of images whose references contain the n-gram; per n the
// cosine of candidate and reference vectors with clipped counts
// (sum min(c, r) * r / (|c| |r|), 0 when a norm is 0), times the length
// penalty exp(-(lc - lr)^2 / (2 sigma^2)) where a sentence's length is its
// number of bigram occurrences (max(0, words - 1), as the reference code
// counts it); averaged over n, summed over references / #references, x10.
// InputError for mismatched sizes or an image without references.
CiderResult cider_d(const std::vector<std::string>& candidates,
                    const std::vector<std::vector<std::string>>& references, int max_n = 4, double sigma = 6.0);

struct BleuResult {
  std::vector<double> bleu;  // BLEU-1 .. BLEU-max_n (bleu[3] is BLEU-4)
  double testlen = 0;        // total candidate words
  double reflen = 0;         // total effective reference words ("closest")
};

// Corpus BLEU of pycocoevalcap's Bleu scorer (option "closest"): clipped
// n-gram matches against the per-n-gram maximum over an image's references,
// summed over the corpus; BLEU-n = prod_{k<=n} ((correct_k + 1e-15) /
// (guess_k + 1e-9))^(1/n); brevity penalty exp(1 - 1/ratio) when ratio =
// (testlen + 1e-15) / (reflen + 1e-9) < 1, reflen per image being the
// reference length closest to the candidate's (the shorter on a tie).
BleuResult bleu(const std::vector<std::string>& candidates, const std::vector<std::vector<std::string>>& references,
                int max_n = 4);

// The caption normalisation used by caption_exact_match: ptb_tokenize.
std::string normalize_caption(const std::string& text);

// Fraction of candidates whose normalised text equals the normalised text of
// at least one of their references (0 for an empty corpus).
double caption_exact_match(const std::vector<std::string>& candidates,
                           const std::vector<std::vector<std::string>>& references);

// ---- VQA ----

// The official VQA answer normalisation (vqaEval.py): newlines/tabs to
// spaces, strip, processPunctuation (each of ; : / ' [ ] " ( ) = + \ _ > < @
// ` , ? removed when it touches a space in the input or the input has a
// digit,digit comma, else replaced by a space; then periods not followed by a
// digit removed, at most 32 of them, as the reference's re.sub(count=re.UNICODE)
// does), then processDigitArticle (lower-case, split, number words zero..ten
// and "none" to digits, articles a/an/the dropped, the contractions map).
std::string vqa_normalize_answer(const std::string& answer);
// processPunctuation alone (what the official script applies to the
// ground-truth answers, and only when they disagree).
std::string vqa_process_punctuation(const std::string& text);
// processDigitArticle alone.
std::string vqa_process_digit_article(const std::string& text);

struct VqaOptions {
  // true (default): ground-truth answers get the same full normalisation as
  // the prediction, so raw answers such as "two" or "a dog" are scored as the
  // official (pre-normalised) annotations would be. false: exactly the
  // official script: ground truths only through processPunctuation, and only
  // when they are not all identical.
  bool normalize_ground_truth = true;
};

// Accuracy of one prediction against its human answers, in [0, 1]: for each
// answer, min(1, #other answers equal to the prediction / 3), averaged over
// the answers (the 10 leave-one-out subsets of 9 with VQA's 10 answers).
// Fewer than 10 answers are first repeated cyclically to 10 (OK-VQA's
// convention: 5 answers count twice; a single answer makes it an exact match);
// more than 10 are used as they are. InputError for no answers.
double vqa_accuracy(const std::string& prediction, const std::vector<std::string>& answers,
                    const VqaOptions& options = {});

struct VqaResult {
  double accuracy = 0;                // mean of per_question, in [0, 1]
  std::vector<double> per_question;
};

VqaResult vqa_accuracy(const std::vector<std::string>& predictions,
                       const std::vector<std::vector<std::string>>& answers, const VqaOptions& options = {});

// ---- retrieval ----

// A dense row-major score matrix.
struct ScoreMatrix {
  int64_t rows = 0, cols = 0;
  std::vector<double> values;  // rows * cols

  ScoreMatrix() = default;
  ScoreMatrix(int64_t r, int64_t c, std::vector<double> v);
  static ScoreMatrix from_rows(const std::vector<std::vector<double>>& rows);
  double at(int64_t r, int64_t c) const { return values[static_cast<size_t>(r * cols + c)]; }
  ScoreMatrix transposed() const;
};

// LAVIS's itm_eval result keys, in percent.
struct RetrievalMetrics {
  double txt_r1 = 0, txt_r5 = 0, txt_r10 = 0, txt_r_mean = 0;  // text retrieval (TR@K): image -> texts
  double img_r1 = 0, img_r5 = 0, img_r10 = 0, img_r_mean = 0;  // image retrieval (IR@K): text -> images
  double r_mean = 0;       // (txt_r_mean + img_r_mean) / 2
  double agg_metrics = 0;  // txt_r_mean, as LAVIS
};

// The 0-based rank of `target` in `scores` sorted descending, with ties
// ordered as numpy's argsort(score)[::-1] of a stable sort orders them (the
// higher index first): #{j : s[j] > s[t]} + #{j > t : s[j] == s[t]}.
int64_t descending_rank(const double* scores, int64_t n, int64_t target);

// Recall@1/5/10 both ways, as LAVIS's RetrievalTask.itm_eval:
// scores_i2t (images x texts) ranks texts per image, the image's rank being
// that of its best-ranked ground-truth text (img2txt[i], >= 1 each);
// scores_t2i (texts x images) ranks images per text against txt2img[t].
// (LAVIS's two matrices differ after ITM re-ranking of each row's top k.)
// InputError for mismatched shapes, out-of-range indices, NaN scores.
RetrievalMetrics retrieval_recall(const ScoreMatrix& scores_i2t, const ScoreMatrix& scores_t2i,
                                  const std::vector<std::vector<int64_t>>& img2txt,
                                  const std::vector<int64_t>& txt2img);
// The same with one matrix (images x texts) for both directions.
RetrievalMetrics retrieval_recall(const ScoreMatrix& scores_i2t, const std::vector<std::vector<int64_t>>& img2txt,
                                  const std::vector<int64_t>& txt2img);
// With several ground-truth images per text (a text that describes more than
// one image: txt2imgs[t], >= 1 each): a text's rank is that of its
// best-ranked ground-truth image. Equal to the above when each lists one.
RetrievalMetrics retrieval_recall(const ScoreMatrix& scores_i2t, const ScoreMatrix& scores_t2i,
                                  const std::vector<std::vector<int64_t>>& img2txt,
                                  const std::vector<std::vector<int64_t>>& txt2imgs);

}  // namespace blip2
