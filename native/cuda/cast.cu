#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <stdexcept>
#include <string>

#include "cuda/cast_cuda.h"
#include "cuda/cuda_check.h"
#include "cuda/gpt2_cuda.h"

namespace nibble {
namespace cuda_cast {

namespace {
template <typename T>
__device__ inline float load(const T* p, int64_t i);
template <>
__device__ inline float load<float>(const float* p, int64_t i) { return p[i]; }
template <>
__device__ inline float load<__half>(const __half* p, int64_t i) { return __half2float(p[i]); }
template <>
__device__ inline float load<__nv_bfloat16>(const __nv_bfloat16* p, int64_t i) { return __bfloat162float(p[i]); }

template <typename T>
__device__ inline void store(T* p, int64_t i, float v);
template <>
__device__ inline void store<float>(float* p, int64_t i, float v) { p[i] = v; }
template <>
__device__ inline void store<__half>(__half* p, int64_t i, float v) { p[i] = __float2half_rn(v); }
template <>
__device__ inline void store<__nv_bfloat16>(__nv_bfloat16* p, int64_t i, float v) { p[i] = __float2bfloat16_rn(v); }

template <typename O, typename X>
__global__ void cast_kernel(O* out, const X* x, int64_t n) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
    store<O>(out, i, load<X>(x, i));
}

template <typename O, typename X>
void launch(void* out, const void* x, int64_t n, cudaStream_t s) {
  int blocks = (int)std::min<int64_t>((n + 255) / 256, 65535);
  cast_kernel<O, X><<<blocks, 256, 0, s>>>(static_cast<O*>(out), static_cast<const X*>(x), n);
}

template <typename O>
void dispatch_x(void* out, const void* x, DType xdt, int64_t n, cudaStream_t s) {
  switch (xdt) {
    case DType::F32: return launch<O, float>(out, x, n, s);
    case DType::F16: return launch<O, __half>(out, x, n, s);
    case DType::BF16: return launch<O, __nv_bfloat16>(out, x, n, s);
    default: throw std::invalid_argument(std::string("cast: CUDA casts float types only, got ") + dtype_name(xdt));
  }
}
}  // namespace

void cast(void* out, DType odt, const void* x, DType xdt, int64_t n, int device) {
  if (n <= 0) return;
  NIBBLE_CUDA_CHECK(cudaSetDevice(device), "cudaSetDevice");
  cudaStream_t s = gpt2_cuda::stream(device);
  switch (odt) {
    case DType::F32: dispatch_x<float>(out, x, xdt, n, s); break;
    case DType::F16: dispatch_x<__half>(out, x, xdt, n, s); break;
    case DType::BF16: dispatch_x<__nv_bfloat16>(out, x, xdt, n, s); break;
    default: throw std::invalid_argument(std::string("cast: CUDA casts float types only, got ") + dtype_name(odt));
  }
  NIBBLE_CUDA_CHECK_LAUNCH("cast");
}

}  // namespace cuda_cast
}  // namespace nibble
