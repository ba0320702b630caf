// The whole-forward GPT-2 plans (lib/models/gpt2-plan.ts): a model's weights registered once,
// KV caches bound to a plan, and one call per forward. A plan on a GPU runs
// gpt2_cuda::gpt2_forward (a CUDA graph per decode step); a plan on the CPU queues
// cpu::gpt2_forward as one task on the CPU stream.
#include <cmath>
#include <cstdlib>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "bindings/registry.h"
#include "bindings/tensor_arg.h"
#include "core/stream.h"
#include "cpu/gpt2_forward_cpu.h"
#include "cuda/gpt2_cuda.h"
#include "formats.h"

namespace nibble {
namespace {

// Every tensor of a plan sits on its weights' device.
void on_device(const char* op, const char* name, const TensorArg& t, int device) {
  expect_on_device(op, name, t, device, "the plan");
}
void act(const char* op, const char* name, const TensorArg& t, int device) {
  expect_dtype(op, name, t, DType::F32);
  on_device(op, name, t, device);
}

// A plan keeps references to the weights (so they outlive any JS dispose until the plan is
// released) and their pointers in the layout gpt2_forward reads. Caches likewise. Ids are
// small integers handed to JS; the JS model releases them in dispose() and by finalizer.
struct Plan {
  gpt2_cuda::Gpt2Weights w;
  std::vector<TensorArg> keep;
  std::shared_ptr<Storage> fold;  // a GPU plan's layernorm folds (gpt2_cuda::LnFold)
  int device = 0;
  napi_env env = nullptr;  // the environment (main thread or Worker) that made it
};
struct Cache {
  std::vector<float*> k, v;
  std::vector<TensorArg> keep;
  int64_t B = 0, Tmax = 0;
  int plan = 0;
  gpt2_cuda::DecodeGraph* graph = nullptr;  // captured on the first decode step
  bool graph_failed = false;
  Cache() = default;
  Cache(const Cache&) = delete;
  ~Cache() { gpt2_cuda::decode_graph_destroy(graph); }
};
// Shared: a CPU forward queued on the CPU stream holds its plan and cache until it has run.
// Never destroyed: plans still registered at exit would free their weights into the host
// allocator's cache after that file's statics are gone (static destructors across files run
// in no set order).
// One registry for the process, so under a lock: each worker_threads Worker calls in from its
// own JS thread (ids stay unique across them; a worker only ever names its own).
std::mutex& g_registry_mu = *new std::mutex;
std::map<int, std::shared_ptr<Plan>>& g_plans = *new std::map<int, std::shared_ptr<Plan>>;
std::map<int, std::shared_ptr<Cache>>& g_caches = *new std::map<int, std::shared_ptr<Cache>>;
int g_next_id = 1;

template <typename T>
std::shared_ptr<T> find_entry(const std::map<int, std::shared_ptr<T>>& m, int id, const char* released) {
  std::lock_guard<std::mutex> lock(g_registry_mu);
  auto it = m.find(id);
  if (it == m.end()) throw std::invalid_argument(released);
  return it->second;
}
std::shared_ptr<Plan> plan_ptr(const Napi::CallbackInfo& info, size_t i) {
  return find_entry(g_plans, (int)int_arg(info, i, "plan"), "gpt2 forward: the model's plan was released (model disposed?)");
}
std::shared_ptr<Cache> cache_ptr(const Napi::CallbackInfo& info, size_t i) {
  return find_entry(g_caches, (int)int_arg(info, i, "cache"), "gpt2 forward: the KV cache was released");
}
template <typename T>
int register_entry(std::map<int, std::shared_ptr<T>>& m, std::unique_ptr<T> v) {
  std::lock_guard<std::mutex> lock(g_registry_mu);
  const int id = g_next_id++;
  m[id] = std::move(v);
  return id;
}

// What a release takes out of the registry, destroyed once the lock is dropped: the caches
// before the plans they point into (their graphs reference the plan's weights, and they may
// wait for the GPU).
struct Released {
  std::vector<std::shared_ptr<Cache>> caches;
  std::vector<std::shared_ptr<Plan>> plans;
  ~Released() {
    caches.clear();
    plans.clear();
  }
};
// Under g_registry_mu: plan `id` and the caches bound to it, moved into r.
void take_plan_locked(int id, Released& r) {
  for (auto c = g_caches.begin(); c != g_caches.end();)
    if (c->second->plan == id) r.caches.push_back(std::move(c->second)), c = g_caches.erase(c);
    else ++c;
  auto p = g_plans.find(id);
  if (p != g_plans.end()) r.plans.push_back(std::move(p->second)), g_plans.erase(p);
}

// A Worker that exits without disposing its models never runs their FinalizationRegistry
// callbacks, so its CPU plans (and the weights they reference: ~31 MB a Worker for
// fortune-gpt2) would stay registered for the life of the process. When an environment closes,
// its CPU plans and their caches are released here. (GPU plans are left to dispose(): the
// GPU is used from one thread at a time, and tearing down CUDA graphs during an environment's
// exit is not something this covers.)
std::set<napi_env>& g_hooked_envs = *new std::set<napi_env>;
void release_env_plans(void* arg) {
  const napi_env env = static_cast<napi_env>(arg);
  Released r;
  std::lock_guard<std::mutex> lock(g_registry_mu);
  g_hooked_envs.erase(env);
  std::vector<int> ids;
  for (const auto& [id, plan] : g_plans)
    if (plan->env == env && plan->device < 0) ids.push_back(id);
  for (int id : ids) take_plan_locked(id, r);
}
void hook_env(napi_env env) {
  std::lock_guard<std::mutex> lock(g_registry_mu);
  if (g_hooked_envs.count(env)) return;
  if (napi_add_env_cleanup_hook(env, release_env_plans, env) == napi_ok) g_hooked_envs.insert(env);
}

// gpt2Plan(params, nHead, eps) -> id. params: wte, wpe, 12 per layer (ln_1 w/b,
// c_attn w/b, attn c_proj w/b, ln_2 w/b, c_fc w/b, mlp c_proj w/b), ln_f w/b, lm_head; all on
// one device (a GPU, or the CPU), the unquantized ones in one float dtype, every Linear weight in [out, in] layout.
// A Linear's weight entry is a Tensor (plain) or a quantized layer's description:
//   { kind: '4bit', packed, absmax, nestedAbsmax?, nestedCode?, offset?, blocksize, quantType
//     (0 fp4, 1 nf4), computeDtype (dtype code) }   (bitsandbytes' QuantState)
//   { kind: 'int8', CB, SCB, threshold }           (Linear8bitLt)
Napi::Value CreatePlan(const Napi::CallbackInfo& info) {
  const char* op = "gpt2Plan";
  if (info.Length() < 3 || !info[0].IsArray()) throw Napi::TypeError::New(info.Env(), "gpt2Plan(params[], nHead, eps)");
  Napi::Array arr = info[0].As<Napi::Array>();
  const int64_t H = int_arg(info, 1, "nHead");
  const float eps = (float)num_arg(info, 2, "eps");
  const uint32_t n = arr.Length();
  if (n < 17 || (n - 5) % 12 != 0) throw std::invalid_argument("gpt2Plan: expected 5 + 12 * nLayer parameter tensors");
  auto plan = std::make_unique<Plan>();
  Napi::Env env = info.Env();
  auto get = [&](uint32_t i, const char* name) {
    return tensor_from_value(env, arr.Get(i), name);
  };
  TensorArg wte = get(0, "wte");
  const int dev = wte.device();
  // dev < 0: a plan for the CPU (cpu/gpt2_forward_cpu.h); Forward queues it on the CPU stream.
  const DType dt = wte.dt;
  auto shape_str = [](const std::vector<int64_t>& shape) {
    std::string s;
    for (auto d : shape) s += (s.empty() ? "" : ", ") + std::to_string(d);
    return "[" + s + "]";
  };
  auto param = [&](uint32_t i, const char* name, std::vector<int64_t> shape) -> const void* {
    TensorArg t = get(i, name);
    expect_float(op, name, t);
    on_device(op, name, t, dev);
    if (t.dt != dt) throw std::invalid_argument(std::string(op) + ": '" + name + "' is " + t.describe() + ", wte is " + wte.describe());
    if (t.shape != shape)
      throw std::invalid_argument(std::string(op) + ": '" + name + "' is " + t.describe() + ", expected " + shape_str(shape));
    plan->keep.push_back(t);
    return t.ptr();
  };
  // A tensor field of a quantized layer's description: dtype and element count checked.
  auto field = [&](Napi::Object o, const char* layer, const char* key, DType want, int64_t numel, bool required) -> const void* {
    Napi::Value v = o.Get(key);
    if (v.IsNull() || v.IsUndefined()) {
      if (required) throw std::invalid_argument(std::string(op) + ": '" + layer + "' has no '" + key + "'");
      return nullptr;
    }
    const std::string name = std::string(layer) + "." + key;
    TensorArg t = tensor_from_value(env, v, name.c_str());
    on_device(op, name.c_str(), t, dev);
    if (t.dt != want || t.numel() != numel)
      throw std::invalid_argument(std::string(op) + ": '" + name + "' is " + t.describe() + ", expected " +
                                  dtype_name(want) + " with " + std::to_string(numel) + " elements");
    plan->keep.push_back(t);
    return t.ptr();
  };
  auto linear = [&](uint32_t i, const char* name, int64_t N, int64_t K, uint32_t bias_i, const char* bias_name) {
    gpt2_cuda::QLinear L;
    L.N = N, L.K = K;
    L.bias = param(bias_i, bias_name, {N});
    Napi::Value v = arr.Get(i);
    Napi::Value kind = v.IsObject() ? v.As<Napi::Object>().Get("kind") : env.Undefined();
    if (!kind.IsString()) {
      L.w = param(i, name, {N, K});
      return L;
    }
    Napi::Object o = v.As<Napi::Object>();
    const std::string k = kind.As<Napi::String>().Utf8Value();
    plan->w.quantized = true;
    if (k == "4bit") {
      L.kind = gpt2_cuda::QLinear::k4bit;
      L.blocksize = (int)o.Get("blocksize").ToNumber().Int32Value();
      L.quant_type = (int)o.Get("quantType").ToNumber().Int32Value();
      const int cdt = (int)o.Get("computeDtype").ToNumber().Int32Value();
      if (!fmt::valid_4bit_blocksize(L.blocksize))
        throw std::invalid_argument(std::string(op) + ": '" + name + "' has an unsupported blocksize " + std::to_string(L.blocksize));
      if (L.quant_type != 0 && L.quant_type != 1) throw std::invalid_argument(std::string(op) + ": '" + name + "' has an unknown quant type");
      if (cdt != (int)DType::F32 && cdt != (int)DType::F16 && cdt != (int)DType::BF16)
        throw std::invalid_argument(std::string(op) + ": '" + name + "' has a compute dtype that is not float32, float16 or bfloat16");
      L.compute = (DType)cdt;
      const int64_t nb = fmt::num_blocks(N * K, L.blocksize);
      L.packed = (const uint8_t*)field(o, name, "packed", DType::U8, fmt::packed4_bytes(N * K), true);
      const bool dq = !o.Get("nestedAbsmax").IsNull() && !o.Get("nestedAbsmax").IsUndefined();
      if (dq) {
        L.qabsmax = (const uint8_t*)field(o, name, "absmax", DType::U8, nb, true);
        L.nested_absmax = (const float*)field(o, name, "nestedAbsmax", DType::F32, fmt::num_blocks(nb, fmt::kNestedBlocksize), true);
        L.nested_code = (const float*)field(o, name, "nestedCode", DType::F32, 256, true);
        L.offset = (const float*)field(o, name, "offset", DType::F32, 1, true);
      } else {
        L.absmax = (const float*)field(o, name, "absmax", DType::F32, nb, true);
      }
    } else if (k == "int8") {
      L.kind = gpt2_cuda::QLinear::kInt8;
      L.cb = (const int8_t*)field(o, name, "CB", DType::I8, N * K, true);
      L.scb = (const float*)field(o, name, "SCB", DType::F32, N, true);
      L.threshold = (float)o.Get("threshold").ToNumber().DoubleValue();
      if (!(L.threshold >= 0.0f) || !std::isfinite(L.threshold))
        throw std::invalid_argument(std::string(op) + ": '" + name + "' has a bad outlier threshold");
    } else {
      throw std::invalid_argument(std::string(op) + ": '" + name + "' has an unknown kind '" + k + "'");
    }
    return L;
  };
  expect_rank(op, "wte", wte, 2);
  auto& w = plan->w;
  w.dt = dt, w.V = wte.dim(0), w.C = wte.dim(1), w.H = H, w.eps = eps;
  if (H <= 0 || w.C % H) throw std::invalid_argument("gpt2Plan: n_embd is not a multiple of n_head");
  TensorArg wpe = get(1, "wpe");
  expect_rank(op, "wpe", wpe, 2);
  w.P = wpe.dim(0);
  // The MLP width comes from c_fc's bias (its weight may be packed).
  TensorArg fcb0 = get(11, "c_fc.bias");
  w.inner = fcb0.numel();
  const int64_t C = w.C, I = w.inner;
  w.wte = param(0, "wte", {w.V, C});
  w.wpe = param(1, "wpe", {w.P, C});
  const uint32_t nl = (n - 5) / 12;
  for (uint32_t l = 0; l < nl; l++) {
    const uint32_t b = 2 + 12 * l;
    gpt2_cuda::Gpt2Layer L;
    L.ln1_w = param(b + 0, "ln_1.weight", {C}), L.ln1_b = param(b + 1, "ln_1.bias", {C});
    L.attn = linear(b + 2, "c_attn.weight", 3 * C, C, b + 3, "c_attn.bias");
    L.proj = linear(b + 4, "attn.c_proj.weight", C, C, b + 5, "attn.c_proj.bias");
    L.ln2_w = param(b + 6, "ln_2.weight", {C}), L.ln2_b = param(b + 7, "ln_2.bias", {C});
    L.fc = linear(b + 8, "c_fc.weight", I, C, b + 9, "c_fc.bias");
    L.mproj = linear(b + 10, "mlp.c_proj.weight", C, I, b + 11, "mlp.c_proj.bias");
    w.layers.push_back(L);
  }
  w.lnf_w = param(n - 3, "ln_f.weight", {C}), w.lnf_b = param(n - 2, "ln_f.bias", {C});
  w.lm_head = param(n - 1, "lm_head.weight", {w.V, C});
  plan->device = dev;
  if (dev >= 0) {
    if (const size_t bytes = gpt2_cuda::ln_fold_bytes(w)) {
      plan->fold = Storage::cuda(bytes, dev);
      gpt2_cuda::ln_fold_build(w, plan->fold->data, dev);
    }
  }
  plan->env = info.Env();
  hook_env(info.Env());
  return Napi::Number::New(info.Env(), register_entry(g_plans, std::move(plan)));
}
NIBBLE_BINDING("gpt2Plan", CreatePlan);

Napi::Value ReleasePlan(const Napi::CallbackInfo& info) {
  const int id = (int)int_arg(info, 0, "plan");
  Released r;  // declared before the lock: destroyed after it is dropped
  std::lock_guard<std::mutex> lock(g_registry_mu);
  take_plan_locked(id, r);
  return info.Env().Undefined();
}
NIBBLE_BINDING("gpt2PlanRelease", ReleasePlan);

// gpt2PlanCache(plan, k: Tensor[], v: Tensor[]) -> id: one [B, H, Tmax, D] float32 pair per layer.
Napi::Value BindCache(const Napi::CallbackInfo& info) {
  const char* op = "gpt2PlanCache";
  const std::shared_ptr<Plan> plan_sp = plan_ptr(info, 0);
  Plan& plan = *plan_sp;
  if (info.Length() < 3 || !info[1].IsArray() || !info[2].IsArray())
    throw Napi::TypeError::New(info.Env(), "gpt2PlanCache(plan, kCaches[], vCaches[])");
  Napi::Array ka = info[1].As<Napi::Array>(), va = info[2].As<Napi::Array>();
  const size_t L = plan.w.layers.size();
  if (ka.Length() != L || va.Length() != L)
    throw std::invalid_argument("gpt2PlanCache: expected " + std::to_string(L) + " key and value caches");
  auto c = std::make_unique<Cache>();
  std::vector<int64_t> shape;
  for (uint32_t l = 0; l < L; l++)
    for (int kv = 0; kv < 2; kv++) {
      TensorArg t = tensor_from_value(info.Env(), (kv ? va : ka).Get(l), kv ? "vCache" : "kCache");
      act(op, kv ? "vCache" : "kCache", t, plan.device);
      expect_rank(op, "cache", t, 4);
      if (shape.empty()) shape = t.shape;
      if (t.shape != shape || shape[1] != plan.w.H || shape[3] != plan.w.C / plan.w.H)
        throw std::invalid_argument("gpt2PlanCache: cache " + t.describe() + " does not fit the model");
      (kv ? c->v : c->k).push_back(t.ptr<float>());
      c->keep.push_back(t);
    }
  c->B = shape[0], c->Tmax = shape[2];
  c->plan = (int)int_arg(info, 0, "plan");
  return Napi::Number::New(info.Env(), register_entry(g_caches, std::move(c)));
}
NIBBLE_BINDING("gpt2PlanCache", BindCache);

Napi::Value ReleaseCache(const Napi::CallbackInfo& info) {
  const int id = (int)int_arg(info, 0, "cache");
  Released r;  // declared before the lock: destroyed after it is dropped
  std::lock_guard<std::mutex> lock(g_registry_mu);
  auto it = g_caches.find(id);
  if (it != g_caches.end()) r.caches.push_back(std::move(it->second)), g_caches.erase(it);
  return info.Env().Undefined();
}
NIBBLE_BINDING("gpt2PlanCacheRelease", ReleaseCache);

const int32_t* int32_array(const Napi::CallbackInfo& info, size_t i, const char* name, size_t n) {
  if (i >= info.Length() || !info[i].IsTypedArray() || info[i].As<Napi::TypedArray>().TypedArrayType() != napi_int32_array)
    throw Napi::TypeError::New(info.Env(), std::string("gpt2 forward: '") + name + "' must be an Int32Array");
  Napi::Int32Array a = info[i].As<Napi::Int32Array>();
  if (a.ElementLength() != n)
    throw std::invalid_argument(std::string("gpt2 forward: '") + name + "' has " + std::to_string(a.ElementLength()) +
                                " entries, expected " + std::to_string(n));
  return a.Data();
}

// gpt2PlanForward(plan, cache, logits, ids: Int32Array | null, pos: Int32Array, mask: Int32Array | null,
//                 past, B, T, lastOnly, deviceIds?: int32 tensor [B*T] on the plan's device):
//   queues the whole forward; logits [B*T or B, V] float32. With deviceIds the ids are read
//   from that tensor on the stream (ids may be null; out-of-vocabulary ids embed as zeros).
Napi::Value Forward(const Napi::CallbackInfo& info) {
  const char* op = "gpt2 forward";
  const std::shared_ptr<Plan> plan_sp = plan_ptr(info, 0);
  Plan& plan = *plan_sp;
  const std::shared_ptr<Cache> cache_sp = cache_ptr(info, 1);
  Cache& cache = *cache_sp;
  TensorArg logits = tensor_arg(info, 2, "logits");
  const int64_t past = int_arg(info, 6, "past"), B = int_arg(info, 7, "B"), T = int_arg(info, 8, "T");
  const bool last_only = info.Length() > 9 && info[9].ToBoolean();
  if (B != cache.B) throw std::invalid_argument("gpt2 forward: the cache holds " + std::to_string(cache.B) + " sequences, not " + std::to_string(B));
  if (T <= 0 || past < 0 || past + T > cache.Tmax)
    throw std::out_of_range("gpt2 forward: " + std::to_string(past + T) + " positions exceed the KV cache length " + std::to_string(cache.Tmax));
  std::optional<TensorArg> ids_dev;
  if (info.Length() > 10 && !info[10].IsNull() && !info[10].IsUndefined()) {
    ids_dev = tensor_arg(info, 10, "deviceIds");
    expect_dtype(op, "deviceIds", *ids_dev, DType::I32);
    on_device(op, "deviceIds", *ids_dev, plan.device);
    expect_numel(op, "deviceIds", *ids_dev, B * T);
  }
  const int32_t* ids = ids_dev ? nullptr : int32_array(info, 3, "ids", B * T);
  const int32_t* pos = int32_array(info, 4, "pos", B * T);
  const int32_t* mask = nullptr;
  if (!info[5].IsNull() && !info[5].IsUndefined()) mask = int32_array(info, 5, "mask", B * (past + T));
  for (int64_t i = 0; i < B * T; i++) {
    if (ids && (ids[i] < 0 || ids[i] >= plan.w.V)) throw std::out_of_range("gpt2 forward: token id " + std::to_string(ids[i]) + " is outside the vocabulary");
    if (pos[i] < 0 || pos[i] >= plan.w.P) throw std::out_of_range("gpt2 forward: position " + std::to_string(pos[i]) + " is past n_positions");
  }
  act(op, "logits", logits, plan.device);
  expect_numel(op, "logits", logits, (last_only ? B : B * T) * plan.w.V);
  if (plan.device < 0) {
    if (ids_dev) throw std::invalid_argument("gpt2 forward: deviceIds are for a GPU plan");
    // One task for the whole forward; the inputs are copied, so the caller may reuse them.
    std::vector<int32_t> idv(ids, ids + B * T), posv(pos, pos + B * T), maskv;
    if (mask) maskv.assign(mask, mask + B * (past + T));
    CpuStream::instance().enqueue([plan_sp, cache_sp, logits, idv = std::move(idv), posv = std::move(posv),
                                   maskv = std::move(maskv), B, T, past, last_only] {
      cpu::gpt2_forward(plan_sp->w, idv.data(), posv.data(), maskv.empty() ? nullptr : maskv.data(), cache_sp->k.data(),
                        cache_sp->v.data(), B, T, past, cache_sp->Tmax, last_only, logits.ptr<float>());
    });
    return info.Env().Undefined();
  }
  // Decode steps replay a CUDA graph (NIBBLE_CUDA_GRAPH=0 turns it off); if capture fails
  // (an unusual shape), this cache keeps using the launch-by-launch path below.
  static const bool graphs = [] {
    const char* e = std::getenv("NIBBLE_CUDA_GRAPH");
    return !(e && std::string(e) == "0");
  }();
  if (graphs && T == 1 && last_only && !cache.graph_failed) {
    try {
      if (!cache.graph)
        cache.graph = gpt2_cuda::decode_graph_create(plan.w, cache.k.data(), cache.v.data(), B, cache.Tmax, plan.device);
      gpt2_cuda::decode_graph_run(cache.graph, ids, pos, mask, past, logits.ptr<float>(),
                                  ids_dev ? ids_dev->ptr<int32_t>() : nullptr);
      return info.Env().Undefined();
    } catch (const std::exception&) {
      if (cache.graph) throw;  // a replay failed: report it
      cache.graph_failed = true;
    }
  }
  auto scratch = Storage::cuda(gpt2_cuda::gpt2_scratch_bytes(plan.w, B, T, past), plan.device);
  // `scratch` goes back to the caching allocator on return while the kernels may still run:
  // safe, since every later user of that memory is queued behind them on the same stream.
  gpt2_cuda::gpt2_forward(plan.w, scratch->data, ids, pos, mask, cache.k.data(), cache.v.data(), B, T, past, cache.Tmax,
                          last_only, logits.ptr<float>(), plan.device, ids_dev ? ids_dev->ptr<int32_t>() : nullptr);
  return info.Env().Undefined();
}
NIBBLE_BINDING("gpt2PlanForward", Forward);

}  // namespace
}  // namespace nibble
