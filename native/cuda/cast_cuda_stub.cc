// No-nvcc build: CUDA casts explain why they cannot run.
#include <stdexcept>

#include "cuda/cast_cuda.h"

namespace nibble {
namespace cuda_cast {

void cast(void*, DType, const void*, DType, int64_t, int) {
  throw std::runtime_error("this nibble binary was built without CUDA support; rebuild with nvcc on PATH (npm rebuild nibble-llm)");
}

}  // namespace cuda_cast
}  // namespace nibble
