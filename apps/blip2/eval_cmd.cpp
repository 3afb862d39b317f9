// blip2 eval caption|vqa|retrieval: the library's evaluations of a model on a
// data directory (captions.json / questions.json).
#include <memory>
#include <nlohmann/json.hpp>

#include "apps/blip2/cli.h"

namespace blip2::cli {

void add_eval_commands(Registry& r) {
  auto* eval = r.group("eval", "evaluate a model on a data directory (captions.json / questions.json)");
  struct Eval {
    ModelFlags model;
    GenerationFlags gen;
    EvalFlags eval;
  };

  auto c = std::make_shared<Eval>();
  auto* caption = r.add(eval, "caption", "CIDEr-D, BLEU-4 and exact match of generated captions", [c, &r] {
    auto p = load_pipeline(c->model, r.verbose);
    c->eval.options.has_generation = true;
    c->eval.options.generation = c->gen.apply(Pipeline::caption_defaults());
    return run_evaluation("caption", c->eval,
                          [&](const EvalOptions& o) { return evaluate_captions(p, c->eval.data, o); });
  });
  add_model_flags(caption, c->model);
  add_eval_flags(caption, c->eval);
  add_generation_flags(caption, c->gen, Pipeline::caption_defaults());

  auto v = std::make_shared<Eval>();
  auto* vqa = r.add(eval, "vqa", "VQA accuracy (official normalisation) of generated answers", [v, &r] {
    auto p = load_pipeline(v->model, r.verbose);
    v->eval.options.has_generation = true;
    v->eval.options.generation = v->gen.apply(Pipeline::vqa_defaults());
    return run_evaluation("vqa", v->eval, [&](const EvalOptions& o) { return evaluate_vqa(p, v->eval.data, o); });
  });
  add_model_flags(vqa, v->model);
  add_eval_flags(vqa, v->eval);
  add_generation_flags(vqa, v->gen, Pipeline::vqa_defaults());

  auto t = std::make_shared<Eval>();
  auto* retrieval = r.add(eval, "retrieval", "TR@1/5/10 and IR@1/5/10: ITC ranking, ITM re-ranking of the top k", [t] {
    return run_evaluation("retrieval", t->eval, [&](const EvalOptions& o) {
      return evaluate_retrieval(t->model.dir(), t->eval.data, o, t->model.runtime());
    });
  });
  add_model_flags(retrieval, t->model);
  add_eval_flags(retrieval, t->eval);
  retrieval->add_option("--rerank-k", t->eval.options.rerank_k, "re-rank the top k by ITM")->capture_default_str();
}

}  // namespace blip2::cli
