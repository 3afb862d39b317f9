// POST /v1/chat/completions: OpenAI's chat API over one image. The
// conversation must hold exactly one image (a data: URI); the last user
// message's text is the question (put in the LM family's VQA template), an
// empty one asks for a caption. Streaming sends chat.completion.chunk
// events with text deltas as tokens are generated, then [DONE].
#include <deque>

#include "apps/server/chat_request.h"
#include "apps/server/service.h"
#include "apps/server/text_stream.h"
#include "blip2/data/tokenizer.h"
#include "blip2/config/config.h"

namespace blip2::server {

using nlohmann::json;

namespace {

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
