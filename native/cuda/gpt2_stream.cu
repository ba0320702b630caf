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

#ifdef NIBBLE_PROBE
// ---- timeline probe (probe.cuh) ------------------------------------------------------------------
#include <cstdio>
#include <cstdlib>
#include <string>

#include "cuda/probe.cuh"

namespace nibble {
namespace gpt2_cuda {
namespace {
const char* probe_path() {
  static const char* p = std::getenv("NIBBLE_CUDA_PROBE");
  return p && *p ? p : nullptr;
}
ProbeRec* g_host_buf = nullptr;
std::vector<std::string>& probe_names() {
  static std::vector<std::string>& v = *new std::vector<std::string>;
  return v;
}
constexpr size_t kProbeBytes = sizeof(ProbeRec) * kProbeGrids * kProbeBlocks;
}  // namespace

void probe_bind_all() {
  if (!probe_path() || g_host_buf) return;
  NIBBLE_CUDA_CHECK(cudaMalloc(&g_host_buf, kProbeBytes), "probe buffer");
  NIBBLE_CUDA_CHECK(cudaMemset(g_host_buf, 0, kProbeBytes), "probe buffer");
  for (auto f : probe_binders()) f(g_host_buf);
  NIBBLE_CUDA_CHECK(cudaDeviceSynchronize(), "probe bind");
}

void probe_name(const char* what) {
  if (probe_path()) probe_names().push_back(what);
}

void probe_dump() {
  if (!probe_path() || !g_host_buf) return;
  cudaDeviceSynchronize();
  std::vector<ProbeRec> recs((size_t)kProbeGrids * kProbeBlocks);
  cudaMemcpy(recs.data(), g_host_buf, kProbeBytes, cudaMemcpyDeviceToHost);
  if (FILE* f = std::fopen(probe_path(), "wb")) {
    for (const ProbeRec& e : recs)
      if (e.grid) std::fwrite(&e, sizeof(e), 1, f);
    std::fclose(f);
  }
  if (FILE* f = std::fopen((std::string(probe_path()) + ".names").c_str(), "w")) {
    for (auto& s : probe_names()) std::fprintf(f, "%s\n", s.c_str());
    std::fclose(f);
  }
  cudaMemset(g_host_buf, 0, kProbeBytes);
  probe_names().clear();
}

}  // namespace gpt2_cuda
}  // namespace nibble
#endif  // NIBBLE_PROBE
