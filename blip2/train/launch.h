// Multi-process launch on one machine, torchrun-style: N copies of a program
// with RANK / LOCAL_RANK / WORLD_SIZE / MASTER_ADDR / MASTER_PORT set, the
// rendezvous on loopback (c10d TCPStore, see distributed.h).
#pragma once

#include <string>
#include <vector>

namespace blip2 {

struct LaunchOptions {
  int nproc = 1;
  int master_port = 0;  // 0: a free port
  std::string program;  // the executable; empty: this process's own (/proc/self/exe)
};

// Runs `program args...` in options.nproc processes and waits for all of
// them. A failing rank stops the others (SIGTERM); the result is the first
// non-zero exit status (128 + signal for a killed rank), else 0.
int launch_processes(const std::vector<std::string>& args, const LaunchOptions& options);

// A TCP port on 127.0.0.1 that is free now (29500 if none can be found).
int free_port();

}  // namespace blip2
