// blip2 verify, tokenize, preprocess, convert, quantize, tokenizer train, plot: the
// tools around the model (reference replay, tokenizers, pixels, checkpoints,
// curves).
#include <torch/torch.h>

#include <cstdio>
#include <filesystem>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>

#include "apps/blip2/cli.h"
#include "blip2/data/image_processor.h"
#include "blip2/data/tokenizer.h"
#include "blip2/data/tokenizer_train.h"
#include "blip2/eval/verify.h"
#include "blip2/io/convert.h"
#include "blip2/io/safetensors.h"
#include "blip2/model/quantize.h"
#include "blip2/util/plot.h"
#include "blip2/util/progress.h"

namespace blip2::cli {
namespace {

using nlohmann::json;

int run_verify(const std::string& case_dir, const std::optional<std::string>& dtype, bool verbose) {
  VerifyOptions opts;
  opts.verbose = verbose;
  if (dtype) opts.dtype = *dtype;
  opts.log = [](const std::string& s) { std::cerr << s << "\n"; };
  auto r = verify_case(case_dir, opts);
  for (const auto& l : r.lines) {
    std::printf("%s %.3g %s", l.name.c_str(), l.max_abs_diff, l.ok ? "ok" : "FAIL");
    if (!l.ok && !l.note.empty()) std::printf("  (%s)", l.note.c_str());
    std::printf("\n");
  }
  std::printf("%d passed, %d failed\n", r.passed, r.failed);
  return r.ok() ? 0 : 1;
}

int run_tokenize(const std::string& dir, bool no_special, bool jsonl, const std::vector<std::string>& texts) {
  auto tok = load_tokenizer(dir);
  if (!jsonl) {
    if (texts.empty()) throw InputError("give the text to tokenize (or --jsonl to read lines from stdin)");
    std::string text;
    for (size_t i = 0; i < texts.size(); ++i) text += (i ? " " : "") + texts[i];
    std::cout << json(tok->encode(text, !no_special)).dump() << "\n";
    return 0;
  }
  std::string line;
  int64_t n = 0;
  while (std::getline(std::cin, line)) {
    ++n;
    json j = json::parse(line, nullptr, false);
    if (!j.is_object() || !j.contains("text") || !j["text"].is_string())
      throw InputError("stdin line " + std::to_string(n) +
                       ": expected {\"text\": \"...\", \"add_special_tokens\": true|false}");
    const bool special = j.value("add_special_tokens", !no_special);
    std::cout << json(tok->encode(j["text"].get<std::string>(), special)).dump() << "\n";
  }
  return 0;
}

int run_preprocess(std::optional<int> size, const std::string& config, const std::string& image,
                   const std::string& output) {
  ImageProcessorConfig c;
  if (!config.empty()) c = ImageProcessorConfig::from_json_file(config);
  if (size) c.height = c.width = *size;
  c.validate("--size");
  auto img = load_image(image);
  auto resized = resize(img, c.width, c.height, static_cast<Resample>(c.resample));
  auto pixels = preprocess(img, c).unsqueeze(0);
  auto u8 = torch::from_blob(resized.rgb.data(), {resized.height, resized.width, 3}, torch::kUInt8).clone();
  io::save_safetensors(output, {{"pixel_values", pixels}, {"resized_uint8", u8}});
  std::printf("wrote %s: pixel_values [1, 3, %d, %d], resized_uint8 [%d, %d, 3]\n", output.c_str(), c.height, c.width,
              c.height, c.width);
  return 0;
}

int run_plot(const std::string& out, const std::string& key, const std::vector<std::string>& inputs,
             PlotOptions opt) {
  std::vector<PlotSeries> series;
  for (const auto& in : inputs) {
    const size_t eq = in.find('=');
    const std::string path = eq == std::string::npos ? in : in.substr(eq + 1);
    const std::string label = eq == std::string::npos
                                  ? std::filesystem::path(path).parent_path().filename().string()
                                  : in.substr(0, eq);
    series.push_back(read_metrics_series(path, key, label));
  }
  opt.y_label = key;
  plot_png(out, series, opt);
  std::printf("wrote %s (%zu series of \"%s\")\n", out.c_str(), series.size(), key.c_str());
  return 0;
}

}  // namespace

void add_tool_commands(Registry& r) {
  auto case_dir = std::make_shared<std::string>();
  auto verify_dtype = std::make_shared<std::optional<std::string>>();
  auto* verify = r.add(nullptr, "verify", "replay a reference dump (meta.json plan) and compare every output tensor",
                       [case_dir, verify_dtype, &r] { return run_verify(*case_dir, *verify_dtype, r.verbose); });
  verify->add_option("--dtype", *verify_dtype,
                     "weights dtype to load the case in; int8 reports each tensor's error without failing (default " +
                         VerifyOptions{}.dtype + ")");
  verify->add_option("case_dir", *case_dir, "case directory with meta.json, model + inputs/outputs safetensors")
      ->required();

  struct Tokenize {
    std::string dir;
    bool no_special = false, jsonl = false;
    std::vector<std::string> text;
  };
  auto t = std::make_shared<Tokenize>();
  auto* tokenize = r.add(nullptr, "tokenize", "print the token ids of a text as a JSON list",
                         [t] { return run_tokenize(t->dir, t->no_special, t->jsonl, t->text); });
  tokenize->add_option("--tokenizer", t->dir, "directory with vocab.json+merges.txt, tokenizer.json, vocab.txt or spiece.model")
      ->required();
  tokenize->add_flag("--no-special-tokens", t->no_special, "do not add BOS/EOS/[CLS]/[SEP]");
  tokenize->add_flag("--jsonl", t->jsonl, "read {\"text\":..., \"add_special_tokens\":...} lines from stdin");
  tokenize->add_option("text", t->text, "text to tokenize");

  struct Preprocess {
    std::optional<int> size;
    std::string config, image, output;
  };
  auto p = std::make_shared<Preprocess>();
  auto* preprocess = r.add(nullptr, "preprocess", "write the pixel values BLIP-2 sees for an image",
                           [p] { return run_preprocess(p->size, p->config, p->image, p->output); });
  preprocess->add_option("--size", p->size, "output height and width, 1..4096 (default 224 or the config's)");
  preprocess->add_option("--config", p->config, "preprocessor_config.json to use");
  preprocess->add_option("image", p->image, "image file")->required();
  preprocess->add_option("-o,--output", p->output, "output .safetensors (pixel_values, resized_uint8)")->required();

  struct Convert {
    std::string src, dst;
    io::ConvertOptions options;
  };
  auto c = std::make_shared<Convert>();
  auto* convert = r.add(nullptr, "convert", "convert between LAVIS .pth and HuggingFace safetensors layouts", [c] {
    Progress progress("converting " + c->src);
    auto report = io::convert_checkpoint(c->src, c->dst, c->options);
    progress.done();
    std::printf("%s\n", report.summary().c_str());
    return 0;
  });
  convert->add_option("source", c->src, "LAVIS .pth file, or HF checkpoint directory / .safetensors")->required();
  convert->add_option("destination", c->dst, "output directory (or .pth file for HF -> LAVIS)")->required();
  convert->add_option("--config", c->options.config_json, "config.json to put beside the converted HF weights");
  convert->add_option("--key", c->options.key, "entry of the .pth that holds the state dict (default: auto)");
  convert->add_option("--lm", c->options.lm, "LAVIS language-model prefix: opt or t5 (default: auto)");
  convert->add_option("--dtype", c->options.dtype, "cast floating tensors: float32, float16, bfloat16");

  struct Quantize {
    std::string src, dst;
    std::optional<std::string> dtype;
  };
  auto qz = std::make_shared<Quantize>();
  auto* quantize = r.add(nullptr, "quantize", "write an int8 weight-only copy of a checkpoint directory", [qz] {
    QuantizeOptions o;
    if (qz->dtype) o.dtype = *qz->dtype;
    Progress progress("quantizing " + qz->src);
    auto report = quantize_model_dir(qz->src, qz->dst, o);
    progress.done();
    std::printf("%s\n", report.summary().c_str());
    return 0;
  });
  quantize->add_option("source", qz->src, "BLIP-2 checkpoint directory (safetensors)")->required();
  quantize->add_option("destination", qz->dst, "output directory")->required();
  quantize->add_option("--dtype", qz->dtype, "quantised dtype: int8 (default " + QuantizeOptions{}.dtype + ")");

  struct TokTrain {
    std::string corpus, out;
    std::optional<std::string> spm_model;
    TokenizerTrainOptions options;
  };
  auto tt = std::make_shared<TokTrain>();
  auto* tokenizer = r.group("tokenizer", "train a small tokenizer from a corpus");
  auto* tok_train = r.add(tokenizer, "train", "wordpiece (Q-Former), bpe (OPT) or sentencepiece (T5)", [tt] {
    if (tt->spm_model) {
      if (tt->options.kind != "sentencepiece")
        throw ConfigError("--spm-model applies to --kind sentencepiece only, not '" + tt->options.kind + "'");
      tt->options.spm_model = parse_sentencepiece_model(*tt->spm_model, "--spm-model");
    }
    auto rep = train_tokenizer(read_corpus_texts(tt->corpus), tt->out, tt->options);
    std::printf("wrote a %s tokenizer of %lld tokens to %s\n", tt->options.kind.c_str(),
                static_cast<long long>(rep.vocab_size), tt->out.c_str());
    return 0;
  });
  tok_train->add_option("--kind", tt->options.kind, "wordpiece, bpe or sentencepiece")->required();
  tok_train->add_option("--corpus", tt->corpus, "text file, one text per line (or per tab-separated field)")
      ->required();
  tok_train->add_option("--vocab-size", tt->options.vocab_size, "target vocabulary size (bpe, sentencepiece)");
  tok_train->add_option("--spm-model", tt->spm_model,
                        "sentencepiece: unigram (T5's own; on a small repetitive corpus it keeps few pieces) or bpe "
                        "(whole words) (default unigram)");
  tok_train->add_option("--out", tt->out, "output directory")->required();

  struct Plot {
    std::string out, key = "loss";
    std::vector<std::string> inputs;
    PlotOptions options;
  };
  auto pl = std::make_shared<Plot>();
  auto* plot = r.add(nullptr, "plot", "draw a key of metrics.jsonl files as a PNG line chart",
                     [pl] { return run_plot(pl->out, pl->key, pl->inputs, pl->options); });
  plot->add_option("--out", pl->out, "output .png")->required();
  plot->add_option("--key", pl->key, "the metrics key to draw (loss, loss_itc, lr, ...)")->capture_default_str();
  plot->add_option("--title", pl->options.title, "chart title");
  plot->add_flag("--log-y", pl->options.log_y, "logarithmic y axis");
  plot->add_option("inputs", pl->inputs, "LABEL=metrics.jsonl (or a path: its parent directory names it)")
      ->required();
}

}  // namespace blip2::cli
