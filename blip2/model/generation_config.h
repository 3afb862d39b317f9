// What to generate and how: the options of text generation (HuggingFace's
// GenerationConfig fields that BLIP-2 uses). Plain C++: the facade includes
// it; the generator itself is model/generation.h.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace blip2 {

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

}  // namespace blip2
