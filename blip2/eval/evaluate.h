// Zero-shot evaluation of a checkpoint on a data directory (issue 5, item 4):
// the logic behind `blip2 eval caption|vqa|retrieval --model DIR --data DIR`.
//
//   caption    data_dir/captions.json  -> CIDEr-D, BLEU-4, exact match (pycocoevalcap)
//   vqa        data_dir/questions.json -> VQA accuracy (official vqaEval.py), per question type
//   retrieval  data_dir/captions.json  -> TR@1/5/10, IR@1/5/10 (LAVIS compute_sim_matrix +
//                                         RetrievalTask.itm_eval: ITC ranking, ITM + ITC
//                                         re-ranking of each row's top k)
//
// Data files are the shapes world's (blip2/shapes/shapes.h), which are also
// LAVIS's COCO / VQA annotation layouts:
//   captions.json  [{"image": "images/000000.png", "caption": ["..", ..] or "..", "image_id": 0}, ..]
//   questions.json [{"image": .., "question": "..", "answer": ["..", ..] or "..",
//                    "question_id": 0, "question_type": ".." (optional)}, ..]
// Image paths are relative to data_dir (absolute paths are used as given).
//
// Units follow the reference implementations: cider / bleu4 as pycocoevalcap
// (raw, not x100), exact_match and VQA accuracy as fractions in [0, 1],
// retrieval recalls in percent (as LAVIS's itm_eval). See docs/evaluation.md.
//
// Errors: ConfigError for a model that cannot do the task (a caption / VQA
// eval of a retrieval checkpoint, a retrieval eval of a checkpoint without
// retrieval heads); InputError naming the file for a missing or malformed
// captions.json / questions.json, an empty data set or a missing image.
#pragma once

#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "blip2/blip2.h"
#include "blip2/config/config.h"
#include "blip2/eval/metrics.h"
#include "blip2/model/generation_config.h"

namespace at {
class Tensor;
}

namespace blip2 {

class Blip2ModelImpl;
class Tokenizer;
struct ImageProcessorConfig;

struct EvalOptions {
  int batch_size = 8;   // images (caption / vqa / ITC features) per forward pass
  int64_t limit = 0;    // 0 = all; else the first `limit` images (caption, retrieval) or questions (vqa)
  GenerationConfig generation;  // used when has_generation; else Pipeline::caption_defaults() / vqa_defaults()
  bool has_generation = false;
  std::string prompt;           // caption prompt (e.g. "a photo of"), empty = none
  std::string prompt_template;  // VQA template with {}, empty = the LM family's
  int64_t rerank_k = 128;       // retrieval: ITM re-ranks each row's top k (LAVIS k_test; 128 for COCO)
  int64_t itm_batch_size = 64;  // retrieval: (image, text) pairs per ITM forward pass
  int64_t max_text_tokens = 35; // retrieval: texts truncated to this many tokens (LAVIS max_length 35),
                                // at most qformer max_position_embeddings
  int64_t num_samples = 20;     // how many examples go into "samples"
  // Called after each batch with the work done so far and the total (same
  // unit, e.g. images); total is fixed for one evaluation.
  std::function<void(int64_t done, int64_t total)> progress;

  void validate() const;                           // ConfigError naming the flag (--batch-size)
  void report(int64_t done, int64_t total) const;  // calls progress when set
};

// Caption metrics of predictions against references (raw strings): both go
// through ptb_tokenize (as pycocoevalcap's evaluation does), then
// {"cider": CIDEr-D, "bleu4": BLEU-4, "bleu": [BLEU-1..4],
//  "exact_match": caption_exact_match, "count": n}.
// InputError for mismatched sizes or an empty corpus.
nlohmann::json caption_metrics(const std::vector<std::string>& predictions,
                               const std::vector<std::vector<std::string>>& references);

// VQA metrics: {"accuracy": mean official accuracy, "count": n} plus, when
// question_types is non-empty (one per question), "per_type": {type: {"accuracy", "count"}}.
nlohmann::json vqa_metrics(const std::vector<std::string>& predictions,
                           const std::vector<std::vector<std::string>>& answers,
                           const std::vector<std::string>& question_types = {});

// {"cider", "bleu4", "bleu", "exact_match", "count", "seconds",
//  "samples": [{"image", "prediction", "references"}, ..]}: data_dir/captions.json
// captioned through Pipeline::caption in batches of batch_size.
nlohmann::json evaluate_captions(Pipeline& pipeline, const std::string& data_dir, const EvalOptions& options = {});

// {"accuracy", "per_type" (when the file has question_type), "count", "seconds",
//  "samples": [{"image", "question", "prediction", "answers", "accuracy"}, ..]}:
// data_dir/questions.json answered through Pipeline::answer in batches.
nlohmann::json evaluate_vqa(Pipeline& pipeline, const std::string& data_dir, const EvalOptions& options = {});

// ---- retrieval ----

// The retrieval set of a captions.json: one entry per image (first `limit`
// images, 0 = all) and one text per distinct caption string; img2txt[i] lists
// image i's texts, txt2img[t] the images text t describes. With distinct
// captions (COCO, Flickr30k) this is LAVIS's ground truth; a caption shared by
// several images (a synthetic world's "a large red circle") is one text whose
// every image counts as a hit, rather than a coin toss between equal scores.
struct RetrievalSet {
  std::vector<std::string> images;  // resolved paths
  std::vector<std::string> texts;
  std::vector<std::vector<int64_t>> img2txt;
  std::vector<std::vector<int64_t>> txt2img;
};
RetrievalSet read_retrieval_set(const std::string& data_dir, int64_t limit = 0);

// LAVIS compute_sim_matrix: `itc` (images x texts) is the ITC similarity
// (max over queries of the normalised query and [CLS] features); i2t (images
// x texts) holds, for each image, its top k = min(rerank_k, #texts) texts by
// ITC scored ITM + ITC, where ITM is the match logit (itm_head logits[:, 1]
// averaged over queries: LAVIS compute_itm), and -100 elsewhere; t2i (texts x
// images) likewise with k = min(rerank_k, #images).
struct RetrievalScores {
  ScoreMatrix itc, i2t, t2i;
};
// Images are decoded from `set.images`, preprocessed with `processor` and run
// through `model` (put in eval mode for the call, its mode restored after);
// texts are tokenised with `tokenizer` (add_special_tokens, truncated to
// max_text_tokens keeping the final [SEP]). ConfigError when the model has no
// retrieval heads.
RetrievalScores retrieval_scores(Blip2ModelImpl& model, const Tokenizer& tokenizer,
                                 const ImageProcessorConfig& processor, const RetrievalSet& set,
                                 const EvalOptions& options = {});

// {"txt_r1", "txt_r5", "txt_r10", "txt_r_mean", "img_r1", "img_r5", "img_r10", "img_r_mean",
//  "r_mean", "agg_metrics"} in percent (LAVIS itm_eval keys).
nlohmann::json retrieval_metrics_json(const RetrievalMetrics& m);

// The full evaluation of an in-memory model: retrieval_scores, then
// retrieval_recall on (i2t, t2i) and, as "itc_only", on the ITC matrix alone:
// {txt_r1.. r_mean, "itc_only": {same keys}, "count" (images), "texts",
//  "rerank_k", "seconds"}.
nlohmann::json evaluate_retrieval(Blip2ModelImpl& model, const Tokenizer& tokenizer,
                                  const ImageProcessorConfig& processor, const std::string& data_dir,
                                  const EvalOptions& options = {});

// The same for a checkpoint directory (what `blip2 eval retrieval --model DIR`
// runs), loaded by load_model_dir (model/model_dir.h) as Pipeline::load does
// (dtype/device/threads from `pipeline_options`).
// ConfigError naming config.json when the checkpoint is not a retrieval model.
nlohmann::json evaluate_retrieval(const std::string& model_dir, const std::string& data_dir,
                                  const EvalOptions& options = {}, const PipelineOptions& pipeline_options = {});

}  // namespace blip2
