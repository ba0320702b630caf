// Fast CPU kernels: threaded over the pool, with AVX2/FMA inner loops chosen at run time.
// Results match the _ref kernels to float32 rounding (summation order differs).
#include <algorithm>
#include <cmath>
#include <vector>

#include "core/parallel.h"
#include "cpu/cpu_features.h"
#include "cpu/simd.h"
#include "cpu/gpt2_ops.h"


namespace nibble {
namespace cpu {

namespace {

// Eight weights widened to float32: F16C for half, a 16-bit shift for bfloat16.
template <DType WT>
NIBBLE_AVX2 inline __m256 load8(const void* w, int64_t i) {
  if constexpr (WT == DType::F32) {
    return _mm256_loadu_ps(static_cast<const float*>(w) + i);
  } else if constexpr (WT == DType::F16) {
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(static_cast<const uint16_t*>(w) + i)));
  } else {
    __m256i v = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(static_cast<const uint16_t*>(w) + i)));
    return _mm256_castsi256_ps(_mm256_slli_epi32(v, 16));
  }
}

// MB x NB outputs of x . w^T, accumulated over K with AVX2 (MB rows of x, NB rows of w).
template <int MB, int NB, DType WT>
NIBBLE_AVX2 void linear_tile_avx2(float* out, const float* x, const void* w, const void* bias, int64_t K,
                                  int64_t N, int64_t m0, int64_t n0) {
  __m256 acc[MB][NB];
  for (int i = 0; i < MB; i++)
    for (int j = 0; j < NB; j++) acc[i][j] = _mm256_setzero_ps();
  const int64_t K8 = K & ~int64_t(7);
  constexpr int64_t es = WT == DType::F32 ? 4 : 2;
  // Rows of the next tile, prefetched as fast as this tile consumes its own (one 64-byte line
  // per step for half types, two for float32): decode GEMVs stream weights, and the hardware
  // prefetcher alone leaves the short (K*es bytes) rows under-fetched.
  const char* next = static_cast<const char*>(w) + (n0 + NB) * K * es;
  const int64_t next_bytes = std::max<int64_t>(0, std::min<int64_t>(NB, N - n0 - NB)) * K * es;
  int64_t pf = 0;
  for (int64_t k = 0; k < K8; k += 8) {
    for (int l = 0; l < (int)es / 2 && pf < next_bytes; l++, pf += 64) _mm_prefetch(next + pf, _MM_HINT_T0);
    __m256 xv[MB];
    for (int i = 0; i < MB; i++) xv[i] = _mm256_loadu_ps(x + (m0 + i) * K + k);
    for (int j = 0; j < NB; j++) {
      __m256 wv = load8<WT>(w, (n0 + j) * K + k);
      for (int i = 0; i < MB; i++) acc[i][j] = _mm256_fmadd_ps(xv[i], wv, acc[i][j]);
    }
  }
  for (int i = 0; i < MB; i++)
    for (int j = 0; j < NB; j++) {
      float s = hsum256(acc[i][j]);
      for (int64_t k = K8; k < K; k++) s += x[(m0 + i) * K + k] * load_as_float(w, WT, (n0 + j) * K + k);
      out[(m0 + i) * N + n0 + j] = s + (bias ? load_as_float(bias, WT, n0 + j) : 0.f);
    }
}

// (GCC 12 warns inside its own avx512fintrin.h, in _mm512_reduce_add_ps: a false positive.)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
// The same tile with AVX-512: sixteen weights a step (a zmm of float32, or a ymm of halves
// widened by vcvtph2ps), half the instructions of the AVX2 tile per weight (see linear()).
template <DType WT>
NIBBLE_AVX512 inline __m512 load16(const void* w, int64_t i) {
  if constexpr (WT == DType::F32) {
    return _mm512_loadu_ps(static_cast<const float*>(w) + i);
  } else if constexpr (WT == DType::F16) {
    return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(static_cast<const uint16_t*>(w) + i)));
  } else {
    __m512i v = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(static_cast<const uint16_t*>(w) + i)));
    return _mm512_castsi512_ps(_mm512_slli_epi32(v, 16));
  }
}

template <int MB, int NB, DType WT>
NIBBLE_AVX512 void linear_tile_avx512(float* out, const float* x, const void* w, const void* bias, int64_t K,
                                      int64_t N, int64_t m0, int64_t n0) {
  __m512 acc[MB][NB];
  for (int i = 0; i < MB; i++)
    for (int j = 0; j < NB; j++) acc[i][j] = _mm512_setzero_ps();
  const int64_t K16 = K & ~int64_t(15);
  constexpr int64_t es = WT == DType::F32 ? 4 : 2;
  // The next tile's rows prefetched at least as fast as this tile consumes its own (see the
  // AVX2 tile).
  const char* next = static_cast<const char*>(w) + (n0 + NB) * K * es;
  const int64_t next_bytes = std::max<int64_t>(0, std::min<int64_t>(NB, N - n0 - NB)) * K * es;
  int64_t pf = 0;
  constexpr int kLines = (int)((16 * es * NB + 63) / 64);  // what a step consumes, in 64-byte lines
  for (int64_t k = 0; k < K16; k += 16) {
    for (int l = 0; l < kLines && pf < next_bytes; l++, pf += 64) _mm_prefetch(next + pf, _MM_HINT_T0);
    __m512 xv[MB];
    for (int i = 0; i < MB; i++) xv[i] = _mm512_loadu_ps(x + (m0 + i) * K + k);
    for (int j = 0; j < NB; j++) {
      __m512 wv = load16<WT>(w, (n0 + j) * K + k);
      for (int i = 0; i < MB; i++) acc[i][j] = _mm512_fmadd_ps(xv[i], wv, acc[i][j]);
    }
  }
  for (int i = 0; i < MB; i++)
    for (int j = 0; j < NB; j++) {
      float s = _mm512_reduce_add_ps(acc[i][j]);
      for (int64_t k = K16; k < K; k++) s += x[(m0 + i) * K + k] * load_as_float(w, WT, (n0 + j) * K + k);
      out[(m0 + i) * N + n0 + j] = s + (bias ? load_as_float(bias, WT, n0 + j) : 0.f);
    }
}

#pragma GCC diagnostic pop

using TileFn = void (*)(float*, const float*, const void*, const void*, int64_t, int64_t, int64_t, int64_t);
template <bool W512, int MB, DType WT>
TileFn pick_nb(int nb) {
  switch (nb) {
    case 1: return W512 ? linear_tile_avx512<MB, 1, WT> : linear_tile_avx2<MB, 1, WT>;
    case 2: return W512 ? linear_tile_avx512<MB, 2, WT> : linear_tile_avx2<MB, 2, WT>;
    case 3: return W512 ? linear_tile_avx512<MB, 3, WT> : linear_tile_avx2<MB, 3, WT>;
    default: return W512 ? linear_tile_avx512<MB, 4, WT> : linear_tile_avx2<MB, 4, WT>;
  }
}
template <bool W512, DType WT>
TileFn pick_mb(int mb, int nb) {
  switch (mb) {
    case 1: return pick_nb<W512, 1, WT>(nb);
    case 2: return pick_nb<W512, 2, WT>(nb);
    case 3: return pick_nb<W512, 3, WT>(nb);
    default: return pick_nb<W512, 4, WT>(nb);
  }
}
template <bool W512>
TileFn pick_tile(int mb, int nb, DType wdt) {
  switch (wdt) {
    case DType::F16: return pick_mb<W512, DType::F16>(mb, nb);
    case DType::BF16: return pick_mb<W512, DType::BF16>(mb, nb);
    default: return pick_mb<W512, DType::F32>(mb, nb);
  }
}

template <bool W512>
void linear_simd(float* out, const float* x, const void* w, const void* bias, DType wdt, int64_t M, int64_t K,
                 int64_t N) {
  // Tile N so a tile of weight rows stays in L2 while every row of x passes over it.
  int64_t ntile = std::max<int64_t>(4, std::min<int64_t>(64, (128 * 1024) / (K * (int64_t)dtype_size(wdt))));
  ntile &= ~int64_t(3);
  if (M <= 4) ntile = 16;  // GEMV-like: weights are read once anyway; finer work split
  int64_t ntiles = (N + ntile - 1) / ntile;
  parallel_for(ntiles, 1, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; t++) {
      int64_t nb0 = t * ntile, nb1 = std::min(N, nb0 + ntile);
      for (int64_t m = 0; m < M; m += 4) {
        int mb = (int)std::min<int64_t>(4, M - m);
        for (int64_t n = nb0; n < nb1; n += 4) {
          int nb = (int)std::min<int64_t>(4, nb1 - n);
          pick_tile<W512>(mb, nb, wdt)(out, x, w, bias, K, N, m, n);
        }
      }
    }
  });
}

void linear_portable(float* out, const float* x, const void* w, const void* bias, DType wdt, int64_t M, int64_t K,
                     int64_t N) {
  parallel_for(N, 16, [&](int64_t n0, int64_t n1) {
    for (int64_t m = 0; m < M; m++)
      for (int64_t n = n0; n < n1; n++) {
        float s = 0.f;
        for (int64_t k = 0; k < K; k++) s += x[m * K + k] * load_as_float(w, wdt, n * K + k);
        out[m * N + n] = s + (bias ? load_as_float(bias, wdt, n) : 0.f);
      }
  });
}

}  // namespace

void embedding(float* out, const void* wte, const void* wpe, DType pdt, const int32_t* ids, const int32_t* pos,
               int64_t T, int64_t C) {
  parallel_for(T, 8, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; t++) {
      const int64_t a = (int64_t)ids[t] * C, p = (int64_t)pos[t] * C;
      if (pdt == DType::F32) {
        const float* wa = static_cast<const float*>(wte) + a;
        const float* wp = static_cast<const float*>(wpe) + p;
        for (int64_t c = 0; c < C; c++) out[t * C + c] = wa[c] + wp[c];
      } else {
        for (int64_t c = 0; c < C; c++) out[t * C + c] = load_as_float(wte, pdt, a + c) + load_as_float(wpe, pdt, p + c);
      }
    }
  });
}

void layernorm(float* out, const float* x, const void* wv, const void* bv, DType pdt, int64_t rows, int64_t C,
               float eps) {
  // Parameters widened once per call (C is small), so the row loop is float32 only.
  std::vector<float> wbuf, bbuf;
  const float* w = static_cast<const float*>(wv);
  const float* b = static_cast<const float*>(bv);
  if (pdt != DType::F32) {
    wbuf.resize(C), bbuf.resize(C);
    for (int64_t c = 0; c < C; c++) wbuf[c] = load_as_float(wv, pdt, c), bbuf[c] = load_as_float(bv, pdt, c);
    w = wbuf.data(), b = bbuf.data();
  }
  parallel_for(rows, 4, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; r++) {
      const float* xr = x + r * C;
      float mean = 0.f;
      for (int64_t c = 0; c < C; c++) mean += xr[c];
      mean /= (float)C;
      float var = 0.f;
      for (int64_t c = 0; c < C; c++) {
        float d = xr[c] - mean;
        var += d * d;
      }
      var /= (float)C;
      float rstd = 1.0f / std::sqrt(var + eps);
      float* o = out + r * C;
      for (int64_t c = 0; c < C; c++) o[c] = (xr[c] - mean) * rstd * w[c] + b[c];
    }
  });
}

void linear(float* out, const float* x, const void* w, const void* bias, DType wdt, int64_t M, int64_t K, int64_t N) {
  // AVX-512 tiles for 2+ rows (prefill): GPT-2 124M float32 prefill 495-546 -> 680-693
  // tokens/s on the 2-core AVX-512 host; one row (decode, bandwidth-bound) measured no faster
  // with them (float16 decode 100-108 vs 102-116 tokens/s), so it keeps the AVX2 tile.
  const Features& f = features();
  if (f.avx2_fma && f.avx512f && M >= 2)
    linear_simd<true>(out, x, w, bias, wdt, M, K, N);
  else if (f.avx2_fma)
    linear_simd<false>(out, x, w, bias, wdt, M, K, N);
  else
    linear_portable(out, x, w, bias, wdt, M, K, N);
}

namespace {
// exp(x) for 8 lanes: Cody-Waite range reduction and a degree-6 polynomial (about 1 ulp over
// the clamped range), then scaling by 2^n through the exponent bits.
NIBBLE_AVX2 inline __m256 exp256(__m256 x) {
  x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.0f)), _mm256_set1_ps(87.0f));
  __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 p = _mm256_set1_ps(1.9875691500e-4f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
  p = _mm256_fmadd_ps(_mm256_mul_ps(p, r), r, _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
  __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

// gelu_new(x) = 0.5 x (1 + tanh(u)) = x - x / (exp(2u) + 1), u = sqrt(2/pi) (x + 0.044715 x^3):
// the second form is stable at both tails and needs one exp instead of a tanh call.
NIBBLE_AVX2 void gelu_new_avx2(float* out, const float* x, int64_t n) {
  const __m256 k2 = _mm256_set1_ps(2.0f * 0.7978845608028654f), c = _mm256_set1_ps(0.044715f), one = _mm256_set1_ps(1.0f);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    __m256 v = _mm256_loadu_ps(x + i);
    __m256 v3 = _mm256_mul_ps(_mm256_mul_ps(v, v), v);
    __m256 e = exp256(_mm256_mul_ps(k2, _mm256_fmadd_ps(c, v3, v)));
    _mm256_storeu_ps(out + i, _mm256_sub_ps(v, _mm256_div_ps(v, _mm256_add_ps(e, one))));
  }
  gelu_new_ref(out + i, x + i, n - i);
}
}  // namespace

void gelu_new(float* out, const float* x, int64_t n) {
  const bool avx2 = features().avx2_fma;
  parallel_for(n, 16384, [&](int64_t i0, int64_t i1) {
    if (avx2)
      gelu_new_avx2(out + i0, x + i0, i1 - i0);
    else
      gelu_new_ref(out + i0, x + i0, i1 - i0);
  });
}

void add(float* out, const float* a, const float* b, int64_t n) {
  parallel_for(n, 16384, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; i++) out[i] = a[i] + b[i];
  });
}

void softmax(float* out, const float* x, int64_t rows, int64_t cols) {
  parallel_for(rows, 1, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; r++) {
      const float* xr = x + r * cols;
      float* o = out + r * cols;
      float mx = -INFINITY;
      for (int64_t c = 0; c < cols; c++) mx = std::fmax(mx, xr[c]);
      float sum = 0.f;
      for (int64_t c = 0; c < cols; c++) {
        o[c] = std::exp(xr[c] - mx);
        sum += o[c];
      }
      float inv = 1.0f / sum;
      for (int64_t c = 0; c < cols; c++) o[c] *= inv;
    }
  });
}

void attention(float* out, const float* qkv, float* kc, float* vc, const int32_t* mask, int64_t B, int64_t T,
               int64_t past, int64_t Tmax, int64_t H, int64_t D) {
  const int64_t C = H * D, L = past + T;
  parallel_for(B * T, 16, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; i++) {
      int64_t b = i / T, t = i % T;
      const float* row = qkv + i * 3 * C;
      for (int64_t h = 0; h < H; h++) {
        std::copy(row + C + h * D, row + C + (h + 1) * D, kc + ((b * H + h) * Tmax + past + t) * D);
        std::copy(row + 2 * C + h * D, row + 2 * C + (h + 1) * D, vc + ((b * H + h) * Tmax + past + t) * D);
      }
    }
  });
  const float scale = 1.0f / std::sqrt((float)D);
  const bool avx2 = features().avx2_fma;
  parallel_for(B * H * T, 1, [&](int64_t i0, int64_t i1) {
    std::vector<float> s(L);
    for (int64_t i = i0; i < i1; i++) {
      int64_t t = i % T, h = (i / T) % H, b = i / (T * H);
      const float* q = qkv + (b * T + t) * 3 * C + h * D;
      const float* K = kc + (b * H + h) * Tmax * D;
      const float* V = vc + (b * H + h) * Tmax * D;
      const int64_t last = past + t;
      float mx = -INFINITY;
      for (int64_t j = 0; j <= last; j++) {
        if (mask && !mask[b * L + j]) {
          s[j] = -INFINITY;
          continue;
        }
        float acc;
        if (avx2) {
          acc = dot_avx2(q, K + j * D, D);
        } else {
          acc = 0.f;
          for (int64_t d = 0; d < D; d++) acc += q[d] * K[j * D + d];
        }
        s[j] = acc * scale;
        mx = std::fmax(mx, s[j]);
      }
      float* o = out + (b * T + t) * C + h * D;
      std::fill(o, o + D, 0.f);
      if (mx == -INFINITY) continue;
      float sum = 0.f;
      for (int64_t j = 0; j <= last; j++) {
        s[j] = s[j] == -INFINITY ? 0.f : std::exp(s[j] - mx);
        sum += s[j];
      }
      const float inv = 1.0f / sum;
      for (int64_t j = 0; j <= last; j++) {
        const float p = s[j] * inv;
        if (p == 0.f) continue;
        const float* v = V + j * D;
        for (int64_t d = 0; d < D; d++) o[d] += p * v[d];
      }
    }
  });
}

}  // namespace cpu
}  // namespace nibble
