// Dequant-fused 4-bit matmul: out[M, N] = x[M, K] @ Wdq[N, K]^T + bias, with W in the
// bitsandbytes packed layout (flat N*K codes, two per byte, high nibble first; one absmax per
// `blocksize` consecutive codes, optionally double-quantized). The dequantized weight only
// ever exists in registers or shared memory.
//
// Variants (see Matmul4bitPath):
//  1. GEMV (M == 1): each lane keeps 32 activations in float registers and streams 16-byte
//     chunks of 8 rows at a time; codes are looked up in a 16-entry float table replicated
//     per lane (bank-conflict free), so products use exact float32 code values.
//  2. GEMV with a byte -> half2 table (one lookup per two codes, 32 KB replicated): fewer
//     shared loads, codes rounded to float16.
//  3. MMA (M > 1, float16/bfloat16, K % 32 == 0): 128-column CTA tiles, 3-stage cp.async
//     pipeline for x and the packed weight; each warp turns packed bytes straight into
//     m16n8k16 B fragments (byte -> code pair table, times the block absmax) and runs
//     mma.sync. Split-K with a deterministic reduction fills the GPU at small M.
//  4. SIMT fallback (float32, odd K, unaligned pointers): tiles of the dequantized weight in
//     shared memory, float32 FMAs.
#include <algorithm>
#include <mutex>
#include <type_traits>

#include "cuda/gpt2_decode_gemv.h"
#include "cuda/quant_cuda.h"
#include "cuda/quant_device.cuh"

namespace nibble {
namespace cuda {
namespace {

struct W4 {
  const uint8_t* packed;
  const float* absmax;
  const uint8_t* qabsmax;
  const float* nested;
  const float* ncode;
  const float* offset_ptr;
  float offset;
  int log2_bs;
  int64_t N, K, nblocks;
};

template <bool DQ>
__device__ __forceinline__ float block_absmax(const W4& w, const float* s_ncode, float off, int64_t b) {
  if (DQ) return dev::dq_absmax(s_ncode, __ldg(w.qabsmax + b), __ldg(w.nested + (b >> 8)), off);
  return __ldg(w.absmax + b);
}

template <bool DQ>
__device__ __forceinline__ float load_offset(const W4& w) {
  return DQ ? (w.offset_ptr ? *w.offset_ptr : w.offset) : 0.0f;
}

template <bool DQ>
__device__ __forceinline__ void load_ncode(const W4& w, float* s_ncode) {
  if (DQ)
    for (int i = threadIdx.x; i < 256; i += blockDim.x) s_ncode[i] = w.ncode[i];
}

template <typename T>
__device__ __forceinline__ void load32(const T* p, float (&v)[32]) {
  constexpr int kPer = 16 / (int)sizeof(T);
#pragma unroll
  for (int q = 0; q < 32 / kPer; q++) {
    uint4 u = __ldg(reinterpret_cast<const uint4*>(p) + q);
    const T* e = reinterpret_cast<const T*>(&u);
#pragma unroll
    for (int j = 0; j < kPer; j++) v[q * kPer + j] = dev::to_f32(e[j]);
  }
}

// ---- GEMV ---------------------------------------------------------------------------------
// Warps split K (KW warps per row group) and rows (RW = 8 / KW groups). Each lane owns one
// 32-element chunk of K per segment and keeps its activations in registers; per step a lane
// loads one 16-byte chunk of U rows. The loads of step s+1 are issued before step s is
// computed (double buffering), warps never wait for each other inside the loop, and partial
// sums of the KW warps go to shared memory once per row, reduced after the loop.
// LUT: 0 = float code per nibble (16 x 32 lanes), 1 = half2 code pair per byte (256 x 32
// lanes) with float FMAs, 2 = the same table with half2 FMAs into a half2 accumulator per
// chunk (float16 activations only; the chunk sums go to float32 before scaling by absmax).
constexpr int kGemvThreads = 256, kGemvUnroll = 4, kGemvPartCap = 4096;

struct GemvRaw {
  uint4 w;
  float a;      // absmax, or the nested absmax for double quantization
  uint32_t q;   // double-quantized absmax code
};

template <typename T, int KIND, bool DQ, int LUT>
__global__ void __launch_bounds__(kGemvThreads, 2)
    k_gemv4(const T* __restrict__ x, W4 w, const T* __restrict__ bias, T* __restrict__ out, int KW, int nseg,
            int iters_per_cta, const uint4* __restrict__ lut_g) {
  extern __shared__ __align__(16) uint8_t smem[];
  float* s_ncode = reinterpret_cast<float*>(smem);             // 256
  float* s_part = s_ncode + 256;                               // kGemvPartCap
  uint32_t* s_lut = reinterpret_cast<uint32_t*>(s_part + kGemvPartCap);
  __shared__ float s_tab[64];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  dev::load_tables4(s_tab);
  load_ncode<DQ>(w, s_ncode);
  __syncthreads();
  if (LUT >= 1) {
    for (int i = threadIdx.x; i < 256 * 32 / 4; i += kGemvThreads) reinterpret_cast<uint4*>(s_lut)[i] = __ldg(lut_g + i);
  } else {
    float* f = reinterpret_cast<float*>(s_lut);
    for (int i = threadIdx.x; i < 16 * 32; i += kGemvThreads) f[i] = dev::value4<KIND>(s_tab, (uint32_t)i >> 5);
  }
  __syncthreads();
  const float off = load_offset<DQ>(w);

  const int kw = warp % KW, rg = warp / KW, RW = (kGemvThreads / 32) / KW;
  const int rows_per_iter = RW * kGemvUnroll;
  const int64_t N = w.N, K = w.K, C = K / 32;
  const int64_t row0 = (int64_t)blockIdx.x * iters_per_cta * rows_per_iter;
  const int64_t row_end = min(N, row0 + (int64_t)iters_per_cta * rows_per_iter);
  const int64_t steps = (int64_t)((row_end - row0 + rows_per_iter - 1) / rows_per_iter) * nseg;

  // Activations of this lane's chunk: float32, or half2 pairs for LUT 2.
  float xr[LUT == 2 ? 1 : 32];
  __half2 xh[LUT == 2 ? 16 : 1];
  auto load_x = [&](int seg) {
    const int64_t c = (int64_t)seg * KW * 32 + kw * 32 + lane;
    if constexpr (LUT == 2) {
      if (c < C) {
#pragma unroll
        for (int q = 0; q < 4; q++) {
          uint4 u = __ldg(reinterpret_cast<const uint4*>(x + c * 32) + q);
          xh[q * 4 + 0] = *reinterpret_cast<__half2*>(&u.x);
          xh[q * 4 + 1] = *reinterpret_cast<__half2*>(&u.y);
          xh[q * 4 + 2] = *reinterpret_cast<__half2*>(&u.z);
          xh[q * 4 + 3] = *reinterpret_cast<__half2*>(&u.w);
        }
      } else {
#pragma unroll
        for (int j = 0; j < 16; j++) xh[j] = __float2half2_rn(0.0f);
      }
    } else {
      if (c < C) {
        load32<T>(x + c * 32, xr);
      } else {
#pragma unroll
        for (int j = 0; j < 32; j++) xr[j] = 0.0f;
      }
    }
  };
  auto fetch = [&](int64_t step, GemvRaw (&r)[kGemvUnroll]) {
    const int64_t it = step / nseg;
    const int seg = (int)(step % nseg);
    const int64_t c = (int64_t)seg * KW * 32 + kw * 32 + lane;
#pragma unroll
    for (int u = 0; u < kGemvUnroll; u++) {
      const int64_t row = row0 + it * rows_per_iter + rg * kGemvUnroll + u;
      const bool ok = step < steps && c < C && row < row_end;
      const int64_t e = row * K + c * 32;
      const int64_t b = e >> w.log2_bs;
      r[u].w = ok ? __ldcs(reinterpret_cast<const uint4*>(w.packed + e / 2)) : make_uint4(0, 0, 0, 0);
      if (DQ) {
        r[u].q = ok ? __ldg(w.qabsmax + b) : 0u;
        r[u].a = ok ? __ldg(w.nested + (b >> 8)) : 0.0f;
      } else {
        r[u].a = ok ? __ldg(w.absmax + b) : 0.0f;
      }
    }
  };

  if (nseg == 1) load_x(0);
  GemvRaw cur[kGemvUnroll], nxt[kGemvUnroll];
  fetch(0, cur);
  float acc[kGemvUnroll];
  for (int64_t step = 0; step < steps; step++) {
    const int seg = (int)(step % nseg);
    if (seg == 0) {
#pragma unroll
      for (int u = 0; u < kGemvUnroll; u++) acc[u] = 0.0f;
    }
    fetch(step + 1, nxt);
    if (nseg > 1) load_x(seg);
#pragma unroll
    for (int u = 0; u < kGemvUnroll; u++) {
      const float am = DQ ? dev::dq_absmax(s_ncode, (uint8_t)cur[u].q, cur[u].a, off) : cur[u].a;
      const uint32_t words[4] = {cur[u].w.x, cur[u].w.y, cur[u].w.z, cur[u].w.w};
      if constexpr (LUT == 2) {
        __half2 h0 = __float2half2_rn(0.0f), h1 = h0;
#pragma unroll
        for (int q = 0; q < 4; q++)
#pragma unroll
          for (int b = 0; b < 4; b++) {
            const uint32_t byte = (words[q] >> (8 * b)) & 0xffu;
            uint32_t code = s_lut[(byte << 5) | lane];
            if (b & 1) h1 = __hfma2(*reinterpret_cast<__half2*>(&code), xh[q * 4 + b], h1);
            else h0 = __hfma2(*reinterpret_cast<__half2*>(&code), xh[q * 4 + b], h0);
          }
        const float2 f0 = __half22float2(h0), f1 = __half22float2(h1);
        acc[u] = fmaf(am, (f0.x + f0.y) + (f1.x + f1.y), acc[u]);
      } else {
        float d0 = 0.0f, d1 = 0.0f;
#pragma unroll
        for (int q = 0; q < 4; q++) {
#pragma unroll
          for (int b = 0; b < 4; b++) {
            const uint32_t byte = (words[q] >> (8 * b)) & 0xffu;
            const int j = (q * 4 + b) * 2;
            if (LUT == 1) {
              const uint32_t h = s_lut[(byte << 5) | lane];
              const float2 f = __half22float2(*reinterpret_cast<const __half2*>(&h));
              d0 = fmaf(f.x, xr[j], d0);
              d1 = fmaf(f.y, xr[j + 1], d1);
            } else {
              const float* f = reinterpret_cast<const float*>(s_lut);
              d0 = fmaf(f[((byte >> 4) << 5) | lane], xr[j], d0);
              d1 = fmaf(f[((byte & 15u) << 5) | lane], xr[j + 1], d1);
            }
          }
        }
        acc[u] = fmaf(am, d0 + d1, acc[u]);
      }
    }
#pragma unroll
    for (int u = 0; u < kGemvUnroll; u++) cur[u] = nxt[u];
    if (seg == nseg - 1) {
      const int64_t it = step / nseg;
#pragma unroll
      for (int u = 0; u < kGemvUnroll; u++) {
        float v = acc[u];
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
        const int64_t row = row0 + it * rows_per_iter + rg * kGemvUnroll + u;
        if (lane == 0 && row < row_end) {
          if (KW == 1) out[row] = dev::from_f32<T>(v + (bias ? dev::to_f32(bias[row]) : 0.0f));
          else s_part[(row - row0) * KW + kw] = v;
        }
      }
    }
  }
  if (KW > 1) {
    __syncthreads();
    for (int64_t row = row0 + threadIdx.x; row < row_end; row += kGemvThreads) {
      float v = 0.0f;
      for (int i = 0; i < KW; i++) v += s_part[(row - row0) * KW + i];
      out[row] = dev::from_f32<T>(v + (bias ? dev::to_f32(bias[row]) : 0.0f));
    }
  }
}

// ---- SIMT fallback --------------------------------------------------------------------------------
constexpr int kSimtBM = 32, kSimtBN = 64, kSimtBK = 32;

template <typename T, int KIND, bool DQ>
__global__ void __launch_bounds__(256)
    k_simt4(const T* __restrict__ x, int64_t M, W4 w, const T* __restrict__ bias, T* __restrict__ out) {
  __shared__ float s_x[kSimtBM][kSimtBK + 1];
  __shared__ float s_w[kSimtBN][kSimtBK + 1];
  __shared__ float s_ncode[256];
  __shared__ float s_tab[64];
  dev::load_tables4(s_tab);
  load_ncode<DQ>(w, s_ncode);
  __syncthreads();
  const float off = load_offset<DQ>(w);
  const int tid = threadIdx.x, tx = tid & 15, ty = tid >> 4;
  const int64_t m0 = (int64_t)blockIdx.y * kSimtBM, n0 = (int64_t)blockIdx.x * kSimtBN;
  const int64_t N = w.N, K = w.K;
  float acc[2][4] = {};
  for (int64_t k0 = 0; k0 < K; k0 += kSimtBK) {
    for (int i = tid; i < kSimtBM * kSimtBK; i += 256) {
      const int r = i / kSimtBK, c = i % kSimtBK;
      const int64_t m = m0 + r, k = k0 + c;
      s_x[r][c] = (m < M && k < K) ? dev::to_f32(x[m * K + k]) : 0.0f;
    }
    for (int i = tid; i < kSimtBN * kSimtBK; i += 256) {
      const int r = i / kSimtBK, c = i % kSimtBK;
      const int64_t n = n0 + r, k = k0 + c;
      float v = 0.0f;
      if (n < N && k < K) {
        const int64_t e = n * K + k;
        const uint8_t byte = w.packed[e >> 1];
        const uint32_t code = (e & 1) ? (byte & 15u) : (byte >> 4);
        v = __fmul_rn(dev::value4<KIND>(s_tab, code), block_absmax<DQ>(w, s_ncode, off, e >> w.log2_bs));
      }
      s_w[r][c] = v;
    }
    __syncthreads();
#pragma unroll 8
    for (int c = 0; c < kSimtBK; c++) {
      const float a0 = s_x[ty * 2][c], a1 = s_x[ty * 2 + 1][c];
#pragma unroll
      for (int j = 0; j < 4; j++) {
        const float b = s_w[tx + 16 * j][c];
        acc[0][j] = fmaf(a0, b, acc[0][j]);
        acc[1][j] = fmaf(a1, b, acc[1][j]);
      }
    }
    __syncthreads();
  }
#pragma unroll
  for (int i = 0; i < 2; i++)
#pragma unroll
    for (int j = 0; j < 4; j++) {
      const int64_t m = m0 + ty * 2 + i, n = n0 + tx + 16 * j;
      if (m < M && n < N) out[m * N + n] = dev::from_f32<T>(acc[i][j] + (bias ? dev::to_f32(bias[n]) : 0.0f));
    }
}

// ---- tensor-core GEMM ---------------------------------------------------------------------------------
constexpr int kBN = 128, kBK = 64;

using dev::Pair;

template <int BM>
struct MmaCfg {
  // Small M is bound by the weight stream: more stages keep more of it in flight.
  static constexpr int kStages = BM <= 16 ? 5 : BM <= 32 ? 6 : 3;
  static constexpr int WM = BM >= 64 ? 2 : 1;  // warps along M
  static constexpr int WN = 4;                 // warps along N (32 columns each)
  static constexpr int kThreads = 32 * WM * WN;
  static constexpr int MT = BM / WM / 16;       // m16 tiles per warp
  static constexpr int kLutBytes = 256 * 32 * 4;
  static constexpr int kABytes = BM * kBK * 2;  // per stage
  static constexpr int kBBytes = kBN * kBK / 2;
  static constexpr int kAbsBytes = kBN * 2 * 4 * 2;  // raw: code word + float, per (row, half tile)
  static constexpr int kSmem = kLutBytes + kStages * (kABytes + kBBytes + kAbsBytes) + kThreads / 32 * 64 * 4 + 256 * 4;
  static constexpr int kCtasPerSm = BM <= 16 ? 3 : 2;
};

// x rows are 128 bytes per k-tile (eight 16-byte chunks): chunk c of row r at c ^ (r & 7).
__device__ __forceinline__ int a_off(int r, int c) { return r * 128 + ((c ^ (r & 7)) << 4); }
// weight rows are 32 bytes per k-tile: chunk c of row r at c ^ ((r >> 2) & 1).
__device__ __forceinline__ int b_off(int r, int c) { return r * 32 + ((c ^ ((r >> 2) & 1)) << 4); }

template <typename T, int BM, int KIND, bool DQ>
__global__ void __launch_bounds__(MmaCfg<BM>::kThreads)
    k_mma4(const T* __restrict__ x, int M, W4 w, const T* __restrict__ bias, T* __restrict__ out,
           float* __restrict__ ws, int ktiles_per_split, const uint4* __restrict__ lut_g) {
  using Cfg = MmaCfg<BM>;
  using P2 = Pair<T>;
  using T2 = typename P2::type;
  extern __shared__ __align__(16) uint8_t smem[];
  uint32_t* s_lut = reinterpret_cast<uint32_t*>(smem);
  uint8_t* s_a = smem + Cfg::kLutBytes;
  constexpr int kStages = Cfg::kStages;
  uint8_t* s_b = s_a + kStages * Cfg::kABytes;
  uint32_t* s_raw = reinterpret_cast<uint32_t*>(s_b + kStages * Cfg::kBBytes);  // [stage][2][kBN*2]
  float* s_abs = reinterpret_cast<float*>(s_raw + kStages * kBN * 4);            // decoded, current tile
  float* s_ncode = s_abs + Cfg::kThreads / 32 * 64;

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int wm = warp / Cfg::WN, wn = warp % Cfg::WN;
  __shared__ float s_tab[64];
  dev::load_tables4(s_tab);
  load_ncode<DQ>(w, s_ncode);
  __syncthreads();
  for (int i = tid; i < 256 * 32 / 4; i += Cfg::kThreads) reinterpret_cast<uint4*>(s_lut)[i] = __ldg(lut_g + i);
  const float off = load_offset<DQ>(w);

  const int N = (int)w.N, K = (int)w.K;
  const int n0 = blockIdx.x * kBN, m0 = blockIdx.y * BM;
  const int ktiles = (K + kBK - 1) / kBK;
  const int kt_begin = blockIdx.z * ktiles_per_split;
  const int kt_end = min(ktiles, kt_begin + ktiles_per_split);
  const int nk = kt_end - kt_begin;

  auto issue_tile = [&](int stage, int kt) {
    const int k0 = kt * kBK;
    for (int i = tid; i < BM * 8; i += Cfg::kThreads) {  // x: BM rows x 8 chunks
      const int r = i >> 3, c = i & 7;
      const int m = m0 + r, k = k0 + c * 8;
      const bool ok = m < M && k < K;
      dev::cp_async16(s_a + stage * Cfg::kABytes + a_off(r, c), ok ? x + (int64_t)m * K + k : x, ok ? 16 : 0);
    }
    for (int i = tid; i < kBN * 2; i += Cfg::kThreads) {  // weight: 128 rows x 2 chunks
      const int r = i >> 1, c = i & 1;
      const int n = n0 + r, k = k0 + c * 32;
      const bool ok = n < N && k < K;
      const uint8_t* src = ok ? w.packed + ((int64_t)n * K + k) / 2 : w.packed;
      dev::cp_async16(s_b + stage * Cfg::kBBytes + b_off(r, c), src, ok ? 16 : 0);
    }
  };
  // Absmax of (row, 32-element half of the k-tile): each half lies inside one block
  // because K % 32 == 0 and blocksize >= 32.
  // Absmax of (row, 32-element half of the k-tile): each half lies inside one block because
  // K % 32 == 0 and blocksize >= 32. Its raw inputs travel with the tile through cp.async
  // (the aligned word holding the code byte, and the nested absmax; or the float absmax),
  // so no thread waits on a global load inside the loop; they are decoded once per tile.
  auto abs_index = [&](int i, int kt, bool& ok) -> int64_t {
    const int r = i >> 1, h = i & 1;
    const int n = n0 + r, k = kt * kBK + h * 32;
    ok = n < N && k < K;
    return ((int64_t)n * K + k) >> w.log2_bs;
  };
  auto issue_abs = [&](int stage, int kt) {
    uint32_t* rq = s_raw + stage * kBN * 4;
    float* ra = reinterpret_cast<float*>(rq + kBN * 2);
    for (int i = tid; i < kBN * 2; i += Cfg::kThreads) {
      bool ok;
      const int64_t b = abs_index(i, kt, ok);
      if (DQ) {
        const int64_t wb = b & ~(int64_t)3;
        const int64_t left = w.nblocks - wb;
        dev::cp_async4(rq + i, ok ? w.qabsmax + wb : w.qabsmax, ok ? (left >= 4 ? 4 : (int)left) : 0);
        dev::cp_async4(ra + i, ok ? w.nested + (b >> 8) : w.nested, ok ? 4 : 0);
      } else {
        dev::cp_async4(ra + i, ok ? w.absmax + b : w.absmax, ok ? 4 : 0);
      }
    }
  };
  // Each warp decodes the 64 entries of its own 32 rows (lane l: row wn*32 + l, both halves)
  // into its own buffer, so only a warp-level sync separates decode and use.
  auto decode_abs = [&](int stage, int kt, float* mine) {
    const uint32_t* rq = s_raw + stage * kBN * 4;
    const float* ra = reinterpret_cast<const float*>(rq + kBN * 2);
#pragma unroll
    for (int h = 0; h < 2; h++) {
      const int i = (wn * 32 + lane) * 2 + h;
      bool ok;
      const int64_t b = abs_index(i, kt, ok);
      float a = 0.0f;
      if (ok) {
        if (DQ) {
          const uint32_t q = (rq[i] >> (8 * (int)(b & 3))) & 0xffu;
          a = dev::dq_absmax(s_ncode, (uint8_t)q, ra[i], off);
        } else {
          a = ra[i];
        }
      }
      mine[lane * 2 + h] = a;
    }
  };

  float acc[Cfg::MT][4][4];
#pragma unroll
  for (int i = 0; i < Cfg::MT; i++)
#pragma unroll
    for (int j = 0; j < 4; j++)
#pragma unroll
      for (int q = 0; q < 4; q++) acc[i][j][q] = 0.0f;

#pragma unroll
  for (int p = 0; p < kStages - 1; p++) {
    if (p < nk) {
      issue_tile(p, kt_begin + p);
      issue_abs(p, kt_begin + p);
    }
    dev::cp_async_commit();
  }

  const int g = lane >> 2, t = lane & 3;
  for (int it = 0; it < nk; it++) {
    dev::cp_async_wait<kStages - 2>();
    __syncthreads();  // tile `it` landed for every thread; iteration it-1 is done with s_abs
    if (it + kStages - 1 < nk) {
      issue_tile((it + kStages - 1) % kStages, kt_begin + it + kStages - 1);
      issue_abs((it + kStages - 1) % kStages, kt_begin + it + kStages - 1);
    }
    dev::cp_async_commit();
    float* abs_w = s_abs + warp * 64;
    decode_abs(it % kStages, kt_begin + it, abs_w);
    __syncwarp();

    const int st = it % kStages;
    const uint8_t* a_s = s_a + st * Cfg::kABytes;
    const uint8_t* b_s = s_b + st * Cfg::kBBytes;
    const float* abs_s = abs_w - wn * 64;  // indexed by tile row r = wn*32 + j*8 + g
    // B fragments for this warp's four n8 tiles: row (wn*32 + j*8 + g), byte t of each word.
    uint32_t words[4][8];
    T2 scale[4][2];
#pragma unroll
    for (int j = 0; j < 4; j++) {
      const int r = wn * 32 + j * 8 + g;
      const uint4 lo = *reinterpret_cast<const uint4*>(b_s + b_off(r, 0));
      const uint4 hi = *reinterpret_cast<const uint4*>(b_s + b_off(r, 1));
      words[j][0] = lo.x; words[j][1] = lo.y; words[j][2] = lo.z; words[j][3] = lo.w;
      words[j][4] = hi.x; words[j][5] = hi.y; words[j][6] = hi.z; words[j][7] = hi.w;
      scale[j][0] = P2::splat(abs_s[r * 2]);
      scale[j][1] = P2::splat(abs_s[r * 2 + 1]);
    }
#pragma unroll
    for (int s = 0; s < 4; s++) {
      uint32_t af[Cfg::MT][4];
#pragma unroll
      for (int i = 0; i < Cfg::MT; i++) {
        const int mat = lane >> 3;
        const int r = wm * (BM / Cfg::WM) + i * 16 + (mat & 1) * 8 + (lane & 7);
        dev::ldmatrix_x4(af[i], a_s + a_off(r, 2 * s + (mat >> 1)));
      }
#pragma unroll
      for (int j = 0; j < 4; j++) {
        uint32_t bf[2];
#pragma unroll
        for (int h = 0; h < 2; h++) {
          const uint32_t byte = (words[j][2 * s + h] >> (8 * t)) & 0xffu;
          uint32_t code = s_lut[(byte << 5) | lane];
          T2 v = *reinterpret_cast<T2*>(&code);
          v = __hmul2(v, scale[j][s >> 1]);
          bf[h] = *reinterpret_cast<uint32_t*>(&v);
        }
#pragma unroll
        for (int i = 0; i < Cfg::MT; i++) dev::mma_16816<T>(acc[i][j], af[i], bf);
      }
    }
  }
  dev::cp_async_wait<0>();

#pragma unroll
  for (int i = 0; i < Cfg::MT; i++)
#pragma unroll
    for (int j = 0; j < 4; j++)
#pragma unroll
      for (int q = 0; q < 4; q++) {
        const int m = m0 + wm * (BM / Cfg::WM) + i * 16 + g + (q >> 1) * 8;
        const int n = n0 + wn * 32 + j * 8 + t * 2 + (q & 1);
        if (m < M && n < N) {
          if (ws) {
            ws[((int64_t)blockIdx.z * M + m) * N + n] = acc[i][j][q];
          } else {
            out[(int64_t)m * N + n] = dev::from_f32<T>(acc[i][j][q] + (bias ? dev::to_f32(bias[n]) : 0.0f));
          }
        }
      }
}

template <typename T>
__global__ void k_splitk_reduce(const float* __restrict__ ws, int splits, int64_t MN, int64_t N,
                                const T* __restrict__ bias, T* __restrict__ out) {
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < MN; i += (int64_t)gridDim.x * blockDim.x) {
    float s = 0.0f;
    for (int z = 0; z < splits; z++) s += ws[z * MN + i];
    out[i] = dev::from_f32<T>(s + (bias ? dev::to_f32(bias[i % N]) : 0.0f));
  }
}

// ---- code-pair tables ------------------------------------------------------------------------------
// byte -> (code of the high nibble, code of the low nibble) as a half2/bfloat162, replicated
// for the 32 lanes (entry byte * 32 + lane) so table lookups never conflict on banks. Built
// once per device and type; kernels copy it into shared memory with 16-byte loads.
template <typename T, int KIND>
__global__ void k_build_pair_lut(uint32_t* __restrict__ out) {
  using P2 = Pair<T>;
  using T2 = typename P2::type;
  __shared__ float s_tab[64];
  dev::load_tables4(s_tab);
  __syncthreads();
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < 256 * 32; i += gridDim.x * blockDim.x) {
    const uint32_t byte = (uint32_t)i >> 5;
    T2 h = P2::make(dev::value4<KIND>(s_tab, byte >> 4), dev::value4<KIND>(s_tab, byte & 15));
    out[i] = *reinterpret_cast<uint32_t*>(&h);
  }
}

template <typename T, int KIND>
const uint4* pair_lut_device() {
  static uint32_t* tables[64] = {nullptr};
  static std::mutex mu;  // bindings may call from several threads
  std::lock_guard<std::mutex> lock(mu);
  int dev = 0;
  NIBBLE_CUDA_CHECK(cudaGetDevice(&dev), "cudaGetDevice");
  if (dev >= 64) throw std::runtime_error("matmul_4bit: device ordinal too large");
  if (!tables[dev]) {
    uint32_t* d = nullptr;
    NIBBLE_CUDA_CHECK(cudaMalloc(&d, 256 * 32 * 4), "matmul_4bit: cudaMalloc(code table)");
    k_build_pair_lut<T, KIND><<<32, 256>>>(d);
    NIBBLE_CUDA_CHECK_LAUNCH("matmul_4bit (code table)");
    NIBBLE_CUDA_CHECK(cudaDeviceSynchronize(), "matmul_4bit (code table)");
    tables[dev] = d;
  }
  return reinterpret_cast<const uint4*>(tables[dev]);
}

// ---- host side --------------------------------------------------------------------------------------
W4 make_w4(const Weight4bit& w, const char* op) {
  if (!w.packed) throw std::runtime_error(std::string(op) + ": missing packed weight");
  if (!w.absmax && !(w.qabsmax && w.nested_absmax && w.nested_code))
    throw std::runtime_error(std::string(op) + ": missing absmax (or double-quantized absmax state)");
  if (w.N <= 0 || w.K <= 0) throw std::runtime_error(std::string(op) + ": empty weight");
  if (w.N > 0x7fffffffLL || w.K > 0x7fffffffLL) throw std::runtime_error(std::string(op) + ": weight too large");
  int l2 = 0;
  if (!fmt::valid_4bit_blocksize(w.blocksize))
    throw std::runtime_error(std::string(op) + ": unsupported blocksize " + std::to_string(w.blocksize));
  while ((1 << l2) < w.blocksize) l2++;
  W4 d;
  d.packed = w.packed;
  d.absmax = w.absmax;
  d.qabsmax = w.qabsmax;
  d.nested = w.nested_absmax;
  d.ncode = w.nested_code;
  d.offset_ptr = w.offset_ptr;
  d.offset = w.offset;
  d.log2_bs = l2;
  d.N = w.N;
  d.K = w.K;
  d.nblocks = (w.N * w.K + w.blocksize - 1) / w.blocksize;
  return d;
}

bool gemv_ok(const void* x, const Weight4bit& w) {
  return w.K % 32 == 0 && aligned16(x) && aligned16(w.packed) && ((uintptr_t)w.qabsmax & 3) == 0;
}
bool mma_ok(const void* x, DType dt, const Weight4bit& w) {
  return (dt == DType::F16 || dt == DType::BF16) && w.K % 32 == 0 && aligned16(x) && aligned16(w.packed) &&
         ((uintptr_t)w.qabsmax & 3) == 0;
}

template <typename T, int KIND, bool DQ>
void run_gemv(int lut, const T* x, const W4& w, const T* bias, T* out, cudaStream_t s, const char* op) {
  const int64_t C = w.K / 32;
  int KW = 1;
  while (KW < 8 && (int64_t)KW * 32 < C) KW *= 2;
  const int nseg = (int)((C + KW * 32 - 1) / (KW * 32));
  const int rows_per_iter = (8 / KW) * kGemvUnroll;
  const int64_t iters = (w.N + rows_per_iter - 1) / rows_per_iter;
  const int64_t slots = (int64_t)sm_count() * 2;
  int64_t per_cta = (iters + slots - 1) / slots;
  per_cta = std::min<int64_t>(per_cta, kGemvPartCap / (rows_per_iter * KW));
  const unsigned grid = (unsigned)((iters + per_cta - 1) / per_cta);
  const size_t smem = (256 + kGemvPartCap) * 4 + (lut >= 1 ? 256 * 32 * 4 : 16 * 32 * 4);
  auto launch = [&](auto kernel) {
    NIBBLE_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem), op);
    // The float-code path (lut 0) builds its table in the kernel: no device table, so it can
    // also be captured into a CUDA graph before any table exists (building one synchronizes).
    kernel<<<grid, kGemvThreads, smem, s>>>(x, w, bias, out, KW, nseg, (int)per_cta,
                                           lut >= 1 ? pair_lut_device<__half, KIND>() : nullptr);
  };
  if (lut == 2) {
    if constexpr (std::is_same<T, __half>::value) launch(k_gemv4<T, KIND, DQ, 2>);
    else throw std::runtime_error(std::string(op) + ": the half2-accumulating GEMV needs float16 activations");
  } else if (lut == 1) {
    launch(k_gemv4<T, KIND, DQ, 1>);
  } else {
    launch(k_gemv4<T, KIND, DQ, 0>);
  }
  NIBBLE_CUDA_CHECK_LAUNCH(op);
}

template <typename T, int KIND, bool DQ>
void run_simt(const T* x, int64_t M, const W4& w, const T* bias, T* out, cudaStream_t s, const char* op) {
  dim3 grid((unsigned)((w.N + kSimtBN - 1) / kSimtBN), (unsigned)((M + kSimtBM - 1) / kSimtBM));
  if (grid.y > 65535) throw std::runtime_error(std::string(op) + ": too many rows for one launch");
  k_simt4<T, KIND, DQ><<<grid, 256, 0, s>>>(x, M, w, bias, out);
  NIBBLE_CUDA_CHECK_LAUNCH(op);
}

template <typename T, int BM, int KIND, bool DQ>
void run_mma_bm(const T* x, int64_t M, const W4& w, const T* bias, T* out, cudaStream_t s, const char* op) {
  using Cfg = MmaCfg<BM>;
  const int ktiles = (int)((w.K + kBK - 1) / kBK);
  const int64_t ctas = ((w.N + kBN - 1) / kBN) * ((M + BM - 1) / BM);
  const int64_t target = (int64_t)sm_count() * Cfg::kCtasPerSm;
  int splits = (int)std::min<int64_t>(std::max<int64_t>(1, (target + ctas - 1) / ctas), 8);
  splits = std::min(splits, std::max(1, ktiles / 8));
  const int per_split = (ktiles + splits - 1) / splits;
  splits = (ktiles + per_split - 1) / per_split;
  dim3 grid((unsigned)((w.N + kBN - 1) / kBN), (unsigned)((M + BM - 1) / BM), (unsigned)splits);
  if (grid.y > 65535) throw std::runtime_error(std::string(op) + ": too many rows for one launch");
  auto k = k_mma4<T, BM, KIND, DQ>;
  NIBBLE_CUDA_CHECK(cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, Cfg::kSmem), op);
  float* ws = nullptr;
  if (splits > 1)
    NIBBLE_CUDA_CHECK(cudaMallocAsync((void**)&ws, sizeof(float) * splits * M * w.N, s),
                      std::string(op) + ": split-K workspace");
  k<<<grid, Cfg::kThreads, Cfg::kSmem, s>>>(x, (int)M, w, bias, out, ws, per_split, pair_lut_device<T, KIND>());
  cudaError_t e = cudaGetLastError();
  if (e == cudaSuccess && ws) {
    const int64_t MN = M * w.N;
    const unsigned g = (unsigned)std::min<int64_t>((MN + 255) / 256, (int64_t)sm_count() * 16);
    k_splitk_reduce<T><<<g, 256, 0, s>>>(ws, splits, MN, w.N, bias, out);
    e = cudaGetLastError();
  }
  if (ws) cudaFreeAsync(ws, s);
  NIBBLE_CUDA_CHECK(e, std::string("launch ") + op);
}

template <typename T, int KIND, bool DQ>
void run_mma(const T* x, int64_t M, const W4& w, const T* bias, T* out, cudaStream_t s, const char* op) {
  if (M <= 16) run_mma_bm<T, 16, KIND, DQ>(x, M, w, bias, out, s, op);
  else if (M <= 32) run_mma_bm<T, 32, KIND, DQ>(x, M, w, bias, out, s, op);
  else if (M <= 64) run_mma_bm<T, 64, KIND, DQ>(x, M, w, bias, out, s, op);
  else run_mma_bm<T, 128, KIND, DQ>(x, M, w, bias, out, s, op);
}

template <typename T, int KIND, bool DQ>
void dispatch_path(Matmul4bitPath path, const T* x, int64_t M, const W4& w, const T* bias, T* out, cudaStream_t s,
                   const char* op) {
  switch (path) {
    case Matmul4bitPath::Gemv:
    case Matmul4bitPath::GemvHalfLut:
    case Matmul4bitPath::GemvHalf2Acc: {
      const int lut = path == Matmul4bitPath::Gemv ? 0 : path == Matmul4bitPath::GemvHalfLut ? 1 : 2;
      for (int64_t m = 0; m < M; m++) run_gemv<T, KIND, DQ>(lut, x + m * w.K, w, bias, out + m * w.N, s, op);
      break;
    }
    case Matmul4bitPath::Mma:
      if constexpr (std::is_same<T, float>::value) {
        throw std::runtime_error(std::string(op) + ": the tensor-core path needs float16 or bfloat16");
      } else {
        run_mma<T, KIND, DQ>(x, M, w, bias, out, s, op);
      }
      break;
    default: run_simt<T, KIND, DQ>(x, M, w, bias, out, s, op); break;
  }
}

template <typename T>
void dispatch_kind(Matmul4bitPath path, QuantType qt, bool dq, const void* x, int64_t M, const W4& w,
                   const void* bias, void* out, cudaStream_t s, const char* op) {
  const T* xt = static_cast<const T*>(x);
  const T* bt = static_cast<const T*>(bias);
  T* ot = static_cast<T*>(out);
  if (qt == QuantType::NF4) {
    if (dq) dispatch_path<T, 1, true>(path, xt, M, w, bt, ot, s, op);
    else dispatch_path<T, 1, false>(path, xt, M, w, bt, ot, s, op);
  } else {
    if (dq) dispatch_path<T, 0, true>(path, xt, M, w, bt, ot, s, op);
    else dispatch_path<T, 0, false>(path, xt, M, w, bt, ot, s, op);
  }
}

}  // namespace

void matmul_4bit_path(Matmul4bitPath path, const void* x, DType dt, int64_t M, const Weight4bit& wt,
                      const void* bias, void* out, cudaStream_t s) {
  const char* op = "matmul_4bit";
  if (M <= 0) throw std::runtime_error(std::string(op) + ": empty input");
  const W4 w = make_w4(wt, op);
  if (path == Matmul4bitPath::Auto) {
    // One float32 row: the GPT-2 plan's decode GEMV is a general 4-bit GEMV with float32
    // activations and exact float32 code values, like the Gemv path, and faster on every
    // shape measured (bench_quant_cuda "plan decode" rows: 8192^2 1299 vs 1097 GB/s, 4096^2
    // 1035 vs 690). It declines shapes it does not take (then the paths below run).
    if (M == 1 && dt == DType::F32) {
      gpt2_cuda::QLinear L;
      L.kind = gpt2_cuda::QLinear::k4bit, L.N = wt.N, L.K = wt.K, L.bias = bias;
      L.packed = wt.packed, L.absmax = wt.absmax, L.qabsmax = wt.qabsmax, L.nested_absmax = wt.nested_absmax;
      L.nested_code = wt.nested_code, L.offset = wt.offset_ptr, L.blocksize = wt.blocksize, L.quant_type = (int)wt.qt;
      const bool offset_on_device = wt.absmax != nullptr || wt.offset_ptr != nullptr;
      if (offset_on_device && gpt2_cuda::decode_gemv_4bit(L, DType::F32, gpt2_cuda::kEpilogueNone, static_cast<float*>(out),
                                                          static_cast<const float*>(x), 1, nullptr, s))
        return;
    }
    if (M == 1 && gemv_ok(x, wt)) path = Matmul4bitPath::Gemv;  // exact float32 code values
    else if (M > 1 && mma_ok(x, dt, wt)) path = Matmul4bitPath::Mma;
    else path = Matmul4bitPath::Simt;
  }
  const bool gemv = path == Matmul4bitPath::Gemv || path == Matmul4bitPath::GemvHalfLut ||
                    path == Matmul4bitPath::GemvHalf2Acc;
  if (gemv && !gemv_ok(x, wt))
    throw std::runtime_error(std::string(op) + ": GEMV path needs K % 32 == 0 and 16-byte aligned operands");
  if (path == Matmul4bitPath::Mma && !mma_ok(x, dt, wt))
    throw std::runtime_error(std::string(op) + ": tensor-core path needs float16/bfloat16, K % 32 == 0, aligned operands");
  const bool dq = wt.absmax == nullptr;
  switch (dt) {
    case DType::F32: dispatch_kind<float>(path, wt.qt, dq, x, M, w, bias, out, s, op); break;
    case DType::F16: dispatch_kind<__half>(path, wt.qt, dq, x, M, w, bias, out, s, op); break;
    case DType::BF16: dispatch_kind<__nv_bfloat16>(path, wt.qt, dq, x, M, w, bias, out, s, op); break;
    default: throw std::runtime_error(std::string(op) + ": x must be float32, float16 or bfloat16");
  }
}

void matmul_4bit(const void* x, DType dt, int64_t M, const Weight4bit& w, const void* bias, void* out,
                 cudaStream_t s) {
  matmul_4bit_path(Matmul4bitPath::Auto, x, dt, M, w, bias, out, s);
}

}  // namespace cuda
}  // namespace nibble
