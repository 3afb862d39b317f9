// Training recipes (YAML): schema, types, ranges. A recipe that parses must
// serialise to YAML that parses again.
#include "blip2/train/train_config.h"
#include "fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  std::string once;
  try {
    once = blip2::TrainConfig::from_yaml_string(text, "recipe.yaml").to_yaml();
  } catch (const blip2::Error&) {
    return 0;
  }
  blip2::TrainConfig::from_yaml_string(once, "recipe.yaml (written)");
  return 0;
}
