// Recall@K of image-text retrieval (LAVIS's report_metrics): ranks of the
// ground-truth matches in score matrices; see metrics.h.
#include <algorithm>
#include <cmath>
#include <string>

#include "blip2/eval/metrics.h"
#include "blip2/util/error.h"

namespace blip2 {
namespace {

void check_matrix(const char* name, const ScoreMatrix& m, int64_t rows, int64_t cols) {
  if (m.rows != rows || m.cols != cols || static_cast<int64_t>(m.values.size()) != rows * cols)
    throw InputError(std::string("[retrieval_recall] ") + name + " must be (" + std::to_string(rows) + ", " +
                     std::to_string(cols) + "), got (" + std::to_string(m.rows) + ", " + std::to_string(m.cols) +
                     ") with " + std::to_string(m.values.size()) + " values");
  for (double v : m.values)
    if (std::isnan(v)) throw InputError(std::string("[retrieval_recall] ") + name + " holds NaN scores");
}

}  // namespace

// ---- retrieval ----

ScoreMatrix::ScoreMatrix(int64_t r, int64_t c, std::vector<double> v) : rows(r), cols(c), values(std::move(v)) {
  if (r < 0 || c < 0 || static_cast<int64_t>(values.size()) != r * c)
    throw InputError("[ScoreMatrix] " + std::to_string(values.size()) + " values do not make a (" +
                     std::to_string(r) + ", " + std::to_string(c) + ") matrix");
}

ScoreMatrix ScoreMatrix::from_rows(const std::vector<std::vector<double>>& rows) {
  const int64_t r = static_cast<int64_t>(rows.size());
  const int64_t c = rows.empty() ? 0 : static_cast<int64_t>(rows[0].size());
  std::vector<double> v;
  v.reserve(static_cast<size_t>(r * c));
  for (size_t i = 0; i < rows.size(); ++i) {
    if (static_cast<int64_t>(rows[i].size()) != c)
      throw InputError("[ScoreMatrix] row " + std::to_string(i) + " has " + std::to_string(rows[i].size()) +
                       " values, row 0 has " + std::to_string(c));
    v.insert(v.end(), rows[i].begin(), rows[i].end());
  }
  return ScoreMatrix(r, c, std::move(v));
}

ScoreMatrix ScoreMatrix::transposed() const {
  std::vector<double> v(values.size());
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) v[static_cast<size_t>(c * rows + r)] = at(r, c);
  return ScoreMatrix(cols, rows, std::move(v));
}

int64_t descending_rank(const double* scores, int64_t n, int64_t target) {
  const double s = scores[target];
  int64_t rank = 0;
  for (int64_t j = 0; j < n; ++j)
    if (scores[j] > s || (scores[j] == s && j > target)) ++rank;
  return rank;
}

RetrievalMetrics retrieval_recall(const ScoreMatrix& scores_i2t, const ScoreMatrix& scores_t2i,
                                  const std::vector<std::vector<int64_t>>& img2txt,
                                  const std::vector<int64_t>& txt2img) {
  std::vector<std::vector<int64_t>> txt2imgs;
  txt2imgs.reserve(txt2img.size());
  for (int64_t i : txt2img) txt2imgs.push_back({i});
  return retrieval_recall(scores_i2t, scores_t2i, img2txt, txt2imgs);
}

RetrievalMetrics retrieval_recall(const ScoreMatrix& scores_i2t, const ScoreMatrix& scores_t2i,
                                  const std::vector<std::vector<int64_t>>& img2txt,
                                  const std::vector<std::vector<int64_t>>& txt2img) {
  const int64_t n_img = static_cast<int64_t>(img2txt.size()), n_txt = static_cast<int64_t>(txt2img.size());
  if (n_img == 0 || n_txt == 0)
    throw InputError("[retrieval_recall] need at least one image and one text, got " + std::to_string(n_img) +
                     " images and " + std::to_string(n_txt) + " texts");
  check_matrix("scores_i2t (images x texts)", scores_i2t, n_img, n_txt);
  check_matrix("scores_t2i (texts x images)", scores_t2i, n_txt, n_img);
  for (int64_t i = 0; i < n_img; ++i) {
    if (img2txt[i].empty())
      throw InputError("[retrieval_recall] image " + std::to_string(i) + " has no ground-truth text");
    for (int64_t t : img2txt[i])
      if (t < 0 || t >= n_txt)
        throw InputError("[retrieval_recall] img2txt[" + std::to_string(i) + "] names text " + std::to_string(t) +
                         ", outside 0.." + std::to_string(n_txt - 1));
  }
  for (int64_t t = 0; t < n_txt; ++t) {
    if (txt2img[t].empty()) throw InputError("[retrieval_recall] text " + std::to_string(t) + " has no ground-truth image");
    for (int64_t i : txt2img[t])
      if (i < 0 || i >= n_img)
        throw InputError("[retrieval_recall] txt2img[" + std::to_string(t) + "] = " + std::to_string(i) +
                         ", outside 0.." + std::to_string(n_img - 1));
  }

  auto pct = [](const std::vector<int64_t>& ranks, int64_t k) {
    int64_t hits = 0;
    for (int64_t r : ranks) hits += r < k;
    return 100.0 * static_cast<double>(hits) / static_cast<double>(ranks.size());
  };
  RetrievalMetrics m;
  std::vector<int64_t> ranks(n_img);
  for (int64_t i = 0; i < n_img; ++i) {
    const double* row = scores_i2t.values.data() + i * n_txt;
    int64_t best = INT64_MAX;
    for (int64_t t : img2txt[i]) best = std::min(best, descending_rank(row, n_txt, t));
    ranks[i] = best;
  }
  m.txt_r1 = pct(ranks, 1), m.txt_r5 = pct(ranks, 5), m.txt_r10 = pct(ranks, 10);
  ranks.assign(n_txt, 0);
  for (int64_t t = 0; t < n_txt; ++t) {
    int64_t best = INT64_MAX;
    for (int64_t i : txt2img[t]) best = std::min(best, descending_rank(scores_t2i.values.data() + t * n_img, n_img, i));
    ranks[t] = best;
  }
  m.img_r1 = pct(ranks, 1), m.img_r5 = pct(ranks, 5), m.img_r10 = pct(ranks, 10);
  m.txt_r_mean = (m.txt_r1 + m.txt_r5 + m.txt_r10) / 3;
  m.img_r_mean = (m.img_r1 + m.img_r5 + m.img_r10) / 3;
  m.r_mean = (m.txt_r_mean + m.img_r_mean) / 2;
  m.agg_metrics = m.txt_r_mean;
  return m;
}

RetrievalMetrics retrieval_recall(const ScoreMatrix& scores_i2t, const std::vector<std::vector<int64_t>>& img2txt,
                                  const std::vector<int64_t>& txt2img) {
  return retrieval_recall(scores_i2t, scores_i2t.transposed(), img2txt, txt2img);
}

}  // namespace blip2
