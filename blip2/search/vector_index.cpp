#include "blip2/search/vector_index.h"

#include <faiss/IndexFlat.h>
#include <faiss/IndexIDMap.h>
#include <faiss/IndexIVFFlat.h>
#include <faiss/impl/FaissException.h>
#include <faiss/impl/io.h>
#include <faiss/index_io.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <unordered_map>

#include "blip2/util/atomic_file.h"
#include "blip2/util/error.h"

namespace fs = std::filesystem;

namespace blip2::search {

namespace {

// 64-bit multiply-xorshift over 8-byte words (not cryptographic: it detects
// damage and change, not an adversary who controls both files).
class Hasher {
 public:
  void update(const void* data, size_t n) {
    auto p = static_cast<const uint8_t*>(data);
    total_ += n;
    while (n > 0 && fill_ > 0) {
      buf_[fill_++] = *p++;
      --n;
      if (fill_ == 8) word(load(buf_)), fill_ = 0;
    }
    for (; n >= 8; p += 8, n -= 8) word(load(p));
    while (n > 0) buf_[fill_++] = *p++, --n;
  }
  std::string hex() {
    uint64_t tail = 0;
    std::memcpy(&tail, buf_, fill_);
    uint64_t h = mix(h_ ^ tail ^ (total_ * 0x9E3779B97F4A7C15ull));
    char out[17];
    std::snprintf(out, sizeof out, "%016llx", static_cast<unsigned long long>(h));
    return out;
  }

 private:
  static uint64_t load(const uint8_t* p) {
    uint64_t w;
    std::memcpy(&w, p, 8);
    return w;
  }
  static uint64_t mix(uint64_t x) {
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    return x ^ (x >> 33);
  }
  void word(uint64_t w) { h_ = (h_ ^ mix(w)) * 0x100000001b3ull + 0x9E3779B97F4A7C15ull; }
  uint64_t h_ = 0xcbf29ce484222325ull, total_ = 0;
  uint8_t buf_[8] = {};
  size_t fill_ = 0;
};

// FAISS's serialiser writing straight into an AtomicFile, hashing as it goes.
struct AtomicWriter : faiss::IOWriter {
  explicit AtomicWriter(AtomicFile& f) : file(f) {}
  size_t operator()(const void* ptr, size_t size, size_t nitems) override {
    file.write(ptr, size * nitems);
    hasher.update(ptr, size * nitems);
    return nitems;
  }
  AtomicFile& file;
  Hasher hasher;
};

}  // namespace

std::string content_hash(const void* data, size_t n) {
  Hasher h;
  h.update(data, n);
  return h.hex();
}

std::string file_content_hash(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw InputError(path + ": cannot be read");
  Hasher h;
  std::vector<char> buf(1 << 20);
  while (in) {
    in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
    h.update(buf.data(), static_cast<size_t>(in.gcount()));
  }
  if (in.bad()) throw InputError(path + ": read error");
  return h.hex();
}

const char* vector_index_kind_name(VectorIndexKind kind) { return kind == VectorIndexKind::kFlat ? "flat" : "ivf"; }

VectorIndexKind choose_vector_index(int64_t n_vectors, bool exact) {
  return exact || n_vectors < kApproximateFromVectors ? VectorIndexKind::kFlat : VectorIndexKind::kIvf;
}

VectorIndex::VectorIndex(VectorIndex&&) noexcept = default;
VectorIndex& VectorIndex::operator=(VectorIndex&&) noexcept = default;
VectorIndex::~VectorIndex() = default;

VectorIndex VectorIndex::build(int64_t dim, const std::vector<int64_t>& ids, const std::vector<float>& vectors,
                               VectorIndexKind kind, int64_t nlist) {
  const int64_t n = static_cast<int64_t>(ids.size());
  if (dim < 1 || static_cast<int64_t>(vectors.size()) != n * dim)
    throw InputError("VectorIndex::build: " + std::to_string(vectors.size()) + " floats for " + std::to_string(n) +
                     " vectors of " + std::to_string(dim));
  VectorIndex v;
  v.kind_ = kind;
  try {
    if (kind == VectorIndexKind::kFlat) {
      auto map = std::make_unique<faiss::IndexIDMap2>(new faiss::IndexFlatIP(dim));
      map->own_fields = true;
      if (n > 0) map->add_with_ids(n, vectors.data(), ids.data());
      v.index_ = std::move(map);
    } else {
      // sqrt(n) lists, each trained on >= 39 points (FAISS's minimum).
      if (nlist <= 0) nlist = static_cast<int64_t>(std::lround(std::sqrt(static_cast<double>(std::max<int64_t>(n, 1)))));
      nlist = std::clamp<int64_t>(nlist, 1, std::max<int64_t>(1, n / 39));
      auto quantizer = new faiss::IndexFlatIP(dim);
      auto ivf = std::make_unique<faiss::IndexIVFFlat>(quantizer, dim, nlist, faiss::METRIC_INNER_PRODUCT);
      ivf->own_fields = true;
      // Train on an evenly strided sample of at most 64 points per list.
      int64_t sample = std::min<int64_t>(n, nlist * 64), stride = std::max<int64_t>(1, n / std::max<int64_t>(sample, 1));
      std::vector<float> train;
      train.reserve(static_cast<size_t>(sample * dim));
      for (int64_t i = 0; i < n && static_cast<int64_t>(train.size()) < sample * dim; i += stride)
        train.insert(train.end(), vectors.begin() + i * dim, vectors.begin() + (i + 1) * dim);
      if (n > 0) {
        ivf->train(static_cast<int64_t>(train.size()) / dim, train.data());
        ivf->add_with_ids(n, vectors.data(), ids.data());
      }
      ivf->nprobe = static_cast<size_t>(std::max<int64_t>(1, nlist / 8));
      v.index_ = std::move(ivf);
    }
  } catch (const faiss::FaissException& e) {
    throw InputError(std::string("FAISS could not build the index: ") + e.what());
  }
  return v;
}

VectorIndex VectorIndex::read(const std::string& path, const FileStamp& expected) {
  std::error_code ec;
  auto bytes = fs::file_size(path, ec);
  if (ec) throw IndexError(path + " is missing (" + ec.message() + ")");
  if (static_cast<int64_t>(bytes) != expected.bytes)
    throw IndexError(path + " is " + std::to_string(bytes) + " bytes, the catalog recorded " +
                     std::to_string(expected.bytes) + " (truncated or replaced)");
  // The hash is checked before FAISS parses anything: its reader trusts the sizes it reads.
  if (file_content_hash(path) != expected.hash) throw IndexError(path + " does not match the hash the catalog recorded (damaged)");
  VectorIndex v;
  try {
    v.index_.reset(faiss::read_index(path.c_str()));
  } catch (const faiss::FaissException& e) {
    throw IndexError(path + ": FAISS cannot read it: " + e.what());
  }
  v.kind_ = dynamic_cast<faiss::IndexIVF*>(v.index_.get()) ? VectorIndexKind::kIvf : VectorIndexKind::kFlat;
  return v;
}

FileStamp VectorIndex::write(const std::string& path) const {
  AtomicFile file(path);
  AtomicWriter writer(file);
  try {
    faiss::write_index(index_.get(), &writer);
  } catch (const faiss::FaissException& e) {
    throw IndexError(path + ": FAISS could not serialise the index: " + e.what());
  }
  file.commit();
  return {static_cast<int64_t>(file.offset()), writer.hasher.hex()};
}

std::vector<std::vector<Neighbor>> VectorIndex::search(const float* queries, int64_t nq, int64_t n, int64_t nprobe) const {
  std::vector<std::vector<Neighbor>> out(static_cast<size_t>(std::max<int64_t>(nq, 0)));
  n = std::min(n, size());
  if (nq <= 0 || n <= 0) return out;
  std::vector<float> d(static_cast<size_t>(nq * n));
  std::vector<faiss::Index::idx_t> l(static_cast<size_t>(nq * n));
  faiss::SearchParametersIVF params;
  faiss::SearchParameters* p = nullptr;
  if (auto ivf = dynamic_cast<const faiss::IndexIVF*>(index_.get())) {
    params.nprobe = nprobe > 0 ? static_cast<size_t>(std::min<int64_t>(nprobe, static_cast<int64_t>(ivf->nlist))) : ivf->nprobe;
    p = &params;
  }
  index_->search(nq, queries, n, d.data(), l.data(), p);
  for (int64_t q = 0; q < nq; ++q) {
    auto& row = out[static_cast<size_t>(q)];
    row.reserve(static_cast<size_t>(n));
    for (int64_t j = 0; j < n; ++j) {
      auto id = l[static_cast<size_t>(q * n + j)];
      if (id >= 0) row.push_back({id, d[static_cast<size_t>(q * n + j)]});
    }
  }
  return out;
}

std::vector<std::pair<int64_t, float>> best_groups(const std::vector<std::vector<Neighbor>>& lists, int64_t group,
                                                   int64_t n) {
  std::unordered_map<int64_t, float> best;
  for (auto& list : lists)
    for (auto& nb : list) {
      auto [it, inserted] = best.emplace(nb.id / group, nb.score);
      if (!inserted) it->second = std::max(it->second, nb.score);
    }
  std::vector<std::pair<int64_t, float>> order(best.begin(), best.end());
  std::sort(order.begin(), order.end(),
            [](auto& a, auto& b) { return a.second != b.second ? a.second > b.second : a.first < b.first; });
  if (static_cast<int64_t>(order.size()) > n) order.resize(static_cast<size_t>(n));
  return order;
}

int64_t VectorIndex::size() const { return index_ ? index_->ntotal : 0; }
int64_t VectorIndex::dim() const { return index_ ? index_->d : 0; }
int64_t VectorIndex::nlist() const {
  auto ivf = dynamic_cast<const faiss::IndexIVF*>(index_.get());
  return ivf ? static_cast<int64_t>(ivf->nlist) : 0;
}

}  // namespace blip2::search
