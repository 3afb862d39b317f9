// The model-independent half of HF's PreTrainedTokenizer (transformers 4.45):
// special tokens, added tokens, the do_lower_case pass, decode. The shared
// text helpers are in text_util.cpp.
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


// ============================================================================
// Tokenizer
// ============================================================================
namespace {

const char* const kRoles[] = {"bos_token", "eos_token", "unk_token", "sep_token",
                              "pad_token", "cls_token", "mask_token"};

bool is_role(const std::string& role) {
  return std::find(std::begin(kRoles), std::end(kRoles), role) != std::end(kRoles);
}

std::string py_lstrip(const std::string& s) {
  std::u32string u = text::to_u32(s);
  size_t b = 0;
  while (b < u.size() && text::py_isspace(u[b])) ++b;
  return text::to_utf8(u.substr(b));
}

std::string py_rstrip(const std::string& s) {
  std::u32string u = text::to_u32(s);
  size_t e = u.size();
  while (e > 0 && text::py_isspace(u[e - 1])) --e;
  return text::to_utf8(u.substr(0, e));
}

}  // namespace

void Tokenizer::init_special_tokens(const TokenizerOptions& options,
                                    const std::vector<std::pair<std::string, std::string>>& default_roles,
                                    const std::vector<AddedToken>& default_additional,
                                    const std::map<int64_t, AddedToken>& preset_added) {
  roles_.clear();
  for (const char* role : kRoles) {
    std::optional<AddedToken> token;
    for (const auto& [r, content] : default_roles) {
      if (r == role) token = AddedToken{content, true, false, false, false, false};
    }
    auto it = options.special_tokens.find(role);
    if (it != options.special_tokens.end()) token = it->second;
    if (token && !token->content.empty()) {
      token->special = true;
      roles_.emplace_back(role, *token);
    }
  }
  additional_special_ = options.additional_special_tokens ? *options.additional_special_tokens : default_additional;
  for (auto& t : additional_special_) t.special = true;
  added_decoder_ = preset_added;
  for (const auto& [id, token] : options.added_tokens) {
    if (id < 0) {
      throw ConfigError("[Tokenizer] added token '" + token.content + "' has id " + std::to_string(id) +
                        "; expected a non-negative id (check added_tokens_decoder / added_tokens.json)");
    }
    added_decoder_[id] = token;
  }
  clean_up_tokenization_spaces_ = options.clean_up_tokenization_spaces.value_or(true);
  rebuild_indexes();
  // HF: special tokens that are not added tokens yet become added tokens,
  // with their vocabulary id when they have one, else a new id.
  std::vector<AddedToken> specials;
  for (const auto& [role, token] : roles_) specials.push_back(token);
  for (const auto& token : additional_special_) specials.push_back(token);
  for (auto& token : specials) {
    if (!added_encoder_.count(token.content)) add_token_internal(token);
  }
  rebuild_indexes();
}

int64_t Tokenizer::add_token_internal(AddedToken token) {
  if (token.content.empty()) return -1;
  auto known = added_encoder_.find(token.content);
  if (known != added_encoder_.end()) return known->second;
  if (!token.special && token.normalized && lowercases_input()) {
    std::u32string lowered;
    for (char32_t cp : text::to_u32(token.content)) text::append_py_lower(lowered, cp);
    token.content = text::to_utf8(lowered);
  }
  std::optional<int64_t> id = base_token_to_id(token.content);
  if (!id) id = size();
  added_decoder_[*id] = token;
  added_encoder_[token.content] = *id;
  return *id;
}

void Tokenizer::rebuild_indexes() {
  added_encoder_.clear();
  for (const auto& [id, token] : added_decoder_) added_encoder_[token.content] = id;

  trie_.assign(1, TrieNode{});
  for (const auto& [content, id] : added_encoder_) {
    if (content.empty()) continue;
    int32_t node = 0;
    for (unsigned char c : content) {
      auto it = trie_[node].next.find(c);
      if (it == trie_[node].next.end()) {
        trie_.push_back(TrieNode{});
        int32_t child = static_cast<int32_t>(trie_.size()) - 1;
        trie_[node].next[c] = child;
        node = child;
      } else {
        node = it->second;
      }
    }
    trie_[node].token_len = static_cast<int32_t>(content.size());
  }

  all_special_tokens_.clear();
  auto push_unique = [this](const std::string& s) {
    if (std::find(all_special_tokens_.begin(), all_special_tokens_.end(), s) == all_special_tokens_.end())
      all_special_tokens_.push_back(s);
  };
  for (const auto& [role, token] : roles_) push_unique(token.content);
  for (const auto& token : additional_special_) push_unique(token.content);
  all_special_ids_.clear();
  special_id_set_.clear();
  for (const auto& s : all_special_tokens_) {
    std::optional<int64_t> id = token_to_id(s);
    if (id) {
      all_special_ids_.push_back(*id);
      special_id_set_.insert(*id);
    }
  }

  std::unordered_set<std::string> special_set(all_special_tokens_.begin(), all_special_tokens_.end());
  legacy_added_.clear();
  for (const auto& [content, id] : added_encoder_) {
    if (!special_set.count(content)) legacy_added_.insert(content);
  }
  for (const auto& token : additional_special_) {
    std::optional<int64_t> id = token_to_id(token.content);
    if (id && *id >= base_vocab_size()) legacy_added_.insert(token.content);
  }

  lowercase_protected_ = all_special_tokens_;
  for (const auto& [id, token] : added_decoder_) {
    if (!token.special && token.normalized) lowercase_protected_.push_back(token.content);
  }
}

int64_t Tokenizer::size() const {
  int64_t n = base_vocab_size();
  if (!added_decoder_.empty()) n = std::max(n, added_decoder_.rbegin()->first + 1);
  return n;
}

int Tokenizer::add_tokens(const std::vector<AddedToken>& tokens) {
  int added = 0;
  for (const auto& token : tokens) {
    if (token.content.empty() || added_encoder_.count(token.content)) continue;
    bool in_base = base_token_to_id(token.content).has_value();
    add_token_internal(token);
    if (!in_base) ++added;
    if (token.special && std::find(all_special_tokens_.begin(), all_special_tokens_.end(), token.content) ==
                             all_special_tokens_.end()) {
      additional_special_.push_back(token);
    }
  }
  rebuild_indexes();
  return added;
}

void Tokenizer::set_special_token(const std::string& role, const std::string& content) {
  if (!is_role(role)) {
    throw ConfigError("[Tokenizer] unknown special-token role '" + role +
                      "'; expected one of bos_token, eos_token, unk_token, sep_token, pad_token, cls_token, "
                      "mask_token");
  }
  if (content.empty()) throw ConfigError("[Tokenizer] special token for '" + role + "' is empty; give its text");
  AddedToken token{content, true, false, false, false, false};
  bool replaced = false;
  for (auto& [r, t] : roles_) {
    if (r == role) { t = token; replaced = true; }
  }
  if (!replaced) {
    roles_.emplace_back(role, token);
    std::vector<std::pair<std::string, AddedToken>> ordered;
    for (const char* r : kRoles)
      for (const auto& entry : roles_)
        if (entry.first == r) ordered.push_back(entry);
    roles_ = std::move(ordered);
  }
  add_token_internal(token);
  rebuild_indexes();
}

std::optional<std::string> Tokenizer::special_token(const std::string& role) const {
  for (const auto& [r, token] : roles_)
    if (r == role) return token.content;
  return std::nullopt;
}

std::optional<int64_t> Tokenizer::special_token_id(const std::string& role) const {
  std::optional<std::string> token = special_token(role);
  if (!token) return std::nullopt;
  return token_to_id(*token);
}

int64_t Tokenizer::require_special_id(const std::string& role, const std::string& what) const {
  std::optional<int64_t> id = special_token_id(role);
  if (!id) {
    throw ConfigError("[Tokenizer] " + what + " needs a " + role + ", but none is configured; set \"" + role +
                      "\" in tokenizer_config.json or special_tokens_map.json");
  }
  return *id;
}

std::optional<int64_t> Tokenizer::token_to_id(const std::string& token) const {
  auto it = added_encoder_.find(token);
  if (it != added_encoder_.end()) return it->second;
  return base_token_to_id(token);
}

std::string Tokenizer::id_to_token(int64_t id) const {
  auto it = added_decoder_.find(id);
  if (it != added_decoder_.end()) return it->second.content;
  std::optional<std::string> token = base_id_to_token(id);
  if (!token) {
    throw InputError("[Tokenizer] token id " + std::to_string(id) + " is out of range: expected 0 <= id < " +
                     std::to_string(base_vocab_size()) + " or an added-token id (size " + std::to_string(size()) +
                     "); check that the ids were produced with this tokenizer's vocabulary");
  }
  return *token;
}

std::vector<int64_t> Tokenizer::convert_tokens_to_ids(const std::vector<std::string>& tokens) const {
  std::vector<int64_t> ids;
  ids.reserve(tokens.size());
  std::optional<int64_t> unk;
  bool unk_looked_up = false;
  for (const auto& token : tokens) {
    std::optional<int64_t> id = token_to_id(token);
    if (!id) {
      if (!unk_looked_up) { unk = unk_id(); unk_looked_up = true; }
      if (!unk) {
        throw InputError("[Tokenizer] token '" + token + "' is not in the vocabulary and no unk_token is "
                         "configured; expected tokens of this vocabulary or an unk_token in tokenizer_config.json");
      }
      id = unk;
    }
    ids.push_back(*id);
  }
  return ids;
}

std::string Tokenizer::lowercase_outside_special(const std::string& text) const {
  // HF: re.sub("(special|...)|(.+?)", lower) - special tokens are kept, every
  // other character (but "\n", which "." does not match) is lower-cased alone.
  std::string out;
  out.reserve(text.size());
  size_t i = 0;
  while (i < text.size()) {
    bool protected_hit = false;
    for (const auto& p : lowercase_protected_) {
      if (!p.empty() && text.compare(i, p.size(), p) == 0) {
        out += p;
        i += p.size();
        protected_hit = true;
        break;
      }
    }
    if (protected_hit) continue;
    size_t len = 1;
    unsigned char b = static_cast<unsigned char>(text[i]);
    if (b >= 0xF0) len = 4;
    else if (b >= 0xE0) len = 3;
    else if (b >= 0xC0) len = 2;
    std::u32string cp = text::to_u32(text.substr(i, len));
    if (cp.size() == 1 && cp[0] != U'\n') {
      std::u32string lowered;
      text::append_py_lower(lowered, cp[0]);
      out += text::to_utf8(lowered);
    } else {
      out.append(text, i, len);
    }
    i += len;
  }
  return out;
}

std::vector<std::string> Tokenizer::split_on_added_tokens(const std::string& text) const {
  // Leftmost-longest matches of added tokens (HF Trie.split).
  std::vector<std::string> pieces;
  size_t start = 0, i = 0;
  while (i < text.size()) {
    int32_t node = 0;
    size_t best = 0;
    for (size_t j = i; j < text.size(); ++j) {
      auto it = trie_[node].next.find(static_cast<unsigned char>(text[j]));
      if (it == trie_[node].next.end()) break;
      node = it->second;
      if (trie_[node].token_len >= 0) best = j + 1 - i;
    }
    if (best > 0) {
      if (i > start) pieces.push_back(text.substr(start, i - start));
      pieces.push_back(text.substr(i, best));
      i += best;
      start = i;
    } else {
      ++i;
    }
  }
  if (start < text.size()) pieces.push_back(text.substr(start));

  // lstrip / rstrip / single_word, in HF's order.
  for (size_t k = 0; k < pieces.size(); ++k) {
    auto it = added_encoder_.find(pieces[k]);
    if (it == added_encoder_.end()) continue;
    const AddedToken& token = added_decoder_.at(it->second);
    const std::string piece = pieces[k];
    const std::string left = k > 0 ? pieces[k - 1] : std::string();
    const std::string right = k + 1 < pieces.size() ? pieces[k + 1] : std::string();
    if (token.rstrip && !right.empty()) pieces[k + 1] = py_lstrip(right);
    if (token.lstrip && !left.empty()) pieces[k - 1] = py_rstrip(left);
    if (token.single_word && !left.empty() && left.back() != ' ') {
      pieces[k - 1] += piece;
      pieces[k].clear();
    } else if (token.single_word && !right.empty() && right.front() != ' ') {
      pieces[k + 1] = piece + pieces[k + 1];
      pieces[k].clear();
    }
  }
  return pieces;
}

std::vector<std::string> Tokenizer::tokenize(const std::string& input) const {
  text::validate_utf8(input, "text");
  std::string t = prepare_for_tokenization(input);
  if (lowercases_input()) t = lowercase_outside_special(t);
  std::vector<std::string> tokens;
  for (const std::string& piece : split_on_added_tokens(t)) {
    if (piece.empty()) continue;
    if (added_encoder_.count(piece)) {
      tokens.push_back(piece);
    } else {
      std::vector<std::string> sub = tokenize_segment(piece);
      tokens.insert(tokens.end(), std::make_move_iterator(sub.begin()), std::make_move_iterator(sub.end()));
    }
  }
  post_tokenize(tokens);
  return tokens;
}

std::vector<int64_t> Tokenizer::encode(const std::string& text, bool add_special_tokens) const {
  std::vector<int64_t> ids = convert_tokens_to_ids(tokenize(text));
  if (add_special_tokens) ids = build_inputs_with_special_tokens(ids);
  return ids;
}

std::string Tokenizer::decode(const std::vector<int64_t>& ids, bool skip_special_tokens) const {
  // HF _decode: non-special added tokens are their own sub-text; the rest is
  // converted in runs; sub-texts are joined with " ".
  std::vector<std::string> sub_texts;
  std::vector<std::string> current;
  for (size_t pos = 0; pos < ids.size(); ++pos) {
    const int64_t id = ids[pos];
    if (skip_special_tokens && special_id_set_.count(id)) continue;
    std::string token;
    try {
      token = id_to_token(id);
    } catch (const InputError& e) {
      throw InputError(std::string(e.what()) + " (decode: position " + std::to_string(pos) + " of " +
                       std::to_string(ids.size()) + ")");
    }
    if (legacy_added_.count(token)) {
      if (!current.empty()) {
        std::string s = convert_tokens_to_string(current);
        if (!s.empty()) sub_texts.push_back(std::move(s));
        current.clear();
      }
      sub_texts.push_back(std::move(token));
    } else {
      current.push_back(std::move(token));
    }
  }
  if (!current.empty()) sub_texts.push_back(convert_tokens_to_string(current));
  std::string out;
  for (size_t i = 0; i < sub_texts.size(); ++i) {
    if (i) out += ' ';
    out += sub_texts[i];
  }
  return clean_up_tokenization_spaces_ ? text::clean_up_tokenization(out) : out;
}

// ============================================================================
// Loading: configuration files and the factory
// ============================================================================
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

json parse_json_file(const std::string& path, const std::string& what) {
  const std::string s = text::read_file(path, what);
  try {
    return json::parse(s);
  } catch (const json::parse_error& e) {
    throw ConfigError("[Tokenizer] " + path + " is not valid JSON: line " +
                      std::to_string(text::line_of_offset(s, e.byte == 0 ? 0 : e.byte - 1)) + ": " + e.what() +
                      "; fix the file or remove it");
  }
}

std::string type_error(const std::string& path, const std::string& key, const std::string& expected, const json& v) {
  return "[Tokenizer] " + path + ": \"" + key + "\" must be " + expected + ", found " + v.dump() +
         "; fix the value in that file";
}

std::optional<bool> get_bool(const json& j, const std::string& key, const std::string& path) {
  if (!j.contains(key) || j[key].is_null()) return std::nullopt;
  if (!j[key].is_boolean()) throw ConfigError(type_error(path, key, "true or false", j[key]));
  return j[key].get<bool>();
}

std::optional<int> get_int(const json& j, const std::string& key, const std::string& path) {
  if (!j.contains(key) || j[key].is_null()) return std::nullopt;
  if (!j[key].is_number_integer()) throw ConfigError(type_error(path, key, "an integer", j[key]));
  return j[key].get<int>();
}

// A token as HF serialises it: "text" or {"content": "text", "lstrip": ..., ...}.
AddedToken parse_added_token(const json& v, bool default_special, const std::string& path, const std::string& key) {
  AddedToken t;
  if (v.is_string()) {
    t.content = v.get<std::string>();
    t.special = default_special;
    t.normalized = !default_special;
    return t;
  }
  if (!v.is_object() || !v.contains("content") || !v["content"].is_string()) {
    throw ConfigError(type_error(path, key, "a string or an object with a \"content\" string", v));
  }
  t.content = v["content"].get<std::string>();
  t.special = v.value("special", default_special);
  t.lstrip = v.value("lstrip", false);
  t.rstrip = v.value("rstrip", false);
  t.single_word = v.value("single_word", false);
  t.normalized = v.contains("normalized") && v["normalized"].is_boolean() ? v["normalized"].get<bool>() : !t.special;
  return t;
}

void read_special_tokens(const json& j, const std::string& path, TokenizerOptions& o) {
  for (const char* role : kRoles) {
    if (!j.contains(role)) continue;
    if (j[role].is_null()) o.special_tokens[role] = std::nullopt;
    else o.special_tokens[role] = parse_added_token(j[role], true, path, role);
  }
  if (j.contains("additional_special_tokens") && !j["additional_special_tokens"].is_null()) {
    const json& list = j["additional_special_tokens"];
    if (!list.is_array()) throw ConfigError(type_error(path, "additional_special_tokens", "a list", list));
    std::vector<AddedToken> tokens;
    for (const auto& v : list) tokens.push_back(parse_added_token(v, true, path, "additional_special_tokens"));
    o.additional_special_tokens = tokens;
  }
}

std::vector<std::string> special_contents(const TokenizerOptions& o) {
  std::vector<std::string> out;
  for (const auto& [role, token] : o.special_tokens)
    if (token) out.push_back(token->content);
  if (o.additional_special_tokens)
    for (const auto& t : *o.additional_special_tokens) out.push_back(t.content);
  return out;
}

void read_tokenizer_json_added(const json& tj, const std::string& path, TokenizerOptions& o, bool override_ids) {
  if (!tj.contains("added_tokens") || tj["added_tokens"].is_null()) return;
  if (!tj["added_tokens"].is_array()) throw ConfigError(type_error(path, "added_tokens", "a list", tj["added_tokens"]));
  for (const auto& v : tj["added_tokens"]) {
    if (!v.is_object() || !v.contains("id") || !v["id"].is_number_integer())
      throw ConfigError(type_error(path, "added_tokens", "a list of {\"id\": int, \"content\": str, ...}", v));
    const int64_t id = v["id"].get<int64_t>();
    if (override_ids || !o.added_tokens.count(id)) o.added_tokens[id] = parse_added_token(v, false, path, "added_tokens");
  }
}

}  // namespace

TokenizerOptions read_tokenizer_options(const std::string& dir) {
  TokenizerOptions o;
  const fs::path root(dir);
  bool has_decoder = false;
  const std::string cfg_path = (root / "tokenizer_config.json").string();
  if (fs::is_regular_file(cfg_path)) {
    const json j = parse_json_file(cfg_path, "tokenizer_config.json");
    if (!j.is_object()) throw ConfigError(type_error(cfg_path, "(top level)", "a JSON object", j));
    o.do_lower_case = get_bool(j, "do_lower_case", cfg_path);
    o.strip_accents = get_bool(j, "strip_accents", cfg_path);
    o.tokenize_chinese_chars = get_bool(j, "tokenize_chinese_chars", cfg_path);
    o.add_bos_token = get_bool(j, "add_bos_token", cfg_path);
    o.add_prefix_space = get_bool(j, "add_prefix_space", cfg_path);
    o.legacy = get_bool(j, "legacy", cfg_path);
    o.clean_up_tokenization_spaces = get_bool(j, "clean_up_tokenization_spaces", cfg_path);
    o.extra_ids = get_int(j, "extra_ids", cfg_path);
    if (j.contains("tokenizer_class") && j["tokenizer_class"].is_string())
      o.tokenizer_class = j["tokenizer_class"].get<std::string>();
    if (j.contains("never_split") && !j["never_split"].is_null()) {
      if (!j["never_split"].is_array()) throw ConfigError(type_error(cfg_path, "never_split", "a list", j["never_split"]));
      for (const auto& v : j["never_split"]) {
        if (!v.is_string()) throw ConfigError(type_error(cfg_path, "never_split", "a list of strings", v));
        o.never_split.push_back(v.get<std::string>());
      }
    }
    read_special_tokens(j, cfg_path, o);
    if (j.contains("added_tokens_decoder") && j["added_tokens_decoder"].is_object()) {
      has_decoder = true;
      for (auto it = j["added_tokens_decoder"].begin(); it != j["added_tokens_decoder"].end(); ++it) {
        int64_t id = -1;
        try {
          size_t used = 0;
          id = std::stoll(it.key(), &used);
          if (used != it.key().size()) id = -1;
        } catch (const std::exception&) {
          id = -1;
        }
        if (id < 0) throw ConfigError(type_error(cfg_path, "added_tokens_decoder", "keyed by token ids", it.key()));
        o.added_tokens[id] = parse_added_token(it.value(), false, cfg_path, "added_tokens_decoder");
      }
    }
  }
  if (!has_decoder) {
    // HF's legacy path: special_tokens_map.json overrides the config's special
    // tokens; added_tokens.json and tokenizer.json's added tokens are added.
    const std::string map_path = (root / "special_tokens_map.json").string();
    if (fs::is_regular_file(map_path)) {
      const json j = parse_json_file(map_path, "special_tokens_map.json");
      if (!j.is_object()) throw ConfigError(type_error(map_path, "(top level)", "a JSON object", j));
      read_special_tokens(j, map_path, o);
    }
    const std::string added_path = (root / "added_tokens.json").string();
    if (fs::is_regular_file(added_path)) {
      const json j = parse_json_file(added_path, "added_tokens.json");
      if (!j.is_object()) throw ConfigError(type_error(added_path, "(top level)", "an object {token: id}", j));
      const std::vector<std::string> specials = special_contents(o);
      for (auto it = j.begin(); it != j.end(); ++it) {
        if (!it.value().is_number_integer() || it.value().get<int64_t>() < 0)
          throw ConfigError(type_error(added_path, it.key(), "a non-negative integer id", it.value()));
        const bool special = std::find(specials.begin(), specials.end(), it.key()) != specials.end();
        o.added_tokens[it.value().get<int64_t>()] = AddedToken{it.key(), special, false, false, false, !special};
      }
    }
    const std::string tj_path = (root / "tokenizer.json").string();
    if (fs::is_regular_file(tj_path)) {
      read_tokenizer_json_added(parse_json_file(tj_path, "tokenizer.json"), tj_path, o, true);
    }
  }
  return o;
}

std::unique_ptr<Tokenizer> load_tokenizer_json(const std::string& tokenizer_json, const TokenizerOptions& options_in) {
  const json tj = parse_json_file(tokenizer_json, "HF tokenizer file (tokenizer.json)");
  TokenizerOptions options = options_in;
  try {
    read_tokenizer_json_added(tj, tokenizer_json, options, false);
    if (!tj.is_object() || !tj.contains("model") || !tj["model"].is_object())
      throw ConfigError("[Tokenizer] " + tokenizer_json + " has no \"model\" object; expected a HF tokenizer.json");
    const json& model = tj["model"];
    std::string type = model.value("type", "");
    if (type.empty()) type = model.contains("merges") ? "BPE" : model.contains("continuing_subword_prefix") ? "WordPiece" : "";
    if (type == "BPE") return BpeTokenizer::from_tokenizer_json(tj, tokenizer_json, options);
    if (type == "WordPiece") return WordPieceTokenizer::from_tokenizer_json(tj, tokenizer_json, options);
    throw ConfigError("[Tokenizer] " + tokenizer_json + ": model type \"" + type +
                      "\" is not supported; expected \"BPE\" (byte-level) or \"WordPiece\" (for a T5 Unigram "
                      "model give spiece.model)");
  } catch (const json::exception& e) {
    throw ConfigError("[Tokenizer] " + tokenizer_json + " does not have the HF tokenizer.json layout: " + e.what());
  }
}

std::unique_ptr<Tokenizer> load_tokenizer(const std::string& dir) {
  const fs::path root(dir);
  const std::string looked_for =
      "vocab.json + merges.txt (GPT-2/OPT BPE), vocab.txt (BERT WordPiece), spiece.model (T5 SentencePiece) or "
      "tokenizer.json (HF fast tokenizer)";
  if (!fs::is_directory(root)) {
    throw ConfigError("[Tokenizer] tokenizer directory '" + dir + "' does not exist; expected a checkpoint directory "
                      "holding " + looked_for);
  }
  const TokenizerOptions options = read_tokenizer_options(dir);
  auto has = [&](const char* name) { return fs::is_regular_file(root / name); };
  auto path = [&](const char* name) { return (root / name).string(); };
  const bool bpe = has("vocab.json") && has("merges.txt"), wordpiece = has("vocab.txt"), sp = has("spiece.model"),
             fast = has("tokenizer.json");

  // tokenizer_config.json's class decides when several kinds are present.
  const std::string cls = options.tokenizer_class.value_or("");
  auto class_is = [&](const char* prefix) { return cls.rfind(prefix, 0) == 0; };
  if (bpe && (class_is("GPT2") || class_is("OPT"))) return load_bpe_tokenizer(path("vocab.json"), path("merges.txt"), options);
  if (wordpiece && class_is("Bert")) return load_wordpiece_tokenizer(path("vocab.txt"), options);
  if (sp && class_is("T5")) return load_sentencepiece_tokenizer(path("spiece.model"), options);

  if (bpe) return load_bpe_tokenizer(path("vocab.json"), path("merges.txt"), options);
  if (wordpiece) return load_wordpiece_tokenizer(path("vocab.txt"), options);
  if (sp) return load_sentencepiece_tokenizer(path("spiece.model"), options);
  if (fast) return load_tokenizer_json(path("tokenizer.json"), options);

  std::string found;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(root, ec)) {
    if (!found.empty()) found += ", ";
    found += entry.path().filename().string();
  }
  std::string hint;
  if (has("vocab.json") && !has("merges.txt")) hint = " (vocab.json is there but merges.txt is missing)";
  if (has("merges.txt") && !has("vocab.json")) hint = " (merges.txt is there but vocab.json is missing)";
  throw ConfigError("[Tokenizer] no tokenizer files in '" + dir + "'" + hint + ": looked for " + looked_for +
                    "; found: " + (found.empty() ? std::string("nothing") : found) +
                    ". Copy the tokenizer files of the checkpoint into that directory");
}

}  // namespace blip2
