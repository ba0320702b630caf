// The CUDA side of the GPT-2 op bindings: gpt2_bindings.cc hands an op over here when its
// output tensor lives on a GPU. Same arguments and checks as the CPU bindings, plus: every
// tensor on that same GPU. Kernels are queued on the device's stream; nothing waits.
#pragma once
#include <napi.h>

namespace nibble {
namespace gpt2_cuda_bindings {

// True when argument 0 (the output) is a CUDA tensor.
bool on_cuda(const Napi::CallbackInfo& info);

Napi::Value Embedding(const Napi::CallbackInfo& info);
Napi::Value LayerNorm(const Napi::CallbackInfo& info);
Napi::Value Linear(const Napi::CallbackInfo& info);
Napi::Value GeluNew(const Napi::CallbackInfo& info);
Napi::Value Add(const Napi::CallbackInfo& info);
Napi::Value Softmax(const Napi::CallbackInfo& info);
Napi::Value Attention(const Napi::CallbackInfo& info);

}  // namespace gpt2_cuda_bindings
}  // namespace nibble
