#include "blip2/io/tensor_store.h"

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "blip2/util/error.h"

namespace fs = std::filesystem;

namespace blip2::io {


TensorStore TensorStore::open(const std::string& path) {
  fs::path p(path);
  std::error_code ec;
  if (!fs::exists(p, ec))
    throw CheckpointError("checkpoint path '" + path + "' does not exist");
  if (fs::is_directory(p, ec)) {
    if (fs::exists(p / "model.safetensors")) return open((p / "model.safetensors").string());
    if (fs::exists(p / "model.safetensors.index.json"))
      return open((p / "model.safetensors.index.json").string());
    throw CheckpointError("checkpoint directory '" + path +
                          "' holds neither model.safetensors nor model.safetensors.index.json; "
                          "convert .bin/.pth checkpoints to safetensors first");
  }
  const std::string fname = p.filename().string();
  if (fname.size() > 5 && fname.substr(fname.size() - 5) == ".json") {
    TensorStore s;
    std::ifstream in(p);
    nlohmann::json idx;
    try {
      in >> idx;
    } catch (const std::exception& e) {
      throw CheckpointError("shard index '" + path + "' is not valid JSON: " + e.what());
    }
    if (!idx.is_object() || !idx.contains("weight_map") || !idx["weight_map"].is_object())
      throw CheckpointError("shard index '" + path +
                            "' has no \"weight_map\" object mapping tensor names to shard files");
    std::map<std::string, size_t> shard_of_file;
    for (auto it = idx["weight_map"].begin(); it != idx["weight_map"].end(); ++it) {
      if (!it.value().is_string())
        throw CheckpointError("shard index '" + path + "': weight_map[\"" + it.key() +
                              "\"] must be a file name");
      const std::string shard = it.value().get<std::string>();
      if (shard.find('/') != std::string::npos || shard == ".." )
        throw CheckpointError("shard index '" + path + "': shard name '" + shard +
                              "' must be a file name in the same directory");
      auto f = shard_of_file.find(shard);
      if (f == shard_of_file.end()) {
        fs::path sp = p.parent_path() / shard;
        if (!fs::exists(sp))
          throw CheckpointError("shard index '" + path + "' names shard '" + shard +
                                "', which is missing from " + p.parent_path().string());
        s.files_.push_back(SafetensorsFile::open(sp.string()));
        f = shard_of_file.emplace(shard, s.files_.size() - 1).first;
      }
      if (!s.files_[f->second]->has(it.key()))
        throw CheckpointError("shard index '" + path + "' says tensor '" + it.key() +
                              "' is in '" + shard + "', but that shard does not hold it");
      s.where_[it.key()] = f->second;
    }
    s.description_ = path + " (" + std::to_string(s.files_.size()) + " shards)";
    return s;
  }
  TensorStore s;
  s.files_.push_back(SafetensorsFile::open(path));
  for (const auto& [name, info] : s.files_[0]->tensors()) s.where_[name] = 0;
  s.description_ = path;
  return s;
}

std::vector<std::string> TensorStore::names() const {
  std::vector<std::string> out;
  for (const auto& [n, i] : where_) out.push_back(n);
  return out;
}

const TensorInfo& TensorStore::info(const std::string& name) const {
  auto it = where_.find(name);
  if (it == where_.end())
    throw CheckpointError("tensor '" + name + "' is not in checkpoint " + description_);
  return files_[it->second]->info(name);
}

at::Tensor TensorStore::get(const std::string& name) const {
  info(name);
  return files_[where_.at(name)]->tensor(name);
}

bool TensorStore::zero_copy(const std::string& name) const {
  info(name);
  return files_[where_.at(name)]->zero_copy(name);
}

const std::string& TensorStore::file_of(const std::string& name) const {
  info(name);
  return files_[where_.at(name)]->path();
}

uint64_t TensorStore::total_bytes() const {
  uint64_t n = 0;
  for (const auto& f : files_) n += f->file_size();
  return n;
}

}  // namespace blip2::io
