// GPT-2 byte-level BPE (HF transformers 4.45 GPT2Tokenizer semantics).
#include "blip2/data/bpe_tokenizer.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <nlohmann/json.hpp>

#include <climits>
#include <filesystem>

#include "blip2/util/error.h"

namespace blip2 {

namespace {

// GPT-2's pattern
//   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
// with \s spelled out as the Unicode White_Space set that Python's `regex`
// module uses (PCRE2's \s under UCP differs on U+0085).
const char* kWs = "\\t\\n\\x{0B}\\f\\r \\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}"
                  "\\x{202F}\\x{205F}\\x{3000}";

std::string gpt2_pattern() {
  const std::string ws = kWs;
  return "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^" + ws + "\\p{L}\\p{N}]+|[" + ws + "]+(?![^" + ws +
         "])|[" + ws + "]+";
}

// HF bytes_to_unicode(): printable bytes stand for themselves, the others get
// code points from 256 upwards in byte order.
std::array<char32_t, 256> bytes_to_unicode() {
  std::array<char32_t, 256> table{};
  std::array<bool, 256> printable{};
  for (int b = '!'; b <= '~'; ++b) printable[b] = true;
  for (int b = 0xA1; b <= 0xAC; ++b) printable[b] = true;
  for (int b = 0xAE; b <= 0xFF; ++b) printable[b] = true;
  char32_t next = 256;
  for (int b = 0; b < 256; ++b) table[b] = printable[b] ? static_cast<char32_t>(b) : next++;
  return table;
}

std::string merge_key(const std::string& a, const std::string& b) { return a + " " + b; }

std::unordered_map<std::string, int64_t> vocab_from_json(const nlohmann::json& j, const std::string& where) {
  if (!j.is_object()) {
    throw ConfigError("[BpeTokenizer] " + where + " must be a JSON object {token: id}, found a JSON " +
                      std::string(j.type_name()) + "; check that this is a GPT-2 style vocab.json");
  }
  std::unordered_map<std::string, int64_t> vocab;
  vocab.reserve(j.size());
  for (auto it = j.begin(); it != j.end(); ++it) {
    const auto& v = it.value();
    if (!v.is_number_integer() || v.get<int64_t>() < 0) {
      throw ConfigError("[BpeTokenizer] " + where + ": entry \"" + it.key() + "\" has value " + v.dump() +
                        "; expected a non-negative integer id");
    }
    vocab[it.key()] = v.get<int64_t>();
  }
  if (vocab.empty()) throw ConfigError("[BpeTokenizer] " + where + " is empty; expected {token: id} entries");
  return vocab;
}

}  // namespace

struct BpeTokenizer::Regex {
  pcre2_code* code = nullptr;
  ~Regex() {
    if (code) pcre2_code_free(code);
  }
};

BpeTokenizer::BpeTokenizer(std::unordered_map<std::string, int64_t> vocab,
                           const std::vector<std::pair<std::string, std::string>>& merges,
                           const TokenizerOptions& options)
    : regex_(std::make_unique<Regex>()), encoder_(std::move(vocab)) {
  for (const auto& [token, id] : encoder_) decoder_[id] = token;
  for (size_t r = 0; r < merges.size(); ++r) {
    ranks_[merge_key(merges[r].first, merges[r].second)] = static_cast<int>(r);  // later duplicates win, as in HF
  }
  const std::array<char32_t, 256> table = bytes_to_unicode();
  for (int b = 0; b < 256; ++b) {
    text::append_utf8(byte_encoder_[b], table[b]);
    byte_decoder_[table[b]] = static_cast<unsigned char>(b);
  }

  const std::string pattern = gpt2_pattern();
  int err = 0;
  PCRE2_SIZE err_offset = 0;
  regex_->code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.c_str()), PCRE2_ZERO_TERMINATED,
                               PCRE2_UTF | PCRE2_UCP, &err, &err_offset, nullptr);
  if (!regex_->code) {
    PCRE2_UCHAR msg[256];
    pcre2_get_error_message(err, msg, sizeof(msg));
    throw ConfigError("[BpeTokenizer] PCRE2 rejected the GPT-2 pattern at offset " + std::to_string(err_offset) +
                      ": " + reinterpret_cast<const char*>(msg) + "; PCRE2 must be built with Unicode support");
  }
  pcre2_jit_compile(regex_->code, PCRE2_JIT_COMPLETE);  // optional speed-up; the interpreter is the fallback

  add_bos_token_ = options.add_bos_token.value_or(false);
  add_prefix_space_ = options.add_prefix_space.value_or(false);
  const std::string eot = "<|endoftext|>";
  init_special_tokens(options, {{"bos_token", eot}, {"eos_token", eot}, {"unk_token", eot}}, {}, {});
  if (add_bos_token_) require_special_id("bos_token", "add_bos_token=true");
}

BpeTokenizer::~BpeTokenizer() = default;

std::unique_ptr<BpeTokenizer> BpeTokenizer::from_files(const std::string& vocab_json, const std::string& merges_txt,
                                                       const TokenizerOptions& options) {
  const std::string vocab_text = text::read_file(vocab_json, "BPE vocabulary (vocab.json)");
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(vocab_text);
  } catch (const nlohmann::json::parse_error& e) {
    throw ConfigError("[BpeTokenizer] " + vocab_json + " is not valid JSON: line " +
                      std::to_string(text::line_of_offset(vocab_text, e.byte == 0 ? 0 : e.byte - 1)) + ": " +
                      e.what() + "; expected a JSON object {token: id}");
  } catch (const nlohmann::json::exception& e) {  // out_of_range: a number beyond double (1e999)
    throw ConfigError("[BpeTokenizer] " + vocab_json + " is not valid JSON: " + e.what() +
                      "; expected a JSON object {token: id}");
  }
  std::unordered_map<std::string, int64_t> vocab = vocab_from_json(j, vocab_json);

  // merges.txt: a "#version" header line, then "a b" per line (HF reads the
  // file with universal newlines and splits each line on whitespace).
  const std::string raw = text::read_file(merges_txt, "BPE merges (merges.txt)");
  std::vector<std::pair<std::string, std::string>> merges;
  int64_t line_no = 0;
  for (auto& line : text::split_lines(raw)) {
    ++line_no;
    if (line_no == 1 && line.rfind("#", 0) == 0) continue;  // "#version: 0.2"
    try {
      text::validate_utf8(line, "merges.txt line " + std::to_string(line_no));
    } catch (const InputError& e) {
      throw ConfigError("[BpeTokenizer] " + merges_txt + ": " + e.what());
    }
    std::vector<std::string> fields = text::py_split(line);
    if (fields.empty()) continue;
    if (fields.size() != 2) {
      throw ConfigError("[BpeTokenizer] " + merges_txt + " line " + std::to_string(line_no) +
                        ": expected two space-separated symbols \"a b\", found " + std::to_string(fields.size()) +
                        " field(s): \"" + line + "\"; check that this is a GPT-2 style merges.txt");
    }
    merges.emplace_back(std::move(fields[0]), std::move(fields[1]));
  }
  if (merges.empty()) {
    // Without merges every word falls apart into single bytes: a vocabulary
    // with multi-character words (other than <special> tokens) says the file
    // is empty or truncated, not that the tokenizer is byte-only.
    for (const auto& [token, id] : vocab)
      if (text::to_u32(token).size() > 1 && !(token.front() == '<' && token.back() == '>'))
        throw ConfigError("[BpeTokenizer] " + merges_txt + " has no merges, but " + vocab_json + " has multi-character "
                          "tokens such as \"" + token + "\" that only merges can produce; the file is empty or "
                          "truncated: copy the checkpoint's merges.txt again");
  }
  return std::make_unique<BpeTokenizer>(std::move(vocab), merges, options);
}

std::unique_ptr<BpeTokenizer> BpeTokenizer::from_tokenizer_json(const nlohmann::json& tj, const std::string& path,
                                                                const TokenizerOptions& options_in) {
  TokenizerOptions options = options_in;
  const nlohmann::json& model = tj.at("model");
  auto bad = [&](const std::string& what) {
    return ConfigError("[BpeTokenizer] " + path + ": " + what +
                       "; only GPT-2 style byte-level BPE is supported (else give vocab.json + merges.txt)");
  };
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    if (model.contains(key) && !model[key].is_null() && model[key] != "") {
      throw bad(std::string("model.") + key + " is " + model[key].dump());
    }
  }
  if (model.contains("byte_fallback") && model["byte_fallback"].is_boolean() && model["byte_fallback"].get<bool>())
    throw bad("model.byte_fallback is true");
  const nlohmann::json pre = tj.value("pre_tokenizer", nlohmann::json());
  if (!pre.is_object() || pre.value("type", "") != "ByteLevel") {
    throw bad("pre_tokenizer is " + pre.dump() + ", expected {\"type\": \"ByteLevel\"}");
  }
  if (!pre.value("use_regex", true)) throw bad("pre_tokenizer.use_regex is false");
  if (!options.add_prefix_space) options.add_prefix_space = pre.value("add_prefix_space", false);
  // A template post-processor that starts with a special token adds a BOS.
  const nlohmann::json post = tj.value("post_processor", nlohmann::json());
  if (!options.add_bos_token && post.is_object() && post.value("type", "") == "TemplateProcessing" &&
      post.contains("single") && post["single"].is_array() && !post["single"].empty() &&
      post["single"][0].contains("SpecialToken")) {
    options.add_bos_token = true;
  }

  std::unordered_map<std::string, int64_t> vocab = vocab_from_json(model.at("vocab"), path + " model.vocab");
  std::vector<std::pair<std::string, std::string>> merges;
  const nlohmann::json& jm = model.at("merges");
  if (!jm.is_array()) throw bad("model.merges is not an array");
  for (size_t i = 0; i < jm.size(); ++i) {
    const auto& m = jm[i];
    if (m.is_string()) {
      std::vector<std::string> f = text::py_split(m.get<std::string>());
      if (f.size() != 2) throw bad("model.merges[" + std::to_string(i) + "] = " + m.dump() + " is not \"a b\"");
      merges.emplace_back(f[0], f[1]);
    } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
      merges.emplace_back(m[0].get<std::string>(), m[1].get<std::string>());
    } else {
      throw bad("model.merges[" + std::to_string(i) + "] = " + m.dump() + " is not \"a b\" or [\"a\", \"b\"]");
    }
  }
  return std::make_unique<BpeTokenizer>(std::move(vocab), merges, options);
}

std::vector<std::string> BpeTokenizer::pretokenize(const std::string& text) const {
  std::vector<std::string> pieces;
  pcre2_match_data* md = pcre2_match_data_create_from_pattern(regex_->code, nullptr);
  if (!md) throw std::bad_alloc();
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  size_t offset = 0;
  while (offset < text.size()) {
    int rc = pcre2_match(regex_->code, subject, text.size(), offset, PCRE2_NO_UTF_CHECK, md, nullptr);
    if (rc == PCRE2_ERROR_NOMATCH) break;
    if (rc < 0) {
      pcre2_match_data_free(md);
      throw InputError("[BpeTokenizer] PCRE2 match failed with code " + std::to_string(rc) + " at byte offset " +
                       std::to_string(offset) + "; expected valid UTF-8 text");
    }
    const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
    if (ov[1] <= ov[0]) break;  // the pattern has no empty matches
    pieces.emplace_back(text, ov[0], ov[1] - ov[0]);
    offset = ov[1];
  }
  pcre2_match_data_free(md);
  return pieces;
}

std::vector<std::string> BpeTokenizer::bpe(const std::string& word) const {
  {
    std::lock_guard<std::mutex> lock(cache_mutex_);
    auto it = cache_.find(word);
    if (it != cache_.end()) return it->second;
  }
  std::vector<std::string> symbols;
  for (char32_t cp : text::to_u32(word)) {
    symbols.emplace_back();
    text::append_utf8(symbols.back(), cp);
  }
  while (symbols.size() > 1) {
    int best_rank = INT_MAX;
    size_t best = 0;
    for (size_t i = 0; i + 1 < symbols.size(); ++i) {
      auto it = ranks_.find(merge_key(symbols[i], symbols[i + 1]));
      if (it != ranks_.end() && it->second < best_rank) {
        best_rank = it->second;
        best = i;
      }
    }
    if (best_rank == INT_MAX) break;
    const std::string first = symbols[best], second = symbols[best + 1];
    std::vector<std::string> merged;
    merged.reserve(symbols.size());
    for (size_t i = 0; i < symbols.size();) {
      if (i + 1 < symbols.size() && symbols[i] == first && symbols[i + 1] == second) {
        merged.push_back(first + second);
        i += 2;
      } else {
        merged.push_back(std::move(symbols[i]));
        i += 1;
      }
    }
    symbols = std::move(merged);
  }
  std::lock_guard<std::mutex> lock(cache_mutex_);
  if (cache_.size() >= (1u << 17)) cache_.clear();  // bound memory on long-running servers
  cache_.emplace(word, symbols);
  return symbols;
}

std::vector<std::string> BpeTokenizer::tokenize_segment(const std::string& text) const {
  std::vector<std::string> tokens;
  for (const std::string& piece : pretokenize(text)) {
    std::string mapped;
    for (unsigned char b : piece) mapped += byte_encoder_[b];
    std::vector<std::string> sub = bpe(mapped);
    tokens.insert(tokens.end(), std::make_move_iterator(sub.begin()), std::make_move_iterator(sub.end()));
  }
  return tokens;
}

std::optional<int64_t> BpeTokenizer::base_token_to_id(const std::string& token) const {
  auto it = encoder_.find(token);
  if (it == encoder_.end()) return std::nullopt;
  return it->second;
}

std::optional<std::string> BpeTokenizer::base_id_to_token(int64_t id) const {
  auto it = decoder_.find(id);
  if (it == decoder_.end()) return std::nullopt;
  return it->second;
}

std::string BpeTokenizer::convert_tokens_to_string(const std::vector<std::string>& tokens) const {
  std::string bytes;
  for (const std::string& token : tokens) {
    for (char32_t cp : text::to_u32(token)) {
      auto it = byte_decoder_.find(cp);
      if (it != byte_decoder_.end()) bytes += static_cast<char>(it->second);
      else text::append_utf8(bytes, cp);  // HF raises KeyError here; we keep the character
    }
  }
  return text::decode_utf8_replace(bytes);
}

std::vector<int64_t> BpeTokenizer::build_inputs_with_special_tokens(const std::vector<int64_t>& ids) const {
  if (!add_bos_token_) return ids;
  std::vector<int64_t> out;
  out.reserve(ids.size() + 1);
  out.push_back(require_special_id("bos_token", "add_bos_token=true"));
  out.insert(out.end(), ids.begin(), ids.end());
  return out;
}

std::string BpeTokenizer::prepare_for_tokenization(const std::string& text) const {
  return add_prefix_space_ ? " " + text : text;
}

std::unique_ptr<Tokenizer> load_bpe_tokenizer(const std::string& vocab_json, const std::string& merges_txt,
                                              const TokenizerOptions& options) {
  return BpeTokenizer::from_files(vocab_json, merges_txt, options);
}

}  // namespace blip2
