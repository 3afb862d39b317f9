// blip2 index build|update|info|bench, blip2 search: collection search
// (blip2/search/collection.h) from the command line.
#include <unistd.h>

#include <cstdio>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>

#include "apps/blip2/cli.h"
#include "blip2/search/collection.h"
#include "blip2/search/index_bench.h"
#include "blip2/util/progress.h"

namespace blip2::cli {

namespace {

struct IndexFlags {
  ModelFlags model;
  search::IndexOptions options;
  bool json = false;
};

void add_index_flags(CLI::App* app, IndexFlags& f) {
  add_model_flags(app, f.model);
  app->add_option("--batch-size", f.options.batch_size,
                  "images embedded and committed together (default " + std::to_string(f.options.batch_size) + ")");
  app->add_flag("--exact", f.options.exact, "keep an exact (flat) FAISS index however large the collection");
  app->add_flag("--json", f.json, "print the report as one JSON object");
}

// "indexing 120/500 [#####-----] ... ETA" on a terminal; nothing otherwise.
void show_progress(int64_t done, int64_t total, double seconds) {
  if (!isatty(2) || total == 0) return;
  std::fprintf(stderr, "\rembedding %s %.1f img/s ", progress_bar(done, total, seconds).c_str(),
               seconds > 0 ? static_cast<double>(done) / seconds : 0.0);
  if (done == total) std::fprintf(stderr, "\n");
}

int report(const search::UpdateReport& r, const search::IndexInfo& info, bool json) {
  for (const auto& [path, why] : r.failed) std::fprintf(stderr, "blip2: skipped %s: %s\n", path.c_str(), why.c_str());
  const int64_t embedded = r.added + r.changed;
  const double rate = r.embed_seconds > 0 ? static_cast<double>(embedded) / r.embed_seconds : 0.0;
  if (json) {
    nlohmann::json failed = nlohmann::json::array();
    for (const auto& [path, why] : r.failed) failed.push_back({{"path", path}, {"error", why}});
    std::cout << nlohmann::json{{"index", info.dir},          {"images", info.images},      {"added", r.added},
                                {"changed", r.changed},       {"removed", r.removed},       {"unchanged", r.unchanged},
                                {"touched", r.touched},       {"failed", failed},           {"seconds", r.seconds},
                                {"embed_seconds", r.embed_seconds}, {"images_per_s", rate}, {"vectors", info.vector_kind}}
                     .dump()
              << "\n";
  } else {
    std::printf("%s: %lld images (%s index); added %lld, changed %lld, removed %lld, unchanged %lld", info.dir.c_str(),
                static_cast<long long>(info.images), info.vector_kind.c_str(), static_cast<long long>(r.added),
                static_cast<long long>(r.changed), static_cast<long long>(r.removed),
                static_cast<long long>(r.unchanged + r.touched));
    if (embedded > 0) std::printf("; embedded %.1f images/s", rate);
    std::printf("\n");
  }
  if (!r.failed.empty()) {
    std::fprintf(stderr, "blip2: error: %zu image(s) could not be indexed (listed above); the others were\n", r.failed.size());
    return 1;
  }
  return 0;
}

// The update with a progress bar, then its report.
int run_update(search::Collection& index, const IndexFlags& flags) {
  auto options = flags.options;
  options.on_progress = show_progress;
  auto rep = index.update(options);
  return report(rep, index.info(), flags.json);
}

// --model, else the model the index was built with.
std::string model_for(const ModelFlags& flags, const std::string& index) {
  return flags.model.empty() ? search::Collection::inspect(index).model_dir : flags.dir();
}

}  // namespace

void add_search_commands(Registry& r) {
  CLI::App* group = r.group("index", "build and update image-search indexes (FAISS + SQLite), see docs/search.md");

  struct Build {
    IndexFlags flags;
    std::string images, out;
  };
  auto b = std::make_shared<Build>();
  auto* build = r.add(group, "build", "embed every image of a folder into a new index (resumes an interrupted build)", [b, &r] {
    const std::string dir = b->flags.model.dir();
    auto model = load_pipeline(b->flags.model, r.verbose);
    auto index = search::Collection::create(b->out, b->images, dir, model);
    return run_update(index, b->flags);
  });
  add_index_flags(build, b->flags);
  build->add_option("--images", b->images, "folder of images (PNG, JPEG, WebP; searched recursively)")->required();
  build->add_option("--out", b->out, "index directory to create")->required();

  struct Update {
    IndexFlags flags;
    std::string index;
  };
  auto u = std::make_shared<Update>();
  auto* update = r.add(group, "update", "add new and changed images, drop deleted ones; re-embed nothing else", [u, &r] {
    ModelFlags mf = u->flags.model;
    mf.model = model_for(mf, u->index);
    auto model = load_pipeline(mf, r.verbose);
    auto index = search::Collection::open(u->index, mf.model, model);
    return run_update(index, u->flags);
  });
  add_index_flags(update, u->flags);
  update->add_option("index", u->index, "index directory")->required();

  struct Info {
    std::string index;
    bool json = false;
  };
  auto in = std::make_shared<Info>();
  auto* info = r.add(group, "info", "what an index holds and which model built it", [in] {
    auto i = search::Collection::inspect(in->index);
    if (in->json) {
      std::cout << nlohmann::json{{"index", i.dir}, {"model_dir", i.model_dir}, {"model_fingerprint", i.model_fingerprint},
                                  {"images_root", i.images_root}, {"images", i.images}, {"queries", i.queries},
                                  {"dim", i.dim}, {"vectors", i.vector_kind}, {"generation", i.generation}}
                       .dump()
                << "\n";
    } else {
      std::printf("index      %s\nimages     %lld under %s\nembeddings %lld x %lld per image (%s FAISS index)\nmodel      %s (fingerprint %s)\n",
                  i.dir.c_str(), static_cast<long long>(i.images), i.images_root.c_str(), static_cast<long long>(i.queries),
                  static_cast<long long>(i.dim), i.vector_kind.c_str(), i.model_dir.c_str(), i.model_fingerprint.c_str());
    }
    return 0;
  });
  info->add_option("index", in->index, "index directory")->required();
  info->add_flag("--json", in->json, "print one JSON object");

  auto bo = std::make_shared<search::IndexBenchOptions>();
  auto bj = std::make_shared<bool>(false);
  auto* bench = r.add(group, "bench", "FAISS flat vs IVF on synthetic vectors: build time, query latency, recall@k", [bo, bj] {
    Progress progress("benchmarking " + std::to_string(bo->images) + " images x " + std::to_string(bo->queries) + " vectors");
    auto res = search::bench_vector_index(*bo);
    progress.done();
    std::cout << (*bj ? search::index_bench_json(res).dump() : search::index_bench_table(res)) << "\n";
    return 0;
  });
  bench->add_option("--images", bo->images, "synthetic images (default " + std::to_string(bo->images) + ")");
  bench->add_option("--queries", bo->queries, "vectors per image (default " + std::to_string(bo->queries) + ")");
  bench->add_option("--dim", bo->dim, "vector size (default " + std::to_string(bo->dim) + ")");
  bench->add_option("--searches", bo->searches, "timed text queries (default " + std::to_string(bo->searches) + ")");
  bench->add_option("--k", bo->k, "recall@k (default " + std::to_string(bo->k) + ")");
  bench->add_option("--seed", bo->seed, "vector seed");
  bench->add_flag("--json", *bj, "print one JSON object");

  struct Search {
    ModelFlags model;
    search::SearchOptions options;
    std::string index, text, image;
    bool json = false;
  };
  auto s = std::make_shared<Search>();
  auto* search = r.add(nullptr, "search", "find the images of an index that match a text (or an image)", [s, &r] {
    if (s->text.empty() == s->image.empty())
      throw InputError(s->text.empty() ? "search: give a query text, or --image FILE" : "search: give a text or --image, not both");
    ModelFlags mf = s->model;
    mf.model = model_for(mf, s->index);
    auto model = load_pipeline(mf, r.verbose);
    auto index = search::Collection::open(s->index, mf.model, model);
    auto hits = s->image.empty() ? index.search(s->text, s->options) : index.search(load_image(s->image), s->options);
    if (!index.rebuilt_reason().empty())
      std::fprintf(stderr, "blip2: rebuilt the vector index from the catalog: %s\n", index.rebuilt_reason().c_str());
    if (s->json) {
      nlohmann::json rows = nlohmann::json::array();
      for (size_t i = 0; i < hits.size(); ++i) {
        nlohmann::json h = {{"rank", i + 1}, {"path", hits[i].path}, {"score", hits[i].score}, {"itc_cosine", hits[i].itc}};
        h["itm_probability"] = hits[i].itm ? nlohmann::json(*hits[i].itm) : nlohmann::json(nullptr);
        rows.push_back(h);
      }
      const auto& t = index.last_timings();
      std::cout << nlohmann::json{{"query", s->image.empty() ? s->text : s->image}, {"by", s->image.empty() ? "text" : "image"},
                                  {"results", rows},
                                  {"timings_ms", {{"encode", t.encode_ms}, {"ann", t.ann_ms}, {"rerank", t.rerank_ms}}}}
                       .dump()
                << "\n";
      return 0;
    }
    std::printf("%s\n", s->image.empty()
                            ? "score = ITM match probability (0..1) + ITC cosine similarity (-1..1), as LAVIS; "
                              "candidates below --rerank are ranked by the cosine alone"
                            : "score = MaxSim in ITC space: the mean over the query image's queries of the best cosine among the result's");
    std::printf("%4s  %7s  %7s  %7s  %s\n", "rank", "score", "itc_cos", "itm_p", "image");
    for (size_t i = 0; i < hits.size(); ++i) {
      char itm[16] = "      -";
      if (hits[i].itm) std::snprintf(itm, sizeof itm, "%7.4f", *hits[i].itm);
      std::printf("%4zu  %7.4f  %7.4f  %s  %s\n", i + 1, hits[i].score, hits[i].itc, itm, hits[i].path.c_str());
    }
    return 0;
  });
  add_model_flags(search, s->model);
  search->add_option("--index", s->index, "index directory (blip2 index build)")->required();
  search->add_option("text", s->text, "what to look for, e.g. \"a red circle above a blue star\"");
  search->add_option("--image", s->image, "search by this image instead of a text");
  search->add_option("-k,--k", s->options.k, "results (default " + std::to_string(s->options.k) + ")");
  search->add_option("--rerank", s->options.rerank,
                     "ITC candidates re-scored by ITM, each one vision forward; 0 = ITC only (default " +
                         std::to_string(s->options.rerank) + ")");
  search->add_flag("--exact", s->options.exact, "search every vector even when the index is approximate (IVF)");
  search->add_option("--nprobe", s->options.nprobe, "IVF lists visited (default: the index's)");
  search->add_flag("--json", s->json, "print one JSON object");
}

}  // namespace blip2::cli
