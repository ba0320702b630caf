// A small fork-join pool for the CPU kernels. Kernels call parallel_for over independent
// index ranges; the calling thread takes part. Workers spin briefly before sleeping because
// a decode step issues ~100 short kernels back to back and a futex wake per kernel would
// cost more than the kernels themselves.
#pragma once
#include <cstdint>
#include <functional>

namespace nibble {

// Number of threads kernels use (NIBBLE_NUM_THREADS, default: hardware cores).
int num_threads();
void set_num_threads(int n);

// Calls fn(begin, end) over [0, n) split into chunks of at least `grain` items.
void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn);

}  // namespace nibble
