// GPT-2 / OPT byte-level BPE (blip2/data/bpe_tokenizer.{h,cpp}).
#include "blip2/data/bpe_tokenizer.h"

#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "blip2/util/error.h"
#include "test_util.h"

namespace blip2 {
namespace {

using nlohmann::json;

std::string vocab_path() { return test::golden("tokenizers/gpt2/vocab.json"); }
std::string merges_path() { return test::golden("tokenizers/gpt2/merges.txt"); }

std::unique_ptr<Tokenizer> golden_bpe(TokenizerOptions options = {}) {
  return load_bpe_tokenizer(vocab_path(), merges_path(), options);
}

void write(const std::string& path, const std::string& content) {
  std::ofstream out(path, std::ios::binary);
  out << content;
}

const std::vector<std::string> kVariedText = {
    "",
    " ",
    "hello world",
    "  leading, trailing and   multiple spaces  ",
    "tabs\tand\nnewlines\r\nmixed \t \n end",
    "don't can't I'm you're we've they'll he'd 'S",
    "na\xC3\xAFve caf\xC3\xA9 r\xC3\xA9sum\xC3\xA9 Stra\xC3\x9F" "e \xC4\xB0stanbul",  // naïve café résumé Straße İstanbul
    "\xCE\xA9mega \xD0\x9F\xD1\x80\xD0\xB8\xD0\xB2\xD0\xB5\xD1\x82",                      // Ωmega Привет
    "\xE6\x97\xA5\xE6\x9C\xAC\xE8\xAA\x9E \xED\x95\x9C\xEA\xB5\xAD\xEC\x96\xB4",         // 日本語 한국어
    "emoji \xF0\x9F\x98\x80\xF0\x9F\x91\x8D\xF0\x9F\x8F\xBD ok",                            // 😀👍🏽
    "zero\xE2\x80\x8Bwidth non\xC2\xA0" "breaking\xE3\x80\x80ideographic",
    "combining e\xCC\x81 \xEF\xAC\x81 \xEF\xBC\xA6\xEF\xBC\xB5",                           // é ﬁ ＦＵ
    std::string("control\0chars\x07here\x1b", 20),
    "$100,000.00 (approx.) 50% off #1 @home ~tilde `tick` ^caret",
    "text<|endoftext|>more text",
};

TEST(BpeTokenizerTest, DecodeRoundTripsEncode) {
  TokenizerOptions options;
  options.clean_up_tokenization_spaces = false;  // HF's clean-up rewrites " ." etc.
  auto tok = golden_bpe(options);
  for (const auto& text : kVariedText) {
    EXPECT_EQ(tok->decode(tok->encode(text)), text) << json(text).dump();
  }
}

TEST(BpeTokenizerTest, PretokenizeFollowsTheGpt2Pattern) {
  BpeTokenizer tok(std::unordered_map<std::string, int64_t>{{"a", 0}}, {}, {});
  EXPECT_EQ(tok.pretokenize("I'm here  now\n"),
            (std::vector<std::string>{"I", "'m", " here", " ", " now", "\n"}));
  EXPECT_EQ(tok.pretokenize("it's 3.14, x--y!"),
            (std::vector<std::string>{"it", "'s", " 3", ".", "14", ",", " x", "--", "y", "!"}));
  // \s is Unicode White_Space (NBSP, ideographic space); U+200B is not.
  EXPECT_EQ(tok.pretokenize("a\xC2\xA0\xC2\xA0" "b"), (std::vector<std::string>{"a", "\xC2\xA0", "\xC2\xA0", "b"}));
  EXPECT_EQ(tok.pretokenize("a\xE2\x80\x8B" "b"), (std::vector<std::string>{"a", "\xE2\x80\x8B", "b"}));
  EXPECT_EQ(tok.pretokenize("caf\xC3\xA9 \xE2\x85\xA7"), (std::vector<std::string>{"caf\xC3\xA9", " \xE2\x85\xA7"}));
}

TEST(BpeTokenizerTest, MergesApplyLowestRankFirstToEveryOccurrence) {
  // Ranks: "a b" < "b c" < "ab c" < "ab ab": "abcab" -> a b c a b -> ab c ab -> abc ab.
  std::unordered_map<std::string, int64_t> vocab{{"a", 0}, {"b", 1}, {"c", 2}, {"ab", 3}, {"bc", 4},
                                                 {"abc", 5}, {"abab", 6}, {"<|endoftext|>", 7}};
  BpeTokenizer tok(vocab, {{"a", "b"}, {"b", "c"}, {"ab", "c"}, {"ab", "ab"}}, {});
  EXPECT_EQ(tok.tokenize("abcab"), (std::vector<std::string>{"abc", "ab"}));
  EXPECT_EQ(tok.tokenize("abab"), (std::vector<std::string>{"abab"}));
  EXPECT_EQ(tok.tokenize("bc"), (std::vector<std::string>{"bc"}));
  EXPECT_EQ(tok.encode("abcab"), (std::vector<int64_t>{5, 3}));
}

TEST(BpeTokenizerTest, UsesTheCheckpointsOwnIdsNotGpt2s) {
  // OPT re-numbers GPT-2's vocabulary: same merges, different ids.
  std::ifstream in(vocab_path());
  const json original = json::parse(in);
  std::unordered_map<std::string, int64_t> shifted;
  for (const auto& [token, id] : original.items()) shifted[token] = id.get<int64_t>() + 1000;
  std::vector<std::pair<std::string, std::string>> merges;
  std::ifstream m(merges_path());
  std::string a, b, header;
  std::getline(m, header);
  while (m >> a >> b) merges.emplace_back(a, b);
  TokenizerOptions options;
  options.add_bos_token = true;
  BpeTokenizer tok(shifted, merges, options);
  auto reference = golden_bpe();
  const std::string text = "a photo of a cat";
  EXPECT_EQ(tok.tokenize(text), reference->tokenize(text));
  std::vector<int64_t> want{343 + 1000};
  for (int64_t id : reference->encode(text)) want.push_back(id + 1000);
  EXPECT_EQ(tok.encode(text), want);
  EXPECT_EQ(tok.decode(want, true), text);
}

TEST(BpeTokenizerTest, EndOfTextInsideTextIsOneSpecialToken) {
  auto tok = golden_bpe();
  EXPECT_EQ(tok->tokenize("a<|endoftext|>b"), (std::vector<std::string>{"a", "<|endoftext|>", "b"}));
  EXPECT_EQ(tok->encode("a<|endoftext|>b"), (std::vector<int64_t>{64, 343, 65}));
  EXPECT_EQ(tok->eos_id(), 343);
  EXPECT_EQ(tok->bos_id(), 343);
  EXPECT_EQ(tok->unk_id(), 343);
  EXPECT_EQ(tok->pad_id(), std::nullopt);
}

TEST(BpeTokenizerTest, SkipSpecialTokensDropsThemFromDecode) {
  auto tok = golden_bpe();
  EXPECT_EQ(tok->decode({64, 343, 65}), "a<|endoftext|>b");
  EXPECT_EQ(tok->decode({64, 343, 65}, true), "ab");
}

TEST(BpeTokenizerTest, AddBosTokenPrependsBosOnlyWithSpecialTokens) {
  TokenizerOptions options;
  options.add_bos_token = true;
  auto tok = golden_bpe(options);
  EXPECT_EQ(tok->encode("hello"), (std::vector<int64_t>{343, 283}));
  EXPECT_EQ(tok->encode("hello", false), (std::vector<int64_t>{283}));
  EXPECT_EQ(tok->encode(""), (std::vector<int64_t>{343}));
}

TEST(BpeTokenizerTest, AddPrefixSpaceTreatsTheFirstWordLikeTheOthers) {
  TokenizerOptions options;
  options.add_prefix_space = true;
  auto tok = golden_bpe(options);
  EXPECT_EQ(tok->tokenize("cat"), (std::vector<std::string>{"\xC4\xA0" "cat"}));  // "Ġcat"
}

TEST(BpeTokenizerTest, DecodeReplacesInvalidUtf8LikePython) {
  auto tok = golden_bpe();
  // "â" stands for byte 0xE2 alone: an incomplete sequence, one U+FFFD.
  const auto id = tok->token_to_id("\xC3\xA2");
  ASSERT_TRUE(id.has_value());
  EXPECT_EQ(tok->decode({*id}), "\xEF\xBF\xBD");
  EXPECT_EQ(tok->decode({64, *id, 65}), "a\xEF\xBF\xBD" "b");
}

TEST(BpeTokenizerTest, DecodeRejectsIdsOutOfRange) {
  auto tok = golden_bpe();
  EXPECT_THROW_WITH(tok->decode({64, 344}), InputError, "out of range");
  EXPECT_THROW_WITH(tok->decode({-1}), InputError, "-1");
  EXPECT_THROW_WITH(tok->id_to_token(100000), InputError, "100000");
}

TEST(BpeTokenizerTest, InvalidUtf8InputThrowsWithTheByteOffset) {
  auto tok = golden_bpe();
  EXPECT_THROW_WITH(tok->encode("ab\xFF"), InputError, "byte offset 2");
  EXPECT_THROW_WITH(tok->tokenize("caf\xC3"), InputError, "byte offset 3");
}

TEST(BpeTokenizerTest, MissingFilesNameThePath) {
  EXPECT_THROW_WITH(load_bpe_tokenizer("/nonexistent/vocab.json", merges_path()), ConfigError,
                    "/nonexistent/vocab.json");
  EXPECT_THROW_WITH(load_bpe_tokenizer(vocab_path(), "/nonexistent/merges.txt"), ConfigError,
                    "/nonexistent/merges.txt");
}

TEST(BpeTokenizerTest, MalformedVocabJsonReportsTheLine) {
  test::TempDir dir;
  write(dir.file("vocab.json"), "{\n  \"a\": 0,\n  \"b\": ,\n  \"c\": 2\n}\n");
  EXPECT_THROW_WITH(load_bpe_tokenizer(dir.file("vocab.json"), merges_path()), ConfigError, "line 3");
}

TEST(BpeTokenizerTest, NonIntegerIdInVocabJsonNamesTheEntry) {
  test::TempDir dir;
  write(dir.file("vocab.json"), R"({"a": 0, "bad": "1"})");
  EXPECT_THROW_WITH(load_bpe_tokenizer(dir.file("vocab.json"), merges_path()), ConfigError, "\"bad\"");
  write(dir.file("list.json"), R"(["a", "b"])");
  EXPECT_THROW_WITH(load_bpe_tokenizer(dir.file("list.json"), merges_path()), ConfigError, "object");
}

TEST(BpeTokenizerTest, MalformedMergesReportsTheLine) {
  test::TempDir dir;
  write(dir.file("merges.txt"), "#version: 0.2\nh e\n\nc d e\n");
  EXPECT_THROW_WITH(load_bpe_tokenizer(vocab_path(), dir.file("merges.txt")), ConfigError, "line 4");
}

TEST(BpeTokenizerTest, MergesWithCrlfAndNoTrailingNewlineLoad) {
  test::TempDir dir;
  write(dir.file("merges.txt"), "#version: 0.2\r\nh e\r\nl l\r\nhe ll");
  write(dir.file("vocab.json"), R"({"h": 0, "e": 1, "l": 2, "o": 3, "he": 4, "ll": 5, "hell": 6})");
  auto tok = load_bpe_tokenizer(dir.file("vocab.json"), dir.file("merges.txt"));
  EXPECT_EQ(tok->tokenize("hello"), (std::vector<std::string>{"hell", "o"}));
  // "<|endoftext|>" is missing from this vocabulary, so it is added after it.
  EXPECT_EQ(tok->eos_id(), 7);
}

TEST(BpeTokenizerTest, ConcurrentEncodeGivesTheSameIds) {
  auto tok = golden_bpe();
  std::vector<std::vector<int64_t>> want;
  for (const auto& t : kVariedText) want.push_back(tok->encode(t));
  std::vector<std::thread> threads;
  std::vector<int> mismatches(4, 0);
  for (int w = 0; w < 4; ++w) {
    threads.emplace_back([&, w] {
      for (int rep = 0; rep < 20; ++rep)
        for (size_t i = 0; i < kVariedText.size(); ++i) mismatches[w] += tok->encode(kVariedText[i]) != want[i];
    });
  }
  for (auto& t : threads) t.join();
  for (int m : mismatches) EXPECT_EQ(m, 0);
}

}  // namespace
}  // namespace blip2
