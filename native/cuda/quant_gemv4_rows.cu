// 4-bit GEMV (one activation row) over a row-interleaved copy of the packed weight.
//
// Why a second layout: in the bitsandbytes layout a warp that reads one row spreads its lanes
// over K, so every lane needs different activations; staged in shared memory those reads cost
// 4 wavefronts per 16 bytes, and with the code lookups the shared-memory pipe bounded the
// GEMVs of quant_matmul4bit.cu and gpt2_decode_gemv.cu (bench/kernels/NOTES.md). Here the 32
// lanes of a warp own 32 consecutive rows and walk K together: the activations of a chunk are
// one broadcast read for the whole warp, and the only per-element shared access left is the
// conflict-free 16-entry code table (one PRMT, one LDS, one FFMA an element). The copy, made
// once when the weight is loaded, stores for each group of 32 rows and each 32-element chunk
// of K the 32 rows' 16-byte chunks one after the other (a warp's load is 512 contiguous
// bytes); absmax (or its 8-bit codes) is interleaved the same way. Rows past N are zero and
// never written out.
//
// Work split: N / 32 row groups are too few warps for a GPU, so K is cut into S slices and a
// warp task is (group, slice); partial sums go to a float workspace and the warp that finishes
// a group's last slice (counted with an atomic per group) adds the S partials in slice order,
// so the result does not depend on which warp finished first. Products use the exact float32
// code values: per chunk sum(code * x), then times the block absmax, as the other paths do.
//
// Measured (H100, bench_quant_cuda, launched with programmatic dependent launch): faster than
// the other GEMVs on large weights (28672x8192 1.98 TB/s against 1.56 for the best
// bitsandbytes-layout path, 8192^2 1.66 against 1.30), slower on small ones (4096^2 0.94
// against 1.03 for the GPT-2 plan's decode GEMV): with one short task a warp, the kernel's
// start and the split-K finish weigh more there.
#include <algorithm>
#include <string>

#include "cuda/pdl.cuh"
#include "cuda/quant_cuda.h"
#include "cuda/quant_device.cuh"

namespace nibble {
namespace cuda {
namespace {

constexpr int kWarps = 8, kThreads = kWarps * 32;
constexpr int kMaxSlices = 32;

struct RowsArgs {
  const uint4* packed;     // [G][C][32] chunks
  const uint8_t* qabsmax;  // [G][NBr][32] (double quant)
  const float* absmax;     // [G][NBr][32] (plain)
  const float* nested;     // flat, [nblocks / 256]
  const float* ncode;      // [256]
  const float* offset_ptr;
  float offset;
  float* partial;  // [S][Npad]
  int* counters;   // [G], zero between launches
  int N, Npad, K, C, U, NBr, log2_chunks_per_block, S, G;  // U = units (chunk pairs) a row
  uint32_t nested_last;  // last valid nested index (rows past N gather a valid entry)
};

// Units [lo, hi) of slice s: U split as evenly as integers allow.
// (32-bit: S <= kMaxSlices and U <= kRowsMaxK / 64, so s * U is small.)
__device__ __forceinline__ int slice_begin(int s, int S, int U) { return (int)((uint32_t)(s * U) / (uint32_t)S); }

// A lane's unit of work is two chunks (64 weights of its row, two 16-byte loads): the
// per-unit bookkeeping (positions, absmax, loop) is paid once per 64 weights, and two units
// in flight are four chunks in the registers three single chunks took. Three blocks an SM.
// (Single chunks measured best at 3 ahead and 3 blocks an SM among (2,4), (3,3), (4,3), (8,2);
// an L2 prefetch of later chunks, per lane or in bulk per task, made it slower: NOTES.md.)
constexpr int kAhead = 2, kMinBlocks = 3;

template <typename T, int KIND, bool DQ>
__global__ void __launch_bounds__(kThreads, kMinBlocks)
    k_gemv4_rows(const T* __restrict__ x, RowsArgs a, const T* __restrict__ bias, T* __restrict__ out) {
  extern __shared__ float4 s_dyn[];
  float* s_x = reinterpret_cast<float*>(s_dyn);
  __shared__ __align__(256) float s_code[16];  // 256-aligned: see code() below
  __shared__ float s_ncode[DQ ? 256 : 1];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int W = (int)gridDim.x * kWarps, tasks = a.G * a.S;

  struct Unit {
    uint4 raw0, raw1;  // chunks 2u and 2u + 1 (zero past the row's end)
    float am0, am1;    // absmax, or the nested absmax (double quant), of each chunk's block
    uint32_t q0, q1;   // absmax codes (double quant)
  };
  // Where a lane is in its sequence of units: its warp's tasks t, t + W, ..., each over its
  // slice's units [u, end). The loading side (tail) also keeps its row group's offsets, so
  // the per-unit step is increments, and divisions happen once per task.
  struct Pos {
    int t, u, end;
    uint32_t wo;    // index of this lane's 16 bytes of chunk 2u in a.packed
    uint32_t blk0;  // flat index of the lane's row's first absmax block
    uint32_t ab;    // interleaved absmax index of (group, block 0, lane)
  };
  auto start = [&](int t) {
    Pos p{t, 0, 0, 0u, 0u, 0u};
    if (t < tasks) {
      const int g = t / a.S, s = t - g * a.S;
      p.u = slice_begin(s, a.S, a.U), p.end = slice_begin(s + 1, a.S, a.U);
      p.wo = ((uint32_t)g * a.C + 2 * p.u) * 32 + lane;
      p.blk0 = ((uint32_t)g * 32 + lane) * a.NBr;
      p.ab = (uint32_t)g * a.NBr * 32 + lane;
    }
    return p;
  };
  auto advance = [&](Pos& p) {
    p.wo += 64;
    if (++p.u >= p.end) p = start(p.t + W);
  };
  const bool two_blocks = a.log2_chunks_per_block == 0;  // blocksize 32: a block per chunk
  auto fetch = [&](const Pos& p) {
    Unit r{make_uint4(0, 0, 0, 0), make_uint4(0, 0, 0, 0), 0.0f, 0.0f, 0u, 0u};
    if (p.t < tasks) {
      const bool second = 2 * p.u + 1 < a.C;
      r.raw0 = __ldcs(a.packed + p.wo);
      if (second) r.raw1 = __ldcs(a.packed + (p.wo + 32));
      const uint32_t b = (uint32_t)(2 * p.u) >> a.log2_chunks_per_block;
      if (DQ) {
        r.q0 = __ldg(a.qabsmax + (p.ab + b * 32));
        r.am0 = __ldg(a.nested + min((p.blk0 + b) >> 8, a.nested_last));
        if (two_blocks && second) {
          r.q1 = __ldg(a.qabsmax + (p.ab + (b + 1) * 32));
          r.am1 = __ldg(a.nested + min((p.blk0 + b + 1) >> 8, a.nested_last));
        }
      } else {
        r.am0 = __ldg(a.absmax + (p.ab + b * 32));
        if (two_blocks && second) r.am1 = __ldg(a.absmax + (p.ab + (b + 1) * 32));
      }
    }
    return r;
  };

  const int first = (int)blockIdx.x * kWarps + warp;
  Pos tail = start(first);
  int ht = first, hu = tail.u, hend = tail.end;  // the consuming side: task, unit, slice end
  Unit ring[kAhead];
#pragma unroll
  for (int i = 0; i < kAhead; i++) {
    ring[i] = fetch(tail);
    advance(tail);
  }

  // Prologue while those loads are in flight: tables and the activations as float32.
  if (threadIdx.x < 16)
    s_code[threadIdx.x] = KIND == 1 ? dev::c_tables4.nf4_values[threadIdx.x] : dev::c_tables4.fp4_values[threadIdx.x];
  if (DQ) s_ncode[threadIdx.x] = __ldg(a.ncode + threadIdx.x);  // kThreads == 256
  const float off = DQ ? (a.offset_ptr ? __ldg(a.offset_ptr) : a.offset) : 0.0f;
  // The loads above read only the weight; the activations (and the global writes at the end)
  // may depend on the kernel before this one on the stream (programmatic dependent launch).
  gpt2_cuda::pdl_wait();
  gpt2_cuda::pdl_trigger();
  {
    // Four 16-byte loads a thread in flight, then converted (a loop of load-convert-store
    // waited on each load in turn: microseconds before the first chunk could be summed).
    constexpr int kPer = 16 / (int)sizeof(T), kBatch = 4;
    const uint4* xs = reinterpret_cast<const uint4*>(x);
    const int n16 = a.K / kPer;
    for (int base = 0; base < n16; base += kBatch * kThreads) {
      uint4 u[kBatch];
#pragma unroll
      for (int j = 0; j < kBatch; j++) {
        const int i = base + j * kThreads + (int)threadIdx.x;
        if (i < n16) u[j] = __ldg(xs + i);
      }
#pragma unroll
      for (int j = 0; j < kBatch; j++) {
        const int i = base + j * kThreads + (int)threadIdx.x;
        if (i >= n16) continue;
        const T* e = reinterpret_cast<const T*>(&u[j]);
        float f[kPer];
#pragma unroll
        for (int k = 0; k < kPer; k++) f[k] = dev::to_f32(e[k]);
#pragma unroll
        for (int k = 0; k < kPer; k += 4)
          *reinterpret_cast<float4*>(s_x + i * kPer + k) = make_float4(f[k], f[k + 1], f[k + 2], f[k + 3]);
      }
    }
  }
  for (int i = a.K + (int)threadIdx.x; i < a.U * 64; i += kThreads) s_x[i] = 0.0f;  // odd C: the last unit's 2nd chunk
  __syncthreads();
  // Code value of the nibble that `sh` (bytes of nibble * 4) holds in byte b: one PRMT puts
  // that byte under the table's upper address bytes (the table is 256-aligned), so the
  // lookup is PRMT + LDS with no address add (nvcc added one per element from a pointer).
  const uint32_t tab = (uint32_t)__cvta_generic_to_shared(s_code);
  auto code = [&](uint32_t sh, int b) {
    const uint32_t addr = __byte_perm(sh, tab, 0x7650u | (uint32_t)b);
    float v;
    asm volatile("ld.shared.f32 %0, [%1];" : "=f"(v) : "r"(addr));
    return v;
  };

  // sum(code * x) over one 32-weight chunk; byte b of a word holds elements 2b (high nibble)
  // and 2b + 1 (low nibble).
  auto dot_chunk = [&](const uint4& raw, const float4* xv) {
    const uint32_t words[4] = {raw.x, raw.y, raw.z, raw.w};
    float d0 = 0.0f, d1 = 0.0f;
#pragma unroll
    for (int q = 0; q < 4; q++) {
      const uint32_t hi = (words[q] >> 2) & 0x3c3c3c3cu, lo = (words[q] << 2) & 0x3c3c3c3cu;
      const float4 xa = xv[2 * q], xb = xv[2 * q + 1];
      d0 = fmaf(code(hi, 0), xa.x, d0);
      d1 = fmaf(code(lo, 0), xa.y, d1);
      d0 = fmaf(code(hi, 1), xa.z, d0);
      d1 = fmaf(code(lo, 1), xa.w, d1);
      d0 = fmaf(code(hi, 2), xb.x, d0);
      d1 = fmaf(code(lo, 2), xb.y, d1);
      d0 = fmaf(code(hi, 3), xb.z, d0);
      d1 = fmaf(code(lo, 3), xb.w, d1);
    }
    return d0 + d1;
  };

  float acc = 0.0f;
  bool more = ht < tasks;
  while (more) {
    // Unrolled by the ring depth so each ring slot is a fixed register set (no shifting).
#pragma unroll
    for (int i = 0; i < kAhead; i++) {
      if (!more) break;
      const Unit cur = ring[i];
      ring[i] = fetch(tail);
      advance(tail);

      const float4* xv = reinterpret_cast<const float4*>(s_x + hu * 64);
      const float da = dot_chunk(cur.raw0, xv), db = dot_chunk(cur.raw1, xv + 8);
      const float s0 = DQ ? dev::dq_absmax(s_ncode, (uint8_t)cur.q0, cur.am0, off) : cur.am0;
      if (two_blocks) {
        const float s1 = DQ ? dev::dq_absmax(s_ncode, (uint8_t)cur.q1, cur.am1, off) : cur.am1;
        acc = fmaf(s1, db, fmaf(s0, da, acc));
      } else {
        acc = fmaf(s0, da + db, acc);
      }
      if (++hu < hend) continue;

      // Task done: lane = row within the group.
      const int g = ht / a.S, s = ht - g * a.S, n = g * 32 + lane;
      if (a.S == 1) {
        if (n < a.N) out[n] = dev::from_f32<T>(acc + (bias ? dev::to_f32(bias[n]) : 0.0f));
      } else {
        a.partial[(size_t)s * a.Npad + n] = acc;
        // A release/acquire count by lane 0 after the warp's barrier publishes the warp's
        // partials, and the last slice's warp sees everyone's (no sequentially consistent fence).
        __syncwarp();
        int done = 0;
        if (lane == 0)
          asm volatile("atom.acq_rel.gpu.global.add.s32 %0, [%1], 1;" : "=r"(done) : "l"(a.counters + g) : "memory");
        done = __shfl_sync(0xffffffffu, done, 0);
        if (done == a.S - 1) {  // the group's last slice: sum the partials in slice order
          float v = 0.0f;
          for (int j = 0; j < a.S; j++) v += __ldcg(a.partial + (size_t)j * a.Npad + n);
          if (n < a.N) out[n] = dev::from_f32<T>(v + (bias ? dev::to_f32(bias[n]) : 0.0f));
          if (lane == 0) a.counters[g] = 0;  // ready for the next launch on this stream
        }
      }
      acc = 0.0f;
      ht += W;
      more = ht < tasks;
      if (more) {
        const int g2 = ht / a.S, s2 = ht - g2 * a.S;
        hu = slice_begin(s2, a.S, a.U), hend = slice_begin(s2 + 1, a.S, a.U);
      }
    }
  }
}

// ---- re-layout (once per weight) ------------------------------------------------------------
// dst[g][j][r] = src[g * 32 + r][j] for a [N, cols] array (the packed chunks as uint4, or the
// absmax entries); rows past N are zero.
template <typename A>
__global__ void k_relayout(const A* __restrict__ src, A* __restrict__ dst, int64_t N, int64_t cols, int64_t total) {
  for (int64_t o = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; o < total; o += (int64_t)gridDim.x * blockDim.x) {
    const int64_t r = o & 31, gj = o >> 5, j = gj % cols, g = gj / cols, n = g * 32 + r;
    dst[o] = n < N ? src[n * cols + j] : A{};
  }
}

// Slices per row group: enough warp tasks to fill the grid's warps with the least idle tail
// (tasks per warp rounded up), preferring fewer slices (less partial traffic) on near-ties,
// and at least 4 units (8 chunks) a task (single chunks at 4096^2: 32 slices of 4 chunks
// 718 GB/s, 16 of 8 770, 8 of 16 732).
constexpr int kMinUnitsPerTask = 4;
int choose_slices(int64_t G, int64_t U, int64_t warps) {
  int best = 1;
  double best_eff = 0.0;
  for (int S = 1; S <= kMaxSlices && S <= U && (S == 1 || U / S >= kMinUnitsPerTask); S++) {
    const int64_t tasks = G * S;
    const int64_t rounds = (tasks + warps - 1) / warps;
    const double eff = (double)tasks / (double)(rounds * warps);
    if (eff > best_eff * 1.03) best = S, best_eff = eff;
  }
  return best;
}

template <typename T, int KIND, bool DQ>
void run_rows(const T* x, const Weight4bitRows& w, const T* bias, T* out, cudaStream_t s) {
  auto kernel = k_gemv4_rows<T, KIND, DQ>;
  const int64_t G = (w.N + 31) / 32, C = w.K / 32, U = (C + 1) / 2;
  const size_t smem = (size_t)U * 64 * 4;
  const int per_sm = resident_blocks((const void*)kernel, kThreads, smem, "gemv_4bit_rows");
  const int S = choose_slices(G, U, (int64_t)per_sm * sm_count() * kWarps);  // <= kMaxSlices (the workspace)
  RowsArgs a;
  a.packed = reinterpret_cast<const uint4*>(w.packed);
  a.qabsmax = w.qabsmax, a.absmax = w.absmax;
  a.nested = w.nested_absmax, a.ncode = w.nested_code, a.offset_ptr = w.offset_ptr, a.offset = w.offset;
  a.partial = w.partial, a.counters = w.counters;
  a.N = (int)w.N, a.Npad = (int)(G * 32), a.K = (int)w.K, a.C = (int)C, a.U = (int)U, a.NBr = (int)(w.K / w.blocksize);
  a.log2_chunks_per_block = __builtin_ctz((unsigned)(w.blocksize / 32));
  a.S = S, a.G = (int)G;
  a.nested_last = DQ ? (uint32_t)(((w.N * w.K / w.blocksize) - 1) >> 8) : 0u;
  const int64_t tasks = G * S;
  const unsigned grid = (unsigned)std::min<int64_t>((tasks + kWarps - 1) / kWarps, (int64_t)per_sm * sm_count());
  gpt2_cuda::launch_pdl(kernel, dim3(grid), dim3(kThreads), smem, s, "launch gemv_4bit_rows", x, a, bias, out);
}

template <typename T>
void dispatch_rows(const void* x, const Weight4bitRows& w, const void* bias, void* out, cudaStream_t s) {
  const T* xt = static_cast<const T*>(x);
  const T* bt = static_cast<const T*>(bias);
  T* ot = static_cast<T*>(out);
  const bool dq = w.absmax == nullptr;
  if (w.qt == QuantType::NF4) {
    if (dq) run_rows<T, 1, true>(xt, w, bt, ot, s);
    else run_rows<T, 1, false>(xt, w, bt, ot, s);
  } else {
    if (dq) run_rows<T, 0, true>(xt, w, bt, ot, s);
    else run_rows<T, 0, false>(xt, w, bt, ot, s);
  }
}

// Where each part of a row-layout buffer starts (256-byte aligned), and its total size.
struct RowsSections {
  size_t absmax, partial, counters, total;
  RowsSections(int64_t N, int64_t K, int blocksize, bool double_quant) {
    const int64_t Npad = (N + 31) / 32 * 32;
    auto up = [](size_t b) { return (b + 255) / 256 * 256; };
    absmax = up((size_t)Npad * K / 2);
    partial = absmax + up((size_t)Npad * (K / blocksize) * (double_quant ? 1 : 4));
    counters = partial + up((size_t)kMaxSlices * Npad * 4);
    total = counters + up((size_t)(Npad / 32) * 4);
  }
};

}  // namespace

std::string rows_layout_unsupported(int64_t N, int64_t K, int blocksize) {
  if (K % 32 != 0) return "K must be a multiple of 32";
  if (blocksize < 32 || K % blocksize != 0) return "every row must be whole absmax blocks of at least 32";
  if (K > kRowsMaxK) return "K is larger than " + std::to_string(kRowsMaxK);
  if (N <= 0 || (N + 31) / 32 * 32 * (K / 32) >= ((int64_t)1 << 31)) return "N * K too large (32-bit indexing)";
  return "";
}

std::string rows_layout_unsupported(const Weight4bit& w) {
  const std::string why = rows_layout_unsupported(w.N, w.K, w.blocksize);
  if (!why.empty()) return why;
  if (!aligned16(w.packed)) return "packed weight not 16-byte aligned";
  return "";
}

size_t rows_layout_bytes(int64_t N, int64_t K, int blocksize, bool double_quant) {
  return RowsSections(N, K, blocksize, double_quant).total;
}

Weight4bitRows rows_layout_view(const Weight4bit& w, void* buffer) {
  const std::string why = rows_layout_unsupported(w);
  if (!why.empty()) throw std::runtime_error("4-bit row layout: " + why);
  const bool dq = w.absmax == nullptr;
  const RowsSections at(w.N, w.K, w.blocksize, dq);
  uint8_t* p = static_cast<uint8_t*>(buffer);
  Weight4bitRows r;
  r.packed = p;
  if (dq) r.qabsmax = p + at.absmax;
  else r.absmax = reinterpret_cast<float*>(p + at.absmax);
  r.partial = reinterpret_cast<float*>(p + at.partial);
  r.counters = reinterpret_cast<int*>(p + at.counters);
  r.nested_absmax = w.nested_absmax, r.nested_code = w.nested_code, r.offset_ptr = w.offset_ptr, r.offset = w.offset;
  r.blocksize = w.blocksize, r.qt = w.qt, r.N = w.N, r.K = w.K;
  return r;
}

Weight4bitRows make_rows_layout(const Weight4bit& w, void* buffer, cudaStream_t s) {
  const Weight4bitRows r = rows_layout_view(w, buffer);
  const bool dq = w.absmax == nullptr;
  const int64_t Npad = (w.N + 31) / 32 * 32, C = w.K / 32, NBr = w.K / w.blocksize, G = Npad / 32;
  const int64_t tp = G * C * 32, ta = G * NBr * 32;
  k_relayout<uint4><<<grid_stride_blocks(tp), 256, 0, s>>>(reinterpret_cast<const uint4*>(w.packed),
                                                 reinterpret_cast<uint4*>(r.packed), w.N, C, tp);
  if (dq) k_relayout<uint8_t><<<grid_stride_blocks(ta), 256, 0, s>>>(w.qabsmax, r.qabsmax, w.N, NBr, ta);
  else k_relayout<float><<<grid_stride_blocks(ta), 256, 0, s>>>(w.absmax, r.absmax, w.N, NBr, ta);
  NIBBLE_CUDA_CHECK_LAUNCH("4-bit row layout");
  NIBBLE_CUDA_CHECK(cudaMemsetAsync(r.counters, 0, (size_t)G * 4, s), "4-bit row layout");
  sync_unless_capturing(s, "4-bit row layout");  // made once per weight: cheap
  return r;
}

void gemv_4bit_rows(const void* x, DType dt, const Weight4bitRows& w, const void* bias, void* out, cudaStream_t s) {
  if (!aligned16(x)) throw std::runtime_error("gemv_4bit_rows: x must be 16-byte aligned");
  switch (dt) {
    case DType::F32: dispatch_rows<float>(x, w, bias, out, s); break;
    case DType::F16: dispatch_rows<__half>(x, w, bias, out, s); break;
    case DType::BF16: dispatch_rows<__nv_bfloat16>(x, w, bias, out, s); break;
    default: throw std::runtime_error("gemv_4bit_rows: x must be float32, float16 or bfloat16");
  }
}

}  // namespace cuda
}  // namespace nibble
