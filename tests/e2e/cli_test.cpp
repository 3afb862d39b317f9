// The CLI end to end: an image file in, words out, equal to what the library
// computes from the same pixel values (whose parity with HuggingFace is
// checked by the golden tests); tokenize / preprocess / verify; bad input.
#include <filesystem>
#include <nlohmann/json.hpp>

#include "blip2/data/image.h"
#include "blip2/data/image_processor.h"
#include "blip2/data/spm_runtime.h"
#include "blip2/data/tokenizer.h"
#include "blip2/io/safetensors.h"
#include "blip2/model/blip2_model.h"
#include "e2e_util.h"

namespace blip2 {
namespace {

using nlohmann::json;
using test::q;
using test::run_cli;
using test::TempDir;

const char* kImage = "image_processor/inputs/gradient_64x48.png";

// A complete checkpoint directory: golden weights + a tokenizer of 100 ids.
std::string make_model_dir(const TempDir& dir, const std::string& golden_case) {
  test::copy_files(test::golden(golden_case), dir.path(), {"config.json", "model.safetensors"});
  if (golden_case == "t5") {
    std::ofstream corpus(dir.file("corpus.txt"));
    for (int i = 0; i < 400; ++i)
      corpus << "a photo of " << (i % 2 ? "the red" : "a blue") << " shape number " << i * 7919 % 1000
             << " question answer what is it\n";
    corpus.close();
    SpmModel::train("--input=" + dir.file("corpus.txt") + " --model_prefix=" + dir.file("spiece") +
                    " --vocab_size=100 --model_type=unigram --character_coverage=1.0 --pad_id=0 --eos_id=1"
                    " --unk_id=2 --bos_id=-1");
    std::ofstream(dir.file("tokenizer_config.json")) << R"({"tokenizer_class": "T5Tokenizer", "extra_ids": 0})";
  } else {
    test::write_opt_tokenizer(dir.path());
  }
  std::ofstream(dir.file("preprocessor_config.json")) << R"({"size": {"height": 16, "width": 16}})";
  return dir.path();
}

torch::Tensor pixels_of(const std::string& image) {
  ImageProcessorConfig c;
  c.height = c.width = 16;
  return preprocess(load_image(image), c).unsqueeze(0);
}

std::vector<int64_t> ids_of(const json& j) { return j.at("token_ids").get<std::vector<int64_t>>(); }

std::vector<int64_t> row(const torch::Tensor& t) {
  auto r = t[0].contiguous();
  return std::vector<int64_t>(r.data_ptr<int64_t>(), r.data_ptr<int64_t>() + r.numel());
}

TEST(CliTest, CaptionEqualsModelGenerationOnTheSamePixels) {
  for (const std::string c : {"opt", "t5"}) {
    SCOPED_TRACE(c);
    TempDir dir;
    make_model_dir(dir, c);
    auto r = run_cli("caption --model " + q(dir.path()) + " --beams 3 --max-new-tokens 6 --json " +
                     q(test::golden(kImage)));
    ASSERT_EQ(r.code, 0) << r.err;
    auto j = json::parse(r.out);
    torch::NoGradGuard g;
    auto m = load_blip2(dir.path());
    auto tok = load_tokenizer(dir.path());
    GenerationConfig gc;
    gc.num_beams = 3;
    gc.max_new_tokens = 6;
    gc.min_new_tokens = 1;
    // No prompt: OPT starts from the BOS generate() puts there; T5's encoder reads the queries and
    // the empty prompt's encoding, [</s>], as stage 2 and LM pretraining give it.
    torch::Tensor ids, mask;
    if (c == "t5") {
      const auto empty = tok->encode("", true);
      ASSERT_EQ(empty.size(), 1u);
      ids = torch::tensor(empty, torch::kLong).view({1, -1});
      mask = torch::ones_like(ids);
    }
    auto out = m->generate(pixels_of(test::golden(kImage)), ids, mask, gc);
    EXPECT_EQ(ids_of(j), row(out.sequences));
    EXPECT_EQ(j.at("text").get<std::string>(), text::py_strip(tok->decode(ids_of(j), true)));
  }
}

TEST(CliTest, AskUsesTheFamilyPromptTemplate) {
  for (const std::string c : {"opt", "t5"}) {
    SCOPED_TRACE(c);
    TempDir dir;
    make_model_dir(dir, c);
    auto r = run_cli("ask --model " + q(dir.path()) + " --json --beams 2 " + q(test::golden(kImage)) +
                     " 'what is it?'");
    ASSERT_EQ(r.code, 0) << r.err;
    auto j = json::parse(r.out);
    torch::NoGradGuard g;
    auto m = load_blip2(dir.path());
    auto tok = load_tokenizer(dir.path());
    const std::string prompt = c == "t5" ? "Question: what is it? Short answer:" : "Question: what is it? Answer:";
    auto ids = tok->encode(prompt, true);
    auto t = torch::tensor(ids, torch::kLong).view({1, -1});
    GenerationConfig gc;
    gc.num_beams = 2;
    gc.max_new_tokens = 10;
    gc.min_new_tokens = 1;
    gc.length_penalty = -1.0;
    auto out = m->generate(pixels_of(test::golden(kImage)), t, torch::ones_like(t), gc);
    EXPECT_EQ(ids_of(j), row(out.sequences));
    EXPECT_EQ(j.at("question").get<std::string>(), "what is it?");
  }
}

TEST(CliTest, TheLibraryExampleCaptionsLikeTheCli) {
  TempDir dir;
  make_model_dir(dir, "opt");
  auto cli = run_cli("caption --model " + q(dir.path()) + " " + q(test::golden(kImage)));
  ASSERT_EQ(cli.code, 0) << cli.err;
  TempDir tmp;
  const std::string cmd = std::string(BLIP2_EXAMPLE) + " " + q(dir.path()) + " " + q(test::golden(kImage)) +
                          " 'what is it?' >" + tmp.file("out") + " 2>&1";
  ASSERT_EQ(std::system(cmd.c_str()), 0);
  std::stringstream ss;
  ss << std::ifstream(tmp.file("out")).rdbuf();
  const std::string out = ss.str();
  EXPECT_EQ(out.substr(0, cli.out.size()), cli.out);
  EXPECT_EQ(std::count(out.begin(), out.end(), '\n'), 2) << out;
}

TEST(CliTest, ShapesGenerateThenEvalCaptionVqaAndRetrieval) {
  TempDir dir;
  make_model_dir(dir, "opt");
  TempDir data;
  auto g = run_cli("shapes generate --out " + q(data.path()) + " --split test --count 4 --seed 2 --size 32");
  ASSERT_EQ(g.code, 0) << g.err;
  for (const char* f : {"captions.json", "questions.json"}) EXPECT_TRUE(std::filesystem::exists(data.file(f))) << f;
  auto c = run_cli("eval caption --model " + q(dir.path()) + " --data " + q(data.path()) +
                   " --json --beams 1 --max-new-tokens 4");
  ASSERT_EQ(c.code, 0) << c.err;
  auto cj = json::parse(c.out);
  EXPECT_EQ(cj.at("count"), 4);
  for (const char* k : {"cider", "bleu4", "exact_match"}) EXPECT_TRUE(cj.contains(k)) << k;
  auto v = run_cli("eval vqa --model " + q(dir.path()) + " --data " + q(data.path()) + " --json --limit 3 --max-new-tokens 2");
  ASSERT_EQ(v.code, 0) << v.err;
  auto vj = json::parse(v.out);
  EXPECT_EQ(vj.at("count"), 3);
  EXPECT_GE(vj.at("accuracy").get<double>(), 0.0);
  // Retrieval needs the retrieval heads: the golden ITM model with a BERT vocabulary of its size.
  TempDir itm;
  test::copy_files(test::golden("itm"), itm.path(), {"config.json", "model.safetensors"});
  std::vector<std::string> words;
  for (const char* w : {"a", "small", "large", "red", "green", "blue", "yellow", "purple", "orange", "circle",
                        "square", "triangle", "star", "to", "the", "left", "right", "of", "above", "below", "and", ","})
    words.push_back(w);
  test::write_bert_vocab(itm.path(), words);
  auto r = run_cli("eval retrieval --model " + q(itm.path()) + " --data " + q(data.path()) + " --json --rerank-k 2");
  ASSERT_EQ(r.code, 0) << r.err;
  auto rj = json::parse(r.out);
  for (const char* k : {"txt_r1", "txt_r5", "img_r1", "img_r10", "r_mean"}) EXPECT_TRUE(rj.contains(k)) << k;
  EXPECT_DOUBLE_EQ(rj.at("txt_r10").get<double>(), 100.0);  // 4 images: every rank is within 10
  // Asking a caption model for retrieval is a clear error.
  auto bad = run_cli("eval retrieval --model " + q(dir.path()) + " --data " + q(data.path()));
  EXPECT_EQ(bad.code, 1);
  EXPECT_NE(bad.err.find("retrieval"), std::string::npos) << bad.err;
}

TEST(CliTest, BatchOfImagesGivesOneLinePerImage) {
  TempDir dir;
  make_model_dir(dir, "opt");
  auto r = run_cli("caption --model " + q(dir.path()) + " --beams 1 --max-new-tokens 4 --prompt 'a photo of' " +
                   q(test::golden(kImage)) + " " + q(test::golden("image_processor/inputs/tall_20x90.png")));
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(std::count(r.out.begin(), r.out.end(), '\n'), 2);
  EXPECT_NE(r.out.find("gradient_64x48.png: "), std::string::npos);
}

TEST(CliTest, BadInputGivesOneLineErrorsAndNonZeroExit) {
  TempDir dir;
  make_model_dir(dir, "opt");
  std::ofstream(dir.file("junk.png")) << "this is not an image";
  struct Case {
    std::string args, needle;
  };
  for (const auto& c : std::vector<Case>{
           {"caption --model " + q(dir.path()) + " /nonexistent/x.png", "/nonexistent/x.png"},
           {"caption --model " + q(dir.path()) + " " + q(dir.file("junk.png")), "junk.png"},
           {"caption --model /nonexistent/model " + q(test::golden(kImage)), "/nonexistent/model"},
           {"ask --model " + q(dir.path()) + " " + q(test::golden(kImage)) + " '   '", "question is empty"},
           {"caption --model " + q(dir.path()) + " --beams 0 " + q(test::golden(kImage)), "num_beams"},
           {"verify /nonexistent/case", "/nonexistent/case"},
           {"caption --model " + q(dir.path()) + " --threads 9999 " + q(test::golden(kImage)), "--threads 9999"},
           {"caption --model " + q(dir.path()) + " --threads -1 " + q(test::golden(kImage)), "--threads -1"},
           {"caption --model " + q(dir.path()) + " --sample --temperature inf " + q(test::golden(kImage)),
            "temperature must be positive and finite, got inf"},
           {"ask --model " + q(dir.path()) + " --max-new-tokens 100000 " + q(test::golden(kImage)) + " 'what?'",
            "max_new_tokens 100000 does not fit the language model's context"},
           {"preprocess --size 0 " + q(test::golden(kImage)) + " -o " + q(dir.file("p.safetensors")),
            "size must be at least 1x1, got 0x0"},
           {"preprocess --size 100000 " + q(test::golden(kImage)) + " -o " + q(dir.file("p.safetensors")),
            "above 4096 pixels a side"},
           {"caption --model " + q(dir.file("config.json")) + " " + q(test::golden(kImage)),
            "is a file; -m takes a model directory"},
           {"caption --model " + q(dir.path()) + " --max-new-tokens -1 " + q(test::golden(kImage)),
            "max_new_tokens must be at least 1, got -1"},
           {"caption --model " + q(dir.path()) + " --max-pixels 100 " + q(test::golden(kImage)),
            "raise the limit with --max-pixels"},
       }) {
    auto r = run_cli(c.args);
    EXPECT_EQ(r.code, 1) << c.args << "\n" << r.err;
    EXPECT_NE(r.err.find(c.needle), std::string::npos) << c.args << "\nstderr: " << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  }
  // Usage errors exit 2 (not CLI11's 104-109), with one line naming the problem.
  for (const auto& args : {std::string("caption --no-such-flag x.png"), std::string("captoin x.png"),
                           std::string("caption --beams many x.png"), std::string("")}) {
    auto r = run_cli(args);
    EXPECT_EQ(r.code, 2) << args << "\n" << r.err;
  }
  auto typo = run_cli("captoin x.png");
  EXPECT_NE(typo.err.find("unknown command 'captoin'"), std::string::npos) << typo.err;
  EXPECT_NE(typo.err.find("caption, ask"), std::string::npos) << typo.err;
  EXPECT_EQ(run_cli("caption --help").code, 0);
}

TEST(CliTest, OneBadImageAmongSeveralIsReportedAndTheOthersCaptioned) {
  TempDir dir;
  make_model_dir(dir, "opt");
  std::ofstream(dir.file("bad.png")) << "not a png";
  const std::string good = test::golden(kImage), other = test::golden("image_processor/inputs/tall_20x90.png");
  auto r = run_cli("caption --model " + q(dir.path()) + " --beams 1 --max-new-tokens 3 " + q(good) + " " +
                   q(dir.file("bad.png")) + " " + q(other));
  EXPECT_EQ(r.code, 1) << r.err;
  EXPECT_EQ(std::count(r.out.begin(), r.out.end(), '\n'), 2) << r.out;
  EXPECT_NE(r.out.find(good + ": "), std::string::npos) << r.out;
  EXPECT_NE(r.out.find(other + ": "), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("bad.png"), std::string::npos) << r.out;
  EXPECT_NE(r.err.find("bad.png"), std::string::npos) << r.err;
}

TEST(CliTest, ModelDirectoryFaultsAreNamed) {
  TempDir dir;
  make_model_dir(dir, "opt");
  // Without tokenizer_config.json the LM's end token would not be special and
  // would end up in captions.
  std::filesystem::rename(dir.file("tokenizer_config.json"), dir.file("tokenizer_config.json.bak"));
  auto r = run_cli("caption --model " + q(dir.path()) + " " + q(test::golden(kImage)));
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("does not treat the language model's end token"), std::string::npos) << r.err;
  std::filesystem::rename(dir.file("tokenizer_config.json.bak"), dir.file("tokenizer_config.json"));
  // A directory where a file belongs is named as one (not a JSON parse error).
  std::filesystem::create_directory(dir.file("preprocessor_config.json.d"));
  if (std::filesystem::exists(dir.file("preprocessor_config.json")))
    std::filesystem::remove(dir.file("preprocessor_config.json"));
  std::filesystem::rename(dir.file("preprocessor_config.json.d"), dir.file("preprocessor_config.json"));
  r = run_cli("caption --model " + q(dir.path()) + " " + q(test::golden(kImage)));
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("preprocessor_config.json is a directory"), std::string::npos) << r.err;
}

TEST(CliTest, TokenizeMatchesTheGoldenIds) {
  const std::string gdir = test::golden("tokenizers/gpt2");
  std::ifstream in(gdir + "/cases.json");
  auto cases = json::parse(in);
  TempDir dir;
  // The golden case's own files and init (OPT-style BOS).
  for (const auto& e : std::filesystem::directory_iterator(gdir))
    if (e.path().extension() != ".json" || e.path().filename() == "vocab.json")
      std::filesystem::copy_file(e.path(), dir.file(e.path().filename().string()));
  const auto& c = cases.at("cases").at(5);
  auto r = run_cli("tokenize --tokenizer " + q(dir.path()) + " --no-special-tokens " + q(c.at("text").get<std::string>()));
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(json::parse(r.out), c.at("ids"));
  json line = {{"text", c.at("text")}, {"add_special_tokens", false}};
  auto r2 = run_cli("tokenize --tokenizer " + q(dir.path()) + " --jsonl", line.dump() + "\n" + line.dump() + "\n");
  ASSERT_EQ(r2.code, 0) << r2.err;
  EXPECT_EQ(std::count(r2.out.begin(), r2.out.end(), '\n'), 2);
  EXPECT_EQ(run_cli("tokenize --tokenizer " + q(dir.path()) + " --jsonl", "{not json}\n").code, 1);
}

TEST(CliTest, PreprocessWritesThePixelValuesOfTheGolden) {
  TempDir dir;
  auto r = run_cli("preprocess --size 16 " + q(test::golden(kImage)) + " -o " + q(dir.file("p.safetensors")));
  ASSERT_EQ(r.code, 0) << r.err;
  auto got = io::load_safetensors(dir.file("p.safetensors"));
  auto want = io::load_safetensors(test::golden("image_processor/size16/all.safetensors"));
  EXPECT_TRUE(torch::equal(got.at("resized_uint8"), want.at("gradient_64x48.resized_uint8")));
  EXPECT_LT((got.at("pixel_values")[0] - want.at("gradient_64x48.pixel_values")).abs().max().item<float>(), 1e-5);
}

TEST(CliTest, VerifyFailsWhenAReferenceTensorIsPerturbed) {
  auto ok = run_cli("verify " + q(test::golden("itm")));
  EXPECT_EQ(ok.code, 0) << ok.out;
  EXPECT_NE(ok.out.find("21 passed, 0 failed"), std::string::npos) << ok.out;
  TempDir dir;
  test::copy_files(test::golden("itm"), dir.path(),
                   {"config.json", "model.safetensors", "inputs.safetensors", "meta.json"});
  auto outs = io::load_safetensors(test::golden("itm/outputs.safetensors"));
  outs["itm.logits_per_image"] = outs["itm.logits_per_image"] + 0.01;
  std::vector<std::pair<std::string, at::Tensor>> v(outs.begin(), outs.end());
  io::save_safetensors(dir.file("outputs.safetensors"), v);
  auto bad = run_cli("verify " + q(dir.path()));
  EXPECT_EQ(bad.code, 1);
  EXPECT_NE(bad.out.find("itm.logits_per_image 0.01 FAIL"), std::string::npos) << bad.out;
  EXPECT_NE(bad.out.find("20 passed, 1 failed"), std::string::npos) << bad.out;
}

}  // namespace
}  // namespace blip2
