#include "blip2/model/model_dir.h"

#include <algorithm>
#include <chrono>
#include <filesystem>

#include "blip2/blip2.h"
#include "blip2/nn/dnnl_matmul.h"
#include "blip2/nn/gemm.h"
#include "blip2/nn/int8_gemm.h"
#include "blip2/util/cpu.h"
#include "blip2/util/dtype.h"
#include "blip2/util/error.h"
#include "blip2/util/threads.h"

namespace fs = std::filesystem;

namespace blip2 {

namespace {
std::string exe_dir() {
  std::error_code ec;
  auto p = fs::read_symlink("/proc/self/exe", ec);
  return ec ? "." : p.parent_path().string();
}
}  // namespace

std::string resolve_model_dir(const std::string& given) {
  if (!given.empty()) return given;
  if (const char* env = std::getenv("BLIP2_MODEL")) return env;
  std::string tried;
  for (const auto& c : {exe_dir() + "/../../models/shapes/opt", exe_dir() + "/../share/blip2/models/shapes/opt",
                        std::string("models/shapes/opt")}) {
    if (fs::exists(fs::path(c) / "config.json")) return fs::weakly_canonical(c).string();
    tried += (tried.empty() ? "" : ", ") + c;
  }
  throw ConfigError("no --model given and no bundled default model found (looked in " + tried +
                    "); pass --model DIR with a BLIP-2 checkpoint directory");
}

torch::Device parse_device(const std::string& name) {
  torch::Device device{torch::kCPU};
  try {
    device = torch::Device(name);
  } catch (const std::exception&) {
    throw ConfigError("device '" + name + "' is not valid (cpu, cuda, cuda:N)");
  }
  if (device.is_cuda() && !torch::cuda::is_available())
    throw ConfigError("device '" + name + "' requested but this libtorch has no usable CUDA; use --device cpu");
  return device;
}

torch::ScalarType compute_dtype_for(torch::ScalarType dtype, const torch::Device& device) {
  return device.is_cpu() || dtype == torch::kChar ? torch::kFloat : dtype;
}

namespace {

// Which kernels --dtype int8 runs, for the --verbose line.
std::string int8_paths() {
  if (nn::int8_int8_gemm())
    return std::string("activations quantised per row too, int8 x int8 GEMV for <= 8 rows (") +
           nn::int8_gemv_kernel() + "), oneDNN int8 GEMM for more (" + nn::int8_gemm_impl() + ")";
  // Available but not used: the switch said so.
  const std::string why = nn::int8_gemm_available() ? "off: --int8-gemm fp32" : nn::int8_gemm_impl();
  return std::string(cpu_features().avx2 && cpu_features().fma ? "AVX2 int8 GEMV for <= 8 rows, "
                                                                : "no AVX2: int8 rows dequantised for every product, ") +
         "int8 blocks dequantised to float32 + BLAS GEMM for more rows (int8 x int8 " + why + ")";
}

// Where the float32 Linear layers run when the GEMMs live on the OpenMP pool.
std::string float32_linears() {
  if (!float32_gemm_on_openmp()) return "";
  const auto kind = nn::dnnl_mm::Kind::kF32;
  return nn::dnnl_mm::available(kind) ? ", float32 Linear layers on oneDNN (" + nn::dnnl_mm::impl(kind) + ")"
                                      : ", float32 Linear layers on one OpenBLAS thread (oneDNN float32 GEMM " +
                                            nn::dnnl_mm::impl(kind) + ")";
}

}  // namespace

Runtime apply_runtime(const RuntimeOptions& options) {
  Runtime r;
  r.dtype = parse_weight_dtype(options.dtype, "--dtype");
  r.device = parse_device(options.device);
  if (r.dtype == torch::kChar && !r.device.is_cpu())
    throw ConfigError("--dtype int8 runs on the CPU only (its kernels are AVX2); use --device cpu, or float16 / "
                      "bfloat16 on " + options.device);
  r.compute_dtype = compute_dtype_for(r.dtype, r.device);
  nn::set_bf16_gemm(nn::parse_bf16_gemm(options.bf16_gemm, "--bf16-gemm"));
  // Native bf16 GEMMs run on libtorch's OpenMP pool, float32 ones on OpenBLAS's.
  const bool bf16_cpu = r.device.is_cpu() && r.dtype == torch::kBFloat16;
  const bool native = bf16_cpu && nn::native_bf16_gemm();
  // So do int8 x int8 products (oneDNN and our GEMV): with OpenBLAS's pool
  // also at N threads the two spin against each other (vision encoder 1.9x
  // slower, measured; docs/performance.md), so OpenBLAS gets one thread: the
  // float32 Linear layers left (the Q-Former) go to oneDNN on the OpenMP pool
  // (nn/gemm.h), libtorch's own products (attention) stay on OpenBLAS.
  nn::set_int8_gemm(nn::parse_int8_gemm(options.int8_gemm, "--int8-gemm"));
  const bool int8_cpu = r.device.is_cpu() && r.dtype == torch::kChar && nn::int8_int8_gemm();
  // bf16 weights without native bf16: widened in cache, then multiplied by
  // oneDNN on the OpenMP pool too where it has a float32 kernel (nn/gemm.h).
  const bool widened = bf16_cpu && !native && nn::dnnl_mm::available(nn::dnnl_mm::Kind::kF32);
  // float32 weights: oneDNN on the OpenMP pool where it is the faster (--fp32-gemm).
  const bool f32_onednn = r.device.is_cpu() && r.dtype == torch::kFloat &&
                          nn::fp32_gemm_onednn(nn::parse_fp32_gemm(options.fp32_gemm, "--fp32-gemm"));
  r.threads = apply_threads(options.threads,
                            native || int8_cpu || widened || f32_onednn ? GemmPool::kOpenMP : GemmPool::kOpenBlas);
  r.line = std::string("weights ") + (r.dtype == torch::kChar ? "int8" : c10::toString(r.dtype)) + ", compute " +
           c10::toString(r.compute_dtype);
  if (r.dtype == torch::kChar) r.line += ", int8 per-channel (vision encoder + LM): " + int8_paths();
  if (bf16_cpu)
    r.line += native ? ", bf16 GEMM native (" + cpu_features().summary() + ")"
                     : std::string(", bf16 weights widened to float32 for GEMM") +
                           (widened ? " (all threads widen, oneDNN multiplies)" : " (BLAS multiplies)");
  r.line += float32_linears() + "; " + r.threads.describe();
  return r;
}

ModelDir load_model_dir(const std::string& dir, const RuntimeOptions& options) {
  const auto t0 = std::chrono::steady_clock::now();
  if (!fs::is_directory(dir))
    throw ConfigError(fs::exists(dir) ? "'" + dir + "' is a file; -m takes a model directory (the one holding "
                                              "config.json and model.safetensors)"
                                      : "model directory '" + dir +
                                            "' does not exist; give the path of a BLIP-2 checkpoint directory");
  ModelDir m;
  m.dir = dir;
  m.runtime = apply_runtime(options);
  LoadOptions lo;
  lo.dtype = m.runtime.dtype;
  lo.compute_dtype = m.runtime.compute_dtype;
  lo.device = m.runtime.device;
  m.model = load_blip2(dir, lo);
  if (m.runtime.dtype != torch::kChar) {  // a `blip2 quantize`d directory runs in int8 whatever --dtype says
    size_t int8 = 0;
    for (const auto& p : m.model->parameters()) int8 += p.scalar_type() == torch::kChar;
    if (int8) {
      if (m.runtime.device.is_cpu() && nn::int8_int8_gemm())  // its products run on the OpenMP pool (above)
        m.runtime.threads = apply_threads(options.threads, GemmPool::kOpenMP);
      m.runtime.line = "weights int8 (" + std::to_string(int8) + " matrices of the checkpoint, mapped), compute " +
                       c10::toString(m.runtime.compute_dtype) + ", " + int8_paths() + float32_linears() + "; " +
                       m.runtime.threads.describe();
    }
  }
  m.tokenizer = load_tokenizer(dir);
  if (m.model->parts().language) {
    // The language model's end token must not survive decoding as text: a
    // tokenizer without its tokenizer_config.json does not know "</s>" is
    // special and leaves it in every caption. (An end token that decodes to
    // white space, like the bundled shapes LM's newline, is harmless.)
    const auto& t = m.model->config().text;
    const int64_t eos = t.family == LmFamily::kOpt ? t.opt.eos_token_id : t.t5.eos_token_id;
    const auto& special = m.tokenizer->all_special_ids();
    if (eos >= 0 && std::find(special.begin(), special.end(), eos) == special.end()) {
      std::string text;
      try {
        text = m.tokenizer->decode({eos}, true);
      } catch (const InputError&) {  // not in the vocabulary: the config check's business
      }
      if (text.find_first_not_of(" \t\r\n") != std::string::npos)
        throw ConfigError("the tokenizer in '" + dir + "' does not treat the language model's end token (id " +
                          std::to_string(eos) + ", \"" + text + "\") as special, so it would be left in the text; "
                          "tokenizer_config.json is missing or names another eos_token: copy the checkpoint's "
                          "tokenizer_config.json and special_tokens_map.json");
    }
  }
  if (m.model->parts().qformer_text) {
    const fs::path q = fs::path(dir) / "qformer_tokenizer";
    if (!fs::is_directory(q))
      throw ConfigError("model '" + dir + "' has a Q-Former that reads text but no qformer_tokenizer/ directory "
                        "(the BERT vocab.txt with [DEC]); copy it from the training run");
    m.qformer_tokenizer = load_tokenizer(q.string());
  }
  const fs::path pre = fs::path(dir) / "preprocessor_config.json";
  if (fs::exists(pre)) {
    m.processor = ImageProcessorConfig::from_json_file(pre.string());
  } else {
    m.processor.height = m.processor.width = static_cast<int>(m.model->config().vision.image_size);
  }
  m.load_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return m;
}

}  // namespace blip2
