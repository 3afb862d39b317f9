// T5 SentencePiece (blip2/data/sentencepiece_tokenizer.{h,cpp}) on a unigram
// model trained here with SentencePieceTrainer, with T5's special ids
// (pad 0, eos 1, unk 2, no bos).
#include "blip2/data/sentencepiece_tokenizer.h"

#include <dlfcn.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "blip2/data/spm_runtime.h"
#include "blip2/util/error.h"
#include "test_util.h"

namespace blip2 {
namespace {

namespace fs = std::filesystem;
using Tokens = std::vector<std::string>;
const std::string kU = "\xE2\x96\x81";  // "▁"

std::vector<std::string> corpus() {
  const std::vector<std::string> subjects = {"the cat", "a dog", "two birds", "the old man", "a small child"};
  const std::vector<std::string> verbs = {"sits on", "looks at", "runs past", "jumps over", "sleeps near"};
  const std::vector<std::string> objects = {"the table", "a red car", "the green tree", "a wooden bench",
                                            "the blue sky"};
  std::vector<std::string> lines;
  for (const auto& s : subjects)
    for (const auto& v : verbs)
      for (const auto& o : objects) lines.push_back(s + " " + v + " " + o + ".");
  return lines;
}

class SentencePieceTokenizerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new test::TempDir();
    {
      std::ofstream out(dir_->file("corpus.txt"));
      for (const auto& line : corpus()) out << line << "\n";
    }
    SpmModel::train("--input=" + dir_->file("corpus.txt") + " --model_prefix=" + dir_->file("spiece") +
                    " --vocab_size=80 --model_type=unigram --character_coverage=1.0 --hard_vocab_limit=false"
                    " --pad_id=0 --eos_id=1 --unk_id=2 --bos_id=-1");
  }
  static void TearDownTestSuite() {
    delete dir_;
    dir_ = nullptr;
  }
  static std::string model() { return dir_->file("spiece.model"); }
  static std::unique_ptr<Tokenizer> t5(TokenizerOptions options = {}) {
    return load_sentencepiece_tokenizer(model(), options);
  }
  static test::TempDir* dir_;
};

test::TempDir* SentencePieceTokenizerTest::dir_ = nullptr;

TEST_F(SentencePieceTokenizerTest, SpecialIdsFollowT5) {
  auto tok = t5();
  EXPECT_EQ(tok->kind(), "sentencepiece");
  EXPECT_EQ(tok->pad_id(), 0);
  EXPECT_EQ(tok->eos_id(), 1);
  EXPECT_EQ(tok->unk_id(), 2);
  EXPECT_EQ(tok->bos_id(), std::nullopt);
  EXPECT_EQ(tok->id_to_token(1), "</s>");
}

TEST_F(SentencePieceTokenizerTest, EncodeAppendsEosOnce) {
  auto tok = t5();
  const auto plain = tok->encode("the cat sits on the table.", false);
  auto with_eos = plain;
  with_eos.push_back(1);
  EXPECT_EQ(tok->encode("the cat sits on the table."), with_eos);
  // HF does not add a second </s> when the text already ends with one.
  EXPECT_EQ(tok->encode("the cat sits on the table.</s>"), with_eos);
  EXPECT_EQ(tok->encode(""), (std::vector<int64_t>{1}));
}

TEST_F(SentencePieceTokenizerTest, DecodeRoundTripsTrainingText) {
  auto tok = t5();
  for (const auto& line : corpus()) {
    EXPECT_EQ(tok->decode(tok->encode(line), true), line);
  }
  EXPECT_EQ(tok->tokenize("the cat").front().rfind(kU, 0), 0u) << "pieces start with the dummy prefix";
}

TEST_F(SentencePieceTokenizerTest, DecodeKeepsSpecialTokensUnlessSkipped) {
  auto tok = t5();
  const auto ids = tok->encode("a dog runs past the blue sky.");
  EXPECT_EQ(tok->decode(ids), "a dog runs past the blue sky.</s>");
  EXPECT_EQ(tok->decode(ids, true), "a dog runs past the blue sky.");
  EXPECT_EQ(tok->decode({0, 0}, true), "");
}

TEST_F(SentencePieceTokenizerTest, ExtraIdsAreSentinelTokensAfterTheVocabulary) {
  auto tok = t5();
  const int64_t n = tok->vocab_size();
  EXPECT_EQ(tok->token_to_id("<extra_id_0>"), n + 99);
  EXPECT_EQ(tok->token_to_id("<extra_id_99>"), n);
  EXPECT_EQ(tok->size(), n + 100);
  // Sentinels eat the spaces around them (lstrip / rstrip), as in T5Tokenizer.
  Tokens want = tok->tokenize("the cat");
  want.push_back("<extra_id_0>");
  for (const auto& t : tok->tokenize("the table")) want.push_back(t);
  EXPECT_EQ(tok->tokenize("the cat <extra_id_0> the table"), want);
  const auto ids = tok->encode("the cat <extra_id_0> the table", false);
  EXPECT_EQ(tok->decode(ids, true), "the cat the table");
  EXPECT_EQ(tok->decode(ids), "the cat <extra_id_0> the table");
  TokenizerOptions options;
  options.extra_ids = 0;
  EXPECT_EQ(t5(options)->token_to_id("<extra_id_0>"), std::nullopt);
}

TEST_F(SentencePieceTokenizerTest, NonLegacyModeMatchesLegacyOnPlainText) {
  TokenizerOptions options;
  options.legacy = false;
  auto modern = t5(options);
  auto legacy = t5();
  for (const std::string text : {"the cat sits on the table.", "a small child looks at a red car."}) {
    EXPECT_EQ(modern->tokenize(text), legacy->tokenize(text)) << text;
    EXPECT_EQ(modern->encode(text), legacy->encode(text)) << text;
  }
  // After a special token legacy mode re-adds the dummy prefix; the new mode does not.
  const Tokens after_legacy = legacy->tokenize("</s>the"), after_modern = modern->tokenize("</s>the");
  ASSERT_GE(after_legacy.size(), 2u);
  ASSERT_GE(after_modern.size(), 2u);
  EXPECT_EQ(after_legacy[0], "</s>");
  EXPECT_EQ(after_modern[0], "</s>");
  EXPECT_EQ(after_legacy[1].rfind(kU, 0), 0u);
  EXPECT_NE(after_modern[1].rfind(kU, 0), 0u);
}

TEST_F(SentencePieceTokenizerTest, DecodeRejectsIdsOutOfRange) {
  auto tok = t5();
  EXPECT_THROW_WITH(tok->decode({5, tok->size()}), InputError, "out of range");
  EXPECT_THROW_WITH(tok->decode({-1}), InputError, "out of range");
}

TEST_F(SentencePieceTokenizerTest, InvalidUtf8InputThrowsWithTheByteOffset) {
  auto tok = t5();
  EXPECT_THROW_WITH(tok->encode("the \xE2\x96"), InputError, "byte offset 4");
}

TEST_F(SentencePieceTokenizerTest, MissingOrCorruptModelIsAConfigError) {
  EXPECT_THROW_WITH(load_sentencepiece_tokenizer("/nonexistent/spiece.model"), ConfigError,
                    "/nonexistent/spiece.model");
  test::TempDir dir;
  {
    std::ofstream out(dir.file("spiece.model"), std::ios::binary);
    out << "this is not a protobuf";
  }
  EXPECT_THROW_WITH(load_sentencepiece_tokenizer(dir.file("spiece.model")), ConfigError, "not a SentencePiece model");
}

TEST_F(SentencePieceTokenizerTest, LoadTokenizerDetectsSpieceModelAndConfig) {
  test::TempDir dir;
  fs::copy_file(model(), dir.file("spiece.model"));
  {
    std::ofstream out(dir.file("tokenizer_config.json"));
    out << R"({"tokenizer_class": "T5Tokenizer", "extra_ids": 10, "clean_up_tokenization_spaces": true})";
  }
  auto tok = load_tokenizer(dir.path());
  EXPECT_EQ(tok->kind(), "sentencepiece");
  EXPECT_EQ(tok->size(), tok->vocab_size() + 10);
  EXPECT_EQ(tok->token_to_id("<extra_id_9>"), tok->vocab_size());
}

}  // namespace
}  // namespace blip2
