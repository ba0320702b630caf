// CUDA kernels for the GPT-2 forward pass: the same contracts as native/cpu/gpt2_ops.h (read
// that file for the arithmetic), with every pointer in device memory of `device`. Work is
// queued on the device's compute stream (stream(device)) and returns at once; the stream is
// created blocking, so the legacy-stream copies in cuda_api (reads, writes, toDevice) are
// ordered after it. Launch and configuration errors throw std::runtime_error naming the op;
// built without nvcc, every function throws "built without CUDA" (gpt2_cuda_stub.cc).
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

#include "core/dtype.h"

typedef struct CUstream_st* cudaStream_t;

namespace nibble {
namespace gpt2_cuda {

// The stream GPT-2 kernels run on for `device` (created on first use). Quantized linears
// should queue their kernels here too.
cudaStream_t stream(int device);
// Waits for all work queued on every device this process has used; throws the first
// asynchronous CUDA error.
void synchronize_all();
// cudaMemGetInfo for `device`.
void mem_info(int device, size_t* free_bytes, size_t* total_bytes);

// Activations are float32; parameters (tables, norm and Linear weights and biases) are
// float32, float16 or bfloat16 (pdt, shared by a pair), widened as they are read.
// out[t,:] = wte[ids[t],:] + wpe[pos[t],:]. Ids or positions outside [0,V) / [0,P) give a zero
// row (the JS layer validates them before they reach the GPU).
void embedding(float* out, const void* wte, const void* wpe, DType pdt, const int32_t* ids, const int32_t* pos,
               int64_t T, int64_t C, int64_t V, int64_t P, int device);
void layernorm(float* out, const float* x, const void* w, const void* b, DType pdt, int64_t rows, int64_t C,
               float eps, int device);
// out[M,N] = x[M,K] . w[N,K]^T + bias[N] (bias null or of w's dtype); float32 products and sums.
void linear(float* out, const float* x, const void* w, const void* bias, DType wdt, int64_t M, int64_t K,
            int64_t N, int device);
void gelu_new(float* out, const float* x, int64_t n, int device);
void add(float* out, const float* a, const float* b, int64_t n, int device);
void softmax(float* out, const float* x, int64_t rows, int64_t cols, int device);
void attention(float* out, const float* qkv, float* kc, float* vc, const int32_t* mask, int64_t B, int64_t T,
               int64_t past, int64_t Tmax, int64_t H, int64_t D, int device);

// linear with an epilogue: kEpilogueGelu stores gelu_new(result), kEpilogueAccumulate adds the
// result into `out` (the residual stream). path: 0 = choose, 1 = the small-M streaming kernel
// (M <= 16), 2 = the tiled one, 3 = the tensor-core decode kernel (2..16 rows, 16-bit weights,
// K % 32 == 0; throws otherwise).
enum { kEpilogueNone = 0, kEpilogueGelu = 1, kEpilogueAccumulate = 2 };
void linear_ex(int path, int epilogue, float* out, const float* x, const void* w, const void* bias, DType wdt,
               int64_t M, int64_t K, int64_t N, int device);
// Forces one linear kernel (tests): 1 = the small-M streaming kernel (M <= 16), 2 = the tiled one,
// 3 = the tensor-core decode kernel.
void linear_path(int path, float* out, const float* x, const void* w, const void* bias, DType wdt, int64_t M,
                 int64_t K, int64_t N, int device);

// attention for one new token per sequence with `past` read from device memory and the mask
// laid out [B, Tmax]: the form a captured CUDA graph can replay step after step.
void attention_decode_dev(float* out, const float* qkv, float* kc, float* vc, const int32_t* mask,
                          const int32_t* past_dev, int64_t B, int64_t Tmax, int64_t H, int64_t D, int device);

// ---- a whole forward pass in one call -------------------------------------------------
// The per-op path costs one JS->native call, one tensor allocation and one launch per op; a
// decode step of GPT-2 XL is ~600 of them. Here the host loop runs in C++ with 8 launches
// per layer (bias, gelu and the residual add ride in the linear epilogues).

// One Linear layer of the plan: plain (weight of the model dtype), 4-bit (bitsandbytes packed
// NF4/FP4, absmax plain or double-quantized) or LLM.int8() (CB int8 [N, K] + SCB). Biases have
// the model dtype. Activations stay float32 between layers; a quantized layer reproduces its
// nn module's arithmetic (gpt2_qlinear.cu says how).
struct QLinear {
  enum Kind { kPlain = 0, k4bit = 1, kInt8 = 2 } kind = kPlain;
  int64_t N = 0, K = 0;
  const void* w = nullptr;     // plain: [N, K] of the model dtype
  const void* bias = nullptr;  // [N] of the model dtype, or null
  // 4-bit
  const uint8_t* packed = nullptr;
  const float* absmax = nullptr;         // plain absmax, or null
  const uint8_t* qabsmax = nullptr;      // double-quantized absmax codes
  const float* nested_absmax = nullptr;
  const float* nested_code = nullptr;
  const float* offset = nullptr;         // device float32 [1]
  int blocksize = 64;
  int quant_type = 1;                    // fmt::QuantType (0 fp4, 1 nf4)
  DType compute = DType::F32;            // Linear4bit.computeDtype (x's dtype when unset)
  // int8
  const int8_t* cb = nullptr;
  const float* scb = nullptr;
  float threshold = 0.0f;
};
// A layernorm folded into the Linear after it, for one-row decode steps. With u = W . ln_w and
// v = W . ln_b + bias computed once (ln_fold_build),
//   L(layernorm(x)) = rstd * (W . (x * ln_w) - mean * u) + v,
// so the GEMV stages x * ln_w, sums x and x^2 while it stages, and needs no layernorm kernel
// before it (same-run A/B on the H100, queued steps: GPT-2 XL B=1 float16 536 -> 559, nf4
// 624 -> 650, 124M nf4 +9%). Null u: the layer is not folded. Rows of one step only (at 2+
// the tensor-core GEMVs normalize in their own staging). NIBBLE_CUDA_LN_FOLD=0 turns folding
// off, =layers keeps the LM head's layernorm kernel (measured the same either way).
struct LnFold {
  const float* u = nullptr;
  const float* v = nullptr;
};
struct Gpt2Layer {
  const void *ln1_w, *ln1_b, *ln2_w, *ln2_b;
  QLinear attn, proj, fc, mproj;
  LnFold fold1, fold2;  // ln_1 into attn, ln_2 into fc
};
struct Gpt2Weights {
  DType dt = DType::F32;  // every unquantized parameter has this dtype
  int64_t C = 0, H = 0, V = 0, P = 0, inner = 0;
  float eps = 1e-5f;
  const void *wte = nullptr, *wpe = nullptr, *lnf_w = nullptr, *lnf_b = nullptr, *lm_head = nullptr;
  std::vector<Gpt2Layer> layers;
  bool quantized = false;  // any layer not plain
  LnFold head_fold;        // ln_f into lm_head
};

// out[M, N] (float32) = epilogue(L(x[M, K])). `qscratch` holds qlinear_scratch_bytes(w, M)
// bytes of device memory (unused by plain layers).
void qlinear(const QLinear& L, DType dt, int epilogue, float* out, const float* x, int64_t M, void* qscratch,
             int device);
size_t qlinear_scratch_bytes(const Gpt2Weights& w, int64_t M);
// layernorm(x) then qlinear: out = epilogue(L(layernorm(x))). Decode-sized quantized layers
// fuse the layernorm into their kernel; otherwise it is written to h ([M, K] scratch) first.
// fold, when not null and the step has one row, replaces the layernorm by its fold (LnFold).
void qlinear_ln(const QLinear& L, const void* ln_w, const void* ln_b, float eps, DType dt, int epilogue, float* out,
                const float* x, float* h, int64_t M, void* qscratch, int device, const LnFold* fold = nullptr);
// Device bytes ln_fold_build needs for w's foldable layers (0: none, or folding is off).
size_t ln_fold_bytes(const Gpt2Weights& w);
// Computes the fold vectors of w's foldable layers into mem (ln_fold_bytes(w) bytes, kept
// while w is used) and points their fold1/fold2 at them; queued on the stream.
void ln_fold_build(Gpt2Weights& w, void* mem, int device);
// Bytes of device scratch gpt2_forward needs for B sequences of T new tokens.
size_t gpt2_scratch_bytes(const Gpt2Weights& w, int64_t B, int64_t T, int64_t past);
// ids/pos [B*T] and mask [B*(past+T)] (or null) are host arrays, copied on the stream before
// this returns. logits: [B*T, V], or [B, V] when last_only. ids_dev, when not null, replaces
// ids: device int32 [B*T] read on the stream (e.g. tokens the GPU sampler just wrote).
void gpt2_forward(const Gpt2Weights& w, void* scratch, const int32_t* ids, const int32_t* pos, const int32_t* mask,
                  float* const* kc, float* const* vc, int64_t B, int64_t T, int64_t past, int64_t Tmax,
                  bool last_only, float* logits, int device, const int32_t* ids_dev = nullptr);

// A decode step (T = 1, last position only) captured once per bound KV cache and replayed:
// one graph launch instead of ~8 launches per layer. Activations live at fixed addresses in
// the graph; ids, positions, the mask and `past` go through pinned staging memory.
struct DecodeGraph;
DecodeGraph* decode_graph_create(const Gpt2Weights& w, float* const* kc, float* const* vc, int64_t B, int64_t Tmax,
                                 int device);
// mask: [B, past+1] host ints or null (all ones). logits: [B, V] device float32. ids_dev, when
// not null, replaces ids (device int32 [B], as in gpt2_forward).
void decode_graph_run(DecodeGraph* g, const int32_t* ids, const int32_t* pos, const int32_t* mask, int64_t past,
                      float* logits, const int32_t* ids_dev = nullptr);
void decode_graph_destroy(DecodeGraph* g);

}  // namespace gpt2_cuda
}  // namespace nibble
