// Floating-point dtype names as users write them (flags, YAML, JSON).
#pragma once

#include <c10/core/ScalarType.h>

#include <string>

namespace blip2 {

// "float32"/"fp32", "bfloat16"/"bf16", "float16"/"fp16". Throws ConfigError
// naming `what` (e.g. "--dtype") and the accepted names otherwise.
c10::ScalarType parse_dtype(const std::string& name, const std::string& what);

}  // namespace blip2
