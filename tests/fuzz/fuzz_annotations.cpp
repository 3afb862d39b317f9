// Annotation files: LAVIS caption lists (training) and questions.json (VQA
// evaluation). The first byte picks the reader.
#include "blip2/data/caption_dataset.h"
#include "blip2/eval/annotations.h"
#include "fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const std::string text(reinterpret_cast<const char*>(data + 1), size - 1);
  BLIP2_FUZZ_ACCEPT_ERRORS({
    if (data[0] & 1) {
      blip2::fuzz::write_file("questions.json", text);
      auto set = blip2::annotations::read_vqa_set(blip2::fuzz::scratch_dir(), 0);
      if (set.questions.size() != set.paths.size()) std::abort();
    } else {
      blip2::CaptionDatasetOptions o;
      o.check_images = false;
      auto ds = blip2::CaptionDataset::from_json_text(text, "/nonexistent", o, "captions.json");
      for (size_t i = 0; i < ds.size(); ++i)
        if (ds.record(i).captions.empty()) std::abort();
    }
  });
  return 0;
}
