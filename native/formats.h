// Bit formats shared by the CPU and CUDA kernels: the NF4/FP4 codebooks and the decision
// thresholds that pick a code, the 8-bit dynamic maps, and the packed layouts. Every value
// here is part of the bitsandbytes on-disk and numerical contract; test/quant-formats.test.ts
// checks the tables against bitsandbytes' own tensors (test/fixtures/bnb_vectors.safetensors).
#pragma once
#include <cstdint>
#include <cstring>

#ifdef __CUDACC__
#define NIBBLE_HD __host__ __device__ __forceinline__
#else
#define NIBBLE_HD inline
#endif

namespace nibble {
namespace fmt {

// Numeric codes shared with the bindings and lib/functional.ts.
enum class QuantType : int32_t { FP4 = 0, NF4 = 1 };

// ---- packed 4-bit layout ------------------------------------------------------------
// Two codes per byte; element 2i sits in the HIGH nibble of byte i, element 2i+1 in the low
// nibble. An odd element count leaves the final low nibble as the code of a zero input
// (bitsandbytes pads the last block with zeros and quantizes the pad too).
struct Packed4 {
  uint8_t byte;
};
static_assert(sizeof(Packed4) == 1, "two 4-bit codes per byte");
NIBBLE_HD int64_t packed4_bytes(int64_t n) { return (n + 1) / 2; }
NIBBLE_HD uint8_t pack4(uint8_t hi, uint8_t lo) { return (uint8_t)((hi << 4) | (lo & 0x0f)); }
NIBBLE_HD uint8_t unpack4_hi(uint8_t b) { return (uint8_t)(b >> 4); }
NIBBLE_HD uint8_t unpack4_lo(uint8_t b) { return (uint8_t)(b & 0x0f); }
NIBBLE_HD int64_t num_blocks(int64_t n, int64_t blocksize) { return (n + blocksize - 1) / blocksize; }

// Absmax state: one float32 per block, or with double quantization one uint8 code of
// (absmax - offset) per block, decoded with the signed dynamic map scaled by a float32
// nested absmax per 256 blocks. kNestedBlocksize is fixed by bitsandbytes' quantize_4bit.
constexpr int kNestedBlocksize = 256;
struct NestedAbsmaxBlock {
  uint8_t code[kNestedBlocksize];
};
static_assert(sizeof(NestedAbsmaxBlock) == 256, "one byte per absmax in a nested block");
static_assert(sizeof(float) == 4, "absmax is float32");

// Blocksizes bitsandbytes accepts: 4-bit 32..4096, 8-bit blockwise 64..4096, powers of two.
NIBBLE_HD bool valid_4bit_blocksize(int64_t b) { return b >= 32 && b <= 4096 && (b & (b - 1)) == 0; }
NIBBLE_HD bool valid_8bit_blocksize(int64_t b) { return b >= 64 && b <= 4096 && (b & (b - 1)) == 0; }

// ---- NF4 ----------------------------------------------------------------------------
// Quantiles of N(0,1) normalised to [-1, 1], with an exact zero (bitsandbytes create_normal_map).
// Index = 4-bit code.
#define NIBBLE_NF4_VALUES                                                                   \
  {-1.0f, -0.6961928009986877f, -0.5250730514526367f, -0.39491748809814453f,                \
   -0.28444138169288635f, -0.18477343022823334f, -0.09105003625154495f, 0.0f,               \
   0.07958029955625534f, 0.16093020141124725f, 0.24611230194568634f, 0.33791524171829224f, \
   0.44070982933044434f, 0.5626170039176941f, 0.7229568362236023f, 1.0f}
// Decision thresholds: midpoints of neighbouring codes, rounded to float32. A normalised
// value x gets code k = number of thresholds t with x > t (strictly greater, so a value
// exactly on a midpoint takes the lower code; NaN compares false everywhere and gets code 0).
#define NIBBLE_NF4_THRESHOLDS                                                               \
  {-0.8480964004993439f, -0.6106329262256622f, -0.4599952697753906f, -0.33967943489551544f, \
   -0.23460740596055984f, -0.13791173323988914f, -0.045525018125772476f,                   \
   0.03979014977812767f, 0.1202552504837513f, 0.2035212516784668f, 0.2920137718319893f,    \
   0.3893125355243683f, 0.5016634166240692f, 0.6427869200706482f, 0.8614784181118011f}

// ---- FP4 ----------------------------------------------------------------------------
// e2m1 with bias 3 scaled by 1/12: bit 3 is the sign, bits 0-2 index the magnitudes below.
// The magnitude order of the 3-bit codes is 0,1,6,7,4,5,2,3.
#define NIBBLE_FP4_MAGNITUDES \
  {0.0f, 0.005208333333f, 0.66666667f, 1.0f, 0.33333333f, 0.5f, 0.16666667f, 0.25f}
// Thresholds on |x| in magnitude order (midpoints, as the float literals bitsandbytes uses;
// note 0.583333f is not 7/12 rounded: it is the exact constant of the reference kernel).
#define NIBBLE_FP4_THRESHOLDS \
  {0.00260417f, 0.0859375f, 0.20833333f, 0.29166667f, 0.4166667f, 0.583333f, 0.8333333f}
// 3-bit code of the k-th magnitude (k = number of thresholds exceeded).
#define NIBBLE_FP4_CODE_BY_RANK {0, 1, 6, 7, 4, 5, 2, 3}

constexpr float kNf4Values[16] = NIBBLE_NF4_VALUES;
constexpr float kNf4Thresholds[15] = NIBBLE_NF4_THRESHOLDS;
constexpr float kFp4Magnitudes[8] = NIBBLE_FP4_MAGNITUDES;
constexpr float kFp4Thresholds[7] = NIBBLE_FP4_THRESHOLDS;
constexpr uint8_t kFp4CodeByRank[8] = NIBBLE_FP4_CODE_BY_RANK;

// The FP4 quant_map bitsandbytes serialises (get_4bit_type('fp4')): code 8 is +0 there,
// while dequantization computes magnitude * sign and yields -0 for code 8.
constexpr float kFp4QuantMap[16] = {0.0f, 0.005208333333f, 0.66666667f, 1.0f, 0.33333333f, 0.5f,
                                    0.16666667f, 0.25f, 0.0f, -0.005208333333f, -0.66666667f, -1.0f,
                                    -0.33333333f, -0.5f, -0.16666667f, -0.25f};

// Code of a value already multiplied by 1/absmax. Written as counts of exceeded thresholds
// so SIMD and GPU code can use the same comparisons; the result equals bitsandbytes'
// decision tree for every float including NaN (-> 0) and +-0 (NF4 -> 7, FP4 -> 0).
NIBBLE_HD uint8_t quantize_nf4_value(float x) {
  const float t[15] = NIBBLE_NF4_THRESHOLDS;
  uint8_t k = 0;
  for (int i = 0; i < 15; i++) k += (x > t[i]) ? 1 : 0;
  return k;
}

NIBBLE_HD uint8_t quantize_fp4_value(float x) {
  const float t[7] = NIBBLE_FP4_THRESHOLDS;
  const uint8_t code_by_rank[8] = NIBBLE_FP4_CODE_BY_RANK;
  uint8_t sign = (x < 0.0f) ? 8 : 0;  // -0 and NaN count as positive, like the reference
  float a = x < 0.0f ? -x : x;
  if (!(a == a)) a = 0.0f;             // NaN: every comparison false -> rank 0
  uint8_t k = 0;
  for (int i = 0; i < 7; i++) k += (a > t[i]) ? 1 : 0;
  return (uint8_t)(code_by_rank[k] | sign);
}

NIBBLE_HD uint8_t quantize_4bit_value(float x, QuantType qt) {
  return qt == QuantType::NF4 ? quantize_nf4_value(x) : quantize_fp4_value(x);
}

// Dequantized code value (before scaling by absmax). FP4 code 8 gives -0.0f.
NIBBLE_HD float nf4_value(uint8_t code) {
  const float v[16] = NIBBLE_NF4_VALUES;
  return v[code & 15];
}
NIBBLE_HD float fp4_value(uint8_t code) {
  const float m[8] = NIBBLE_FP4_MAGNITUDES;
  float sign = 1.0f - 2.0f * (float)((code >> 3) & 1);
  return m[code & 7] * sign;
}
NIBBLE_HD float code4_value(uint8_t code, QuantType qt) {
  return qt == QuantType::NF4 ? nf4_value(code) : fp4_value(code);
}

// ---- 8-bit dynamic maps -------------------------------------------------------------
// bitsandbytes create_dynamic_map(signed, max_exponent_bits=7, total_bits=8): a dynamic
// exponent (powers of ten) and a shrinking fraction, sorted ascending, 256 float32 values.
// Stored as bit patterns because they come out of float32 linspace arithmetic that decimal
// literals would not reproduce reliably. Ascending order is what the binary search needs.
constexpr uint32_t kDynamicMapSignedBits[256] = {
    0xbf7e3333u, 0xbf7a999au, 0xbf770000u, 0xbf736666u, 0xbf6fcccdu, 0xbf6c3333u, 0xbf68999au, 0xbf650000u,
    0xbf616666u, 0xbf5dcccdu, 0xbf5a3333u, 0xbf56999au, 0xbf530000u, 0xbf4f6666u, 0xbf4bcccdu, 0xbf483333u,
    0xbf44999au, 0xbf410000u, 0xbf3d6666u, 0xbf39cccdu, 0xbf363334u, 0xbf32999au, 0xbf2f0000u, 0xbf2b6666u,
    0xbf27cccdu, 0xbf243334u, 0xbf20999au, 0xbf1d0000u, 0xbf196666u, 0xbf15cccdu, 0xbf123334u, 0xbf0e999au,
    0xbf0b0000u, 0xbf076666u, 0xbf03ccccu, 0xbf003333u, 0xbef93332u, 0xbef20000u, 0xbeeaccccu, 0xbee3999au,
    0xbedc6666u, 0xbed53333u, 0xbece0000u, 0xbec6ccccu, 0xbebf999au, 0xbeb86666u, 0xbeb13333u, 0xbeaa0000u,
    0xbea2ccccu, 0xbe9b999au, 0xbe946666u, 0xbe8d3334u, 0xbe860000u, 0xbe7d9999u, 0xbe6f3333u, 0xbe60cccdu,
    0xbe526666u, 0xbe440000u, 0xbe35999au, 0xbe273333u, 0xbe18cccdu, 0xbe0a6666u, 0xbdf80000u, 0xbddb3334u,
    0xbdc9eb85u, 0xbdc428f7u, 0xbdbe6667u, 0xbdb8a3d7u, 0xbdb2e148u, 0xbdad1eb8u, 0xbda75c2au, 0xbda1999au,
    0xbd9bd70au, 0xbd96147bu, 0xbd9051ebu, 0xbd8a8f5du, 0xbd84cccdu, 0xbd7e147bu, 0xbd728f5du, 0xbd670a3du,
    0xbd5b851fu, 0xbd500000u, 0xbd447ae1u, 0xbd38f5c3u, 0xbd2d70a3u, 0xbd21eb85u, 0xbd166667u, 0xbd0ae148u,
    0xbcfeb852u, 0xbce7ae15u, 0xbcd0a3d7u, 0xbcb9999au, 0xbca28f5du, 0xbc8b851fu, 0xbc68f5c3u, 0xbc3ae148u,
    0xbc1f3b64u, 0xbc160418u, 0xbc0ccccdu, 0xbc039581u, 0xbbf4bc6au, 0xbbe24dd3u, 0xbbcfdf3bu, 0xbbbd70a4u,
    0xbbab020du, 0xbb989374u, 0xbb8624ddu, 0xbb676c8au, 0xbb428f5cu, 0xbb1db22du, 0xbaf1a9fcu, 0xbaa7ef9du,
    0xba7765ffu, 0xba59e83eu, 0xba3c6a80u, 0xba1eecc1u, 0xba016f01u, 0xb9c7e283u, 0xb98ce705u, 0xb923d70bu,
    0xb8ba1f4bu, 0xb88aefb3u, 0xb8378034u, 0xb7b24206u, 0xb70205ffu, 0xb65a1a94u, 0xb513a3b7u, 0x00000000u,
    0x3513a3b7u, 0x365a1a94u, 0x370205ffu, 0x37b24206u, 0x38378034u, 0x388aefb3u, 0x38ba1f4bu, 0x3923d70bu,
    0x398ce705u, 0x39c7e283u, 0x3a016f01u, 0x3a1eecc1u, 0x3a3c6a80u, 0x3a59e83eu, 0x3a7765ffu, 0x3aa7ef9du,
    0x3af1a9fcu, 0x3b1db22du, 0x3b428f5cu, 0x3b676c8au, 0x3b8624ddu, 0x3b989374u, 0x3bab020du, 0x3bbd70a4u,
    0x3bcfdf3bu, 0x3be24dd3u, 0x3bf4bc6au, 0x3c039581u, 0x3c0ccccdu, 0x3c160418u, 0x3c1f3b64u, 0x3c3ae148u,
    0x3c68f5c3u, 0x3c8b851fu, 0x3ca28f5du, 0x3cb9999au, 0x3cd0a3d7u, 0x3ce7ae15u, 0x3cfeb852u, 0x3d0ae148u,
    0x3d166667u, 0x3d21eb85u, 0x3d2d70a3u, 0x3d38f5c3u, 0x3d447ae1u, 0x3d500000u, 0x3d5b851fu, 0x3d670a3du,
    0x3d728f5du, 0x3d7e147bu, 0x3d84cccdu, 0x3d8a8f5du, 0x3d9051ebu, 0x3d96147bu, 0x3d9bd70au, 0x3da1999au,
    0x3da75c2au, 0x3dad1eb8u, 0x3db2e148u, 0x3db8a3d7u, 0x3dbe6667u, 0x3dc428f7u, 0x3dc9eb85u, 0x3ddb3334u,
    0x3df80000u, 0x3e0a6666u, 0x3e18cccdu, 0x3e273333u, 0x3e35999au, 0x3e440000u, 0x3e526666u, 0x3e60cccdu,
    0x3e6f3333u, 0x3e7d9999u, 0x3e860000u, 0x3e8d3334u, 0x3e946666u, 0x3e9b999au, 0x3ea2ccccu, 0x3eaa0000u,
    0x3eb13333u, 0x3eb86666u, 0x3ebf999au, 0x3ec6ccccu, 0x3ece0000u, 0x3ed53333u, 0x3edc6666u, 0x3ee3999au,
    0x3eeaccccu, 0x3ef20000u, 0x3ef93332u, 0x3f003333u, 0x3f03ccccu, 0x3f076666u, 0x3f0b0000u, 0x3f0e999au,
    0x3f123334u, 0x3f15cccdu, 0x3f196666u, 0x3f1d0000u, 0x3f20999au, 0x3f243334u, 0x3f27cccdu, 0x3f2b6666u,
    0x3f2f0000u, 0x3f32999au, 0x3f363334u, 0x3f39cccdu, 0x3f3d6666u, 0x3f410000u, 0x3f44999au, 0x3f483333u,
    0x3f4bcccdu, 0x3f4f6666u, 0x3f530000u, 0x3f56999au, 0x3f5a3333u, 0x3f5dcccdu, 0x3f616666u, 0x3f650000u,
    0x3f68999au, 0x3f6c3333u, 0x3f6fcccdu, 0x3f736666u, 0x3f770000u, 0x3f7a999au, 0x3f7e3333u, 0x3f800000u,
};
constexpr uint32_t kDynamicMapUnsignedBits[256] = {
    0x00000000u, 0x34ae7baau, 0x35500998u, 0x360e9b38u, 0x3692ccf6u, 0x36de4c51u, 0x3714e5d5u, 0x3783126eu,
    0x37e171a0u, 0x381fe868u, 0x384f1800u, 0x387e479au, 0x3896bb99u, 0x38ae5364u, 0x38c5eb31u, 0x3906594bu,
    0x394154cau, 0x397c5049u, 0x399ba5e4u, 0x39b923a2u, 0x39d6a163u, 0x39f41f22u, 0x3a08ce71u, 0x3a178d50u,
    0x3a264c30u, 0x3a350b10u, 0x3a43c9efu, 0x3a5288d0u, 0x3a6147afu, 0x3a70068eu, 0x3a7ec56eu, 0x3a958106u,
    0x3aba5e35u, 0x3adf3b64u, 0x3b020c4au, 0x3b147ae1u, 0x3b26e978u, 0x3b395810u, 0x3b4bc6a7u, 0x3b5e3540u,
    0x3b70a3d7u, 0x3b818937u, 0x3b8ac082u, 0x3b93f7cfu, 0x3b9d2f1au, 0x3ba66666u, 0x3baf9db2u, 0x3bb8d4fdu,
    0x3bc20c4au, 0x3bcb4395u, 0x3bd47ae1u, 0x3bddb22eu, 0x3be6e978u, 0x3bf020c5u, 0x3bf9580fu, 0x3c0147aeu,
    0x3c05e354u, 0x3c0a7ef9u, 0x3c0f1aa0u, 0x3c13b645u, 0x3c1851ebu, 0x3c1ced92u, 0x3c218937u, 0x3c2f5c2au,
    0x3c466667u, 0x3c5d70a3u, 0x3c747ae2u, 0x3c85c28fu, 0x3c9147afu, 0x3c9ccccdu, 0x3ca851ebu, 0x3cb3d70bu,
    0x3cbf5c29u, 0x3ccae147u, 0x3cd66667u, 0x3ce1eb87u, 0x3ced70a3u, 0x3cf8f5c3u, 0x3d023d70u, 0x3d080000u,
    0x3d0dc28fu, 0x3d13851fu, 0x3d1947afu, 0x3d1f0a3du, 0x3d24cccdu, 0x3d2a8f5cu, 0x3d3051ebu, 0x3d36147bu,
    0x3d3bd70au, 0x3d41999au, 0x3d475c28u, 0x3d4d1eb8u, 0x3d52e147u, 0x3d58a3d7u, 0x3d5e6667u, 0x3d6428f7u,
    0x3d69eb87u, 0x3d6fae15u, 0x3d7570a3u, 0x3d7b3333u, 0x3d807ae2u, 0x3d835c2au, 0x3d863d71u, 0x3d891eb8u,
    0x3d8c0000u, 0x3d8ee148u, 0x3d91c290u, 0x3d94a3d7u, 0x3d97851fu, 0x3d9a6667u, 0x3d9d47afu, 0x3da028f6u,
    0x3da30a3eu, 0x3da5eb85u, 0x3da8cccdu, 0x3dabae15u, 0x3dae8f5cu, 0x3db170a4u, 0x3db451ebu, 0x3db73333u,
    0x3dba147bu, 0x3dbcf5c3u, 0x3dbfd70bu, 0x3dc2b852u, 0x3dc5999au, 0x3dc87ae2u, 0x3dcb5c29u, 0x3dd40000u,
    0x3de26666u, 0x3df0cccdu, 0x3dff3333u, 0x3e06ccccu, 0x3e0e0000u, 0x3e153334u, 0x3e1c6666u, 0x3e23999au,
    0x3e2accccu, 0x3e320000u, 0x3e393334u, 0x3e406666u, 0x3e47999au, 0x3e4eccccu, 0x3e560000u, 0x3e5d3334u,
    0x3e646666u, 0x3e6b999au, 0x3e72ccccu, 0x3e7a0000u, 0x3e809999u, 0x3e843333u, 0x3e87cccdu, 0x3e8b6666u,
    0x3e8f0000u, 0x3e92999au, 0x3e963333u, 0x3e99ccccu, 0x3e9d6666u, 0x3ea10000u, 0x3ea4999au, 0x3ea83333u,
    0x3eabccccu, 0x3eaf6666u, 0x3eb30000u, 0x3eb6999au, 0x3eba3333u, 0x3ebdccccu, 0x3ec16666u, 0x3ec50000u,
    0x3ec8999au, 0x3ecc3333u, 0x3ecfccccu, 0x3ed36666u, 0x3ed70000u, 0x3eda999au, 0x3ede3333u, 0x3ee1ccccu,
    0x3ee56666u, 0x3ee90000u, 0x3eec999au, 0x3ef03333u, 0x3ef3ccccu, 0x3ef76666u, 0x3efb0000u, 0x3efe9999u,
    0x3f01199au, 0x3f02e666u, 0x3f04b333u, 0x3f068000u, 0x3f084cccu, 0x3f0a199au, 0x3f0be666u, 0x3f0db334u,
    0x3f0f8000u, 0x3f114ccdu, 0x3f13199au, 0x3f14e666u, 0x3f16b334u, 0x3f188000u, 0x3f1a4ccdu, 0x3f1c199au,
    0x3f1de666u, 0x3f1fb334u, 0x3f218000u, 0x3f234ccdu, 0x3f25199au, 0x3f26e666u, 0x3f28b334u, 0x3f2a8000u,
    0x3f2c4ccdu, 0x3f2e199au, 0x3f2fe666u, 0x3f31b334u, 0x3f338000u, 0x3f354ccdu, 0x3f37199au, 0x3f38e666u,
    0x3f3ab334u, 0x3f3c8000u, 0x3f3e4ccdu, 0x3f40199au, 0x3f41e666u, 0x3f43b334u, 0x3f458000u, 0x3f474cccu,
    0x3f49199au, 0x3f4ae666u, 0x3f4cb334u, 0x3f4e8000u, 0x3f504cccu, 0x3f52199au, 0x3f53e666u, 0x3f55b334u,
    0x3f578000u, 0x3f594cccu, 0x3f5b199au, 0x3f5ce666u, 0x3f5eb334u, 0x3f608000u, 0x3f624cccu, 0x3f64199au,
    0x3f65e666u, 0x3f67b334u, 0x3f698000u, 0x3f6b4cccu, 0x3f6d199au, 0x3f6ee666u, 0x3f70b334u, 0x3f728000u,
    0x3f744cccu, 0x3f76199au, 0x3f77e666u, 0x3f79b334u, 0x3f7b8000u, 0x3f7d4cccu, 0x3f7f199au, 0x3f800000u,
};

NIBBLE_HD float bits_to_float(uint32_t u) {
#ifdef __CUDA_ARCH__
  return __uint_as_float(u);
#else
  float f;
  std::memcpy(&f, &u, 4);
  return f;
#endif
}

// Index into an ascending 256-entry code for a value already multiplied by 1/absmax.
// This is bitsandbytes' 8-bit binary search (not always the nearest code): seven halving
// steps from index 127 leave a probe p with its last lower/upper neighbours visited; the
// result is p or that neighbour, split at their float32 midpoint ((a + b) * 0.5f). A value
// above the probe goes up only if strictly above the midpoint; one below goes down only if
// strictly below it. Index 255 is never probed, so the upper neighbour defaults to code[255].
NIBBLE_HD uint8_t quantize_dynamic_value(const float* code, float x) {
  int p = 127, lo_i = 0, hi_i = 255;
  float lo = -1.0f, hi = 1.0f;
  float v = code[p];
  for (int step = 64; step > 0; step >>= 1) {
    if (x > v) {
      lo_i = p;
      lo = v;
      p += step;
    } else {
      hi_i = p;
      hi = v;
      p -= step;
    }
    v = code[p];
  }
  if (hi_i == 255) hi = code[255];
  if (lo_i == 0) lo = code[0];
  if (x > v) return (uint8_t)((x > (hi + v) * 0.5f) ? hi_i : p);
  return (uint8_t)((x < (lo + v) * 0.5f) ? lo_i : p);
}

// ---- LLM.int8() ---------------------------------------------------------------------
// int8_mm_dequant scale: 1/(127*127) as the float literal bitsandbytes multiplies by.
constexpr float kMmDequantScale = 6.200012e-05f;

}  // namespace fmt
}  // namespace nibble
