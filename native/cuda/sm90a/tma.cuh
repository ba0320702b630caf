// Hopper (sm_90a) building blocks shared by the TMA + wgmma kernels in this folder: the
// driver's tensor-map encoder, TMA box loads, and shared-memory matrix descriptors for the
// 128-byte swizzle that TMA writes (16-byte chunk c of row r at c ^ (r & 7), 128-byte rows,
// 8-row groups 1024 bytes apart, tiles 1024-byte aligned).
#pragma once
#include <cuda.h>
#include <cuda_runtime.h>
#include <cudaTypedefs.h>

#include <cstdint>

namespace nibble {
namespace cuda {
namespace sm90a {

// cuTensorMapEncodeTiled through the runtime (no link against libcuda); null where the driver
// has none.
inline PFN_cuTensorMapEncodeTiled_v12000 encode_fn() {
  static PFN_cuTensorMapEncodeTiled_v12000 fn = [] {
    void* p = nullptr;
    cudaDriverEntryPointQueryResult q;
    if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &p, 12000, cudaEnableDefault, &q) != cudaSuccess ||
        q != cudaDriverEntryPointSuccess) {
      cudaGetLastError();
      p = nullptr;
    }
    return reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(p);
  }();
  return fn;
}

// A 2-D row-major tensor (rows x cols elements of elem_bytes, rows `row_bytes` apart) read in
// boxes of box_rows x box_cols; swizzle128 for operands wgmma reads, none for raw bytes.
inline bool make_map_2d(CUtensorMap* map, const void* p, CUtensorMapDataType type, int64_t rows, int64_t cols,
                        int64_t row_bytes, int box_rows, int box_cols, bool swizzle128) {
  auto encode = encode_fn();
  if (!encode) return false;
  const cuuint64_t dims[2] = {(cuuint64_t)cols, (cuuint64_t)rows};
  const cuuint64_t strides[1] = {(cuuint64_t)row_bytes};
  const cuuint32_t box[2] = {(cuuint32_t)box_cols, (cuuint32_t)box_rows};
  const cuuint32_t elem[2] = {1, 1};
  return encode(map, type, 2, const_cast<void*>(p), dims, strides, box, elem, CU_TENSOR_MAP_INTERLEAVE_NONE,
                swizzle128 ? CU_TENSOR_MAP_SWIZZLE_128B : CU_TENSOR_MAP_SWIZZLE_NONE, CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
                CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE) == CUDA_SUCCESS;
}

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
// Shared-memory matrix descriptor: start address, leading-dimension offset (unused by swizzled
// K-major operands: 1), stride between 8-row groups (1024 bytes), 128-byte swizzle (mode 1).
__device__ __forceinline__ uint64_t smem_desc(uint32_t addr) {
  return (uint64_t)((addr & 0x3FFFF) >> 4) | ((uint64_t)1 << 16) | ((uint64_t)(1024 >> 4) << 32) | ((uint64_t)1 << 62);
}
// A box of the 2-D tensor map at (x = column, y = row) into shared memory at dst; bar counts the bytes.
__device__ __forceinline__ void tma_load(uint32_t dst, const CUtensorMap* map, int x, int y, uint32_t bar) {
  asm volatile(
      "cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3}], [%4];" ::"r"(dst),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(x), "r"(y), "r"(bar)
      : "memory");
}
#endif

}  // namespace sm90a
}  // namespace cuda
}  // namespace nibble
