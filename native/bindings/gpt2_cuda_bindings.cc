// GPT-2 ops on CUDA tensors: validate on the JS thread (dtypes, shapes, one device for all),
// then launch on the device's stream and return. Also `cudaMemInfo(device)`. (The whole-forward
// plans, GPU and CPU, are in gpt2_plan_bindings.cc.)
#include "bindings/gpt2_cuda_bindings.h"
#include "bindings/gpt2_shapes.h"

#include <cmath>
#include <cstdlib>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "bindings/registry.h"
#include "bindings/tensor_arg.h"
#include "cuda/gpt2_cuda.h"
#include "formats.h"

namespace nibble {
namespace gpt2_cuda_bindings {

namespace {

// Every tensor of an op sits on the output's GPU.
void on_device(const char* op, const char* name, const TensorArg& t, int device) {
  expect_on_device(op, name, t, device, "the output");
}
void act(const char* op, const char* name, const TensorArg& t, int device) {
  expect_dtype(op, name, t, DType::F32);
  on_device(op, name, t, device);
}
void param(const char* op, const char* name, const TensorArg& t, int device) {
  expect_float(op, name, t);
  on_device(op, name, t, device);
}
void same_dtype(const char* op, const TensorArg& a, const TensorArg& b) {
  if (a.dt != b.dt)
    throw std::invalid_argument(std::string(op) + ": parameters must share one dtype, got " + a.describe() + " and " +
                                b.describe());
}

}  // namespace

bool on_cuda(const Napi::CallbackInfo& info) {
  if (info.Length() < 1 || !info[0].IsObject()) return false;
  Napi::Value h = info[0].As<Napi::Object>().Get("_h");
  if (!h.IsObject()) return false;
  Napi::Value d = h.As<Napi::Object>().Get("device");
  return d.IsNumber() && d.As<Napi::Number>().Int32Value() >= 0;
}

Napi::Value Embedding(const Napi::CallbackInfo& info) {
  auto out = tensor_arg(info, 0, "out"), wte = tensor_arg(info, 1, "wte"), wpe = tensor_arg(info, 2, "wpe"),
       ids = tensor_arg(info, 3, "ids"), pos = tensor_arg(info, 4, "pos");
  const char* op = "embedding";
  const int dev = out.device();
  act(op, "out", out, dev), param(op, "wte", wte, dev), param(op, "wpe", wpe, dev), same_dtype(op, wte, wpe);
  expect_dtype(op, "ids", ids, DType::I32), expect_dtype(op, "pos", pos, DType::I32);
  on_device(op, "ids", ids, dev), on_device(op, "pos", pos, dev);
  expect_rank(op, "wte", wte, 2), expect_rank(op, "wpe", wpe, 2);
  const int64_t T = ids.numel(), C = wte.dim(1), V = wte.dim(0), P = wpe.dim(0);
  if (wpe.dim(1) != C) throw std::invalid_argument("embedding: wte and wpe widths differ");
  expect_numel(op, "pos", pos, T), expect_numel(op, "out", out, T * C);
  gpt2_cuda::embedding(out.ptr<float>(), wte.ptr(), wpe.ptr(), wte.dt, ids.ptr<int32_t>(), pos.ptr<int32_t>(), T, C, V,
                       P, dev);
  return info.Env().Undefined();
}

Napi::Value LayerNorm(const Napi::CallbackInfo& info) {
  auto out = tensor_arg(info, 0, "out"), x = tensor_arg(info, 1, "x"), w = tensor_arg(info, 2, "weight"),
       b = tensor_arg(info, 3, "bias");
  float eps = (float)num_arg(info, 4, "eps");
  const char* op = "layernorm";
  const int dev = out.device();
  act(op, "out", out, dev), act(op, "x", x, dev), param(op, "weight", w, dev), param(op, "bias", b, dev);
  same_dtype(op, w, b);
  if (x.shape.empty()) throw std::invalid_argument("layernorm: 'x' must have at least one dimension");
  const int64_t C = x.dim(-1), rows = C ? x.numel() / C : 0;
  expect_numel(op, "weight", w, C), expect_numel(op, "bias", b, C), expect_numel(op, "out", out, x.numel());
  gpt2_cuda::layernorm(out.ptr<float>(), x.ptr<float>(), w.ptr(), b.ptr(), w.dt, rows, C, eps, dev);
  return info.Env().Undefined();
}

Napi::Value Linear(const Napi::CallbackInfo& info) {
  auto out = tensor_arg(info, 0, "out"), x = tensor_arg(info, 1, "x"), w = tensor_arg(info, 2, "weight");
  TensorArg b;
  bool has_bias = optional_tensor_arg(info, 3, "bias", &b);
  const char* op = "linear";
  const int dev = out.device();
  act(op, "out", out, dev), act(op, "x", x, dev), param(op, "weight", w, dev);
  expect_rank(op, "weight", w, 2);
  const int64_t N = w.dim(0), K = w.dim(1);
  if (x.shape.empty() || x.dim(-1) != K)
    throw std::invalid_argument("linear: x " + x.describe() + " has " + std::to_string(x.shape.empty() ? 0 : x.dim(-1)) +
                                " features but the weight " + w.describe() + " expects " + std::to_string(K));
  const int64_t M = K ? x.numel() / K : 0;
  expect_numel(op, "out", out, M * N);
  if (has_bias) param(op, "bias", b, dev), same_dtype(op, w, b), expect_numel(op, "bias", b, N);
  gpt2_cuda::linear(out.ptr<float>(), x.ptr<float>(), w.ptr(), has_bias ? b.ptr() : nullptr, w.dt, M, K, N, dev);
  return info.Env().Undefined();
}

Napi::Value GeluNew(const Napi::CallbackInfo& info) {
  auto out = tensor_arg(info, 0, "out"), x = tensor_arg(info, 1, "x");
  const int dev = out.device();
  act("gelu", "out", out, dev), act("gelu", "x", x, dev);
  expect_numel("gelu", "out", out, x.numel());
  gpt2_cuda::gelu_new(out.ptr<float>(), x.ptr<float>(), x.numel(), dev);
  return info.Env().Undefined();
}

Napi::Value Add(const Napi::CallbackInfo& info) {
  auto out = tensor_arg(info, 0, "out"), a = tensor_arg(info, 1, "a"), b = tensor_arg(info, 2, "b");
  const int dev = out.device();
  act("add", "out", out, dev), act("add", "a", a, dev), act("add", "b", b, dev);
  expect_numel("add", "b", b, a.numel()), expect_numel("add", "out", out, a.numel());
  gpt2_cuda::add(out.ptr<float>(), a.ptr<float>(), b.ptr<float>(), a.numel(), dev);
  return info.Env().Undefined();
}

Napi::Value Softmax(const Napi::CallbackInfo& info) {
  auto out = tensor_arg(info, 0, "out"), x = tensor_arg(info, 1, "x");
  const int dev = out.device();
  act("softmax", "out", out, dev), act("softmax", "x", x, dev);
  expect_numel("softmax", "out", out, x.numel());
  if (x.shape.empty()) throw std::invalid_argument("softmax: 'x' must have at least one dimension");
  const int64_t cols = x.dim(-1), rows = cols ? x.numel() / cols : 0;
  gpt2_cuda::softmax(out.ptr<float>(), x.ptr<float>(), rows, cols, dev);
  return info.Env().Undefined();
}

Napi::Value Attention(const Napi::CallbackInfo& info) {
  auto out = tensor_arg(info, 0, "out"), qkv = tensor_arg(info, 1, "qkv"), kc = tensor_arg(info, 2, "kCache"),
       vc = tensor_arg(info, 3, "vCache");
  TensorArg mask;
  bool has_mask = optional_tensor_arg(info, 4, "mask", &mask);
  const int64_t past = int_arg(info, 5, "past");
  const char* op = "attention";
  const int dev = out.device();
  act(op, "out", out, dev), act(op, "qkv", qkv, dev), act(op, "kCache", kc, dev), act(op, "vCache", vc, dev);
  const AttentionDims d = attention_dims(out, qkv, kc, vc, has_mask ? &mask : nullptr, past);
  const int64_t B = d.B, T = d.T, H = d.H, Tmax = d.Tmax, D = d.D;
  if (has_mask) on_device(op, "mask", mask, dev);
  gpt2_cuda::attention(out.ptr<float>(), qkv.ptr<float>(), kc.ptr<float>(), vc.ptr<float>(),
                       has_mask ? mask.ptr<int32_t>() : nullptr, B, T, past, Tmax, H, D, dev);
  return info.Env().Undefined();
}

namespace {


// cudaMemInfo(device) -> { free, total } in bytes (memory checks and benchmarks).
Napi::Value CudaMemInfo(const Napi::CallbackInfo& info) {
  int device = info.Length() > 0 ? (int)int_arg(info, 0, "device") : 0;
  size_t free_b = 0, total_b = 0;
  gpt2_cuda::mem_info(device, &free_b, &total_b);
  Napi::Object o = Napi::Object::New(info.Env());
  o.Set("free", (double)free_b);
  o.Set("total", (double)total_b);
  return o;
}
NIBBLE_BINDING("cudaMemInfo", CudaMemInfo);
}  // namespace

}  // namespace gpt2_cuda_bindings
}  // namespace nibble
