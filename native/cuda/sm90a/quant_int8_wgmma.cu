// LLM.int8()'s large int8 products on Hopper: wgmma (warpgroup MMA, sm_90a only) fed by the
// tensor memory accelerator (TMA), the way cuBLAS's float16 GEMM runs there. Same results bit
// for bit as the mma.sync kernels (quant_int8.cu): exact int32 sums, and the same dequant
// formula (quant_int8_epilogue.cuh).
//
// CTA tile 128x256: two consumer warpgroups of 64x256 each and one producer warp whose lane 0
// issues the TMA copies, k-tile 128 bytes, 4 stages (48 KB each) handed over by mbarriers
// (full: the copy's bytes landed; empty: both warpgroups' wgmmas that read the stage are done),
// no block-wide barrier in the loop. Operands stay K-major as in memory (A rows x K, B the
// weight's N x K rows), which wgmma takes for 8-bit types; TMA writes them with the 128-byte
// swizzle that the shared-memory descriptors name (16-byte chunk c of row r at c ^ (r & 7),
// 8-row groups 1024 bytes apart, stages 1024-byte aligned). Persistent: one CTA an SM walks
// the tiles, so the producer fetches the next tile's first stages while the consumers store.
//
// Tried and dropped (H100, same-run A/Bs in bench/kernels/NOTES.md): clusters of two CTAs
// sharing B's tile by TMA multicast (L2 was not the limit: no gain, and the cross-CTA stage
// hand-over cost 5%).
//
// Compiled for sm_90a alone (its own library in CMakeLists.txt); int8_gemm_wgmma() says
// whether the current device runs it, so other GPUs keep the mma.sync kernels.
#include "cuda/sm90a/quant_int8_wgmma.h"

#include <cuda.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdlib>
#include <mutex>

#include "cuda/cuda_check.h"
#include "cuda/quant_device.cuh"
#include "cuda/sm90a/tma.cuh"

namespace nibble {
namespace cuda {
namespace {

constexpr int kBM = 128, kBN = 256, kBK = 128, kStages = 4;
constexpr int kConsumers = 256, kThreads = kConsumers + 32;
constexpr int kStageBytes = (kBM + kBN) * kBK;
constexpr size_t kSmemBytes = (size_t)kStages * kStageBytes + 1024;  // + alignment slack

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
using sm90a::smem_desc;
using sm90a::tma_load;
// D += A . B over one k32 step: A 64x32 and B 256x32 bytes from shared memory (descriptors),
// D the warpgroup's 64x256 int32 accumulators, 128 a thread (scale-d true: accumulate).
__device__ __forceinline__ void wgmma_m64n256k32_s8(int (&d)[128], uint64_t da, uint64_t db) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %130, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n256k32.s32.s8.s8 {"
      "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
      "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, "
      "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, "
      "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63, "
      "%64, %65, %66, %67, %68, %69, %70, %71, %72, %73, %74, %75, %76, %77, %78, %79, "
      "%80, %81, %82, %83, %84, %85, %86, %87, %88, %89, %90, %91, %92, %93, %94, %95, "
      "%96, %97, %98, %99, %100, %101, %102, %103, %104, %105, %106, %107, %108, %109, %110, %111, "
      "%112, %113, %114, %115, %116, %117, %118, %119, %120, %121, %122, %123, %124, %125, %126, %127 "
      "}, %128, %129, p;\n}\n"
      : "+r"(d[0]), "+r"(d[1]), "+r"(d[2]), "+r"(d[3]), "+r"(d[4]), "+r"(d[5]), "+r"(d[6]), "+r"(d[7]),
        "+r"(d[8]), "+r"(d[9]), "+r"(d[10]), "+r"(d[11]), "+r"(d[12]), "+r"(d[13]), "+r"(d[14]), "+r"(d[15]),
        "+r"(d[16]), "+r"(d[17]), "+r"(d[18]), "+r"(d[19]), "+r"(d[20]), "+r"(d[21]), "+r"(d[22]), "+r"(d[23]),
        "+r"(d[24]), "+r"(d[25]), "+r"(d[26]), "+r"(d[27]), "+r"(d[28]), "+r"(d[29]), "+r"(d[30]), "+r"(d[31]),
        "+r"(d[32]), "+r"(d[33]), "+r"(d[34]), "+r"(d[35]), "+r"(d[36]), "+r"(d[37]), "+r"(d[38]), "+r"(d[39]),
        "+r"(d[40]), "+r"(d[41]), "+r"(d[42]), "+r"(d[43]), "+r"(d[44]), "+r"(d[45]), "+r"(d[46]), "+r"(d[47]),
        "+r"(d[48]), "+r"(d[49]), "+r"(d[50]), "+r"(d[51]), "+r"(d[52]), "+r"(d[53]), "+r"(d[54]), "+r"(d[55]),
        "+r"(d[56]), "+r"(d[57]), "+r"(d[58]), "+r"(d[59]), "+r"(d[60]), "+r"(d[61]), "+r"(d[62]), "+r"(d[63]),
        "+r"(d[64]), "+r"(d[65]), "+r"(d[66]), "+r"(d[67]), "+r"(d[68]), "+r"(d[69]), "+r"(d[70]), "+r"(d[71]),
        "+r"(d[72]), "+r"(d[73]), "+r"(d[74]), "+r"(d[75]), "+r"(d[76]), "+r"(d[77]), "+r"(d[78]), "+r"(d[79]),
        "+r"(d[80]), "+r"(d[81]), "+r"(d[82]), "+r"(d[83]), "+r"(d[84]), "+r"(d[85]), "+r"(d[86]), "+r"(d[87]),
        "+r"(d[88]), "+r"(d[89]), "+r"(d[90]), "+r"(d[91]), "+r"(d[92]), "+r"(d[93]), "+r"(d[94]), "+r"(d[95]),
        "+r"(d[96]), "+r"(d[97]), "+r"(d[98]), "+r"(d[99]), "+r"(d[100]), "+r"(d[101]), "+r"(d[102]), "+r"(d[103]),
        "+r"(d[104]), "+r"(d[105]), "+r"(d[106]), "+r"(d[107]), "+r"(d[108]), "+r"(d[109]), "+r"(d[110]), "+r"(d[111]),
        "+r"(d[112]), "+r"(d[113]), "+r"(d[114]), "+r"(d[115]), "+r"(d[116]), "+r"(d[117]), "+r"(d[118]), "+r"(d[119]),
        "+r"(d[120]), "+r"(d[121]), "+r"(d[122]), "+r"(d[123]), "+r"(d[124]), "+r"(d[125]), "+r"(d[126]), "+r"(d[127])
      : "l"(da), "l"(db), "r"(1));
}
#endif

__global__ void __launch_bounds__(kThreads, 1)
    k_int8_gemm_wgmma(const __grid_constant__ CUtensorMap map_a, const __grid_constant__ CUtensorMap map_b, int M, int N,
                      int K, int group_rows, Int8Epilogue ep) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  extern __shared__ int8_t s_raw[];
  __shared__ __align__(8) uint64_t s_full[kStages], s_empty[kStages];
  // The tile's column scales and bias, read once per tile for the fused dequantization.
  __shared__ float s_cs[kBN], s_bias[kBN];
  int8_t* smem = reinterpret_cast<int8_t*>((reinterpret_cast<uintptr_t>(s_raw) + 1023) & ~(uintptr_t)1023);
  const uint32_t base = dev::smem_u32(smem);
  const int tid = threadIdx.x;
  // Tiles in groups of group_rows row tiles, column by column within a group: a wave of CTAs
  // then covers a few row tiles x many column tiles whose operands share L2 (in plain row
  // order a wave spans every column tile: all of B, which comes from DRAM once a wave). A
  // grid smaller than the tile count (persistent) walks the tiles with the grid's stride.
  const int tiles_m = (M + kBM - 1) / kBM, tiles_n = (N + kBN - 1) / kBN, tiles = tiles_m * tiles_n;
  const int per_group = group_rows * tiles_n;
  auto tile_of = [&](int tile, int& m0, int& n0) {
    const int group = tile / per_group, first_m = group * group_rows;
    const int group_m = min(tiles_m - first_m, group_rows), in_group = tile % per_group;
    m0 = (first_m + in_group % group_m) * kBM, n0 = (in_group / group_m) * kBN;
  };
  const int ktiles = (K + kBK - 1) / kBK;
  auto full = [&](int st) { return dev::smem_u32(&s_full[st]); };
  auto empty = [&](int st) { return dev::smem_u32(&s_empty[st]); };
  if (tid == 0) {
    for (int st = 0; st < kStages; st++) dev::mbar_init(full(st), 1), dev::mbar_init(empty(st), kConsumers / 32);
    asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
  }
  __syncthreads();

  // it counts k-tiles over all of this CTA's tiles: stage it % kStages, its use it / kStages.
  if (tid >= kConsumers) {  // the producer warp: lane 0 streams the k-tiles
    if (tid == kConsumers) {
      int it = 0;
      for (int tile = blockIdx.x; tile < tiles; tile += gridDim.x) {
        int m0, n0;
        tile_of(tile, m0, n0);
        for (int kt = 0; kt < ktiles; kt++, it++) {
          const int st = it % kStages, use = it / kStages;
          if (use > 0) dev::mbar_wait(empty(st), (use - 1) & 1);
          dev::mbar_expect(full(st), kStageBytes);  // out-of-bounds parts of a box arrive as zeros, counted
          tma_load(base + st * kStageBytes, &map_a, kt * kBK, m0, full(st));
          tma_load(base + st * kStageBytes + kBM * kBK, &map_b, kt * kBK, n0, full(st));
        }
      }
    }
    return;
  }

  const int wg = tid >> 7, w = (tid >> 5) & 3, lane = tid & 31, g = lane >> 2, t = lane & 3;
  const bool dequant = ep.out != nullptr;
  int it = 0;
  for (int tile = blockIdx.x; tile < tiles; tile += gridDim.x) {
    int m0, n0;
    tile_of(tile, m0, n0);
    // The output stage's inputs are requested now and used after the main loop: the scales
    // of this thread's two rows in registers, the tile's column scales and bias in shared
    // memory (one column a thread). Read inside the store loop (as store_pair does), each
    // load waits on memory right before its use, and with plain loads behind the previous
    // store too; H100, 2048x8192x8192: loads in the loop 700 TOPS, through __ldg 1150,
    // staged here 1280, with no stores at all 1330.
    const int row = m0 + wg * 64 + w * 16 + g;
    float rs[2] = {0.0f, 0.0f};
    if (dequant) {
      for (int h = 0; h < 2; h++)
        if (row + h * 8 < M) rs[h] = __ldg(ep.rs + row + h * 8);
      const int n = n0 + tid;
      s_cs[tid] = n < N ? __ldg(ep.cs + n) : 0.0f;
      s_bias[tid] = n < N && ep.bias ? __half2float(__ldg(ep.bias + n)) : 0.0f;
    }
    int acc[128];
#pragma unroll
    for (int i = 0; i < 128; i++) acc[i] = 0;
    for (int kt = 0; kt < ktiles; kt++, it++) {
      const int st = it % kStages;
      dev::mbar_wait(full(st), (it / kStages) & 1);
      const uint32_t a_addr = base + st * kStageBytes + wg * 64 * kBK;
      const uint32_t b_addr = base + st * kStageBytes + kBM * kBK;
      asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
#pragma unroll
      for (int ks = 0; ks < kBK / 32; ks++)
        wgmma_m64n256k32_s8(acc, smem_desc(a_addr + 32 * ks), smem_desc(b_addr + 32 * ks));
      asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
      // One k-tile's wgmmas stay in flight; the tile before is done, so its stage goes back.
      asm volatile("wgmma.wait_group.sync.aligned 1;\n" ::: "memory");
      if (kt > 0 && lane == 0) dev::mbar_arrive(empty((it - 1) % kStages));
    }
    asm volatile("wgmma.wait_group.sync.aligned 0;\n" ::: "memory");
    if (ktiles > 0 && lane == 0) dev::mbar_arrive(empty((it - 1) % kStages));

    // Accumulator layout: warp w of the warpgroup holds rows 16w..16w+15; within a warp, as
    // mma.sync's m16n8 fragment, repeated for each of the 32 n8 blocks.
    if (dequant) {
      dev::named_barrier_sync(1, kConsumers);  // s_cs / s_bias written by all consumer threads
#pragma unroll
      for (int j = 0; j < 32; j++)
#pragma unroll
        for (int h = 0; h < 2; h++) {
          const int m = row + h * 8, c = j * 8 + t * 2;
          if (m < M)
            store_dequant_pair(ep.out, m, n0 + c, N, rs[h], s_cs[c], s_cs[c + 1], s_bias[c], s_bias[c + 1],
                               acc[4 * j + 2 * h], acc[4 * j + 2 * h + 1]);
        }
      dev::named_barrier_sync(1, kConsumers);  // the next tile may overwrite s_cs / s_bias
    } else {
#pragma unroll
      for (int j = 0; j < 32; j++)
#pragma unroll
        for (int h = 0; h < 2; h++) {
          const int m = row + h * 8, n = n0 + j * 8 + t * 2;
          if (m < M) store_pair(ep, m, n, N, acc[4 * j + 2 * h], acc[4 * j + 2 * h + 1]);
        }
    }
  }
#else
  __trap();  // int8_gemm_wgmma() does not launch it where no sm_90a code was loaded
#endif
}

// Whether the current device runs the sm_90a code (an H100/H200 does; other GPUs find no
// image of this kernel) and the driver encodes tensor maps, cached per device; the kernel's
// shared-memory opt-in is set then.
bool device_has_kernel() {
  static std::mutex mu;
  static int state[64] = {};  // 0 unknown, 1 yes, 2 no
  int dev = 0;
  if (cudaGetDevice(&dev) != cudaSuccess || dev >= 64) return false;
  std::lock_guard<std::mutex> lock(mu);
  if (!state[dev]) {
    cudaFuncAttributes attr;
    const cudaError_t e = cudaFuncGetAttributes(&attr, k_int8_gemm_wgmma);
    if (e != cudaSuccess) cudaGetLastError();  // "no kernel image": not an error of the caller's
    bool ok = e == cudaSuccess && sm90a::encode_fn() != nullptr;
    int optin = 0;
    if (ok)
      ok = cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev) == cudaSuccess &&
           (size_t)optin >= kSmemBytes + attr.sharedSizeBytes &&
           cudaFuncSetAttribute(k_int8_gemm_wgmma, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)kSmemBytes) ==
               cudaSuccess;
    state[dev] = ok ? 1 : 2;
  }
  return state[dev] == 1;
}

// rows x K int8, row-major, boxes of box_rows x 128 bytes with the 128-byte swizzle.
bool make_map(CUtensorMap* map, const int8_t* p, int64_t rows, int64_t K, int box_rows) {
  return sm90a::make_map_2d(map, p, CU_TENSOR_MAP_DATA_TYPE_UINT8, rows, K, K, box_rows, kBK, true);
}

// Row tiles a group (NIBBLE_CUDA_INT8_WGMMA_GROUP, default 4; 1 = plain row order, for A/Bs).
// H100, 2048x8192x8192 + dequant, two alternations: groups of 1 / 4 / 8 / 16 row tiles
// 844-845 / 878-880 / 858-865 / 851-863 TOPS.
int group_rows() {
  static const int g = [] {
    const char* v = std::getenv("NIBBLE_CUDA_INT8_WGMMA_GROUP");
    const int n = v ? std::atoi(v) : 4;
    return n >= 1 && n <= 64 ? n : 4;
  }();
  return g;
}

// One CTA an SM walking the tiles (default) or one CTA a tile (NIBBLE_CUDA_INT8_WGMMA_PERSIST=0,
// for A/Bs). H100, 2048x8192x8192, two alternations: GEMM + dequant 1276-1279 vs 1272-1287
// TOPS, Linear8bitLt (quantize + product) 214 vs 225 us.
bool persistent() {
  static const bool p = [] {
    const char* v = std::getenv("NIBBLE_CUDA_INT8_WGMMA_PERSIST");
    return !(v && std::atoi(v) == 0);
  }();
  return p;
}

}  // namespace

bool int8_gemm_wgmma(const int8_t* A, const int8_t* B, int64_t M, int64_t N, int64_t K, const Int8Epilogue& ep,
                     cudaStream_t s, const char* op) {
  if (!device_has_kernel()) return false;
  const int64_t tiles = ((M + kBM - 1) / kBM) * ((N + kBN - 1) / kBN);
  if (tiles > 0x7fffffff) return false;
  const dim3 grid((unsigned)(persistent() ? std::min<int64_t>(tiles, sm_count()) : tiles));
  CUtensorMap map_a, map_b;
  if (!make_map(&map_a, A, M, K, kBM) || !make_map(&map_b, B, N, K, kBN)) return false;
  k_int8_gemm_wgmma<<<grid, kThreads, kSmemBytes, s>>>(map_a, map_b, (int)M, (int)N, (int)K, group_rows(), ep);
  NIBBLE_CUDA_CHECK_LAUNCH(op);
  return true;
}

}  // namespace cuda
}  // namespace nibble
