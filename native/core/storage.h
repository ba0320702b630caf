// Storage: one contiguous block of memory (host heap, a memory-mapped file, or CUDA device
// memory). Tensors are views (offset, dtype, shape) over a shared_ptr<Storage>; queued
// kernels hold their own shared_ptr copies, so a tensor disposed while work on it is still
// pending never frees memory under a running kernel.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>

namespace nibble {

enum class StorageKind { Host, Mapped, Cuda };

struct Storage {
  void* data = nullptr;
  size_t nbytes = 0;
  StorageKind kind = StorageKind::Host;
  int device = -1;  // -1: host, >= 0: CUDA ordinal
  size_t alloc_bytes = 0;  // bytes actually reserved (allocator rounding)

  Storage() = default;
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;
  ~Storage();

  // Host memory, 64-byte aligned, uninitialized unless zero is set. Throws std::bad_alloc-like
  // std::runtime_error naming the size when the allocation fails.
  static std::shared_ptr<Storage> host(size_t nbytes, bool zero = false);
  // Read-only mapping of a whole file (MAP_PRIVATE, so writes to views never reach the file).
  static std::shared_ptr<Storage> map_file(const std::string& path);
  // CUDA device memory from the caching allocator (throws with the CUDA error string).
  static std::shared_ptr<Storage> cuda(size_t nbytes, int device);
};

// Bytes held by the host caching allocator but not in use (for tests and memory reports).
size_t host_cache_bytes();
void host_cache_clear();

}  // namespace nibble
