#include <torch/torch.h>

#include <chrono>
#include <filesystem>

#include "blip2/blip2.h"
#include "blip2/data/image_processor.h"
#include "blip2/data/text_batch.h"
#include "blip2/data/tokenizer.h"
#include "blip2/model/blip2_model.h"
#include "blip2/model/model_dir.h"
#include "blip2/nn/ops.h"

namespace fs = std::filesystem;

namespace blip2 {

struct Pipeline::Impl : ModelDir {};

Pipeline::Pipeline() : impl_(std::make_unique<Impl>()) {}
Pipeline::Pipeline(Pipeline&&) noexcept = default;
Pipeline& Pipeline::operator=(Pipeline&&) noexcept = default;
Pipeline::~Pipeline() = default;

GenerationConfig Pipeline::caption_defaults() {
  GenerationConfig g;
  g.num_beams = 5;
  g.max_new_tokens = 30;
  g.min_new_tokens = 1;
  return g;
}

GenerationConfig Pipeline::vqa_defaults() {
  GenerationConfig g;
  g.num_beams = 5;
  g.max_new_tokens = 10;
  g.min_new_tokens = 1;
  g.length_penalty = -1.0;
  return g;
}

Pipeline Pipeline::load(const std::string& dir, const PipelineOptions& options) {
  Pipeline p;
  static_cast<ModelDir&>(*p.impl_) = load_model_dir(dir, options);
  return p;
}

const Blip2Config& Pipeline::config() const { return impl_->model->config(); }
const Tokenizer& Pipeline::tokenizer() const { return *impl_->tokenizer; }
bool Pipeline::has_language_model() const { return impl_->model->parts().language; }
bool Pipeline::has_retrieval_heads() const { return impl_->model->parts().retrieval; }
double Pipeline::load_seconds() const { return impl_->load_seconds; }
std::string Pipeline::runtime_description() const { return impl_->runtime.line; }

namespace {
LanguageModel& require_language_model(const Pipeline& p, const Blip2ModelImpl& model) {
  if (!p.has_language_model())
    throw InputError("this checkpoint has no language model (a retrieval model): it can match and embed, not caption");
  return *model.language_model;
}
}  // namespace

std::string Pipeline::vqa_prompt_template() const {
  return require_language_model(*this, *impl_->model).vqa_template();
}

at::Tensor Pipeline::pixel_values(const std::vector<Image>& images) const {
  if (images.empty()) throw InputError("no images given");
  return preprocess_batch(images, impl_->processor).to(impl_->runtime.device, impl_->runtime.compute_dtype);
}

std::vector<TextResult> Pipeline::generate(const std::vector<Image>& images, const std::vector<std::string>& prompts,
                                           const GenerationConfig& generation) {
  return generate_with_qformer_text(images, prompts, {}, generation);
}

std::vector<TextResult> Pipeline::generate_with_qformer_text(const std::vector<Image>& images,
                                                             const std::vector<std::string>& prompts,
                                                             const std::vector<std::string>& qformer_texts,
                                                             const GenerationConfig& generation) {
  auto& s = *impl_;
  const LanguageModel& lm = require_language_model(*this, *s.model);
  if (prompts.size() != images.size() && !prompts.empty())
    throw InputError("got " + std::to_string(images.size()) + " images but " + std::to_string(prompts.size()) +
                     " prompts; give one prompt per image");
  auto t0 = std::chrono::steady_clock::now();
  torch::NoGradGuard g;
  auto pixels = pixel_values(images);
  const bool decoder_only = !lm.is_encoder_decoder();
  const int64_t B = static_cast<int64_t>(images.size());
  const int64_t pad = s.tokenizer->pad_id().value_or(lm.pad_token_id());
  // Query tokens + prompt + new tokens must fit the LM's context (with or without a prompt).
  auto check_context = [&](size_t longest) {
    if (const auto ctx = lm.context_length()) {
      const int64_t q = config().num_query_tokens, room = *ctx - q;
      if (generation.max_new_tokens >= room)
        throw InputError("max_new_tokens " + std::to_string(generation.max_new_tokens) + " does not fit the language "
                         "model's context of " + std::to_string(*ctx) + " positions (" + std::to_string(q) +
                         " go to the query tokens); give --max-new-tokens below " + std::to_string(room));
      const int64_t limit = room - generation.max_new_tokens;
      if (static_cast<int64_t>(longest) > limit)
        throw InputError("the prompt has " + std::to_string(longest) + " tokens; with " + std::to_string(q) +
                         " query tokens and max_new_tokens " + std::to_string(generation.max_new_tokens) +
                         " at most " + std::to_string(limit) +
                         " fit the language model's context; shorten the prompt or lower --max-new-tokens");
    }
  };
  torch::Tensor ids, mask;
  bool any_prompt = false;
  for (const auto& p : prompts) any_prompt = any_prompt || !p.empty();
  if (any_prompt || !decoder_only) {
    std::vector<std::vector<int64_t>> rows;
    size_t longest = 0;
    for (int64_t b = 0; b < B; ++b) {
      const std::string& p = prompts.empty() ? std::string() : prompts[static_cast<size_t>(b)];
      // An empty prompt is still encoded: T5's gives the </s> its training put
      // after the queries (LAVIS's t5_tokenizer("") is [</s>] too), OPT's the BOS.
      auto r = s.tokenizer->encode(p, true);
      longest = std::max(longest, r.size());
      rows.push_back(std::move(r));
    }
    check_context(longest);
    std::tie(ids, mask) = pad_batch(rows, pad, /*left_pad=*/decoder_only, /*allow_empty=*/true);
    ids = ids.to(s.runtime.device);
    mask = mask.to(s.runtime.device);
  } else {
    check_context(1);  // BOS
  }
  torch::Tensor qids, qmask;
  if (!qformer_texts.empty() && s.qformer_tokenizer) {
    TextBatchOptions o;
    o.max_len = config().qformer.max_position_embeddings;
    o.pad_id = s.qformer_tokenizer->pad_id().value_or(0);
    std::tie(qids, qmask) = encode_batch(*s.qformer_tokenizer, qformer_texts, o);
    qids = qids.to(s.runtime.device);
    qmask = qmask.to(s.runtime.device);
  }
  auto out = s.model->generate(pixels, ids, mask, generation, true, qids, qmask);
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  auto seqs = out.sequences.to(torch::kCPU);
  std::vector<TextResult> res;
  for (int64_t r = 0; r < seqs.size(0); ++r) {
    TextResult t;
    t.token_ids.assign(seqs[r].data_ptr<int64_t>(), seqs[r].data_ptr<int64_t>() + seqs.size(1));
    t.text = text::py_strip(s.tokenizer->decode(t.token_ids, /*skip_special_tokens=*/true));
    t.seconds = secs;
    res.push_back(std::move(t));
  }
  return res;
}

std::vector<TextResult> Pipeline::caption(const std::vector<Image>& images, const std::string& prompt,
                                          const GenerationConfig& generation) {
  return generate(images, std::vector<std::string>(images.size(), prompt), generation);
}

std::vector<TextResult> Pipeline::answer(const std::vector<Image>& images, const std::vector<std::string>& questions,
                                         const GenerationConfig& generation, const std::string& prompt_template) {
  if (questions.size() != images.size())
    throw InputError("got " + std::to_string(images.size()) + " images but " + std::to_string(questions.size()) +
                     " questions; give one question per image");
  const std::string tmpl = prompt_template.empty() ? vqa_prompt_template() : prompt_template;
  std::vector<std::string> prompts;
  for (const auto& q : questions) {
    prompts.push_back(text::fill_template(tmpl, q));  // InputError for a template without {}
    if (text::py_strip(q).empty()) throw InputError("the question is empty; ask something about the image");
  }
  // Models fine-tuned for VQA also read the question in the Q-Former.
  return generate_with_qformer_text(images, prompts, questions, generation);
}

namespace {
void require_retrieval(const Pipeline& p) {
  if (!p.has_retrieval_heads())
    throw InputError("image/text embeddings and matching need a retrieval checkpoint (Blip2ForImageTextRetrieval)");
}

std::pair<torch::Tensor, torch::Tensor> encode_text(const Tokenizer& tok, const std::string& text, int64_t max_len) {
  TextBatchOptions o;
  o.max_len = max_len;
  o.pad_id = tok.pad_id().value_or(0);
  return encode_batch(tok, {text}, o);
}
}  // namespace

at::Tensor Pipeline::image_embedding(const Image& image) { return image_embeddings({image})[0]; }

at::Tensor Pipeline::image_embeddings(const std::vector<Image>& images) {
  require_retrieval(*this);
  torch::NoGradGuard g;
  auto v = impl_->model->encode_image(pixel_values(images)).last_hidden_state;
  return impl_->model->image_features(v).to(torch::kCPU, torch::kFloat);
}

at::Tensor Pipeline::text_embedding(const std::string& text) {
  require_retrieval(*this);
  torch::NoGradGuard g;
  auto [ids, mask] = encode_text(*impl_->tokenizer, text, config().qformer.max_position_embeddings);
  auto f = impl_->model->text_features(ids.to(impl_->runtime.device), mask.to(impl_->runtime.device)).first;
  return f[0][0].to(torch::kCPU, torch::kFloat);
}

double Pipeline::similarity(const Image& image, const std::string& text) {
  auto i = image_embedding(image);  // (Q, E)
  auto t = text_embedding(text);    // (E)
  return Blip2ModelImpl::itc_similarity(i.unsqueeze(0), t.unsqueeze(0)).item<double>();
}

double Pipeline::match(const Image& image, const std::string& text) { return match(std::vector<Image>{image}, text)[0]; }

std::vector<double> Pipeline::match(const std::vector<Image>& images, const std::string& text) {
  require_retrieval(*this);
  if (images.empty()) return {};
  torch::NoGradGuard g;
  auto [ids, mask] = encode_text(*impl_->tokenizer, text, config().qformer.max_position_embeddings - config().num_query_tokens);
  const int64_t b = static_cast<int64_t>(images.size());
  auto out = impl_->model->itm(pixel_values(images), ids.expand({b, -1}).to(impl_->runtime.device),
                               mask.expand({b, -1}).to(impl_->runtime.device));
  auto p = out.logits.to(torch::kCPU, torch::kFloat).softmax(-1).select(1, 1).contiguous();
  return std::vector<double>(p.data_ptr<float>(), p.data_ptr<float>() + b);
}

}  // namespace blip2
