// Checkpoint conversion between LAVIS (.pth, Salesforce's training code) and
// HuggingFace (model.safetensors) layouts, without Python.
//
//   LAVIS .pth  -> HF dir:  <dst>/model.safetensors (+ <dst>/config.json when given)
//   HF dir/file -> LAVIS:   <dst> if it ends in ".pth", else <dst>/model.pth
//
// The direction follows `src`: a directory holding model.safetensors (or a
// shard index), a .safetensors file or a model.safetensors.index.json is HF;
// anything else is read as a torch.save file (see torch_checkpoint.h), so an HF
// pytorch_model.bin converts to safetensors too (its names pass unchanged).
//
// Names are mapped with lavis_to_hf / hf_to_lavis (weight_map.h). The EVA ViT's
// separate attn.q_bias / attn.v_bias become self_attn.qkv.bias =
// cat(q_bias, zeros, v_bias) as HF checkpoints hold it, and are split back on
// the way to LAVIS. LAVIS entries HF has no tensor for (tied copies such as
// Qformer.cls.predictions.decoder.*, buffers such as position_ids) are skipped
// and listed in the report.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace blip2::io {

struct ConvertOptions {
  // HF config.json to copy to <dst>/config.json (LAVIS -> HF). Empty: none is
  // written (LAVIS checkpoints carry no HF config), and the report says so.
  std::string config_json;
  // The .pth entry holding the state dict; "" = auto (see load_torch_checkpoint).
  std::string key;
  // HF -> LAVIS: the LAVIS prefix of the language model, "opt" (opt_model /
  // opt_proj) or "t5" (t5_model / t5_proj); "" = t5 when the names hold a T5
  // encoder (language_model.encoder.*), else opt.
  std::string lm;
  // Cast floating-point tensors: "" (keep), "float32", "float16", "bfloat16"
  // (also "fp32", "fp16", "bf16").
  std::string dtype;
};

struct ConvertReport {
  std::string direction;              // "lavis->hf" or "hf->lavis"
  std::string output;                 // the checkpoint file written
  std::string config_output;          // <dst>/config.json, or "" when none was written
  size_t tensors_read = 0;
  size_t tensors_written = 0;
  std::vector<std::string> skipped;   // source names not written, each with the reason
  std::vector<std::string> merged;    // "a + b -> c" / "c -> a + b" (qkv biases)
  uint64_t bytes_written = 0;         // size of `output` (and of config_output)
  std::vector<std::string> notes;     // what the user should know (no config.json, missing parts, ...)
  std::string summary() const;        // a few human-readable lines
};

// Throws CheckpointError (unreadable or inconsistent input, two names mapping
// to one), ConfigError (config_json not a JSON object) or InputError (bad options).
ConvertReport convert_checkpoint(const std::string& src, const std::string& dst_dir,
                                 const ConvertOptions& options = {});

}  // namespace blip2::io
