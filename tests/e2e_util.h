// Helpers for end-to-end tests: run the CLI, write PNGs, make tokenizer and
// model directories.
#pragma once

#include <png.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>

#include "test_util.h"

namespace blip2::test {

struct RunResult {
  int code = -1;
  std::string out, err;
};

// Runs `blip2 <args>` (args already shell-quoted) and captures both streams.
inline RunResult run_cli(const std::string& args, const std::string& stdin_text = "") {
  TempDir tmp;
  const std::string out = tmp.file("out"), err = tmp.file("err"), in = tmp.file("in");
  std::ofstream(in) << stdin_text;
  const std::string cmd = std::string(BLIP2_CLI) + " " + args + " <" + in + " >" + out + " 2>" + err;
  int status = std::system(cmd.c_str());
  RunResult r;
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  std::stringstream so, se;
  so << std::ifstream(out).rdbuf();
  se << std::ifstream(err).rdbuf();
  r.out = so.str();
  r.err = se.str();
  return r;
}

inline std::string q(const std::string& s) { return "'" + s + "'"; }

// Writes an 8-bit RGB PNG whose pixel (x, y) is f(x, y).
inline void write_png(const std::string& path, int w, int h,
                      const std::function<std::array<uint8_t, 3>(int, int)>& f) {
  FILE* fp = std::fopen(path.c_str(), "wb");
  png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, nullptr, nullptr, nullptr);
  png_infop info = png_create_info_struct(png);
  if (setjmp(png_jmpbuf(png))) {
    png_destroy_write_struct(&png, &info);
    std::fclose(fp);
    return;
  }
  png_init_io(png, fp);
  png_set_IHDR(png, info, w, h, 8, PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT,
               PNG_FILTER_TYPE_DEFAULT);
  png_write_info(png, info);
  std::vector<uint8_t> row(static_cast<size_t>(w) * 3);
  for (int y = 0; y < h; ++y) {
    for (int x = 0; x < w; ++x) {
      auto p = f(x, y);
      for (int c = 0; c < 3; ++c) row[static_cast<size_t>(x) * 3 + c] = p[c];
    }
    png_write_row(png, row.data());
  }
  png_write_end(png, nullptr);
  png_destroy_write_struct(&png, &info);
  std::fclose(fp);
}

// A byte-level BPE tokenizer in OPT's conventions with exactly 100 ids:
// <s>=0 <pad>=1 </s>=2 <unk>=3, printable ASCII, the space marker, "Ġa".
inline void write_opt_tokenizer(const std::string& dir) {
  nlohmann::json vocab = {{"<s>", 0}, {"<pad>", 1}, {"</s>", 2}, {"<unk>", 3}};
  int id = 4;
  for (int c = 33; c <= 126; ++c) vocab[std::string(1, static_cast<char>(c))] = id++;
  vocab["\xc4\xa0"] = id++;     // 'Ġ' = the byte-level form of a space
  vocab["\xc4\xa0" "a"] = id++;  // merge "Ġ a"
  std::ofstream(dir + "/vocab.json") << vocab.dump();
  std::ofstream(dir + "/merges.txt") << "#version: 0.2\n\xc4\xa0 a\n";
  std::ofstream(dir + "/tokenizer_config.json")
      << R"({"tokenizer_class": "GPT2Tokenizer", "add_bos_token": true, "bos_token": "</s>", "eos_token": "</s>",
             "pad_token": "<pad>", "unk_token": "</s>"})";
}

// A BERT WordPiece vocabulary for the Q-Former text side, [DEC] included.
inline void write_bert_vocab(const std::string& dir, const std::vector<std::string>& words) {
  std::ofstream v(dir + "/vocab.txt");
  for (const char* t : {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"}) v << t << "\n";
  for (const auto& w : words) v << w << "\n";
  v << "[DEC]\n";
}

inline void copy_files(const std::string& from, const std::string& to, const std::vector<std::string>& names) {
  for (const auto& n : names)
    std::filesystem::copy_file(from + "/" + n, to + "/" + n, std::filesystem::copy_options::overwrite_existing);
}

}  // namespace blip2::test
