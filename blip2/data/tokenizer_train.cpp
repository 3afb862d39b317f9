#include "blip2/data/tokenizer_train.h"

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "blip2/data/bpe_tokenizer.h"
#include "blip2/data/spm_runtime.h"
#include "blip2/data/tokenizer.h"
#include "blip2/util/atomic_file.h"
#include "blip2/util/error.h"

namespace fs = std::filesystem;

namespace blip2 {

namespace {

void write(const fs::path& p, const std::string& text) {
  try {
    write_atomic(p.string(), text);
  } catch (const Error& e) {
    throw InputError(e.what());
  }
}

// BERT's basic split for ASCII text: lower-case, whitespace, punctuation apart.
std::vector<std::string> basic_words(const std::string& text) {
  std::vector<std::string> out;
  std::string cur;
  for (unsigned char c : text) {
    if (std::isspace(c)) {
      if (!cur.empty()) out.push_back(cur), cur.clear();
    } else if (std::ispunct(c)) {
      if (!cur.empty()) out.push_back(cur), cur.clear();
      out.emplace_back(1, static_cast<char>(c));
    } else {
      cur.push_back(static_cast<char>(std::tolower(c)));
    }
  }
  if (!cur.empty()) out.push_back(cur);
  return out;
}

TokenizerTrainReport train_wordpiece(const std::vector<std::string>& texts, const fs::path& dir) {
  // Whole words of the corpus, then single characters (and their "##"
  // continuations) so unseen words still decompose, then [DEC].
  std::set<std::string> words, chars;
  for (const auto& t : texts)
    for (const auto& w : basic_words(t)) {
      words.insert(w);
      for (char c : w) chars.insert(std::string(1, c));
    }
  for (char c = 'a'; c <= 'z'; ++c) chars.insert(std::string(1, c));
  for (char c = '0'; c <= '9'; ++c) chars.insert(std::string(1, c));
  std::vector<std::string> vocab = {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"};
  for (const auto& w : words) vocab.push_back(w);
  for (const auto& c : chars)
    if (!words.count(c)) vocab.push_back(c);
  for (const auto& c : chars) vocab.push_back("##" + c);
  vocab.push_back("[DEC]");
  std::string text;
  for (const auto& v : vocab) text += v + "\n";
  write(dir / "vocab.txt", text);
  write(dir / "tokenizer_config.json", R"({"tokenizer_class": "BertTokenizer", "do_lower_case": true})");
  return {static_cast<int64_t>(vocab.size()), 0};
}

TokenizerTrainReport train_bpe(const std::vector<std::string>& texts, const fs::path& dir, int64_t vocab_size) {
  // Byte-level symbols through GPT-2's own pre-tokeniser and byte mapping: a
  // BPE tokenizer with no merges splits every piece into byte stand-ins.
  BpeTokenizer bytes({}, {}, TokenizerOptions{});
  std::map<std::vector<std::string>, int64_t> words;
  std::set<std::string> symbols;
  auto add_text = [&](const std::string& t, int64_t weight) {
    for (const auto& piece : bytes.pretokenize(t)) {
      auto syms = bytes.tokenize(piece);
      for (const auto& s : syms) symbols.insert(s);
      if (weight > 0) words[syms] += weight;
    }
  };
  for (const auto& t : texts) add_text(t, 1);
  std::string ascii;
  for (int c = 32; c < 127; ++c) ascii.push_back(static_cast<char>(c));
  add_text(ascii, 0);  // every printable ASCII byte is encodable
  // The newline's byte symbol sits at id 4 so configs can name it as the end
  // of text (LAVIS ends OPT text with "\n"; HF's blip2-opt uses it as EOS).
  const std::string newline = bytes.tokenize("a\n").back();
  symbols.erase(newline);
  std::vector<std::string> vocab = {"<s>", "<pad>", "</s>", "<unk>", newline};
  for (const auto& s : symbols) vocab.push_back(s);
  std::vector<std::pair<std::string, std::string>> merges;
  while (static_cast<int64_t>(vocab.size()) < vocab_size) {
    std::map<std::pair<std::string, std::string>, int64_t> pairs;
    for (const auto& [w, n] : words)
      for (size_t i = 0; i + 1 < w.size(); ++i) pairs[{w[i], w[i + 1]}] += n;
    if (pairs.empty()) break;
    // Most frequent pair; ties go to the first in lexicographic order (deterministic).
    auto best = pairs.begin();
    for (auto it = pairs.begin(); it != pairs.end(); ++it)
      if (it->second > best->second) best = it;
    const auto [a, b] = best->first;
    merges.emplace_back(a, b);
    vocab.push_back(a + b);
    std::map<std::vector<std::string>, int64_t> next;
    for (const auto& [w, n] : words) {
      std::vector<std::string> m;
      for (size_t i = 0; i < w.size(); ++i) {
        if (i + 1 < w.size() && w[i] == a && w[i + 1] == b) {
          m.push_back(a + b);
          ++i;
        } else {
          m.push_back(w[i]);
        }
      }
      next[m] += n;
    }
    words = std::move(next);
  }
  nlohmann::json v = nlohmann::json::object();
  for (size_t i = 0; i < vocab.size(); ++i) v[vocab[i]] = static_cast<int64_t>(i);
  write(dir / "vocab.json", v.dump());
  std::string m = "#version: 0.2\n";
  for (const auto& [a, b] : merges) m += a + " " + b + "\n";
  write(dir / "merges.txt", m);
  write(dir / "tokenizer_config.json",
        R"({"tokenizer_class": "GPT2Tokenizer", "add_bos_token": true, "bos_token": "</s>", "eos_token": "</s>",
            "pad_token": "<pad>", "unk_token": "<unk>"})");
  return {static_cast<int64_t>(vocab.size()), static_cast<int64_t>(merges.size())};
}

TokenizerTrainReport train_sentencepiece(const std::vector<std::string>& texts, const fs::path& dir,
                                         int64_t vocab_size, SentencePieceModel model) {
  const fs::path corpus = dir / ".spm_corpus.txt";
  {
    std::string all;
    for (const auto& t : texts) all += t + "\n";
    write(corpus, all);
  }
  SpmModel::train("--input=" + corpus.string() + " --model_prefix=" + (dir / "spiece").string() +
                  " --vocab_size=" + std::to_string(vocab_size) +
                  " --model_type=" + (model == SentencePieceModel::kBpe ? "bpe" : "unigram") +
                  " --character_coverage=1.0 --hard_vocab_limit=false"
                  " --pad_id=0 --eos_id=1 --unk_id=2 --bos_id=-1");
  fs::remove(corpus);
  fs::remove(dir / "spiece.vocab");
  write(dir / "tokenizer_config.json", R"({"tokenizer_class": "T5Tokenizer", "extra_ids": 0})");
  return {SpmModel::load((dir / "spiece.model").string())->vocab_size(), 0};
}

}  // namespace

SentencePieceModel parse_sentencepiece_model(const std::string& name, const std::string& what) {
  if (name == "unigram") return SentencePieceModel::kUnigram;
  if (name == "bpe") return SentencePieceModel::kBpe;
  throw ConfigError(what + " '" + name + "' is not one of unigram, bpe");
}

TokenizerTrainReport train_tokenizer(const std::vector<std::string>& texts, const std::string& out_dir,
                                     const TokenizerTrainOptions& o) {
  std::vector<std::string> nonempty;
  for (const auto& t : texts)
    if (t.find_first_not_of(" \t\r\n") != std::string::npos) nonempty.push_back(t);
  if (nonempty.empty()) throw InputError("the tokenizer corpus is empty; give one text per line");
  std::error_code ec;
  fs::create_directories(out_dir, ec);
  if (ec) throw InputError("cannot create '" + out_dir + "': " + ec.message());
  if (o.kind == "wordpiece") return train_wordpiece(nonempty, out_dir);
  if (o.kind == "bpe" || o.kind == "sentencepiece") {
    if (o.vocab_size < 16)
      throw ConfigError("--vocab-size " + std::to_string(o.vocab_size) + " is too small (at least 16)");
    return o.kind == "bpe" ? train_bpe(nonempty, out_dir, o.vocab_size)
                           : train_sentencepiece(nonempty, out_dir, o.vocab_size, o.spm_model);
  }
  throw ConfigError("tokenizer kind '" + o.kind + "' is not one of wordpiece, bpe, sentencepiece");
}

std::vector<std::string> read_corpus_texts(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw InputError("corpus file '" + path + "' cannot be read");
  std::vector<std::string> texts;
  for (std::string line; std::getline(in, line);)
    for (auto& field : text::split_fields(line, '\t')) texts.push_back(std::move(field));
  return texts;
}

}  // namespace blip2
