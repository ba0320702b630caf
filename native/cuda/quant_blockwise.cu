// Blockwise quantization on the GPU: 4-bit NF4/FP4 and 8-bit dynamic-map quantize and
// dequantize, and the double quantization of absmax. Bit-exact with cpu::*_ref (see
// native/cpu/quant_ops.h): same absmax (fmaxf from -FLT_MAX over the block's own elements),
// same correctly rounded 1/absmax, same float32 product, same threshold searches.
//
// Layout of work: each thread owns EPT consecutive elements (16- or 32-byte vector loads),
// the TPB = blocksize/EPT threads of a quantization block reduce their absmax with warp
// shuffles (and shared memory for blocks wider than a warp), and each thread writes its
// packed codes with one store.
#include <algorithm>
#include <atomic>
#include <cfloat>
#include <mutex>

#include "cuda/quant_cuda.h"
#include "cuda/quant_device.cuh"

namespace nibble {
namespace cuda {

namespace {
// A device attribute of the current device, queried once per device.
int cached_attribute(cudaDeviceAttr attr, std::atomic<int> (&cache)[64]) {
  int dev = 0;
  NIBBLE_CUDA_CHECK(cudaGetDevice(&dev), "cudaGetDevice");
  if (dev < 64 && cache[dev].load()) return cache[dev].load();
  int n = 0;
  NIBBLE_CUDA_CHECK(cudaDeviceGetAttribute(&n, attr, dev), "cudaDeviceGetAttribute");
  if (dev < 64) cache[dev].store(n);
  return n;
}
}  // namespace

int sm_count() {
  static std::atomic<int> cache[64];
  return cached_attribute(cudaDevAttrMultiProcessorCount, cache);
}

int smem_optin_bytes() {
  static std::atomic<int> cache[64];
  return cached_attribute(cudaDevAttrMaxSharedMemoryPerBlockOptin, cache);
}

namespace {

constexpr int kThreads = 256;

// A thread's EPT elements starting at i, as float (zeros past n). fetch() issues the 16-byte
// loads and get() converts them, so k_quantize can request a group one step ahead of its use;
// a group that runs past n, or an unaligned x, is read element by element in get().
template <typename T, int EPT>
struct RawElems {
  static constexpr int kVecs = EPT * (int)sizeof(T) / 16;
  uint4 u[kVecs];
  bool full;
  __device__ __forceinline__ void fetch(const T* x, int64_t i, int64_t n, bool vec_ok) {
    full = vec_ok && i >= 0 && i + EPT <= n;
    if (!full) return;
    const uint4* p = reinterpret_cast<const uint4*>(x + i);
#pragma unroll
    for (int q = 0; q < kVecs; q++) u[q] = __ldg(p + q);
  }
  __device__ __forceinline__ void get(const T* x, int64_t i, int64_t n, float (&v)[EPT]) const {
    if (!full) {
#pragma unroll
      for (int j = 0; j < EPT; j++) v[j] = (i + j < n) ? dev::to_f32(x[i + j]) : 0.0f;
      return;
    }
    constexpr int kPer = 16 / (int)sizeof(T);
#pragma unroll
    for (int q = 0; q < kVecs; q++) {
      const T* e = reinterpret_cast<const T*>(&u[q]);
#pragma unroll
      for (int j = 0; j < kPer; j++) v[q * kPer + j] = dev::to_f32(e[j]);
    }
  }
};

// KIND: 0 FP4, 1 NF4, 2 8-bit dynamic map. SUB: subtract *sub from every input (the centred
// absmax of double quantization) before anything else.
template <typename T, int BS, int KIND, bool SUB>
__global__ void __launch_bounds__(kThreads) k_quantize(const T* __restrict__ x, int64_t n, uint8_t* __restrict__ out,
                                                       float* __restrict__ absmax, const float* __restrict__ code,
                                                       const float* __restrict__ sub, bool vec_ok) {
  constexpr int EPT = (BS >= 4096 || sizeof(T) == 2) ? 16 : 8;  // two 16-byte loads per thread
  constexpr int TPB = BS / EPT;  // threads per quantization block (2..256)
  constexpr int BPC = kThreads / TPB;
  __shared__ float s_tab[256];
  __shared__ float s_red[kThreads / 32];
  if (KIND == 2) {
    for (int i = threadIdx.x; i < 256; i += kThreads) s_tab[i] = code[i];
  } else {
    dev::load_tables4(s_tab);
  }

  __syncthreads();
  const int64_t nblocks = (n + BS - 1) / BS;
  const int64_t ctas_needed = (nblocks + BPC - 1) / BPC;
  const float off = SUB ? *sub : 0.0f;
  // Grid-stride over groups of BPC blocks, so the tables above are loaded once per CTA. The
  // next group's loads are issued before this group is reduced and coded, so a thread keeps
  // its input streaming while it computes; with 16 blocks an SM in the grid (at most 5 are
  // resident: the others take over as blocks finish) 8192x8192 float16 went 1462 -> 1513 GB/s
  // (same-run A/B; 8 blocks an SM: 1483, 4: 1432). See bench/kernels/NOTES.md.
  auto begin_of = [&](int64_t cg) {
    return (cg * BPC + threadIdx.x / TPB) * BS + (int64_t)(threadIdx.x % TPB) * EPT;
  };
  RawElems<T, EPT> next;
  next.fetch(x, begin_of(blockIdx.x), n, vec_ok);
  for (int64_t cg = blockIdx.x; cg < ctas_needed; cg += gridDim.x) {
    const int64_t blk = cg * BPC + threadIdx.x / TPB;
    const int64_t begin = blk * BS + (int64_t)(threadIdx.x % TPB) * EPT;
    const RawElems<T, EPT> cur = next;
    if (cg + gridDim.x < ctas_needed) next.fetch(x, begin_of(cg + gridDim.x), n, vec_ok);
    float v[EPT];
    cur.get(x, begin, n, v);
    if (SUB) {
#pragma unroll
      for (int j = 0; j < EPT; j++) v[j] = __fsub_rn(v[j], off);
    }
    float m = -FLT_MAX;
#pragma unroll
    for (int j = 0; j < EPT; j++)
      if (begin + j < n) m = fmaxf(m, fabsf(v[j]));
    // Reduce over the TPB threads of this block (contiguous lanes; TPB is a power of two).
#pragma unroll
    for (int o = (TPB < 32 ? TPB : 32) / 2; o > 0; o >>= 1) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, o));
    if (TPB > 32) {
      const int warp = threadIdx.x / 32;
      if ((threadIdx.x & 31) == 0) s_red[warp] = m;
      __syncthreads();
      constexpr int kWarpsPerBlock = TPB >= 32 ? TPB / 32 : 1;
      const int first = (warp / kWarpsPerBlock) * kWarpsPerBlock;
      m = s_red[first];
      for (int w = 1; w < kWarpsPerBlock; w++) m = fmaxf(m, s_red[first + w]);
      __syncthreads();  // s_red is rewritten by the next group
    }
    if (blk >= nblocks) continue;
    if (threadIdx.x % TPB == 0) absmax[blk] = m;
    const float inv = __fdiv_rn(1.0f, m);

    if (KIND == 2) {
      uint32_t q[EPT];
#pragma unroll
      for (int j = 0; j < EPT; j++) q[j] = dev::code8(s_tab, __fmul_rn(v[j], inv));
      if (begin + EPT <= n && (((uintptr_t)(out + begin)) & 7) == 0) {
#pragma unroll
        for (int h = 0; h < EPT / 8; h++) {
          uint2 w;
          w.x = q[h * 8 + 0] | (q[h * 8 + 1] << 8) | (q[h * 8 + 2] << 16) | (q[h * 8 + 3] << 24);
          w.y = q[h * 8 + 4] | (q[h * 8 + 5] << 8) | (q[h * 8 + 6] << 16) | (q[h * 8 + 7] << 24);
          reinterpret_cast<uint2*>(out + begin)[h] = w;
        }
      } else {
#pragma unroll
        for (int j = 0; j < EPT; j++)
          if (begin + j < n) out[begin + j] = (uint8_t)q[j];
      }
    } else {
      // Pads past n are zeros, so the last low nibble of an odd n is the code of 0 * inv.
      uint32_t b[EPT / 2];
#pragma unroll
      for (int j = 0; j < EPT / 2; j++)
        b[j] = (dev::code4<KIND>(s_tab, __fmul_rn(v[2 * j], inv)) << 4) |
               dev::code4<KIND>(s_tab, __fmul_rn(v[2 * j + 1], inv));
      const int64_t ob = begin / 2;
      if (begin + EPT <= n && (((uintptr_t)(out + ob)) & 3) == 0) {
#pragma unroll
        for (int h = 0; h < EPT / 8; h++)
          reinterpret_cast<uint32_t*>(out + ob)[h] =
              b[h * 4] | (b[h * 4 + 1] << 8) | (b[h * 4 + 2] << 16) | (b[h * 4 + 3] << 24);
      } else {
#pragma unroll
        for (int j = 0; j < EPT / 2; j++)
          if (begin + 2 * j < n) out[ob + j] = (uint8_t)b[j];
      }
    }
  }
}

template <typename T, int KIND, bool SUB>
void launch_quantize(const T* x, int64_t n, int bs, uint8_t* out, float* absmax, const float* code, const float* sub,
                     cudaStream_t s, const char* op) {
  const bool vec_ok = aligned16(x);
  const int64_t nblocks = (n + bs - 1) / bs;
#define NIBBLE_Q_CASE(B)                                                                          \
  case B: {                                                                                       \
    constexpr int EPT = (B >= 4096 || sizeof(T) == 2) ? 16 : 8;                                   \
    constexpr int BPC = kThreads / (B / EPT);                                                     \
    const unsigned g = std::min<unsigned>(grid_1d(nblocks, BPC, op), (unsigned)sm_count() * 16);  \
    k_quantize<T, B, KIND, SUB><<<g, kThreads, 0, s>>>(x, n, out, absmax, code, sub, vec_ok);       \
    break;                                                                                        \
  }
  switch (bs) {
    NIBBLE_Q_CASE(32)
    NIBBLE_Q_CASE(64)
    NIBBLE_Q_CASE(128)
    NIBBLE_Q_CASE(256)
    NIBBLE_Q_CASE(512)
    NIBBLE_Q_CASE(1024)
    NIBBLE_Q_CASE(2048)
    NIBBLE_Q_CASE(4096)
    default:
      throw std::runtime_error(std::string(op) + ": unsupported blocksize " + std::to_string(bs));
  }
#undef NIBBLE_Q_CASE
  NIBBLE_CUDA_CHECK_LAUNCH(op);
}

template <int KIND, bool SUB>
void quantize_dispatch(const void* x, DType dt, int64_t n, int bs, uint8_t* out, float* absmax, const float* code,
                       const float* sub, cudaStream_t s, const char* op) {
  switch (dt) {
    case DType::F32: launch_quantize<float, KIND, SUB>((const float*)x, n, bs, out, absmax, code, sub, s, op); break;
    case DType::F16: launch_quantize<__half, KIND, SUB>((const __half*)x, n, bs, out, absmax, code, sub, s, op); break;
    case DType::BF16:
      launch_quantize<__nv_bfloat16, KIND, SUB>((const __nv_bfloat16*)x, n, bs, out, absmax, code, sub, s, op);
      break;
    default: throw std::runtime_error(std::string(op) + ": input must be float32, float16 or bfloat16");
  }
}

// ---- dequantize -----------------------------------------------------------------------------
// With blocksize >= 32 one absmax covers each 8-element unit, fetched (and for double
// quantization decoded) once per unit.
template <typename T, int KIND, bool DQ>
__global__ void __launch_bounds__(kThreads)
    k_dequantize(const uint8_t* __restrict__ q, const float* __restrict__ absmax, const uint8_t* __restrict__ qabsmax,
                 const float* __restrict__ nested, const float* __restrict__ ncode, const float* __restrict__ offset,
                 int64_t n, int log2_bs, T* __restrict__ out, const float* __restrict__ code8, bool vec_ok) {
  __shared__ float s_tab[256];
  __shared__ float s_ncode[DQ ? 256 : 1];
  if (KIND == 2) {
    for (int i = threadIdx.x; i < 256; i += kThreads) s_tab[i] = code8[i];
  } else {
    dev::load_tables4(s_tab);
  }
  if (DQ)
    for (int i = threadIdx.x; i < 256; i += kThreads) s_ncode[i] = ncode[i];
  __syncthreads();

  // Units of 8 elements: a lane reads 4 packed bytes (8 for 8-bit) and writes 8 outputs
  // (16 bytes at float16), consecutive lanes take consecutive units, so every warp-wide
  // load and store is one contiguous run. kPer units per thread are in flight at once.
  constexpr int kPer = 4;
  const int64_t units = (n + 7) / 8;
  const int64_t stride = (int64_t)gridDim.x * kThreads;
  for (int64_t u0 = (int64_t)blockIdx.x * kThreads + threadIdx.x; u0 < units; u0 += kPer * stride) {
    uint2 raw[kPer];
    float scale[kPer];
#pragma unroll
    for (int k = 0; k < kPer; k++) {
      const int64_t u = u0 + k * stride;
      const int64_t e0 = u * 8;
      scale[k] = 0.0f;
      raw[k] = make_uint2(0, 0);
      if (u >= units) continue;
      const int64_t b = e0 >> log2_bs;
      scale[k] = DQ ? dev::dq_absmax(s_ncode, qabsmax[b], nested[b / fmt::kNestedBlocksize], *offset) : absmax[b];
      if (e0 + 8 <= n && vec_ok) {
        if (KIND == 2) raw[k] = __ldcs(reinterpret_cast<const uint2*>(q + e0));
        else raw[k].x = __ldcs(reinterpret_cast<const unsigned int*>(q + e0 / 2));
      } else {
        uint8_t* r = reinterpret_cast<uint8_t*>(&raw[k]);
        const int64_t nbytes = KIND == 2 ? n : (n + 1) / 2;
        const int64_t b0 = KIND == 2 ? e0 : e0 / 2;
#pragma unroll
        for (int j = 0; j < 8; j++) r[j] = (b0 + j < nbytes) ? q[b0 + j] : 0;
      }
    }
#pragma unroll
    for (int k = 0; k < kPer; k++) {
      const int64_t u = u0 + k * stride;
      if (u >= units) continue;
      const int64_t e0 = u * 8;
      const uint8_t* bytes = reinterpret_cast<const uint8_t*>(&raw[k]);
      __align__(16) T v[8];
      if (KIND == 2) {
#pragma unroll
        for (int j = 0; j < 8; j++) v[j] = dev::from_f32<T>(__fmul_rn(s_tab[bytes[j]], scale[k]));
      } else {
#pragma unroll
        for (int j = 0; j < 4; j++) {
          v[2 * j] = dev::from_f32<T>(__fmul_rn(dev::value4<KIND>(s_tab, bytes[j] >> 4), scale[k]));
          v[2 * j + 1] = dev::from_f32<T>(__fmul_rn(dev::value4<KIND>(s_tab, bytes[j] & 15), scale[k]));
        }
      }
      if (e0 + 8 <= n && vec_ok) {
        uint4* o = reinterpret_cast<uint4*>(out + e0);
        const uint4* src = reinterpret_cast<const uint4*>(v);
#pragma unroll
        for (int j = 0; j < 8 * (int)sizeof(T) / 16; j++) __stcs(o + j, src[j]);
      } else {
#pragma unroll
        for (int j = 0; j < 8; j++)
          if (e0 + j < n) out[e0 + j] = v[j];
      }
    }
  }
}

int log2_exact(int bs, const char* op, int lo) {
  if (bs < lo || bs > 4096 || (bs & (bs - 1)) != 0)
    throw std::runtime_error(std::string(op) + ": unsupported blocksize " + std::to_string(bs));
  int l = 0;
  while ((1 << l) < bs) l++;
  return l;
}

template <int KIND, bool DQ>
void dequantize_dispatch(const uint8_t* q, const float* absmax, const uint8_t* qabsmax, const float* nested,
                         const float* ncode, const float* offset, int64_t n, int bs, void* out, DType dt,
                         const float* code8, cudaStream_t s, const char* op) {
  const int l2 = log2_exact(bs, op, 32);
  const int64_t units = (n + 7) / 8;
  const bool vec_ok = aligned16(q) && aligned16(out);
  const unsigned grid = std::min<unsigned>(grid_1d(units, kThreads, op), (unsigned)sm_count() * 8);
  switch (dt) {
    case DType::F32:
      k_dequantize<float, KIND, DQ><<<grid, kThreads, 0, s>>>(q, absmax, qabsmax, nested, ncode, offset, n, l2,
                                                             (float*)out, code8, vec_ok);
      break;
    case DType::F16:
      k_dequantize<__half, KIND, DQ><<<grid, kThreads, 0, s>>>(q, absmax, qabsmax, nested, ncode, offset, n, l2,
                                                              (__half*)out, code8, vec_ok);
      break;
    case DType::BF16:
      k_dequantize<__nv_bfloat16, KIND, DQ><<<grid, kThreads, 0, s>>>(q, absmax, qabsmax, nested, ncode, offset, n,
                                                                      l2, (__nv_bfloat16*)out, code8, vec_ok);
      break;
    default: throw std::runtime_error(std::string(op) + ": output must be float32, float16 or bfloat16");
  }
  NIBBLE_CUDA_CHECK_LAUNCH(op);
}

// ---- double quantization ----------------------------------------------------------------------
// The offset is cpu::absmax_mean: torch's CUDA float32 mean order, which decides nested codes
// bit for bit. Element i goes to lane (i/4)%32, slot i%4 (float adds in index order); each
// lane adds its slots in order, lanes fold in halves, and the sum is scaled by float(1/n).
// The chain of adds per slot is sequential by definition, so one block does it: 1024 threads
// stream the vector through a ring of shared-memory stages with cp.async (many loads in
// flight), and 128 of them (one per lane x slot) run the adds from shared memory.
constexpr int kMeanThreads = 1024, kMeanChunk = 4096, kMeanStages = 8;

__global__ void __launch_bounds__(kMeanThreads)
    k_absmax_mean(const float* __restrict__ a, int64_t n, float* __restrict__ out) {
  extern __shared__ __align__(16) float s_ring[];  // kMeanStages x kMeanChunk
  __shared__ float s_slot[128];
  const int t = threadIdx.x;
  const int64_t chunks = (n + kMeanChunk - 1) / kMeanChunk;
  auto issue = [&](int64_t c) {
    if (c < chunks) {
      const int64_t i = c * kMeanChunk + (int64_t)t * 4;
      const int64_t left = n - i;
      const int bytes = left >= 4 ? 16 : left > 0 ? (int)left * 4 : 0;
      dev::cp_async16(s_ring + (c % kMeanStages) * kMeanChunk + t * 4, bytes > 0 ? a + i : a, bytes);
    }
    dev::cp_async_commit();
  };
  for (int c = 0; c < kMeanStages - 1; c++) issue(c);
  float acc = 0.0f;  // slot t (t < 128): elements i = 128 * j + t, added in index order
  for (int64_t c = 0; c < chunks; c++) {
    dev::cp_async_wait<kMeanStages - 2>();
    __syncthreads();
    issue(c + kMeanStages - 1);
    if (t < 128) {
      const float* buf = s_ring + (c % kMeanStages) * kMeanChunk;
      const int64_t base = c * kMeanChunk;
      if (base + kMeanChunk <= n) {
#pragma unroll 8
        for (int j = 0; j < kMeanChunk / 128; j++) acc = __fadd_rn(acc, buf[j * 128 + t]);
      } else {
        for (int j = 0; j < kMeanChunk / 128; j++)
          if (base + j * 128 + t < n) acc = __fadd_rn(acc, buf[j * 128 + t]);
      }
    }
  }
  dev::cp_async_wait<0>();
  if (t < 128) s_slot[t] = acc;
  __syncthreads();
  if (t < 32) {
    const float* sl = s_slot + 4 * t;
    float lane = __fadd_rn(__fadd_rn(__fadd_rn(sl[0], sl[1]), sl[2]), sl[3]);
#pragma unroll
    for (int h = 16; h > 0; h >>= 1) {
      const float other = __shfl_down_sync(0xffffffffu, lane, h);
      if (t < h) lane = __fadd_rn(lane, other);
    }
    if (t == 0) *out = __fmul_rn(lane, (float)(1.0 / (double)n));
  }
}

// Unaligned absmax vectors (views): the same order with plain loads.
__global__ void __launch_bounds__(128) k_absmax_mean_plain(const float* __restrict__ a, int64_t n,
                                                           float* __restrict__ out) {
  __shared__ float s_slot[128];
  const int t = threadIdx.x;
  float acc = 0.0f;
  for (int64_t i = t; i < n; i += 128) acc = __fadd_rn(acc, a[i]);
  s_slot[t] = acc;
  __syncthreads();
  if (t < 32) {
    const float* sl = s_slot + 4 * t;
    float lane = __fadd_rn(__fadd_rn(__fadd_rn(sl[0], sl[1]), sl[2]), sl[3]);
#pragma unroll
    for (int h = 16; h > 0; h >>= 1) {
      const float other = __shfl_down_sync(0xffffffffu, lane, h);
      if (t < h) lane = __fadd_rn(lane, other);
    }
    if (t == 0) *out = __fmul_rn(lane, (float)(1.0 / (double)n));
  }
}

__global__ void k_decompress(const uint8_t* __restrict__ q, const float* __restrict__ nested,
                             const float* __restrict__ ncode, const float* __restrict__ offset, int64_t n,
                             float* __restrict__ out) {
  const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) out[i] = __fadd_rn(__fmul_rn(ncode[q[i]], nested[i / fmt::kNestedBlocksize]), *offset);
}

// The signed dynamic map, uploaded once per device for compress_absmax.
const float* dynamic_map_signed_device() {
  static float* maps[64] = {nullptr};
  static std::mutex mu;  // bindings may call from several threads
  std::lock_guard<std::mutex> lock(mu);
  int dev = 0;
  NIBBLE_CUDA_CHECK(cudaGetDevice(&dev), "cudaGetDevice");
  if (dev >= 64) throw std::runtime_error("compress_absmax: device ordinal too large");
  if (!maps[dev]) {
    float host[256];
    for (int i = 0; i < 256; i++) host[i] = fmt::bits_to_float(fmt::kDynamicMapSignedBits[i]);
    float* d = nullptr;
    NIBBLE_CUDA_CHECK(cudaMalloc(&d, sizeof(host)), "compress_absmax: cudaMalloc(code)");
    NIBBLE_CUDA_CHECK(cudaMemcpy(d, host, sizeof(host), cudaMemcpyHostToDevice), "compress_absmax: upload code");
    maps[dev] = d;
  }
  return maps[dev];
}

}  // namespace

void quantize_4bit(const void* x, DType dt, int64_t n, int blocksize, QuantType qt, uint8_t* packed, float* absmax,
                   cudaStream_t s) {
  if (n <= 0) throw std::runtime_error("quantize_4bit: empty input");
  if (qt == QuantType::NF4)
    quantize_dispatch<1, false>(x, dt, n, blocksize, packed, absmax, nullptr, nullptr, s, "quantize_4bit");
  else
    quantize_dispatch<0, false>(x, dt, n, blocksize, packed, absmax, nullptr, nullptr, s, "quantize_4bit");
}

void quantize_blockwise(const float* code, const void* x, DType dt, int64_t n, int blocksize, uint8_t* q,
                        float* absmax, cudaStream_t s) {
  if (n <= 0) throw std::runtime_error("quantize_blockwise: empty input");
  log2_exact(blocksize, "quantize_blockwise", 64);
  quantize_dispatch<2, false>(x, dt, n, blocksize, q, absmax, code, nullptr, s, "quantize_blockwise");
}

void dequantize_4bit(const uint8_t* packed, const float* absmax, int64_t n, int blocksize, QuantType qt, void* out,
                     DType out_dt, cudaStream_t s) {
  if (n <= 0) throw std::runtime_error("dequantize_4bit: empty input");
  if (qt == QuantType::NF4)
    dequantize_dispatch<1, false>(packed, absmax, nullptr, nullptr, nullptr, nullptr, n, blocksize, out, out_dt,
                                  nullptr, s, "dequantize_4bit");
  else
    dequantize_dispatch<0, false>(packed, absmax, nullptr, nullptr, nullptr, nullptr, n, blocksize, out, out_dt,
                                  nullptr, s, "dequantize_4bit");
}

void dequantize_4bit_dq(const uint8_t* packed, const uint8_t* qabsmax, const float* nested_absmax,
                        const float* nested_code, const float* offset, int64_t n, int blocksize, QuantType qt,
                        void* out, DType out_dt, cudaStream_t s) {
  if (n <= 0) throw std::runtime_error("dequantize_4bit: empty input");
  if (qt == QuantType::NF4)
    dequantize_dispatch<1, true>(packed, nullptr, qabsmax, nested_absmax, nested_code, offset, n, blocksize, out,
                                 out_dt, nullptr, s, "dequantize_4bit");
  else
    dequantize_dispatch<0, true>(packed, nullptr, qabsmax, nested_absmax, nested_code, offset, n, blocksize, out,
                                 out_dt, nullptr, s, "dequantize_4bit");
}

void dequantize_blockwise(const float* code, const uint8_t* q, const float* absmax, int64_t n, int blocksize,
                          void* out, DType out_dt, cudaStream_t s) {
  if (n <= 0) throw std::runtime_error("dequantize_blockwise: empty input");
  dequantize_dispatch<2, false>(q, absmax, nullptr, nullptr, nullptr, nullptr, n, blocksize, out, out_dt, code, s,
                                "dequantize_blockwise");
}

void compress_absmax(const float* absmax, int64_t nblocks, uint8_t* qabsmax, float* nested_absmax, float* offset,
                     cudaStream_t s) {
  if (nblocks <= 0) throw std::runtime_error("compress_absmax: empty absmax");
  if (aligned16(absmax)) {
    const int smem = kMeanStages * kMeanChunk * 4;
    NIBBLE_CUDA_CHECK(cudaFuncSetAttribute(k_absmax_mean, cudaFuncAttributeMaxDynamicSharedMemorySize, smem),
                      "compress_absmax");
    k_absmax_mean<<<1, kMeanThreads, smem, s>>>(absmax, nblocks, offset);
  } else {
    k_absmax_mean_plain<<<1, 128, 0, s>>>(absmax, nblocks, offset);
  }
  NIBBLE_CUDA_CHECK_LAUNCH("compress_absmax (mean)");
  launch_quantize<float, 2, true>(absmax, nblocks, fmt::kNestedBlocksize, qabsmax, nested_absmax,
                                  dynamic_map_signed_device(), offset, s, "compress_absmax");
}

void decompress_absmax(const uint8_t* qabsmax, const float* nested_absmax, const float* nested_code,
                       const float* offset, int64_t nblocks, float* absmax, cudaStream_t s) {
  if (nblocks <= 0) throw std::runtime_error("decompress_absmax: empty absmax");
  k_decompress<<<grid_1d(nblocks, 256, "decompress_absmax"), 256, 0, s>>>(qabsmax, nested_absmax, nested_code, offset,
                                                                         nblocks, absmax);
  NIBBLE_CUDA_CHECK_LAUNCH("decompress_absmax");
}

}  // namespace cuda
}  // namespace nibble
