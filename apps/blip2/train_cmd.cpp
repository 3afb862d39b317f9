// blip2 train, blip2 launch: Q-Former training from a YAML recipe, on one
// process or several (loopback Gloo).
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <memory>

#include "apps/blip2/cli.h"
#include "blip2/data/image_processor.h"
#include "blip2/train/data_source.h"
#include "blip2/train/distributed.h"
#include "blip2/train/launch.h"
#include "blip2/train/trainer.h"
#include "blip2/util/progress.h"

namespace blip2::cli {
namespace {

struct TrainFlags {
  std::string config, resume_from, output_dir;
  bool resume = false;
  std::optional<int64_t> max_steps;
};

int run_train(const TrainFlags& f) {
  auto cfg = TrainConfig::from_yaml_file(f.config);
  if (f.max_steps) {
    if (*f.max_steps < 1)
      throw ConfigError("--max-steps must be >= 1, got " + std::to_string(*f.max_steps) +
                        " (leave it out to use the recipe's train.max_steps)");
    cfg.max_steps = *f.max_steps;
  }
  if (!f.output_dir.empty()) cfg.output_dir = f.output_dir;
  std::unique_ptr<Collective> dist;
  auto env = DistEnv::from_env();
  if (env) dist = make_gloo_collective(*env);
  Collective& coll = dist ? *dist : local_collective();
  const bool rank0 = coll.rank() == 0;
  Progress building("building the model", rank0);
  Trainer trainer(cfg, coll);
  building.done();
  ImageProcessorConfig proc;
  const auto& vc = trainer.model()->config().vision;
  proc.height = proc.width = static_cast<int>(cfg.image_size > 0 ? cfg.image_size : vc.image_size);
  auto data = make_batch_source(cfg, proc, coll.rank(), coll.world_size());
  if (f.resume || !f.resume_from.empty()) {
    if (trainer.resume(data.get(), f.resume_from)) {
      if (rank0) std::fprintf(stderr, "resumed at step %lld\n", static_cast<long long>(trainer.step()));
    } else if (rank0) {
      std::fprintf(stderr, "no checkpoint in %s: starting from scratch\n", cfg.output_dir.c_str());
    }
  }
  trainer.on_notice = [&](const std::string& s) {
    if (coll.world_size() > 1) std::fprintf(stderr, "[rank %d] %s\n", coll.rank(), s.c_str());
    else std::fprintf(stderr, "%s\n", s.c_str());
  };
  const auto t0 = std::chrono::steady_clock::now();
  const int64_t start = trainer.step();
  StepMetrics last;
  const bool tty = ::isatty(2);
  trainer.on_step = [&](const StepMetrics& m) {
    last = m;
    if (!rank0) return;
    const double el = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::string bar = progress_bar(m.step, cfg.max_steps, el, start);
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
                static_cast<long long>(trainer.step() - start), format_duration(el).c_str(), last.loss,
                last.loss_itc, last.loss_itm, last.loss_lm, cfg.output_dir.c_str(), cfg.output_dir.c_str());
    if (const auto* cache = trainer.feature_cache())
      std::printf("feature cache %s: this process read %lld images back, computed %lld, recomputed %lld damaged\n",
                  cfg.feature_cache.c_str(), static_cast<long long>(cache->stats().hits),
                  static_cast<long long>(cache->stats().computed), static_cast<long long>(cache->stats().rejected));
  }
  return 0;
}

}  // namespace

void add_train_commands(Registry& r) {
  auto t = std::make_shared<TrainFlags>();
  auto* train = r.add(nullptr, "train", "train a Q-Former bridge (stage 1 or 2) from a YAML recipe",
                      [t] { return run_train(*t); });
  train->add_option("-c,--config", t->config, "training recipe, e.g. configs/stage1.yaml")->required();
  train->add_flag("--resume", t->resume, "continue from output_dir/latest if it exists");
  train->add_option("--resume-from", t->resume_from, "continue from this checkpoint directory");
  train->add_option("--max-steps", t->max_steps, "override train.max_steps");
  train->add_option("--output-dir", t->output_dir, "override train.output_dir");

  struct Launch {
    LaunchOptions options;
    std::vector<std::string> args;
  };
  auto l = std::make_shared<Launch>();
  auto* launch = r.add(nullptr, "launch", "run a blip2 subcommand in N processes (torchrun-style, loopback Gloo)",
                       [l] { return launch_processes(l->args, l->options); });
  launch->add_option("--nproc", l->options.nproc, "number of processes")->required();
  launch->add_option("--master-port", l->options.master_port, "rendezvous port (default: a free one)");
  launch->add_option("command", l->args, "the subcommand and its arguments, after --")->required();
}

}  // namespace blip2::cli
