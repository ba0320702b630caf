// CUDA runtime wrapper: every call is checked and turned into a std::runtime_error carrying
// the operation and the CUDA error string (the bindings rethrow it as a JS Error).
#include <cuda_runtime.h>

#include <map>
#include <mutex>
#include <stdexcept>
#include <string>

#include "cuda/cuda_api.h"
#include "cuda/cuda_check.h"

namespace nibble {
namespace cuda_api {

bool compiled_with_cuda() { return true; }

int device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky-free error so later calls are not confused
    return 0;
  }
  return n;
}

std::string unavailable_reason() {
  int n = 0;
  cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess) {
    cudaGetLastError();
    return std::string("no usable CUDA device: ") + cudaGetErrorString(e);
  }
  return n == 0 ? "no CUDA device found" : "";
}

int driver_version() {
  int v = 0;
  if (cudaDriverGetVersion(&v) != cudaSuccess) { cudaGetLastError(); return 0; }
  return v;
}

std::string device_name(int device) {
  cudaDeviceProp p;
  NIBBLE_CUDA_CHECK(cudaGetDeviceProperties(&p, device), "cudaGetDeviceProperties");
  return p.name;
}

size_t device_total_memory(int device) {
  cudaDeviceProp p;
  NIBBLE_CUDA_CHECK(cudaGetDeviceProperties(&p, device), "cudaGetDeviceProperties");
  return p.totalGlobalMem;
}

// A small caching allocator: freed blocks are kept per (device, rounded size) and reused,
// so steady-state generation does no cudaMalloc/cudaFree. On out-of-memory the cache is
// released and the allocation retried once before the error reaches JS.
namespace {
// Never destroyed: tensors of a worker_threads Worker torn down while the process exits come
// back here after static destructors have run.
std::mutex& g_mu = *new std::mutex;
std::multimap<std::pair<int, size_t>, void*>& g_free = *new std::multimap<std::pair<int, size_t>, void*>;

size_t round_size(size_t n) {
  if (n <= 512) return 512;
  if (n < (size_t(1) << 20)) return (n + 511) & ~size_t(511);
  return (n + (size_t(1) << 20) - 1) & ~((size_t(1) << 20) - 1);
}

void release_cache_locked(int device) {
  for (auto it = g_free.begin(); it != g_free.end();) {
    if (it->first.first == device) {
      cudaSetDevice(device);
      cudaFree(it->second);
      it = g_free.erase(it);
    } else {
      ++it;
    }
  }
}
}  // namespace

void* alloc_device(size_t nbytes, int device, size_t* reserved) {
  size_t sz = round_size(nbytes);
  std::lock_guard<std::mutex> lock(g_mu);
  auto it = g_free.find({device, sz});
  if (it != g_free.end()) {
    void* p = it->second;
    g_free.erase(it);
    *reserved = sz;
    return p;
  }
  NIBBLE_CUDA_CHECK(cudaSetDevice(device), "cudaSetDevice");
  void* p = nullptr;
  cudaError_t e = cudaMalloc(&p, sz);
  if (e == cudaErrorMemoryAllocation) {
    cudaGetLastError();
    release_cache_locked(device);
    e = cudaMalloc(&p, sz);
  }
  if (e != cudaSuccess) {
    cudaGetLastError();
    throw std::runtime_error("CUDA out of memory allocating " + std::to_string(nbytes) +
                             " bytes on cuda:" + std::to_string(device) + " (" + cudaGetErrorString(e) + ")");
  }
  *reserved = sz;
  return p;
}

void free_device(void* p, size_t reserved, int device) {
  std::lock_guard<std::mutex> lock(g_mu);
  g_free.emplace(std::make_pair(device, reserved), p);
}

void copy_host_to_device(void* dst, const void* src, size_t n, int device) {
  NIBBLE_CUDA_CHECK(cudaSetDevice(device), "cudaSetDevice");
  NIBBLE_CUDA_CHECK(cudaMemcpy(dst, src, n, cudaMemcpyHostToDevice), "cudaMemcpy host->device");
}
void copy_device_to_host(void* dst, const void* src, size_t n, int device) {
  NIBBLE_CUDA_CHECK(cudaSetDevice(device), "cudaSetDevice");
  NIBBLE_CUDA_CHECK(cudaMemcpy(dst, src, n, cudaMemcpyDeviceToHost), "cudaMemcpy device->host");
}
void copy_device_to_device(void* dst, const void* src, size_t n, int device) {
  NIBBLE_CUDA_CHECK(cudaSetDevice(device), "cudaSetDevice");
  NIBBLE_CUDA_CHECK(cudaMemcpy(dst, src, n, cudaMemcpyDeviceToDevice), "cudaMemcpy device->device");
}
void synchronize(int device) {
  NIBBLE_CUDA_CHECK(cudaSetDevice(device), "cudaSetDevice");
  NIBBLE_CUDA_CHECK(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
}

__global__ void probe(float* out, int n, float a, float b) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) out[i] = a * i + b;
}

void probe_kernel(float* host_out, int n, float a, float b, int device) {
  NIBBLE_CUDA_CHECK(cudaSetDevice(device), "cudaSetDevice");
  float* d = nullptr;
  NIBBLE_CUDA_CHECK(cudaMalloc(&d, sizeof(float) * n), "cudaMalloc(probe)");
  probe<<<(n + 255) / 256, 256>>>(d, n, a, b);
  cudaError_t e = cudaGetLastError();
  if (e == cudaSuccess) e = cudaMemcpy(host_out, d, sizeof(float) * n, cudaMemcpyDeviceToHost);
  cudaFree(d);
  if (e != cudaSuccess) throw std::runtime_error(std::string("probe kernel: ") + cudaGetErrorString(e));
}

}  // namespace cuda_api
}  // namespace nibble
