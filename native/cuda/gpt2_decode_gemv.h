// Decode-step GEMVs for the GPT-2 plan's quantized layers (gpt2_decode_gemv.cu): float32
// activations, M <= kDecodeGemvMaxRows rows, the plan's epilogues fused. Each returns false,
// launching nothing, when the layer or the operands do not suit it (the caller then takes
// the general path).
#pragma once
#include <cstdint>

#include "cuda/gpt2_cuda.h"

namespace nibble {
namespace gpt2_cuda {

constexpr int64_t kDecodeGemvMaxRows = 16;  // 4-bit; int8 takes at most 4 rows

// One-row GEMVs whose grid would have fewer blocks an SM than this split their rows over more
// warps (small_m_ks, launch_m). NIBBLE_CUDA_GEMV_SPLIT=n sets it (0: never split); default 4.
int gemv_split_blocks();

// A layernorm applied to x first (its output feeds only this layer), fused into the kernel.
// With fold_u set, the one-row 4-bit GEMV folds it instead (LnFold in gpt2_cuda.h): it stages
// x * w, and the bias it is given must be the fold's v (float32).
struct DecodeNorm {
  const void *w, *b;
  DType dt;
  float eps;
  const float* fold_u = nullptr;
};

// 4-bit layer with float32 compute: out = epilogue(x . dequant(W)^T + bias).
bool decode_gemv_4bit(const QLinear& L, DType bias_dt, int epilogue, float* out, const float* x, int64_t M,
                      const DecodeNorm* norm, cudaStream_t s);
// Whether decode_gemv_4bit folds a layernorm (DecodeNorm::fold_u) into this layer at one
// row, as far as the layer's shape tells (x and the layernorm weight are checked at launch):
// ln_fold_build makes fold vectors for such layers only.
bool decode_gemv_4bit_can_fold(const QLinear& L);
// The same for 2..16 rows on the tensor cores (gpt2_decode_mma.cu); decode_gemv_4bit tries it
// first. NIBBLE_CUDA_MMA_DECODE=0 turns it off (A/B measurements).
bool decode_mma_4bit(const QLinear& L, DType bias_dt, int epilogue, float* out, const float* x, int64_t M,
                     const DecodeNorm* norm, cudaStream_t s);
// A float16/bfloat16 weight [N, K] (bias of the same dtype or null), 2..16 rows, tensor cores.
bool decode_mma_16bit(const void* w, const void* bias, DType wdt, int epilogue, float* out, const float* x, int64_t M,
                      int64_t K, int64_t N, const DecodeNorm* norm, cudaStream_t s);
// The same from activations quantized by a preparation kernel (gpt2_qlinear.cu): xq [M, K]
// int8 with the outlier columns zeroed, rs [M] the row absmax, xn [M, K] the float32 rows
// the outlier columns are read from (only those columns are written), list = count then the
// outlier columns ascending.
bool decode_gemv_int8_prequant(const QLinear& L, DType bias_dt, int epilogue, float* out, const int8_t* xq,
                               const float* rs, const float* xn, const int32_t* list, int64_t M, cudaStream_t s);
// LLM.int8() layer: the activation quantization, int8 product, dequantization and outlier
// product of Linear8bitLt.forward in one kernel.
bool decode_gemv_int8(const QLinear& L, DType bias_dt, int epilogue, float* out, const float* x, int64_t M,
                      const DecodeNorm* norm, cudaStream_t s);

// A plain layer's one-row GEMV behind a folded layernorm (LnFold): out = epilogue(rstd * (W .
// (x * ln_w) - mean * u) + v), ln_w of the weight's dtype. False (nothing launched) when the
// operands do not suit it (M != 1, K > 2048 or not a multiple of 8, unaligned pointers).
bool linear_fold(int epilogue, float* out, const float* x, const void* w, DType wdt, int64_t M, int64_t K, int64_t N,
                 const void* ln_w, float eps, const LnFold& fold, int device);
// Whether linear_fold takes a [N, K] weight of this dtype (pointers aside): what ln_fold_build
// makes fold vectors for.
bool linear_fold_can_take(int64_t K, int64_t N, DType wdt);

}  // namespace gpt2_cuda
}  // namespace nibble
