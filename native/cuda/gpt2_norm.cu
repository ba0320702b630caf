// Row reductions: LayerNorm and softmax, one block per row. Two passes over the row (mean,
// then the centred variance) as the CPU reference does, so large offsets do not cancel.
#include "cuda/gpt2_device.cuh"
#include "cuda/pdl.cuh"

namespace nibble {
namespace gpt2_cuda {

NIBBLE_PROBE_TU(gpt2_norm)  // probe.cuh

namespace {

constexpr int kThreads = 256;

// NPT > 0: each thread keeps its NPT values of the row in registers (C <= NPT * kThreads), so
// the row is read from memory once instead of three times; the sums run in the same order
// either way. NPT == 0: any C, re-reading the row.
template <typename P, int NPT>
__global__ void layernorm_kernel(float* __restrict__ out, const float* __restrict__ x, const P* __restrict__ w,
                                 const P* __restrict__ b, int64_t C, float eps) {
  ProbeScope probe;
  __shared__ float scratch[32];
  // The weight and bias are parameters: with NPT > 0 they are requested before the wait, so
  // their latency hides behind the previous kernel instead of following the two reductions.
  P wv[NPT > 0 ? NPT : 1], bv[NPT > 0 ? NPT : 1];
  if constexpr (NPT > 0) {
#pragma unroll
    for (int i = 0; i < NPT; i++) {
      const int64_t c = threadIdx.x + (int64_t)i * kThreads;
      wv[i] = c < C ? w[c] : P();
      bv[i] = c < C ? b[c] : P();
    }
  }
  // Launched as a programmatic dependent (pdl.cuh): it only waits for the kernel that wrote x,
  // its launch overlapping that kernel's tail; then the next GEMV may start fetching weights.
  pdl_wait();
  probe.waited();
  pdl_trigger();
  const float* xr = x + blockIdx.x * C;
  float* orow = out + blockIdx.x * C;
  if constexpr (NPT > 0) {
    float xv[NPT];
#pragma unroll
    for (int i = 0; i < NPT; i++) {
      const int64_t c = threadIdx.x + (int64_t)i * kThreads;
      xv[i] = c < C ? xr[c] : 0.f;
    }
    float s = 0.f;
#pragma unroll
    for (int i = 0; i < NPT; i++)
      if (threadIdx.x + (int64_t)i * kThreads < C) s += xv[i];
    const float mean = block_sum(s, scratch) / (float)C;
    float v = 0.f;
#pragma unroll
    for (int i = 0; i < NPT; i++) {
      if (threadIdx.x + (int64_t)i * kThreads < C) {
        float d = xv[i] - mean;
        v += d * d;
      }
    }
    const float rstd = rsqrtf(block_sum(v, scratch) / (float)C + eps);
#pragma unroll
    for (int i = 0; i < NPT; i++) {
      const int64_t c = threadIdx.x + (int64_t)i * kThreads;
      if (c < C) orow[c] = (xv[i] - mean) * rstd * to_f32(wv[i]) + to_f32(bv[i]);
    }
  } else {
    float mean, rstd;
    row_mean_rstd(xr, C, eps, scratch, &mean, &rstd);
    for (int64_t c = threadIdx.x; c < C; c += blockDim.x) orow[c] = (xr[c] - mean) * rstd * to_f32(w[c]) + to_f32(b[c]);
  }
}

template <typename P>
void launch_layernorm(float* out, const float* x, const P* w, const P* b, int64_t rows, int64_t C, float eps,
                      cudaStream_t s) {
  const unsigned g = (unsigned)rows;
  const int64_t npt = (C + kThreads - 1) / kThreads;
  auto go = [&](auto kernel) { launch_pdl(kernel, dim3(g), dim3(kThreads), 0, s, "layernorm launch", out, x, w, b, C, eps); };
  if (npt <= 2) go(layernorm_kernel<P, 2>);
  else if (npt <= 4) go(layernorm_kernel<P, 4>);
  else if (npt <= 8) go(layernorm_kernel<P, 8>);
  else go(layernorm_kernel<P, 0>);
}

__global__ void softmax_kernel(float* __restrict__ out, const float* __restrict__ x, int64_t cols) {
  __shared__ float scratch[32];
  const float* xr = x + blockIdx.x * cols;
  float* orow = out + blockIdx.x * cols;
  float m = -INFINITY;
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) m = fmaxf(m, xr[c]);
  m = block_max(m, scratch);
  float s = 0.f;
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) s += expf(xr[c] - m);
  const float inv = 1.f / block_sum(s, scratch);
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) orow[c] = expf(xr[c] - m) * inv;
}

void check_rows(const char* op, int64_t rows) {
  if (rows > 0x7fffffff) throw std::runtime_error(std::string(op) + ": too many rows for one launch");
}

}  // namespace

void layernorm(float* out, const float* x, const void* w, const void* b, DType pdt, int64_t rows, int64_t C,
               float eps, int device) {
  if (rows == 0 || C == 0) return;
  check_rows("layernorm", rows);
  cudaStream_t s = begin(device);
  switch (pdt) {
    case DType::F32: launch_layernorm(out, x, (const float*)w, (const float*)b, rows, C, eps, s); break;
    case DType::F16: launch_layernorm(out, x, (const __half*)w, (const __half*)b, rows, C, eps, s); break;
    case DType::BF16: launch_layernorm(out, x, (const __nv_bfloat16*)w, (const __nv_bfloat16*)b, rows, C, eps, s); break;
    default: throw std::runtime_error(std::string("layernorm: parameters of ") + dtype_name(pdt) + " are not supported");
  }
  NIBBLE_CUDA_CHECK_LAUNCH("layernorm");
}

void softmax(float* out, const float* x, int64_t rows, int64_t cols, int device) {
  if (rows == 0 || cols == 0) return;
  check_rows("softmax", rows);
  cudaStream_t s = begin(device);
  softmax_kernel<<<(unsigned)rows, kThreads, 0, s>>>(out, x, cols);
  NIBBLE_CUDA_CHECK_LAUNCH("softmax");
}

}  // namespace gpt2_cuda
}  // namespace nibble
