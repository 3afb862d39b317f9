// blip2 serve: loading, routes shared by all (health, models, metrics, the
// web page), auth, errors, and graceful shutdown.
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <thread>

#include "apps/server/service.h"

namespace fs = std::filesystem;

namespace blip2::server {

using nlohmann::json;

namespace {
std::atomic<int> g_signal{0};
extern "C" void on_signal(int sig) { g_signal = sig; }

std::string exe_dir() {
  std::error_code ec;
  auto p = fs::read_symlink("/proc/self/exe", ec);
  return ec ? "." : p.parent_path().string();
}

// Equal strings, in a time that depends on the expected key's length only.
bool same_key(const std::string& given, const std::string& key) {
  unsigned char diff = given.size() == key.size() ? 0 : 1;
  for (size_t i = 0; i < key.size(); ++i)
    diff |= static_cast<unsigned char>((i < given.size() ? given[i] : 0) ^ key[i]);
  return diff == 0;
}

void check_key(const Service& s, const httplib::Request& req) {
  if (s.options.api_key.empty()) return;
  const std::string h = req.get_header_value("Authorization");
  const std::string prefix = "Bearer ";
  if (h.empty()) throw ApiError(401, "missing API key: send the header 'Authorization: Bearer KEY'");
  if (h.compare(0, prefix.size(), prefix) != 0 || !same_key(h.substr(prefix.size()), s.options.api_key))
    throw ApiError(401, "invalid API key in the Authorization header");
}
}  // namespace

std::string default_web_root() {
  for (const auto& c : {exe_dir() + "/../../apps/server/web", exe_dir() + "/../share/blip2/web"})
    if (fs::exists(fs::path(c) / "index.html")) return fs::weakly_canonical(c).string();
  return exe_dir() + "/../share/blip2/web";
}

void send_json(httplib::Response& res, const json& body, int status) {
  res.status = status;
  res.set_content(body.dump(), "application/json");
}

double ms_between(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}

std::string new_id(Service& s, const std::string& prefix) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%llx%06llx", static_cast<unsigned long long>(s.created),
                static_cast<unsigned long long>(++s.ids));
  return prefix + buf;
}

void add_route(httplib::Server& http, Service& s, const std::string& method, const std::string& path, Access access,
               RouteHandler handler) {
  auto wrapped = [&s, path, access, handler](const httplib::Request& req, httplib::Response& res) {
    const auto t0 = Clock::now();
    try {
      if (s.draining) throw ApiError(503, "the server is shutting down; retry on another instance");
      if (access == Access::kKey) check_key(s, req);
      handler(req, res, std::make_shared<InFlight>(s));
    } catch (const ApiError& e) {
      res.set_content(error_body(e.status(), e.what()), "application/json");
      res.status = e.status();
      if (e.status() == 401) res.set_header("WWW-Authenticate", "Bearer");
    } catch (const InputError& e) {
      res.set_content(error_body(400, e.what()), "application/json");
      res.status = 400;
    } catch (const std::exception& e) {
      res.set_content(error_body(500, e.what()), "application/json");
      res.status = 500;
    }
    // A stream's status is sent after the handler returns: 200.
    s.metrics.request(path, res.status == -1 ? 200 : res.status, ms_between(t0, Clock::now()) / 1000);
  };
  s.routes.insert(path);
  if (method == "GET")
    http.Get(path, wrapped);
  else
    http.Post(path, wrapped);
}

void throw_if_failed(const Job& job) {
  if (job.error_status != 0) throw ApiError(job.error_status, job.error);
}

void run_job(Service& s, const std::shared_ptr<Job>& job) {
  if (!s.can_generate())
    throw ApiError(400, "this server has no generation model (" + s.options.model_dir +
                            " has no language model); start it with -m and a captioning checkpoint");
  if (!s.scheduler->submit(job))
    throw ApiError(429, "the queue is full (" + std::to_string(s.options.max_queue) +
                            " requests waiting); retry later");
  if (!job->wait_until(s.deadline_from(job->enqueued))) {
    job->cancelled = true;
    throw ApiError(504, "the request took longer than the server's timeout of " + json(s.options.timeout_s).dump() +
                            " s (queue wait included)");
  }
  throw_if_failed(*job);
}

namespace {
void add_common_routes(httplib::Server& http, Service& s) {
  add_route(http, s, "GET", "/health", Access::kOpen, [&s](const httplib::Request&, httplib::Response& res, auto) {
    json caps = {{"generate", s.can_generate()},
                 {"retrieval", s.retrieval != nullptr},
                 {"search", s.collection.has_value()}};
    send_json(res, {{"status", "ok"}, {"model", s.model_id}, {"capabilities", caps},
                    {"queue_depth", s.scheduler->depth()}});
  });
  add_route(http, s, "GET", "/v1/models", Access::kKey, [&s](const httplib::Request&, httplib::Response& res, auto) {
    json data = json::array();
    data.push_back({{"id", s.model_id}, {"object", "model"}, {"owned_by", "blip2cpp"}, {"created", s.created}});
    if (s.retrieval && s.retrieval != &*s.generator)
      data.push_back({{"id", fs::path(s.retrieval_dir).filename().string()},
                      {"object", "model"},
                      {"owned_by", "blip2cpp"},
                      {"created", s.created}});
    send_json(res, {{"object", "list"}, {"data", data}});
  });
  add_route(http, s, "GET", "/metrics", Access::kKey, [&s](const httplib::Request&, httplib::Response& res, auto) {
    res.set_content(s.metrics.render(s.scheduler->depth(), s.in_flight - 1), "text/plain; version=0.0.4");
  });
}

std::string model_name(const std::string& dir) {
  fs::path p = fs::weakly_canonical(dir);
  if (p.filename().empty()) p = p.parent_path();
  return p.filename().string();
}

void load_models(Service& s) {
  const auto& o = s.options;
  s.generator.emplace(Pipeline::load(o.model_dir, o.runtime));
  s.model_id = model_name(o.model_dir);
  std::string retrieval_dir = o.retrieval_model_dir;
  if (retrieval_dir.empty() && !o.index_dir.empty() && !s.generator->has_retrieval_heads())
    retrieval_dir = search::Collection::inspect(o.index_dir).model_dir;  // the model the index was built with
  if (!retrieval_dir.empty()) {
    s.retrieval_owned.emplace(Pipeline::load(retrieval_dir, o.runtime));
    if (!s.retrieval_owned->has_retrieval_heads())
      throw ConfigError("--retrieval-model " + retrieval_dir +
                        " has no retrieval heads (expected a Blip2ForImageTextRetrieval checkpoint such as "
                        "models/shapes/retrieval)");
    s.retrieval = &*s.retrieval_owned;
    s.retrieval_dir = retrieval_dir;
  } else if (s.generator->has_retrieval_heads()) {
    s.retrieval = &*s.generator;
    s.retrieval_dir = o.model_dir;
  }
  if (!o.index_dir.empty()) {
    if (!s.retrieval)
      throw ConfigError("--index " + o.index_dir + " needs a retrieval model; give --retrieval-model DIR");
    s.collection.emplace(search::Collection::open(o.index_dir, s.retrieval_dir, *s.retrieval));
  }
}

void check_options(const ServerOptions& o) {
  auto bad = [](const std::string& m) { throw ConfigError(m); };
  if (o.port < 0 || o.port > 65535) bad("--port must be in [0, 65535], got " + std::to_string(o.port));
  if (o.max_batch < 1) bad("--max-batch must be at least 1, got " + std::to_string(o.max_batch));
  if (o.max_wait_ms < 0) bad("--max-wait-ms must be >= 0, got " + std::to_string(o.max_wait_ms));
  if (o.max_queue < 1) bad("--max-queue must be at least 1, got " + std::to_string(o.max_queue));
  if (!(o.timeout_s > 0)) bad("--timeout-s must be positive, got " + std::to_string(o.timeout_s));
  if (!(o.max_body_mb > 0)) bad("--max-body-mb must be positive, got " + std::to_string(o.max_body_mb));
  if (o.max_prompt_chars < 1) bad("--max-prompt-chars must be at least 1, got " + std::to_string(o.max_prompt_chars));
  if (o.max_image_pixels < 1) bad("--max-pixels must be at least 1, got " + std::to_string(o.max_image_pixels));
}
}  // namespace

int serve(const ServerOptions& options, const std::function<void(const std::string&)>& on_listening) {
  check_options(options);
  Service s;
  s.options = options;
  s.created = static_cast<int64_t>(std::time(nullptr));
  load_models(s);
  s.scheduler = std::make_unique<Scheduler>(*s.generator,
                                            SchedulerOptions{options.max_batch, options.max_wait_ms, options.max_queue},
                                            s.metrics, s.compute);

  httplib::Server http;
  // Every waiting request holds a thread: room for a full queue, a running batch and a few quick requests.
  const size_t threads = static_cast<size_t>(options.max_queue + options.max_batch + 8);
  http.new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
  http.set_payload_max_length(static_cast<size_t>(options.max_body_mb * 1024 * 1024));
  http.set_keep_alive_timeout(2);
  http.set_read_timeout(30);
  http.set_write_timeout(30);
  const double max_body_mb = options.max_body_mb;
  http.set_error_handler(httplib::Server::HandlerWithResponse([max_body_mb, &s](const httplib::Request& req,
                                                                                 httplib::Response& res) {
    if (!res.body.empty()) return httplib::Server::HandlerResponse::Unhandled;
    if (res.status == 404 && s.routes.count(req.path)) res.status = 405;
    std::string m;
    switch (res.status) {
      case 404: m = "no route " + req.method + " " + req.path + " (see docs/api.md)"; break;
      case 405: m = "method " + req.method + " is not allowed for " + req.path; break;
      case 413: m = "the request body exceeds the server's limit of " + json(max_body_mb).dump() + " MB (--max-body-mb)"; break;
      default: m = "HTTP " + std::to_string(res.status); break;
    }
    res.set_content(error_body(res.status, m), "application/json");
    return httplib::Server::HandlerResponse::Handled;
  }));
  add_common_routes(http, s);
  add_generation_routes(http, s);
  add_chat_routes(http, s);
  add_retrieval_routes(http, s);
  const std::string web_root = options.web_root.empty() ? default_web_root() : options.web_root;
  if (!http.set_mount_point("/", web_root))
    std::fprintf(stderr, "blip2 serve: no web page: %s is not a directory (see --web-root)\n", web_root.c_str());

  int port = options.port;
  if (port == 0)
    port = http.bind_to_any_port(options.host);
  else if (!http.bind_to_port(options.host, port))
    port = -1;
  if (port < 0)
    throw ConfigError("cannot listen on " + options.host + ":" + std::to_string(options.port) +
                      " (in use, or not an address of this machine); choose another --port or --host");

  std::signal(SIGPIPE, SIG_IGN);
  g_signal = 0;
  std::signal(SIGTERM, on_signal);
  std::signal(SIGINT, on_signal);
  std::thread listener([&http] { http.listen_after_bind(); });
  on_listening("http://" + options.host + ":" + std::to_string(port));

  while (g_signal == 0) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  // Drain: refuse new requests (503), let those in flight (queued, running, streaming) finish.
  s.draining = true;
  while (s.in_flight > 0) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  http.stop();
  listener.join();
  s.scheduler.reset();
  std::signal(SIGTERM, SIG_DFL);
  std::signal(SIGINT, SIG_DFL);
  return 0;
}

}  // namespace blip2::server
