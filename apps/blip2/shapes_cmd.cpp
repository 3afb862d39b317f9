// The synthetic shapes world (docs/shapes.md): blip2 shapes generate|corpus,
// the unimodal pretraining of its frozen models (blip2 pretrain lm|vit) and
// the text-only VQA ceiling (blip2 eval text-vqa).
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>

#include "apps/blip2/cli.h"
#include "blip2/config/config.h"
#include "blip2/lm/opt.h"
#include "blip2/lm/t5.h"
#include "blip2/shapes/corpus.h"
#include "blip2/shapes/lm_pretrain.h"
#include "blip2/shapes/shapes.h"
#include "blip2/shapes/text_vqa.h"
#include "blip2/shapes/vit_pretrain.h"
#include "blip2/util/atomic_file.h"
#include "blip2/util/progress.h"

namespace blip2::cli {
namespace {

struct PretrainFlags {
  std::string config, tokenizer, corpus, data, out, metrics, init;
  std::vector<std::string> eval_data;
  int64_t steps = 1000, batch_size = 16, max_len = 64;
  double lr = 1e-3;
  uint64_t seed = 0;
  // ContextAugment overrides (blip2/shapes/lm_pretrain.h); unset = its default (off).
  std::optional<double> context_noise, context_mix, context_drop;
  std::optional<int64_t> context_fill_to;
  bool target_only = false, reference_init = false, resume = false;
  int64_t save_every = 0;
  VitPretrainOptions vit;  // pretrain vit: gray copies, position heads
};

// Prints the progress of a pretraining run (a bar on a terminal, every 100th
// step otherwise) and writes its per-step losses to --metrics.
class PretrainReporter {
 public:
  explicit PretrainReporter(const PretrainFlags& f) : f_(f) {}
  std::function<void(int64_t, double)> on_step() {
    return [this](int64_t step, double loss) {
      const double el = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0_).count();
      if (tty_ || step == f_.steps || step % 100 == 0)
        std::fprintf(stderr, "%sstep %s loss %.4f%s", tty_ ? "\r" : "", progress_bar(step, f_.steps, el).c_str(),
                     loss, tty_ ? "" : "\n");
    };
  }
  void finish(const std::vector<double>& losses) const {
    if (!f_.metrics.empty()) {
      std::string text;
      for (size_t i = 0; i < losses.size(); ++i)
        text += nlohmann::json({{"step", i + 1}, {"loss", losses[i]}}).dump() + "\n";
      write_atomic(f_.metrics, text);
    }
    if (tty_) std::fprintf(stderr, "\n");
  }

 private:
  const PretrainFlags& f_;
  const std::chrono::steady_clock::time_point t0_ = std::chrono::steady_clock::now();
  const bool tty_ = ::isatty(2);
};

int pretrain_lm(const PretrainFlags& f) {
  const auto cfg = Blip2Config::from_file(f.config);
  LmPretrainConfig c;
  c.text = cfg.text;
  c.tokenizer_dir = f.tokenizer;
  c.texts = read_lm_corpus(f.corpus);
  c.steps = f.steps;
  c.batch_size = f.batch_size;
  c.max_len = f.max_len;
  c.optim = pretraining_optim(f.lr, f.steps);
  c.seed = f.seed;
  if (f.context_noise) c.context.noise = *f.context_noise;
  if (f.context_mix) c.context.mix = *f.context_mix;
  if (f.context_drop) c.context.drop = *f.context_drop;
  if (f.context_fill_to) c.context.fill_to = *f.context_fill_to;
  c.target_only = f.target_only;
  c.reference_init = f.reference_init;
  c.init_dir = f.init;
  c.checkpoint_dir = (std::filesystem::path(f.out) / "checkpoint").string();
  c.save_every = f.save_every;
  c.resume = f.resume;
  PretrainReporter report(f);
  auto r = pretrain_language_model(c, report.on_step());
  if (r.resumed_from > 0)
    std::printf("resumed from the checkpoint of step %lld\n", static_cast<long long>(r.resumed_from));
  save_language_model(*r.model, f.out, f.tokenizer);
  std::error_code ec;  // the finished model is saved: its checkpoint is no longer needed
  std::filesystem::remove_all(c.checkpoint_dir, ec);
  report.finish(r.losses);
  std::printf("pretrained %s LM for %lld steps: loss %.4f -> %.4f; wrote %s\n", lm_family_name(cfg.text.family),
              static_cast<long long>(f.steps), r.losses.front(), r.losses.back(), f.out.c_str());
  return 0;
}

int pretrain_vit(const PretrainFlags& f) {
  const auto cfg = Blip2Config::from_file(f.config);
  PretrainReporter report(f);
  auto r = pretrain_vision(cfg.vision, f.data, f.steps, f.batch_size, pretraining_optim(f.lr, f.steps), f.seed,
                           report.on_step(), f.eval_data, f.vit);
  save_vision_encoder(*r.model, f.out);
  report.finish(r.losses);
  std::printf("pretrained ViT for %lld steps: loss %.4f -> %.4f; wrote %s\n", static_cast<long long>(f.steps),
              r.losses.front(), r.losses.back(), f.out.c_str());
  for (const auto& p : r.probes)
    std::printf("probe %s: %lld objects; shape %.1f%% color %.1f%% size %.1f%% all %.1f%%; count %.1f%%\n",
                p.data_dir.c_str(), static_cast<long long>(p.objects), 100 * p.shape, 100 * p.color, 100 * p.size,
                100 * p.all, 100 * p.count);
  for (const auto& p : r.probes)
    if (p.position >= 0) std::printf("probe %s: patch position %.1f%%\n", p.data_dir.c_str(), 100 * p.position);
  return 0;
}

void add_pretrain_commands(Registry& r) {
  auto f = std::make_shared<PretrainFlags>();
  auto* pretrain = r.group("pretrain", "pretrain a small LLM on text or a ViT on shapes scenes");
  auto* lm = r.add(pretrain, "lm", "text-only OPT / T5 language model (causal LM / prefix LM)",
                   [f] { return pretrain_lm(*f); });
  auto* vit = r.add(pretrain, "vit", "ViT on shapes-scene attributes (scenes.json)", [f] { return pretrain_vit(*f); });
  for (auto* sub : {lm, vit}) {
    sub->add_option("--config", f->config, "BLIP-2 config.json whose text_config / vision_config gives the dimensions")
        ->required();
    sub->add_option("--steps", f->steps, "optimizer steps")->capture_default_str();
    sub->add_option("--batch-size", f->batch_size, "batch size")->capture_default_str();
    sub->add_option("--lr", f->lr, "peak learning rate (warm-up 5%, cosine to 10%)")->capture_default_str();
    sub->add_option("--seed", f->seed, "random seed")->capture_default_str();
    sub->add_option("--metrics", f->metrics, "also write the loss of every step here (JSON lines, as blip2 train)");
  }
  lm->add_option("--tokenizer", f->tokenizer, "tokenizer directory of the LM")->required();
  lm->add_option("--corpus", f->corpus, "text file, one text or context<TAB>prompt<TAB>target per line")->required();
  lm->add_option("--max-len", f->max_len, "tokens per text")->capture_default_str();
  lm->add_option("--out", f->out, "output directory (model.safetensors + tokenizer files)")->required();
  lm->add_option("--context-noise", f->context_noise,
                 "Gaussian noise on the context slot's input embeddings, as a fraction of their norm (default 0)");
  lm->add_option("--context-mix", f->context_mix,
                 "mix each context embedding with another context position's, weight ~ U(0, X) (default 0)");
  lm->add_option("--context-drop", f->context_drop,
                 "probability of zeroing a context position's embedding (default 0)");
  lm->add_option("--context-fill-to", f->context_fill_to,
                 "insert zero vectors into the context until it has N positions, e.g. the number of queries "
                 "(default 0: none)");
  lm->add_flag("--target-only", f->target_only,
               "OPT: predict only each text's target (the answer, the caption), not its context or prompt; "
               "T5's decoder predicts the target alone either way");
  lm->add_option("--init", f->init,
                 "start from this `pretrain lm` output (same config) instead of from scratch: a curriculum's "
                 "next phase (the tokenizer must be the same)");
  lm->add_option("--save-every", f->save_every,
                 "write a checkpoint to OUT/checkpoint every N steps (model, optimizer, random streams; removed "
                 "once the model is saved; 0 = none)")
      ->capture_default_str();
  lm->add_flag("--resume", f->resume,
               "continue from OUT/checkpoint if one is there (same flags and corpus), giving the model an "
               "uninterrupted run gives; otherwise start fresh");
  lm->add_flag("--reference-init", f->reference_init,
               "initialise as HF's _init_weights (T5: per-module scales, embeddings at std 1) instead of "
               "normal(0, 0.02) everywhere");
  vit->add_option("--data", f->data, "a `blip2 shapes generate` directory")->required();
  vit->add_option("--out", f->out, "output .safetensors (vision_model.* weights)")->required();
  vit->add_option("--gray-fraction", f->vit.gray_fraction,
                  "share of each batch shown with every object repainted gray (shape and size heads only), so "
                  "shapes are learnt by outline, not colour; 0-1")
      ->capture_default_str();
  vit->add_flag("--position-head", f->vit.position_head,
                "also name each patch token's row and column, so the tokens keep where they are (captions' "
                "left/right/above/below and order)");
  vit->add_option("--eval-data", f->eval_data,
                  "held-out `shapes generate` directories: report the heads' per-object attribute accuracy");
}

}  // namespace

void add_shapes_commands(Registry& r) {
  auto* shapes = r.group("shapes", "the synthetic shapes world (docs/shapes.md)");
  struct Generate {
    std::string out, split = "train";
    int count = 100, size = 224;
    uint64_t seed = 0;
  };
  auto g = std::make_shared<Generate>();
  auto* gen = r.add(shapes, "generate", "render a split: images + captions.json + questions.json", [g] {
    Progress progress("rendering " + std::to_string(g->count) + " " + g->split + " images");
    shapes::generate_split(g->out, shapes::parse_split(g->split), g->count, g->seed, g->size);
    progress.done();
    std::printf("wrote %d %s images, captions.json and questions.json to %s\n", g->count, g->split.c_str(),
                g->out.c_str());
    return 0;
  });
  gen->add_option("--out", g->out, "output directory")->required();
  gen->add_option("--split", g->split, "train, val, test or compositional")->capture_default_str();
  gen->add_option("--count", g->count, "number of images")->capture_default_str();
  gen->add_option("--seed", g->seed, "random seed")->capture_default_str();
  gen->add_option("--size", g->size, "image side in pixels")->capture_default_str();

  struct Corpus {
    std::string out, vqa_template = OptLanguageModel::kVqaTemplate, style = "plain";
    std::vector<std::string> repeats;
    int count = 1000;
    uint64_t seed = 11;
  };
  auto c = std::make_shared<Corpus>();
  auto* corpus = r.add(shapes, "corpus",
                       "text-only LM corpus of unrendered train-split scenes: description -> caption, description -> "
                       "VQA-format question -> answer",
                       [c] {
                         std::map<std::string, int> repeats;
                         for (const auto& r : c->repeats) repeats.insert(shapes::parse_kind_repeat(r));
                         const auto lines = shapes::corpus_lines(c->count, c->seed, c->vqa_template,
                                                                  shapes::parse_corpus_style(c->style), repeats);
                         std::string text;
                         for (const auto& l : lines) text += l + "\n";
                         write_atomic(c->out, text);
                         std::printf("wrote %zu texts from %d scenes to %s\n", lines.size(), c->count, c->out.c_str());
                         return 0;
                       });
  corpus->add_option("--out", c->out, "output text file, one context<TAB>prompt<TAB>target per line")->required();
  corpus->add_option("--count", c->count, "number of scenes")->capture_default_str();
  corpus->add_option("--seed", c->seed, "random seed (use another than the images')")->capture_default_str();
  corpus->add_option("--style", c->style,
                     "plain (caption and spec questions under the canonical caption), varied (plus other "
                     "description styles and orders, paraphrased and extra questions) or lookups (plus every "
                     "attribute look-up and yes/no binding question the spec can ask of each scene)")
      ->capture_default_str();
  corpus->add_option("--repeat", c->repeats,
                     "KIND=N: each line of that kind (caption, or a question: color_of_shape, shape_of_color, "
                     "count, exists, size_of_shape, color_by_relation) N times in all, e.g. color_of_shape=5; "
                     "repeatable");
  corpus->add_option("--template", c->vqa_template,
                     std::string("VQA prompt template, {} = the question (T5: \"") +
                         T5LanguageModel::kVqaTemplate + "\")")
      ->capture_default_str();

  add_pretrain_commands(r);

  struct TextVqa {
    std::string lm, config;
    GenerationFlags gen;
    EvalFlags eval;
  };
  auto t = std::make_shared<TextVqa>();
  auto* eval = r.group("eval", "evaluate a model on a data directory (captions.json / questions.json)");
  auto* text_vqa = r.add(eval, "text-vqa",
                         "VQA accuracy of a pretrained LM alone, reading each scene's caption as text where the "
                         "visual prompt goes (the ceiling for zero-shot VQA)",
                         [t] {
                           t->eval.options.has_generation = true;
                           t->eval.options.generation = t->gen.apply(Pipeline::vqa_defaults());
                           const auto text = Blip2Config::from_file(t->config).text;
                           return run_evaluation("text-vqa", t->eval, [&](const EvalOptions& o) {
                             return evaluate_text_vqa(t->lm, text, t->eval.data, o);
                           });
                         });
  text_vqa->add_option("--lm", t->lm, "a `blip2 pretrain lm` output directory")->required();
  text_vqa->add_option("--config", t->config, "the BLIP-2 config.json the LM was pretrained with")->required();
  add_eval_flags(text_vqa, t->eval);
  add_generation_flags(text_vqa, t->gen, Pipeline::vqa_defaults());
}

}  // namespace blip2::cli
