// The body of POST /v1/chat/completions turned into one typed request:
// OpenAI's messages with string content or content parts (text, image_url
// as a data: URI), the last user message's text as the question, stop
// strings and the stream flags. Every problem is an ApiError (400) naming
// the field path ("messages[1].content[0].type").
#pragma once

#include <string>
#include <vector>

#include "apps/server/request.h"

namespace blip2::server {

struct ChatRequest {
  Image image;
  std::string question;  // "" : caption
  std::vector<std::string> stops;
  bool stream = false, include_usage = false;
};

// `max_chars` bounds the question; `decode` bounds the image.
ChatRequest parse_chat(const Fields& f, int max_chars, const DecodeOptions& decode);

}  // namespace blip2::server
