// SentencePiece through libblip2_spm (shims/sentencepiece), loaded at run
// time with dlopen(RTLD_LOCAL | RTLD_DEEPBIND): Debian's libsentencepiece
// bundles protobuf 3.14 while libtorch uses the system's 3.21, and one
// process cannot link both. Use this class, never sentencepiece headers.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace blip2 {

class SpmModel {
 public:
  // Loads a SentencePiece .model file. Throws ConfigError when the shim
  // cannot be found and InputError when the model file is unreadable.
  static std::shared_ptr<SpmModel> load(const std::string& path);
  // SentencePieceTrainer with spm_train-style arguments (tests, tools).
  static void train(const std::string& args);
  // Where the shim is looked for: $BLIP2_SPM_SHIM, then beside the running
  // executable (../lib/libblip2_spm.so, ./libblip2_spm.so), then the build
  // tree, then the loader's search path.
  static std::vector<std::string> shim_candidates();

  ~SpmModel();
  std::vector<int64_t> encode(const std::string& text) const;
  std::vector<std::string> encode_pieces(const std::string& text) const;
  std::string decode(const std::vector<int64_t>& ids) const;
  int64_t vocab_size() const;
  int64_t piece_to_id(const std::string& piece) const;  // unk id when absent
  std::string id_to_piece(int64_t id) const;            // throws InputError when out of range
  bool is_control(int64_t id) const;
  bool is_unknown(int64_t id) const;
  int64_t unk_id() const;
  int64_t bos_id() const;  // -1 when the model has none
  int64_t eos_id() const;
  int64_t pad_id() const;

  struct Api;  // the shim's function table (spm_runtime.cpp)

 private:
  SpmModel() = default;
  const Api* api_ = nullptr;
  void* handle_ = nullptr;
  std::string path_;
};

}  // namespace blip2
