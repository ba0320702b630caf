// Device helpers shared by the quantization kernels: element loads/stores per dtype, the
// 4-bit code searches over thresholds held in shared memory, and small PTX wrappers.
// Every float operation that must match the CPU reference bit for bit is written with an
// explicit _rn intrinsic, so nvcc cannot contract a multiply and an add into one FMA.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <map>
#include <mutex>
#include <stdexcept>
#include <string>
#include <utility>

#include "core/dtype.h"
#include "cuda/cuda_check.h"
#include "formats.h"

namespace nibble {
namespace cuda {
namespace dev {

// ---- element conversion ---------------------------------------------------------------------
template <typename T> __device__ __forceinline__ float to_f32(T v);
template <> __device__ __forceinline__ float to_f32<float>(float v) { return v; }
template <> __device__ __forceinline__ float to_f32<__half>(__half v) { return __half2float(v); }
template <> __device__ __forceinline__ float to_f32<__nv_bfloat16>(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T> __device__ __forceinline__ T from_f32(float v);
template <> __device__ __forceinline__ float from_f32<float>(float v) { return v; }
template <> __device__ __forceinline__ __half from_f32<__half>(float v) { return __float2half_rn(v); }
template <> __device__ __forceinline__ __nv_bfloat16 from_f32<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }

// A pair of 16-bit values of type T (__half2 / __nv_bfloat162): build, splat, raw 32 bits.
template <typename T> struct Pair;
template <> struct Pair<__half> {
  using type = __half2;
  static __device__ __forceinline__ __half2 make(float a, float b) { return __floats2half2_rn(a, b); }
  static __device__ __forceinline__ __half2 splat(float a) { return __float2half2_rn(a); }
};
template <> struct Pair<__nv_bfloat16> {
  using type = __nv_bfloat162;
  static __device__ __forceinline__ __nv_bfloat162 make(float a, float b) { return __floats2bfloat162_rn(a, b); }
  static __device__ __forceinline__ __nv_bfloat162 splat(float a) { return __float2bfloat162_rn(a); }
};
template <typename T2> __device__ __forceinline__ uint32_t bits_of(T2 v) { return *reinterpret_cast<uint32_t*>(&v); }

// ---- 4-bit code search ----------------------------------------------------------------------
// Shared-memory table layout used by the quantize kernels: [0..14] NF4 thresholds, [16..22]
// FP4 thresholds, [24..31] FP4 code by rank (as floats), [32..47] NF4 values, [48..63] FP4
// values (sign applied: code 8 is -0.0f, as magnitude * -1 gives).
struct Tables4 {
  float nf4_thresholds[15], pad0;
  float fp4_thresholds[7], pad1;
  float fp4_code_by_rank[8];
  float nf4_values[16];
  float fp4_values[16];
};
static_assert(sizeof(Tables4) == 64 * sizeof(float), "the 4-bit tables fill 64 floats");

// In constant memory so a block copies them with one load per thread (building them from
// local arrays per block cost more than the quantization itself).
static __constant__ Tables4 c_tables4 = {
    NIBBLE_NF4_THRESHOLDS, 0.0f, NIBBLE_FP4_THRESHOLDS, 0.0f, {0, 1, 6, 7, 4, 5, 2, 3}, NIBBLE_NF4_VALUES,
    {fmt::kFp4Magnitudes[0], fmt::kFp4Magnitudes[1], fmt::kFp4Magnitudes[2], fmt::kFp4Magnitudes[3],
     fmt::kFp4Magnitudes[4], fmt::kFp4Magnitudes[5], fmt::kFp4Magnitudes[6], fmt::kFp4Magnitudes[7],
     -fmt::kFp4Magnitudes[0], -fmt::kFp4Magnitudes[1], -fmt::kFp4Magnitudes[2], -fmt::kFp4Magnitudes[3],
     -fmt::kFp4Magnitudes[4], -fmt::kFp4Magnitudes[5], -fmt::kFp4Magnitudes[6], -fmt::kFp4Magnitudes[7]}};

__device__ __forceinline__ void load_tables4(float* s) {
  const float* c = reinterpret_cast<const float*>(&c_tables4);
  for (int i = threadIdx.x; i < 64; i += blockDim.x) s[i] = c[i];
}

// Number of NF4 thresholds below x by binary search (4 probes instead of 15 compares);
// equals the count formulation of formats.h for every float (NaN -> 0).
__device__ __forceinline__ uint32_t nf4_code(const float* s, float x) {
  uint32_t i = (x > s[7]) ? 8u : 0u;
  i += (x > s[i + 3]) ? 4u : 0u;
  i += (x > s[i + 1]) ? 2u : 0u;
  i += (x > s[i]) ? 1u : 0u;
  return i;
}

__device__ __forceinline__ uint32_t fp4_code(const float* s, float x) {
  uint32_t sign = (x < 0.0f) ? 8u : 0u;
  float a = fabsf(x);  // NaN stays NaN: every comparison below is false -> rank 0
  uint32_t i = (a > s[16 + 3]) ? 4u : 0u;
  i += (a > s[16 + i + 1]) ? 2u : 0u;
  i += (a > s[16 + i]) ? 1u : 0u;
  return (uint32_t)s[24 + i] | sign;
}

template <int KIND>  // 0 = FP4, 1 = NF4 (fmt::QuantType values)
__device__ __forceinline__ uint32_t code4(const float* s, float x) {
  return KIND == 1 ? nf4_code(s, x) : fp4_code(s, x);
}

template <int KIND>
__device__ __forceinline__ float value4(const float* s, uint32_t c) {
  return s[(KIND == 1 ? 32 : 48) + (c & 15)];
}

// bitsandbytes' 8-bit search (fmt::quantize_dynamic_value), code in shared memory.
__device__ __forceinline__ uint32_t code8(const float* code, float x) {
  int p = 127, lo_i = 0, hi_i = 255;
  float lo = -1.0f, hi = 1.0f;
  float v = code[p];
#pragma unroll
  for (int step = 64; step > 0; step >>= 1) {
    if (x > v) {
      lo_i = p;
      lo = v;
      p += step;
    } else {
      hi_i = p;
      hi = v;
      p -= step;
    }
    v = code[p];
  }
  if (hi_i == 255) hi = code[255];
  if (lo_i == 0) lo = code[0];
  if (x > v) return (x > __fmul_rn(__fadd_rn(hi, v), 0.5f)) ? hi_i : p;
  return (x < __fmul_rn(__fadd_rn(lo, v), 0.5f)) ? lo_i : p;
}

// absmax of block b of a double-quantized state: code[q[b]] * nested[b/256] + offset.
__device__ __forceinline__ float dq_absmax(const float* code_s, uint8_t q, float nested, float offset) {
  return __fadd_rn(__fmul_rn(code_s[q], nested), offset);
}

// ---- PTX wrappers -------------------------------------------------------------------------
__device__ __forceinline__ uint32_t smem_u32(const void* p) {
  return (uint32_t)__cvta_generic_to_shared(p);
}
// 16-byte asynchronous global->shared copy; src_bytes < 16 zero-fills the rest (0 = all zeros).
__device__ __forceinline__ void cp_async16(void* smem, const void* gmem, int src_bytes) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_u32(smem)), "l"(gmem), "r"(src_bytes));
}
// 4-byte asynchronous copy (through L1); src_bytes < 4 zero-fills the rest.
__device__ __forceinline__ void cp_async4(void* smem, const void* gmem, int src_bytes) {
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(smem_u32(smem)), "l"(gmem), "r"(src_bytes));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
// The "memory" clobber keeps the compiler from moving shared-memory reads of the copied data
// above the wait (kernels that read a ring without a barrier after the wait need it).
template <int N> __device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

// Four 8x8 b16 matrices from shared memory, one row address per lane (lanes 8i..8i+7: matrix i).
__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_u32(p)));
}
__device__ __forceinline__ void ldmatrix_x2(uint32_t (&r)[2], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0,%1}, [%2];\n"
               : "=r"(r[0]), "=r"(r[1])
               : "r"(smem_u32(p)));
}

// D += A(16x16, row) * B(16x8, col), fp16 or bf16 inputs, fp32 accumulators.
template <typename T>
__device__ __forceinline__ void mma_16816(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]);
template <>
__device__ __forceinline__ void mma_16816<__half>(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}
template <>
__device__ __forceinline__ void mma_16816<__nv_bfloat16>(float (&d)[4], const uint32_t (&a)[4],
                                                         const uint32_t (&b)[2]) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

// D += A(16x32 int8, row) * B(32x8 int8, col), exact int32.
__device__ __forceinline__ void mma_16832_s8(int (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
  asm volatile(
      "mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+r"(d[0]), "+r"(d[1]), "+r"(d[2]), "+r"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

// ---- mbarriers (sm_90): completion of bulk / TMA copies and stage hand-over --------------------
// NIBBLE_DEV_SM90 is 0 in device code for GPUs below sm_90, where these bodies are empty: the
// kernels that use them are never launched there (the source build also compiles sm_80..89).
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 900
#define NIBBLE_DEV_SM90 0
#else
#define NIBBLE_DEV_SM90 1
#endif
__device__ __forceinline__ void mbar_init(uint32_t bar, uint32_t count) {
#if NIBBLE_DEV_SM90
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(bar), "r"(count) : "memory");
#endif
}
// One arrival that also expects `bytes` of copies to complete on the barrier's current phase.
__device__ __forceinline__ void mbar_expect(uint32_t bar, uint32_t bytes) {
#if NIBBLE_DEV_SM90
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(bar), "r"(bytes) : "memory");
#endif
}
__device__ __forceinline__ void mbar_arrive(uint32_t bar) {
#if NIBBLE_DEV_SM90
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];" ::"r"(bar) : "memory");
#endif
}
__device__ __forceinline__ void mbar_wait(uint32_t bar, uint32_t parity) {
#if NIBBLE_DEV_SM90
  asm volatile(
      "{\n .reg .pred P1;\n"
      "WAIT:\n mbarrier.try_wait.parity.shared::cta.b64 P1, [%0], %1;\n"
      " @P1 bra DONE;\n bra WAIT;\n"
      "DONE:\n}" ::"r"(bar),
      "r"(parity)
      : "memory");
#endif
}

// Barrier `id` (1..15) for the first `threads` threads of the block, so a subset (the consumer
// warps of a warp-specialized kernel) can synchronize without the others.
__device__ __forceinline__ void named_barrier_sync(int id, int threads) {
  asm volatile("bar.sync %0, %1;" ::"r"(id), "r"(threads) : "memory");
}

// cpu::rcp_approx on the device: the reciprocal bitsandbytes' __fdividef(127, absmax) uses,
// modelled as the exact reciprocal biased up by 0.14 ulp and rounded to nearest. Computing
// the same model here (rather than calling __fdividef) keeps CUDA and CPU bit-identical;
// both reproduce bitsandbytes' codes on its reference data.
__device__ __forceinline__ float rcp_like_fdividef(float x) {
  const double e = __ddiv_rn(1.0, (double)x);
  const float rn = __double2float_rn(e);
  if (isinf(rn) || isnan(rn) || rn == 0.0f) return rn;
  const float away = nextafterf(rn, rn > 0.0f ? INFINITY : -INFINITY);
  const double ulp = fabs(__dsub_rn((double)away, (double)rn));
  return __double2float_rn(__dadd_rn(e, copysign(__dmul_rn(0.14, ulp), e)));
}

}  // namespace dev

// ---- host helpers ---------------------------------------------------------------------------
inline bool aligned16(const void* p) { return ((uintptr_t)p & 15) == 0; }
inline unsigned grid_1d(int64_t items, int64_t per_block, const char* op) {
  int64_t g = (items + per_block - 1) / per_block;
  if (g > 0x7fffffffLL) throw std::runtime_error(std::string(op) + ": tensor too large for one launch");
  return (unsigned)(g < 1 ? 1 : g);
}
int sm_count();  // multiprocessors of the current device (cached per device)
int smem_optin_bytes();  // the most shared memory a block may opt in to on the current device (cached)

// Blocks of 256 threads for a grid-stride loop over `total` items: at most 16 an SM.
inline unsigned grid_stride_blocks(int64_t total) {
  return (unsigned)std::max<int64_t>(1, std::min<int64_t>((total + 255) / 256, (int64_t)sm_count() * 16));
}

// Waits for `stream` unless it is being captured into a graph. The layout builders use it: the
// kernels that read a layout copy start early (programmatic dependent launch) and read the
// weight before waiting on the kernel ahead of them, so the copy must be complete by then;
// inside a capture the copy should have been made before capturing.
inline void sync_unless_capturing(cudaStream_t stream, const char* op) {
  cudaStreamCaptureStatus cap = cudaStreamCaptureStatusNone;
  NIBBLE_CUDA_CHECK(cudaStreamIsCapturing(stream, &cap), op);
  if (cap == cudaStreamCaptureStatusNone) NIBBLE_CUDA_CHECK(cudaStreamSynchronize(stream), op);
}

// Resident blocks an SM for a kernel at `threads` a block and `smem` bytes of dynamic shared
// memory (at least 1), cached per kernel and size: the occupancy query is a host call that
// would otherwise run on every launch. Allows more than 48 KB of dynamic shared memory first.
inline int resident_blocks(const void* kernel, int threads, size_t smem, const char* op) {
  static std::mutex mu;
  static std::map<std::pair<const void*, size_t>, int> cache;
  std::lock_guard<std::mutex> lock(mu);
  auto it = cache.find({kernel, smem});
  if (it != cache.end()) return it->second;
  if (smem > 48 * 1024)
    NIBBLE_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem),
                      std::string(op) + ": shared memory");
  int n = 0;
  NIBBLE_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, kernel, threads, smem), op);
  n = std::max(n, 1);
  cache[{kernel, smem}] = n;
  return n;
}

}  // namespace cuda
}  // namespace nibble
