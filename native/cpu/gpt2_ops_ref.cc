// Reference CPU kernels: the plainest correct code, used as the specification.
#include <cmath>
#include <vector>

#include "cpu/gpt2_ops.h"

namespace nibble {
namespace cpu {

void embedding_ref(float* out, const void* wte, const void* wpe, DType pdt, const int32_t* ids, const int32_t* pos,
                   int64_t T, int64_t C) {
  for (int64_t t = 0; t < T; t++)
    for (int64_t c = 0; c < C; c++)
      out[t * C + c] = load_as_float(wte, pdt, (int64_t)ids[t] * C + c) + load_as_float(wpe, pdt, (int64_t)pos[t] * C + c);
}

void layernorm_ref(float* out, const float* x, const void* w, const void* b, DType pdt, int64_t rows, int64_t C,
                   float eps) {
  for (int64_t r = 0; r < rows; r++) {
    const float* xr = x + r * C;
    double mean = 0, var = 0;
    for (int64_t c = 0; c < C; c++) mean += xr[c];
    mean /= C;
    for (int64_t c = 0; c < C; c++) var += (xr[c] - mean) * (xr[c] - mean);
    var /= C;
    float rstd = (float)(1.0 / std::sqrt(var + eps));
    for (int64_t c = 0; c < C; c++)
      out[r * C + c] = (float)(xr[c] - mean) * rstd * load_as_float(w, pdt, c) + load_as_float(b, pdt, c);
  }
}

void linear_ref(float* out, const float* x, const void* w, const void* bias, DType wdt, int64_t M, int64_t K,
                int64_t N) {
  for (int64_t m = 0; m < M; m++)
    for (int64_t n = 0; n < N; n++) {
      double acc = bias ? load_as_float(bias, wdt, n) : 0.0;
      for (int64_t k = 0; k < K; k++) acc += (double)x[m * K + k] * load_as_float(w, wdt, n * K + k);
      out[m * N + n] = (float)acc;
    }
}

void gelu_new_ref(float* out, const float* x, int64_t n) {
  const float k = 0.7978845608028654f;  // sqrt(2/pi)
  for (int64_t i = 0; i < n; i++) {
    float v = x[i];
    out[i] = 0.5f * v * (1.0f + std::tanh(k * (v + 0.044715f * v * v * v)));
  }
}

void add_ref(float* out, const float* a, const float* b, int64_t n) {
  for (int64_t i = 0; i < n; i++) out[i] = a[i] + b[i];
}

void softmax_ref(float* out, const float* x, int64_t rows, int64_t cols) {
  for (int64_t r = 0; r < rows; r++) {
    const float* xr = x + r * cols;
    float mx = -INFINITY;
    for (int64_t c = 0; c < cols; c++) mx = std::fmax(mx, xr[c]);
    double sum = 0;
    for (int64_t c = 0; c < cols; c++) sum += std::exp((double)xr[c] - mx);
    for (int64_t c = 0; c < cols; c++) out[r * cols + c] = (float)(std::exp((double)xr[c] - mx) / sum);
  }
}

void attention_ref(float* out, const float* qkv, float* kc, float* vc, const int32_t* mask, int64_t B, int64_t T,
                   int64_t past, int64_t Tmax, int64_t H, int64_t D) {
  const int64_t C = H * D, L = past + T;
  for (int64_t b = 0; b < B; b++)
    for (int64_t t = 0; t < T; t++)
      for (int64_t h = 0; h < H; h++)
        for (int64_t d = 0; d < D; d++) {
          const float* row = qkv + (b * T + t) * 3 * C;
          kc[((b * H + h) * Tmax + past + t) * D + d] = row[C + h * D + d];
          vc[((b * H + h) * Tmax + past + t) * D + d] = row[2 * C + h * D + d];
        }
  const double scale = 1.0 / std::sqrt((double)D);
  std::vector<double> s(L);
  for (int64_t b = 0; b < B; b++)
    for (int64_t h = 0; h < H; h++)
      for (int64_t t = 0; t < T; t++) {
        const float* q = qkv + (b * T + t) * 3 * C + h * D;
        const float* K = kc + (b * H + h) * Tmax * D;
        const float* V = vc + (b * H + h) * Tmax * D;
        int64_t last = past + t;
        double mx = -INFINITY;
        for (int64_t j = 0; j <= last; j++) {
          if (mask && !mask[b * L + j]) { s[j] = -INFINITY; continue; }
          double acc = 0;
          for (int64_t d = 0; d < D; d++) acc += (double)q[d] * K[j * D + d];
          s[j] = acc * scale;
          mx = std::fmax(mx, s[j]);
        }
        float* o = out + (b * T + t) * C + h * D;
        if (mx == -INFINITY) {
          for (int64_t d = 0; d < D; d++) o[d] = 0.f;
          continue;
        }
        double sum = 0;
        for (int64_t j = 0; j <= last; j++) {
          s[j] = s[j] == -INFINITY ? 0.0 : std::exp(s[j] - mx);
          sum += s[j];
        }
        for (int64_t d = 0; d < D; d++) {
          double acc = 0;
          for (int64_t j = 0; j <= last; j++) acc += s[j] * V[j * D + d];
          o[d] = (float)(acc / sum);
        }
      }
}

}  // namespace cpu
}  // namespace nibble
