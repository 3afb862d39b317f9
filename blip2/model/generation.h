// Text generation with HuggingFace semantics (transformers 4.45): greedy,
// beam search (BeamSearchScorer: length-normalised finished hypotheses,
// early_stopping heuristic, EOS appended when it fits, short rows padded),
// and sampling (temperature, top-k, top-p), with the logits processors
// min_new_tokens, repetition_penalty and no_repeat_ngram_size.
#pragma once

#include <torch/types.h>

#include "blip2/model/generation_config.h"

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace blip2 {

class LanguageModel;

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
