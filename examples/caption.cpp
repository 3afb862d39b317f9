// The smallest program on blip2cpp's library API: caption an image and,
// optionally, answer a question about it.
//
//   caption_example MODEL_DIR IMAGE ["question"]
#include <cstdio>

#include "blip2/blip2.h"

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: %s MODEL_DIR IMAGE [\"question\"]\n", argv[0]);
    return 2;
  }
  try {
    auto pipeline = blip2::Pipeline::load(argv[1]);
    auto image = blip2::load_image(argv[2]);
    std::printf("%s\n", pipeline.caption({image})[0].text.c_str());
    if (argc > 3) std::printf("%s\n", pipeline.answer({image}, {argv[3]})[0].text.c_str());
  } catch (const blip2::Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
