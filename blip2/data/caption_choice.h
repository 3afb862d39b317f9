// Which of a record's captions a training sample carries (data.caption_choice).
#pragma once

namespace blip2 {

enum class CaptionChoice {
  kRandom,  // one at random, drawn per epoch (LAVIS)
  kFirst,   // always the first: a data set whose first caption is its canonical one
            // (the shapes world's: the left or upper object first)
};

}  // namespace blip2
