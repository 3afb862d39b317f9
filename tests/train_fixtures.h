// What a tiny training run needs on disk, for the trainer tests.
#pragma once

#include <fstream>
#include <string>

#include "blip2/train/train_config.h"
#include "model_fixtures.h"

namespace blip2::test {

// A stage-1 recipe over files it writes to `dir`: a WordPiece vocabulary for
// the Q-Former's text side ([DEC] included; the words of the tests' shape
// captions) and the tiny OPT model's config.json; batches of 4.
inline TrainConfig tiny_stage1_recipe(const std::string& dir) {
  {
    std::ofstream v(dir + "/vocab.txt");
    for (const char* t : {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "red", "blue", "green", "circle",
                          "square", "star", "small", "large", "[DEC]"})
      v << t << "\n";
  }
  std::ofstream(dir + "/config.json") << tiny_config("opt").to_json_string();
  TrainConfig c;
  c.stage = 1;
  c.model_config = dir + "/config.json";
  c.qformer_tokenizer = dir;
  c.batch_size = 4;
  return c;
}

}  // namespace blip2::test
