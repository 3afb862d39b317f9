#include "blip2/train/distributed.h"

#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#include <torch/torch.h>

#include <cstdlib>

#include "blip2/util/error.h"

namespace blip2 {

namespace {

int env_int(const char* name, int fallback, bool required) {
  const char* v = std::getenv(name);
  if (!v || !*v) {
    if (required) throw ConfigError(std::string("environment variable ") + name + " is required for distributed training");
    return fallback;
  }
  char* end = nullptr;
  long x = std::strtol(v, &end, 10);
  if (*end != '\0' || x < 0 || x > 1 << 20)
    throw ConfigError(std::string("environment variable ") + name + "='" + v + "' must be a non-negative integer");
  return static_cast<int>(x);
}

// LAVIS GatherLayer: all-gather whose backward all-reduces the incoming
// gradient and returns this rank's slice, so every rank's features receive
// the gradient of every rank's loss.
struct GatherWithGrad : public torch::autograd::Function<GatherWithGrad> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, torch::Tensor t, int64_t pg_ptr) {
    auto* pg = reinterpret_cast<c10d::ProcessGroupGloo*>(pg_ptr);
    ctx->saved_data["pg"] = pg_ptr;
    ctx->saved_data["n"] = t.size(0);
    std::vector<std::vector<torch::Tensor>> out(1);
    for (int i = 0; i < pg->getSize(); ++i) out[0].push_back(torch::empty_like(t));
    std::vector<torch::Tensor> in{t.contiguous()};
    pg->allgather(out, in)->wait();
    return torch::cat(out[0], 0);
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    auto* pg = reinterpret_cast<c10d::ProcessGroupGloo*>(ctx->saved_data["pg"].toInt());
    const int64_t n = ctx->saved_data["n"].toInt();
    std::vector<torch::Tensor> g{grads[0].contiguous()};
    pg->allreduce(g)->wait();
    const int64_t r = pg->getRank();
    return {g[0].slice(0, r * n, (r + 1) * n), torch::Tensor()};
  }
};

class GlooCollective : public Collective {
 public:
  GlooCollective(const DistEnv& env, int timeout_s) : env_(env) {
    c10d::TCPStoreOptions so;
    so.port = static_cast<std::uint16_t>(env.master_port);
    so.isServer = env.rank == 0;
    so.numWorkers = static_cast<std::size_t>(env.world_size);
    so.waitWorkers = true;
    so.timeout = std::chrono::seconds(timeout_s);
    try {
      store_ = c10::make_intrusive<c10d::TCPStore>(env.master_addr, so);
      auto opts = c10d::ProcessGroupGloo::Options::create(std::chrono::seconds(timeout_s));
      opts->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname(env.master_addr));
      pg_ = c10::make_intrusive<c10d::ProcessGroupGloo>(store_, env.rank, env.world_size, opts);
    } catch (const std::exception& e) {
      throw Error("distributed rendezvous at " + env.master_addr + ":" + std::to_string(env.master_port) +
                  " failed for rank " + std::to_string(env.rank) + " of " + std::to_string(env.world_size) + ": " +
                  e.what() + "; check MASTER_ADDR/MASTER_PORT and that every rank was started");
    }
  }
  int rank() const override { return env_.rank; }
  int world_size() const override { return env_.world_size; }

  at::Tensor all_gather(const at::Tensor& t) override {
    torch::NoGradGuard g;
    std::vector<std::vector<at::Tensor>> out(1);
    for (int i = 0; i < env_.world_size; ++i) out[0].push_back(torch::empty_like(t));
    std::vector<at::Tensor> in{t.detach().contiguous()};
    pg_->allgather(out, in)->wait();
    return torch::cat(out[0], 0);
  }

  at::Tensor all_gather_with_grad(const at::Tensor& t) override {
    return GatherWithGrad::apply(t, reinterpret_cast<int64_t>(pg_.get()));
  }

  void all_reduce_mean(std::vector<at::Tensor>& ts) override {
    if (ts.empty()) return;
    std::vector<at::Tensor> flat;
    for (auto& t : ts) flat.push_back(t.reshape({-1}));
    std::vector<at::Tensor> buf{torch::cat(flat)};
    pg_->allreduce(buf)->wait();
    buf[0].div_(env_.world_size);
    int64_t off = 0;
    for (auto& t : ts) {
      const int64_t n = t.numel();
      t.copy_(buf[0].slice(0, off, off + n).view(t.sizes()));
      off += n;
    }
  }

  void broadcast(std::vector<at::Tensor>& ts, int root) override {
    c10d::BroadcastOptions o;
    o.rootRank = root;
    for (auto& t : ts) {
      std::vector<at::Tensor> one{t};
      pg_->broadcast(one, o)->wait();
    }
  }

  void barrier() override { pg_->barrier()->wait(); }

 private:
  DistEnv env_;
  c10::intrusive_ptr<c10d::TCPStore> store_;
  c10::intrusive_ptr<c10d::ProcessGroupGloo> pg_;
};

}  // namespace

std::optional<DistEnv> DistEnv::from_env() {
  const int world = env_int("WORLD_SIZE", 1, false);
  if (world <= 1) return std::nullopt;
  DistEnv e;
  e.world_size = world;
  e.rank = env_int("RANK", 0, true);
  e.local_rank = env_int("LOCAL_RANK", e.rank, false);
  e.master_port = env_int("MASTER_PORT", 29500, true);
  if (const char* a = std::getenv("MASTER_ADDR")) e.master_addr = a;
  else throw ConfigError("environment variable MASTER_ADDR is required for distributed training");
  if (e.rank >= e.world_size)
    throw ConfigError("RANK=" + std::to_string(e.rank) + " must be smaller than WORLD_SIZE=" + std::to_string(e.world_size));
  if (e.master_port < 1 || e.master_port > 65535)
    throw ConfigError("MASTER_PORT=" + std::to_string(e.master_port) + " must be a TCP port (1-65535)");
  return e;
}

std::unique_ptr<Collective> make_gloo_collective(const DistEnv& env, int timeout_s) {
  return std::make_unique<GlooCollective>(env, timeout_s);
}

}  // namespace blip2
