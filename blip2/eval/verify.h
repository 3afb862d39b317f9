// Replays a reference dump (a case directory of ../shared/golden form):
// loads the checkpoint, runs every operation of meta.json's `plan` on the
// tensors of inputs.safetensors and compares every tensor of
// outputs.safetensors with a stated tolerance.
#pragma once

#include <functional>
#include <string>
#include <vector>

namespace blip2 {

struct VerifyLine {
  std::string name;
  double max_abs_diff = 0;
  bool ok = false;
  std::string note;  // why it failed (shape, not produced, op error), or the tolerance
};

struct VerifyResult {
  std::vector<VerifyLine> lines;
  int passed = 0;
  int failed = 0;
  double load_seconds = 0;
  bool ok() const { return failed == 0 && !lines.empty(); }
};

struct VerifyOptions {
  bool verbose = false;
  // Called with progress/diagnostic text (load time, resident memory, op timings).
  std::function<void(const std::string&)> log;
  // The weights' dtype the case's model loads in (--dtype). "int8"
  // (quantised on load): every tensor's max error is reported, none is held
  // to the float tolerances (tests/parity/golden_int8_test.cpp bounds them).
  std::string dtype = "float32";
};

// Throws blip2::Error when the case directory itself is unusable (missing
// meta.json, unreadable files); per-tensor problems become failed lines.
VerifyResult verify_case(const std::string& case_dir, const VerifyOptions& options = {});

// Tolerance used for a tensor name: |got - want| <= abs + rel * |want|.
struct Tolerance {
  double abs = 0, rel = 0;
  bool exact = false;
};
Tolerance tolerance_for(const std::string& name, bool integer);

}  // namespace blip2
