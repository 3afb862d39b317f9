// blip2 serve: the HTTP server (apps/server, docs/api.md). The flags are
// overrides of the server's options; generation defaults stay the library's.
#include <cstdio>
#include <cstdlib>
#include <memory>

#include "apps/blip2/cli.h"
#include "apps/server/server.h"

namespace blip2::cli {

void add_serve_commands(Registry& r) {
  struct Serve {
    ModelFlags model;
    std::string retrieval_model, index, web_root;
    std::optional<std::string> host, api_key;
    std::optional<int> port, max_batch, max_wait_ms, max_queue, max_prompt_chars;
    std::optional<int64_t> max_pixels;
    std::optional<double> timeout_s, max_body_mb;
  };
  auto c = std::make_shared<Serve>();
  auto* serve = r.add(nullptr, "serve", "serve the model over HTTP: OpenAI-compatible chat, native API, web page", [c] {
    server::ServerOptions o;
    o.model_dir = c->model.dir();
    o.runtime = c->model.runtime();
    o.retrieval_model_dir = c->retrieval_model;
    o.index_dir = c->index;
    o.web_root = c->web_root;
    if (c->host) o.host = *c->host;
    if (c->port) o.port = *c->port;
    if (c->api_key) {
      o.api_key = *c->api_key;
    } else if (const char* env = std::getenv("BLIP2_API_KEY")) {
      o.api_key = env;
    }
    if (c->max_batch) o.max_batch = *c->max_batch;
    if (c->max_wait_ms) o.max_wait_ms = *c->max_wait_ms;
    if (c->max_queue) o.max_queue = *c->max_queue;
    if (c->timeout_s) o.timeout_s = *c->timeout_s;
    if (c->max_body_mb) o.max_body_mb = *c->max_body_mb;
    if (c->max_prompt_chars) o.max_prompt_chars = *c->max_prompt_chars;
    if (c->max_pixels) o.max_image_pixels = *c->max_pixels;
    return server::serve(o, [](const std::string& url) {
      std::printf("listening on %s\n", url.c_str());
      std::fflush(stdout);
    });
  });
  add_model_flags(serve, c->model);
  const server::ServerOptions d;
  serve->add_option("--retrieval-model", c->retrieval_model,
                    "a checkpoint with retrieval heads for /v1/embeddings, /v1/match, /v1/search "
                    "(default: -m when it has them)");
  serve->add_option("--index", c->index, "a collection index (blip2 index build) to serve /v1/search");
  serve->add_option("--host", c->host, "address to bind (default " + d.host + ")");
  serve->add_option("--port", c->port, "port (default " + std::to_string(d.port) + "; 0 picks a free one)");
  serve->add_option("--api-key", c->api_key, "require 'Authorization: Bearer KEY' (default: $BLIP2_API_KEY, else none)");
  serve->add_option("--max-batch", c->max_batch, "requests generated together (default " + std::to_string(d.max_batch) + ")");
  serve->add_option("--max-wait-ms", c->max_wait_ms,
                    "how long a batch waits for more requests (default " + std::to_string(d.max_wait_ms) + ")");
  serve->add_option("--max-queue", c->max_queue,
                    "waiting requests before 429 (default " + std::to_string(d.max_queue) + ")");
  serve->add_option("--timeout-s", c->timeout_s, "per-request timeout in seconds, queue wait included (default " + std::to_string(static_cast<int>(d.timeout_s)) + ")");
  serve->add_option("--max-body-mb", c->max_body_mb, "largest request body in MB, 413 above (default " + std::to_string(static_cast<int>(d.max_body_mb)) + ")");
  serve->add_option("--max-prompt-chars", c->max_prompt_chars,
                    "longest prompt, question or text in characters, 400 above (default " +
                        std::to_string(d.max_prompt_chars) + ")");
  serve->add_option("--max-pixels", c->max_pixels,
                    "largest decoded image in pixels, checked from its header, 400 above (default " +
                        std::to_string(d.max_image_pixels) + ")");
  serve->add_option("--web-root", c->web_root, "directory of the web page (default: apps/server/web)");
}

}  // namespace blip2::cli
