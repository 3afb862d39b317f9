// The .pth reader: the zip container, the pickle machine, storages.
#include "blip2/io/torch_checkpoint.h"
#include "fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = blip2::fuzz::write_file("model.pth", data, size);
  BLIP2_FUZZ_ACCEPT_ERRORS({
    auto sd = blip2::io::load_torch_checkpoint(path);
    uint64_t sum = 0;
    for (const auto& [name, t] : sd)
      if (t.defined() && t.numel() > 0) sum += blip2::fuzz::touch(t.contiguous().data_ptr(), t.nbytes());
    if (sum == 1) std::printf(" ");
  });
  return 0;
}
