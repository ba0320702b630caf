// Embedding lookup, gelu_new and add: memory-bound elementwise kernels (grid-stride loops,
// so any size fits one launch).
#include "cuda/gpt2_device.cuh"

namespace nibble {
namespace gpt2_cuda {

namespace {

template <typename T>
__global__ void embedding_kernel(float* __restrict__ out, const T* __restrict__ wte, const T* __restrict__ wpe,
                                 const int32_t* __restrict__ ids, const int32_t* __restrict__ pos, int64_t C,
                                 int64_t V, int64_t P) {
  const int64_t t = blockIdx.x;
  const int32_t id = ids[t], p = pos[t];
  const bool ok = id >= 0 && id < V && p >= 0 && p < P;
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x)
    out[t * C + c] = ok ? to_f32(wte[(int64_t)id * C + c]) + to_f32(wpe[(int64_t)p * C + c]) : 0.f;
}

__global__ void gelu_kernel(float* __restrict__ out, const float* __restrict__ x, int64_t n) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
    out[i] = gelu_new_f(x[i]);
}

// `out` may alias `a` (the in-place residual add).
__global__ void add_kernel(float* out, const float* a, const float* b, int64_t n) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
    out[i] = a[i] + b[i];
}

unsigned grid_for(int64_t n) {
  int64_t g = (n + 255) / 256;
  return (unsigned)(g < 65535 ? (g > 0 ? g : 1) : 65535);
}

}  // namespace

void embedding(float* out, const void* wte, const void* wpe, DType dt, const int32_t* ids, const int32_t* pos,
               int64_t T, int64_t C, int64_t V, int64_t P, int device) {
  if (T == 0 || C == 0) return;
  if (T > 0x7fffffff) throw std::runtime_error("embedding: too many tokens for one launch");
  cudaStream_t s = begin(device);
  const int threads = C >= 256 ? 256 : 128;
  switch (dt) {
    case DType::F32:
      embedding_kernel<<<(unsigned)T, threads, 0, s>>>(out, (const float*)wte, (const float*)wpe, ids, pos, C, V, P);
      break;
    case DType::F16:
      embedding_kernel<<<(unsigned)T, threads, 0, s>>>(out, (const __half*)wte, (const __half*)wpe, ids, pos, C, V, P);
      break;
    case DType::BF16:
      embedding_kernel<<<(unsigned)T, threads, 0, s>>>(out, (const __nv_bfloat16*)wte, (const __nv_bfloat16*)wpe, ids,
                                                       pos, C, V, P);
      break;
    default: throw std::runtime_error(std::string("embedding: tables of ") + dtype_name(dt) + " are not supported");
  }
  NIBBLE_CUDA_CHECK_LAUNCH("embedding");
}

void gelu_new(float* out, const float* x, int64_t n, int device) {
  if (n == 0) return;
  cudaStream_t s = begin(device);
  gelu_kernel<<<grid_for(n), 256, 0, s>>>(out, x, n);
  NIBBLE_CUDA_CHECK_LAUNCH("gelu_new");
}

void add(float* out, const float* a, const float* b, int64_t n, int device) {
  if (n == 0) return;
  cudaStream_t s = begin(device);
  add_kernel<<<grid_for(n), 256, 0, s>>>(out, a, b, n);
  NIBBLE_CUDA_CHECK_LAUNCH("add");
}

}  // namespace gpt2_cuda
}  // namespace nibble
