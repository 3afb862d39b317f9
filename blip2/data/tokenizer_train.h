// Training small tokenizers from a corpus, in the formats the checkpoints of
// BLIP-2 ship, for data worlds of our own (the shapes world):
//   wordpiece: BERT vocab.txt (+ [DEC]) for the Q-Former's text side;
//   bpe: GPT-2 byte-level BPE vocab.json + merges.txt in OPT's conventions
//        (<s> 0, <pad> 1, </s> 2, <unk> 3, the newline symbol 4);
//   sentencepiece: spiece.model in T5's conventions, unigram (T5's own) or
//        BPE. On a small, repetitive corpus such as the shapes world's, the
//        unigram trainer keeps far fewer pieces than asked for (108 of 400:
//        "what", "above", "left" spelled in letters); BPE learns whole words.
// Each writes a directory load_tokenizer() reads.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace blip2 {

// The model type of a trained spiece.model (both load with sentencepiece).
enum class SentencePieceModel { kUnigram, kBpe };

// "unigram" | "bpe"; ConfigError naming `what` (e.g. "--spm-model") otherwise.
SentencePieceModel parse_sentencepiece_model(const std::string& name, const std::string& what);

struct TokenizerTrainOptions {
  std::string kind;        // "wordpiece" | "bpe" | "sentencepiece"
  int64_t vocab_size = 0;  // bpe / sentencepiece: target size (upper bound); wordpiece: ignored
  SentencePieceModel spm_model = SentencePieceModel::kUnigram;  // sentencepiece only
};

struct TokenizerTrainReport {
  int64_t vocab_size = 0;
  int64_t merges = 0;  // bpe
};

// The texts of a corpus file: one per line, or per tab-separated field of a
// line (the shapes corpus). InputError when the file cannot be read.
std::vector<std::string> read_corpus_texts(const std::string& path);

// `texts`: the corpus, one text per entry. Throws InputError / ConfigError
// naming the problem (empty corpus, unknown kind, unwritable directory).
TokenizerTrainReport train_tokenizer(const std::vector<std::string>& texts, const std::string& out_dir,
                                     const TokenizerTrainOptions& options);

}  // namespace blip2
