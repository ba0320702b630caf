// Turns a CUDA error into a C++ exception naming the operation; the bindings convert it to a
// JS Error. Never abort: inside Node that would take the user's process down.
#pragma once
#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

#define NIBBLE_CUDA_CHECK(expr, what)                                                          \
  do {                                                                                         \
    cudaError_t nibble_err_ = (expr);                                                          \
    if (nibble_err_ != cudaSuccess) {                                                          \
      cudaGetLastError();                                                                      \
      throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(nibble_err_));    \
    }                                                                                          \
  } while (0)

// After a kernel launch: launch-configuration errors surface here, with the op's name.
#define NIBBLE_CUDA_CHECK_LAUNCH(what) NIBBLE_CUDA_CHECK(cudaGetLastError(), std::string("launch ") + (what))
