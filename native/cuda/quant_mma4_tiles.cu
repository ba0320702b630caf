// 4-bit GEMM for a few activation rows (M <= 64 a launch) over a fragment-ordered copy of
// the packed weight.
//
// Why a second GEMM: the bitsandbytes-layout GEMM (k_mma4 in quant_matmul4bit.cu) stages the
// weight through shared memory and looks codes up with the packed byte's lane shuffled into
// place; ncu found it latency-bound at 3 blocks an SM (its shared memory), far from the
// memory floor at M = 16 (NOTES.md). Here the weight is the A operand of mma.m16n8k16 (16
// weight rows x 16 columns of K) and the activations the B operand (C^T = W x^T): a lane's
// 16 bytes of the copy are exactly its A fragments for 16 rows x 64 columns, and each packed
// byte (two codes of one row) becomes one fragment register through one lookup in a byte ->
// code-pair table (256-byte entries, lane-private columns: conflict-free, and one PRMT makes
// the offset). A warp owns 32 weight rows (two m16 tiles, so each activation fragment serves
// two MMAs); its chunks (32 rows x 64 columns, 1 KB, then the rows' absmax codes) arrive by one
// bulk copy each into a per-warp ring of shared memory, kAhead chunks in flight; the
// activations of a phase of 512 columns arrive by one bulk copy a row and serve the block's
// 16 warps.
//
// The block absmax is applied once per 64 columns: with few activation rows the chunk's
// products go to a scratch accumulator (float32, the codes exact in float16) that is scaled
// by the row's absmax and added; with more rows (8 n8 tiles) the codes are scaled in float16
// first, as k_mma4 does, which saves the scratch registers.
//
// Work split: blocks = (band of 16 row groups of 32 rows) x (K slice). With several slices the
// warps write float partials and the warp that finishes a row group's last slice (an atomic
// count per group) sums them in slice order, so results do not depend on timing.
//
// The copy stores, for each group of 32 rows and each 64-column chunk, two 512-byte tiles
// (rows 0-15, 16-31), lane l's 16 bytes at l * 16: word s (columns 16s..16s+15) holds in byte
// j the two codes the mma A fragment register j needs (rows g, g+8 of the tile, g = l / 4;
// columns 2t, 2t+1 or 2t+8, 2t+9, t = l % 4), the even column in the low nibble; then the 32
// rows' absmax codes (double quant) or float absmax of the chunk's block.
//
// Measured (H100, bench_quant_cuda, nf4 + double quant, float16): M = 16 29.1 / 76.0 us, 1.70x
// / 2.16x torch's fp16 matmul at 8192^2 / 28672x8192 (the bitsandbytes-layout GEMM 0.64x);
// M = 64 0.78x / 1.08x (0.45x / 0.53x). ncu on M = 16, 8192^2 (one wave, 16 chunks a warp):
// a fifth of the warp samples in the prologue and a quarter in the split-K epilogue: with
// tasks this short the fixed costs bound it (NOTES.md).
#include <algorithm>
#include <atomic>
#include <string>

#include "cuda/pdl.cuh"
#include "cuda/quant_cuda.h"
#include "cuda/quant_device.cuh"

namespace nibble {
namespace cuda {
namespace {

constexpr int kWarps = 16, kThreads = kWarps * 32;  // (the code table build assumes 16)
constexpr int kMaxSlices = 16;
constexpr int kLutBytes = 256 * 256;  // 256 entries x 256 bytes (lanes use the first 128)

// Per activation-row template (NT n8 tiles): chunks (64 columns) of activations staged per
// phase, and chunks of weight in flight a warp. Both arrive by bulk copies (cp.async.bulk,
// completion counted on mbarriers): a warp's 1 KB chunk is one copy issued by its lane 0 into
// a shared-memory ring of kAhead + 1 slots, so bytes in flight cost neither registers nor
// per-lane instructions; a phase's activations are one copy a row.
// A chunk of the copy: 1 KB of weights, then the 32 rows' absmax codes (double quant) or absmax.
__host__ __device__ constexpr int chunk_bytes(bool dq) { return 1024 + (dq ? 32 : 128); }

template <int NT, bool DQ> struct TilesCfg {
  static constexpr int PC = NT <= 4 ? 8 : 4;
  static constexpr int kAhead = NT <= 4 ? 4 : 2;
  static constexpr int kSlots = kAhead + 1;
  static constexpr int kChunk = chunk_bytes(DQ);
  static constexpr int kRowStride = PC * 128 + 16;  // +16: ldmatrix's 8 rows fall on 8 bank groups
  static constexpr int kXBytes = 2 * NT * 8 * kRowStride;
  static constexpr int kRingBytes = kWarps * kSlots * kChunk;
  static constexpr int kBars = 2 + kWarps * kSlots;
  static constexpr int kSmem = kLutBytes + kXBytes + kRingBytes + 1024 + kBars * 8;
};

// ---- bulk copies (sm_90; the mbarriers are dev::mbar_* in quant_device.cuh) ----
// The code for older GPUs (the source build also targets sm_80..89) has empty bodies
// (NIBBLE_DEV_SM90): the host never launches the kernel there (tiles_layout_unsupported).
// bytes (a multiple of 16, both addresses 16-byte aligned) from global to shared; completion
// is counted on `bar`.
__device__ __forceinline__ void bulk_copy(uint32_t dst, const void* src, uint32_t bytes, uint32_t bar) {
#if NIBBLE_DEV_SM90
  asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];" ::"r"(dst),
               "l"(src), "r"(bytes), "r"(bar)
               : "memory");
#endif
}

struct TilesArgs {
  const uint8_t* chunks;  // [G][C] chunks of chunk_bytes(DQ)
  const float* nested;     // flat, [nblocks / 256]
  const float* ncode;      // [256]
  const float* offset_ptr;
  float offset;
  float* partial;  // [S][NT * 8][Npad]
  int* counters;   // [G], zero between launches
  int M, N, Npad, K, C, NBr, log2_chunks_per_block, S, G;
  uint32_t nested_last;  // last valid nested index (rows past N gather a valid entry)
};

template <typename T, int KIND, bool DQ, int NT>
__global__ void __launch_bounds__(kThreads, 1)
    k_mma4_tiles(const T* __restrict__ x, TilesArgs a, const T* __restrict__ bias, T* __restrict__ out) {
  using Cfg = TilesCfg<NT, DQ>;
  constexpr int MP = NT * 8, PC = Cfg::PC, kAhead = Cfg::kAhead, kSlots = Cfg::kSlots;
  constexpr bool kScaleAcc = NT <= 4;
  extern __shared__ __align__(128) uint8_t smem[];
  constexpr int kRowStride = Cfg::kRowStride;
  uint32_t* s_lut = reinterpret_cast<uint32_t*>(smem);
  uint8_t* s_x = smem + kLutBytes;
  uint8_t* s_ring = s_x + Cfg::kXBytes;
  float* s_ncode = reinterpret_cast<float*>(s_ring + Cfg::kRingBytes);
  const uint32_t bars = dev::smem_u32(s_ncode + 256);  // [2] activation buffers, [kWarps][kSlots] ring
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int gi = lane >> 2, ti = lane & 3;
  const int grp = (int)blockIdx.x * kWarps + warp;
  const bool active = grp < a.G;  // (warp 0 always is)
  const int slice = (int)blockIdx.y;
  const int c0 = slice * a.C / a.S, c1 = (slice + 1) * a.C / a.S;

  const uint32_t xbar = bars, wbar = bars + 16 + warp * kSlots * 8;
  if (tid == 0) dev::mbar_init(xbar, 1), dev::mbar_init(xbar + 8, 1);
  if (lane == 0)
    for (int i = 0; i < kSlots; i++) dev::mbar_init(wbar + 8 * i, 1);
  // Activation rows past M are zero in both buffers (never copied over).
  for (int i = tid; i < 2 * (MP - a.M) * kRowStride / 16; i += kThreads) {
    const int per = (MP - a.M) * kRowStride / 16, b = i / per, o = i % per;
    reinterpret_cast<uint4*>(s_x + b * MP * kRowStride + a.M * kRowStride)[o] = make_uint4(0, 0, 0, 0);
  }
#if NIBBLE_DEV_SM90
  asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
#else
  __trap();  // never launched below sm_90
#endif
  __syncthreads();

  // Activations of chunks [p0, p0 + PC) of this slice into buffer b (warp 0): row m at
  // m * kRowStride, one bulk copy a row.
  auto stage_x = [&](int b, int p0) {
    const uint32_t bytes = (uint32_t)min(PC, c1 - p0) * 128;
    if (lane == 0) dev::mbar_expect(xbar + 8 * b, bytes * (uint32_t)a.M);
    __syncwarp();
    const uint32_t dst = dev::smem_u32(s_x) + b * MP * kRowStride;
    for (int m = lane; m < a.M; m += 32) bulk_copy(dst + m * kRowStride, x + (size_t)m * a.K + (size_t)p0 * 64, bytes, xbar + 8 * b);
  };
  // A warp's chunk c (both tiles and their absmax) into ring slot `sl` (lane 0).
  constexpr int kChunk = Cfg::kChunk;
  const uint8_t* wsrc = a.chunks + (size_t)grp * a.C * kChunk;
  const uint32_t ring = dev::smem_u32(s_ring) + warp * kSlots * kChunk;
  auto issue = [&](int c, int sl) {
    if (lane == 0 && active && c < c1) {
      dev::mbar_expect(wbar + 8 * sl, kChunk);
      bulk_copy(ring + sl * kChunk, wsrc + (size_t)c * kChunk, kChunk, wbar + 8 * sl);
    }
  };
#pragma unroll
  for (int i = 0; i < kAhead; i++) issue(c0 + i, i);

  // Double quant: the nested absmax of row `lane`'s block for chunk c, loaded into a register
  // ring kAhead chunks ahead (its code comes with the chunk).
  const uint32_t blk0 = ((uint32_t)grp * 32 + lane) * a.NBr;
  auto fetch_nested = [&](int c) {
    return (DQ && active && c < c1)
               ? __ldg(a.nested + min((blk0 + ((uint32_t)c >> a.log2_chunks_per_block)) >> 8, a.nested_last))
               : 0.0f;
  };
  float nest[kAhead];
#pragma unroll
  for (int i = 0; i < kAhead; i++) nest[i] = fetch_nested(c0 + i);

  // Byte -> (code of the low nibble, code of the high nibble), entry e at byte e * 256 + lane * 4
  // (each lane its own bank: conflict-free), so one PRMT makes a lookup's offset (below).
  // Warp w writes entries 16w .. 16w + 15: the high code is the warp's, the low ones come from
  // registers by shuffle (a loop of dependent constant loads here took a fifth of the kernel).
  {
    const float* vals = KIND == 1 ? dev::c_tables4.nf4_values : dev::c_tables4.fp4_values;
    const float mine = vals[lane & 15], hi = vals[warp];
#pragma unroll
    for (int i = 0; i < 16; i++)
      s_lut[(warp * 16 + i) * 64 + lane] = dev::bits_of(dev::Pair<T>::make(__shfl_sync(0xffffffffu, mine, i), hi));
  }
  if (DQ && tid < 256) s_ncode[tid] = __ldg(a.ncode + tid);
  const float off = DQ ? (a.offset_ptr ? __ldg(a.offset_ptr) : a.offset) : 0.0f;
  // Everything above reads only the weight; the activations (and every global write below) may
  // depend on the kernel before this one on the stream (programmatic dependent launch).
  gpt2_cuda::pdl_wait();
  gpt2_cuda::pdl_trigger();
  if (warp == 0) stage_x(0, c0);
  // Table entry of byte j of a word: one PRMT puts the byte above the lane's column (byte 0 =
  // lane * 4, byte 1 = the byte, the rest zero), and the load adds the table's base itself.
  const uint32_t lane4 = (uint32_t)lane * 4;
  const uint8_t* lut = reinterpret_cast<const uint8_t*>(s_lut);
  auto look = [&](uint32_t word, int j) {
    return *reinterpret_cast<const uint32_t*>(lut + __byte_perm(word, lane4, 0x5504u | ((uint32_t)j << 4)));
  };
  // This lane's ldmatrix row and unit within a chunk: matrices 0-3 = (n8 tile 2p, columns 0-7),
  // (2p, 8-15), (2p + 1, 0-7), (2p + 1, 8-15).
  const int xm = ((lane >> 4) << 3) + (lane & 7), xh = (lane >> 3) & 1;
  const uint32_t s_x0 = dev::smem_u32(s_x) + xm * kRowStride + xh * 16;

  float acc[2][NT][4];
#pragma unroll
  for (int r = 0; r < 2; r++)
#pragma unroll
    for (int j = 0; j < NT; j++)
#pragma unroll
      for (int q = 0; q < 4; q++) acc[r][j][q] = 0.0f;

  int slot = 0, wraps = 0, cl = 0, phase = 0;
  for (int c = c0; c < c1; c++) {
    if (cl == 0) {  // a phase starts: its activations landed, and every warp is done with the other buffer
      dev::mbar_wait(xbar + 8 * (phase & 1), (phase >> 1) & 1);
      __syncthreads();
      if (warp == 0 && c + PC < c1) stage_x((phase + 1) & 1, c + PC);
    }
    uint4 w0 = make_uint4(0, 0, 0, 0), w1 = w0;
    float sc = 0.0f;  // the block absmax of row `lane`
    if (active) {
      dev::mbar_wait(wbar + 8 * slot, wraps & 1);
      const uint8_t* ch = s_ring + (warp * kSlots + slot) * kChunk;
      w0 = *reinterpret_cast<const uint4*>(ch + lane * 16);
      w1 = *reinterpret_cast<const uint4*>(ch + 512 + lane * 16);
      if (DQ) sc = dev::dq_absmax(s_ncode, ch[1024 + lane], nest[0], off);
      else sc = reinterpret_cast<const float*>(ch + 1024)[lane];
    }
    __syncwarp();  // every lane has read the previous chunk's slot before it is refilled
    {
      const int ns = slot == 0 ? kSlots - 1 : slot - 1;  // (c + kAhead) % kSlots
      issue(c + kAhead, ns);
    }
    if (++slot == kSlots) slot = 0, wraps++;
#pragma unroll
    for (int i = 0; i + 1 < kAhead; i++) nest[i] = nest[i + 1];
    nest[kAhead - 1] = fetch_nested(c + kAhead);
    float sr[2][2];  // [tile][row g, row g + 8]
#pragma unroll
    for (int r = 0; r < 2; r++)
#pragma unroll
      for (int h = 0; h < 2; h++) sr[r][h] = __shfl_sync(0xffffffffu, sc, 16 * r + 8 * h + gi);
    const uint32_t xs = s_x0 + (phase & 1) * (MP * kRowStride) + cl * 128;
    if (++cl == PC) cl = 0, phase++;
    float tmp[2][NT][4];
    if (kScaleAcc) {
#pragma unroll
      for (int r = 0; r < 2; r++)
#pragma unroll
        for (int j = 0; j < NT; j++)
#pragma unroll
          for (int q = 0; q < 4; q++) tmp[r][j][q] = 0.0f;
    }
    const uint32_t wv[2][4] = {{w0.x, w0.y, w0.z, w0.w}, {w1.x, w1.y, w1.z, w1.w}};
#pragma unroll
    for (int s = 0; s < 4; s++) {
      uint32_t b[NT][2];
#pragma unroll
      for (int p = 0; p < NT / 2; p++) {
        uint32_t r4[4];
        asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                     : "=r"(r4[0]), "=r"(r4[1]), "=r"(r4[2]), "=r"(r4[3])
                     : "r"(xs + s * 32 + p * 16 * kRowStride));
        b[2 * p][0] = r4[0], b[2 * p][1] = r4[1], b[2 * p + 1][0] = r4[2], b[2 * p + 1][1] = r4[3];
      }
#pragma unroll
      for (int r = 0; r < 2; r++) {
        uint32_t af[4];
#pragma unroll
        for (int j = 0; j < 4; j++) {
          af[j] = look(wv[r][s], j);
          if (!kScaleAcc) {
            using T2 = typename dev::Pair<T>::type;
            af[j] = dev::bits_of(__hmul2(*reinterpret_cast<const T2*>(&af[j]), dev::Pair<T>::splat(sr[r][j & 1])));
          }
        }
#pragma unroll
        for (int j = 0; j < NT; j++) dev::mma_16816<T>(kScaleAcc ? tmp[r][j] : acc[r][j], af, b[j]);
      }
    }
    if (kScaleAcc) {
#pragma unroll
      for (int r = 0; r < 2; r++)
#pragma unroll
        for (int j = 0; j < NT; j++)
#pragma unroll
          for (int q = 0; q < 4; q++) acc[r][j][q] = fmaf(sr[r][q >> 1], tmp[r][j][q], acc[r][j][q]);
    }
  }
  if (!active) return;

  // Accumulator (r, j, q): weight row grp * 32 + 16 r + gi + 8 (q >> 1), activation row
  // 8 j + 2 ti + (q & 1).
  if (a.S == 1) {
#pragma unroll
    for (int r = 0; r < 2; r++)
#pragma unroll
      for (int j = 0; j < NT; j++)
#pragma unroll
        for (int q = 0; q < 4; q++) {
          const int n = grp * 32 + 16 * r + gi + 8 * (q >> 1), m = 8 * j + 2 * ti + (q & 1);
          if (m < a.M && n < a.N)
            out[(size_t)m * a.N + n] = dev::from_f32<T>(acc[r][j][q] + (bias ? dev::to_f32(bias[n]) : 0.0f));
        }
    return;
  }
  float* part = a.partial + (size_t)slice * MP * a.Npad;
#pragma unroll
  for (int r = 0; r < 2; r++)
#pragma unroll
    for (int j = 0; j < NT; j++)
#pragma unroll
      for (int q = 0; q < 4; q++) {
        const int n = grp * 32 + 16 * r + gi + 8 * (q >> 1), m = 8 * j + 2 * ti + (q & 1);
        part[(size_t)m * a.Npad + n] = acc[r][j][q];
      }
  // The count is a release/acquire atomic by lane 0 after the warp's barrier: it publishes the
  // whole warp's partials, and the last slice's warp sees everyone's (a sequentially consistent
  // __threadfence on each side cost a quarter of the kernel at 8192^2).
  __syncwarp();
  int done = 0;
  if (lane == 0)
    asm volatile("atom.acq_rel.gpu.global.add.s32 %0, [%1], 1;" : "=r"(done) : "l"(a.counters + grp) : "memory");
  done = __shfl_sync(0xffffffffu, done, 0);
  if (done != a.S - 1) return;
  // the group's last slice: sum the partials in slice order
  // Lane = weight row; its MP outputs over the S slices, loaded US slices at a time (64 loads
  // in flight a lane: a loop of dependent loads here cost more than the product itself).
  constexpr int US = MP >= 64 ? 1 : 64 / MP;
  const int n = grp * 32 + lane;
  float v[MP];
#pragma unroll
  for (int m = 0; m < MP; m++) v[m] = 0.0f;
  for (int s0 = 0; s0 < a.S; s0 += US) {
    float t[US][MP];
#pragma unroll
    for (int u = 0; u < US; u++)
#pragma unroll
      for (int m = 0; m < MP; m++)
        t[u][m] = (s0 + u < a.S && m < a.M) ? __ldcg(a.partial + ((size_t)(s0 + u) * MP + m) * a.Npad + n) : 0.0f;
#pragma unroll
    for (int u = 0; u < US; u++)
#pragma unroll
      for (int m = 0; m < MP; m++) v[m] += t[u][m];
  }
  if (n < a.N) {
    const float bn = bias ? dev::to_f32(bias[n]) : 0.0f;
#pragma unroll
    for (int m = 0; m < MP; m++)
      if (m < a.M) out[(size_t)m * a.N + n] = dev::from_f32<T>(v[m] + bn);
  }
  if (lane == 0) a.counters[grp] = 0;  // ready for the next launch on this stream
}

// ---- re-layout (once per weight) ------------------------------------------------------------
// The weights of the copy, one 32-bit word per thread: group g, chunk c, tile r, lane (gi, ti),
// k16 step s, at byte (g * C + c) * chunk + r * 512 + lane * 16 + s * 4.
__global__ void k_tiles_weights(const uint8_t* __restrict__ src, uint8_t* __restrict__ dst, int64_t N, int64_t K,
                                int chunk, int64_t words) {
  const int64_t C = K / 64;
  for (int64_t o = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; o < words; o += (int64_t)gridDim.x * blockDim.x) {
    const int s = (int)(o & 3), lane = (int)((o >> 2) & 31), r = (int)((o >> 7) & 1);
    const int64_t gc = o >> 8, c = gc % C, g = gc / C;
    const int64_t n = g * 32 + r * 16 + (lane >> 2), k = c * 64 + s * 16 + 2 * (lane & 3);
    // bitsandbytes: element 2i in the high nibble; here the even column goes low.
    auto pair = [&](int64_t row, int64_t col) -> uint32_t {
      if (row >= N) return 0u;
      const uint32_t b = src[(row * K + col) >> 1];
      return ((b >> 4) | (b << 4)) & 0xffu;
    };
    *reinterpret_cast<uint32_t*>(dst + gc * chunk + (o & 255) * 4) =
        pair(n, k) | pair(n + 8, k) << 8 | pair(n, k + 8) << 16 | pair(n + 8, k + 8) << 24;
  }
}

// The absmax part of each chunk: entry (g, c, row l) = src[(g * 32 + l) * NBr + block of chunk c]
// (repeated over a block's chunks when blocksize > 64); rows past N are zero.
template <typename A>
__global__ void k_tiles_absmax(const A* __restrict__ src, uint8_t* __restrict__ dst, int64_t N, int64_t C, int64_t NBr,
                               int log2_cpb, int chunk, int64_t total) {
  for (int64_t o = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; o < total; o += (int64_t)gridDim.x * blockDim.x) {
    const int64_t l = o & 31, gc = o >> 5, c = gc % C, g = gc / C, n = g * 32 + l;
    reinterpret_cast<A*>(dst + gc * chunk + 1024)[l] = n < N ? src[n * NBr + (c >> log2_cpb)] : A{};
  }
}

// Slices: enough blocks to fill the resident slots with the least idle tail, preferring fewer
// slices (less partial traffic) on near-ties, and at least two phases of chunks a slice.
int choose_slices(int64_t bands, int64_t C, int64_t slots, int min_chunks) {
  int best = 1;
  double best_eff = 0.0;
  for (int S = 1; S <= kMaxSlices && S <= C && (S == 1 || C / S >= min_chunks); S++) {
    const int64_t blocks = bands * S;
    const int64_t rounds = (blocks + slots - 1) / slots;
    const double eff = (double)blocks / (double)(rounds * slots);
    if (eff > best_eff * 1.03) best = S, best_eff = eff;
  }
  return best;
}

template <typename T, int KIND, bool DQ, int NT>
void run_tiles(const T* x, int M, const Weight4bitTiles& w, const T* bias, T* out, cudaStream_t s) {
  auto kernel = k_mma4_tiles<T, KIND, DQ, NT>;
  constexpr int smem = TilesCfg<NT, DQ>::kSmem;
  const int64_t G = (w.N + 31) / 32, C = w.K / 64, bands = (G + kWarps - 1) / kWarps;
  const int per_sm = resident_blocks((const void*)kernel, kThreads, smem, "matmul_4bit_tiles");
  const int S = choose_slices(bands, C, (int64_t)per_sm * sm_count(), 2 * TilesCfg<NT, DQ>::PC);
  TilesArgs a;
  a.chunks = w.chunks;
  a.nested = w.nested_absmax, a.ncode = w.nested_code, a.offset_ptr = w.offset_ptr, a.offset = w.offset;
  a.counters = w.counters, a.partial = nullptr;
  a.M = M, a.N = (int)w.N, a.Npad = (int)(G * 32), a.K = (int)w.K, a.C = (int)C, a.NBr = (int)(w.K / w.blocksize);
  a.log2_chunks_per_block = __builtin_ctz((unsigned)(w.blocksize / 64));
  a.S = S, a.G = (int)G;
  a.nested_last = DQ ? (uint32_t)(((w.N * w.K / w.blocksize) - 1) >> 8) : 0u;
  if (S > 1)
    NIBBLE_CUDA_CHECK(cudaMallocAsync((void**)&a.partial, sizeof(float) * S * NT * 8 * a.Npad, s),
                      "matmul_4bit_tiles: split-K workspace");
  try {
    gpt2_cuda::launch_pdl(kernel, dim3((unsigned)bands, (unsigned)S), dim3(kThreads), smem, s, "launch matmul_4bit_tiles",
                          x, a, bias, out);
  } catch (...) {
    if (a.partial) cudaFreeAsync(a.partial, s);
    throw;
  }
  if (a.partial) cudaFreeAsync(a.partial, s);
}

template <typename T, int KIND, bool DQ>
void run_rows_of(const T* x, int64_t M, const Weight4bitTiles& w, const T* bias, T* out, cudaStream_t s) {
  for (int64_t m0 = 0; m0 < M; m0 += 64) {  // a launch per 64 activation rows
    const int m = (int)std::min<int64_t>(64, M - m0);
    const T* xm = x + m0 * w.K;
    T* om = out + m0 * w.N;
    if (m <= 16) run_tiles<T, KIND, DQ, 2>(xm, m, w, bias, om, s);
    else if (m <= 32) run_tiles<T, KIND, DQ, 4>(xm, m, w, bias, om, s);
    else run_tiles<T, KIND, DQ, 8>(xm, m, w, bias, om, s);
  }
}

template <typename T>
void dispatch_tiles(const void* x, int64_t M, const Weight4bitTiles& w, const void* bias, void* out, cudaStream_t s) {
  const T* xt = static_cast<const T*>(x);
  const T* bt = static_cast<const T*>(bias);
  T* ot = static_cast<T*>(out);
  const bool dq = w.double_quant;
  if (w.qt == QuantType::NF4) {
    if (dq) run_rows_of<T, 1, true>(xt, M, w, bt, ot, s);
    else run_rows_of<T, 1, false>(xt, M, w, bt, ot, s);
  } else {
    if (dq) run_rows_of<T, 0, true>(xt, M, w, bt, ot, s);
    else run_rows_of<T, 0, false>(xt, M, w, bt, ot, s);
  }
}

// Where each part of a tiles-layout buffer starts (256-byte aligned), and its total size.
struct TilesSections {
  size_t counters, total;
  TilesSections(int64_t N, int64_t K, bool double_quant) {
    const int64_t G = (N + 31) / 32;
    auto up = [](size_t b) { return (b + 255) / 256 * 256; };
    counters = up((size_t)G * (K / 64) * chunk_bytes(double_quant));
    total = counters + up((size_t)G * 4);
  }
};

// Whether the current device has compute capability 9 or more (cached per device).
bool hopper_or_newer() {
  static std::atomic<int> major[64];
  int d = 0;
  NIBBLE_CUDA_CHECK(cudaGetDevice(&d), "cudaGetDevice");
  if (d < 0 || d >= 64) return false;
  if (major[d].load() == 0) {
    int m = 0;
    NIBBLE_CUDA_CHECK(cudaDeviceGetAttribute(&m, cudaDevAttrComputeCapabilityMajor, d), "cudaDeviceGetAttribute");
    major[d].store(m);
  }
  return major[d].load() >= 9;
}

}  // namespace

std::string tiles_layout_unsupported(int64_t N, int64_t K, int blocksize) {
  if (K % 64 != 0) return "K must be a multiple of 64";
  if (blocksize < 64 || K % blocksize != 0) return "every row must be whole absmax blocks of at least 64";
  if (N <= 0 || (N + 31) / 32 * 32 * K >= ((int64_t)1 << 31)) return "N * K too large (32-bit indexing)";
  return "";
}

std::string tiles_layout_unsupported(const Weight4bit& w) {
  if (!w.packed || !(w.absmax || (w.qabsmax && w.nested_absmax && w.nested_code)))
    return "missing packed weight or absmax";
  if (!hopper_or_newer()) return "needs a Hopper (sm_90) or newer GPU (bulk copies)";
  return tiles_layout_unsupported(w.N, w.K, w.blocksize);
}

size_t tiles_layout_bytes(int64_t N, int64_t K, int, bool double_quant) {
  return TilesSections(N, K, double_quant).total;
}

Weight4bitTiles tiles_layout_view(const Weight4bit& w, void* buffer) {
  const std::string why = tiles_layout_unsupported(w);
  if (!why.empty()) throw std::runtime_error("4-bit tiles layout: " + why);
  const bool dq = w.absmax == nullptr;
  const TilesSections at(w.N, w.K, dq);
  uint8_t* p = static_cast<uint8_t*>(buffer);
  Weight4bitTiles t;
  t.chunks = p;
  t.double_quant = dq;
  t.counters = reinterpret_cast<int*>(p + at.counters);
  t.nested_absmax = w.nested_absmax, t.nested_code = w.nested_code, t.offset_ptr = w.offset_ptr, t.offset = w.offset;
  t.blocksize = w.blocksize, t.qt = w.qt, t.N = w.N, t.K = w.K;
  return t;
}

Weight4bitTiles make_tiles_layout(const Weight4bit& w, void* buffer, cudaStream_t s) {
  const Weight4bitTiles t = tiles_layout_view(w, buffer);
  const bool dq = w.absmax == nullptr;
  const int64_t G = (w.N + 31) / 32, C = w.K / 64, NBr = w.K / w.blocksize;
  const int chunk = chunk_bytes(dq), l2 = __builtin_ctz((unsigned)(w.blocksize / 64));
  const int64_t words = G * C * 256, ta = G * C * 32;
  k_tiles_weights<<<grid_stride_blocks(words), 256, 0, s>>>(w.packed, t.chunks, w.N, w.K, chunk, words);
  if (dq) k_tiles_absmax<uint8_t><<<grid_stride_blocks(ta), 256, 0, s>>>(w.qabsmax, t.chunks, w.N, C, NBr, l2, chunk, ta);
  else k_tiles_absmax<float><<<grid_stride_blocks(ta), 256, 0, s>>>(w.absmax, t.chunks, w.N, C, NBr, l2, chunk, ta);
  NIBBLE_CUDA_CHECK_LAUNCH("4-bit tiles layout");
  NIBBLE_CUDA_CHECK(cudaMemsetAsync(t.counters, 0, (size_t)G * 4, s), "4-bit tiles layout");
  sync_unless_capturing(s, "4-bit tiles layout");  // made once per weight: cheap
  return t;
}

void matmul_4bit_tiles(const void* x, DType dt, int64_t M, const Weight4bitTiles& w, const void* bias, void* out,
                       cudaStream_t s) {
  if (M <= 0) throw std::runtime_error("matmul_4bit_tiles: M must be positive");
  if (!aligned16(x)) throw std::runtime_error("matmul_4bit_tiles: x must be 16-byte aligned");
  switch (dt) {
    case DType::F16: dispatch_tiles<__half>(x, M, w, bias, out, s); break;
    case DType::BF16: dispatch_tiles<__nv_bfloat16>(x, M, w, bias, out, s); break;
    default: throw std::runtime_error("matmul_4bit_tiles: x must be float16 or bfloat16");
  }
}

}  // namespace cuda
}  // namespace nibble
