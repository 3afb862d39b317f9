// Incremental detokenization for streaming: tokens in, text deltas out, such
// that the deltas concatenate to exactly the text of the whole sequence
// (decoded with special tokens skipped, stripped as the Pipeline strips it,
// cut before the first stop string). A delta is always valid UTF-8: text
// that may still change (an incomplete multi-byte character, trailing
// whitespace, a possible start of a stop string, a tail the tokenizer's
// clean-up could rewrite) is held back until it is certain.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace blip2 {
class Tokenizer;
}

namespace blip2::server {

// The text of a whole sequence: stripped, cut before the first stop string.
// `stopped` is set when a stop string was found.
std::string final_text(const std::string& decoded, const std::vector<std::string>& stops, bool* stopped = nullptr);

class TextStream {
 public:
  TextStream(const Tokenizer& tokenizer, std::vector<std::string> stops);
  // Appends generated tokens; returns the new certain text (maybe empty).
  std::string push(const std::vector<int64_t>& tokens);
  // The rest of the text once generation ended.
  std::string finish();
  // A stop string was seen: nothing more will be emitted.
  bool stopped() const { return stopped_; }
  const std::vector<int64_t>& tokens() const { return tokens_; }

 private:
  std::string emit(const std::string& certain);

  const Tokenizer& tokenizer_;
  std::vector<std::string> stops_;
  std::vector<int64_t> tokens_;
  std::string emitted_;
  bool stopped_ = false;
};

}  // namespace blip2::server
