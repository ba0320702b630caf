// Device helpers shared by the GPT-2 kernel files: element loads of any float dtype as
// float32, warp/block reductions, and the launch prologue (device + stream).
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <string>

#include "cuda/cuda_check.h"
#include "cuda/gpt2_cuda.h"

namespace nibble {
namespace cuda {
int sm_count();  // multiprocessors of the current device, cached per device (quant_blockwise.cu)
int smem_optin_bytes();  // the most shared memory a block may opt in to on the current device (cached)
}  // namespace cuda

namespace gpt2_cuda {

// Selects the device and returns its compute stream; every public entry point starts here.
inline cudaStream_t begin(int device) {
  NIBBLE_CUDA_CHECK(cudaSetDevice(device), "cudaSetDevice(cuda:" + std::to_string(device) + ")");
  return stream(device);
}

template <typename T>
__device__ __forceinline__ float to_f32(T v);
template <>
__device__ __forceinline__ float to_f32<float>(float v) { return v; }
template <>
__device__ __forceinline__ float to_f32<__half>(__half v) { return __half2float(v); }
template <>
__device__ __forceinline__ float to_f32<__nv_bfloat16>(__nv_bfloat16 v) { return __bfloat162float(v); }

// An element of a float32/float16/bfloat16 array whose dtype is known only at run time
// (biases and norm parameters of the plan's model dtype).
__device__ __forceinline__ float load_f32(const void* p, DType dt, int64_t i) {
  if (dt == DType::F16) return __half2float(static_cast<const __half*>(p)[i]);
  if (dt == DType::BF16) return __bfloat162float(static_cast<const __nv_bfloat16*>(p)[i]);
  return static_cast<const float*>(p)[i];
}
// The same element split in two: its bits, loaded early, and their conversion where the value
// is used. A GEMV's epilogue inputs (the bias) are requested before its main loop; loaded and
// converted in one step, the conversion would stall the warp there for the whole load latency.
__device__ __forceinline__ uint32_t load_bits(const void* p, DType dt, int64_t i) {
  if (dt == DType::F16 || dt == DType::BF16) return static_cast<const uint16_t*>(p)[i];
  return __float_as_uint(static_cast<const float*>(p)[i]);
}
__device__ __forceinline__ float bits_f32(uint32_t bits, DType dt) {
  if (dt == DType::F16) return __half2float(__ushort_as_half((unsigned short)bits));
  if (dt == DType::BF16) return __uint_as_float(bits << 16);
  return __uint_as_float(bits);
}
// v rounded to float16 and back (Linear8bitLt computes in float16).
__device__ __forceinline__ float round_to_half(float v) { return __half2float(__float2half_rn(v)); }

// gelu_new (GPT-2's tanh approximation), the CPU reference's formula.
__device__ __forceinline__ float gelu_new_f(float v) {
  return 0.5f * v * (1.0f + tanhf(0.7978845608028654f * (v + 0.044715f * v * v * v)));
}
// The linear epilogues (kEpilogue*): store v, gelu_new(v), or add v into *p (the residual).
__device__ __forceinline__ void store_epilogue(int epi, float* p, float v) {
  if (epi == kEpilogueGelu) *p = gelu_new_f(v);
  else if (epi == kEpilogueAccumulate) *p += v;
  else *p = v;
}

__device__ __forceinline__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ float warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Block-wide reductions over blockDim.x (a multiple of 32, at most 1024); `scratch` holds 32
// floats. Every thread gets the result. The leading barrier lets callers reuse `scratch`.
__device__ __forceinline__ float block_sum(float v, float* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
  v = warp_sum(v);
  __syncthreads();
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  v = lane < nwarps ? scratch[lane] : 0.f;
  return warp_sum(v);
}
__device__ __forceinline__ float block_max(float v, float* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
  v = warp_max(v);
  __syncthreads();
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  v = lane < nwarps ? scratch[lane] : -INFINITY;
  return warp_max(v);
}

// Mean and 1/sqrt(variance + eps) of a row of C floats read from memory, two passes as the
// CPU reference, thread t summing elements t, t + S, ... with S = sum_threads (blockDim.x by
// default): layernorm_kernel and the layernorm fused into the decode GEMVs get the same bits.
// A larger block (a multiple of 32, at most 1024) may pass S = 256, layernorm_kernel's size:
// its threads past S add nothing, so block_sum sees the same eight warp sums next to zeros
// where the 256-thread block has literal zeros, and the same bits come out. Every thread gets
// both results.
__device__ __forceinline__ void row_mean_rstd(const float* xr, int64_t C, float eps, float* scratch, float* mean,
                                              float* rstd, int sum_threads = 0) {
  const int S = sum_threads > 0 ? sum_threads : (int)blockDim.x;
  const bool summing = (int)threadIdx.x < S;
  float s = 0.f;
  if (summing)
    for (int64_t c = threadIdx.x; c < C; c += S) s += xr[c];
  const float mu = block_sum(s, scratch) / (float)C;
  float v = 0.f;
  if (summing)
    for (int64_t c = threadIdx.x; c < C; c += S) {
      float d = xr[c] - mu;
      v += d * d;
    }
  *mean = mu;
  *rstd = rsqrtf(block_sum(v, scratch) / (float)C + eps);
}

// A folded layernorm's mean and 1/std (LnFold in gpt2_cuda.h) from the sums of x and x^2 over
// the row's K columns, which the one-row GEMVs gather while they stage x: the variance as
// E[x^2] - mean^2, which loses bits only when |mean| >> std (a residual stream entering a
// layernorm is not such a row; the native tests' rows have mean = std / 2, and 1e5 scales).
// linear_fold_kernel and the 4-bit decode GEMV both call it: one formula, the same bits.
__device__ __forceinline__ void fold_mean_rstd(float s1, float s2, int64_t K, float eps, float* mean, float* rstd) {
  const float m = s1 / (float)K;
  *mean = m;
  *rstd = rsqrtf(fmaxf(s2 / (float)K - m * m, 0.f) + eps);
}

inline unsigned blocks_for(int64_t n, int threads) { return (unsigned)((n + threads - 1) / threads); }

}  // namespace gpt2_cuda
}  // namespace nibble
