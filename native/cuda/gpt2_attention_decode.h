// Decode-step attention (T = 1) for head sizes 4..128 (powers of two): see
// gpt2_attention_decode.cu. Called by attention() and attention_decode_dev() when supported.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

namespace nibble {
namespace gpt2_cuda {

// Positions the decode kernel takes (its scores in at most 40 KB of shared memory).
constexpr int64_t kAttentionDecodeMaxPositions = 10240;
// Whether the decode kernel takes this head size and these pointers (16-byte aligned).
bool attention_decode_supported(int64_t D, const void* qkv, const void* kc, const void* vc, const void* out);
// out [B, H*D] <- softmax(q.K^T * D^-1/2 + mask) . V for each (head, sequence), the new key and
// value written to cache row `past` first. past comes from past_dev when that is not null (a
// graph replay). mask: [B, mask_stride] 0/1 or null. max_positions bounds past + 1 (the shared
// memory of the scores), at most kAttentionDecodeMaxPositions.
void attention_decode(float* out, const float* qkv, float* kc, float* vc, const int32_t* mask, int64_t mask_stride,
                      int64_t past, const int32_t* past_dev, int64_t B, int64_t Tmax, int64_t H, int64_t D,
                      int64_t max_positions, cudaStream_t s);

}  // namespace gpt2_cuda
}  // namespace nibble
