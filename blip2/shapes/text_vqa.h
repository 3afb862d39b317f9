// The zero-shot VQA ceiling of the shapes world: a pretrained LM alone,
// reading each question's scene as text.
#pragma once

#include <nlohmann/json.hpp>

#include <string>

#include "blip2/config/config.h"
#include "blip2/eval/evaluate.h"

namespace blip2 {

// The frozen LM alone, reading each question's scene as text: the first
// reference caption of its image (captions.json) stands in the context slot
// where BLIP-2 puts the visual prompt (LmText, docs/pretraining.md), then the
// VQA prompt; answers decoded as evaluate_vqa does (same output). The LM
// directory is a `blip2 pretrain lm` output (model.safetensors under the LM's
// own names + tokenizer); `text` its dimensions. What zero-shot VQA through
// the Q-Former could reach if the queries carried the caption perfectly.
nlohmann::json evaluate_text_vqa(const std::string& lm_dir, const TextConfig& text, const std::string& data_dir,
                                 const EvalOptions& options = {});

}  // namespace blip2
