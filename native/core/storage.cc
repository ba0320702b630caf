#include "core/storage.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>

#include "cuda/cuda_api.h"

namespace nibble {

namespace {
// Large host blocks are kept on free lists after use: a forward pass allocates the same
// activation sizes every step, and returning them to the OS would page-fault them back in.
constexpr size_t kCacheMinBytes = 1 << 16;
constexpr size_t kCacheMaxTotal = size_t(512) << 20;

// Never destroyed: a worker_threads Worker torn down while the process exits frees its
// tensors into this cache after static destructors have run (a use-after-free at exit).
std::mutex& g_cache_mu = *new std::mutex;
std::multimap<size_t, void*>& g_free_blocks = *new std::multimap<size_t, void*>;
size_t g_cached_bytes = 0;

size_t round_alloc(size_t n) {
  if (n < kCacheMinBytes) return (n + 63) & ~size_t(63);
  // round up to 1/8 of the leading power of two: bounded waste, good reuse
  size_t p = 1;
  while (p * 2 <= n) p *= 2;
  size_t step = p / 8;
  return (n + step - 1) / step * step;
}

void* host_alloc(size_t bytes) {
  if (bytes >= kCacheMinBytes) {
    std::lock_guard<std::mutex> lock(g_cache_mu);
    auto it = g_free_blocks.find(bytes);
    if (it != g_free_blocks.end()) {
      void* p = it->second;
      g_free_blocks.erase(it);
      g_cached_bytes -= bytes;
      return p;
    }
  }
  void* p = nullptr;
  if (posix_memalign(&p, 64, bytes ? bytes : 64) != 0) {
    host_cache_clear();  // give cached blocks back and try once more
    if (posix_memalign(&p, 64, bytes ? bytes : 64) != 0) return nullptr;
  }
  return p;
}

void host_free(void* p, size_t bytes) {
  if (bytes >= kCacheMinBytes) {
    std::lock_guard<std::mutex> lock(g_cache_mu);
    if (g_cached_bytes + bytes <= kCacheMaxTotal) {
      g_free_blocks.emplace(bytes, p);
      g_cached_bytes += bytes;
      return;
    }
  }
  std::free(p);
}
}  // namespace

size_t host_cache_bytes() {
  std::lock_guard<std::mutex> lock(g_cache_mu);
  return g_cached_bytes;
}

void host_cache_clear() {
  std::lock_guard<std::mutex> lock(g_cache_mu);
  for (auto& kv : g_free_blocks) std::free(kv.second);
  g_free_blocks.clear();
  g_cached_bytes = 0;
}

Storage::~Storage() {
  if (!data) return;
  switch (kind) {
    case StorageKind::Host: host_free(data, alloc_bytes); break;
    case StorageKind::Mapped: munmap(data, alloc_bytes); break;
    case StorageKind::Cuda: cuda_api::free_device(data, alloc_bytes, device); break;
  }
}

std::shared_ptr<Storage> Storage::host(size_t nbytes, bool zero) {
  auto s = std::make_shared<Storage>();
  s->alloc_bytes = round_alloc(nbytes);
  s->data = host_alloc(s->alloc_bytes);
  if (!s->data)
    throw std::runtime_error("out of host memory allocating " + std::to_string(nbytes) + " bytes");
  s->nbytes = nbytes;
  s->kind = StorageKind::Host;
  if (zero) std::memset(s->data, 0, nbytes);
  return s;
}

std::shared_ptr<Storage> Storage::map_file(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw std::runtime_error("cannot open " + path + ": " + std::strerror(errno));
  struct stat st;
  if (fstat(fd, &st) != 0) {
    int e = errno;
    ::close(fd);
    throw std::runtime_error("cannot stat " + path + ": " + std::strerror(e));
  }
  auto s = std::make_shared<Storage>();
  s->kind = StorageKind::Mapped;
  s->nbytes = (size_t)st.st_size;
  s->alloc_bytes = s->nbytes;
  if (s->nbytes > 0) {
    void* p = mmap(nullptr, s->nbytes, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
      int e = errno;
      ::close(fd);
      s->data = nullptr;
      throw std::runtime_error("cannot mmap " + path + ": " + std::strerror(e));
    }
    s->data = p;
  }
  ::close(fd);
  return s;
}

std::shared_ptr<Storage> Storage::cuda(size_t nbytes, int device) {
  auto s = std::make_shared<Storage>();
  s->kind = StorageKind::Cuda;
  s->device = device;
  s->nbytes = nbytes;
  s->data = cuda_api::alloc_device(nbytes, device, &s->alloc_bytes);  // throws on failure
  return s;
}

}  // namespace nibble
