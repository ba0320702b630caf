// Block-wide exclusive prefix sum in thread order, shared by the kernels that need one (the
// outlier-column list of the int8 layers, the sampler's cumulative weights).
#pragma once
#include <cuda_runtime.h>

namespace nibble {
namespace cuda_block {

// Inclusive prefix sum over the lanes of a warp (Hillis-Steele: lane i adds lane i - 2^k).
template <typename T>
__device__ __forceinline__ T warp_inclusive_scan(T v) {
  const int lane = threadIdx.x & 31;
#pragma unroll
  for (int o = 1; o < 32; o <<= 1) {
    const T t = __shfl_up_sync(0xffffffffu, v, o);
    if (lane >= o) v += t;
  }
  return v;
}

// Exclusive prefix sum of v over the block's threads (blockDim.x a multiple of 32); *total
// gets the sum of all. `buf` holds 33 values. Each thread's result is the sum of the warps
// before its own plus the lanes before it in its warp (no subtraction: floating-point sums
// are exactly those partial sums). Ends with a barrier, so `buf` may be reused at once.
template <typename T>
__device__ T block_exclusive_scan(T v, T* buf, T* total) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
  const T incl = warp_inclusive_scan(v);
  T excl_in_warp = __shfl_up_sync(0xffffffffu, incl, 1);
  if (lane == 0) excl_in_warp = T(0);
  __syncthreads();
  if (lane == 31) buf[warp] = incl;
  __syncthreads();
  if (warp == 0) {
    const T wi = warp_inclusive_scan(lane < nwarps ? buf[lane] : T(0));
    T we = __shfl_up_sync(0xffffffffu, wi, 1);
    if (lane == 0) we = T(0);
    __syncwarp();
    buf[lane] = we;
    if (lane == 31) buf[32] = wi;
  }
  __syncthreads();
  const T r = buf[warp] + excl_in_warp;
  *total = buf[32];
  __syncthreads();
  return r;
}

}  // namespace cuda_block
}  // namespace nibble
