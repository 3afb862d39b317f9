// Shared by the libFuzzer targets (tests/fuzz, scripts/fuzz). A target feeds
// one input to one reader; the reader may reject it only with blip2::Error
// (the CLI's one-line error). Any other exception, a crash, a sanitizer
// report, a leak of time or memory past libFuzzer's limits is a finding.
#pragma once

#include <stdlib.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "blip2/util/error.h"

namespace blip2::fuzz {

// A private directory for the files the readers take by path.
inline const std::string& scratch_dir() {
  static const std::string dir = [] {
    char tmpl[] = "/tmp/blip2fuzz-XXXXXX";
    const char* d = ::mkdtemp(tmpl);
    return std::string(d ? d : "/tmp");
  }();
  return dir;
}

// Writes `size` bytes to scratch_dir()/name and returns the path.
inline std::string write_file(const std::string& name, const uint8_t* data, size_t size) {
  const std::string path = scratch_dir() + "/" + name;
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) std::abort();
  if (size > 0 && std::fwrite(data, 1, size, f) != size) std::abort();
  std::fclose(f);
  return path;
}

inline std::string write_file(const std::string& name, const std::string& s) {
  return write_file(name, reinterpret_cast<const uint8_t*>(s.data()), s.size());
}

// Sums bytes so the reads cannot be optimised away (and ASan sees each one).
inline uint64_t touch(const void* p, size_t n) {
  const auto* b = static_cast<const uint8_t*>(p);
  uint64_t s = 0;
  for (size_t i = 0; i < n; ++i) s += b[i];
  return s;
}

// Splits an input into up to `n` parts at the separator line "\n--8<--\n"
// (how a seed packs several files into one input).
inline std::vector<std::string> split_parts(const uint8_t* data, size_t size, size_t n) {
  const std::string all(reinterpret_cast<const char*>(data), size);
  const std::string sep = "\n--8<--\n";
  std::vector<std::string> parts;
  size_t at = 0;
  while (parts.size() + 1 < n) {
    const size_t next = all.find(sep, at);
    if (next == std::string::npos) break;
    parts.push_back(all.substr(at, next - at));
    at = next + sep.size();
  }
  parts.push_back(all.substr(at));
  return parts;
}

}  // namespace blip2::fuzz

// The body runs; blip2::Error is an accepted rejection.
#define BLIP2_FUZZ_ACCEPT_ERRORS(body) \
  do {                                 \
    try {                              \
      body                             \
    } catch (const blip2::Error&) {    \
    }                                  \
  } while (0)
