// blip2: the command-line frontend. Thin: parse flags, call the library,
// print. Library errors become one line on stderr and exit code 1.
#include <CLI/CLI.hpp>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <netinet/in.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <string>
#include <torch/torch.h>

#include "blip2/blip2.h"
#include "blip2/config/config.h"
#include "blip2/data/image_processor.h"
#include "blip2/data/tokenizer.h"
#include "blip2/data/tokenizer_train.h"
#include "blip2/data/shapes.h"
#include "blip2/eval/evaluate.h"
#include "blip2/eval/verify.h"
#include "blip2/io/convert.h"
#include "blip2/io/safetensors.h"
#include "blip2/train/data_source.h"
#include "blip2/train/distributed.h"
#include "blip2/train/lm_pretrain.h"
#include "blip2/train/vit_pretrain.h"
#include "blip2/train/trainer.h"
#include "blip2/util/plot.h"
#include "blip2/util/progress.h"

extern char** environ;

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

// ---- shared flags ---------------------------------------------------------

struct ModelFlags {
  std::string model;
  std::string dtype = "float32";
  std::string device = "cpu";
  int threads = 0;
};

void add_model_flags(CLI::App* app, ModelFlags& f) {
  app->add_option("-m,--model", f.model,
                  "BLIP-2 checkpoint directory (HF layout); default: $BLIP2_MODEL or the bundled models/shapes/opt");
  app->add_option("--dtype", f.dtype, "weights dtype: float32, bfloat16, float16")->capture_default_str();
  app->add_option("--device", f.device, "cpu, cuda or cuda:N (CUDA builds of libtorch)")->capture_default_str();
  app->add_option("--threads", f.threads, "intra-op CPU threads (0 = libtorch default)")->capture_default_str();
}

std::string exe_dir() {
  std::error_code ec;
  auto p = fs::read_symlink("/proc/self/exe", ec);
  return ec ? "." : p.parent_path().string();
}

std::string resolve_model(const std::string& given) {
  if (!given.empty()) return given;
  if (const char* env = std::getenv("BLIP2_MODEL")) return env;
  std::vector<std::string> tried;
  for (const auto& c : {exe_dir() + "/../../models/shapes/opt", exe_dir() + "/../share/blip2/models/shapes/opt",
                        std::string("models/shapes/opt")}) {
    if (fs::exists(fs::path(c) / "config.json")) return fs::weakly_canonical(c).string();
    tried.push_back(c);
  }
  std::string t;
  for (const auto& x : tried) t += (t.empty() ? "" : ", ") + x;
  throw blip2::ConfigError("no --model given and no bundled default model found (looked in " + t +
                           "); pass --model DIR with a BLIP-2 checkpoint directory");
}

blip2::Pipeline load_pipeline(const ModelFlags& f, bool verbose) {
  const std::string dir = resolve_model(f.model);
  blip2::PipelineOptions o;
  o.dtype = f.dtype;
  o.device = f.device;
  o.threads = f.threads;
  blip2::Progress progress("loading model " + dir);
  auto p = blip2::Pipeline::load(dir, o);
  progress.done();
  if (verbose)
    std::fprintf(stderr, "loaded %s in %.3f s; resident memory %lld MiB\n", dir.c_str(), p.load_seconds(),
                 static_cast<long long>(blip2::resident_memory_kb() / 1024));
  return p;
}

struct GenFlags {
  // -1 = not given (the subcommand's default applies); given values are
  // validated by GenerationConfig::validate, so 0 beams is an error.
  int beams = -1, max_new_tokens = -1, min_new_tokens = -1, top_k = 50, no_repeat_ngram = 0;
  double length_penalty = NAN, temperature = 1.0, top_p = 1.0, repetition_penalty = 1.0;
  bool sample = false;
  uint64_t seed = 0;

  blip2::GenerationConfig apply(blip2::GenerationConfig g) const {
    if (beams != -1) g.num_beams = beams;
    if (max_new_tokens != -1) g.max_new_tokens = max_new_tokens;
    if (min_new_tokens >= 0) g.min_new_tokens = min_new_tokens;
    if (!std::isnan(length_penalty)) g.length_penalty = length_penalty;
    g.do_sample = sample;
    if (sample && beams == -1) g.num_beams = 1;
    g.temperature = temperature;
    g.top_k = top_k;
    g.top_p = top_p;
    g.seed = seed;
    g.repetition_penalty = repetition_penalty;
    g.no_repeat_ngram_size = no_repeat_ngram;
    return g;
  }
};

void add_generation_flags(CLI::App* app, GenFlags& f) {
  app->add_option("--beams", f.beams, "beam width (default: 5; 1 = greedy)");
  app->add_option("--max-new-tokens", f.max_new_tokens, "most tokens to generate (default: 30 caption, 10 ask)");
  app->add_option("--min-new-tokens", f.min_new_tokens, "fewest tokens before EOS is allowed (default 1)");
  app->add_option("--length-penalty", f.length_penalty, "beam length penalty (default: 1 caption, -1 ask)");
  app->add_flag("--sample", f.sample, "sample instead of searching");
  app->add_option("--temperature", f.temperature, "sampling temperature")->capture_default_str();
  app->add_option("--top-k", f.top_k, "sample among the k most likely tokens (0 = off)")->capture_default_str();
  app->add_option("--top-p", f.top_p, "nucleus sampling mass")->capture_default_str();
  app->add_option("--seed", f.seed, "sampling seed")->capture_default_str();
  app->add_option("--repetition-penalty", f.repetition_penalty, "penalise tokens already generated (1 = off)")
      ->capture_default_str();
  app->add_option("--no-repeat-ngram", f.no_repeat_ngram, "forbid repeating n-grams of this size (0 = off)")
      ->capture_default_str();
}

void print_results(const std::vector<std::string>& images, const std::vector<blip2::TextResult>& rs, bool as_json,
                   const std::string& question = "") {
  for (size_t i = 0; i < rs.size(); ++i) {
    if (as_json) {
      json j = {{"image", images[i]}, {"text", rs[i].text}, {"token_ids", rs[i].token_ids},
                {"seconds", rs[i].seconds}};
      if (!question.empty()) j["question"] = question;
      std::cout << j.dump() << "\n";
    } else if (images.size() > 1) {
      std::cout << images[i] << ": " << rs[i].text << "\n";
    } else {
      std::cout << rs[i].text << "\n";
    }
  }
}

std::vector<blip2::Image> load_images(const std::vector<std::string>& paths) {
  std::vector<blip2::Image> out;
  blip2::Progress progress("decoding " + std::to_string(paths.size()) + " image(s)");
  for (const auto& p : paths) out.push_back(blip2::load_image(p));
  return out;
}

// ---- subcommands ------------------------------------------------------------

int run_verify(const std::string& case_dir, bool verbose) {
  blip2::VerifyOptions opts;
  opts.verbose = verbose;
  opts.log = [](const std::string& s) { std::cerr << s << "\n"; };
  auto r = blip2::verify_case(case_dir, opts);
  for (const auto& l : r.lines) {
    std::printf("%s %.3g %s", l.name.c_str(), l.max_abs_diff, l.ok ? "ok" : "FAIL");
    if (!l.ok && !l.note.empty()) std::printf("  (%s)", l.note.c_str());
    std::printf("\n");
  }
  std::printf("%d passed, %d failed\n", r.passed, r.failed);
  return r.ok() ? 0 : 1;
}

int run_tokenize(const std::string& dir, bool no_special, bool jsonl, const std::vector<std::string>& texts) {
  auto tok = blip2::load_tokenizer(dir);
  if (!jsonl) {
    if (texts.empty()) throw blip2::InputError("give the text to tokenize (or --jsonl to read lines from stdin)");
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
      throw blip2::InputError("stdin line " + std::to_string(n) +
                              ": expected {\"text\": \"...\", \"add_special_tokens\": true|false}");
    const bool special = j.value("add_special_tokens", !no_special);
    std::cout << json(tok->encode(j["text"].get<std::string>(), special)).dump() << "\n";
  }
  return 0;
}

int run_preprocess(int size, const std::string& config, const std::string& image, const std::string& output) {
  blip2::ImageProcessorConfig c;
  if (!config.empty()) c = blip2::ImageProcessorConfig::from_json_file(config);
  if (size > 0) c.height = c.width = size;
  c.validate("--size");
  auto img = blip2::load_image(image);
  auto resized = blip2::resize(img, c.width, c.height, static_cast<blip2::Resample>(c.resample));
  auto pixels = blip2::preprocess(img, c).unsqueeze(0);
  auto u8 = torch::from_blob(resized.rgb.data(), {resized.height, resized.width, 3}, torch::kUInt8).clone();
  blip2::io::save_safetensors(output, {{"pixel_values", pixels}, {"resized_uint8", u8}});
  std::printf("wrote %s: pixel_values [1, 3, %d, %d], resized_uint8 [%d, %d, 3]\n", output.c_str(), c.height, c.width,
              c.height, c.width);
  return 0;
}

int run_train(const std::string& config_path, bool resume, const std::string& resume_from, int64_t max_steps,
              const std::string& output_dir) {
  auto cfg = blip2::TrainConfig::from_yaml_file(config_path);
  if (max_steps > 0) {
    cfg.max_steps = max_steps;
    cfg.optim.total_steps = max_steps;
  }
  if (!output_dir.empty()) cfg.output_dir = output_dir;
  std::unique_ptr<blip2::Collective> dist;
  auto env = blip2::DistEnv::from_env();
  if (env) dist = blip2::make_gloo_collective(*env);
  blip2::Collective& coll = dist ? *dist : blip2::local_collective();
  const bool rank0 = coll.rank() == 0;
  blip2::Progress building("building the model", rank0);
  blip2::Trainer trainer(cfg, coll);
  building.done();
  blip2::ImageProcessorConfig proc;
  const auto& vc = trainer.model()->config().vision;
  proc.height = proc.width = static_cast<int>(cfg.image_size > 0 ? cfg.image_size : vc.image_size);
  auto data = blip2::make_batch_source(cfg, proc, coll.rank(), coll.world_size());
  if (resume || !resume_from.empty()) {
    if (trainer.resume(data.get(), resume_from)) {
      if (rank0) std::fprintf(stderr, "resumed at step %lld\n", static_cast<long long>(trainer.step()));
    } else if (rank0) {
      std::fprintf(stderr, "no checkpoint in %s: starting from scratch\n", cfg.output_dir.c_str());
    }
  }
  const auto t0 = std::chrono::steady_clock::now();
  const int64_t start = trainer.step();
  blip2::StepMetrics last;
  const bool tty = ::isatty(2);
  trainer.on_step = [&](const blip2::StepMetrics& m) {
    last = m;
    if (!rank0) return;
    const double el = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::string bar = blip2::progress_bar(m.step - start, cfg.max_steps - start, el);
    char buf[256];
    std::snprintf(buf, sizeof buf, "step %s loss %.4f (itc %.3f itm %.3f lm %.3f) lr %.2e %.1f samples/s",
                  bar.c_str(), m.loss, m.loss_itc, m.loss_itm, m.loss_lm, m.lr, m.samples_per_sec);
    if (tty) std::fprintf(stderr, "\r%s", buf);
    else if (m.step % cfg.log_every == 0 || m.step == cfg.max_steps) std::fprintf(stderr, "%s\n", buf);
  };
  trainer.fit(*data);
  if (rank0) {
    const double el = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (tty) std::fprintf(stderr, "\n");
    std::printf("trained %lld steps in %s: final loss %.4f (itc %.4f itm %.4f lm %.4f); checkpoint %s/latest; "
                "metrics %s/metrics.jsonl\n",
                static_cast<long long>(trainer.step() - start), blip2::format_duration(el).c_str(), last.loss,
                last.loss_itc, last.loss_itm, last.loss_lm, cfg.output_dir.c_str(), cfg.output_dir.c_str());
  }
  return 0;
}

int free_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  socklen_t len = sizeof a;
  int port = 29500;
  if (fd >= 0 && ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0 &&
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0)
    port = ntohs(a.sin_port);
  if (fd >= 0) ::close(fd);
  return port;
}

// Runs `args` (a blip2 subcommand) in `nproc` processes with torchrun's
// variables; a failing rank stops the others.
int run_launch(int nproc, int port, const std::vector<std::string>& args) {
  if (nproc < 1) throw blip2::ConfigError("--nproc must be at least 1");
  if (args.empty()) throw blip2::InputError("give the command to run after --, e.g. blip2 launch --nproc 2 -- train --config c.yaml");
  if (port <= 0) port = free_port();
  std::string self;
  {
    std::error_code ec;
    self = fs::read_symlink("/proc/self/exe", ec).string();
  }
  std::vector<pid_t> pids;
  for (int r = 0; r < nproc; ++r) {
    std::vector<std::string> env;
    for (char** e = environ; *e; ++e) {
      std::string s(*e);
      for (const char* k : {"RANK=", "WORLD_SIZE=", "LOCAL_RANK=", "MASTER_ADDR=", "MASTER_PORT="})
        if (s.rfind(k, 0) == 0) s.clear();
      if (!s.empty()) env.push_back(s);
    }
    env.push_back("RANK=" + std::to_string(r));
    env.push_back("LOCAL_RANK=" + std::to_string(r));
    env.push_back("WORLD_SIZE=" + std::to_string(nproc));
    env.push_back("MASTER_ADDR=127.0.0.1");
    env.push_back("MASTER_PORT=" + std::to_string(port));
    std::vector<char*> argv{const_cast<char*>(self.c_str())}, envp;
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    for (auto& e : env) envp.push_back(e.data());
    envp.push_back(nullptr);
    pid_t pid = 0;
    if (::posix_spawn(&pid, self.c_str(), nullptr, nullptr, argv.data(), envp.data()) != 0)
      throw blip2::Error("cannot start rank " + std::to_string(r) + " (" + self + ")");
    pids.push_back(pid);
  }
  int result = 0;
  size_t alive = pids.size();
  while (alive > 0) {
    int status = 0;
    pid_t pid = ::wait(&status);
    if (pid < 0) break;
    --alive;
    const int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    if (code != 0 && result == 0) {
      result = code;
      int rank = 0;
      for (size_t i = 0; i < pids.size(); ++i)
        if (pids[i] == pid) rank = static_cast<int>(i);
      std::fprintf(stderr, "blip2 launch: rank %d exited with status %d; stopping the other ranks\n", rank, code);
      for (pid_t p : pids)
        if (p != pid) ::kill(p, SIGTERM);
    }
  }
  return result;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"blip2: BLIP-2 in C++ (captioning, VQA, retrieval, training)"};
  app.require_subcommand(1);
  app.fallthrough();  // global flags (--verbose) may follow the subcommand
  bool verbose = false;
  app.add_flag("-v,--verbose", verbose, "print load time, resident memory and per-step timings to stderr");

  std::string case_dir;
  auto* verify = app.add_subcommand("verify", "replay a reference dump (meta.json plan) and compare every output tensor");
  verify->add_option("case_dir", case_dir, "case directory with meta.json, model + inputs/outputs safetensors")
      ->required();

  ModelFlags cap_model, ask_model;
  GenFlags cap_gen, ask_gen;
  std::vector<std::string> cap_images;
  std::string cap_prompt;
  bool cap_json = false, ask_json = false;
  auto* caption = app.add_subcommand("caption", "describe images");
  add_model_flags(caption, cap_model);
  add_generation_flags(caption, cap_gen);
  caption->add_option("--prompt", cap_prompt, "text the caption continues, e.g. \"a photo of\"");
  caption->add_flag("--json", cap_json, "one JSON object per image: image, text, token_ids, seconds");
  caption->add_option("images", cap_images, "image files (PNG, JPEG, WebP)")->required();

  std::string ask_image, ask_question, ask_template;
  auto* ask = app.add_subcommand("ask", "answer a question about an image (zero-shot VQA)");
  add_model_flags(ask, ask_model);
  add_generation_flags(ask, ask_gen);
  ask->add_option("--image,image", ask_image, "image file")->required();
  ask->add_option("--question,question", ask_question, "the question")->required();
  ask->add_option("--template", ask_template,
                  "prompt template with {} for the question (default: the LM family's, see docs)");
  ask->add_flag("--json", ask_json, "print a JSON object");

  std::string tok_dir;
  bool tok_no_special = false, tok_jsonl = false;
  std::vector<std::string> tok_text;
  auto* tokenize = app.add_subcommand("tokenize", "print the token ids of a text as a JSON list");
  tokenize->add_option("--tokenizer", tok_dir, "directory with vocab.json+merges.txt, tokenizer.json, vocab.txt or spiece.model")
      ->required();
  tokenize->add_flag("--no-special-tokens", tok_no_special, "do not add BOS/EOS/[CLS]/[SEP]");
  tokenize->add_flag("--jsonl", tok_jsonl, "read {\"text\":..., \"add_special_tokens\":...} lines from stdin");
  tokenize->add_option("text", tok_text, "text to tokenize");

  int pre_size = 0;
  std::string pre_config, pre_image, pre_output;
  auto* preprocess = app.add_subcommand("preprocess", "write the pixel values BLIP-2 sees for an image");
  preprocess->add_option("--size", pre_size, "output height and width (default 224 or the config's)");
  preprocess->add_option("--config", pre_config, "preprocessor_config.json to use");
  preprocess->add_option("image", pre_image, "image file")->required();
  preprocess->add_option("-o,--output", pre_output, "output .safetensors (pixel_values, resized_uint8)")->required();

  std::string train_config, resume_from, train_out;
  bool resume = false;
  int64_t train_steps = 0;
  auto* train = app.add_subcommand("train", "train a Q-Former bridge (stage 1 or 2) from a YAML recipe");
  train->add_option("-c,--config", train_config, "training recipe, e.g. configs/stage1.yaml")->required();
  train->add_flag("--resume", resume, "continue from output_dir/latest if it exists");
  train->add_option("--resume-from", resume_from, "continue from this checkpoint directory");
  train->add_option("--max-steps", train_steps, "override train.max_steps");
  train->add_option("--output-dir", train_out, "override train.output_dir");

  std::string conv_src, conv_dst;
  blip2::io::ConvertOptions conv;
  auto* convert = app.add_subcommand("convert", "convert between LAVIS .pth and HuggingFace safetensors layouts");
  convert->add_option("source", conv_src, "LAVIS .pth file, or HF checkpoint directory / .safetensors")->required();
  convert->add_option("destination", conv_dst, "output directory (or .pth file for HF -> LAVIS)")->required();
  convert->add_option("--config", conv.config_json, "config.json to put beside the converted HF weights");
  convert->add_option("--key", conv.key, "entry of the .pth that holds the state dict (default: auto)");
  convert->add_option("--lm", conv.lm, "LAVIS language-model prefix: opt or t5 (default: auto)");
  convert->add_option("--dtype", conv.dtype, "cast floating tensors: float32, float16, bfloat16");

  // blip2 eval caption|vqa|retrieval
  ModelFlags eval_model;
  GenFlags eval_gen;
  std::string eval_data;
  bool eval_json = false;
  blip2::EvalOptions eval_opts;
  auto* eval = app.add_subcommand("eval", "evaluate a model on a data directory (captions.json / questions.json)");
  eval->require_subcommand(1);
  std::vector<std::pair<std::string, CLI::App*>> eval_kinds;
  std::string eval_lm, eval_lm_config;
  for (const char* kind : {"caption", "vqa", "retrieval", "text-vqa"}) {
    const std::string k = kind;
    auto* sub = eval->add_subcommand(
        kind, k == "caption"  ? "CIDEr-D, BLEU-4 and exact match of generated captions"
              : k == "vqa"    ? "VQA accuracy (official normalisation) of generated answers"
              : k == "retrieval" ? "TR@1/5/10 and IR@1/5/10: ITC ranking, ITM re-ranking of the top k"
                                 : "VQA accuracy of a pretrained LM alone, reading each scene's caption as text "
                                   "where the visual prompt goes (the ceiling for zero-shot VQA)");
    if (k == "text-vqa") {
      sub->add_option("--lm", eval_lm, "a `blip2 pretrain lm` output directory")->required();
      sub->add_option("--config", eval_lm_config, "the BLIP-2 config.json the LM was pretrained with")->required();
    } else {
      add_model_flags(sub, eval_model);
    }
    sub->add_option("-d,--data", eval_data, "data directory (images + captions.json / questions.json)")->required();
    sub->add_flag("--json", eval_json, "print the metrics as one JSON object");
    sub->add_option("--limit", eval_opts.limit, "evaluate only the first N samples (0 = all)");
    sub->add_option("--batch-size", eval_opts.batch_size, "images per forward pass")->capture_default_str();
    if (std::string(kind) == "retrieval")
      sub->add_option("--rerank-k", eval_opts.rerank_k, "re-rank the top k by ITM")->capture_default_str();
    else
      add_generation_flags(sub, eval_gen);
    eval_kinds.emplace_back(kind, sub);
  }

  // blip2 shapes generate
  std::string shapes_out, shapes_split = "train";
  int shapes_count = 100, shapes_size = 224;
  uint64_t shapes_seed = 0;
  auto* shapes = app.add_subcommand("shapes", "the synthetic shapes world (docs/shapes.md)");
  auto* shapes_gen = shapes->add_subcommand("generate", "render a split: images + captions.json + questions.json");
  shapes->require_subcommand(1);
  shapes_gen->add_option("--out", shapes_out, "output directory")->required();
  shapes_gen->add_option("--split", shapes_split, "train, val, test or compositional")->capture_default_str();
  shapes_gen->add_option("--count", shapes_count, "number of images")->capture_default_str();
  shapes_gen->add_option("--seed", shapes_seed, "random seed")->capture_default_str();
  shapes_gen->add_option("--size", shapes_size, "image side in pixels")->capture_default_str();
  std::string corpus_out, corpus_template = "Question: {} Answer:";
  int corpus_count = 1000;
  uint64_t corpus_seed = 11;
  auto* shapes_corpus = shapes->add_subcommand(
      "corpus", "text-only LM corpus of unrendered train-split scenes: description -> caption, description -> "
                "VQA-format question -> answer");
  shapes_corpus->add_option("--out", corpus_out, "output text file, one context<TAB>prompt<TAB>target per line")
      ->required();
  shapes_corpus->add_option("--count", corpus_count, "number of scenes")->capture_default_str();
  shapes_corpus->add_option("--seed", corpus_seed, "random seed (use another than the images')")->capture_default_str();
  shapes_corpus->add_option("--template", corpus_template,
                            "VQA prompt template, {} = the question (T5: \"Question: {} Short answer:\")")
      ->capture_default_str();

  // blip2 pretrain lm|vit: the frozen unimodal models of the shapes world.
  std::string pre_cfg, pre_tok, pre_corpus, pre_data, pre_out_path;
  int64_t pre_steps = 1000, pre_batch = 16, pre_len = 64;
  double pre_lr = 1e-3;
  uint64_t pre_seed = 0;
  auto* pretrain = app.add_subcommand("pretrain", "pretrain a small LLM on text or a ViT on shapes scenes");
  pretrain->require_subcommand(1);
  auto* pre_lm = pretrain->add_subcommand("lm", "text-only OPT / T5 language model (causal LM / prefix LM)");
  auto* pre_vit = pretrain->add_subcommand("vit", "ViT on shapes-scene attributes (scenes.json)");
  for (auto* sub : {pre_lm, pre_vit}) {
    sub->add_option("--config", pre_cfg, "BLIP-2 config.json whose text_config / vision_config gives the dimensions")
        ->required();
    sub->add_option("--steps", pre_steps, "optimizer steps")->capture_default_str();
    sub->add_option("--batch-size", pre_batch, "batch size")->capture_default_str();
    sub->add_option("--lr", pre_lr, "peak learning rate (warm-up 5%, cosine to 10%)")->capture_default_str();
    sub->add_option("--seed", pre_seed, "random seed")->capture_default_str();
  }
  std::string pre_metrics;
  for (auto* sub : {pre_lm, pre_vit})
    sub->add_option("--metrics", pre_metrics, "also write the loss of every step here (JSON lines, as blip2 train)");
  pre_lm->add_option("--tokenizer", pre_tok, "tokenizer directory of the LM")->required();
  pre_lm->add_option("--corpus", pre_corpus, "text file, one text or context<TAB>prompt<TAB>target per line")
      ->required();
  pre_lm->add_option("--max-len", pre_len, "tokens per text")->capture_default_str();
  pre_lm->add_option("--out", pre_out_path, "output directory (model.safetensors + tokenizer files)")->required();
  pre_vit->add_option("--data", pre_data, "a `blip2 shapes generate` directory")->required();
  pre_vit->add_option("--out", pre_out_path, "output .safetensors (vision_model.* weights)")->required();
  std::vector<std::string> pre_eval;
  pre_vit->add_option("--eval-data", pre_eval,
                      "held-out `shapes generate` directories: report the heads' per-object attribute accuracy");

  // blip2 tokenizer train
  std::string tt_corpus, tt_out;
  blip2::TokenizerTrainOptions tt;
  auto* tokenizer_cmd = app.add_subcommand("tokenizer", "train a small tokenizer from a corpus");
  tokenizer_cmd->require_subcommand(1);
  auto* tok_train = tokenizer_cmd->add_subcommand("train", "wordpiece (Q-Former), bpe (OPT) or sentencepiece (T5)");
  tok_train->add_option("--kind", tt.kind, "wordpiece, bpe or sentencepiece")->required();
  tok_train->add_option("--corpus", tt_corpus, "text file, one text per line (or per tab-separated field)")
      ->required();
  tok_train->add_option("--vocab-size", tt.vocab_size, "target vocabulary size (bpe, sentencepiece)");
  tok_train->add_option("--out", tt_out, "output directory")->required();

  int nproc = 1, port = 0;
  std::vector<std::string> launch_args;
  // blip2 plot: training curves as PNG.
  std::string plot_out, plot_key = "loss";
  std::vector<std::string> plot_inputs;
  blip2::PlotOptions plot_opt;
  auto* plot = app.add_subcommand("plot", "draw a key of metrics.jsonl files as a PNG line chart");
  plot->add_option("--out", plot_out, "output .png")->required();
  plot->add_option("--key", plot_key, "the metrics key to draw (loss, loss_itc, lr, ...)")->capture_default_str();
  plot->add_option("--title", plot_opt.title, "chart title");
  plot->add_flag("--log-y", plot_opt.log_y, "logarithmic y axis");
  plot->add_option("inputs", plot_inputs, "LABEL=metrics.jsonl (or a path: its parent directory names it)")
      ->required();

  auto* launch = app.add_subcommand("launch", "run a blip2 subcommand in N processes (torchrun-style, loopback Gloo)");
  launch->add_option("--nproc", nproc, "number of processes")->required();
  launch->add_option("--master-port", port, "rendezvous port (default: a free one)");
  launch->add_option("command", launch_args, "the subcommand and its arguments, after --")->required();

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  try {
    if (*verify) return run_verify(case_dir, verbose);
    if (*caption) {
      auto p = load_pipeline(cap_model, verbose);
      auto images = load_images(cap_images);
      blip2::Progress progress("captioning " + std::to_string(images.size()) + " image(s)");
      auto rs = p.caption(images, cap_prompt, cap_gen.apply(blip2::Pipeline::caption_defaults()));
      progress.done();
      print_results(cap_images, rs, cap_json);
      return 0;
    }
    if (*ask) {
      auto p = load_pipeline(ask_model, verbose);
      auto images = load_images({ask_image});
      auto rs = p.answer(images, {ask_question}, ask_gen.apply(blip2::Pipeline::vqa_defaults()), ask_template);
      print_results({ask_image}, rs, ask_json, ask_question);
      return 0;
    }
    if (*tokenize) return run_tokenize(tok_dir, tok_no_special, tok_jsonl, tok_text);
    if (*preprocess) return run_preprocess(pre_size, pre_config, pre_image, pre_output);
    if (*train) return run_train(train_config, resume, resume_from, train_steps, train_out);
    if (*launch) return run_launch(nproc, port, launch_args);
    if (*eval) {
      for (const auto& [kind, sub] : eval_kinds) {
        if (!*sub) continue;
        json metrics;
        const bool rank0 = true;
        blip2::Progress progress("evaluating " + kind + " on " + eval_data, rank0);
        int64_t last_pct = -1;
        const bool tty = ::isatty(2);
        eval_opts.progress = [&](int64_t done, int64_t total) {
          const int64_t pct = total > 0 ? done * 100 / total : 100;
          if (tty && pct != last_pct) std::fprintf(stderr, "\r%s: %lld/%lld", kind.c_str(), static_cast<long long>(done),
                                                   static_cast<long long>(total));
          last_pct = pct;
        };
        if (kind == "retrieval") {
          blip2::PipelineOptions po;
          po.dtype = eval_model.dtype;
          po.device = eval_model.device;
          po.threads = eval_model.threads;
          metrics = blip2::evaluate_retrieval(resolve_model(eval_model.model), eval_data, eval_opts, po);
        } else if (kind == "text-vqa") {
          eval_opts.has_generation = true;
          eval_opts.generation = eval_gen.apply(blip2::Pipeline::vqa_defaults());
          metrics = blip2::evaluate_text_vqa(eval_lm, blip2::Blip2Config::from_file(eval_lm_config).text, eval_data,
                                             eval_opts);
        } else {
          auto p = load_pipeline(eval_model, verbose);
          eval_opts.has_generation = true;
          eval_opts.generation = eval_gen.apply(kind == "caption" ? blip2::Pipeline::caption_defaults()
                                                                  : blip2::Pipeline::vqa_defaults());
          metrics = kind == "caption" ? blip2::evaluate_captions(p, eval_data, eval_opts)
                                      : blip2::evaluate_vqa(p, eval_data, eval_opts);
        }
        progress.done();
        if (tty) std::fprintf(stderr, "\n");
        if (eval_json) {
          std::cout << metrics.dump() << "\n";
        } else {
          for (auto it = metrics.begin(); it != metrics.end(); ++it)
            if (it.value().is_number()) std::cout << it.key() << ": " << it.value().dump() << "\n";
        }
      }
      return 0;
    }
    if (*pretrain) {
      auto cfg = blip2::Blip2Config::from_file(pre_cfg);
      blip2::OptimConfig o;
      o.lr = pre_lr;
      o.min_lr = pre_lr / 10;
      o.warmup_lr = pre_lr / 100;
      o.warmup_steps = std::max<int64_t>(1, pre_steps / 20);
      o.total_steps = pre_steps;
      o.grad_clip = 1.0;
      const auto t0 = std::chrono::steady_clock::now();
      const bool tty = ::isatty(2);
      auto show = [&](int64_t step, double loss) {
        const double el = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        if (tty || step == pre_steps || step % 100 == 0)
          std::fprintf(stderr, "%sstep %s loss %.4f%s", tty ? "\r" : "",
                       blip2::progress_bar(step, pre_steps, el).c_str(), loss, tty ? "" : "\n");
      };
      auto write_metrics = [&](const std::vector<double>& losses) {
        if (pre_metrics.empty()) return;
        std::ofstream m(pre_metrics);
        for (size_t i = 0; i < losses.size(); ++i) m << json({{"step", i + 1}, {"loss", losses[i]}}).dump() << "\n";
        if (!m.flush()) throw blip2::InputError("cannot write --metrics '" + pre_metrics + "'");
      };
      if (*pre_lm) {
        blip2::LmPretrainConfig c;
        c.text = cfg.text;
        c.tokenizer_dir = pre_tok;
        std::ifstream in(pre_corpus);
        if (!in) throw blip2::InputError("corpus file '" + pre_corpus + "' cannot be read");
        size_t line_no = 0;
        for (std::string line; std::getline(in, line);)
          if (++line_no, !line.empty())
            c.texts.push_back(blip2::parse_lm_text(line, pre_corpus + ":" + std::to_string(line_no)));
        c.steps = pre_steps;
        c.batch_size = pre_batch;
        c.max_len = pre_len;
        c.optim = o;
        c.seed = pre_seed;
        auto r = blip2::pretrain_language_model(c, show);
        blip2::save_language_model(*r.model, pre_out_path, pre_tok);
        write_metrics(r.losses);
        if (tty) std::fprintf(stderr, "\n");
        std::printf("pretrained %s LM for %lld steps: loss %.4f -> %.4f; wrote %s\n", blip2::lm_family_name(cfg.text.family),
                    static_cast<long long>(pre_steps), r.losses.front(), r.losses.back(), pre_out_path.c_str());
      } else {
        auto r = blip2::pretrain_vision(cfg.vision, pre_data, pre_steps, pre_batch, o, pre_seed, show, pre_eval);
        blip2::save_vision_encoder(*r.model, pre_out_path);
        write_metrics(r.losses);
        if (tty) std::fprintf(stderr, "\n");
        std::printf("pretrained ViT for %lld steps: loss %.4f -> %.4f; wrote %s\n", static_cast<long long>(pre_steps),
                    r.losses.front(), r.losses.back(), pre_out_path.c_str());
        for (const auto& p : r.probes)
          std::printf("probe %s: %lld objects; shape %.1f%% color %.1f%% size %.1f%% all %.1f%%; count %.1f%%\n",
                      p.data_dir.c_str(), static_cast<long long>(p.objects), 100 * p.shape, 100 * p.color,
                      100 * p.size, 100 * p.all, 100 * p.count);
      }
      return 0;
    }
    if (*shapes_corpus) {
      const auto lines = blip2::shapes::corpus_lines(corpus_count, corpus_seed, corpus_template);
      std::ofstream out(corpus_out);
      for (const auto& l : lines) out << l << "\n";
      if (!out.flush()) throw blip2::InputError("cannot write '" + corpus_out + "'; choose a writable --out path");
      std::printf("wrote %zu texts from %d scenes to %s\n", lines.size(), corpus_count, corpus_out.c_str());
      return 0;
    }
    if (*plot) {
      std::vector<blip2::PlotSeries> series;
      for (const auto& in : plot_inputs) {
        const size_t eq = in.find('=');
        const std::string path = eq == std::string::npos ? in : in.substr(eq + 1);
        const std::string label =
            eq == std::string::npos ? fs::path(path).parent_path().filename().string() : in.substr(0, eq);
        series.push_back(blip2::read_metrics_series(path, plot_key, label));
      }
      plot_opt.y_label = plot_key;
      blip2::plot_png(plot_out, series, plot_opt);
      std::printf("wrote %s (%zu series of \"%s\")\n", plot_out.c_str(), series.size(), plot_key.c_str());
      return 0;
    }
    if (*tok_train) {
      std::ifstream in(tt_corpus);
      if (!in) throw blip2::InputError("corpus file '" + tt_corpus + "' cannot be read");
      std::vector<std::string> texts;
      // A corpus line may hold several texts separated by tabs (shapes corpus).
      for (std::string line; std::getline(in, line);)
        for (auto& field : blip2::text::split_fields(line, '\t')) texts.push_back(std::move(field));
      auto r = blip2::train_tokenizer(texts, tt_out, tt);
      std::printf("wrote a %s tokenizer of %lld tokens to %s\n", tt.kind.c_str(), static_cast<long long>(r.vocab_size),
                  tt_out.c_str());
      return 0;
    }
    if (*shapes_gen) {
      blip2::Progress progress("rendering " + std::to_string(shapes_count) + " " + shapes_split + " images");
      blip2::shapes::generate_split(shapes_out, blip2::shapes::parse_split(shapes_split), shapes_count, shapes_seed,
                                    shapes_size);
      progress.done();
      std::printf("wrote %d %s images, captions.json and questions.json to %s\n", shapes_count, shapes_split.c_str(),
                  shapes_out.c_str());
      return 0;
    }
    if (*convert) {
      blip2::Progress progress("converting " + conv_src);
      auto report = blip2::io::convert_checkpoint(conv_src, conv_dst, conv);
      progress.done();
      std::printf("%s\n", report.summary().c_str());
      return 0;
    }
  } catch (const blip2::Error& e) {
    std::fprintf(stderr, "blip2: error: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "blip2: internal error: %s\n", e.what());
    return 2;
  }
  return 0;
}
