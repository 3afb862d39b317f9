#include "blip2/train/launch.h"

#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>

#include "blip2/util/error.h"

extern char** environ;

namespace blip2 {

int free_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  socklen_t len = sizeof a;
  int port = 29500;
  if (fd >= 0 && ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0 &&
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0)
    port = ntohs(a.sin_port);
  if (fd >= 0) ::close(fd);
  return port;
}

int launch_processes(const std::vector<std::string>& args, const LaunchOptions& options) {
  if (options.nproc < 1) throw ConfigError("--nproc must be at least 1");
  if (args.empty())
    throw InputError("give the command to run after --, e.g. blip2 launch --nproc 2 -- train --config c.yaml");
  const int port = options.master_port > 0 ? options.master_port : free_port();
  std::string self = options.program;
  if (self.empty()) {
    std::error_code ec;
    self = std::filesystem::read_symlink("/proc/self/exe", ec).string();
  }
  std::vector<pid_t> pids;
  for (int r = 0; r < options.nproc; ++r) {
    std::vector<std::string> env;
    for (char** e = environ; *e; ++e) {
      std::string s(*e);
      for (const char* k : {"RANK=", "WORLD_SIZE=", "LOCAL_RANK=", "MASTER_ADDR=", "MASTER_PORT="})
        if (s.rfind(k, 0) == 0) s.clear();
      if (!s.empty()) env.push_back(s);
    }
    env.push_back("RANK=" + std::to_string(r));
    env.push_back("LOCAL_RANK=" + std::to_string(r));
    env.push_back("WORLD_SIZE=" + std::to_string(options.nproc));
    env.push_back("MASTER_ADDR=127.0.0.1");
    env.push_back("MASTER_PORT=" + std::to_string(port));
    std::vector<char*> argv{const_cast<char*>(self.c_str())}, envp;
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    for (auto& e : env) envp.push_back(e.data());
    envp.push_back(nullptr);
    pid_t pid = 0;
    if (::posix_spawn(&pid, self.c_str(), nullptr, nullptr, argv.data(), envp.data()) != 0)
      throw Error("cannot start rank " + std::to_string(r) + " (" + self + ")");
    pids.push_back(pid);
  }
  int result = 0;
  size_t alive = pids.size();
  while (alive > 0) {
    int status = 0;
    pid_t pid = ::wait(&status);
    if (pid < 0) break;
    --alive;
    const int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    if (code != 0 && result == 0) {
      result = code;
      int rank = 0;
      for (size_t i = 0; i < pids.size(); ++i)
        if (pids[i] == pid) rank = static_cast<int>(i);
      std::fprintf(stderr, "blip2 launch: rank %d exited with status %d; stopping the other ranks\n", rank, code);
      for (pid_t p : pids)
        if (p != pid) ::kill(p, SIGTERM);
    }
  }
  return result;
}

}  // namespace blip2
