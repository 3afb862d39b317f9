#include "blip2/io/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>

#include "blip2/io/mapped_file.h"
#include "blip2/util/atomic_file.h"
#include "blip2/util/error.h"

namespace blip2::io {

using nlohmann::json;

namespace {

struct DTypeEntry {
  DType dtype;
  const char* name;
  size_t size;
  at::ScalarType scalar;
};

const DTypeEntry kDTypes[] = {
    {DType::F64, "F64", 8, at::kDouble},  {DType::F32, "F32", 4, at::kFloat},
    {DType::F16, "F16", 2, at::kHalf},    {DType::BF16, "BF16", 2, at::kBFloat16},
    {DType::I64, "I64", 8, at::kLong},    {DType::I32, "I32", 4, at::kInt},
    {DType::I16, "I16", 2, at::kShort},   {DType::I8, "I8", 1, at::kChar},
    {DType::U8, "U8", 1, at::kByte},      {DType::BOOL, "BOOL", 1, at::kBool},
};

const DTypeEntry& entry(DType d) {
  for (const auto& e : kDTypes)
    if (e.dtype == d) return e;
  throw Error("unknown safetensors dtype");
}

std::string supported_dtypes() {
  std::string s;
  for (const auto& e : kDTypes) s += (s.empty() ? "" : ", ") + std::string(e.name);
  return s;
}

DType from_scalar_type(at::ScalarType t, const std::string& name) {
  for (const auto& e : kDTypes)
    if (e.scalar == t) return e.dtype;
  throw InputError("save_safetensors: tensor '" + name + "' has dtype " +
                   std::string(c10::toString(t)) + ", which safetensors cannot hold");
}

// Multiplication with overflow detection, for sizes taken from a header.
bool mul_overflows(uint64_t a, uint64_t b, uint64_t* out) {
  if (a != 0 && b > UINT64_MAX / a) return true;
  *out = a * b;
  return false;
}

}  // namespace

const char* dtype_name(DType d) { return entry(d).name; }
size_t dtype_size(DType d) { return entry(d).size; }
at::ScalarType to_scalar_type(DType d) { return entry(d).scalar; }

int64_t TensorInfo::numel() const {
  int64_t n = 1;
  for (auto s : shape) n *= s;
  return n;
}

struct SafetensorsFileAccess {
  static std::shared_ptr<SafetensorsFile> make() {
    return std::shared_ptr<SafetensorsFile>(new SafetensorsFile());
  }
};

std::shared_ptr<SafetensorsFile> SafetensorsFile::open(const std::string& path) {
  auto f = SafetensorsFileAccess::make();
  f->path_ = path;
  f->self_ = f;
  const std::string where = "safetensors file '" + path + "'";

  f->file_ = MappedFile::open(path, where);
  if (f->file_->size < 8)
    throw CheckpointError(where + " is truncated: " + std::to_string(f->file_->size) +
                          " bytes, a safetensors file has at least an 8-byte header length");
  const uint64_t file_size = f->file_->size;
  const auto* bytes = f->file_->data;

  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | bytes[i];
  if (n > file_size - 8)
    throw CheckpointError(where + " is truncated or not a safetensors file: header length " +
                          std::to_string(n) + " but the file has only " +
                          std::to_string(file_size - 8) + " bytes after it");
  f->data_start_ = 8 + n;
  const uint64_t data_size = file_size - f->data_start_;

  json header;
  try {
    header = json::parse(reinterpret_cast<const char*>(bytes + 8),
                         reinterpret_cast<const char*>(bytes + 8 + n));
  } catch (const std::exception& e) {
    throw CheckpointError(where + " has a header that is not valid JSON (" + e.what() +
                          "); the file is corrupt or not a safetensors file");
  }
  if (!header.is_object())
    throw CheckpointError(where + ": header must be a JSON object");

  std::vector<std::pair<uint64_t, uint64_t>> ranges;
  for (auto it = header.begin(); it != header.end(); ++it) {
    const std::string& name = it.key();
    const json& v = it.value();
    if (name == "__metadata__") {
      if (!v.is_object()) throw CheckpointError(where + ": __metadata__ must be an object");
      for (auto m2 = v.begin(); m2 != v.end(); ++m2)
        if (m2.value().is_string()) f->metadata_[m2.key()] = m2.value().get<std::string>();
      continue;
    }
    const std::string tw = where + ", tensor '" + name + "'";
    if (!v.is_object() || !v.contains("dtype") || !v.contains("shape") ||
        !v.contains("data_offsets"))
      throw CheckpointError(tw + ": entry needs dtype, shape and data_offsets");
    TensorInfo info;
    info.name = name;
    if (!v["dtype"].is_string()) throw CheckpointError(tw + ": dtype must be a string");
    const std::string dt = v["dtype"].get<std::string>();
    bool found = false;
    for (const auto& e : kDTypes)
      if (dt == e.name) {
        info.dtype = e.dtype;
        found = true;
      }
    if (!found)
      throw CheckpointError(tw + ": dtype " + dt + " is not supported (supported: " +
                            supported_dtypes() + ")");
    if (!v["shape"].is_array()) throw CheckpointError(tw + ": shape must be a list");
    uint64_t numel = 1;
    for (const auto& d : v["shape"]) {
      if (!d.is_number_unsigned())
        throw CheckpointError(tw + ": shape entries must be non-negative integers, got " +
                              d.dump());
      uint64_t dim = d.get<uint64_t>();
      if (dim > static_cast<uint64_t>(INT64_MAX) || mul_overflows(numel, dim, &numel))
        throw CheckpointError(tw + ": shape " + v["shape"].dump() + " overflows");
      info.shape.push_back(static_cast<int64_t>(dim));
    }
    const json& off = v["data_offsets"];
    if (!off.is_array() || off.size() != 2 || !off[0].is_number_unsigned() ||
        !off[1].is_number_unsigned())
      throw CheckpointError(tw + ": data_offsets must be two non-negative integers");
    info.begin = off[0].get<uint64_t>();
    info.end = off[1].get<uint64_t>();
    uint64_t nbytes = 0;
    if (mul_overflows(numel, entry(info.dtype).size, &nbytes))
      throw CheckpointError(tw + ": byte size overflows");
    if (info.end < info.begin || info.end - info.begin != nbytes)
      throw CheckpointError(tw + ": data_offsets [" + std::to_string(info.begin) + ", " +
                            std::to_string(info.end) + "] span " +
                            std::to_string(info.end >= info.begin ? info.end - info.begin : 0) +
                            " bytes but " + dt + " " + shape_str(info.shape) + " needs " +
                            std::to_string(nbytes));
    if (info.end > data_size)
      throw CheckpointError(tw + ": data ends at byte " + std::to_string(info.end) +
                            " of the data buffer, but the file holds only " +
                            std::to_string(data_size) + " bytes of data (truncated file?)");
    ranges.emplace_back(info.begin, info.end);
    f->tensors_.emplace(name, std::move(info));
  }
  std::sort(ranges.begin(), ranges.end());
  for (size_t i = 1; i < ranges.size(); ++i)
    if (ranges[i].first < ranges[i - 1].second && ranges[i].first != ranges[i].second &&
        ranges[i - 1].first != ranges[i - 1].second)
      throw CheckpointError(where + ": tensors overlap in the data buffer (bytes " +
                            std::to_string(ranges[i].first) + ".." +
                            std::to_string(ranges[i - 1].second) + ")");
  return f;
}

SafetensorsFile::~SafetensorsFile() = default;

uint64_t SafetensorsFile::file_size() const { return file_->size; }

const TensorInfo& SafetensorsFile::info(const std::string& name) const {
  auto it = tensors_.find(name);
  if (it == tensors_.end())
    throw CheckpointError("tensor '" + name + "' is not in safetensors file '" + path_ + "'");
  return it->second;
}

bool SafetensorsFile::zero_copy(const std::string& name) const {
  const auto& i = info(name);
  auto addr = reinterpret_cast<uintptr_t>(file_->data) + data_start_ + i.begin;
  return !file_->read_only && addr % dtype_size(i.dtype) == 0;
}

at::Tensor SafetensorsFile::tensor(const std::string& name) const {
  const auto& i = info(name);
  auto opts = at::TensorOptions().dtype(to_scalar_type(i.dtype));
  uint8_t* ptr = file_->data + data_start_ + i.begin;
  if (i.numel() == 0) return at::empty(i.shape, opts);
  if (!zero_copy(name)) {
    auto t = at::empty(i.shape, opts);
    std::memcpy(t.data_ptr(), ptr, i.end - i.begin);
    return t;
  }
  // The tensor keeps the mapping alive.
  auto keep = self_.lock();
  return at::from_blob(ptr, i.shape, [keep](void*) {}, opts);
}

void save_safetensors(const std::string& path,
                      const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                      const std::map<std::string, std::string>& metadata) {
  json header = json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::vector<at::Tensor> data;
  uint64_t offset = 0;
  // Wider elements first (stable otherwise): every tensor then starts at a
  // multiple of its element size (the buffer starts 8-aligned), so a file with
  // I8 tensors of odd sizes still maps its F32 ones zero-copy.
  std::vector<size_t> order(tensors.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    return tensors[a].second.element_size() > tensors[b].second.element_size();
  });
  for (size_t i : order) {
    const auto& [name, t0] = tensors[i];
    if (name == "__metadata__") throw InputError("save_safetensors: reserved tensor name");
    if (header.contains(name))
      throw InputError("save_safetensors: tensor name '" + name + "' appears twice");
    at::Tensor t = t0.detach().to(at::kCPU).contiguous();
    DType d = from_scalar_type(t.scalar_type(), name);
    uint64_t nbytes = static_cast<uint64_t>(t.numel()) * dtype_size(d);
    header[name] = {{"dtype", dtype_name(d)},
                    {"shape", t.sizes().vec()},
                    {"data_offsets", {offset, offset + nbytes}}};
    offset += nbytes;
    data.push_back(t);
  }
  std::string h = header.dump();
  while ((8 + h.size()) % 8 != 0) h.push_back(' ');

  AtomicFile f(path);
  uint8_t len[8];
  uint64_t n = h.size();
  for (int i = 0; i < 8; ++i) len[i] = static_cast<uint8_t>((n >> (8 * i)) & 0xff);
  f.write(len, 8);
  f.write(h);
  for (const auto& t : data)
    if (t.numel() > 0) f.write(t.data_ptr(), t.numel() * t.element_size());
  f.commit();
}

std::map<std::string, at::Tensor> load_safetensors(const std::string& path) {
  auto f = SafetensorsFile::open(path);
  std::map<std::string, at::Tensor> out;
  for (const auto& [name, info] : f->tensors()) out[name] = f->tensor(name).clone();
  return out;
}

}  // namespace blip2::io
