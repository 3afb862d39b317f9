// BERT WordPiece (HF transformers 4.45 BertTokenizer semantics).
#include "blip2/data/wordpiece_tokenizer.h"

#include <utf8proc.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdlib>

#include "blip2/util/error.h"

namespace blip2 {

namespace {

utf8proc_category_t category(char32_t cp) {
  return utf8proc_category(static_cast<utf8proc_int32_t>(cp));
}

// BERT's _is_whitespace: " ", \t, \n, \r and category Zs.
bool is_whitespace(char32_t cp) {
  return cp == U' ' || cp == U'\t' || cp == U'\n' || cp == U'\r' || category(cp) == UTF8PROC_CATEGORY_ZS;
}

// BERT's _is_control: category C* except \t, \n, \r.
bool is_control(char32_t cp) {
  if (cp == U'\t' || cp == U'\n' || cp == U'\r') return false;
  switch (category(cp)) {
    case UTF8PROC_CATEGORY_CC: case UTF8PROC_CATEGORY_CF: case UTF8PROC_CATEGORY_CS:
    case UTF8PROC_CATEGORY_CO: case UTF8PROC_CATEGORY_CN:
      return true;
    default:
      return false;
  }
}

// BERT's _is_punctuation: every non-alphanumeric ASCII symbol, and category P*.
bool is_punctuation(char32_t cp) {
  if ((cp >= 33 && cp <= 47) || (cp >= 58 && cp <= 64) || (cp >= 91 && cp <= 96) || (cp >= 123 && cp <= 126))
    return true;
  switch (category(cp)) {
    case UTF8PROC_CATEGORY_PC: case UTF8PROC_CATEGORY_PD: case UTF8PROC_CATEGORY_PS: case UTF8PROC_CATEGORY_PE:
    case UTF8PROC_CATEGORY_PI: case UTF8PROC_CATEGORY_PF: case UTF8PROC_CATEGORY_PO:
      return true;
    default:
      return false;
  }
}

// BERT's _is_chinese_char: the CJK Unified Ideographs blocks (not Hangul, kana).
bool is_chinese_char(char32_t cp) {
  return (cp >= 0x4E00 && cp <= 0x9FFF) || (cp >= 0x3400 && cp <= 0x4DBF) || (cp >= 0x20000 && cp <= 0x2A6DF) ||
         (cp >= 0x2A700 && cp <= 0x2B73F) || (cp >= 0x2B740 && cp <= 0x2B81F) ||
         (cp >= 0x2B820 && cp <= 0x2CEAF) || (cp >= 0xF900 && cp <= 0xFAFF) || (cp >= 0x2F800 && cp <= 0x2FA1F);
}

// unicodedata.normalize("NFC" / "NFD", s) through utf8proc.
std::string normalize(const std::string& s, bool compose) {
  if (s.empty()) return s;
  utf8proc_uint8_t* out = nullptr;
  int options = UTF8PROC_STABLE | (compose ? UTF8PROC_COMPOSE : UTF8PROC_DECOMPOSE);
  utf8proc_ssize_t n = utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(s.data()),
                                    static_cast<utf8proc_ssize_t>(s.size()), &out,
                                    static_cast<utf8proc_option_t>(options));
  if (n < 0) {
    throw InputError(std::string("[WordPieceTokenizer] Unicode normalisation failed: ") + utf8proc_errmsg(n) +
                     "; expected valid UTF-8 text");
  }
  std::string result(reinterpret_cast<char*>(out), static_cast<size_t>(n));
  std::free(out);
  return result;
}

// BERT's _run_strip_accents: NFD, then drop non-spacing marks (Mn).
std::string strip_accents(const std::string& s) {
  std::u32string out;
  for (char32_t cp : text::to_u32(normalize(s, false))) {
    if (category(cp) != UTF8PROC_CATEGORY_MN) out += cp;
  }
  return text::to_utf8(out);
}

std::string py_lower(const std::string& s) {
  std::u32string out;
  for (char32_t cp : text::to_u32(s)) text::append_py_lower(out, cp);
  return text::to_utf8(out);
}

}  // namespace

WordPieceTokenizer::WordPieceTokenizer(const std::vector<std::pair<std::string, int64_t>>& vocab,
                                       const TokenizerOptions& options) {
  for (const auto& [token, id] : vocab) vocab_[token] = id;
  for (const auto& [token, id] : vocab_) ids_to_tokens_[id] = token;
  for (const auto& [token, id] : vocab) max_id_ = std::max(max_id_, id);
  do_lower_case_ = options.do_lower_case.value_or(true);
  strip_accents_ = options.strip_accents;
  tokenize_chinese_chars_ = options.tokenize_chinese_chars.value_or(true);
  never_split_.insert(options.never_split.begin(), options.never_split.end());
  if (options.max_input_chars_per_word) {
    if (*options.max_input_chars_per_word <= 0) {
      throw ConfigError("[WordPieceTokenizer] max_input_chars_per_word is " +
                        std::to_string(*options.max_input_chars_per_word) + "; expected a positive number (HF: 100)");
    }
    max_input_chars_per_word_ = static_cast<size_t>(*options.max_input_chars_per_word);
  }
  if (options.continuing_subword_prefix) prefix_ = *options.continuing_subword_prefix;
  init_special_tokens(options,
                      {{"unk_token", "[UNK]"},
                       {"sep_token", "[SEP]"},
                       {"pad_token", "[PAD]"},
                       {"cls_token", "[CLS]"},
                       {"mask_token", "[MASK]"}},
                      {}, {});
}

std::unique_ptr<WordPieceTokenizer> WordPieceTokenizer::from_file(const std::string& vocab_txt,
                                                                  const TokenizerOptions& options) {
  const std::string raw = text::read_file(vocab_txt, "WordPiece vocabulary (vocab.txt)");
  // HF load_vocab: universal newlines, one token per line, id = line index.
  std::vector<std::pair<std::string, int64_t>> vocab;
  int64_t index = 0;
  for (auto& line : text::split_lines(raw)) {
    try {
      text::validate_utf8(line, "line " + std::to_string(index + 1));
    } catch (const InputError& e) {
      throw ConfigError("[WordPieceTokenizer] " + vocab_txt + ": " + e.what());
    }
    vocab.emplace_back(std::move(line), index++);
  }
  if (vocab.empty()) {
    throw ConfigError("[WordPieceTokenizer] " + vocab_txt + " is empty; expected one WordPiece token per line");
  }
  return std::make_unique<WordPieceTokenizer>(vocab, options);
}

std::unique_ptr<WordPieceTokenizer> WordPieceTokenizer::from_tokenizer_json(const nlohmann::json& tj,
                                                                            const std::string& path,
                                                                            const TokenizerOptions& options_in) {
  TokenizerOptions options = options_in;
  const nlohmann::json& model = tj.at("model");
  const nlohmann::json& jv = model.at("vocab");
  if (!jv.is_object()) {
    throw ConfigError("[WordPieceTokenizer] " + path + ": model.vocab must be an object {token: id}, found " +
                      std::string(jv.type_name()));
  }
  std::vector<std::pair<std::string, int64_t>> vocab;
  for (auto it = jv.begin(); it != jv.end(); ++it) {
    if (!it.value().is_number_integer() || it.value().get<int64_t>() < 0) {
      throw ConfigError("[WordPieceTokenizer] " + path + ": model.vocab entry \"" + it.key() + "\" has value " +
                        it.value().dump() + "; expected a non-negative integer id");
    }
    vocab.emplace_back(it.key(), it.value().get<int64_t>());
  }
  if (model.contains("unk_token") && model["unk_token"].is_string() && !options.special_tokens.count("unk_token")) {
    options.special_tokens["unk_token"] = AddedToken{model["unk_token"].get<std::string>(), true, false, false,
                                                     false, false};
  }
  if (model.contains("continuing_subword_prefix") && model["continuing_subword_prefix"].is_string() &&
      !options.continuing_subword_prefix) {
    options.continuing_subword_prefix = model["continuing_subword_prefix"].get<std::string>();
  }
  if (model.contains("max_input_chars_per_word") && model["max_input_chars_per_word"].is_number_integer() &&
      !options.max_input_chars_per_word) {
    options.max_input_chars_per_word = model["max_input_chars_per_word"].get<int>();
  }
  const nlohmann::json norm = tj.value("normalizer", nlohmann::json());
  if (norm.is_object()) {
    if (norm.value("type", "") != "BertNormalizer") {
      throw ConfigError("[WordPieceTokenizer] " + path + ": normalizer type \"" + norm.value("type", "") +
                        "\" is not supported; expected BertNormalizer (or give vocab.txt)");
    }
    if (!options.do_lower_case) options.do_lower_case = norm.value("lowercase", true);
    if (!options.tokenize_chinese_chars) options.tokenize_chinese_chars = norm.value("handle_chinese_chars", true);
    if (!options.strip_accents && norm.contains("strip_accents") && norm["strip_accents"].is_boolean())
      options.strip_accents = norm["strip_accents"].get<bool>();
  }
  return std::make_unique<WordPieceTokenizer>(vocab, options);
}

bool WordPieceTokenizer::never_split(const std::string& token) const {
  if (never_split_.count(token)) return true;
  const auto& specials = all_special_tokens();
  return std::find(specials.begin(), specials.end(), token) != specials.end();
}

std::vector<std::string> WordPieceTokenizer::basic_tokenize(const std::string& input) const {
  // _clean_text, then _tokenize_chinese_chars.
  std::u32string cleaned;
  for (char32_t cp : text::to_u32(input)) {
    if (cp == 0 || cp == 0xFFFD || is_control(cp)) continue;
    if (is_whitespace(cp)) {
      cleaned += U' ';
    } else if (tokenize_chinese_chars_ && is_chinese_char(cp)) {
      cleaned += U' ';
      cleaned += cp;
      cleaned += U' ';
    } else {
      cleaned += cp;
    }
  }
  const std::string nfc = normalize(text::to_utf8(cleaned), true);

  std::string joined;
  for (std::string token : text::py_split(nfc)) {
    const bool keep = never_split(token);
    if (!keep) {
      if (do_lower_case_) {
        token = py_lower(token);
        if (strip_accents_.value_or(true)) token = strip_accents(token);
      } else if (strip_accents_.value_or(false)) {
        token = strip_accents(token);
      }
    }
    // _run_split_on_punc: every punctuation character becomes its own token.
    if (keep) {
      joined += token;
      joined += ' ';
      continue;
    }
    std::string word;
    for (char32_t cp : text::to_u32(token)) {
      if (is_punctuation(cp)) {
        if (!word.empty()) { joined += word; joined += ' '; word.clear(); }
        text::append_utf8(joined, cp);
        joined += ' ';
      } else {
        text::append_utf8(word, cp);
      }
    }
    if (!word.empty()) { joined += word; joined += ' '; }
  }
  return text::py_split(joined);
}

void WordPieceTokenizer::wordpiece(const std::string& word, std::vector<std::string>& out) const {
  const std::string unk = special_token("unk_token").value_or("[UNK]");
  for (const std::string& token : text::py_split(word)) {
    const std::u32string chars = text::to_u32(token);
    if (chars.size() > max_input_chars_per_word_) {
      out.push_back(unk);
      continue;
    }
    std::vector<std::string> pieces;
    size_t start = 0;
    bool bad = false;
    while (start < chars.size()) {
      size_t end = chars.size();
      std::string found;
      while (start < end) {
        std::string sub = text::to_utf8(chars.substr(start, end - start));
        if (start > 0) sub = prefix_ + sub;
        if (vocab_.count(sub)) {
          found = std::move(sub);
          break;
        }
        --end;
      }
      if (found.empty()) {
        bad = true;
        break;
      }
      pieces.push_back(std::move(found));
      start = end;
    }
    if (bad) out.push_back(unk);
    else out.insert(out.end(), pieces.begin(), pieces.end());
  }
}

std::vector<std::string> WordPieceTokenizer::tokenize_segment(const std::string& text) const {
  std::vector<std::string> out;
  for (const std::string& token : basic_tokenize(text)) {
    if (never_split_.count(token)) out.push_back(token);
    else wordpiece(token, out);
  }
  return out;
}

std::optional<int64_t> WordPieceTokenizer::base_token_to_id(const std::string& token) const {
  auto it = vocab_.find(token);
  if (it == vocab_.end()) return std::nullopt;
  return it->second;
}

std::optional<std::string> WordPieceTokenizer::base_id_to_token(int64_t id) const {
  auto it = ids_to_tokens_.find(id);
  if (it != ids_to_tokens_.end()) return it->second;
  // HF maps an id that lost its token to a later duplicate to unk_token; ids
  // past the vocabulary are an error here.
  if (id >= 0 && id <= max_id_) return special_token("unk_token").value_or("[UNK]");
  return std::nullopt;
}

std::string WordPieceTokenizer::convert_tokens_to_string(const std::vector<std::string>& tokens) const {
  std::string joined;
  for (size_t i = 0; i < tokens.size(); ++i) {
    if (i) joined += ' ';
    joined += tokens[i];
  }
  const std::string glue = " " + prefix_;
  std::string out;
  size_t pos = 0;
  while (true) {
    size_t hit = joined.find(glue, pos);
    if (hit == std::string::npos) break;
    out.append(joined, pos, hit - pos);
    pos = hit + glue.size();
  }
  out.append(joined, pos, std::string::npos);
  return text::py_strip(out);
}

std::vector<int64_t> WordPieceTokenizer::build_inputs_with_special_tokens(const std::vector<int64_t>& ids) const {
  std::vector<int64_t> out;
  out.reserve(ids.size() + 2);
  out.push_back(require_special_id("cls_token", "BERT encode with add_special_tokens"));
  out.insert(out.end(), ids.begin(), ids.end());
  out.push_back(require_special_id("sep_token", "BERT encode with add_special_tokens"));
  return out;
}

std::unique_ptr<Tokenizer> load_wordpiece_tokenizer(const std::string& vocab_txt, const TokenizerOptions& options) {
  return WordPieceTokenizer::from_file(vocab_txt, options);
}

}  // namespace blip2
