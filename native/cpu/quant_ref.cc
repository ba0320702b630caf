// Reference quantization kernels: the plain, single-threaded statement of each contract in
// quant_ops.h. Fast paths (quant_fast.cc) and CUDA kernels are tested against these.
#include <cfloat>
#include <cmath>
#include <vector>

#include "cpu/quant_ops.h"

namespace nibble {
namespace cpu {

namespace {

// fmaxf semantics: a NaN operand loses, so NaN inputs never become the absmax.
float block_absmax(const void* x, DType dt, int64_t begin, int64_t end) {
  float m = -FLT_MAX;
  for (int64_t i = begin; i < end; i++) m = std::fmax(m, std::fabs(load_as_float(x, dt, i)));
  return m;
}

}  // namespace

void quantize_4bit_ref(const void* x, DType dt, int64_t n, int blocksize, QuantType qt, uint8_t* packed,
                       float* absmax) {
  int64_t nb = fmt::num_blocks(n, blocksize);
  std::vector<uint8_t> codes(blocksize + 1);
  for (int64_t b = 0; b < nb; b++) {
    int64_t begin = b * blocksize, end = std::min<int64_t>(n, begin + blocksize);
    float m = block_absmax(x, dt, begin, end);
    absmax[b] = m;
    float inv = 1.0f / m;
    for (int64_t i = begin; i < end; i++) codes[i - begin] = fmt::quantize_4bit_value(load_as_float(x, dt, i) * inv, qt);
    // The zero pad of an odd tail is quantized with the block's scale, like the reference.
    codes[end - begin] = fmt::quantize_4bit_value(0.0f * inv, qt);
    // blocksize is even, so blocks start on byte boundaries.
    for (int64_t i = begin; i < end; i += 2)
      packed[i / 2] = fmt::pack4(codes[i - begin], codes[i - begin + 1]);
  }
}

void dequantize_4bit_ref(const uint8_t* packed, const float* absmax, int64_t n, int blocksize, QuantType qt,
                         void* out, DType out_dt) {
  for (int64_t i = 0; i < n; i++) {
    uint8_t b = packed[i / 2];
    uint8_t c = (i & 1) ? fmt::unpack4_lo(b) : fmt::unpack4_hi(b);
    store_from_float(out, out_dt, i, fmt::code4_value(c, qt) * absmax[i / blocksize]);
  }
}

float absmax_mean(const float* absmax, int64_t nblocks) {
  // 32 lanes x 4 vector slots: element i goes to lane (i/4)%32, slot i%4 (float32 adds in
  // index order); each lane adds its slots 0..3 in order, then lanes fold in halves
  // (l += l+16, +8, +4, +2, +1), and the sum is multiplied by float32(1/n).
  float slot[32][4] = {};
  for (int64_t i = 0; i < nblocks; i++) slot[(i / 4) % 32][i % 4] += absmax[i];
  float lane[32];
  for (int l = 0; l < 32; l++) lane[l] = ((slot[l][0] + slot[l][1]) + slot[l][2]) + slot[l][3];
  for (int h = 16; h > 0; h >>= 1)
    for (int l = 0; l < h; l++) lane[l] += lane[l + h];
  return lane[0] * (float)(1.0 / (double)nblocks);
}

float compress_absmax(const float* absmax, int64_t nblocks, uint8_t* qabsmax, float* nested_absmax) {
  float offset = absmax_mean(absmax, nblocks);
  std::vector<float> centered(nblocks);
  for (int64_t i = 0; i < nblocks; i++) centered[i] = absmax[i] - offset;
  float code[256];
  for (int i = 0; i < 256; i++) code[i] = fmt::bits_to_float(fmt::kDynamicMapSignedBits[i]);
  quantize_blockwise_ref(code, centered.data(), DType::F32, nblocks, fmt::kNestedBlocksize, qabsmax, nested_absmax);
  return offset;
}

void decompress_absmax(const uint8_t* qabsmax, const float* nested_absmax, const float* nested_code, float offset,
                       int64_t nblocks, float* absmax) {
  for (int64_t i = 0; i < nblocks; i++) {
    float v = nested_code[qabsmax[i]] * nested_absmax[i / fmt::kNestedBlocksize];
    absmax[i] = v + offset;
  }
}

void quantize_blockwise_ref(const float* code, const void* x, DType dt, int64_t n, int blocksize, uint8_t* q,
                            float* absmax) {
  int64_t nb = fmt::num_blocks(n, blocksize);
  for (int64_t b = 0; b < nb; b++) {
    int64_t begin = b * blocksize, end = std::min<int64_t>(n, begin + blocksize);
    float m = block_absmax(x, dt, begin, end);
    absmax[b] = m;
    float inv = 1.0f / m;
    for (int64_t i = begin; i < end; i++) q[i] = fmt::quantize_dynamic_value(code, load_as_float(x, dt, i) * inv);
  }
}

void dequantize_blockwise_ref(const float* code, const uint8_t* q, const float* absmax, int64_t n, int blocksize,
                              void* out, DType out_dt) {
  for (int64_t i = 0; i < n; i++) store_from_float(out, out_dt, i, code[q[i]] * absmax[i / blocksize]);
}

float rcp_approx(float x) {
  double e = 1.0 / (double)x;
  float rn = (float)e;
  if (!std::isfinite(rn) || rn == 0.0f) return rn;
  float away = std::nextafter(rn, rn > 0 ? INFINITY : -INFINITY);
  double ulp = std::fabs((double)away - (double)rn);
  return (float)(e + std::copysign(0.14 * ulp, e));
}

// Threshold as the comparison sees it: bitsandbytes compares float16 data with the threshold
// converted to float16.
static float effective_threshold(DType dt, float threshold) {
  return dt == DType::F16 ? half_to_float(float_to_half(threshold)) : threshold;
}

void int8_vectorwise_quant_ref(const void* x, DType dt, int64_t rows, int64_t cols, float threshold, int8_t* out,
                               float* row_stats, uint8_t* outlier_cols) {
  bool sparse = threshold > 0.0f;
  float th = effective_threshold(dt, threshold);
  if (outlier_cols)
    for (int64_t c = 0; c < cols; c++) outlier_cols[c] = 0;
  if (sparse)
    for (int64_t r = 0; r < rows; r++)
      for (int64_t c = 0; c < cols; c++)
        if (std::fabs(load_as_float(x, dt, r * cols + c)) >= th) outlier_cols[c] = 1;
  for (int64_t r = 0; r < rows; r++) {
    float m = 0.0f;
    for (int64_t c = 0; c < cols; c++) {
      float a = std::fabs(load_as_float(x, dt, r * cols + c));
      if (!sparse || a < th) m = std::fmax(m, a);
    }
    row_stats[r] = m;
    float scale = 127.0f * rcp_approx(m);
    for (int64_t c = 0; c < cols; c++) {
      float v = load_as_float(x, dt, r * cols + c) * scale;
      int8_t q = 0;
      if (!(sparse && outlier_cols[c]) && !std::isnan(v)) q = (int8_t)std::nearbyint(v);
      out[r * cols + c] = q;
    }
  }
}

void int8_linear_matmul_ref(const int8_t* A, const int8_t* B, int64_t M, int64_t N, int64_t K, int32_t* C) {
  for (int64_t m = 0; m < M; m++)
    for (int64_t n = 0; n < N; n++) {
      int32_t acc = 0;
      for (int64_t k = 0; k < K; k++) acc += (int32_t)A[m * K + k] * (int32_t)B[n * K + k];
      C[m * N + n] = acc;
    }
}

void int8_mm_dequant_ref(const int32_t* C, const float* row_stats, const float* col_stats, const uint16_t* bias,
                         int64_t M, int64_t N, uint16_t* out) {
  for (int64_t m = 0; m < M; m++)
    for (int64_t n = 0; n < N; n++) {
      float p = (float)C[m * N + n] * row_stats[m];
      p = p * col_stats[n];
      float b = bias ? half_to_float(bias[n]) : 0.0f;
      out[m * N + n] = float_to_half(std::fma(p, fmt::kMmDequantScale, b));
    }
}

void int8_outlier_matmul_add(uint16_t* out, const void* x, DType x_dt, const uint8_t* col_mask, const int8_t* CB,
                             const float* SCB, int64_t M, int64_t N, int64_t K) {
  std::vector<int64_t> cols;
  for (int64_t c = 0; c < K; c++)
    if (col_mask[c]) cols.push_back(c);
  if (cols.empty()) return;
  std::vector<float> xs(cols.size());
  for (int64_t m = 0; m < M; m++) {
    for (size_t j = 0; j < cols.size(); j++) xs[j] = half_to_float(float_to_half(load_as_float(x, x_dt, m * K + cols[j])));
    for (int64_t n = 0; n < N; n++) {
      float acc = half_to_float(out[m * N + n]);
      for (size_t j = 0; j < cols.size(); j++)
        acc += xs[j] * half_to_float(float_to_half((float)CB[n * K + cols[j]] * SCB[n] / 127.0f));
      out[m * N + n] = float_to_half(acc);
    }
  }
}

void matmul_4bit_ref(const void* x, DType x_dt, int64_t M, const Weight4bit& w, const void* bias, void* out) {
  const int64_t N = w.N, K = w.K;
  for (int64_t m = 0; m < M; m++)
    for (int64_t n = 0; n < N; n++) {
      double acc = 0;
      for (int64_t k = 0; k < K; k++) {
        int64_t i = n * K + k;
        uint8_t b = w.packed[i / 2];
        uint8_t c = (i & 1) ? fmt::unpack4_lo(b) : fmt::unpack4_hi(b);
        float wv = fmt::code4_value(c, w.qt) * weight_block_absmax(w, i / w.blocksize);
        acc += (double)load_as_float(x, x_dt, m * K + k) * (double)wv;
      }
      if (bias) acc += (double)load_as_float(bias, x_dt, n);
      store_from_float(out, x_dt, m * N + n, (float)acc);
    }
}

}  // namespace cpu
}  // namespace nibble
