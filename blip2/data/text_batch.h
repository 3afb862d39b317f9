// Token-id batches from texts: encode, truncate (keeping a closing special
// token), pad to the longest row. Used by training, the Pipeline and eval.
#pragma once

#include <torch/types.h>

#include <string>
#include <utility>
#include <vector>

namespace blip2 {

class Tokenizer;

struct TextBatchOptions {
  int64_t max_len = 512;
  int64_t pad_id = 0;
  bool add_special_tokens = true;
  bool left_pad = false;  // decoder-only generation pads on the left
};

// (B, L) ids and keep-mask, L = the longest encoded row (at least 1 unless
// every text is empty and allow_empty).
std::pair<at::Tensor, at::Tensor> encode_batch(const Tokenizer& tok, const std::vector<std::string>& texts,
                                               const TextBatchOptions& options, bool allow_empty = false);

// Right-padded token ids (B, L) and mask for texts; L = longest, at most max_len.
std::pair<at::Tensor, at::Tensor> tokenize_batch(const Tokenizer& tok, const std::vector<std::string>& texts,
                                                 int64_t max_len, int64_t pad_id, bool add_special_tokens = true);

// Pads already-encoded rows the same way.
std::pair<at::Tensor, at::Tensor> pad_batch(const std::vector<std::vector<int64_t>>& rows, int64_t pad_id,
                                            bool left_pad = false, bool allow_empty = false);

}  // namespace blip2
