#include "cpu/membench.h"

#include <chrono>
#include <cstdint>
#include <cstring>
#include <memory>
#include <vector>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "core/parallel.h"
#include "core/storage.h"
#include "cpu/cpu_features.h"

namespace nibble {
namespace cpu {

namespace {
volatile float g_sink;

__attribute__((target("avx2"))) float sum_avx2(const float* p, int64_t n) {
  __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), a2 = _mm256_setzero_ps(), a3 = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    a0 = _mm256_add_ps(a0, _mm256_load_ps(p + i));
    a1 = _mm256_add_ps(a1, _mm256_load_ps(p + i + 8));
    a2 = _mm256_add_ps(a2, _mm256_load_ps(p + i + 16));
    a3 = _mm256_add_ps(a3, _mm256_load_ps(p + i + 24));
  }
  __m256 s = _mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3));
  float out[8];
  _mm256_storeu_ps(out, s);
  float r = 0;
  for (float v : out) r += v;
  for (; i < n; i++) r += p[i];
  return r;
}

float sum_plain(const float* p, int64_t n) {
  float r = 0;
  for (int64_t i = 0; i < n; i++) r += p[i];
  return r;
}
}  // namespace

double read_bandwidth(size_t nbytes, int iters) {
  auto buf = Storage::host(nbytes, true);
  const float* p = static_cast<const float*>(buf->data);
  const int64_t n = nbytes / 4;
  const int64_t chunk = 1 << 16;  // 256 KiB per task, 64-byte aligned
  const bool avx2 = features().avx2_fma;
  auto pass = [&] {
    parallel_for((n + chunk - 1) / chunk, 1, [&](int64_t c0, int64_t c1) {
      float s = 0;
      for (int64_t c = c0; c < c1; c++) {
        int64_t b = c * chunk, e = std::min(n, b + chunk);
        s += avx2 ? sum_avx2(p + b, e - b) : sum_plain(p + b, e - b);
      }
      g_sink = s;
    });
  };
  pass();  // warm up: page faults, pool start
  auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < iters; i++) pass();
  double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return (double)nbytes * iters / sec;
}

double copy_bandwidth(size_t nbytes, int iters) {
  auto src = Storage::host(nbytes, true);
  auto dst = Storage::host(nbytes, true);
  const int64_t chunk = 1 << 20;
  const int64_t nchunks = (int64_t)((nbytes + chunk - 1) / chunk);
  auto pass = [&] {
    parallel_for(nchunks, 1, [&](int64_t c0, int64_t c1) {
      for (int64_t c = c0; c < c1; c++) {
        size_t b = (size_t)c * chunk, e = std::min(nbytes, b + chunk);
        std::memcpy(static_cast<char*>(dst->data) + b, static_cast<char*>(src->data) + b, e - b);
      }
    });
  };
  pass();
  auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < iters; i++) pass();
  double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return 2.0 * (double)nbytes * iters / sec;
}

}  // namespace cpu
}  // namespace nibble
