// Data parallelism on c10d: ProcessGroupGloo over a TCPStore rendezvous,
// configured from torchrun's environment (MASTER_ADDR, MASTER_PORT, RANK,
// WORLD_SIZE, LOCAL_RANK). Kept out of collective.h so only the trainer's
// frontends include the c10d headers.
#pragma once

#include <memory>
#include <optional>
#include <string>

#include "blip2/train/collective.h"

namespace blip2 {

struct DistEnv {
  int rank = 0, world_size = 1, local_rank = 0;
  std::string master_addr = "127.0.0.1";
  int master_port = 29500;
  // From torchrun's variables; nullopt when WORLD_SIZE is unset or 1.
  // Throws ConfigError on inconsistent or malformed values, naming the variable.
  static std::optional<DistEnv> from_env();
};

// A Gloo process group (CPU tensors; NCCL where libtorch has CUDA is not
// wired yet). Blocks until every rank has joined or `timeout_s` passes.
std::unique_ptr<Collective> make_gloo_collective(const DistEnv& env, int timeout_s = 300);

}  // namespace blip2
