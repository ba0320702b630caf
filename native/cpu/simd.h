// Shared AVX2 helpers for the fast CPU kernels. Functions are compiled for AVX2/FMA/F16C by
// target attribute and only called after cpu::features() says the CPU has them, so the rest
// of the binary stays baseline x86-64.
#pragma once

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include <cstdint>

#define NIBBLE_AVX2 __attribute__((target("avx2,fma,f16c")))
#define NIBBLE_AVX512 __attribute__((target("avx2,fma,f16c,avx512f,avx512bw")))
#define NIBBLE_AVX512VNNI __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vnni")))

namespace nibble {
namespace cpu {

// Sum of the eight lanes.
NIBBLE_AVX2 inline float hsum256(__m256 v) {
  __m128 lo = _mm256_castps256_ps128(v), hi = _mm256_extractf128_ps(v, 1);
  lo = _mm_add_ps(lo, hi);
  __m128 sh = _mm_movehdup_ps(lo);
  __m128 s = _mm_add_ps(lo, sh);
  sh = _mm_movehl_ps(sh, s);
  s = _mm_add_ss(s, sh);
  return _mm_cvtss_f32(s);
}

// Dot product of two float32 vectors (two accumulators; summation order fixed by n).
NIBBLE_AVX2 inline float dot_avx2(const float* a, const float* b, int64_t n) {
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  int64_t k = 0;
  for (; k + 16 <= n; k += 16) {
    acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + k), _mm256_loadu_ps(b + k), acc0);
    acc1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + k + 8), _mm256_loadu_ps(b + k + 8), acc1);
  }
  float s = hsum256(_mm256_add_ps(acc0, acc1));
  for (; k < n; k++) s += a[k] * b[k];
  return s;
}

}  // namespace cpu
}  // namespace nibble
