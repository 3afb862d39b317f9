// `blip2 index bench`: the vector half of collection search measured on
// synthetic embeddings shaped like BLIP-2's (Q L2-normalised vectors per
// image, clustered the way real collections are), so that 10k- and
// 100k-image collections can be timed without embedding any image. For the
// exact (flat) index and the IVF index at several nprobe: build seconds,
// query latency (text-query shaped: one vector, max over each image's
// queries) and recall@k of the IVF image ranking against the exact one.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace blip2::search {

struct IndexBenchOptions {
  int64_t images = 10000;
  int64_t queries = 32;  // BLIP-2's Q
  int64_t dim = 256;     // BLIP-2's ITC size
  int64_t searches = 50;
  int64_t k = 10;
  uint64_t seed = 1;
};

struct IndexBenchRow {
  std::string kind;  // "flat" or "ivf"
  int64_t nlist = 0, nprobe = 0;
  double build_s = 0, query_ms_p50 = 0, query_ms_p90 = 0, recall_at_k = 1;
  double index_mb = 0;  // vectors and ids held (the file is about as large)
};

struct IndexBenchResult {
  IndexBenchOptions options;
  int64_t vectors = 0;
  std::vector<IndexBenchRow> rows;
};

IndexBenchResult bench_vector_index(const IndexBenchOptions& options);
nlohmann::json index_bench_json(const IndexBenchResult& r);
std::string index_bench_table(const IndexBenchResult& r);

}  // namespace blip2::search
