#include "blip2/io/convert.h"

#include <torch/types.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <regex>
#include <set>
#include <sstream>

#include "blip2/io/safetensors.h"
#include "blip2/io/tensor_store.h"
#include "blip2/io/torch_checkpoint.h"
#include "blip2/io/weight_map.h"
#include "blip2/util/dtype.h"
#include "blip2/util/atomic_file.h"
#include "blip2/util/error.h"

namespace fs = std::filesystem;

namespace blip2::io {

namespace {

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}
bool starts_with(const std::string& s, const std::string& prefix) { return s.compare(0, prefix.size(), prefix) == 0; }

std::optional<at::ScalarType> parse_cast(const std::string& d) {
  if (d.empty()) return std::nullopt;  // keep each tensor's dtype
  try {
    return parse_dtype(d, "convert: dtype");
  } catch (const ConfigError& e) {
    throw InputError(e.what());  // a --dtype flag of `blip2 convert`: an input, not a model config
  }
}

at::Tensor cast(const at::Tensor& t, std::optional<at::ScalarType> dtype) {
  return dtype && t.is_floating_point() && t.scalar_type() != *dtype ? t.to(*dtype) : t;
}

bool is_hf_source(const std::string& src) {
  std::error_code ec;
  if (fs::is_directory(src, ec)) return true;  // TensorStore says what it lacks
  return ends_with(src, ".safetensors") || ends_with(src, ".json");
}

uint64_t file_size(const std::string& p) {
  std::error_code ec;
  auto n = fs::file_size(p, ec);
  return ec ? 0 : static_cast<uint64_t>(n);
}

void make_dirs(const fs::path& dir) {
  std::error_code ec;
  if (dir.empty()) return;
  fs::create_directories(dir, ec);
  if (ec || !fs::is_directory(dir))
    throw CheckpointError("cannot create output directory '" + dir.string() + "': " +
                          (ec ? ec.message() : std::string("a file of that name exists")));
}

void copy_config(const std::string& config, const fs::path& dst, ConvertReport* rep) {
  std::ifstream in(config);
  if (!in) throw ConfigError("config.json '" + config + "' cannot be read; check the path");
  nlohmann::json j;
  try {
    in >> j;
  } catch (const std::exception& e) {
    throw ConfigError("config.json '" + config + "' is not valid JSON: " + e.what());
  }
  if (!j.is_object()) throw ConfigError("config.json '" + config + "' is not a JSON object");
  try {
    copy_atomic(config, dst.string());
  } catch (const Error& e) {
    throw CheckpointError("cannot copy '" + config + "' to '" + dst.string() + "': " + e.what());
  }
  rep->config_output = dst.string();
  rep->bytes_written += file_size(dst.string());
}

ConvertReport lavis_to_hf_dir(const std::string& src, const std::string& dst_dir, const ConvertOptions& o) {
  const auto dtype = parse_cast(o.dtype);
  ConvertReport rep;
  rep.direction = "lavis->hf";
  auto sd = load_torch_checkpoint(src, o.key);
  rep.tensors_read = sd.size();

  std::vector<std::pair<std::string, at::Tensor>> out;
  std::map<std::string, std::string> source_of;  // HF name -> LAVIS name
  // "<...>.self_attn." -> (q_bias, v_bias) and their LAVIS names
  struct Pair {
    at::Tensor q, v;
    std::string qn, vn;
  };
  std::map<std::string, Pair> biases;
  bool any_lavis = false;
  auto emit = [&](const std::string& hf, const std::string& from, const at::Tensor& t) {
    auto [it, fresh] = source_of.emplace(hf, from);
    if (!fresh)
      throw CheckpointError("convert '" + src + "': '" + it->second + "' and '" + from + "' both map to HF name '" + hf +
                            "'; the checkpoint holds the same parameter twice");
    out.emplace_back(hf, cast(t, dtype));
  };
  for (const auto& [name, t] : sd) {
    any_lavis = any_lavis || looks_like_lavis(name);
    const auto hf = lavis_to_hf(name);
    if (!hf) {
      rep.skipped.push_back(name + " (tied copy or buffer: no HF tensor)");
      continue;
    }
    if (ends_with(*hf, ".self_attn.q_bias")) {
      auto& p = biases[hf->substr(0, hf->size() - 6)];
      p.q = t;
      p.qn = name;
    } else if (ends_with(*hf, ".self_attn.v_bias")) {
      auto& p = biases[hf->substr(0, hf->size() - 6)];
      p.v = t;
      p.vn = name;
    } else {
      emit(*hf, name, t);
    }
  }
  for (const auto& [prefix, p] : biases) {
    if (p.q.defined() && p.v.defined()) {
      if (p.q.sizes() != p.v.sizes() || p.q.dim() != 1)
        throw CheckpointError("convert '" + src + "': '" + p.qn + "' " + shape_str(p.q.sizes().vec()) + " and '" + p.vn +
                              "' " + shape_str(p.v.sizes().vec()) + " must be vectors of one length");
      const at::Tensor qkv = at::cat({p.q, at::zeros_like(p.v), p.v.to(p.q.scalar_type())});
      emit(prefix + "qkv.bias", p.qn, qkv);
      rep.merged.push_back(p.qn + " + " + p.vn + " -> " + prefix + "qkv.bias");
    } else {
      // Only one of the pair: kept under its own name (our loader accepts the
      // pair, HF's does not); say so.
      const bool q = p.q.defined();
      emit(prefix + (q ? "q_bias" : "v_bias"), q ? p.qn : p.vn, q ? p.q : p.v);
      rep.notes.push_back("'" + (q ? p.qn : p.vn) + "' has no " + (q ? "v_bias" : "q_bias") +
                          " partner: written unmerged as " + prefix + (q ? "q_bias" : "v_bias"));
    }
  }
  if (!any_lavis && !sd.empty())
    rep.notes.push_back("no LAVIS names (Qformer.*, visual_encoder.*, ...) in '" + src +
                        "': the names were taken as HF names and copied unchanged");
  for (const auto& [prefix, what] : std::vector<std::pair<std::string, std::string>>{
           {"vision_model.", "the vision encoder (LAVIS loads the EVA ViT from its own checkpoint)"},
           {"qformer.", "the Q-Former"},
           {"language_model.", "the language model (LAVIS loads it from the HF hub)"}}) {
    bool found = false;
    for (const auto& [n, t] : out) found = found || starts_with(n, prefix);
    if (!found)
      rep.notes.push_back("no " + prefix + "* tensors: " + what +
                          " is missing; take those tensors from an HF BLIP-2 checkpoint of the same model");
  }

  const fs::path dir(dst_dir);
  make_dirs(dir);
  rep.output = (dir / "model.safetensors").string();
  save_safetensors(rep.output, out,
                   {{"format", "pt"}, {"converted_from", "lavis"}, {"source", fs::path(src).filename().string()}});
  rep.tensors_written = out.size();
  rep.bytes_written = file_size(rep.output);
  if (!o.config_json.empty()) {
    copy_config(o.config_json, dir / "config.json", &rep);
  } else {
    rep.notes.push_back("no config.json written: a LAVIS checkpoint carries no HF config; copy the config.json of the "
                        "matching HF BLIP-2 model (e.g. Salesforce/blip2-opt-2.7b) into " + dir.string() +
                        " (or pass config_json) before loading");
  }
  return rep;
}

ConvertReport hf_to_lavis_file(const std::string& src, const std::string& dst, const ConvertOptions& o) {
  const auto dtype = parse_cast(o.dtype);
  ConvertReport rep;
  rep.direction = "hf->lavis";
  const TensorStore store = TensorStore::open(src);
  const auto names = store.names();
  rep.tensors_read = names.size();
  std::string lm = o.lm;
  if (lm.empty()) {
    lm = "opt";
    for (const auto& n : names)
      if (starts_with(n, "language_model.encoder.") || starts_with(n, "language_model.shared.")) lm = "t5";
  }
  if (lm != "opt" && lm != "t5") throw InputError("convert: lm '" + lm + "' is not \"opt\" or \"t5\"");

  static const std::regex qkv_bias(R"(^(vision_model\.encoder\.layers\.\d+\.self_attn\.)qkv\.bias$)");
  std::vector<std::pair<std::string, at::Tensor>> out;
  std::map<std::string, std::string> source_of;
  auto emit = [&](const std::string& lavis, const std::string& from, const at::Tensor& t) {
    auto [it, fresh] = source_of.emplace(lavis, from);
    if (!fresh)
      throw CheckpointError("convert '" + src + "': '" + it->second + "' and '" + from + "' both map to LAVIS name '" +
                            lavis + "'");
    out.emplace_back(lavis, cast(t, dtype));
  };
  bool has_lm_head = false, has_lm = false;
  for (const auto& name : names) {
    at::Tensor t = store.get(name);
    has_lm = has_lm || starts_with(name, "language_model.");
    has_lm_head = has_lm_head || name == "language_model.lm_head.weight";
    std::smatch m;
    if (std::regex_match(name, m, qkv_bias)) {
      if (t.dim() != 1 || t.size(0) % 3 != 0)
        throw CheckpointError("convert '" + src + "': '" + name + "' has shape " + shape_str(t.sizes().vec()) +
                              ", not [3 * width]");
      const int64_t d = t.size(0) / 3;
      const std::string prefix = m[1].str();
      if (t.slice(0, d, 2 * d).abs().max().item<double>() != 0)
        rep.notes.push_back("'" + name + "' has a non-zero key bias, which LAVIS's ViT has no place for: dropped "
                            "(outputs will differ)");
      const std::string qn = hf_to_lavis(prefix + "q_bias", lm), vn = hf_to_lavis(prefix + "v_bias", lm);
      emit(qn, name, t.slice(0, 0, d).clone());
      emit(vn, name, t.slice(0, 2 * d, 3 * d).clone());
      rep.merged.push_back(name + " -> " + qn + " + " + vn);
      continue;
    }
    emit(hf_to_lavis(name, lm), name, t);
  }
  if (has_lm && !has_lm_head)
    rep.notes.push_back("no language_model.lm_head.weight (tied to the input embeddings in HF): " + lm +
                        "_model.lm_head.weight is not written; LAVIS ties or loads it from the HF hub");
  rep.notes.push_back("LAVIS's load_checkpoint loads with strict=False: buffers such as "
                      "Qformer.bert.embeddings.position_ids are not written and keep their defaults");

  fs::path out_path(dst);
  if (!ends_with(dst, ".pth")) {
    make_dirs(out_path);
    out_path /= "model.pth";
  } else {
    make_dirs(out_path.parent_path());
  }
  rep.output = out_path.string();
  save_torch_checkpoint(rep.output, out);
  rep.tensors_written = out.size();
  rep.bytes_written = file_size(rep.output);
  if (!o.config_json.empty())
    rep.notes.push_back("config_json is ignored when converting to LAVIS (LAVIS configs are YAML)");
  return rep;
}

}  // namespace

std::string ConvertReport::summary() const {
  std::ostringstream os;
  os << direction << ": wrote " << tensors_written << " tensors (of " << tensors_read << " read) to " << output << ", "
     << bytes_written << " bytes\n";
  if (!config_output.empty()) os << "  config: " << config_output << "\n";
  for (const auto& m : merged) os << "  merged: " << m << "\n";
  for (const auto& s : skipped) os << "  skipped: " << s << "\n";
  for (const auto& n : notes) os << "  note: " << n << "\n";
  return os.str();
}

ConvertReport convert_checkpoint(const std::string& src, const std::string& dst_dir, const ConvertOptions& options) {
  if (dst_dir.empty()) throw InputError("convert: the destination is empty");
  std::error_code ec;
  if (!fs::exists(src, ec)) throw CheckpointError("convert: source '" + src + "' does not exist");
  if (is_hf_source(src)) return hf_to_lavis_file(src, dst_dir, options);
  return lavis_to_hf_dir(src, dst_dir, options);
}

}  // namespace blip2::io
