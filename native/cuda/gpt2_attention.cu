// Causal self-attention over a KV cache.
// Prefill (T > 1): two launches, the new tokens' keys and values copied into the cache, then
// one block per (query, head, sequence) scores every allowed key, takes the softmax in shared
// memory and sums the values.
// Decode (T = 1): one launch, one block per (head, sequence) that writes its head's new cache
// row itself and reads each cached key and value row exactly once: attention_decode
// (gpt2_attention_decode.cu) for the GPT-2 head sizes, attention_decode_any (below) for the rest.
#include <cmath>
#include <algorithm>
#include <cstdlib>
#include <type_traits>

#include "cuda/gpt2_attention_decode.h"
#include "cuda/gpt2_device.cuh"
#include "cuda/pdl.cuh"

namespace nibble {
namespace gpt2_cuda {

NIBBLE_PROBE_TU(gpt2_attention)  // probe.cuh

namespace {

__global__ void kv_write_kernel(const float* __restrict__ qkv, float* __restrict__ kc, float* __restrict__ vc,
                                int64_t B, int64_t T, int64_t past, int64_t Tmax, int64_t H, int64_t D) {
  const int64_t C = H * D, total = B * T * C;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total; i += (int64_t)gridDim.x * blockDim.x) {
    const int64_t d = i % D, h = (i / D) % H, t = (i / C) % T, b = i / (C * T);
    const float* row = qkv + (b * T + t) * 3 * C;
    const int64_t dst = ((b * H + h) * Tmax + past + t) * D + d;
    kc[dst] = row[C + h * D + d];
    vc[dst] = row[2 * C + h * D + d];
  }
}

// Prefill (T > 1; the cache rows already written by kv_write_kernel): one block per (query,
// head, sequence). Shared memory: q[D] | p[L] | part[blockDim.x].
template <bool VEC>
__global__ void attention_kernel(float* __restrict__ out, const float* __restrict__ qkv,
                                 const float* __restrict__ kc, const float* __restrict__ vc,
                                 const int32_t* __restrict__ mask, int64_t T, int64_t past, int64_t Tmax, int64_t H,
                                 int D, float scale) {
  extern __shared__ float sm[];
  __shared__ float scratch[32];
  // Lets a programmatic dependent (the next GEMV) launch now and fetch its weights; it still
  // waits for this grid to finish before reading `out`. (Launched normally, this kernel starts
  // after its predecessor has finished, so the chain stays one kernel deep; see pdl.cuh.)
  pdl_trigger();
  const int64_t t = blockIdx.x, h = blockIdx.y, b = blockIdx.z;
  const int64_t C = H * D, L = past + T, last = past + t;
  float* q = sm;
  float* p = sm + D;
  float* part = p + L;
  const int tid = threadIdx.x;
  const float* qrow = qkv + (b * T + t) * 3 * C + h * D;
  for (int d = tid; d < D; d += blockDim.x) q[d] = qrow[d];
  __syncthreads();
  const float* Kb = kc + (b * H + h) * Tmax * D;
  const float* Vb = vc + (b * H + h) * Tmax * D;

  float mx = -INFINITY;
  for (int64_t j = tid; j <= last; j += blockDim.x) {
    float s = -INFINITY;
    if (!mask || mask[b * L + j]) {
      float acc = 0.f;
      const float* kr = Kb + j * D;
      if (VEC) {
#pragma unroll 4
        for (int d = 0; d < D; d += 4) {
          float4 kv = *reinterpret_cast<const float4*>(kr + d);
          acc = fmaf(q[d], kv.x, acc);
          acc = fmaf(q[d + 1], kv.y, acc);
          acc = fmaf(q[d + 2], kv.z, acc);
          acc = fmaf(q[d + 3], kv.w, acc);
        }
      } else {
        for (int d = 0; d < D; d++) acc = fmaf(q[d], kr[d], acc);
      }
      s = acc * scale;
    }
    p[j] = s;
    mx = fmaxf(mx, s);
  }
  mx = block_max(mx, scratch);
  float* o = out + (b * T + t) * C + h * D;
  if (mx == -INFINITY) {  // a padding slot with nothing to attend to: zeros, as the CPU does
    for (int d = tid; d < D; d += blockDim.x) o[d] = 0.f;
    return;
  }
  float sum = 0.f;
  for (int64_t j = tid; j <= last; j += blockDim.x) {
    const float e = p[j] == -INFINITY ? 0.f : expf(p[j] - mx);
    p[j] = e;
    sum += e;
  }
  sum = block_sum(sum, scratch);  // its barriers also publish p[]

  // Groups of D threads split the keys; each thread owns one output dimension. Four
  // independent sums keep four value loads in flight (this loop is latency-bound).
  const int G = blockDim.x / D, g = tid / D, d = tid % D;
  float a0 = 0.f, a1 = 0.f, a2 = 0.f, a3 = 0.f;
  if (g < G) {
    int64_t j = g;
    for (; j + 3 * G <= last; j += 4 * G) {
      a0 = fmaf(p[j], Vb[j * D + d], a0);
      a1 = fmaf(p[j + G], Vb[(j + G) * D + d], a1);
      a2 = fmaf(p[j + 2 * G], Vb[(j + 2 * G) * D + d], a2);
      a3 = fmaf(p[j + 3 * G], Vb[(j + 3 * G) * D + d], a3);
    }
    for (; j <= last; j += G) a0 = fmaf(p[j], Vb[j * D + d], a0);
  }
  part[tid] = (a0 + a1) + (a2 + a3);
  __syncthreads();
  if (tid < D) {
    float r = 0.f;
    for (int k = 0; k < G; k++) r += part[k * D + tid];
    o[tid] = r / sum;
  }
}

// Wide blocks: a prefill query has up to a few thousand keys (scores: one key per thread;
// values: blockDim/D groups).
int attention_threads(int64_t D) { return D <= 128 ? 512 : (int)((D + 31) / 32 * 32); }

// ---- Decode (T = 1) for any head size ---------------------------------------------------
// attention_decode (gpt2_attention_decode.cu) takes the GPT-2 shapes (head sizes 4..128, powers
// of two, 16-byte aligned); this kernel takes every other decode step: any head size up to
// 1024, rows that are not 16-byte aligned (scalar loads), any number of positions. One block
// per (head, sequence); its time is memory latency, so:
//  - a group of G lanes (a power of two <= 32) reads one cached row with VPL vectors of W
//    floats each (float4 when D % 4 == 0 and the cache is aligned): coalesced, and the row's
//    dot product is summed across the group with shuffles;
//  - each lane loads its rows' keys AND values for a chunk of kRounds rounds at once (the
//    values do not depend on the softmax), so a chunk of kRounds * blockDim / G rows (128
//    for D = 80 at 512 threads, 512 for D = 5) costs one round trip; the first chunk is requested before
//    the wait for the GEMV that writes qkv (programmatic dependent launch, pdl.cuh);
//  - the softmax is online, per row group in registers (running max, sum and weighted
//    values, rescaled once per chunk): no scores in shared memory (any number of positions)
//    and no block barrier per chunk; the groups merge by shuffles within a warp, then across
//    warps in shared memory.
// The new token's key and value are written to cache row `past` and, for that position, taken
// from qkv (via shared memory): no read-back of a row this grid just wrote.
constexpr int kDecodeSlots = 8;  // rows of keys (and of values) a lane has in flight per chunk, at most

template <int W>
using DecodeVec = typename std::conditional<W == 4, float4, float>::type;

template <int W, int VPL>
struct DecodeShape {
  // Rows per lane per chunk: up to 32 floats of keys (and 32 of values) in at most 16 loads
  // per lane, at most kDecodeSlots rows (each also holds a score and a mask flag).
  static constexpr int kFloatRounds = 32 / (VPL * W), kLoadRounds = 16 / VPL;
  static constexpr int kRounds = std::max(1, std::min({kDecodeSlots, kFloatRounds, kLoadRounds}));
  // 512 threads while a lane's keys, values, query and sums fit 128 registers.
  static constexpr int kMaxThreads = VPL * W <= 8 ? 512 : 256;
};

__device__ __forceinline__ float dot_add(float a, float b, float acc) { return fmaf(a, b, acc); }
__device__ __forceinline__ float dot_add(const float4& a, const float4& b, float acc) {
  acc = fmaf(a.x, b.x, acc);
  acc = fmaf(a.y, b.y, acc);
  acc = fmaf(a.z, b.z, acc);
  return fmaf(a.w, b.w, acc);
}
// y = y * a + x * c
__device__ __forceinline__ void scale_add(float& y, float a, float x, float c) { y = fmaf(x, c, y * a); }
__device__ __forceinline__ void scale_add(float4& y, float a, const float4& x, float c) {
  scale_add(y.x, a, x.x, c), scale_add(y.y, a, x.y, c), scale_add(y.z, a, x.z, c), scale_add(y.w, a, x.w, c);
}
__device__ __forceinline__ float shfl_xor(float v, int o) { return __shfl_xor_sync(0xffffffffu, v, o); }
__device__ __forceinline__ float4 shfl_xor(const float4& v, int o) {
  return make_float4(shfl_xor(v.x, o), shfl_xor(v.y, o), shfl_xor(v.z, o), shfl_xor(v.w, o));
}
template <typename V>
__device__ __forceinline__ V vec_zero();
template <>
__device__ __forceinline__ float vec_zero<float>() { return 0.f; }
template <>
__device__ __forceinline__ float4 vec_zero<float4>() { return make_float4(0.f, 0.f, 0.f, 0.f); }

// Softmax weight of a score against the running max mx; 0 for a masked score (-inf) and when
// nothing is unmasked yet (mx = -inf; no NaN from -inf - -inf).
__device__ __forceinline__ float softmax_weight(float s, float mx) { return s == -INFINITY ? 0.f : expf(s - mx); }

// Shared memory (floats): q[D] | new key[D] | new value[D] | per-warp sums [nwarps][D] |
// per-warp max, sum, factor [nwarps] each. See decode_smem_bytes().
template <int W, int VPL>
__global__ void __launch_bounds__(DecodeShape<W, VPL>::kMaxThreads)
    attention_decode_any_kernel(float* __restrict__ out, const float* __restrict__ qkv, float* __restrict__ kc,
                                float* __restrict__ vc, const int32_t* __restrict__ mask, int64_t mask_stride,
                                int64_t past_host, const int32_t* __restrict__ past_dev, int64_t Tmax, int H, int D,
                                int G, float scale) {
  ProbeScope probe;
  using Vec = DecodeVec<W>;
  constexpr int R = DecodeShape<W, VPL>::kRounds;
  extern __shared__ float4 decode_smem[];
  float* s_q = reinterpret_cast<float*>(decode_smem);
  float* s_knew = s_q + D;  // W = 4 only with D % 4 == 0: every array stays 16-byte aligned
  float* s_vnew = s_knew + D;
  float* s_acc = s_vnew + D;
  const int nwarps = blockDim.x >> 5;
  float* s_m = s_acc + nwarps * D;
  float* s_l = s_m + nwarps;
  float* s_f = s_l + nwarps;

  // past and the mask are in place before the step's first kernel (a graph replay copies them
  // in first), the cached rows j < past since earlier steps: all readable before pdl_wait().
  const int64_t past = past_dev ? (int64_t)*past_dev : past_host;
  const int h = blockIdx.y, b = blockIdx.z, tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int g = tid % G, rg = tid / G, RPI = blockDim.x / G;  // lane in its group, group, rows per round
  const int NV = D / W;                                         // vectors per row
  const int64_t C = (int64_t)H * D, L = past + 1, chunk = (int64_t)R * RPI;
  const int64_t head = ((int64_t)b * H + h) * Tmax * D;
  const Vec* Kh = reinterpret_cast<const Vec*>(kc + head);
  const Vec* Vh = reinterpret_cast<const Vec*>(vc + head);
  const int32_t* mrow = mask ? mask + (int64_t)b * mask_stride : nullptr;
  const Vec zero = vec_zero<Vec>();

  // Row j0 + r * RPI + rg of a chunk for r < R: its key and value vectors g + k * G (zeros
  // for lanes past the row's end, for the new row and rows after it) and whether it counts.
  Vec kr[R][VPL], vr[R][VPL];
  bool on[R];
  auto load_chunk = [&](int64_t j0) {
#pragma unroll
    for (int r = 0; r < R; r++) {
      const int64_t j = j0 + r * RPI + rg;
#pragma unroll
      for (int k = 0; k < VPL; k++) {
        const int v = g + k * G;
        const bool in = j < past && v < NV;
        kr[r][k] = in ? Kh[j * NV + v] : zero;
        vr[r][k] = in ? Vh[j * NV + v] : zero;
      }
      on[r] = j < L && (!mrow || mrow[j]);
    }
  };
  load_chunk(0);
  pdl_wait();     // qkv is ready
  probe.waited();
  pdl_trigger();  // the next kernel may start fetching its weights (see pdl.cuh)
  const float* qrow = qkv + (int64_t)b * 3 * C + (int64_t)h * D;
  for (int d = tid; d < D; d += blockDim.x) {
    const float q = qrow[d], k = qrow[C + d], v = qrow[2 * C + d];
    s_q[d] = q, s_knew[d] = k, s_vnew[d] = v;
    kc[head + past * D + d] = k;  // this block is the only one touching row `past` of its head
    vc[head + past * D + d] = v;
  }
  __syncthreads();
  const Vec* q4 = reinterpret_cast<const Vec*>(s_q);
  const Vec* knew = reinterpret_cast<const Vec*>(s_knew);
  const Vec* vnew = reinterpret_cast<const Vec*>(s_vnew);
  Vec q[VPL], acc[VPL];
#pragma unroll
  for (int k = 0; k < VPL; k++) q[k] = g + k * G < NV ? q4[g + k * G] : zero, acc[k] = zero;

  // This group's online softmax: max and sum of its rows' weights so far, and acc the
  // weighted sum of their values, all relative to mx. Every lane of a group holds the same
  // mx and l (shuffle sums are bitwise equal across a butterfly).
  float mx = -INFINITY, l = 0.f;
  for (int64_t j0 = 0; j0 < L; j0 += chunk) {
    if (j0 > 0) load_chunk(j0);
    float s[R], cmax = -INFINITY;
#pragma unroll
    for (int r = 0; r < R; r++) {
      if (j0 + r * RPI + rg == past) {  // the new row, from qkv
#pragma unroll
        for (int k = 0; k < VPL; k++)
          if (g + k * G < NV) kr[r][k] = knew[g + k * G], vr[r][k] = vnew[g + k * G];
      }
      float d = 0.f;
#pragma unroll
      for (int k = 0; k < VPL; k++) d = dot_add(q[k], kr[r][k], d);
      for (int o = G >> 1; o > 0; o >>= 1) d += shfl_xor(d, o);
      s[r] = on[r] ? d * scale : -INFINITY;
      cmax = fmaxf(cmax, s[r]);
    }
    const float m = fmaxf(mx, cmax);
    if (m != -INFINITY) {  // else nothing unmasked yet in this group
      const float a = softmax_weight(mx, m);  // the sums so far, rescaled to the new max
      l *= a;
#pragma unroll
      for (int r = 0; r < R; r++) {
        const float p = softmax_weight(s[r], m);
        l += p;
#pragma unroll
        for (int k = 0; k < VPL; k++) scale_add(acc[k], r == 0 ? a : 1.f, vr[r][k], p);  // rescaled with row 0
      }
      mx = m;
    }
  }

  // The groups of a warp merge pairwise (lanes g of groups rg and rg ^ (o / G)).
  for (int o = G; o < 32; o <<= 1) {
    const float mo = shfl_xor(mx, o), lo = shfl_xor(l, o), m = fmaxf(mx, mo);
    const float a = softmax_weight(mx, m), c = softmax_weight(mo, m);
    l = fmaf(lo, c, l * a);
#pragma unroll
    for (int k = 0; k < VPL; k++) scale_add(acc[k], a, shfl_xor(acc[k], o), c);
    mx = m;
  }
  if (lane < G) {  // the warp's first group (g == lane) holds the warp's result
    Vec* wacc = reinterpret_cast<Vec*>(s_acc + warp * D);
#pragma unroll
    for (int k = 0; k < VPL; k++)
      if (lane + k * G < NV) wacc[lane + k * G] = acc[k];
    if (lane == 0) s_m[warp] = mx, s_l[warp] = l;
  }
  __syncthreads();

  // Across warps: out = sum_w f_w acc_w / sum_w f_w l_w with f_w = exp(m_w - max).
  float m = -INFINITY;
  for (int w = 0; w < nwarps; w++) m = fmaxf(m, s_m[w]);
  float* o = out + (int64_t)b * C + (int64_t)h * D;
  if (m == -INFINITY) {  // every position masked (a padding slot): zeros, as the CPU does
    for (int d = tid; d < D; d += blockDim.x) o[d] = 0.f;
    return;
  }
  if (tid < nwarps) s_f[tid] = softmax_weight(s_m[tid], m);
  __syncthreads();
  float sum = 0.f;
  for (int w = 0; w < nwarps; w++) sum = fmaf(s_f[w], s_l[w], sum);
  for (int d = tid; d < D; d += blockDim.x) {
    float r = 0.f;
    for (int w = 0; w < nwarps; w++) r = fmaf(s_f[w], s_acc[w * D + d], r);
    o[d] = r / sum;
  }
}

// At most 45 KB (D = 1024 at 256 threads, D = 256 at 512): no opt-in above the default 48 KB.
size_t decode_smem_bytes(int64_t D, int threads) {
  const size_t warps = threads / 32;
  return sizeof(float) * ((3 + warps) * (size_t)D + 3 * warps);
}

// NIBBLE_CUDA_ATTN_GENERAL=1 sends every decode step to attention_decode_any (to compare it with
// attention_decode on the shapes both take, or to test it on them). Read once.
bool force_general_decode() {
  static const bool on = [] {
    const char* e = std::getenv("NIBBLE_CUDA_ATTN_GENERAL");
    return e && std::string(e) == "1";
  }();
  return on;
}

template <int W, int VPL>
void launch_decode_any(float* out, const float* qkv, float* kc, float* vc, const int32_t* mask, int64_t mask_stride,
                       int64_t past, const int32_t* past_dev, int64_t B, int64_t Tmax, int64_t H, int64_t D, int G,
                       cudaStream_t s) {
  // 512 threads (twice the rows per round trip) while the blocks fit the GPU in one wave at one
  // block an SM; otherwise 256, two blocks an SM.
  const int threads =
      DecodeShape<W, VPL>::kMaxThreads == 512 && B * H <= (int64_t)cuda::sm_count() ? 512 : 256;
  const float scale = (float)(1.0 / std::sqrt((double)D));
  launch_pdl(attention_decode_any_kernel<W, VPL>, dim3(1, (unsigned)H, (unsigned)B), dim3(threads),
             decode_smem_bytes(D, threads), s, "attention (decode, any head size) launch", out, qkv, kc, vc, mask,
             mask_stride, past, past_dev, Tmax, (int)H, (int)D, G, scale);
}

// attention_decode's contract for any head size 1..1024 and any position count.
void attention_decode_any(float* out, const float* qkv, float* kc, float* vc, const int32_t* mask,
                          int64_t mask_stride, int64_t past, const int32_t* past_dev, int64_t B, int64_t Tmax,
                          int64_t H, int64_t D, cudaStream_t s) {
  auto a16 = [](const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15) == 0; };
  const int W = D % 4 == 0 && a16(kc) && a16(vc) ? 4 : 1;  // rows of whole aligned float4s, or scalars
  const int NV = (int)D / W;
  int G = 1;  // lanes per row: the row's vectors, up to a warp
  while (G < NV && G < 32) G *= 2;
  int vpl = 1;  // vectors per lane
  while (vpl * G < NV) vpl *= 2;
  const auto args = [&](auto launch) {
    launch(out, qkv, kc, vc, mask, mask_stride, past, past_dev, B, Tmax, H, D, G, s);
  };
  if (W == 4) {
    switch (vpl) {
      case 1: args(launch_decode_any<4, 1>); break;
      case 2: args(launch_decode_any<4, 2>); break;
      case 4: args(launch_decode_any<4, 4>); break;
      default: args(launch_decode_any<4, 8>); break;  // D <= 1024
    }
  } else {
    switch (vpl) {
      case 1: args(launch_decode_any<1, 1>); break;
      case 2: args(launch_decode_any<1, 2>); break;
      case 4: args(launch_decode_any<1, 4>); break;
      case 8: args(launch_decode_any<1, 8>); break;
      case 16: args(launch_decode_any<1, 16>); break;
      default: args(launch_decode_any<1, 32>); break;  // D <= 1024
    }
  }
  NIBBLE_CUDA_CHECK_LAUNCH("attention (decode, any head size)");
}

// One decode step, for both entry points: attention_decode where it applies (faster on GPT-2's
// shapes), attention_decode_any otherwise. max_positions bounds past + 1.
void decode_step(float* out, const float* qkv, float* kc, float* vc, const int32_t* mask, int64_t mask_stride,
                 int64_t past, const int32_t* past_dev, int64_t B, int64_t Tmax, int64_t H, int64_t D,
                 int64_t max_positions, cudaStream_t s) {
  if (!force_general_decode() && max_positions <= kAttentionDecodeMaxPositions &&
      attention_decode_supported(D, qkv, kc, vc, out))
    attention_decode(out, qkv, kc, vc, mask, mask_stride, past, past_dev, B, Tmax, H, D, max_positions, s);
  else
    attention_decode_any(out, qkv, kc, vc, mask, mask_stride, past, past_dev, B, Tmax, H, D, s);
}

}  // namespace

void attention(float* out, const float* qkv, float* kc, float* vc, const int32_t* mask, int64_t B, int64_t T,
               int64_t past, int64_t Tmax, int64_t H, int64_t D, int device) {
  if (B == 0 || T == 0 || H == 0 || D == 0) return;
  if (D > 1024) throw std::runtime_error("attention: head size " + std::to_string(D) + " exceeds 1024");
  if (T > 0x7fffffff || H > 65535 || B > 65535)
    throw std::runtime_error("attention: B=" + std::to_string(B) + " T=" + std::to_string(T) + " H=" +
                             std::to_string(H) + " exceeds one launch");
  cudaStream_t s = begin(device);
  if (T == 1) {  // decode: the kernel writes the new cache row itself; the mask is [B, past + 1]
    decode_step(out, qkv, kc, vc, mask, past + 1, past, nullptr, B, Tmax, H, D, past + 1, s);
    return;
  }
  const int64_t n = B * T * H * D;
  int64_t g = (n + 255) / 256;
  kv_write_kernel<<<(unsigned)(g < 65535 ? g : 65535), 256, 0, s>>>(qkv, kc, vc, B, T, past, Tmax, H, D);
  NIBBLE_CUDA_CHECK_LAUNCH("attention (cache write)");

  const int threads = attention_threads(D);
  const size_t smem = sizeof(float) * (size_t)(D + past + T + threads);
  const bool vec = D % 4 == 0 && (reinterpret_cast<uintptr_t>(kc) & 15) == 0;
  auto kernel = vec ? attention_kernel<true> : attention_kernel<false>;
  if (smem + sizeof(float) * 32 > 48 * 1024) {  // the 48 KB default counts the static scratch too
    int dev_max = 0;
    NIBBLE_CUDA_CHECK(cudaDeviceGetAttribute(&dev_max, cudaDevAttrMaxSharedMemoryPerBlockOptin, device),
                      "cudaDeviceGetAttribute");
    if (smem + sizeof(float) * 32 > (size_t)dev_max)
      throw std::runtime_error("attention: " + std::to_string(past + T) +
                               " positions need more shared memory than the GPU has per block");
    NIBBLE_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem),
                      "cudaFuncSetAttribute(attention)");
  }
  const float scale = (float)(1.0 / std::sqrt((double)D));
  dim3 grid((unsigned)T, (unsigned)H, (unsigned)B);
  kernel<<<grid, threads, smem, s>>>(out, qkv, kc, vc, mask, T, past, Tmax, H, (int)D, scale);
  NIBBLE_CUDA_CHECK_LAUNCH("attention");
}

// Under stream capture: nothing here reads device memory or allocates; past_dev is read by the
// kernel, and its shared memory does not depend on the number of positions.
void attention_decode_dev(float* out, const float* qkv, float* kc, float* vc, const int32_t* mask,
                          const int32_t* past_dev, int64_t B, int64_t Tmax, int64_t H, int64_t D, int device) {
  if (B == 0 || H == 0 || D == 0) return;
  if (D > 1024 || H > 65535 || B > 65535) throw std::runtime_error("attention: shape exceeds one launch");
  decode_step(out, qkv, kc, vc, mask, Tmax, 0, past_dev, B, Tmax, H, D, Tmax, begin(device));
}

}  // namespace gpt2_cuda
}  // namespace nibble
