// No-nvcc build: sampling on the GPU explains why it cannot run.
#include <stdexcept>

#include "cuda/sampling_cuda.h"

namespace nibble {
namespace cuda_sampling {

namespace {
[[noreturn]] void no_cuda() {
  throw std::runtime_error("this nibble binary was built without CUDA support; rebuild with nvcc on PATH (npm rebuild nibble-llm)");
}
}  // namespace

void sample(const void*, DType, int64_t, int64_t, int64_t, const Config&, const Row*, int64_t, int32_t*, int32_t*, int) {
  no_cuda();
}

Pending* sample_async(const void*, DType, int64_t, int64_t, int64_t, const Config&, const Row*, int64_t, int32_t*, int) {
  no_cuda();
}
void sample_wait(Pending*, int32_t*, int32_t*) { no_cuda(); }

int64_t max_shared_vocab(int) { no_cuda(); }

}  // namespace cuda_sampling
}  // namespace nibble
