// Parity with HuggingFace transformers 4.45 slow tokenizers on the golden set
// in shared/golden/tokenizers (see its README.md). Data-driven: every
// cases*.json below that directory, every case, every field:
//   tokens               tok.tokenize(text)
//   ids                  tok.encode(text, add_special_tokens=False)
//   ids_with_special     tok.encode(text, add_special_tokens=True)
//   decoded              tok.decode(ids)
//   decoded_skip_special tok.decode(ids_with_special, skip_special_tokens=True)
// Files whose `init` names a placeholder ("<gpt2 vocab.json>", "<vocab.txt>")
// need the real vocabularies of scripts/fetch_vocabs, looked for in
// ${BLIP2_VOCAB_DIR:-$HOME/.cache/blip2cpp/vocabs}; the test skips without them.
#include <algorithm>
#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "blip2/data/tokenizer.h"
#include "test_util.h"

namespace blip2 {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

std::string tokenizers_dir() { return test::golden("tokenizers"); }

std::string vocab_cache_dir() {
  if (const char* env = std::getenv("BLIP2_VOCAB_DIR")) return env;
  const char* home = std::getenv("HOME");
  return std::string(home ? home : "") + "/.cache/blip2cpp/vocabs";
}

// Every golden cases*.json, relative to the tokenizers directory, sorted.
std::vector<std::string> case_files() {
  std::vector<std::string> out;
  std::error_code ec;
  const fs::path root = tokenizers_dir();
  if (!fs::is_directory(root, ec)) return out;
  for (fs::recursive_directory_iterator it(root, ec), end; it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (it->is_regular_file() && name.rfind("cases", 0) == 0 && it->path().extension() == ".json")
      out.push_back(fs::relative(it->path(), root).string());
  }
  std::sort(out.begin(), out.end());
  return out;
}

std::string from_hex(const std::string& hex) {
  std::string out;
  for (size_t i = 0; i + 1 < hex.size(); i += 2) out += static_cast<char>(std::stoi(hex.substr(i, 2), nullptr, 16));
  return out;
}

json read_json(const std::string& path) {
  std::ifstream in(path);
  return json::parse(in);
}

bool is_placeholder(const json& v) { return v.is_string() && v.get<std::string>().rfind("<", 0) == 0; }

// The tokenizer a golden file was produced with. Sets `skip` (and returns
// nullptr) when it needs real vocabularies that are not fetched.
std::unique_ptr<Tokenizer> make_tokenizer(const fs::path& file, const json& golden, std::string& skip) {
  const json& init = golden.at("init");
  const std::string cls = golden.at("tokenizer").get<std::string>();
  const fs::path dir = file.parent_path();
  TokenizerOptions options;
  options.clean_up_tokenization_spaces = golden.at("clean_up_tokenization_spaces").get<bool>();
  if (cls == "GPT2Tokenizer") {
    if (init.contains("add_bos_token")) options.add_bos_token = init["add_bos_token"].get<bool>();
    std::string vocab, merges;
    if (is_placeholder(init.at("vocab_file"))) {
      vocab = vocab_cache_dir() + "/gpt2/vocab.json";
      merges = vocab_cache_dir() + "/gpt2/merges.txt";
    } else {
      vocab = (dir / init.at("vocab_file").get<std::string>()).string();
      merges = (dir / init.at("merges_file").get<std::string>()).string();
    }
    if (!fs::exists(vocab) || !fs::exists(merges)) {
      skip = "real GPT-2 vocabulary not found (" + vocab + ", " + merges + "); run scripts/fetch_vocabs";
      return nullptr;
    }
    return load_bpe_tokenizer(vocab, merges, options);
  }
  if (cls == "BertTokenizer") {
    if (init.contains("do_lower_case")) options.do_lower_case = init["do_lower_case"].get<bool>();
    std::string vocab = is_placeholder(init.at("vocab_file"))
                            ? vocab_cache_dir() + "/bert-base-uncased/vocab.txt"
                            : (dir / init.at("vocab_file").get<std::string>()).string();
    if (!fs::exists(vocab)) {
      skip = "real bert-base-uncased vocabulary not found (" + vocab + "); run scripts/fetch_vocabs";
      return nullptr;
    }
    return load_wordpiece_tokenizer(vocab, options);
  }
  ADD_FAILURE() << file << ": unknown tokenizer class " << cls;
  return nullptr;
}

template <typename T>
std::string show(const std::vector<T>& v) {
  return json(v).dump();
}

class TokenizerParityTest : public ::testing::TestWithParam<std::string> {};

TEST(TokenizerParityCoverageTest, FindsEveryGoldenFile) {
  const auto files = case_files();
  ASSERT_GE(files.size(), 6u) << "expected bert/{cases_cased,cases_uncased}, gpt2/{cases,cases_opt_style}, "
                                 "gpt2_r50k/cases, bert_base_uncased/cases under "
                              << tokenizers_dir();
}

TEST_P(TokenizerParityTest, MatchesHuggingFaceOnEveryCase) {
  const fs::path file = fs::path(tokenizers_dir()) / GetParam();
  const json golden = read_json(file.string());
  std::string skip;
  auto tok = make_tokenizer(file, golden, skip);
  if (!skip.empty()) GTEST_SKIP() << skip;
  ASSERT_NE(tok, nullptr);

  EXPECT_EQ(tok->vocab_size(), golden.at("vocab_size").get<int64_t>());
  for (const auto& [role, id] : golden.at("special_token_ids").items()) {
    EXPECT_EQ(tok->special_token_id(role), std::optional<int64_t>(id.get<int64_t>())) << role;
  }

  size_t n = 0, failures = 0;
  for (const json& c : golden.at("cases")) {
    const std::string text = from_hex(c.at("text_utf8_hex").get<std::string>());
    SCOPED_TRACE("case " + std::to_string(n) + ": " + c.at("text").dump());
    const auto tokens = c.at("tokens").get<std::vector<std::string>>();
    const auto ids = c.at("ids").get<std::vector<int64_t>>();
    const auto ids_special = c.at("ids_with_special").get<std::vector<int64_t>>();
    const auto decoded = c.at("decoded").get<std::string>();
    const auto decoded_skip = c.at("decoded_skip_special").get<std::string>();

    const auto got_tokens = tok->tokenize(text);
    const auto got_ids = tok->encode(text, false);
    const auto got_ids_special = tok->encode(text, true);
    const auto got_decoded = tok->decode(ids);
    const auto got_decoded_skip = tok->decode(ids_special, true);
    EXPECT_EQ(got_tokens, tokens) << "tokens: got " << json(got_tokens).dump() << " want " << json(tokens).dump();
    EXPECT_EQ(got_ids, ids) << "ids: got " << show(got_ids) << " want " << show(ids);
    EXPECT_EQ(got_ids_special, ids_special) << "ids_with_special: got " << show(got_ids_special);
    EXPECT_EQ(got_decoded, decoded) << "decoded: got " << json(got_decoded).dump();
    EXPECT_EQ(got_decoded_skip, decoded_skip) << "decoded_skip_special: got " << json(got_decoded_skip).dump();
    failures += (got_tokens != tokens) + (got_ids != ids) + (got_ids_special != ids_special) +
                (got_decoded != decoded) + (got_decoded_skip != decoded_skip);
    ++n;
  }
  EXPECT_GT(n, 0u);
  std::printf("[tokenizer parity] %s: %zu cases x 5 fields, %zu mismatches\n", GetParam().c_str(), n, failures);
}

std::string param_name(const ::testing::TestParamInfo<std::string>& info) {
  std::string name;
  for (char ch : info.param.substr(0, info.param.size() - 5)) name += std::isalnum(static_cast<unsigned char>(ch)) ? ch : '_';
  return name;
}

INSTANTIATE_TEST_SUITE_P(Golden, TokenizerParityTest, ::testing::ValuesIn(case_files()), param_name);
GTEST_ALLOW_UNINSTANTIATED_PARAMETERIZED_TEST(TokenizerParityTest);

}  // namespace
}  // namespace blip2
