#include "blip2/io/weight_map.h"

#include <regex>
#include <utility>
#include <vector>

namespace blip2::io {

namespace {

bool starts(const std::string& s, const std::string& p) { return s.compare(0, p.size(), p) == 0; }

// Ordered (pattern, replacement) rules applied with std::regex_replace; the
// first rule that matches wins. Written from LAVIS's module layout
// (blip2_qformer.py, Qformer.py, eva_vit.py) and HF's Blip2 modules.
struct Rule {
  std::regex from;
  std::string to;
};

const std::vector<Rule>& lavis_rules() {
  static const std::vector<Rule> rules = [] {
    std::vector<std::pair<const char*, const char*>> raw = {
        // EVA ViT
        {R"(^visual_encoder\.cls_token$)", "vision_model.embeddings.class_embedding"},
        {R"(^visual_encoder\.pos_embed$)", "vision_model.embeddings.position_embedding"},
        {R"(^visual_encoder\.patch_embed\.proj\.(weight|bias)$)", "vision_model.embeddings.patch_embedding.$1"},
        {R"(^visual_encoder\.blocks\.(\d+)\.norm1\.)", "vision_model.encoder.layers.$1.layer_norm1."},
        {R"(^visual_encoder\.blocks\.(\d+)\.norm2\.)", "vision_model.encoder.layers.$1.layer_norm2."},
        {R"(^visual_encoder\.blocks\.(\d+)\.attn\.qkv\.)", "vision_model.encoder.layers.$1.self_attn.qkv."},
        {R"(^visual_encoder\.blocks\.(\d+)\.attn\.(q_bias|v_bias)$)", "vision_model.encoder.layers.$1.self_attn.$2"},
        {R"(^visual_encoder\.blocks\.(\d+)\.attn\.proj\.)", "vision_model.encoder.layers.$1.self_attn.projection."},
        {R"(^visual_encoder\.blocks\.(\d+)\.mlp\.)", "vision_model.encoder.layers.$1.mlp."},
        {R"(^ln_vision\.)", "vision_model.post_layernorm."},
        // Q-Former
        {R"(^Qformer\.bert\.embeddings\.LayerNorm\.)", "qformer.layernorm."},
        {R"(^Qformer\.bert\.embeddings\.(word_embeddings|position_embeddings)\.)", "embeddings.$1."},
        {R"(^Qformer\.bert\.encoder\.layer\.(\d+)\.(attention|crossattention)\.self\.)",
         "qformer.encoder.layer.$1.$2.attention."},
        {R"(^Qformer\.bert\.encoder\.)", "qformer.encoder."},
        {R"(^Qformer\.cls\.predictions\.transform\.)", "text_decoder_head.transform."},
        {R"(^Qformer\.cls\.predictions\.bias$)", "text_decoder_head.bias"},
        // heads and projections
        {R"(^vision_proj\.)", "vision_projection."},
        {R"(^text_proj\.)", "text_projection."},
        {R"(^(opt|t5)_proj\.)", "language_projection."},
        {R"(^(opt|t5)_model\.)", "language_model."},
    };
    std::vector<Rule> out;
    for (const auto& [f, t] : raw) out.push_back({std::regex(f), t});
    return out;
  }();
  return rules;
}

}  // namespace

std::optional<std::string> lavis_to_hf(const std::string& n) {
  if (n == "Qformer.bert.embeddings.position_ids" || starts(n, "Qformer.cls.predictions.decoder.")) return std::nullopt;
  for (const auto& r : lavis_rules())
    if (std::regex_search(n, r.from)) return std::regex_replace(n, r.from, r.to, std::regex_constants::format_first_only);
  return n;
}

std::string hf_to_lavis(const std::string& n, const std::string& lm) {
  static const std::vector<std::pair<std::regex, std::string>> rules = [] {
    std::vector<std::pair<const char*, const char*>> raw = {
        {R"(^vision_model\.embeddings\.class_embedding$)", "visual_encoder.cls_token"},
        {R"(^vision_model\.embeddings\.position_embedding$)", "visual_encoder.pos_embed"},
        {R"(^vision_model\.embeddings\.patch_embedding\.)", "visual_encoder.patch_embed.proj."},
        {R"(^vision_model\.encoder\.layers\.(\d+)\.layer_norm1\.)", "visual_encoder.blocks.$1.norm1."},
        {R"(^vision_model\.encoder\.layers\.(\d+)\.layer_norm2\.)", "visual_encoder.blocks.$1.norm2."},
        {R"(^vision_model\.encoder\.layers\.(\d+)\.self_attn\.qkv\.)", "visual_encoder.blocks.$1.attn.qkv."},
        {R"(^vision_model\.encoder\.layers\.(\d+)\.self_attn\.(q_bias|v_bias)$)", "visual_encoder.blocks.$1.attn.$2"},
        {R"(^vision_model\.encoder\.layers\.(\d+)\.self_attn\.projection\.)", "visual_encoder.blocks.$1.attn.proj."},
        {R"(^vision_model\.encoder\.layers\.(\d+)\.mlp\.)", "visual_encoder.blocks.$1.mlp."},
        {R"(^vision_model\.post_layernorm\.)", "ln_vision."},
        {R"(^qformer\.layernorm\.)", "Qformer.bert.embeddings.LayerNorm."},
        {R"(^embeddings\.(word_embeddings|position_embeddings)\.)", "Qformer.bert.embeddings.$1."},
        {R"(^qformer\.encoder\.layer\.(\d+)\.(attention|crossattention)\.attention\.)",
         "Qformer.bert.encoder.layer.$1.$2.self."},
        {R"(^qformer\.encoder\.)", "Qformer.bert.encoder."},
        {R"(^text_decoder_head\.transform\.)", "Qformer.cls.predictions.transform."},
        {R"(^text_decoder_head\.bias$)", "Qformer.cls.predictions.bias"},
        {R"(^vision_projection\.)", "vision_proj."},
        {R"(^text_projection\.)", "text_proj."},
    };
    std::vector<std::pair<std::regex, std::string>> out;
    for (const auto& [f, t] : raw) out.emplace_back(std::regex(f), t);
    return out;
  }();
  if (starts(n, "language_projection.")) return lm + "_proj." + n.substr(std::string("language_projection.").size());
  if (starts(n, "language_model.")) return lm + "_model." + n.substr(std::string("language_model.").size());
  for (const auto& [re, to] : rules)
    if (std::regex_search(n, re)) return std::regex_replace(n, re, to, std::regex_constants::format_first_only);
  return n;
}

bool looks_like_lavis(const std::string& n) {
  return starts(n, "Qformer.") || starts(n, "visual_encoder.") || starts(n, "ln_vision.") ||
         starts(n, "opt_proj.") || starts(n, "t5_proj.") || starts(n, "opt_model.") || starts(n, "t5_model.");
}

}  // namespace blip2::io
