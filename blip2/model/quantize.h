// int8 models: which matrices --dtype int8 quantises, and `blip2 quantize`,
// which writes a checkpoint directory that loads them without quantising.
//
// Quantised: every Linear and Embedding weight of the vision encoder
// (vision_model.*) and of the language model (language_model.*: its layers,
// token and position embeddings, and so the tied LM head) -- nearly all the
// bytes. Kept in float32: the Q-Former (BERT-base, about 5% of the bytes of
// vitg-opt2.7b), the language projection, the retrieval heads, the patch
// embedding, norms and biases, and the LM's own float modules
// (LanguageModel::keeps_float: T5's `wo`, as HF's 8-bit loading). The
// numbers behind this choice are in docs/performance.md ("int8").
#pragma once

#include <torch/nn/module.h>

#include <cstddef>
#include <map>
#include <string>
#include <utility>
#include <vector>

namespace blip2 {

class Blip2ModelImpl;
class LanguageModel;

// Whether the weight named `param_name` ("language_model.model.decoder.layers.0.fc1.weight")
// of a Linear / Embedding module is stored in int8 by --dtype int8; `lm`:
// the model's language model (null: none), asked about its own weights.
bool int8_quantized(const std::string& param_name, const LanguageModel* lm);

// The Linear and Embedding modules below `model`, by their weight's parameter name.
std::map<std::string, torch::nn::Module*> matrix_modules(torch::nn::Module& model);

// What a checkpoint of `model` holds: its parameters and, for int8 weights,
// their "<name>.weight_scale" buffers.
std::vector<std::pair<std::string, torch::Tensor>> checkpoint_tensors(torch::nn::Module& model);

// Quantises, in place, every matrix int8_quantized names (float32 copies of
// the int8 matrices are never kept). Returns how many were quantised.
size_t quantize_int8(Blip2ModelImpl& model);

struct QuantizeReport {
  size_t quantized = 0, kept = 0;  // tensors written in int8 / as they were loaded
  size_t files_copied = 0;         // config.json, tokenizer files, ...
  uint64_t bytes_in = 0, bytes_out = 0;  // weights read / written
  std::string output;              // <out>/model.safetensors
  std::string summary() const;
};

// `blip2 quantize IN OUT --dtype int8`: loads IN quantising on load, writes
// OUT/model.safetensors (I8 weights, F32 `<name>.weight_scale`, everything
// else as loaded: float32), copies IN's other files (not its weights) and
// sub-directories. OUT must not be IN; an existing OUT/model.safetensors is
// replaced atomically.
struct QuantizeOptions {
  std::string dtype = "int8";  // the only quantised dtype
};
QuantizeReport quantize_model_dir(const std::string& in, const std::string& out, const QuantizeOptions& options = {});

}  // namespace blip2
