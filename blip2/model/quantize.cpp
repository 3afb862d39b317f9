#include "blip2/model/quantize.h"

#include <filesystem>
#include <utility>
#include <vector>

#include "blip2/io/safetensors.h"
#include "blip2/model/blip2_model.h"
#include "blip2/nn/quant.h"
#include "blip2/util/error.h"

namespace fs = std::filesystem;

namespace blip2 {

namespace {
bool starts_with(const std::string& s, const char* p) { return s.rfind(p, 0) == 0; }

// Weight files of a checkpoint directory (not copied: the output holds its own).
bool weight_file(const fs::path& p) {
  const auto name = p.filename().string();
  const auto ext = p.extension().string();
  return ext == ".safetensors" || ext == ".bin" || ext == ".pth" || ext == ".pt" ||
         name == "model.safetensors.index.json" || name == "pytorch_model.bin.index.json";
}
}  // namespace

bool int8_quantized(const std::string& name, const LanguageModel* lm) {
  const std::string in_lm = "language_model.";
  if (!(starts_with(name, "vision_model.") || starts_with(name, in_lm.c_str())) || name.size() <= 7 ||
      name.compare(name.size() - 7, 7, ".weight") != 0)
    return false;
  return !(lm && starts_with(name, in_lm.c_str()) && lm->keeps_float(name.substr(in_lm.size())));
}

std::map<std::string, torch::nn::Module*> matrix_modules(torch::nn::Module& model) {
  std::map<std::string, torch::nn::Module*> out;
  for (auto& item : model.named_modules("", /*include_self=*/false))
    if (nn::has_matrix_weight(*item.value())) out[item.key() + ".weight"] = item.value().get();
  return out;
}

std::vector<std::pair<std::string, torch::Tensor>> checkpoint_tensors(torch::nn::Module& model) {
  std::vector<std::pair<std::string, torch::Tensor>> out;
  for (const auto& p : model.named_parameters()) out.emplace_back(p.key(), p.value());
  const std::string suffix = ".weight_scale";
  for (const auto& b : model.named_buffers())
    if (b.key().size() > suffix.size() && b.key().compare(b.key().size() - suffix.size(), suffix.size(), suffix) == 0)
      out.emplace_back(b.key(), b.value());
  return out;
}

size_t quantize_int8(Blip2ModelImpl& model) {
  size_t n = 0;
  for (auto& [name, m] : matrix_modules(model))
    if (int8_quantized(name, model.language_model.get())) {
      nn::quantize_weight(*m);
      ++n;
    }
  return n;
}

std::string QuantizeReport::summary() const {
  char buf[256];
  std::snprintf(buf, sizeof buf, "wrote %s: %zu matrices in int8, %zu tensors kept; %.1f MB -> %.1f MB; %zu files copied",
                output.c_str(), quantized, kept, bytes_in / 1e6, bytes_out / 1e6, files_copied);
  return buf;
}

QuantizeReport quantize_model_dir(const std::string& in, const std::string& out, const QuantizeOptions& options) {
  if (options.dtype != "int8")
    throw ConfigError("quantize: --dtype '" + options.dtype + "' is not supported; the quantised dtype is int8");
  std::error_code ec;
  if (fs::exists(out) && fs::equivalent(in, out, ec))
    throw ConfigError("quantize: the output directory '" + out + "' is the input; give another directory");
  if (fs::exists(out) && !fs::is_directory(out))
    throw ConfigError("quantize: output '" + out + "' exists and is not a directory; give a directory path");
  if (!fs::is_directory(in))
    throw ConfigError("quantize: input '" + in + "' is not a directory; give a BLIP-2 checkpoint directory");
  LoadOptions lo;
  lo.dtype = torch::kChar;
  lo.compute_dtype = torch::kFloat;
  Blip2Model model = load_blip2(in, lo);
  QuantizeReport rep;
  for (const auto& e : fs::directory_iterator(in))
    if (e.is_regular_file() && weight_file(e.path())) rep.bytes_in += e.file_size();

  const auto tensors = checkpoint_tensors(*model);
  for (const auto& p : model->parameters()) (p.scalar_type() == torch::kChar ? rep.quantized : rep.kept)++;

  fs::create_directories(out);
  for (const auto& e : fs::directory_iterator(in)) {
    if (weight_file(e.path())) continue;
    const auto to = fs::path(out) / e.path().filename();
    if (e.is_directory())
      fs::copy(e.path(), to, fs::copy_options::recursive | fs::copy_options::overwrite_existing);
    else
      fs::copy_file(e.path(), to, fs::copy_options::overwrite_existing);
    ++rep.files_copied;
  }
  rep.output = (fs::path(out) / "model.safetensors").string();
  io::save_safetensors(rep.output, tensors,
                       {{"format", "pt"}, {"quantization", "int8 weight-only, symmetric, one float32 scale per output "
                                                           "row: <name>.weight (I8) * <name>.weight_scale (F32)"}});
  rep.bytes_out = fs::file_size(rep.output);
  return rep;
}

}  // namespace blip2
