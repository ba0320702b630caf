// Helpers for the native CUDA test and benchmark binaries: owning device buffers, seeded
// random data, float16/bfloat16 host conversions and a pass/fail table.
#pragma once
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "cuda/cuda_check.h"

namespace nibble_test {

using nibble::DType;

struct DevBuf {
  void* p = nullptr;
  size_t n = 0;
  DevBuf() = default;
  explicit DevBuf(size_t bytes) : n(bytes) {
    NIBBLE_CUDA_CHECK(cudaMalloc(&p, bytes ? bytes : 1), "cudaMalloc(test buffer)");
  }
  DevBuf(const void* host, size_t bytes) : DevBuf(bytes) { upload(host, bytes); }
  template <typename T>
  explicit DevBuf(const std::vector<T>& v) : DevBuf(v.data(), v.size() * sizeof(T)) {}
  DevBuf(const DevBuf&) = delete;
  DevBuf& operator=(const DevBuf&) = delete;
  DevBuf(DevBuf&& o) noexcept : p(o.p), n(o.n) { o.p = nullptr; }
  ~DevBuf() {
    if (p) cudaFree(p);
  }
  void upload(const void* host, size_t bytes) {
    NIBBLE_CUDA_CHECK(cudaMemcpy(p, host, bytes, cudaMemcpyHostToDevice), "upload");
  }
  // Fills with a byte pattern so unwritten outputs show up as mismatches.
  void poison(int byte = 0x7f) { NIBBLE_CUDA_CHECK(cudaMemset(p, byte, n ? n : 1), "poison"); }
  template <typename T>
  std::vector<T> download(size_t count) const {
    std::vector<T> v(count);
    NIBBLE_CUDA_CHECK(cudaDeviceSynchronize(), "kernel");
    NIBBLE_CUDA_CHECK(cudaMemcpy(v.data(), p, count * sizeof(T), cudaMemcpyDeviceToHost), "download");
    return v;
  }
  template <typename T = void>
  T* as() const {
    return static_cast<T*>(p);
  }
};

// Host buffer holding n floating-point values of a dtype (float32, float16 or bfloat16).
struct HostFloats {
  DType dt;
  std::vector<uint8_t> bytes;
  HostFloats(DType d, const std::vector<float>& v) : dt(d), bytes(v.size() * nibble::dtype_size(d)) {
    for (size_t i = 0; i < v.size(); i++) nibble::store_from_float(bytes.data(), d, i, v[i]);
  }
  const void* data() const { return bytes.data(); }
  size_t size_bytes() const { return bytes.size(); }
};

inline std::vector<float> randn(std::mt19937_64& rng, size_t n, float scale = 1.0f) {
  std::normal_distribution<float> d(0.0f, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

inline float as_float(const uint8_t* p, DType dt, size_t i) { return nibble::load_as_float(p, dt, i); }

// Relative L2 error ||a - b|| / ||b|| (NaN anywhere -> +inf).
inline double rel_l2(const std::vector<float>& a, const std::vector<float>& b) {
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); i++) {
    if (std::isnan(a[i]) != std::isnan(b[i])) return INFINITY;
    if (std::isnan(a[i])) continue;
    double d = (double)a[i] - (double)b[i];
    num += d * d;
    den += (double)b[i] * (double)b[i];
  }
  return den > 0 ? std::sqrt(num / den) : std::sqrt(num);
}

class Table {
 public:
  void add(const std::string& name, bool pass, const std::string& detail) {
    rows_.push_back({name, pass, detail});
    std::printf("%-58s %s  %s\n", name.c_str(), pass ? "PASS" : "FAIL", detail.c_str());
    std::fflush(stdout);
  }
  int failures() const {
    int f = 0;
    for (auto& r : rows_) f += r.pass ? 0 : 1;
    return f;
  }
  void summary() const {
    std::printf("\n==== summary: %zu checks, %d failed ====\n", rows_.size(), failures());
    for (auto& r : rows_)
      if (!r.pass) std::printf("FAILED  %-58s %s\n", r.name.c_str(), r.detail.c_str());
  }

 private:
  struct Row {
    std::string name;
    bool pass;
    std::string detail;
  };
  std::vector<Row> rows_;
};

inline std::string fmt_g(double v) {
  char b[64];
  std::snprintf(b, sizeof b, "%.3g", v);
  return b;
}

}  // namespace nibble_test
