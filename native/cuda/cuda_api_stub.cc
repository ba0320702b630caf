// Used only when the addon is built without nvcc: every CUDA entry point explains why it
// cannot run instead of failing to link.
#include <stdexcept>

#include "cuda/cuda_api.h"

namespace nibble {
namespace cuda_api {

static const char* kNoCuda =
    "this nibble binary was built without CUDA support (no nvcc at build time); "
    "install the CUDA prebuild or rebuild with nvcc on PATH (npm rebuild nibble-llm)";

bool compiled_with_cuda() { return false; }
int device_count() { return 0; }
std::string unavailable_reason() { return kNoCuda; }
int driver_version() { return 0; }
std::string device_name(int) { throw std::runtime_error(kNoCuda); }
size_t device_total_memory(int) { throw std::runtime_error(kNoCuda); }
void* alloc_device(size_t, int, size_t*) { throw std::runtime_error(kNoCuda); }
void free_device(void*, size_t, int) {}
void copy_host_to_device(void*, const void*, size_t, int) { throw std::runtime_error(kNoCuda); }
void copy_device_to_host(void*, const void*, size_t, int) { throw std::runtime_error(kNoCuda); }
void copy_device_to_device(void*, const void*, size_t, int) { throw std::runtime_error(kNoCuda); }
void synchronize(int) { throw std::runtime_error(kNoCuda); }
void probe_kernel(float*, int, float, float, int) { throw std::runtime_error(kNoCuda); }

}  // namespace cuda_api
}  // namespace nibble
