#include "blip2/search/index_bench.h"

#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <set>

#include "blip2/search/vector_index.h"
#include "blip2/util/error.h"
#include "blip2/util/progress.h"

namespace blip2::search {

namespace {

double percentile(std::vector<double> v, double p) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[static_cast<size_t>(p * static_cast<double>(v.size() - 1))];
}

}  // namespace

IndexBenchResult bench_vector_index(const IndexBenchOptions& o) {
  if (o.images < 100 || o.queries < 1 || o.dim < 2 || o.searches < 1 || o.k < 1)
    throw InputError("index bench: --images >= 100, --queries >= 1, --dim >= 2, --searches >= 1 and --k >= 1");
  if (o.images * o.queries * o.dim > int64_t{2} << 30)
    throw InputError("index bench: " + std::to_string(o.images * o.queries) + " vectors of " + std::to_string(o.dim) +
                     " would hold over 8 GiB per index; use fewer --images");
  torch::NoGradGuard g;
  auto gen = at::make_generator<at::CPUGeneratorImpl>(o.seed);
  // Images around topics, queries around images, texts near one image's queries.
  const int64_t topics = std::max<int64_t>(16, o.images / 50);
  auto centers = torch::randn({topics, o.dim}, gen);
  auto topic = torch::randint(topics, {o.images}, gen);
  auto images = centers.index_select(0, topic) + 0.7 * torch::randn({o.images, o.dim}, gen);
  auto vecs = images.unsqueeze(1) + 0.6 * torch::randn({o.images, o.queries, o.dim}, gen);
  vecs = torch::nn::functional::normalize(vecs, torch::nn::functional::NormalizeFuncOptions().dim(-1)).contiguous();
  auto which = torch::randint(o.images, {o.searches}, gen);
  auto texts = images.index_select(0, which) + 0.8 * torch::randn({o.searches, o.dim}, gen);
  texts = torch::nn::functional::normalize(texts, torch::nn::functional::NormalizeFuncOptions().dim(-1)).contiguous();

  IndexBenchResult r;
  r.options = o;
  r.vectors = o.images * o.queries;
  std::vector<float> v(vecs.data_ptr<float>(), vecs.data_ptr<float>() + r.vectors * o.dim);
  std::vector<int64_t> ids(static_cast<size_t>(r.vectors));
  for (int64_t i = 0; i < r.vectors; ++i) ids[static_cast<size_t>(i)] = i;
  const float* tq = texts.data_ptr<float>();
  const double mb = static_cast<double>(r.vectors) * static_cast<double>(o.dim * 4 + 8) / (1 << 20);

  // Times every search; returns each search's top-k image ids.
  auto run = [&](const VectorIndex& index, int64_t nprobe, IndexBenchRow& row) {
    std::vector<std::vector<int64_t>> tops;
    std::vector<double> ms;
    for (int64_t s = 0; s < o.searches; ++s) {
      auto t0 = std::chrono::steady_clock::now();
      auto best = best_groups(index.search(tq + s * o.dim, 1, o.k * o.queries, nprobe), o.queries, o.k);
      ms.push_back(seconds_since(t0) * 1e3);
      std::vector<int64_t> top;
      for (auto& [id, score] : best) top.push_back(id);
      tops.push_back(std::move(top));
    }
    row.query_ms_p50 = percentile(ms, 0.5);
    row.query_ms_p90 = percentile(ms, 0.9);
    return tops;
  };

  IndexBenchRow flat{"flat"};
  auto t0 = std::chrono::steady_clock::now();
  auto exact = VectorIndex::build(o.dim, ids, v, VectorIndexKind::kFlat);
  flat.build_s = seconds_since(t0);
  flat.index_mb = mb;
  auto truth = run(exact, 0, flat);
  r.rows.push_back(flat);
  exact = VectorIndex::build(o.dim, {}, {}, VectorIndexKind::kFlat);  // frees the flat copy before IVF is built

  IndexBenchRow ivf_row{"ivf"};
  t0 = std::chrono::steady_clock::now();
  auto ivf = VectorIndex::build(o.dim, ids, v, VectorIndexKind::kIvf);
  const double build_s = seconds_since(t0);
  const int64_t nlist = ivf.nlist();
  for (int64_t div : {64, 32, 16, 8, 4}) {
    IndexBenchRow row{"ivf", nlist, std::max<int64_t>(1, nlist / div), build_s};
    row.index_mb = mb;
    auto tops = run(ivf, row.nprobe, row);
    double hit = 0;
    for (size_t s = 0; s < tops.size(); ++s) {
      std::set<int64_t> want(truth[s].begin(), truth[s].end());
      for (int64_t id : tops[s]) hit += want.count(id);
    }
    row.recall_at_k = hit / static_cast<double>(o.searches * o.k);
    r.rows.push_back(row);
  }
  return r;
}

nlohmann::json index_bench_json(const IndexBenchResult& r) {
  nlohmann::json rows = nlohmann::json::array();
  for (auto& x : r.rows)
    rows.push_back({{"kind", x.kind}, {"nlist", x.nlist}, {"nprobe", x.nprobe}, {"build_s", x.build_s},
                    {"query_ms_p50", x.query_ms_p50}, {"query_ms_p90", x.query_ms_p90},
                    {"recall_at_k", x.recall_at_k}, {"index_mb", x.index_mb}});
  return {{"images", r.options.images}, {"queries", r.options.queries}, {"dim", r.options.dim},
          {"vectors", r.vectors}, {"k", r.options.k}, {"searches", r.options.searches}, {"rows", rows}};
}

std::string index_bench_table(const IndexBenchResult& r) {
  char line[256];
  std::snprintf(line, sizeof line, "%lld images x %lld vectors of %lld (%lld vectors), %lld text searches, recall@%lld vs flat\n",
                static_cast<long long>(r.options.images), static_cast<long long>(r.options.queries),
                static_cast<long long>(r.options.dim), static_cast<long long>(r.vectors),
                static_cast<long long>(r.options.searches), static_cast<long long>(r.options.k));
  std::string out = line;
  out += "kind   nlist  nprobe  build_s  query_ms_p50  query_ms_p90  recall  index_MB\n";
  for (auto& x : r.rows) {
    std::snprintf(line, sizeof line, "%-5s  %5lld  %6lld  %7.2f  %12.3f  %12.3f  %6.3f  %8.0f\n", x.kind.c_str(),
                  static_cast<long long>(x.nlist), static_cast<long long>(x.nprobe), x.build_s, x.query_ms_p50,
                  x.query_ms_p90, x.recall_at_k, x.index_mb);
    out += line;
  }
  out.pop_back();
  return out;
}

}  // namespace blip2::search
