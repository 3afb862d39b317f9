// A whole file memory-mapped copy-on-write: tensors can point into it and
// stay writable (pages are copied only when written). When the kernel refuses
// a writable private mapping (commit limit, a file larger than RAM + swap),
// the file is mapped read-only and `read_only` tells callers to copy instead.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

namespace blip2::io {

struct MappedFile {
  uint8_t* data = nullptr;
  uint64_t size = 0;
  bool read_only = false;

  // `what` names the file in errors, e.g. "safetensors file 'model.safetensors'".
  // Throws CheckpointError for a missing, unreadable, non-regular or empty file.
  static std::shared_ptr<MappedFile> open(const std::string& path, const std::string& what);
  ~MappedFile();
  MappedFile() = default;
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
};

}  // namespace blip2::io
