// A checkpoint's tensors by name, across one safetensors file or the shards
// listed in model.safetensors.index.json.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "blip2/io/safetensors.h"

namespace blip2::io {

class TensorStore {
 public:
  // `path` is a .safetensors file, a model.safetensors.index.json, or a
  // directory holding model.safetensors or model.safetensors.index.json.
  static TensorStore open(const std::string& path);

  bool has(const std::string& name) const { return where_.count(name) > 0; }
  std::vector<std::string> names() const;
  const TensorInfo& info(const std::string& name) const;
  at::Tensor get(const std::string& name) const;  // stored dtype; zero-copy when possible
  bool zero_copy(const std::string& name) const;
  const std::string& file_of(const std::string& name) const;
  const std::string& description() const { return description_; }
  uint64_t total_bytes() const;

 private:
  std::vector<std::shared_ptr<SafetensorsFile>> files_;
  std::map<std::string, size_t> where_;
  std::string description_;
};

}  // namespace blip2::io
