// The HTTP request readers of `blip2 serve` (apps/server/request.h,
// chat_request.h): a JSON body as each route reads it. The first byte picks
// the route (chat completions, caption, answer); the rest is the body. The
// readers may reject a body only with ApiError (the server's 4xx) or
// blip2::Error; anything else is a finding. An accepted request must carry
// an image and, for chat, a question within the bound.
#include <httplib.h>

#include "apps/server/chat_request.h"
#include "fuzz_util.h"

namespace {
constexpr int kMaxChars = 4096;

void read_native(const blip2::server::Fields& f, const char* route, const char* text_key) {
  f.allow_only({"image", "prompt", "question", "max_tokens", "num_beams", "temperature", "top_p", "seed", "n"},
               route);
  const std::string text = blip2::server::bounded_text(f.text(text_key).value_or(""), text_key, kMaxChars);
  if (text.size() > kMaxChars) std::abort();
  blip2::GenerationConfig g = blip2::server::generation_options(f, blip2::GenerationConfig{}, "max_tokens");
  if (g.max_new_tokens < 0 || g.num_beams < 1) std::abort();
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  httplib::Request req;
  req.set_header("Content-Type", "application/json");
  req.body.assign(reinterpret_cast<const char*>(data) + 1, size - 1);
  blip2::DecodeOptions decode;
  decode.max_pixels = 1 << 22;  // libFuzzer's memory limit, not the server's default
  try {
    const blip2::server::Fields f = blip2::server::read_fields(req);
    switch (data[0] % 3) {
      case 0: {
        const blip2::server::ChatRequest chat = blip2::server::parse_chat(f, kMaxChars, decode);
        if (chat.image.width <= 0 || chat.question.size() > kMaxChars) std::abort();
        break;
      }
      case 1:
        read_native(f, "/v1/caption", "prompt");
        if (blip2::server::image_of(f, decode).width <= 0) std::abort();
        break;
      default:
        read_native(f, "/v1/answer", "question");
        if (blip2::server::image_of(f, decode).height <= 0) std::abort();
        break;
    }
  } catch (const blip2::server::ApiError& e) {
    if (e.status() < 400 || e.status() > 499) std::abort();
  } catch (const blip2::Error&) {
  }
  return 0;
}
