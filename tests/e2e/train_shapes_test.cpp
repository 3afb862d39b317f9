// The reduced shapes-world recipe (QUICK=1 scripts/train_shapes): every step
// of issue 5's pipeline runs on real generated data, and the unimodal
// pretraining learns. (Targets are the full recipe's business, not CI's.)
#include <algorithm>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "blip2/data/tokenizer.h"
#include "e2e_util.h"

namespace blip2 {
namespace {

// The "loss" of each line of a metrics.jsonl file, in order.
std::vector<double> logged_losses(const std::string& path) {
  std::vector<double> loss;
  std::ifstream in(path);
  for (std::string line; std::getline(in, line);) loss.push_back(nlohmann::json::parse(line).at("loss").get<double>());
  return loss;
}

TEST(TrainShapesTest, QuickRecipeRunsEveryStageAndLearns) {
  test::TempDir dir;
  const std::string log = dir.file("log");
  // QFORMER: a Q-Former of other sizes than the configs' (here 64 wide, 1 layer) for every stage;
  // VIT_POSITION, OPT_CONTEXT_DISTILL, CAPTION_CHOICE: issue 11's levers reach the ViT and stage 2.
  const std::string cmd = "QUICK=1 QFORMER=\"64 1\" VIT_POSITION=1 OPT_CONTEXT_DISTILL=0.5 CAPTION_CHOICE=first BLIP2=" + std::string(BLIP2_CLI) + " " + std::string(BLIP2_SOURCE_DIR) +
                          "/scripts/train_shapes " + dir.file("out") + " >" + log + " 2>&1";
  const int status = std::system(cmd.c_str());
  std::stringstream ss;
  ss << std::ifstream(log).rdbuf();
  const std::string out = ss.str();
  ASSERT_EQ(status, 0) << out;
  // "pretrained <what> for N steps: loss A -> B": each falls.
  size_t pos = 0;
  int seen = 0;
  while ((pos = out.find("pretrained ", pos)) != std::string::npos) {
    double a = 0, b = 0;
    const auto l = out.find("loss ", pos);
    ASSERT_EQ(std::sscanf(out.c_str() + l + 5, "%lf -> %lf", &a, &b), 2);
    EXPECT_LT(b, a) << out.substr(pos, 80);
    ++seen;
    pos = l;
  }
  EXPECT_EQ(seen, 3);  // ViT, OPT, T5
  EXPECT_NE(out.find("data/test: patch position "), std::string::npos) << out;
  std::stringstream s2;
  s2 << std::ifstream(dir.file("out/stage2_opt.yaml")).rdbuf();
  EXPECT_NE(s2.str().find("context_distill: 0.5"), std::string::npos) << s2.str();
  EXPECT_NE(s2.str().find("caption_choice: first"), std::string::npos) << s2.str();
  std::stringstream s1;
  s1 << std::ifstream(dir.file("out/stage1.yaml")).rdbuf();
  EXPECT_NE(s1.str().find("caption_choice: random"), std::string::npos) << s1.str();
  const std::string bad = "VIT_POSITION=2 BLIP2=" + std::string(BLIP2_CLI) + " " + std::string(BLIP2_SOURCE_DIR) +
                          "/scripts/train_shapes " + dir.file("bad") + " >" + log + " 2>&1";
  EXPECT_NE(std::system(bad.c_str()), 0);
  std::stringstream why;
  why << std::ifstream(log).rdbuf();
  EXPECT_NE(why.str().find("VIT_POSITION='2' must be 0 or 1"), std::string::npos) << why.str();
  auto read = [&](const std::string& f) { return nlohmann::json::parse(std::ifstream(dir.file("out/" + f))); };
  for (const char* lm : {"opt", "t5", "opt_no_stage1"})
    for (const char* split : {"test", "compositional"}) {
      EXPECT_EQ(read(std::string("eval_caption_") + lm + "_" + split + ".json").at("count"), 16);
      EXPECT_GT(read(std::string("eval_vqa_") + lm + "_" + split + ".json").at("count").get<int>(), 16);
    }
  for (const char* lm : {"opt", "t5"})
    for (const char* split : {"test", "compositional"})
      EXPECT_GT(read(std::string("eval_text-vqa_") + lm + "_" + split + ".json").at("count").get<int>(), 16);
  for (const char* r : {"retrieval", "retrieval_no_itg"})
    for (const char* split : {"test", "compositional"}) {
      const auto m = read(std::string("eval_retrieval_") + r + "_" + split + ".json");
      EXPECT_EQ(m.at("count"), 16);
      // One text per distinct caption: at least one, at most two per image.
      EXPECT_GE(m.at("texts").get<int>(), 1);
      EXPECT_LE(m.at("texts").get<int>(), 32);
    }
  // Both stages learn: the logged loss falls from the first entry to the last.
  for (const char* run : {"stage1", "stage1_no_itg", "stage2_opt", "stage2_t5", "stage2_opt_no_stage1"}) {
    const auto loss = logged_losses(dir.file(std::string("out/runs/") + run + "/metrics.jsonl"));
    ASSERT_GE(loss.size(), 3u) << run;
    EXPECT_LT(loss.back(), loss.front()) << run;
  }
  for (const char* run : {"stage1", "stage2_opt", "stage2_t5"}) {
    std::string latest;
    std::ifstream(dir.file(std::string("out/runs/") + run + "/latest")) >> latest;
    const auto qf = read(std::string("runs/") + run + "/" + latest + "/config.json").at("qformer_config");
    EXPECT_EQ(qf.at("hidden_size"), 64) << run;
    EXPECT_EQ(qf.at("intermediate_size"), 128) << run;
    EXPECT_EQ(qf.at("num_hidden_layers"), 1) << run;
  }
  // Curves are written for the unimodal pretraining too, and plot.
  for (const char* f : {"vit_metrics.jsonl", "lm_opt_metrics.jsonl", "lm_t5_metrics.jsonl"})
    EXPECT_TRUE(std::filesystem::exists(dir.file(std::string("out/") + f))) << f;
}

// STAGE1_INIT: stage 2 straight from an existing stage-1 model (the bundled
// one), with per-LM pretraining settings; then ONLY= bundles just that model.
TEST(TrainShapesTest, QuickRecipeFromAnExistingStage1BundlesOnlyWhatItTrained) {
  test::TempDir dir;
  const std::string src = BLIP2_SOURCE_DIR, retrieval = src + "/models/shapes/retrieval";
  const std::string env = "QUICK=1 BLIP2=" + std::string(BLIP2_CLI) + " STAGE1_INIT=" + retrieval;
  const std::string bundled_qformer = " QFORMER=\"128 3\"";  // the bundled retrieval model's Q-Former
  auto run = [&](const std::string& cmd) {
    const int status = std::system((cmd + " >" + dir.file("log") + " 2>&1").c_str());
    std::stringstream ss;
    ss << std::ifstream(dir.file("log")).rdbuf();
    return std::make_pair(status, ss.str());
  };
  auto [bad_qf, bad_qf_why] = run(env + " ABLATIONS=0 QFORMER=128 " + src + "/scripts/train_shapes " + dir.file("out"));
  EXPECT_NE(bad_qf, 0);
  EXPECT_NE(bad_qf_why.find("QFORMER='128' must be two positive integers, HIDDEN LAYERS"), std::string::npos) << bad_qf_why;
  auto [bad_b, bad_b_why] = run(env + " ABLATIONS=0 T5_BUCKETS=32 " + src + "/scripts/train_shapes " + dir.file("out"));
  EXPECT_NE(bad_b, 0);
  EXPECT_NE(bad_b_why.find("T5_BUCKETS='32' must be two positive integers, NUM MAX_DISTANCE"), std::string::npos)
      << bad_b_why;
  auto [bad_spm, bad_spm_why] =
      run(env + " ABLATIONS=0 T5_SPM_MODEL=word " + src + "/scripts/train_shapes " + dir.file("out"));
  EXPECT_NE(bad_spm, 0);
  EXPECT_NE(bad_spm_why.find("T5_SPM_MODEL='word' must be unigram or bpe"), std::string::npos) << bad_spm_why;
  auto [bad_then, bad_then_why] =
      run(env + " ABLATIONS=0 T5_LM_THEN=4000 " + src + "/scripts/train_shapes " + dir.file("out"));
  EXPECT_NE(bad_then, 0);
  EXPECT_NE(bad_then_why.find("T5_LM_THEN='4000' must be STEPS LR"), std::string::npos) << bad_then_why;
  // T5_LM_THEN_CONTEXT's flags reach the second pretraining: an invalid one stops the run there.
  auto [bad_ctx, bad_ctx_why] = run(env + bundled_qformer + " ABLATIONS=0 T5_LM_THEN=\"2 0.0004\" " +
                                    "T5_LM_THEN_CONTEXT=\"--context-noise -1\" " + src + "/scripts/train_shapes " +
                                    dir.file("ctx"));
  EXPECT_NE(bad_ctx, 0);
  EXPECT_NE(bad_ctx_why.find("context.noise must be >= 0"), std::string::npos) << bad_ctx_why;
  EXPECT_TRUE(std::filesystem::exists(dir.file("ctx/lm_t5_first/model.safetensors"))) << bad_ctx_why;
  auto [refused, why] = run(env + " " + src + "/scripts/train_shapes " + dir.file("out"));
  EXPECT_NE(refused, 0);
  EXPECT_NE(why.find("STAGE1_INIT skips stage 1, which the ablations retrain; set ABLATIONS=0 too"), std::string::npos)
      << why;

  // LM_REPEAT: the LMs read their corpora with those question kinds weighted; the tokenizers the plain ones.
  // The T5's own settings: a BPE sentencepiece tokenizer, 32 buckets, context distillation in stage 2
  // (with its encoder share, the filled teacher and the context slots' share),
  // and a second pretraining (with context noise) from the first.
  auto [status, out] = run(env + bundled_qformer + " ABLATIONS=0 T5_LM_LR=0.001 T5_LM_CONTEXT= " +
                           "LM_REPEAT=\"color_of_shape=3 exists=2\" S2_SEED=8 T5_SPM_MODEL=bpe T5_VOCAB=300 " +
                           "T5_BUCKETS=\"32 128\" T5_CONTEXT_DISTILL=0.5 T5_CONTEXT_DISTILL_ENCODER=0.25 " +
                           "T5_CONTEXT_DISTILL_FILL=1 T5_CONTEXT_DISTILL_SLOTS=2 T5_LM_THEN=\"12 0.0004\" " +
                           "T5_LM_THEN_CONTEXT=\"--context-noise 0.5\" " + src + "/scripts/train_shapes " +
                           dir.file("out"));
  ASSERT_EQ(status, 0) << out;
  {  // T5_LM_THEN: lm_t5_first (QUICK's 30 steps), then lm_t5 (12 steps from it), which stage 2 reads.
    const auto first = logged_losses(dir.file("out/lm_t5_first_metrics.jsonl"));
    const auto then = logged_losses(dir.file("out/lm_t5_metrics.jsonl"));
    ASSERT_EQ(first.size(), 30u);
    ASSERT_EQ(then.size(), 12u);
    EXPECT_LT(then.front(), 0.8 * first.front());  // it starts where the first one ended, not from random weights
    EXPECT_TRUE(std::filesystem::exists(dir.file("out/lm_t5_first/model.safetensors")));
    std::stringstream t5_yaml;
    t5_yaml << std::ifstream(dir.file("out/stage2_t5.yaml")).rdbuf();
    EXPECT_NE(t5_yaml.str().find("language_model_init: " + dir.file("out/lm_t5") + "\n"), std::string::npos)
        << t5_yaml.str();
  }
  EXPECT_NE(out.find("(STAGE1_INIT: stage 1 is " + retrieval + ")"), std::string::npos) << out;
  EXPECT_FALSE(std::filesystem::exists(dir.file("out/vit.safetensors")));
  EXPECT_FALSE(std::filesystem::exists(dir.file("out/runs/stage1")));
  std::stringstream yaml;
  yaml << std::ifstream(dir.file("out/stage2_t5.yaml")).rdbuf();
  EXPECT_NE(yaml.str().find("vision_init: " + retrieval + "/model.safetensors"), std::string::npos) << yaml.str();
  EXPECT_NE(yaml.str().find("init: " + retrieval), std::string::npos) << yaml.str();
  EXPECT_NE(yaml.str().find("seed: 8"), std::string::npos) << yaml.str();
  EXPECT_NE(yaml.str().find("context_distill: 0.5"), std::string::npos) << yaml.str();
  EXPECT_NE(yaml.str().find("context_distill_encoder: 0.25\n"), std::string::npos) << yaml.str();
  EXPECT_NE(yaml.str().find("context_distill_fill: true\n"), std::string::npos) << yaml.str();
  EXPECT_NE(yaml.str().find("context_distill_slots: 2\n"), std::string::npos) << yaml.str();
  std::stringstream opt_yaml;
  opt_yaml << std::ifstream(dir.file("out/stage2_opt.yaml")).rdbuf();
  EXPECT_EQ(opt_yaml.str().find("context_distill"), std::string::npos) << opt_yaml.str();
  auto read = [&](const std::string& f) { return nlohmann::json::parse(std::ifstream(dir.file("out/" + f))); };
  EXPECT_EQ(read("eval_retrieval_retrieval_test.json").at("count"), 16);
  EXPECT_EQ(read("eval_caption_t5_test.json").at("count"), 16);
  {
    std::string latest;
    std::ifstream(dir.file("out/runs/stage2_t5/latest")) >> latest;
    const auto t5 = read("runs/stage2_t5/" + latest + "/config.json").at("text_config");
    EXPECT_EQ(t5.at("relative_attention_num_buckets"), 32);
    EXPECT_EQ(t5.at("relative_attention_max_distance"), 128);
    const auto qf = read("runs/stage2_t5/" + latest + "/config.json").at("qformer_config");
    EXPECT_EQ(qf.at("hidden_size"), 128);  // QFORMER's sizes kept beside the buckets
    // T5_SPM_MODEL=bpe: the question's words are whole pieces (unigram spells "what" letter by letter).
    const auto tok = load_tokenizer(dir.file("out/tok/t5"));
    EXPECT_EQ(tok->tokenize("what color is the star?").size(), 6u);
    EXPECT_EQ(tok->vocab_size(), 300);  // T5_VOCAB (the default would give 200)
  }
  for (const char* lm : {"opt", "t5"}) {
    auto lines = [&](const std::string& f) {
      std::vector<std::string> v;
      std::ifstream in(dir.file("out/" + f));
      for (std::string l; std::getline(in, l);) v.push_back(l);
      return v;
    };
    const auto plain = lines(std::string("corpus_") + lm + ".txt");
    const auto weighted = lines(std::string("corpus_") + lm + "_lm.txt");
    ASSERT_GT(plain.size(), 0u) << lm;
    EXPECT_GT(weighted.size(), plain.size()) << lm;
    EXPECT_TRUE(std::equal(plain.begin(), plain.end(), weighted.begin())) << lm;
  }

  const std::string dest = dir.file("models");
  auto [bundled, blog] = run("ONLY=t5 " + src + "/scripts/bundle_shapes " + dir.file("out") + " " + dest);
  ASSERT_EQ(bundled, 0) << blog;
  EXPECT_TRUE(std::filesystem::exists(dest + "/t5/model.safetensors"));
  EXPECT_FALSE(std::filesystem::exists(dest + "/opt"));
  EXPECT_FALSE(std::filesystem::exists(dest + "/retrieval"));
  auto [bad, bad_log] = run("ONLY=vit " + src + "/scripts/bundle_shapes " + dir.file("out") + " " + dest);
  EXPECT_NE(bad, 0);
  EXPECT_NE(bad_log.find("ONLY names opt, t5 or retrieval, not 'vit'"), std::string::npos) << bad_log;
}

}  // namespace
}  // namespace blip2
