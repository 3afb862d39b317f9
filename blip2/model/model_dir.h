// A BLIP-2 checkpoint directory, loaded once: the model, its tokenizers and
// image preprocessing. The facade (Pipeline), evaluation and search all start
// from here, so a directory is read one way everywhere.
#pragma once

#include <torch/torch.h>

#include <memory>
#include <string>

#include "blip2/data/image_processor.h"
#include "blip2/data/tokenizer.h"
#include "blip2/model/blip2_model.h"

namespace blip2 {

// Where and how the weights run: the fields of PipelineOptions (blip2.h).
struct RuntimeOptions;

struct ModelDir {
  std::string dir;
  Blip2Model model{nullptr};
  // The tokenizer of the directory: the LLM's, or for retrieval models the
  // Q-Former's BERT vocabulary.
  std::unique_ptr<Tokenizer> tokenizer;
  // Models whose Q-Former also reads the question (VQA fine-tuning):
  // qformer_tokenizer/ beside the weights; null otherwise.
  std::unique_ptr<Tokenizer> qformer_tokenizer;
  ImageProcessorConfig processor;  // preprocessor_config.json, or the vision config's image size
  torch::Device device{torch::kCPU};
  torch::ScalarType dtype = torch::kFloat;
  double load_seconds = 0;
};

// Reads config.json, the weights (safetensors, mapped), the tokenizer files
// and preprocessor_config.json of `dir`; sets the intra-op thread count when
// options.threads > 0. Throws ConfigError / CheckpointError naming the file.
ModelDir load_model_dir(const std::string& dir, const RuntimeOptions& options);

// "cpu", "cuda", "cuda:N"; ConfigError when invalid or CUDA is unavailable.
torch::Device parse_device(const std::string& name);

// Intra-op threads beyond this many per core only oversubscribe the machine.
constexpr int kMaxThreadsPerCore = 4;
// ConfigError unless threads is 0 (libtorch's default) or 1..kMaxThreadsPerCore x cores.
void check_threads(int threads);

}  // namespace blip2
