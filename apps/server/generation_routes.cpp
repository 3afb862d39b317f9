// POST /v1/caption and /v1/answer: the native generation endpoints (JSON or
// multipart), queued and batched by the Scheduler.
#include "apps/server/service.h"
#include "blip2/data/tokenizer.h"

namespace blip2::server {

using nlohmann::json;

namespace {
const std::set<std::string> kOptions = {"image", "max_tokens", "num_beams", "temperature", "top_p", "seed"};

json text_result(const Job& job) {
  const TextResult& r = job.results.front();
  return {{"text", r.text},
          {"tokens", r.token_ids},
          {"timings",
           {{"queue_ms", ms_between(job.enqueued, job.started)},
            {"compute_ms", ms_between(job.started, job.finished)},
            {"total_ms", ms_between(job.enqueued, job.finished)}}}};
}
}  // namespace

void add_generation_routes(httplib::Server& http, Service& s) {
  add_route(http, s, "POST", "/v1/caption", Access::kKey, [&s](const httplib::Request& req, httplib::Response& res, auto) {
    const Fields f = read_fields(req);
    auto allowed = kOptions;
    allowed.insert("prompt");
    f.allow_only(allowed, "/v1/caption");
    auto job = std::make_shared<Job>();
    job->kind = JobKind::kCaption;
    job->text = bounded_text(f.text("prompt").value_or(""), "field 'prompt'", s.options.max_prompt_chars);
    job->config = generation_options(f, Pipeline::caption_defaults(), "max_tokens");
    job->image = image_of(f, s.decode_options());
    run_job(s, job);
    send_json(res, text_result(*job));
  });
  add_route(http, s, "POST", "/v1/answer", Access::kKey, [&s](const httplib::Request& req, httplib::Response& res, auto) {
    const Fields f = read_fields(req);
    auto allowed = kOptions;
    allowed.insert("question");
    f.allow_only(allowed, "/v1/answer");
    auto job = std::make_shared<Job>();
    job->kind = JobKind::kAnswer;
    auto q = f.text("question");
    if (!q || text::py_strip(*q).empty())
      throw ApiError(400, "field 'question' is required and must not be empty (for a caption use /v1/caption)");
    job->text = bounded_text(*q, "field 'question'", s.options.max_prompt_chars);
    job->config = generation_options(f, Pipeline::vqa_defaults(), "max_tokens");
    job->image = image_of(f, s.decode_options());
    run_job(s, job);
    send_json(res, text_result(*job));
  });
}

}  // namespace blip2::server
