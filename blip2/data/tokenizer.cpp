// The model-independent half of HF's PreTrainedTokenizer (transformers 4.45):
// special tokens, added tokens, the do_lower_case pass, decode. The shared
// text helpers are in text_util.cpp, loading from a directory in
// tokenizer_load.cpp.
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

}  // namespace blip2
