#include "blip2/util/dtype.h"

#include "blip2/util/error.h"

namespace blip2 {

c10::ScalarType parse_dtype(const std::string& d, const std::string& what) {
  if (d == "float32" || d == "fp32") return c10::kFloat;
  if (d == "bfloat16" || d == "bf16") return c10::kBFloat16;
  if (d == "float16" || d == "fp16") return c10::kHalf;
  throw ConfigError(what + " '" + d + "' is not supported (float32, bfloat16, float16; or fp32, bf16, fp16)");
}

c10::ScalarType parse_weight_dtype(const std::string& d, const std::string& what) {
  if (d == "int8") return c10::kChar;
  if (d == "float32" || d == "fp32" || d == "bfloat16" || d == "bf16" || d == "float16" || d == "fp16")
    return parse_dtype(d, what);
  throw ConfigError(what + " '" + d + "' is not supported (float32, bfloat16, float16, int8; or fp32, bf16, fp16)");
}

}  // namespace blip2
