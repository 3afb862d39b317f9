// GPT-2 byte-level BPE, as HF transformers 4.45 GPT2Tokenizer (the tokenizer
// of OPT checkpoints too; OPT ships its own vocab.json ids over GPT-2's merges
// and sets add_bos_token with bos "</s>").
//
//   text -> GPT-2 pre-tokenisation regex (PCRE2, UTF + UCP)
//        -> each piece's UTF-8 bytes mapped to printable code points (bytes_to_unicode)
//        -> merges applied by rank (lowest first, all occurrences) -> vocab ids
//   decode: tokens -> code points -> bytes -> UTF-8 (invalid sequences -> U+FFFD)
#pragma once

#include <nlohmann/json_fwd.hpp>

#include <array>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "blip2/data/tokenizer.h"

namespace blip2 {

class BpeTokenizer final : public Tokenizer {
 public:
  // `vocab`: token -> id (vocab.json); `merges`: pairs in rank order (merges.txt).
  BpeTokenizer(std::unordered_map<std::string, int64_t> vocab,
               const std::vector<std::pair<std::string, std::string>>& merges, const TokenizerOptions& options);
  ~BpeTokenizer() override;

  // vocab.json + merges.txt. ConfigError for a missing file, malformed JSON
  // (with the line), a non-integer id, or a merges line that is not "a b".
  static std::unique_ptr<BpeTokenizer> from_files(const std::string& vocab_json, const std::string& merges_txt,
                                                  const TokenizerOptions& options);
  // The "model" of a parsed tokenizer.json (type "BPE" with a ByteLevel pre-tokenizer).
  static std::unique_ptr<BpeTokenizer> from_tokenizer_json(const nlohmann::json& tokenizer_json,
                                                           const std::string& path, const TokenizerOptions& options);

  std::string kind() const override { return "bpe"; }
  bool add_bos_token() const { return add_bos_token_; }
  bool add_prefix_space() const { return add_prefix_space_; }

  // The GPT-2 regex pieces of `text` (HF: re.findall(self.pat, text)).
  std::vector<std::string> pretokenize(const std::string& text) const;

 protected:
  std::vector<std::string> tokenize_segment(const std::string& text) const override;
  std::optional<int64_t> base_token_to_id(const std::string& token) const override;
  std::optional<std::string> base_id_to_token(int64_t id) const override;
  int64_t base_vocab_size() const override { return static_cast<int64_t>(encoder_.size()); }
  std::string convert_tokens_to_string(const std::vector<std::string>& tokens) const override;
  std::vector<int64_t> build_inputs_with_special_tokens(const std::vector<int64_t>& ids) const override;
  std::string prepare_for_tokenization(const std::string& text) const override;

 private:
  // Merges applied to one byte-mapped word; cached.
  std::vector<std::string> bpe(const std::string& word) const;

  struct Regex;
  std::unique_ptr<Regex> regex_;
  std::unordered_map<std::string, int64_t> encoder_;
  std::unordered_map<int64_t, std::string> decoder_;
  std::unordered_map<std::string, int> ranks_;  // "a b" -> rank
  std::array<std::string, 256> byte_encoder_;   // byte -> UTF-8 of its printable stand-in
  std::unordered_map<char32_t, unsigned char> byte_decoder_;
  bool add_bos_token_ = false;
  bool add_prefix_space_ = false;

  mutable std::mutex cache_mutex_;
  mutable std::unordered_map<std::string, std::vector<std::string>> cache_;
};

}  // namespace blip2
