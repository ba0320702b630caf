// Element types shared by the JS layer (numeric codes), the CPU kernels and the CUDA kernels.
#pragma once
#include <cstdint>
#include <cstring>
#include <cmath>

namespace nibble {

// The numeric codes are part of the JS <-> native contract (lib/tensor.ts DTYPE_CODES).
enum class DType : int32_t { F32 = 0, F16 = 1, BF16 = 2, I8 = 3, U8 = 4, I32 = 5, I64 = 6 };
constexpr int kNumDTypes = 7;

inline size_t dtype_size(DType t) {
  switch (t) {
    case DType::F32: return 4;
    case DType::F16: return 2;
    case DType::BF16: return 2;
    case DType::I8: return 1;
    case DType::U8: return 1;
    case DType::I32: return 4;
    case DType::I64: return 8;
  }
  return 0;
}

inline const char* dtype_name(DType t) {
  switch (t) {
    case DType::F32: return "float32";
    case DType::F16: return "float16";
    case DType::BF16: return "bfloat16";
    case DType::I8: return "int8";
    case DType::U8: return "uint8";
    case DType::I32: return "int32";
    case DType::I64: return "int64";
  }
  return "?";
}

inline uint32_t f32_bits(float f) { uint32_t u; std::memcpy(&u, &f, 4); return u; }
inline float bits_f32(uint32_t u) { float f; std::memcpy(&f, &u, 4); return f; }

// IEEE binary16 <-> binary32, round-to-nearest-even, with subnormals, Inf and NaN,
// exactly as torch's .half()/.float() (and the CUDA __float2half_rn intrinsic) do.
inline float half_to_float(uint16_t h) {
  uint32_t sign = (uint32_t)(h & 0x8000) << 16;
  uint32_t exp = (h >> 10) & 0x1f;
  uint32_t man = h & 0x3ff;
  if (exp == 0) {
    if (man == 0) return bits_f32(sign);
    // subnormal: value = man * 2^-24
    float v = (float)man * 5.9604644775390625e-8f;
    return sign ? -v : v;
  }
  if (exp == 31) return bits_f32(sign | 0x7f800000u | (man << 13));
  return bits_f32(sign | ((exp + 112) << 23) | (man << 13));
}

inline uint16_t float_to_half(float f) {
  uint32_t x = f32_bits(f);
  uint16_t sign = (uint16_t)((x >> 16) & 0x8000);
  uint32_t ax = x & 0x7fffffffu;
  if (ax >= 0x7f800000u) return sign | (ax > 0x7f800000u ? 0x7e00 : 0x7c00);  // NaN / Inf
  if (ax >= 0x477ff000u) return sign | 0x7c00;  // rounds to >= 65520: overflow to Inf
  if (ax < 0x38800000u) {                        // below the smallest normal half (2^-14)
    // subnormal or zero: round (ax as float) / 2^-24 to nearest even integer
    float v = bits_f32(ax) * 16777216.0f;        // exact scaling by 2^24
    float r = std::nearbyint(v);                  // default rounding mode is nearest-even
    return sign | (uint16_t)r;
  }
  uint32_t exp = ((ax >> 23) - 112) << 10;
  uint32_t man = (ax >> 13) & 0x3ff;
  uint32_t rest = ax & 0x1fff;
  uint32_t h = exp | man;
  if (rest > 0x1000 || (rest == 0x1000 && (man & 1))) h++;  // carry may bump the exponent: correct
  return sign | (uint16_t)h;
}

inline float bf16_to_float(uint16_t b) { return bits_f32((uint32_t)b << 16); }

inline uint16_t float_to_bf16(float f) {
  uint32_t x = f32_bits(f);
  if ((x & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((x >> 16) | 0x40);  // quiet NaN
  uint32_t lsb = (x >> 16) & 1;
  x += 0x7fff + lsb;
  return (uint16_t)(x >> 16);
}

// Load element i of a float-like buffer as float32.
inline float load_as_float(const void* p, DType t, size_t i) {
  switch (t) {
    case DType::F32: return static_cast<const float*>(p)[i];
    case DType::F16: return half_to_float(static_cast<const uint16_t*>(p)[i]);
    case DType::BF16: return bf16_to_float(static_cast<const uint16_t*>(p)[i]);
    case DType::I8: return static_cast<const int8_t*>(p)[i];
    case DType::U8: return static_cast<const uint8_t*>(p)[i];
    case DType::I32: return (float)static_cast<const int32_t*>(p)[i];
    case DType::I64: return (float)static_cast<const int64_t*>(p)[i];
  }
  return 0.f;
}

inline void store_from_float(void* p, DType t, size_t i, float v) {
  switch (t) {
    case DType::F32: static_cast<float*>(p)[i] = v; break;
    case DType::F16: static_cast<uint16_t*>(p)[i] = float_to_half(v); break;
    case DType::BF16: static_cast<uint16_t*>(p)[i] = float_to_bf16(v); break;
    case DType::I8: static_cast<int8_t*>(p)[i] = (int8_t)v; break;
    case DType::U8: static_cast<uint8_t*>(p)[i] = (uint8_t)v; break;
    case DType::I32: static_cast<int32_t*>(p)[i] = (int32_t)v; break;
    case DType::I64: static_cast<int64_t*>(p)[i] = (int64_t)v; break;
  }
}

inline bool is_float_dtype(DType t) { return t == DType::F32 || t == DType::F16 || t == DType::BF16; }

}  // namespace nibble
