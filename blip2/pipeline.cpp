#include <torch/torch.h>

#include <chrono>
#include <filesystem>

#include "blip2/blip2.h"
#include "blip2/data/image_processor.h"
#include "blip2/data/text_batch.h"
#include "blip2/data/tokenizer.h"
#include "blip2/model/blip2_model.h"
#include "blip2/nn/ops.h"

namespace fs = std::filesystem;

namespace blip2 {

struct Pipeline::Impl {
  Blip2Model model{nullptr};
  std::unique_ptr<Tokenizer> tok;
  std::unique_ptr<Tokenizer> qformer_tok;  // models whose Q-Former reads the question
  ImageProcessorConfig proc;
  torch::Device device{torch::kCPU};
  torch::ScalarType dtype = torch::kFloat;
  double load_seconds = 0;
};

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
  auto t0 = std::chrono::steady_clock::now();
  if (!fs::is_directory(dir))
    throw ConfigError("model directory '" + dir + "' does not exist; give the path of a BLIP-2 checkpoint directory");
  Pipeline p;
  auto& s = *p.impl_;
  if (options.dtype == "float32") s.dtype = torch::kFloat;
  else if (options.dtype == "bfloat16") s.dtype = torch::kBFloat16;
  else if (options.dtype == "float16") s.dtype = torch::kHalf;
  else throw ConfigError("dtype '" + options.dtype + "' is not supported (float32, bfloat16, float16)");
  try {
    s.device = torch::Device(options.device);
  } catch (const std::exception&) {
    throw ConfigError("device '" + options.device + "' is not valid (cpu, cuda, cuda:N)");
  }
  if (s.device.is_cuda() && !torch::cuda::is_available())
    throw ConfigError("device '" + options.device + "' requested but this libtorch has no usable CUDA; use --device cpu");
  if (options.threads > 0) torch::set_num_threads(options.threads);
  LoadOptions lo;
  lo.dtype = s.dtype;
  lo.device = s.device;
  s.model = load_blip2(dir, lo);
  s.tok = load_tokenizer(dir);
  if (s.model->parts().qformer_text) {
    const fs::path q = fs::path(dir) / "qformer_tokenizer";
    if (!fs::is_directory(q))
      throw ConfigError("model '" + dir + "' has a Q-Former that reads text but no qformer_tokenizer/ directory "
                        "(the BERT vocab.txt with [DEC]); copy it from the training run");
    s.qformer_tok = load_tokenizer(q.string());
  }
  const auto& vc = s.model->config().vision;
  if (fs::exists(fs::path(dir) / "preprocessor_config.json")) {
    s.proc = ImageProcessorConfig::from_json_file((fs::path(dir) / "preprocessor_config.json").string());
  } else {
    s.proc.height = s.proc.width = static_cast<int>(vc.image_size);
  }
  s.load_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return p;
}

const Blip2Config& Pipeline::config() const { return impl_->model->config(); }
const Tokenizer& Pipeline::tokenizer() const { return *impl_->tok; }
bool Pipeline::has_language_model() const { return impl_->model->parts().language; }
bool Pipeline::has_retrieval_heads() const { return impl_->model->parts().retrieval; }
double Pipeline::load_seconds() const { return impl_->load_seconds; }

std::string Pipeline::vqa_prompt_template() const {
  return config().text.vqa_template();
}

at::Tensor Pipeline::pixel_values(const std::vector<Image>& images) const {
  if (images.empty()) throw InputError("no images given");
  return preprocess_batch(images, impl_->proc).to(impl_->device, impl_->dtype);
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
  if (!has_language_model())
    throw InputError("this checkpoint has no language model (a retrieval model): it can match and embed, not caption");
  if (prompts.size() != images.size() && !prompts.empty())
    throw InputError("got " + std::to_string(images.size()) + " images but " + std::to_string(prompts.size()) +
                     " prompts; give one prompt per image");
  auto t0 = std::chrono::steady_clock::now();
  torch::NoGradGuard g;
  auto pixels = pixel_values(images);
  const bool decoder_only = !config().text.is_encoder_decoder();
  const int64_t B = static_cast<int64_t>(images.size());
  const int64_t pad = s.tok->pad_id().value_or(config().text.pad_token_id());
  torch::Tensor ids, mask;
  bool any_prompt = false;
  for (const auto& p : prompts) any_prompt = any_prompt || !p.empty();
  if (any_prompt || !decoder_only) {
    std::vector<std::vector<int64_t>> rows;
    size_t longest = 0;
    for (int64_t b = 0; b < B; ++b) {
      const std::string& p = prompts.empty() ? std::string() : prompts[static_cast<size_t>(b)];
      auto r = (p.empty() && !decoder_only) ? std::vector<int64_t>{} : s.tok->encode(p, true);
      longest = std::max(longest, r.size());
      rows.push_back(std::move(r));
    }
    const int64_t limit = decoder_only ? config().text.opt.max_position_embeddings - config().num_query_tokens -
                                             generation.max_new_tokens
                                       : std::numeric_limits<int64_t>::max();
    if (static_cast<int64_t>(longest) > limit)
      throw InputError("the prompt has " + std::to_string(longest) + " tokens; with " +
                       std::to_string(config().num_query_tokens) + " query tokens and max_new_tokens " +
                       std::to_string(generation.max_new_tokens) + " at most " + std::to_string(limit) +
                       " fit the language model's context; shorten the prompt");
    std::tie(ids, mask) = pad_batch(rows, pad, /*left_pad=*/decoder_only, /*allow_empty=*/true);
    ids = ids.to(s.device);
    mask = mask.to(s.device);
  }
  torch::Tensor qids, qmask;
  if (!qformer_texts.empty() && s.qformer_tok) {
    TextBatchOptions o;
    o.max_len = config().qformer.max_position_embeddings;
    o.pad_id = s.qformer_tok->pad_id().value_or(0);
    std::tie(qids, qmask) = encode_batch(*s.qformer_tok, qformer_texts, o);
    qids = qids.to(s.device);
    qmask = qmask.to(s.device);
  }
  auto out = s.model->generate(pixels, ids, mask, generation, true, qids, qmask);
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  auto seqs = out.sequences.to(torch::kCPU);
  std::vector<TextResult> res;
  for (int64_t r = 0; r < seqs.size(0); ++r) {
    TextResult t;
    t.token_ids.assign(seqs[r].data_ptr<int64_t>(), seqs[r].data_ptr<int64_t>() + seqs.size(1));
    t.text = text::py_strip(s.tok->decode(t.token_ids, /*skip_special_tokens=*/true));
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

at::Tensor Pipeline::image_embedding(const Image& image) {
  require_retrieval(*this);
  torch::NoGradGuard g;
  auto v = impl_->model->encode_image(pixel_values({image})).last_hidden_state;
  return impl_->model->image_features(v)[0].to(torch::kCPU, torch::kFloat);
}

at::Tensor Pipeline::text_embedding(const std::string& text) {
  require_retrieval(*this);
  torch::NoGradGuard g;
  auto [ids, mask] = encode_text(*impl_->tok, text, config().qformer.max_position_embeddings);
  auto f = impl_->model->text_features(ids.to(impl_->device), mask.to(impl_->device)).first;
  return f[0][0].to(torch::kCPU, torch::kFloat);
}

double Pipeline::similarity(const Image& image, const std::string& text) {
  auto i = image_embedding(image);  // (Q, E)
  auto t = text_embedding(text);    // (E)
  return torch::matmul(i, t).max().item<double>();
}

double Pipeline::match(const Image& image, const std::string& text) {
  require_retrieval(*this);
  torch::NoGradGuard g;
  auto [ids, mask] = encode_text(*impl_->tok, text, config().qformer.max_position_embeddings - config().num_query_tokens);
  auto out = impl_->model->itm(pixel_values({image}), ids.to(impl_->device), mask.to(impl_->device));
  return out.logits.to(torch::kFloat).softmax(-1)[0][1].item<double>();
}

}  // namespace blip2
