// Elementwise conversion between element types (Tensor.to on the CPU). float32 <-> float16
// uses F16C where the CPU has it, with the same round-to-nearest-even results as the scalar
// conversions in core/dtype.h (NaN lanes take the scalar path, so NaNs come out canonical).
#pragma once
#include <cstdint>

#include "core/dtype.h"

namespace nibble {
namespace cpu {

void convert_ref(void* out, DType odt, const void* x, DType xdt, int64_t n);
void convert(void* out, DType odt, const void* x, DType xdt, int64_t n);

}  // namespace cpu
}  // namespace nibble
