// config.json: every field reader, the sub-configs, the LM family. A config
// that parses must serialise to JSON that parses to the same JSON again.
#include "blip2/config/config.h"
#include "fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  std::string once;
  try {
    once = blip2::Blip2Config::from_json_string(text, "config.json").to_json_string();
  } catch (const blip2::Error&) {
    return 0;
  }
  const std::string twice = blip2::Blip2Config::from_json_string(once, "config.json (written)").to_json_string();
  if (once != twice) std::abort();
  return 0;
}
