// blip2 serve: an HTTP front end over the facade (docs/api.md). It holds no
// model logic: requests become Pipeline calls (batched across clients by the
// Scheduler) and the results become JSON. The options here are the server's
// own (ports, limits, batching); generation defaults come from the library.
#pragma once

#include <functional>
#include <string>

#include "blip2/blip2.h"

namespace blip2::server {

struct ServerOptions {
  std::string model_dir;            // the generation model (may be a retrieval-only checkpoint)
  std::string retrieval_model_dir;  // a checkpoint with retrieval heads ("" none: -m serves them if it has them)
  std::string index_dir;            // a collection index (blip2 index build) for /v1/search ("" none)
  RuntimeOptions runtime;
  std::string host = "127.0.0.1";
  int port = 8080;                  // 0: any free port (printed on the listening line)
  std::string api_key;              // "" none: every route is open
  int max_batch = 8;                // generation requests run together
  int max_wait_ms = 10;             // how long the first request of a batch waits for others
  int max_queue = 64;               // waiting requests; more are refused with 429
  double timeout_s = 60;            // per request, queue wait included (504 after)
  double max_body_mb = 20;          // request bodies above are refused with 413
  int max_prompt_chars = 4000;      // prompt / question / text length (400 above)
  int max_texts = 64;               // texts of one /v1/match
  int64_t max_image_pixels = 4096LL * 4096;  // decoded image size (checked from the header; 400 above)
  std::string web_root;             // "" : default_web_root()
};

// apps/server/web beside the build tree's binary, or share/blip2/web installed.
std::string default_web_root();

// Loads the models, binds, calls `on_listening` with "http://HOST:PORT" (the
// CLI prints it) and serves until SIGTERM or SIGINT: then new requests get
// 503, those in flight finish, and it returns 0. Errors while starting are
// blip2::Error (ConfigError for an unusable option or a port in use).
int serve(const ServerOptions& options, const std::function<void(const std::string&)>& on_listening);

}  // namespace blip2::server
