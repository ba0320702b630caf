// Causal self-attention over a KV cache. Two launches: the new tokens' keys and values are
// copied into the cache, then one block per (query, head, sequence) scores every allowed
// key, takes the softmax in shared memory and sums the values. A decode step (T = 1) thus
// reads each cached key and value row exactly once. For a decode step (T == 1) the cache
// write happens in the attention kernel itself (each block owns its head's new row): one
// launch fewer per layer.
#include <cmath>

#include "cuda/gpt2_attention_decode.h"
#include "cuda/gpt2_device.cuh"

namespace nibble {
namespace gpt2_cuda {

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

// Shared memory: q[D] | p[L] | part[blockDim.x].
// kc/vc are not __restrict__ const: with WRITE_KV the block reads back rows it just wrote,
// which the read-only data path is not guaranteed to see.
template <bool VEC, bool WRITE_KV>
__global__ void attention_kernel(float* __restrict__ out, const float* __restrict__ qkv, float* kc, float* vc,
                                 const int32_t* __restrict__ mask, int64_t T, int64_t past, int64_t Tmax, int64_t H,
                                 int D, float scale, const int32_t* past_dev, int64_t mask_stride) {
  extern __shared__ float sm[];
  __shared__ float scratch[32];
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  // Lets a programmatic dependent (the next quantized GEMV) launch now and fetch its weights;
  // it still waits for this grid to finish before reading `out`.
  asm volatile("griddepcontrol.launch_dependents;");
#endif
  // A replayed CUDA graph reads `past` from device memory (the host updates it each step).
  if (past_dev) past = *past_dev;
  const int64_t t = blockIdx.x, h = blockIdx.y, b = blockIdx.z;
  const int64_t C = H * D, L = past + T, last = past + t;
  if (!mask_stride) mask_stride = L;
  float* q = sm;
  float* p = sm + D;
  float* part = p + L;
  const int tid = threadIdx.x;
  const float* qrow = qkv + (b * T + t) * 3 * C + h * D;
  for (int d = tid; d < D; d += blockDim.x) q[d] = qrow[d];
  if (WRITE_KV) {  // T == 1: this block is the only one touching row `past` of head h
    const int64_t dst = ((b * H + h) * Tmax + past) * D;
    for (int d = tid; d < D; d += blockDim.x) kc[dst + d] = qrow[C + d], vc[dst + d] = qrow[2 * C + d];
  }
  __syncthreads();  // also makes the new cache row visible to the whole block
  const float* Kb = kc + (b * H + h) * Tmax * D;
  const float* Vb = vc + (b * H + h) * Tmax * D;

  float mx = -INFINITY;
  for (int64_t j = tid; j <= last; j += blockDim.x) {
    float s = -INFINITY;
    if (!mask || mask[b * mask_stride + j]) {
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

// Wide blocks: a decode step has only B*H blocks, so each needs many threads to split the
// keys (scores: one key per thread; values: blockDim/D groups).
int attention_threads(int64_t D) { return D <= 128 ? 512 : (int)((D + 31) / 32 * 32); }

}  // namespace

void attention(float* out, const float* qkv, float* kc, float* vc, const int32_t* mask, int64_t B, int64_t T,
               int64_t past, int64_t Tmax, int64_t H, int64_t D, int device) {
  if (B == 0 || T == 0 || H == 0 || D == 0) return;
  if (D > 1024) throw std::runtime_error("attention: head size " + std::to_string(D) + " exceeds 1024");
  if (T > 0x7fffffff || H > 65535 || B > 65535)
    throw std::runtime_error("attention: B=" + std::to_string(B) + " T=" + std::to_string(T) + " H=" +
                             std::to_string(H) + " exceeds one launch");
  cudaStream_t s = begin(device);
  const bool fused_write = T == 1;
  if (fused_write && past + 1 <= kAttentionDecodeMaxPositions && attention_decode_supported(D, qkv, kc, vc, out)) {
    attention_decode(out, qkv, kc, vc, mask, past + 1, past, nullptr, B, Tmax, H, D, past + 1, s);
    return;
  }
  if (!fused_write) {
    const int64_t n = B * T * H * D;
    int64_t g = (n + 255) / 256;
    kv_write_kernel<<<(unsigned)(g < 65535 ? g : 65535), 256, 0, s>>>(qkv, kc, vc, B, T, past, Tmax, H, D);
    NIBBLE_CUDA_CHECK_LAUNCH("attention (cache write)");
  }

  const int threads = attention_threads(D);
  const size_t smem = sizeof(float) * (size_t)(D + past + T + threads);
  const bool vec = D % 4 == 0 && (reinterpret_cast<uintptr_t>(kc) & 15) == 0;
  auto kernel = fused_write ? (vec ? attention_kernel<true, true> : attention_kernel<false, true>)
                            : (vec ? attention_kernel<true, false> : attention_kernel<false, false>);
  if (smem > 48 * 1024) {
    int dev_max = 0;
    NIBBLE_CUDA_CHECK(cudaDeviceGetAttribute(&dev_max, cudaDevAttrMaxSharedMemoryPerBlockOptin, device),
                      "cudaDeviceGetAttribute");
    if (smem > (size_t)dev_max)
      throw std::runtime_error("attention: " + std::to_string(past + T) +
                               " positions need more shared memory than the GPU has per block");
    NIBBLE_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem),
                      "cudaFuncSetAttribute(attention)");
  }
  const float scale = (float)(1.0 / std::sqrt((double)D));
  dim3 grid((unsigned)T, (unsigned)H, (unsigned)B);
  kernel<<<grid, threads, smem, s>>>(out, qkv, kc, vc, mask, T, past, Tmax, H, (int)D, scale, nullptr, 0);
  NIBBLE_CUDA_CHECK_LAUNCH("attention");
}

void attention_decode_dev(float* out, const float* qkv, float* kc, float* vc, const int32_t* mask,
                          const int32_t* past_dev, int64_t B, int64_t Tmax, int64_t H, int64_t D, int device) {
  if (D > 1024 || H > 65535 || B > 65535) throw std::runtime_error("attention: shape exceeds one launch");
  cudaStream_t s = begin(device);
  if (Tmax <= kAttentionDecodeMaxPositions && attention_decode_supported(D, qkv, kc, vc, out)) {
    attention_decode(out, qkv, kc, vc, mask, Tmax, 0, past_dev, B, Tmax, H, D, Tmax, s);
    return;
  }
  const int threads = attention_threads(D);
  const size_t smem = sizeof(float) * (size_t)(D + Tmax + threads);  // room for any past < Tmax
  if (smem > 48 * 1024) throw std::runtime_error("attention: the decode graph supports caches up to ~12k positions");
  const bool vec = D % 4 == 0 && (reinterpret_cast<uintptr_t>(kc) & 15) == 0;
  auto kernel = vec ? attention_kernel<true, true> : attention_kernel<false, true>;
  const float scale = (float)(1.0 / std::sqrt((double)D));
  dim3 grid(1, (unsigned)H, (unsigned)B);
  kernel<<<grid, threads, smem, s>>>(out, qkv, kc, vc, mask, 1, 0, Tmax, H, (int)D, scale, past_dev, Tmax);
  NIBBLE_CUDA_CHECK_LAUNCH("attention (decode graph)");
}

}  // namespace gpt2_cuda
}  // namespace nibble
