// Encoding arbitrary text (invalid UTF-8 included) with the bundled models'
// tokenizers (byte-level BPE, WordPiece, SentencePiece), and decoding both the
// result and arbitrary ids. SentencePiece runs uninstrumented in a link
// namespace of its own (blip2/data/spm_runtime.cpp): our wrapper is checked by
// the sanitizers, sentencepiece only for crashes.
#include <memory>
#include <vector>

#include "blip2/data/tokenizer.h"
#include "fuzz_util.h"

#ifndef BLIP2_SOURCE_DIR
#error BLIP2_SOURCE_DIR must name the source tree (models/shapes)
#endif

namespace {
std::vector<std::unique_ptr<blip2::Tokenizer>>& tokenizers() {
  static auto all = [] {
    std::vector<std::unique_ptr<blip2::Tokenizer>> v;
    for (const char* m : {"opt", "retrieval", "t5"}) {
      try {
        v.push_back(blip2::load_tokenizer(std::string(BLIP2_SOURCE_DIR) + "/models/shapes/" + m));
      } catch (const blip2::Error& e) {
        std::fprintf(stderr, "fuzz_tokenizer_text: %s skipped: %s\n", m, e.what());
      }
    }
    return v;
  }();
  return all;
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  for (auto& tok : tokenizers()) {
    BLIP2_FUZZ_ACCEPT_ERRORS({
      auto ids = tok->encode(text);
      (void)tok->decode(ids, false);
      (void)tok->decode(ids, true);
    });
    std::vector<int64_t> raw;
    for (size_t i = 0; i + 1 < size && raw.size() < 64; i += 2)
      raw.push_back(static_cast<int64_t>(data[i]) * 256 + data[i + 1] - 128);
    BLIP2_FUZZ_ACCEPT_ERRORS({ (void)tok->decode(raw, true); });
  }
  return 0;
}
