// Fast CPU quantization kernels: threaded over blocks/rows with AVX2/FMA inner loops chosen
// at run time. Quantize/dequantize produce the same bytes as quant_ref.cc (same float32
// operations in the same order per element); matmul_4bit differs only by summation order.
#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "core/parallel.h"
#include "cpu/cpu_features.h"
#include "cpu/simd.h"
#include "cpu/quant_ops.h"


namespace nibble {
namespace cpu {

namespace {

bool use_avx2() { return features().avx2_fma; }
bool use_avx512() { return features().avx2_fma && features().avx512f && features().avx512bw; }

// Blocks per parallel task: enough work per task (~16K elements) to amortise the pool.
int64_t block_grain(int blocksize) { return std::max<int64_t>(1, 16384 / blocksize); }

// ---- 4-bit codebook lookup with AVX2 ------------------------------------------------
// One 32-bit word holds 8 packed codes; element j of the 8 sits at bits kShr[j]..+3 (the
// high nibble of each byte comes first). vpermps uses only the low 3 bits of each lane's
// index, and bit 3 (the table half) is moved into the sign bit for vblendvps, so no masks.
struct Lut16 {
  __m256 lo, hi;  // code values 0..7 and 8..15
};

NIBBLE_AVX2 inline Lut16 make_lut(QuantType qt) {
  alignas(32) float v[16];
  for (int i = 0; i < 16; i++) v[i] = fmt::code4_value((uint8_t)i, qt);
  return {_mm256_load_ps(v), _mm256_load_ps(v + 8)};
}

NIBBLE_AVX2 inline __m256 lookup8(const Lut16& t, uint32_t word) {
  const __m256i shr = _mm256_setr_epi32(4, 0, 12, 8, 20, 16, 28, 24);
  const __m256i shl = _mm256_setr_epi32(24, 28, 16, 20, 8, 12, 0, 4);
  __m256i w = _mm256_set1_epi32((int)word);
  __m256i idx = _mm256_srlv_epi32(w, shr);
  __m256i sel = _mm256_sllv_epi32(w, shl);
  __m256 a = _mm256_permutevar8x32_ps(t.lo, idx);
  __m256 b = _mm256_permutevar8x32_ps(t.hi, idx);
  return _mm256_blendv_ps(a, b, _mm256_castsi256_ps(sel));
}

inline uint32_t load_u32(const uint8_t* p) {
  uint32_t w;
  std::memcpy(&w, p, 4);
  return w;
}

// Eight input elements as float32 (exact conversion).
NIBBLE_AVX2 inline __m256 load8(const void* x, DType dt, int64_t i) {
  switch (dt) {
    case DType::F16:
      return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i*)(static_cast<const uint16_t*>(x) + i)));
    case DType::BF16: {
      __m256i h = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i*)(static_cast<const uint16_t*>(x) + i)));
      return _mm256_castsi256_ps(_mm256_slli_epi32(h, 16));
    }
    default:
      return _mm256_loadu_ps(static_cast<const float*>(x) + i);
  }
}

// Stores 8 float32 values rounded to dt (RNE); bf16 goes through the scalar rounding so
// NaN payloads match dtype.h exactly.
NIBBLE_AVX2 inline void store8(void* out, DType dt, int64_t i, __m256 v) {
  switch (dt) {
    case DType::F16:
      _mm_storeu_si128((__m128i*)(static_cast<uint16_t*>(out) + i), _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT));
      break;
    case DType::BF16: {
      alignas(32) float t[8];
      _mm256_store_ps(t, v);
      for (int j = 0; j < 8; j++) static_cast<uint16_t*>(out)[i + j] = float_to_bf16(t[j]);
      break;
    }
    default:
      _mm256_storeu_ps(static_cast<float*>(out) + i, v);
  }
}

// Codes of 8 normalised values as int32 lanes; the same comparisons as fmt::quantize_*.
NIBBLE_AVX2 inline __m256i codes8(__m256 v, QuantType qt) {
  if (qt == QuantType::NF4) {
    __m256i k = _mm256_setzero_si256();
    for (int t = 0; t < 15; t++)
      k = _mm256_sub_epi32(k, _mm256_castps_si256(_mm256_cmp_ps(v, _mm256_set1_ps(fmt::kNf4Thresholds[t]), _CMP_GT_OQ)));
    return k;
  }
  __m256 a = _mm256_and_ps(v, _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff)));
  __m256i k = _mm256_setzero_si256();
  for (int t = 0; t < 7; t++)
    k = _mm256_sub_epi32(k, _mm256_castps_si256(_mm256_cmp_ps(a, _mm256_set1_ps(fmt::kFp4Thresholds[t]), _CMP_GT_OQ)));
  // rank -> 3-bit code through a permute of the rank table
  __m256i code = _mm256_permutevar8x32_epi32(_mm256_setr_epi32(0, 1, 6, 7, 4, 5, 2, 3), k);
  __m256i neg = _mm256_castps_si256(_mm256_cmp_ps(v, _mm256_setzero_ps(), _CMP_LT_OQ));
  return _mm256_or_si256(code, _mm256_and_si256(neg, _mm256_set1_epi32(8)));
}

NIBBLE_AVX2 void quantize_4bit_blocks_avx2(const void* x, DType dt, int64_t n, int bs, QuantType qt, uint8_t* packed,
                                           float* absmax, int64_t b0, int64_t b1) {
  alignas(32) int32_t c[8];
  for (int64_t b = b0; b < b1; b++) {
    int64_t begin = b * bs, end = std::min<int64_t>(n, begin + bs);
    int64_t full = begin + ((end - begin) & ~int64_t(7));
    const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    __m256 m8 = _mm256_set1_ps(-FLT_MAX);
    // max_ps returns its second operand when the first is NaN: NaN inputs are skipped (fmaxf).
    for (int64_t i = begin; i < full; i += 8) m8 = _mm256_max_ps(_mm256_and_ps(load8(x, dt, i), abs_mask), m8);
    alignas(32) float mv[8];
    _mm256_store_ps(mv, m8);
    float m = -FLT_MAX;
    for (int j = 0; j < 8; j++) m = std::fmax(m, mv[j]);
    for (int64_t i = full; i < end; i++) m = std::fmax(m, std::fabs(load_as_float(x, dt, i)));
    absmax[b] = m;
    float inv = 1.0f / m;
    __m256 inv8 = _mm256_set1_ps(inv);
    for (int64_t i = begin; i < full; i += 8) {
      _mm256_store_si256((__m256i*)c, codes8(_mm256_mul_ps(load8(x, dt, i), inv8), qt));
      for (int j = 0; j < 8; j += 2) packed[(i + j) / 2] = fmt::pack4((uint8_t)c[j], (uint8_t)c[j + 1]);
    }
    for (int64_t i = full; i < end; i += 2) {
      uint8_t hi = fmt::quantize_4bit_value(load_as_float(x, dt, i) * inv, qt);
      float lo_x = i + 1 < end ? load_as_float(x, dt, i + 1) : 0.0f;
      packed[i / 2] = fmt::pack4(hi, fmt::quantize_4bit_value(lo_x * inv, qt));
    }
  }
}

NIBBLE_AVX2 void dequantize_4bit_blocks_avx2(const uint8_t* packed, const float* absmax, int64_t n, int bs,
                                             QuantType qt, void* out, DType dt, int64_t b0, int64_t b1) {
  Lut16 lut = make_lut(qt);
  for (int64_t b = b0; b < b1; b++) {
    int64_t begin = b * bs, end = std::min<int64_t>(n, begin + bs);
    int64_t full = begin + ((end - begin) & ~int64_t(7));
    __m256 s = _mm256_set1_ps(absmax[b]);
    for (int64_t i = begin; i < full; i += 8) store8(out, dt, i, _mm256_mul_ps(lookup8(lut, load_u32(packed + i / 2)), s));
    for (int64_t i = full; i < end; i++) {
      uint8_t byte = packed[i / 2];
      uint8_t code = (i & 1) ? fmt::unpack4_lo(byte) : fmt::unpack4_hi(byte);
      store_from_float(out, dt, i, fmt::code4_value(code, qt) * absmax[b]);
    }
  }
}

// Dot product of one weight row (K elements starting at element `start`, whole blocks,
// start a multiple of blocksize) with x (float32): per block sum(code * x), then scaled by
// the block absmax, so the inner loop is lookup + FMA only.
NIBBLE_AVX2 float row_dot_avx2(const Weight4bit& w, const Lut16& lut, int64_t start, const float* x) {
  const int bs = w.blocksize;
  const uint8_t* p = w.packed + start / 2;
  __m256 total = _mm256_setzero_ps();
  const int64_t nblocks = w.K / bs;
  const int64_t b0 = start / bs;
  for (int64_t blk = 0; blk < nblocks; blk++) {
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    const uint8_t* pb = p + blk * (bs / 2);
    const float* xb = x + blk * bs;
    for (int j = 0; j < bs; j += 16) {
      acc0 = _mm256_fmadd_ps(lookup8(lut, load_u32(pb + j / 2)), _mm256_loadu_ps(xb + j), acc0);
      acc1 = _mm256_fmadd_ps(lookup8(lut, load_u32(pb + j / 2 + 4)), _mm256_loadu_ps(xb + j + 8), acc1);
    }
    total = _mm256_fmadd_ps(_mm256_add_ps(acc0, acc1), _mm256_set1_ps(weight_block_absmax(w, b0 + blk)), total);
  }
  return hsum256(total);
}

// The one-row 4-bit GEMVs stream R weight rows at once. Each row's cache line of the next
// pass (R rows on) is requested into the L2 as the current pass reads its own: R interleaved
// row streams outrun the hardware prefetcher (as the int8 product's did, session 10). On this
// project's AVX-512 host, alternated with it off: GEMV 28672x8192 19 -> 28 GB/s, GPT-2-124M nf4
// decode median 82.5 -> 107.9 tokens/s (bench/kernels/NOTES.md, session 12).
// NIBBLE_CPU_GEMV_PREFETCH=0 turns it off (comparisons).
bool gemv_prefetch() {
  static const bool on = [] {
    const char* e = std::getenv("NIBBLE_CPU_GEMV_PREFETCH");
    return !(e && std::string(e) == "0");
  }();
  return on;
}

// GEMV for blocksizes that are multiples of 64: one 256-bit load covers 64 codes; lane j
// holds elements 8j..8j+7, and shifting every lane right by 4s exposes element 8j + (s^1)
// (the high nibble of each byte comes first). x is pre-permuted once per call to that
// order (xp[64g + 8s + j] = x[64g + 8j + (s^1)]) so each step is shift, two permutes, a
// blend and an FMA, with no per-word broadcast. Two rows share every xp load.
NIBBLE_AVX2 void permute_x64(const float* x, int64_t K, float* xp) {
  for (int64_t g = 0; g < K; g += 64)
    for (int s = 0; s < 8; s++)
      for (int j = 0; j < 8; j++) xp[g + 8 * s + j] = x[g + 8 * j + (s ^ 1)];
}

template <int R>
NIBBLE_AVX2 inline void strided_rows(const Weight4bit& w, const Lut16& lut, int64_t n, const float* xp, float* acc,
                                     bool prefetch) {
  const int64_t K = w.K, bs = w.blocksize;
  prefetch = prefetch && n + 2 * R <= w.N;  // the next pass exists (see gemv_prefetch)
  const uint8_t* p[R];
  __m256 total[R];
  for (int r = 0; r < R; r++) p[r] = w.packed + (n + r) * K / 2, total[r] = _mm256_setzero_ps();
  for (int64_t k0 = 0; k0 < K; k0 += bs) {
    __m256 a[R][2];
    for (int r = 0; r < R; r++) a[r][0] = a[r][1] = _mm256_setzero_ps();
    for (int64_t g = k0; g < k0 + bs; g += 64) {
      __m256i v[R];
      for (int r = 0; r < R; r++) {
        v[r] = _mm256_loadu_si256((const __m256i*)(p[r] + g / 2));
        if (prefetch) _mm_prefetch((const char*)(p[r] + R * K / 2 + g / 2), _MM_HINT_T1);
      }
#define NIBBLE_STEP(S)                                                                                    \
  {                                                                                                      \
    __m256 xv = _mm256_loadu_ps(xp + g + 8 * (S));                                                       \
    for (int r = 0; r < R; r++) {                                                                        \
      __m256i idx = (S) == 0 ? v[r] : _mm256_srli_epi32(v[r], 4 * (S));                                  \
      __m256i sel = (S) == 7 ? v[r] : _mm256_slli_epi32(v[r], 28 - 4 * (S));                             \
      __m256 val = _mm256_blendv_ps(_mm256_permutevar8x32_ps(lut.lo, idx), _mm256_permutevar8x32_ps(lut.hi, idx), \
                                    _mm256_castsi256_ps(sel));                                           \
      a[r][(S)&1] = _mm256_fmadd_ps(val, xv, a[r][(S)&1]);                                               \
    }                                                                                                    \
  }
      NIBBLE_STEP(0) NIBBLE_STEP(1) NIBBLE_STEP(2) NIBBLE_STEP(3)
      NIBBLE_STEP(4) NIBBLE_STEP(5) NIBBLE_STEP(6) NIBBLE_STEP(7)
#undef NIBBLE_STEP
    }
    for (int r = 0; r < R; r++) {
      float s = weight_block_absmax(w, ((n + r) * K + k0) >> __builtin_ctzll((unsigned long long)bs));
      total[r] = _mm256_fmadd_ps(_mm256_add_ps(a[r][0], a[r][1]), _mm256_set1_ps(s), total[r]);
    }
  }
  for (int r = 0; r < R; r++) acc[r] = hsum256(total[r]);
}

NIBBLE_AVX2 void gemv_rows_strided_avx2(const Weight4bit& w, const float* xp, int64_t n0, int64_t n1, float* acc) {
  Lut16 lut = make_lut(w.qt);
  int64_t n = n0;
  const bool prefetch = gemv_prefetch();
  for (; n + 2 <= n1; n += 2) strided_rows<2>(w, lut, n, xp, acc + (n - n0), prefetch);
  for (; n < n1; n++) strided_rows<1>(w, lut, n, xp, acc + (n - n0), false);
}

// (GCC 12 warns inside its own avx512fintrin.h, in _mm512_reduce_add_ps: a false positive.)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
// The same GEMV with AVX-512 (rows of whole 128-code groups, blocksizes that are multiples of
// 64): one 512-bit load covers 128 codes, lane j holding elements 8j..8j+7, and vpermps on a
// zmm is a 16-entry lookup in one instruction (the AVX2 kernel needs two permutes, a blend and
// a second shift for 8), so a step is shift, lookup, FMA for 16 weights. x is pre-permuted to
// xp[128g + 16s + j] = x[128g + 8j + (s^1)]. A group spans two 64-code blocks when the blocksize
// is 64: lanes 0-7 take the first block's absmax, 8-15 the second's.
// The 16 code values in one zmm: vpermps with a lane's low 4 bits is the whole lookup.
NIBBLE_AVX512 inline __m512 make_lut512(QuantType qt) {
  alignas(64) float v[16];
  for (int i = 0; i < 16; i++) v[i] = fmt::code4_value((uint8_t)i, qt);
  return _mm512_load_ps(v);
}

NIBBLE_AVX512 void permute_x128(const float* x, int64_t K, float* xp) {
  for (int64_t g = 0; g < K; g += 128)
    for (int s = 0; s < 8; s++)
      for (int j = 0; j < 16; j++) xp[g + 16 * s + j] = x[g + 8 * j + (s ^ 1)];
}

template <int R>
NIBBLE_AVX512 inline void strided_rows512(const Weight4bit& w, __m512 table, int64_t n, const float* xp, float* acc,
                                          bool prefetch) {
  const int64_t K = w.K, bs = w.blocksize;
  prefetch = prefetch && n + 2 * R <= w.N;  // the next pass exists
  const int sh = __builtin_ctzll((unsigned long long)bs);  // blocksizes are powers of two
  const uint8_t* p[R];
  int64_t blk0[R];  // each row's first block (rows are whole blocks)
  __m512 total[R];
  for (int r = 0; r < R; r++) p[r] = w.packed + (n + r) * K / 2, blk0[r] = ((n + r) * K) >> sh, total[r] = _mm512_setzero_ps();
  for (int64_t g = 0; g < K; g += 128) {
    __m512i v[R];
    __m512 a[R][2];
    for (int r = 0; r < R; r++) {
      v[r] = _mm512_loadu_si512(p[r] + g / 2);
      a[r][0] = a[r][1] = _mm512_setzero_ps();
      if (prefetch) _mm_prefetch((const char*)(p[r] + R * K / 2 + g / 2), _MM_HINT_T1);
    }
#pragma GCC unroll 8
    for (int S = 0; S < 8; S++) {
      const __m512 xv = _mm512_loadu_ps(xp + g + 16 * S);
      for (int r = 0; r < R; r++) {
        const __m512i idx = S == 0 ? v[r] : _mm512_srli_epi32(v[r], 4 * S);
        a[r][S & 1] = _mm512_fmadd_ps(_mm512_permutexvar_ps(idx, table), xv, a[r][S & 1]);
      }
    }
    for (int r = 0; r < R; r++) {
      // (Block indices by shift: a 64-bit division per group cost a fifth of the kernel.)
      const int64_t b = blk0[r] + (g >> sh);
      const float s0 = weight_block_absmax(w, b);
      const __m512 s = bs % 128 == 0 ? _mm512_set1_ps(s0)
                                      : _mm512_mask_blend_ps(0xFF00, _mm512_set1_ps(s0), _mm512_set1_ps(weight_block_absmax(w, b + 1)));
      total[r] = _mm512_fmadd_ps(_mm512_add_ps(a[r][0], a[r][1]), s, total[r]);
    }
  }
  for (int r = 0; r < R; r++) acc[r] = _mm512_reduce_add_ps(total[r]);
}

NIBBLE_AVX512 void gemv_rows_strided_avx512(const Weight4bit& w, const float* xp, int64_t n0, int64_t n1, float* acc) {
  const __m512 table = make_lut512(w.qt);
  int64_t n = n0;
  const bool prefetch = gemv_prefetch();
  for (; n + 4 <= n1; n += 4) strided_rows512<4>(w, table, n, xp, acc + (n - n0), prefetch);
  for (; n < n1; n++) strided_rows512<1>(w, table, n, xp, acc + (n - n0), false);
}

#pragma GCC diagnostic pop

// GEMV rows [n0, n1) for weights whose rows are whole blocks.
NIBBLE_AVX2 void gemv_rows_avx2(const Weight4bit& w, const float* xf, int64_t n0, int64_t n1, float* acc) {
  Lut16 lut = make_lut(w.qt);
  for (int64_t n = n0; n < n1; n++) acc[n - n0] = row_dot_avx2(w, lut, n * w.K, xf);
}

// Dequantizes `count` weight elements starting at flat element `start` into dst (float32):
// the general path for rows that start mid-block or mid-byte.
void dequant_span(const Weight4bit& w, int64_t start, int64_t count, float* dst) {
  for (int64_t j = 0; j < count; j++) {
    int64_t i = start + j;
    uint8_t byte = w.packed[i / 2];
    uint8_t code = (i & 1) ? fmt::unpack4_lo(byte) : fmt::unpack4_hi(byte);
    dst[j] = fmt::code4_value(code, w.qt) * weight_block_absmax(w, i / w.blocksize);
  }
}

// dequant_span for spans that start and end on 8-element boundaries (rows of whole blocks):
// the same values (code * absmax, float32 product) through the vector lookup.
NIBBLE_AVX2 void dequant_span_avx2(const Weight4bit& w, int64_t start, int64_t count, float* dst) {
  Lut16 lut = make_lut(w.qt);
  int64_t blk = -1;
  __m256 s = _mm256_setzero_ps();
  for (int64_t j = 0; j < count; j += 8) {
    int64_t i = start + j;
    if (i / w.blocksize != blk) {
      blk = i / w.blocksize;
      s = _mm256_set1_ps(weight_block_absmax(w, blk));
    }
    _mm256_storeu_ps(dst + j, _mm256_mul_ps(lookup8(lut, load_u32(w.packed + i / 2)), s));
  }
}

// (GCC 12 warns inside its own avx512fintrin.h, in _mm512_reduce_add_ps: a false positive.)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
// AVX-512 versions of the two GEMM helpers below (same values: code * absmax as one float32
// product; the dot products in another order): 16 codes a step, the byte's high nibble first,
// looked up with one vpermps; four 16-wide dot products sharing the x loads.
NIBBLE_AVX512 void dequant_span_avx512(const Weight4bit& w, int64_t start, int64_t count, float* dst) {
  const __m512 table = make_lut512(w.qt);
  const __m128i low = _mm_set1_epi8(0x0f);
  int64_t j = 0;
  for (; j + 16 <= count; j += 16) {
    const int64_t i = start + j;
    const __m128i b = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(w.packed + i / 2));
    const __m128i hi = _mm_and_si128(_mm_srli_epi16(b, 4), low), lo = _mm_and_si128(b, low);
    const __m512i idx = _mm512_cvtepu8_epi32(_mm_unpacklo_epi8(hi, lo));
    // Spans start on 16-element boundaries inside rows of whole blocks (blocksizes >= 32): a
    // step never crosses a block.
    const __m512 s = _mm512_set1_ps(weight_block_absmax(w, i / w.blocksize));
    _mm512_storeu_ps(dst + j, _mm512_mul_ps(_mm512_permutexvar_ps(idx, table), s));
  }
  if (j < count) dequant_span_avx2(w, start + j, count - j, dst + j);
}

NIBBLE_AVX512 void dot4_avx512(const float* t, int64_t ld, const float* x, int64_t n, float* acc) {
  __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
  int64_t k = 0;
  for (; k + 16 <= n; k += 16) {
    const __m512 xv = _mm512_loadu_ps(x + k);
    a0 = _mm512_fmadd_ps(_mm512_loadu_ps(t + k), xv, a0);
    a1 = _mm512_fmadd_ps(_mm512_loadu_ps(t + ld + k), xv, a1);
    a2 = _mm512_fmadd_ps(_mm512_loadu_ps(t + 2 * ld + k), xv, a2);
    a3 = _mm512_fmadd_ps(_mm512_loadu_ps(t + 3 * ld + k), xv, a3);
  }
  float r[4] = {_mm512_reduce_add_ps(a0), _mm512_reduce_add_ps(a1), _mm512_reduce_add_ps(a2), _mm512_reduce_add_ps(a3)};
  for (; k < n; k++)
    for (int j = 0; j < 4; j++) r[j] += t[j * ld + k] * x[k];
  for (int j = 0; j < 4; j++) acc[j] += r[j];
}

#pragma GCC diagnostic pop

// Four dot products of tile rows with one x chunk, sharing the x loads.
NIBBLE_AVX2 void dot4_avx2(const float* t, int64_t ld, const float* x, int64_t n, float* acc) {
  __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
  int64_t k = 0;
  for (; k + 8 <= n; k += 8) {
    __m256 xv = _mm256_loadu_ps(x + k);
    a0 = _mm256_fmadd_ps(_mm256_loadu_ps(t + k), xv, a0);
    a1 = _mm256_fmadd_ps(_mm256_loadu_ps(t + ld + k), xv, a1);
    a2 = _mm256_fmadd_ps(_mm256_loadu_ps(t + 2 * ld + k), xv, a2);
    a3 = _mm256_fmadd_ps(_mm256_loadu_ps(t + 3 * ld + k), xv, a3);
  }
  float r[4] = {hsum256(a0), hsum256(a1), hsum256(a2), hsum256(a3)};
  for (; k < n; k++)
    for (int j = 0; j < 4; j++) r[j] += t[j * ld + k] * x[k];
  for (int j = 0; j < 4; j++) acc[j] += r[j];
}

float dot_scalar(const float* a, const float* b, int64_t n) {
  float s = 0;
  for (int64_t k = 0; k < n; k++) s += a[k] * b[k];
  return s;
}

}  // namespace

void quantize_4bit(const void* x, DType dt, int64_t n, int blocksize, QuantType qt, uint8_t* packed, float* absmax) {
  int64_t nb = fmt::num_blocks(n, blocksize);
  bool avx = use_avx2();
  parallel_for(nb, block_grain(blocksize), [&](int64_t b0, int64_t b1) {
    if (avx) {
      quantize_4bit_blocks_avx2(x, dt, n, blocksize, qt, packed, absmax, b0, b1);
      return;
    }
    // Whole blocks of the reference: blocks are independent and start on byte boundaries.
    for (int64_t b = b0; b < b1; b++) {
      int64_t begin = b * blocksize, cnt = std::min<int64_t>(n - begin, blocksize);
      const char* xb = static_cast<const char*>(x) + begin * dtype_size(dt);
      quantize_4bit_ref(xb, dt, cnt, blocksize, qt, packed + begin / 2, absmax + b);
    }
  });
}

void dequantize_4bit(const uint8_t* packed, const float* absmax, int64_t n, int blocksize, QuantType qt, void* out,
                     DType out_dt) {
  int64_t nb = fmt::num_blocks(n, blocksize);
  bool avx = use_avx2();
  parallel_for(nb, block_grain(blocksize), [&](int64_t b0, int64_t b1) {
    if (avx) {
      dequantize_4bit_blocks_avx2(packed, absmax, n, blocksize, qt, out, out_dt, b0, b1);
      return;
    }
    for (int64_t b = b0; b < b1; b++) {
      int64_t begin = b * blocksize, cnt = std::min<int64_t>(n - begin, blocksize);
      char* ob = static_cast<char*>(out) + begin * dtype_size(out_dt);
      dequantize_4bit_ref(packed + begin / 2, absmax + b, cnt, blocksize, qt, ob, out_dt);
    }
  });
}

void quantize_blockwise(const float* code, const void* x, DType dt, int64_t n, int blocksize, uint8_t* q,
                        float* absmax) {
  int64_t nb = fmt::num_blocks(n, blocksize);
  parallel_for(nb, block_grain(blocksize), [&](int64_t b0, int64_t b1) {
    int64_t begin = b0 * blocksize, end = std::min<int64_t>(n, b1 * blocksize);
    const char* xb = static_cast<const char*>(x) + begin * dtype_size(dt);
    quantize_blockwise_ref(code, xb, dt, end - begin, blocksize, q + begin, absmax + b0);
  });
}

void dequantize_blockwise(const float* code, const uint8_t* q, const float* absmax, int64_t n, int blocksize,
                          void* out, DType out_dt) {
  int64_t nb = fmt::num_blocks(n, blocksize);
  parallel_for(nb, block_grain(blocksize), [&](int64_t b0, int64_t b1) {
    int64_t begin = b0 * blocksize, end = std::min<int64_t>(n, b1 * blocksize);
    char* ob = static_cast<char*>(out) + begin * dtype_size(out_dt);
    dequantize_blockwise_ref(code, q + begin, absmax + b0, end - begin, blocksize, ob, out_dt);
  });
}

void int8_vectorwise_quant(const void* x, DType dt, int64_t rows, int64_t cols, float threshold, int8_t* out,
                           float* row_stats, uint8_t* outlier_cols) {
  // Outlier columns need every row before any row can be quantized; split by columns first.
  if (threshold > 0.0f) {
    float th = dt == DType::F16 ? half_to_float(float_to_half(threshold)) : threshold;
    // A decode step quantizes one row: waking the pool would cost more than the scan.
    parallel_for(cols, std::max<int64_t>(256, 32768 / std::max<int64_t>(rows, 1)), [&](int64_t c0, int64_t c1) {
      for (int64_t c = c0; c < c1; c++) outlier_cols[c] = 0;
      for (int64_t r = 0; r < rows; r++)
        for (int64_t c = c0; c < c1; c++)
          if (std::fabs(load_as_float(x, dt, r * cols + c)) >= th) outlier_cols[c] = 1;
    });
    parallel_for(rows, std::max<int64_t>(1, 8192 / std::max<int64_t>(cols, 1)), [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; r++) {
        float m = 0.0f;
        for (int64_t c = 0; c < cols; c++) {
          float a = std::fabs(load_as_float(x, dt, r * cols + c));
          if (a < th) m = std::fmax(m, a);
        }
        row_stats[r] = m;
        float scale = 127.0f * rcp_approx(m);
        for (int64_t c = 0; c < cols; c++) {
          float v = load_as_float(x, dt, r * cols + c) * scale;
          out[r * cols + c] = (outlier_cols[c] || std::isnan(v)) ? 0 : (int8_t)std::nearbyint(v);
        }
      }
    });
    return;
  }
  if (outlier_cols) std::fill(outlier_cols, outlier_cols + cols, 0);
  parallel_for(rows, std::max<int64_t>(1, 8192 / std::max<int64_t>(cols, 1)), [&](int64_t r0, int64_t r1) {
    const char* xb = static_cast<const char*>(x) + r0 * cols * dtype_size(dt);
    int8_vectorwise_quant_ref(xb, dt, r1 - r0, cols, 0.0f, out + r0 * cols, row_stats + r0, nullptr);
  });
}

namespace {
NIBBLE_AVX2 int32_t dot_i8_avx2(const int8_t* a, const int8_t* b, int64_t K) {
  __m256i acc = _mm256_setzero_si256();
  int64_t k = 0;
  for (; k + 16 <= K; k += 16) {
    __m256i va = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i*)(a + k)));
    __m256i vb = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i*)(b + k)));
    acc = _mm256_add_epi32(acc, _mm256_madd_epi16(va, vb));
  }
  alignas(32) int32_t t[8];
  _mm256_store_si256((__m256i*)t, acc);
  int32_t s = 0;
  for (int j = 0; j < 8; j++) s += t[j];
  for (; k < K; k++) s += (int32_t)a[k] * (int32_t)b[k];
  return s;
}
}  // namespace

namespace {
// AVX-512 VNNI: vpdpbusd multiplies unsigned by signed bytes, four products a 32-bit lane, with
// no saturation. The activation row is offset to unsigned (a + 128, i.e. a ^ 0x80), and the
// 128 * sum(b) this adds is taken off with a second vpdpbusd of ones against the same weight
// bytes: exact for every int8 value, -128 included (the AVX2 kernels' maddubs sign trick
// would saturate there). Four weight rows share each activation load; tails are masked loads
// (zeros add nothing to either sum). with_sum: compute the rows' byte sums (into bsum) in the
// same pass; otherwise use the ones given. All four row pointers must be readable (the caller
// repeats the last row in a partial tile); only `rows` results are written.
// (GCC 12 warns inside its own avx512fintrin.h about the masked loads' pass-through operand.)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
template <bool kWithSum>
NIBBLE_AVX512VNNI inline void vnni_step4(__m512i (&acc)[4], __m512i (&sum)[4], __m512i a, const __m512i (&w)[4]) {
  const __m512i ones = _mm512_set1_epi8(1);
#pragma GCC unroll 4
  for (int r = 0; r < 4; r++) {
    acc[r] = _mm512_dpbusd_epi32(acc[r], a, w[r]);
    if (kWithSum) sum[r] = _mm512_dpbusd_epi32(sum[r], ones, w[r]);
  }
}

template <bool kWithSum>
NIBBLE_AVX512VNNI void dot4_i8_vnni(const uint8_t* au, const int8_t* const* b, int rows, int64_t next_rows, int64_t K,
                                    int32_t* bsum, int32_t* out) {
  __m512i acc[4], sum[4];
#pragma GCC unroll 4
  for (int r = 0; r < 4; r++) acc[r] = _mm512_setzero_si512(), sum[r] = _mm512_setzero_si512();
  // The next tile's rows (contiguous after these four) prefetched as fast as these are read:
  // four interleaved row streams leave the hardware prefetcher behind.
  const int8_t* next = b[0] + 4 * K;
  const int64_t next_bytes = next_rows * K;
  int64_t pf = 0;
  int64_t k = 0;
  for (; k + 64 <= K; k += 64) {
    for (int l = 0; l < 4 && pf < next_bytes; l++, pf += 64) _mm_prefetch((const char*)next + pf, _MM_HINT_T0);
    const __m512i w[4] = {_mm512_loadu_si512(b[0] + k), _mm512_loadu_si512(b[1] + k), _mm512_loadu_si512(b[2] + k),
                          _mm512_loadu_si512(b[3] + k)};
    vnni_step4<kWithSum>(acc, sum, _mm512_loadu_si512(au + k), w);
  }
  if (k < K) {
    const __mmask64 m = ((__mmask64)1 << (K - k)) - 1;
    const __m512i w[4] = {_mm512_maskz_loadu_epi8(m, b[0] + k), _mm512_maskz_loadu_epi8(m, b[1] + k),
                          _mm512_maskz_loadu_epi8(m, b[2] + k), _mm512_maskz_loadu_epi8(m, b[3] + k)};
    vnni_step4<kWithSum>(acc, sum, _mm512_maskz_loadu_epi8(m, au + k), w);
  }
  for (int r = 0; r < rows; r++) {
    if (kWithSum) bsum[r] = _mm512_reduce_add_epi32(sum[r]);
    // Modular int32 arithmetic, as the reference's sum: exact whenever that is.
    out[r] = (int32_t)((uint32_t)_mm512_reduce_add_epi32(acc[r]) - 128u * (uint32_t)bsum[r]);
  }
}
#pragma GCC diagnostic pop

void int8_linear_matmul_vnni(const int8_t* A, const int8_t* B, int64_t M, int64_t N, int64_t K, int32_t* C) {
  std::vector<uint8_t> au((size_t)(M * K));
  for (int64_t i = 0; i < M * K; i++) au[i] = (uint8_t)A[i] ^ 0x80u;
  // Tiles of 4 weight rows x all activation rows: the rows' byte sums come with the first
  // activation row, and the 4 rows stay in L1 for the others.
  parallel_for((N + 3) / 4, 1, [&](int64_t t0, int64_t t1) {
    for (int64_t n0 = t0 * 4; n0 < std::min(N, t1 * 4); n0 += 4) {
      const int rows = (int)std::min<int64_t>(4, N - n0);
      const int8_t* b[4];
      for (int r = 0; r < 4; r++) b[r] = B + std::min(n0 + r, N - 1) * K;
      int32_t bsum[4], out[4];
      for (int64_t m = 0; m < M; m++) {
        const int64_t next_rows = m == 0 ? std::max<int64_t>(0, std::min<int64_t>(4, N - n0 - 4)) : 0;
        if (m == 0) dot4_i8_vnni<true>(au.data(), b, rows, next_rows, K, bsum, out);
        else dot4_i8_vnni<false>(au.data() + m * K, b, rows, 0, K, bsum, out);
        for (int r = 0; r < rows; r++) C[m * N + n0 + r] = out[r];
      }
    }
  });
}
}  // namespace

void int8_linear_matmul(const int8_t* A, const int8_t* B, int64_t M, int64_t N, int64_t K, int32_t* C) {
  // On the 2-core AVX-512 host, alternated with NIBBLE_SIMD=avx2: GPT-2 124M int8 prefill
  // 409-466 -> 705-827 tokens/s; decode over six alternations 94-117 (mean 106) -> 94-134
  // (mean 118), a noisy host. Without the next tile's prefetch one row ran slower than the
  // AVX2 kernel (92-104 vs 115-120).
  const Features& f = features();
  if (f.avx512vnni && f.avx512bw && K > 0) return int8_linear_matmul_vnni(A, B, M, N, K, C);
  bool avx = use_avx2();
  // Tiles of 4 weight rows x all activation rows keep the weight rows in L1 while reused.
  parallel_for((N + 3) / 4, 1, [&](int64_t t0, int64_t t1) {
    for (int64_t n0 = t0 * 4; n0 < std::min(N, t1 * 4); n0 += 4)
      for (int64_t m = 0; m < M; m++)
        for (int64_t n = n0; n < std::min(N, n0 + 4); n++) {
          if (avx) {
            C[m * N + n] = dot_i8_avx2(A + m * K, B + n * K, K);
          } else {
            int32_t acc = 0;
            for (int64_t k = 0; k < K; k++) acc += (int32_t)A[m * K + k] * (int32_t)B[n * K + k];
            C[m * N + n] = acc;
          }
        }
  });
}

namespace {
// One row of int8_mm_dequant_ref with the same float32 operations in the same order (the fma
// is fused in both), eight columns at a time; F16C rounds to nearest even like float_to_half.
// Lanes holding a NaN take the scalar path so NaNs stay canonical.
NIBBLE_AVX2 void mm_dequant_row_avx2(const int32_t* C, float rs, const float* cs, const uint16_t* bias, int64_t N,
                                     uint16_t* out) {
  const __m256 vrs = _mm256_set1_ps(rs), scale = _mm256_set1_ps(fmt::kMmDequantScale);
  int64_t n = 0;
  for (; n + 8 <= N; n += 8) {
    __m256 p = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(C + n))), vrs);
    p = _mm256_mul_ps(p, _mm256_loadu_ps(cs + n));
    __m256 b = bias ? _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(bias + n))) : _mm256_setzero_ps();
    __m256 r = _mm256_fmadd_ps(p, scale, b);
    if (_mm256_movemask_ps(_mm256_cmp_ps(r, r, _CMP_UNORD_Q))) {
      int8_mm_dequant_ref(C + n, &rs, cs + n, bias ? bias + n : nullptr, 1, 8, out + n);
      continue;
    }
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + n), _mm256_cvtps_ph(r, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  }
  if (n < N) int8_mm_dequant_ref(C + n, &rs, cs + n, bias ? bias + n : nullptr, 1, N - n, out + n);
}
}  // namespace

void int8_mm_dequant(const int32_t* C, const float* row_stats, const float* col_stats, const uint16_t* bias,
                     int64_t M, int64_t N, uint16_t* out) {
  const bool avx = use_avx2();
  parallel_for(M, std::max<int64_t>(1, 16384 / std::max<int64_t>(N, 1)), [&](int64_t m0, int64_t m1) {
    if (!avx) return int8_mm_dequant_ref(C + m0 * N, row_stats + m0, col_stats, bias, m1 - m0, N, out + m0 * N);
    for (int64_t m = m0; m < m1; m++) mm_dequant_row_avx2(C + m * N, row_stats[m], col_stats, bias, N, out + m * N);
  });
}

void matmul_4bit(const void* x, DType x_dt, int64_t M, const Weight4bit& w, const void* bias, void* out) {
  const int64_t N = w.N, K = w.K;
  bool avx = use_avx2();
  // x as float32 once: it is reused by every weight row.
  std::vector<float> xf((size_t)(M * K));
  for (int64_t i = 0; i < M * K; i++) xf[i] = load_as_float(x, x_dt, i);
  const bool aligned = K % w.blocksize == 0;
  auto finish = [&](int64_t m, int64_t n, float acc) {
    if (bias) acc += load_as_float(bias, x_dt, n);
    store_from_float(out, x_dt, m * N + n, acc);
  };
  if (M == 1) {
    // GEMV: one pass over the packed weight, each row decoded straight into an FMA.
    const bool strided = avx && aligned && w.blocksize % 64 == 0;
    const bool strided512 = strided && use_avx512() && K % 128 == 0;
    std::vector<float> xp;
    if (strided512) {
      xp.resize((size_t)K);
      permute_x128(xf.data(), K, xp.data());
    } else if (strided) {
      xp.resize((size_t)K);
      permute_x64(xf.data(), K, xp.data());
    }
    parallel_for(N, 16, [&](int64_t n0, int64_t n1) {
      std::vector<float> row, acc((size_t)(n1 - n0));
      if (strided512) {
        gemv_rows_strided_avx512(w, xp.data(), n0, n1, acc.data());
      } else if (strided) {
        gemv_rows_strided_avx2(w, xp.data(), n0, n1, acc.data());
      } else if (avx && aligned) {
        gemv_rows_avx2(w, xf.data(), n0, n1, acc.data());
      } else {
        row.resize((size_t)K);
        for (int64_t n = n0; n < n1; n++) {
          dequant_span(w, n * K, K, row.data());
          acc[n - n0] = avx ? dot_avx2(row.data(), xf.data(), K) : dot_scalar(row.data(), xf.data(), K);
        }
      }
      for (int64_t n = n0; n < n1; n++) finish(0, n, acc[n - n0]);
    });
    return;
  }
  // GEMM: decode a tile of 4 weight rows x 512 inputs into an L1-resident buffer, then use it
  // for every activation row; partial sums live in acc until the row tile is done.
  const bool avx512 = avx && use_avx512() && K % 16 == 0;
  constexpr int64_t kRows = 4, kChunk = 512;
  const bool prefetch = avx && gemv_prefetch();
  parallel_for((N + kRows - 1) / kRows, 1, [&](int64_t t0, int64_t t1) {
    std::vector<float> tile((size_t)(kRows * kChunk));
    std::vector<float> acc((size_t)(M * kRows));
    for (int64_t t = t0; t < t1; t++) {
      int64_t n0 = t * kRows, nr = std::min(kRows, N - n0);
      std::fill(acc.begin(), acc.end(), 0.0f);
      for (int64_t k0 = 0; k0 < K; k0 += kChunk) {
        int64_t kc = std::min(kChunk, K - k0);
        for (int64_t j = 0; j < nr; j++) {
          // The next row tile's lines of this chunk into the L2 (see gemv_prefetch).
          if (prefetch && n0 + kRows + j < N) {
            const uint8_t* q = w.packed + ((n0 + kRows + j) * K + k0) / 2;
            for (int64_t o = 0; o < kc / 2; o += 64) _mm_prefetch((const char*)(q + o), _MM_HINT_T1);
          }
          // K % blocksize == 0 makes every row and chunk start on an 8-element boundary.
          if (avx512 && aligned)
            dequant_span_avx512(w, (n0 + j) * K + k0, kc, tile.data() + j * kChunk);
          else if (avx && aligned)
            dequant_span_avx2(w, (n0 + j) * K + k0, kc, tile.data() + j * kChunk);
          else
            dequant_span(w, (n0 + j) * K + k0, kc, tile.data() + j * kChunk);
        }
        for (int64_t m = 0; m < M; m++) {
          if (avx && nr == kRows) {
            (avx512 ? dot4_avx512 : dot4_avx2)(tile.data(), kChunk, xf.data() + m * K + k0, kc, &acc[m * kRows]);
            continue;
          }
          for (int64_t j = 0; j < nr; j++)
            acc[m * kRows + j] += avx ? dot_avx2(tile.data() + j * kChunk, xf.data() + m * K + k0, kc)
                                      : dot_scalar(tile.data() + j * kChunk, xf.data() + m * K + k0, kc);
        }
      }
      for (int64_t m = 0; m < M; m++)
        for (int64_t j = 0; j < nr; j++) finish(m, n0 + j, acc[m * kRows + j]);
    }
  });
}

void int8_linear(const void* x, DType x_dt, int64_t M, int64_t K, const int8_t* CB, const float* SCB,
                 const uint16_t* bias, int64_t N, float threshold, uint16_t* out) {
  std::vector<int8_t> CA((size_t)(M * K));
  std::vector<float> SCA((size_t)M);
  std::vector<uint8_t> mask((size_t)K, 0);
  std::vector<int32_t> C((size_t)(M * N));
  int8_vectorwise_quant(x, x_dt, M, K, threshold, CA.data(), SCA.data(), mask.data());
  int8_linear_matmul(CA.data(), CB, M, N, K, C.data());
  int8_mm_dequant(C.data(), SCA.data(), SCB, bias, M, N, out);
  if (threshold > 0.0f) int8_outlier_matmul_add(out, x, x_dt, mask.data(), CB, SCB, M, N, K);
}

}  // namespace cpu
}  // namespace nibble
