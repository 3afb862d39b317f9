#include "blip2/lm/language_model.h"

#include "blip2/lm/opt.h"
#include "blip2/lm/t5.h"
#include "blip2/util/error.h"

namespace blip2 {

std::shared_ptr<LanguageModel> make_language_model(const TextConfig& text) {
  switch (text.family) {
    case LmFamily::kOpt: return std::make_shared<OptLanguageModel>(text.opt);
    case LmFamily::kT5: return std::make_shared<T5LanguageModel>(text.t5);
  }
  throw ConfigError("text_config: unknown language-model family");
}

torch::Tensor shift_right(const torch::Tensor& labels, int64_t start, int64_t pad) {
  auto out = torch::full_like(labels, start);
  out.slice(1, 1) = labels.slice(1, 0, labels.size(1) - 1);
  return out.masked_fill(out == -100, pad);
}

}  // namespace blip2
