// The tokenizer factory, configuration files, added/special tokens and the
// shared text helpers (blip2/data/tokenizer.{h,cpp}).
#include "blip2/data/tokenizer.h"

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "blip2/util/error.h"
#include "test_util.h"

namespace blip2 {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

std::string gpt2_dir() { return test::golden("tokenizers/gpt2"); }
std::string bert_dir() { return test::golden("tokenizers/bert"); }

void write(const std::string& path, const std::string& content) {
  std::ofstream out(path, std::ios::binary);
  out << content;
}

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

void copy_gpt2(const test::TempDir& dir) {
  fs::copy_file(gpt2_dir() + "/vocab.json", dir.file("vocab.json"));
  fs::copy_file(gpt2_dir() + "/merges.txt", dir.file("merges.txt"));
}

// --- text helpers -----------------------------------------------------------

TEST(TokenizerTextTest, DecodeUtf8ReplaceMatchesPythonErrorsReplace) {
  // Expected values from Python: bytes.decode("utf-8", errors="replace").
  const std::string r = "\xEF\xBF\xBD";
  EXPECT_EQ(text::decode_utf8_replace("\xE2\x82"), r);
  EXPECT_EQ(text::decode_utf8_replace("\xF0\x80"), r + r);
  EXPECT_EQ(text::decode_utf8_replace("\xE2\x82" "A"), r + "A");
  EXPECT_EQ(text::decode_utf8_replace("\xED\xA0\x80"), r + r + r);
  EXPECT_EQ(text::decode_utf8_replace("a\xFF" "b"), "a" + r + "b");
  EXPECT_EQ(text::decode_utf8_replace("\xF4\x90\x80\x80"), r + r + r + r);
  EXPECT_EQ(text::decode_utf8_replace("\xC0\xAF"), r + r);
  EXPECT_EQ(text::decode_utf8_replace("\xF0\x9F\x98"), r);
  EXPECT_EQ(text::decode_utf8_replace("caf\xC3\xA9 \xF0\x9F\x98\x80"), "caf\xC3\xA9 \xF0\x9F\x98\x80");
}

TEST(TokenizerTextTest, ValidateUtf8NamesTheByteOffset) {
  EXPECT_NO_THROW(text::validate_utf8("h\xC3\xA9llo \xF0\x9F\x98\x80", "text"));
  EXPECT_THROW_WITH(text::validate_utf8("abc\xFF", "text"), InputError, "byte offset 3");
  EXPECT_THROW_WITH(text::validate_utf8("ab\xE2\x82", "text"), InputError, "byte offset 2");
  EXPECT_THROW_WITH(text::validate_utf8("\xED\xA0\x80", "text"), InputError, "byte offset 1");  // surrogate
  EXPECT_THROW_WITH(text::validate_utf8("x\xC0\xAF", "text"), InputError, "byte offset 1");     // overlong
}

TEST(TokenizerTextTest, FieldsAndPromptTemplates) {
  EXPECT_EQ(text::split_fields("a\t\tb", '\t'), (std::vector<std::string>{"a", "", "b"}));
  EXPECT_EQ(text::split_fields("", '\t'), (std::vector<std::string>{""}));
  EXPECT_EQ(text::split_fields("x\t", '\t'), (std::vector<std::string>{"x", ""}));
  EXPECT_EQ(text::fill_template("Question: {} Answer:", "why?"), "Question: why? Answer:");
  EXPECT_EQ(text::fill_template("{} and {}", "a"), "a and {}");  // the first slot only
  EXPECT_THROW_WITH(text::fill_template("Question:", "q"), InputError, "has no {}");
}

TEST(TokenizerTextTest, PythonWhitespaceSplitAndStrip) {
  EXPECT_EQ(text::py_split(" a\tb\xE3\x80\x80" "c\xC2\x85" "d\xE2\x80\xA8 "),
            (std::vector<std::string>{"a", "b", "c", "d"}));
  EXPECT_EQ(text::py_strip("\xC2\xA0 x y\n"), "x y");
  // U+200B (zero width space) is not whitespace for Python.
  EXPECT_EQ(text::py_split("a\xE2\x80\x8B" "b").size(), 1u);
}

TEST(TokenizerTextTest, CleanUpTokenizationJoinsPunctuationAndContractions) {
  EXPECT_EQ(text::clean_up_tokenization("hello , world . is n't it ? i 'm ok !"), "hello, world. isn't it? i'm ok!");
  EXPECT_EQ(text::clean_up_tokenization("' s ' re ' ve"), "' s're've");
}

// --- factory ------------------------------------------------------------------

TEST(LoadTokenizerTest, MissingDirectoryNamesIt) {
  EXPECT_THROW_WITH(load_tokenizer("/nonexistent/blip2-tokenizer"), ConfigError, "/nonexistent/blip2-tokenizer");
}

TEST(LoadTokenizerTest, EmptyDirectoryNamesTheFilesLookedFor) {
  test::TempDir dir;
  try {
    load_tokenizer(dir.path());
    FAIL() << "expected ConfigError";
  } catch (const ConfigError& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find(dir.path()), std::string::npos) << msg;
    for (const char* f : {"vocab.json", "merges.txt", "vocab.txt", "spiece.model", "tokenizer.json"})
      EXPECT_NE(msg.find(f), std::string::npos) << f << " missing from: " << msg;
  }
}

TEST(LoadTokenizerTest, VocabJsonWithoutMergesSaysMergesAreMissing) {
  test::TempDir dir;
  fs::copy_file(gpt2_dir() + "/vocab.json", dir.file("vocab.json"));
  EXPECT_THROW_WITH(load_tokenizer(dir.path()), ConfigError, "merges.txt is missing");
}

TEST(LoadTokenizerTest, DetectsBpeAndWordPieceDirectories) {
  test::TempDir bpe_dir, wp_dir;
  copy_gpt2(bpe_dir);
  fs::copy_file(bert_dir() + "/vocab.txt", wp_dir.file("vocab.txt"));
  auto bpe = load_tokenizer(bpe_dir.path());
  auto wp = load_tokenizer(wp_dir.path());
  EXPECT_EQ(bpe->kind(), "bpe");
  EXPECT_EQ(wp->kind(), "wordpiece");
  EXPECT_EQ(bpe->vocab_size(), 344);
  EXPECT_EQ(wp->vocab_size(), 306);
  EXPECT_EQ(wp->encode("hello world"), (std::vector<int64_t>{4, 34, 35, 5}));
}

TEST(LoadTokenizerTest, TokenizerConfigSetsBosAndAddedTokens) {
  // OPT-style: add_bos_token with bos/pad given as AddedToken objects, plus an
  // added token ("<image>", as newer BLIP-2 checkpoints have) after the vocabulary.
  test::TempDir dir;
  copy_gpt2(dir);
  write(dir.file("tokenizer_config.json"), R"({
    "add_bos_token": true,
    "bos_token": {"__type": "AddedToken", "content": "<|endoftext|>", "lstrip": false, "rstrip": false},
    "pad_token": {"__type": "AddedToken", "content": "<pad>"},
    "added_tokens_decoder": {
      "343": {"content": "<|endoftext|>", "special": true},
      "344": {"content": "<pad>", "special": true},
      "345": {"content": "<image>", "special": false, "normalized": false}
    },
    "tokenizer_class": "GPT2Tokenizer"
  })");
  auto tok = load_tokenizer(dir.path());
  EXPECT_EQ(tok->bos_id(), 343);
  EXPECT_EQ(tok->pad_id(), 344);
  EXPECT_EQ(tok->size(), 346);
  EXPECT_EQ(tok->tokenize("a<image>cat"), (std::vector<std::string>{"a", "<image>", "c", "at"}));
  const auto ids = tok->encode("a<image>cat");
  EXPECT_EQ(ids.front(), 343);
  EXPECT_EQ(ids[2], 345);
  // HF splices non-special added tokens between sub-texts with spaces.
  EXPECT_EQ(tok->decode(ids, true), "a <image> cat");
  EXPECT_EQ(tok->decode({343, 344}, true), "");
}

TEST(LoadTokenizerTest, SpecialTokensMapAndAddedTokensJsonAddDec) {
  // The Q-Former's tokenizer: bert vocabulary + "[DEC]" as bos_token at a new id.
  test::TempDir dir;
  fs::copy_file(bert_dir() + "/vocab.txt", dir.file("vocab.txt"));
  write(dir.file("special_tokens_map.json"), R"({"bos_token": "[DEC2]", "cls_token": "[CLS]"})");
  write(dir.file("added_tokens.json"), R"({"[DEC2]": 306})");
  auto tok = load_tokenizer(dir.path());
  EXPECT_EQ(tok->bos_id(), 306);
  EXPECT_EQ(tok->tokenize("[DEC2] a cat"), (std::vector<std::string>{"[DEC2]", "a", "cat"}));
  EXPECT_EQ(tok->encode("[DEC2] a cat", false), (std::vector<int64_t>{306, 9, 44}));
  EXPECT_EQ(tok->decode({306, 9, 44}, true), "a cat");
  EXPECT_EQ(tok->decode({306, 9, 44}), "[DEC2] a cat");
}

TEST(LoadTokenizerTest, MalformedTokenizerConfigReportsLine) {
  test::TempDir dir;
  copy_gpt2(dir);
  write(dir.file("tokenizer_config.json"), "{\n  \"add_bos_token\": true,\n  \"bos_token\": ,\n}\n");
  EXPECT_THROW_WITH(load_tokenizer(dir.path()), ConfigError, "line 3");
}

TEST(LoadTokenizerTest, MistypedConfigValueNamesTheKey) {
  test::TempDir dir;
  copy_gpt2(dir);
  write(dir.file("tokenizer_config.json"), R"({"add_bos_token": "yes"})");
  EXPECT_THROW_WITH(load_tokenizer(dir.path()), ConfigError, "add_bos_token");
}

TEST(LoadTokenizerTest, TokenizerJsonByteLevelBpeMatchesVocabAndMerges) {
  test::TempDir dir;
  json vocab = json::parse(slurp(gpt2_dir() + "/vocab.json"));
  json merges = json::array();
  std::ifstream in(gpt2_dir() + "/merges.txt");
  std::string line;
  std::getline(in, line);  // #version
  while (std::getline(in, line))
    if (!line.empty()) merges.push_back(line);
  json tj = {{"version", "1.0"},
             {"added_tokens", json::array({{{"id", 343}, {"content", "<|endoftext|>"}, {"single_word", false},
                                            {"lstrip", false}, {"rstrip", false}, {"normalized", true},
                                            {"special", true}}})},
             {"normalizer", nullptr},
             {"pre_tokenizer", {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}}},
             {"post_processor", {{"type", "ByteLevel"}}},
             {"model", {{"type", "BPE"}, {"dropout", nullptr}, {"unk_token", nullptr},
                        {"continuing_subword_prefix", ""}, {"end_of_word_suffix", ""}, {"vocab", vocab},
                        {"merges", merges}}}};
  write(dir.file("tokenizer.json"), tj.dump());
  auto fast = load_tokenizer(dir.path());
  auto slow = load_bpe_tokenizer(gpt2_dir() + "/vocab.json", gpt2_dir() + "/merges.txt");
  EXPECT_EQ(fast->kind(), "bpe");
  for (const std::string text : {"hello world", "The Quick Brown Fox.", "caf\xC3\xA9<|endoftext|>x", "  a\n\n b"}) {
    EXPECT_EQ(fast->tokenize(text), slow->tokenize(text)) << text;
    EXPECT_EQ(fast->encode(text), slow->encode(text)) << text;
  }
}

TEST(LoadTokenizerTest, TokenizerJsonWordPieceMatchesVocabTxt) {
  test::TempDir dir;
  json vocab = json::object();
  std::ifstream in(bert_dir() + "/vocab.txt");
  std::string line;
  for (int64_t id = 0; std::getline(in, line); ++id) vocab[line] = id;
  json tj = {{"normalizer", {{"type", "BertNormalizer"}, {"clean_text", true}, {"handle_chinese_chars", true},
                             {"strip_accents", nullptr}, {"lowercase", true}}},
             {"pre_tokenizer", {{"type", "BertPreTokenizer"}}},
             {"model", {{"type", "WordPiece"}, {"unk_token", "[UNK]"}, {"continuing_subword_prefix", "##"},
                        {"max_input_chars_per_word", 100}, {"vocab", vocab}}}};
  write(dir.file("tokenizer.json"), tj.dump());
  auto fast = load_tokenizer(dir.path());
  auto slow = load_wordpiece_tokenizer(bert_dir() + "/vocab.txt");
  EXPECT_EQ(fast->kind(), "wordpiece");
  for (const std::string text : {"Hello World!", "Cr\xC3\xA8me Br\xC3\xBBl\xC3\xA9" "e", "[CLS] hello [SEP]"}) {
    EXPECT_EQ(fast->encode(text), slow->encode(text)) << text;
  }
}

TEST(LoadTokenizerTest, TokenizerJsonWithUnsupportedModelSaysWhatIsSupported) {
  test::TempDir dir;
  write(dir.file("tokenizer.json"), R"({"model": {"type": "Unigram", "vocab": []}})");
  EXPECT_THROW_WITH(load_tokenizer(dir.path()), ConfigError, "Unigram");
}

// --- added / special tokens -----------------------------------------------------

TEST(TokenizerAddedTokensTest, AddTokensAppendsNewIdsAndSplitsThemOut) {
  auto tok = load_bpe_tokenizer(gpt2_dir() + "/vocab.json", gpt2_dir() + "/merges.txt");
  EXPECT_EQ(tok->add_tokens({AddedToken{"<new>", false, false, false, false, false}, AddedToken{"hello"}}), 1);
  EXPECT_EQ(tok->token_to_id("<new>"), 344);
  EXPECT_EQ(tok->token_to_id("hello"), 283);  // already in the vocabulary: keeps its id
  EXPECT_EQ(tok->tokenize("x<new>y"), (std::vector<std::string>{"x", "<new>", "y"}));
}

TEST(TokenizerAddedTokensTest, LstripAndRstripEatNeighbouringSpaces) {
  auto tok = load_bpe_tokenizer(gpt2_dir() + "/vocab.json", gpt2_dir() + "/merges.txt");
  tok->add_tokens({AddedToken{"<m>", true, true, true, false, false}});
  EXPECT_EQ(tok->tokenize("a  <m>  b"), (std::vector<std::string>{"a", "<m>", "b"}));
}

TEST(TokenizerAddedTokensTest, LongestAddedTokenWinsAtTheSamePosition) {
  auto tok = load_bpe_tokenizer(gpt2_dir() + "/vocab.json", gpt2_dir() + "/merges.txt");
  tok->add_tokens({AddedToken{"<a>"}, AddedToken{"<a>b"}});
  EXPECT_EQ(tok->tokenize("x<a>b<a>"), (std::vector<std::string>{"x", "<a>b", "<a>"}));
}

TEST(TokenizerAddedTokensTest, SetSpecialTokenRejectsUnknownRole) {
  auto tok = load_bpe_tokenizer(gpt2_dir() + "/vocab.json", gpt2_dir() + "/merges.txt");
  EXPECT_THROW_WITH(tok->set_special_token("start_token", "<s>"), ConfigError, "bos_token");
}

}  // namespace
}  // namespace blip2
