// BERT WordPiece (blip2/data/wordpiece_tokenizer.{h,cpp}).
#include "blip2/data/wordpiece_tokenizer.h"

#include <fstream>
#include <string>
#include <vector>

#include "blip2/util/error.h"
#include "test_util.h"

namespace blip2 {
namespace {

using Tokens = std::vector<std::string>;

std::string vocab_path() { return test::golden("tokenizers/bert/vocab.txt"); }

std::unique_ptr<WordPieceTokenizer> golden_bert(bool lower = true) {
  TokenizerOptions options;
  options.do_lower_case = lower;
  return WordPieceTokenizer::from_file(vocab_path(), options);
}

// A hand-made vocabulary: (token, id) in line order.
std::unique_ptr<WordPieceTokenizer> tiny(TokenizerOptions options = {}) {
  const std::vector<std::string> lines = {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "un",   "##aff",
                                          "##able", "run",  "##ning", "a",     "cat",   "##s",  ",",
                                          "!",      "x",    "##x",    "中",    "文"};
  std::vector<std::pair<std::string, int64_t>> vocab;
  for (size_t i = 0; i < lines.size(); ++i) vocab.emplace_back(lines[i], static_cast<int64_t>(i));
  return std::make_unique<WordPieceTokenizer>(vocab, options);
}

void write(const std::string& path, const std::string& content) {
  std::ofstream out(path, std::ios::binary);
  out << content;
}

TEST(WordPieceTokenizerTest, GreedyLongestMatchUsesContinuationPieces) {
  auto tok = tiny();
  EXPECT_EQ(tok->tokenize("unaffable running cats"),
            (Tokens{"un", "##aff", "##able", "run", "##ning", "cat", "##s"}));
  // No split of "dog" exists: the whole word is [UNK], not a partial match.
  EXPECT_EQ(tok->tokenize("a dog, cat"), (Tokens{"a", "[UNK]", ",", "cat"}));
}

TEST(WordPieceTokenizerTest, WordsLongerThanMaxInputCharsBecomeUnk) {
  auto tok = tiny();
  EXPECT_EQ(tok->tokenize(std::string(100, 'x')).size(), 100u);  // x ##x ##x ...
  EXPECT_EQ(tok->tokenize(std::string(101, 'x')), (Tokens{"[UNK]"}));
  TokenizerOptions options;
  options.max_input_chars_per_word = 3;
  EXPECT_EQ(tiny(options)->tokenize("xxxx xxx"), (Tokens{"[UNK]", "x", "##x", "##x"}));
}

TEST(WordPieceTokenizerTest, BasicTokenizerSplitsPunctuationAndCjk) {
  auto tok = tiny();
  EXPECT_EQ(tok->basic_tokenize("Hello, world!! $5 a-b"),
            (Tokens{"hello", ",", "world", "!", "!", "$", "5", "a", "-", "b"}));
  EXPECT_EQ(tok->basic_tokenize("x中文y"), (Tokens{"x", "中", "文", "y"}));
  // Hangul is not a "Chinese character" for BERT: the word stays whole (cased:
  // uncased would also NFD-decompose it into jamo, as Python does).
  TokenizerOptions cased;
  cased.do_lower_case = false;
  EXPECT_EQ(tiny(cased)->basic_tokenize("\xED\x95\x9C\xEA\xB5\xAD"), (Tokens{"\xED\x95\x9C\xEA\xB5\xAD"}));
  EXPECT_EQ(tok->basic_tokenize("\xED\x95\x9C"), (Tokens{"\xE1\x84\x92\xE1\x85\xA1\xE1\x86\xAB"}));
}

TEST(WordPieceTokenizerTest, LowerCasingStripsAccentsButCasedKeepsThem) {
  auto uncased = tiny();
  EXPECT_EQ(uncased->basic_tokenize("Cr\xC3\xA8me BR\xC3\x9BL\xC3\x89" "E e\xCC\x81 \xC4\xB0stanbul"),
            (Tokens{"creme", "brulee", "e", "istanbul"}));
  TokenizerOptions options;
  options.do_lower_case = false;
  auto cased = tiny(options);
  // NFC composes "e" + U+0301 into "é"; case and accents are kept.
  EXPECT_EQ(cased->basic_tokenize("Cr\xC3\xA8me e\xCC\x81"), (Tokens{"Cr\xC3\xA8me", "\xC3\xA9"}));
  options.strip_accents = true;
  EXPECT_EQ(tiny(options)->basic_tokenize("Cr\xC3\xA8me"), (Tokens{"Creme"}));
}

TEST(WordPieceTokenizerTest, ControlCharactersAreDroppedAndWhitespaceNormalised) {
  auto tok = tiny();
  EXPECT_EQ(tok->basic_tokenize(std::string("ab\0c\x07" "d\xC2\xAD" "e\xEF\xBF\xBD" "f", 13)), (Tokens{"abcdef"}));
  EXPECT_EQ(tok->basic_tokenize("a\tb\r\nc\xC2\xA0" "d\xE3\x80\x80" "e"), (Tokens{"a", "b", "c", "d", "e"}));
}

TEST(WordPieceTokenizerTest, EncodeAddsClsAndSep) {
  auto tok = tiny();
  EXPECT_EQ(tok->encode("a cat"), (std::vector<int64_t>{2, 10, 11, 3}));
  EXPECT_EQ(tok->encode("a cat", false), (std::vector<int64_t>{10, 11}));
  EXPECT_EQ(tok->encode(""), (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(tok->cls_id(), 2);
  EXPECT_EQ(tok->sep_id(), 3);
  EXPECT_EQ(tok->pad_id(), 0);
  EXPECT_EQ(tok->unk_id(), 1);
  EXPECT_EQ(tok->mask_id(), 4);
}

TEST(WordPieceTokenizerTest, SpecialTokensInTextAreKeptWhole) {
  auto tok = tiny();
  EXPECT_EQ(tok->tokenize("[CLS] a [MASK]cat[SEP]"), (Tokens{"[CLS]", "a", "[MASK]", "cat", "[SEP]"}));
  // "[cls]" is ordinary text: split on punctuation ("[" and "]" are not in this vocabulary).
  EXPECT_EQ(tok->tokenize("[cls]"), (Tokens{"[UNK]", "[UNK]", "[UNK]"}));
  EXPECT_EQ(golden_bert()->tokenize("[CLS] [cls]"), (Tokens{"[CLS]", "[", "c", "##l", "##s", "]"}));
}

TEST(WordPieceTokenizerTest, DecodeJoinsContinuationsAndCleansUpSpaces) {
  auto tok = tiny();
  const auto ids = tok->encode("unaffable cats, running!");
  EXPECT_EQ(tok->decode(ids), "[CLS] unaffable cats, running! [SEP]");
  EXPECT_EQ(tok->decode(ids, true), "unaffable cats, running!");
  TokenizerOptions options;
  options.clean_up_tokenization_spaces = false;
  EXPECT_EQ(tiny(options)->decode(ids, true), "unaffable cats , running !");
}

TEST(WordPieceTokenizerTest, DecIsAddedAsTheQFormerBosToken) {
  // LAVIS: tokenizer.add_special_tokens({"bos_token": "[DEC]"}) on bert-base-uncased.
  auto tok = tiny();
  tok->set_special_token("bos_token", "[DEC]");
  EXPECT_EQ(tok->bos_id(), 19);
  EXPECT_EQ(tok->size(), 20);
  EXPECT_EQ(tok->vocab_size(), 19);
  EXPECT_EQ(tok->tokenize("[DEC] a cat"), (Tokens{"[DEC]", "a", "cat"}));
  EXPECT_EQ(tok->encode("[DEC] a cat"), (std::vector<int64_t>{2, 19, 10, 11, 3}));
  EXPECT_EQ(tok->decode({19, 10, 11}, true), "a cat");
  EXPECT_EQ(tok->decode({19, 10, 11}), "[DEC] a cat");
}

TEST(WordPieceTokenizerTest, GoldenVocabularyDecEntryIsAnOrdinaryToken) {
  auto tok = golden_bert();
  EXPECT_EQ(tok->token_to_id("[DEC]"), 7);
  EXPECT_EQ(tok->vocab_size(), 306);
  EXPECT_EQ(tok->id_to_token(7), "[DEC]");
}

TEST(WordPieceTokenizerTest, DecodeRejectsIdsOutOfRange) {
  auto tok = golden_bert();
  EXPECT_THROW_WITH(tok->decode({4, 306}), InputError, "306");
  EXPECT_THROW_WITH(tok->decode({-5}), InputError, "out of range");
}

TEST(WordPieceTokenizerTest, InvalidUtf8InputThrowsWithTheByteOffset) {
  auto tok = golden_bert();
  EXPECT_THROW_WITH(tok->encode("hello \xC3("), InputError, "byte offset 7");
}

TEST(WordPieceTokenizerTest, MissingVocabFileNamesThePath) {
  EXPECT_THROW_WITH(load_wordpiece_tokenizer("/nonexistent/bert/vocab.txt"), ConfigError,
                    "/nonexistent/bert/vocab.txt");
}

TEST(WordPieceTokenizerTest, VocabWithInvalidUtf8ReportsTheLine) {
  test::TempDir dir;
  write(dir.file("vocab.txt"), "[PAD]\n[UNK]\nok\nbad\xFF\n");
  EXPECT_THROW_WITH(load_wordpiece_tokenizer(dir.file("vocab.txt")), ConfigError, "line 4");
  write(dir.file("empty.txt"), "");
  EXPECT_THROW_WITH(load_wordpiece_tokenizer(dir.file("empty.txt")), ConfigError, "empty");
}

TEST(WordPieceTokenizerTest, CrlfVocabularyKeepsLineIds) {
  test::TempDir dir;
  write(dir.file("vocab.txt"), "[PAD]\r\n[UNK]\r\n[CLS]\r\n[SEP]\r\nhello\r\n");
  auto tok = load_wordpiece_tokenizer(dir.file("vocab.txt"));
  EXPECT_EQ(tok->encode("Hello"), (std::vector<int64_t>{2, 4, 3}));
}

TEST(WordPieceTokenizerTest, DecodeRoundTripsLowerCasedAsciiText) {
  auto tok = golden_bert();
  for (const std::string text : {"a photo of a cat", "two cats laying on a pink blanket",
                                 "the quick brown fox jumps over the lazy dog"}) {
    EXPECT_EQ(tok->decode(tok->encode(text), true), text);
  }
}

}  // namespace
}  // namespace blip2
