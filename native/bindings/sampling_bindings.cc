// Sampling on the GPU (native/cuda/sampling_cuda.h): the arguments are checked here, on the JS
// thread; the kernel, the copy of the ids and the wait for the stream run on a worker thread,
// so the event loop keeps running while the forward that wrote the logits finishes.
#include <napi.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "bindings/registry.h"
#include "bindings/tensor_arg.h"
#include "cuda/sampling_cuda.h"

namespace nibble {
namespace {

const char* kOp = "sampleTokens";

template <typename TA>
TA typed_arg(const Napi::CallbackInfo& info, size_t i, const char* name, napi_typedarray_type type, const char* want,
             bool nullable) {
  if (nullable && (i >= info.Length() || info[i].IsNull() || info[i].IsUndefined())) return TA();
  if (i >= info.Length() || !info[i].IsTypedArray() || info[i].As<Napi::TypedArray>().TypedArrayType() != type)
    throw Napi::TypeError::New(info.Env(), std::string(kOp) + ": '" + name + "' must be " + want +
                                               (nullable ? " or null" : ""));
  return info[i].As<TA>();
}

double opt_number(Napi::Object o, const char* key, double dflt) {
  Napi::Value v = o.Get(key);
  if (v.IsUndefined() || v.IsNull()) return dflt;
  if (!v.IsNumber()) throw Napi::TypeError::New(o.Env(), std::string(kOp) + ": config." + key + " must be a number");
  return v.As<Napi::Number>().DoubleValue();
}

class SampleWorker : public Napi::AsyncWorker {
 public:
  SampleWorker(Napi::Env env, TensorArg logits, int64_t positions, int64_t V, cuda_sampling::Config cfg,
               std::vector<cuda_sampling::Row> rows, std::vector<int32_t> history, std::vector<int64_t> history_off)
      : Napi::AsyncWorker(env, "nibble.sampleTokens"),
        logits_(std::move(logits)),
        positions_(positions),
        V_(V),
        cfg_(cfg),
        rows_(std::move(rows)),
        history_(std::move(history)),
        ids_(rows_.size()),
        status_(rows_.size()),
        deferred_(Napi::Promise::Deferred::New(env)) {
    // Each row's history lies in this worker's own copy of the ids.
    for (size_t r = 0; r < rows_.size(); r++) rows_[r].history = rows_[r].history_len ? history_.data() + history_off[r] : nullptr;
  }
  Napi::Promise promise() { return deferred_.Promise(); }
  void Execute() override {
    try {
      cuda_sampling::sample(logits_.ptr(), logits_.dt, logits_.dim(0), positions_, V_, cfg_, rows_.data(),
                            (int64_t)rows_.size(), ids_.data(), status_.data(), logits_.device());
    } catch (const std::exception& e) {
      SetError(e.what());
    }
  }
  void OnOK() override {
    Napi::Env env = Env();
    const size_t n = rows_.size();
    Napi::Int32Array ids = Napi::Int32Array::New(env, n), status = Napi::Int32Array::New(env, n);
    std::copy(ids_.begin(), ids_.end(), ids.Data());
    std::copy(status_.begin(), status_.end(), status.Data());
    Napi::Object o = Napi::Object::New(env);
    o.Set("ids", ids);
    o.Set("status", status);
    deferred_.Resolve(o);
  }
  void OnError(const Napi::Error& e) override { deferred_.Reject(e.Value()); }

 private:
  TensorArg logits_;  // holds the storage until the kernel has read it
  int64_t positions_, V_;
  cuda_sampling::Config cfg_;
  std::vector<cuda_sampling::Row> rows_;
  std::vector<int32_t> history_;
  std::vector<int32_t> ids_, status_;
  Napi::Promise::Deferred deferred_;
};

// sampleTokens(logits [B, V] | [B, positions, V] on CUDA, rows: Int32Array (batch rows to pick
//   for), u: Float64Array | null (one uniform per row when sampling), history: Int32Array | null,
//   historyOffsets: Int32Array | null (rows.length + 1 offsets into history), config)
//   -> Promise<{ ids: Int32Array, status: Int32Array }>
// config: { doSample, temperature, topK, topP, minP (null = off), repetitionPenalty,
//   minTokensToKeep?, forceGlobal? }, with the meaning of lib/generation's options.
Napi::Value SampleTokens(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  TensorArg logits = tensor_arg(info, 0, "logits");
  if (logits.on_cpu())
    throw Napi::TypeError::New(env, std::string(kOp) + ": logits must be on a CUDA device, got " + logits.describe());
  if (logits.shape.size() != 2 && logits.shape.size() != 3)
    throw Napi::RangeError::New(env, std::string(kOp) + ": logits must be [B, V] or [B, positions, V], got " + logits.describe());
  const int64_t B = logits.dim(0), V = logits.dim(-1);
  const int64_t positions = logits.shape.size() == 3 ? logits.dim(1) : 1;
  if (B < 1 || V < 1 || positions < 1) throw Napi::RangeError::New(env, std::string(kOp) + ": empty logits " + logits.describe());

  Napi::Int32Array rows = typed_arg<Napi::Int32Array>(info, 1, "rows", napi_int32_array, "an Int32Array", false);
  const size_t n = rows.ElementLength();
  Napi::Float64Array u = typed_arg<Napi::Float64Array>(info, 2, "u", napi_float64_array, "a Float64Array", true);
  Napi::Int32Array history = typed_arg<Napi::Int32Array>(info, 3, "history", napi_int32_array, "an Int32Array", true);
  Napi::Int32Array offsets = typed_arg<Napi::Int32Array>(info, 4, "historyOffsets", napi_int32_array, "an Int32Array", true);
  if (info.Length() < 6 || !info[5].IsObject()) throw Napi::TypeError::New(env, std::string(kOp) + ": config must be an object");
  Napi::Object c = info[5].As<Napi::Object>();

  cuda_sampling::Config cfg;
  cfg.do_sample = c.Get("doSample").ToBoolean();
  const double temperature = opt_number(c, "temperature", 1.0);
  const double top_k = opt_number(c, "topK", 0.0);
  const double top_p = opt_number(c, "topP", 1.0);
  const double penalty = opt_number(c, "repetitionPenalty", 1.0);
  const double mtk = opt_number(c, "minTokensToKeep", 1.0);
  Napi::Value min_p = c.Get("minP");
  if (!(temperature > 0) && cfg.do_sample) throw Napi::RangeError::New(env, std::string(kOp) + ": temperature must be > 0");
  if (!(top_k >= 0) || top_k != std::floor(top_k)) throw Napi::RangeError::New(env, std::string(kOp) + ": topK must be an integer >= 0");
  if (!(top_p >= 0 && top_p <= 1)) throw Napi::RangeError::New(env, std::string(kOp) + ": topP must be in [0, 1]");
  if (!(penalty > 0) || !std::isfinite(penalty)) throw Napi::RangeError::New(env, std::string(kOp) + ": repetitionPenalty must be > 0");
  if (!(mtk >= 1) || mtk != std::floor(mtk)) throw Napi::RangeError::New(env, std::string(kOp) + ": minTokensToKeep must be an integer >= 1");
  // Math.fround of each, as the JS processors do.
  cfg.temperature = (float)temperature;
  cfg.repetition_penalty = (float)penalty;
  cfg.min_tokens_to_keep = (int64_t)std::min(mtk, 2147483647.0);
  // applyTopK: keep = min(max(k, minTokensToKeep), V); off when topK is 0.
  cfg.top_k_keep = top_k == 0 ? 0 : (int64_t)std::min(std::max(top_k, mtk), (double)V);
  cfg.top_p = top_p;
  if (!min_p.IsUndefined() && !min_p.IsNull()) {
    const double m = opt_number(c, "minP", 0.0);
    if (!(m >= 0 && m <= 1)) throw Napi::RangeError::New(env, std::string(kOp) + ": minP must be in [0, 1]");
    cfg.use_min_p = true;
    cfg.min_p = (float)m;
  }
  cfg.force_global = c.Get("forceGlobal").ToBoolean();

  if (cfg.do_sample && (u.IsEmpty() || u.ElementLength() != n))
    throw Napi::RangeError::New(env, std::string(kOp) + ": sampling needs one u per row (" + std::to_string(n) + ")");
  const bool has_history = !history.IsEmpty();
  if (has_history && (offsets.IsEmpty() || offsets.ElementLength() != n + 1))
    throw Napi::RangeError::New(env, std::string(kOp) + ": historyOffsets must have rows.length + 1 entries");

  std::vector<int32_t> hist;
  if (has_history) hist.assign(history.Data(), history.Data() + history.ElementLength());
  std::vector<cuda_sampling::Row> rs(n);
  std::vector<int64_t> hist_off(n, 0);
  for (size_t r = 0; r < n; r++) {
    const int32_t b = rows.Data()[r];
    if (b < 0 || b >= B)
      throw Napi::RangeError::New(env, std::string(kOp) + ": row " + std::to_string(b) + " is outside the batch of " + std::to_string(B));
    rs[r].batch = b;
    if (cfg.do_sample) {
      rs[r].u = u.Data()[r];
      if (!(rs[r].u >= 0.0 && rs[r].u < 1.0)) throw Napi::RangeError::New(env, std::string(kOp) + ": u must be in [0, 1)");
    }
    if (has_history) {
      const int32_t a = offsets.Data()[r], e = offsets.Data()[r + 1];
      if (a < 0 || e < a || (size_t)e > hist.size())
        throw Napi::RangeError::New(env, std::string(kOp) + ": historyOffsets are not increasing offsets into history");
      hist_off[r] = a;
      rs[r].history_len = e - a;
    }
  }

  auto* w = new SampleWorker(env, logits, positions, V, cfg, std::move(rs), std::move(hist), std::move(hist_off));
  Napi::Promise p = w->promise();
  w->Queue();
  return p;
}
NIBBLE_BINDING("sampleTokens", SampleTokens);

}  // namespace
}  // namespace nibble
