// The safetensors reader: header JSON, dtypes, shapes, offsets, mapping.
#include "blip2/io/safetensors.h"
#include "fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = blip2::fuzz::write_file("model.safetensors", data, size);
  BLIP2_FUZZ_ACCEPT_ERRORS({
    auto file = blip2::io::SafetensorsFile::open(path);
    uint64_t sum = 0;
    for (const auto& [name, info] : file->tensors()) {
      at::Tensor t = file->tensor(name);
      sum += blip2::fuzz::touch(t.data_ptr(), t.nbytes());
    }
    if (sum == 1) std::printf(" ");
  });
  return 0;
}
