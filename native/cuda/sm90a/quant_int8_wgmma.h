// The Hopper (sm_90a) int8 GEMM: see quant_int8_wgmma.cu. Only built when the CUDA
// architecture list has a 90 entry (NIBBLE_HAS_SM90A then defined for quant_int8.cu).
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "cuda/quant_int8_epilogue.cuh"

namespace nibble {
namespace cuda {

// C = A (M x K) . B (N x K)^T with A and B 16-byte aligned rows (K % 16 == 0), written through
// ep. Returns false, launching nothing, when the current device cannot run the kernel.
bool int8_gemm_wgmma(const int8_t* A, const int8_t* B, int64_t M, int64_t N, int64_t K, const Int8Epilogue& ep,
                     cudaStream_t s, const char* op);

}  // namespace cuda
}  // namespace nibble
