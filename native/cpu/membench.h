// Memory-bandwidth probes for benchmarks: the ceiling that decode speed is compared with.
#pragma once
#include <cstddef>

namespace nibble {
namespace cpu {

// Bytes/s reading `nbytes` with every pool thread (AVX2 loads, summed so nothing is elided).
double read_bandwidth(size_t nbytes, int iters);
// Bytes/s of memcpy over `nbytes` split across threads, counting read + write.
double copy_bandwidth(size_t nbytes, int iters);

}  // namespace cpu
}  // namespace nibble
