// T5 / FlanT5 SentencePiece, as HF transformers 4.45 T5Tokenizer, through
// libsentencepiece itself (reached via SpmModel, spm_runtime.h: the library
// cannot be linked beside libtorch).
//
//   special tokens: eos "</s>" (1), unk "<unk>" (2), pad "<pad>" (0), and
//     extra_ids sentinels "<extra_id_0>".. at ids piece_size-1+extra_ids-i
//     (lstrip/rstrip added tokens);
//   encode appends </s> unless the ids already end with it;
//   legacy=true (HF's default when tokenizer_config.json has no "legacy"):
//     each text segment is sp.encode(segment);
//   legacy=false: the model is loaded with add_dummy_prefix=false, the text
//     gets a "▁" prefix, segments after special tokens are not re-prefixed.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "blip2/data/tokenizer.h"

namespace blip2 {

class SpmModel;

class SentencePieceTokenizer final : public Tokenizer {
 public:
  // ConfigError when the file is missing or is not a SentencePiece model.
  SentencePieceTokenizer(const std::string& spiece_model, const TokenizerOptions& options);
  ~SentencePieceTokenizer() override;

  std::string kind() const override { return "sentencepiece"; }
  bool legacy() const { return legacy_; }

 protected:
  std::vector<std::string> tokenize_segment(const std::string& text) const override;
  std::optional<int64_t> base_token_to_id(const std::string& token) const override;
  std::optional<std::string> base_id_to_token(int64_t id) const override;
  int64_t base_vocab_size() const override;
  std::string convert_tokens_to_string(const std::vector<std::string>& tokens) const override;
  std::vector<int64_t> build_inputs_with_special_tokens(const std::vector<int64_t>& ids) const override;
  std::string prepare_for_tokenization(const std::string& text) const override;
  void post_tokenize(std::vector<std::string>& tokens) const override;

 private:
  std::vector<std::string> sp_encode(const std::string& text) const;
  // SentencePieceProcessor::Decode(pieces): pieces that are not in the
  // vocabulary are kept literally.
  std::string sp_decode(const std::vector<std::string>& pieces) const;
  std::optional<int64_t> registered_id(const std::string& piece) const;

  std::shared_ptr<SpmModel> sp_;
  std::string path_;
  bool legacy_ = true;
  bool add_prefix_space_ = true;
  size_t unk_token_length_ = 0;
};

}  // namespace blip2
