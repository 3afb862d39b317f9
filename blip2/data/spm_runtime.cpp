#include "blip2/data/spm_runtime.h"

#include <dlfcn.h>
#include <unistd.h>

#include <filesystem>
#include <mutex>

#include "blip2/util/error.h"
#include "shims/sentencepiece/spm_shim.h"

namespace blip2 {

struct SpmModel::Api {
  decltype(&blip2_spm_abi_version) abi_version;
  decltype(&blip2_spm_load) load;
  decltype(&blip2_spm_free) free;
  decltype(&blip2_spm_vocab_size) vocab_size;
  decltype(&blip2_spm_piece_to_id) piece_to_id;
  decltype(&blip2_spm_id_to_piece) id_to_piece;
  decltype(&blip2_spm_is_control) is_control;
  decltype(&blip2_spm_is_unknown) is_unknown;
  decltype(&blip2_spm_unk_id) unk_id;
  decltype(&blip2_spm_bos_id) bos_id;
  decltype(&blip2_spm_eos_id) eos_id;
  decltype(&blip2_spm_pad_id) pad_id;
  decltype(&blip2_spm_encode) encode;
  decltype(&blip2_spm_encode_pieces) encode_pieces;
  decltype(&blip2_spm_decode) decode;
  decltype(&blip2_spm_train) train;
};

namespace {

void append(void* ctx, const char* data, size_t len) { static_cast<std::string*>(ctx)->append(data, len); }
void push(void* ctx, const char* data, size_t len) {
  static_cast<std::vector<std::string>*>(ctx)->emplace_back(data, len);
}

std::string exe_dir() {
  std::error_code ec;
  auto p = std::filesystem::read_symlink("/proc/self/exe", ec);
  return ec ? std::string() : p.parent_path().string();
}

// ASan refuses dlopen(RTLD_DEEPBIND) (google/sanitizers#611). In a sanitized
// build the shim goes into a link namespace of its own instead (dlmopen): it
// and sentencepiece get their own copies of libstdc++ and protobuf there, the
// same isolation by other means. The shim must then be uninstrumented
// (shims/sentencepiece/CMakeLists.txt); only C types and callbacks cross.
#if defined(__SANITIZE_ADDRESS__)
#define BLIP2_SPM_OWN_NAMESPACE 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define BLIP2_SPM_OWN_NAMESPACE 1
#endif
#endif

void* open_shim(const std::string& path) {
#ifdef BLIP2_SPM_OWN_NAMESPACE
  return ::dlmopen(LM_ID_NEWLM, path.c_str(), RTLD_NOW | RTLD_LOCAL);
#else
  return ::dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL | RTLD_DEEPBIND);
#endif
}

// Loads the shim once per process; throws ConfigError listing where it looked.
const SpmModel::Api* api() {
  static std::once_flag once;
  static SpmModel::Api table{};
  static const SpmModel::Api* result = nullptr;
  static std::string error;
  std::call_once(once, [] {
    std::string tried;
    void* h = nullptr;
    for (const auto& c : SpmModel::shim_candidates()) {
      h = open_shim(c);
      if (h) break;
      const char* e = ::dlerror();
      tried += "\n  " + c + ": " + (e ? e : "not loadable");
    }
    if (!h) {
      error = "SentencePiece support (libblip2_spm.so) could not be loaded; tried:" + tried +
              "\nbuild the blip2_spm target or set BLIP2_SPM_SHIM to the library's path";
      return;
    }
    auto sym = [&](const char* name) {
      void* p = ::dlsym(h, name);
      if (!p) error = std::string("libblip2_spm.so lacks symbol ") + name + "; rebuild it";
      return p;
    };
#define BLIP2_SPM_SYM(field) table.field = reinterpret_cast<decltype(table.field)>(sym("blip2_spm_" #field))
    BLIP2_SPM_SYM(abi_version);
    BLIP2_SPM_SYM(load);
    BLIP2_SPM_SYM(free);
    BLIP2_SPM_SYM(vocab_size);
    BLIP2_SPM_SYM(piece_to_id);
    BLIP2_SPM_SYM(id_to_piece);
    BLIP2_SPM_SYM(is_control);
    BLIP2_SPM_SYM(is_unknown);
    BLIP2_SPM_SYM(unk_id);
    BLIP2_SPM_SYM(bos_id);
    BLIP2_SPM_SYM(eos_id);
    BLIP2_SPM_SYM(pad_id);
    BLIP2_SPM_SYM(encode);
    BLIP2_SPM_SYM(encode_pieces);
    BLIP2_SPM_SYM(decode);
    BLIP2_SPM_SYM(train);
#undef BLIP2_SPM_SYM
    if (!error.empty()) return;
    if (table.abi_version() != BLIP2_SPM_ABI_VERSION) {
      error = "libblip2_spm.so has ABI version " + std::to_string(table.abi_version()) + ", expected " +
              std::to_string(BLIP2_SPM_ABI_VERSION) + "; rebuild it";
      return;
    }
    result = &table;
  });
  if (!result) throw ConfigError(error);
  return result;
}

}  // namespace

std::vector<std::string> SpmModel::shim_candidates() {
  std::vector<std::string> out;
  if (const char* env = std::getenv("BLIP2_SPM_SHIM")) out.push_back(env);
  const std::string dir = exe_dir();
  if (!dir.empty()) {
    out.push_back(dir + "/../lib/libblip2_spm.so");
    out.push_back(dir + "/libblip2_spm.so");
  }
#ifdef BLIP2_SPM_SHIM_BUILD_PATH
  out.push_back(BLIP2_SPM_SHIM_BUILD_PATH);
#endif
#ifdef BLIP2_SPM_SHIM_INSTALL_PATH
  out.push_back(BLIP2_SPM_SHIM_INSTALL_PATH);
#endif
  out.push_back("libblip2_spm.so");
  return out;
}

std::shared_ptr<SpmModel> SpmModel::load(const std::string& path) {
  const Api* a = api();
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec))
    throw InputError("SentencePiece model '" + path + "' does not exist; a T5 checkpoint ships spiece.model");
  std::string err;
  blip2_spm* m = a->load(path.c_str(), append, &err);
  if (!m) throw InputError("cannot load SentencePiece model '" + path + "': " + err);
  std::shared_ptr<SpmModel> out(new SpmModel());
  out->api_ = a;
  out->handle_ = m;
  out->path_ = path;
  return out;
}

void SpmModel::train(const std::string& args) {
  std::string err;
  if (!api()->train(args.c_str(), append, &err)) throw InputError("SentencePiece training failed: " + err);
}

SpmModel::~SpmModel() {
  if (handle_) api_->free(static_cast<blip2_spm*>(handle_));
}

#define BLIP2_SPM_HANDLE static_cast<const blip2_spm*>(handle_)

std::vector<int64_t> SpmModel::encode(const std::string& text) const {
  std::vector<int32_t> buf(text.size() + 16);
  std::string err;
  int64_t n = api_->encode(BLIP2_SPM_HANDLE, text.data(), text.size(), buf.data(), static_cast<int64_t>(buf.size()),
                           append, &err);
  if (n < 0) throw InputError("SentencePiece encode failed: " + err);
  if (n > static_cast<int64_t>(buf.size())) {
    buf.resize(static_cast<size_t>(n));
    api_->encode(BLIP2_SPM_HANDLE, text.data(), text.size(), buf.data(), n, append, &err);
  }
  return std::vector<int64_t>(buf.begin(), buf.begin() + n);
}

std::vector<std::string> SpmModel::encode_pieces(const std::string& text) const {
  std::vector<std::string> out;
  std::string err;
  if (api_->encode_pieces(BLIP2_SPM_HANDLE, text.data(), text.size(), push, &out, append, &err) < 0)
    throw InputError("SentencePiece encode failed: " + err);
  return out;
}

std::string SpmModel::decode(const std::vector<int64_t>& ids) const {
  std::vector<int32_t> v;
  const int64_t n = vocab_size();
  for (auto id : ids) {
    if (id < 0 || id >= n)
      throw InputError("token id " + std::to_string(id) + " is outside the SentencePiece vocabulary (size " +
                       std::to_string(n) + ")");
    v.push_back(static_cast<int32_t>(id));
  }
  std::string out, err;
  if (!api_->decode(BLIP2_SPM_HANDLE, v.data(), static_cast<int64_t>(v.size()), append, &out, append, &err))
    throw InputError("SentencePiece decode failed: " + err);
  return out;
}

int64_t SpmModel::vocab_size() const { return api_->vocab_size(BLIP2_SPM_HANDLE); }
int64_t SpmModel::piece_to_id(const std::string& piece) const {
  return api_->piece_to_id(BLIP2_SPM_HANDLE, piece.data(), piece.size());
}
std::string SpmModel::id_to_piece(int64_t id) const {
  std::string out;
  if (id < 0 || id > INT32_MAX || !api_->id_to_piece(BLIP2_SPM_HANDLE, static_cast<int32_t>(id), append, &out))
    throw InputError("token id " + std::to_string(id) + " is outside the SentencePiece vocabulary (size " +
                     std::to_string(vocab_size()) + ")");
  return out;
}
bool SpmModel::is_control(int64_t id) const { return api_->is_control(BLIP2_SPM_HANDLE, static_cast<int32_t>(id)); }
bool SpmModel::is_unknown(int64_t id) const { return api_->is_unknown(BLIP2_SPM_HANDLE, static_cast<int32_t>(id)); }
int64_t SpmModel::unk_id() const { return api_->unk_id(BLIP2_SPM_HANDLE); }
int64_t SpmModel::bos_id() const { return api_->bos_id(BLIP2_SPM_HANDLE); }
int64_t SpmModel::eos_id() const { return api_->eos_id(BLIP2_SPM_HANDLE); }
int64_t SpmModel::pad_id() const { return api_->pad_id(BLIP2_SPM_HANDLE); }

}  // namespace blip2
