// `blip2 serve` as a child process for the server's end-to-end tests: start
// it on a free port with the bundled shapes models, wait for its
// "listening on" line, talk to it with httplib's client, stop it.
#pragma once

#include <fcntl.h>
#include <httplib.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "e2e_util.h"

namespace blip2::test {

inline std::string bundled_model(const std::string& name) { return std::string(BLIP2_SOURCE_DIR) + "/models/shapes/" + name; }

class ServerProcess {
 public:
  // `args` are passed after `blip2 serve --port 0`.
  explicit ServerProcess(std::vector<std::string> args, const std::vector<std::string>& env = {}) {
    std::signal(SIGPIPE, SIG_IGN);  // a test that hangs up must not kill the test binary
    int out[2];
    if (::pipe(out) != 0) return;
    args.insert(args.begin(), {BLIP2_CLI, "serve", "--port", "0"});
    const std::string err_path = log_.file("stderr");
    pid_ = ::fork();
    if (pid_ == 0) {
      ::dup2(out[1], 1);
      const int err = ::open(err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      ::dup2(err, 2);
      ::close(out[0]);
      ::close(out[1]);
      for (const auto& e : env) ::putenv(const_cast<char*>(e.c_str()));
      std::vector<char*> argv;
      for (auto& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      ::execv(argv[0], argv.data());
      ::_exit(127);
    }
    ::close(out[1]);
    out_ = out[0];
    // Wait for "listening on http://127.0.0.1:PORT".
    std::string line;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(180);
    while (std::chrono::steady_clock::now() < deadline) {
      pollfd p{out_, POLLIN, 0};
      if (::poll(&p, 1, 200) <= 0) continue;
      char c;
      if (::read(out_, &c, 1) != 1) break;
      if (c != '\n') {
        line += c;
        continue;
      }
      const std::string prefix = "listening on http://";
      if (line.rfind(prefix, 0) == 0) {
        const std::string hostport = line.substr(prefix.size());
        port_ = std::stoi(hostport.substr(hostport.rfind(':') + 1));
        return;
      }
      line.clear();
    }
  }
  ~ServerProcess() {
    if (pid_ > 0 && !exited_) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
    if (out_ >= 0) ::close(out_);
  }
  ServerProcess(const ServerProcess&) = delete;
  ServerProcess& operator=(const ServerProcess&) = delete;

  int port() const { return port_; }
  bool ready() const { return port_ > 0; }
  std::string stderr_text() const {
    std::stringstream s;
    s << std::ifstream(log_.file("stderr")).rdbuf();
    return s.str();
  }
  httplib::Client client(const std::string& key = "") const {
    httplib::Client c("127.0.0.1", port_);
    c.set_read_timeout(120, 0);
    c.set_write_timeout(60, 0);
    if (!key.empty()) c.set_bearer_token_auth(key.c_str());
    return c;
  }
  // Sends `sig`; the exit status once the process ended (-1 when it did not within `seconds`).
  int stop(int sig, int seconds = 60) {
    ::kill(pid_, sig);
    for (int i = 0; i < seconds * 20; ++i) {
      int status = 0;
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        exited_ = true;
        return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      }
      ::usleep(50000);
    }
    return -1;
  }

 private:
  TempDir log_;
  pid_t pid_ = -1;
  int out_ = -1;
  int port_ = -1;
  bool exited_ = false;
};

inline std::string base64(const std::string& bytes) {
  static const char* k = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  size_t i = 0;
  for (; i + 2 < bytes.size(); i += 3) {
    const uint32_t v = (uint8_t(bytes[i]) << 16) | (uint8_t(bytes[i + 1]) << 8) | uint8_t(bytes[i + 2]);
    for (int s = 18; s >= 0; s -= 6) out += k[(v >> s) & 63];
  }
  if (i + 1 == bytes.size()) {
    const uint32_t v = uint8_t(bytes[i]) << 16;
    out += {k[(v >> 18) & 63], k[(v >> 12) & 63], '=', '='};
  } else if (i + 2 == bytes.size()) {
    const uint32_t v = (uint8_t(bytes[i]) << 16) | (uint8_t(bytes[i + 1]) << 8);
    out += {k[(v >> 18) & 63], k[(v >> 12) & 63], k[(v >> 6) & 63], '='};
  }
  return out;
}

// PNG bytes of a w x h image: a coloured square on a background, varied by `seed`.
inline std::string png_bytes(int seed, int w = 64, int h = 64) {
  TempDir dir;
  write_png(dir.file("i.png"), w, h, [seed](int x, int y) -> std::array<uint8_t, 3> {
    const bool inside = x > 10 + seed * 3 % 20 && x < 40 + seed * 5 % 20 && y > 12 && y < 44;
    if (inside) return {uint8_t(200 - seed * 37 % 150), uint8_t(seed * 53 % 255), uint8_t(40 + seed * 11 % 200)};
    return {uint8_t(240 - seed * 7 % 40), 240, 230};
  });
  std::stringstream s;
  s << std::ifstream(dir.file("i.png"), std::ios::binary).rdbuf();
  return s.str();
}

inline std::string data_uri(const std::string& png) { return "data:image/png;base64," + base64(png); }

}  // namespace blip2::test
