#include "apps/server/chat_request.h"

#include "blip2/data/tokenizer.h"

namespace blip2::server {

using nlohmann::json;

namespace {

const std::set<std::string> kChatFields = {"model", "messages", "max_tokens", "max_completion_tokens", "temperature",
                                           "top_p", "n", "seed", "stop", "stream", "stream_options", "user",
                                           "num_beams"};

std::string part_text(const json& part, const std::string& where, ChatRequest& r, int& images,
                      const DecodeOptions& decode) {
  if (!part.is_object() || !part.contains("type") || !part["type"].is_string())
    throw ApiError(400, where + " must be an object with a string 'type' (\"text\" or \"image_url\")");
  const std::string type = part["type"];
  if (type == "text") {
    if (!part.contains("text") || !part["text"].is_string()) throw ApiError(400, where + ".text must be a string");
    return part["text"];
  }
  if (type != "image_url")
    throw ApiError(400, where + ".type must be \"text\" or \"image_url\", got \"" + type + "\"");
  const json& iu = part.contains("image_url") ? part["image_url"] : json();
  const json& url = iu.is_object() && iu.contains("url") ? iu["url"] : iu;
  if (!url.is_string()) throw ApiError(400, where + ".image_url must be {\"url\": \"data:image/...;base64,...\"}");
  if (++images == 1) r.image = decode_image_field(url.get<std::string>(), where + ".image_url.url", decode);
  return "";
}

}  // namespace

ChatRequest parse_chat(const Fields& f, int max_chars, const DecodeOptions& decode) {
  f.allow_only(kChatFields, "/v1/chat/completions");
  ChatRequest r;
  if (!f.has("messages") || !f.json["messages"].is_array() || f.json["messages"].empty())
    throw ApiError(400, "field 'messages' is required: a non-empty array of {role, content}");
  int images = 0;
  bool any_user = false;
  const json& messages = f.json["messages"];
  for (size_t i = 0; i < messages.size(); ++i) {
    const std::string where = "messages[" + std::to_string(i) + "]";
    const json& m = messages[i];
    if (!m.is_object() || !m.contains("role") || !m["role"].is_string())
      throw ApiError(400, where + " must be an object with a string 'role'");
    const std::string role = m["role"];
    if (role != "user" && role != "system" && role != "assistant" && role != "developer")
      throw ApiError(400, where + ".role must be user, system, assistant or developer, got \"" + role + "\"");
    const json content = m.contains("content") ? m["content"] : json();
    std::string text;
    if (content.is_string()) {
      text = content;
    } else if (content.is_array()) {
      for (size_t j = 0; j < content.size(); ++j) {
        const std::string t = part_text(content[j], where + ".content[" + std::to_string(j) + "]", r, images, decode);
        if (!t.empty()) text += (text.empty() ? "" : " ") + t;
      }
    } else if (!(content.is_null() && role == "assistant")) {
      throw ApiError(400, where + ".content must be a string or an array of content parts");
    }
    if (role == "user") {
      any_user = true;
      r.question = text::py_strip(text);
    }
  }
  if (!any_user) throw ApiError(400, "field 'messages' has no user message");
  if (images != 1)
    throw ApiError(400, "the conversation must contain exactly one image (an image_url part), got " +
                            std::to_string(images));
  r.question = bounded_text(r.question, "the last user message", max_chars);
  if (f.has("stop")) {
    const json& st = f.json["stop"];
    if (st.is_string()) {
      r.stops.push_back(st);
    } else if (st.is_array() && st.size() <= 4) {
      for (const auto& x : st) {
        if (!x.is_string()) throw ApiError(400, "field 'stop' must be a string or an array of up to 4 strings");
        r.stops.push_back(x);
      }
    } else {
      throw ApiError(400, "field 'stop' must be a string or an array of up to 4 strings");
    }
  }
  r.stream = f.boolean("stream").value_or(false);
  if (f.has("stream_options")) {
    const json& so = f.json["stream_options"];
    if (!so.is_object()) throw ApiError(400, "field 'stream_options' must be an object");
    if (so.contains("include_usage")) {
      if (!so["include_usage"].is_boolean()) throw ApiError(400, "stream_options.include_usage must be a boolean");
      r.include_usage = so["include_usage"];
    }
  }
  if (f.has("model") && !f.json["model"].is_string()) throw ApiError(400, "field 'model' must be a string");
  if (f.has("user") && !f.json["user"].is_string()) throw ApiError(400, "field 'user' must be a string");
  return r;
}

}  // namespace blip2::server
