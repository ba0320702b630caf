// Decode-step GEMV for a few rows (batched generation, short prefills: M = 2..16) on the tensor
// cores, for 4-bit (NF4/FP4) and float16/bfloat16 weights (formats W4 and W16 below).
// The one-warp-per-output-row GEMV (gpt2_decode_gemv.cu) does the multiply-adds of every
// activation row on the CUDA cores and re-reads the activations for each weight: at M = 8 it
// ran 4-9x slower than at M = 1 (GPT-2 XL nf4, ncu: 42-116 us a layer against 6-13 us).
// Here a warp owns 16 output features and multiplies them with up to 8 activation rows per
// mma.sync (m16n8k8, "swapped": the weight is the A operand, the activations the B operand),
// so a weight is decoded once and each activation value is loaded once per 16 features.
//
// Float32 compute with TF32 tensor cores: each operand is split into a TF32 high part and the
// float32 remainder, and three products (hi*hi + hi*lo + lo*hi) recover ~21 bits, the error of
// a float32 summation order change (the native tests hold it to the CPU reference at 1e-5).
// The operands keep float32's range: no float16 overflow for large activations.
//
// The K order inside a chunk is permuted (both operands alike, so the dot product is the same
// sum): the four lanes of a quad each read 16 consecutive weights (8 bytes) of a row, and
// k-step j of the chunk takes their elements 2j and 2j+1. A chunk is 64 weights of a row,
// inside one absmax block (blocksize >= 64), so the absmax scales the chunk's partial sum
// once instead of every weight.
#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <type_traits>

#include "cuda/gpt2_decode_gemv.h"
#include "cuda/gpt2_device.cuh"
#include "cuda/pdl.cuh"
#include "cuda/quant_device.cuh"

namespace nibble {
namespace gpt2_cuda {

NIBBLE_PROBE_TU(gpt2_decode_mma)  // probe.cuh

namespace {

constexpr int kWarps = 8, kGroupThreads = kWarps * 32;  // a group of warps shares a row tile
// Groups a block: two for one activation tile (the staged rows and layernorm shared by 16
// warps, twice the warps an SM keeps in flight at <= 128 registers), one for two tiles.
__host__ __device__ constexpr int groups(int NT) { return NT == 1 ? 2 : 1; }
constexpr int kTileRows = 16;  // output features per block (one mma M tile)
constexpr int kAhead = 4;      // chunks a warp keeps in flight
constexpr size_t kMaxStaged = 204 * 1024;  // + the static shared memory: within the 227 KB opt-in
constexpr size_t kMaxStagedPlain = 100 * 1024;

struct Args {
  const void* w;            // packed 4-bit weight, or the 16-bit weight [N, K]
  const float* absmax;      // 4-bit: plain absmax, or null with double quantization:
  const uint8_t* qabsmax;   //   the absmax quantized with the nested code,
  const float* nested;      //   its per-256 scales,
  const float* ncode;       //   the nested code (256 values)
  const float* offset_ptr;  //   and the offset (a device scalar)
  int N, K, log2_bs;
  const void* bias;
  DType bias_dt;
  float* out;
  // The fused layernorm (null w: none).
  const void* ln_w;
  const void* ln_b;
  DType ln_dt;
  float eps;
};

// ---- weight formats ------------------------------------------------------------------------
// A format reads one chunk of a lane's two weight rows (g and g + 8 of the tile), kPer
// consecutive weights of each at k = c * kChunk + kPer * t, and turns k-step j's pair
// (elements 2j, 2j + 1) into the mma's A registers: a0/a2 row g, a1/a3 row g + 8.

// bitsandbytes NF4 (KIND 1) / FP4 (KIND 0), absmax plain or double-quantized. The code value
// has more bits than TF32 keeps, so A comes as a high part and a remainder (s_code); the chunk
// lies in one absmax block per row (blocksize >= 64), which scales its sum once.
template <int KIND, bool DQ>
struct W4 {
  static constexpr int kChunk = 64, kPer = 16;
  static constexpr bool kSplitA = true;
  struct Chunk {
    uint2 w0, w1;     // 16 weights of each row, element 2i in the high nibble of byte i
    uint32_t q0, q1;  // quantized absmax (double quantization)
    float a0, a1;     // plain absmax, or the nested scale
  };
  __device__ static __forceinline__ Chunk fetch(const Args& a, int r0, int c, int t) {
    Chunk ch;
    ch.w0 = ch.w1 = make_uint2(0, 0);
    ch.q0 = ch.q1 = 0;
    ch.a0 = ch.a1 = 0.0f;
    const int r1 = r0 + 8;
    const uint2* p = reinterpret_cast<const uint2*>(a.w);  // 16 weights a unit, K / 16 a row
    const int u = c * (kChunk / 16) + t, row_u = a.K >> 4;
    const uint32_t b0 = ((uint32_t)r0 * (uint32_t)a.K + (uint32_t)c * kChunk) >> a.log2_bs;
    const uint32_t b1 = ((uint32_t)r1 * (uint32_t)a.K + (uint32_t)c * kChunk) >> a.log2_bs;
    if (r0 < a.N) {
      ch.w0 = __ldcs(p + r0 * row_u + u);
      if (DQ) ch.q0 = __ldg(a.qabsmax + b0), ch.a0 = __ldg(a.nested + (b0 >> 8));
      else ch.a0 = __ldg(a.absmax + b0);
    }
    if (r1 < a.N) {
      ch.w1 = __ldcs(p + r1 * row_u + u);
      if (DQ) ch.q1 = __ldg(a.qabsmax + b1), ch.a1 = __ldg(a.nested + (b1 >> 8));
      else ch.a1 = __ldg(a.absmax + b1);
    }
    return ch;
  }
  __device__ static __forceinline__ void a_frag(const Chunk& ch, int j, const float2* s_code, uint32_t (&ah)[4],
                                                uint32_t (&al)[4]) {
    const uint32_t byte0 = ((j < 4 ? ch.w0.x : ch.w0.y) >> (8 * (j & 3))) & 0xffu;
    const uint32_t byte1 = ((j < 4 ? ch.w1.x : ch.w1.y) >> (8 * (j & 3))) & 0xffu;
    const float2 e0 = s_code[byte0 >> 4], e2 = s_code[byte0 & 15u];
    const float2 e1 = s_code[byte1 >> 4], e3 = s_code[byte1 & 15u];
    ah[0] = __float_as_uint(e0.x), ah[1] = __float_as_uint(e1.x), ah[2] = __float_as_uint(e2.x), ah[3] = __float_as_uint(e3.x);
    al[0] = __float_as_uint(e0.y), al[1] = __float_as_uint(e1.y), al[2] = __float_as_uint(e2.y), al[3] = __float_as_uint(e3.y);
  }
  __device__ static __forceinline__ void scales(const Chunk& ch, const float* s_ncode, float offset, float& s0, float& s1) {
    s0 = DQ ? cuda::dev::dq_absmax(s_ncode, (uint8_t)ch.q0, ch.a0, offset) : ch.a0;
    s1 = DQ ? cuda::dev::dq_absmax(s_ncode, (uint8_t)ch.q1, ch.a1, offset) : ch.a1;
  }
};

// float16 / bfloat16 weights [N, K]: every value is exact in TF32 (11 and 8 significant
// bits), so A needs no remainder and a k-step takes two products instead of three.
template <typename T>
struct W16 {
  static constexpr int kChunk = 32, kPer = 8;
  static constexpr bool kSplitA = false;
  struct Chunk {
    uint4 w0, w1;  // 8 weights of each row
  };
  __device__ static __forceinline__ Chunk fetch(const Args& a, int r0, int c, int t) {
    Chunk ch;
    ch.w0 = ch.w1 = make_uint4(0, 0, 0, 0);
    const uint4* p = reinterpret_cast<const uint4*>(a.w);  // 8 weights a unit, K / 8 a row
    const int u = c * (kChunk / 8) + t, row_u = a.K >> 3;
    if (r0 < a.N) ch.w0 = __ldcs(p + r0 * row_u + u);
    if (r0 + 8 < a.N) ch.w1 = __ldcs(p + (r0 + 8) * row_u + u);
    return ch;
  }
  __device__ static __forceinline__ float lo16(uint32_t v) {
    if (std::is_same<T, __half>::value) return __half2float(__ushort_as_half((unsigned short)(v & 0xffffu)));
    return __uint_as_float(v << 16);
  }
  __device__ static __forceinline__ float hi16(uint32_t v) {
    if (std::is_same<T, __half>::value) return __half2float(__ushort_as_half((unsigned short)(v >> 16)));
    return __uint_as_float(v & 0xffff0000u);
  }
  __device__ static __forceinline__ void a_frag(const Chunk& ch, int j, const float2*, uint32_t (&ah)[4], uint32_t (&al)[4]) {
    const uint32_t v0 = j == 0 ? ch.w0.x : j == 1 ? ch.w0.y : j == 2 ? ch.w0.z : ch.w0.w;
    const uint32_t v1 = j == 0 ? ch.w1.x : j == 1 ? ch.w1.y : j == 2 ? ch.w1.z : ch.w1.w;
    ah[0] = __float_as_uint(lo16(v0)), ah[2] = __float_as_uint(hi16(v0));
    ah[1] = __float_as_uint(lo16(v1)), ah[3] = __float_as_uint(hi16(v1));
    al[0] = al[1] = al[2] = al[3] = 0u;
  }
  __device__ static __forceinline__ void scales(const Chunk&, const float*, float, float& s0, float& s1) {
    s0 = s1 = 1.0f;
  }
};

// Activations staged in shared memory, row stride K + 4 floats (an odd number of 16-byte
// units) and the units swizzled (unit bit 1 ^= unit bit 3): the 16-byte loads of a quad's
// lanes (consecutive k) and of the neighbouring row's quad then hit distinct banks, without
// padding that would keep 8 rows of 6400 (GPT-2 XL's c_proj input) out of shared memory.
__host__ __device__ __forceinline__ int swz(int k) { return k ^ ((k >> 2) & 8); }
__host__ __device__ __forceinline__ int row_stride(int K) { return K + 4; }

// Staged rows, then the layernorm's weight and bias when there is one.
size_t staged_bytes(int M, int K, bool ln) { return ((size_t)M * row_stride(K) + (ln ? 2 * (size_t)K : 0)) * 4; }

// Barrier of one group's warps: named barriers 1 and 2 (0 is __syncthreads), immediate ids so
// the kernel reserves three barriers rather than all sixteen.
template <int G>
__device__ __forceinline__ void group_sync(int ng, int group) {
  if (G == 1 || ng == 1) __syncthreads();
  else if (group == 0) asm volatile("bar.sync 1, %0;" ::"n"(kGroupThreads) : "memory");
  else asm volatile("bar.sync 2, %0;" ::"n"(kGroupThreads) : "memory");
}

__device__ __forceinline__ void split_tf32(float v, uint32_t& hi, uint32_t& lo) {
  const uint32_t h = __float_as_uint(v) & 0xffffe000u;  // what the tensor core reads of a TF32 operand
  hi = h;
  lo = __float_as_uint(v - __uint_as_float(h));  // exact; the tensor core keeps its top 10 bits
}

__device__ __forceinline__ void mma_tf32(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// Stages the M activation rows and applies the layernorm in place, the expression of
// layernorm_kernel: every row's statistics in parallel, one warp a row or, for long rows with
// warps to spare, several.
// Loads go out kStageBatch at a time before any is stored: issued one by one, each waited
// for its L2 round trip (a 1600-wide, 8-row stage is 13 of them a thread).
constexpr int kStageBatch = 8;
template <int NT>
__device__ void stage(float* s_x, const float* __restrict__ x, int M, const Args& a) {
  constexpr int kThreads = kGroupThreads * groups(NT);
  const int K = a.K, K4 = K >> 2, S = row_stride(K), total = M * K4;
  for (int base = threadIdx.x; base < total; base += kThreads * kStageBatch) {
    float4 v[kStageBatch];
#pragma unroll
    for (int u = 0; u < kStageBatch; u++) {
      const int i = base + u * kThreads;
      v[u] = i < total ? __ldg(reinterpret_cast<const float4*>(x) + i) : make_float4(0, 0, 0, 0);
    }
#pragma unroll
    for (int u = 0; u < kStageBatch; u++) {
      const int i = base + u * kThreads, m = i / K4;
      if (i < total) *reinterpret_cast<float4*>(s_x + m * S + swz((i - m * K4) * 4)) = v[u];
    }
  }
  if (!a.ln_w) return;
  __syncthreads();
  const int lane = threadIdx.x & 31;
  const float* lnw = s_x + M * S;  // prefetched by prefetch_ln()
  const float* lnb = lnw + K;
  // Element k = 32 i + lane of a row sits at 32 i + (lane ^ 8 (i & 1)) (swz): pairs of i keep
  // the addressing to two base offsets.
  const int l0 = lane, l1 = lane ^ 8, n32 = K >> 5;
  constexpr int kBlockWarps = kThreads / 32;
  if (M * 2 <= kBlockWarps && K >= 1024) {
    // Fewer rows than warps (8 rows, 16 warps) and long rows: wpr warps a row, each over a
    // contiguous range of it, partial sums combined in a fixed order through shared memory.
    // (Short rows keep one warp a row: at GPT-2 124M's 768 the two extra barriers cost more,
    // same-run A/B 124M B=8 -3.5% nf4 / -5% float16; GPT-2 XL's 1600 gains.)
    __shared__ float s_red[2][kBlockWarps];
    int wpr = 2;
    while (M * wpr * 2 <= kBlockWarps) wpr *= 2;
    const int w = threadIdx.x >> 5, m = w / wpr, part = w % wpr;
    const bool active = m < M;
    const int i0 = part * n32 / wpr, i1 = (part + 1) * n32 / wpr;
    float* row = s_x + (active ? m : 0) * S;
    float s = 0.0f;
    if (active)
      for (int i = i0; i < i1; i++) s += row[32 * i + ((i & 1) ? l1 : l0)];
    s = warp_sum(s);
    if (lane == 0) s_red[0][w] = s;
    __syncthreads();
    float mean = 0.0f;
    if (active) {
      for (int q = 0; q < wpr; q++) mean += s_red[0][m * wpr + q];
      mean /= (float)K;
    }
    float v = 0.0f;
    if (active)
      for (int i = i0; i < i1; i++) {
        const float d = row[32 * i + ((i & 1) ? l1 : l0)] - mean;
        v += d * d;
      }
    v = warp_sum(v);
    if (lane == 0) s_red[1][w] = v;
    __syncthreads();
    if (!active) return;
    float var = 0.0f;
    for (int q = 0; q < wpr; q++) var += s_red[1][m * wpr + q];
    const float rstd = rsqrtf(var / (float)K + a.eps);
    for (int i = i0; i < i1; i++) {
      float* p = row + 32 * i + ((i & 1) ? l1 : l0);
      *p = (*p - mean) * rstd * lnw[32 * i + lane] + lnb[32 * i + lane];
    }
    return;
  }
  for (int m = threadIdx.x >> 5; m < M; m += kBlockWarps) {
    float* row = s_x + m * S;
    float s0 = 0.0f, s1 = 0.0f;
    int i = 0;
#pragma unroll 2
    for (; i + 1 < n32; i += 2) s0 += row[32 * i + l0], s1 += row[32 * i + 32 + l1];
    if (i < n32) s0 += row[32 * i + l0];
    const float mean = warp_sum(s0 + s1) / (float)K;
    float v0 = 0.0f, v1 = 0.0f;
#pragma unroll 2
    for (i = 0; i + 1 < n32; i += 2) {
      const float d0 = row[32 * i + l0] - mean, d1 = row[32 * i + 32 + l1] - mean;
      v0 += d0 * d0, v1 += d1 * d1;
    }
    if (i < n32) {
      const float d0 = row[32 * i + l0] - mean;
      v0 += d0 * d0;
    }
    const float rstd = rsqrtf(warp_sum(v0 + v1) / (float)K + a.eps);
#pragma unroll 2
    for (i = 0; i < n32; i++) {
      float* p = row + 32 * i + ((i & 1) ? l1 : l0);
      *p = (*p - mean) * rstd * lnw[32 * i + lane] + lnb[32 * i + lane];
    }
  }
}

// The layernorm's weight and bias into shared memory (after the staged rows), read before the
// kernel waits for its predecessor: they are parameters, so their latency hides behind it
// instead of following each row's statistics.
template <int NT>
__device__ void prefetch_ln(float* s_x, const Args& a, int M) {
  constexpr int kThreads = kGroupThreads * groups(NT);
  float* lnw = s_x + M * row_stride(a.K);
  for (int base = threadIdx.x; base < a.K; base += kThreads * kStageBatch) {
    float w[kStageBatch], b[kStageBatch];  // all loads out before the first store
#pragma unroll
    for (int u = 0; u < kStageBatch; u++) {
      const int k = base + u * kThreads;
      w[u] = k < a.K ? load_f32(a.ln_w, a.ln_dt, k) : 0.0f;
      b[u] = k < a.K ? load_f32(a.ln_b, a.ln_dt, k) : 0.0f;
    }
#pragma unroll
    for (int u = 0; u < kStageBatch; u++) {
      const int k = base + u * kThreads;
      if (k < a.K) lnw[k] = w[u], lnw[a.K + k] = b[u];
    }
  }
}

// This lane's activations for one chunk: rows nt * 8 + g, the P = kPer k of its quad position.
template <int NT, bool SX, int P>
__device__ __forceinline__ void load_x(float (&xv)[NT][P], const float* s_x, const float* __restrict__ x, int M,
                                       int K, int k0, int g) {
  const int S = row_stride(K);
#pragma unroll
  for (int nt = 0; nt < NT; nt++) {
    const int m = nt * 8 + g;
#pragma unroll
    for (int i = 0; i < P / 4; i++) {
      float4 v;
      if (m >= M) v = make_float4(0, 0, 0, 0);
      else if (SX) v = *reinterpret_cast<const float4*>(s_x + m * S + swz(k0 + 4 * i));
      else v = __ldg(reinterpret_cast<const float4*>(x + m * K + k0) + i);
      xv[nt][4 * i] = v.x, xv[nt][4 * i + 1] = v.y, xv[nt][4 * i + 2] = v.z, xv[nt][4 * i + 3] = v.w;
    }
  }
}

// F: the weight format. NT: activation tiles of 8 rows. SX: activations staged in shared
// memory (else read from global memory, L1/L2-resident, one chunk ahead).
// A block's ng groups loop over row tiles (blockIdx.x * ng + group, + gridDim.x * ng, ...), so
// the staging and layernorm are paid once per block; a group's warps split each tile's K, and a
// warp's ring of chunk loads runs on across tiles.
template <typename F, int KIND, int NT, int EPI, bool SX>
__global__ void __launch_bounds__(kGroupThreads * groups(NT)) k_decode_mma(const float* __restrict__ x, Args a, int M, int ng) {
  ProbeScope probe;
  constexpr int P = F::kPer, kSteps = P / 2;
  constexpr bool kNested = KIND >= 0;  // 4-bit formats (the double quantization may need it)
  extern __shared__ float4 s_dyn[];
  float* s_x = reinterpret_cast<float*>(s_dyn);
  __shared__ float2 s_code[16];  // 4-bit: the code value split into its TF32 high part and remainder
  __shared__ float s_ncode[kNested ? 256 : 1];
  constexpr int G = groups(NT);
  static_assert(kWarps * 32 >= NT * 8 * kTileRows, "an epilogue pair a thread of a group");
  __shared__ float s_part[2][G * kWarps][NT][kTileRows][8];  // by tile parity: one barrier a tile
  // ng groups in use (1 or G): a group's wpt warps split each of its tiles' K.
  const int wpt = G * kWarps / ng, wid = threadIdx.x >> 5, group = wid / wpt, warp = wid % wpt;
  const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3, gt = threadIdx.x - group * wpt * 32;
  const int first_tile = (int)blockIdx.x * ng + group, tile_step = (int)gridDim.x * ng;
  const int C = a.K / F::kChunk, tiles = (a.N + kTileRows - 1) / kTileRows;

  // This warp's chunks in order: (tile, c) for its tiles, c = warp, warp + wpt, ... < C.
  // A warp with no chunk (C <= warp) starts past the last tile.
  auto advance = [&](int& tile, int& c) {
    c += wpt;
    if (c >= C) c = warp, tile += tile_step;
  };
  int tail_tile = warp < C ? first_tile : tiles, tail_c = warp;  // the newest ring entry
  // Weights first: they do not depend on the kernel before this one (pdl.cuh).
  typename F::Chunk ring[kAhead];
#pragma unroll
  for (int i = 0; i < kAhead; i++) {
    if (i) advance(tail_tile, tail_c);
    if (tail_tile < tiles) ring[i] = F::fetch(a, tail_tile * kTileRows + g, tail_c, t);
  }
  float offset = 0.0f;
  if (kNested) {
    if (a.ncode && threadIdx.x < 256) s_ncode[threadIdx.x] = __ldg(a.ncode + threadIdx.x);
    if (threadIdx.x < 16) {
      const float v = KIND == 1 ? cuda::dev::c_tables4.nf4_values[threadIdx.x] : cuda::dev::c_tables4.fp4_values[threadIdx.x];
      const float hi = __uint_as_float(__float_as_uint(v) & 0xffffe000u);
      s_code[threadIdx.x] = make_float2(hi, v - hi);
    }
    if (a.offset_ptr) offset = __ldg(a.offset_ptr);
  }
  if (SX && a.ln_w) prefetch_ln<NT>(s_x, a, M);
  pdl_wait();
  probe.waited();
  pdl_trigger();
  if (SX) stage<NT>(s_x, x, M, a);
  __syncthreads();
  probe.mark(0);

  float xn[NT][P];  // the next chunk's activations (unstaged: loaded one chunk ahead)
  if (!SX && warp < C) load_x<NT, false, P>(xn, s_x, x, M, a.K, warp * F::kChunk + P * t, g);
  // The epilogue's (feature, activation row) pairs, one thread each: NT * 8 * kTileRows pairs
  // a tile and at least as many threads a group (wpt * 32 >= 256 when NT == 2, >= 256 > 128
  // when NT == 1).
  const int e_nt = gt / (8 * kTileRows), e_row = (gt % (8 * kTileRows)) / 8, e_col = gt % 8, e_m = e_nt * 8 + e_col;
  const bool e_mine = gt < NT * 8 * kTileRows && e_m < M;
  for (int tile = first_tile, par = 0; tile < tiles; tile += tile_step, par ^= 1) {
    // This thread's bias and residual requested now, used after the tile's sums: loaded after
    // the barrier, each cost a memory round trip on every tile (the timeline probe put the
    // epilogue at ~1 us of a 3.6 us tile at GPT-2 XL B=8).
    const int e_n = tile * kTileRows + e_row;
    const bool e_live = e_mine && e_n < a.N;
    uint32_t e_bias = 0u;
    float e_prev = 0.0f;
    if (e_live) {
      if (a.bias) e_bias = load_bits(a.bias, a.bias_dt, e_n);
      if (EPI == kEpilogueAccumulate) e_prev = a.out[(size_t)e_m * a.N + e_n];
    }
    float acc[NT][4];
#pragma unroll
    for (int nt = 0; nt < NT; nt++)
#pragma unroll
      for (int i = 0; i < 4; i++) acc[nt][i] = 0.0f;
    for (int c = warp; c < C; c += wpt) {
      const typename F::Chunk cur = ring[0];
#pragma unroll
      for (int i = 0; i + 1 < kAhead; i++) ring[i] = ring[i + 1];
      advance(tail_tile, tail_c);
      if (tail_tile < tiles) ring[kAhead - 1] = F::fetch(a, tail_tile * kTileRows + g, tail_c, t);
      float xv[NT][P];
      if (SX) {
        load_x<NT, true, P>(xv, s_x, x, M, a.K, c * F::kChunk + P * t, g);
      } else {
#pragma unroll
        for (int nt = 0; nt < NT; nt++)
#pragma unroll
          for (int i = 0; i < P; i++) xv[nt][i] = xn[nt][i];
        const int cn = c + wpt < C ? c + wpt : warp;  // the next chunk (next tile: the first again)
        load_x<NT, false, P>(xn, s_x, x, M, a.K, cn * F::kChunk + P * t, g);
      }
      // Independent accumulators (by product and by k-step parity): a chunk's mma.sync chain
      // is then 4 deep instead of 16, its latency no longer the step time.
      constexpr int kSets = NT == 1 ? 2 : 1;
      float hh[kSets][NT][4], hl[kSets][NT][4], lh[kSets][NT][4];
#pragma unroll
      for (int q = 0; q < kSets; q++)
#pragma unroll
        for (int nt = 0; nt < NT; nt++)
#pragma unroll
          for (int i = 0; i < 4; i++) hh[q][nt][i] = hl[q][nt][i] = lh[q][nt][i] = 0.0f;
#pragma unroll
      for (int j = 0; j < kSteps; j++) {
        uint32_t ah[4], al[4];
        F::a_frag(cur, j, s_code, ah, al);
        const int q = j % kSets;
#pragma unroll
        for (int nt = 0; nt < NT; nt++) {
          uint32_t bh0, bl0, bh1, bl1;
          split_tf32(xv[nt][2 * j], bh0, bl0);
          split_tf32(xv[nt][2 * j + 1], bh1, bl1);
          mma_tf32(hh[q][nt], ah, bh0, bh1);
          mma_tf32(hl[q][nt], ah, bl0, bl1);
          if (F::kSplitA) mma_tf32(lh[q][nt], al, bh0, bh1);
        }
      }
      float s0, s1;
      F::scales(cur, s_ncode, offset, s0, s1);
#pragma unroll
      for (int nt = 0; nt < NT; nt++) {
        float v[4];
#pragma unroll
        for (int i = 0; i < 4; i++) {
          v[i] = hh[0][nt][i] + (hl[0][nt][i] + lh[0][nt][i]);
#pragma unroll
          for (int q = 1; q < kSets; q++) v[i] += hh[q][nt][i] + (hl[q][nt][i] + lh[q][nt][i]);
        }
        acc[nt][0] = fmaf(s0, v[0], acc[nt][0]);
        acc[nt][1] = fmaf(s0, v[1], acc[nt][1]);
        acc[nt][2] = fmaf(s1, v[2], acc[nt][2]);
        acc[nt][3] = fmaf(s1, v[3], acc[nt][3]);
      }
    }
    probe.mark(1);
    // Accumulator layout (m16n8): lane (g, t) holds rows g and g + 8, activation rows 2t, 2t + 1.
#pragma unroll
    for (int nt = 0; nt < NT; nt++) {
      s_part[par][wid][nt][g][2 * t] = acc[nt][0];
      s_part[par][wid][nt][g][2 * t + 1] = acc[nt][1];
      s_part[par][wid][nt][g + 8][2 * t] = acc[nt][2];
      s_part[par][wid][nt][g + 8][2 * t + 1] = acc[nt][3];
    }
    group_sync<G>(ng, group);
    // One thread per (feature, activation row): the warps' partial sums in a fixed order (the
    // loads unrolled for the two group sizes, wpt = G * kWarps / ng with ng 1 or G <= 2, so
    // they go out together).
    if (e_live) {
      const float* sp = &s_part[par][group * wpt][e_nt][e_row][e_col];
      constexpr int kStride = NT * kTileRows * 8;  // floats between two warps' partials
      float v = 0.0f;
      if (wpt == 2 * kWarps) {
#pragma unroll
        for (int w = 0; w < 2 * kWarps; w++) v += sp[w * kStride];
      } else {
#pragma unroll
        for (int w = 0; w < kWarps; w++) v += sp[w * kStride];
      }
      if (a.bias) v += bits_f32(e_bias, a.bias_dt);
      float* o = a.out + (size_t)e_m * a.N + e_n;
      *o = EPI == kEpilogueGelu ? gelu_new_f(v) : EPI == kEpilogueAccumulate ? e_prev + v : v;
    }
    probe.mark(2);
    // No second barrier: the next tile writes the other half of s_part, and the one after it
    // comes after the next tile's barrier, which every reader of this half has passed.
  }
}

// The kernel's static shared memory (s_part, s_ncode, s_code) and the most its staged rows
// may take on the current device: kMaxStaged on Hopper, less where the opt-in limit is lower
// (99 KB a block on sm_86/89).
size_t static_smem(int NT) { return sizeof(float) * (2 * groups(NT) * kWarps * NT * kTileRows * 8 + 256 + 32 + 2 * 32); }
size_t max_staged(int NT) {
  static int optin[64] = {};
  int dev = 0;
  if (cudaGetDevice(&dev) != cudaSuccess || dev < 0 || dev >= 64) return 0;
  if (!optin[dev] && cudaDeviceGetAttribute(&optin[dev], cudaDevAttrMaxSharedMemoryPerBlockOptin, dev) != cudaSuccess) {
    (void)cudaGetLastError();
    return 0;
  }
  const size_t limit = (size_t)optin[dev] > static_smem(NT) ? (size_t)optin[dev] - static_smem(NT) : 0;
  return std::min(kMaxStaged, limit);
}

template <typename F, int KIND, int NT, int EPI>
void launch(const float* x, const Args& a, int M, bool staged, cudaStream_t s) {
  const size_t smem = staged ? staged_bytes(M, a.K, a.ln_w != nullptr) : 0;
  auto k = staged ? k_decode_mma<F, KIND, NT, EPI, true> : k_decode_mma<F, KIND, NT, EPI, false>;
  if (smem + static_smem(NT) > 48 * 1024)  // the 48 KB default counts the static part
    NIBBLE_CUDA_CHECK(cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem),
                      "decode GEMV (tensor cores)");
  // Blocks an SM at this shared memory (a block stages the activations once for all its tiles).
  int per_sm = 0;
  constexpr int G = groups(NT);
  if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, k, kGroupThreads * G, smem) != cudaSuccess || per_sm < 1) {
    (void)cudaGetLastError();
    per_sm = 1;
  }
  // One block an SM where there are enough tiles. A block's G groups each take a tile, or all
  // its warps share one tile (twice as fast a tile), whichever finishes the last tile first:
  // GPT-2 XL's 100-tile c_proj runs on 100 SMs, not 50; its 300-tile qkv 3 half-length tiles a
  // block instead of 2 full ones; ties keep the groups (fewer barriers a tile).
  const int tiles = (a.N + kTileRows - 1) / kTileRows, blocks = cuda::sm_count() * per_sm;
  const int whole = (tiles + blocks - 1) / blocks, split = (tiles + blocks * G - 1) / (blocks * G);
  const int ng = G > 1 && whole < split * G ? 1 : G;
  const unsigned grid = (unsigned)std::min(blocks, (tiles + ng - 1) / ng);
  launch_pdl(k, dim3(grid), dim3(kGroupThreads * G), smem, s, "decode GEMV (tensor cores) launch", x, a, M, ng);
}
template <typename F, int KIND, int NT>
void launch_epi(int epi, const float* x, const Args& a, int M, bool staged, cudaStream_t s) {
  if (epi == kEpilogueGelu) launch<F, KIND, NT, kEpilogueGelu>(x, a, M, staged, s);
  else if (epi == kEpilogueAccumulate) launch<F, KIND, NT, kEpilogueAccumulate>(x, a, M, staged, s);
  else launch<F, KIND, NT, kEpilogueNone>(x, a, M, staged, s);
}
// KIND: 1 nf4, 0 fp4, -1 a 16-bit weight.
template <typename F, int KIND>
void launch_nt(int epi, const float* x, const Args& a, int M, bool staged, cudaStream_t s) {
  if (M <= 8) launch_epi<F, KIND, 1>(epi, x, a, M, staged, s);
  else launch_epi<F, KIND, 2>(epi, x, a, M, staged, s);
}

Args make_args(const void* w, int64_t N, int64_t K, const void* bias, DType bias_dt, float* out, const DecodeNorm* norm) {
  Args a = {};
  a.w = w, a.N = (int)N, a.K = (int)K, a.bias = bias, a.bias_dt = bias_dt, a.out = out;
  a.ln_w = norm ? norm->w : nullptr, a.ln_b = norm ? norm->b : nullptr;
  a.ln_dt = norm ? norm->dt : DType::F32, a.eps = norm ? norm->eps : 0.0f;
  return a;
}

// Whether the kernel takes these operands, and whether it stages the activations: when the
// rows fit, every block reads them from L2 once instead of every warp reading its chunks'
// share through L1 (a fused layernorm needs the staged copy).
bool suits(int64_t M, int64_t N, int64_t K, int chunk, const float* x, const void* w, const DecodeNorm* norm,
           bool* staged) {
  if (M < 2 || M > 16 || K % chunk || N * K >= ((int64_t)1 << 31) || (reinterpret_cast<uintptr_t>(x) & 15) ||
      (reinterpret_cast<uintptr_t>(w) & 15))
    return false;
  // Without a layernorm, only rows that leave room for two blocks an SM: staging 200 KB
  // (8 rows of 6400) took longer than reading them one chunk ahead (XL c_proj: 23 vs 17.5 us).
  const size_t bytes = staged_bytes((int)M, (int)K, norm != nullptr);
  *staged = bytes <= max_staged(M <= 8 ? 1 : 2) && (norm || bytes <= kMaxStagedPlain);
  return *staged || !norm;
}

bool enabled() {
  static const bool on = [] {
    const char* v = std::getenv("NIBBLE_CUDA_MMA_DECODE");
    return !(v && std::strcmp(v, "0") == 0);
  }();
  return on;
}

}  // namespace

bool decode_mma_4bit(const QLinear& L, DType bias_dt, int epi, float* out, const float* x, int64_t M,
                     const DecodeNorm* norm, cudaStream_t s) {
  bool staged = false;
  if (!enabled() || L.compute != DType::F32 || L.blocksize < 64 ||
      !suits(M, L.N, L.K, 64, x, L.packed, norm, &staged))
    return false;
  Args a = make_args(L.packed, L.N, L.K, L.bias, bias_dt, out, norm);
  a.absmax = L.absmax, a.qabsmax = L.qabsmax, a.nested = L.nested_absmax, a.ncode = L.nested_code, a.offset_ptr = L.offset;
  while ((1 << a.log2_bs) < L.blocksize) a.log2_bs++;
  const bool dq = L.absmax == nullptr;
  const int m = (int)M;
  if (L.quant_type == 1) dq ? launch_nt<W4<1, true>, 1>(epi, x, a, m, staged, s) : launch_nt<W4<1, false>, 1>(epi, x, a, m, staged, s);
  else dq ? launch_nt<W4<0, true>, 0>(epi, x, a, m, staged, s) : launch_nt<W4<0, false>, 0>(epi, x, a, m, staged, s);
  NIBBLE_CUDA_CHECK_LAUNCH("4-bit decode GEMV (tensor cores)");
  return true;
}

bool decode_mma_16bit(const void* w, const void* bias, DType wdt, int epi, float* out, const float* x, int64_t M,
                      int64_t K, int64_t N, const DecodeNorm* norm, cudaStream_t s) {
  bool staged = false;
  if (!enabled() || (wdt != DType::F16 && wdt != DType::BF16) || !suits(M, N, K, 32, x, w, norm, &staged)) return false;
  const Args a = make_args(w, N, K, bias, wdt, out, norm);
  const int m = (int)M;
  if (wdt == DType::F16) launch_nt<W16<__half>, -1>(epi, x, a, m, staged, s);
  else launch_nt<W16<__nv_bfloat16>, -1>(epi, x, a, m, staged, s);
  NIBBLE_CUDA_CHECK_LAUNCH("16-bit decode GEMV (tensor cores)");
  return true;
}

}  // namespace gpt2_cuda
}  // namespace nibble
