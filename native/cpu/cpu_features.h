// Run-time CPU feature detection: one binary runs on any x86-64 and takes the AVX2/FMA,
// AVX-512 or VNNI paths only where the CPU has them. NIBBLE_SIMD=none forces the portable code.
#pragma once
#include <string>

namespace nibble {
namespace cpu {

struct Features {
  bool avx2_fma = false;
  bool f16c = false;
  bool avx512f = false;
  bool avx512bw = false;
  bool avx512vnni = false;
  bool avxvnni = false;
};

const Features& features();
std::string features_string();  // e.g. "avx2 fma f16c" or "none"

}  // namespace cpu
}  // namespace nibble
