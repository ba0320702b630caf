// Unquantized linear layers, out[M,N] = x[M,K] . w[N,K]^T + bias, float32 activations and
// float32/float16/bfloat16 weights, float32 products and sums.
//  1. small M (decode, M <= 16): one warp per output feature streams its weight row once
//     with 16-byte loads and keeps M accumulators in registers: the weight bytes dominate
//     and are read exactly once, so this runs at memory speed.
//  2. larger M (prefill): a 64x64 shared-memory tile per block, 4x4 outputs per thread.
// Plain FMA, no TF32 tensor cores: float32 weights must match the CPU within 1e-4.
// An epilogue can apply gelu_new or add the result into `out` (the residual stream), which
// saves the separate elementwise launch and a pass over the activations.
#include <cstdint>
#include <type_traits>

#include "cuda/gpt2_decode_gemv.h"
#include "cuda/gpt2_device.cuh"
#include "cuda/pdl.cuh"

namespace nibble {
namespace gpt2_cuda {

NIBBLE_PROBE_TU(gpt2_linear)  // probe.cuh

namespace {

constexpr int kSmallMax = 16;

constexpr int kWarpsPerBlock = 8;

// 16 bytes of weights -> 16/sizeof(T) floats.
__device__ __forceinline__ void unpack16(const uint4& r, float* f, float) {
  f[0] = __uint_as_float(r.x), f[1] = __uint_as_float(r.y), f[2] = __uint_as_float(r.z), f[3] = __uint_as_float(r.w);
}
__device__ __forceinline__ void unpack16(const uint4& r, float* f, __half) {
  const __half2* h = reinterpret_cast<const __half2*>(&r);
#pragma unroll
  for (int i = 0; i < 4; i++) {
    float2 v = __half22float2(h[i]);
    f[2 * i] = v.x, f[2 * i + 1] = v.y;
  }
}
__device__ __forceinline__ void unpack16(const uint4& r, float* f, __nv_bfloat16) {
  const uint32_t u[4] = {r.x, r.y, r.z, r.w};
#pragma unroll
  for (int i = 0; i < 4; i++) f[2 * i] = __uint_as_float(u[i] << 16), f[2 * i + 1] = __uint_as_float(u[i] & 0xffff0000u);
}

// Streams the weight past the L1: it is read once per call and would only evict x.
__device__ __forceinline__ uint4 load_stream(const void* p) {
  uint4 r;
  asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];"
               : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w)
               : "l"(p));
  return r;
}

// KS warps share one output row when rows are long (each takes every KS-th 512-byte stretch
// of it), so a warp's loads are all in flight at once instead of in a chain of batches; their
// partial sums meet in shared memory in a fixed order (deterministic).
// Launched as a programmatic dependent (pdl.cuh): the first 16 bytes of weights a lane needs
// are requested before waiting for the kernel that writes x (the layernorm, the attention).
// (No minimum of blocks an SM in the launch bounds: one row takes 32 registers, 8 blocks, on
// its own for float32/float16 weights; a minimum of 8 is out of range on GPUs that hold 1536
// threads an SM, and an explicit 1 for more rows let ptxas take up to 200 registers.)
template <typename T, int MT, int EPI>
__global__ void __launch_bounds__(kWarpsPerBlock * 32)
    linear_small_m_kernel(float* out, const float* __restrict__ x, const T* __restrict__ w,
                          const T* __restrict__ bias, int M, int64_t K, int64_t N, bool vec, int KS) {
  ProbeScope probe;
  constexpr int VEC = 16 / sizeof(T);
  __shared__ float s_part[kWarpsPerBlock][MT];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, ks = warp % KS;
  const int64_t n = (int64_t)blockIdx.x * (kWarpsPerBlock / KS) + warp / KS;
  const bool live = n < N;
  const T* wr = w + (live ? n : 0) * K;
  const int64_t k0 = (int64_t)(lane + 32 * ks) * VEC, kstep = 32 * VEC * KS;
  uint4 first = make_uint4(0, 0, 0, 0);
  if (live && vec && k0 < K) first = load_stream(wr + k0);
  // One row (the decode step): the epilogue's inputs are requested now and used after the row
  // is summed, so their latency overlaps the loop instead of following it: the bias (a
  // parameter) before the wait, the residual it adds to after it (the previous kernel writes
  // it). With more rows the registers they would hold cost more than the latency.
  const bool writer = live && ks == 0 && lane == 0;
  constexpr DType kBiasDt = std::is_same<T, float>::value ? DType::F32 : std::is_same<T, __half>::value ? DType::F16 : DType::BF16;
  uint32_t bias_bits = 0;
  if (MT == 1 && writer && bias) bias_bits = load_bits(bias, kBiasDt, n);
  pdl_wait();
  probe.waited();
  pdl_trigger();
  const float prev = MT == 1 && writer && EPI == kEpilogueAccumulate ? out[n] : 0.f;
  float acc[MT];
#pragma unroll
  for (int m = 0; m < MT; m++) acc[m] = 0.f;
  auto consume = [&](const uint4& raw, int64_t k) {
    float wf[VEC];
    unpack16(raw, wf, T());
#pragma unroll
    for (int m = 0; m < MT; m++) {
      if (m < M) {
        const float4* xp = reinterpret_cast<const float4*>(x + m * K + k);
#pragma unroll
        for (int v = 0; v < VEC / 4; v++) {
          float4 xv = __ldg(xp + v);
          acc[m] = fmaf(wf[4 * v], xv.x, acc[m]);
          acc[m] = fmaf(wf[4 * v + 1], xv.y, acc[m]);
          acc[m] = fmaf(wf[4 * v + 2], xv.z, acc[m]);
          acc[m] = fmaf(wf[4 * v + 3], xv.w, acc[m]);
        }
      }
    }
  };
  if (live && vec) {
    if (k0 < K) consume(first, k0);
#pragma unroll 8
    for (int64_t k = k0 + kstep; k < K; k += kstep) consume(load_stream(wr + k), k);
  } else if (live) {
    for (int64_t k = lane + 32 * ks; k < K; k += 32 * KS) {
      const float wk = to_f32(wr[k]);
#pragma unroll
      for (int m = 0; m < MT; m++)
        if (m < M) acc[m] = fmaf(wk, x[m * K + k], acc[m]);
    }
  }
  probe.mark(1);
#pragma unroll
  for (int m = 0; m < MT; m++) {
    const float s = warp_sum(acc[m]);
    if (KS > 1 && lane == 0) s_part[warp][m] = s;
    acc[m] = s;
  }
  if (KS > 1) __syncthreads();
  if (!writer) return;
  const float b = bias ? (MT == 1 ? bits_f32(bias_bits, kBiasDt) : to_f32(bias[n])) : 0.f;
#pragma unroll
  for (int m = 0; m < MT; m++) {
    if (m >= M) continue;
    float s = acc[m];
    for (int i = 1; i < KS; i++) s += s_part[warp + i][m];
    if (MT == 1 && EPI == kEpilogueAccumulate) out[n] = prev + (s + b);  // store_epilogue's arithmetic
    else store_epilogue(EPI, out + m * N + n, s + b);
  }
}

// One row behind a folded layernorm (LnFold in gpt2_cuda.h): the block stages x * ln_w in
// shared memory (thread t: columns 8t .. 8t+7, two 16-byte loads of x and one of ln_w, the
// latter before the wait) and sums x and x^2 on the way; each lane then reads its activations
// from there, and the writer applies rstd * (s - mean * u) + v. The staged row is padded by 4
// floats after every VEC (8 floats for 16-bit weights), so a lane's 16-byte reads of its
// VEC consecutive floats fall on distinct banks.
constexpr int kFoldMaxK = 8 * kWarpsPerBlock * 32;
template <int VEC>
__host__ __device__ __forceinline__ constexpr int fold_pad(int k) { return VEC >= 8 ? k + (k / VEC) * 4 : k; }

template <typename T, int EPI>
__global__ void __launch_bounds__(kWarpsPerBlock * 32)
    linear_fold_kernel(float* out, const float* __restrict__ x, const T* __restrict__ w, const T* __restrict__ ln_w,
                       float eps, const float* __restrict__ fold_u, const float* __restrict__ fold_v, int K, int N, int KS) {
  ProbeScope probe;
  constexpr int VEC = 16 / sizeof(T);
  __shared__ float4 s_x4[fold_pad<VEC>(kFoldMaxK) / 4];
  __shared__ float s_red[2][kWarpsPerBlock];
  __shared__ float s_part[kWarpsPerBlock];
  float* s_x = reinterpret_cast<float*>(s_x4);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, ks = warp % KS;
  const int n = (int)blockIdx.x * (kWarpsPerBlock / KS) + warp / KS;
  const bool live = n < N;
  const T* wr = w + (int64_t)(live ? n : 0) * K;
  const int k0 = (lane + 32 * ks) * VEC, kstep = 32 * VEC * KS;
  uint4 first = make_uint4(0, 0, 0, 0);
  if (live && k0 < K) first = load_stream(wr + k0);
  // Parameters, read before the wait: this thread's 8 layernorm weights, the row's u and v.
  const int c0 = (int)threadIdx.x * 8;
  float lw[8];
  if (c0 < K) {
    const uint4 r0 = __ldg(reinterpret_cast<const uint4*>(ln_w + c0));
    if (sizeof(T) == 4) {
      const uint4 r1 = __ldg(reinterpret_cast<const uint4*>(ln_w + c0) + 1);
      unpack16(r0, lw, T()), unpack16(r1, lw + 4, T());
    } else {
      unpack16(r0, lw, T());
    }
  }
  const bool writer = live && ks == 0 && lane == 0;
  float u = 0.f, v = 0.f;
  if (writer) u = __ldg(fold_u + n), v = __ldg(fold_v + n);
  pdl_wait();
  probe.waited();
  pdl_trigger();
  const float prev = writer && EPI == kEpilogueAccumulate ? out[n] : 0.f;
  float s1 = 0.f, s2 = 0.f;
  if (c0 < K) {
    const float4 a = __ldg(reinterpret_cast<const float4*>(x + c0)), b = __ldg(reinterpret_cast<const float4*>(x + c0) + 1);
    float xv[8] = {a.x, a.y, a.z, a.w, b.x, b.y, b.z, b.w};
#pragma unroll
    for (int i = 0; i < 8; i++) s1 += xv[i], s2 = fmaf(xv[i], xv[i], s2), xv[i] *= lw[i];
    // 8 columns from a multiple of 8: contiguous in the padded row for VEC = 4 and 8.
    float4* d = reinterpret_cast<float4*>(s_x + fold_pad<VEC>(c0));
    d[0] = make_float4(xv[0], xv[1], xv[2], xv[3]);
    d[1] = make_float4(xv[4], xv[5], xv[6], xv[7]);
  }
  s1 = warp_sum(s1), s2 = warp_sum(s2);
  if (lane == 0) s_red[0][warp] = s1, s_red[1][warp] = s2;
  __syncthreads();
  float t1 = 0.f, t2 = 0.f;
#pragma unroll
  for (int i = 0; i < kWarpsPerBlock; i++) t1 += s_red[0][i], t2 += s_red[1][i];  // warp order: same bits in every block
  float mean, rstd;
  probe.mark(0);
  fold_mean_rstd(t1, t2, K, eps, &mean, &rstd);
  float acc = 0.f;
  auto consume = [&](const uint4& raw, int k) {
    float wf[VEC];
    unpack16(raw, wf, T());
    const float4* xp = reinterpret_cast<const float4*>(s_x + fold_pad<VEC>(k));
#pragma unroll
    for (int q = 0; q < VEC / 4; q++) {
      const float4 xq = xp[q];
      acc = fmaf(wf[4 * q], xq.x, acc);
      acc = fmaf(wf[4 * q + 1], xq.y, acc);
      acc = fmaf(wf[4 * q + 2], xq.z, acc);
      acc = fmaf(wf[4 * q + 3], xq.w, acc);
    }
  };
  if (live) {
    if (k0 < K) consume(first, k0);
#pragma unroll 8
    for (int k = k0 + kstep; k < K; k += kstep) consume(load_stream(wr + k), k);
  }
  probe.mark(1);
  acc = warp_sum(acc);
  if (KS > 1) {
    if (lane == 0) s_part[warp] = acc;
    __syncthreads();
  }
  if (!writer) return;
  for (int i = 1; i < KS; i++) acc += s_part[warp + i];
  const float r = fmaf(rstd, fmaf(-mean, u, acc), v);
  if (EPI == kEpilogueAccumulate) out[n] = prev + r;  // store_epilogue's arithmetic
  else store_epilogue(EPI, out + n, r);
}

constexpr int kTile = 64, kTileK = 16;

template <typename T, int EPI>
__global__ void __launch_bounds__(256)
    linear_tiled_kernel(float* out, const float* __restrict__ x, const T* __restrict__ w,
                        const T* __restrict__ bias, int64_t M, int64_t K, int64_t N) {
  __shared__ float xs[kTileK][kTile + 4];
  __shared__ float ws[kTileK][kTile + 4];
  const int tid = threadIdx.x, tx = tid % 16, ty = tid / 16;
  const int64_t m0 = (int64_t)blockIdx.y * kTile, n0 = (int64_t)blockIdx.x * kTile;
  float acc[4][4] = {};
  for (int64_t k0 = 0; k0 < K; k0 += kTileK) {
#pragma unroll
    for (int i = 0; i < 4; i++) {
      const int e = tid + i * 256, r = e / kTileK, kk = e % kTileK;
      const int64_t gk = k0 + kk, gm = m0 + r, gn = n0 + r;
      xs[kk][r] = (gm < M && gk < K) ? x[gm * K + gk] : 0.f;
      ws[kk][r] = (gn < N && gk < K) ? to_f32(w[gn * K + gk]) : 0.f;
    }
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < kTileK; kk++) {
      float a[4], b[4];
#pragma unroll
      for (int i = 0; i < 4; i++) a[i] = xs[kk][ty * 4 + i], b[i] = ws[kk][tx * 4 + i];
#pragma unroll
      for (int i = 0; i < 4; i++)
#pragma unroll
        for (int j = 0; j < 4; j++) acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
    }
    __syncthreads();
  }
#pragma unroll
  for (int i = 0; i < 4; i++) {
    const int64_t m = m0 + ty * 4 + i;
    if (m >= M) continue;
#pragma unroll
    for (int j = 0; j < 4; j++) {
      const int64_t n = n0 + tx * 4 + j;
      if (n < N) store_epilogue(EPI, out + m * N + n, acc[i][j] + (bias ? to_f32(bias[n]) : 0.f));
    }
  }
}

// Warps per row for one-row launches: one per ~4 KB of weights, at most a block's worth; then
// doubled while the grid has under gemv_split_blocks() blocks an SM and each lane still gets
// a 16-byte chunk, so a short layer's rows spread over every SM instead of 1.5 blocks an SM
// (GPT-2 XL's 1600-row c_proj: 200 blocks on 132 SMs, half of them with two). Same-run A/B on
// the H100, queued steps: XL float16 B=1 559 -> 581, 124M float16 3869-3882 -> 4250.
int small_m_ks(int64_t K, int64_t N, int elem_bytes, int64_t M) {
  const int64_t row_bytes = K * elem_bytes;
  int KS = row_bytes > 16384 ? 8 : row_bytes > 8192 ? 4 : row_bytes > 4096 ? 2 : 1;
  const int64_t min_blocks = (int64_t)gemv_split_blocks() * cuda::sm_count();
  if (M == 1)
    while (KS < kWarpsPerBlock && (int64_t)blocks_for(N, kWarpsPerBlock / KS) < min_blocks &&
           row_bytes >= (int64_t)KS * 2 * 32 * 16)
      KS *= 2;
  return KS;
}

template <typename T, int EPI>
void launch_small(float* out, const float* x, const T* w, const T* bias, int64_t M, int64_t K, int64_t N,
                  cudaStream_t s) {
  constexpr int VEC = 16 / sizeof(T);
  const bool vec = K % VEC == 0 && (reinterpret_cast<uintptr_t>(w) & 15) == 0 &&
                   (reinterpret_cast<uintptr_t>(x) & 15) == 0;
  const int KS = small_m_ks(K, N, (int)sizeof(T), M);
  const unsigned grid = blocks_for(N, kWarpsPerBlock / KS);
  const int threads = kWarpsPerBlock * 32, m = (int)M;
  auto go = [&](auto kernel) { launch_pdl(kernel, dim3(grid), dim3(threads), 0, s, "linear launch", out, x, w, bias, m, K, N, vec, KS); };
  if (M == 1) go(linear_small_m_kernel<T, 1, EPI>);
  else if (M == 2) go(linear_small_m_kernel<T, 2, EPI>);
  else if (M <= 4) go(linear_small_m_kernel<T, 4, EPI>);
  else if (M <= 8) go(linear_small_m_kernel<T, 8, EPI>);
  else go(linear_small_m_kernel<T, 16, EPI>);
}

template <typename T, int EPI>
void launch_tiled(float* out, const float* x, const T* w, const T* bias, int64_t M, int64_t K, int64_t N,
                  cudaStream_t s) {
  const int64_t gy = (M + kTile - 1) / kTile;
  if (gy > 65535) throw std::runtime_error("linear: " + std::to_string(M) + " rows exceed one launch");
  dim3 grid(blocks_for(N, kTile), (unsigned)gy);
  linear_tiled_kernel<T, EPI><<<grid, 256, 0, s>>>(out, x, w, bias, M, K, N);
}

template <typename T, int EPI>
void run_epi(int path, float* out, const float* x, const T* w, const T* bias, int64_t M, int64_t K, int64_t N,
             cudaStream_t s) {
  // 2..16 rows of a 16-bit weight: the tensor-core decode GEMV (gpt2_decode_mma.cu).
  if (path == 0 || path == 3) {
    const DType wdt = std::is_same<T, __half>::value ? DType::F16 : std::is_same<T, float>::value ? DType::F32 : DType::BF16;
    if (decode_mma_16bit(w, bias, wdt, EPI, out, x, M, K, N, nullptr, s)) return;
    if (path == 3) throw std::runtime_error("linear: the tensor-core decode kernel does not take these operands");
  }
  if (path == 0) path = M <= kSmallMax ? 1 : 2;
  if (path == 1) {
    if (M > kSmallMax) throw std::runtime_error("linear: the small-M kernel takes at most 16 rows");
    launch_small<T, EPI>(out, x, w, bias, M, K, N, s);
  } else {
    launch_tiled<T, EPI>(out, x, w, bias, M, K, N, s);
  }
}

template <typename T>
void run(int path, int epilogue, float* out, const float* x, const T* w, const T* bias, int64_t M, int64_t K,
         int64_t N, cudaStream_t s) {
  switch (epilogue) {
    case kEpilogueNone: run_epi<T, kEpilogueNone>(path, out, x, w, bias, M, K, N, s); break;
    case kEpilogueGelu: run_epi<T, kEpilogueGelu>(path, out, x, w, bias, M, K, N, s); break;
    case kEpilogueAccumulate: run_epi<T, kEpilogueAccumulate>(path, out, x, w, bias, M, K, N, s); break;
    default: throw std::runtime_error("linear: unknown epilogue " + std::to_string(epilogue));
  }
}

}  // namespace

void linear_ex(int path, int epilogue, float* out, const float* x, const void* w, const void* bias, DType wdt,
               int64_t M, int64_t K, int64_t N, int device) {
  if (M == 0 || N == 0) return;
  cudaStream_t s = begin(device);
  // K == 0 needs no special case: both kernels then write the bias (or zeros).
  switch (wdt) {
    case DType::F32: run(path, epilogue, out, x, (const float*)w, (const float*)bias, M, K, N, s); break;
    case DType::F16: run(path, epilogue, out, x, (const __half*)w, (const __half*)bias, M, K, N, s); break;
    case DType::BF16:
      run(path, epilogue, out, x, (const __nv_bfloat16*)w, (const __nv_bfloat16*)bias, M, K, N, s);
      break;
    default: throw std::runtime_error(std::string("linear: weights of ") + dtype_name(wdt) + " are not supported");
  }
  NIBBLE_CUDA_CHECK_LAUNCH("linear [" + std::to_string(M) + "x" + std::to_string(K) + "] x [" + std::to_string(N) +
                           "x" + std::to_string(K) + "]^T");
}

bool linear_fold_can_take(int64_t K, int64_t N, DType wdt) {
  return (wdt == DType::F32 || wdt == DType::F16 || wdt == DType::BF16) && K >= 8 && K <= kFoldMaxK && K % 8 == 0 &&
         N > 0 && N < (1ll << 31) / K;
}

bool linear_fold(int epilogue, float* out, const float* x, const void* w, DType wdt, int64_t M, int64_t K, int64_t N,
                 const void* ln_w, float eps, const LnFold& fold, int device) {
  auto a16 = [](const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15) == 0; };
  if (M != 1 || !fold.u || !linear_fold_can_take(K, N, wdt) || !a16(x) || !a16(w) || !a16(ln_w)) return false;
  cudaStream_t s = begin(device);
  const int KS = small_m_ks(K, N, (int)dtype_size(wdt), M);
  const unsigned grid = blocks_for(N, kWarpsPerBlock / KS);
  auto go = [&](auto kernel, auto* wt) {
    using T = std::remove_pointer_t<decltype(wt)>;
    launch_pdl(kernel, dim3(grid), dim3(kWarpsPerBlock * 32), 0, s, "linear (folded layernorm) launch", out, x,
               static_cast<const T*>(w), static_cast<const T*>(ln_w), eps, fold.u, fold.v, (int)K, (int)N, KS);
  };
  auto epi = [&](auto* wt) {
    using T = std::remove_pointer_t<decltype(wt)>;
    if (epilogue == kEpilogueGelu) go(linear_fold_kernel<T, kEpilogueGelu>, wt);
    else if (epilogue == kEpilogueAccumulate) go(linear_fold_kernel<T, kEpilogueAccumulate>, wt);
    else go(linear_fold_kernel<T, kEpilogueNone>, wt);
  };
  switch (wdt) {
    case DType::F32: epi((float*)nullptr); break;
    case DType::F16: epi((__half*)nullptr); break;
    case DType::BF16: epi((__nv_bfloat16*)nullptr); break;
    default: return false;
  }
  NIBBLE_CUDA_CHECK_LAUNCH("linear with a folded layernorm [1x" + std::to_string(K) + "] x [" + std::to_string(N) + "x" +
                           std::to_string(K) + "]^T");
  return true;
}

void linear_path(int path, float* out, const float* x, const void* w, const void* bias, DType wdt, int64_t M,
                 int64_t K, int64_t N, int device) {
  linear_ex(path, kEpilogueNone, out, x, w, bias, wdt, M, K, N, device);
}

void linear(float* out, const float* x, const void* w, const void* bias, DType wdt, int64_t M, int64_t K, int64_t N,
            int device) {
  linear_path(0, out, x, w, bias, wdt, M, K, N, device);
}

}  // namespace gpt2_cuda
}  // namespace nibble
