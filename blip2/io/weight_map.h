// Parameter names of the checkpoints people have: LAVIS (Salesforce's
// original code) <-> HuggingFace (the names our modules carry).
#pragma once

#include <optional>
#include <string>

namespace blip2::io {

// The HF name of a LAVIS state-dict key, or nullopt for keys that carry no
// parameter of their own (buffers such as position_ids, tied copies such as
// Qformer.cls.predictions.decoder.*). Unknown keys are returned unchanged.
std::optional<std::string> lavis_to_hf(const std::string& lavis_name);

// The LAVIS key of an HF name (inverse of lavis_to_hf). `lm` selects the
// LAVIS prefix of the language model: "opt" (opt_model/opt_proj) or "t5".
std::string hf_to_lavis(const std::string& hf_name, const std::string& lm = "opt");

// True when the names look like a LAVIS state dict (Qformer.bert.*, visual_encoder.*, ...).
bool looks_like_lavis(const std::string& any_name);

}  // namespace blip2::io
