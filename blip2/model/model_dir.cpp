#include "blip2/model/model_dir.h"

#include <algorithm>
#include <chrono>
#include <thread>
#include <filesystem>

#include "blip2/blip2.h"
#include "blip2/util/dtype.h"
#include "blip2/util/error.h"

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

void check_threads(int threads) {
  const int cores = std::max(1u, std::thread::hardware_concurrency());
  const int most = kMaxThreadsPerCore * cores;
  if (threads < 0 || threads > most)
    throw ConfigError("--threads " + std::to_string(threads) + " is out of range: give 0 (libtorch's default) or 1.." +
                      std::to_string(most) + " (" + std::to_string(kMaxThreadsPerCore) + " x the " +
                      std::to_string(cores) + " cores of this machine)");
}

ModelDir load_model_dir(const std::string& dir, const RuntimeOptions& options) {
  const auto t0 = std::chrono::steady_clock::now();
  if (!fs::is_directory(dir))
    throw ConfigError("model directory '" + dir + "' does not exist; give the path of a BLIP-2 checkpoint directory");
  ModelDir m;
  m.dir = dir;
  m.dtype = parse_dtype(options.dtype, "dtype");
  m.device = parse_device(options.device);
  check_threads(options.threads);
  if (options.threads > 0) torch::set_num_threads(options.threads);
  LoadOptions lo;
  lo.dtype = m.dtype;
  lo.device = m.device;
  m.model = load_blip2(dir, lo);
  m.tokenizer = load_tokenizer(dir);
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
