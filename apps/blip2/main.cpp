// blip2: the command-line front end. Thin: each subcommand group registers
// itself (one file each, cli.h), parses flags into overrides of the
// library's config structs, calls the library and prints. Exit status: 0 on
// success, 2 for a usage error (unknown command or flag, bad flag value), 1
// for every other error, reported as one line on stderr.
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
  blip2::cli::add_bench_commands(registry);
  blip2::cli::add_search_commands(registry);
  blip2::cli::add_serve_commands(registry);

  // A first word that is not a flag must name a command (CLI11 would only say
  // that a subcommand is required).
  if (argc > 1 && argv[1][0] != '-' && !registry.is_command(argv[1])) {
    std::fprintf(stderr, "blip2: error: unknown command '%s'; the commands are: %s (see blip2 --help)\n", argv[1],
                 registry.command_names().c_str());
    return 2;
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // --help and --version exit 0; every usage error exits 2.
    return app.exit(e) == 0 ? 0 : 2;
  }
  try {
    return registry.run();
  } catch (const blip2::Error& e) {
    std::fprintf(stderr, "blip2: error: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "blip2: internal error: %s\n", e.what());
    return 1;
  }
}
