// The GPT-2 plan's Linear layers (QLinear, gpt2_cuda.h): plain, 4-bit and LLM.int8(), each
// with the plan's epilogues (bias, gelu_new, residual add), float32 activations in and out.
// A quantized layer reproduces its nn module's forward (lib/nn/Linear4bit.ts,
// Linear8bitLt.ts) operation by operation, so the plan and the per-op path agree:
//  - 4-bit, compute float32: for M <= 16 the GEMV of gpt2_decode_gemv.cu (behind the separate
//    layernorm kernel, which measured faster than normalizing in every block), else matmul_4bit
//    into scratch and one epilogue kernel. Other compute dtypes cast x
//    first and the result back, as the module does.
//  - int8, decode (M <= 4): a one-block kernel applies the layernorm and quantizes the
//    activations once (k_int8_prep_ln), then a lean dp4a GEMV (gpt2_decode_gemv.cu); one row of
//    a small layer takes the single kernel that quantizes inside its loop instead.
//    Otherwise x rounded to float16; outlier columns (|x| >= threshold in any row) and the
//    row-wise quantization in one single-block kernel for decode-sized inputs (the per-op
//    path's three launches and a memset); the int8 GEMV/GEMM with the dequantization fused
//    (float16 result, as bitsandbytes); then one kernel adds the 16-bit outlier product
//    in ascending column order (the CPU reference's order), converts to float32 and applies
//    the epilogue. Nothing waits for the host: the outlier list stays on the device.
#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "cuda/block_scan.cuh"
#include "cuda/cast_cuda.h"
#include "cuda/gpt2_decode_gemv.h"
#include "cuda/gpt2_device.cuh"
#include "cuda/pdl.cuh"
#include "cuda/quant_cuda.h"
#include "cuda/quant_device.cuh"

namespace nibble {
namespace gpt2_cuda {

NIBBLE_PROBE_TU(gpt2_qlinear)  // probe.cuh

namespace {

constexpr size_t kAlign = 256;
size_t up(size_t n) { return (n + kAlign - 1) / kAlign * kAlign; }

// Decode-sized int8 inputs take the single-block preparation kernel.
constexpr int kPrepRows = 16;
constexpr int64_t kPrepMaxCols = 32768;
constexpr int kPrepThreads = 1024;

struct QScratch {
  void* xc;        // x in the compute dtype [M, maxK] (4 bytes per element reserved)
  void* tmp;       // matmul result [M, maxN] (4 bytes per element reserved)
  int8_t* xq;      // [M, maxK]
  float* rs;       // [M]
  uint8_t* flags;  // [maxK]
  int32_t* list;   // [1 + maxK]: count, then the outlier columns ascending
};

int64_t max_k(const Gpt2Weights& w) { return std::max(w.C, w.inner); }
int64_t max_n(const Gpt2Weights& w) { return std::max(3 * w.C, w.inner); }

QScratch carve(void* base, int64_t M, int64_t K, int64_t N) {
  char* p = static_cast<char*>(base);
  auto take = [&](size_t bytes) { void* r = p; p += up(bytes); return r; };
  QScratch q;
  q.xc = take((size_t)(M * K) * 4);
  q.tmp = take((size_t)(M * N) * 4);
  q.xq = (int8_t*)take((size_t)(M * K));
  q.rs = (float*)take((size_t)M * 4);
  q.flags = (uint8_t*)take((size_t)K);
  q.list = (int32_t*)take((size_t)(K + 1) * 4);
  return q;
}


// out = epilogue(float(in) + bias): the tail of the general 4-bit path.
template <typename TIN>
__global__ void k_bias_epilogue(float* out, const TIN* __restrict__ in, const void* bias, DType bdt, int epi,
                                int64_t M, int64_t N) {
  const int64_t total = M * N;
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (int64_t)gridDim.x * blockDim.x) {
    float v = to_f32(in[i]);
    if (bias) v += load_f32(bias, bdt, i % N);
    store_epilogue(epi, out + i, v);
  }
}

// The outlier columns of flags[K] as an ascending list: list[0] = count, list[1..].
// Each thread owns a contiguous run of columns, so one scan keeps the order.
__device__ void compact_flags(const uint8_t* flags, int64_t K, int32_t* list, int* s_warp) {
  const int64_t per = (K + blockDim.x - 1) / blockDim.x;
  const int64_t c0 = (int64_t)threadIdx.x * per, c1 = min(K, c0 + per);
  int n = 0;
  for (int64_t c = c0; c < c1; c++) n += flags[c] ? 1 : 0;
  int total = 0;
  int at = cuda_block::block_exclusive_scan(n, s_warp, &total);
  for (int64_t c = c0; c < c1; c++)
    if (flags[c]) list[1 + at++] = (int32_t)c;
  if (threadIdx.x == 0) list[0] = total;
}

__global__ void __launch_bounds__(kPrepThreads) k_compact_flags(const uint8_t* flags, int64_t K, int32_t* list) {
  __shared__ int s_warp[33];
  compact_flags(flags, K, list, s_warp);
}

// int8_vectorwise_quant of float16(xval(m, c)) for M <= ROWS rows by one block of THREADS
// threads, with the outlier flags (s_flags in shared memory, and `flags` when not null) and the
// ascending outlier list: the same arithmetic as cpu::int8_vectorwise_quant_ref (see
// quant_int8.cu). xn, when not null, receives the rows' float32 values at the outlier columns,
// the only ones the outlier product reads (every column was 6.4-25.6 KB of stores a GPT-2 XL
// layer, for rows that mostly have no outlier at all).
template <int THREADS, int ROWS, typename X>
__device__ void quantize_rows_block(X xval, int M, int64_t K, float th, bool sparse, int8_t* __restrict__ xq,
                                    float* __restrict__ rs, uint8_t* s_flags, uint8_t* flags, float* xn,
                                    int32_t* __restrict__ list, ProbeScope* probe = nullptr) {
  __shared__ float s_max[THREADS / 32][ROWS];
  __shared__ float s_scale[ROWS];
  __shared__ int s_warp[33];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  float mx[ROWS];
#pragma unroll
  for (int m = 0; m < ROWS; m++) mx[m] = 0.0f;
  bool any = false;  // this thread saw an outlier column
  for (int64_t c = threadIdx.x; c < K; c += THREADS) {
    bool outlier = false;
#pragma unroll
    for (int m = 0; m < ROWS; m++) {
      if (m < M) {
        const float v = xval(m, c);
        const float a = fabsf(round_to_half(v));
        if (sparse && a >= th) outlier = true;
        if (!sparse || a < th) mx[m] = fmaxf(mx[m], a);
      }
    }
    s_flags[c] = outlier;
    if (flags) flags[c] = outlier;
    any |= outlier;
  }
#pragma unroll
  for (int m = 0; m < ROWS; m++) {
    float v = mx[m];
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    if (lane == 0) s_max[warp][m] = v;
  }
  // The barrier also tells every thread whether any column is an outlier: without one (the
  // common case at threshold 6) the scan that lists them is skipped (~1.1 us of a ~5 us
  // preparation on the H100).
  const bool outliers = __syncthreads_or(any) != 0;
  if (threadIdx.x < (unsigned)M) {
    float v = 0.0f;
    for (int w = 0; w < THREADS / 32; w++) v = fmaxf(v, s_max[w][threadIdx.x]);
    rs[threadIdx.x] = v;
    s_scale[threadIdx.x] = __fmul_rn(127.0f, cuda::dev::rcp_like_fdividef(v));
  }
  __syncthreads();
  for (int64_t c = threadIdx.x; c < K; c += THREADS) {
    const bool o = outliers && s_flags[c];
    for (int m = 0; m < M; m++) {
      const float v = xval(m, c);
      int q = __float2int_rn(__fmul_rn(round_to_half(v), s_scale[m]));  // NaN -> 0
      xq[m * K + c] = o ? (int8_t)0 : (int8_t)q;
      if (o && xn) xn[m * K + c] = v;
    }
  }
  if (probe) probe->mark(2);
  if (outliers) compact_flags(s_flags, K, list, s_warp);
  else if (threadIdx.x == 0) list[0] = 0;
}

// The general path's preparation for M <= kPrepRows rows, read straight from x.
__global__ void __launch_bounds__(kPrepThreads)
    k_int8_prep(const float* __restrict__ x, int M, int64_t K, float th, bool sparse, int8_t* __restrict__ xq,
                float* __restrict__ rs, uint8_t* __restrict__ flags, int32_t* __restrict__ list) {
  extern __shared__ uint8_t s_flags[];  // [K]
  auto xval = [&](int m, int64_t c) { return x[m * K + c]; };
  quantize_rows_block<kPrepThreads, kPrepRows>(xval, M, K, th, sparse, xq, rs, s_flags, flags, nullptr, list);
}

// The decode step's int8 preparation (B <= 8 rows), one block of 1024 threads: the layer's
// layernorm when it has one (row statistics summed as layernorm_kernel's 256 threads sum them,
// see row_mean_rstd, and its expression: the bits the layernorm kernel writes), then
// k_int8_prep's quantization. The normalized values of the outlier columns go to xn for the
// outlier product; k_gemv8_prequant (gpt2_decode_gemv.cu) takes it from there. Launched as a programmatic
// dependent, like the kernels around it. One block is a chain of dependent steps (loads,
// block reductions, a scan): 1024 threads make each element pass a quarter as long as 256 did,
// and ROWS (1, 2, 4 or 8, M rounded up) drops the unused rows' reductions. The rows are staged
// in shared memory (M * K floats: up to 205 KB for 8 rows of GPT-2 XL's 6400-wide mlp c_proj),
// as far as the device's opt-in limit allows; wider inputs take the general path. They are
// copied in whole before the statistics (all loads in flight at once, then shared memory only):
// same-run A/B on the H100, queued steps, XL int8 B=1 504 -> 516, B=4 964 -> 1046 (the
// timeline probe put the preparation at 5.3-5.9 us of a 40 us layer before).
constexpr int kPrepLnThreads = 1024, kPrepLnRows = 8, kLnSumThreads = 256;
constexpr size_t kPrepLnStaticSmem = 4 * 1024;  // above the kernel's static shared memory
struct PrepLn {
  const void* w = nullptr;  // null: x is used as it is
  const void* b = nullptr;
  DType dt = DType::F32;
  float eps = 0.0f;
};
template <int ROWS>
__global__ void __launch_bounds__(kPrepLnThreads)
    k_int8_prep_ln(const float* __restrict__ x, int M, int64_t K, PrepLn ln, float th, bool sparse,
                   int8_t* __restrict__ xq, float* __restrict__ rs, float* __restrict__ xn, int32_t* __restrict__ list) {
  ProbeScope probe;
  extern __shared__ float s_x[];  // [M, K] floats, then K outlier flags
  uint8_t* s_flags = reinterpret_cast<uint8_t*>(s_x + M * K);
  __shared__ float s_red[32];
  // The layernorm's weight and bias (parameters) requested before the wait, as bits converted
  // where used (load_bits), for rows up to kLnCols wide (every GPT-2 width): their latency then
  // hides behind the previous kernel instead of following the row statistics.
  constexpr int kLnPerThread = 2, kLnCols = kLnPerThread * kPrepLnThreads;
  uint32_t lw[kLnPerThread], lb[kLnPerThread];
  const bool cached = ln.w && K <= kLnCols;
  if (cached)
#pragma unroll
    for (int i = 0; i < kLnPerThread; i++) {
      const int64_t c = threadIdx.x + (int64_t)i * kPrepLnThreads;
      lw[i] = c < K ? load_bits(ln.w, ln.dt, c) : 0u;
      lb[i] = c < K ? load_bits(ln.b, ln.dt, c) : 0u;
    }
  pdl_wait();
  probe.waited();
  pdl_trigger();
  // The rows into shared memory first, every load issued before any is stored (a thread's
  // share of an 8-row, 6400-wide input is 13 float4): the statistics, the normalization and
  // the quantization then read shared memory instead of waiting on L2 pass after pass. The
  // sums keep layernorm_kernel's order (row_mean_rstd), so the bits are the same.
  {
    const int64_t n4 = (int64_t)M * K / 4;  // K % 16 == 0 (int8_decode_prepared)
    const float4* x4 = reinterpret_cast<const float4*>(x);
    float4* s4 = reinterpret_cast<float4*>(s_x);
    constexpr int kBatch = 4;
    for (int64_t i = threadIdx.x; i < n4; i += kBatch * kPrepLnThreads) {
      float4 v[kBatch];
#pragma unroll
      for (int u = 0; u < kBatch; u++) {
        const int64_t j = i + u * kPrepLnThreads;
        v[u] = j < n4 ? __ldg(x4 + j) : make_float4(0.f, 0.f, 0.f, 0.f);
      }
#pragma unroll
      for (int u = 0; u < kBatch; u++) {
        const int64_t j = i + u * kPrepLnThreads;
        if (j < n4) s4[j] = v[u];
      }
    }
    __syncthreads();
  }
  if (ln.w) {
    for (int m = 0; m < M; m++) {
      float* xr = s_x + m * K;
      float mean, rstd;
      row_mean_rstd(xr, K, ln.eps, s_red, &mean, &rstd, kLnSumThreads);  // ends in a barrier: all reads done
      if (cached) {
#pragma unroll
        for (int i = 0; i < kLnPerThread; i++) {
          const int64_t c = threadIdx.x + (int64_t)i * kPrepLnThreads;
          if (c < K) xr[c] = (xr[c] - mean) * rstd * bits_f32(lw[i], ln.dt) + bits_f32(lb[i], ln.dt);
        }
      } else {
        for (int64_t c = threadIdx.x; c < K; c += kPrepLnThreads)
          xr[c] = (xr[c] - mean) * rstd * load_f32(ln.w, ln.dt, c) + load_f32(ln.b, ln.dt, c);
      }
    }
    probe.mark(0);
  }
  // No barrier here: the quantization below reads each column by the thread that normalized
  // it (column c by thread c mod kPrepLnThreads), and the staging ended in one.
  probe.mark(1);
  auto xval = [&](int m, int64_t c) { return s_x[m * K + c]; };
  quantize_rows_block<kPrepLnThreads, ROWS>(xval, M, K, th, sparse, xq, rs, s_flags, nullptr, xn, list, &probe);
}

// Whether the decode step's int8 layers take the preparation kernel + k_gemv8_prequant (two
// launches) instead of the one-kernel k_decode_gemv8. NIBBLE_CUDA_INT8_PREP=0: the latter.
// NIBBLE_CUDA_INT8_PREP=all: every layer at one row too (see int8_decode_prepared).
enum class Int8Prep { Off, Default, All };
Int8Prep int8_prep_mode() {
  static const Int8Prep mode = [] {
    const char* v = std::getenv("NIBBLE_CUDA_INT8_PREP");
    if (v && std::strcmp(v, "0") == 0) return Int8Prep::Off;
    if (v && std::strcmp(v, "all") == 0) return Int8Prep::All;
    return Int8Prep::Default;
  }();
  return mode;
}

// Whether 4-bit layers take their layernorm inside the decode GEMV (every block normalizing
// the rows it stages) instead of from the one-block layernorm kernel before it. Off: same-run
// A/B, generate() tokens/s, separate vs fused: GPT-2 XL nf4 B=1 576/576 vs 541/547, 124M B=1
// 3738/3633 vs 3364/3406, XL B=8 3071/3062 vs 3041/3043. (Float16 layers keep theirs fused in
// the tensor-core kernel at 2+ rows: 2997/2977 vs 2916/2930 separate at XL B=8.)
// NIBBLE_CUDA_FUSE_LN_4BIT=1 turns it back on (comparisons, tests).
bool fuse_ln_4bit() {
  static const bool on = [] {
    const char* v = std::getenv("NIBBLE_CUDA_FUSE_LN_4BIT");
    return v && std::strcmp(v, "1") == 0;
  }();
  return on;
}

// The decode step's int8 layer as preparation + GEMV; false (nothing launched) when the rows
// do not suit it.
bool int8_decode_prepared(const QLinear& L, DType dt, int epi, float* out, const float* x, int64_t M,
                          const DecodeNorm* norm, const QScratch& q, cudaStream_t s) {
  const int64_t K = L.K;
  const size_t smem = (size_t)(M * K) * 4 + (size_t)K;
  if (int8_prep_mode() == Int8Prep::Off || M < 1 || M > kPrepLnRows || K % 16 || (reinterpret_cast<uintptr_t>(x) & 15) ||
      smem + kPrepLnStaticSmem > (size_t)cuda::smem_optin_bytes())
    return false;
  // One row of a small layer: the one-kernel GEMV (its in-loop quantization is cheap there and
  // the extra launch is not). Same-run A/B, queued decode steps/s: preparing every layer took
  // GPT-2 124M B=1 2669 -> 2394 and XL 336 -> 404; only layers of >= 2^22 weights at B=1
  // (XL's c_attn, c_fc, mlp c_proj), 124M 2685 and XL 416. With 2-4 rows every layer
  // gains: 124M B=4 3953 -> 5354, XL B=4 390 -> 630. Rechecked with the 1024-thread
  // preparation (NIBBLE_CUDA_INT8_PREP=all prepares every layer): XL B=1 498 -> 480, 124M 2906
  // -> 2557 when the small layers are prepared too.
  if (M == 1 && L.N * K < ((int64_t)1 << 22) && int8_prep_mode() != Int8Prep::All) return false;
  const bool sparse = L.threshold > 0.0f;
  const float th = sparse ? half_to_float(float_to_half(L.threshold)) : 0.0f;
  PrepLn ln;
  if (norm) ln.w = norm->w, ln.b = norm->b, ln.dt = norm->dt, ln.eps = norm->eps;
  float* xn = static_cast<float*>(q.xc);
  auto prep = M == 1 ? k_int8_prep_ln<1> : M == 2 ? k_int8_prep_ln<2> : M <= 4 ? k_int8_prep_ln<4> : k_int8_prep_ln<8>;
  if (smem + kPrepLnStaticSmem > 48 * 1024)  // the 48 KB default counts static shared memory too
    NIBBLE_CUDA_CHECK(cudaFuncSetAttribute(prep, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem),
                      "int8 linear: preparing the activations");
  launch_pdl(prep, dim3(1), dim3(kPrepLnThreads), smem, s, "int8 linear: preparing the activations", x, (int)M, K, ln,
             th, sparse, q.xq, q.rs, xn, q.list);
  return decode_gemv_int8_prequant(L, dt, epi, out, q.xq, q.rs, xn, q.list, M, s);
}

// out[m, n] = epilogue(float(half(outh + outlier product)) [+ bias]): the 16-bit half of the
// mixed decomposition (cpu::int8_outlier_matmul_add's order and rounding), the cast back to
// float32 and the plan's epilogue. `bias` is added here only when the dequantization could
// not take it (a bias that is not float16).
__global__ void k_int8_outliers_epilogue(float* out, const __half* __restrict__ outh, const float* __restrict__ x,
                                         const int32_t* __restrict__ list, const int8_t* __restrict__ cb,
                                         const float* __restrict__ scb, const void* bias, DType bdt, int epi,
                                         int64_t M, int64_t N, int64_t K) {
  const int64_t total = M * N;
  const int cnt = list[0];
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (int64_t)gridDim.x * blockDim.x) {
    const int64_t m = i / N, n = i % N;
    float v = __half2float(outh[i]);
    if (cnt) {
      const float s = scb[n];
      for (int j = 0; j < cnt; j++) {
        const int64_t c = list[1 + j];
        const float wv = round_to_half(__fdiv_rn(__fmul_rn((float)cb[n * K + c], s), 127.0f));
        v = __fadd_rn(v, __fmul_rn(round_to_half(x[m * K + c]), wv));
      }
      v = round_to_half(v);
    }
    if (bias) v += load_f32(bias, bdt, n);
    store_epilogue(epi, out + i, v);
  }
}

unsigned grid_for(int64_t n) { return (unsigned)std::min<int64_t>((n + 255) / 256, 132 * 16); }

void launch_epilogue(DType tdt, float* out, const void* tmp, const void* bias, DType bdt, int epi, int64_t M,
                     int64_t N, cudaStream_t s) {
  const unsigned g = grid_for(M * N);
  if (tdt == DType::F16) k_bias_epilogue<__half><<<g, 256, 0, s>>>(out, (const __half*)tmp, bias, bdt, epi, M, N);
  else if (tdt == DType::BF16)
    k_bias_epilogue<__nv_bfloat16><<<g, 256, 0, s>>>(out, (const __nv_bfloat16*)tmp, bias, bdt, epi, M, N);
  else k_bias_epilogue<float><<<g, 256, 0, s>>>(out, (const float*)tmp, bias, bdt, epi, M, N);
}

void linear_4bit(const QLinear& L, DType dt, int epi, float* out, const float* x, int64_t M, const QScratch& q,
                 int device, cudaStream_t s) {
  if (decode_gemv_4bit(L, dt, epi, out, x, M, nullptr, s)) return;
  cuda::Weight4bit w;
  w.packed = L.packed, w.absmax = L.absmax, w.qabsmax = L.qabsmax, w.nested_absmax = L.nested_absmax;
  w.nested_code = L.nested_code, w.offset_ptr = L.offset, w.blocksize = L.blocksize;
  w.qt = (cuda::QuantType)L.quant_type, w.N = L.N, w.K = L.K;
  const void* xc = x;
  if (L.compute != DType::F32) {
    cuda_cast::cast(q.xc, L.compute, x, DType::F32, M * L.K, device);
    xc = q.xc;
  }
  // The module adds the bias inside the matmul in the compute dtype; that is only possible
  // here when the bias already has it.
  const bool bias_in = L.bias && dt == L.compute;
  cuda::matmul_4bit(xc, L.compute, M, w, bias_in ? L.bias : nullptr, q.tmp, s);
  launch_epilogue(L.compute, out, q.tmp, bias_in ? nullptr : L.bias, dt, epi, M, L.N, s);
}

void linear_int8(const QLinear& L, DType dt, int epi, float* out, const float* x, int64_t M, const QScratch& q,
                 int device, cudaStream_t s) {
  const int64_t K = L.K, N = L.N;
  if (int8_decode_prepared(L, dt, epi, out, x, M, nullptr, q, s) || decode_gemv_int8(L, dt, epi, out, x, M, nullptr, s))
    return;
  const bool sparse = L.threshold > 0.0f;
  const float th = sparse ? half_to_float(float_to_half(L.threshold)) : 0.0f;
  if (M <= kPrepRows && K <= kPrepMaxCols) {
    k_int8_prep<<<1, kPrepThreads, (size_t)K, s>>>(x, (int)M, K, th, sparse, q.xq, q.rs, q.flags, q.list);
    NIBBLE_CUDA_CHECK_LAUNCH("int8 linear: quantizing the activations");
  } else {
    cuda_cast::cast(q.xc, DType::F16, x, DType::F32, M * K, device);
    cuda::int8_vectorwise_quant(q.xc, DType::F16, M, K, L.threshold, q.xq, q.rs, sparse ? q.flags : nullptr, s);
    if (sparse) k_compact_flags<<<1, kPrepThreads, 0, s>>>(q.flags, K, q.list);
    else NIBBLE_CUDA_CHECK(cudaMemsetAsync(q.list, 0, 4, s), "int8 linear: outlier count");
    NIBBLE_CUDA_CHECK_LAUNCH("int8 linear: outlier columns");
  }
  const bool bias_in = L.bias && dt == DType::F16;
  cuda::int8_linear_matmul_dequant(q.xq, L.cb, M, N, K, q.rs, L.scb, bias_in ? (const uint16_t*)L.bias : nullptr,
                                   (uint16_t*)q.tmp, s);
  k_int8_outliers_epilogue<<<grid_for(M * N), 256, 0, s>>>(out, (const __half*)q.tmp, x, q.list, L.cb, L.scb,
                                                          bias_in ? nullptr : L.bias, dt, epi, M, N, K);
  NIBBLE_CUDA_CHECK_LAUNCH("int8 linear: outlier product");
}

}  // namespace

size_t qlinear_scratch_bytes(const Gpt2Weights& w, int64_t M) {
  if (!w.quantized) return 0;
  const int64_t K = max_k(w), N = max_n(w);
  return up((size_t)(M * K) * 4) + up((size_t)(M * N) * 4) + up((size_t)(M * K)) + up((size_t)M * 4) + up((size_t)K) +
         up((size_t)(K + 1) * 4);
}

void qlinear(const QLinear& L, DType dt, int epilogue, float* out, const float* x, int64_t M, void* qscratch,
             int device) {
  if (L.kind == QLinear::kPlain) {
    linear_ex(0, epilogue, out, x, L.w, L.bias, dt, M, L.K, L.N, device);
    return;
  }
  if (M == 0) return;
  cudaStream_t s = begin(device);
  // Carved for this layer's own K and N (within the plan-wide maxima the scratch was sized for).
  const QScratch q = carve(qscratch, M, L.K, L.N);
  if (L.kind == QLinear::k4bit) linear_4bit(L, dt, epilogue, out, x, M, q, device, s);
  else linear_int8(L, dt, epilogue, out, x, M, q, device, s);
  NIBBLE_CUDA_CHECK_LAUNCH("quantized linear [" + std::to_string(M) + "x" + std::to_string(L.K) + "] x [" +
                           std::to_string(L.N) + "x" + std::to_string(L.K) + "]^T");
}

void qlinear_ln(const QLinear& L, const void* ln_w, const void* ln_b, float eps, DType dt, int epilogue, float* out,
                const float* x, float* h, int64_t M, void* qscratch, int device, const LnFold* fold) {
  if (M == 1 && fold && fold->u && L.kind == QLinear::kPlain &&
      linear_fold(epilogue, out, x, L.w, dt, M, L.K, L.N, ln_w, eps, *fold, device))
    return;
  if (M == 1 && fold && fold->u && L.kind == QLinear::k4bit) {
    DecodeNorm norm{ln_w, ln_b, dt, eps};
    norm.fold_u = fold->u;
    QLinear folded = L;
    folded.bias = fold->v;  // v = W . ln_b + bias, float32
    if (decode_gemv_4bit(folded, DType::F32, epilogue, out, x, M, &norm, begin(device))) return;
    // (operands the kernel does not take: the layernorm kernel and the plain path below)
  }
  if (M > 0 && L.kind == QLinear::kPlain) {
    const DecodeNorm norm{ln_w, ln_b, dt, eps};
    if (decode_mma_16bit(L.w, L.bias, dt, epilogue, out, x, M, L.K, L.N, &norm, begin(device))) return;
  } else if (M > 0) {
    cudaStream_t s = begin(device);
    const DecodeNorm norm{ln_w, ln_b, dt, eps};
    const bool fused = L.kind == QLinear::k4bit
                           ? fuse_ln_4bit() && decode_gemv_4bit(L, dt, epilogue, out, x, M, &norm, s)
                           : int8_decode_prepared(L, dt, epilogue, out, x, M, &norm, carve(qscratch, M, L.K, L.N), s) ||
                                 decode_gemv_int8(L, dt, epilogue, out, x, M, &norm, s);
    if (fused) return;
  }
  layernorm(h, x, ln_w, ln_b, dt, M, L.K, eps, device);
  qlinear(L, dt, epilogue, out, h, M, qscratch, device);
}

namespace {
// NIBBLE_CUDA_LN_FOLD: 0 off, "layers" not the LM head, else (default) every foldable layer.
int fold_setting() {
  static const int v = [] {
    const char* e = std::getenv("NIBBLE_CUDA_LN_FOLD");
    if (e && std::strcmp(e, "0") == 0) return 0;
    if (e && std::strcmp(e, "layers") == 0) return 1;
    return 2;
  }();
  return v;
}
// Layers whose one-row decode GEMV can fold their layernorm, as the kernels themselves say:
// 4-bit layers (decode_gemv_4bit) and 16/32-bit ones (linear_fold).
bool foldable(const QLinear& L, DType dt) {
  if (!fold_setting()) return false;
  if (L.kind == QLinear::kPlain) return linear_fold_can_take(L.K, L.N, dt);
  return decode_gemv_4bit_can_fold(L);
}
QLinear head_of(const Gpt2Weights& w) {
  QLinear head;
  head.N = w.V, head.K = w.C, head.w = w.lm_head;
  return head;
}
bool head_foldable(const Gpt2Weights& w) { return fold_setting() == 2 && w.lm_head && foldable(head_of(w), w.dt); }
}  // namespace

size_t ln_fold_bytes(const Gpt2Weights& w) {
  size_t bytes = head_foldable(w) ? 2 * up((size_t)w.V * 4) : 0;
  for (const Gpt2Layer& l : w.layers)
    for (const QLinear* L : {&l.attn, &l.fc})
      if (foldable(*L, w.dt)) bytes += 2 * up((size_t)L->N * 4);
  if (!bytes) return 0;
  return bytes + 2 * up((size_t)w.C * 4) + up(qlinear_scratch_bytes(w, 1));
}

void ln_fold_build(Gpt2Weights& w, void* mem, int device) {
  if (!ln_fold_bytes(w)) return;
  char* p = static_cast<char*>(mem);
  auto take = [&](size_t bytes) { void* r = p; p += up(bytes); return static_cast<float*>(r); };
  float* lw = take((size_t)w.C * 4);
  float* lb = take((size_t)w.C * 4);
  void* qs = take(qlinear_scratch_bytes(w, 1));
  auto build = [&](const QLinear& L, const void* ln_w, const void* ln_b, LnFold& f) {
    if (!foldable(L, w.dt)) return;
    float* u = take((size_t)L.N * 4);
    float* v = take((size_t)L.N * 4);
    cuda_cast::cast(lw, DType::F32, ln_w, w.dt, L.K, device);
    cuda_cast::cast(lb, DType::F32, ln_b, w.dt, L.K, device);
    QLinear nobias = L;
    nobias.bias = nullptr;
    qlinear(nobias, w.dt, kEpilogueNone, u, lw, 1, qs, device);  // u = W . ln_w
    qlinear(L, w.dt, kEpilogueNone, v, lb, 1, qs, device);       // v = W . ln_b + bias
    f.u = u, f.v = v;
  };
  for (Gpt2Layer& l : w.layers) {
    build(l.attn, l.ln1_w, l.ln1_b, l.fold1);
    build(l.fc, l.ln2_w, l.ln2_b, l.fold2);
  }
  if (head_foldable(w)) build(head_of(w), w.lnf_w, w.lnf_b, w.head_fold);
}

}  // namespace gpt2_cuda
}  // namespace nibble
