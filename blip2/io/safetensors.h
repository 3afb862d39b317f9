// safetensors: read (memory-mapped, zero-copy where possible) and write.
//
// Format: u64 little-endian header length N, N bytes of JSON
//   {"name": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, "__metadata__": {..}}
// then the data buffer; offsets are relative to the start of the buffer.
// Every field of the header is validated against the file before any byte of
// tensor data is touched, so a truncated file or a header that lies about
// sizes or offsets is a CheckpointError, never an out-of-bounds read.
#pragma once

#include <torch/types.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace blip2::io {

enum class DType { F64, F32, F16, BF16, I64, I32, I16, I8, U8, BOOL };

const char* dtype_name(DType d);
size_t dtype_size(DType d);
at::ScalarType to_scalar_type(DType d);

struct TensorInfo {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  uint64_t begin = 0;  // byte offsets into the data buffer
  uint64_t end = 0;
  int64_t numel() const;
};

struct MappedFile;

class SafetensorsFile {
 public:
  // Maps `path` and validates its header. Throws CheckpointError.
  static std::shared_ptr<SafetensorsFile> open(const std::string& path);
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::string& path() const { return path_; }
  const std::map<std::string, TensorInfo>& tensors() const { return tensors_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  bool has(const std::string& name) const { return tensors_.count(name) > 0; }
  const TensorInfo& info(const std::string& name) const;

  // The tensor, in its stored dtype. The mapping is private (copy-on-write),
  // so the result is writable; it shares memory with the file until written.
  // Zero-copy when the data is aligned for its dtype, a copy otherwise.
  at::Tensor tensor(const std::string& name) const;
  // True when tensor(name) will share the mapping rather than copy.
  bool zero_copy(const std::string& name) const;

  uint64_t file_size() const;

 private:
  SafetensorsFile() = default;
  std::string path_;
  std::shared_ptr<MappedFile> file_;  // the whole file, copy-on-write
  uint64_t data_start_ = 0;
  std::map<std::string, TensorInfo> tensors_;
  std::map<std::string, std::string> metadata_;
  std::weak_ptr<SafetensorsFile> self_;
  friend struct SafetensorsFileAccess;
};

// Writes tensors (any device; contiguous copies are made) to `path`
// atomically: a temporary file beside it is written, fsync'ed and renamed.
void save_safetensors(const std::string& path,
                      const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                      const std::map<std::string, std::string>& metadata = {{"format", "pt"}});

// All tensors of a file, materialised (for small files: inputs, outputs).
std::map<std::string, at::Tensor> load_safetensors(const std::string& path);

}  // namespace blip2::io
