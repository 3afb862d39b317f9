// Tokenizers of a BLIP-2 checkpoint, with the semantics of HuggingFace
// transformers 4.45 "slow" (pure-python) tokenizers:
//   - GPT-2 / OPT byte-level BPE       (GPT2Tokenizer: vocab.json + merges.txt)   bpe_tokenizer.h
//   - BERT WordPiece (Q-Former text)   (BertTokenizer: vocab.txt)                 wordpiece_tokenizer.h
//   - T5 / FlanT5 SentencePiece        (T5Tokenizer: spiece.model)                sentencepiece_tokenizer.h
//
// This file holds what HF's PreTrainedTokenizer does for every model: special
// tokens by role, added tokens (split out of the text before the model's own
// tokenizer runs, with lstrip / rstrip / single_word), the lower-casing pass of
// do_lower_case tokenizers, and decode (skip_special_tokens, added tokens
// spliced between sub-texts, clean_up_tokenization_spaces). A subclass only
// supplies the model's "_tokenize", its vocabulary and convert_tokens_to_string.
// docs/tokenizers.md lists what is supported and the known differences.
//
// Text in and out is UTF-8. Invalid UTF-8 input throws InputError naming the
// byte offset. A Tokenizer is immutable after configuration (add_tokens /
// set_special_token) and then safe to share between threads.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

namespace blip2 {

// HF's tokenizers.AddedToken: a token matched as a whole in the input text.
struct AddedToken {
  std::string content;
  bool special = false;      // listed in all_special_tokens when it fills a role
  bool lstrip = false;       // eats the whitespace on its left
  bool rstrip = false;       // eats the whitespace on its right
  bool single_word = false;  // only matches when not glued to a neighbouring word
  bool normalized = true;    // lower-cased with the text by do_lower_case tokenizers
};

// What tokenizer_config.json, special_tokens_map.json, added_tokens.json (and
// the added tokens of tokenizer.json) say, merged with HF's precedence. Every
// field left unset takes the tokenizer class's default.
struct TokenizerOptions {
  // Special-token roles by HF name: "bos_token", "eos_token", "unk_token",
  // "sep_token", "pad_token", "cls_token", "mask_token". A role mapped to
  // nullopt is explicitly absent (HF's null).
  std::map<std::string, std::optional<AddedToken>> special_tokens;
  std::optional<std::vector<AddedToken>> additional_special_tokens;
  std::map<int64_t, AddedToken> added_tokens;  // id -> token (HF added_tokens_decoder)

  // WordPiece (BertTokenizer).
  std::optional<bool> do_lower_case;
  std::optional<bool> strip_accents;  // unset = follow do_lower_case (HF None)
  std::optional<bool> tokenize_chinese_chars;
  std::vector<std::string> never_split;
  std::optional<int> max_input_chars_per_word;
  std::optional<std::string> continuing_subword_prefix;  // "##"

  // BPE (GPT2Tokenizer; OPT sets add_bos_token).
  std::optional<bool> add_bos_token;
  std::optional<bool> add_prefix_space;

  // SentencePiece (T5Tokenizer).
  std::optional<bool> legacy;
  std::optional<int> extra_ids;

  std::optional<bool> clean_up_tokenization_spaces;
  // tokenizer_config.json's "tokenizer_class" (e.g. "GPT2Tokenizer"): picks the
  // files load_tokenizer reads when a directory holds several kinds.
  std::optional<std::string> tokenizer_class;
};

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;
  Tokenizer(const Tokenizer&) = delete;
  Tokenizer& operator=(const Tokenizer&) = delete;

  // HF tok.tokenize(text): added tokens split out, the rest through the model.
  virtual std::vector<std::string> tokenize(const std::string& text) const;
  // HF tok.encode(text, add_special_tokens=...).
  virtual std::vector<int64_t> encode(const std::string& text, bool add_special_tokens = true) const;
  // HF tok.decode(ids, skip_special_tokens=...). Throws InputError for an id
  // that is neither in the vocabulary nor an added token.
  virtual std::string decode(const std::vector<int64_t>& ids, bool skip_special_tokens = false) const;

  // Exact lookup among added tokens and the vocabulary; nullopt when absent.
  std::optional<int64_t> token_to_id(const std::string& token) const;
  // Throws InputError when `id` is out of range.
  std::string id_to_token(int64_t id) const;
  // HF convert_tokens_to_ids: unknown tokens map to unk_id (InputError if none).
  std::vector<int64_t> convert_tokens_to_ids(const std::vector<std::string>& tokens) const;

  std::optional<int64_t> bos_id() const { return special_token_id("bos_token"); }
  std::optional<int64_t> eos_id() const { return special_token_id("eos_token"); }
  std::optional<int64_t> pad_id() const { return special_token_id("pad_token"); }
  std::optional<int64_t> unk_id() const { return special_token_id("unk_token"); }
  std::optional<int64_t> sep_id() const { return special_token_id("sep_token"); }
  std::optional<int64_t> cls_id() const { return special_token_id("cls_token"); }
  std::optional<int64_t> mask_id() const { return special_token_id("mask_token"); }
  // The token filling `role` ("bos_token", ...), or nullopt.
  std::optional<std::string> special_token(const std::string& role) const;
  std::optional<int64_t> special_token_id(const std::string& role) const;
  // HF all_special_tokens / all_special_ids (roles, then additional_special_tokens).
  const std::vector<std::string>& all_special_tokens() const { return all_special_tokens_; }
  const std::vector<int64_t>& all_special_ids() const { return all_special_ids_; }
  // id -> AddedToken (HF added_tokens_decoder).
  const std::map<int64_t, AddedToken>& added_tokens() const { return added_decoder_; }

  // HF tok.vocab_size: the base vocabulary, without added tokens.
  int64_t vocab_size() const { return base_vocab_size(); }
  // HF len(tok): base vocabulary plus added tokens that are not in it; the
  // embedding-table size a model needs for these ids.
  int64_t size() const;
  // "bpe", "wordpiece" or "sentencepiece".
  virtual std::string kind() const = 0;

  // HF tok.add_tokens(...): appends tokens that are not yet known (ids from
  // size()); returns how many got new ids. Lower-cased first when the
  // tokenizer lower-cases and the token is normalized and not special.
  int add_tokens(const std::vector<AddedToken>& tokens);
  // HF tok.add_special_tokens({role: content}), e.g. LAVIS's
  // set_special_token("bos_token", "[DEC]") for the Q-Former.
  void set_special_token(const std::string& role, const std::string& content);

  bool clean_up_tokenization_spaces() const { return clean_up_tokenization_spaces_; }

 protected:
  Tokenizer() = default;

  // --- what a model supplies (HF names) ---
  // _tokenize: one piece of text that holds no added token.
  virtual std::vector<std::string> tokenize_segment(const std::string& text) const = 0;
  virtual std::optional<int64_t> base_token_to_id(const std::string& token) const = 0;
  virtual std::optional<std::string> base_id_to_token(int64_t id) const = 0;
  virtual int64_t base_vocab_size() const = 0;
  virtual std::string convert_tokens_to_string(const std::vector<std::string>& tokens) const = 0;
  virtual std::vector<int64_t> build_inputs_with_special_tokens(const std::vector<int64_t>& ids) const {
    return ids;
  }
  // prepare_for_tokenization (GPT-2's add_prefix_space, T5's prefix).
  virtual std::string prepare_for_tokenization(const std::string& text) const { return text; }
  // Runs on the tokens of tokenize() (T5 drops a lone "▁" before a special token).
  virtual void post_tokenize(std::vector<std::string>& tokens) const {}
  // HF's do_lower_case attribute: lower-cases the text outside special tokens.
  virtual bool lowercases_input() const { return false; }

  // --- set-up, called by a subclass constructor once its vocabulary is loaded ---
  // `default_roles`: the class's default special tokens (role -> content);
  // `preset_added`: added tokens the class itself defines (T5's extra ids).
  void init_special_tokens(const TokenizerOptions& options,
                           const std::vector<std::pair<std::string, std::string>>& default_roles,
                           const std::vector<AddedToken>& default_additional,
                           const std::map<int64_t, AddedToken>& preset_added);
  // Fails with ConfigError naming `what` when `role` has no token or id.
  int64_t require_special_id(const std::string& role, const std::string& what) const;
  bool is_added_token(const std::string& content) const { return added_encoder_.count(content) > 0; }

 private:
  struct TrieNode {
    std::unordered_map<unsigned char, int32_t> next;
    int32_t token_len = -1;  // >= 0: an added token ends here
  };
  std::vector<std::string> split_on_added_tokens(const std::string& text) const;
  std::string lowercase_outside_special(const std::string& text) const;
  int64_t add_token_internal(AddedToken token);
  void rebuild_indexes();

  std::vector<std::pair<std::string, AddedToken>> roles_;  // HF SPECIAL_TOKENS_ATTRIBUTES order
  std::vector<AddedToken> additional_special_;
  std::map<int64_t, AddedToken> added_decoder_;
  std::unordered_map<std::string, int64_t> added_encoder_;
  std::vector<TrieNode> trie_;
  std::vector<std::string> all_special_tokens_;
  std::vector<int64_t> all_special_ids_;
  std::unordered_set<int64_t> special_id_set_;
  std::unordered_set<std::string> legacy_added_;  // spliced as their own sub-text by decode
  std::vector<std::string> lowercase_protected_;
  bool clean_up_tokenization_spaces_ = true;
};

// Reads a checkpoint's tokenizer directory: detects the files (in this order)
//   vocab.json + merges.txt   GPT-2 / OPT byte-level BPE
//   vocab.txt                 BERT WordPiece
//   spiece.model              T5 SentencePiece
//   tokenizer.json            HF fast-tokenizer file with a byte-level BPE or WordPiece model
// and applies tokenizer_config.json / special_tokens_map.json / added_tokens.json
// when present. Throws ConfigError naming the directory and the files looked for.
std::unique_ptr<Tokenizer> load_tokenizer(const std::string& dir);

// The optional configuration files of `dir` merged as HF does (empty options
// when none exist). Throws ConfigError for malformed JSON.
TokenizerOptions read_tokenizer_options(const std::string& dir);

// Explicit-path constructors (tests, tools).
std::unique_ptr<Tokenizer> load_bpe_tokenizer(const std::string& vocab_json, const std::string& merges_txt,
                                              const TokenizerOptions& options = {});
std::unique_ptr<Tokenizer> load_wordpiece_tokenizer(const std::string& vocab_txt,
                                                    const TokenizerOptions& options = {});
std::unique_ptr<Tokenizer> load_sentencepiece_tokenizer(const std::string& spiece_model,
                                                        const TokenizerOptions& options = {});
std::unique_ptr<Tokenizer> load_tokenizer_json(const std::string& tokenizer_json,
                                               const TokenizerOptions& options = {});

// Text helpers shared by the tokenizers (Python str semantics on UTF-8).
namespace text {
// Lines of a file's text with Python's universal newlines ("\n", "\r\n", "\r");
// no empty last line for a trailing newline.
std::vector<std::string> split_lines(const std::string& raw);
// Throws InputError naming the byte offset of the first invalid UTF-8 sequence
// (overlong forms, surrogates and code points above U+10FFFF are invalid).
void validate_utf8(const std::string& s, const std::string& what);
// Valid UTF-8 -> code points and back.
std::u32string to_u32(const std::string& s);
std::string to_utf8(const std::u32string& s);
void append_utf8(std::string& out, char32_t cp);
// bytes.decode("utf-8", errors="replace"): each maximal ill-formed subsequence -> U+FFFD.
std::string decode_utf8_replace(const std::string& bytes);
// str.isspace() / str.strip() / str.split() of Python.
bool py_isspace(char32_t cp);
std::string py_strip(const std::string& s);
std::vector<std::string> py_split(const std::string& s);
// One code point lower-cased as Python's str.lower() does.
void append_py_lower(std::u32string& out, char32_t cp);
// HF clean_up_tokenization: " ." -> "." and friends.
std::string clean_up_tokenization(const std::string& s);
// Whole file as bytes; ConfigError naming `what` and the path when unreadable.
std::string read_file(const std::string& path, const std::string& what);
// 1-based line of byte `offset` in `s`.
int64_t line_of_offset(const std::string& s, size_t offset);
// The fields of `s` between `sep` characters: ("a\tb", '\t') -> {"a", "b"}; "" -> {""}.
std::vector<std::string> split_fields(const std::string& s, char sep);
// `tmpl` with its first "{}" replaced by `value` (prompt templates such as
// "Question: {} Answer:"); InputError naming the template when it has none.
std::string fill_template(const std::string& tmpl, const std::string& value);
}  // namespace text

}  // namespace blip2
