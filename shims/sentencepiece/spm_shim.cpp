// The only translation unit that includes sentencepiece headers. See spm_shim.h.
#include "spm_shim.h"

#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>

#include <string>
#include <vector>

// Exported by libsentencepiece but not declared in its installed headers.
namespace sentencepiece {
namespace logging {
void SetMinLogLevel(int v);
}  // namespace logging
}  // namespace sentencepiece

namespace {
// Loaded with RTLD_DEEPBIND, sentencepiece's std::cerr binds to a copy of the
// stream that the host's libstdc++ never initialised: writing to it crashes.
// Errors come back through Status, so its own logging is silenced (FATAL only).
void quiet() {
  static bool done = false;
  if (!done) {
    sentencepiece::logging::SetMinLogLevel(3);
    done = true;
  }
}
}  // namespace

struct blip2_spm {
  sentencepiece::SentencePieceProcessor proc;
};

namespace {
void send(blip2_spm_str_cb cb, void* ctx, const std::string& s) {
  if (cb) cb(ctx, s.data(), s.size());
}
}  // namespace

extern "C" {

int blip2_spm_abi_version(void) { return BLIP2_SPM_ABI_VERSION; }

blip2_spm* blip2_spm_load(const char* path, blip2_spm_str_cb err, void* err_ctx) {
  quiet();
  auto* m = new blip2_spm();
  auto st = m->proc.Load(path);
  if (!st.ok()) {
    send(err, err_ctx, st.ToString());
    delete m;
    return nullptr;
  }
  return m;
}

void blip2_spm_free(blip2_spm* m) { delete m; }
int32_t blip2_spm_vocab_size(const blip2_spm* m) { return m->proc.GetPieceSize(); }
int32_t blip2_spm_piece_to_id(const blip2_spm* m, const char* piece, size_t len) {
  return m->proc.PieceToId(std::string(piece, len));
}
int blip2_spm_id_to_piece(const blip2_spm* m, int32_t id, blip2_spm_str_cb out, void* ctx) {
  if (id < 0 || id >= m->proc.GetPieceSize()) return 0;
  send(out, ctx, m->proc.IdToPiece(id));
  return 1;
}
int blip2_spm_is_control(const blip2_spm* m, int32_t id) {
  return id >= 0 && id < m->proc.GetPieceSize() && m->proc.IsControl(id);
}
int blip2_spm_is_unknown(const blip2_spm* m, int32_t id) {
  return id >= 0 && id < m->proc.GetPieceSize() && m->proc.IsUnknown(id);
}
int32_t blip2_spm_unk_id(const blip2_spm* m) { return m->proc.unk_id(); }
int32_t blip2_spm_bos_id(const blip2_spm* m) { return m->proc.bos_id(); }
int32_t blip2_spm_eos_id(const blip2_spm* m) { return m->proc.eos_id(); }
int32_t blip2_spm_pad_id(const blip2_spm* m) { return m->proc.pad_id(); }

int64_t blip2_spm_encode(const blip2_spm* m, const char* text, size_t len, int32_t* ids, int64_t cap,
                         blip2_spm_str_cb err, void* err_ctx) {
  std::vector<int> out;
  auto st = m->proc.Encode(std::string(text, len), &out);
  if (!st.ok()) {
    send(err, err_ctx, st.ToString());
    return -1;
  }
  for (int64_t i = 0; i < static_cast<int64_t>(out.size()) && i < cap; ++i) ids[i] = out[i];
  return static_cast<int64_t>(out.size());
}

int64_t blip2_spm_encode_pieces(const blip2_spm* m, const char* text, size_t len, blip2_spm_str_cb out_cb,
                                void* ctx, blip2_spm_str_cb err, void* err_ctx) {
  std::vector<std::string> out;
  auto st = m->proc.Encode(std::string(text, len), &out);
  if (!st.ok()) {
    send(err, err_ctx, st.ToString());
    return -1;
  }
  for (const auto& p : out) send(out_cb, ctx, p);
  return static_cast<int64_t>(out.size());
}

int blip2_spm_decode(const blip2_spm* m, const int32_t* ids, int64_t n, blip2_spm_str_cb out_cb, void* ctx,
                     blip2_spm_str_cb err, void* err_ctx) {
  std::vector<int> v(ids, ids + n);
  std::string text;
  auto st = m->proc.Decode(v, &text);
  if (!st.ok()) {
    send(err, err_ctx, st.ToString());
    return 0;
  }
  send(out_cb, ctx, text);
  return 1;
}

int blip2_spm_train(const char* args, blip2_spm_str_cb err, void* err_ctx) {
  quiet();
  auto st = sentencepiece::SentencePieceTrainer::Train(args);
  if (!st.ok()) {
    send(err, err_ctx, st.ToString());
    return 0;
  }
  return 1;
}

}  // extern "C"
