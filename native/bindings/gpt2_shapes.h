// Shape checks shared by the CPU and CUDA GPT-2 bindings: the same op contract on every
// device. dtype and device checks stay with each binding.
#pragma once
#include <stdexcept>
#include <string>

#include "bindings/tensor_arg.h"

namespace nibble {

struct AttentionDims {
  int64_t B, T, H, Tmax, D;
};

// attention(out[B,T,C], qkv[B,T,3C], kcache[B,H,Tmax,D], vcache, mask[B,past+T] int32 | null, past)
inline AttentionDims attention_dims(const TensorArg& out, const TensorArg& qkv, const TensorArg& kc,
                                    const TensorArg& vc, const TensorArg* mask, int64_t past) {
  const char* op = "attention";
  expect_rank(op, "qkv", qkv, 3), expect_rank(op, "kCache", kc, 4);
  const int64_t B = qkv.dim(0), T = qkv.dim(1), C3 = qkv.dim(2);
  const int64_t H = kc.dim(1), Tmax = kc.dim(2), D = kc.dim(3);
  if (C3 != 3 * H * D || kc.dim(0) != B || kc.shape != vc.shape)
    throw std::invalid_argument("attention: qkv " + qkv.describe() + " does not match the cache " + kc.describe());
  if (past < 0 || past + T > Tmax)
    throw std::out_of_range("attention: " + std::to_string(past + T) + " positions exceed the KV cache length " +
                            std::to_string(Tmax));
  expect_numel(op, "out", out, B * T * H * D);
  if (mask) expect_dtype(op, "mask", *mask, DType::I32), expect_numel(op, "mask", *mask, B * (past + T));
  return {B, T, H, Tmax, D};
}

}  // namespace nibble
