// A config.json is checked against the checkpoint it sits beside before any
// module is built, so that no config value (10^9 layers, a 10^12 vocabulary,
// 10^9 query tokens) can make the loader allocate more than the checkpoint
// implies, or spend minutes building modules that no tensor will fill.
#pragma once

#include <cstdint>
#include <string>

#include "blip2/config/config.h"

namespace blip2 {

namespace io {
class TensorStore;
}
struct Blip2Parts;

// Layers per stack as the checkpoint stores them (HF or LAVIS names);
// -1 where the checkpoint holds no layer of that stack.
struct StoredLayers {
  int64_t vision = -1, qformer = -1, text = -1, text_decoder = -1;
};
StoredLayers count_stored_layers(const io::TensorStore& store);

// A lower bound of the parameters `config` builds for `parts`: the layers'
// matrices, the embeddings and the query tokens.
double implied_parameters(const Blip2Config& config, const Blip2Parts& parts);

// ConfigError naming `config_path`, the field and both numbers when a stack
// has more layers than the checkpoint stores, or when the implied parameters
// exceed what the checkpoint holds.
void check_config_fits(const Blip2Config& config, const Blip2Parts& parts, const io::TensorStore& store,
                       const std::string& config_path);

}  // namespace blip2
