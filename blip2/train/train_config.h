// One YAML file per training stage (configs/stage1.yaml, stage2_opt.yaml,
// stage2_t5.yaml). Every option has its default here and only here; unknown
// keys are errors (a typo must not silently train with a default). Relative
// paths in a recipe file are relative to the recipe's own directory.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "blip2/data/caption_choice.h"
#include "blip2/train/optim.h"

namespace blip2 {

// What a run trains (objective.mode).
enum class TrainMode {
  kPretrain,   // stage 1 or 2 on image-caption pairs (the paper's pre-training)
  kRetrieval,  // stage 1: ITC targets and ITM negatives from image ids; several captions of one image are positives
  kCaption,    // stage 2: prompt defaults to "a photo of"
  kVqa,        // stage 2: data.annotations holds [{image, question, answer}]; the question goes to the
               // Q-Former as text and into the LLM prompt, the answer is the target
};
// The YAML spelling: "pretrain", "retrieval", "caption", "vqa".
const char* train_mode_name(TrainMode mode);
// The YAML spelling of data.caption_choice: "random", "first".
const char* caption_choice_name(CaptionChoice choice);

struct TrainConfig {
  int stage = 1;  // 1: ITC+ITM+ITG with the frozen ViT; 2: LM loss through the frozen LLM

  // model
  std::string model_config;         // config.json with the BLIP-2 dimensions
  std::string init;                 // HF-layout checkpoint to start from (loads what it holds)
  std::string vision_init;          // checkpoint whose vision_model.* is the frozen image encoder
  std::string language_model_init;  // HF OPT/T5 checkpoint (its own names) for the frozen LLM
  std::string qformer_tokenizer;    // directory with vocab.txt (+ [DEC]) for the Q-Former text side
  std::string lm_tokenizer;         // directory with the LLM's tokenizer files (stage 2)
  bool train_vision = false;        // fine-tuning: also train the image encoder (layer-wise lr decay)

  // data
  std::string annotations;          // LAVIS caption JSON: [{image, caption, image_id}]
  std::string image_root;
  std::vector<std::string> shards;  // WebDataset tar shards (instead of annotations)
  bool skip_missing_images = false;
  int64_t image_size = 0;           // 0: the model's vision_config.image_size
  int workers = 2;
  bool augment = true;              // random resized crop (0.5-1) + horizontal flip
  // Which of a record's captions each sample carries: "random" (per epoch,
  // LAVIS) or "first" (a data set whose first caption is its canonical one).
  CaptionChoice caption_choice = CaptionChoice::kRandom;
  // A directory where the frozen image tower's output for each image is kept
  // after its first epoch and read back in later ones (train/feature_cache.h).
  // Needs data.annotations, data.augment: false and model.train_vision: false.
  // "" = off: the tower runs on every batch.
  std::string feature_cache;

  // objective
  int64_t max_txt_len = 32;
  std::string prompt;               // stage 2: prompt tokens are not targets ("a photo of")
  std::string vqa_template;         // vqa mode: "" = the LLM family's ("Question: {} Answer:")
  // Stage 2, encoder-decoder LLM (prefix LM): the fraction of captions left
  // whole, with an empty prefix, so the decoder learns to start a caption
  // (issue 11). 0 = every split point drawn uniformly over the words.
  double empty_prefix = 0;
  // Stage 2, decoder-only LLM: weight of the regulariser pulling the
  // projected queries toward the LM's input embeddings
  // (losses.h query_embedding_distance; issue 11). 0 = off.
  double query_embed_reg = 0;
  // Stage 2: weight of context distillation
  // (losses.h Stage2Text::context_distill; issue 11). 0 = off.
  double context_distill = 0;
  // Stage 2, encoder-decoder LLM: weight of the encoder's share of it
  // (losses.h Stage2Text::context_distill_encoder). 0 = the decoder's alone.
  double context_distill_encoder = 0;
  // Stage 2, encoder-decoder LLM: its teacher's context filled with zero
  // vectors to the queries' count (losses.h Stage2Text::context_distill_fill).
  bool context_distill_fill = false;
  // Stage 2: weight of its share at the context positions, query against the
  // caption's slot (losses.h Stage2Text::context_distill_slots; T5 needs
  // context_distill_fill). 0 = off.
  double context_distill_slots = 0;
  bool itc = true, itm = true, itg = true;  // stage-1 ablations
  // Stage 1: pairs whose captions are the same text are positives for ITC and
  // never ITM negatives (a synthetic world where many images share a caption;
  // the image-id rule of mode "retrieval" applied to caption texts).
  bool caption_positives = false;
  TrainMode mode = TrainMode::kPretrain;

  // optimisation
  OptimConfig optim;
  int64_t batch_size = 32;          // per process
  int64_t grad_accum = 1;
  int64_t max_steps = 1000;         // optimizer steps
  uint64_t seed = 42;
  bool bf16 = false;                // hold the frozen ViT and LLM in bfloat16 (paper Sec. 3.4)

  // output
  std::string output_dir = "runs/blip2";
  int64_t log_every = 10;
  int64_t save_every = 500;
  int64_t keep_checkpoints = 2;

  static TrainConfig from_yaml_file(const std::string& path);
  static TrainConfig from_yaml_string(const std::string& yaml, const std::string& source);
  std::string to_yaml() const;
  void validate(const std::string& source) const;
};

}  // namespace blip2
