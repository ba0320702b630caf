#include "cpu/gpt2_forward_cpu.h"

#include <cstring>
#include <stdexcept>
#include <vector>

#include "core/dtype.h"
#include "cpu/convert.h"
#include "cpu/gpt2_ops.h"
#include "cpu/quant_ops.h"

namespace nibble {
namespace cpu {

namespace {

// out[M, N] float32 = L(x[M, K]) + bias, as the layer's module computes it on the CPU
// (lib/nn/Linear.ts, Linear4bit.ts, Linear8bitLt.ts): same kernels, same conversions.
void qlinear(const gpt2_cuda::QLinear& L, DType dt, const float* x, int64_t M, float* out) {
  const int64_t N = L.N, K = L.K;
  if (L.kind == gpt2_cuda::QLinear::kPlain) {
    linear(out, x, L.w, L.bias, dt, M, K, N);
    return;
  }
  if (L.kind == gpt2_cuda::QLinear::k4bit) {
    Weight4bit w;
    w.packed = L.packed;
    if (L.absmax) {
      w.absmax = L.absmax;
    } else {
      w.qabsmax = L.qabsmax, w.nested_absmax = L.nested_absmax, w.nested_code = L.nested_code;
      w.offset = *L.offset;
    }
    w.blocksize = L.blocksize, w.qt = L.quant_type == 1 ? QuantType::NF4 : QuantType::FP4, w.N = N, w.K = K;
    // Linear4bit: x in the compute dtype, the bias in x's dtype (matmul4bit converts it), the
    // result back to float32.
    const DType cdt = L.compute;
    std::vector<char> bias_c;
    const void* bias = L.bias;
    if (bias && dt != cdt) {
      bias_c.resize((size_t)N * dtype_size(cdt));
      convert(bias_c.data(), cdt, L.bias, dt, N);
      bias = bias_c.data();
    }
    if (cdt == DType::F32) {
      matmul_4bit(x, DType::F32, M, w, bias, out);
      return;
    }
    std::vector<char> xc((size_t)(M * K) * dtype_size(cdt)), oc((size_t)(M * N) * dtype_size(cdt));
    convert(xc.data(), cdt, x, DType::F32, M * K);
    matmul_4bit(xc.data(), cdt, M, w, bias, oc.data());
    convert(out, DType::F32, oc.data(), cdt, M * N);
    return;
  }
  // Linear8bitLt: x rounded to float16, int8_linear (the bias in float16, as int8LinearCpu
  // converts one of another dtype), the float16 result widened.
  std::vector<uint16_t> xh((size_t)(M * K)), oh((size_t)(M * N)), bias16;
  const uint16_t* bias = static_cast<const uint16_t*>(L.bias);
  if (L.bias && dt != DType::F16) {
    bias16.resize((size_t)N);
    convert(bias16.data(), DType::F16, L.bias, dt, N);
    bias = bias16.data();
  }
  convert(xh.data(), DType::F16, x, DType::F32, M * K);
  int8_linear(xh.data(), DType::F16, M, K, L.cb, L.scb, bias, N, L.threshold, oh.data());
  convert(out, DType::F32, oh.data(), DType::F16, M * N);
}

}  // namespace

void gpt2_forward(const gpt2_cuda::Gpt2Weights& w, const int32_t* ids, const int32_t* pos, const int32_t* mask,
                  float* const* kc, float* const* vc, int64_t B, int64_t T, int64_t past, int64_t Tmax,
                  bool last_only, float* logits) {
  const int64_t BT = B * T, C = w.C, H = w.H, D = C / H, I = w.inner;
  std::vector<float> x((size_t)(BT * C)), h((size_t)(BT * C)), att((size_t)(BT * C)), o((size_t)(BT * C));
  std::vector<float> qkv((size_t)(BT * 3 * C)), f((size_t)(BT * I)), g((size_t)(BT * I));
  embedding(x.data(), w.wte, w.wpe, w.dt, ids, pos, BT, C);
  for (size_t l = 0; l < w.layers.size(); l++) {
    const gpt2_cuda::Gpt2Layer& L = w.layers[l];
    layernorm(h.data(), x.data(), L.ln1_w, L.ln1_b, w.dt, BT, C, w.eps);
    qlinear(L.attn, w.dt, h.data(), BT, qkv.data());
    attention(att.data(), qkv.data(), kc[l], vc[l], mask, B, T, past, Tmax, H, D);
    qlinear(L.proj, w.dt, att.data(), BT, o.data());
    add(x.data(), x.data(), o.data(), BT * C);
    layernorm(h.data(), x.data(), L.ln2_w, L.ln2_b, w.dt, BT, C, w.eps);
    qlinear(L.fc, w.dt, h.data(), BT, f.data());
    gelu_new(g.data(), f.data(), BT * I);
    qlinear(L.mproj, w.dt, g.data(), BT, o.data());
    add(x.data(), x.data(), o.data(), BT * C);
  }
  const float* src = x.data();
  int64_t rows = BT;
  if (last_only) {
    rows = B;
    for (int64_t b = 0; b < B; b++) std::memcpy(h.data() + b * C, x.data() + (b * T + T - 1) * C, (size_t)C * 4);
    src = h.data();
  }
  std::vector<float> xf((size_t)(rows * C));
  layernorm(xf.data(), src, w.lnf_w, w.lnf_b, w.dt, rows, C, w.eps);
  linear(logits, xf.data(), w.lm_head, nullptr, w.dt, rows, C, w.V);
}

}  // namespace cpu
}  // namespace nibble
