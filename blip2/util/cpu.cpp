#include "blip2/util/cpu.h"

#include <cstdlib>
#include <fstream>

#include "blip2/util/error.h"

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif

namespace blip2 {

namespace {

CpuFeatures detect() {
  CpuFeatures f;
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  f.avx2 = __builtin_cpu_supports("avx2");
  f.fma = __builtin_cpu_supports("fma");
  f.avx512f = __builtin_cpu_supports("avx512f");
  f.avx512bw = f.avx512f && __builtin_cpu_supports("avx512bw");
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (__get_cpuid(1, &a, &b, &c, &d)) f.f16c = (c >> 29) & 1;
  if (__get_cpuid_count(7, 0, &a, &b, &c, &d)) {
    f.avx512_vnni = f.avx512f && ((c >> 11) & 1);
    f.amx_bf16 = (d >> 22) & 1;  // usable only where the OS enabled the tiles; libtorch asks it
  }
  if (__get_cpuid_count(7, 1, &a, &b, &c, &d)) {
    f.avx_vnni = f.avx2 && ((a >> 4) & 1);
    f.avx512_bf16 = f.avx512f && ((a >> 5) & 1);
  }
#endif
  return f;
}

}  // namespace

CpuFeatures cap_features(CpuFeatures f, const std::string& max_isa) {
  if (max_isa.empty() || max_isa == "native") return f;
  if (max_isa != "avx2" && max_isa != "baseline")
    throw ConfigError("BLIP2_MAX_ISA='" + max_isa + "' is not one of native, avx2, baseline; unset it to use the whole CPU");
  f.avx512f = f.avx512bw = f.avx512_bf16 = f.avx512_vnni = f.amx_bf16 = false;
  if (max_isa == "baseline") f.avx2 = f.fma = f.f16c = f.avx_vnni = false;
  return f;
}

const CpuFeatures& cpu_features() {
  static const CpuFeatures f = [] {
    const char* cap = std::getenv("BLIP2_MAX_ISA");
    return cap_features(detect(), cap ? cap : "");
  }();
  return f;
}

std::string CpuFeatures::summary() const {
  std::string s;
  auto add = [&](bool on, const char* name) {
    if (on) s += (s.empty() ? "" : " ") + std::string(name);
  };
  add(avx2, "avx2");
  add(fma, "fma");
  add(f16c, "f16c");
  add(avx512f, "avx512f");
  add(avx512_bf16, "avx512_bf16");
  add(amx_bf16, "amx_bf16");
  add(avx512_vnni, "avx512_vnni");
  add(avx_vnni, "avx_vnni");
  if (s.empty()) s = "baseline";
  if (const char* cap = std::getenv("BLIP2_MAX_ISA"); cap && *cap && std::string(cap) != "native")
    s += " (capped: BLIP2_MAX_ISA=" + std::string(cap) + ")";
  return s;
}

std::string cpu_model_name() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("model name", 0) == 0) {
      const auto colon = line.find(':');
      if (colon != std::string::npos && colon + 2 <= line.size()) return line.substr(colon + 2);
    }
  }
  return "unknown";
}

}  // namespace blip2
