// The server's shared state and the pieces its route files use (internal to
// apps/server): the loaded models, the scheduler, metrics, limits, and the
// route wrapper that does auth, draining, error answers and metrics.
#pragma once

#include <httplib.h>

#include <atomic>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>

#include "apps/server/metrics.h"
#include "apps/server/request.h"
#include "apps/server/scheduler.h"
#include "apps/server/server.h"
#include "blip2/search/collection.h"

namespace blip2::server {

struct Service {
  ServerOptions options;
  std::optional<Pipeline> generator;        // the -m model
  std::optional<Pipeline> retrieval_owned;  // --retrieval-model (or the index's model) when not -m
  Pipeline* retrieval = nullptr;            // whichever serves embeddings/match/search
  std::string retrieval_dir;
  std::optional<search::Collection> collection;
  std::string model_id;  // the generation model's directory name
  int64_t created = 0;   // unix seconds of start
  Metrics metrics;
  std::timed_mutex compute;  // one model computation at a time (the CPU's cores are shared anyway)
  std::unique_ptr<Scheduler> scheduler;
  std::atomic<bool> draining{false};
  std::atomic<int64_t> in_flight{0};
  std::atomic<uint64_t> ids{0};
  std::set<std::string> routes;  // registered paths (another method on one of them is 405)

  DecodeOptions decode_options() const { return DecodeOptions{options.max_image_pixels}; }
  bool can_generate() const { return generator && generator->has_language_model(); }
  Clock::time_point deadline_from(Clock::time_point t) const {
    return t + std::chrono::milliseconds(static_cast<int64_t>(options.timeout_s * 1000));
  }
};

// Counts a request as in flight while it lives (streams keep it alive).
class InFlight {
 public:
  explicit InFlight(Service& s) : s_(s) { ++s_.in_flight; }
  ~InFlight() { --s_.in_flight; }
  InFlight(const InFlight&) = delete;
  InFlight& operator=(const InFlight&) = delete;

 private:
  Service& s_;
};

using RouteHandler = std::function<void(const httplib::Request&, httplib::Response&, const std::shared_ptr<InFlight>&)>;
enum class Access { kOpen, kKey };
// Registers `handler` with auth (kKey: the API key when one is set), 503
// while draining, JSON errors for ApiError / blip2::Error / anything else,
// and the request's metrics under `path`.
void add_route(httplib::Server& http, Service& s, const std::string& method, const std::string& path, Access access,
               RouteHandler handler);

void send_json(httplib::Response& res, const nlohmann::json& body, int status = 200);
double ms_between(Clock::time_point a, Clock::time_point b);
std::string new_id(Service& s, const std::string& prefix);

// Runs a generation job to completion: 429 when the queue is full, 504 past
// the deadline (the job is cancelled), the job's own error otherwise.
void run_job(Service& s, const std::shared_ptr<Job>& job);
// Throws the job's error as an ApiError when it failed.
void throw_if_failed(const Job& job);

// The route groups, one file each.
void add_generation_routes(httplib::Server& http, Service& s);  // caption, answer
void add_chat_routes(httplib::Server& http, Service& s);        // chat completions
void add_retrieval_routes(httplib::Server& http, Service& s);   // embeddings, match, search

}  // namespace blip2::server
