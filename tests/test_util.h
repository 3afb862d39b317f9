// Shared helpers for the test suite.
#pragma once

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <string>

namespace blip2::test {

// ../shared/golden beside the repository (overridable with BLIP2_GOLDEN_DIR).
inline std::string golden_dir() {
  if (const char* env = std::getenv("BLIP2_GOLDEN_DIR")) return env;
  return BLIP2_GOLDEN_DIR;
}

inline std::string golden(const std::string& rel) { return golden_dir() + "/" + rel; }

// A fresh empty directory under the system temp dir, removed at destruction.
class TempDir {
 public:
  TempDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "blip2test-XXXXXX").string();
    path_ = ::mkdtemp(tmpl.data()) ? tmpl : "";
  }
  ~TempDir() {
    std::error_code ec;
    if (!path_.empty()) std::filesystem::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }
  std::string file(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

// Expects `stmt` to throw ExcType whose what() contains `needle`.
#define EXPECT_THROW_WITH(stmt, ExcType, needle)                                          \
  do {                                                                                    \
    try {                                                                                 \
      stmt;                                                                               \
      ADD_FAILURE() << "expected " #ExcType " containing \"" << (needle) << "\"";         \
    } catch (const ExcType& e) {                                                          \
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos)                    \
          << "message was: " << e.what();                                                 \
    }                                                                                     \
  } while (0)

}  // namespace blip2::test
