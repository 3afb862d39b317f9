// What the stage-1 losses need from data parallelism: rank, world size and
// all-gathers (ITC negatives come from every worker). One process: identity.
#pragma once

#include <torch/types.h>

#include <vector>

namespace blip2 {

class Collective {
 public:
  virtual ~Collective() = default;
  virtual int rank() const { return 0; }
  virtual int world_size() const { return 1; }
  // Concatenation along dim 0 of every rank's tensor, without gradient (LAVIS concat_all_gather).
  // (LAVIS semantics even with one process: the gathered copy is detached, so
  // gradients reach the features only through the local side of each similarity.)
  virtual at::Tensor all_gather(const at::Tensor& t) { return t.detach(); }
  // The same, with the local slice keeping its gradient (LAVIS all_gather_with_grad).
  virtual at::Tensor all_gather_with_grad(const at::Tensor& t) { return t; }
  // In-place average of tensors over ranks (gradients).
  virtual void all_reduce_mean(std::vector<at::Tensor>& ts) {}
  // In-place copy of `root`'s tensors to every rank.
  virtual void broadcast(std::vector<at::Tensor>& ts, int root) {}
  virtual void barrier() {}
};

// The single-process collective.
Collective& local_collective();

}  // namespace blip2
