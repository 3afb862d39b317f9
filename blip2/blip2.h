// blip2cpp's public API: load a BLIP-2 checkpoint directory once, then
// caption images, answer questions about them, embed images and texts, and
// score image-text matches.
//
//   auto p = blip2::Pipeline::load("models/blip2-opt");
//   auto img = blip2::load_image("cat.jpg");
//   std::cout << p.caption({img})[0].text << "\n";
//   std::cout << p.answer({img}, {"what is the cat doing?"})[0].text << "\n";
//
// A checkpoint directory is HuggingFace's layout: config.json, model.safetensors
// (or shards), the language model's tokenizer files (vocab.json + merges.txt,
// tokenizer.json or spiece.model; vocab.txt for retrieval models) and
// optionally preprocessor_config.json. All errors are blip2::Error subclasses
// (ConfigError, CheckpointError, InputError) whose message names the file or
// value, what was expected and what was found.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "blip2/data/image.h"
#include "blip2/model/generation_config.h"
#include "blip2/util/error.h"

namespace at {
class Tensor;
}

namespace blip2 {

class Tokenizer;
struct ImageProcessorConfig;
struct Blip2Config;

// Where and how a model runs.
struct RuntimeOptions {
  // of the weights: "float32" | "bfloat16" | "float16" (CPU: computed in float32) | "int8" (CPU: the vision
  // encoder's and LM's matrices quantised on load, per output channel; computed in float32)
  std::string dtype = "float32";
  std::string device = "cpu";     // "cpu", "cuda", "cuda:1" (a CUDA build of libtorch)
  int threads = 0;                // intra-op threads, BLAS included; 0 = one per core
  // bfloat16 weights on a CPU compute in float32; their matrix products use
  // the CPU's native bf16 GEMM ("native", where AVX-512 BF16/AMX exist),
  // widen the weights to float32 ("fp32"), or choose ("auto").
  std::string bf16_gemm = "auto";
  // int8 weights: int8 x int8 products with each activation row quantised
  // too ("int8", where oneDNN has an int8 GEMM for this CPU), the weights
  // alone int8 and widened to float32 ("fp32"), or choose ("auto": int8 where
  // it can).
  std::string int8_gemm = "auto";
  // float32 weights on a CPU: OpenBLAS's sgemm ("openblas"), oneDNN's float32
  // matmul on libtorch's OpenMP pool ("onednn", where oneDNN has a non-reference
  // kernel for this CPU), or choose ("auto": onednn where its kernel is AVX-512
  // brgemm, measured faster there in docs/performance.md; openblas elsewhere).
  std::string fp32_gemm = "auto";
};
using PipelineOptions = RuntimeOptions;

struct TextResult {
  std::string text;                // decoded, special tokens skipped, stripped
  std::vector<int64_t> token_ids;  // as generated (BOS / decoder start first)
  double seconds = 0;              // wall time of the batch this result came from
};

// The model directory to use: `given` when not empty, else $BLIP2_MODEL,
// else the bundled models/shapes/opt (beside the build tree, or installed
// under share/blip2). ConfigError listing the places looked in.
std::string resolve_model_dir(const std::string& given = "");

class Pipeline {
 public:
  static Pipeline load(const std::string& dir, const PipelineOptions& options = {});
  Pipeline(Pipeline&&) noexcept;
  Pipeline& operator=(Pipeline&&) noexcept;
  ~Pipeline();

  // Captions, one per image. `prompt` (e.g. "a photo of") is given to the LM
  // and is not repeated in the result. Defaults: beam search 5, <= 30 tokens.
  std::vector<TextResult> caption(const std::vector<Image>& images, const std::string& prompt = "",
                                  const GenerationConfig& generation = caption_defaults());
  // One answer per (image, question) pair; the question is put in the VQA
  // prompt template of the LM family ("Question: {} Answer:" for OPT,
  // "Question: {} Short answer:" for T5) unless `prompt_template` is given.
  std::vector<TextResult> answer(const std::vector<Image>& images, const std::vector<std::string>& questions,
                                 const GenerationConfig& generation = vqa_defaults(),
                                 const std::string& prompt_template = "");
  // Raw generation from any prompts (left-padded for decoder-only LMs).
  std::vector<TextResult> generate(const std::vector<Image>& images, const std::vector<std::string>& prompts,
                                   const GenerationConfig& generation);

  // ITC features (retrieval checkpoints): (Q, E) per image, (E) per text, L2-normalised.
  at::Tensor image_embedding(const Image& image);
  at::Tensor image_embeddings(const std::vector<Image>& images);  // (B, Q, E), one batch
  at::Tensor text_embedding(const std::string& text);
  // ITC similarity (max over queries) and ITM match probability.
  double similarity(const Image& image, const std::string& text);
  double match(const Image& image, const std::string& text);
  // ITM match probability of each image with one text, in one batch.
  std::vector<double> match(const std::vector<Image>& images, const std::string& text);

  // Preprocessed pixel values (B, 3, H, W) as the model sees them.
  at::Tensor pixel_values(const std::vector<Image>& images) const;
  const Blip2Config& config() const;
  const Tokenizer& tokenizer() const;
  std::string vqa_prompt_template() const;
  bool has_language_model() const;
  bool has_retrieval_heads() const;
  double load_seconds() const;
  // Weights' and compute dtypes, the GEMM path and the threads in use.
  std::string runtime_description() const;

  static GenerationConfig caption_defaults();
  static GenerationConfig vqa_defaults();

 private:
  std::vector<TextResult> generate_with_qformer_text(const std::vector<Image>& images,
                                                     const std::vector<std::string>& prompts,
                                                     const std::vector<std::string>& qformer_texts,
                                                     const GenerationConfig& generation);
  Pipeline();
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace blip2
