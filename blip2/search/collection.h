// Semantic search over a folder of images (docs/search.md): BLIP-2's
// retrieval recipe as a tool. Every image is embedded once into ITC space
// (all Q query embeddings are kept: BLIP-2 scores an image by its best
// query); a text query ranks the collection by that max-over-queries cosine
// through FAISS, then the ITM head re-ranks the top candidates with
// score = ITM probability + ITC cosine, as LAVIS does.
//
// An index is a directory: catalog.sqlite (catalog.h: metadata and the
// embeddings, transactional) and vectors.faiss (vector_index.h, derived).
//
//   auto model = blip2::Pipeline::load("models/shapes/retrieval");
//   auto idx = blip2::search::Collection::create("photos.idx", "photos/", "models/shapes/retrieval", model);
//   idx.update();
//   for (auto& hit : idx.search("a red circle above a blue star")) ...
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "blip2/blip2.h"
#include "blip2/search/vector_index.h"

namespace blip2::search {

class Catalog;

// A stable identity of a checkpoint directory without reading all of it:
// config.json's bytes, and each weight file's name, size, first and last MiB.
std::string model_fingerprint(const std::string& model_dir);

struct IndexOptions {
  int64_t batch_size = 16;  // images embedded (and committed) together
  bool exact = false;       // keep a flat (exact) FAISS index whatever the size
  // After each committed batch: images embedded so far of those to embed.
  std::function<void(int64_t done, int64_t total, double seconds)> on_progress;
};

struct UpdateReport {
  int64_t added = 0, changed = 0, removed = 0, unchanged = 0;
  int64_t touched = 0;  // size or mtime changed, content the same: not re-embedded
  std::vector<std::pair<std::string, std::string>> failed;  // (path, why): not indexed
  double seconds = 0, embed_seconds = 0;
};

struct SearchOptions {
  int64_t k = 10;       // results
  int64_t rerank = 16;  // ITC candidates re-scored by ITM (0: ITC only); each costs one vision forward
  bool exact = false;   // search every vector even when the index is approximate
  int64_t nprobe = 0;   // IVF lists visited (0: the index's default)
};

struct SearchHit {
  std::string path;         // absolute
  double score = 0;         // itm + itc when re-ranked, else itc
  double itc = 0;           // cosine similarity in ITC space, max over the image's queries (-1..1)
  std::optional<double> itm;  // ITM match probability (0..1), for re-ranked text queries
};

// Where the last search's time went.
struct SearchTimings {
  double encode_ms = 0;  // the query through the model (text or image -> ITC vectors)
  double ann_ms = 0;     // FAISS search and the image-level ranking
  double rerank_ms = 0;  // loading the candidates and ITM (text queries)
};

struct IndexInfo {
  std::string dir, model_dir, model_fingerprint, images_root, vector_kind;
  int64_t images = 0, queries = 0, dim = 0, generation = 0;
};

class Collection {
 public:
  // A new index at `index_dir` over the images under `images_root`, or the
  // one already there if it indexes the same folder with the same model
  // (so `build` after a kill resumes). IndexError otherwise.
  static Collection create(const std::string& index_dir, const std::string& images_root, const std::string& model_dir,
                           Pipeline& model);
  // An existing index; IndexError when it was built by another model than
  // `model_dir`'s (its fingerprint differs).
  static Collection open(const std::string& index_dir, const std::string& model_dir, Pipeline& model);
  // The index's metadata, without a model (e.g. to find the model it was built with).
  static IndexInfo inspect(const std::string& index_dir);

  Collection(Collection&&) noexcept;
  Collection& operator=(Collection&&) noexcept;
  ~Collection();

  // Embeds new and changed images, drops deleted ones, re-embeds nothing
  // else; then rewrites the FAISS file. Unreadable images are reported in
  // `failed` and skipped; the rest is indexed.
  UpdateReport update(const IndexOptions& options = {});

  std::vector<SearchHit> search(const std::string& text, const SearchOptions& options = {});
  // By image: MaxSim, the mean over this image's queries of the best cosine
  // among the other's (no ITM: it needs a text).
  std::vector<SearchHit> search(const Image& image, const SearchOptions& options = {});

  IndexInfo info() const;
  const SearchTimings& last_timings() const { return timings_; }
  // Why the FAISS file was rebuilt when a search first needed it ("" when it was read as is).
  const std::string& rebuilt_reason() const { return rebuilt_reason_; }

 private:
  Collection();
  const VectorIndex& vectors();
  void write_vectors(bool exact);
  const VectorIndex& flat_vectors();
  std::vector<SearchHit> hits_of(const std::vector<std::pair<int64_t, float>>& order) const;

  std::string dir_;
  Pipeline* model_ = nullptr;
  std::unique_ptr<Catalog> catalog_;
  std::unique_ptr<VectorIndex> vectors_, flat_;  // flat_: built on demand for exact searches of an IVF index
  std::string rebuilt_reason_;
  SearchTimings timings_;
};

}  // namespace blip2::search
