// Sampling on the GPU: one 1024-thread block per batch row runs the logits processors and the
// choice of lib/generation (logits-processors.ts, sampler.ts) on the row's last-position
// logits and writes one token id. The row lives in shared memory when it fits (GPT-2's 50257
// floats are 201 KB; Hopper allows ~227 KB of dynamic shared memory per block), else in a
// global scratch row with the same code.
//
// The rules, in the JS order (buildLogitsProcessors), and how exact each one is:
//  * repetition penalty: s < 0 ? s * p : s / p in float32 (IEEE __fmul_rn/__fdiv_rn), each
//    distinct history id once (the host removes duplicates): bit-exact.
//  * temperature: s / t in float32 (__fdiv_rn): bit-exact.
//  * top-k: keep s >= the k-th largest (ties kept). A radix select over order-preserving
//    uint32 keys finds the k-th largest value exactly: bit-exact.
//  * top-p, as applyTopP: probabilities p = fround(exp(v - max) / sum) in double; tau = the
//    smallest p at which the ascending running total, rounded to float32, exceeds
//    fround(1 - topP) (capped by the minTokensToKeep-th largest p); tokens with p < tau go;
//    tokens tied at tau go in (score, id) order while fround(total) <= the limit.
//  * min-p: remove p < fround(fround(minP) * max p) (and keep the best minTokensToKeep).
//  * greedy: the first index of the largest score. Sampling: weights exp(v - max) in double,
//    target = u * total with the host's u, the first index whose running sum exceeds it.
// Summation order: the JS adds left to right (sum, running sums) or in quickselect partition
// order (top-p's crossing). Here the sums are fixed trees (per-thread partial sums, then
// warp shuffles), so a double sum can differ from the JS one in its last bits. A chosen token
// can therefore differ only when u * total lands within rounding (~1e-16 relative) of a
// boundary between two tokens, or a top-p running total rounds to float32 exactly at the
// limit: vanishingly rare for real logits. Every sum is deterministic (no float atomics), so
// the same seed gives the same tokens run after run. exp is CUDA's double exp (within 1 ulp,
// as V8's is), which moves a float32 probability only when exp(v - max) / sum sits within a
// double ulp of a float32 rounding boundary.
//
// Anything the host path treats specially comes back as a status instead of a token (a NaN in
// the row; when sampling, a +inf score or a row with every score -inf): the JS then runs that
// step on the host, which gives exactly the host's answer or the host's error.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <climits>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

#include "cuda/block_scan.cuh"
#include "cuda/cuda_check.h"
#include "cuda/gpt2_cuda.h"
#include "cuda/sampling_cuda.h"

namespace nibble {
namespace cuda_sampling {

namespace {

constexpr int kThreads = 1024;
constexpr int kWarps = kThreads / 32;
constexpr unsigned kFull = 0xffffffffu;

struct RowArgs {
  long long batch;
  double u;
  int hist_off, hist_len;
};

struct Params {
  const void* logits;
  int dt;  // 0 float32, 1 float16, 2 bfloat16
  long long positions;
  int V;
  int n;
  int do_sample;
  float penalty, temperature;
  int top_k_keep;
  int use_top_p;
  float top_p_limit;
  int use_min_p;
  float min_p;
  int mtk;
  int use_smem;
  const RowArgs* rows;
  const int* hist;
  int* out;         // [n] ids then [n] statuses, in mapped pinned host memory
  int* feed;        // null, or [B] device ids: kOk rows' ids also go to feed[batch]
  float* rowbuf;    // [n, V] scores when not in shared memory
  float* aux;       // [n, V] (top-p: the scores while the row holds probabilities; min-p: probabilities)
};

// Finite probabilities top_p packs in shared memory (after top-k there are k of them).
constexpr int kPackedProbs = 1024;

struct Smem {
  unsigned hist[256];
  double d[kWarps + 1];
  double d3[3][kWarps + 1];
  int scan_buf[33];
  float packed[kPackedProbs];
  float f[kWarps + 1];
  int i[kWarps + 1];
  int j[kWarps + 1];
  unsigned scan[kWarps];
  unsigned sel_digit, sel_below, tau_bits;
  int misc;
};

__device__ __forceinline__ float load_logit(const void* p, int dt, long long i) {
  if (dt == 0) return static_cast<const float*>(p)[i];
  if (dt == 1) return __half2float(static_cast<const __half*>(p)[i]);
  return __bfloat162float(static_cast<const __nv_bfloat16*>(p)[i]);
}

// uint32 that orders like the float (-0 and +0 tie, as the floats compare).
__device__ __forceinline__ unsigned ord_key(float f) {
  unsigned b = __float_as_uint(f);
  if (b == 0x80000000u) b = 0;
  return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}

// exp(v - max) in double, as the JS's Math.exp(v - max) on float32 values.
__device__ __forceinline__ double weight(float v, float mx) { return exp(__dsub_rn((double)v, (double)mx)); }

struct Sum {
  template <typename T>
  __device__ T operator()(T a, T b) const { return a + b; }
};
struct Max {
  template <typename T>
  __device__ T operator()(T a, T b) const { return a > b ? a : b; }
};
struct Min {
  template <typename T>
  __device__ T operator()(T a, T b) const { return a < b ? a : b; }
};
struct Or {
  __device__ int operator()(int a, int b) const { return a | b; }
};

// Every thread gets the result; fixed reduction tree (deterministic for doubles).
template <typename T, typename Op>
__device__ T block_reduce(T v, Op op, T* buf) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = op(v, __shfl_down_sync(kFull, v, o));
  __syncthreads();  // earlier readers of buf are done
  if (lane == 0) buf[warp] = v;
  __syncthreads();
  if (warp == 0) {
    v = buf[lane];
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = op(v, __shfl_down_sync(kFull, v, o));
    if (lane == 0) buf[kWarps] = v;
  }
  __syncthreads();
  return buf[kWarps];
}

// Three block_reduce(., Sum(), .) at once: the same tree for each value (the same bits as three
// calls), one set of barriers.
__device__ void block_sum3(double* a, double* b, double* c, double (*buf)[kWarps + 1]) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  double x = *a, y = *b, z = *c;
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    x += __shfl_down_sync(kFull, x, o);
    y += __shfl_down_sync(kFull, y, o);
    z += __shfl_down_sync(kFull, z, o);
  }
  __syncthreads();  // earlier readers of buf are done
  if (lane == 0) buf[0][warp] = x, buf[1][warp] = y, buf[2][warp] = z;
  __syncthreads();
  if (warp == 0) {
    x = buf[0][lane], y = buf[1][lane], z = buf[2][lane];
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
      x += __shfl_down_sync(kFull, x, o);
      y += __shfl_down_sync(kFull, y, o);
      z += __shfl_down_sync(kFull, z, o);
    }
    if (lane == 0) buf[0][kWarps] = x, buf[1][kWarps] = y, buf[2][kWarps] = z;
  }
  __syncthreads();
  *a = buf[0][kWarps], *b = buf[1][kWarps], *c = buf[2][kWarps];
}

// Lane 0 gets the warp's (largest value, first index holding it).
__device__ __forceinline__ void warp_argmax(float& bv, int& bi) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    const float ov = __shfl_down_sync(kFull, bv, o);
    const int oi = __shfl_down_sync(kFull, bi, o);
    if (ov > bv || (ov == bv && oi < bi)) {
      bv = ov;
      bi = oi;
    }
  }
}

// The largest score and the first index holding it (torch.argmax's rule), from each thread's
// (best, first index) over ascending indices; INT_MAX when every score is -inf.
__device__ int block_argmax_reduce(float bv, int bi, Smem& sh) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  warp_argmax(bv, bi);
  __syncthreads();
  if (lane == 0) {
    sh.f[warp] = bv;
    sh.i[warp] = bi;
  }
  __syncthreads();
  if (warp == 0) {
    bv = sh.f[lane];
    bi = sh.i[lane];
    warp_argmax(bv, bi);
    if (lane == 0) sh.i[kWarps] = bi;
  }
  __syncthreads();
  const int r = sh.i[kWarps];
  __syncthreads();
  return r;
}

__device__ int block_argmax(const float* s, int V, Smem& sh) {
  float bv = -INFINITY;
  int bi = INT_MAX;
  for (int i = threadIdx.x; i < V; i += kThreads) {
    const float v = s[i];
    if (v > bv) {
      bv = v;
      bi = i;
    }
  }
  return block_argmax_reduce(bv, bi, sh);
}

// Greedy without a repetition penalty reads each score once: the argmax straight from the
// logits, eight loads in flight per thread, instead of staging the row in shared memory
// first (a 50257-float row: ~15 us staged, a few us direct). Same answer: the first index of
// the largest score; *nan set when the row holds a NaN.
__device__ int argmax_direct(const void* logits, int dt, long long base, int V, int* nan, Smem& sh) {
  constexpr int kIn = 8;
  float bv = -INFINITY;
  int bi = INT_MAX, bad = 0;
  for (int i0 = threadIdx.x; i0 < V; i0 += kThreads * kIn) {
    float v[kIn];
#pragma unroll
    for (int k = 0; k < kIn; k++) {
      const int i = i0 + k * kThreads;
      v[k] = i < V ? load_logit(logits, dt, base + i) : -INFINITY;
    }
#pragma unroll
    for (int k = 0; k < kIn; k++) {  // ascending indices: strict > keeps the first
      bad |= v[k] != v[k];
      if (v[k] > bv) bv = v[k], bi = i0 + k * kThreads;
    }
  }
  *nan = block_reduce(bad, Or(), sh.i);
  return block_argmax_reduce(bv, bi, sh);
}

// The k-th smallest (1-based) key among the indices i in [0, n) for which get(i, &key) is
// true; 1 <= k <= their count. Radix select, 8 bits a pass; the histogram counts are integers,
// so the result does not depend on the order the threads count in.
template <typename Key, typename Get>
__device__ Key block_select(int n, unsigned k, Get get, Smem& sh) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  Key prefix = 0, mask = 0;
  for (int shift = (int)sizeof(Key) * 8 - 8; shift >= 0; shift -= 8) {
    for (int j = threadIdx.x; j < 256; j += kThreads) sh.hist[j] = 0;
    __syncthreads();
    for (int base = warp * 32; base < n; base += kThreads) {  // warp-uniform trip count
      const int i = base + lane;
      Key key = 0;
      const bool ok = i < n && get(i, &key) && (key & mask) == prefix;
      const unsigned digit = ok ? (unsigned)((key >> shift) & 0xFF) : 256u;
      const unsigned peers = __match_any_sync(kFull, digit);
      if (ok && lane == __ffs(peers) - 1) atomicAdd(&sh.hist[digit], (unsigned)__popc(peers));
    }
    __syncthreads();
    if (warp == 0) {
      unsigned c[8], tot = 0;
#pragma unroll
      for (int j = 0; j < 8; j++) {
        c[j] = sh.hist[lane * 8 + j];
        tot += c[j];
      }
      unsigned incl = tot;
#pragma unroll
      for (int o = 1; o < 32; o <<= 1) {
        const unsigned t = __shfl_up_sync(kFull, incl, o);
        if (lane >= o) incl += t;
      }
      unsigned acc = incl - tot;
      if (acc < k && k <= incl) {
        for (int j = 0; j < 8; j++) {
          if (acc + c[j] >= k) {
            sh.sel_digit = lane * 8 + j;
            sh.sel_below = acc;
            break;
          }
          acc += c[j];
        }
      }
    }
    __syncthreads();
    prefix |= (Key)sh.sel_digit << shift;
    mask |= (Key)0xFF << shift;
    k -= sh.sel_below;
    __syncthreads();
  }
  return prefix;
}

// 1 / sum of exp(v - max) over the finite scores (the JS softmax's normaliser).
__device__ double softmax_inv(const float* s, int V, float mx, Smem& sh) {
  double acc = 0.0;
  for (int i = threadIdx.x; i < V; i += kThreads) {
    const float v = s[i];
    if (v != -INFINITY) acc += weight(v, mx);
  }
  acc = block_reduce(acc, Sum(), sh.d);
  return 1.0 / acc;
}

__device__ __forceinline__ float prob(float v, float mx, double inv) {
  if (v == -INFINITY) return 0.0f;
  return __double2float_rn(__dmul_rn(weight(v, mx), inv));
}

__device__ void top_k(float* s, int V, int keep, Smem& sh) {
  // The keep-th largest = the keep-th smallest of the complemented keys.
  const unsigned kth = block_select<unsigned>(V, (unsigned)keep, [&](int i, unsigned* k) {
    *k = ~ord_key(s[i]);
    return true;
  }, sh);
  for (int i = threadIdx.x; i < V; i += kThreads)
    if (~ord_key(s[i]) > kth) s[i] = -INFINITY;
  __syncthreads();
}


__device__ float block_max_scores(const float* s, int V, Smem& sh) {
  float m = -INFINITY;
  for (int i = threadIdx.x; i < V; i += kThreads) m = fmaxf(m, s[i]);
  return block_reduce(m, Max(), sh.f);
}

// applyTopP. While it runs, s holds each token's probability (-1 marks a -inf score) and aux
// the scores; the scores come back with the removed tokens at -inf.
__device__ void top_p(float* s, float* aux, int V, float limit, int mtk, Smem& sh) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const float mx = block_max_scores(s, V, sh);
  const double inv = softmax_inv(s, V, mx, sh);
  int nfin = 0;
  for (int i = threadIdx.x; i < V; i += kThreads) {
    const float v = s[i];
    aux[i] = v;
    s[i] = v == -INFINITY ? -1.0f : prob(v, mx, inv);
    nfin += v != -INFINITY;
  }
  const int mine = nfin;
  nfin = block_reduce(nfin, Sum(), sh.i);  // (syncs: s and aux are written)
  if (nfin == 0) return;                    // the caller never gets here with an empty row
  // The search below passes over the row up to ~16 times. When the finite probabilities fit
  // (after top-k there are k), they are packed in shared memory (in thread order: thread t's
  // indices t, t + kThreads, ...), and one warp searches over them alone: a pass is then its
  // lanes' sums over nfin entries and a shuffle tree, with no block barrier. (The sums are
  // grouped by lane instead of by thread: deterministic, and equal to the whole-row search's
  // except where a total rounds to float32 exactly at the limit.)
  const bool packed = nfin <= kPackedProbs;
  if (packed) {
    int total;
    int w = cuda_block::block_exclusive_scan(mine, sh.scan_buf, &total);
    for (int i = threadIdx.x; i < V; i += kThreads)
      if (s[i] >= 0.0f) sh.packed[w++] = s[i];
    __syncthreads();
  }

  // tau = min(crossing, the min(mtk, nfin)-th largest p). Probabilities are >= 0, so their
  // bit patterns order like them.
  const int kth = min(mtk, nfin);
  unsigned kbits;
  if (kth == 1) {
    float top = 0.0f;
    for (int i = threadIdx.x; i < V; i += kThreads) top = fmaxf(top, s[i]);
    kbits = __float_as_uint(block_reduce(top, Max(), sh.f));
  } else {
    kbits = ~block_select<unsigned>(V, (unsigned)kth, [&](int i, unsigned* k) {
      const float p = s[i];
      *k = ~__float_as_uint(p);
      return p >= 0.0f;
    }, sh);
  }
  // F(K): does the total of the probabilities with bits <= K, rounded to float32, exceed the
  // limit? Monotone in K (a fixed tree over a growing set of non-negative terms). The search
  // for the smallest K with F(K) asks three thresholds per pass over the row (a 4-way split).
  // A probability's share of the three totals (those whose threshold its bits do not pass).
  auto add3 = [](float p, unsigned K1, unsigned K2, unsigned K3, double* a1, double* a2, double* a3) {
    const unsigned b = __float_as_uint(p);
    const double d = (double)p;
    if (b <= K1) *a1 += d;
    if (b <= K2) *a2 += d;
    if (b <= K3) *a3 += d;
  };
  auto exceeds3 = [&](unsigned K1, unsigned K2, unsigned K3, bool* f1, bool* f2, bool* f3) {
    double a1 = 0.0, a2 = 0.0, a3 = 0.0;
    for (int i = threadIdx.x; i < V; i += kThreads) {
      const float p = s[i];
      if (p >= 0.0f) add3(p, K1, K2, K3, &a1, &a2, &a3);
    }
    block_sum3(&a1, &a2, &a3, sh.d3);
    *f1 = __double2float_rn(a1) > limit;
    *f2 = __double2float_rn(a2) > limit;
    *f3 = __double2float_rn(a3) > limit;
  };
  // The smallest K with F(K), F being ex3's three answers at once (the crossing when F(kbits)
  // holds, else kbits).
  auto search = [&](auto&& ex3) {
    bool f1, f2, f3;
    ex3(kbits, kbits, kbits, &f1, &f2, &f3);
    if (!f1) return kbits;
    // Invariant: F(hi) holds and the answer lies in [lo, hi].
    unsigned lo = 0, hi = kbits;
    while (lo < hi) {
      const unsigned long long span = hi - lo;
      const unsigned m1 = lo + (unsigned)(span >> 2), m2 = lo + (unsigned)(span >> 1), m3 = lo + (unsigned)((span * 3) >> 2);
      ex3(m1, m2, m3, &f1, &f2, &f3);
      if (f1) {
        hi = m1;
      } else if (f2) {
        lo = m1 + 1;
        hi = m2;
      } else if (f3) {
        lo = m2 + 1;
        hi = m3;
      } else {
        lo = m3 + 1;
      }
    }
    return hi;
  };
  unsigned tau_bits;
  if (packed) {
    if (warp == 0) {
      auto exceeds3_warp = [&](unsigned K1, unsigned K2, unsigned K3, bool* f1, bool* f2, bool* f3) {
        double a1 = 0.0, a2 = 0.0, a3 = 0.0;
        for (int j = lane; j < nfin; j += 32) add3(sh.packed[j], K1, K2, K3, &a1, &a2, &a3);
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) {  // a fixed tree into lane 0, then everyone takes its bits
          a1 += __shfl_down_sync(kFull, a1, o);
          a2 += __shfl_down_sync(kFull, a2, o);
          a3 += __shfl_down_sync(kFull, a3, o);
        }
        *f1 = __double2float_rn(__shfl_sync(kFull, a1, 0)) > limit;
        *f2 = __double2float_rn(__shfl_sync(kFull, a2, 0)) > limit;
        *f3 = __double2float_rn(__shfl_sync(kFull, a3, 0)) > limit;
      };
      const unsigned t = search(exceeds3_warp);
      if (lane == 0) sh.tau_bits = t;
    }
    __syncthreads();
    tau_bits = sh.tau_bits;
  } else {
    tau_bits = search(exceeds3);
  }
  const float tau = __uint_as_float(tau_bits);

  double below = 0.0;
  int above = 0, cands = 0;
  for (int i = threadIdx.x; i < V; i += kThreads) {
    const float p = s[i];
    if (p < 0.0f) continue;
    if (p < tau) below += (double)p;
    else if (p > tau) above++;
    else cands++;
  }
  below = block_reduce(below, Sum(), sh.d);
  above = block_reduce(above, Sum(), sh.i);
  cands = block_reduce(cands, Sum(), sh.i);
  const int removable = cands - min(max(0, mtk - above), cands);
  // The tied tokens leave one at a time while the running total stays <= the limit: the JS
  // loop, sequential in one thread (it stops at the first token that stays).
  if (threadIdx.x == 0) {
    double cum = below;
    int r = 0;
    for (; r < removable; r++) {
      cum += (double)tau;
      if (!(__double2float_rn(cum) <= limit)) break;
    }
    sh.misc = r;
  }
  __syncthreads();
  const int r = sh.misc;
  __syncthreads();

  // The r tied tokens that leave are the first in (score, id) order: those scoring below
  // ckey, then the first `need` scoring ckey in index order.
  unsigned ckey = 0;
  int need = 0;
  if (r == cands && r > 0) {
    ckey = 0xffffffffu;  // above every score's key: all tied tokens leave
  } else if (r > 0) {
    ckey = block_select<unsigned>(V, (unsigned)r, [&](int i, unsigned* k) {
      *k = ord_key(aux[i]);
      return s[i] == tau;
    }, sh);
    int less = 0;
    for (int i = threadIdx.x; i < V; i += kThreads) less += s[i] == tau && ord_key(aux[i]) < ckey;
    less = block_reduce(less, Sum(), sh.i);
    need = r - less;
  }
  if (need <= 0) {
    // No tied token needs its rank in index order.
    for (int i = threadIdx.x; i < V; i += kThreads) {
      const float p = s[i];
      const float sc = aux[i];
      const bool tied = p >= 0.0f && p == tau;
      const bool drop = (p >= 0.0f && p < tau) || (tied && r > 0 && ord_key(sc) < ckey);
      s[i] = drop ? -INFINITY : sc;
    }
    __syncthreads();
    return;
  }
  int taken = 0;  // tied tokens scoring ckey seen so far (the same in every thread)
  for (int base = 0; base < V; base += kThreads) {
    const int i = base + threadIdx.x;
    const bool in = i < V;
    const float p = in ? s[i] : -1.0f;
    const float sc = in ? aux[i] : 0.0f;
    const bool tied = p >= 0.0f && p == tau;
    const unsigned k = ord_key(sc);
    const bool eq = tied && k == ckey;
    const unsigned ball = __ballot_sync(kFull, eq);
    if (lane == 0) sh.scan[warp] = __popc(ball);
    __syncthreads();
    int before = 0, chunk = 0;
    for (int w = 0; w < kWarps; w++) {
      const int c = (int)sh.scan[w];
      before += w < warp ? c : 0;
      chunk += c;
    }
    const int rank = taken + before + __popc(ball & ((1u << lane) - 1u));
    const bool drop = (p >= 0.0f && p < tau) || (tied && (k < ckey || (eq && rank < need)));
    if (in) s[i] = drop ? -INFINITY : sc;
    taken += chunk;
    __syncthreads();
  }
}

// applyMinP (probabilities in aux).
__device__ void min_p(float* s, float* aux, int V, float min_p, int mtk, Smem& sh) {
  const float mx = block_max_scores(s, V, sh);
  const double inv = softmax_inv(s, V, mx, sh);
  float top = 0.0f;
  for (int i = threadIdx.x; i < V; i += kThreads) {
    const float p = prob(s[i], mx, inv);
    aux[i] = p;
    top = fmaxf(top, p);
  }
  top = block_reduce(top, Max(), sh.f);
  const float thr = __fmul_rn(min_p, top);
  int kept = 0;
  for (int i = threadIdx.x; i < V; i += kThreads) kept += !(aux[i] < thr);
  kept = block_reduce(kept, Sum(), sh.i);
  if (kept >= mtk) {
    for (int i = threadIdx.x; i < V; i += kThreads)
      if (aux[i] < thr) s[i] = -INFINITY;
  } else {
    // Too few survive: the best mtk by (score descending, id ascending) stay as well.
    const unsigned k = (unsigned)min(mtk, V);
    const unsigned long long K = block_select<unsigned long long>(V, k, [&](int i, unsigned long long* key) {
      *key = ((unsigned long long)~ord_key(s[i]) << 32) | (unsigned)i;
      return true;
    }, sh);
    for (int i = threadIdx.x; i < V; i += kThreads) {
      const unsigned long long key = ((unsigned long long)~ord_key(s[i]) << 32) | (unsigned)i;
      if (aux[i] < thr && key > K) s[i] = -INFINITY;
    }
  }
  __syncthreads();
}

// sampleToken with the host's u: each thread owns a contiguous run of indices, so the
// running sum is sequential within a run and the runs are combined by a scan.
__device__ int draw(const float* s, int V, double u, Smem& sh) {
  const float mx = block_max_scores(s, V, sh);
  const int seg = (V + kThreads - 1) / kThreads;
  const int lo = min(V, (int)threadIdx.x * seg), hi = min(V, lo + seg);
  double part = 0.0;
  for (int i = lo; i < hi; i++) {
    const float v = s[i];
    if (v != -INFINITY) part += weight(v, mx);
  }
  double total;
  double acc = cuda_block::block_exclusive_scan(part, sh.d, &total);
  const double target = __dmul_rn(u, total);
  int found = INT_MAX, last = -1;
  for (int i = lo; i < hi; i++) {
    const float v = s[i];
    if (v == -INFINITY) continue;
    const double e = weight(v, mx);
    if (e == 0.0) continue;
    acc += e;
    last = i;
    if (target < acc) {
      found = i;
      break;
    }
  }
  found = block_reduce(found, Min(), sh.i);
  if (found != INT_MAX) return found;
  return block_reduce(last, Max(), sh.j);  // rounding put the target at the very end
}

__global__ void __launch_bounds__(kThreads, 1) sample_kernel(Params P) {
  extern __shared__ float dyn_row[];
  __shared__ Smem sh;
  const int r = blockIdx.x;
  const int V = P.V;
  const RowArgs ra = P.rows[r];
  float* s = P.use_smem ? dyn_row : P.rowbuf + (size_t)r * V;
  float* aux = P.aux ? P.aux + (size_t)r * V : nullptr;
  const long long base = (ra.batch * P.positions + P.positions - 1) * (long long)V;
  int* out_id = P.out + r;
  int* out_status = P.out + P.n + r;

  auto finish = [&](int id, int status) {
    if (threadIdx.x == 0) {
      *out_id = id;
      *out_status = status;
      if (P.feed && status == kOk) P.feed[ra.batch] = id;
    }
  };
  int nan = 0;
  if (!P.do_sample && P.penalty == 1.0f) {
    const int best = argmax_direct(P.logits, P.dt, base, V, &nan, sh);
    if (nan) return finish(-1, kNaN);
    return finish(best == INT_MAX ? 0 : best, kOk);
  }
  for (int i = threadIdx.x; i < V; i += kThreads) {
    const float v = load_logit(P.logits, P.dt, base + i);
    s[i] = v;
    nan |= v != v;
  }
  nan = block_reduce(nan, Or(), sh.i);
  if (nan) return finish(-1, kNaN);

  if (P.penalty != 1.0f) {
    const int* h = P.hist + ra.hist_off;
    for (int j = threadIdx.x; j < ra.hist_len; j += kThreads) {
      const int id = h[j];
      if (id < 0 || id >= V) continue;
      const float v = s[id];
      s[id] = v < 0.0f ? __fmul_rn(v, P.penalty) : __fdiv_rn(v, P.penalty);
    }
    __syncthreads();
  }

  if (!P.do_sample) {
    const int best = block_argmax(s, V, sh);
    return finish(best == INT_MAX ? 0 : best, kOk);
  }

  if (P.temperature != 1.0f) {
    for (int i = threadIdx.x; i < V; i += kThreads) s[i] = __fdiv_rn(s[i], P.temperature);
    __syncthreads();
  }
  const float mx = block_max_scores(s, V, sh);
  if (mx == INFINITY) return finish(-1, kPosInf);
  if (mx == -INFINITY) return finish(-1, kAllFiltered);
  if (P.top_k_keep > 0 && P.top_k_keep < V) top_k(s, V, P.top_k_keep, sh);
  if (P.use_top_p) top_p(s, aux, V, P.top_p_limit, P.mtk, sh);
  if (P.use_min_p) min_p(s, aux, V, P.min_p, P.mtk, sh);
  const int id = draw(s, V, ra.u, sh);
  finish(id, id >= 0 ? kOk : kAllFiltered);
}

// ---- host side ----------------------------------------------------------------------------

struct DeviceState {
  std::mutex mu;
  bool configured = false;
  size_t static_smem = 0;
  int max_dyn_smem = 0;  // dynamic shared memory one block may use
  void* dev = nullptr;
  size_t dev_bytes = 0;
  float* scratch = nullptr;
  size_t scratch_bytes = 0;
  std::vector<Pending*> free_slots;  // pinned staging of finished calls, for reuse
};

DeviceState& state_for(int device) {
  static std::mutex mu;
  static std::map<int, std::unique_ptr<DeviceState>> states;
  std::lock_guard<std::mutex> lock(mu);
  auto& s = states[device];
  if (!s) s.reset(new DeviceState());
  return *s;
}

// Called with st.mu held and the device current.
void configure(DeviceState& st, int device) {
  if (st.configured) return;
  cudaFuncAttributes attr;
  NIBBLE_CUDA_CHECK(cudaFuncGetAttributes(&attr, sample_kernel), "sampling: cudaFuncGetAttributes");
  int optin = 0;
  NIBBLE_CUDA_CHECK(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device),
                    "sampling: cudaDeviceGetAttribute");
  st.static_smem = attr.sharedSizeBytes;
  st.max_dyn_smem = std::max(0, optin - (int)attr.sharedSizeBytes);
  NIBBLE_CUDA_CHECK(cudaFuncSetAttribute(sample_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, st.max_dyn_smem),
                    "sampling: cudaFuncSetAttribute");
  st.configured = true;
}

// Growing a device buffer: queued calls may still read the old one, so the stream drains first.
template <typename T>
void grow_device(T** p, size_t* have, size_t want, const char* what, cudaStream_t stream) {
  if (*have >= want) return;
  NIBBLE_CUDA_CHECK(cudaStreamSynchronize(stream), "sampling: draining before a reallocation");
  if (*p) cudaFree(*p);
  *p = nullptr;
  *have = 0;
  const size_t bytes = std::max<size_t>(want + want / 4, 4096);
  NIBBLE_CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(p), bytes), std::string("sampling: cudaMalloc ") + what);
  *have = bytes;
}

template <typename T>
void grow_pinned(T** p, size_t* have, size_t want, const char* what, unsigned flags = cudaHostAllocDefault) {
  if (*have >= want) return;
  if (*p) cudaFreeHost(*p);
  *p = nullptr;
  *have = 0;
  const size_t bytes = std::max<size_t>(want + want / 4, 4096);
  NIBBLE_CUDA_CHECK(cudaHostAlloc(reinterpret_cast<void**>(p), bytes, flags),
                    std::string("sampling: cudaHostAlloc ") + what);
  *have = bytes;
}

size_t align_up(size_t x, size_t a) { return (x + a - 1) / a * a; }

}  // namespace

// One queued call's pinned staging (arguments in, ids and statuses out) and its completion
// event. Each call has its own, so a call may be queued while earlier ones are in flight.
struct Pending {
  int device = 0;
  int64_t n = 0;
  char* pin_in = nullptr;
  size_t pin_in_bytes = 0;
  int* pin_out = nullptr;
  size_t pin_out_bytes = 0;
  cudaEvent_t done = nullptr;
};

namespace {
Pending* take_slot(DeviceState& st) {  // st.mu held
  if (!st.free_slots.empty()) {
    Pending* p = st.free_slots.back();
    st.free_slots.pop_back();
    return p;
  }
  auto* p = new Pending();
  if (cudaEventCreateWithFlags(&p->done, cudaEventDisableTiming) != cudaSuccess) {
    cudaGetLastError();
    delete p;
    throw std::runtime_error("sampling: cudaEventCreate failed");
  }
  return p;
}
void give_slot(int device, Pending* p) {
  DeviceState& st = state_for(device);
  std::lock_guard<std::mutex> lock(st.mu);
  st.free_slots.push_back(p);
}
}  // namespace

int64_t max_shared_vocab(int device) {
  NIBBLE_CUDA_CHECK(cudaSetDevice(device), "cudaSetDevice");
  DeviceState& st = state_for(device);
  std::lock_guard<std::mutex> lock(st.mu);
  configure(st, device);
  return st.max_dyn_smem / (int64_t)sizeof(float);
}

namespace {
Pending* queue(DeviceState& st, Pending* slot, const void* logits, DType dt, int64_t positions, int64_t V,
               const Config& cfg, const Row* rows, int64_t n, int32_t* feed, int device) {
  cudaStream_t stream = gpt2_cuda::stream(device);
  configure(st, device);

  // Greedy without a penalty never stages the row (argmax_direct).
  const bool direct = !cfg.do_sample && cfg.repetition_penalty == 1.0f;
  const bool use_smem = !direct && !cfg.force_global && V * (int64_t)sizeof(float) <= st.max_dyn_smem;
  const bool use_top_p = cfg.do_sample && cfg.top_p < 1.0;
  const bool use_min_p = cfg.do_sample && cfg.use_min_p;
  const bool need_aux = use_top_p || use_min_p;

  // Host staging: row arguments and the penalty's histories (each distinct id once).
  std::vector<RowArgs> ra((size_t)n);
  std::vector<int32_t> hist;
  std::vector<int64_t> seen;  // seen[id] == r + 1: id already listed for row r
  if (cfg.repetition_penalty != 1.0f) seen.assign((size_t)V, 0);
  for (int64_t r = 0; r < n; r++) {
    ra[r].batch = rows[r].batch;
    ra[r].u = rows[r].u;
    ra[r].hist_off = (int)hist.size();
    if (cfg.repetition_penalty != 1.0f) {
      for (int64_t j = 0; j < rows[r].history_len; j++) {
        const int32_t id = rows[r].history[j];
        if (id < 0 || id >= V || seen[id] == r + 1) continue;
        seen[id] = r + 1;
        hist.push_back(id);
      }
    }
    ra[r].hist_len = (int)hist.size() - ra[r].hist_off;
  }
  const size_t rows_bytes = align_up(sizeof(RowArgs) * (size_t)n, 16);
  const size_t hist_bytes = align_up(sizeof(int32_t) * std::max<size_t>(hist.size(), 1), 16);
  const size_t out_bytes = sizeof(int32_t) * 2 * (size_t)n;
  grow_pinned(&slot->pin_in, &slot->pin_in_bytes, rows_bytes + hist_bytes, "(inputs)");
  // The kernel writes the ids straight into mapped pinned memory: no copy after it on the
  // stream, whose few microseconds would sit between this step and the next.
  grow_pinned(&slot->pin_out, &slot->pin_out_bytes, out_bytes, "(outputs)", cudaHostAllocMapped);
  int* out_dev = nullptr;
  NIBBLE_CUDA_CHECK(cudaHostGetDevicePointer(reinterpret_cast<void**>(&out_dev), slot->pin_out, 0),
                    "sampling: mapped outputs");
  grow_device(&st.dev, &st.dev_bytes, rows_bytes + hist_bytes, "(arguments)", stream);
  const size_t row_floats = (size_t)n * (size_t)V;
  const size_t scratch_want = sizeof(float) * row_floats * ((use_smem || direct ? 0 : 1) + (need_aux ? 1 : 0));
  if (scratch_want) grow_device(&st.scratch, &st.scratch_bytes, scratch_want, "(scratch rows)", stream);
  std::memcpy(slot->pin_in, ra.data(), sizeof(RowArgs) * (size_t)n);
  if (!hist.empty()) std::memcpy(slot->pin_in + rows_bytes, hist.data(), sizeof(int32_t) * hist.size());

  char* dev = static_cast<char*>(st.dev);
  Params P;
  P.logits = logits;
  P.dt = dt == DType::F32 ? 0 : dt == DType::F16 ? 1 : 2;
  P.positions = positions;
  P.V = (int)V;
  P.n = (int)n;
  P.do_sample = cfg.do_sample;
  P.penalty = cfg.repetition_penalty;
  P.temperature = cfg.temperature;
  P.top_k_keep = cfg.do_sample && cfg.top_k_keep > 0 && cfg.top_k_keep < V ? (int)cfg.top_k_keep : 0;
  P.use_top_p = use_top_p;
  P.top_p_limit = (float)(1.0 - cfg.top_p);
  P.use_min_p = use_min_p;
  P.min_p = cfg.min_p;
  P.mtk = (int)std::min<int64_t>(cfg.min_tokens_to_keep, INT_MAX);
  P.use_smem = use_smem;
  P.rows = reinterpret_cast<const RowArgs*>(dev);
  P.hist = reinterpret_cast<const int*>(dev + rows_bytes);
  P.out = out_dev;
  P.feed = feed;
  P.rowbuf = use_smem || direct ? nullptr : st.scratch;
  P.aux = need_aux ? st.scratch + (use_smem ? 0 : row_floats) : nullptr;

  NIBBLE_CUDA_CHECK(cudaMemcpyAsync(dev, slot->pin_in, rows_bytes + hist_bytes, cudaMemcpyHostToDevice, stream),
                    "sampling: copy arguments");
  sample_kernel<<<(unsigned)n, kThreads, use_smem ? (size_t)V * sizeof(float) : 0, stream>>>(P);
  NIBBLE_CUDA_CHECK_LAUNCH("sampling");
  NIBBLE_CUDA_CHECK(cudaEventRecord(slot->done, stream), "sampling: event");
  return slot;
}
}  // namespace

void sample(const void* logits, DType dt, int64_t B, int64_t positions, int64_t V, const Config& cfg, const Row* rows,
            int64_t n, int32_t* out_ids, int32_t* out_status, int device) {
  sample_wait(sample_async(logits, dt, B, positions, V, cfg, rows, n, nullptr, device), out_ids, out_status);
}

void sample_wait(Pending* p, int32_t* out_ids, int32_t* out_status) {
  if (!p) return;
  if (p->n > 0) {
    const cudaError_t e = cudaEventSynchronize(p->done);
    if (e != cudaSuccess) {
      give_slot(p->device, p);
      NIBBLE_CUDA_CHECK(e, "sampling");
    }
    for (int64_t r = 0; r < p->n; r++) {
      out_ids[r] = p->pin_out[r];
      out_status[r] = p->pin_out[p->n + r];
    }
  }
  give_slot(p->device, p);
}

Pending* sample_async(const void* logits, DType dt, int64_t B, int64_t positions, int64_t V, const Config& cfg,
                      const Row* rows, int64_t n, int32_t* feed, int device) {
  if (dt != DType::F32 && dt != DType::F16 && dt != DType::BF16)
    throw std::invalid_argument(std::string("sampling: logits must be float32, float16 or bfloat16, got ") + dtype_name(dt));
  if (V < 1 || V > INT_MAX / 2) throw std::invalid_argument("sampling: vocabulary size " + std::to_string(V) + " is out of range");
  if (B < 1 || positions < 1) throw std::invalid_argument("sampling: logits need at least one row and one position");
  if (n < 0 || n > B) throw std::invalid_argument("sampling: " + std::to_string(n) + " rows asked of a batch of " + std::to_string(B));
  if (!(cfg.temperature > 0.0f) && cfg.do_sample) throw std::invalid_argument("sampling: temperature must be > 0");
  if (!(cfg.repetition_penalty > 0.0f)) throw std::invalid_argument("sampling: repetition penalty must be > 0");
  if (cfg.min_tokens_to_keep < 1) throw std::invalid_argument("sampling: minTokensToKeep must be >= 1");
  for (int64_t r = 0; r < n; r++) {
    if (rows[r].batch < 0 || rows[r].batch >= B)
      throw std::invalid_argument("sampling: row " + std::to_string(rows[r].batch) + " is outside the batch of " + std::to_string(B));
    if (cfg.do_sample && !(rows[r].u >= 0.0 && rows[r].u < 1.0))
      throw std::invalid_argument("sampling: u must be in [0, 1)");
  }
  NIBBLE_CUDA_CHECK(cudaSetDevice(device), "cudaSetDevice");
  DeviceState& st = state_for(device);
  std::lock_guard<std::mutex> lock(st.mu);
  Pending* slot = take_slot(st);
  slot->device = device;
  slot->n = n;
  if (n == 0) return slot;
  try {
    return queue(st, slot, logits, dt, positions, V, cfg, rows, n, feed, device);
  } catch (...) {
    st.free_slots.push_back(slot);
    throw;
  }
}


}  // namespace cuda_sampling
}  // namespace nibble
