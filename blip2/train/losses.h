// Training objectives of BLIP-2.
//   Stage 1 (LAVIS Blip2Qformer.forward): ITC + ITM (hard negatives) + ITG.
//   Stage 2: the LM loss through the frozen LLM (HF Blip2ForConditionalGeneration
//   semantics for labels; T5 gets decoder inputs = shift_right(labels)).
#pragma once

#include <torch/torch.h>

#include <string>
#include <vector>

#include "blip2/model/blip2_model.h"
#include "blip2/train/collective.h"

namespace blip2 {

class Tokenizer;

// A batch's images for a loss: pixels (B, C, H, W) through the image tower,
// or the tower's output computed before (a feature cache of a frozen tower):
// vit_embeds (B, N, Dv), Blip2ModelImpl::vit_features, before ln_vision.
// Either way ln_vision (post_layernorm) runs here, so it trains.
struct ImageInput {
  ImageInput(torch::Tensor pixel_values) : pixel_values(std::move(pixel_values)) {}  // NOLINT: pixels by default
  static ImageInput features(torch::Tensor vit_embeds);
  torch::Tensor pixel_values, vit_embeds;
};

// ln_vision of the tower's output: (B, N, Dv), encode_image's
// last_hidden_state. With frozen_tower the tower runs without gradients.
torch::Tensor image_embeds(Blip2ModelImpl& model, const ImageInput& image, bool frozen_tower = false);

// ---- stage 2 -----------------------------------------------------------
struct LmLossOutput {
  torch::Tensor loss;               // () mean CE over non-ignored targets
  torch::Tensor logits;             // decoder-only: (B, T, V) text positions; enc-dec: (B, L, V)
  torch::Tensor decoder_input_ids;  // enc-dec: shift_right(labels)
};

// labels (B, T): -100 = ignored. Decoder-only: labels align with input_ids
// and are shifted inside (position t predicts t+1; queries never targets).
// Encoder-decoder: labels are the decoder targets; input_ids go to the encoder.
LmLossOutput lm_loss(Blip2ModelImpl& model, const ImageInput& image, const torch::Tensor& input_ids,
                     const torch::Tensor& attention_mask, const torch::Tensor& labels);

// How stage-2 objectives read their texts.
struct Stage2Text {
  const Tokenizer* tokenizer = nullptr;  // the LLM's
  int64_t max_txt_len = 32;              // tokens per text
  std::string prompt;                    // put before each caption, never a target ("a photo of")
  double empty_prefix = 0;               // prefix LM: fraction of captions not split (whole target)
  double query_embed_reg = 0;            // decoder-only: weight of query_embedding_distance (0 = off)
  // Weight of context distillation (0 = off; issue 11, our addition to the
  // paper). The frozen LM reads each caption twice: after the queries (the
  // student) and after the caption's own token embeddings (the teacher, no
  // gradients), the context slot of the shapes LMs' pretraining. Decoder-only:
  // the caption's tokens then zero vectors up to the queries' count (so the
  // text keeps its positions; captions longer than the queries are left
  // out), compared at the text positions; encoder-decoder (prefix LM): the
  // caption's tokens right before the prefix, compared at the decoder's
  // target positions. The loss is the mean over the LM's layers (the
  // decoder's for encoder-decoder) of the squared distance between the two
  // runs' hidden states, over the teacher's mean squared norm. It asks the
  // queries to act on the LM as the description does, not only to make it
  // say the caption: the question path reads the same states.
  double context_distill = 0;
  // Encoder-decoder with context_distill > 0: the encoder's states at the
  // text positions (the prompt and prefix after the context, where a question
  // sits at VQA) are compared too, this weight times their distance added to
  // the decoder's (0 = the decoder's alone). Decoder-only LMs compare their
  // text positions already.
  double context_distill_encoder = 0;
  // Encoder-decoder with context_distill > 0: the teacher reads the caption's
  // tokens then zero vectors up to the queries' count, every position attended
  // (the context slot of an LM pretrained with fillers, `pretrain lm
  // --context-fill-to`), instead of the caption's tokens alone; captions
  // longer than the queries are left out. Decoder-only LMs' teacher is always so.
  bool context_distill_fill = false;
  // With context_distill > 0: + this weight times the same distance at the
  // context positions, query i against the teacher's slot i (caption token i
  // or a zero filler): the LM's layers (the encoder's for encoder-decoder,
  // which needs context_distill_fill) see each query as that slot. Our
  // addition: the queries take the caption's place token by token, so every
  // path through the LM (a question's included) reads them as it reads the
  // caption. 0 = off.
  double context_distill_slots = 0;
};

// How far the projected queries (B, Q, D) lie from the LM's input
// embeddings: the mean over queries of the squared distance to the nearest
// embedding among token ids [0, vocab), divided by those embeddings' mean
// squared norm (0 = every query is a token embedding). The embeddings are
// constants here: only the queries receive gradients. Issue 11's stage-2
// regulariser, our addition to the paper: it keeps the queries where the LM
// reads text.
torch::Tensor query_embedding_distance(LanguageModel& lm, const torch::Tensor& queries, int64_t vocab);

// Stage2Text::context_distill's distance for the LM's run `f`
// (forward_embeds with output_hidden_states: the queries
// f.language_projection (B, Q, D), then the text; text_mask (B, T) marks the
// text positions). Encoder-decoder: decoder_input_ids (B, Td) of that run
// and decoder_mask (B, Td), the target positions that count. The teacher
// reads each caption's own token embeddings (no special tokens) in place of
// the queries, as Stage2Text describes. 0 = the queries act on every layer
// as the caption does. InputError without the hidden states (or, enc-dec,
// the decoder inputs). Encoder-decoder with encoder_weight > 0: + that
// weight times the same distance over the encoder's layers at the text
// positions (text_mask); with `fill`, the teacher's context as
// Stage2Text::context_distill_fill describes. slot_weight > 0: + that
// weight times the distance at the Q context positions (the decoder-only
// LM's layers, or the encoder's, which needs `fill`: InputError without), as
// Stage2Text::context_distill_slots describes.
torch::Tensor context_distance(LanguageModel& lm, const Blip2ForwardOutput& f, const torch::Tensor& text_mask,
                               const std::vector<std::string>& captions, const Tokenizer& tok, int64_t pad,
                               const torch::Tensor& decoder_input_ids = {}, const torch::Tensor& decoder_mask = {},
                               double encoder_weight = 0, bool fill = false, double slot_weight = 0);

// The image-to-text objective of stage 2 (paper Sec. 3.3), for the model's
// LM family. Decoder-only: prompt + caption + "\n"; BOS, prompt and pads are
// not targets, the last query position predicts the first text token (LAVIS
// blip2_opt). Encoder-decoder: prefix LM: each caption is split at a random
// word (from `generator`; with probability text.empty_prefix at the first
// word: the whole caption is the target); prompt + prefix go to the encoder
// with the visual prompt, the suffix is the decoder's target. Decoder-only
// with text.query_embed_reg = w > 0: + w * query_embedding_distance of the
// projected queries (vocab: the tokenizer's). Either family with
// text.context_distill = w > 0: + w * context_distance.
torch::Tensor caption_lm_loss(Blip2ModelImpl& model, const ImageInput& image,
                              const std::vector<std::string>& captions, const Stage2Text& text,
                              torch::Generator& generator);

// One VQA sample per image.
struct VqaTargets {
  const std::vector<std::string>& questions;
  const std::vector<std::string>& answers;
  const std::vector<std::string>& image_ids;  // named in errors
};

// VQA fine-tuning: the question goes to the Q-Former (qformer_tokenizer) and
// into `vqa_template` ("" = the LM family's) for the LLM; the answer is the
// target (decoder-only: prompt + " " + answer + "\n", only the answer and
// "\n" are targets; encoder-decoder: the prompt to the encoder, the answer
// to the decoder).
torch::Tensor vqa_answer_loss(Blip2ModelImpl& model, const ImageInput& image, const VqaTargets& vqa,
                              const Stage2Text& text, const Tokenizer& qformer_tokenizer,
                              const std::string& vqa_template);

// ---- stage 1 -----------------------------------------------------------
struct Stage1Options {
  double itc_label_smoothing = 0.1;
  double itg_label_smoothing = 0.1;
  double itm_label_smoothing = 0.0;
  double diag_fill = -10000.0;  // own pair excluded from hard-negative sampling
  int64_t dec_token_id = 30522; // [DEC], the ITG start token (LAVIS: appended to bert-base-uncased)
  int64_t pad_token_id = 0;
  bool use_itc = true, use_itm = true, use_itg = true;
};

struct Stage1Inputs {
  // Either pixel_values (B, C, H, W) through the frozen ViT, or vit_embeds
  // (B, N, Dv): the ViT's output before ln_vision (post_layernorm).
  torch::Tensor pixel_values, vit_embeds;
  torch::Tensor text_ids, text_mask;  // (B, T) Q-Former tokens: [CLS] ... [SEP] pad
  // Optional fixed hard negatives (B,) (reference replays); otherwise drawn
  // from the ITC softmax with `generator`.
  torch::Tensor neg_image_idx, neg_text_idx;
  torch::Generator generator;
  // Retrieval fine-tuning: (B,) image ids. ITC targets are every pair with
  // the same image (smoothed 0.9 / 0.1 as LAVIS), ITM never draws a
  // "negative" of the same image.
  torch::Tensor image_ids;
  bool train_vision = false;  // gradients through the ViT (fine-tuning)
};

struct Stage1Output {
  torch::Tensor loss, loss_itc, loss_itm, loss_lm;  // ()
  torch::Tensor image_feats;  // (B, Q, E)
  torch::Tensor text_feat;    // (B, E)
  torch::Tensor sim_i2t, sim_t2i;          // (B, B*world) / temp
  torch::Tensor weights_i2t, weights_t2i;  // (B, B*world) sampling weights
  torch::Tensor neg_image_idx, neg_text_idx;
  torch::Tensor itm_logits, itm_labels;    // (3B, 2), (3B,)
  torch::Tensor itg_logits, itg_labels;    // (B, T-1, V), (B, T-1)
};

// The model needs parts retrieval + itg. Clamps temp to [0.001, 0.5] first (LAVIS).
Stage1Output stage1_forward(Blip2ModelImpl& model, const Stage1Inputs& in, const Stage1Options& options,
                            Collective& collective = local_collective());

}  // namespace blip2
