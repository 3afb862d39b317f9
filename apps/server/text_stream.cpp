#include "apps/server/text_stream.h"

#include <algorithm>

#include "blip2/data/tokenizer.h"

namespace blip2::server {

namespace {
bool is_space(unsigned char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }

// Python's str.lstrip() on UTF-8 (text::py_strip strips both ends).
std::string lstrip(const std::string& s) {
  const std::string stripped = text::py_strip(s + "x");
  return stripped.substr(0, stripped.size() - 1);
}

size_t first_stop(const std::string& s, const std::vector<std::string>& stops) {
  size_t at = std::string::npos;
  for (const auto& stop : stops) {
    if (stop.empty()) continue;
    at = std::min(at, s.find(stop));
  }
  return at;
}

// What clean_up_tokenization could still rewrite at the end of `s` once more
// text follows: " '" and " n", " 'v", ... (the starts of " 's", " n't", " 've").
size_t cleanup_hold(const std::string& s) {
  static const std::vector<std::string> kTails = {"'", "n't", "'m", "'s", "'ve", "'re"};
  const size_t space = s.find_last_of(' ');
  if (space == std::string::npos) return s.size();
  const std::string tail = s.substr(space + 1);
  for (const auto& t : kTails)
    if (!tail.empty() && tail.size() <= t.size() && t.compare(0, tail.size(), tail) == 0) return space;
  return s.size();
}
}  // namespace

std::string final_text(const std::string& decoded, const std::vector<std::string>& stops, bool* stopped) {
  std::string t = text::py_strip(decoded);
  const size_t at = first_stop(t, stops);
  if (stopped) *stopped = at != std::string::npos;
  return at == std::string::npos ? t : t.substr(0, at);
}

TextStream::TextStream(const Tokenizer& tokenizer, std::vector<std::string> stops)
    : tokenizer_(tokenizer), stops_(std::move(stops)) {}

std::string TextStream::emit(const std::string& certain) {
  // Only ever extend what was sent; anything else waits for finish().
  if (certain.size() <= emitted_.size() || certain.compare(0, emitted_.size(), emitted_) != 0) return "";
  std::string delta = certain.substr(emitted_.size());
  emitted_ = certain;
  return delta;
}

std::string TextStream::push(const std::vector<int64_t>& tokens) {
  if (stopped_) return "";
  tokens_.insert(tokens_.end(), tokens.begin(), tokens.end());
  std::string s = lstrip(tokenizer_.decode(tokens_, /*skip_special_tokens=*/true));
  const size_t stop = first_stop(s, stops_);
  if (stop != std::string::npos) {
    stopped_ = true;
    return emit(s.substr(0, stop));
  }
  // An incomplete character decodes to U+FFFD at the end: wait for its bytes.
  static const std::string kReplacement = "\xEF\xBF\xBD";
  while (s.size() >= 3 && s.compare(s.size() - 3, 3, kReplacement) == 0) s.resize(s.size() - 3);
  while (!s.empty() && is_space(static_cast<unsigned char>(s.back()))) s.pop_back();
  s.resize(cleanup_hold(s));
  while (!s.empty() && is_space(static_cast<unsigned char>(s.back()))) s.pop_back();
  // A stop string may begin in the tail: hold back its longest possible start.
  size_t hold = 0;
  for (const auto& stop : stops_)
    for (size_t n = std::min(stop.size() - (stop.empty() ? 0 : 1), s.size()); n > hold; --n)
      if (s.compare(s.size() - n, n, stop, 0, n) == 0) {
        hold = n;
        break;
      }
  s.resize(s.size() - hold);
  // Never split a UTF-8 character.
  if (!s.empty() && static_cast<unsigned char>(s.back()) >= 0xC0) s.pop_back();
  while (!s.empty() && (static_cast<unsigned char>(s.back()) & 0xC0) == 0x80) {
    size_t start = s.size() - 1;
    while (start > 0 && (static_cast<unsigned char>(s[start]) & 0xC0) == 0x80) --start;
    const unsigned char lead = static_cast<unsigned char>(s[start]);
    const size_t len = lead >= 0xF0 ? 4 : lead >= 0xE0 ? 3 : lead >= 0xC0 ? 2 : 1;
    if (s.size() - start == len) break;
    s.resize(start);
  }
  return emit(s);
}

std::string TextStream::finish() {
  if (stopped_) return "";
  bool stopped = false;
  const std::string all = final_text(tokenizer_.decode(tokens_, /*skip_special_tokens=*/true), stops_, &stopped);
  stopped_ = stopped;
  return emit(all);
}

}  // namespace blip2::server
