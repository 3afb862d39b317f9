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
#include "blip2/util/threads.h"

namespace blip2 {

// Where and how the weights run: the fields of PipelineOptions (blip2.h).
struct RuntimeOptions;

// RuntimeOptions checked and applied (threads, GEMM choice): what a model
// will run with. load_model_dir calls it; so does the benchmark.
struct Runtime {
  torch::Device device{torch::kCPU};
  torch::ScalarType dtype = torch::kFloat, compute_dtype = torch::kFloat;
  ThreadSettings threads;
  std::string line;  // for --verbose
};

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
  Runtime runtime;  // device, weights' and compute dtypes, threads, the --verbose line
  double load_seconds = 0;
};

// Reads config.json, the weights (safetensors, mapped), the tokenizer files
// and preprocessor_config.json of `dir`; applies options.threads to every
// intra-op pool (util/threads.h). Throws ConfigError / CheckpointError naming the file.
ModelDir load_model_dir(const std::string& dir, const RuntimeOptions& options);

// How weights of `dtype` compute on `device`: on a CPU 16-bit weights stay
// 16-bit and the arithmetic is float32 (nn/gemm.h); elsewhere `dtype`.
torch::ScalarType compute_dtype_for(torch::ScalarType dtype, const torch::Device& device);

// "cpu", "cuda", "cuda:N"; ConfigError when invalid or CUDA is unavailable.
torch::Device parse_device(const std::string& name);

Runtime apply_runtime(const RuntimeOptions& options);

}  // namespace blip2
