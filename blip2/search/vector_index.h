// The vector half of a collection index: a FAISS inner-product index over
// every image's query embeddings (vector id = image id * Q + q), exact
// (flat) for small collections and inverted-file (IVF) above
// kApproximateFromVectors. It is derived from the catalog (catalog.h), so a
// missing, stale or damaged file is rebuilt rather than trusted: the file's
// size and hash are recorded in the catalog when it is written, and checked
// before FAISS parses it. FAISS headers stay in vector_index.cpp.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace faiss {
struct Index;
}

namespace blip2::search {

enum class VectorIndexKind { kFlat, kIvf };
const char* vector_index_kind_name(VectorIndexKind kind);

// Collections with fewer vectors than this use an exact flat index; more,
// an IVF index (docs/performance.md "Collection search" has the measurements).
inline constexpr int64_t kApproximateFromVectors = 250'000;
VectorIndexKind choose_vector_index(int64_t n_vectors, bool exact);

struct Neighbor {
  int64_t id;
  float score;  // inner product (a cosine: the vectors are L2-normalised)
};

// What write() wrote: checked by read() before FAISS sees the bytes.
struct FileStamp {
  int64_t bytes = 0;
  std::string hash;
};

class VectorIndex {
 public:
  // vectors: ids.size() * dim floats. An IVF index is trained on (a sample
  // of) the same vectors; `nlist` 0 = 4 sqrt(n) lists.
  static VectorIndex build(int64_t dim, const std::vector<int64_t>& ids, const std::vector<float>& vectors,
                           VectorIndexKind kind, int64_t nlist = 0);
  // IndexError when the file is missing or does not match `expected`.
  static VectorIndex read(const std::string& path, const FileStamp& expected);
  VectorIndex(VectorIndex&&) noexcept;
  VectorIndex& operator=(VectorIndex&&) noexcept;
  ~VectorIndex();

  // Crash-safe (temporary file, fsync, rename): the old file stays on failure.
  FileStamp write(const std::string& path) const;

  // The n best neighbours of each of the nq query rows (nq * dim floats),
  // best first. nprobe (IVF): lists visited; 0 = the default (nlist / 8).
  std::vector<std::vector<Neighbor>> search(const float* queries, int64_t nq, int64_t n, int64_t nprobe = 0) const;

  int64_t size() const;
  int64_t dim() const;
  int64_t nlist() const;  // IVF lists (0 for flat)
  VectorIndexKind kind() const { return kind_; }

 private:
  VectorIndex() = default;
  std::unique_ptr<faiss::Index> index_;
  VectorIndexKind kind_ = VectorIndexKind::kFlat;
};

// Group-level ranking of neighbour lists: vector id / group is the group
// (the image), which scores its best vector over every list; the n best
// groups (id, score), best first, ties by id.
std::vector<std::pair<int64_t, float>> best_groups(const std::vector<std::vector<Neighbor>>& lists, int64_t group,
                                                   int64_t n);

// A 64-bit hash of bytes as 16 hex digits (content hashes of images and index files).
std::string content_hash(const void* data, size_t n);
std::string file_content_hash(const std::string& path);

}  // namespace blip2::search
