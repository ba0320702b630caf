#include "cpu/cpu_features.h"

#include <cstdlib>
#include <cstring>

namespace nibble {
namespace cpu {

static Features detect() {
  Features f;
  const char* e = std::getenv("NIBBLE_SIMD");
  if (e && std::strcmp(e, "none") == 0) return f;
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  __builtin_cpu_init();
  f.avx2_fma = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  f.f16c = f.avx2_fma;  // every AVX2 CPU has F16C
  f.avx512f = __builtin_cpu_supports("avx512f");
  f.avx512bw = __builtin_cpu_supports("avx512bw");
  f.avx512vnni = __builtin_cpu_supports("avx512vnni");
  // NIBBLE_SIMD=avx2: the AVX2 kernels even where AVX-512 exists (same-run comparisons).
  if (e && std::strcmp(e, "avx2") == 0) f.avx512f = f.avx512bw = f.avx512vnni = false;
#endif
  return f;
}

const Features& features() {
  static Features f = detect();
  return f;
}

std::string features_string() {
  const Features& f = features();
  std::string s;
  auto add = [&](bool on, const char* name) {
    if (!on) return;
    if (!s.empty()) s += ' ';
    s += name;
  };
  add(f.avx2_fma, "avx2 fma");
  add(f.f16c, "f16c");
  add(f.avx512f, "avx512f");
  add(f.avx512bw, "avx512bw");
  add(f.avx512vnni, "avx512vnni");
  return s.empty() ? "none" : s;
}

}  // namespace cpu
}  // namespace nibble
