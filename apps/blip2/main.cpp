// blip2: the command-line front end. Thin: each subcommand group registers
// itself (one file each, cli.h), parses flags into overrides of the
// library's config structs, calls the library and prints. Library errors
// become one line on stderr and exit code 1.
#include <cstdio>

#include "apps/blip2/cli.h"

int main(int argc, char** argv) {
  CLI::App app{"blip2: BLIP-2 in C++ (captioning, VQA, retrieval, training)"};
  app.require_subcommand(1);
  app.fallthrough();  // global flags (--verbose) may follow the subcommand
  blip2::cli::Registry registry(app);
  app.add_flag("-v,--verbose", registry.verbose, "print load time, resident memory and per-step timings to stderr");
  blip2::cli::add_tool_commands(registry);
  blip2::cli::add_inference_commands(registry);
  blip2::cli::add_train_commands(registry);
  blip2::cli::add_eval_commands(registry);
  blip2::cli::add_shapes_commands(registry);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  try {
    return registry.run();
  } catch (const blip2::Error& e) {
    std::fprintf(stderr, "blip2: error: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "blip2: internal error: %s\n", e.what());
    return 2;
  }
}
