// One compute stream per device for the GPT-2 kernels. Created with default (blocking)
// flags on purpose: the synchronous cudaMemcpy calls in cuda_api.cu run on the legacy
// stream, which waits for blocking streams, so a read or a reused allocation is always
// ordered after the kernels queued before it.
#include <cuda_runtime.h>

#include <mutex>
#include <vector>

#include "cuda/cuda_check.h"
#include "cuda/gpt2_cuda.h"

namespace nibble {
namespace gpt2_cuda {

namespace {
std::mutex& g_mu = *new std::mutex;  // never destroyed (see cuda_api.cu's cache)
std::vector<cudaStream_t>& g_streams = *new std::vector<cudaStream_t>;  // by device ordinal; null until first use
}  // namespace

cudaStream_t stream(int device) {
  std::lock_guard<std::mutex> lock(g_mu);
  if ((int)g_streams.size() <= device) g_streams.resize(device + 1, nullptr);
  if (!g_streams[device]) {
    NIBBLE_CUDA_CHECK(cudaSetDevice(device), "cudaSetDevice(cuda:" + std::to_string(device) + ")");
    cudaStream_t s = nullptr;
    NIBBLE_CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamDefault), "cudaStreamCreate");
    g_streams[device] = s;
  }
  return g_streams[device];
}

void synchronize_all() {
  std::vector<int> used;
  {
    std::lock_guard<std::mutex> lock(g_mu);
    for (int d = 0; d < (int)g_streams.size(); d++)
      if (g_streams[d]) used.push_back(d);
  }
  for (int d : used) {
    NIBBLE_CUDA_CHECK(cudaSetDevice(d), "cudaSetDevice");
    // The whole device, not just our stream: quantized kernels may run on the legacy stream.
    NIBBLE_CUDA_CHECK(cudaDeviceSynchronize(), "CUDA work on cuda:" + std::to_string(d));
  }
}

void mem_info(int device, size_t* free_bytes, size_t* total_bytes) {
  NIBBLE_CUDA_CHECK(cudaSetDevice(device), "cudaSetDevice(cuda:" + std::to_string(device) + ")");
  NIBBLE_CUDA_CHECK(cudaMemGetInfo(free_bytes, total_bytes), "cudaMemGetInfo");
}

}  // namespace gpt2_cuda
}  // namespace nibble
