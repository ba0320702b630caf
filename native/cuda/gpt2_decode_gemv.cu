// Decode-step GEMVs for the GPT-2 plan's quantized layers (a few rows of float32 activations).
// At decode time a layer's weight is a few MB and each kernel lasts a few microseconds, so
// what counts is starting fast and keeping loads in flight, not the steady state:
//  - no prologue beyond one 16-float code table (the general matmul_4bit GEMV builds a
//    512-entry table, stages the 256 nested codes and synchronizes three times);
//  - one warp per output row, its lanes over 16-byte chunks of the row, every chunk's loads
//    (packed weight, absmax, activations) issued before any is used;
//  - enough blocks for every SM even at N = 1600.
// int8 layers quantize the activations inside the kernel: each block recomputes the row
// absmax over x (a few KB from L2) instead of a separate single-block pass, so an LLM.int8()
// layer is one launch. The integer dot product and its dequantization are bit-identical to
// int8_linear_matmul + int8_mm_dequant; the outlier columns' 16-bit product is summed per lane
// and then across the warp (the CPU adds it column by column: the float sums may differ in
// the last bits, as any two summation orders do).
#include <algorithm>
#include <cstdlib>
#include <string>
#include <type_traits>

#include "cuda/gpt2_decode_gemv.h"
#include "cuda/gpt2_device.cuh"
#include "cuda/pdl.cuh"
#include "cuda/quant_device.cuh"

namespace nibble {
namespace gpt2_cuda {

NIBBLE_PROBE_TU(gpt2_decode_gemv)  // probe.cuh

namespace {

constexpr int kWarps = 8, kThreads = kWarps * 32;

// Warps per row (KS) is a power of two (warps_per_row): the kernels split warp indices with
// shifts; a division by the runtime KS cost ~40 instructions a warp, ~5% of a decode GEMV at
// GPT-2 XL (one row a warp; the 4-bit kernel is issue-bound).
struct WarpSplit {
  int ks, row;  // this warp's share of its row, and its row within the block's group
  __device__ __forceinline__ WarpSplit(int warp, int KS) {
    const int sh = __ffs(KS) - 1;
    ks = warp & (KS - 1), row = warp >> sh;
  }
};
__device__ __forceinline__ int rows_per_block(int KS) { return kWarps >> (__ffs(KS) - 1); }

// Launched as programmatic dependents (pdl.cuh): a decode GEMV may start while the kernel
// before it drains and issue its weight loads, which do not depend on that kernel.
template <typename... KArgs, typename... Args>
void launch(void (*kernel)(KArgs...), unsigned grid, size_t smem, cudaStream_t s, Args... args) {
  launch_pdl(kernel, dim3(grid), dim3(kThreads), smem, s, "decode GEMV launch", args...);
}

// Activations staged in shared memory (SX): a lane reads the E floats of its chunk, so in
// global memory the lanes of one load sit E*4 bytes apart (32 cache lines per instruction);
// in shared memory, padded by 4 floats per E, the same loads take the minimum 4 wavefronts.
// (Chunks of 16 bytes of activations, E = 4, are conflict-free unpadded.)
template <int E>
__device__ __host__ __forceinline__ int64_t padded(int64_t k) { return k + (E >= 8 ? (k / E) * 4 : 0); }
// (32-bit indices and a loop per row: the staged rows are at most kMaxStaged bytes, and a
// 64-bit division per element, in the flat loop this replaced, cost more than the copy.)
template <int E>
__device__ void stage_x(float* s_x, const float* __restrict__ x, int M, int64_t K) {
  const int K4 = (int)(K / 4), Kp = (int)padded<E>(K);
  for (int m = 0; m < M; m++) {
    const float4* xr = reinterpret_cast<const float4*>(x) + m * K4;
#pragma unroll 4
    for (int i = threadIdx.x; i < K4; i += blockDim.x)
      *reinterpret_cast<float4*>(s_x + m * Kp + (int)padded<E>(4 * i)) = __ldg(xr + i);
  }
}
// The layernorm in front of c_attn and c_fc, fused into the staging: row_mean_rstd and the
// normalization expression of layernorm_kernel with its 256 threads, so the staged rows equal
// what that kernel would have written.
struct LnArgs {
  const void* w = nullptr;  // null: no layernorm
  const void* b = nullptr;
  DType dt = DType::F32;
  float eps = 1e-5f;
  const float* fold_u = nullptr;  // one row: the layernorm folded (LnFold), u = W . w
};
// The layernorm's weight and bias for this thread's columns (c = threadIdx.x + i * blockDim.x),
// read before the kernel waits for its predecessor (they are parameters, not activations), so
// their latency hides behind the previous kernel instead of following the row statistics.
template <int NPT>
struct LnParams {
  float w[NPT > 0 ? NPT : 1], b[NPT > 0 ? NPT : 1];
  bool cached = false;
  __device__ void prefetch(const LnArgs& ln, int64_t K) {
    cached = NPT > 0 && ln.w && K <= (int64_t)NPT * blockDim.x;
    if (!cached) return;
#pragma unroll
    for (int i = 0; i < NPT; i++) {
      const int64_t c = threadIdx.x + (int64_t)i * blockDim.x;
      w[i] = c < K ? load_f32(ln.w, ln.dt, c) : 0.0f;
      b[i] = c < K ? load_f32(ln.b, ln.dt, c) : 0.0f;
    }
  }
};
template <int E, int NPT>
__device__ void stage_x_ln(float* s_x, const float* __restrict__ x, int M, int64_t K, const LnArgs& ln,
                           const LnParams<NPT>& lp, float* scratch) {
  const int64_t Kp = padded<E>(K);
  for (int m = 0; m < M; m++) {
    const float* xr = x + m * K;
    float mean, rstd;
    row_mean_rstd(xr, K, ln.eps, scratch, &mean, &rstd);
    if (lp.cached) {
#pragma unroll
      for (int i = 0; i < (NPT > 0 ? NPT : 1); i++) {
        const int64_t c = threadIdx.x + (int64_t)i * blockDim.x;
        if (c < K) s_x[m * Kp + padded<E>(c)] = (xr[c] - mean) * rstd * lp.w[i] + lp.b[i];
      }
    } else {
      for (int64_t c = threadIdx.x; c < K; c += blockDim.x)
        s_x[m * Kp + padded<E>(c)] = (xr[c] - mean) * rstd * load_f32(ln.w, ln.dt, c) + load_f32(ln.b, ln.dt, c);
    }
  }
}
// The folded layernorm's staging (one row, LnFold in gpt2_cuda.h): thread t takes columns
// 8t .. 8t+7 (K <= 8 * blockDim.x, K % 8 == 0, 16-byte aligned: decode_gemv_4bit checks), so
// its share is two 16-byte loads of x and one of the layernorm weight (requested before the
// kernel's wait), and it stages x * w with two 16-byte stores. Each warp's sums of x and x^2
// go to s_red[warp] and s_red[16 + warp] for fold_stats. (Scalar loads, 23 a thread with the
// weight and bias of LnParams, made the XL step 9% slower than the layernorm kernel.)
struct FoldW {
  float w[8];
  __device__ __forceinline__ void prefetch(const LnArgs& ln, int64_t K) {
    const int64_t c0 = (int64_t)threadIdx.x * 8;
    if (c0 >= K) return;
    if (ln.dt == DType::F32) {
      const float4 a = __ldg(reinterpret_cast<const float4*>(static_cast<const float*>(ln.w) + c0));
      const float4 b = __ldg(reinterpret_cast<const float4*>(static_cast<const float*>(ln.w) + c0) + 1);
      w[0] = a.x, w[1] = a.y, w[2] = a.z, w[3] = a.w, w[4] = b.x, w[5] = b.y, w[6] = b.z, w[7] = b.w;
    } else {
      const uint4 r = __ldg(reinterpret_cast<const uint4*>(static_cast<const uint16_t*>(ln.w) + c0));
      const uint32_t u[4] = {r.x, r.y, r.z, r.w};
#pragma unroll
      for (int i = 0; i < 4; i++) {
        w[2 * i] = bits_f32(u[i] & 0xffffu, ln.dt);
        w[2 * i + 1] = bits_f32(u[i] >> 16, ln.dt);
      }
    }
  }
};
template <int E>
__device__ void stage_x_fold(float* s_x, const float* __restrict__ x, int64_t K, const FoldW& fw, float* s_red) {
  const int64_t c0 = (int64_t)threadIdx.x * 8;
  float s1 = 0.0f, s2 = 0.0f;
  if (c0 < K) {
    const float4 a = __ldg(reinterpret_cast<const float4*>(x + c0)), b = __ldg(reinterpret_cast<const float4*>(x + c0) + 1);
    float v[8] = {a.x, a.y, a.z, a.w, b.x, b.y, b.z, b.w};
#pragma unroll
    for (int i = 0; i < 8; i++) s1 += v[i], s2 = fmaf(v[i], v[i], s2), v[i] *= fw.w[i];
    float4* d = reinterpret_cast<float4*>(s_x + padded<E>(c0));  // 8 columns stay in one padded group of E
    d[0] = make_float4(v[0], v[1], v[2], v[3]);
    d[1] = make_float4(v[4], v[5], v[6], v[7]);
  }
  s1 = warp_sum(s1), s2 = warp_sum(s2);
  if ((threadIdx.x & 31) == 0) s_red[threadIdx.x >> 5] = s1, s_red[16 + (threadIdx.x >> 5)] = s2;
}
// The row's mean and 1/std from the warps' sums (after the barrier that follows the staging),
// added in warp order: every block gets the same bits. Computed by every lane before the main
// loop, while its first weight loads are in flight, not in the writer's epilogue.
__device__ __forceinline__ void fold_stats(const float* s_red, int64_t K, float eps, float* mean, float* rstd) {
  float s1 = 0.0f, s2 = 0.0f;
#pragma unroll
  for (int w = 0; w < kWarps; w++) s1 += s_red[w], s2 += s_red[16 + w];
  fold_mean_rstd(s1, s2, K, eps, mean, rstd);
}
// Registers for the layernorm parameters: up to 8 columns a thread (K <= 2048 at 256 threads,
// every GPT-2 width) in the few-row kernels; wider rows or more rows load them in place.
template <int MT>
__host__ __device__ constexpr int ln_regs() { return MT <= 4 ? 8 : 0; }

template <int E>
__device__ __forceinline__ const float4* x_chunk(bool staged, const float* s_x, const float* x, int m, int64_t K,
                                                 int64_t c) {
  return staged ? reinterpret_cast<const float4*>(s_x + m * padded<E>(K) + padded<E>(c * E))
                : reinterpret_cast<const float4*>(x + m * K + c * E);
}
template <int E>
size_t staged_bytes(int64_t M, int64_t K) { return (size_t)(M * padded<E>(K)) * 4; }
constexpr size_t kMaxStaged = 96 * 1024;
constexpr size_t kStaticSmemMax = 4 * 1024;  // above the kernels' static shared memory

// ---- float and 4-bit weights -----------------------------------------------------------------
// A weight format says how a 16-byte chunk of a row becomes E float weights times a scale
// (only the 4-bit one here: float16 layers keep linear_small_m_kernel, which measured faster
// than this kernel with a fused layernorm for them, 368 vs 317 tokens/s on GPT-2 XL).
template <int KIND, bool DQ>
struct Format4 {  // bitsandbytes NF4/FP4, absmax plain or double-quantized
  static constexpr int E = 32;
  static constexpr bool kTable = true;
  static constexpr int kKind = KIND;
  static constexpr bool kDQ = DQ;
  struct Meta {
    uint32_t q;
    float a;
  };
  const uint8_t* packed;
  const float* absmax;
  const uint8_t* qabsmax;
  const float* nested;
  const float* ncode;
  const float* offset_ptr;  // device scalar (the graph replays launches: no host copy)
  float offset;             // read once per block by prepare()
  int log2_bs;
  int K;  // 32-bit indexing: decode_gemv_4bit takes only layers with N * K < 2^31
  __device__ __forceinline__ void prepare() { offset = DQ ? __ldg(offset_ptr) : 0.0f; }
  __device__ __forceinline__ uint4 load(int n, int c) const {
    return __ldcs(reinterpret_cast<const uint4*>(packed) + (n * (K >> 5) + c));
  }
  __device__ __forceinline__ Meta meta(int n, int c) const {
    const uint32_t blk = ((uint32_t)n * (uint32_t)K + (uint32_t)c * 32u) >> log2_bs;
    if (DQ) return {__ldg(qabsmax + blk), __ldg(nested + (blk >> 8))};
    return {0u, __ldg(absmax + blk)};
  }
  // tab: the 16 code values; ncode_s: the 256 nested-code values (shared memory).
  __device__ __forceinline__ float decode(const uint4& r, Meta m, const float* tab, const float* ncode_s, float* f) const {
    const uint32_t words[4] = {r.x, r.y, r.z, r.w};
#pragma unroll
    for (int q = 0; q < 4; q++)
#pragma unroll
      for (int b = 0; b < 4; b++) {
        const uint32_t byte = (words[q] >> (8 * b)) & 0xffu;
        f[(q * 4 + b) * 2] = tab[byte >> 4];
        f[(q * 4 + b) * 2 + 1] = tab[byte & 15u];
      }
    return DQ ? cuda::dev::dq_absmax(ncode_s, (uint8_t)m.q, m.a, offset) : m.a;
  }
};

// Each block loops over groups of kWarps / KS rows (a grid of about one wave, so the prologue
// is paid once per block); KS warps share a row. A lane keeps kAhead chunk loads in flight,
// across row boundaries too, the first ones issued before the prologue.
// One row (MT == 1, the B=1 decode step): registers capped at 64 (no spills) for 4 blocks
// (32 warps) an SM instead of 3; the kernel is latency-bound, so more warps in flight pay.
// With more rows the cap would spill.
// (5 blocks, 48 registers with 56-80 bytes spilled, measured slower: XL nf4 B=1 635 -> 607.)
template <typename F, int MT, int EPI, bool SX>
__global__ void __launch_bounds__(kThreads, MT == 1 ? 4 : 1)
    k_decode_gemv(const float* __restrict__ x, F f, int N, const void* bias, DType bias_dt, float* out, int M,
                  int KS, LnArgs ln) {
  ProbeScope probe;
  constexpr int E = F::E;
  f.prepare();
  extern __shared__ float4 s_dyn[];
  float* s_x = reinterpret_cast<float*>(s_dyn);
  __shared__ float s_code[16];
  __shared__ float s_ncode[F::kDQ ? 256 : 1];
  __shared__ float s_part[kWarps][MT];
  __shared__ float s_red[32];
  const int K = f.K;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const WarpSplit split(warp, KS);
  const int ks = split.ks, RB = rows_per_block(KS);
  const int C = K / E, c0 = lane + 32 * ks, stride = (int)gridDim.x * RB;
  struct Chunk {
    uint4 raw;
    typename F::Meta meta;
  };
  auto fetch = [&](int n, int c) {
    Chunk r;
    r.raw = make_uint4(0, 0, 0, 0);
    r.meta = typename F::Meta();
    if (n < N && c < C) r.raw = f.load(n, c), r.meta = f.meta(n, c);
    return r;
  };
  int n = (int)blockIdx.x * RB + split.row;
  // A lane's chunks in order (row groups, then its chunks within the row): a ring of kAhead
  // loads in flight, refilled as each chunk is used.
  constexpr int kAhead = 3;
  auto advance = [&](int& pn, int& pc) {
    pc += 32 * KS;
    if (pc >= C) pc = c0, pn += stride;
  };
  Chunk ring[kAhead];
  int tail_n = n, tail_c = c0;  // position of the newest ring entry
#pragma unroll
  for (int i = 0; i < kAhead; i++) {
    if (i) advance(tail_n, tail_c);
    ring[i] = fetch(tail_n, tail_c);
  }
  // The nested code (double quantization) in shared memory: the absmax decode is then a
  // shared-memory lookup instead of a global load that waits on the quantized absmax.
  static_assert(kThreads >= 256, "one nested-code entry per thread");
  if (F::kDQ && threadIdx.x < 256) s_ncode[threadIdx.x] = __ldg(f.ncode + threadIdx.x);
  LnParams<SX ? ln_regs<MT>() : 0> lp;
  FoldW fw;
  if (SX && MT == 1 && ln.fold_u) fw.prefetch(ln, K);
  else if (SX) lp.prefetch(ln, K);
  // Launched as a programmatic dependent (see launch()): everything above reads only weights,
  // so it overlaps the previous kernel's tail; from here on its outputs are needed.
  pdl_wait();
  probe.waited();
  pdl_trigger();
  if (SX) {
    if (MT == 1 && ln.fold_u) stage_x_fold<E>(s_x, x, K, fw, s_red);
    else if (ln.w) stage_x_ln<E>(s_x, x, M, K, ln, lp, s_red);
    else stage_x<E>(s_x, x, M, K);
  }
  if (F::kTable && threadIdx.x < 16)
    s_code[threadIdx.x] = F::kKind == 1 ? cuda::dev::c_tables4.nf4_values[threadIdx.x] : cuda::dev::c_tables4.fp4_values[threadIdx.x];
  __syncthreads();
  probe.mark(0);
  float fold_mean = 0.0f, fold_rstd = 0.0f;
  if (SX && MT == 1 && ln.fold_u) fold_stats(s_red, K, ln.eps, &fold_mean, &fold_rstd);
  for (int base = (int)blockIdx.x * RB; base < N; base += stride, n += stride) {
    float acc[MT];
#pragma unroll
    for (int m = 0; m < MT; m++) acc[m] = 0.0f;
    // The epilogue's inputs (bias, and the residual it adds to) requested now, so they arrive
    // while the row is summed rather than after it.
    // (The bias as bits, converted after the loop: see load_bits.)
    const bool writer = n < N && ks == 0 && lane == 0;
    uint32_t bias_bits = 0;
    float prev[MT], fold_u = 0.0f;
#pragma unroll
    for (int m = 0; m < MT; m++) prev[m] = 0.0f;
    if (writer) {
      if (bias) bias_bits = load_bits(bias, bias_dt, n);
      if (SX && MT == 1 && ln.fold_u) fold_u = __ldg(ln.fold_u + n);
      if (EPI == kEpilogueAccumulate)
#pragma unroll
        for (int m = 0; m < MT; m++)
          if (m < M) prev[m] = out[m * N + n];
    }
    for (int c = (n < N ? c0 : C); c < C; c += 32 * KS) {
      const Chunk cur = ring[0];
#pragma unroll
      for (int i = 0; i + 1 < kAhead; i++) ring[i] = ring[i + 1];
      advance(tail_n, tail_c);
      ring[kAhead - 1] = fetch(tail_n, tail_c);
      float wv[E];
      const float scale = f.decode(cur.raw, cur.meta, s_code, s_ncode, wv);
#pragma unroll
      for (int m = 0; m < MT; m++) {
        if (m < M) {
          const float4* xp = x_chunk<E>(SX, s_x, x, m, K, c);
          float d0 = 0.0f, d1 = 0.0f;
#pragma unroll
          for (int j = 0; j < E / 4; j++) {
            const float4 xv = xp[j];
            d0 = fmaf(wv[4 * j], xv.x, d0);
            d1 = fmaf(wv[4 * j + 1], xv.y, d1);
            d0 = fmaf(wv[4 * j + 2], xv.z, d0);
            d1 = fmaf(wv[4 * j + 3], xv.w, d1);
          }
          acc[m] = fmaf(scale, d0 + d1, acc[m]);
        }
      }
    }
    probe.mark(1);
#pragma unroll
    for (int m = 0; m < MT; m++) {
      acc[m] = warp_sum(acc[m]);
      if (KS > 1 && lane == 0) s_part[warp][m] = acc[m];
    }
    if (KS > 1) __syncthreads();
    if (writer) {
#pragma unroll
      for (int m = 0; m < MT; m++) {
        if (m >= M) continue;
        float s = acc[m];
        for (int i = 1; i < KS; i++) s += s_part[warp + i][m];
        if (SX && MT == 1 && ln.fold_u) s = fold_rstd * fmaf(-fold_mean, fold_u, s);  // the bias is the fold's v
        const float v = s + (bias ? bits_f32(bias_bits, bias_dt) : 0.0f);  // then store_epilogue's, the residual read
        out[m * N + n] = EPI == kEpilogueGelu ? gelu_new_f(v) : EPI == kEpilogueAccumulate ? prev[m] + v : v;
      }
    }
    if (KS > 1) __syncthreads();  // s_part is reused by the next row group
    probe.mark(2);
  }
}

// ---- int8 (LLM.int8()) ---------------------------------------------------------------------------
struct W8Args {
  const int8_t* cb;
  const float* scb;
  int64_t N, K;
  float th;  // effective (float16-rounded) threshold
  bool sparse;
  const void* bias;
  DType bias_dt;
};

// Packs four quantized activations into a dp4a operand.
__device__ __forceinline__ int pack4(int a, int b, int c, int d) {
  return (a & 0xff) | ((b & 0xff) << 8) | ((c & 0xff) << 16) | ((int)((unsigned)d << 24));
}

// Row n's output from its int32 dot product s with activation row m (row absmax rs) and its
// outlier sum f: int8_mm_dequant, float16(fma(C * rs * cs, 1/127^2, bias)), then the 16-bit
// outlier product when there is one, then the plan's epilogue. Shared by both int8 GEMVs.
// Constructed before the main loop: it requests the row's scale, bias and (accumulating
// epilogue, rows < MT) residual then, and store() uses them after the loop (see load_bits).
template <int MT, int EPI>
struct Int8RowOut {
  float cs;            // the row's weight scale
  uint32_t bias_bits;  // a float16 bias enters the float16 dequantization; any other is added after it
  float prev[MT];      // the residual the accumulating epilogue adds to
  __device__ __forceinline__ Int8RowOut(const W8Args& w, int64_t n) {
    cs = __ldg(w.scb + n);
    bias_bits = w.bias ? load_bits(w.bias, w.bias_dt, n) : 0u;
#pragma unroll
    for (int m = 0; m < MT; m++) prev[m] = 0.0f;
  }
  // After the kernel's wait (the residual is the previous kernels' output); writer lane only.
  __device__ __forceinline__ void read_residual(const float* out, int64_t N, int64_t n, int M) {
    if (EPI == kEpilogueAccumulate)
#pragma unroll
      for (int m = 0; m < MT; m++)
        if (m < M) prev[m] = out[m * N + n];
  }
  __device__ __forceinline__ void store(const W8Args& w, float* o, int m, int s, float rs, float f, bool outliers) const {
    const bool bias_h = w.bias && w.bias_dt == DType::F16;
    const float bh = bias_h ? bits_f32(bias_bits, DType::F16) : 0.0f;
    const float bo = w.bias && !bias_h ? bits_f32(bias_bits, w.bias_dt) : 0.0f;
    const float p = __fmul_rn(__fmul_rn((float)s, rs), cs);
    float v = round_to_half(fmaf(p, fmt::kMmDequantScale, bh));
    if (outliers) v = round_to_half(__fadd_rn(v, f));
    v = v + bo;  // then store_epilogue's arithmetic, the residual already read
    *o = EPI == kEpilogueGelu ? gelu_new_f(v) : EPI == kEpilogueAccumulate ? prev[m] + v : v;
  }
};

template <int MT, int EPI, bool SX>
__global__ void __launch_bounds__(kThreads)
    k_decode_gemv8(const float* __restrict__ x, W8Args w, float* out, int M, int KS, LnArgs ln) {
  ProbeScope probe;
  extern __shared__ float4 s_dyn[];
  float* s_x = reinterpret_cast<float*>(s_dyn);
  __shared__ float s_lnred[32];
  const WarpSplit split(threadIdx.x >> 5, KS);
  const int ks = split.ks;
  const int64_t n0 = (int64_t)blockIdx.x * rows_per_block(KS) + split.row;
  const int64_t C0 = n0 < w.N ? w.K >> 4 : 0;
  const int64_t c_first = (threadIdx.x & 31) + 32 * ks;
  // The first chunk is requested before the prologue (its latency overlaps it).
  int4 first = make_int4(0, 0, 0, 0);
  if (c_first < C0) first = __ldcs(reinterpret_cast<const int4*>(w.cb + n0 * w.K) + c_first);
  LnParams<SX ? 8 : 0> lp;
  if (SX) lp.prefetch(ln, w.K);
  Int8RowOut<MT, EPI> ro(w, n0 < w.N ? n0 : 0);
  pdl_wait();  // as in k_decode_gemv: only weights were read above
  probe.waited();
  pdl_trigger();
  const bool writer = n0 < w.N && ks == 0 && (threadIdx.x & 31) == 0;
  if (writer) ro.read_residual(out, w.N, n0, M);
  if (SX) {
    if (ln.w) stage_x_ln<16>(s_x, x, M, w.K, ln, lp, s_lnred);
    else stage_x<16>(s_x, x, M, w.K);
    __syncthreads();
  }
  // With a fused layernorm the quantization reads the normalized rows from shared memory.
  auto xval = [&](int m, int64_t k) { return SX ? s_x[m * padded<16>(w.K) + padded<16>(k)] : x[m * w.K + k]; };
  __shared__ float s_red[kWarps][MT];
  __shared__ int s_ipart[kWarps][MT];
  __shared__ float s_fpart[kWarps][MT];
  __shared__ int s_any[kWarps];
  __shared__ float s_rs[MT], s_scale[MT];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int64_t K = w.K;
  // Row absmax over the non-outlier elements of float16(x), as int8_vectorwise_quant.
  float mx[MT];
#pragma unroll
  for (int m = 0; m < MT; m++) {
    mx[m] = 0.0f;
    if (m < M)
      for (int64_t k = threadIdx.x; k < K; k += kThreads) {
        const float a = fabsf(round_to_half(xval(m, k)));
        if (!w.sparse || a < w.th) mx[m] = fmaxf(mx[m], a);
      }
    float v = mx[m];
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    if (lane == 0) s_red[warp][m] = v;
  }
  __syncthreads();
  if (threadIdx.x < MT) {
    float v = 0.0f;
    for (int i = 0; i < kWarps; i++) v = fmaxf(v, s_red[i][threadIdx.x]);
    s_rs[threadIdx.x] = v;
    s_scale[threadIdx.x] = __fmul_rn(127.0f, cuda::dev::rcp_like_fdividef(v));
  }
  __syncthreads();
  const bool live = n0 < w.N;
  const int64_t n = live ? n0 : 0;
  const int8_t* row = w.cb + n * K;
  const int64_t C = live ? K >> 4 : 0;  // 16 int8 per chunk
  int iacc[MT];
  float facc[MT];
#pragma unroll
  for (int m = 0; m < MT; m++) iacc[m] = 0, facc[m] = 0.0f;
  bool any_outlier = false;
  int4 nxt = first;
  for (int64_t c = lane + 32 * ks; c < C; c += 32 * KS) {
    const int4 raw = nxt;
    if (c + 32 * KS < C) nxt = __ldcs(reinterpret_cast<const int4*>(row) + c + 32 * KS);
    const int words[4] = {raw.x, raw.y, raw.z, raw.w};
    float xh[MT][16];
    uint32_t omask = 0;  // outlier columns of this chunk (any row)
#pragma unroll
    for (int m = 0; m < MT; m++) {
      if (m < M) {
        const float4* xp = x_chunk<16>(SX, s_x, x, m, K, c);
#pragma unroll
        for (int j = 0; j < 4; j++) {
          const float4 v = xp[j];
          xh[m][4 * j] = round_to_half(v.x), xh[m][4 * j + 1] = round_to_half(v.y);
          xh[m][4 * j + 2] = round_to_half(v.z), xh[m][4 * j + 3] = round_to_half(v.w);
        }
        if (w.sparse)
#pragma unroll
          for (int e = 0; e < 16; e++) omask |= (fabsf(xh[m][e]) >= w.th ? 1u : 0u) << e;
      }
    }
#pragma unroll
    for (int m = 0; m < MT; m++) {
      if (m < M) {
        int q[16];
#pragma unroll
        for (int e = 0; e < 16; e++) {
          const int v = __float2int_rn(__fmul_rn(xh[m][e], s_scale[m]));  // NaN -> 0
          q[e] = (omask >> e) & 1u ? 0 : v;
        }
#pragma unroll
        for (int j = 0; j < 4; j++) iacc[m] = __dp4a(pack4(q[4 * j], q[4 * j + 1], q[4 * j + 2], q[4 * j + 3]), words[j], iacc[m]);
      }
    }
    if (omask) {
      any_outlier = true;
      const float s = __ldg(w.scb + n);
      for (int e = 0; e < 16; e++) {
        if (!((omask >> e) & 1u)) continue;
        const int8_t cbv = (int8_t)((words[e >> 2] >> (8 * (e & 3))) & 0xff);
        const float wv = round_to_half(__fdiv_rn(__fmul_rn((float)cbv, s), 127.0f));
#pragma unroll
        for (int m = 0; m < MT; m++)
          if (m < M) facc[m] = __fadd_rn(facc[m], __fmul_rn(xh[m][e], wv));
      }
    }
  }
  any_outlier = __any_sync(0xffffffffu, any_outlier);
#pragma unroll
  for (int m = 0; m < MT; m++) {
    for (int o = 16; o > 0; o >>= 1) iacc[m] += __shfl_xor_sync(0xffffffffu, iacc[m], o);
    facc[m] = any_outlier ? warp_sum(facc[m]) : 0.0f;
    if (KS > 1 && lane == 0) s_ipart[warp][m] = iacc[m], s_fpart[warp][m] = facc[m];
  }
  if (KS > 1) {
    if (lane == 0) s_any[warp] = any_outlier;
    __syncthreads();
  }
  if (!live || ks != 0 || lane != 0) return;
  for (int i = 1; i < KS; i++) any_outlier |= s_any[warp + i] != 0;
#pragma unroll
  for (int m = 0; m < MT; m++) {
    if (m >= M) continue;
    int s = iacc[m];
    float f = facc[m];
    for (int i = 1; i < KS; i++) s += s_ipart[warp + i][m], f += s_fpart[warp + i][m];
    ro.store(w, out + m * w.N + n, m, s, s_rs[m], f, any_outlier);
  }
}

// The int8 layer from activations quantized beforehand (k_int8_prep_ln in gpt2_qlinear.cu:
// xq [M, K] with the outlier columns zeroed, the row absmax rs, the ascending outlier list, and
// xn, the float32 rows the outliers are read from): the main loop is one 16-byte weight load,
// one 16-byte activation load (the same for every warp: L1) and four dp4a a row, instead of 16
// conversions. Epilogue and outlier arithmetic as k_decode_gemv8; the outlier columns are
// split over the lanes (ascending within a lane) and summed across the warp.
// Its epilogue inputs are read after the loop: requested before it (as k_decode_gemv8 does),
// the registers that hold them cost XL's 800-block layers blocks an SM (a second wave) and
// measured slower (same-run A/B: XL int8 B=1 -1.5%, B=4 -6.5%).
template <int MT, int EPI>
__global__ void __launch_bounds__(kThreads)
    k_gemv8_prequant(const int8_t* __restrict__ xq, const float* __restrict__ rs, const float* __restrict__ xn,
                     const int32_t* __restrict__ list, W8Args w, float* out, int M, int KS) {
  ProbeScope probe;
  __shared__ int s_ipart[kWarps][MT];
  __shared__ float s_fpart[kWarps][MT];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const WarpSplit split(warp, KS);
  const int ks = split.ks;
  const int64_t n0 = (int64_t)blockIdx.x * rows_per_block(KS) + split.row;
  const bool live = n0 < w.N;
  const int64_t n = live ? n0 : 0, K = w.K, C = live ? K >> 4 : 0;
  const int4* row = reinterpret_cast<const int4*>(w.cb + n * K);
  const int64_t c0 = lane + 32 * ks, cstep = 32 * KS;
  int4 first = make_int4(0, 0, 0, 0);
  if (c0 < C) first = __ldcs(row + c0);
  pdl_wait();  // weights only above; xq, rs, xn and the list come from the previous kernel
  probe.waited();
  pdl_trigger();
  // One row: the outlier count requested now, used after the loop (with more rows the register
  // it holds raised the kernel's count past what fits XL's 800-block layers in one wave).
  const int cnt_early = MT == 1 && w.sparse ? list[0] : 0;
  int iacc[MT];
#pragma unroll
  for (int m = 0; m < MT; m++) iacc[m] = 0;
  auto consume = [&](const int4& raw, int64_t c) {
#pragma unroll
    for (int m = 0; m < MT; m++) {
      if (m < M) {
        const int4 xv = __ldg(reinterpret_cast<const int4*>(xq + m * K) + c);
        iacc[m] = __dp4a(xv.x, raw.x, iacc[m]);
        iacc[m] = __dp4a(xv.y, raw.y, iacc[m]);
        iacc[m] = __dp4a(xv.z, raw.z, iacc[m]);
        iacc[m] = __dp4a(xv.w, raw.w, iacc[m]);
      }
    }
  };
  if (c0 < C) consume(first, c0);
#pragma unroll 4
  for (int64_t c = c0 + cstep; c < C; c += cstep) consume(__ldcs(row + c), c);
  float facc[MT];
#pragma unroll
  for (int m = 0; m < MT; m++) facc[m] = 0.0f;
  const int cnt = MT == 1 ? cnt_early : w.sparse ? list[0] : 0;
  if (cnt && live) {
    const float s = __ldg(w.scb + n);
    for (int j = (int)c0; j < cnt; j += (int)cstep) {
      const int64_t c = list[1 + j];
      const float wv = round_to_half(__fdiv_rn(__fmul_rn((float)w.cb[n * K + c], s), 127.0f));
#pragma unroll
      for (int m = 0; m < MT; m++)
        if (m < M) facc[m] = __fadd_rn(facc[m], __fmul_rn(round_to_half(xn[m * K + c]), wv));
    }
  }
#pragma unroll
  for (int m = 0; m < MT; m++) {
    for (int o = 16; o > 0; o >>= 1) iacc[m] += __shfl_xor_sync(0xffffffffu, iacc[m], o);
    facc[m] = cnt ? warp_sum(facc[m]) : 0.0f;
    if (KS > 1 && lane == 0) s_ipart[warp][m] = iacc[m], s_fpart[warp][m] = facc[m];
  }
  if (KS > 1) __syncthreads();
  if (!live || ks != 0 || lane != 0) return;
  Int8RowOut<MT, EPI> ro(w, n);
  ro.read_residual(out, w.N, n, M);
#pragma unroll
  for (int m = 0; m < MT; m++) {
    if (m >= M) continue;
    int sum = iacc[m];
    float f = facc[m];
    for (int i = 1; i < KS; i++) sum += s_ipart[warp + i][m], f += s_fpart[warp + i][m];
    ro.store(w, out + m * w.N + n, m, sum, rs[m], f, cnt != 0);
  }
}

// Warps per output row: one per ~2 KB of the row (see linear_small_m_kernel).
int warps_per_row(int64_t row_bytes) { return row_bytes > 8192 ? 8 : row_bytes > 4096 ? 4 : row_bytes > 2048 ? 2 : 1; }

// About one wave of blocks: the kernel loops over row groups.
template <typename Kernel>
unsigned wave_grid(Kernel k, size_t smem, int64_t groups) {
  const int sms = cuda::sm_count();
  int per_sm = 0;
  if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, k, kThreads, smem) != cudaSuccess || per_sm < 1) per_sm = 1;
  // NIBBLE_CUDA_GEMV_BLOCKS_PER_SM=n: fewer blocks, more rows each (an A/B switch; measured
  // slower: XL nf4 B=1 635 at 4 an SM, 528 at 3, 518 at 2 queued steps/s).
  static const int cap = [] {
    const char* v = std::getenv("NIBBLE_CUDA_GEMV_BLOCKS_PER_SM");
    return v ? std::atoi(v) : 0;
  }();
  if (cap > 0) per_sm = std::min(per_sm, cap);
  return (unsigned)std::max<int64_t>(1, std::min<int64_t>(groups, (int64_t)sms * per_sm));
}

template <typename F, int MT, int EPI>
void launch_mt(const float* x, const F& f, int64_t N, const void* bias, DType bdt, float* out, int M, int KS,
               const LnArgs& ln, cudaStream_t s) {
  const int64_t groups = (N + kWarps / KS - 1) / (kWarps / KS);
  const size_t smem = staged_bytes<F::E>(M, f.K);
  if (smem <= kMaxStaged) {
    auto k = k_decode_gemv<F, MT, EPI, true>;
    if (smem + kStaticSmemMax > 48 * 1024)  // the 48 KB default counts static shared memory too
      NIBBLE_CUDA_CHECK(cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem), "decode GEMV");
    launch(k, wave_grid(k, smem, groups), smem, s, x, f, N, bias, bdt, out, M, KS, ln);
  } else {
    auto k = k_decode_gemv<F, MT, EPI, false>;
    launch(k, wave_grid(k, 0, groups), 0, s, x, f, N, bias, bdt, out, M, KS, ln);
  }
}
template <typename F, int EPI>
void launch_m(const float* x, const F& f, int64_t N, const void* bias, DType bdt, float* out, int M, const LnArgs& ln,
              cudaStream_t s) {
  int KS = warps_per_row(f.K * 16 / F::E);
  // A one-row layer of under gemv_split_blocks() row groups an SM (GPT-2 XL's 1600-row c_proj:
  // 200 groups, 1.5 blocks an SM) takes twice the warps a row while each warp still has a
  // full pass of chunks for its lanes (as small_m_ks in gpt2_linear.cu): XL nf4 B=1 652 -> 665.
  const int64_t C = f.K / F::E, min_groups = (int64_t)gemv_split_blocks() * cuda::sm_count();
  if (M == 1)
    while (KS < kWarps && (N + kWarps / KS - 1) / (kWarps / KS) < min_groups && C >= 32 * KS) KS *= 2;
  if (M == 1) launch_mt<F, 1, EPI>(x, f, N, bias, bdt, out, M, KS, ln, s);
  else if (M == 2) launch_mt<F, 2, EPI>(x, f, N, bias, bdt, out, M, KS, ln, s);
  else if (M <= 4) launch_mt<F, 4, EPI>(x, f, N, bias, bdt, out, M, KS, ln, s);
  else if (M <= 8) launch_mt<F, 8, EPI>(x, f, N, bias, bdt, out, M, KS, ln, s);
  else launch_mt<F, 16, EPI>(x, f, N, bias, bdt, out, M, KS, ln, s);
}
template <typename F>
void launch_epi(int epi, const float* x, const F& f, int64_t N, const void* bias, DType bdt, float* out, int M,
                const LnArgs& ln, cudaStream_t s) {
  if (epi == kEpilogueGelu) launch_m<F, kEpilogueGelu>(x, f, N, bias, bdt, out, M, ln, s);
  else if (epi == kEpilogueAccumulate) launch_m<F, kEpilogueAccumulate>(x, f, N, bias, bdt, out, M, ln, s);
  else launch_m<F, kEpilogueNone>(x, f, N, bias, bdt, out, M, ln, s);
}
template <int MT, int EPI>
void launch8_mt(const float* x, const W8Args& a, float* out, int M, int KS, unsigned g, const LnArgs& ln,
                cudaStream_t s) {
  const size_t smem = staged_bytes<16>(M, a.K);
  if (smem <= kMaxStaged) {
    auto k = k_decode_gemv8<MT, EPI, true>;
    if (smem + kStaticSmemMax > 48 * 1024)  // the 48 KB default counts static shared memory too
      NIBBLE_CUDA_CHECK(cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem), "int8 decode GEMV");
    launch(k, g, smem, s, x, a, out, M, KS, ln);
  } else {
    launch(k_decode_gemv8<MT, EPI, false>, g, 0, s, x, a, out, M, KS, ln);
  }
}
template <int EPI>
void launch8(const float* x, const W8Args& a, float* out, int M, const LnArgs& ln, cudaStream_t s) {
  const int KS = warps_per_row(a.K);
  const unsigned g = blocks_for(a.N, kWarps / KS);
  if (M == 1) launch8_mt<1, EPI>(x, a, out, M, KS, g, ln, s);
  else if (M == 2) launch8_mt<2, EPI>(x, a, out, M, KS, g, ln, s);
  else launch8_mt<4, EPI>(x, a, out, M, KS, g, ln, s);
}

bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15) == 0; }

}  // namespace

int gemv_split_blocks() {
  static const int v = [] {
    const char* e = std::getenv("NIBBLE_CUDA_GEMV_SPLIT");
    return e && *e ? std::max(0, std::atoi(e)) : 4;
  }();
  return v;
}

namespace {
// The layers the 4-bit decode GEMV takes, by shape.
bool takes_4bit(const QLinear& L) {
  return L.compute == DType::F32 && L.K % 32 == 0 && L.blocksize >= 32 && L.N * L.K < ((int64_t)1 << 31);
}
}  // namespace

bool decode_gemv_4bit_can_fold(const QLinear& L) {
  // stage_x_fold: 8 columns a thread (a multiple of 8, at most 8 per thread of a block).
  return L.kind == QLinear::k4bit && takes_4bit(L) && L.K % 8 == 0 && L.K <= 8 * kThreads &&
         staged_bytes<32>(1, L.K) <= kMaxStaged;
}

bool decode_gemv_4bit(const QLinear& L, DType bias_dt, int epi, float* out, const float* x, int64_t M,
                      const DecodeNorm* norm, cudaStream_t s) {
  if (M < 1 || M > kDecodeGemvMaxRows || !takes_4bit(L) || !aligned16(x) || !aligned16(L.packed)) return false;
  if (M >= 2 && decode_mma_4bit(L, bias_dt, epi, out, x, M, norm, s)) return true;
  if (norm && staged_bytes<32>(M, L.K) > kMaxStaged) return false;  // the layernorm needs the staged copy
  if (norm && norm->fold_u && (M != 1 || !decode_gemv_4bit_can_fold(L) || !aligned16(norm->w))) return false;
  int l2 = 0;
  while ((1 << l2) < L.blocksize) l2++;
  LnArgs ln;
  if (norm) ln.w = norm->w, ln.b = norm->b, ln.dt = norm->dt, ln.eps = norm->eps, ln.fold_u = norm->fold_u;
  const int m = (int)M;
  auto go = [&](auto fmt) {
    fmt.packed = L.packed, fmt.absmax = L.absmax, fmt.qabsmax = L.qabsmax, fmt.nested = L.nested_absmax;
    fmt.ncode = L.nested_code, fmt.offset_ptr = L.offset, fmt.offset = 0.0f, fmt.log2_bs = l2, fmt.K = (int)L.K;
    launch_epi(epi, x, fmt, L.N, L.bias, bias_dt, out, m, ln, s);
  };
  const bool dq = L.absmax == nullptr;
  if (L.quant_type == 1) dq ? go(Format4<1, true>{}) : go(Format4<1, false>{});
  else dq ? go(Format4<0, true>{}) : go(Format4<0, false>{});
  NIBBLE_CUDA_CHECK_LAUNCH("4-bit decode GEMV");
  return true;
}

bool decode_gemv_int8(const QLinear& L, DType bias_dt, int epi, float* out, const float* x, int64_t M,
                      const DecodeNorm* norm, cudaStream_t s) {
  // Up to 4 rows: with 8 the per-lane activation copies spill and the general path is faster.
  if (M < 1 || M > 4 || L.K % 16 || !aligned16(x) || !aligned16(L.cb)) return false;
  if (norm && staged_bytes<16>(M, L.K) > kMaxStaged) return false;
  W8Args a;
  a.cb = L.cb, a.scb = L.scb, a.N = L.N, a.K = L.K, a.bias = L.bias, a.bias_dt = bias_dt;
  a.sparse = L.threshold > 0.0f;
  a.th = a.sparse ? half_to_float(float_to_half(L.threshold)) : 0.0f;
  LnArgs ln;
  if (norm) ln.w = norm->w, ln.b = norm->b, ln.dt = norm->dt, ln.eps = norm->eps;
  if (epi == kEpilogueGelu) launch8<kEpilogueGelu>(x, a, out, (int)M, ln, s);
  else if (epi == kEpilogueAccumulate) launch8<kEpilogueAccumulate>(x, a, out, (int)M, ln, s);
  else launch8<kEpilogueNone>(x, a, out, (int)M, ln, s);
  NIBBLE_CUDA_CHECK_LAUNCH("int8 decode GEMV");
  return true;
}

bool decode_gemv_int8_prequant(const QLinear& L, DType bias_dt, int epi, float* out, const int8_t* xq, const float* rs,
                               const float* xn, const int32_t* list, int64_t M, cudaStream_t s) {
  if (M < 1 || M > 8 || L.K % 16 || !aligned16(xq) || !aligned16(L.cb)) return false;
  W8Args a;
  a.cb = L.cb, a.scb = L.scb, a.N = L.N, a.K = L.K, a.bias = L.bias, a.bias_dt = bias_dt;
  a.sparse = L.threshold > 0.0f;
  a.th = 0.0f;  // applied by the preparation
  const int KS = warps_per_row(a.K);
  const unsigned g = blocks_for(a.N, kWarps / KS);
  const int m = (int)M;
  auto go = [&](auto k) { launch(k, g, 0, s, xq, rs, xn, list, a, out, m, KS); };
  auto rows = [&](auto epi_tag) {
    constexpr int E = decltype(epi_tag)::value;
    if (M == 1) go(k_gemv8_prequant<1, E>);
    else if (M == 2) go(k_gemv8_prequant<2, E>);
    else if (M <= 4) go(k_gemv8_prequant<4, E>);
    else go(k_gemv8_prequant<8, E>);
  };
  if (epi == kEpilogueGelu) rows(std::integral_constant<int, kEpilogueGelu>());
  else if (epi == kEpilogueAccumulate) rows(std::integral_constant<int, kEpilogueAccumulate>());
  else rows(std::integral_constant<int, kEpilogueNone>());
  NIBBLE_CUDA_CHECK_LAUNCH("int8 decode GEMV (quantized activations)");
  return true;
}

}  // namespace gpt2_cuda
}  // namespace nibble
