// T5 SentencePiece (HF transformers 4.45 T5Tokenizer semantics).
#include "blip2/data/sentencepiece_tokenizer.h"

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>

#include "blip2/data/spm_runtime.h"
#include "blip2/util/error.h"

namespace blip2 {

namespace {

const std::string kUnderline = "\xE2\x96\x81";  // U+2581 "▁"

bool read_varint(const std::string& s, size_t& pos, uint64_t& value) {
  value = 0;
  for (int shift = 0; shift < 64 && pos < s.size(); shift += 7) {
    unsigned char b = static_cast<unsigned char>(s[pos++]);
    value |= static_cast<uint64_t>(b & 0x7F) << shift;
    if (!(b & 0x80)) return true;
  }
  return false;
}

void write_varint(std::string& out, uint64_t value) {
  while (value >= 0x80) {
    out += static_cast<char>((value & 0x7F) | 0x80);
    value >>= 7;
  }
  out += static_cast<char>(value);
}

// The serialized ModelProto with normalizer_spec.add_dummy_prefix = false (what
// HF's get_spm_processor does for legacy=false). ModelProto field 3 is the
// NormalizerSpec, whose field 3 is add_dummy_prefix; appending the field to
// the sub-message overrides an earlier value (protobuf: last one wins).
std::string without_dummy_prefix(const std::string& proto, const std::string& path) {
  const std::string override_field = std::string("\x18\x00", 2);
  std::string out;
  size_t pos = 0;
  bool patched = false;
  auto corrupt = [&]() {
    return ConfigError("[SentencePieceTokenizer] " + path + " is not a valid SentencePiece model (protobuf framing "
                       "broken at byte " + std::to_string(pos) + "); re-download spiece.model");
  };
  while (pos < proto.size()) {
    const size_t field_start = pos;
    uint64_t tag;
    if (!read_varint(proto, pos, tag)) throw corrupt();
    const uint64_t field = tag >> 3, wire = tag & 7;
    if (wire == 0) {
      uint64_t v;
      if (!read_varint(proto, pos, v)) throw corrupt();
    } else if (wire == 1) {
      pos += 8;
    } else if (wire == 5) {
      pos += 4;
    } else if (wire == 2) {
      uint64_t len;
      if (!read_varint(proto, pos, len) || pos + len > proto.size()) throw corrupt();
      if (field == 3) {
        std::string payload = proto.substr(pos, len) + override_field;
        write_varint(out, tag);
        write_varint(out, payload.size());
        out += payload;
        pos += len;
        patched = true;
        continue;
      }
      pos += len;
    } else {
      throw corrupt();
    }
    if (pos > proto.size()) throw corrupt();
    out.append(proto, field_start, pos - field_start);
  }
  if (!patched) {
    out += static_cast<char>((3 << 3) | 2);
    write_varint(out, override_field.size());
    out += override_field;
  }
  return out;
}

// Loads `proto` (bytes of a .model file) through a private temporary file:
// SpmModel loads from paths only.
std::shared_ptr<SpmModel> load_patched_model(const std::string& proto, const std::string& path) {
  std::string tmpl = (std::filesystem::temp_directory_path() / "blip2-spiece-XXXXXX").string();
  const int fd = ::mkstemp(tmpl.data());
  if (fd < 0) throw ConfigError("[SentencePieceTokenizer] cannot create a temporary file for " + path);
  ::close(fd);
  {
    std::ofstream out(tmpl, std::ios::binary | std::ios::trunc);
    out.write(proto.data(), static_cast<std::streamsize>(proto.size()));
    if (!out) {
      std::remove(tmpl.c_str());
      throw ConfigError("[SentencePieceTokenizer] cannot write the temporary copy of " + path + " at " + tmpl);
    }
  }
  try {
    auto model = SpmModel::load(tmpl);
    std::remove(tmpl.c_str());
    return model;
  } catch (...) {
    std::remove(tmpl.c_str());
    throw;
  }
}

}  // namespace

SentencePieceTokenizer::SentencePieceTokenizer(const std::string& spiece_model, const TokenizerOptions& options)
    : path_(spiece_model) {
  const std::string proto = text::read_file(spiece_model, "SentencePiece model (spiece.model)");
  legacy_ = options.legacy.value_or(true);
  add_prefix_space_ = options.add_prefix_space.value_or(true);
  try {
    sp_ = legacy_ ? SpmModel::load(spiece_model) : load_patched_model(without_dummy_prefix(proto, spiece_model),
                                                                        spiece_model);
  } catch (const InputError& e) {
    throw ConfigError("[SentencePieceTokenizer] " + spiece_model + " is not a SentencePiece model: " + e.what() +
                      "; expected the spiece.model of a T5 checkpoint");
  }

  // Sentinels <extra_id_i>, as T5Tokenizer.__init__ builds them.
  const int extra_ids = options.extra_ids.value_or(100);
  std::vector<AddedToken> additional;
  size_t n_extra = 0;
  if (options.additional_special_tokens) {
    additional = *options.additional_special_tokens;
    for (const auto& t : additional) n_extra += t.content.find("<extra_id_") != std::string::npos;
    if (n_extra == 0) {
      for (int i = 0; i < extra_ids; ++i)
        additional.push_back(AddedToken{"<extra_id_" + std::to_string(i) + ">", true, false, false, false, false});
      n_extra = static_cast<size_t>(extra_ids);
    } else if (extra_ids > 0 && static_cast<size_t>(extra_ids) != n_extra) {
      throw ConfigError("[SentencePieceTokenizer] extra_ids is " + std::to_string(extra_ids) + " but " +
                        std::to_string(n_extra) + " <extra_id_N> tokens are in additional_special_tokens; make "
                        "them agree in tokenizer_config.json");
    }
  } else {
    for (int i = 0; i < extra_ids; ++i)
      additional.push_back(AddedToken{"<extra_id_" + std::to_string(i) + ">", true, false, false, false, false});
    n_extra = static_cast<size_t>(std::max(extra_ids, 0));
  }
  std::map<int64_t, AddedToken> preset;
  const int64_t pieces = sp_->vocab_size();
  for (size_t i = 0; i < n_extra; ++i) {
    preset[pieces - 1 + extra_ids - static_cast<int64_t>(i)] =
        AddedToken{"<extra_id_" + std::to_string(i) + ">", true, true, true, false, false};
  }
  TokenizerOptions resolved = options;
  resolved.additional_special_tokens = additional;
  init_special_tokens(resolved, {{"eos_token", "</s>"}, {"unk_token", "<unk>"}, {"pad_token", "<pad>"}},
                      additional, preset);
  if (!legacy_) unk_token_length_ = sp_encode(special_token("unk_token").value_or("<unk>")).size();
}

SentencePieceTokenizer::~SentencePieceTokenizer() = default;

std::vector<std::string> SentencePieceTokenizer::sp_encode(const std::string& text) const {
  return sp_->encode_pieces(text);
}

std::optional<int64_t> SentencePieceTokenizer::registered_id(const std::string& piece) const {
  const int64_t id = sp_->piece_to_id(piece);
  if (id < 0 || id >= sp_->vocab_size() || sp_->id_to_piece(id) != piece) return std::nullopt;
  return id;
}

std::string SentencePieceTokenizer::sp_decode(const std::vector<std::string>& pieces) const {
  // Runs of known pieces are decoded by SentencePiece; an unknown piece is
  // kept literally (what Decode(pieces) does). Only the first run may lose its
  // leading "▁" to the dummy-prefix rule, as in one Decode call.
  std::string out;
  std::vector<int64_t> run;
  bool run_starts_with_space = false;
  auto flush = [&]() {
    if (run.empty()) return;
    std::string s = sp_->decode(run);
    if (!out.empty() && run_starts_with_space && (s.empty() || s[0] != ' ')) s = " " + s;
    out += s;
    run.clear();
  };
  for (const std::string& piece : pieces) {
    std::optional<int64_t> id = registered_id(piece);
    if (id) {
      if (run.empty()) run_starts_with_space = piece.rfind(kUnderline, 0) == 0;
      run.push_back(*id);
    } else {
      flush();
      out += piece;
    }
  }
  flush();
  return out;
}

std::vector<std::string> SentencePieceTokenizer::tokenize_segment(const std::string& text) const {
  std::vector<std::string> tokens = sp_encode(text);
  const bool prefixed = text.rfind(kUnderline, 0) == 0 || text.rfind(" ", 0) == 0;
  if (legacy_ || !prefixed) return tokens;
  // Encode "<unk>" + text and drop the unk pieces, so that a leading "▁" is kept.
  tokens = sp_encode(special_token("unk_token").value_or("<unk>") + text);
  if (tokens.size() >= unk_token_length_) tokens.erase(tokens.begin(), tokens.begin() + unk_token_length_);
  return tokens;
}

std::string SentencePieceTokenizer::prepare_for_tokenization(const std::string& text) const {
  if (legacy_ || text.empty()) return text;
  std::string out = add_prefix_space_ ? kUnderline : "";
  size_t pos = 0;
  while (true) {
    size_t hit = text.find(kUnderline, pos);
    if (hit == std::string::npos) break;
    out.append(text, pos, hit - pos);
    out += ' ';
    pos = hit + kUnderline.size();
  }
  out.append(text, pos, std::string::npos);
  return out;
}

void SentencePieceTokenizer::post_tokenize(std::vector<std::string>& tokens) const {
  if (legacy_ || tokens.size() < 2 || tokens[0] != kUnderline) return;
  const auto& specials = all_special_tokens();
  if (std::find(specials.begin(), specials.end(), tokens[1]) != specials.end()) tokens.erase(tokens.begin());
}

std::optional<int64_t> SentencePieceTokenizer::base_token_to_id(const std::string& token) const {
  return registered_id(token);
}

std::optional<std::string> SentencePieceTokenizer::base_id_to_token(int64_t id) const {
  if (id < 0 || id >= sp_->vocab_size()) return std::nullopt;
  return sp_->id_to_piece(id);
}

int64_t SentencePieceTokenizer::base_vocab_size() const { return sp_->vocab_size(); }

std::string SentencePieceTokenizer::convert_tokens_to_string(const std::vector<std::string>& tokens_in) const {
  std::vector<std::string> tokens = tokens_in;
  // HF strips the prefix space it would have added, from the first token.
  if (add_prefix_space_ && !tokens.empty() && tokens[0].rfind(kUnderline, 0) == 0)
    tokens[0] = tokens[0].substr(kUnderline.size());
  const auto& specials = all_special_tokens();
  std::string out;
  std::vector<std::string> current;
  bool prev_is_special = false;
  for (const std::string& token : tokens) {
    if (std::find(specials.begin(), specials.end(), token) != specials.end()) {
      if (!prev_is_special) out += ' ';
      out += sp_decode(current) + token;
      prev_is_special = true;
      current.clear();
    } else {
      current.push_back(token);
      prev_is_special = false;
    }
  }
  out += sp_decode(current);
  return text::py_strip(out);
}

std::vector<int64_t> SentencePieceTokenizer::build_inputs_with_special_tokens(const std::vector<int64_t>& ids) const {
  const int64_t eos = require_special_id("eos_token", "T5 encode with add_special_tokens");
  if (!ids.empty() && ids.back() == eos) return ids;  // HF: "do not add eos again"
  std::vector<int64_t> out = ids;
  out.push_back(eos);
  return out;
}

std::unique_ptr<Tokenizer> load_sentencepiece_tokenizer(const std::string& spiece_model,
                                                        const TokenizerOptions& options) {
  return std::make_unique<SentencePieceTokenizer>(spiece_model, options);
}

}  // namespace blip2
