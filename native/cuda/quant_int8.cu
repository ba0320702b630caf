// LLM.int8() on the GPU: row-wise int8 quantization with outlier columns, the int8 x int8
// -> int32 product (mma.sync m16n8k32 tensor cores; a dp4a GEMV for a few rows; on Hopper the
// large products go to the TMA + wgmma kernel of sm90a/quant_int8_wgmma.cu) and the
// row x column dequantization, optionally fused into the product's epilogue.
// Arithmetic follows cpu::*_ref in native/cpu/quant_ops.h: scale = __fdividef(127, absmax)
// (the approximate reciprocal bitsandbytes uses, which cpu::rcp_approx emulates), codes by
// round-half-even, and the dequant formula fp16(fmaf(C * rs * cs, 1/127^2, bias)).
#include <cstdlib>
#include <string>

#include "cuda/quant_cuda.h"
#include "cuda/quant_device.cuh"
#include "cuda/quant_int8_epilogue.cuh"
#if NIBBLE_HAS_SM90A
#include "cuda/sm90a/quant_int8_wgmma.h"
#endif

namespace nibble {
namespace cuda {
namespace {

// ---- int8_vectorwise_quant ------------------------------------------------------------------
template <typename T>
__global__ void k_outlier_cols(const T* __restrict__ x, int64_t n, int64_t cols, float th,
                               uint8_t* __restrict__ flags) {
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
    if (fabsf(dev::to_f32(x[i])) >= th) flags[i % cols] = 1;  // every writer stores 1: a benign race
}

constexpr int kRowThreads = 256;

template <typename T>
__global__ void __launch_bounds__(kRowThreads)
    k_rowquant(const T* __restrict__ x, int64_t cols, float th, bool sparse, const uint8_t* __restrict__ flags,
               int8_t* __restrict__ out, float* __restrict__ row_stats) {
  __shared__ float s_red[kRowThreads / 32];
  const T* row = x + (int64_t)blockIdx.x * cols;
  float m = 0.0f;
  for (int64_t c = threadIdx.x; c < cols; c += kRowThreads) {
    float a = fabsf(dev::to_f32(row[c]));
    if (!sparse || a < th) m = fmaxf(m, a);
  }
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, o));
  if ((threadIdx.x & 31) == 0) s_red[threadIdx.x / 32] = m;
  __syncthreads();
  m = s_red[0];
#pragma unroll
  for (int w = 1; w < kRowThreads / 32; w++) m = fmaxf(m, s_red[w]);
  if (threadIdx.x == 0) row_stats[blockIdx.x] = m;
  const float scale = __fmul_rn(127.0f, dev::rcp_like_fdividef(m));
  int8_t* orow = out + (int64_t)blockIdx.x * cols;
  for (int64_t c = threadIdx.x; c < cols; c += kRowThreads) {
    const float v = __fmul_rn(dev::to_f32(row[c]), scale);
    int q = __float2int_rn(v);  // NaN -> 0
    if (sparse && flags[c]) q = 0;
    orow[c] = (int8_t)q;
  }
}

// The same arithmetic for rows of up to 2048 16-byte vectors: each thread keeps its NV vectors
// in registers between the absmax and the quantization (the row is read once, not twice) and
// stores 4 or 8 codes at a time. (2048x8192 float16: 34 -> ~17 us in the Linear8bitLt bench.)
template <typename T, int NV>
__global__ void __launch_bounds__(kRowThreads)
    k_rowquant_vec(const T* __restrict__ x, int cols, float th, bool sparse, const uint8_t* __restrict__ flags,
                   int8_t* __restrict__ out, float* __restrict__ row_stats) {
  constexpr int VEC = 16 / sizeof(T);
  __shared__ float s_red[kRowThreads / 32];
  const int nv = cols / VEC;
  const uint4* row = reinterpret_cast<const uint4*>(x + (int64_t)blockIdx.x * cols);
  uint4 r[NV];
#pragma unroll
  for (int i = 0; i < NV; i++) {
    const int idx = threadIdx.x + i * kRowThreads;
    r[i] = idx < nv ? __ldcs(row + idx) : make_uint4(0, 0, 0, 0);
  }
  float m = 0.0f;
#pragma unroll
  for (int i = 0; i < NV; i++) {
    const T* e = reinterpret_cast<const T*>(&r[i]);
#pragma unroll
    for (int j = 0; j < VEC; j++) {
      const float a = fabsf(dev::to_f32(e[j]));
      if (!sparse || a < th) m = fmaxf(m, a);  // zeros past the row change nothing
    }
  }
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, o));
  if ((threadIdx.x & 31) == 0) s_red[threadIdx.x / 32] = m;
  __syncthreads();
  m = s_red[0];
#pragma unroll
  for (int w = 1; w < kRowThreads / 32; w++) m = fmaxf(m, s_red[w]);
  if (threadIdx.x == 0) row_stats[blockIdx.x] = m;
  const float scale = __fmul_rn(127.0f, dev::rcp_like_fdividef(m));
  int8_t* orow = out + (int64_t)blockIdx.x * cols;
#pragma unroll
  for (int i = 0; i < NV; i++) {
    const int idx = threadIdx.x + i * kRowThreads;
    if (idx >= nv) break;
    const T* e = reinterpret_cast<const T*>(&r[i]);
    uint8_t fl[VEC] = {};
    if (sparse) {
      if constexpr (VEC == 8) *reinterpret_cast<uint2*>(fl) = *reinterpret_cast<const uint2*>(flags + idx * VEC);
      else *reinterpret_cast<uint32_t*>(fl) = *reinterpret_cast<const uint32_t*>(flags + idx * VEC);
    }
    uint32_t packed[VEC / 4];
#pragma unroll
    for (int j = 0; j < VEC; j++) {
      int q = __float2int_rn(__fmul_rn(dev::to_f32(e[j]), scale));  // NaN -> 0
      if (fl[j]) q = 0;
      if (j % 4 == 0) packed[j / 4] = 0;
      packed[j / 4] |= (uint32_t)(q & 0xff) << (8 * (j % 4));
    }
    if constexpr (VEC == 8) *reinterpret_cast<uint2*>(orow + idx * VEC) = make_uint2(packed[0], packed[1]);
    else *reinterpret_cast<uint32_t*>(orow + idx * VEC) = packed[0];
  }
}

// One block a row: the register-resident kernel where the row fits it and its operands are
// aligned for vector access, else the general one.
template <typename T>
void launch_rowquant(const T* x, int64_t rows, int64_t cols, float th, bool sparse, const uint8_t* flags, int8_t* out,
                     float* row_stats, cudaStream_t s) {
  constexpr int VEC = 16 / sizeof(T);
  const int64_t nv = cols / VEC;
  const bool aligned = cols % VEC == 0 && reinterpret_cast<uintptr_t>(x) % 16 == 0 &&
                       reinterpret_cast<uintptr_t>(out) % VEC == 0 && (!sparse || reinterpret_cast<uintptr_t>(flags) % VEC == 0);
  const unsigned g = (unsigned)rows;
  if (aligned && nv <= 8 * kRowThreads) {
    const int c = (int)cols;
    if (nv <= kRowThreads) k_rowquant_vec<T, 1><<<g, kRowThreads, 0, s>>>(x, c, th, sparse, flags, out, row_stats);
    else if (nv <= 2 * kRowThreads) k_rowquant_vec<T, 2><<<g, kRowThreads, 0, s>>>(x, c, th, sparse, flags, out, row_stats);
    else if (nv <= 4 * kRowThreads) k_rowquant_vec<T, 4><<<g, kRowThreads, 0, s>>>(x, c, th, sparse, flags, out, row_stats);
    else k_rowquant_vec<T, 8><<<g, kRowThreads, 0, s>>>(x, c, th, sparse, flags, out, row_stats);
    return;
  }
  k_rowquant<T><<<g, kRowThreads, 0, s>>>(x, cols, th, sparse, flags, out, row_stats);
}

// ---- int8_mm_dequant ------------------------------------------------------------------------
__global__ void k_mm_dequant(const int32_t* __restrict__ C, const float* __restrict__ rs, const float* __restrict__ cs,
                             const __half* __restrict__ bias, int64_t M, int64_t N, __half* __restrict__ out) {
  const int64_t total = M * N;
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (int64_t)gridDim.x * blockDim.x) {
    const int64_t m = i / N, n = i % N;
    out[i] = mm_dequant_value(C[i], rs[m], cs[n], bias ? __half2float(bias[n]) : 0.0f);
  }
}

// ---- int8 GEMM: mma.sync m16n8k32 ---------------------------------------------------------------
// CTA tile 128x128, k-tile 64 bytes, 3-stage cp.async pipeline, 8 warps as 2 (M) x 4 (N),
// warp tile 64x32. Shared rows are 64 bytes (four 16-byte chunks); chunk c of row r sits at
// c ^ ((r >> 1) & 3) so the eight rows an ldmatrix reads fall in distinct banks.
constexpr int kBM = 128, kBN = 128, kBK = 64, kStages = 3, kGemmThreads = 256;

__device__ __forceinline__ int swz(int r, int c) { return r * kBK + ((c ^ ((r >> 1) & 3)) << 4); }

__global__ void __launch_bounds__(kGemmThreads)
    k_int8_gemm(const int8_t* __restrict__ A, const int8_t* __restrict__ B, int M, int N, int K, Int8Epilogue ep) {
  __shared__ __align__(128) int8_t sA[kStages][kBM * kBK];
  __shared__ __align__(128) int8_t sB[kStages][kBN * kBK];
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int wm = warp >> 2, wn = warp & 3;
  const int m0 = blockIdx.y * kBM, n0 = blockIdx.x * kBN;
  const int ktiles = (K + kBK - 1) / kBK;

  auto load_tile = [&](int stage, int kt) {
    const int k0 = kt * kBK;
    // 128 rows x 4 chunks = 512 chunks per operand: 2 per thread each.
#pragma unroll
    for (int h = 0; h < 2; h++) {
      const int idx = tid + h * kGemmThreads;
      const int r = idx >> 2, c = idx & 3;
      const int k = k0 + c * 16;
      {
        const int gm = m0 + r;
        const bool ok = gm < M && k < K;
        const int8_t* src = ok ? A + (int64_t)gm * K + k : A;
        dev::cp_async16(&sA[stage][swz(r, c)], src, ok ? 16 : 0);
      }
      {
        const int gn = n0 + r;
        const bool ok = gn < N && k < K;
        const int8_t* src = ok ? B + (int64_t)gn * K + k : B;
        dev::cp_async16(&sB[stage][swz(r, c)], src, ok ? 16 : 0);
      }
    }
  };

  int acc[4][4][4];
#pragma unroll
  for (int i = 0; i < 4; i++)
#pragma unroll
    for (int j = 0; j < 4; j++)
#pragma unroll
      for (int q = 0; q < 4; q++) acc[i][j][q] = 0;

#pragma unroll
  for (int s = 0; s < kStages - 1; s++) {
    if (s < ktiles) load_tile(s, s);
    dev::cp_async_commit();
  }

  for (int kt = 0; kt < ktiles; kt++) {
    dev::cp_async_wait<kStages - 2>();
    __syncthreads();
    {
      const int nk = kt + kStages - 1;
      if (nk < ktiles) load_tile(nk % kStages, nk);
      dev::cp_async_commit();
    }
    const int8_t* a_s = sA[kt % kStages];
    const int8_t* b_s = sB[kt % kStages];
#pragma unroll
    for (int ks = 0; ks < kBK / 32; ks++) {
      uint32_t af[4][4], bf[4][2];
#pragma unroll
      for (int i = 0; i < 4; i++) {
        const int mat = lane >> 3;
        const int r = wm * 64 + i * 16 + (mat & 1) * 8 + (lane & 7);
        const int c = ks * 2 + (mat >> 1);
        dev::ldmatrix_x4(af[i], a_s + swz(r, c));
      }
#pragma unroll
      for (int j = 0; j < 4; j += 2) {
        const int mat = lane >> 3;
        const int r = wn * 32 + j * 8 + (mat >> 1) * 8 + (lane & 7);
        const int c = ks * 2 + (mat & 1);
        uint32_t t[4];
        dev::ldmatrix_x4(t, b_s + swz(r, c));
        bf[j][0] = t[0];
        bf[j][1] = t[1];
        bf[j + 1][0] = t[2];
        bf[j + 1][1] = t[3];
      }
#pragma unroll
      for (int i = 0; i < 4; i++)
#pragma unroll
        for (int j = 0; j < 4; j++) dev::mma_16832_s8(acc[i][j], af[i], bf[j]);
    }
  }
  dev::cp_async_wait<0>();

  const int g = lane >> 2, t = lane & 3;
#pragma unroll
  for (int i = 0; i < 4; i++)
#pragma unroll
    for (int j = 0; j < 4; j++)
#pragma unroll
      for (int q = 0; q < 4; q++) {
        const int m = m0 + wm * 64 + i * 16 + g + (q >> 1) * 8;
        const int n = n0 + wn * 32 + j * 8 + t * 2 + (q & 1);
        if (m < M && n < N) store_result(ep, m, n, N, acc[i][j][q]);
      }
}

// ---- int8 GEMM for large products: 128x256 CTA tile ---------------------------------------------
// The same instructions with more reuse per shared-memory read and per barrier: k-tile 128
// bytes (four k32 steps between barriers instead of two), warp tile 64x64 (8 ldmatrix.x4 for
// 32 mma instead of 6 for 16), 3 or 4 stages in dynamic shared memory (48 KB a stage), one
// CTA of 8 warps an SM. Rows are 128 bytes (eight 16-byte chunks); chunk c of row r sits at
// c ^ (r & 7), so the eight rows an ldmatrix reads fall in distinct banks. Taken when the
// product fills at least two waves of such tiles and the device grants the shared memory,
// unless the Hopper kernel takes it (H100, 2048x8192x8192 with the fused dequantization: this
// kernel 726 TOPS, the 128x128 one 590, the wgmma one 870).
constexpr int kLBM = 128, kLBN = 256, kLBK = 128;
constexpr size_t kLStageBytes = (size_t)(kLBM + kLBN) * kLBK;

__device__ __forceinline__ int lswz(int r, int c) { return r * kLBK + ((c ^ (r & 7)) << 4); }

template <int STAGES>
__global__ void __launch_bounds__(kGemmThreads, 1)
    k_int8_gemm_large(const int8_t* __restrict__ A, const int8_t* __restrict__ B, int M, int N, int K, Int8Epilogue ep) {
  extern __shared__ __align__(128) int8_t s_dyn8[];
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int wm = warp >> 2, wn = warp & 3;
  const int m0 = blockIdx.y * kLBM, n0 = blockIdx.x * kLBN;
  const int ktiles = (K + kLBK - 1) / kLBK;
  auto sA = [&](int stage) { return s_dyn8 + stage * kLStageBytes; };
  auto sB = [&](int stage) { return s_dyn8 + stage * kLStageBytes + kLBM * kLBK; };

  auto load_tile = [&](int stage, int kt) {
    const int k0 = kt * kLBK;
    int8_t* a_s = sA(stage);
    int8_t* b_s = sB(stage);
    // A: 128 rows x 8 chunks (4 a thread); B: 256 rows x 8 chunks (8 a thread).
#pragma unroll
    for (int h = 0; h < 4; h++) {
      const int idx = tid + h * kGemmThreads, r = idx >> 3, c = idx & 7, k = k0 + c * 16, gm = m0 + r;
      const bool ok = gm < M && k < K;
      dev::cp_async16(a_s + lswz(r, c), ok ? A + (int64_t)gm * K + k : A, ok ? 16 : 0);
    }
#pragma unroll
    for (int h = 0; h < 8; h++) {
      const int idx = tid + h * kGemmThreads, r = idx >> 3, c = idx & 7, k = k0 + c * 16, gn = n0 + r;
      const bool ok = gn < N && k < K;
      dev::cp_async16(b_s + lswz(r, c), ok ? B + (int64_t)gn * K + k : B, ok ? 16 : 0);
    }
  };

  int acc[4][8][4];
#pragma unroll
  for (int i = 0; i < 4; i++)
#pragma unroll
    for (int j = 0; j < 8; j++)
#pragma unroll
      for (int q = 0; q < 4; q++) acc[i][j][q] = 0;

#pragma unroll
  for (int st = 0; st < STAGES - 1; st++) {
    if (st < ktiles) load_tile(st, st);
    dev::cp_async_commit();
  }
  for (int kt = 0; kt < ktiles; kt++) {
    dev::cp_async_wait<STAGES - 2>();
    __syncthreads();
    {
      const int nk = kt + STAGES - 1;
      if (nk < ktiles) load_tile(nk % STAGES, nk);
      dev::cp_async_commit();
    }
    const int8_t* a_s = sA(kt % STAGES);
    const int8_t* b_s = sB(kt % STAGES);
#pragma unroll
    for (int ks = 0; ks < kLBK / 32; ks++) {
      uint32_t af[4][4], bf[8][2];
      const int mat = lane >> 3;
#pragma unroll
      for (int i = 0; i < 4; i++)
        dev::ldmatrix_x4(af[i], a_s + lswz(wm * 64 + i * 16 + (mat & 1) * 8 + (lane & 7), ks * 2 + (mat >> 1)));
#pragma unroll
      for (int j = 0; j < 8; j += 2) {
        uint32_t t[4];
        dev::ldmatrix_x4(t, b_s + lswz(wn * 64 + j * 8 + (mat >> 1) * 8 + (lane & 7), ks * 2 + (mat & 1)));
        bf[j][0] = t[0], bf[j][1] = t[1], bf[j + 1][0] = t[2], bf[j + 1][1] = t[3];
      }
#pragma unroll
      for (int i = 0; i < 4; i++)
#pragma unroll
        for (int j = 0; j < 8; j++) dev::mma_16832_s8(acc[i][j], af[i], bf[j]);
    }
  }
  dev::cp_async_wait<0>();

  const int g = lane >> 2, t = lane & 3;
#pragma unroll
  for (int i = 0; i < 4; i++)
#pragma unroll
    for (int j = 0; j < 8; j++)
#pragma unroll
      for (int h = 0; h < 2; h++) {
        const int m = m0 + wm * 64 + i * 16 + g + h * 8;
        const int n = n0 + wn * 64 + j * 8 + t * 2;
        if (m < M) store_pair(ep, m, n, N, acc[i][j][2 * h], acc[i][j][2 * h + 1]);
      }
}

// Which kernel takes the large products: Auto = the Hopper wgmma kernel where the device runs
// it, else the 128x256 mma.sync one. NIBBLE_CUDA_INT8_GEMM=mma skips the wgmma kernel and
// =small keeps the 128x128 kernel too (for same-run A/Bs).
enum class LargeGemm { Auto, Mma, Off };
LargeGemm large_gemm_mode() {
  static const LargeGemm mode = [] {
    const char* v = std::getenv("NIBBLE_CUDA_INT8_GEMM");
    const std::string m = v ? v : "";
    return m == "small" ? LargeGemm::Off : m == "mma" ? LargeGemm::Mma : LargeGemm::Auto;
  }();
  return mode;
}

// Stages of the large-tile GEMM the current device can hold (0: it cannot).
int large_gemm_stages() {
  const size_t optin = (size_t)smem_optin_bytes();
  return optin >= 4 * kLStageBytes ? 4 : optin >= 3 * kLStageBytes ? 3 : 0;
}

// ---- int8 GEMV for a few rows: dp4a over 16-byte chunks ------------------------------------------
// One warp per output column n (a row of B); the MR rows of A live in shared memory.
constexpr int kGemvThreads = 256, kGemvMaxRows = 4;

template <int MR>
__global__ void __launch_bounds__(kGemvThreads)
    k_int8_gemv(const int8_t* __restrict__ A, const int8_t* __restrict__ B, int N, int K, bool vec, Int8Epilogue ep) {
  extern __shared__ __align__(16) int8_t sA_rows[];
  for (int i = threadIdx.x; i < MR * K; i += kGemvThreads) sA_rows[i] = A[i];
  __syncthreads();
  const int lane = threadIdx.x & 31;
  const int warps_total = gridDim.x * (kGemvThreads / 32);
  for (int n = blockIdx.x * (kGemvThreads / 32) + (threadIdx.x >> 5); n < N; n += warps_total) {
    const int8_t* brow = B + (int64_t)n * K;
    int acc[MR];
#pragma unroll
    for (int r = 0; r < MR; r++) acc[r] = 0;
    if (vec) {
      const int chunks = K / 16;
      int c = lane;
      for (; c + 96 < chunks; c += 128) {  // four independent 16-byte loads in flight per lane
        uint4 w[4];
#pragma unroll
        for (int u = 0; u < 4; u++) w[u] = __ldcs(reinterpret_cast<const uint4*>(brow) + c + u * 32);
#pragma unroll
        for (int u = 0; u < 4; u++)
#pragma unroll
          for (int r = 0; r < MR; r++) {
            const uint4 a = reinterpret_cast<const uint4*>(sA_rows + r * K)[c + u * 32];
            acc[r] = __dp4a((int)w[u].x, (int)a.x, acc[r]);
            acc[r] = __dp4a((int)w[u].y, (int)a.y, acc[r]);
            acc[r] = __dp4a((int)w[u].z, (int)a.z, acc[r]);
            acc[r] = __dp4a((int)w[u].w, (int)a.w, acc[r]);
          }
      }
      for (; c < chunks; c += 32) {
        const uint4 w = __ldcs(reinterpret_cast<const uint4*>(brow) + c);
#pragma unroll
        for (int r = 0; r < MR; r++) {
          const uint4 a = reinterpret_cast<const uint4*>(sA_rows + r * K)[c];
          acc[r] = __dp4a((int)w.x, (int)a.x, acc[r]);
          acc[r] = __dp4a((int)w.y, (int)a.y, acc[r]);
          acc[r] = __dp4a((int)w.z, (int)a.z, acc[r]);
          acc[r] = __dp4a((int)w.w, (int)a.w, acc[r]);
        }
      }
    } else {
      for (int k = lane; k < K; k += 32) {
        const int b = brow[k];
#pragma unroll
        for (int r = 0; r < MR; r++) acc[r] += b * (int)sA_rows[r * K + k];
      }
    }
#pragma unroll
    for (int r = 0; r < MR; r++) {
#pragma unroll
      for (int o = 16; o > 0; o >>= 1) acc[r] += __shfl_xor_sync(0xffffffffu, acc[r], o);
      if (lane == 0) store_result(ep, r, n, N, acc[r]);
    }
  }
}

void check_dims(const char* op, int64_t M, int64_t N, int64_t K) {
  if (M <= 0 || N <= 0 || K <= 0) throw std::runtime_error(std::string(op) + ": empty operand");
  if (M > 0x7fffffffLL || N > 0x7fffffffLL || K > 0x7fffffffLL || M * K > (1LL << 40))
    throw std::runtime_error(std::string(op) + ": operand too large");
}

void launch_int8_matmul(const int8_t* A, const int8_t* B, int64_t M, int64_t N, int64_t K, const Int8Epilogue& ep,
                        cudaStream_t s, const char* op) {
  check_dims(op, M, N, K);
  const bool vec = (K % 16 == 0) && aligned16(A) && aligned16(B);
  if (M <= kGemvMaxRows && M * K <= 48 * 1024) {
    const int blocks = (int)std::min<int64_t>((N + 7) / 8, (int64_t)sm_count() * 8);
    const size_t smem = (size_t)M * K;
    switch (M) {
      case 1: k_int8_gemv<1><<<blocks, kGemvThreads, smem, s>>>(A, B, (int)N, (int)K, vec, ep); break;
      case 2: k_int8_gemv<2><<<blocks, kGemvThreads, smem, s>>>(A, B, (int)N, (int)K, vec, ep); break;
      case 3: k_int8_gemv<3><<<blocks, kGemvThreads, smem, s>>>(A, B, (int)N, (int)K, vec, ep); break;
      default: k_int8_gemv<4><<<blocks, kGemvThreads, smem, s>>>(A, B, (int)N, (int)K, vec, ep); break;
    }
    NIBBLE_CUDA_CHECK_LAUNCH(op);
    return;
  }
  if (!vec) {
    // Rows that are not 16-byte aligned cannot feed cp.async: the dp4a kernel's scalar path
    // handles them four rows of A at a time.
    for (int64_t m0 = 0; m0 < M; m0 += kGemvMaxRows) {
      const int64_t mr = std::min<int64_t>(kGemvMaxRows, M - m0);
      if (mr * K > 48 * 1024) throw std::runtime_error(std::string(op) + ": K too large for an unaligned operand");
      Int8Epilogue e = ep;
      if (e.C) e.C += m0 * N;
      if (e.out) e.out += m0 * N;
      if (e.rs) e.rs += m0;
      const int blocks = (int)std::min<int64_t>((N + 7) / 8, (int64_t)sm_count() * 8);
      const size_t smem = (size_t)mr * K;
      const int8_t* a = A + m0 * K;
      switch (mr) {
        case 1: k_int8_gemv<1><<<blocks, kGemvThreads, smem, s>>>(a, B, (int)N, (int)K, false, e); break;
        case 2: k_int8_gemv<2><<<blocks, kGemvThreads, smem, s>>>(a, B, (int)N, (int)K, false, e); break;
        case 3: k_int8_gemv<3><<<blocks, kGemvThreads, smem, s>>>(a, B, (int)N, (int)K, false, e); break;
        default: k_int8_gemv<4><<<blocks, kGemvThreads, smem, s>>>(a, B, (int)N, (int)K, false, e); break;
      }
      NIBBLE_CUDA_CHECK_LAUNCH(op);
    }
    return;
  }
  const int64_t large_tiles = ((M + kLBM - 1) / kLBM) * ((N + kLBN - 1) / kLBN);
  const bool large = large_tiles >= 2 * (int64_t)sm_count() && large_gemm_mode() != LargeGemm::Off;
#if NIBBLE_HAS_SM90A
  if (large && large_gemm_mode() == LargeGemm::Auto && int8_gemm_wgmma(A, B, M, N, K, ep, s, op)) return;
#endif
  const int stages = large ? large_gemm_stages() : 0;
  if (stages) {
    dim3 grid((unsigned)((N + kLBN - 1) / kLBN), (unsigned)((M + kLBM - 1) / kLBM));
    if (grid.y > 65535) throw std::runtime_error(std::string(op) + ": too many rows for one launch");
    const size_t smem = stages * kLStageBytes;
    auto kernel = stages == 4 ? k_int8_gemm_large<4> : k_int8_gemm_large<3>;
    NIBBLE_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem), op);
    kernel<<<grid, kGemmThreads, smem, s>>>(A, B, (int)M, (int)N, (int)K, ep);
    NIBBLE_CUDA_CHECK_LAUNCH(op);
    return;
  }
  dim3 grid((unsigned)((N + kBN - 1) / kBN), (unsigned)((M + kBM - 1) / kBM));
  if (grid.y > 65535) throw std::runtime_error(std::string(op) + ": too many rows for one launch");
  k_int8_gemm<<<grid, kGemmThreads, 0, s>>>(A, B, (int)M, (int)N, (int)K, ep);
  NIBBLE_CUDA_CHECK_LAUNCH(op);
}

}  // namespace

void int8_vectorwise_quant(const void* x, DType dt, int64_t rows, int64_t cols, float threshold, int8_t* out,
                           float* row_stats, uint8_t* outlier_cols, cudaStream_t s) {
  const char* op = "int8_vectorwise_quant";
  if (rows <= 0 || cols <= 0) throw std::runtime_error(std::string(op) + ": empty input");
  if (rows > 0x7fffffffLL) throw std::runtime_error(std::string(op) + ": too many rows");
  const bool sparse = threshold > 0.0f;
  // bitsandbytes compares float16 data with the threshold converted to float16.
  const float th = dt == DType::F16 ? half_to_float(float_to_half(threshold)) : threshold;
  if (sparse && !outlier_cols) throw std::runtime_error(std::string(op) + ": outlier_cols buffer required");
  if (outlier_cols) NIBBLE_CUDA_CHECK(cudaMemsetAsync(outlier_cols, 0, (size_t)cols, s), op);
  const int64_t n = rows * cols;
  const unsigned g = (unsigned)std::min<int64_t>((n + 255) / 256, (int64_t)sm_count() * 16);
  switch (dt) {
    case DType::F32:
      if (sparse) k_outlier_cols<float><<<g, 256, 0, s>>>((const float*)x, n, cols, th, outlier_cols);
      launch_rowquant((const float*)x, rows, cols, th, sparse, outlier_cols, out, row_stats, s);
      break;
    case DType::F16:
      if (sparse) k_outlier_cols<__half><<<g, 256, 0, s>>>((const __half*)x, n, cols, th, outlier_cols);
      launch_rowquant((const __half*)x, rows, cols, th, sparse, outlier_cols, out, row_stats, s);
      break;
    case DType::BF16:
      if (sparse) k_outlier_cols<__nv_bfloat16><<<g, 256, 0, s>>>((const __nv_bfloat16*)x, n, cols, th, outlier_cols);
      launch_rowquant((const __nv_bfloat16*)x, rows, cols, th, sparse, outlier_cols, out, row_stats, s);
      break;
    default: throw std::runtime_error(std::string(op) + ": input must be float32, float16 or bfloat16");
  }
  NIBBLE_CUDA_CHECK_LAUNCH(op);
}

void int8_linear_matmul(const int8_t* A, const int8_t* B, int64_t M, int64_t N, int64_t K, int32_t* C,
                        cudaStream_t s) {
  Int8Epilogue ep;
  ep.C = C;
  launch_int8_matmul(A, B, M, N, K, ep, s, "int8_linear_matmul");
}

void int8_mm_dequant(const int32_t* C, const float* row_stats, const float* col_stats, const uint16_t* bias,
                     int64_t M, int64_t N, uint16_t* out, cudaStream_t s) {
  if (M <= 0 || N <= 0) throw std::runtime_error("int8_mm_dequant: empty input");
  const unsigned g = (unsigned)std::min<int64_t>((M * N + 255) / 256, (int64_t)sm_count() * 32);
  k_mm_dequant<<<g, 256, 0, s>>>(C, row_stats, col_stats, reinterpret_cast<const __half*>(bias), M, N,
                                 reinterpret_cast<__half*>(out));
  NIBBLE_CUDA_CHECK_LAUNCH("int8_mm_dequant");
}

void int8_linear_matmul_dequant(const int8_t* A, const int8_t* B, int64_t M, int64_t N, int64_t K,
                                const float* row_stats, const float* col_stats, const uint16_t* bias, uint16_t* out,
                                cudaStream_t s) {
  Int8Epilogue ep;
  ep.out = reinterpret_cast<__half*>(out);
  ep.rs = row_stats;
  ep.cs = col_stats;
  ep.bias = reinterpret_cast<const __half*>(bias);
  launch_int8_matmul(A, B, M, N, K, ep, s, "int8_linear_matmul_dequant");
}

}  // namespace cuda
}  // namespace nibble
