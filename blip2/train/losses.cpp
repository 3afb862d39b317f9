#include "blip2/train/losses.h"

#include <optional>
#include <sstream>

#include "blip2/data/text_batch.h"
#include "blip2/data/tokenizer.h"
#include "blip2/nn/ops.h"
#include "blip2/util/error.h"

namespace blip2 {

namespace F = torch::nn::functional;

Collective& local_collective() {
  static Collective c;
  return c;
}

namespace {

torch::Tensor cross_entropy(const torch::Tensor& logits, const torch::Tensor& targets, double smoothing) {
  auto l = logits.reshape({-1, logits.size(-1)});
  if (l.scalar_type() == torch::kHalf || l.scalar_type() == torch::kBFloat16) l = l.to(torch::kFloat);
  return F::cross_entropy(l, targets.reshape({-1}),
                          F::CrossEntropyFuncOptions().ignore_index(-100).label_smoothing(smoothing));
}

// Decoder-only LM loss with the visual prompt in front (LAVIS blip2_opt):
// logits (B, Q+T, V) over queries + text, labels (B, T) with -100 for
// positions that are not targets; the queries are never targets.
torch::Tensor decoder_only_loss(torch::Tensor logits, const torch::Tensor& labels, int64_t Q) {
  if (logits.scalar_type() != torch::kDouble) logits = logits.to(torch::kFloat);
  auto full = torch::cat({torch::full({labels.size(0), Q}, -100, torch::kLong), labels}, 1);
  return F::cross_entropy(logits.slice(1, 0, logits.size(1) - 1).reshape({-1, logits.size(2)}),
                          full.slice(1, 1).reshape({-1}), F::CrossEntropyFuncOptions().ignore_index(-100));
}

int64_t lm_pad_id(const Blip2ModelImpl& model, const Stage2Text& text) {
  if (!text.tokenizer) throw InputError("[stage2] no language-model tokenizer given");
  return text.tokenizer->pad_id().value_or(model.language_model->pad_token_id());
}

// Each caption's token ids (no special tokens) in a row of `width` pad ids
// (0: as wide as the longest caption), from the row's start or ending at its
// end (`at_end`); `real` (B, width) marks the caption's positions; a caption
// longer than the row is left out (pads only, `fits` 0).
struct CaptionSlots {
  torch::Tensor ids, real, fits;  // (B, width) int64, (B, width) float, (B) float
};
CaptionSlots caption_slots(const Tokenizer& tok, const std::vector<std::string>& captions, int64_t width, int64_t pad,
                           bool at_end) {
  std::vector<std::vector<int64_t>> rows;
  for (const auto& c : captions) rows.push_back(tok.encode(c, false));
  if (width == 0)
    for (const auto& r : rows) width = std::max<int64_t>(width, static_cast<int64_t>(r.size()));
  const auto B = static_cast<int64_t>(captions.size());
  CaptionSlots out{torch::full({B, width}, pad, torch::kLong), torch::zeros({B, width}), torch::zeros({B})};
  for (int64_t b = 0; b < B; ++b) {
    const auto& r = rows[static_cast<size_t>(b)];
    const auto n = static_cast<int64_t>(r.size());
    if (n > width) continue;
    const int64_t from = at_end ? width - n : 0;
    out.ids[b].slice(0, from, from + n).copy_(torch::tensor(r, torch::kLong));
    out.real[b].slice(0, from, from + n).fill_(1);
    out.fits[b] = 1;
  }
  return out;
}

// The mean over layers (each layer's output: entries 1.. of HF's
// hidden_states) of the student's squared distance to the teacher at the
// positions `where` (B, S) marks, each divided by the teacher's mean squared
// norm there (0 = the same hidden states).
torch::Tensor hidden_state_distance(const std::vector<torch::Tensor>& student, const std::vector<torch::Tensor>& teacher,
                                    const torch::Tensor& where) {
  const auto n = where.sum().clamp_min(1);
  torch::Tensor total = torch::zeros({}, where.options());
  for (size_t l = 1; l < student.size(); ++l) {
    const auto t = teacher[l].to(torch::kFloat);
    const auto d = (student[l].to(torch::kFloat) - t).pow(2).mean(-1);  // (B, S)
    const auto norm = (t.pow(2).mean(-1) * where).sum() / n;
    total = total + (d * where).sum() / n / norm.clamp_min(1e-12);
  }
  return student.size() > 1 ? total / static_cast<double>(student.size() - 1) : total;
}

}  // namespace

torch::Tensor context_distance(LanguageModel& lm, const Blip2ForwardOutput& f, const torch::Tensor& text_mask,
                               const std::vector<std::string>& captions, const Tokenizer& tok, int64_t pad,
                               const torch::Tensor& decoder_input_ids, const torch::Tensor& decoder_mask,
                               double encoder_weight, bool fill, double slot_weight) {
  const bool enc_dec = lm.is_encoder_decoder();
  if ((enc_dec ? f.lm.decoder_hidden_states : f.lm.hidden_states).empty() ||
      (enc_dec && (!decoder_input_ids.defined() || !decoder_mask.defined())))
    throw InputError("[stage2] context_distance needs the LM's run with its hidden states (and, encoder-decoder, "
                     "its decoder inputs and their mask)");
  const int64_t Q = f.language_projection.size(1), B = static_cast<int64_t>(captions.size());
  nn::check_shape(text_mask, {B, f.inputs_embeds.size(1) - Q}, "context_distance", "text_mask",
                  "one row per caption, one column per text position after the queries");
  if (enc_dec && slot_weight > 0 && !fill)
    throw InputError("[stage2] context_distance compares the context slots only with the filled teacher (fill), "
                     "whose context has the queries' width");
  const auto text = f.inputs_embeds.slice(1, Q).detach();
  const auto opts = torch::TensorOptions().dtype(torch::kFloat).device(text_mask.device());
  // The Q context positions (query i against the teacher's slot i: caption
  // token i or a zero filler), for slot_weight.
  const auto slot_positions = torch::cat({torch::ones({B, Q}, opts), torch::zeros({B, text_mask.size(1)}, opts)}, 1);
  LMOutput teacher;  // computed without gradients; the distance has them (through f)
  if (!enc_dec) {
    // The caption's tokens, then zero vectors up to Q positions: the context
    // slot as the LM read it in pretraining (ContextAugment::fill_to), so the
    // text keeps its positions; a longer caption has no teacher.
    const auto slots = caption_slots(tok, captions, Q, pad, false);
    {
      torch::NoGradGuard g;
      const auto real = slots.real.to(text.device(), text.scalar_type()).unsqueeze(-1);
      const auto context = lm.embed_tokens(slots.ids.to(text.device())).to(text.scalar_type()) * real;
      teacher = lm.forward(torch::cat({context, text}, 1), f.attention_mask, {}, true);
    }
    const auto fits = slots.fits.to(opts).unsqueeze(1);
    const auto where = torch::cat({torch::zeros({B, Q}, opts), text_mask.to(torch::kFloat)}, 1) * fits;
    auto d = hidden_state_distance(f.lm.hidden_states, teacher.hidden_states, where);
    if (slot_weight > 0)
      d = d + slot_weight * hidden_state_distance(f.lm.hidden_states, teacher.hidden_states, slot_positions * fits);
    return d;
  }
  // Encoder-decoder (relative positions): the caption's tokens, as many as
  // it has, right before the text; the context slot is padded (masked) in
  // front, so each token keeps its distance to the text. With `fill`: the
  // caption's tokens then zero vectors up to Q positions, every one attended
  // (the context as pretraining with fillers read it); a longer caption has
  // no teacher.
  const auto slots = fill ? caption_slots(tok, captions, Q, pad, false) : caption_slots(tok, captions, 0, pad, true);
  {
    torch::NoGradGuard g;
    auto context = lm.embed_tokens(slots.ids.to(text.device())).to(text.scalar_type());
    torch::Tensor mask;
    if (fill) {
      context = context * slots.real.to(text.device(), text.scalar_type()).unsqueeze(-1);
      mask = f.attention_mask;
    } else {
      mask = torch::cat({slots.real.to(text_mask.device(), text_mask.scalar_type()), text_mask}, 1);
    }
    teacher = lm.forward(torch::cat({context, text}, 1), mask, decoder_input_ids, true);
  }
  const auto fits = fill ? slots.fits.to(opts).unsqueeze(1) : torch::ones({B, 1}, opts);
  auto d = hidden_state_distance(f.lm.decoder_hidden_states, teacher.decoder_hidden_states,
                                 decoder_mask.to(opts) * fits);
  if (slot_weight > 0)
    d = d + slot_weight * hidden_state_distance(f.lm.encoder_hidden_states, teacher.encoder_hidden_states,
                                                slot_positions * fits);
  if (encoder_weight <= 0) return d;
  // The encoder's states at the text positions (the prompt and prefix after
  // the context, as a question sits after it at VQA): the student's text
  // starts after its Q queries, the teacher's after its context slot.
  const int64_t W = slots.ids.size(1);
  auto tail = [](const std::vector<torch::Tensor>& hs, int64_t from) {
    std::vector<torch::Tensor> out;
    for (const auto& h : hs) out.push_back(h.slice(1, from));
    return out;
  };
  return d + encoder_weight * hidden_state_distance(tail(f.lm.encoder_hidden_states, Q),
                                                    tail(teacher.encoder_hidden_states, W), text_mask.to(opts) * fits);
}

namespace {

// Decoder-only captioning loss (see caption_lm_loss).
torch::Tensor decoder_only_caption_loss(Blip2ModelImpl& model, const ImageInput& image,
                                        const std::vector<std::string>& captions, const Stage2Text& text) {
  const Tokenizer& tok = *text.tokenizer;
  std::vector<std::string> texts;
  for (const auto& c : captions) texts.push_back(text.prompt + c + "\n");
  auto [ids, mask] = tokenize_batch(tok, texts, text.max_txt_len, lm_pad_id(model, text));
  const int64_t prompt_len = text.prompt.empty() ? 1 : static_cast<int64_t>(tok.encode(text.prompt, true).size());
  auto labels = ids.masked_fill(mask == 0, -100);
  labels.slice(1, 0, std::min<int64_t>(prompt_len, labels.size(1))).fill_(-100);
  const bool distill = text.context_distill > 0;
  auto f = model.forward_embeds(image_embeds(model, image), ids, mask, {}, distill);
  auto loss = decoder_only_loss(f.lm.logits, labels, model.config().num_query_tokens);
  if (text.query_embed_reg > 0)
    loss = loss + text.query_embed_reg *
                      query_embedding_distance(*model.language_model, f.language_projection, tok.vocab_size());
  if (distill)
    loss = loss + text.context_distill *
                      context_distance(*model.language_model, f, mask, captions, tok, lm_pad_id(model, text), {}, {},
                                       0, false, text.context_distill_slots);
  return loss;
}

// Prefix LM (paper, Sec. 3.3) for encoder-decoder LMs (see caption_lm_loss).
torch::Tensor prefix_lm_loss(Blip2ModelImpl& model, const ImageInput& image,
                             const std::vector<std::string>& captions, const Stage2Text& text,
                             torch::Generator& generator) {
  std::vector<std::string> prefixes, suffixes;
  for (const auto& c : captions) {
    std::istringstream is(c);
    std::vector<std::string> words;
    for (std::string w; is >> w;) words.push_back(w);
    const int64_t n = static_cast<int64_t>(words.size());
    const bool whole = text.empty_prefix > 0 && torch::rand({1}, generator).item<double>() < text.empty_prefix;
    const int64_t k = n > 1 && !whole ? torch::randint(0, n, {1}, generator).item<int64_t>() : 0;
    std::string pre, suf;
    for (int64_t i = 0; i < n; ++i) (i < k ? pre : suf) += (i < k ? (pre.empty() ? "" : " ") : (suf.empty() ? "" : " ")) + words[i];
    prefixes.push_back(text.prompt.empty() ? pre : (pre.empty() ? text.prompt : text.prompt + " " + pre));
    suffixes.push_back(suf);
  }
  const int64_t pad = lm_pad_id(model, text);
  auto [ids, mask] = tokenize_batch(*text.tokenizer, prefixes, text.max_txt_len, pad);
  auto [tgt, tmask] = tokenize_batch(*text.tokenizer, suffixes, text.max_txt_len, pad);
  auto labels = tgt.masked_fill(tmask == 0, -100);
  if (text.context_distill <= 0) return lm_loss(model, image, ids, mask, labels).loss;
  const auto dec = model.language_model->decoder_input_ids(labels);
  auto f = model.forward_embeds(image_embeds(model, image), ids, mask, dec, true);
  return cross_entropy(f.lm.logits, labels, 0.0) +
         text.context_distill * context_distance(*model.language_model, f, mask, captions, *text.tokenizer, pad, dec,
                                                 labels != -100, text.context_distill_encoder,
                                                 text.context_distill_fill, text.context_distill_slots);
}

}  // namespace

ImageInput ImageInput::features(torch::Tensor vit_embeds) {
  ImageInput in{torch::Tensor()};
  in.vit_embeds = std::move(vit_embeds);
  return in;
}

torch::Tensor image_embeds(Blip2ModelImpl& model, const ImageInput& image, bool frozen_tower) {
  torch::Tensor vit = image.vit_embeds;
  if (!vit.defined()) {
    if (!image.pixel_values.defined()) throw InputError("[losses] give pixel_values or vit_embeds");
    std::optional<torch::NoGradGuard> frozen;
    if (frozen_tower) frozen.emplace();
    vit = model.vit_features(image.pixel_values);
  }
  nn::check_shape(vit, {-1, -1, model.config().vision.hidden_size}, "losses", "vit_embeds",
                  "check vision_config.hidden_size");
  // post_layernorm (ln_vision) may be kept in float32 while the tower is bf16.
  auto ln = model.vision_model->post_layernorm;
  return ln->forward(vit.to(ln->weight.scalar_type()));
}

torch::Tensor query_embedding_distance(LanguageModel& lm, const torch::Tensor& queries, int64_t vocab) {
  if (vocab < 1) throw InputError("[stage2] query_embedding_distance needs a vocabulary of >= 1 token");
  torch::Tensor E;
  {
    torch::NoGradGuard g;
    E = lm.embed_tokens(torch::arange(vocab, torch::kLong).unsqueeze(0)).squeeze(0).to(torch::kFloat);  // (V, D)
  }
  const auto q = queries.to(torch::kFloat).reshape({-1, E.size(1)});                                     // (N, D)
  const auto d2 = q.pow(2).sum(1, true) - 2 * q.matmul(E.t()) + E.pow(2).sum(1).unsqueeze(0);             // (N, V)
  return std::get<0>(d2.min(1)).clamp_min(0).mean() / E.pow(2).sum(1).mean();
}

torch::Tensor caption_lm_loss(Blip2ModelImpl& model, const ImageInput& image,
                              const std::vector<std::string>& captions, const Stage2Text& text,
                              torch::Generator& generator) {
  if (!model.language_model) throw InputError("[stage2] the model has no language model");
  return model.language_model->is_encoder_decoder() ? prefix_lm_loss(model, image, captions, text, generator)
                                                    : decoder_only_caption_loss(model, image, captions, text);
}

torch::Tensor vqa_answer_loss(Blip2ModelImpl& model, const ImageInput& image, const VqaTargets& vqa,
                              const Stage2Text& text, const Tokenizer& qformer_tokenizer,
                              const std::string& vqa_template) {
  if (!model.language_model) throw InputError("[stage2] the model has no language model");
  const LanguageModel& lm = *model.language_model;
  const auto B = static_cast<int64_t>(vqa.answers.size());
  if (static_cast<int64_t>(vqa.questions.size()) != B)
    throw InputError("[vqa] the batch has " + std::to_string(B) + " answers but " +
                     std::to_string(vqa.questions.size()) + " questions; VQA data give one question per answer");
  const Tokenizer& tok = *text.tokenizer;
  const int64_t pad = lm_pad_id(model, text);
  const std::string tmpl = vqa_template.empty() ? lm.vqa_template() : vqa_template;
  std::vector<std::string> prompts;
  for (const auto& q : vqa.questions) prompts.push_back(text::fill_template(tmpl, q));
  auto [qids, qmask] =
      tokenize_batch(qformer_tokenizer, vqa.questions, text.max_txt_len, qformer_tokenizer.pad_id().value_or(0));
  if (lm.is_encoder_decoder()) {
    auto [ids, mask] = tokenize_batch(tok, prompts, text.max_txt_len + 32, pad);
    auto [tgt, tmask] = tokenize_batch(tok, vqa.answers, text.max_txt_len, pad);
    auto labels = tgt.masked_fill(tmask == 0, -100);
    auto f = model.forward_embeds(image_embeds(model, image), ids, mask, lm.decoder_input_ids(labels), false, qids, qmask);
    auto logits = f.lm.logits;
    if (logits.scalar_type() != torch::kDouble) logits = logits.to(torch::kFloat);
    return F::cross_entropy(logits.reshape({-1, logits.size(2)}), labels.reshape({-1}),
                            F::CrossEntropyFuncOptions().ignore_index(-100));
  }
  // prompt + " " + answer + "\n"; only the answer (and "\n") are targets.
  std::vector<std::string> texts;
  std::vector<int64_t> prompt_lens;
  for (int64_t b = 0; b < B; ++b) {
    texts.push_back(prompts[static_cast<size_t>(b)] + " " + vqa.answers[static_cast<size_t>(b)] + "\n");
    prompt_lens.push_back(static_cast<int64_t>(tok.encode(prompts[static_cast<size_t>(b)], true).size()));
  }
  // The whole prompt + answer must fit the LLM's context after the queries.
  const int64_t Q = model.config().num_query_tokens;
  const int64_t context = lm.context_length() ? *lm.context_length() - Q : std::numeric_limits<int64_t>::max();
  auto [ids, mask] = tokenize_batch(tok, texts, context, pad);
  auto labels = ids.masked_fill(mask == 0, -100);
  for (int64_t b = 0; b < B; ++b) {
    const int64_t len = mask[b].sum().item<int64_t>(), prompt_len = prompt_lens[static_cast<size_t>(b)];
    if (len <= prompt_len && len >= context)
      throw InputError("[trainer] the VQA prompt for image '" + vqa.image_ids[static_cast<size_t>(b)] +
                       "' leaves no room for the answer in the language model's context (" +
                       std::to_string(context) + " tokens after the queries); shorten the question or template");
    labels[b].slice(0, 0, std::min<int64_t>(prompt_len, labels.size(1))).fill_(-100);
  }
  auto f = model.forward_embeds(image_embeds(model, image), ids, mask, {}, false, qids, qmask);
  return decoder_only_loss(f.lm.logits, labels, Q);
}

LmLossOutput lm_loss(Blip2ModelImpl& model, const ImageInput& image, const torch::Tensor& input_ids,
                     const torch::Tensor& attention_mask, const torch::Tensor& labels) {
  nn::check_shape(labels, {input_ids.size(0), -1}, "lm_loss", "labels", "one label row per prompt");
  LmLossOutput out;
  const auto embeds = image_embeds(model, image);
  if (model.language_model->is_encoder_decoder()) {
    out.decoder_input_ids = model.language_model->decoder_input_ids(labels);
    auto f = model.forward_embeds(embeds, input_ids, attention_mask, out.decoder_input_ids);
    out.logits = f.lm.logits;
    out.loss = cross_entropy(out.logits, labels, 0.0);
  } else {
    nn::check_shape(labels, {input_ids.size(0), input_ids.size(1)}, "lm_loss", "labels",
                    "decoder-only labels align with input_ids");
    auto f = model.forward_embeds(embeds, input_ids, attention_mask);
    const auto T = labels.size(1);
    out.logits = f.lm.logits.slice(1, f.lm.logits.size(1) - T);  // text positions only
    out.loss = cross_entropy(out.logits.slice(1, 0, T - 1), labels.slice(1, 1), 0.0);
  }
  return out;
}

Stage1Output stage1_forward(Blip2ModelImpl& model, const Stage1Inputs& in, const Stage1Options& o,
                            Collective& coll) {
  if (model.text_decoder_head.is_empty() || model.embeddings.is_empty())
    throw InputError("stage-1 training needs the retrieval and ITG heads; build the model with Blip2Parts{.itg=true}");
  const auto& cfg = model.config();
  ImageInput image = in.vit_embeds.defined() ? ImageInput::features(in.vit_embeds) : ImageInput(in.pixel_values);
  // ln_vision (B, N, Dv), trained; the frozen tower may run in bf16.
  auto image_embeds = blip2::image_embeds(model, image, !in.train_vision);
  nn::check_shape(in.text_ids, {image_embeds.size(0), -1}, "stage1", "text_ids", "one caption per image");
  const int64_t B = image_embeds.size(0), Q = cfg.num_query_tokens, rank = coll.rank();
  auto text_mask = in.text_mask.defined() ? in.text_mask.to(torch::kLong) : torch::ones_like(in.text_ids);

  {
    torch::NoGradGuard g;
    model.temp.clamp_(0.001, 0.5);
  }
  Stage1Output out;
  auto queries = model.query_tokens.expand({B, -1, -1});
  auto q_last = model.qformer->forward(queries, Q, {}, image_embeds).last_hidden_state;  // (B, Q, D)
  out.image_feats = F::normalize(model.vision_projection->forward(q_last), F::NormalizeFuncOptions().dim(-1));
  auto t_emb = model.embeddings->forward(in.text_ids);
  auto t_last = model.qformer->forward(t_emb, 0, nn::padding_bias(text_mask, t_emb.scalar_type(), -10000.0))
                    .last_hidden_state;  // (B, T, D)
  out.text_feat = F::normalize(model.text_projection->forward(t_last.select(1, 0)), F::NormalizeFuncOptions().dim(-1));

  // ---- ITC: max over queries, in-batch negatives gathered from all ranks.
  auto image_feats_all = coll.all_gather(out.image_feats);  // (B*W, Q, E)
  auto text_feat_all = coll.all_gather(out.text_feat);      // (B*W, E)
  out.sim_i2t = Blip2ModelImpl::itc_similarity(out.image_feats, text_feat_all) / model.temp;
  out.sim_t2i = Blip2ModelImpl::itc_similarity(image_feats_all, out.text_feat).t() / model.temp;
  torch::Tensor same_image;  // (B, B*W) pairs showing the same image (retrieval fine-tuning)
  if (in.image_ids.defined()) {
    nn::check_shape(in.image_ids, {B}, "stage1", "image_ids", "one id per image");
    auto ids = in.image_ids.to(image_embeds.device()).view({-1, 1});
    same_image = ids == coll.all_gather(ids).view({1, -1});
    auto t = same_image.to(out.sim_i2t.scalar_type());
    t = t / t.sum(1, true);
    t = 0.9 * t + 0.1 / static_cast<double>(t.size(1));
    out.loss_itc = (-(out.sim_i2t.log_softmax(1) * t).sum(1).mean() - (out.sim_t2i.log_softmax(1) * t).sum(1).mean()) / 2;
  } else {
    auto targets = torch::arange(rank * B, rank * B + B, torch::TensorOptions().dtype(torch::kLong).device(image_embeds.device()));
    out.loss_itc = (cross_entropy(out.sim_i2t, targets, o.itc_label_smoothing) +
                    cross_entropy(out.sim_t2i, targets, o.itc_label_smoothing)) / 2;
  }

  // ---- ITM with hard negatives drawn from the ITC similarities.
  auto text_ids_all = coll.all_gather(in.text_ids);
  auto text_mask_all = coll.all_gather(text_mask);
  auto image_embeds_all = coll.all_gather_with_grad(image_embeds);
  {
    torch::NoGradGuard g;
    auto diag = [&](torch::Tensor s) {
      s = s.detach().clone();
      if (same_image.defined()) s.masked_fill_(same_image, o.diag_fill);  // no "negative" of the same image
      else s.slice(1, rank * B, rank * B + B).diagonal().fill_(o.diag_fill);
      return s.softmax(1);
    };
    out.weights_t2i = diag(out.sim_t2i);
    out.weights_i2t = diag(out.sim_i2t);
    // LAVIS draws the negative image of every text first, then the negative texts.
    out.neg_image_idx = in.neg_image_idx.defined()
                            ? in.neg_image_idx.to(torch::kLong)
                            : at::multinomial(out.weights_t2i.to(torch::kCPU), 1, false, in.generator).view({-1});
    out.neg_text_idx = in.neg_text_idx.defined()
                           ? in.neg_text_idx.to(torch::kLong)
                           : at::multinomial(out.weights_i2t.to(torch::kCPU), 1, false, in.generator).view({-1});
  }
  auto dev = image_embeds.device();
  auto neg_img = out.neg_image_idx.to(dev), neg_txt = out.neg_text_idx.to(dev);
  auto itm_ids = torch::cat({in.text_ids, in.text_ids, text_ids_all.index_select(0, neg_txt)}, 0);
  auto itm_mask = torch::cat({text_mask, text_mask, text_mask_all.index_select(0, neg_txt)}, 0);
  auto itm_images = torch::cat({image_embeds, image_embeds_all.index_select(0, neg_img), image_embeds}, 0);
  out.itm_logits = model.itm_logits(itm_images, itm_ids, itm_mask);
  out.itm_labels = torch::cat({torch::ones({B}, torch::kLong), torch::zeros({2 * B}, torch::kLong)}).to(dev);
  out.loss_itm = cross_entropy(out.itm_logits, out.itm_labels, o.itm_label_smoothing);

  // ---- ITG: [DEC] + text, queries see queries, text sees queries and earlier text.
  auto dec_ids = in.text_ids.clone();
  dec_ids.select(1, 0).fill_(o.dec_token_id);
  auto labels = dec_ids.masked_fill(dec_ids == o.pad_token_id, -100);
  auto itg_emb = model.embeddings->forward(dec_ids, queries);
  auto itg_mask = torch::cat({torch::ones({B, Q}, text_mask.options()), text_mask}, 1);
  auto itg_bias = qformer_self_attention_bias(itg_mask, Q, QFormerMask::kMultimodalCausal, itg_emb.scalar_type());
  auto itg_h = model.qformer->forward(itg_emb, Q, itg_bias, image_embeds).last_hidden_state;
  auto text_h = itg_h.slice(1, Q);
  auto logits = model.text_decoder_head->forward(text_h, model.embeddings->word_embeddings->weight);
  const auto T = dec_ids.size(1);
  out.itg_logits = logits.slice(1, 0, T - 1);
  out.itg_labels = labels.slice(1, 1);
  out.loss_lm = cross_entropy(out.itg_logits, out.itg_labels, o.itg_label_smoothing);

  auto zero = torch::zeros({}, out.loss_itc.options());
  out.loss = (o.use_itc ? out.loss_itc : zero) + (o.use_itm ? out.loss_itm : zero) + (o.use_itg ? out.loss_lm : zero);
  return out;
}

}  // namespace blip2
