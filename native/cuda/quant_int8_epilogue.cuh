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

// Two horizontally adjacent dequantized results of row m, scales and bias already in hand; one
// vector store when both exist and the address allows it.
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

// Two horizontally adjacent results (n, n + 1): int32, or dequantized with the scales and bias
// read here (columns past N read nothing and store nothing).
__device__ __forceinline__ void store_pair(const Int8Epilogue& ep, int64_t m, int64_t n, int64_t N, int32_t v0, int32_t v1) {
  if (ep.C) {
    if (n + 1 < N && (N & 1) == 0) {
      *reinterpret_cast<int2*>(ep.C + m * N + n) = make_int2(v0, v1);
      return;
    }
    if (n < N) ep.C[m * N + n] = v0;
    if (n + 1 < N) ep.C[m * N + n + 1] = v1;
    return;
  }
  const bool has0 = n < N, has1 = n + 1 < N;
  store_dequant_pair(ep.out, m, n, N, __ldg(ep.rs + m), has0 ? __ldg(ep.cs + n) : 0.0f,
                     has1 ? __ldg(ep.cs + n + 1) : 0.0f, has0 ? bias_value(ep, n) : 0.0f,
                     has1 ? bias_value(ep, n + 1) : 0.0f, v0, v1);
}

}  // namespace cuda
}  // namespace nibble
