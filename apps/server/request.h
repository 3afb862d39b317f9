// Turning HTTP requests into typed inputs, and errors into HTTP answers.
// Every problem with a request is an ApiError carrying its status and the
// OpenAI error type; the message names the field, what was expected and
// what was found.
#pragma once

#include <nlohmann/json.hpp>

#include <optional>
#include <set>
#include <stdexcept>
#include <string>

#include "blip2/blip2.h"

namespace httplib {
struct Request;
}

namespace blip2::server {

class ApiError : public std::runtime_error {
 public:
  ApiError(int status, const std::string& message);
  int status() const { return status_; }
  // invalid_request_error, authentication_error, rate_limit_error, timeout_error, server_error.
  const char* type() const;

 private:
  int status_;
};

// {"error": {"message": ..., "type": ...}}
std::string error_body(int status, const std::string& message);
const char* error_type(int status);

// The request's fields: a JSON object body (Content-Type application/json),
// or multipart/form-data whose file field `image` becomes the image and
// whose other fields are read as strings or, when they parse, numbers.
// 415 for other content types, 400 for malformed JSON or a non-object.
struct Fields {
  nlohmann::json json = nlohmann::json::object();
  std::optional<std::string> image_bytes;  // multipart file `image`, raw bytes
  bool multipart = false;

  // 400 "unknown field" for any key outside `allowed`.
  void allow_only(const std::set<std::string>& allowed, const std::string& route) const;
  bool has(const std::string& key) const { return json.contains(key) && !json[key].is_null(); }
  std::optional<std::string> text(const std::string& key) const;
  std::optional<int64_t> integer(const std::string& key, int64_t lo, int64_t hi) const;
  std::optional<double> number(const std::string& key, double lo, double hi) const;
  std::optional<bool> boolean(const std::string& key) const;
};
Fields read_fields(const httplib::Request& req);

// Standard base64 (padding optional, whitespace ignored); 400 naming `what` otherwise.
std::string decode_base64(const std::string& text, const std::string& what);
// An image given as base64 or a data:image/...;base64, URI. http(s) URLs are
// refused (the server fetches nothing); undecodable images give 400.
// `field` is the field's path in the request ("image", "messages[0].content[1].image_url.url").
Image decode_image_field(const std::string& value, const std::string& field, const DecodeOptions& decode = {});
// The image of a native request: the multipart file or the JSON field "image".
Image image_of(const Fields& f, const DecodeOptions& decode = {});

// The generation options of native requests and chat completions applied
// onto the library's defaults: max_tokens, num_beams, temperature (> 0
// samples, 0 is greedy), top_p (samples), seed, n. Impossible combinations
// are 400 from the library's own validation.
GenerationConfig generation_options(const Fields& f, GenerationConfig defaults, const std::string& max_tokens_key);

// Checks a text field against the server's length bound.
std::string bounded_text(const std::string& s, const std::string& what, int max_chars);

}  // namespace blip2::server
