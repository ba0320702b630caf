// GPT-2 forward ops. Each binding validates dtypes, shapes and devices on the JS thread and
// enqueues the kernel. A trailing `true` argument selects the plain reference kernel (tests
// compare the two).
#include <napi.h>

#include "bindings/gpt2_cuda_bindings.h"
#include "bindings/gpt2_shapes.h"
#include "bindings/registry.h"
#include "bindings/tensor_arg.h"
#include "core/stream.h"
#include "cpu/gpt2_ops.h"

namespace nibble {
namespace {

bool use_ref(const Napi::CallbackInfo& info, size_t i) { return info.Length() > i && info[i].ToBoolean(); }

void f32_cpu(const char* op, const char* name, const TensorArg& t) {
  expect_dtype(op, name, t, DType::F32);
  expect_cpu(op, t);
}

// Parameters may be stored in any float type; a pair (weight and bias, wte and wpe) shares one.
void param_cpu(const char* op, const char* name, const TensorArg& t) {
  expect_float(op, name, t);
  expect_cpu(op, t);
}
void same_dtype(const char* op, const TensorArg& a, const TensorArg& b) {
  if (a.dt != b.dt)
    throw std::invalid_argument(std::string(op) + ": parameters must share one dtype, got " + a.describe() + " and " +
                                b.describe());
}

// embedding(out[T,C], wte[V,C], wpe[P,C], ids[T] int32, pos[T] int32)
Napi::Value Embedding(const Napi::CallbackInfo& info) {
  if (gpt2_cuda_bindings::on_cuda(info)) return gpt2_cuda_bindings::Embedding(info);
  auto out = tensor_arg(info, 0, "out"), wte = tensor_arg(info, 1, "wte"), wpe = tensor_arg(info, 2, "wpe"),
       ids = tensor_arg(info, 3, "ids"), pos = tensor_arg(info, 4, "pos");
  const char* op = "embedding";
  f32_cpu(op, "out", out), param_cpu(op, "wte", wte), param_cpu(op, "wpe", wpe), same_dtype(op, wte, wpe);
  expect_dtype(op, "ids", ids, DType::I32), expect_dtype(op, "pos", pos, DType::I32);
  expect_rank(op, "wte", wte, 2), expect_rank(op, "wpe", wpe, 2);
  const int64_t T = ids.numel(), C = wte.dim(1), V = wte.dim(0), P = wpe.dim(0);
  if (wpe.dim(1) != C) throw std::invalid_argument("embedding: wte and wpe widths differ");
  expect_numel(op, "pos", pos, T), expect_numel(op, "out", out, T * C);
  // Ids may come from a kernel still queued, so they are checked when the kernel runs: an
  // out-of-range id skips the lookup and surfaces as a JS error at the next read.
  bool ref = use_ref(info, 5);
  CpuStream::instance().enqueue([=] {
    const int32_t* idp = ids.ptr<int32_t>();
    const int32_t* pp = pos.ptr<int32_t>();
    for (int64_t t = 0; t < T; t++) {
      if (idp[t] < 0 || idp[t] >= V)
        throw std::out_of_range("embedding: token id " + std::to_string(idp[t]) + " is outside the vocabulary (0.." +
                                std::to_string(V - 1) + ")");
      if (pp[t] < 0 || pp[t] >= P)
        throw std::out_of_range("embedding: position " + std::to_string(pp[t]) + " is past n_positions (" +
                                std::to_string(P) + ")");
    }
    (ref ? cpu::embedding_ref : cpu::embedding)(out.ptr<float>(), wte.ptr(), wpe.ptr(), wte.dt, ids.ptr<int32_t>(), pos.ptr<int32_t>(), T, C);
  });
  return info.Env().Undefined();
}
NIBBLE_BINDING("embedding", Embedding);

// layernorm(out, x[rows,C], w[C], b[C], eps)
Napi::Value LayerNorm(const Napi::CallbackInfo& info) {
  if (gpt2_cuda_bindings::on_cuda(info)) return gpt2_cuda_bindings::LayerNorm(info);
  auto out = tensor_arg(info, 0, "out"), x = tensor_arg(info, 1, "x"), w = tensor_arg(info, 2, "weight"),
       b = tensor_arg(info, 3, "bias");
  float eps = (float)num_arg(info, 4, "eps");
  const char* op = "layernorm";
  f32_cpu(op, "out", out), f32_cpu(op, "x", x), param_cpu(op, "weight", w), param_cpu(op, "bias", b), same_dtype(op, w, b);
  const int64_t C = x.dim(-1), rows = x.numel() / C;
  expect_numel(op, "weight", w, C), expect_numel(op, "bias", b, C), expect_numel(op, "out", out, x.numel());
  bool ref = use_ref(info, 5);
  CpuStream::instance().enqueue([=] {
    (ref ? cpu::layernorm_ref : cpu::layernorm)(out.ptr<float>(), x.ptr<float>(), w.ptr(), b.ptr(), w.dt, rows, C, eps);
  });
  return info.Env().Undefined();
}
NIBBLE_BINDING("layernorm", LayerNorm);

// linear(out[M,N], x[M,K], w[N,K], bias[N] | null)
Napi::Value Linear(const Napi::CallbackInfo& info) {
  if (gpt2_cuda_bindings::on_cuda(info)) return gpt2_cuda_bindings::Linear(info);
  auto out = tensor_arg(info, 0, "out"), x = tensor_arg(info, 1, "x"), w = tensor_arg(info, 2, "weight");
  TensorArg b;
  bool has_bias = optional_tensor_arg(info, 3, "bias", &b);
  const char* op = "linear";
  f32_cpu(op, "out", out), f32_cpu(op, "x", x), param_cpu(op, "weight", w);
  expect_rank(op, "weight", w, 2);
  const int64_t N = w.dim(0), K = w.dim(1);
  if (x.dim(-1) != K)
    throw std::invalid_argument("linear: x " + x.describe() + " has " + std::to_string(x.dim(-1)) +
                                " features but the weight " + w.describe() + " expects " + std::to_string(K));
  const int64_t M = x.numel() / K;
  expect_numel(op, "out", out, M * N);
  if (has_bias) param_cpu(op, "bias", b), same_dtype(op, w, b), expect_numel(op, "bias", b, N);
  bool ref = use_ref(info, 4);
  CpuStream::instance().enqueue([=] {
    (ref ? cpu::linear_ref : cpu::linear)(out.ptr<float>(), x.ptr<float>(), w.ptr(), has_bias ? b.ptr() : nullptr, w.dt,
                                          M, K, N);
  });
  return info.Env().Undefined();
}
NIBBLE_BINDING("linear", Linear);

Napi::Value GeluNew(const Napi::CallbackInfo& info) {
  if (gpt2_cuda_bindings::on_cuda(info)) return gpt2_cuda_bindings::GeluNew(info);
  auto out = tensor_arg(info, 0, "out"), x = tensor_arg(info, 1, "x");
  f32_cpu("gelu", "out", out), f32_cpu("gelu", "x", x);
  expect_numel("gelu", "out", out, x.numel());
  bool ref = use_ref(info, 2);
  CpuStream::instance().enqueue(
      [=] { (ref ? cpu::gelu_new_ref : cpu::gelu_new)(out.ptr<float>(), x.ptr<float>(), x.numel()); });
  return info.Env().Undefined();
}
NIBBLE_BINDING("geluNew", GeluNew);

Napi::Value Add(const Napi::CallbackInfo& info) {
  if (gpt2_cuda_bindings::on_cuda(info)) return gpt2_cuda_bindings::Add(info);
  auto out = tensor_arg(info, 0, "out"), a = tensor_arg(info, 1, "a"), b = tensor_arg(info, 2, "b");
  f32_cpu("add", "out", out), f32_cpu("add", "a", a), f32_cpu("add", "b", b);
  expect_numel("add", "b", b, a.numel()), expect_numel("add", "out", out, a.numel());
  bool ref = use_ref(info, 3);
  CpuStream::instance().enqueue(
      [=] { (ref ? cpu::add_ref : cpu::add)(out.ptr<float>(), a.ptr<float>(), b.ptr<float>(), a.numel()); });
  return info.Env().Undefined();
}
NIBBLE_BINDING("add", Add);

Napi::Value Softmax(const Napi::CallbackInfo& info) {
  if (gpt2_cuda_bindings::on_cuda(info)) return gpt2_cuda_bindings::Softmax(info);
  auto out = tensor_arg(info, 0, "out"), x = tensor_arg(info, 1, "x");
  f32_cpu("softmax", "out", out), f32_cpu("softmax", "x", x);
  expect_numel("softmax", "out", out, x.numel());
  const int64_t cols = x.dim(-1), rows = x.numel() / cols;
  bool ref = use_ref(info, 2);
  CpuStream::instance().enqueue(
      [=] { (ref ? cpu::softmax_ref : cpu::softmax)(out.ptr<float>(), x.ptr<float>(), rows, cols); });
  return info.Env().Undefined();
}
NIBBLE_BINDING("softmax", Softmax);

// attention(out[B,T,C], qkv[B,T,3C], kcache[B,H,Tmax,D], vcache, mask[B,past+T] int32 | null, past, nHead)
Napi::Value Attention(const Napi::CallbackInfo& info) {
  if (gpt2_cuda_bindings::on_cuda(info)) return gpt2_cuda_bindings::Attention(info);
  auto out = tensor_arg(info, 0, "out"), qkv = tensor_arg(info, 1, "qkv"), kc = tensor_arg(info, 2, "kCache"),
       vc = tensor_arg(info, 3, "vCache");
  TensorArg mask;
  bool has_mask = optional_tensor_arg(info, 4, "mask", &mask);
  const int64_t past = int_arg(info, 5, "past");
  const char* op = "attention";
  f32_cpu(op, "out", out), f32_cpu(op, "qkv", qkv), f32_cpu(op, "kCache", kc), f32_cpu(op, "vCache", vc);
  const AttentionDims d = attention_dims(out, qkv, kc, vc, has_mask ? &mask : nullptr, past);
  const int64_t B = d.B, T = d.T, H = d.H, Tmax = d.Tmax, D = d.D;
  bool ref = use_ref(info, 6);
  CpuStream::instance().enqueue([=] {
    (ref ? cpu::attention_ref : cpu::attention)(out.ptr<float>(), qkv.ptr<float>(), kc.ptr<float>(), vc.ptr<float>(),
                                                has_mask ? mask.ptr<int32_t>() : nullptr, B, T, past, Tmax, H, D);
  });
  return info.Env().Undefined();
}
NIBBLE_BINDING("attention", Attention);

}  // namespace
}  // namespace nibble
