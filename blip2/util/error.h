// Errors thrown by libblip2. Every message says what was expected, what was
// found and, where one exists, how to fix it. Frontends catch blip2::Error:
// the CLI prints one line and exits non-zero, the server answers JSON.
#pragma once

#include <stdexcept>
#include <string>
#include <vector>

namespace blip2 {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error(what) {}
};

// A config.json / generation option that is missing, mistyped or impossible.
class ConfigError : public Error {
 public:
  explicit ConfigError(const std::string& what) : Error(what) {}
};

// A checkpoint file that is missing, truncated, lies about its contents, or
// does not fit the config (shapes, names, dtypes).
class CheckpointError : public Error {
 public:
  explicit CheckpointError(const std::string& what) : Error(what) {}
};

// A tensor or value handed to the library at run time that has the wrong
// shape, dtype or range.
class InputError : public Error {
 public:
  explicit InputError(const std::string& what) : Error(what) {}
};

// A collection index (blip2/search) that is missing, corrupt, of another
// format version, or built by another model than the one given.
class IndexError : public Error {
 public:
  explicit IndexError(const std::string& what) : Error(what) {}
};

// "[2, 257, 1024]" for messages.
std::string shape_str(const std::vector<int64_t>& shape);

}  // namespace blip2
