#include "blip2/train/feature_cache.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <torch/torch.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <map>
#include <optional>

#include "blip2/model/blip2_model.h"
#include "blip2/util/atomic_file.h"
#include "blip2/util/error.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace blip2 {

namespace {

constexpr char kMagic[8] = {'B', 'L', 'I', 'P', '2', 'V', 'F', 'C'};
constexpr uint64_t kEntryTag = 0x5946454332504c42ULL;  // + slot: an entry found at another slot is no entry
constexpr uint64_t kEntryHeader = 16;                  // tag, checksum
constexpr uint64_t kPage = 4096;
constexpr uint64_t kMaxFingerprint = 1 << 20;

uint64_t round_up(uint64_t n, uint64_t to) { return (n + to - 1) / to * to; }

uint64_t mix(uint64_t h) {
  h ^= h >> 33;
  h *= 0xff51afd7ed558ccdULL;
  h ^= h >> 33;
  h *= 0xc4ceb9fe1a85ec53ULL;
  return h ^ (h >> 33);
}

// A 64-bit hash of n bytes: four lanes over 8-byte words, each step a
// bijection of the lane, so any change of one word changes the result.
uint64_t hash_bytes(const void* data, uint64_t n, uint64_t seed) {
  constexpr uint64_t kMul = 0x9e3779b97f4a7c15ULL;
  const auto* b = static_cast<const unsigned char*>(data);
  uint64_t lane[4] = {seed, seed ^ kMul, seed + kMul, ~seed};
  uint64_t i = 0;
  for (; i + 32 <= n; i += 32)
    for (int k = 0; k < 4; ++k) {
      uint64_t w;
      std::memcpy(&w, b + i + 8 * k, 8);
      lane[k] = (lane[k] ^ w) * kMul;
      lane[k] ^= lane[k] >> 29;
    }
  uint64_t h = mix(seed ^ n);
  for (uint64_t l : lane) h = mix(h ^ l);
  for (; i < n; ++i) h = (h ^ b[i]) * 0x100000001b3ULL;
  return mix(h);
}

uint64_t hash_string(const std::string& s, uint64_t seed) { return hash_bytes(s.data(), s.size(), seed); }

std::string hex(uint64_t v) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(v));
  return buf;
}

// "812.3 MB", "12.41 GB".
std::string size_text(uint64_t bytes) {
  char buf[32];
  const double b = static_cast<double>(bytes);
  if (b < 1e9) std::snprintf(buf, sizeof buf, "%.1f MB", b / 1e6);
  else std::snprintf(buf, sizeof buf, "%.2f GB", b / 1e9);
  return buf;
}

bool pread_all(int fd, void* data, uint64_t n, uint64_t offset) {
  auto* p = static_cast<char*>(data);
  while (n > 0) {
    const ssize_t r = ::pread(fd, p, n, static_cast<off_t>(offset));
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return false;
    p += r, n -= static_cast<uint64_t>(r), offset += static_cast<uint64_t>(r);
  }
  return true;
}

// errno of the failure, 0 on success.
int pwrite_all(int fd, const void* data, uint64_t n, uint64_t offset) {
  const auto* p = static_cast<const char*>(data);
  while (n > 0) {
    const ssize_t r = ::pwrite(fd, p, n, static_cast<off_t>(offset));
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return r < 0 ? errno : EIO;
    p += r, n -= static_cast<uint64_t>(r), offset += static_cast<uint64_t>(r);
  }
  return 0;
}

json preprocessing_json(const ImageProcessorConfig& p) {
  return {{"height", p.height},           {"width", p.width},
          {"do_resize", p.do_resize},     {"do_rescale", p.do_rescale},
          {"do_normalize", p.do_normalize}, {"do_convert_rgb", p.do_convert_rgb},
          {"rescale_factor", p.rescale_factor}, {"image_mean", p.image_mean},
          {"image_std", p.image_std},     {"resample", p.resample}};
}

}  // namespace

// ---------------------------------------------------------------------------
// What an entry depends on

FeatureCacheSpec FeatureCacheSpec::of(Blip2ModelImpl& model, const DatasetImages& images) {
  if (!model.vision_model->has_tower())
    throw ConfigError("data.feature_cache caches the image tower's output, but this model has no image tower; "
                      "remove data.feature_cache");
  FeatureCacheSpec s;
  const auto& vc = model.config().vision;
  const auto& p = images.processor;
  s.shape = {(p.height / vc.patch_size) * (p.width / vc.patch_size) + 1, vc.hidden_size};
  s.dtype = model.vision_model->embeddings->class_embedding.scalar_type();
  // Weights: every tower tensor (post_layernorm is ln_vision, which trains
  // on top of the cached features), by name, dtype, shape and bytes.
  uint64_t weights = 0;
  for (const auto& item : model.vision_model->named_parameters()) {
    if (item.key().rfind("post_layernorm.", 0) == 0) continue;
    const auto t = item.value().detach().contiguous().to(torch::kCPU);
    weights = hash_string(item.key() + " " + c10::toString(t.scalar_type()) + " " + shape_str(t.sizes().vec()), weights);
    weights = hash_bytes(t.data_ptr(), t.numel() * t.element_size(), weights);
  }
  // Images: a slot per distinct file, in order of first appearance; each
  // file's path, size and modification time.
  std::map<std::string, int64_t> slot_of;
  uint64_t files = 0;
  for (const auto& path : images.record_paths) {
    auto [it, fresh] = slot_of.emplace(path, s.slots);
    s.record_slot.push_back(it->second);
    if (!fresh) continue;
    ++s.slots;
    std::error_code size_ec, time_ec;  // a file that cannot be read counts as size 0, time 0
    const auto size = fs::file_size(path, size_ec);
    const auto mtime = fs::last_write_time(path, time_ec).time_since_epoch().count();
    files = hash_string(path + " " + std::to_string(size_ec ? 0 : size) + " " + std::to_string(time_ec ? 0 : mtime),
                        files);
  }
  s.fingerprint = {{"format", 1},
                   {"vision_config", json::parse(model.config().to_json_string()).at("vision_config")},
                   {"vision_weights", hex(weights)},
                   {"dtype", c10::toString(s.dtype)},
                   {"shape", s.shape},
                   {"images", {{"count", s.slots}, {"files", hex(files)}}},
                   {"preprocessing", preprocessing_json(p)}};
  return s;
}

// ---------------------------------------------------------------------------
// Parts

struct FeatureCache::Part {
  std::string path;
  int fd = -1;
  ~Part() {
    if (fd >= 0) ::close(fd);
  }
};

namespace {

// Why the part at `path` cannot be used with `fingerprint` and `total_bytes`
// ("" when it can): bad magic, an unreadable header, another fingerprint
// (naming the fields that differ), a wrong size.
std::string unusable(const std::string& path, const json& fingerprint, uint64_t total_bytes) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return std::string("cannot be read (") + std::strerror(errno) + ")";
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }
  } closer{fd};
  char head[16];
  if (!pread_all(fd, head, sizeof head, 0) || std::memcmp(head, kMagic, sizeof kMagic) != 0)
    return "is not a feature cache part (no header)";
  uint64_t len;
  std::memcpy(&len, head + 8, 8);
  if (len == 0 || len > kMaxFingerprint) return "has a damaged header";
  std::string text(len, '\0');
  if (!pread_all(fd, text.data(), len, 16)) return "has a truncated header";
  const json stored = json::parse(text, nullptr, false);
  if (!stored.is_object()) return "has a damaged header";
  std::string differ;
  for (const auto& [key, value] : fingerprint.items())
    if (!stored.contains(key) || stored.at(key) != value) differ += (differ.empty() ? "" : ", ") + key;
  if (!differ.empty()) return "was built for another " + differ;
  struct stat st {};
  if (::fstat(fd, &st) != 0 || static_cast<uint64_t>(st.st_size) != total_bytes)
    return "is " + std::to_string(st.st_size) + " bytes, expected " + std::to_string(total_bytes) + " (truncated?)";
  return "";
}

// A fresh, empty part: header + sparse slots, written to a temporary name,
// fsync'ed and renamed into place.
void create_part(const std::string& path, const std::string& fingerprint, uint64_t header_bytes, uint64_t total_bytes) {
  // Temporary files of this part that a killed run left behind.
  std::error_code ec;
  const std::string stem = fs::path(path).filename().string() + ".tmp-";
  for (const auto& e : fs::directory_iterator(fs::path(path).parent_path(), ec))
    if (e.path().filename().string().rfind(stem, 0) == 0) fs::remove(e.path(), ec);
  const std::string tmp = path + ".tmp-" + std::to_string(::getpid());
  const int fd = ::open(tmp.c_str(), O_CREAT | O_TRUNC | O_WRONLY | O_CLOEXEC, 0644);
  if (fd < 0)
    throw ConfigError("data.feature_cache: cannot create '" + tmp + "': " + std::strerror(errno) +
                      "; point data.feature_cache at a writable directory");
  std::string head(header_bytes, '\0');
  std::memcpy(head.data(), kMagic, sizeof kMagic);
  const uint64_t len = fingerprint.size();
  std::memcpy(head.data() + 8, &len, 8);
  std::memcpy(head.data() + 16, fingerprint.data(), len);
  int err = pwrite_all(fd, head.data(), head.size(), 0);
  if (!err && ::ftruncate(fd, static_cast<off_t>(total_bytes)) != 0) err = errno;
  if (!err && ::fsync(fd) != 0) err = errno;
  ::close(fd);
  if (!err && ::rename(tmp.c_str(), path.c_str()) != 0) err = errno;
  if (err) {
    ::unlink(tmp.c_str());
    throw ConfigError("data.feature_cache: cannot write '" + path + "': " + std::strerror(err) +
                      "; free space or point data.feature_cache elsewhere");
  }
  fsync_path(fs::path(path).parent_path().string());
}

}  // namespace

FeatureCache::FeatureCache(FeatureCacheSpec spec, Notice notice) : spec_(std::move(spec)), notice_(std::move(notice)) {
  int64_t elements = 1;
  for (auto d : spec_.shape) elements *= d;
  data_bytes_ = static_cast<uint64_t>(elements) * c10::elementSize(spec_.dtype);
  slot_bytes_ = round_up(kEntryHeader + data_bytes_, kPage);
  const std::string fp = spec_.fingerprint.dump();
  header_bytes_ = round_up(16 + fp.size(), kPage);
  seed_ = hash_string(fp, 0);
}

FeatureCache::~FeatureCache() = default;

const std::string& FeatureCache::path() const { return own_->path; }

std::unique_ptr<FeatureCache> FeatureCache::open(const std::string& dir, FeatureCacheSpec spec, int rank,
                                                 const std::function<void()>& barrier, Notice notice) {
  std::unique_ptr<FeatureCache> c(new FeatureCache(std::move(spec), std::move(notice)));
  auto say = [&](const std::string& s) {
    if (c->notice_) c->notice_(s);
  };
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec)
    throw ConfigError("data.feature_cache: cannot create directory '" + dir + "': " + ec.message() +
                      "; point data.feature_cache at a writable directory");
  const uint64_t total = c->header_bytes_ + static_cast<uint64_t>(c->spec_.slots) * c->slot_bytes_;
  const std::string fp = c->spec_.fingerprint.dump();
  const std::string own = (fs::path(dir) / ("part-" + std::to_string(rank) + ".bin")).string();
  const bool exists = fs::exists(own);
  const std::string why = exists ? unusable(own, c->spec_.fingerprint, total) : "";
  if (exists && !why.empty()) say("feature cache '" + own + "' " + why + "; rebuilding it");
  if (!exists || !why.empty()) create_part(own, fp, c->header_bytes_, total);
  c->own_ = std::make_unique<Part>();
  c->own_->path = own;
  c->own_->fd = ::open(own.c_str(), O_RDWR | O_CLOEXEC);
  if (c->own_->fd < 0)
    throw ConfigError("data.feature_cache: cannot open '" + own + "': " + std::strerror(errno) +
                      "; point data.feature_cache at a writable directory");
  if (barrier) barrier();  // every rank's part is now current
  int ignored = 0;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    const std::string name = e.path().filename().string();
    if (e.path().string() == own || name.rfind("part-", 0) != 0 || e.path().extension() != ".bin") continue;
    if (!unusable(e.path().string(), c->spec_.fingerprint, total).empty()) {
      ++ignored;  // a stale part of another run; its owner rebuilds it
      continue;
    }
    auto p = std::make_unique<Part>();
    p->path = e.path().string();
    p->fd = ::open(p->path.c_str(), O_RDONLY | O_CLOEXEC);
    if (p->fd >= 0) c->peers_.push_back(std::move(p));
  }
  // What is cached already, and whether the rest fits on the disk.
  int64_t cached = 0;
  for (int64_t s = 0; s < c->spec_.slots; ++s) {
    auto has = [&](const Part& p) {
      uint64_t tag = 0;
      return pread_all(p.fd, &tag, 8, c->header_bytes_ + static_cast<uint64_t>(s) * c->slot_bytes_) &&
             tag == kEntryTag + static_cast<uint64_t>(s);
    };
    bool found = has(*c->own_);
    for (size_t i = 0; i < c->peers_.size() && !found; ++i) found = has(*c->peers_[i]);
    cached += found;
  }
  const uint64_t need = static_cast<uint64_t>(c->spec_.slots - cached) * c->slot_bytes_;
  const auto space = fs::space(dir, ec);
  if (!ec && need > space.available)
    throw ConfigError("data.feature_cache '" + dir + "' needs " + size_text(need) + " more for " +
                      std::to_string(c->spec_.slots - cached) + " uncached images (" + size_text(c->slot_bytes_) +
                      " each), but its disk has " + size_text(space.available) +
                      " free; free space, point data.feature_cache at a larger disk, or remove it");
  say("feature cache '" + dir + "': " + std::to_string(cached) + " of " + std::to_string(c->spec_.slots) +
      " images cached in " + std::to_string(1 + c->peers_.size()) + " part(s), " + size_text(need) +
      " more for the rest" + (ec ? "" : " (" + size_text(space.available) + " free)") +
      (ignored ? "; " + std::to_string(ignored) + " stale part(s) ignored" : ""));
  return c;
}

int64_t FeatureCache::slot_of(int64_t record) const {
  if (record < 0 || record >= static_cast<int64_t>(spec_.record_slot.size()))
    throw InputError("[feature_cache] record index " + std::to_string(record) + " is outside the data set's " +
                     std::to_string(spec_.record_slot.size()) + " records; the batches come from another data set");
  return spec_.record_slot[static_cast<size_t>(record)];
}

bool FeatureCache::read_entry(const Part& part, int64_t slot, void* data) {
  const uint64_t off = header_bytes_ + static_cast<uint64_t>(slot) * slot_bytes_;
  uint64_t head[2];
  if (!pread_all(part.fd, head, sizeof head, off) || head[0] != kEntryTag + static_cast<uint64_t>(slot)) return false;
  if (pread_all(part.fd, data, data_bytes_, off + kEntryHeader) && hash_bytes(data, data_bytes_, seed_) == head[1])
    return true;
  ++stats_.rejected;
  if (!told_rejected_ && notice_)
    notice_("feature cache '" + part.path + "': an entry fails its checksum (a run killed while writing it, or a "
            "damaged file); it is recomputed");
  told_rejected_ = true;
  return false;
}

at::Tensor FeatureCache::get(int64_t record) {
  const int64_t slot = slot_of(record);
  auto t = torch::empty(spec_.shape, torch::TensorOptions().dtype(spec_.dtype));
  if (read_entry(*own_, slot, t.data_ptr())) return t;
  for (const auto& p : peers_)
    if (read_entry(*p, slot, t.data_ptr())) return t;
  return {};
}

void FeatureCache::put(int64_t record, const at::Tensor& features) {
  const int64_t slot = slot_of(record);
  if (features.sizes().vec() != spec_.shape || features.scalar_type() != spec_.dtype)
    throw InputError("[feature_cache] features of record " + std::to_string(record) + " are " +
                     shape_str(features.sizes().vec()) + " " + c10::toString(features.scalar_type()) +
                     ", the cache holds " + shape_str(spec_.shape) + " " + c10::toString(spec_.dtype));
  if (writes_off_) return;
  const auto t = features.detach().contiguous().to(torch::kCPU);
  const uint64_t off = header_bytes_ + static_cast<uint64_t>(slot) * slot_bytes_;
  // The data first, then the header that makes it valid: a crash between
  // them leaves the old header (no entry, or a checksum that fails).
  const uint64_t head[2] = {kEntryTag + static_cast<uint64_t>(slot), hash_bytes(t.data_ptr(), data_bytes_, seed_)};
  int err = pwrite_all(own_->fd, t.data_ptr(), data_bytes_, off + kEntryHeader);
  if (!err) err = pwrite_all(own_->fd, head, sizeof head, off);
  if (err) {
    writes_off_ = true;
    if (notice_)
      notice_("feature cache '" + own_->path + "': writing failed (" + std::strerror(err) +
              "); training goes on without storing more features");
  }
}

at::Tensor FeatureCache::features(const std::vector<int64_t>& records, const at::Tensor& pixel_values,
                                  const std::function<at::Tensor(const at::Tensor&)>& compute) {
  const auto B = static_cast<int64_t>(records.size());
  if (B == 0 || pixel_values.size(0) != B)
    throw InputError("[feature_cache] the batch has " + std::to_string(pixel_values.size(0)) + " images but " +
                     std::to_string(B) + " record indices; data.feature_cache needs a random-access data set "
                     "(data.annotations) whose batches carry their record indices");
  std::vector<at::Tensor> rows(static_cast<size_t>(B));
  std::vector<int64_t> missing;
  for (int64_t b = 0; b < B; ++b) {
    rows[static_cast<size_t>(b)] = get(records[static_cast<size_t>(b)]);
    if (rows[static_cast<size_t>(b)].defined()) {
      ++stats_.hits;
      rows[static_cast<size_t>(b)] = rows[static_cast<size_t>(b)].to(pixel_values.device());
    } else {
      missing.push_back(b);
    }
  }
  if (!missing.empty()) {
    // The tower runs on the whole batch, as without the cache: a GEMM's
    // rounding can depend on how many rows it has (OpenBLAS's AVX2 kernels
    // treat the rows of a partial block apart), so features computed for a
    // subset of the batch would differ in the last bits. Only the missing rows
    // are taken (and stored); the cached ones stay as read.
    const auto computed = compute(pixel_values);  // (B, N, Dv)
    for (int64_t b : missing) {
      rows[static_cast<size_t>(b)] = computed[b];
      put(records[static_cast<size_t>(b)], rows[static_cast<size_t>(b)]);
    }
    stats_.computed += static_cast<int64_t>(missing.size());
  }
  return torch::stack(rows);
}

}  // namespace blip2
