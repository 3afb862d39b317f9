// Text generation with HuggingFace semantics (transformers 4.45): greedy,
// beam search (BeamSearchScorer: length-normalised finished hypotheses,
// early_stopping heuristic, EOS appended when it fits, short rows padded),
// and sampling (temperature, top-k, top-p), with the logits processors
// min_new_tokens, repetition_penalty and no_repeat_ngram_size.
#pragma once

#include <torch/types.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace blip2 {

class LanguageModel;

enum class EarlyStopping { kHeuristic /* HF False */, kFirst /* True */, kNever /* "never" */ };

struct GenerationConfig {
  int64_t max_new_tokens = 30;
  int64_t min_new_tokens = 0;
  int64_t num_beams = 1;
  int64_t num_return_sequences = 1;
  double length_penalty = 1.0;
  EarlyStopping early_stopping = EarlyStopping::kHeuristic;
  std::optional<int64_t> eos_token_id;  // default: the language model's
  std::optional<int64_t> pad_token_id;  // default: the language model's
  bool do_sample = false;
  double temperature = 1.0;
  int64_t top_k = 50;   // 0 disables
  double top_p = 1.0;   // 1 disables
  uint64_t seed = 0;
  double repetition_penalty = 1.0;
  int64_t no_repeat_ngram_size = 0;
  bool output_logits = false;  // keep the raw logits of every step (greedy/sampling)

  // Throws ConfigError naming the option on impossible values.
  void validate() const;
};

struct GenerationOutput {
  torch::Tensor sequences;        // (N * num_return_sequences, L): the decoder prefix (enc-dec) + new tokens
  torch::Tensor sequences_scores; // (N * num_return_sequences,) beam search only
  torch::Tensor step_logits;      // (N, steps, V) raw logits when output_logits (greedy/sampling)
};

// Generates from a prompt given as input embeddings (N, S, D) with keep-mask
// (N, S). eos/pad default to the model's own ids passed here.
GenerationOutput generate(LanguageModel& lm, const torch::Tensor& inputs_embeds, const torch::Tensor& attention_mask,
                          const GenerationConfig& config, int64_t default_eos, int64_t default_pad);

}  // namespace blip2
