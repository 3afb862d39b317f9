// The server's incremental detokenizer (apps/server/text_stream): with the
// bundled OPT model's byte-level BPE, streaming token by token must give
// deltas that are valid UTF-8 and concatenate to the text of the whole
// sequence, stop strings included.
#include "apps/server/text_stream.h"

#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "blip2/data/tokenizer.h"
#include "e2e_util.h"

namespace blip2 {
namespace {

using server::final_text;
using server::TextStream;

const Tokenizer& opt_tokenizer() {
  static const auto tok = load_tokenizer(std::string(BLIP2_SOURCE_DIR) + "/models/shapes/opt");
  return *tok;
}

// Streams `text`'s tokens one at a time; returns the deltas.
std::vector<std::string> stream(const std::string& text, const std::vector<std::string>& stops, bool* stopped = nullptr) {
  const auto ids = opt_tokenizer().encode(text, false);
  TextStream s(opt_tokenizer(), stops);
  std::vector<std::string> deltas;
  for (auto id : ids) {
    deltas.push_back(s.push({id}));
    if (s.stopped()) break;
  }
  deltas.push_back(s.finish());
  if (stopped) *stopped = s.stopped();
  return deltas;
}

std::string join(const std::vector<std::string>& parts) {
  std::string out;
  for (const auto& p : parts) out += p;
  return out;
}

TEST(ServerTextStreamTest, DeltasConcatenateToTheWholeTextAndAreValidUtf8) {
  for (const std::string text : {"a red circle above a blue star", "  leading and trailing spaces  ",
                                 "caf\xc3\xa9 \xe2\x98\x83 snow \xf0\x9f\x98\x80 face", "it is n't , is it ?",
                                 "he 's here . they 're there", "", "\n\nnewlines\n"}) {
    SCOPED_TRACE(text);
    const auto ids = opt_tokenizer().encode(text, false);
    const std::string whole = final_text(opt_tokenizer().decode(ids, true), {});
    const auto deltas = stream(text, {});
    EXPECT_EQ(join(deltas), whole);
    int non_empty = 0;
    for (const auto& d : deltas) {
      EXPECT_NO_THROW(text::validate_utf8(d, "delta")) << d;
      non_empty += !d.empty();
    }
    if (whole.size() > 8) EXPECT_GT(non_empty, 2) << "the text should arrive in several pieces";
  }
}

TEST(ServerTextStreamTest, StopStringsCutTheTextAndEndTheStream) {
  bool stopped = false;
  const std::string text = "a red circle. a blue star";
  const auto deltas = stream(text, {". a", "zzz"}, &stopped);
  EXPECT_TRUE(stopped);
  EXPECT_EQ(join(deltas), "a red circle");
  bool whole_stopped = false;
  EXPECT_EQ(final_text(text, {". a"}, &whole_stopped), "a red circle");
  EXPECT_TRUE(whole_stopped);
  // A stop string that never completes holds nothing back at the end.
  EXPECT_EQ(join(stream("a red circle.", {". b"}, &stopped)), "a red circle.");
  EXPECT_FALSE(stopped);
  // The earliest of several stop strings wins.
  EXPECT_EQ(final_text("one two three", {"three", "two"}), "one ");
}

TEST(ServerTextStreamTest, AnIncompleteCharacterIsHeldBackUntilItsLastByte) {
  // The bundled vocabulary knows ASCII only: add the byte-level symbols of
  // the snowman's three bytes E2 98 83 ("\u00e2", "\u013a", "\u0125" in
  // GPT-2's byte-to-unicode table) to the test tokenizer, one token each.
  test::TempDir dir;
  test::write_opt_tokenizer(dir.path());
  nlohmann::json vocab;
  std::ifstream(dir.file("vocab.json")) >> vocab;
  for (const char* sym : {"\xc3\xa2", "\xc4\xba", "\xc4\xa5"}) vocab[sym] = vocab.size();
  std::ofstream(dir.file("vocab.json")) << vocab.dump();
  const auto tok = load_tokenizer(dir.path());
  const std::string snowman = "\xe2\x98\x83";
  const auto ids = tok->encode("x" + snowman, false);
  ASSERT_EQ(ids.size(), 4u);
  TextStream s(*tok, {});
  std::string got;
  for (size_t i = 0; i + 1 < ids.size(); ++i) got += s.push({ids[i]});
  EXPECT_EQ(got, "x");
  got += s.push({ids.back()});
  EXPECT_EQ(got + s.finish(), "x" + snowman);
  EXPECT_EQ(got, "x" + snowman) << "complete once its last byte arrived";
}

}  // namespace
}  // namespace blip2
