// CPU quantization kernels: the `_ref` functions are the specification (plain loops, one
// thread), the unsuffixed ones are the fast paths (AVX2/FMA chosen at run time, threaded)
// and must produce the same bytes. CUDA mirrors these signatures in native/cuda/quant_cuda.h.
// All pointers are dense, row-major, non-overlapping; callers (the bindings) have already
// validated sizes, dtypes and blocksizes. Floating-point inputs are float32/float16/bfloat16
// (nibble::DType) and are converted to float32 exactly before any arithmetic.
#pragma once
#include <cstdint>

#include "core/dtype.h"
#include "formats.h"

namespace nibble {
namespace cpu {

using fmt::QuantType;

// ---- 4-bit (NF4 / FP4) --------------------------------------------------------------
// quantize_4bit: n elements of x in blocks of `blocksize` (power of two, 32..4096); the
// last block may be partial. For each block b:
//   absmax[b] = max over the block of |x| (float32 fmaxf from -FLT_MAX, so NaN is ignored;
//               a block of only NaN keeps -FLT_MAX),
//   inv = 1.0f / absmax[b] (correctly rounded float32 division),
//   code(x) = fmt::quantize_4bit_value(x * inv, qt)   (float32 product, no FMA).
// An all-zero block has absmax 0, inv = +Inf, x*inv = NaN, so every code is 0 (NF4 -1.0,
// dequantizing to -0.0; FP4 +0). An Inf input makes absmax Inf: the Inf itself becomes
// NaN -> code 0 and the rest of its block 0 -> NF4 7 / FP4 0. Codes are packed per
// fmt::Packed4 into packed[(n+1)/2]; for odd n the final low nibble is the code of a zero.
void quantize_4bit_ref(const void* x, DType dt, int64_t n, int blocksize, QuantType qt, uint8_t* packed,
                       float* absmax);
void quantize_4bit(const void* x, DType dt, int64_t n, int blocksize, QuantType qt, uint8_t* packed,
                   float* absmax);

// dequantize_4bit: out[i] = code4_value(code_i) * absmax[i / blocksize], float32 product,
// then rounded to out_dt (float16/bfloat16 round-to-nearest-even). n elements.
void dequantize_4bit_ref(const uint8_t* packed, const float* absmax, int64_t n, int blocksize, QuantType qt,
                         void* out, DType out_dt);
void dequantize_4bit(const uint8_t* packed, const float* absmax, int64_t n, int blocksize, QuantType qt,
                     void* out, DType out_dt);

// Double quantization ("compress statistics") of the float32 absmax vector:
//   offset = absmax_mean(absmax) — torch's CUDA mean, whose rounding decides nested codes
//            bit-for-bit (a correctly rounded mean differs by 1 ulp on bnb's fixtures and
//            then changes qabsmax/nested_absmax),
//   quantize_blockwise(signed dynamic map, absmax[i] - offset (float32), blocksize 256)
//   -> qabsmax[nblocks] uint8 and nested_absmax[ceil(nblocks/256)] float32.
// Returns offset.
// Mean in torch's CUDA reduction order (float32 throughout): element i is added to lane
// (i/4)%32, slot i%4, in index order; each lane sums slots ((s0+s1)+s2)+s3; lanes fold in
// halves (lane l += lane l+16, then +8, +4, +2, +1); result = lane0 * float32(1/n) with
// 1/n rounded from double. Matches bitsandbytes' offsets on every fixture.
float absmax_mean(const float* absmax, int64_t nblocks);
float compress_absmax(const float* absmax, int64_t nblocks, uint8_t* qabsmax, float* nested_absmax);
// Inverse: absmax[i] = code[q[i]] * nested_absmax[i/256] + offset, as two float32 operations
// (product rounded, then sum rounded), exactly as bitsandbytes' dequantize_blockwise + add.
void decompress_absmax(const uint8_t* qabsmax, const float* nested_absmax, const float* nested_code, float offset,
                       int64_t nblocks, float* absmax);

// ---- 8-bit blockwise (dynamic map) ----------------------------------------------------
// quantize_blockwise: absmax as for 4-bit (blocksize 64..4096, partial last block),
// q[i] = fmt::quantize_dynamic_value(code, x[i] * (1.0f/absmax[b])). code is 256 ascending
// float32 values (normally the signed dynamic map). All-zero block or NaN input: x*inv is
// NaN, every comparison is false and the search ends at index 0 (as in bitsandbytes);
// dequantization of a zero block yields code[0] * 0 = -0.
void quantize_blockwise_ref(const float* code, const void* x, DType dt, int64_t n, int blocksize, uint8_t* q,
                            float* absmax);
void quantize_blockwise(const float* code, const void* x, DType dt, int64_t n, int blocksize, uint8_t* q,
                        float* absmax);
// dequantize_blockwise: out[i] = code[q[i]] * absmax[i / blocksize] (float32), rounded to out_dt.
void dequantize_blockwise_ref(const float* code, const uint8_t* q, const float* absmax, int64_t n, int blocksize,
                              void* out, DType out_dt);
void dequantize_blockwise(const float* code, const uint8_t* q, const float* absmax, int64_t n, int blocksize,
                          void* out, DType out_dt);

// ---- LLM.int8() -------------------------------------------------------------------------
// int8_vectorwise_quant over x[rows, cols]:
//   threshold == 0: row_stats[r] = max_c |x[r,c]|; no outliers.
//   threshold  > 0: an element is an outlier when |x| >= threshold; its column is an
//                   outlier column (outlier_cols[c] = 1, else 0). row_stats[r] = max of |x|
//                   over the row's non-outlier elements (0 if none).
//   scale = 127 * rcp(row_stats[r]) where rcp emulates CUDA's __fdividef reciprocal
//   (nibble_rcp_approx below); out[r,c] = round-half-even(x * scale) as int8, and 0 in
//   every outlier column (all rows). A zero row gives 0 * Inf = NaN -> 0.
// NaN inputs: ignored by the max, quantized to 0. Inf: an outlier when threshold > 0,
// otherwise row_stats = Inf and the whole row quantizes to 0 (Inf * 0 = NaN -> 0).
void int8_vectorwise_quant_ref(const void* x, DType dt, int64_t rows, int64_t cols, float threshold, int8_t* out,
                               float* row_stats, uint8_t* outlier_cols);
void int8_vectorwise_quant(const void* x, DType dt, int64_t rows, int64_t cols, float threshold, int8_t* out,
                           float* row_stats, uint8_t* outlier_cols);
// 1/x rounded to float32 the way sm_90's MUFU.RCP behind __fdividef does on the cases we
// can observe: the exact reciprocal biased up by 0.14 ulp, then rounded to nearest. This
// reproduces bitsandbytes' int8 codes bit-for-bit on its reference data, including the
// x = absmax/2 ties that a correctly rounded 127/absmax gets wrong.
float rcp_approx(float x);

// int8_linear_matmul: C[m, n] = sum_k A[m, k] * B[n, k] (A @ B^T), exact int32.
void int8_linear_matmul_ref(const int8_t* A, const int8_t* B, int64_t M, int64_t N, int64_t K, int32_t* C);
void int8_linear_matmul(const int8_t* A, const int8_t* B, int64_t M, int64_t N, int64_t K, int32_t* C);

// int8_mm_dequant: out[m, n] = fp16( fmaf((float)C[m,n] * row_stats[m] * col_stats[n],
//   fmt::kMmDequantScale, bias ? bias[n] : 0) ), the two products rounded left to right,
// one fused multiply-add, one round-to-nearest-even to float16. bias is float16 or null.
void int8_mm_dequant_ref(const int32_t* C, const float* row_stats, const float* col_stats, const uint16_t* bias,
                         int64_t M, int64_t N, uint16_t* out);
void int8_mm_dequant(const int32_t* C, const float* row_stats, const float* col_stats, const uint16_t* bias,
                     int64_t M, int64_t N, uint16_t* out);

// int8_outlier_matmul_add: the 16-bit half of LLM.int8()'s mixed decomposition, added into
// the float16 output of int8_mm_dequant. For the outlier columns c (col_mask[c] != 0):
//   out[m, n] = fp16(out[m, n] + sum_c fp16(x[m, c]) * fp16(CB[n, c] * SCB[n] / 127)),
// summed in float32 in column order (bitsandbytes: subA @ subB in float16, float32
// accumulation). An empty mask leaves out unchanged.
void int8_outlier_matmul_add(uint16_t* out, const void* x, DType x_dt, const uint8_t* col_mask, const int8_t* CB,
                             const float* SCB, int64_t M, int64_t N, int64_t K);

// Linear8bitLt's forward on the CPU: int8_vectorwise_quant (outlier mask), int8_linear_matmul,
// int8_mm_dequant (float16 bias or null) and, with a threshold, int8_outlier_matmul_add, into
// the float16 out [M, N]. The int8LinearCpu binding and the whole-forward CPU plan both run it.
void int8_linear(const void* x, DType x_dt, int64_t M, int64_t K, const int8_t* CB, const float* SCB,
                 const uint16_t* bias, int64_t N, float threshold, uint16_t* out);

// ---- dequant-fused 4-bit matmul ---------------------------------------------------------
// A 4-bit weight W[N, K] (Linear orientation: N outputs, K inputs), quantized as a flat
// array of N*K elements in bnb format. Either absmax (float32 per block) is given, or the
// double-quantized state (qabsmax + nested_absmax + nested_code + offset), which kernels
// decode block by block (decompress_absmax arithmetic) without materialising it.
struct Weight4bit {
  const uint8_t* packed = nullptr;       // [(N*K+1)/2]
  const float* absmax = nullptr;         // [nblocks] or null when qabsmax is used
  const uint8_t* qabsmax = nullptr;      // [nblocks] double-quantized absmax
  const float* nested_absmax = nullptr;  // [ceil(nblocks/256)]
  const float* nested_code = nullptr;    // [256]
  float offset = 0.0f;
  int blocksize = 64;
  QuantType qt = QuantType::NF4;
  int64_t N = 0, K = 0;
};
// Block absmax b of a Weight4bit, decoded exactly as decompress_absmax would.
inline float weight_block_absmax(const Weight4bit& w, int64_t b) {
  if (w.absmax) return w.absmax[b];
  float v = w.nested_code[w.qabsmax[b]] * w.nested_absmax[(uint64_t)b / fmt::kNestedBlocksize];  // b >= 0: a shift
  return v + w.offset;
}

// matmul_4bit: out[m, n] = sum_k x[m, k] * Wdq[n, k] + bias[n], where Wdq[n,k] is the
// float32 dequantized weight (code value * block absmax, float32 product) and x is read as
// float32 from x_dt. Reference accumulates in double per output and rounds once; fast paths
// accumulate in float32 (tolerance, not bits: rel L2 <= 1e-5 for K <= 16384). bias has
// x_dt or is null; out has x_dt (float16/bfloat16 rounded once at the end). The dequantized
// weight is never written to memory; M == 1 runs a GEMV that streams the packed bytes once.
void matmul_4bit_ref(const void* x, DType x_dt, int64_t M, const Weight4bit& w, const void* bias, void* out);
void matmul_4bit(const void* x, DType x_dt, int64_t M, const Weight4bit& w, const void* bias, void* out);

}  // namespace cpu
}  // namespace nibble
