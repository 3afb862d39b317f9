// Pretraining the small unimodal language models of the shapes world
// (issue 5): BLIP-2 needs a frozen LLM, so for the synthetic world we train
// one from scratch on text alone and save it with the model's own HF names
// ("model.decoder.*" for OPT; "shared.weight", "encoder.*", "decoder.*",
// "lm_head.weight" for T5), loadable by the trainer's language_model_init
// (LoadOptions.prefix = "language_model."). See docs/pretraining.md.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "blip2/config/config.h"
#include "blip2/lm/language_model.h"
#include "blip2/train/optim.h"

namespace blip2 {

// One training text. `context` stands where the visual prompt will stand in
// BLIP-2 (before everything else), `prompt` is the text that follows it and
// `target` what the model learns to produce after the prompt:
//   OPT: context tokens, BOS, prompt + " " + target + "\n" (the LAVIS end of
//        text), every token but BOS a target; without a context, BOS first;
//   T5:  encoder = context tokens + prompt (+ </s>), decoder = target + </s>;
//        with an empty prompt the target is split at a random word and the
//        prefix joins the encoder input (BLIP-2's prefix LM).
// A plain text is {"", "", text}.
struct LmText {
  std::string context, prompt, target;
};

// One corpus line: "text", or "context<TAB>prompt<TAB>target".
// InputError naming `where` for any other number of tabs or an empty target.
LmText parse_lm_text(const std::string& line, const std::string& where);
// Every non-empty line of a corpus file; InputError naming file:line.
std::vector<LmText> read_lm_corpus(const std::string& path);

// Context-slot augmentation (issue 11, docs/pretraining.md): perturbs the
// input embeddings of the context positions only (never BOS, the prompt or
// the target), so the LM learns to read soft, imperfect descriptions like the
// Q-Former's queries rather than only exact token embeddings. Every field 0
// (the default) = off: plain token embeddings and the batches of before.
struct ContextAugment {
  // Gaussian noise whose norm is about noise x the embedding's norm:
  // e + noise * |e| * z / sqrt(width), z ~ N(0, I), per context position.
  double noise = 0;
  // Embedding mixing: each context position moves toward the embedding of a
  // random context position of the batch, (1 - l) e + l e', l ~ U(0, mix).
  double mix = 0;
  // Probability that a context position's embedding is replaced by zeros.
  double drop = 0;
  // Zero vectors inserted at random places of the context until it has this
  // many positions, in half the rows (the number of queries: the visual
  // prompt always has that length, a description 4 to 15 tokens). 0 = none.
  int64_t fill_to = 0;

  bool enabled() const { return noise > 0 || mix > 0 || drop > 0 || fill_to > 0; }
  // ConfigError naming the field: noise < 0, mix outside [0, 1], drop
  // outside [0, 1), fill_to < 0.
  void validate() const;
};

struct LmPretrainConfig {
  TextConfig text;            // model_type "opt" or "t5" and its dimensions
  std::string tokenizer_dir;  // a directory load_tokenizer reads
  std::vector<LmText> texts;  // the corpus; batches are drawn with replacement
  int64_t steps = 1000;
  int64_t batch_size = 16;
  int64_t max_len = 64;  // tokens per sequence (OPT: also capped by max_position_embeddings)
  OptimConfig optim;
  uint64_t seed = 0;
  ContextAugment context;  // off by default
  // OPT: only the target and its closing newline are predicted (not the
  // context or the prompt), as instruction tuning computes its loss on the
  // response alone. T5's decoder predicts only the target either way.
  bool target_only = false;
  // Initialise as the reference implementation does (LanguageModel::
  // init_reference_weights: for T5 its per-module scales) instead of
  // normal(0, 0.02) everywhere; the same for OPT.
  bool reference_init = false;
  // Start from this `pretrain lm` output (same text config) instead of a
  // fresh initialisation: a curriculum's next phase. Empty = from scratch.
  // ConfigError together with reference_init.
  std::string init_dir;
  // Checkpoints, so a long run loses no work: every save_every steps (0 =
  // none) the model, the optimizer, the losses so far and both random streams
  // replace checkpoint_dir as a whole (a crash leaves the previous one). With
  // resume, a checkpoint found there is continued from its step, and the run
  // gives the losses and the model an uninterrupted run gives; none found = a
  // fresh start. ConfigError: save_every < 0, save_every or resume without a
  // checkpoint_dir, or a checkpoint written with other steps, batch size,
  // seed, corpus size, max_len, learning rate or target_only (naming the
  // field and both values; other dimensions fail as CheckpointError on load).
  std::string checkpoint_dir;
  int64_t save_every = 0;
  bool resume = false;
};

struct LmPretrainResult {
  std::shared_ptr<LanguageModel> model;  // in eval mode
  std::vector<double> losses;            // one per step (with resume: from step 1)
  int64_t resumed_from = 0;              // the checkpoint's step, 0 = a fresh start
};

// Trains make_language_model(config.text) from scratch (init_normal 0.02,
// T5 norms at 1; or reference_init) with AdamW, warm-up + cosine (optim.h), on the sequences
// LmText describes:
//   OPT: causal LM, pads and BOS ignored, the logits at t predict token t+1
//        (HF's shift); rows longer than max_len are cut at the end;
//   T5:  decoder inputs = shift_right(labels).
// config.context perturbs the context positions' input embeddings (and
// inserts its fillers, which are never targets).
// Deterministic for a seed. on_step(step, loss) is called after every step
// (step counts from 1). ConfigError for an empty corpus or steps/batch < 1.
LmPretrainResult pretrain_language_model(const LmPretrainConfig& config,
                                         std::function<void(int64_t step, double loss)> on_step = {});

// The LM a save_language_model directory holds, built from `text`.
// CheckpointError naming the tensor when one is missing or has another shape.
std::shared_ptr<LanguageModel> load_language_model(const std::string& dir, const TextConfig& text);

// Writes dir/model.safetensors (created if needed) with the model's own
// parameter names (no prefix) and, when tokenizer_dir is given, copies the
// regular files found there (the tokenizer) into dir.
void save_language_model(const LanguageModel& model, const std::string& dir,
                         const std::string& tokenizer_dir = "");

}  // namespace blip2
