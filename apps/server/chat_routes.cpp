// POST /v1/chat/completions: OpenAI's chat API over one image. The
// conversation must hold exactly one image (a data: URI); the last user
// message's text is the question (put in the LM family's VQA template), an
// empty one asks for a caption. Streaming sends chat.completion.chunk
// events with text deltas as tokens are generated, then [DONE].
#include <deque>

#include "apps/server/service.h"
#include "apps/server/text_stream.h"
#include "blip2/data/tokenizer.h"
#include "blip2/config/config.h"

namespace blip2::server {

using nlohmann::json;

namespace {

const std::set<std::string> kChatFields = {"model", "messages", "max_tokens", "max_completion_tokens", "temperature",
                                           "top_p", "n", "seed", "stop", "stream", "stream_options", "user",
                                           "num_beams"};

struct ChatRequest {
  Image image;
  std::string question;  // "" : caption
  std::vector<std::string> stops;
  bool stream = false, include_usage = false;
};

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

// Everything the answer needs besides the texts.
struct Usage {
  int64_t prompt = 0, completion = 0;
  json to_json() const { return {{"prompt_tokens", prompt}, {"completion_tokens", completion}, {"total_tokens", prompt + completion}}; }
};

int64_t prompt_tokens(const Pipeline& p, const std::string& question) {
  const std::string prompt = question.empty() ? "" : text::fill_template(p.vqa_prompt_template(), question);
  return p.config().num_query_tokens + static_cast<int64_t>(p.tokenizer().encode(prompt, true).size());
}

// The text of each sequence and why it ended.
struct Choice {
  std::string text;
  const char* finish = "length";
};

std::vector<Choice> choices_of(const Job& job, const std::vector<std::string>& stops, const Pipeline& p, Usage& usage) {
  const auto [eos, pad] = eos_and_pad(p);
  std::vector<Choice> out;
  for (const auto& r : job.results) {
    bool stopped = false;
    Choice c;
    c.text = final_text(r.text, stops, &stopped);
    const int64_t n = generated_tokens(r, eos, pad);
    usage.completion += n;
    const bool ended = n > 0 && static_cast<size_t>(n) < r.token_ids.size() && r.token_ids[static_cast<size_t>(n)] == eos;
    if (stopped || ended) c.finish = "stop";
    out.push_back(c);
  }
  return out;
}

// What the worker thread hands the streaming response: text deltas per sequence.
struct StreamState {
  std::mutex mutex;
  std::condition_variable cv;
  std::deque<std::pair<int64_t, std::string>> deltas;
  std::vector<TextStream> streams;
  bool started = false;
};

json chunk(const std::string& id, int64_t created, const std::string& model, json choices) {
  return {{"id", id}, {"object", "chat.completion.chunk"}, {"created", created}, {"model", model}, {"choices", choices}};
}

bool write_event(httplib::DataSink& sink, const std::string& data) {
  const std::string line = "data: " + data + "\n\n";
  return sink.write(line.data(), line.size());
}

void stream_response(Service& s, httplib::Response& res, const std::shared_ptr<Job>& job,
                     const std::shared_ptr<StreamState>& st, const ChatRequest& chat, const std::string& id,
                     int64_t prompt, const std::shared_ptr<InFlight>& in_flight) {
  const int64_t created = static_cast<int64_t>(std::time(nullptr));
  const int64_t n = job->config.num_return_sequences;
  const auto deadline = s.deadline_from(job->enqueued);
  res.set_header("Cache-Control", "no-cache");
  res.set_chunked_content_provider(
      "text/event-stream",
      [&s, job, st, chat, id, created, n, prompt, deadline, in_flight, sent_roles = false](
          size_t, httplib::DataSink& sink) mutable {
        auto fail = [&] {
          job->cancelled = true;
          return false;
        };
        if (!sent_roles) {
          sent_roles = true;
          for (int64_t i = 0; i < n; ++i)
            if (!write_event(sink, chunk(id, created, s.model_id, json::array({{{"index", i}, {"delta", {{"role", "assistant"}, {"content", ""}}}, {"finish_reason", nullptr}}})).dump()))
              return fail();
        }
        std::deque<std::pair<int64_t, std::string>> deltas;
        bool done = false;
        {
          std::unique_lock<std::mutex> lock(st->mutex);
          st->cv.wait_until(lock, std::min(deadline, Clock::now() + std::chrono::milliseconds(200)),
                            [&] { return !st->deltas.empty() || job->is_done(); });
          deltas.swap(st->deltas);
          done = job->is_done() && st->deltas.empty();
        }
        for (const auto& [seq, text] : deltas)
          if (!write_event(sink, chunk(id, created, s.model_id, json::array({{{"index", seq}, {"delta", {{"content", text}}}, {"finish_reason", nullptr}}})).dump()))
            return fail();
        if (!done && Clock::now() < deadline) return true;
        if (!done) {  // past the deadline
          job->cancelled = true;
          write_event(sink, error_body(504, "the request took longer than the server's timeout"));
        } else if (job->error_status != 0) {
          write_event(sink, error_body(job->error_status, job->error));
        } else {
          Usage usage;
          usage.prompt = prompt * n;
          const auto choices = choices_of(*job, chat.stops, *s.generator, usage);
          for (int64_t i = 0; i < n; ++i) {
            std::string rest;
            {
              std::lock_guard<std::mutex> lock(st->mutex);
              rest = st->streams[static_cast<size_t>(i)].finish();
            }
            json delta = rest.empty() ? json::object() : json{{"content", rest}};
            if (!write_event(sink, chunk(id, created, s.model_id, json::array({{{"index", i}, {"delta", delta}, {"finish_reason", choices[static_cast<size_t>(i)].finish}}})).dump()))
              return fail();
          }
          if (chat.include_usage) {
            json last = chunk(id, created, s.model_id, json::array());
            last["usage"] = usage.to_json();
            write_event(sink, last.dump());
          }
        }
        write_event(sink, "[DONE]");
        sink.done();
        return true;
      });
}

}  // namespace

void add_chat_routes(httplib::Server& http, Service& s) {
  add_route(http, s, "POST", "/v1/chat/completions", Access::kKey,
            [&s](const httplib::Request& req, httplib::Response& res, const std::shared_ptr<InFlight>& in_flight) {
              const Fields f = read_fields(req);
              if (f.multipart) throw ApiError(415, "/v1/chat/completions takes application/json");
              ChatRequest chat = parse_chat(f, s.options.max_prompt_chars, s.decode_options());
              auto job = std::make_shared<Job>();
              job->kind = chat.question.empty() ? JobKind::kCaption : JobKind::kAnswer;
              job->text = chat.question;
              job->image = std::move(chat.image);
              job->config = generation_options(
                  f, chat.question.empty() ? Pipeline::caption_defaults() : Pipeline::vqa_defaults(),
                  f.has("max_completion_tokens") ? "max_completion_tokens" : "max_tokens");
              if (!s.can_generate()) run_job(s, job);  // the error
              const std::string id = new_id(s, "chatcmpl-");
              const int64_t prompt = prompt_tokens(*s.generator, chat.question);
              const int64_t n = job->config.num_return_sequences;
              if (!chat.stream) {
                run_job(s, job);
                Usage usage;
                usage.prompt = prompt * n;
                const auto choices = choices_of(*job, chat.stops, *s.generator, usage);
                json cs = json::array();
                for (size_t i = 0; i < choices.size(); ++i)
                  cs.push_back({{"index", i},
                                {"message", {{"role", "assistant"}, {"content", choices[i].text}}},
                                {"finish_reason", choices[i].finish}});
                send_json(res, {{"id", id}, {"object", "chat.completion"}, {"created", static_cast<int64_t>(std::time(nullptr))},
                                {"model", s.model_id}, {"choices", cs}, {"usage", usage.to_json()}});
                return;
              }
              auto st = std::make_shared<StreamState>();
              for (int64_t i = 0; i < n; ++i) st->streams.emplace_back(s.generator->tokenizer(), chat.stops);
              job->on_tokens = [st](int64_t seq, const std::vector<int64_t>& tokens) {
                std::lock_guard<std::mutex> lock(st->mutex);
                auto& stream = st->streams[static_cast<size_t>(seq)];
                std::string delta = stream.push(tokens);
                st->started = true;
                if (!delta.empty()) st->deltas.emplace_back(seq, std::move(delta));
                st->cv.notify_all();
                return !stream.stopped();
              };
              job->on_done = [st] {
                std::lock_guard<std::mutex> lock(st->mutex);
                st->cv.notify_all();
              };
              if (!s.scheduler->submit(job))
                throw ApiError(429, "the queue is full (" + std::to_string(s.options.max_queue) +
                                        " requests waiting); retry later");
              // Answer errors found before the first token (bad options, a prompt too long) with their
              // status; once text flows, the status is 200 and a late error is an SSE error event.
              {
                std::unique_lock<std::mutex> lock(st->mutex);
                const auto deadline = s.deadline_from(job->enqueued);
                while (!st->started && !job->is_done() && Clock::now() < deadline)
                  st->cv.wait_until(lock, std::min(deadline, Clock::now() + std::chrono::milliseconds(50)));
              }
              if (job->is_done()) throw_if_failed(*job);
              if (!st->started && !job->is_done()) {
                job->cancelled = true;
                throw ApiError(504, "the request took longer than the server's timeout of " +
                                        json(s.options.timeout_s).dump() + " s (queue wait included)");
              }
              stream_response(s, res, job, st, chat, id, prompt, in_flight);
            });
}

}  // namespace blip2::server
