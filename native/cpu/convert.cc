#include "cpu/convert.h"

#include "core/parallel.h"
#include "cpu/cpu_features.h"
#include "cpu/simd.h"

namespace nibble {
namespace cpu {

void convert_ref(void* out, DType odt, const void* x, DType xdt, int64_t n) {
  for (int64_t i = 0; i < n; i++) store_from_float(out, odt, i, load_as_float(x, xdt, i));
}

namespace {
NIBBLE_AVX2 void f32_to_f16_avx2(uint16_t* out, const float* x, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    __m256 v = _mm256_loadu_ps(x + i);
    if (_mm256_movemask_ps(_mm256_cmp_ps(v, v, _CMP_UNORD_Q))) {
      for (int j = 0; j < 8; j++) out[i + j] = float_to_half(x[i + j]);
      continue;
    }
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + i), _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  }
  for (; i < n; i++) out[i] = float_to_half(x[i]);
}

NIBBLE_AVX2 void f16_to_f32_avx2(float* out, const uint16_t* x, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(out + i, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(x + i))));
  for (; i < n; i++) out[i] = half_to_float(x[i]);
}
}  // namespace

void convert(void* out, DType odt, const void* x, DType xdt, int64_t n) {
  const bool f16c = features().f16c;
  const size_t oes = dtype_size(odt), xes = dtype_size(xdt);
  parallel_for(n, 1 << 16, [&](int64_t i0, int64_t i1) {
    char* o = static_cast<char*>(out) + i0 * oes;
    const char* s = static_cast<const char*>(x) + i0 * xes;
    if (f16c && xdt == DType::F32 && odt == DType::F16)
      f32_to_f16_avx2(reinterpret_cast<uint16_t*>(o), reinterpret_cast<const float*>(s), i1 - i0);
    else if (f16c && xdt == DType::F16 && odt == DType::F32)
      f16_to_f32_avx2(reinterpret_cast<float*>(o), reinterpret_cast<const uint16_t*>(s), i1 - i0);
    else
      convert_ref(o, odt, s, xdt, i1 - i0);
  });
}

}  // namespace cpu
}  // namespace nibble
