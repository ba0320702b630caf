// Timeline probe: when each block of a decode-step kernel entered, returned from its pdl_wait,
// passed a few marks and exited, as the kernels ran inside the CUDA graph (no profiler on the
// GPU host traces graph nodes with PDL overlap; ncu serializes the kernels). A diagnostic:
// compiled in only with -DNIBBLE_PROBE (cmake -DNIBBLE_CUDA_PROBE=ON); otherwise every call
// below is empty and the kernels are unchanged. Run with NIBBLE_CUDA_PROBE=file and read the
// file with bench/gpu/probe.py (bench/gpu/probe-run.sh does both on the GPU host).
#pragma once
#include <cuda_runtime.h>

#include <vector>

namespace nibble {
namespace gpt2_cuda {

#ifdef NIBBLE_PROBE
// Thread 0 of every block of an instrumented kernel (a ProbeScope at its top, probe.waited()
// after its pdl_wait) stores its grid id and its entry, wait-return and exit times
// (%globaltimer, ns) into its own record, (grid id mod kProbeGrids, block): plain stores, no
// atomics on the kernel's path. A CUDA graph's kernel nodes keep their grid ids from one replay
// to the next, so the records of a replayed decode step are the last replay's. probe_dump()
// writes the records to the file. Each translation unit has its own copy of the table pointer
// (no relocatable device code), registered by NIBBLE_PROBE_TU and set by probe_bind_all()
// before the first launch.
constexpr unsigned kProbeGrids = 512, kProbeBlocks = 6400;
struct ProbeRec {
  unsigned long long grid, t0, tw, t1, m[4];  // m: probe.mark(i) points inside the kernel (0: none)
};
static __device__ ProbeRec* g_probe_buf = nullptr;
__device__ __forceinline__ unsigned long long probe_now() {
  unsigned long long t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
}
struct ProbeScope {
  unsigned long long t0 = 0, tw = 0, m[4] = {0, 0, 0, 0};
  ProbeRec* b;
  __device__ __forceinline__ ProbeScope() {
    b = threadIdx.x == 0 ? g_probe_buf : nullptr;
    if (b) t0 = probe_now();
  }
  __device__ __forceinline__ void waited() {
    if (b) tw = probe_now();
  }
  __device__ __forceinline__ void mark(int i) {
    if (b && !m[i]) m[i] = probe_now();
  }
  __device__ __forceinline__ ~ProbeScope() {
    if (!b) return;
    const unsigned long long t1 = probe_now();
    unsigned long long grid;
    asm volatile("mov.u64 %0, %%gridid;" : "=l"(grid));
    const unsigned blk = blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z);
    if (blk < kProbeBlocks) b[(grid % kProbeGrids) * kProbeBlocks + blk] = ProbeRec{grid, t0, tw, t1, {m[0], m[1], m[2], m[3]}};
  }
};
inline std::vector<void (*)(void*)>& probe_binders() {
  static std::vector<void (*)(void*)> v;
  return v;
}
#define NIBBLE_PROBE_TU(name)                                                                           \
  namespace {                                                                                           \
  struct ProbeReg_##name {                                                                              \
    ProbeReg_##name() {                                                                                 \
      ::nibble::gpt2_cuda::probe_binders().push_back(+[](void* p) {                                     \
        cudaMemcpyToSymbol(::nibble::gpt2_cuda::g_probe_buf, &p, sizeof(p));                            \
      });                                                                                               \
    }                                                                                                   \
  } probe_reg_##name;                                                                                   \
  }
// Allocates the table (once) and sets every unit's pointer; nothing without NIBBLE_CUDA_PROBE set.
void probe_bind_all();
// Writes the records and the launch names (in launch order) to NIBBLE_CUDA_PROBE.
void probe_dump();
void probe_name(const char* what);

#else
struct ProbeScope {
  __device__ __forceinline__ void waited() {}
  __device__ __forceinline__ void mark(int) {}
};
#define NIBBLE_PROBE_TU(name)
inline void probe_bind_all() {}
inline void probe_dump() {}
inline void probe_name(const char*) {}
#endif

}  // namespace gpt2_cuda
}  // namespace nibble
