#include "blip2/search/collection.h"

#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <unordered_map>

#include "blip2/config/config.h"
#include "blip2/search/catalog.h"
#include "blip2/util/error.h"
#include "blip2/util/progress.h"

namespace fs = std::filesystem;

namespace blip2::search {

namespace {

constexpr const char* kCatalogFile = "catalog.sqlite";
constexpr const char* kVectorsFile = "vectors.faiss";

std::string absolute_path(const std::string& p) { return fs::weakly_canonical(fs::absolute(p)).string(); }

bool is_image_name(const fs::path& p) {
  std::string e = p.extension().string();
  std::transform(e.begin(), e.end(), e.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return e == ".png" || e == ".jpg" || e == ".jpeg" || e == ".webp";
}

std::vector<uint8_t> read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw InputError(path + ": cannot be read");
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(in), {});
}

int64_t mtime_ns(const fs::path& p) {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(fs::last_write_time(p).time_since_epoch()).count();
}

// One image file found under the root.
struct Found {
  std::string rel;
  int64_t size, mtime_ns;
};

// Every image file under root (recursively, symlinks not followed), sorted;
// `skip` (the index itself, when it lies inside the root) is left out.
std::vector<Found> scan(const std::string& root, const std::string& skip) {
  std::vector<Found> out;
  std::error_code ec;
  fs::recursive_directory_iterator it(root, fs::directory_options::skip_permission_denied, ec), end;
  if (ec) throw InputError(root + ": cannot list the images folder: " + ec.message());
  for (; it != end; it.increment(ec)) {
    if (ec) throw InputError(root + ": error while listing the images folder: " + ec.message());
    if (it->is_directory() && it->path().string() == skip) {
      it.disable_recursion_pending();
      continue;
    }
    if (!it->is_regular_file() || !is_image_name(it->path())) continue;
    out.push_back({fs::relative(it->path(), root).generic_string(), static_cast<int64_t>(it->file_size()),
                   mtime_ns(it->path())});
  }
  std::sort(out.begin(), out.end(), [](const Found& a, const Found& b) { return a.rel < b.rel; });
  return out;
}

void require_retrieval_model(Pipeline& model, const std::string& model_dir) {
  if (!model.has_retrieval_heads())
    throw InputError(model_dir + " has no retrieval heads (ITC / ITM): index and search with a retrieval checkpoint "
                                 "(e.g. models/shapes/retrieval)");
}

void check_fingerprint(const Catalog& c, const std::string& model_dir) {
  std::string fp = model_fingerprint(model_dir);
  if (fp != c.meta().model_fingerprint)
    throw IndexError(c.path() + " was built by the model at " + c.meta().model_dir + " (fingerprint " +
                     c.meta().model_fingerprint + "), not by " + model_dir + " (" + fp +
                     "): search with that model (--model), or build a new index for this one");
}

}  // namespace

std::string model_fingerprint(const std::string& model_dir) {
  std::string acc;
  auto add_file = [&](const fs::path& p, bool whole) {
    std::ifstream in(p, std::ios::binary);
    if (!in) throw InputError(p.string() + ": cannot be read");
    const int64_t size = static_cast<int64_t>(fs::file_size(p)), mib = 1 << 20;
    acc += p.filename().string() + ":" + std::to_string(size) + ":";
    auto take = [&](int64_t from, int64_t n) {
      std::string buf(static_cast<size_t>(n), '\0');
      in.seekg(from);
      in.read(buf.data(), n);
      acc += content_hash(buf.data(), static_cast<size_t>(in.gcount()));
    };
    if (whole || size <= 2 * mib) {
      take(0, size);
    } else {
      take(0, mib);
      take(size - mib, mib);
    }
  };
  fs::path dir(model_dir);
  if (!fs::is_directory(dir)) throw InputError(model_dir + " is not a model directory");
  if (fs::exists(dir / "config.json")) add_file(dir / "config.json", true);
  std::vector<fs::path> weights;
  for (auto& e : fs::directory_iterator(dir)) {
    auto ext = e.path().extension().string();
    if (e.is_regular_file() && (ext == ".safetensors" || ext == ".bin" || ext == ".pth")) weights.push_back(e.path());
  }
  std::sort(weights.begin(), weights.end());
  for (auto& w : weights) add_file(w, false);
  return content_hash(acc.data(), acc.size());
}

Collection::Collection() = default;
Collection::Collection(Collection&&) noexcept = default;
Collection& Collection::operator=(Collection&&) noexcept = default;
Collection::~Collection() = default;

Collection Collection::create(const std::string& index_dir, const std::string& images_root, const std::string& model_dir,
                              Pipeline& model) {
  require_retrieval_model(model, model_dir);
  if (!fs::is_directory(images_root))
    throw InputError(images_root + (fs::exists(images_root) ? " is not a directory" : " does not exist") +
                     ": --images takes the folder of images to index");
  const std::string root = absolute_path(images_root), dir = absolute_path(index_dir);
  if (fs::exists(dir)) {
    if (!fs::is_directory(dir)) throw IndexError(index_dir + " is a file: the index is a directory; choose another --out");
    if (fs::exists(fs::path(dir) / kCatalogFile)) {
      Collection c = open(dir, model_dir, model);
      if (c.catalog_->meta().images_root != root)
        throw IndexError(index_dir + " already indexes " + c.catalog_->meta().images_root + ", not " + root +
                         ": run `blip2 index update " + index_dir + "`, or choose another --out");
      return c;  // resuming an interrupted build
    }
    if (!fs::is_empty(dir)) throw IndexError(index_dir + " exists and is not an index: choose a new or empty --out");
  }
  fs::create_directories(dir);
  CatalogMeta meta;
  meta.model_fingerprint = model_fingerprint(model_dir);
  meta.model_dir = absolute_path(model_dir);
  meta.images_root = root;
  meta.queries = model.config().num_query_tokens;
  meta.dim = model.config().image_text_hidden_size;
  Collection c;
  c.dir_ = dir;
  c.model_ = &model;
  c.catalog_ = std::make_unique<Catalog>(Catalog::create((fs::path(dir) / kCatalogFile).string(), meta));
  return c;
}

Collection Collection::open(const std::string& index_dir, const std::string& model_dir, Pipeline& model) {
  require_retrieval_model(model, model_dir);
  Collection c;
  c.dir_ = absolute_path(index_dir);
  if (!fs::is_directory(c.dir_))
    throw IndexError(index_dir + (fs::exists(c.dir_) ? " is not a directory" : " does not exist") +
                     ": an index is the directory `blip2 index build --out` made");
  c.model_ = &model;
  c.catalog_ = std::make_unique<Catalog>(Catalog::open((fs::path(c.dir_) / kCatalogFile).string()));
  check_fingerprint(*c.catalog_, model_dir);
  if (model.config().num_query_tokens != c.catalog_->meta().queries ||
      model.config().image_text_hidden_size != c.catalog_->meta().dim)
    throw IndexError(index_dir + " holds " + std::to_string(c.catalog_->meta().queries) + " x " +
                     std::to_string(c.catalog_->meta().dim) + " embeddings per image; the model makes " +
                     std::to_string(model.config().num_query_tokens) + " x " +
                     std::to_string(model.config().image_text_hidden_size));
  return c;
}

IndexInfo Collection::inspect(const std::string& index_dir) {
  Catalog c = Catalog::open((fs::path(index_dir) / kCatalogFile).string());
  const auto& m = c.meta();
  return {absolute_path(index_dir), m.model_dir, m.model_fingerprint, m.images_root, c.vectors_stamp().kind,
          c.image_count(), m.queries, m.dim, m.generation};
}

IndexInfo Collection::info() const {
  const auto& m = catalog_->meta();
  return {dir_, m.model_dir, m.model_fingerprint, m.images_root, catalog_->vectors_stamp().kind,
          catalog_->image_count(), m.queries, m.dim, m.generation};
}

namespace {
// Every query vector of the catalog in a new FAISS index (ids image id * Q + q).
VectorIndex index_catalog(const Catalog& catalog, VectorIndexKind kind) {
  std::vector<int64_t> image_ids, ids;
  std::vector<float> v;
  catalog.embeddings(image_ids, v);
  const int64_t q = catalog.meta().queries;
  ids.reserve(image_ids.size() * static_cast<size_t>(q));
  for (int64_t id : image_ids)
    for (int64_t j = 0; j < q; ++j) ids.push_back(id * q + j);
  return VectorIndex::build(catalog.meta().dim, ids, v, kind);
}
}  // namespace

// Read on first use (a build or update that rewrites the file never reads
// it): the FAISS file when it is the one the catalog recorded for its
// current generation; otherwise rebuilt from the catalog's embeddings, of the
// kind it was (an --exact index stays flat), and rewritten when the
// directory is writable.
const VectorIndex& Collection::vectors() {
  if (vectors_) return *vectors_;
  const auto stamp = catalog_->vectors_stamp();
  if (stamp.generation == catalog_->meta().generation) {
    try {
      vectors_ = std::make_unique<VectorIndex>(
          VectorIndex::read((fs::path(dir_) / kVectorsFile).string(), {stamp.bytes, stamp.hash}));
      return *vectors_;
    } catch (const IndexError& e) {
      rebuilt_reason_ = e.what();
    }
  } else if (stamp.generation >= 0) {
    rebuilt_reason_ = "vectors.faiss is older than the catalog (an interrupted update)";
  }
  try {
    write_vectors(stamp.kind == vector_index_kind_name(VectorIndexKind::kFlat));
  } catch (const Error& e) {  // a read-only index still searches, from memory
    rebuilt_reason_ += std::string(rebuilt_reason_.empty() ? "" : "; ") + "not rewritten: " + e.what();
  }
  return *vectors_;
}

void Collection::write_vectors(bool exact) {
  auto kind = choose_vector_index(catalog_->image_count() * catalog_->meta().queries, exact);
  vectors_ = std::make_unique<VectorIndex>(index_catalog(*catalog_, kind));
  flat_.reset();
  FileStamp f = vectors_->write((fs::path(dir_) / kVectorsFile).string());
  catalog_->set_vectors_stamp({catalog_->meta().generation, f.bytes, f.hash, vector_index_kind_name(kind)});
}

const VectorIndex& Collection::flat_vectors() {
  if (vectors().kind() == VectorIndexKind::kFlat) return *vectors_;
  if (!flat_) flat_ = std::make_unique<VectorIndex>(index_catalog(*catalog_, VectorIndexKind::kFlat));
  return *flat_;
}

UpdateReport Collection::update(const IndexOptions& options) {
  if (options.batch_size < 1) throw InputError("index batch size must be >= 1 (got " + std::to_string(options.batch_size) + ")");
  const auto t0 = std::chrono::steady_clock::now();
  const std::string root = catalog_->meta().images_root;
  if (!fs::is_directory(root))
    throw InputError(root + ": the indexed images folder is gone; build a new index for where the images are now");
  UpdateReport report;
  std::unordered_map<std::string, ImageRow> known;
  for (auto& r : catalog_->images()) known.emplace(r.path, r);

  // What changed: rows whose file is gone, files whose size or mtime moved
  // (re-hashed: an identical content only updates the row), new files.
  Catalog::Change bookkeeping;
  struct Pending {
    Found file;
    std::optional<ImageRow> row;
  };
  std::vector<Pending> pending;
  for (auto& f : scan(root, dir_)) {
    auto it = known.find(f.rel);
    if (it == known.end()) {
      pending.push_back({f, std::nullopt});
      continue;
    }
    ImageRow row = it->second;
    known.erase(it);
    if (row.size == f.size && row.mtime_ns == f.mtime_ns) {
      ++report.unchanged;
      continue;
    }
    std::string hash;
    try {
      hash = file_content_hash((fs::path(root) / f.rel).string());
    } catch (const Error& e) {
      report.failed.emplace_back(f.rel, e.what());
      continue;
    }
    if (hash == row.hash) {
      row.size = f.size;
      row.mtime_ns = f.mtime_ns;
      bookkeeping.touched.push_back(row);
    } else {
      pending.push_back({f, row});
    }
  }
  for (auto& [path, row] : known) bookkeeping.removed.push_back(row.id);
  report.removed = static_cast<int64_t>(bookkeeping.removed.size());
  report.touched = static_cast<int64_t>(bookkeeping.touched.size());
  catalog_->apply(bookkeeping);

  // Embedding, one transaction per batch: a kill loses at most one batch.
  const auto te = std::chrono::steady_clock::now();
  const int64_t per = catalog_->meta().queries * catalog_->meta().dim, total = static_cast<int64_t>(pending.size());
  int64_t done = 0;
  for (size_t start = 0; start < pending.size(); start += static_cast<size_t>(options.batch_size)) {
    size_t end = std::min(pending.size(), start + static_cast<size_t>(options.batch_size));
    std::vector<Image> images;
    std::vector<std::pair<ImageRow, bool>> rows;  // (row, is new)
    for (size_t i = start; i < end; ++i) {
      auto& p = pending[i];
      std::string full = (fs::path(root) / p.file.rel).string();
      try {
        auto bytes = read_bytes(full);
        Image img = decode_image(bytes, full);
        ImageRow r = p.row.value_or(ImageRow{});
        r.path = p.file.rel;
        r.size = p.file.size;
        r.mtime_ns = p.file.mtime_ns;
        r.hash = content_hash(bytes.data(), bytes.size());
        r.width = img.width;
        r.height = img.height;
        images.push_back(std::move(img));
        rows.emplace_back(std::move(r), !p.row.has_value());
      } catch (const Error& e) {
        report.failed.emplace_back(p.file.rel, e.what());
      }
    }
    Catalog::Change change;
    if (!images.empty()) {
      auto emb = model_->image_embeddings(images).contiguous();  // (B, Q, E)
      const float* data = emb.data_ptr<float>();
      for (size_t i = 0; i < rows.size(); ++i) {
        auto& [row, is_new] = rows[i];
        auto& vec = is_new ? change.added_vectors : change.changed_vectors;
        vec.insert(vec.end(), data + i * static_cast<size_t>(per), data + (i + 1) * static_cast<size_t>(per));
        (is_new ? change.added : change.changed).push_back(row);
        ++(is_new ? report.added : report.changed);
      }
      catalog_->apply(change);
    }
    done += static_cast<int64_t>(end - start);
    if (options.on_progress) options.on_progress(done, total, seconds_since(te));
  }
  report.embed_seconds = seconds_since(te);
  const auto stamp = catalog_->vectors_stamp();
  const auto kind = choose_vector_index(catalog_->image_count() * catalog_->meta().queries, options.exact);
  if (stamp.generation != catalog_->meta().generation || stamp.kind != vector_index_kind_name(kind))
    write_vectors(options.exact);
  report.seconds = seconds_since(t0);
  return report;
}

// Hits for (image id, score) pairs, in their order.
std::vector<SearchHit> Collection::hits_of(const std::vector<std::pair<int64_t, float>>& order) const {
  std::vector<SearchHit> hits;
  for (auto& [id, score] : order) {
    auto row = catalog_->image(id);
    if (!row) continue;
    SearchHit h;
    h.path = (fs::path(catalog_->meta().images_root) / row->path).string();
    h.itc = h.score = score;
    hits.push_back(std::move(h));
  }
  return hits;
}

namespace {
void check_search_options(const SearchOptions& o) {
  if (o.k < 1) throw InputError("search: k must be >= 1 (got " + std::to_string(o.k) + ")");
  if (o.rerank < 0) throw InputError("search: rerank must be >= 0 (got " + std::to_string(o.rerank) + ")");
  if (o.nprobe < 0) throw InputError("search: nprobe must be >= 0 (got " + std::to_string(o.nprobe) + ")");
}
}  // namespace

std::vector<SearchHit> Collection::search(const std::string& text, const SearchOptions& o) {
  check_search_options(o);
  // The k-th best image's best vector is within the first (k - 1) Q + 1
  // vectors, so n images need at most n Q neighbours (exact for flat).
  const int64_t candidates = std::max(o.k, o.rerank), q = catalog_->meta().queries;
  auto t0 = std::chrono::steady_clock::now();
  auto t = model_->text_embedding(text).contiguous();
  timings_.encode_ms = 1e3 * seconds_since(t0);
  t0 = std::chrono::steady_clock::now();
  const VectorIndex& index = o.exact ? flat_vectors() : vectors();
  auto hits = hits_of(best_groups(index.search(t.data_ptr<float>(), 1, candidates * q, o.nprobe), q, candidates));
  timings_.ann_ms = 1e3 * seconds_since(t0);
  t0 = std::chrono::steady_clock::now();

  // ITM re-ranking of the top `rerank`: score = ITM probability + ITC cosine (LAVIS).
  const size_t n_rerank = std::min(hits.size(), static_cast<size_t>(o.rerank));
  constexpr size_t kBatch = 8;
  for (size_t start = 0; start < n_rerank; start += kBatch) {
    std::vector<Image> images;
    std::vector<size_t> which;
    for (size_t i = start; i < std::min(n_rerank, start + kBatch); ++i) {
      try {
        images.push_back(load_image(hits[i].path));
        which.push_back(i);
      } catch (const Error&) {  // gone or changed since indexing: stays ranked by ITC alone
      }
    }
    auto p = model_->match(images, text);
    for (size_t j = 0; j < which.size(); ++j) {
      hits[which[j]].itm = p[j];
      hits[which[j]].score = p[j] + hits[which[j]].itc;
    }
  }
  // Re-ranked first (as LAVIS, whose other candidates score -100), then by ITC.
  std::stable_sort(hits.begin(), hits.end(), [](const SearchHit& a, const SearchHit& b) {
    if (a.itm.has_value() != b.itm.has_value()) return a.itm.has_value();
    return a.score > b.score;
  });
  if (static_cast<int64_t>(hits.size()) > o.k) hits.resize(static_cast<size_t>(o.k));
  timings_.rerank_ms = 1e3 * seconds_since(t0);
  return hits;
}

// Candidates by the best pair of vectors (what FAISS answers), then scored
// exactly by MaxSim: the mean over the query image's queries of the best
// cosine among the candidate's. The single best pair saturates near 1 for
// unrelated images (two queries reading the same background), the mean does not.
std::vector<SearchHit> Collection::search(const Image& image, const SearchOptions& o) {
  check_search_options(o);
  const int64_t q = catalog_->meta().queries, dim = catalog_->meta().dim;
  auto t0 = std::chrono::steady_clock::now();
  auto e = model_->image_embeddings({image})[0].contiguous();  // (Q, E)
  timings_ = {1e3 * seconds_since(t0), 0, 0};
  t0 = std::chrono::steady_clock::now();
  const VectorIndex& index = o.exact ? flat_vectors() : vectors();
  const int64_t pool = std::max<int64_t>(4 * o.k, 64);
  auto candidates = best_groups(index.search(e.data_ptr<float>(), q, pool * q, o.nprobe), q, pool);
  std::vector<std::pair<int64_t, float>> scored;
  for (auto& [id, pair_best] : candidates) {
    auto v = catalog_->embedding(id);
    if (v.empty()) continue;
    auto other = torch::from_blob(v.data(), {q, dim}, torch::kFloat);
    scored.emplace_back(id, e.matmul(other.t()).amax(1).mean().item<float>());
  }
  std::stable_sort(scored.begin(), scored.end(), [](auto& a, auto& b) { return a.second > b.second; });
  if (static_cast<int64_t>(scored.size()) > o.k) scored.resize(static_cast<size_t>(o.k));
  timings_.ann_ms = 1e3 * seconds_since(t0);
  return hits_of(scored);
}

}  // namespace blip2::search
