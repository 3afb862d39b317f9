// CIDEr-D, BLEU, VQA accuracy and exact match (Recall@K: retrieval_metrics.cpp). Formulas follow
// pycocoevalcap, the official VQA evaluation and LAVIS; see metrics.h and
// docs/metrics.md.
#include "blip2/eval/metrics.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <set>
#include <unordered_map>
#include <unordered_set>

#include "blip2/util/error.h"

namespace blip2 {
namespace {

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'; }
bool is_digit(char c) { return c >= '0' && c <= '9'; }

std::string ascii_lower(std::string s) {
  for (char& c : s)
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  return s;
}

std::string join(const std::vector<std::string>& words, size_t begin, size_t end) {
  std::string out;
  for (size_t i = begin; i < end; ++i) {
    if (i > begin) out += ' ';
    out += words[i];
  }
  return out;
}

std::string join(const std::vector<std::string>& words) { return join(words, 0, words.size()); }

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

std::string replace_all(std::string s, const std::string& from, const std::string& to) {
  size_t pos = 0;
  while ((pos = s.find(from, pos)) != std::string::npos) {
    s.replace(pos, from.size(), to);
    pos += to.size();
  }
  return s;
}

void check_corpus(const char* what, size_t n_candidates, const std::vector<std::vector<std::string>>& references) {
  if (n_candidates != references.size())
    throw InputError(std::string("[") + what + "] got " + std::to_string(n_candidates) + " candidates but " +
                     std::to_string(references.size()) + " reference lists; pass one list per candidate");
  for (size_t i = 0; i < references.size(); ++i)
    if (references[i].empty())
      throw InputError(std::string("[") + what + "] item " + std::to_string(i) +
                       " has no reference; every item needs at least one");
}

// ---- PTB tokenisation ----

// Splits one whitespace-free, lower-cased chunk into PTB tokens.
void ptb_split_chunk(const std::string& w, std::vector<std::string>& out) {
  // 1. Characters that always stand alone (or are dropped later), commas and
  //    colons unless between digits, "--" and "...".
  std::vector<std::string> pieces;
  std::string cur;
  auto flush = [&] {
    if (!cur.empty()) pieces.push_back(cur), cur.clear();
  };
  for (size_t i = 0; i < w.size(); ++i) {
    const char c = w[i];
    const bool between_digits = i > 0 && i + 1 < w.size() && is_digit(w[i - 1]) && is_digit(w[i + 1]);
    if (std::strchr("\"()[]{}!?;`", c) || ((c == ',' || c == ':') && !between_digits)) {
      flush();
      pieces.emplace_back(1, c);
    } else if (c == '-' && i + 1 < w.size() && w[i + 1] == '-') {
      flush();
      size_t j = i;
      while (j < w.size() && w[j] == '-') ++j;
      pieces.push_back(w.substr(i, j - i));
      i = j - 1;
    } else if (c == '.' && i + 2 < w.size() && w[i + 1] == '.' && w[i + 2] == '.') {
      flush();
      size_t j = i;
      while (j < w.size() && w[j] == '.') ++j;
      pieces.push_back(w.substr(i, j - i));
      i = j - 1;
    } else {
      cur += c;
    }
  }
  flush();

  // 2. Per piece: quotes at the edges, a final period (unless an
  //    abbreviation with inner periods), clitics.
  for (std::string p : pieces) {
    if (p.size() <= 1 || p.find_first_not_of('-') == std::string::npos ||
        p.find_first_not_of('.') == std::string::npos) {
      out.push_back(p);
      continue;
    }
    std::vector<std::string> tail;
    // Leading quote: "'hello" -> "'" "hello" (but "'s" alone is a clitic).
    while (p.size() > 1 && p[0] == '\'' && !(p == "'s" || p == "'re" || p == "'ve" || p == "'ll" || p == "'d" ||
                                             p == "'m")) {
      out.emplace_back("'");
      p.erase(0, 1);
    }
    // Final period: "dog." -> "dog" "."; "u.s." and "e.g." stay whole.
    if (p.size() > 1 && p.back() == '.' && p.find('.') == p.size() - 1) {
      tail.emplace_back(".");
      p.pop_back();
    }
    // Trailing quote: "dogs'" -> "dogs" "'".
    while (p.size() > 1 && p.back() == '\'') {
      tail.insert(tail.begin(), "'");
      p.pop_back();
    }
    // Clitics.
    auto ends_with = [&](const std::string& suf) {
      return p.size() > suf.size() && p.compare(p.size() - suf.size(), suf.size(), suf) == 0;
    };
    bool split = false;
    if (ends_with("n't")) {
      tail.insert(tail.begin(), "n't");
      p.resize(p.size() - 3);
      split = true;
    }
    for (const char* clitic : {"'s", "'re", "'ve", "'ll", "'d", "'m"}) {
      if (split) break;
      if (ends_with(clitic)) {
        const size_t len = std::strlen(clitic);
        tail.insert(tail.begin(), clitic);
        p.resize(p.size() - len);
        split = true;
      }
    }
    if (!p.empty()) out.push_back(p);
    for (auto& t : tail) out.push_back(std::move(t));
  }
}

// pycocoevalcap's PUNCTUATIONS (lower-cased bracket names never occur: the
// brackets themselves are dropped) plus the bracket characters.
const std::unordered_set<std::string>& ptb_dropped() {
  static const std::unordered_set<std::string> s{"''", "'", "``", "`", "-lrb-", "-rrb-", "-lcb-", "-rcb-", ".", "?",
                                                 "!", ",", ":", "-", "--", "...", ";", "\"", "(", ")", "[", "]",
                                                 "{", "}"};
  return s;
}

// ---- n-gram counting (pycocoevalcap's precook) ----

// counts[k][ngram] for k = 0..n-1 (n-gram length k + 1); n-grams are the
// words joined by single spaces, so lengths never collide.
using NgramCounts = std::vector<std::unordered_map<std::string, int>>;

NgramCounts precook(const std::vector<std::string>& words, int n) {
  NgramCounts counts(n);
  for (int k = 1; k <= n; ++k)
    for (size_t i = 0; i + k <= words.size(); ++i) ++counts[k - 1][join(words, i, i + k)];
  return counts;
}

// ---- VQA tables (from the official vqaEval.py) ----

const std::unordered_map<std::string, std::string>& vqa_contractions() {
  // Keys and values verbatim, including the curly apostrophes (U+2019) and
  // the capitalised keys that can never match after lower-casing.
  static const std::unordered_map<std::string, std::string> m{
      {"aint", "ain't"}, {"arent", "aren't"}, {"cant", "can't"}, {"couldve", "could've"},
      {"couldnt", "couldn't"}, {"couldn'tve", "couldn’t’ve"}, {"couldnt’ve", "couldn’t’ve"},
      {"didnt", "didn’t"}, {"doesnt", "doesn’t"}, {"dont", "don’t"}, {"hadnt", "hadn’t"},
      {"hadnt’ve", "hadn’t’ve"}, {"hadn'tve", "hadn’t’ve"}, {"hasnt", "hasn’t"}, {"havent", "haven’t"},
      {"hed", "he’d"}, {"hed’ve", "he’d’ve"}, {"he’dve", "he’d’ve"}, {"hes", "he’s"}, {"howd", "how’d"},
      {"howll", "how’ll"}, {"hows", "how’s"}, {"Id’ve", "I’d’ve"}, {"I’dve", "I’d’ve"}, {"Im", "I’m"},
      {"Ive", "I’ve"}, {"isnt", "isn’t"}, {"itd", "it’d"}, {"itd’ve", "it’d’ve"}, {"it’dve", "it’d’ve"},
      {"itll", "it’ll"}, {"let’s", "let’s"}, {"maam", "ma’am"}, {"mightnt", "mightn’t"},
      {"mightnt’ve", "mightn’t’ve"}, {"mightn’tve", "mightn’t’ve"}, {"mightve", "might’ve"},
      {"mustnt", "mustn’t"}, {"mustve", "must’ve"}, {"neednt", "needn’t"}, {"notve", "not’ve"},
      {"oclock", "o’clock"}, {"oughtnt", "oughtn’t"}, {"ow’s’at", "’ow’s’at"}, {"’ows’at", "’ow’s’at"},
      {"’ow’sat", "’ow’s’at"}, {"shant", "shan’t"}, {"shed’ve", "she’d’ve"}, {"she’dve", "she’d’ve"},
      {"she’s", "she’s"}, {"shouldve", "should’ve"}, {"shouldnt", "shouldn’t"},
      {"shouldnt’ve", "shouldn’t’ve"}, {"shouldn’tve", "shouldn’t’ve"}, {"somebody’d", "somebodyd"},
      {"somebodyd’ve", "somebody’d’ve"}, {"somebody’dve", "somebody’d’ve"}, {"somebodyll", "somebody’ll"},
      {"somebodys", "somebody’s"}, {"someoned", "someone’d"}, {"someoned’ve", "someone’d’ve"},
      {"someone’dve", "someone’d’ve"}, {"someonell", "someone’ll"}, {"someones", "someone’s"},
      {"somethingd", "something’d"}, {"somethingd’ve", "something’d’ve"},
      {"something’dve", "something’d’ve"}, {"somethingll", "something’ll"}, {"thats", "that’s"},
      {"thered", "there’d"}, {"thered’ve", "there’d’ve"}, {"there’dve", "there’d’ve"},
      {"therere", "there’re"}, {"theres", "there’s"}, {"theyd", "they’d"}, {"theyd’ve", "they’d’ve"},
      {"they’dve", "they’d’ve"}, {"theyll", "they’ll"}, {"theyre", "they’re"}, {"theyve", "they’ve"},
      {"twas", "’twas"}, {"wasnt", "wasn’t"}, {"wed’ve", "we’d’ve"}, {"we’dve", "we’d’ve"},
      {"weve", "we've"}, {"werent", "weren’t"}, {"whatll", "what’ll"}, {"whatre", "what’re"},
      {"whats", "what’s"}, {"whatve", "what’ve"}, {"whens", "when’s"}, {"whered", "where’d"},
      {"wheres", "where's"}, {"whereve", "where’ve"}, {"whod", "who’d"}, {"whod’ve", "who’d’ve"},
      {"who’dve", "who’d’ve"}, {"wholl", "who’ll"}, {"whos", "who’s"}, {"whove", "who've"},
      {"whyll", "why’ll"}, {"whyre", "why’re"}, {"whys", "why’s"}, {"wont", "won’t"},
      {"wouldve", "would’ve"}, {"wouldnt", "wouldn’t"}, {"wouldnt’ve", "wouldn’t’ve"},
      {"wouldn’tve", "wouldn’t’ve"}, {"yall", "y’all"}, {"yall’ll", "y’all’ll"}, {"y’allll", "y’all’ll"},
      {"yall’d’ve", "y’all’d’ve"}, {"y’alld’ve", "y’all’d’ve"}, {"y’all’dve", "y’all’d’ve"},
      {"youd", "you’d"}, {"youd’ve", "you’d’ve"}, {"you’dve", "you’d’ve"}, {"youll", "you’ll"},
      {"youre", "you’re"}, {"youve", "you’ve"}};
  return m;
}

const std::unordered_map<std::string, std::string>& vqa_number_words() {
  static const std::unordered_map<std::string, std::string> m{
      {"none", "0"}, {"zero", "0"}, {"one", "1"}, {"two", "2"},   {"three", "3"}, {"four", "4"},
      {"five", "5"}, {"six", "6"},  {"seven", "7"}, {"eight", "8"}, {"nine", "9"},  {"ten", "10"}};
  return m;
}

// The answer as the official script sees the prediction before matching.
std::string vqa_clean(const std::string& answer) {
  std::string s = replace_all(replace_all(answer, "\n", " "), "\t", " ");
  size_t b = 0, e = s.size();
  while (b < e && is_space(s[b])) ++b;
  while (e > b && is_space(s[e - 1])) --e;
  return s.substr(b, e - b);
}

}  // namespace

// ---- text ----

std::vector<std::string> split_words(const std::string& text) {
  std::vector<std::string> words;
  std::string cur;
  for (char c : text) {
    if (is_space(c)) {
      if (!cur.empty()) words.push_back(cur), cur.clear();
    } else {
      cur += c;
    }
  }
  if (!cur.empty()) words.push_back(cur);
  return words;
}

std::string ptb_tokenize(const std::string& text) {
  std::vector<std::string> tokens;
  for (const auto& chunk : split_words(ascii_lower(text))) ptb_split_chunk(chunk, tokens);
  std::vector<std::string> kept;
  for (auto& t : tokens)
    if (!ptb_dropped().count(t)) kept.push_back(std::move(t));
  return join(kept);
}

std::string normalize_caption(const std::string& text) { return ptb_tokenize(text); }

// ---- CIDEr-D ----

CiderResult cider_d(const std::vector<std::string>& candidates,
                    const std::vector<std::vector<std::string>>& references, int max_n, double sigma) {
  check_corpus("cider_d", candidates.size(), references);
  if (max_n < 1) throw InputError("[cider_d] max_n must be >= 1, got " + std::to_string(max_n));
  const size_t N = candidates.size();
  CiderResult result;
  if (N == 0) return result;

  // Cook every sentence; document frequency = #images whose references
  // (any of them) contain the n-gram.
  std::vector<NgramCounts> cand(N);
  std::vector<std::vector<NgramCounts>> refs(N);
  std::unordered_map<std::string, double> df;
  for (size_t i = 0; i < N; ++i) {
    cand[i] = precook(split_words(candidates[i]), max_n);
    std::unordered_set<std::string> seen;
    for (const auto& r : references[i]) {
      refs[i].push_back(precook(split_words(r), max_n));
      for (const auto& order : refs[i].back())
        for (const auto& [ngram, count] : order) seen.insert(ngram);
    }
    for (const auto& ngram : seen) df[ngram] += 1;
  }
  const double ref_len = std::log(static_cast<double>(N));

  struct Vec {
    std::vector<std::unordered_map<std::string, double>> v;
    std::vector<double> norm;
    double length = 0;  // bigram occurrences, as the reference counts it
  };
  auto counts2vec = [&](const NgramCounts& counts) {
    Vec out;
    out.v.resize(max_n);
    out.norm.assign(max_n, 0.0);
    for (int n = 0; n < max_n; ++n) {
      for (const auto& [ngram, tf] : counts[n]) {
        const auto it = df.find(ngram);
        const double dfv = std::log(std::max(1.0, it == df.end() ? 0.0 : it->second));
        const double w = static_cast<double>(tf) * (ref_len - dfv);
        out.v[n][ngram] = w;
        out.norm[n] += w * w;
        if (n == 1) out.length += tf;
      }
      out.norm[n] = std::sqrt(out.norm[n]);
    }
    return out;
  };
  auto sim = [&](const Vec& hyp, const Vec& ref) {
    const double delta = hyp.length - ref.length;
    std::vector<double> val(max_n, 0.0);
    for (int n = 0; n < max_n; ++n) {
      for (const auto& [ngram, wh] : hyp.v[n]) {
        const auto it = ref.v[n].find(ngram);
        const double wr = it == ref.v[n].end() ? 0.0 : it->second;
        val[n] += std::min(wh, wr) * wr;  // clipped
      }
      if (hyp.norm[n] != 0 && ref.norm[n] != 0) val[n] /= hyp.norm[n] * ref.norm[n];
      val[n] *= std::exp(-(delta * delta) / (2 * sigma * sigma));
    }
    return val;
  };

  result.per_image.resize(N);
  double total = 0;
  for (size_t i = 0; i < N; ++i) {
    const Vec hyp = counts2vec(cand[i]);
    std::vector<double> score(max_n, 0.0);
    for (const auto& r : refs[i]) {
      const auto v = sim(hyp, counts2vec(r));
      for (int n = 0; n < max_n; ++n) score[n] += v[n];
    }
    double mean = 0;
    for (double s : score) mean += s;
    mean /= max_n;
    mean /= static_cast<double>(refs[i].size());
    mean *= 10.0;
    result.per_image[i] = mean;
    total += mean;
  }
  result.score = total / static_cast<double>(N);
  return result;
}

// ---- BLEU ----

BleuResult bleu(const std::vector<std::string>& candidates, const std::vector<std::vector<std::string>>& references,
                int max_n) {
  check_corpus("bleu", candidates.size(), references);
  if (max_n < 1) throw InputError("[bleu] max_n must be >= 1, got " + std::to_string(max_n));
  const double small = 1e-9, tiny = 1e-15;
  std::vector<double> guess(max_n, 0.0), correct(max_n, 0.0);
  BleuResult result;
  for (size_t i = 0; i < candidates.size(); ++i) {
    // cook_refs: lengths and the per-n-gram maximum count over references.
    std::vector<int64_t> reflens;
    std::unordered_map<std::string, int> maxcounts;
    for (const auto& r : references[i]) {
      const auto words = split_words(r);
      reflens.push_back(static_cast<int64_t>(words.size()));
      for (const auto& order : precook(words, max_n))
        for (const auto& [ngram, count] : order) maxcounts[ngram] = std::max(maxcounts[ngram], count);
    }
    // cook_test
    const auto words = split_words(candidates[i]);
    const int64_t testlen = static_cast<int64_t>(words.size());
    const NgramCounts counts = precook(words, max_n);
    for (int k = 0; k < max_n; ++k) {
      guess[k] += static_cast<double>(std::max<int64_t>(0, testlen - k));
      for (const auto& [ngram, count] : counts[k]) {
        const auto it = maxcounts.find(ngram);
        correct[k] += std::min(it == maxcounts.end() ? 0 : it->second, count);
      }
    }
    // "closest": min over (|l - testlen|, l).
    int64_t best = reflens[0];
    for (int64_t l : reflens) {
      const int64_t d = std::llabs(l - testlen), bd = std::llabs(best - testlen);
      if (d < bd || (d == bd && l < best)) best = l;
    }
    result.testlen += static_cast<double>(testlen);
    result.reflen += static_cast<double>(best);
  }
  const double ratio = (result.testlen + tiny) / (result.reflen + small);
  for (int nn = 1; nn <= max_n; ++nn) {
    double b = 1.0;
    for (int k = 0; k < nn; ++k) b *= (correct[k] + tiny) / (guess[k] + small);
    b = std::pow(b, 1.0 / nn);
    if (ratio < 1) b *= std::exp(1 - 1 / ratio);
    result.bleu.push_back(b);
  }
  return result;
}

double caption_exact_match(const std::vector<std::string>& candidates,
                           const std::vector<std::vector<std::string>>& references) {
  check_corpus("caption_exact_match", candidates.size(), references);
  if (candidates.empty()) return 0.0;
  size_t hits = 0;
  for (size_t i = 0; i < candidates.size(); ++i) {
    const std::string c = normalize_caption(candidates[i]);
    for (const auto& r : references[i])
      if (normalize_caption(r) == c) {
        ++hits;
        break;
      }
  }
  return static_cast<double>(hits) / static_cast<double>(candidates.size());
}

// ---- VQA ----

std::string vqa_process_punctuation(const std::string& in) {
  static const char* const kPunct[] = {";", ":", "/", "'", "[", "]",  "\"", "(", ")", "=",
                                       "+", "\\", "_", ">", "<", "@", "`",  ",", "?"};
  bool digit_comma_digit = false;
  for (size_t i = 0; i + 2 < in.size(); ++i)
    if (is_digit(in[i]) && in[i + 1] == ',' && is_digit(in[i + 2])) digit_comma_digit = true;
  std::string out = in;
  for (const char* p : kPunct) {
    const std::string ps(p);
    if (contains(in, ps + " ") || contains(in, " " + ps) || digit_comma_digit)
      out = replace_all(out, ps, "");
    else
      out = replace_all(out, ps, " ");
  }
  // periodStrip: "(?!<=\d)(\.)(?!\d)" is a '.' not followed by a digit (the
  // first group is a lookahead, not a lookbehind); re.sub is passed
  // re.UNICODE (= 32) as its count, so at most 32 are removed.
  std::string stripped;
  int removed = 0;
  for (size_t i = 0; i < out.size(); ++i) {
    if (out[i] == '.' && removed < 32 && !(i + 1 < out.size() && is_digit(out[i + 1]))) {
      ++removed;
      continue;
    }
    stripped += out[i];
  }
  return stripped;
}

std::string vqa_process_digit_article(const std::string& in) {
  std::vector<std::string> words;
  for (auto& w : split_words(ascii_lower(in))) {
    const auto it = vqa_number_words().find(w);
    if (it != vqa_number_words().end()) w = it->second;
    if (w == "a" || w == "an" || w == "the") continue;
    words.push_back(w);
  }
  for (auto& w : words) {
    const auto it = vqa_contractions().find(w);
    if (it != vqa_contractions().end()) w = it->second;
  }
  return join(words);
}

std::string vqa_normalize_answer(const std::string& answer) {
  return vqa_process_digit_article(vqa_process_punctuation(vqa_clean(answer)));
}

double vqa_accuracy(const std::string& prediction, const std::vector<std::string>& answers,
                    const VqaOptions& options) {
  if (answers.empty()) throw InputError("[vqa_accuracy] a question has no ground-truth answers; need at least one");
  const std::string pred = vqa_normalize_answer(prediction);
  std::vector<std::string> gts;
  if (options.normalize_ground_truth) {
    for (const auto& a : answers) gts.push_back(vqa_normalize_answer(a));
  } else {
    const bool disagree = std::set<std::string>(answers.begin(), answers.end()).size() > 1;
    for (const auto& a : answers) gts.push_back(disagree ? vqa_process_punctuation(a) : a);
  }
  // Fewer than 10 answers: repeat cyclically to 10.
  const size_t n = std::max<size_t>(gts.size(), 10);
  size_t matches = 0;
  std::vector<bool> match(n);
  for (size_t i = 0; i < n; ++i) {
    match[i] = gts[i % gts.size()] == pred;
    matches += match[i];
  }
  double sum = 0;
  for (size_t i = 0; i < n; ++i) {
    const size_t others = matches - (match[i] ? 1 : 0);
    sum += std::min(1.0, static_cast<double>(others) / 3);
  }
  return sum / static_cast<double>(n);
}

VqaResult vqa_accuracy(const std::vector<std::string>& predictions, const std::vector<std::vector<std::string>>& answers,
                       const VqaOptions& options) {
  if (predictions.size() != answers.size())
    throw InputError("[vqa_accuracy] got " + std::to_string(predictions.size()) + " predictions but " +
                     std::to_string(answers.size()) + " answer lists; pass one list per prediction");
  VqaResult r;
  double total = 0;
  for (size_t i = 0; i < predictions.size(); ++i) {
    if (answers[i].empty())
      throw InputError("[vqa_accuracy] question " + std::to_string(i) + " has no ground-truth answers");
    r.per_question.push_back(vqa_accuracy(predictions[i], answers[i], options));
    total += r.per_question.back();
  }
  r.accuracy = predictions.empty() ? 0.0 : total / static_cast<double>(predictions.size());
  return r;
}

}  // namespace blip2
