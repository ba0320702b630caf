// CPU kernels for the GPT-2 forward pass. Activations are float32; parameters (embedding
// tables, norm weights, Linear weights and biases) may be float32, float16 or bfloat16 and are
// widened as they are read. Each op has a plain `_ref` version
// (the specification: obvious loops, no threads) and a fast version (AVX2/FMA when the CPU
// has it, threaded over the pool). test/ and native/tests compare the two on random inputs.
#pragma once
#include <cstdint>

#include "core/dtype.h"

namespace nibble {
namespace cpu {

// out[t,:] = wte[ids[t],:] + wpe[pos[t],:]
void embedding_ref(float* out, const void* wte, const void* wpe, DType pdt, const int32_t* ids, const int32_t* pos,
                   int64_t T, int64_t C);
void embedding(float* out, const void* wte, const void* wpe, DType pdt, const int32_t* ids, const int32_t* pos,
               int64_t T, int64_t C);

// Row-wise LayerNorm over C with biased variance, as torch.nn.LayerNorm.
void layernorm_ref(float* out, const float* x, const void* w, const void* b, DType pdt, int64_t rows, int64_t C,
                   float eps);
void layernorm(float* out, const float* x, const void* w, const void* b, DType pdt, int64_t rows, int64_t C, float eps);

// out[M,N] = x[M,K] . w[N,K]^T + bias[N] (bias may be null; same dtype as w). Weight in
// Linear [out,in] layout; accumulation in float32.
void linear_ref(float* out, const float* x, const void* w, const void* bias, DType wdt, int64_t M, int64_t K,
                int64_t N);
void linear(float* out, const float* x, const void* w, const void* bias, DType wdt, int64_t M, int64_t K, int64_t N);

// gelu_new (tanh approximation), as GPT-2 / transformers' NewGELUActivation.
void gelu_new_ref(float* out, const float* x, int64_t n);
void gelu_new(float* out, const float* x, int64_t n);

void add_ref(float* out, const float* a, const float* b, int64_t n);
void add(float* out, const float* a, const float* b, int64_t n);

// Numerically stable row softmax.
void softmax_ref(float* out, const float* x, int64_t rows, int64_t cols);
void softmax(float* out, const float* x, int64_t rows, int64_t cols);

// Causal self-attention with a KV cache.
//   qkv   [B, T, 3C]  (C = H*D): the c_attn output for T new tokens per sequence
//   kc,vc [B, H, Tmax, D]: the cache; rows past..past+T-1 are written here first
//   mask  [B, past+T] int32 (1 = attend, 0 = padding) or null
//   out   [B, T, C]
// Query t (absolute position past+t) attends to keys 0..past+t that the mask allows. A query
// with no allowed key (a left-padding slot) outputs zeros.
void attention_ref(float* out, const float* qkv, float* kc, float* vc, const int32_t* mask, int64_t B, int64_t T,
                   int64_t past, int64_t Tmax, int64_t H, int64_t D);
void attention(float* out, const float* qkv, float* kc, float* vc, const int32_t* mask, int64_t B, int64_t T,
               int64_t past, int64_t Tmax, int64_t H, int64_t D);

}  // namespace cpu
}  // namespace nibble
