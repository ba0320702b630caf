// The GPT-2 forward pass as one host loop over the CUDA kernels (see gpt2_cuda.h): the
// same arithmetic as lib/models/gpt2.ts op by op, with bias, gelu_new and the residual add
// moved into the linear epilogues.
#include "cuda/gpt2_device.cuh"
#include "cuda/probe.cuh"

namespace nibble {
namespace gpt2_cuda {

namespace {
constexpr size_t kAlign = 256;
size_t up(size_t n) { return (n + kAlign - 1) / kAlign * kAlign; }

struct Carve {
  char* p;
  template <typename T>
  T* take(size_t n) {
    T* r = reinterpret_cast<T*>(p);
    p += up(n * sizeof(T));
    return r;
  }
};
}  // namespace

size_t gpt2_scratch_bytes(const Gpt2Weights& w, int64_t B, int64_t T, int64_t past) {
  const size_t BT = (size_t)(B * T);
  return up(BT * w.C * 4) * 3 + up(BT * 3 * w.C * 4) + up(BT * w.inner * 4) + up((size_t)B * w.C * 4) +
         up(BT * 4) * 2 + up((size_t)(B * (past + T)) * 4) + up(qlinear_scratch_bytes(w, BT));
}

void gpt2_forward(const Gpt2Weights& w, void* scratch, const int32_t* ids, const int32_t* pos, const int32_t* mask,
                  float* const* kc, float* const* vc, int64_t B, int64_t T, int64_t past, int64_t Tmax,
                  bool last_only, float* logits, int device, const int32_t* ids_dev) {
  const int64_t BT = B * T, C = w.C, D = C / w.H;
  cudaStream_t s = begin(device);
  probe_bind_all();
  Carve cv{static_cast<char*>(scratch)};
  float* x = cv.take<float>(BT * C);
  float* h = cv.take<float>(BT * C);
  float* att = cv.take<float>(BT * C);
  float* qkv = cv.take<float>(BT * 3 * C);
  float* fc = cv.take<float>(BT * w.inner);
  float* last = cv.take<float>(B * C);
  int32_t* d_ids = cv.take<int32_t>(BT);
  int32_t* d_pos = cv.take<int32_t>(BT);
  int32_t* d_mask = cv.take<int32_t>(B * (past + T));
  void* qs = cv.take<char>(qlinear_scratch_bytes(w, BT));
  // Pageable host -> device on the stream: small copies are staged at once, so the caller's
  // arrays may be reused as soon as this returns.
  NIBBLE_CUDA_CHECK(ids_dev ? cudaMemcpyAsync(d_ids, ids_dev, BT * 4, cudaMemcpyDeviceToDevice, s)
                            : cudaMemcpyAsync(d_ids, ids, BT * 4, cudaMemcpyHostToDevice, s),
                    "gpt2 forward: copying ids");
  NIBBLE_CUDA_CHECK(cudaMemcpyAsync(d_pos, pos, BT * 4, cudaMemcpyHostToDevice, s), "gpt2 forward: copying positions");
  if (mask)
    NIBBLE_CUDA_CHECK(cudaMemcpyAsync(d_mask, mask, B * (past + T) * 4, cudaMemcpyHostToDevice, s),
                      "gpt2 forward: copying the attention mask");

  embedding(x, w.wte, w.wpe, w.dt, d_ids, d_pos, BT, C, w.V, w.P, device);
  for (size_t l = 0; l < w.layers.size(); l++) {
    const Gpt2Layer& L = w.layers[l];
    qlinear_ln(L.attn, L.ln1_w, L.ln1_b, w.eps, w.dt, kEpilogueNone, qkv, x, h, BT, qs, device, &L.fold1);
    attention(att, qkv, kc[l], vc[l], mask ? d_mask : nullptr, B, T, past, Tmax, w.H, D, device);
    qlinear(L.proj, w.dt, kEpilogueAccumulate, x, att, BT, qs, device);
    qlinear_ln(L.fc, L.ln2_w, L.ln2_b, w.eps, w.dt, kEpilogueGelu, fc, x, h, BT, qs, device, &L.fold2);
    qlinear(L.mproj, w.dt, kEpilogueAccumulate, x, fc, BT, qs, device);
  }
  const float* src = x;
  int64_t rows = BT;
  if (last_only) {
    rows = B;
    if (T > 1) {
      NIBBLE_CUDA_CHECK(cudaMemcpy2DAsync(last, C * 4, x + (T - 1) * C, T * C * 4, C * 4, B, cudaMemcpyDeviceToDevice, s),
                        "gpt2 forward: gathering last positions");
      src = last;
    }
  }
  QLinear head;
  head.N = w.V, head.K = C, head.w = w.lm_head;
  qlinear_ln(head, w.lnf_w, w.lnf_b, w.eps, w.dt, kEpilogueNone, logits, src, h, rows, qs, device, &w.head_fold);
}

}  // namespace gpt2_cuda
}  // namespace nibble
