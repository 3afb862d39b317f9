// The metadata half of a collection index (docs/search.md): one SQLite file
// holding what the index was built from (format version, model fingerprint,
// images folder), one row per image (path, size, mtime, content hash) and
// its query embeddings (Q x E float32, the ITC features), which are the
// source of truth the FAISS file (vector_index.h) is derived from. Every
// change is a transaction: a crash or a full disk leaves the last committed
// state, so `index build` resumes where it stopped.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

struct sqlite3;

namespace blip2::search {

inline constexpr const char* kIndexFormat = "blip2cpp-index";
inline constexpr int kIndexVersion = 1;

// What the index was built from; stored in the `meta` table.
struct CatalogMeta {
  std::string model_fingerprint;  // model_fingerprint(model_dir)
  std::string model_dir;          // as given to build (absolute), used when search gets no --model
  std::string images_root;        // absolute
  int64_t queries = 0;            // Q: vectors per image
  int64_t dim = 0;                // E: ITC embedding size
  int64_t generation = 0;         // bumped by every committed change of the images
};

struct ImageRow {
  int64_t id = 0;    // vector ids are id * queries + q
  std::string path;  // relative to images_root, '/'-separated
  int64_t size = 0, mtime_ns = 0;
  std::string hash;  // content_hash of the file's bytes
  int64_t width = 0, height = 0;
};

class Catalog {
 public:
  // Creates `path` with `meta` (CheckpointError if it exists), or opens an
  // existing one and checks it is an index of this format and version.
  static Catalog create(const std::string& path, const CatalogMeta& meta);
  static Catalog open(const std::string& path);
  Catalog(Catalog&&) noexcept;
  Catalog& operator=(Catalog&&) noexcept;
  ~Catalog();

  const CatalogMeta& meta() const { return meta_; }
  const std::string& path() const { return path_; }

  // Every image row, by id (embeddings not read).
  std::vector<ImageRow> images() const;
  int64_t image_count() const;
  std::optional<ImageRow> image(int64_t id) const;
  // One image's embedding (Q * E floats); empty when there is no such id.
  std::vector<float> embedding(int64_t id) const;
  // Embeddings of every image, in id order: ids (n) and vectors (n * Q * E).
  void embeddings(std::vector<int64_t>& ids, std::vector<float>& vectors) const;

  // One transaction (all or nothing, then generation + 1): inserts `added`
  // (their ids are assigned; `vectors` is added.size() * Q * E floats),
  // replaces the embeddings of `changed` (same layout), updates the size /
  // mtime of `touched` (content unchanged) and deletes `removed` ids.
  struct Change {
    std::vector<ImageRow> added;
    std::vector<float> added_vectors;
    std::vector<ImageRow> changed;  // by id
    std::vector<float> changed_vectors;
    std::vector<ImageRow> touched;  // by id
    std::vector<int64_t> removed;
    bool empty() const { return added.empty() && changed.empty() && touched.empty() && removed.empty(); }
  };
  void apply(Change& change);

  // What the FAISS file beside the catalog was when it was last written:
  // the catalog generation it holds (-1: none yet), its size and hash.
  struct VectorsStamp {
    int64_t generation = -1, bytes = 0;
    std::string hash, kind;
  };
  VectorsStamp vectors_stamp() const;
  void set_vectors_stamp(const VectorsStamp& stamp);

 private:
  Catalog() = default;
  void exec(const char* sql) const;
  void write_meta(const std::string& key, const std::string& value);
  void read_meta();
  // A stored embedding's floats; IndexError naming the image when its size is wrong.
  const float* embedding_blob(const void* blob, size_t bytes, int64_t id) const;
  std::string path_;
  sqlite3* db_ = nullptr;
  CatalogMeta meta_;
};

}  // namespace blip2::search
