// Tokenizer directories: the files of a BPE (vocab.json, merges.txt), a
// WordPiece (vocab.txt), a tokenizer.json or a SentencePiece (spiece.model;
// sentencepiece itself is not instrumented: crashes only) tokenizer, with
// tokenizer_config.json, packed into one input as parts separated by the
// line "--8<--". Whatever loads must encode and decode.
#include <filesystem>

#include "blip2/data/tokenizer.h"
#include "fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  namespace fs = std::filesystem;
  const std::string dir = blip2::fuzz::scratch_dir() + "/tok";
  fs::remove_all(dir);
  fs::create_directories(dir);
  const auto parts = blip2::fuzz::split_parts(data + 1, size - 1, 3);
  static const char* const kinds[][2] = {
      {"vocab.json", "merges.txt"}, {"vocab.txt", ""}, {"tokenizer.json", ""}, {"spiece.model", ""}};
  const auto& kind = kinds[data[0] % 4];
  auto put = [&](const char* name, size_t i) {
    if (*name && i < parts.size()) blip2::fuzz::write_file("tok/" + std::string(name), parts[i]);
  };
  put(kind[0], 0);
  if (*kind[1]) put(kind[1], 1);
  put("tokenizer_config.json", *kind[1] ? 2 : 1);
  BLIP2_FUZZ_ACCEPT_ERRORS({
    auto tok = blip2::load_tokenizer(dir);
    for (const char* text : {"what color is the star?", "a Red  circle</s>[SEP] \xc3\xa9\xe2\x96\x81"}) {
      auto ids = tok->encode(text);
      (void)tok->decode(ids, true);
    }
  });
  return 0;
}
