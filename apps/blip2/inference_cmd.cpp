// blip2 caption, blip2 ask: the facade's captioning and zero-shot VQA.
#include <memory>

#include "apps/blip2/cli.h"
#include "blip2/util/progress.h"

namespace blip2::cli {

void add_inference_commands(Registry& r) {
  struct Caption {
    ModelFlags model;
    GenerationFlags gen;
    DecodeFlags decode;
    std::vector<std::string> images;
    std::string prompt;
    bool json = false;
  };
  auto c = std::make_shared<Caption>();
  auto* caption = r.add(nullptr, "caption", "describe images", [c, &r] {
    const auto gen = c->gen.apply(Pipeline::caption_defaults());
    gen.validate();
    auto p = load_pipeline(c->model, r.verbose);
    // An image that does not decode is reported; the others are captioned.
    auto decoded = load_images_reporting(c->images, c->decode);
    if (decoded.images.empty()) return 1;
    Progress progress("captioning " + std::to_string(decoded.images.size()) + " image(s)");
    auto rs = p.caption(decoded.images, c->prompt, gen);
    progress.done();
    print_results(decoded.paths, rs, c->json, "", c->images.size() > 1);
    return decoded.failed > 0 ? 1 : 0;
  });
  add_model_flags(caption, c->model);
  add_decode_flags(caption, c->decode);
  add_generation_flags(caption, c->gen, Pipeline::caption_defaults());
  caption->add_option("--prompt", c->prompt, "text the caption continues, e.g. \"a photo of\"");
  caption->add_flag("--json", c->json, "one JSON object per image: image, text, token_ids, seconds");
  caption->add_option("images", c->images, "image files (PNG, JPEG, WebP)")->required();

  struct Ask {
    ModelFlags model;
    GenerationFlags gen;
    DecodeFlags decode;
    std::string image, question, prompt_template;
    bool json = false;
  };
  auto a = std::make_shared<Ask>();
  auto* ask = r.add(nullptr, "ask", "answer a question about an image (zero-shot VQA)", [a, &r] {
    auto p = load_pipeline(a->model, r.verbose);
    auto images = load_images({a->image}, a->decode);
    auto rs = p.answer(images, {a->question}, a->gen.apply(Pipeline::vqa_defaults()), a->prompt_template);
    print_results({a->image}, rs, a->json, a->question);
    return 0;
  });
  add_model_flags(ask, a->model);
  add_decode_flags(ask, a->decode);
  add_generation_flags(ask, a->gen, Pipeline::vqa_defaults());
  ask->add_option("--image,image", a->image, "image file")->required();
  ask->add_option("--question,question", a->question, "the question")->required();
  ask->add_option("--template", a->prompt_template,
                  "prompt template with {} for the question (default: the LM family's, see docs)");
  ask->add_flag("--json", a->json, "print a JSON object");
}

}  // namespace blip2::cli
