// What to generate and how: the options of text generation (HuggingFace's
// GenerationConfig fields that BLIP-2 uses). Plain C++: the facade includes
// it; the generator itself is model/generation.h.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace blip2 {

// Streaming: told the tokens of output row `row` that became final in a
// step (rows in the order of the result: input i's j-th sequence is row
// i * num_return_sequences + j). Greedy and sampling report each row's new
// token every step (EOS included, nothing after it); beam search reports an
// empty list every step and each row's whole chosen sequence (without the
// decoder prefix) at the end, since beams are re-ranked until then. Returning
// false stops that row: greedy/sampling pad it from there; beam search stops
// an input once all of its rows asked (its result is then not meaningful).
using TokenCallback = std::function<bool(int64_t row, const std::vector<int64_t>& tokens)>;

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
  TokenCallback on_tokens;     // unset: no streaming, no cost

  // Throws ConfigError naming the option on impossible values.
  void validate() const;
};

}  // namespace blip2
