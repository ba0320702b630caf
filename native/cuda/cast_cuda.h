// Elementwise dtype conversion on the GPU between float32, float16 and bfloat16, rounding to
// nearest even as the CPU cast (and torch's .to()) does. Queued on gpt2_cuda::stream(device).
#pragma once
#include <cstdint>

#include "core/dtype.h"

namespace nibble {
namespace cuda_cast {

void cast(void* out, DType odt, const void* x, DType xdt, int64_t n, int device);

}  // namespace cuda_cast
}  // namespace nibble
