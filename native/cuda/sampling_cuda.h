// Choosing the next token on the GPU: the logits processors of lib/generation/
// logits-processors.ts (repetition penalty, then when sampling temperature -> top-k -> top-p ->
// min-p) and the choice of lib/generation/sampler.ts (argmax, or a draw with a uniform u the
// host took from its seeded Xoshiro128 stream), one thread block per batch row. Only the
// chosen ids (and a status per row) come back to the host. sampling.cu says, rule by rule,
// where the arithmetic can differ from the JS (summation order only).
//
// Work is queued on gpt2_cuda::stream(device), after the forward that wrote the logits;
// sample() returns once the ids are in host memory. Built without nvcc, sample() throws
// "built without CUDA" (sampling_cuda_stub.cc).
#pragma once
#include <cstdint>

#include "core/dtype.h"

namespace nibble {
namespace cuda_sampling {

// What a row's status says. Anything but kOk means "let the host do this step": the JS
// re-runs the step on the host path, which gives the host's result or the host's error.
enum Status : int32_t {
  kOk = 0,
  kNaN = 1,          // the logits row holds a NaN (the host path throws)
  kPosInf = 2,       // sampling with a +inf score (the host's softmax takes NaN paths there)
  kAllFiltered = 3,  // sampling with every score -inf (the host path throws)
};

struct Config {
  bool do_sample = false;
  // Applied when != 1 (an exact float32 1 is the identity anyway). Both are the JS option
  // rounded to float32 (Math.fround), as the JS processors use them.
  float repetition_penalty = 1.0f;
  float temperature = 1.0f;
  // Tokens kept by top-k: min(max(topK, minTokensToKeep), V); 0 or >= V = off.
  int64_t top_k_keep = 0;
  // Top-p runs when top_p < 1; its limit is fround(1 - top_p) computed in double, as the JS.
  double top_p = 1.0;
  // Min-p runs when use_min_p; min_p is Math.fround(minP).
  bool use_min_p = false;
  float min_p = 0.0f;
  int64_t min_tokens_to_keep = 1;  // top-p and min-p (the JS processors' default is 1)
  // Tests: keep the row in global memory even when it fits in shared memory.
  bool force_global = false;
};

struct Row {
  int64_t batch = 0;               // which row of the logits' batch dimension
  double u = 0.0;                  // uniform in [0, 1) (used when do_sample)
  const int32_t* history = nullptr;  // host ids the repetition penalty looks at (duplicates allowed)
  int64_t history_len = 0;
};

// logits: device memory of `device`, [B, positions, V] of dtype dt (float32, float16 or
// bfloat16); each row uses its last position. For rows[i]: out_ids[i] (host) gets the chosen
// id and out_status[i] (host) a Status (out_ids[i] is -1 unless kOk). Throws
// std::invalid_argument for bad arguments and std::runtime_error for CUDA errors.
void sample(const void* logits, DType dt, int64_t B, int64_t positions, int64_t V, const Config& cfg,
            const Row* rows, int64_t n, int32_t* out_ids, int32_t* out_status, int device);

// The same, split so the work can be queued without waiting for it: sample_async queues the
// kernel and the copy of the ids on the stream (after whatever is queued there, e.g. the
// forward that writes the logits) and returns at once; sample_wait blocks until the ids are in
// host memory, fills out_ids/out_status and releases the handle (every handle must be waited
// for exactly once). `feed`, when not null, is a device int32 array [B] on `device`: each kOk
// row's id is also written to feed[rows[i].batch] on the GPU, so a following forward can read
// the next tokens without a round trip through the host (other entries are left as they were).
// The row histories are copied before sample_async returns.
struct Pending;
Pending* sample_async(const void* logits, DType dt, int64_t B, int64_t positions, int64_t V, const Config& cfg,
                      const Row* rows, int64_t n, int32_t* feed, int device);
void sample_wait(Pending* p, int32_t* out_ids, int32_t* out_status);

// Largest V whose row fits in one block's shared memory on `device` (larger ones run from
// global memory, slower but the same arithmetic).
int64_t max_shared_vocab(int device);

}  // namespace cuda_sampling
}  // namespace nibble
