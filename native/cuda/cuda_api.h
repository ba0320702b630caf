// The CUDA surface the rest of the native code sees. Implemented in cuda_api.cu when the
// addon is built with nvcc, and by cuda_api_stub.cc (every call throws "built without CUDA")
// otherwise, so CPU-only builds compile the same bindings.
#pragma once
#include <cstddef>
#include <string>

namespace nibble {
namespace cuda_api {

bool compiled_with_cuda();
// Number of usable GPUs; 0 (never throws) when there is no driver or no device.
int device_count();
// Why device_count() is 0, or "" when GPUs are present.
std::string unavailable_reason();
int driver_version();  // e.g. 13000; 0 when unknown
std::string device_name(int device);
size_t device_total_memory(int device);

void* alloc_device(size_t nbytes, int device, size_t* reserved);
void free_device(void* p, size_t reserved, int device);
void copy_host_to_device(void* dst, const void* src, size_t nbytes, int device);
void copy_device_to_host(void* dst, const void* src, size_t nbytes, int device);
void copy_device_to_device(void* dst, const void* src, size_t nbytes, int device);
void synchronize(int device);

// Runs a trivial kernel (out[i] = a*i + b) to prove the toolchain and driver work.
void probe_kernel(float* host_out, int n, float a, float b, int device);

}  // namespace cuda_api
}  // namespace nibble
