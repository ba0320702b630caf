// Decode-step attention (one new token per sequence): one block per (head, sequence) over a
// KV cache of a few hundred positions. Its time is memory latency, not bandwidth (a head's
// keys and values are a few tens of KB), so the design minimises dependent round trips:
//  - a group of G = D/4 lanes reads one cached row with one float4 each (coalesced), so a
//    256-thread block covers 256/G rows per load instruction, and each lane issues the loads of
//    R such rounds before using any (for 100-1000 positions: one or a few round trips);
//  - the row's dot product is summed across its G lanes with shuffles;
//  - scores and weights stay in shared memory; the weighted sum of values reads the value
//    rows the same way and meets in shared memory at the end.
// The new token's key and value are written to the cache here and, for its own position,
// taken from the qkv row directly (no read-back of a row this grid just wrote).
// Launched as a programmatic dependent (pdl.cuh): the first chunk of cached rows (written by
// earlier decode steps, which a memcpy on the stream separates from this one), the mask and
// `past` (copied in before the step's first kernel) are read before waiting for the GEMV that
// writes qkv.
// Same results as attention_kernel up to the order of float additions.
#include <cmath>

#include "cuda/gpt2_attention_decode.h"
#include "cuda/gpt2_device.cuh"
#include "cuda/pdl.cuh"

namespace nibble {
namespace gpt2_cuda {

NIBBLE_PROBE_TU(gpt2_attention_decode)  // probe.cuh

namespace {

constexpr int kThreads = 256;
constexpr int kRounds = 8;  // rounds of rows each lane has in flight

template <int G>
__global__ void __launch_bounds__(kThreads)
    attention_decode_kernel(float* __restrict__ out, const float* __restrict__ qkv, float* __restrict__ kc,
                            float* __restrict__ vc, const int32_t* __restrict__ mask, int64_t mask_stride,
                            int64_t past_host, const int32_t* __restrict__ past_dev, int64_t Tmax, int H,
                            float scale) {
  ProbeScope probe;
  constexpr int D = 4 * G, RPI = kThreads / G;  // head size; rows per load instruction
  extern __shared__ float s_p[];                // scores, then softmax weights [L]
  __shared__ float4 s_q[G], s_knew[G], s_vnew[G];
  __shared__ float4 s_part[RPI][G];
  __shared__ float s_red[32];
  const int64_t past = past_dev ? (int64_t)*past_dev : past_host;
  const int h = blockIdx.y, b = blockIdx.z, tid = threadIdx.x, g = tid % G, rg = tid / G;
  const int64_t C = (int64_t)H * D, L = past + 1;
  const float4* qkv4 = reinterpret_cast<const float4*>(qkv + (int64_t)b * 3 * C + (int64_t)h * D);
  const int64_t head = ((int64_t)b * H + h) * Tmax;
  float4* K4 = reinterpret_cast<float4*>(kc) + head * G;
  float4* V4 = reinterpret_cast<float4*>(vc) + head * G;
  const int32_t* mrow = mask ? mask + (int64_t)b * mask_stride : nullptr;
  const float4 zero = make_float4(0.f, 0.f, 0.f, 0.f);
  // Rows j = j0 + r * RPI + rg, r < kRounds, of one chunk; row `past` is the new one (from
  // qkv, filled in once known), rows past it zeros.
  auto load_rows = [&](const float4* R, int64_t j0, float4* dst) {
#pragma unroll
    for (int r = 0; r < kRounds; r++) {
      const int64_t j = j0 + r * RPI + rg;
      dst[r] = j < past ? R[j * G + g] : zero;
    }
  };
  auto put_new = [&](int64_t j0, float4* dst, const float4& row) {
#pragma unroll
    for (int r = 0; r < kRounds; r++)
      if (j0 + r * RPI + rg == past) dst[r] = row;
  };
  float4 kr[kRounds], vfirst[kRounds];
  int on[kRounds];
  load_rows(K4, 0, kr);
  load_rows(V4, 0, vfirst);
#pragma unroll
  for (int r = 0; r < kRounds; r++) {
    const int64_t j = r * RPI + rg;
    on[r] = j < L && (!mrow || mrow[j]);
  }
  pdl_wait();     // qkv is ready
  probe.waited();
  pdl_trigger();  // the next GEMV may start fetching its weights (see pdl.cuh)
  if (tid < G) {
    const float4 q = qkv4[tid], k = qkv4[C / 4 + tid], v = qkv4[C / 2 + tid];
    s_q[tid] = q, s_knew[tid] = k, s_vnew[tid] = v;
    K4[past * G + tid] = k;  // this block is the only one touching row `past` of its head
    V4[past * G + tid] = v;
  }
  __syncthreads();
  probe.mark(0);

  // Scores, a chunk at a time (the first one's rows already in flight), all loads first.
  const float4 q = s_q[g];
  for (int64_t j0 = 0; j0 < L; j0 += (int64_t)kRounds * RPI) {
    if (j0 > 0) {
      load_rows(K4, j0, kr);
#pragma unroll
      for (int r = 0; r < kRounds; r++) {
        const int64_t j = j0 + r * RPI + rg;
        on[r] = j < L && (!mrow || mrow[j]);
      }
    }
    put_new(j0, kr, s_knew[g]);
#pragma unroll
    for (int r = 0; r < kRounds; r++) {
      float d = q.x * kr[r].x;
      d = fmaf(q.y, kr[r].y, d);
      d = fmaf(q.z, kr[r].z, d);
      d = fmaf(q.w, kr[r].w, d);
#pragma unroll
      for (int o = G / 2; o > 0; o >>= 1) d += __shfl_xor_sync(0xffffffffu, d, o);
      const int64_t j = j0 + r * RPI + rg;
      if (g == 0 && j < L) s_p[j] = on[r] ? d * scale : -INFINITY;
    }
  }
  __syncthreads();
  probe.mark(1);

  float mx = -INFINITY;
  for (int64_t j = tid; j < L; j += kThreads) mx = fmaxf(mx, s_p[j]);
  mx = block_max(mx, s_red);
  float4* o4 = reinterpret_cast<float4*>(out + (int64_t)b * C + (int64_t)h * D);
  if (mx == -INFINITY) {  // every position masked (a padding slot): zeros, as the CPU does
    if (tid < G) o4[tid] = make_float4(0.f, 0.f, 0.f, 0.f);
    return;
  }
  float sum = 0.f;
  for (int64_t j = tid; j < L; j += kThreads) {
    const float e = s_p[j] == -INFINITY ? 0.f : expf(s_p[j] - mx);
    s_p[j] = e;
    sum += e;
  }
  sum = block_sum(sum, s_red);  // its barriers also publish s_p
  probe.mark(2);

  // Weighted sum of the values, rows as in the scores; then across the RPI row groups.
  float4 acc = make_float4(0.f, 0.f, 0.f, 0.f);
  for (int64_t j0 = 0; j0 < L; j0 += (int64_t)kRounds * RPI) {
    float4 vr[kRounds];
    if (j0 > 0) load_rows(V4, j0, vr);
    else
#pragma unroll
      for (int r = 0; r < kRounds; r++) vr[r] = vfirst[r];
    put_new(j0, vr, s_vnew[g]);
#pragma unroll
    for (int r = 0; r < kRounds; r++) {
      const int64_t j = j0 + r * RPI + rg;
      const float w = j < L ? s_p[j] : 0.f;
      acc.x = fmaf(w, vr[r].x, acc.x);
      acc.y = fmaf(w, vr[r].y, acc.y);
      acc.z = fmaf(w, vr[r].z, acc.z);
      acc.w = fmaf(w, vr[r].w, acc.w);
    }
  }
  s_part[rg][g] = acc;
  __syncthreads();
  if (tid < G) {
    float4 r = make_float4(0.f, 0.f, 0.f, 0.f);
    for (int i = 0; i < RPI; i++) {
      const float4 v = s_part[i][tid];
      r.x += v.x, r.y += v.y, r.z += v.z, r.w += v.w;
    }
    o4[tid] = make_float4(r.x / sum, r.y / sum, r.z / sum, r.w / sum);
  }
}

template <int G>
void launch(float* out, const float* qkv, float* kc, float* vc, const int32_t* mask, int64_t mask_stride,
            int64_t past, const int32_t* past_dev, int64_t B, int64_t Tmax, int64_t H, size_t smem, cudaStream_t s) {
  const float scale = (float)(1.0 / std::sqrt(4.0 * G));
  launch_pdl(attention_decode_kernel<G>, dim3(1, (unsigned)H, (unsigned)B), dim3(kThreads), smem, s,
             "attention (decode) launch", out, qkv, kc, vc, mask, mask_stride, past, past_dev, Tmax, (int)H, scale);
}

}  // namespace

bool attention_decode_supported(int64_t D, const void* qkv, const void* kc, const void* vc, const void* out) {
  auto a16 = [](const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15) == 0; };
  // G = D / 4 lanes per row must divide a warp; every row start then stays 16-byte aligned.
  return (D == 4 || D == 8 || D == 16 || D == 32 || D == 64 || D == 128) && a16(qkv) && a16(kc) && a16(vc) && a16(out);
}

void attention_decode(float* out, const float* qkv, float* kc, float* vc, const int32_t* mask, int64_t mask_stride,
                      int64_t past, const int32_t* past_dev, int64_t B, int64_t Tmax, int64_t H, int64_t D,
                      int64_t max_positions, cudaStream_t s) {
  if (max_positions < 1 || max_positions > kAttentionDecodeMaxPositions)
    throw std::runtime_error("attention_decode: " + std::to_string(max_positions) + " positions exceed the decode kernel");
  const size_t smem = sizeof(float) * (size_t)max_positions;
  switch (D) {
    case 4: launch<1>(out, qkv, kc, vc, mask, mask_stride, past, past_dev, B, Tmax, H, smem, s); break;
    case 8: launch<2>(out, qkv, kc, vc, mask, mask_stride, past, past_dev, B, Tmax, H, smem, s); break;
    case 16: launch<4>(out, qkv, kc, vc, mask, mask_stride, past, past_dev, B, Tmax, H, smem, s); break;
    case 32: launch<8>(out, qkv, kc, vc, mask, mask_stride, past, past_dev, B, Tmax, H, smem, s); break;
    case 64: launch<16>(out, qkv, kc, vc, mask, mask_stride, past, past_dev, B, Tmax, H, smem, s); break;
    case 128: launch<32>(out, qkv, kc, vc, mask, mask_stride, past, past_dev, B, Tmax, H, smem, s); break;
    default: throw std::runtime_error("attention_decode: head size " + std::to_string(D) + " is not supported");
  }
  NIBBLE_CUDA_CHECK_LAUNCH("attention (decode)");
}

}  // namespace gpt2_cuda
}  // namespace nibble
