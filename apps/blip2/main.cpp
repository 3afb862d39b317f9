// blip2: the command-line frontend. Thin: parse flags, call the library,
// print. Errors from the library become one line on stderr and exit code 1.
#include <CLI/CLI.hpp>

#include <cstdio>
#include <iostream>
#include <string>

#include "blip2/eval/verify.h"
#include "blip2/util/error.h"

namespace {

int run_verify(const std::string& case_dir, bool verbose) {
  blip2::VerifyOptions opts;
  opts.verbose = verbose;
  opts.log = [](const std::string& s) { std::cerr << s << "\n"; };
  auto r = blip2::verify_case(case_dir, opts);
  for (const auto& l : r.lines) {
    std::printf("%s %.3g %s", l.name.c_str(), l.max_abs_diff, l.ok ? "ok" : "FAIL");
    if (!l.ok && !l.note.empty()) std::printf("  (%s)", l.note.c_str());
    std::printf("\n");
  }
  std::printf("%d passed, %d failed\n", r.passed, r.failed);
  return r.ok() ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"blip2: BLIP-2 in C++ (captioning, VQA, retrieval, training)"};
  app.require_subcommand(1);
  app.fallthrough();  // global flags (--verbose) may follow the subcommand
  bool verbose = false;
  app.add_flag("-v,--verbose", verbose, "print load time, resident memory and per-step timings to stderr");

  std::string case_dir;
  auto* verify = app.add_subcommand("verify", "replay a reference dump (meta.json plan) and compare every output tensor");
  verify->add_option("case_dir", case_dir, "case directory with meta.json, model + inputs/outputs safetensors")
      ->required();

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  try {
    if (*verify) return run_verify(case_dir, verbose);
  } catch (const blip2::Error& e) {
    std::fprintf(stderr, "blip2: error: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "blip2: internal error: %s\n", e.what());
    return 2;
  }
  return 0;
}
