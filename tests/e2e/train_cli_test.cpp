// `blip2 train` end to end on a small image-caption set: checkpoints that
// `blip2 caption` loads, kill -9 and resume, and two Gloo processes with
// batch B matching one process with batch 2B.
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>

#include <chrono>
#include <sstream>
#include <thread>

#include "blip2/data/spm_runtime.h"
#include "blip2/io/safetensors.h"
#include "blip2/model/blip2_model.h"
#include "e2e_util.h"
#include "tmpfs_util.h"
#include "model_fixtures.h"

extern char** environ;

namespace blip2 {
namespace {

using test::q;
using test::run_cli;
using test::TempDir;

const std::vector<std::pair<std::string, std::array<uint8_t, 3>>> kColors = {
    {"red", {220, 40, 40}}, {"green", {40, 170, 60}}, {"blue", {40, 80, 220}}, {"yellow", {235, 210, 40}}};
const std::vector<std::string> kShapes = {"square", "circle"};

class TrainCliTest : public ::testing::Test {
 public:
  void SetUp() override {
    std::filesystem::create_directories(dir_.file("images"));
    std::filesystem::create_directories(dir_.file("tok"));
    nlohmann::json ann = nlohmann::json::array();
    int i = 0;
    for (const auto& [color, rgb] : kColors)
      for (const auto& shape : kShapes) {
        const std::string name = "img" + std::to_string(i) + ".png";
        test::write_png(dir_.file("images/" + name), 16, 16, [&, shape = shape, rgb = rgb](int x, int y) {
          const bool inside = shape == "square" ? (x > 3 && x < 12 && y > 3 && y < 12)
                                                : ((x - 8) * (x - 8) + (y - 8) * (y - 8) < 20);
          return inside ? rgb : std::array<uint8_t, 3>{225, 225, 225};
        });
        // Every caption has the same number of tokens (DDP equivalence of the ITG mean).
        ann.push_back({{"image", name}, {"caption", "a " + color + " " + shape}, {"image_id", i}});
        ++i;
      }
    std::ofstream(dir_.file("captions.json")) << ann.dump();
    std::vector<std::string> words = {"a"};
    for (const auto& [c, rgb] : kColors) words.push_back(c);
    for (const auto& s : kShapes) words.push_back(s);
    test::write_bert_vocab(dir_.file("tok"), words);
    auto c = test::tiny_config("opt");
    c.vision.image_size = 16;
    c.vision.patch_size = 4;
    c.qformer.hidden_dropout_prob = 0;
    c.qformer.attention_probs_dropout_prob = 0;
    std::ofstream(dir_.file("config.json")) << c.to_json_string();
  }

  std::string write_recipe(const std::string& name, int batch, int steps, int save_every, bool itm = true,
                           const std::string& lr = "0.001") {
    std::ofstream y(dir_.file(name));
    y << "stage: 1\n"
      << "model:\n  config: config.json\n  qformer_tokenizer: tok\n"
      << "data:\n  annotations: captions.json\n  image_root: images\n  workers: 2\n"
      << "objective:\n  max_txt_len: 8\n  itm: " << (itm ? "true" : "false") << "\n"
      << "optim:\n  lr: " << lr << "\n  warmup_steps: 2\n  min_lr: 0.00001\n"
      << "train:\n  batch_size: " << batch << "\n  max_steps: " << steps << "\n  seed: 3\n  log_every: 1\n"
      << "  save_every: " << save_every << "\n  output_dir: runs/" << name << "\n";
    return dir_.file(name);
  }

  std::map<std::string, at::Tensor> final_weights(const std::string& run) {
    std::ifstream latest(dir_.file("runs/" + run + "/latest"));
    std::string ck;
    std::getline(latest, ck);
    return io::load_safetensors(dir_.file("runs/" + run + "/" + ck + "/model.safetensors"));
  }

  TempDir dir_;
};

TEST_F(TrainCliTest, TrainsLogsAndWritesACheckpointThatLoads) {
  auto r = run_cli("train --config " + q(write_recipe("s1.yaml", 4, 8, 4)));
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("trained 8 steps"), std::string::npos) << r.out;
  std::ifstream m(dir_.file("runs/s1.yaml/metrics.jsonl"));
  std::vector<nlohmann::json> lines;
  for (std::string l; std::getline(m, l);) lines.push_back(nlohmann::json::parse(l));
  ASSERT_EQ(lines.size(), 8u);
  for (const char* k : {"loss", "loss_itc", "loss_itm", "loss_lm", "lr", "samples_per_sec"})
    EXPECT_TRUE(lines.back().contains(k)) << k;
  EXPECT_EQ(lines.back()["step"], 8);
  // The checkpoint is a complete HF-layout model: verify-style loading works.
  auto w = final_weights("s1.yaml");
  EXPECT_TRUE(w.count("qformer.encoder.layer.0.crossattention.attention.query.weight"));
  EXPECT_TRUE(std::filesystem::exists(dir_.file("runs/s1.yaml/checkpoint-00000008/vocab.txt")));
}

TEST_F(TrainCliTest, DiskFullWhileSavingIsOneLineExit1AndTheLastCheckpointResumes) {
  // One checkpoint's size, then a tmpfs with room for one and a half.
  ASSERT_EQ(run_cli("train --config " + q(write_recipe("m.yaml", 4, 1, 1))).code, 0);
  const uint64_t size = test::tree_bytes(dir_.file("runs/m.yaml/checkpoint-00000001"));
  test::TmpfsDir disk(dir_.file("disk"), size * 3 / 2 + 64 * 1024);
  if (!disk.mounted()) GTEST_SKIP() << "cannot mount a tmpfs here (" << disk.error() << "); needs root";
  const std::string out = dir_.file("disk/run"), recipe = write_recipe("d.yaml", 4, 3, 1);
  auto r = run_cli("train --config " + q(recipe) + " --output-dir " + q(out));
  EXPECT_EQ(r.code, 1) << r.err;  // was 134 (SIGABRT in libtorch's writer)
  const auto last = r.err.substr(r.err.rfind("blip2: error:"));
  EXPECT_NE(last.find("checkpoint at step 2 was not saved"), std::string::npos) << r.err;
  EXPECT_NE(last.find("No space left on device"), std::string::npos) << r.err;
  EXPECT_NE(last.find("checkpoint-00000001"), std::string::npos) << r.err;
  EXPECT_EQ(std::count(last.begin(), last.end(), '\n'), 1) << r.err;
  for (const auto& e : std::filesystem::directory_iterator(out))
    EXPECT_EQ(e.path().filename().string().rfind(".tmp", 0), std::string::npos) << e.path();
  EXPECT_FALSE(std::filesystem::exists(out + "/checkpoint-00000002"));
  auto resumed = run_cli("train --resume --max-steps 1 --config " + q(recipe) + " --output-dir " + q(out));
  EXPECT_EQ(resumed.code, 0) << resumed.err;
  EXPECT_NE(resumed.err.find("resumed at step 1"), std::string::npos) << resumed.err;
}

TEST_F(TrainCliTest, KilledRunResumesToTheSameWeightsAsAnUninterruptedOne) {
  const std::string recipe = write_recipe("k.yaml", 4, 80, 10);
  // Uninterrupted reference run.
  const std::string ref_recipe = write_recipe("ref.yaml", 4, 80, 10);
  ASSERT_EQ(run_cli("train --config " + q(ref_recipe)).code, 0);
  // Start, wait for the first checkpoint, kill -9.
  std::string self = BLIP2_CLI;
  std::vector<std::string> args = {self, "train", "--config", recipe};
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  pid_t pid = 0;
  ASSERT_EQ(::posix_spawn(&pid, self.c_str(), nullptr, nullptr, argv.data(), environ), 0);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  // Wait for the first checkpoint to be published (`latest` written), then
  // kill: later checkpoints may be half-written at that moment.
  while (!std::filesystem::exists(dir_.file("runs/k.yaml/latest")) && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  ::kill(pid, SIGKILL);
  int status = 0;
  ::waitpid(pid, &status, 0);
  ASSERT_TRUE(WIFSIGNALED(status)) << "the run finished before it could be killed";
  // Whatever was being written, `latest` names a complete checkpoint.
  std::ifstream latest(dir_.file("runs/k.yaml/latest"));
  std::string ck;
  std::getline(latest, ck);
  for (const char* f : {"model.safetensors", "optimizer.pt", "trainer_state.json", "rng.safetensors", "config.json"})
    EXPECT_TRUE(std::filesystem::exists(dir_.file("runs/k.yaml/" + ck + "/" + f))) << ck << "/" << f;
  auto r = run_cli("train --resume --config " + q(recipe));
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.err.find("resumed at step"), std::string::npos) << r.err;
  auto a = final_weights("ref.yaml"), b = final_weights("k.yaml");
  ASSERT_EQ(a.size(), b.size());
  for (const auto& [n, t] : a) EXPECT_TRUE(torch::equal(t, b.at(n))) << n;
  // metrics.jsonl describes one continuous run of 80 steps.
  std::ifstream m(dir_.file("runs/k.yaml/metrics.jsonl"));
  int64_t lines = 0, last = 0;
  for (std::string l; std::getline(m, l);) {
    ++lines;
    last = nlohmann::json::parse(l)["step"].get<int64_t>();
  }
  EXPECT_EQ(lines, 80);
  EXPECT_EQ(last, 80);
}

TEST_F(TrainCliTest, TwoGlooProcessesWithBatchBMatchOneProcessWithBatch2B) {
  // ITM draws random hard negatives per rank, so it is off here; ITC
  // negatives are all-gathered and ITG is per token. lr 1e-4 (the paper's):
  // Adam turns float-noise gradients (attention key biases) into +-lr steps,
  // so the two runs differ by float rounding times a small multiple of lr.
  ASSERT_EQ(run_cli("train --config " + q(write_recipe("one.yaml", 4, 5, 5, false, "0.0001"))).code, 0);
  auto r = run_cli("launch --nproc 2 -- train --config " + q(write_recipe("two.yaml", 2, 5, 5, false, "0.0001")));
  ASSERT_EQ(r.code, 0) << r.err;
  auto a = final_weights("one.yaml"), b = final_weights("two.yaml");
  double worst = 0;
  for (const auto& [n, t] : a) worst = std::max(worst, (t - b.at(n)).abs().max().item<double>());
  std::printf("  max |one process - two processes| = %.3g\n", worst);
  EXPECT_LT(worst, 1e-5);
  // And it really trained: the weights moved away from the first step's.
  ASSERT_EQ(run_cli("train --config " + q(write_recipe("zero.yaml", 4, 1, 1, false, "0.0001"))).code, 0);
  auto z = final_weights("zero.yaml");
  double moved = 0;
  for (const auto& [n, t] : a) moved = std::max(moved, (t - z.at(n)).abs().max().item<double>());
  EXPECT_GT(moved, 1e-4);
}

// data.feature_cache over two Gloo processes: each rank writes its own part
// and reads the other's, the weights are those of the same launch without the
// cache, and a second launch reads every image back.
TEST_F(TrainCliTest, TwoProcessesShareTheFeatureCacheAndTrainAsWithoutIt) {
  // write_recipe's recipe with `lines` added to its data section.
  auto with_data = [&](const std::string& path, const std::string& lines) {
    std::stringstream text;
    text << std::ifstream(path).rdbuf();
    std::string y = text.str();
    const std::string workers = "  workers: 2\n";
    y.replace(y.find(workers), workers.size(), workers + lines);
    std::ofstream(path) << y;
    return path;
  };
  const std::string cache = "  augment: false\n  feature_cache: cache\n";
  // 8 images, 2 per rank a step: 3 epochs in 6 steps.
  ASSERT_EQ(run_cli("launch --nproc 2 -- train --config " + q(with_data(write_recipe("plain.yaml", 2, 6, 6), "  augment: false\n"))).code, 0);
  auto r = run_cli("launch --nproc 2 -- train --config " + q(with_data(write_recipe("cached.yaml", 2, 6, 6), cache)));
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.err.find("[rank 1] feature cache"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("0 of 8 images cached in 2 part(s)"), std::string::npos) << r.err;
  // Rank 0 computes its 4 images of epoch 1; every later image is cached by one rank or the other.
  EXPECT_NE(r.out.find("this process read 8 images back, computed 4"), std::string::npos) << r.out;
  EXPECT_TRUE(std::filesystem::exists(dir_.file("cache/part-0.bin")));
  EXPECT_TRUE(std::filesystem::exists(dir_.file("cache/part-1.bin")));
  auto plain = final_weights("plain.yaml"), cached = final_weights("cached.yaml");
  double worst = 0;
  for (const auto& [n, t] : plain) worst = std::max(worst, (t - cached.at(n)).abs().max().item<double>());
  std::printf("  max |without cache - with cache| = %.3g\n", worst);
  // Bit for bit where a GEMM row's rounding does not depend on its place in
  // the batch (AVX-512 machines measured 0); OpenBLAS's AVX2 kernels round a
  // partial block's rows apart, and across ranks an image's features may come
  // from a batch in which it stood elsewhere (3.8e-5 after 6 steps measured).
  EXPECT_LT(worst, 1e-4);
  auto again = run_cli("launch --nproc 2 -- train --config " + q(with_data(write_recipe("again.yaml", 2, 6, 6), cache)));
  ASSERT_EQ(again.code, 0) << again.err;
  EXPECT_NE(again.out.find("this process read 12 images back, computed 0"), std::string::npos) << again.out;
  // Augmentation (on by default) with the cache is refused, naming both keys.
  auto refused = run_cli("train --config " + q(with_data(write_recipe("bad.yaml", 2, 1, 1), "  feature_cache: cache\n")));
  EXPECT_EQ(refused.code, 1);
  EXPECT_NE(refused.err.find("data.feature_cache needs data.augment: false"), std::string::npos) << refused.err;
}

// Stage 2: a frozen LLM of our own (saved under its own names, as an HF OPT /
// T5 checkpoint is), the stage-1 checkpoint as init; the LM loss falls, the
// LLM stays bit-identical, and the checkpoint captions from an image file.
void stage2_trains_and_captions(TrainCliTest* t, TempDir& dir, const std::string& lm, bool vqa = false,
                                bool bf16 = false) {
  ASSERT_EQ(run_cli("train --config " + q(t->write_recipe("s1.yaml", 4, 3, 3))).code, 0);
  auto c = test::tiny_config(lm);
  c.vision.image_size = 16;
  c.vision.patch_size = 4;
  c.qformer.hidden_dropout_prob = 0;
  c.qformer.attention_probs_dropout_prob = 0;
  std::filesystem::create_directories(dir.file("lm"));
  std::filesystem::create_directories(dir.file("lmtok"));
  if (lm == "opt") {
    c.text.opt.vocab_size = 100;
    c.text.opt.max_position_embeddings = 128;  // character-level prompts are long
    test::write_opt_tokenizer(dir.file("lmtok"));
  } else {
    c.text.t5.vocab_size = 100;
    std::ofstream corpus(dir.file("corpus.txt"));
    for (int i = 0; i < 400; ++i)
      corpus << "a red square a blue circle a green square a yellow circle number " << i * 7919 % 1000
             << " what is it\n";
    corpus.close();
    SpmModel::train("--input=" + dir.file("corpus.txt") + " --model_prefix=" + dir.file("lmtok/spiece") +
                    " --vocab_size=100 --model_type=unigram --character_coverage=1.0 --pad_id=0 --eos_id=1"
                    " --unk_id=2 --bos_id=-1");
    std::ofstream(dir.file("lmtok/tokenizer_config.json")) << R"({"tokenizer_class": "T5Tokenizer", "extra_ids": 0})";
  }
  std::ofstream(dir.file("config_" + lm + ".json")) << c.to_json_string();
  {
    Blip2Model m(c, Blip2Parts{});
    test::randomize(*m, 21);
    std::vector<std::pair<std::string, at::Tensor>> ts;
    for (const auto& p : m->language_model->named_parameters()) ts.emplace_back(p.key(), p.value());
    io::save_safetensors(dir.file("lm/model.safetensors"), ts);
  }
  if (vqa) {
    // "what color is the <shape>?" -> the colour word, from the captions.
    auto caps = nlohmann::json::parse(std::ifstream(dir.file("captions.json")));
    nlohmann::json qa = nlohmann::json::array();
    for (const auto& c : caps) {
      std::istringstream is(c["caption"].get<std::string>());
      std::string a, color, shape;
      is >> a >> color >> shape;
      qa.push_back({{"image", c["image"]}, {"question", "what color is the " + shape + "?"}, {"answer", {color}},
                    {"question_id", c["image_id"]}});
    }
    std::ofstream(dir.file("vqa.json")) << qa.dump();
  }
  std::ofstream y(dir.file("s2.yaml"));
  y << "stage: 2\nmodel:\n  config: config_" << lm << ".json\n  init: runs/s1.yaml/checkpoint-00000003\n"
    << "  language_model_init: lm\n  lm_tokenizer: lmtok\n  qformer_tokenizer: tok\n"
    << "data:\n  annotations: " << (vqa ? "vqa.json" : "captions.json")
    << "\n  image_root: images\n  workers: 1\n  augment: false\n"
    << "objective:\n  max_txt_len: 12\n  mode: " << (vqa ? "vqa" : "pretrain") << "\n"
    << (vqa ? "" : "  prompt: \"a\"\n")
    << "optim:\n  lr: 0.005\n  warmup_steps: 2\n  min_lr: 0.0005\n"
    << "train:\n  batch_size: 4\n  max_steps: 40\n  seed: 5\n  log_every: 1\n  save_every: 40\n"
    << "  bf16: " << (bf16 ? "true" : "false") << "\n"
    << "  output_dir: runs/s2\n";
  y.close();
  auto r = run_cli("train --config " + q(dir.file("s2.yaml")));
  ASSERT_EQ(r.code, 0) << r.err;
  std::ifstream m(dir.file("runs/s2/metrics.jsonl"));
  std::vector<double> losses;
  for (std::string l; std::getline(m, l);) losses.push_back(nlohmann::json::parse(l)["loss_lm"].get<double>());
  ASSERT_EQ(losses.size(), 40u);
  // Means over whole epochs (2 batches each, no augmentation): without
  // learning they would be equal.
  const double first = (losses[0] + losses[1] + losses[2] + losses[3]) / 4;
  const double last = (losses[36] + losses[37] + losses[38] + losses[39]) / 4;
  std::printf("  %s stage-2 loss %.3f -> %.3f\n", lm.c_str(), first, last);
  EXPECT_LT(last, first * 0.95);
  // The LLM is frozen: bit-identical to the checkpoint it came from.
  auto before = io::load_safetensors(dir.file("lm/model.safetensors"));
  auto after = io::load_safetensors(dir.file("runs/s2/checkpoint-00000040/model.safetensors"));
  for (const auto& [n, v] : before) {
    auto a = after.at("language_model." + n);
    // Held in bf16 when asked: frozen means unchanged up to that one rounding.
    EXPECT_TRUE(torch::equal(bf16 ? v.to(torch::kBFloat16) : v, a)) << n;
  }
  // The Q-Former came from stage 1 and then trained.
  auto s1 = io::load_safetensors(dir.file("runs/s1.yaml/checkpoint-00000003/model.safetensors"));
  EXPECT_FALSE(torch::equal(s1.at("query_tokens"), after.at("query_tokens")));
  auto cap = run_cli("caption --model " + q(dir.file("runs/s2/checkpoint-00000040")) + " --beams 2 " +
                     q(dir.file("images/img0.png")));
  EXPECT_EQ(cap.code, 0) << cap.err;
  EXPECT_FALSE(cap.out.empty());
  if (vqa) {
    EXPECT_TRUE(std::filesystem::exists(dir.file("runs/s2/checkpoint-00000040/qformer_tokenizer/vocab.txt")));
    auto ans = run_cli("ask --model " + q(dir.file("runs/s2/checkpoint-00000040")) + " " +
                       q(dir.file("images/img0.png")) + " 'what color is the square?'");
    EXPECT_EQ(ans.code, 0) << ans.err;
    // The Q-Former reads the question: different questions give different query outputs.
    torch::NoGradGuard g;
    auto m = load_blip2(dir.file("runs/s2/checkpoint-00000040"));
    ASSERT_TRUE(m->parts().qformer_text);
    auto img = m->encode_image(torch::randn({1, 3, 16, 16})).last_hidden_state;
    auto q1 = m->query_image(img, false, torch::tensor({{2, 5, 6, 3}}, torch::kLong)).last_hidden_state;
    auto q2 = m->query_image(img, false, torch::tensor({{2, 5, 9, 3}}, torch::kLong)).last_hidden_state;
    EXPECT_EQ(q1.sizes(), (std::vector<int64_t>{1, 5, 16}));
    EXPECT_FALSE(torch::allclose(q1, q2));
  }
}

TEST_F(TrainCliTest, VqaFineTuningGivesTheQuestionToTheQFormer) { stage2_trains_and_captions(this, dir_, "opt", true); }

TEST_F(TrainCliTest, VqaFineTuningWithT5) { stage2_trains_and_captions(this, dir_, "t5", true); }

TEST_F(TrainCliTest, Stage2WithTheFrozenLlmInBf16) { stage2_trains_and_captions(this, dir_, "opt", false, true); }

TEST_F(TrainCliTest, Stage2OptTrainsThroughTheFrozenLlmAndCaptions) { stage2_trains_and_captions(this, dir_, "opt"); }

TEST_F(TrainCliTest, Stage2T5PrefixLmTrainsAndCaptions) { stage2_trains_and_captions(this, dir_, "t5"); }

TEST_F(TrainCliTest, PretrainCommandsMakeTheFrozenUnimodalModels) {
  // A text-only OPT on the captions.
  auto c = test::tiny_config("opt");
  c.text.opt.vocab_size = 100;
  c.text.opt.max_position_embeddings = 128;
  c.vision.image_size = 32;
  c.vision.patch_size = 8;
  std::ofstream(dir_.file("lm_config.json")) << c.to_json_string();
  std::filesystem::create_directories(dir_.file("lmtok"));
  test::write_opt_tokenizer(dir_.file("lmtok"));
  {
    std::ofstream corpus(dir_.file("corpus.txt"));
    for (const auto& [color, rgb] : kColors)
      for (const auto& shape : kShapes) corpus << "a " << color << " " << shape << "\n";
  }
  auto r = run_cli("pretrain lm --config " + q(dir_.file("lm_config.json")) + " --tokenizer " + q(dir_.file("lmtok")) +
                   " --corpus " + q(dir_.file("corpus.txt")) + " --steps 40 --batch-size 8 --lr 0.01 --out " +
                   q(dir_.file("lm")));
  ASSERT_EQ(r.code, 0) << r.err;
  double first = 0, last = 0;
  ASSERT_EQ(std::sscanf(r.out.c_str() + r.out.find("loss ") + 5, "%lf -> %lf", &first, &last), 2) << r.out;
  EXPECT_LT(last, first * 0.6) << r.out;
  auto lm = io::load_safetensors(dir_.file("lm/model.safetensors"));
  EXPECT_TRUE(lm.count("model.decoder.embed_tokens.weight"));
  EXPECT_TRUE(std::filesystem::exists(dir_.file("lm/vocab.json")));
  // A ViT on shapes scenes.
  ASSERT_EQ(run_cli("shapes generate --out " + q(dir_.file("shapes")) + " --count 24 --seed 1 --size 32").code, 0);
  auto v = run_cli("pretrain vit --config " + q(dir_.file("lm_config.json")) + " --data " + q(dir_.file("shapes")) +
                   " --steps 10 --batch-size 8 --lr 0.003 --out " + q(dir_.file("vit.safetensors")));
  ASSERT_EQ(v.code, 0) << v.err;
  auto vit = io::load_safetensors(dir_.file("vit.safetensors"));
  EXPECT_TRUE(vit.count("vision_model.embeddings.patch_embedding.weight"));
  for (const auto& [n, t] : vit) EXPECT_EQ(n.rfind("vision_model.", 0), 0u) << n;
  // Bad input: a missing corpus is one clear line.
  auto bad = run_cli("pretrain lm --config " + q(dir_.file("lm_config.json")) + " --tokenizer " + q(dir_.file("lmtok")) +
                     " --corpus /nonexistent/c.txt --out " + q(dir_.file("x")));
  EXPECT_EQ(bad.code, 1);
  EXPECT_NE(bad.err.find("/nonexistent/c.txt"), std::string::npos) << bad.err;
}

TEST_F(TrainCliTest, ARankThatFailsStopsTheLaunch) {
  std::ofstream(dir_.file("broken.yaml")) << "stage: 1\nmodel:\n  config: missing.json\n";
  auto r = run_cli("launch --nproc 2 -- train --config " + q(dir_.file("broken.yaml")));
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.err.find("missing.json"), std::string::npos) << r.err;
}

TEST_F(TrainCliTest, RecipeErrorsNameTheKey) {
  std::ofstream(dir_.file("bad.yaml")) << "stage: 1\ntrain:\n  batch_sise: 4\n";
  auto r = run_cli("train --config " + q(dir_.file("bad.yaml")));
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("unknown key 'train.batch_sise'"), std::string::npos) << r.err;
  // Missing images are a clear error (or skipped with skip_missing_images).
  std::filesystem::remove(dir_.file("images/img3.png"));
  auto r2 = run_cli("train --config " + q(write_recipe("m.yaml", 4, 1, 1)));
  EXPECT_EQ(r2.code, 1);
  EXPECT_NE(r2.err.find("img3.png"), std::string::npos) << r2.err;
}

}  // namespace
}  // namespace blip2
