/* C API of libblip2_spm, a shim around libsentencepiece.
 *
 * Why a shim: Debian's libsentencepiece carries its own protobuf 3.14 and
 * exports those symbols; libtorch depends on the system protobuf 3.21. A
 * process that links both crashes in protobuf's static initialisers. The
 * shim is linked against sentencepiece alone and loaded at run time with
 * dlopen(RTLD_LOCAL | RTLD_DEEPBIND), so each library keeps its protobuf.
 * All strings cross the boundary as (pointer, length); results are written
 * to caller-provided callbacks so no allocation crosses the boundary. */
#ifndef BLIP2_SPM_SHIM_H
#define BLIP2_SPM_SHIM_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct blip2_spm blip2_spm;
/* Receives a string (error message, decoded text, piece). */
typedef void (*blip2_spm_str_cb)(void* ctx, const char* data, size_t len);

#define BLIP2_SPM_ABI_VERSION 1
int blip2_spm_abi_version(void);

/* Loads a .model file; NULL on failure with the reason sent to err. */
blip2_spm* blip2_spm_load(const char* path, blip2_spm_str_cb err, void* err_ctx);
void blip2_spm_free(blip2_spm* m);
int32_t blip2_spm_vocab_size(const blip2_spm* m);
int32_t blip2_spm_piece_to_id(const blip2_spm* m, const char* piece, size_t len);
/* Writes the piece of id to out; returns 0 when id is out of range. */
int blip2_spm_id_to_piece(const blip2_spm* m, int32_t id, blip2_spm_str_cb out, void* ctx);
int blip2_spm_is_control(const blip2_spm* m, int32_t id);
int blip2_spm_is_unknown(const blip2_spm* m, int32_t id);
int32_t blip2_spm_unk_id(const blip2_spm* m);
int32_t blip2_spm_bos_id(const blip2_spm* m);
int32_t blip2_spm_eos_id(const blip2_spm* m);
int32_t blip2_spm_pad_id(const blip2_spm* m);
/* Encodes text into at most cap ids; returns the number of ids (which may
 * exceed cap: call again with a larger buffer), or -1 with err called. */
int64_t blip2_spm_encode(const blip2_spm* m, const char* text, size_t len, int32_t* ids, int64_t cap,
                         blip2_spm_str_cb err, void* err_ctx);
/* Encodes into pieces, one callback per piece; returns the count or -1. */
int64_t blip2_spm_encode_pieces(const blip2_spm* m, const char* text, size_t len, blip2_spm_str_cb out,
                                void* ctx, blip2_spm_str_cb err, void* err_ctx);
/* Decodes ids; returns 1 on success, 0 with err called. */
int blip2_spm_decode(const blip2_spm* m, const int32_t* ids, int64_t n, blip2_spm_str_cb out, void* ctx,
                     blip2_spm_str_cb err, void* err_ctx);
/* Trains a model with SentencePieceTrainer (args as on the spm_train
 * command line, e.g. "--input=x.txt --model_prefix=m --vocab_size=100").
 * Returns 1 on success, 0 with err called. */
int blip2_spm_train(const char* args, blip2_spm_str_cb err, void* err_ctx);

#ifdef __cplusplus
}
#endif

#endif
