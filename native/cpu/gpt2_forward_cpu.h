// The whole GPT-2 forward pass on the CPU as one queued task (the CPU side of the whole-forward
// plan that native/cuda/gpt2_forward.cu serves on a GPU). It calls the kernels the per-op path
// (lib/models/gpt2.ts and its modules) queues one binding at a time, in the same order and with
// the same conversions, so the two give the same bits; what it saves is the JS side: ~150
// binding calls a decode step, each reading its tensors and allocating its output
// (bench/kernels/NOTES.md, session 12).
#pragma once
#include <cstdint>

#include "cuda/gpt2_cuda.h"  // Gpt2Weights / QLinear: plain structs of pointers, host ones here

namespace nibble {
namespace cpu {

// ids/pos [B*T] and mask [B*(past+T)] (or null): host arrays; kc/vc: one [B, H, Tmax, D]
// float32 cache pair per layer; logits [B*T, V], or [B, V] when last_only. Runs on the calling
// thread (the binding queues it on the CPU stream); the kernels fan out over the thread pool.
void gpt2_forward(const gpt2_cuda::Gpt2Weights& w, const int32_t* ids, const int32_t* pos, const int32_t* mask,
                  float* const* kc, float* const* vc, int64_t B, int64_t T, int64_t past, int64_t Tmax,
                  bool last_only, float* logits);

}  // namespace cpu
}  // namespace nibble
