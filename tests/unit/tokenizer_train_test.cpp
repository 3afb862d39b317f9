// Tokenizers trained from a corpus load with load_tokenizer and encode the
// corpus compactly and losslessly.
#include "blip2/data/tokenizer_train.h"

#include "blip2/data/tokenizer.h"
#include "blip2/util/error.h"
#include "test_util.h"

namespace blip2 {
namespace {

std::vector<std::string> corpus() {
  std::vector<std::string> out;
  for (const char* size : {"small", "large"})
    for (const char* color : {"red", "green", "blue", "yellow"})
      for (const char* shape : {"circle", "square", "star"}) {
        out.push_back(std::string("a ") + size + " " + color + " " + shape);
        out.push_back(std::string("what color is the ") + shape + "?");
      }
  out.push_back("a small red circle, a large blue star and a small green square");
  return out;
}

TEST(TokenizerTrainTest, BpeLearnsWholeWordsAndRoundTrips) {
  test::TempDir dir;
  auto r = train_tokenizer(corpus(), dir.path(), {"bpe", 200});
  EXPECT_GT(r.merges, 10);
  auto tok = load_tokenizer(dir.path());
  EXPECT_EQ(tok->kind(), "bpe");
  // Frequent words become single tokens ("Ġcircle" = " circle").
  auto ids = tok->encode("a small red circle", false);
  EXPECT_LE(ids.size(), 5u);
  for (const auto& t : corpus()) EXPECT_EQ(tok->decode(tok->encode(t, false)), t) << t;
  // The newline is id 4 (usable as OPT's end of text).
  EXPECT_EQ(tok->encode("a\n", false).back(), 4);
  // OPT conventions: BOS "</s>" (id 2) first with special tokens.
  EXPECT_EQ(tok->encode("a red star", true).front(), 2);
  // Text outside the corpus is still encodable (byte-level).
  EXPECT_EQ(tok->decode(tok->encode("Zebra #9", false)), "Zebra #9");
}

TEST(TokenizerTrainTest, WordPieceHasEveryWordAndDec) {
  test::TempDir dir;
  train_tokenizer(corpus(), dir.path(), {"wordpiece", 0});
  auto tok = load_tokenizer(dir.path());
  EXPECT_EQ(tok->kind(), "wordpiece");
  EXPECT_TRUE(tok->token_to_id("[DEC]").has_value());
  auto ids = tok->encode("What color is the star?", true);  // [CLS] what color is the star ? [SEP]
  EXPECT_EQ(ids.size(), 8u);
  EXPECT_EQ(tok->decode(ids, true), "what color is the star?");
  // An unseen word decomposes into characters instead of [UNK].
  auto pieces = tok->tokenize("purple");
  EXPECT_GT(pieces.size(), 1u);
  EXPECT_EQ(std::count(pieces.begin(), pieces.end(), "[UNK]"), 0);
}

TEST(TokenizerTrainTest, SentencePieceFollowsT5Conventions) {
  test::TempDir dir;
  std::vector<std::string> texts;
  for (int i = 0; i < 10; ++i)
    for (const auto& t : corpus()) texts.push_back(t);
  auto r = train_tokenizer(texts, dir.path(), {"sentencepiece", 60});
  EXPECT_GT(r.vocab_size, 20);
  auto tok = load_tokenizer(dir.path());
  EXPECT_EQ(tok->kind(), "sentencepiece");
  auto ids = tok->encode("a small red circle", true);
  EXPECT_EQ(ids.back(), 1);  // </s>
  EXPECT_EQ(tok->decode(ids, true), "a small red circle");
}

TEST(TokenizerTrainTest, SentencePieceBpeLearnsWholeWords) {
  test::TempDir dir;
  std::vector<std::string> texts;
  for (int i = 0; i < 10; ++i)
    for (const auto& t : corpus()) texts.push_back(t);
  TokenizerTrainOptions o{"sentencepiece", 200};
  o.spm_model = SentencePieceModel::kBpe;
  train_tokenizer(texts, dir.path(), o);
  auto tok = load_tokenizer(dir.path());
  EXPECT_EQ(tok->kind(), "sentencepiece");
  // Every word of the question is one piece: what color is the star ?
  EXPECT_EQ(tok->tokenize("what color is the star?").size(), 6u);
  auto ids = tok->encode("a small red circle", true);
  EXPECT_EQ(ids.size(), 5u);  // four words and </s>
  EXPECT_EQ(ids.back(), 1);
  for (const auto& t : corpus()) EXPECT_EQ(tok->decode(tok->encode(t, true), true), t) << t;
}

TEST(TokenizerTrainTest, BadRequestsAreNamed) {
  test::TempDir dir;
  EXPECT_THROW_WITH(train_tokenizer({"  ", ""}, dir.path(), {"bpe", 100}), InputError, "corpus is empty");
  EXPECT_THROW_WITH(train_tokenizer(corpus(), dir.path(), {"unigram", 100}), ConfigError, "'unigram' is not one of");
  EXPECT_THROW_WITH(train_tokenizer(corpus(), dir.path(), {"bpe", 3}), ConfigError, "too small");
  EXPECT_THROW_WITH(parse_sentencepiece_model("word", "--spm-model"), ConfigError,
                    "--spm-model 'word' is not one of unigram, bpe");
  EXPECT_EQ(parse_sentencepiece_model("bpe", "--spm-model"), SentencePieceModel::kBpe);
}

}  // namespace
}  // namespace blip2
