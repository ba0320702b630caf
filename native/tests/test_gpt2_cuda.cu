// GPT-2 CUDA kernels vs the CPU reference (native/cpu/gpt2_ops.h), on fresh random inputs
// and awkward sizes. Runs on the GPU host without Node.js:
//   build-gpu/test_gpt2_cuda [seed]
// Every output is poisoned (NaN bytes) before the kernel runs, so an unwritten element fails.
// Prints one line per case and a summary; exit status 1 on any failure.
#include <cuda_runtime.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "cpu/gpt2_ops.h"
#include "cpu/quant_ops.h"
#include "cuda/gpt2_cuda.h"
#include "formats.h"

using namespace nibble;

namespace {

#define CHECK(x)                                                                                          \
  do {                                                                                                    \
    cudaError_t e_ = (x);                                                                                 \
    if (e_ != cudaSuccess) throw std::runtime_error(std::string(#x) + ": " + cudaGetErrorString(e_));     \
  } while (0)

std::mt19937_64 rng;
int failures = 0, cases = 0;

std::vector<float> randn(size_t n, float scale = 1.f, float mean = 0.f) {
  std::normal_distribution<float> d(mean, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

// Host bytes of `v` in dtype dt, and the float32 values those bytes hold.
std::vector<uint8_t> encode(const std::vector<float>& v, DType dt, std::vector<float>* widened) {
  std::vector<uint8_t> b(v.size() * dtype_size(dt));
  widened->resize(v.size());
  for (size_t i = 0; i < v.size(); i++) {
    store_from_float(b.data(), dt, i, v[i]);
    (*widened)[i] = load_as_float(b.data(), dt, i);
  }
  return b;
}

struct Dev {
  void* p = nullptr;
  size_t n = 0;
  explicit Dev(size_t bytes) : n(bytes) { CHECK(cudaMalloc(&p, bytes ? bytes : 4)); }
  template <typename T>
  Dev(const std::vector<T>& v) : Dev(v.size() * sizeof(T)) {
    CHECK(cudaMemcpy(p, v.data(), n, cudaMemcpyHostToDevice));
  }
  ~Dev() { cudaFree(p); }
  void poison() { CHECK(cudaMemset(p, 0xff, n)); }  // 0xffffffff is a NaN
  template <typename T = float>
  T* as() const { return static_cast<T*>(p); }
  std::vector<float> get() const {
    cudaError_t e = cudaDeviceSynchronize();
    if (e != cudaSuccess) throw std::runtime_error(std::string("kernel: ") + cudaGetErrorString(e));
    std::vector<float> v(n / 4);
    CHECK(cudaMemcpy(v.data(), p, n, cudaMemcpyDeviceToHost));
    return v;
  }
};

// ||got - want|| / ||want|| (absolute when want is all zeros); NaN fails.
void compare(const std::string& name, const std::vector<float>& got, const std::vector<float>& want, double tol) {
  cases++;
  double num = 0, den = 0, maxd = 0;
  bool nan = got.size() != want.size();
  for (size_t i = 0; i < want.size() && !nan; i++) {
    if (std::isnan(got[i]) != std::isnan(want[i])) nan = true;
    double d = (double)got[i] - want[i];
    num += d * d, den += (double)want[i] * want[i];
    maxd = std::fmax(maxd, std::fabs(d));
  }
  double rel = den > 0 ? std::sqrt(num / den) : std::sqrt(num);
  bool ok = !nan && rel <= tol;
  if (!ok) failures++;
  std::printf("%-4s %-58s rel %.2e  max|d| %.2e%s\n", ok ? "ok" : "FAIL", name.c_str(), rel, maxd,
              nan ? "  (NaN / size mismatch)" : "");
}

const char* dtn(DType d) { return dtype_name(d); }

void test_embedding(int64_t T, int64_t C, int64_t V, int64_t P, DType dt) {
  std::vector<float> wte_f, wpe_f;
  auto wte_b = encode(randn(V * C), dt, &wte_f);
  auto wpe_b = encode(randn(P * C, 0.1f), dt, &wpe_f);
  std::vector<int32_t> ids(T), pos(T);
  for (int64_t t = 0; t < T; t++) ids[t] = (int32_t)(rng() % V), pos[t] = (int32_t)(rng() % P);
  std::vector<float> want(T * C);
  cpu::embedding_ref(want.data(), wte_b.data(), wpe_b.data(), dt, ids.data(), pos.data(), T, C);
  Dev wte(wte_b), wpe(wpe_b), di(ids), dp(pos), out(T * C * 4);
  out.poison();
  gpt2_cuda::embedding(out.as(), wte.p, wpe.p, dt, di.as<int32_t>(), dp.as<int32_t>(), T, C, V, P, 0);
  compare("embedding T=" + std::to_string(T) + " C=" + std::to_string(C) + " " + dtn(dt), out.get(), want, 1e-6);
}

void test_layernorm(int64_t rows, int64_t C, DType dt) {
  auto x = randn(rows * C, 2.f, 3.f);  // an offset mean: the centred variance must not cancel
  std::vector<float> wf, bf;
  auto wb = encode(randn(C, 0.5f, 1.f), dt, &wf);
  auto bb = encode(randn(C, 0.2f), dt, &bf);
  std::vector<float> want(rows * C);
  cpu::layernorm_ref(want.data(), x.data(), wb.data(), bb.data(), dt, rows, C, 1e-5f);
  Dev dx(x), dw(wb), db(bb), out(rows * C * 4);
  out.poison();
  gpt2_cuda::layernorm(out.as(), dx.as(), dw.p, db.p, dt, rows, C, 1e-5f, 0);
  compare("layernorm rows=" + std::to_string(rows) + " C=" + std::to_string(C) + " " + dtn(dt), out.get(), want,
          1e-5);
}

void test_linear(int path, int64_t M, int64_t K, int64_t N, DType dt, bool bias) {
  auto x = randn(M * K);
  std::vector<float> wf, bf;
  auto wb = encode(randn(N * K, 1.f / std::sqrt((float)K + 1)), dt, &wf);
  auto bb = encode(randn(N), dt, &bf);
  std::vector<float> want(M * N);
  cpu::linear_ref(want.data(), x.data(), wb.data(), bias ? bb.data() : nullptr, dt, M, K, N);
  Dev dx(x), dw(wb), db(bb), out(M * N * 4);
  out.poison();
  gpt2_cuda::linear_path(path, out.as(), dx.as(), dw.p, bias ? db.p : nullptr, dt, M, K, N, 0);
  compare(std::string("linear/") + (path == 1 ? "small" : path == 3 ? "mma" : "tiled") + " M=" + std::to_string(M) + " K=" +
              std::to_string(K) + " N=" + std::to_string(N) + " " + dtn(dt) + (bias ? " +bias" : ""),
          out.get(), want, 1e-5);
}

// The fused epilogues: gelu_new(x.w^T + b), and out += x.w^T + b (the residual stream).
void test_linear_epilogues(int path, int64_t M, int64_t K, int64_t N, DType dt) {
  auto x = randn(M * K), resid = randn(M * N);
  std::vector<float> wf, bf;
  auto wb = encode(randn(N * K, 1.f / std::sqrt((float)K)), dt, &wf);
  auto bb = encode(randn(N), dt, &bf);
  std::vector<float> lin(M * N), want(M * N);
  cpu::linear_ref(lin.data(), x.data(), wb.data(), bb.data(), dt, M, K, N);
  Dev dx(x), dw(wb), db(bb), out(M * N * 4);
  const std::string shape = " M=" + std::to_string(M) + " K=" + std::to_string(K) + " N=" + std::to_string(N) + " " + dtn(dt) +
                            (path == 1 ? " small" : path == 3 ? " mma" : " tiled");
  cpu::gelu_new_ref(want.data(), lin.data(), M * N);
  out.poison();
  gpt2_cuda::linear_ex(path, gpt2_cuda::kEpilogueGelu, out.as(), dx.as(), dw.p, db.p, dt, M, K, N, 0);
  compare("linear+gelu" + shape, out.get(), want, 1e-5);
  cpu::add_ref(want.data(), resid.data(), lin.data(), M * N);
  Dev dr(resid);
  gpt2_cuda::linear_ex(path, gpt2_cuda::kEpilogueAccumulate, dr.as(), dx.as(), dw.p, db.p, dt, M, K, N, 0);
  compare("linear+residual" + shape, dr.get(), want, 1e-5);
}

void test_pointwise(int64_t n) {
  auto x = randn(n, 3.f), y = randn(n);
  std::vector<float> want(n);
  Dev dx(x), dy(y), out(n * 4);
  cpu::gelu_new_ref(want.data(), x.data(), n);
  out.poison();
  gpt2_cuda::gelu_new(out.as(), dx.as(), n, 0);
  compare("gelu_new n=" + std::to_string(n), out.get(), want, 1e-6);
  cpu::add_ref(want.data(), x.data(), y.data(), n);
  out.poison();
  gpt2_cuda::add(out.as(), dx.as(), dy.as(), n, 0);
  compare("add n=" + std::to_string(n), out.get(), want, 1e-7);
  gpt2_cuda::add(dx.as(), dx.as(), dy.as(), n, 0);  // in place, as the residual stream does
  compare("add in place n=" + std::to_string(n), dx.get(), want, 1e-7);
}

void test_softmax(int64_t rows, int64_t cols) {
  auto x = randn(rows * cols, 4.f);
  std::vector<float> want(rows * cols);
  cpu::softmax_ref(want.data(), x.data(), rows, cols);
  Dev dx(x), out(rows * cols * 4);
  out.poison();
  gpt2_cuda::softmax(out.as(), dx.as(), rows, cols, 0);
  compare("softmax rows=" + std::to_string(rows) + " cols=" + std::to_string(cols), out.get(), want, 1e-5);
}

// Runs a prefill of T0 tokens, then `steps` single-token decode steps, on both sides, with
// the first `pad[b]` positions of sequence b masked (left padding) when masked is set; at the
// second decode step sequence 0 then has every position masked (its output must be zeros).
// With graph_api the decode steps go through attention_decode_dev (past read from device
// memory, the mask [B, Tmax]). With unaligned the caches start 4 bytes past a 16-byte boundary
// (the kernels' scalar paths). Cache rows not yet written hold 1e30 on both sides: a kernel
// that reads a key or value past the newest position fails.
void test_attention(int64_t B, int64_t H, int64_t D, int64_t T0, int steps, int64_t Tmax, bool masked,
                    bool graph_api = false, bool unaligned = false) {
  const int64_t C = H * D, off = unaligned ? 1 : 0;
  std::vector<float> kc(B * H * Tmax * D, 1e30f), vc(kc.size(), 1e30f), init(off + kc.size(), 1e30f);
  Dev dk(init), dv(init);
  float* const kd = dk.as() + off;
  float* const vd = dv.as() + off;
  std::vector<int64_t> pad(B);
  for (int64_t b = 0; b < B; b++) pad[b] = masked ? (int64_t)(rng() % (T0 + 1)) : 0;  // may mask a whole prompt
  int64_t past = 0;
  for (int s = 0; s <= steps; s++) {
    const int64_t T = s == 0 ? T0 : 1, L = past + T;
    auto qkv = randn(B * T * 3 * C);
    std::vector<int32_t> mask(B * L);
    const bool all_masked_row0 = masked && s == 2;
    for (int64_t b = 0; b < B; b++)
      for (int64_t j = 0; j < L; j++) mask[b * L + j] = j >= pad[b] && !(all_masked_row0 && b == 0) ? 1 : 0;
    std::vector<float> want(B * T * C);
    cpu::attention_ref(want.data(), qkv.data(), kc.data(), vc.data(), masked ? mask.data() : nullptr, B, T, past, Tmax,
                       H, D);
    Dev dq(qkv), dm(mask), out(B * T * C * 4);
    out.poison();
    if (graph_api && T == 1) {
      std::vector<int32_t> wide(B * Tmax, 7);  // [B, Tmax]: entries past L must not be read as keys
      for (int64_t b = 0; b < B; b++)
        for (int64_t j = 0; j < L; j++) wide[b * Tmax + j] = mask[b * L + j];
      const std::vector<int32_t> past_v = {(int32_t)past};
      Dev dw(wide), dp(past_v);
      gpt2_cuda::attention_decode_dev(out.as(), dq.as(), kd, vd, masked ? dw.as<int32_t>() : nullptr,
                                      dp.as<int32_t>(), B, Tmax, H, D, 0);
      CHECK(cudaDeviceSynchronize());
    } else {
      gpt2_cuda::attention(out.as(), dq.as(), kd, vd, masked ? dm.as<int32_t>() : nullptr, B, T, past, Tmax, H, D, 0);
    }
    compare("attention B=" + std::to_string(B) + " H=" + std::to_string(H) + " D=" + std::to_string(D) +
                " past=" + std::to_string(past) + " T=" + std::to_string(T) + (masked ? " masked" : "") +
                (unaligned ? " unaligned" : "") + (graph_api && T == 1 ? " (decode_dev)" : "") +
                (all_masked_row0 ? " row 0 all masked" : ""),
            out.get(), want, 2e-5);
    past += T;
  }
  auto kgot = dk.get(), vgot = dv.get();
  kgot.erase(kgot.begin(), kgot.begin() + off), vgot.erase(vgot.begin(), vgot.begin() + off);
  const std::string shape = " B=" + std::to_string(B) + " D=" + std::to_string(D) + (unaligned ? " unaligned" : "");
  compare("attention key cache" + shape, kgot, kc, 0);
  compare("attention value cache" + shape, vgot, vc, 0);
}

}  // namespace


// A layernorm's fold (LnFold) for one layer, made by ln_fold_build through a one-layer plan
// (the layer as c_fc behind ln_2). `on` false: no fold (null). A layer of K <= 2048 must be
// folded and a wider one must not (the layernorm kernel takes it): otherwise a failure is
// counted and ok is false.
struct OneLayerFold {
  gpt2_cuda::Gpt2Weights plan;
  std::unique_ptr<Dev> mem;
  const gpt2_cuda::LnFold* fold = nullptr;
  bool ok = true;
  OneLayerFold(bool on, const gpt2_cuda::QLinear& L, DType dt, const void* ln_w, const void* ln_b) {
    if (!on) return;
    plan.dt = dt, plan.C = L.K, plan.inner = L.N, plan.quantized = L.kind != gpt2_cuda::QLinear::kPlain;
    gpt2_cuda::Gpt2Layer layer{};
    layer.ln1_w = layer.ln2_w = ln_w, layer.ln1_b = layer.ln2_b = ln_b, layer.fc = L;
    plan.layers.push_back(layer);
    mem = std::make_unique<Dev>(gpt2_cuda::ln_fold_bytes(plan));
    gpt2_cuda::ln_fold_build(plan, mem->p, 0);
    fold = &plan.layers[0].fold2;
    if (!fold->u != (L.K > 2048)) {
      cases++, failures++, ok = false;
      std::printf("FAIL qlinear+fold %s K=%lld: folded %d\n", L.kind == gpt2_cuda::QLinear::kPlain ? "plain" : "4bit",
                  (long long)L.K, fold->u != nullptr);
    }
  }
  OneLayerFold(const OneLayerFold&) = delete;  // fold points into plan
};

// The plan's quantized Linear layers (gpt2_cuda::qlinear: the decode GEMVs for M <= 8, the
// general paths above) against the CPU reference of the module they stand for, with the
// gelu and residual epilogues and a float16 bias (the plan's biases have the model dtype).
// fold: the layernorm folded into the one-row GEMV (LnFold, vectors from ln_fold_build).
void test_qlinear_4bit(int64_t M, int64_t K, int64_t N, fmt::QuantType qt, bool dq, int epi, bool ln, int bs = 64,
                       float xscale = 1.f, bool fold = false) {
  auto x = randn(M * K, xscale, 0.5f * xscale), w = randn(N * K, 0.05f), resid = randn(M * N);
  std::vector<float> bf, lnwf, lnbf;
  auto bb = encode(randn(N, 0.1f), DType::F16, &bf);
  auto lnw = encode(randn(K, 0.3f, 1.f), DType::F16, &lnwf), lnb = encode(randn(K, 0.1f), DType::F16, &lnbf);
  std::vector<float> xin = x;
  if (ln) cpu::layernorm_ref(xin.data(), x.data(), lnw.data(), lnb.data(), DType::F16, M, K, 1e-5f);
  const int64_t nb = fmt::num_blocks(N * K, bs);
  std::vector<uint8_t> packed(fmt::packed4_bytes(N * K)), qabs(nb);
  std::vector<float> absmax(nb), nested(fmt::num_blocks(nb, 256)), code(256);
  cpu::quantize_4bit_ref(w.data(), DType::F32, N * K, bs, qt, packed.data(), absmax.data());
  for (int i = 0; i < 256; i++) std::memcpy(&code[i], &fmt::kDynamicMapSignedBits[i], 4);
  float offset = dq ? cpu::compress_absmax(absmax.data(), nb, qabs.data(), nested.data()) : 0.f;
  cpu::Weight4bit cw;
  cw.packed = packed.data(), cw.blocksize = bs, cw.qt = qt, cw.N = N, cw.K = K;
  if (dq) cw.qabsmax = qabs.data(), cw.nested_absmax = nested.data(), cw.nested_code = code.data(), cw.offset = offset;
  else cw.absmax = absmax.data();
  std::vector<float> lin(M * N), want(M * N);
  cpu::matmul_4bit_ref(xin.data(), DType::F32, M, cw, nullptr, lin.data());
  for (int64_t i = 0; i < M * N; i++) lin[i] += bf[i % N];
  Dev dx(x), dp(packed), da(absmax), dq_(qabs), dn(nested), dc(code), doff(std::vector<float>{offset}), db(bb);
  gpt2_cuda::QLinear L;
  L.kind = gpt2_cuda::QLinear::k4bit, L.N = N, L.K = K, L.bias = db.p, L.packed = dp.as<uint8_t>(), L.blocksize = bs;
  L.quant_type = (int)qt;
  if (dq) L.qabsmax = dq_.as<uint8_t>(), L.nested_absmax = dn.as(), L.nested_code = dc.as(), L.offset = doff.as();
  else L.absmax = da.as();
  gpt2_cuda::Gpt2Weights gw;
  gw.C = K, gw.inner = N, gw.quantized = true;
  Dev scratch(gpt2_cuda::qlinear_scratch_bytes(gw, M) + std::max<int64_t>(M * std::max(K, N) * 8, 4096));
  Dev out(resid), dlw(lnw), dlb(lnb), h(M * K * 4);
  if (epi == gpt2_cuda::kEpilogueGelu) cpu::gelu_new_ref(want.data(), lin.data(), M * N);
  else if (epi == gpt2_cuda::kEpilogueAccumulate) cpu::add_ref(want.data(), resid.data(), lin.data(), M * N);
  else want = lin;
  if (epi != gpt2_cuda::kEpilogueAccumulate) out.poison();
  const OneLayerFold lf(fold, L, DType::F16, dlw.p, dlb.p);
  if (!lf.ok) return;
  if (ln) gpt2_cuda::qlinear_ln(L, dlw.p, dlb.p, 1e-5f, DType::F16, epi, out.as(), dx.as(), h.as(), M, scratch.p, 0, lf.fold);
  else gpt2_cuda::qlinear(L, DType::F16, epi, out.as(), dx.as(), M, scratch.p, 0);
  compare(std::string(fold ? "qlinear+fold " : ln ? "qlinear+ln " : "qlinear ") + "4bit " + (qt == fmt::QuantType::NF4 ? "nf4" : "fp4") + (dq ? "+dq" : "") + " bs " + std::to_string(bs) + (xscale != 1.f ? " |x|~1e5" : "") + " epi " +
              std::to_string(epi) + " M=" + std::to_string(M) + " K=" + std::to_string(K) + " N=" + std::to_string(N),
          out.get(), want, 1e-5);
}

// LLM.int8(): x rounded to float16, vectorwise quantization with outlier columns, int8 product,
// float16 dequantization with the bias, the 16-bit outlier product: Linear8bitLt.forward.
// xscale: the spread of x (and the mean layernorm weight); 4 makes many outlier columns.
void test_qlinear_int8(int64_t M, int64_t K, int64_t N, float threshold, int epi, bool ln, float xscale = 1.5f) {
  auto x = randn(M * K, xscale), w = randn(N * K, 0.05f), resid = randn(M * N);
  std::vector<float> bf, lnwf, lnbf;
  auto bb = encode(randn(N, 0.1f), DType::F16, &bf);
  auto lnw = encode(randn(K, 0.5f, xscale), DType::F16, &lnwf), lnb = encode(randn(K, 0.1f), DType::F16, &lnbf);
  std::vector<float> xin = x;
  if (ln) cpu::layernorm_ref(xin.data(), x.data(), lnw.data(), lnb.data(), DType::F16, M, K, 1e-5f);
  std::vector<uint16_t> wh(N * K), xh(M * K), bias_h(N);
  for (int64_t i = 0; i < N * K; i++) wh[i] = float_to_half(w[i]);
  for (int64_t i = 0; i < M * K; i++) xh[i] = float_to_half(xin[i]);
  std::memcpy(bias_h.data(), bb.data(), N * 2);
  std::vector<int8_t> cb(N * K), xq(M * K);
  std::vector<float> scb(N), rs(M);
  cpu::int8_vectorwise_quant_ref(wh.data(), DType::F16, N, K, 0.f, cb.data(), scb.data(), nullptr);
  std::vector<uint8_t> mask(K);
  cpu::int8_vectorwise_quant_ref(xh.data(), DType::F16, M, K, threshold, xq.data(), rs.data(), mask.data());
  std::vector<int32_t> C(M * N);
  cpu::int8_linear_matmul_ref(xq.data(), cb.data(), M, N, K, C.data());
  std::vector<uint16_t> oh(M * N);
  cpu::int8_mm_dequant_ref(C.data(), rs.data(), scb.data(), bias_h.data(), M, N, oh.data());
  if (threshold > 0) cpu::int8_outlier_matmul_add(oh.data(), xh.data(), DType::F16, mask.data(), cb.data(), scb.data(), M, N, K);
  int outliers = 0;
  for (auto f : mask) outliers += f;
  std::vector<float> lin(M * N), want(M * N);
  for (int64_t i = 0; i < M * N; i++) lin[i] = half_to_float(oh[i]);
  if (epi == gpt2_cuda::kEpilogueGelu) cpu::gelu_new_ref(want.data(), lin.data(), M * N);
  else if (epi == gpt2_cuda::kEpilogueAccumulate) cpu::add_ref(want.data(), resid.data(), lin.data(), M * N);
  else want = lin;
  Dev dx(x), dcb(cb), dscb(scb), db(bb), out(resid), dlw(lnw), dlb(lnb), h(M * K * 4);
  gpt2_cuda::QLinear L;
  L.kind = gpt2_cuda::QLinear::kInt8, L.N = N, L.K = K, L.bias = db.p, L.cb = dcb.as<int8_t>(), L.scb = dscb.as();
  L.threshold = threshold;
  gpt2_cuda::Gpt2Weights gw;
  gw.C = K, gw.inner = N, gw.quantized = true;
  Dev scratch(gpt2_cuda::qlinear_scratch_bytes(gw, M) + std::max<int64_t>(M * std::max(K, N) * 8, 4096));
  if (epi != gpt2_cuda::kEpilogueAccumulate) out.poison();
  if (ln) gpt2_cuda::qlinear_ln(L, dlw.p, dlb.p, 1e-5f, DType::F16, epi, out.as(), dx.as(), h.as(), M, scratch.p, 0);
  else gpt2_cuda::qlinear(L, DType::F16, epi, out.as(), dx.as(), M, scratch.p, 0);
  // float16 outputs: the outlier product's float sum may round to the neighbouring half.
  compare(std::string(ln ? "qlinear+ln" : "qlinear") + " int8 th=" + std::to_string((int)threshold) + " (" + std::to_string(outliers) + " outlier cols) epi " +
              std::to_string(epi) + " M=" + std::to_string(M) + " K=" + std::to_string(K) + " N=" + std::to_string(N),
          out.get(), want, 2e-3);
}

// Plain layers through the plan: qlinear and qlinear_ln (layernorm, then the float GEMV).
void test_qlinear_plain(int64_t M, int64_t K, int64_t N, DType dt, int epi, bool ln, bool fold = false) {
  auto x = randn(M * K, 1.f, 0.3f), resid = randn(M * N);
  std::vector<float> wf, bf, lnwf, lnbf;
  auto wb = encode(randn(N * K, 1.f / std::sqrt((float)K)), dt, &wf);
  auto bb = encode(randn(N, 0.1f), dt, &bf);
  auto lnw = encode(randn(K, 0.3f, 1.f), dt, &lnwf), lnb = encode(randn(K, 0.1f), dt, &lnbf);
  std::vector<float> xin = x, lin(M * N), want(M * N);
  if (ln) cpu::layernorm_ref(xin.data(), x.data(), lnw.data(), lnb.data(), dt, M, K, 1e-5f);
  cpu::linear_ref(lin.data(), xin.data(), wb.data(), bb.data(), dt, M, K, N);
  if (epi == gpt2_cuda::kEpilogueGelu) cpu::gelu_new_ref(want.data(), lin.data(), M * N);
  else if (epi == gpt2_cuda::kEpilogueAccumulate) cpu::add_ref(want.data(), resid.data(), lin.data(), M * N);
  else want = lin;
  Dev dx(x), dw(wb), db(bb), dlw(lnw), dlb(lnb), out(resid), h(M * K * 4), scratch(4096);
  gpt2_cuda::QLinear L;
  L.N = N, L.K = K, L.w = dw.p, L.bias = db.p;
  if (epi != gpt2_cuda::kEpilogueAccumulate) out.poison();
  const OneLayerFold lf(fold, L, dt, dlw.p, dlb.p);
  if (!lf.ok) return;
  if (ln) gpt2_cuda::qlinear_ln(L, dlw.p, dlb.p, 1e-5f, dt, epi, out.as(), dx.as(), h.as(), M, scratch.p, 0, lf.fold);
  else gpt2_cuda::qlinear(L, dt, epi, out.as(), dx.as(), M, scratch.p, 0);
  compare(std::string(fold ? "qlinear+fold" : ln ? "qlinear+ln" : "qlinear") + " plain " + dtn(dt) + " epi " + std::to_string(epi) + " M=" +
              std::to_string(M) + " K=" + std::to_string(K) + " N=" + std::to_string(N),
          out.get(), want, 1e-5);
}

int main(int argc, char** argv) {
  const uint64_t seed = argc > 1 ? std::strtoull(argv[1], nullptr, 10) : std::random_device{}();
  rng.seed(seed);
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess || n == 0) {
    std::printf("no CUDA device: nothing to test\n");
    return 2;
  }
  cudaDeviceProp prop;
  CHECK(cudaGetDeviceProperties(&prop, 0));
  std::printf("test_gpt2_cuda on %s, seed %llu\n", prop.name, (unsigned long long)seed);
  try {
    const DType dts[] = {DType::F32, DType::F16, DType::BF16};
    for (DType dt : dts) {
      test_embedding(1, 64, 100, 50, dt);
      test_embedding(37, 771, 1000, 64, dt);
      test_layernorm(1, 768, dt);
      test_layernorm(7, 1601, dt);
      test_layernorm(3, 33, dt);
    }
    for (int path : {1, 2})
      for (DType dt : dts)
        for (int64_t M : {1, 2, 3, 5, 8, 13, 16})
          for (auto kn : std::vector<std::pair<int64_t, int64_t>>{{768, 257}, {67, 96}, {1, 5}, {1600, 33}}) {
            if (path == 2 && M < 3 && kn.first == 1) continue;
            test_linear(path, M, kn.first, kn.second, dt, (M + kn.second) % 2 == 0);
          }
    // The tensor-core decode kernel (16-bit weights, 2..16 rows, K % 32 == 0).
    for (DType dt : {DType::F16, DType::BF16})
      for (int64_t M : {2, 3, 5, 8, 9, 13, 16})
        for (auto kn : std::vector<std::pair<int64_t, int64_t>>{{768, 257}, {32, 5}, {1600, 33}, {6400, 40}})
          test_linear(3, M, kn.first, kn.second, dt, (M + kn.second) % 2 == 0);
    for (DType dt : {DType::F16, DType::BF16}) test_linear_epilogues(3, 5, 768, 301, dt), test_linear_epilogues(3, 11, 64, 3072, dt);
    for (DType dt : dts)
      for (int64_t M : {17, 64, 70, 131}) test_linear(2, M, 200, 131, dt, M % 2 == 1);
    test_linear(2, 70, 0, 9, DType::F32, true);  // K = 0: the bias alone
    test_linear(1, 3, 0, 9, DType::F32, true);
    for (int path : {1, 2})
      for (DType dt : dts) test_linear_epilogues(path, path == 1 ? 3 : 37, 768, 301, dt), test_linear_epilogues(path, 1 + path, 64, 3072, dt);
    test_pointwise(1), test_pointwise(1000003);
    test_softmax(1, 1), test_softmax(5, 50257), test_softmax(33, 7);
    test_attention(1, 12, 64, 16, 4, 32, false);
    test_attention(3, 4, 16, 9, 3, 20, true);
    test_attention(2, 3, 5, 7, 2, 12, true);     // D not a multiple of 4: the scalar path
    test_attention(2, 2, 160, 4, 2, 8, false);   // D > 128: a wider block
    test_attention(1, 25, 64, 1, 40, 64, false); // XL's head count, decode only
    test_attention(2, 2, 8, 600, 1, 700, true);  // a long prompt: many keys per thread
    // The decode kernel (gpt2_attention_decode.cu): chunks of 8 rounds of rows, its own
    // position from qkv, head sizes 4..128, and the graph's entry point.
    test_attention(1, 12, 64, 16, 130, 160, false);     // GPT-2 124M decode, past 16..145
    test_attention(2, 25, 64, 900, 3, 1030, true);      // long context, 8 chunks of 128 rows
    test_attention(2, 3, 4, 3, 4, 12, true);            // D = 4: one lane per row
    test_attention(2, 2, 128, 3, 4, 16, false, true);   // D = 128: a warp per row
    test_attention(3, 4, 32, 5, 20, 64, true, true);    // graph API, a fully masked row
    test_attention(8, 12, 64, 10, 8, 40, true, true);   // graph API, B = 8
    // The decode kernel for other head sizes (attention_decode_any in gpt2_attention.cu):
    // G lanes per row (a power of two), VPL vectors per lane, chunks of rows with keys and
    // values in flight, an online softmax merged across row groups and warps.
    test_attention(1, 12, 80, 700, 3, 1024, true);         // float4, 20 of 32 lanes; 6 chunks of 128 rows
    test_attention(3, 25, 80, 150, 4, 160, true);          // XL's head count, B = 3 (512 threads)
    test_attention(8, 25, 80, 100, 3, 128, true);          // B * H = 200 blocks: 256 threads
    test_attention(2, 4, 5, 1000, 3, 1030, true);          // scalar, 8 lanes per row, 512-row chunks
    test_attention(2, 3, 160, 300, 3, 320, true);          // float4, 2 vectors per lane
    test_attention(1, 2, 256, 500, 2, 520, false);         // float4, 2 vectors per lane, all lanes busy
    test_attention(1, 2, 1000, 20, 3, 24, true);           // float4, 8 vectors per lane (D % 128 != 0)
    test_attention(1, 2, 1024, 40, 2, 48, false);          // the largest head size, float4
    test_attention(1, 1, 1023, 10, 2, 16, false);          // the largest scalar case: 32 floats per lane
    test_attention(1, 12, 64, 700, 3, 1024, true, false, true);  // GPT-2 shape, caches not 16-byte aligned
    test_attention(1, 1, 8, 10300, 2, 10400, true);        // more positions than attention_decode takes
    // ... and through the graph's entry point (past in device memory, the mask [B, Tmax]).
    test_attention(3, 25, 80, 120, 6, 256, true, true);    // a fully masked row at step 2
    test_attention(2, 3, 5, 30, 4, 64, true, true);
    test_attention(2, 2, 160, 1000, 3, 1030, true, true);
    test_attention(8, 12, 64, 60, 3, 128, true, true, true);  // B = 8, unaligned: scalar, 2 floats per lane
    test_attention(1, 1, 8, 10300, 2, 10400, true, true);  // Tmax beyond attention_decode's shared memory
    for (DType dt : dts) test_layernorm(2, 3000, dt), test_linear(1, 1, 6400, 77, dt, true), test_linear(1, 8, 3100, 45, dt, false);
    for (DType dt : dts)
      for (int64_t M : {1, 2, 5, 8, 9})
        for (auto kn : std::vector<std::pair<int64_t, int64_t>>{{64, 33}, {1600, 257}, {6400, 40}, {36, 5}})
          test_qlinear_plain(M, kn.first, kn.second, dt, (int)((M + kn.second) % 3), (M + kn.first) % 2 == 0);
    // Plain layers behind a layernorm at 1..4 rows and every epilogue (the B=1 decode step of
    // float16 models, the LM head of every mode): the layernorm kernel, then the small-M GEMV.
    for (DType dt : dts)
      for (int64_t M : {1, 3, 4})
        for (auto kn : std::vector<std::pair<int64_t, int64_t>>{{1600, 257}, {64, 33}, {36, 5}, {6400, 40}, {768, 9}})
          for (int epi = 0; epi < 3; epi++) test_qlinear_plain(M, kn.first, kn.second, dt, epi, true);
    // ... and with the layernorm folded into the one-row GEMV (LnFold): GPT-2 widths, the
    // largest K it stages (2048), a K it leaves to the layernorm kernel (2056 > 2048).
    for (DType dt : dts)
      for (auto kn : std::vector<std::pair<int64_t, int64_t>>{{1600, 4800}, {768, 9}, {8, 3}, {2048, 77}, {2056, 40}})
        for (int epi = 0; epi < 3; epi++) test_qlinear_plain(1, kn.first, kn.second, dt, epi, true, true);
    // Batched decode (M = 2..16) takes the tensor-core GEMV for 4-bit layers: partial row
    // tiles (N % 16), partial activation tiles (M % 8), both absmax forms, other blocksizes
    // (32: the CUDA-core GEMV instead), large activations (float32 range, no float16 overflow).
    for (int64_t M : {2, 5, 11})
      for (int bs : {32, 128, 256})
        test_qlinear_4bit(M, 1024, 45 + bs / 32, M % 2 ? fmt::QuantType::NF4 : fmt::QuantType::FP4, bs != 128,
                          (int)(M % 3), M == 5, bs, bs == 256 ? 1e5f : 1.f);
    // The layernorm folded into the one-row 4-bit GEMV (the B=1 decode step's c_attn and c_fc):
    // GPT-2 widths, K beyond what the fold stages (2048: the layernorm kernel instead), odd N, both
    // absmax forms, blocksizes 32..256, every epilogue, large activations.
    test_qlinear_4bit(1, 1600, 4800, fmt::QuantType::NF4, true, 0, true, 64, 1.f, true);
    test_qlinear_4bit(1, 1600, 6400, fmt::QuantType::NF4, true, 1, true, 64, 1.f, true);
    test_qlinear_4bit(1, 768, 2304, fmt::QuantType::FP4, false, 0, true, 128, 1.f, true);
    test_qlinear_4bit(1, 64, 33, fmt::QuantType::NF4, false, 2, true, 32, 1.f, true);
    test_qlinear_4bit(1, 4096, 77, fmt::QuantType::FP4, true, 1, true, 256, 1.f, true);  // > 2048: not folded
    test_qlinear_4bit(1, 1024, 45, fmt::QuantType::NF4, true, 2, true, 64, 1e5f, true);
    test_qlinear_4bit(1, 96, 1, fmt::QuantType::NF4, true, 0, true, 32, 1.f, true);
    // fortune-gpt2's layers in a 3-row padded prefill (M = 15): 42 KB of staged rows plus the
    // kernel's static shared memory pass the 48 KB default (needs the opt-in).
    test_qlinear_4bit(15, 512, 128, fmt::QuantType::NF4, true, 2, false);
    test_qlinear_4bit(15, 128, 384, fmt::QuantType::NF4, true, 0, true);
    // GPT-2 XL's qkv at B=8 (300 row tiles): several tiles a block, all 16 warps on each.
    test_qlinear_4bit(8, 1600, 4800, fmt::QuantType::NF4, true, 0, true);
    test_linear(3, 8, 1600, 4800, DType::F16, true);
    // The int8 decode GEMV keeps 4 chunks a lane in flight when its grid is one wave, 1 when it
    // is not (GPT-2 XL's qkv and c_fc at B=1: 600 and 800 blocks); both, with and without
    // the layernorm and outliers.
    test_qlinear_int8(1, 1600, 4800, 6.f, 0, true);
    test_qlinear_int8(1, 1600, 6400, 0.f, 1, true);
    test_qlinear_int8(3, 1600, 4800, 6.f, 2, false);
    test_qlinear_int8(1, 1600, 300, 6.f, 2, false);
    // 5-8 rows through the preparation kernel too (B = 8 decode): GPT-2 XL's qkv with the
    // layernorm, and its mlp c_proj (8 rows of 6400 staged: 205 KB of shared memory).
    test_qlinear_int8(5, 1600, 4800, 6.f, 0, true);
    test_qlinear_int8(7, 6400, 1600, 6.f, 2, false);
    test_qlinear_int8(8, 6400, 1600, 0.f, 1, false);
    // Many outlier columns (one in ~7 after the layernorm), odd widths and row counts, with and
    // without the layernorm: the outlier products of the int8 decode paths (the preparation
    // kernel's list; with NIBBLE_CUDA_INT8_PREP=0, as device-check.sh also runs, the one-kernel
    // GEMV's per-chunk masks).
    for (int64_t M : {1, 2, 3, 4})
      for (auto kn : std::vector<std::pair<int64_t, int64_t>>{{48, 37}, {1600, 300}, {6400, 75}}) {
        test_qlinear_int8(M, kn.first, kn.second, 6.f, (int)(M % 3), M % 2 == 1, 4.f);
        test_qlinear_int8(M, kn.first, kn.second, 6.f, (int)((M + 1) % 3), M % 2 == 0, 4.f);
      }
    for (int64_t M : {1, 2, 3, 8, 16, 20})
      for (auto kn : std::vector<std::pair<int64_t, int64_t>>{{64, 33}, {1600, 100}, {6400, 75}, {8192, 16}})
        for (int epi = 0; epi < 3; epi++) {
          if ((M + kn.first + epi) % 2 && M > 3) continue;  // a sample of the large cases
          const bool ln = (M + epi) % 2 == 0;
          test_qlinear_4bit(M, kn.first, kn.second, (M + epi) % 2 ? fmt::QuantType::NF4 : fmt::QuantType::FP4, (M + epi) % 3 != 0, epi, ln);
          test_qlinear_int8(M, kn.first, kn.second, epi == 1 ? 0.f : 6.f, epi, ln);
        }
  } catch (const std::exception& e) {
    std::printf("FAIL exception: %s\n", e.what());
    return 1;
  }
  std::printf("%s: %d of %d cases passed (seed %llu)\n", failures ? "FAILED" : "PASSED", cases - failures, cases,
              (unsigned long long)seed);
  return failures ? 1 : 0;
}
