// CUDA kernels for the GPT-2 forward pass: the same contracts as native/cpu/gpt2_ops.h (read
// that file for the arithmetic), with every pointer in device memory of `device`. Work is
// queued on the device's compute stream (stream(device)) and returns at once; the stream is
// created blocking, so the legacy-stream copies in cuda_api (reads, writes, toDevice) are
// ordered after it. Launch and configuration errors throw std::runtime_error naming the op;
// built without nvcc, every function throws "built without CUDA" (gpt2_cuda_stub.cc).
#pragma once
#include <cstddef>
#include <cstdint>

#include "core/dtype.h"

typedef struct CUstream_st* cudaStream_t;

namespace nibble {
namespace gpt2_cuda {

// The stream GPT-2 kernels run on for `device` (created on first use). Quantized linears
// should queue their kernels here too.
cudaStream_t stream(int device);
// Waits for all work queued on every device this process has used; throws the first
// asynchronous CUDA error.
void synchronize_all();
// cudaMemGetInfo for `device`.
void mem_info(int device, size_t* free_bytes, size_t* total_bytes);

// Activations are float32; parameters (tables, norm and Linear weights and biases) are
// float32, float16 or bfloat16 (pdt, shared by a pair), widened as they are read.
// out[t,:] = wte[ids[t],:] + wpe[pos[t],:]. Ids or positions outside [0,V) / [0,P) give a zero
// row (the JS layer validates them before they reach the GPU).
void embedding(float* out, const void* wte, const void* wpe, DType pdt, const int32_t* ids, const int32_t* pos,
               int64_t T, int64_t C, int64_t V, int64_t P, int device);
void layernorm(float* out, const float* x, const void* w, const void* b, DType pdt, int64_t rows, int64_t C,
               float eps, int device);
// out[M,N] = x[M,K] . w[N,K]^T + bias[N] (bias null or of w's dtype); float32 products and sums.
void linear(float* out, const float* x, const void* w, const void* bias, DType wdt, int64_t M, int64_t K,
            int64_t N, int device);
void gelu_new(float* out, const float* x, int64_t n, int device);
void add(float* out, const float* a, const float* b, int64_t n, int device);
void softmax(float* out, const float* x, int64_t rows, int64_t cols, int device);
void attention(float* out, const float* qkv, float* kc, float* vc, const int32_t* mask, int64_t B, int64_t T,
               int64_t past, int64_t Tmax, int64_t H, int64_t D, int device);

// Forces one linear kernel (tests): 1 = the small-M streaming kernel (M <= 16), 2 = the tiled one.
void linear_path(int path, float* out, const float* x, const void* w, const void* bias, DType wdt, int64_t M,
                 int64_t K, int64_t N, int device);

}  // namespace gpt2_cuda
}  // namespace nibble
