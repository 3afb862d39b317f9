// Text helpers shared by the tokenizers (declared in tokenizer.h, namespace
// blip2::text): UTF-8 validation and conversion, Python-compatible
// whitespace, strip, split and lower-casing, HF clean-up of decoded text.
#include "blip2/data/tokenizer.h"
#include <utf8proc.h>
#include <nlohmann/json.hpp>
#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>
#include "blip2/data/bpe_tokenizer.h"
#include "blip2/data/sentencepiece_tokenizer.h"
#include "blip2/data/wordpiece_tokenizer.h"
#include "blip2/util/error.h"

namespace blip2 {

namespace text {
namespace {

std::string hex_byte(unsigned char b) {
  static const char* digits = "0123456789abcdef";
  return std::string("0x") + digits[b >> 4] + digits[b & 15];
}

// Length and valid range of the second byte for a lead byte (Unicode Table 3-7);
// 0 for a byte that cannot start a sequence.
int utf8_lead(unsigned char b, unsigned char* lo, unsigned char* hi) {
  *lo = 0x80;
  *hi = 0xBF;
  if (b < 0x80) return 1;
  if (b >= 0xC2 && b <= 0xDF) return 2;
  if (b == 0xE0) { *lo = 0xA0; return 3; }
  if ((b >= 0xE1 && b <= 0xEC) || b == 0xEE || b == 0xEF) return 3;
  if (b == 0xED) { *hi = 0x9F; return 3; }
  if (b == 0xF0) { *lo = 0x90; return 4; }
  if (b >= 0xF1 && b <= 0xF3) return 4;
  if (b == 0xF4) { *hi = 0x8F; return 4; }
  return 0;
}

std::string replace_all(std::string s, const std::string& from, const std::string& to) {
  std::string out;
  size_t pos = 0;
  while (true) {
    size_t hit = s.find(from, pos);
    if (hit == std::string::npos) break;
    out.append(s, pos, hit - pos);
    out += to;
    pos = hit + from.size();
  }
  out.append(s, pos, std::string::npos);
  return out;
}

}  // namespace

void validate_utf8(const std::string& s, const std::string& what) {
  const size_t n = s.size();
  size_t i = 0;
  while (i < n) {
    unsigned char b = static_cast<unsigned char>(s[i]);
    unsigned char lo, hi;
    int len = utf8_lead(b, &lo, &hi);
    if (len == 0) {
      throw InputError("[Tokenizer] " + what + " is not valid UTF-8: byte " + hex_byte(b) + " at byte offset " +
                       std::to_string(i) + " cannot start a character; expected UTF-8 text (convert the input "
                       "from its encoding to UTF-8 before tokenizing)");
    }
    for (int k = 1; k < len; ++k) {
      if (i + k >= n) {
        throw InputError("[Tokenizer] " + what + " is not valid UTF-8: the " + std::to_string(len) +
                         "-byte sequence at byte offset " + std::to_string(i) + " is truncated by the end of the "
                         "text; expected UTF-8 text (convert the input to UTF-8 before tokenizing)");
      }
      unsigned char c = static_cast<unsigned char>(s[i + k]);
      unsigned char l = k == 1 ? lo : 0x80, h = k == 1 ? hi : 0xBF;
      if (c < l || c > h) {
        throw InputError("[Tokenizer] " + what + " is not valid UTF-8: byte " + hex_byte(c) + " at byte offset " +
                         std::to_string(i + k) + " does not continue the sequence that starts at byte offset " +
                         std::to_string(i) + "; expected UTF-8 text (convert the input to UTF-8 before "
                         "tokenizing)");
      }
    }
    i += len;
  }
}

void append_utf8(std::string& out, char32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

std::u32string to_u32(const std::string& s) {
  std::u32string out;
  out.reserve(s.size());
  size_t i = 0;
  while (i < s.size()) {
    unsigned char b = static_cast<unsigned char>(s[i]);
    char32_t cp;
    int len;
    if (b < 0x80) { cp = b; len = 1; }
    else if (b < 0xE0) { cp = b & 0x1F; len = 2; }
    else if (b < 0xF0) { cp = b & 0x0F; len = 3; }
    else { cp = b & 0x07; len = 4; }
    for (int k = 1; k < len && i + k < s.size(); ++k) cp = (cp << 6) | (static_cast<unsigned char>(s[i + k]) & 0x3F);
    out += cp;
    i += len;
  }
  return out;
}

std::string to_utf8(const std::u32string& s) {
  std::string out;
  out.reserve(s.size());
  for (char32_t cp : s) append_utf8(out, cp);
  return out;
}

std::string decode_utf8_replace(const std::string& bytes) {
  static const std::string kReplacement = "\xEF\xBF\xBD";  // U+FFFD
  std::string out;
  out.reserve(bytes.size());
  const size_t n = bytes.size();
  size_t i = 0;
  while (i < n) {
    unsigned char b = static_cast<unsigned char>(bytes[i]);
    unsigned char lo, hi;
    int len = utf8_lead(b, &lo, &hi);
    if (len == 1) { out += static_cast<char>(b); ++i; continue; }
    if (len == 0) { out += kReplacement; ++i; continue; }
    // Consume the maximal prefix of a valid sequence; an incomplete one becomes one U+FFFD.
    size_t j = i + 1;
    bool complete = true;
    for (int k = 1; k < len; ++k, ++j) {
      unsigned char l = k == 1 ? lo : 0x80, h = k == 1 ? hi : 0xBF;
      if (j >= n || static_cast<unsigned char>(bytes[j]) < l || static_cast<unsigned char>(bytes[j]) > h) {
        complete = false;
        break;
      }
    }
    if (complete) out.append(bytes, i, j - i);
    else out += kReplacement;
    i = j;
  }
  return out;
}

bool py_isspace(char32_t cp) {
  if ((cp >= 0x09 && cp <= 0x0D) || (cp >= 0x1C && cp <= 0x20)) return true;
  switch (cp) {
    case 0x85: case 0xA0: case 0x1680: case 0x2028: case 0x2029: case 0x202F: case 0x205F: case 0x3000:
      return true;
    default:
      return cp >= 0x2000 && cp <= 0x200A;
  }
}

std::string py_strip(const std::string& s) {
  std::u32string u = to_u32(s);
  size_t b = 0, e = u.size();
  while (b < e && py_isspace(u[b])) ++b;
  while (e > b && py_isspace(u[e - 1])) --e;
  return to_utf8(u.substr(b, e - b));
}

std::vector<std::string> split_fields(const std::string& s, char sep) {
  std::vector<std::string> out;
  size_t from = 0;
  for (size_t at; (at = s.find(sep, from)) != std::string::npos; from = at + 1) out.push_back(s.substr(from, at - from));
  out.push_back(s.substr(from));
  return out;
}

std::string fill_template(const std::string& tmpl, const std::string& value) {
  const size_t at = tmpl.find("{}");
  if (at == std::string::npos) throw InputError("prompt template '" + tmpl + "' has no {} where the question goes");
  return tmpl.substr(0, at) + value + tmpl.substr(at + 2);
}

std::vector<std::string> py_split(const std::string& s) {
  std::vector<std::string> out;
  std::string cur;
  bool in_word = false;
  size_t i = 0;
  const std::u32string u = to_u32(s);
  for (; i < u.size(); ++i) {
    if (py_isspace(u[i])) {
      if (in_word) out.push_back(cur);
      cur.clear();
      in_word = false;
    } else {
      append_utf8(cur, u[i]);
      in_word = true;
    }
  }
  if (in_word) out.push_back(cur);
  return out;
}

void append_py_lower(std::u32string& out, char32_t cp) {
  // Python uses the full lower-case mapping; U+0130 is the one code point
  // whose unconditional full mapping differs from the simple one.
  if (cp == 0x130) {
    out += U'i';
    out += char32_t(0x307);
    return;
  }
  out += static_cast<char32_t>(utf8proc_tolower(static_cast<utf8proc_int32_t>(cp)));
}

std::string clean_up_tokenization(const std::string& s) {
  std::string out = s;
  static const std::pair<const char*, const char*> kRules[] = {
      {" .", "."},    {" ?", "?"},     {" !", "!"},     {" ,", ","},     {" ' ", "'"},
      {" n't", "n't"}, {" 'm", "'m"}, {" 's", "'s"}, {" 've", "'ve"}, {" 're", "'re"}};
  for (const auto& [from, to] : kRules) out = replace_all(std::move(out), from, to);
  return out;
}

std::string read_file(const std::string& path, const std::string& what) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec))
    throw ConfigError("[Tokenizer] " + what + " '" + path + "' is a directory; expected a file");
  std::ifstream f(path, std::ios::binary);
  if (!f) {
    throw ConfigError("[Tokenizer] cannot read " + what + " '" + path +
                      "': the file does not exist or is not readable; check the path");
  }
  std::ostringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

int64_t line_of_offset(const std::string& s, size_t offset) {
  offset = std::min(offset, s.size());
  return 1 + std::count(s.begin(), s.begin() + static_cast<std::ptrdiff_t>(offset), '\n');
}

std::vector<std::string> split_lines(const std::string& raw) {
  std::vector<std::string> lines;
  size_t pos = 0;
  while (pos < raw.size()) {
    size_t end = raw.find_first_of("\r\n", pos);
    std::string line;
    if (end == std::string::npos) {
      line = raw.substr(pos);
      pos = raw.size();
    } else {
      line = raw.substr(pos, end - pos);
      pos = end + 1;
      if (raw[end] == '\r' && pos < raw.size() && raw[pos] == '\n') ++pos;
    }
    lines.push_back(std::move(line));
  }
  return lines;
}

}  // namespace text

}  // namespace blip2
