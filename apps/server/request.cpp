#include "apps/server/request.h"

#include <httplib.h>

#include <cmath>
#include <limits>

#include "blip2/data/tokenizer.h"

namespace blip2::server {

using nlohmann::json;

ApiError::ApiError(int status, const std::string& message) : std::runtime_error(message), status_(status) {}
const char* ApiError::type() const { return error_type(status_); }

const char* error_type(int status) {
  switch (status) {
    case 401: return "authentication_error";
    case 429: return "rate_limit_error";
    case 503: return "unavailable_error";
    case 504: return "timeout_error";
    default: return status >= 500 ? "server_error" : "invalid_request_error";
  }
}

std::string error_body(int status, const std::string& message) {
  return json{{"error", {{"message", message}, {"type", error_type(status)}}}}.dump();
}

namespace {
std::string media_type(const httplib::Request& req) {
  std::string t = req.get_header_value("Content-Type");
  t = t.substr(0, t.find(';'));
  t = text::py_strip(t);
  for (auto& c : t) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return t;
}

const char* json_kind(const json& v) {
  if (v.is_string()) return "a string";
  if (v.is_boolean()) return "a boolean";
  if (v.is_number_integer() || v.is_number_unsigned()) return "an integer";
  if (v.is_number()) return "a number";
  if (v.is_array()) return "an array";
  if (v.is_object()) return "an object";
  return "null";
}

// A multipart form field is a string; read it as the JSON value it spells
// ("7", "0.5", "true") when it is one, else keep the string.
json value_of(const json& v, bool multipart) {
  if (!multipart || !v.is_string()) return v;
  try {
    return json::parse(v.get<std::string>());
  } catch (const json::exception&) {  // parse_error, or out_of_range for "1e999"
    return v;
  }
}

[[noreturn]] void wrong_type(const std::string& key, const char* expected, const json& got) {
  throw ApiError(400, "field '" + key + "' must be " + expected + ", got " + json_kind(got));
}
}  // namespace

Fields read_fields(const httplib::Request& req) {
  Fields f;
  const std::string type = media_type(req);
  if (type == "multipart/form-data") {
    f.multipart = true;
    for (const auto& [name, part] : req.files) {
      if (name == "image") {
        f.image_bytes = part.content;
      } else if (!part.filename.empty()) {
        throw ApiError(400, "multipart file field '" + name + "' is not expected; send the image as the field 'image'");
      } else {
        f.json[name] = part.content;
      }
    }
    return f;
  }
  if (type != "application/json")
    throw ApiError(415, "Content-Type must be application/json or multipart/form-data, got '" +
                            (type.empty() ? std::string("none") : type) + "'");
  try {
    f.json = json::parse(req.body);
  } catch (const json::exception& e) {  // parse_error, and out_of_range for a number beyond double (1e999)
    throw ApiError(400, std::string("the body is not valid JSON: ") + e.what());
  }
  if (!f.json.is_object()) throw ApiError(400, std::string("the body must be a JSON object, got ") + json_kind(f.json));
  return f;
}

void Fields::allow_only(const std::set<std::string>& allowed, const std::string& route) const {
  for (const auto& [k, v] : json.items()) {
    if (allowed.count(k)) continue;
    std::string list;
    for (const auto& a : allowed) list += (list.empty() ? "" : ", ") + a;
    throw ApiError(400, "unknown field '" + k + "' for " + route + "; the fields are: " + list);
  }
  if (image_bytes && !allowed.count("image")) throw ApiError(400, "no image is expected by " + route);
}

std::optional<std::string> Fields::text(const std::string& key) const {
  if (!has(key)) return std::nullopt;
  const auto& v = json.at(key);
  if (!v.is_string()) wrong_type(key, "a string", v);
  return v.get<std::string>();
}

std::optional<int64_t> Fields::integer(const std::string& key, int64_t lo, int64_t hi) const {
  if (!has(key)) return std::nullopt;
  nlohmann::json v = value_of(json.at(key), multipart);
  if (v.is_number_float() && std::floor(v.get<double>()) == v.get<double>() && std::abs(v.get<double>()) < 1e15)
    v = static_cast<int64_t>(v.get<double>());
  if (!v.is_number_integer()) wrong_type(key, "an integer", v);
  const bool too_big = v.is_number_unsigned() && v.get<uint64_t>() > static_cast<uint64_t>(hi);
  const int64_t x = too_big ? hi : v.get<int64_t>();
  if (too_big || x < lo || x > hi)
    throw ApiError(400, "field '" + key + "' must be in [" + std::to_string(lo) + ", " + std::to_string(hi) + "], got " +
                            v.dump());
  return x;
}

std::optional<double> Fields::number(const std::string& key, double lo, double hi) const {
  if (!has(key)) return std::nullopt;
  nlohmann::json v = value_of(json.at(key), multipart);
  if (!v.is_number()) wrong_type(key, "a number", v);
  const double x = v.get<double>();
  if (!(x >= lo && x <= hi))
    throw ApiError(400, "field '" + key + "' must be in [" + nlohmann::json(lo).dump() + ", " + nlohmann::json(hi).dump() +
                            "], got " +
                            v.dump());
  return x;
}

std::optional<bool> Fields::boolean(const std::string& key) const {
  if (!has(key)) return std::nullopt;
  const auto& v = json.at(key);
  if (v.is_boolean()) return v.get<bool>();
  if (multipart && v.is_string() && (v == "true" || v == "false")) return v == "true";
  wrong_type(key, "a boolean", v);
}

std::string decode_base64(const std::string& text, const std::string& what) {
  auto value = [](char c) -> int {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+' || c == '-') return 62;
    if (c == '/' || c == '_') return 63;
    return -1;
  };
  std::string out;
  out.reserve(text.size() / 4 * 3);
  uint32_t acc = 0;
  int bits = 0;
  size_t padding = 0;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (c == ' ' || c == '\n' || c == '\r' || c == '\t') continue;
    if (c == '=') {
      ++padding;
      continue;
    }
    const int v = value(c);
    if (v < 0 || padding > 0)
      throw ApiError(400, what + " is not valid base64: unexpected character at offset " + std::to_string(i));
    acc = (acc << 6) | static_cast<uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(static_cast<char>((acc >> bits) & 0xFF));
    }
  }
  if (bits >= 6 || padding > 2) throw ApiError(400, what + " is not valid base64: its length is impossible");
  return out;
}

Image decode_image_field(const std::string& value, const std::string& field, const DecodeOptions& decode) {
  const std::string what = "field '" + field + "'";
  std::string payload = value;
  if (value.rfind("http://", 0) == 0 || value.rfind("https://", 0) == 0)
    throw ApiError(400, what + " is a remote URL; the server fetches nothing: send the image inline as a "
                               "data:image/...;base64, URI or base64");
  if (value.rfind("data:", 0) == 0) {
    const size_t comma = value.find(',');
    const std::string header = value.substr(0, comma);
    if (comma == std::string::npos || header.find(";base64") == std::string::npos)
      throw ApiError(400, what + " is a data URI without ';base64,'; expected data:image/png;base64,...");
    payload = value.substr(comma + 1);
  }
  if (payload.empty()) throw ApiError(400, what + " is empty; send a PNG, JPEG or WebP image");
  const std::string bytes = decode_base64(payload, what);
  try {
    return decode_image(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), field, decode);
  } catch (const Error& e) {
    throw ApiError(400, e.what());
  }
}

Image image_of(const Fields& f, const DecodeOptions& decode) {
  if (f.image_bytes) {
    try {
      return decode_image(reinterpret_cast<const uint8_t*>(f.image_bytes->data()), f.image_bytes->size(),
                          "upload", decode);
    } catch (const Error& e) {
      throw ApiError(400, e.what());
    }
  }
  auto v = f.text("image");
  if (!v) throw ApiError(400, "field 'image' is required: a base64 image or data URI (or a multipart file 'image')");
  return decode_image_field(*v, "image", decode);
}

GenerationConfig generation_options(const Fields& f, GenerationConfig g, const std::string& max_tokens_key) {
  if (auto v = f.integer(max_tokens_key, 1, 100000)) {
    g.max_new_tokens = *v;
    g.min_new_tokens = std::min(g.min_new_tokens, g.max_new_tokens);
  }
  const auto beams = f.integer("num_beams", 1, 64);
  const auto temperature = f.number("temperature", 0, 100);
  const auto top_p = f.number("top_p", 0, 1);
  if (temperature || top_p) {  // OpenAI's meaning: sample (temperature 0: greedy)
    g.do_sample = !(temperature && *temperature == 0);
    if (g.do_sample) {
      if (temperature) g.temperature = *temperature;
      if (top_p) g.top_p = *top_p;
    }
    g.num_beams = 1;
  }
  if (beams) g.num_beams = *beams;
  if (auto v = f.integer("seed", 0, std::numeric_limits<int64_t>::max())) g.seed = static_cast<uint64_t>(*v);
  if (auto v = f.integer("n", 1, 16)) g.num_return_sequences = *v;
  try {
    g.validate();
  } catch (const Error& e) {
    throw ApiError(400, e.what());
  }
  return g;
}

std::string bounded_text(const std::string& s, const std::string& what, int max_chars) {
  if (static_cast<int64_t>(s.size()) > max_chars)
    throw ApiError(400, what + " has " + std::to_string(s.size()) + " bytes; at most " + std::to_string(max_chars) +
                            " are accepted");
  try {
    text::validate_utf8(s, what);
  } catch (const Error& e) {
    throw ApiError(400, e.what());
  }
  return s;
}

}  // namespace blip2::server
