// The int8 GEMM kernels' output stage, shared by the mma.sync kernels (quant_int8.cu) and the
// Hopper wgmma kernel (sm90a/quant_int8_wgmma.cu): int32 results, or int8_mm_dequant fused
// (float16(fmaf(C * rs * cs, 1/127^2, bias)), the CPU reference's formula).
#pragma once
#include <cuda_fp16.h>

#include <cstdint>

#include "formats.h"

namespace nibble {
namespace cuda {

__device__ __forceinline__ __half mm_dequant_value(int32_t c, float rs, float cs, float bias) {
  const float p = __fmul_rn(__fmul_rn((float)c, rs), cs);
  return __float2half_rn(fmaf(p, fmt::kMmDequantScale, bias));
}

struct Int8Epilogue {
  int32_t* C = nullptr;  // int32 output, or
  __half* out = nullptr;  // fused dequant output (float16)
  const float* rs = nullptr;
  const float* cs = nullptr;
  const __half* bias = nullptr;
};

// The scales and bias are read through the read-only path (__ldg): with plain loads the
// compiler keeps each one behind the previous result's store (bias and out are both __half
// pointers), and a tile's output stage becomes a chain of dependent memory round trips.
__device__ __forceinline__ float bias_value(const Int8Epilogue& ep, int64_t n) {
  return ep.bias ? __half2float(__ldg(ep.bias + n)) : 0.0f;
}

__device__ __forceinline__ void store_result(const Int8Epilogue& ep, int64_t m, int64_t n, int64_t N, int32_t v) {
  if (ep.C) {
    ep.C[m * N + n] = v;
  } else {
    ep.out[m * N + n] = mm_dequant_value(v, __ldg(ep.rs + m), __ldg(ep.cs + n), bias_value(ep, n));
  }
}

// Two horizontally adjacent results (n, n + 1); one vector store when both exist and the
// address allows it.
__device__ __forceinline__ void store_pair(const Int8Epilogue& ep, int64_t m, int64_t n, int64_t N, int32_t v0, int32_t v1) {
  if (n + 1 < N && (N & 1) == 0) {
    if (ep.C) {
      *reinterpret_cast<int2*>(ep.C + m * N + n) = make_int2(v0, v1);
    } else {
      const float rs = __ldg(ep.rs + m);
      const __half a = mm_dequant_value(v0, rs, __ldg(ep.cs + n), bias_value(ep, n));
      const __half b = mm_dequant_value(v1, rs, __ldg(ep.cs + n + 1), bias_value(ep, n + 1));
      *reinterpret_cast<__half2*>(ep.out + m * N + n) = __halves2half2(a, b);
    }
    return;
  }
  if (n < N) store_result(ep, m, n, N, v0);
  if (n + 1 < N) store_result(ep, m, n + 1, N, v1);
}

// Two horizontally adjacent dequantized results of row m, scales and bias already in hand.
__device__ __forceinline__ void store_dequant_pair(__half* out, int64_t m, int64_t n, int64_t N, float rs, float cs0,
                                                   float cs1, float b0, float b1, int32_t v0, int32_t v1) {
  const __half a = mm_dequant_value(v0, rs, cs0, b0), b = mm_dequant_value(v1, rs, cs1, b1);
  if (n + 1 < N && (N & 1) == 0) {
    *reinterpret_cast<__half2*>(out + m * N + n) = __halves2half2(a, b);
    return;
  }
  if (n < N) out[m * N + n] = a;
  if (n + 1 < N) out[m * N + n + 1] = b;
}

}  // namespace cuda
}  // namespace nibble
