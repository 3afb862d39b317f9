// BERT WordPiece, as HF transformers 4.45 BertTokenizer (the Q-Former's text
// side: bert-base-uncased plus "[DEC]" as its decoder BOS).
//
//   BasicTokenizer: drop NUL / U+FFFD / control characters, whitespace -> " ",
//     CJK ideographs split off, NFC, split on whitespace, lower-case + strip
//     accents (NFD, drop Mn) when do_lower_case, split off punctuation
//     (ASCII symbols and Unicode P*); special tokens are never split.
//   WordpieceTokenizer: greedy longest match with "##" continuations; words
//     over max_input_chars_per_word (100) or without a match -> [UNK].
//   encode adds [CLS] ... [SEP]; decode joins with " " and removes " ##".
#pragma once

#include <nlohmann/json_fwd.hpp>

#include <memory>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "blip2/data/tokenizer.h"

namespace blip2 {

class WordPieceTokenizer final : public Tokenizer {
 public:
  // `vocab`: (token, id) in file order; a repeated token keeps its last id (HF load_vocab).
  WordPieceTokenizer(const std::vector<std::pair<std::string, int64_t>>& vocab, const TokenizerOptions& options);

  // vocab.txt: one token per line, the line number (from 0) is its id.
  static std::unique_ptr<WordPieceTokenizer> from_file(const std::string& vocab_txt, const TokenizerOptions& options);
  // The "model" / "normalizer" of a parsed tokenizer.json (type "WordPiece").
  static std::unique_ptr<WordPieceTokenizer> from_tokenizer_json(const nlohmann::json& tokenizer_json,
                                                                 const std::string& path,
                                                                 const TokenizerOptions& options);

  std::string kind() const override { return "wordpiece"; }
  bool do_lower_case() const { return do_lower_case_; }

  // HF BasicTokenizer.tokenize(text, never_split=all_special_tokens).
  std::vector<std::string> basic_tokenize(const std::string& text) const;

 protected:
  std::vector<std::string> tokenize_segment(const std::string& text) const override;
  std::optional<int64_t> base_token_to_id(const std::string& token) const override;
  std::optional<std::string> base_id_to_token(int64_t id) const override;
  int64_t base_vocab_size() const override { return static_cast<int64_t>(vocab_.size()); }
  std::string convert_tokens_to_string(const std::vector<std::string>& tokens) const override;
  std::vector<int64_t> build_inputs_with_special_tokens(const std::vector<int64_t>& ids) const override;
  bool lowercases_input() const override { return do_lower_case_; }

 private:
  // Greedy longest-match-first split of one word, appended to `out`.
  void wordpiece(const std::string& word, std::vector<std::string>& out) const;
  bool never_split(const std::string& token) const;

  std::unordered_map<std::string, int64_t> vocab_;
  std::unordered_map<int64_t, std::string> ids_to_tokens_;
  int64_t max_id_ = -1;
  bool do_lower_case_ = true;
  std::optional<bool> strip_accents_;
  bool tokenize_chinese_chars_ = true;
  std::unordered_set<std::string> never_split_;  // the constructor's never_split (not the special tokens)
  size_t max_input_chars_per_word_ = 100;
  std::string prefix_ = "##";
};

}  // namespace blip2
