// The key/value cache of one attention layer during incremental decoding.
#pragma once

#include <torch/torch.h>

namespace blip2 {

struct KVCache {
  torch::Tensor k, v;  // (N, H, S, Dh): N sequences, H heads, S cached positions
};

}  // namespace blip2
