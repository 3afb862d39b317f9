// Loading a tokenizer from a checkpoint directory as transformers'
// AutoTokenizer does: tokenizer_config.json, special_tokens_map.json,
// added_tokens.json, tokenizer.json, and the family's vocabulary files.
#include <nlohmann/json.hpp>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "blip2/data/bpe_tokenizer.h"
#include "blip2/data/sentencepiece_tokenizer.h"
#include "blip2/data/tokenizer.h"
#include "blip2/data/wordpiece_tokenizer.h"
#include "blip2/util/error.h"

namespace blip2 {

// ============================================================================
// Loading: configuration files and the factory
// ============================================================================
namespace {

const char* const kRoles[] = {"bos_token", "eos_token", "unk_token", "sep_token",
                              "pad_token", "cls_token", "mask_token"};

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
  } catch (const json::exception& e) {  // out_of_range: a number beyond double (1e999)
    throw ConfigError("[Tokenizer] " + path + " is not valid JSON: " + e.what() + "; fix the file or remove it");
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

  // tokenizer_config.json's class decides when several kinds are present; a
  // class we do not implement is an error, not a guess from the files.
  const std::string cls = options.tokenizer_class.value_or("");
  auto class_is = [&](const char* prefix) { return cls.rfind(prefix, 0) == 0; };
  if (!cls.empty()) {
    const bool known = class_is("GPT2Tokenizer") || class_is("OPTTokenizer") || class_is("BertTokenizer") ||
                       class_is("T5Tokenizer") || cls == "PreTrainedTokenizerFast";
    if (!known)
      throw ConfigError("[Tokenizer] " + path("tokenizer_config.json") + ": tokenizer_class '" + cls +
                        "' is not supported (supported: GPT2Tokenizer, BertTokenizer, T5Tokenizer, their Fast "
                        "variants, PreTrainedTokenizerFast); this checkpoint's tokenizer cannot be read");
    const char* needs = class_is("GPT2") || class_is("OPT") ? (bpe || fast ? nullptr : "vocab.json + merges.txt")
                        : class_is("Bert")                  ? (wordpiece || fast ? nullptr : "vocab.txt")
                        : class_is("T5")                    ? (sp ? nullptr : "spiece.model")
                                                            : (fast ? nullptr : "tokenizer.json");
    if (needs)
      throw ConfigError("[Tokenizer] " + path("tokenizer_config.json") + " names tokenizer_class '" + cls + "', whose " +
                        needs + " is not in '" + dir + "'; copy the checkpoint's tokenizer files");
  }
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
