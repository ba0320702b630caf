// The decode step as a CUDA graph (see gpt2_cuda.h). Captured once per bound KV cache, on
// the first single-token step, and replayed for every later one: the host then pays one
// graph launch per token instead of ~8 kernel launches per layer, and the GPU runs the
// kernels back to back. Everything a step changes (ids, positions, mask, past) is copied from
// pinned staging memory just before each replay, so the captured kernels never change; the
// ids may instead come from device memory (the tokens the GPU sampler wrote, which then never
// visit the host before the step runs). Three staging buffers take turns, so queuing a step
// does not wait for the steps before it to run (generate() queues steps t+1 and t+2 while
// step t runs).
#include "cuda/gpt2_device.cuh"
#include "cuda/probe.cuh"

namespace nibble {
namespace gpt2_cuda {

struct DecodeGraph {
  const Gpt2Weights* w = nullptr;
  int device = 0;
  int64_t B = 0, Tmax = 0;
  void* dev = nullptr;        // activations, logits and the staged inputs
  static constexpr int kTurns = 3;
  int32_t* host[kTurns] = {};      // pinned: ids[B] | pos[B] | past | mask[B * Tmax], in turns
  cudaEvent_t copied[kTurns] = {};  // host[i] has been read by its copy
  bool used[kTurns] = {};
  int turn = 0;
  int32_t* stage = nullptr;   // the device copy of the stage (same layout)
  size_t stage_bytes = 0;
  float* logits = nullptr;    // [B, V]
  cudaGraphExec_t exec = nullptr;
  cudaEvent_t done = nullptr;
  bool launched = false;
};

namespace {
size_t up(size_t n) { return (n + 255) / 256 * 256; }

void capture(DecodeGraph* g, float* const* kc, float* const* vc) {
  const Gpt2Weights& w = *g->w;
  const int64_t B = g->B, C = w.C, D = C / w.H;
  char* p = static_cast<char*>(g->dev);
  auto take = [&](size_t bytes) { void* r = p; p += up(bytes); return r; };
  float* x = (float*)take(B * C * 4);
  float* h = (float*)take(B * C * 4);
  float* att = (float*)take(B * C * 4);
  float* qkv = (float*)take(B * 3 * C * 4);
  float* fc = (float*)take(B * w.inner * 4);
  g->logits = (float*)take(B * w.V * 4);
  int32_t* stage = (int32_t*)take(g->stage_bytes);
  void* qs = take(qlinear_scratch_bytes(w, B));
  int32_t *d_ids = stage, *d_pos = stage + B, *d_past = stage + 2 * B, *d_mask = stage + 2 * B + 1;
  g->stage = stage;

  cudaStream_t s = begin(g->device);
  probe_name("CAPTURE");
  NIBBLE_CUDA_CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal), "decode graph: begin capture");
  cudaGraph_t graph = nullptr;
  try {
    embedding(x, w.wte, w.wpe, w.dt, d_ids, d_pos, B, C, w.V, w.P, g->device);
    for (size_t l = 0; l < w.layers.size(); l++) {
      const Gpt2Layer& L = w.layers[l];
      qlinear_ln(L.attn, L.ln1_w, L.ln1_b, w.eps, w.dt, kEpilogueNone, qkv, x, h, B, qs, g->device, &L.fold1);
      attention_decode_dev(att, qkv, kc[l], vc[l], d_mask, d_past, B, g->Tmax, w.H, D, g->device);
      qlinear(L.proj, w.dt, kEpilogueAccumulate, x, att, B, qs, g->device);
      qlinear_ln(L.fc, L.ln2_w, L.ln2_b, w.eps, w.dt, kEpilogueGelu, fc, x, h, B, qs, g->device, &L.fold2);
      qlinear(L.mproj, w.dt, kEpilogueAccumulate, x, fc, B, qs, g->device);
    }
    QLinear head;
    head.N = w.V, head.K = C, head.w = w.lm_head;
    qlinear_ln(head, w.lnf_w, w.lnf_b, w.eps, w.dt, kEpilogueNone, g->logits, x, h, B, qs, g->device, &w.head_fold);
  } catch (...) {
    cudaStreamEndCapture(s, &graph);  // leave the stream usable
    if (graph) cudaGraphDestroy(graph);
    cudaGetLastError();
    throw;
  }
  NIBBLE_CUDA_CHECK(cudaStreamEndCapture(s, &graph), "decode graph: end capture");
  cudaError_t e = cudaGraphInstantiate(&g->exec, graph, 0);
  cudaGraphDestroy(graph);
  NIBBLE_CUDA_CHECK(e, "decode graph: instantiate");
}
}  // namespace

DecodeGraph* decode_graph_create(const Gpt2Weights& w, float* const* kc, float* const* vc, int64_t B, int64_t Tmax,
                                 int device) {
  probe_bind_all();
  auto* g = new DecodeGraph;
  g->w = &w, g->device = device, g->B = B, g->Tmax = Tmax;
  g->stage_bytes = (size_t)(2 * B + 1 + B * Tmax) * 4;
  const size_t bytes = up(B * w.C * 4) * 3 + up(B * 3 * w.C * 4) + up(B * w.inner * 4) + up(B * w.V * 4) +
                       up(g->stage_bytes) + up(qlinear_scratch_bytes(w, B));
  try {
    NIBBLE_CUDA_CHECK(cudaSetDevice(device), "cudaSetDevice");
    NIBBLE_CUDA_CHECK(cudaMalloc(&g->dev, bytes), "decode graph: allocating " + std::to_string(bytes) + " bytes");
    for (int i = 0; i < DecodeGraph::kTurns; i++) {
      NIBBLE_CUDA_CHECK(cudaMallocHost(&g->host[i], g->stage_bytes), "decode graph: pinned staging");
      NIBBLE_CUDA_CHECK(cudaEventCreateWithFlags(&g->copied[i], cudaEventDisableTiming), "decode graph: event");
    }
    NIBBLE_CUDA_CHECK(cudaEventCreateWithFlags(&g->done, cudaEventDisableTiming), "decode graph: event");
    capture(g, kc, vc);
  } catch (...) {
    decode_graph_destroy(g);
    throw;
  }
  return g;
}

void decode_graph_run(DecodeGraph* g, const int32_t* ids, const int32_t* pos, const int32_t* mask, int64_t past,
                      float* logits, const int32_t* ids_dev) {
  const int64_t B = g->B, L = past + 1;
  if (L > g->Tmax) throw std::out_of_range("decode graph: the KV cache is full");
  cudaStream_t s = begin(g->device);
  // This turn's staging buffer was last read by the copy three steps ago (long done, normally).
  const int turn = g->turn;
  g->turn = (turn + 1) % DecodeGraph::kTurns;
  if (g->used[turn]) NIBBLE_CUDA_CHECK(cudaEventSynchronize(g->copied[turn]), "decode graph: staging");
  int32_t* hp = g->host[turn];
  for (int64_t b = 0; b < B; b++) hp[b] = ids_dev ? 0 : ids[b], hp[B + b] = pos[b];
  hp[2 * B] = (int32_t)past;
  int32_t* hm = hp + 2 * B + 1;
  for (int64_t b = 0; b < B; b++)
    for (int64_t j = 0; j < L; j++) hm[b * g->Tmax + j] = mask ? mask[b * L + j] : 1;
  // Only the mask's first L columns of each row change; the copy takes the whole stage (a few KB).
  const size_t skip = ids_dev ? (size_t)B * 4 : 0;  // device ids: leave the ids to the next copy
  NIBBLE_CUDA_CHECK(cudaMemcpyAsync(reinterpret_cast<char*>(g->stage) + skip, reinterpret_cast<char*>(hp) + skip,
                                    g->stage_bytes - skip, cudaMemcpyHostToDevice, s),
                    "decode graph: inputs");
  if (ids_dev)
    NIBBLE_CUDA_CHECK(cudaMemcpyAsync(g->stage, ids_dev, B * 4, cudaMemcpyDeviceToDevice, s), "decode graph: ids");
  NIBBLE_CUDA_CHECK(cudaEventRecord(g->copied[turn], s), "decode graph: event");
  g->used[turn] = true;
  NIBBLE_CUDA_CHECK(cudaGraphLaunch(g->exec, s), "decode graph: launch");
  NIBBLE_CUDA_CHECK(cudaMemcpyAsync(logits, g->logits, B * g->w->V * 4, cudaMemcpyDeviceToDevice, s),
                    "decode graph: logits");
  NIBBLE_CUDA_CHECK(cudaEventRecord(g->done, s), "decode graph: event");
  g->launched = true;
}

void decode_graph_destroy(DecodeGraph* g) {
  if (!g) return;
  cudaSetDevice(g->device);
  if (g->launched && g->done) cudaEventSynchronize(g->done);
  probe_dump();
  if (g->exec) cudaGraphExecDestroy(g->exec);
  if (g->done) cudaEventDestroy(g->done);
  for (int i = 0; i < DecodeGraph::kTurns; i++) {
    if (g->copied[i]) cudaEventDestroy(g->copied[i]);
    if (g->host[i]) cudaFreeHost(g->host[i]);
  }
  if (g->dev) cudaFree(g->dev);
  cudaGetLastError();
  delete g;
}

}  // namespace gpt2_cuda
}  // namespace nibble
