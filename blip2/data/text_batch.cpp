#include "blip2/data/text_batch.h"

#include <ATen/ATen.h>

#include "blip2/data/tokenizer.h"

namespace blip2 {

std::pair<at::Tensor, at::Tensor> pad_batch(const std::vector<std::vector<int64_t>>& rows, int64_t pad_id,
                                            bool left_pad, bool allow_empty) {
  size_t longest = allow_empty ? 0 : 1;
  for (const auto& r : rows) longest = std::max(longest, r.size());
  const int64_t B = static_cast<int64_t>(rows.size()), L = static_cast<int64_t>(longest);
  auto ids = at::full({B, L}, pad_id, at::kLong);
  auto mask = at::zeros({B, L}, at::kLong);
  auto* pi = ids.data_ptr<int64_t>();
  auto* pm = mask.data_ptr<int64_t>();
  for (int64_t b = 0; b < B; ++b) {
    const auto& r = rows[static_cast<size_t>(b)];
    const int64_t off = left_pad ? L - static_cast<int64_t>(r.size()) : 0;
    for (size_t j = 0; j < r.size(); ++j) {
      pi[b * L + off + static_cast<int64_t>(j)] = r[j];
      pm[b * L + off + static_cast<int64_t>(j)] = 1;
    }
  }
  return {ids, mask};
}

std::pair<at::Tensor, at::Tensor> encode_batch(const Tokenizer& tok, const std::vector<std::string>& texts,
                                               const TextBatchOptions& o, bool allow_empty) {
  std::vector<std::vector<int64_t>> rows;
  for (const auto& t : texts) {
    auto ids = tok.encode(t, o.add_special_tokens);
    if (static_cast<int64_t>(ids.size()) > o.max_len) {
      // Truncate the content but keep a closing special token ([SEP], </s>).
      const int64_t last = ids.back();
      ids.resize(static_cast<size_t>(o.max_len));
      if (o.add_special_tokens) ids.back() = last;
    }
    rows.push_back(std::move(ids));
  }
  return pad_batch(rows, o.pad_id, o.left_pad, allow_empty);
}

std::pair<at::Tensor, at::Tensor> tokenize_batch(const Tokenizer& tok, const std::vector<std::string>& texts,
                                                 int64_t max_len, int64_t pad_id, bool add_special_tokens) {
  TextBatchOptions o;
  o.max_len = max_len;
  o.pad_id = pad_id;
  o.add_special_tokens = add_special_tokens;
  return encode_batch(tok, texts, o);
}

}  // namespace blip2
