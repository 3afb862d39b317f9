// Image decoding (PNG, JPEG, WebP by magic bytes) and PIL-exact
// preprocessing of whatever decodes.
#include "blip2/data/image.h"
#include "blip2/data/image_processor.h"
#include "fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  blip2::DecodeOptions options;
  options.max_pixels = 1 << 22;  // libFuzzer's memory limit, not the CLI default
  BLIP2_FUZZ_ACCEPT_ERRORS({
    blip2::Image image = blip2::decode_image(data, size, "input", options);
    blip2::ImageProcessorConfig config;
    config.height = config.width = 24;
    at::Tensor t = blip2::preprocess(image, config);
    if (t.size(1) != 24 || t.size(2) != 24) std::abort();
  });
  return 0;
}
