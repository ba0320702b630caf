// Sampling on the GPU (native/cuda/sampling_cuda.h): the arguments are checked and the kernel
// and the copy of the ids are queued here, on the JS thread, so they are ordered on the stream
// exactly as the JS calls are (a forward queued right after may read the ids from `feed`); a
// worker thread waits for the ids, so the event loop keeps running meanwhile.
#include <napi.h>

#include <algorithm>
#include <optional>
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
  // Queues the sampling (throws on bad arguments or a CUDA error, before any worker exists).
  SampleWorker(Napi::Env env, TensorArg logits, std::optional<TensorArg> feed, int64_t positions, int64_t V,
               const cuda_sampling::Config& cfg, std::vector<cuda_sampling::Row> rows)
      : Napi::AsyncWorker(env, "nibble.sampleTokens"),
        logits_(std::move(logits)),
        feed_(std::move(feed)),
        ids_(rows.size()),
        status_(rows.size()),
        deferred_(Napi::Promise::Deferred::New(env)) {
    pending_ = cuda_sampling::sample_async(logits_.ptr(), logits_.dt, logits_.dim(0), positions, V, cfg, rows.data(),
                                           (int64_t)rows.size(), feed_ ? feed_->ptr<int32_t>() : nullptr, logits_.device());
  }
  ~SampleWorker() override {
    if (pending_) cuda_sampling::sample_wait(pending_, ids_.data(), status_.data());  // never queued: still wait
  }
  Napi::Promise promise() { return deferred_.Promise(); }
  void Execute() override {
    cuda_sampling::Pending* p = pending_;
    pending_ = nullptr;
    try {
      cuda_sampling::sample_wait(p, ids_.data(), status_.data());
    } catch (const std::exception& e) {
      SetError(e.what());
    }
  }
  void OnOK() override {
    Napi::Env env = Env();
    const size_t n = ids_.size();
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
  TensorArg logits_;              // hold the storages until the kernel is done
  std::optional<TensorArg> feed_;
  cuda_sampling::Pending* pending_ = nullptr;
  std::vector<int32_t> ids_, status_;
  Napi::Promise::Deferred deferred_;
};

// sampleTokens(logits [B, V] | [B, positions, V] on CUDA, rows: Int32Array (batch rows to pick
//   for), u: Float64Array | null (one uniform per row when sampling), history: Int32Array | null,
//   historyOffsets: Int32Array | null (rows.length + 1 offsets into history), config,
//   feed?: int32 [B] tensor on the logits' device | null (each kOk row's id is also written to
//   feed[row] on the GPU, for a forward queued next))
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

  std::optional<TensorArg> feed;
  if (info.Length() > 6 && !info[6].IsNull() && !info[6].IsUndefined()) {
    feed = tensor_arg(info, 6, "feed");
    if (feed->dt != DType::I32 || feed->on_cpu() || feed->device() != logits.device() || feed->numel() != B)
      throw Napi::TypeError::New(env, std::string(kOp) + ": feed must be an int32 tensor of " + std::to_string(B) +
                                          " elements on the logits' device, got " + feed->describe());
  }
  for (size_t r = 0; r < n; r++) rs[r].history = rs[r].history_len ? hist.data() + hist_off[r] : nullptr;
  // The histories are copied into pinned staging before the constructor returns.
  auto* w = new SampleWorker(env, logits, std::move(feed), positions, V, cfg, std::move(rs));
  Napi::Promise p = w->promise();
  w->Queue();
  return p;
}
NIBBLE_BINDING("sampleTokens", SampleTokens);

}  // namespace
}  // namespace nibble
