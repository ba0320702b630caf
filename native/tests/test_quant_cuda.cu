// Native test of the CUDA quantization kernels (llm.c dev/cuda style, no Node.js needed):
//  1. every CUDA kernel against the CPU reference (cpu::*_ref, the contract) on fresh random
//     inputs (the seed is printed; pass --seed N to repeat a run) over odd sizes, partial
//     blocks, all-zero blocks and NaN/Inf entries: bit-exact for quantize/dequantize/int8,
//     relative-L2 tolerance for the 4-bit matmul;
//  2. against bitsandbytes' own outputs in test/fixtures/bnb_vectors.safetensors;
//  3. bad arguments raise exceptions (never abort).
// Prints one PASS/FAIL line per check and a summary; exits non-zero on any failure.
//
// Usage: test_quant_cuda [--seed N] [--fixtures path/to/bnb_vectors.safetensors] [--only name-substring]
#include <cfloat>
#include <chrono>
#include <cstdlib>
#include <functional>
#include <memory>

#include "cpu/quant_ops.h"
#include "cuda/quant_cuda.h"
#include "tests/cuda_test_util.h"
#include "tests/safetensors_lite.h"

using namespace nibble;
using namespace nibble_test;
using fmt::QuantType;

namespace {

const DType kFloatTypes[3] = {DType::F32, DType::F16, DType::BF16};
const QuantType kQuantTypes[2] = {QuantType::NF4, QuantType::FP4};
const char* qtn(QuantType q) { return q == QuantType::NF4 ? "nf4" : "fp4"; }

template <typename T>
size_t count_mismatch(const std::vector<T>& a, const std::vector<T>& b) {
  if (a.size() != b.size()) return (size_t)-1;
  size_t bad = 0;
  for (size_t i = 0; i < a.size(); i++) bad += std::memcmp(&a[i], &b[i], sizeof(T)) != 0;
  return bad;
}

// Float data compares bit for bit, except that any NaN equals any NaN: the contract fixes
// where NaN appears, not its payload (x86 and CUDA produce different default NaNs).
template <>
size_t count_mismatch<float>(const std::vector<float>& a, const std::vector<float>& b) {
  if (a.size() != b.size()) return (size_t)-1;
  size_t bad = 0;
  for (size_t i = 0; i < a.size(); i++)
    bad += !(std::memcmp(&a[i], &b[i], 4) == 0 || (std::isnan(a[i]) && std::isnan(b[i])));
  return bad;
}

// Same for a buffer of n elements of a float dtype.
size_t count_mismatch_typed(const std::vector<uint8_t>& a, const std::vector<uint8_t>& b, DType dt) {
  if (a.size() != b.size()) return (size_t)-1;
  const size_t es = dtype_size(dt), n = a.size() / es;
  size_t bad = 0;
  for (size_t i = 0; i < n; i++) {
    if (std::memcmp(&a[i * es], &b[i * es], es) == 0) continue;
    bad += !(std::isnan(as_float(a.data(), dt, i)) && std::isnan(as_float(b.data(), dt, i)));
  }
  return bad;
}

// Random input with the awkward cases the CPU contract defines: an all-zero block, a NaN and
// an Inf (each in its own block) when there is room.
std::vector<float> make_input(std::mt19937_64& rng, int64_t n, int bs, bool specials) {
  std::uniform_real_distribution<float> sd(0.01f, 8.0f);
  std::vector<float> x = randn(rng, (size_t)n, sd(rng));
  if (specials && n >= 4 * (int64_t)bs) {
    for (int i = 0; i < bs; i++) x[bs + i] = 0.0f;
    x[2 * bs + 3] = NAN;
    x[3 * bs + 1] = INFINITY;
  }
  return x;
}

std::string g_only;  // --only: run the checks whose name contains this

void run_guarded(Table& t, const std::string& name, const std::function<std::string(bool&)>& body) {
  if (!g_only.empty() && name.find(g_only) == std::string::npos) return;
  bool pass = true;
  std::string detail;
  try {
    detail = body(pass);
  } catch (const std::exception& e) {
    pass = false;
    detail = std::string("exception: ") + e.what();
    cudaGetLastError();
  }
  t.add(name, pass, detail);
}

// ---- 4-bit quantize / dequantize / double quant ------------------------------------------------
void test_4bit(Table& t, std::mt19937_64& rng) {
  const int64_t sizes[] = {1, 7, 33, 1000, 4097, 10010, 65536 + 77, 262147};
  for (QuantType qt : kQuantTypes)
    for (DType dt : kFloatTypes)
      for (int bs = 32; bs <= 4096; bs *= 2) {
        std::string name = std::string("quantize_4bit ") + qtn(qt) + " " + dtype_name(dt) + " bs" + std::to_string(bs);
        run_guarded(t, name, [&](bool& pass) {
          size_t bad_q = 0, bad_a = 0, bad_dq = 0, bad_cq = 0, bad_ddq = 0, cases = 0, bad_off = 0;
          for (int64_t n : sizes) {
            auto xf = make_input(rng, n, bs, true);
            HostFloats xh(dt, xf);
            const int64_t nb = fmt::num_blocks(n, bs), pb = fmt::packed4_bytes(n);
            std::vector<uint8_t> rp(pb);
            std::vector<float> ra(nb);
            cpu::quantize_4bit_ref(xh.data(), dt, n, bs, qt, rp.data(), ra.data());
            DevBuf dx(xh.data(), xh.size_bytes()), dp(pb), da(nb * 4);
            dp.poison();
            da.poison();
            cuda::quantize_4bit(dx.p, dt, n, bs, qt, dp.as<uint8_t>(), da.as<float>());
            bad_q += count_mismatch(dp.download<uint8_t>(pb), rp);
            bad_a += count_mismatch(da.download<float>(nb), ra);

            // dequantize from the reference state, into the input dtype
            std::vector<uint8_t> rout(n * dtype_size(dt));
            cpu::dequantize_4bit_ref(rp.data(), ra.data(), n, bs, qt, rout.data(), dt);
            DevBuf rpd(rp), rad(ra), dout(rout.size());
            dout.poison();
            cuda::dequantize_4bit(rpd.as<uint8_t>(), rad.as<float>(), n, bs, qt, dout.p, dt);
            bad_dq += count_mismatch_typed(dout.download<uint8_t>(rout.size()), rout, dt);

            // double quantization of the (finite) absmax vector
            std::vector<uint8_t> cq(nb);
            std::vector<float> cn(fmt::num_blocks(nb, 256));
            float coff = cpu::compress_absmax(ra.data(), nb, cq.data(), cn.data());
            DevBuf gq(nb), gn(cn.size() * 4), goff(4);
            gq.poison();
            gn.poison();
            cuda::compress_absmax(rad.as<float>(), nb, gq.as<uint8_t>(), gn.as<float>(), goff.as<float>());
            float gofv = goff.download<float>(1)[0];
            bad_off += !(std::memcmp(&gofv, &coff, 4) == 0 || (std::isnan(gofv) && std::isnan(coff)));
            bad_cq += count_mismatch(gq.download<uint8_t>(nb), cq) + count_mismatch(gn.download<float>(cn.size()), cn);

            std::vector<float> code(256);
            for (int i = 0; i < 256; i++) code[i] = fmt::bits_to_float(fmt::kDynamicMapSignedBits[i]);
            std::vector<float> dabs(nb);
            cpu::decompress_absmax(cq.data(), cn.data(), code.data(), coff, nb, dabs.data());
            cpu::dequantize_4bit_ref(rp.data(), dabs.data(), n, bs, qt, rout.data(), dt);
            DevBuf cqd(cq), cnd(cn), coded(code), coffd(&coff, 4);
            dout.poison();
            cuda::dequantize_4bit_dq(rpd.as<uint8_t>(), cqd.as<uint8_t>(), cnd.as<float>(), coded.as<float>(),
                                     coffd.as<float>(), n, bs, qt, dout.p, dt);
            bad_ddq += count_mismatch_typed(dout.download<uint8_t>(rout.size()), rout, dt);
            cases++;
          }
          pass = bad_q == 0 && bad_a == 0 && bad_dq == 0 && bad_cq == 0 && bad_ddq == 0 && bad_off == 0;
          return std::to_string(cases) + " sizes; mismatches packed " + std::to_string(bad_q) + " absmax " +
                 std::to_string(bad_a) + " dequant " + std::to_string(bad_dq) + " dq-state " + std::to_string(bad_cq) +
                 " offset " + std::to_string(bad_off) + " dq-dequant " + std::to_string(bad_ddq);
        });
      }
}

// ---- 8-bit blockwise -----------------------------------------------------------------------------
void test_blockwise(Table& t, std::mt19937_64& rng) {
  std::vector<float> code(256);
  for (int i = 0; i < 256; i++) code[i] = fmt::bits_to_float(fmt::kDynamicMapSignedBits[i]);
  DevBuf dcode(code);
  const int64_t sizes[] = {1, 15, 1000, 4097, 10010, 262147};
  for (DType dt : kFloatTypes)
    for (int bs = 64; bs <= 4096; bs *= 2) {
      std::string name = std::string("quantize_blockwise 8-bit ") + dtype_name(dt) + " bs" + std::to_string(bs);
      run_guarded(t, name, [&](bool& pass) {
        size_t bad_q = 0, bad_a = 0, bad_dq = 0;
        for (int64_t n : sizes) {
          auto xf = make_input(rng, n, bs, true);
          HostFloats xh(dt, xf);
          const int64_t nb = fmt::num_blocks(n, bs);
          std::vector<uint8_t> rq(n);
          std::vector<float> ra(nb);
          cpu::quantize_blockwise_ref(code.data(), xh.data(), dt, n, bs, rq.data(), ra.data());
          DevBuf dx(xh.data(), xh.size_bytes()), dq(n), da(nb * 4);
          dq.poison();
          da.poison();
          cuda::quantize_blockwise(dcode.as<float>(), dx.p, dt, n, bs, dq.as<uint8_t>(), da.as<float>());
          bad_q += count_mismatch(dq.download<uint8_t>(n), rq);
          bad_a += count_mismatch(da.download<float>(nb), ra);
          std::vector<uint8_t> rout(n * dtype_size(dt));
          cpu::dequantize_blockwise_ref(code.data(), rq.data(), ra.data(), n, bs, rout.data(), dt);
          DevBuf rqd(rq), rad(ra), dout(rout.size());
          dout.poison();
          cuda::dequantize_blockwise(dcode.as<float>(), rqd.as<uint8_t>(), rad.as<float>(), n, bs, dout.p, dt);
          bad_dq += count_mismatch_typed(dout.download<uint8_t>(rout.size()), rout, dt);
        }
        pass = bad_q == 0 && bad_a == 0 && bad_dq == 0;
        return "mismatches q " + std::to_string(bad_q) + " absmax " + std::to_string(bad_a) + " dequant " +
               std::to_string(bad_dq);
      });
    }
}

// ---- LLM.int8() ------------------------------------------------------------------------------------
void test_int8(Table& t, std::mt19937_64& rng) {
  const int64_t shapes[][2] = {{1, 1},      {1, 77},   {3, 512},  {64, 512},   {130, 4095},
                               {1024, 1000}, {7, 8192}, {9, 12296}, {2, 16392}, {5, 2056}};
  for (DType dt : kFloatTypes)
    for (float th : {0.0f, 6.0f}) {
      std::string name = std::string("int8_vectorwise_quant ") + dtype_name(dt) + " th" + fmt_g(th);
      run_guarded(t, name, [&](bool& pass) {
        size_t bad = 0, outliers = 0;
        for (auto& s : shapes) {
          const int64_t rows = s[0], cols = s[1];
          auto xf = randn(rng, rows * cols, 1.5f);
          std::uniform_int_distribution<int64_t> col(0, cols - 1), row(0, rows - 1);
          for (int i = 0; i < 3; i++) xf[row(rng) * cols + col(rng)] = (i & 1 ? -1.0f : 1.0f) * (6.0f + 10.0f * i);
          if (rows > 2)
            for (int64_t c = 0; c < cols; c++) xf[1 * cols + c] = 0.0f;  // a zero row
          if (rows * cols > 10) xf[5] = NAN;
          HostFloats xh(dt, xf);
          std::vector<int8_t> rq(rows * cols);
          std::vector<float> rs(rows);
          std::vector<uint8_t> rf(cols, 0);
          cpu::int8_vectorwise_quant_ref(xh.data(), dt, rows, cols, th, rq.data(), rs.data(), rf.data());
          DevBuf dx(xh.data(), xh.size_bytes()), dq(rows * cols), ds(rows * 4), df(cols);
          dq.poison();
          ds.poison();
          df.poison();
          cuda::int8_vectorwise_quant(dx.p, dt, rows, cols, th, dq.as<int8_t>(), ds.as<float>(), df.as<uint8_t>());
          bad += count_mismatch(dq.download<int8_t>(rows * cols), rq) + count_mismatch(ds.download<float>(rows), rs);
          if (th > 0) {
            bad += count_mismatch(df.download<uint8_t>(cols), rf);
            for (auto f : rf) outliers += f;
          }
        }
        pass = bad == 0;
        return "mismatches " + std::to_string(bad) + " (outlier columns seen " + std::to_string(outliers) + ")";
      });
    }

  const int64_t mm[][3] = {{1, 1, 1},     {1, 300, 512},  {2, 77, 64},    {3, 256, 4096}, {4, 130, 80},
                           {5, 64, 512},  {16, 256, 512}, {17, 129, 96},  {64, 256, 512}, {130, 250, 320},
                           {1024, 384, 256}, {33, 65, 77}, {300, 70, 1000}, {9, 40, 8200},
                           // two+ waves of 128x256 tiles on an H100: the large-tile kernel, with a
                           // partial k-tile, odd N (scalar stores), and more k-tiles than stages
                           {2085, 4358, 272}, {2100, 4357, 144}, {1300, 6146, 656},
                           // an odd count of row tiles (a cluster's second CTA past M) and N < 256
                           // (the second half of B's tile past N)
                           {40001, 130, 48}};
  run_guarded(t, "int8_linear_matmul + int8_mm_dequant (+fused)", [&](bool& pass) {
    size_t bad_c = 0, bad_d = 0, bad_f = 0;
    std::uniform_int_distribution<int> q(-127, 127);
    for (auto& s : mm) {
      const int64_t M = s[0], N = s[1], K = s[2];
      std::vector<int8_t> A(M * K), B(N * K);
      for (auto& v : A) v = (int8_t)q(rng);
      for (auto& v : B) v = (int8_t)q(rng);
      std::vector<int32_t> rc(M * N);
      cpu::int8_linear_matmul_ref(A.data(), B.data(), M, N, K, rc.data());
      DevBuf dA(A), dB(B), dC(M * N * 4);
      dC.poison();
      cuda::int8_linear_matmul(dA.as<int8_t>(), dB.as<int8_t>(), M, N, K, dC.as<int32_t>());
      bad_c += count_mismatch(dC.download<int32_t>(M * N), rc);

      std::vector<float> rs(M), cs(N);
      std::uniform_real_distribution<float> st(0.01f, 10.0f);
      for (auto& v : rs) v = st(rng);
      for (auto& v : cs) v = st(rng);
      std::vector<uint16_t> bias(N);
      for (auto& v : bias) v = float_to_half(st(rng) - 5.0f);
      const bool with_bias = (M + N) % 2 == 0;
      std::vector<uint16_t> rout(M * N);
      cpu::int8_mm_dequant_ref(rc.data(), rs.data(), cs.data(), with_bias ? bias.data() : nullptr, M, N, rout.data());
      DevBuf drs(rs), dcs(cs), dbias(bias), dout(M * N * 2), rcd(rc);
      dout.poison();
      cuda::int8_mm_dequant(rcd.as<int32_t>(), drs.as<float>(), dcs.as<float>(),
                            with_bias ? dbias.as<uint16_t>() : nullptr, M, N, dout.as<uint16_t>());
      bad_d += count_mismatch(dout.download<uint16_t>(M * N), rout);
      dout.poison();
      cuda::int8_linear_matmul_dequant(dA.as<int8_t>(), dB.as<int8_t>(), M, N, K, drs.as<float>(), dcs.as<float>(),
                                       with_bias ? dbias.as<uint16_t>() : nullptr, dout.as<uint16_t>());
      bad_f += count_mismatch(dout.download<uint16_t>(M * N), rout);
    }
    pass = bad_c == 0 && bad_d == 0 && bad_f == 0;
    return std::to_string(sizeof(mm) / sizeof(mm[0])) + " shapes; mismatches C32 " + std::to_string(bad_c) +
           " dequant " + std::to_string(bad_d) + " fused " + std::to_string(bad_f);
  });
}

// ---- 4-bit matmul ------------------------------------------------------------------------------------
struct QWeight {
  std::vector<uint8_t> packed, qabs;
  std::vector<float> absmax, nested, code;
  float offset = 0;
  int bs;
  QuantType qt;
  int64_t N, K;
  cpu::Weight4bit cpu_view(bool dq) const {
    cpu::Weight4bit w;
    w.packed = packed.data();
    if (dq) {
      w.qabsmax = qabs.data();
      w.nested_absmax = nested.data();
      w.nested_code = code.data();
      w.offset = offset;
    } else {
      w.absmax = absmax.data();
    }
    w.blocksize = bs;
    w.qt = qt;
    w.N = N;
    w.K = K;
    return w;
  }
};

QWeight make_weight(const std::vector<float>& wf, int64_t N, int64_t K, int bs, QuantType qt) {
  QWeight q;
  q.N = N;
  q.K = K;
  q.bs = bs;
  q.qt = qt;
  const int64_t n = N * K, nb = fmt::num_blocks(n, bs);
  q.packed.resize(fmt::packed4_bytes(n));
  q.absmax.resize(nb);
  cpu::quantize_4bit_ref(wf.data(), DType::F32, n, bs, qt, q.packed.data(), q.absmax.data());
  q.qabs.resize(nb);
  q.nested.resize(fmt::num_blocks(nb, 256));
  q.offset = cpu::compress_absmax(q.absmax.data(), nb, q.qabs.data(), q.nested.data());
  q.code.resize(256);
  for (int i = 0; i < 256; i++) q.code[i] = fmt::bits_to_float(fmt::kDynamicMapSignedBits[i]);
  return q;
}

struct DevWeight {
  DevBuf packed, absmax, qabs, nested, code, offset;
  explicit DevWeight(const QWeight& q)
      : packed(q.packed), absmax(q.absmax), qabs(q.qabs), nested(q.nested), code(q.code), offset(&q.offset, 4) {}
  cuda::Weight4bit view(const QWeight& q, bool dq) const {
    cuda::Weight4bit w;
    w.packed = packed.as<uint8_t>();
    if (dq) {
      w.qabsmax = qabs.as<uint8_t>();
      w.nested_absmax = nested.as<float>();
      w.nested_code = code.as<float>();
      w.offset_ptr = offset.as<float>();
    } else {
      w.absmax = absmax.as<float>();
    }
    w.blocksize = q.bs;
    w.qt = q.qt;
    w.N = q.N;
    w.K = q.K;
    return w;
  }
};

double tolerance(DType dt, cuda::Matmul4bitPath path) {
  if (dt == DType::BF16) return 1e-2;  // bf16 output rounding alone is ~2e-3 per element
  if (dt == DType::F16) return 2e-3;   // fp16 operands on tensor cores / fp16 rounding of the output
  return path == cuda::Matmul4bitPath::GemvHalfLut ? 1e-3 : 2e-5;  // float32: float accumulation
}

const char* path_name(cuda::Matmul4bitPath p) {
  switch (p) {
    case cuda::Matmul4bitPath::Gemv: return "gemv";
    case cuda::Matmul4bitPath::GemvHalfLut: return "gemv-halflut";
    case cuda::Matmul4bitPath::GemvHalf2Acc: return "gemv-hfma2";
    case cuda::Matmul4bitPath::Mma: return "mma";
    case cuda::Matmul4bitPath::Simt: return "simt";
    default: return "auto";
  }
}

void test_matmul4(Table& t, std::mt19937_64& rng) {
  const int64_t Ms[] = {1, 3, 16, 17, 64, 130, 1024};
  const int64_t NK[][2] = {{256, 512}, {129, 96}, {64, 77}, {200, 4096}, {48, 8192}};
  const int bss[] = {64, 32, 128, 256, 4096};
  for (DType dt : kFloatTypes)
    for (QuantType qt : kQuantTypes)
      for (bool dq : {false, true}) {
        using P = cuda::Matmul4bitPath;
        for (P path : {P::Auto, P::Gemv, P::GemvHalfLut, P::GemvHalf2Acc, P::Mma, P::Simt}) {
          if (path == P::Mma && dt == DType::F32) continue;
          if (path == P::GemvHalf2Acc && dt != DType::F16) continue;
          std::string name = std::string("matmul_4bit ") + dtype_name(dt) + " " + qtn(qt) + (dq ? " dq" : "") + " " +
                             path_name(path);
          run_guarded(t, name, [&](bool& pass) {
            double worst = 0;
            int cases = 0;
            std::string worst_at;
            for (size_t si = 0; si < sizeof(NK) / sizeof(NK[0]); si++) {
              const int64_t N = NK[si][0], K = NK[si][1];
              const int bs = bss[(si + cases) % 5];
              auto wf = randn(rng, N * K, 0.05f);
              QWeight q = make_weight(wf, N, K, bs, qt);
              DevWeight dw(q);
              for (int64_t M : Ms) {
                const bool gemv = path == P::Gemv || path == P::GemvHalfLut || path == P::GemvHalf2Acc;
                if (gemv && (M > 3 || K % 32 != 0)) continue;
                if (path == P::Mma && (M == 1 || K % 32 != 0)) continue;
                if (M * N * K > (int64_t)3e8) continue;  // keep the double-precision reference quick
                auto xf = randn(rng, M * K, 1.0f);
                auto bf = randn(rng, N, 0.5f);
                HostFloats xh(dt, xf), bh(dt, bf);
                const bool with_bias = (M + si) % 2 == 0;
                std::vector<uint8_t> rout(M * N * dtype_size(dt));
                cpu::matmul_4bit_ref(xh.data(), dt, M, q.cpu_view(dq), with_bias ? bh.data() : nullptr, rout.data());
                DevBuf dx(xh.data(), xh.size_bytes()), db(bh.data(), bh.size_bytes()), dout(rout.size());
                dout.poison(0xff);  // NaN pattern for every float type
                cuda::matmul_4bit_path(path, dx.p, dt, M, dw.view(q, dq), with_bias ? db.p : nullptr, dout.p);
                auto got = dout.download<uint8_t>(rout.size());
                std::vector<float> a(M * N), b(M * N);
                for (int64_t i = 0; i < M * N; i++) {
                  a[i] = as_float(got.data(), dt, i);
                  b[i] = as_float(rout.data(), dt, i);
                }
                double e = rel_l2(a, b);
                if (!(e <= worst)) {
                  worst = e;
                  worst_at = "M=" + std::to_string(M) + " N=" + std::to_string(N) + " K=" + std::to_string(K) +
                             " bs=" + std::to_string(bs);
                }
                cases++;
              }
            }
            const double tol = tolerance(dt, path);
            pass = cases > 0 && worst <= tol;
            return std::to_string(cases) + " shapes; worst rel L2 " + fmt_g(worst) + " (tol " + fmt_g(tol) + ") at " +
                   worst_at;
          });
        }
      }
}

// The row-interleaved GEMV (quant_gemv4_rows.cu) against the CPU reference: odd N (partial row
// groups), K from one chunk to 16384 (one to many split-K slices), every blocksize that fits a
// row, bias or not; each case launched three times on the same copy (the split-K counters
// must reset) with bit-identical results (the partials are summed in a fixed order).
void test_gemv_rows(Table& t, std::mt19937_64& rng) {
  const int64_t NK[][2] = {{1, 32}, {3, 64}, {31, 96}, {33, 4096}, {129, 1600}, {1600, 6400}, {4097, 256},
                           {200, 16384}, {6400, 1600}};
  const int bss[] = {32, 64, 128, 256, 4096};
  for (DType dt : kFloatTypes)
    for (QuantType qt : kQuantTypes)
      for (bool dq : {false, true}) {
        std::string name = std::string("gemv_4bit_rows ") + dtype_name(dt) + " " + qtn(qt) + (dq ? " dq" : "");
        run_guarded(t, name, [&](bool& pass) {
          double worst = 0;
          int cases = 0;
          bool stable = true;
          std::string worst_at;
          for (size_t si = 0; si < sizeof(NK) / sizeof(NK[0]); si++) {
            const int64_t N = NK[si][0], K = NK[si][1];
            int bs = bss[(si + cases) % 5];
            while (K % bs) bs /= 2;
            auto wf = randn(rng, N * K, 0.05f);
            QWeight q = make_weight(wf, N, K, bs, qt);
            DevWeight dw(q);
            const cuda::Weight4bit src = dw.view(q, dq);
            if (!cuda::rows_layout_unsupported(src).empty()) throw std::runtime_error("row layout refused " + name);
            DevBuf buf(cuda::rows_layout_bytes(N, K, bs, dq));
            buf.poison(0xff);  // the copy must not depend on the buffer's old contents
            const cuda::Weight4bitRows rw = cuda::make_rows_layout(src, buf.p);
            auto xf = randn(rng, K, 1.0f);
            auto bf = randn(rng, N, 0.5f);
            HostFloats xh(dt, xf), bh(dt, bf);
            const bool with_bias = si % 2 == 0;
            std::vector<uint8_t> rout(N * dtype_size(dt));
            cpu::matmul_4bit_ref(xh.data(), dt, 1, q.cpu_view(dq), with_bias ? bh.data() : nullptr, rout.data());
            DevBuf dx(xh.data(), xh.size_bytes()), db(bh.data(), bh.size_bytes()), dout(rout.size());
            std::vector<uint8_t> first;
            for (int rep = 0; rep < 3; rep++) {
              dout.poison(0xff);
              cuda::gemv_4bit_rows(dx.p, dt, rw, with_bias ? db.p : nullptr, dout.p);
              auto got = dout.download<uint8_t>(rout.size());
              if (rep == 0) first = got;
              else if (got != first) stable = false;
            }
            std::vector<float> a(N), b(N);
            for (int64_t i = 0; i < N; i++) a[i] = as_float(first.data(), dt, i), b[i] = as_float(rout.data(), dt, i);
            double e = rel_l2(a, b);
            if (!(e <= worst)) {
              worst = e;
              worst_at = "N=" + std::to_string(N) + " K=" + std::to_string(K) + " bs=" + std::to_string(bs);
            }
            cases++;
          }
          const double tol = tolerance(dt, cuda::Matmul4bitPath::Gemv);
          pass = cases > 0 && worst <= tol && stable;
          return std::to_string(cases) + " shapes x3 launches" + (stable ? "" : " (NOT bit-stable)") +
                 "; worst rel L2 " + fmt_g(worst) + " (tol " + fmt_g(tol) + ") at " + worst_at;
        });
      }
}

// The fragment-ordered GEMM (quant_mma4_tiles.cu) against the CPU reference: M across the
// activation-row templates (n8 tiles 2/4/8) and past 64 (a launch per 64 rows), odd N (partial
// row groups and bands), K from one chunk to 16384 (one to many split-K slices), blocksizes
// 64..4096, bias or not; each case launched twice on the same copy (the split-K counters must
// reset) with bit-identical results.
void test_mma_tiles(Table& t, std::mt19937_64& rng) {
  const int64_t Ms[] = {1, 2, 3, 8, 16, 17, 31, 33, 64, 65, 130};
  const int64_t NK[][2] = {{24, 64}, {31, 128}, {33, 4096}, {257, 1536}, {520, 64}, {100, 16384}, {1024, 1024}};
  const int bss[] = {64, 128, 256, 4096, 64};
  for (DType dt : {DType::F16, DType::BF16})
    for (QuantType qt : kQuantTypes)
      for (bool dq : {false, true}) {
        std::string name = std::string("matmul_4bit_tiles ") + dtype_name(dt) + " " + qtn(qt) + (dq ? " dq" : "");
        run_guarded(t, name, [&](bool& pass) {
          double worst = 0;
          int cases = 0;
          bool stable = true;
          std::string worst_at;
          for (size_t si = 0; si < sizeof(NK) / sizeof(NK[0]); si++) {
            const int64_t N = NK[si][0], K = NK[si][1];
            int bs = bss[(si + cases) % 5];
            while (K % bs) bs /= 2;
            auto wf = randn(rng, N * K, 0.05f);
            QWeight q = make_weight(wf, N, K, bs, qt);
            DevWeight dw(q);
            const cuda::Weight4bit src = dw.view(q, dq);
            if (!cuda::tiles_layout_unsupported(src).empty()) throw std::runtime_error("tiles layout refused " + name);
            DevBuf buf(cuda::tiles_layout_bytes(N, K, bs, dq));
            buf.poison(0xff);  // the copy must not depend on the buffer's old contents
            const cuda::Weight4bitTiles tw = cuda::make_tiles_layout(src, buf.p);
            for (int64_t M : Ms) {
              if (M * N * K > (int64_t)2e8) continue;  // keep the double-precision reference quick
              auto xf = randn(rng, M * K, 1.0f);
              auto bf = randn(rng, N, 0.5f);
              HostFloats xh(dt, xf), bh(dt, bf);
              const bool with_bias = (M + si) % 2 == 0;
              std::vector<uint8_t> rout(M * N * dtype_size(dt));
              cpu::matmul_4bit_ref(xh.data(), dt, M, q.cpu_view(dq), with_bias ? bh.data() : nullptr, rout.data());
              DevBuf dx(xh.data(), xh.size_bytes()), db(bh.data(), bh.size_bytes()), dout(rout.size());
              std::vector<uint8_t> first;
              for (int rep = 0; rep < 2; rep++) {
                dout.poison(0xff);
                cuda::matmul_4bit_tiles(dx.p, dt, M, tw, with_bias ? db.p : nullptr, dout.p);
                auto got = dout.download<uint8_t>(rout.size());
                if (rep == 0) first = got;
                else if (got != first) stable = false;
              }
              std::vector<float> a(M * N), b(M * N);
              for (int64_t i = 0; i < M * N; i++) a[i] = as_float(first.data(), dt, i), b[i] = as_float(rout.data(), dt, i);
              double e = rel_l2(a, b);
              if (!(e <= worst)) {
                worst = e;
                worst_at = "M=" + std::to_string(M) + " N=" + std::to_string(N) + " K=" + std::to_string(K) +
                           " bs=" + std::to_string(bs);
              }
              cases++;
            }
          }
          const double tol = tolerance(dt, cuda::Matmul4bitPath::Mma);
          pass = cases > 0 && worst <= tol && stable;
          return std::to_string(cases) + " cases x2 launches" + (stable ? "" : " (NOT bit-stable)") +
                 "; worst rel L2 " + fmt_g(worst) + " (tol " + fmt_g(tol) + ") at " + worst_at;
        });
      }
}

// ---- bitsandbytes fixtures ------------------------------------------------------------------------------
std::vector<float> to_floats(const std::vector<uint8_t>& raw, DType dt) {
  std::vector<float> v(raw.size() / dtype_size(dt));
  for (size_t i = 0; i < v.size(); i++) v[i] = as_float(raw.data(), dt, i);
  return v;
}

void test_fixtures(Table& t, const std::string& path) {
  std::unique_ptr<SafeTensors> st;
  try {
    st.reset(new SafeTensors(path));
  } catch (const std::exception& e) {
    t.add("bnb fixtures", false, e.what());
    return;
  }
  // 4-bit quantize / double quant / dequantize
  for (const char* in : {"f32", "odd_f16"})
    for (QuantType qt : kQuantTypes)
      for (int bs : {64, 128, 256, 4096})
        for (int dq = 0; dq < 2; dq++) {
          const std::string pre = std::string("q4.") + in + "." + qtn(qt) + ".bs" + std::to_string(bs) + ".dq" +
                                  std::to_string(dq) + ".";
          if (!st->has(pre + "packed")) continue;
          run_guarded(t, "bnb " + pre.substr(0, pre.size() - 1), [&](bool& pass) {
            const bool f32 = std::string(in) == "f32";
            const DType dt = f32 ? DType::F32 : DType::F16;
            auto xraw = st->raw(f32 ? "q4.input_f32" : "q4.input_odd_f16");
            const int64_t n = (int64_t)(xraw.size() / dtype_size(dt)), nb = fmt::num_blocks(n, bs);
            DevBuf dx(xraw), dp(fmt::packed4_bytes(n)), da(nb * 4);
            cuda::quantize_4bit(dx.p, dt, n, bs, qt, dp.as<uint8_t>(), da.as<float>());
            size_t bad = count_mismatch(dp.download<uint8_t>(fmt::packed4_bytes(n)), st->get<uint8_t>(pre + "packed", "U8"));
            std::string detail = "packed mismatches " + std::to_string(bad);
            DevBuf dout(n * dtype_size(dt));
            if (!dq) {
              size_t ba = count_mismatch(da.download<float>(nb), st->get<float>(pre + "absmax", "F32"));
              bad += ba;
              detail += ", absmax " + std::to_string(ba);
              cuda::dequantize_4bit(dp.as<uint8_t>(), da.as<float>(), n, bs, qt, dout.p, dt);
            } else {
              DevBuf q(nb), nest(fmt::num_blocks(nb, 256) * 4), off(4);
              cuda::compress_absmax(da.as<float>(), nb, q.as<uint8_t>(), nest.as<float>(), off.as<float>());
              size_t bq = count_mismatch(q.download<uint8_t>(nb), st->get<uint8_t>(pre + "absmax", "U8"));
              size_t bn = count_mismatch(nest.download<float>(fmt::num_blocks(nb, 256)),
                                         st->get<float>(pre + "nested_absmax", "F32"));
              float go = off.download<float>(1)[0], ro = st->get<float>(pre + "offset", "F32")[0];
              const double rel = std::fabs((double)go - ro) / std::fabs((double)ro);
              bad += bq + bn + (rel > 1e-6);
              auto ncode = st->get<float>(pre + "nested_code", "F32");
              std::vector<float> mine(256);
              for (int i = 0; i < 256; i++) mine[i] = fmt::bits_to_float(fmt::kDynamicMapSignedBits[i]);
              size_t bc = count_mismatch(mine, ncode);
              bad += bc;
              detail += ", qabsmax " + std::to_string(bq) + ", nested " + std::to_string(bn) + ", nested_code " +
                        std::to_string(bc) + ", offset rel " + fmt_g(rel);
              DevBuf dcode(ncode);
              cuda::dequantize_4bit_dq(dp.as<uint8_t>(), q.as<uint8_t>(), nest.as<float>(), dcode.as<float>(),
                                       off.as<float>(), n, bs, qt, dout.p, dt);
            }
            if (st->has(pre + "dequant")) {
              auto got = to_floats(dout.download<uint8_t>(n * dtype_size(dt)), dt);
              auto ref = to_floats(st->raw(pre + "dequant"), dt);
              // within 1 ulp of the dtype
              size_t off_ulp = 0;
              for (int64_t i = 0; i < n; i++) {
                float a = got[i], b = ref[i];
                if (a == b) continue;
                float ulp = dt == DType::F32 ? std::fabs(std::nextafter(b, INFINITY) - b)
                                             : std::fabs(b) * 0.0009765625f + 6e-8f;
                off_ulp += std::fabs(a - b) > ulp;
              }
              bad += off_ulp;
              detail += ", dequant beyond 1 ulp " + std::to_string(off_ulp);
            }
            pass = bad == 0;
            return detail;
          });
        }
  // 8-bit blockwise
  for (int bs : {256, 4096}) {
    const std::string pre = "qb.bs" + std::to_string(bs) + ".";
    if (!st->has(pre + "q")) continue;
    run_guarded(t, "bnb " + pre.substr(0, pre.size() - 1), [&](bool& pass) {
      auto x = st->get<float>("q4.input_f32", "F32");
      auto code = st->get<float>(pre + "code", "F32");
      const int64_t n = (int64_t)x.size(), nb = fmt::num_blocks(n, bs);
      DevBuf dx(x), dc(code), dq(n), da(nb * 4), dout(n * 4);
      cuda::quantize_blockwise(dc.as<float>(), dx.p, DType::F32, n, bs, dq.as<uint8_t>(), da.as<float>());
      size_t bq = count_mismatch(dq.download<uint8_t>(n), st->get<uint8_t>(pre + "q", "U8"));
      size_t ba = count_mismatch(da.download<float>(nb), st->get<float>(pre + "absmax", "F32"));
      cuda::dequantize_blockwise(dc.as<float>(), dq.as<uint8_t>(), da.as<float>(), n, bs, dout.p, DType::F32);
      size_t bd = count_mismatch(dout.download<float>(n), st->get<float>(pre + "dequant", "F32"));
      pass = bq == 0 && ba == 0 && bd == 0;
      return "mismatches q " + std::to_string(bq) + " absmax " + std::to_string(ba) + " dequant " + std::to_string(bd);
    });
  }
  // LLM.int8()
  auto xraw = st->raw("i8.x");
  const int64_t M = st->entry("i8.x").shape[0], K = st->entry("i8.x").shape[1];
  const int64_t N = st->entry("i8.w").shape[0];
  for (const char* th : {"0.0", "6.0"}) {
    run_guarded(t, std::string("bnb i8.th") + th + " int8_vectorwise_quant", [&](bool& pass) {
      DevBuf dx(xraw), dq(M * K), ds(M * 4), df(K);
      cuda::int8_vectorwise_quant(dx.p, DType::F16, M, K, std::stof(th), dq.as<int8_t>(), ds.as<float>(),
                                  df.as<uint8_t>());
      const std::string pre = std::string("i8.th") + th + ".";
      size_t bq = count_mismatch(dq.download<int8_t>(M * K), st->get<int8_t>(pre + "CA", "I8"));
      size_t bs = count_mismatch(ds.download<float>(M), st->get<float>(pre + "SCA", "F32"));
      auto cols = st->get<int32_t>(pre + "outlier_cols", "I32");
      std::vector<uint8_t> want(K, 0);
      for (auto c : cols) want[c] = 1;
      size_t bo = std::stof(th) > 0 ? count_mismatch(df.download<uint8_t>(K), want) : 0;
      pass = bq == 0 && bs == 0 && bo == 0;
      return "mismatches CA " + std::to_string(bq) + " SCA " + std::to_string(bs) + " outlier cols " +
             std::to_string(bo) + " (" + std::to_string(cols.size()) + " outlier columns)";
    });
  }
  run_guarded(t, "bnb i8 int8_linear_matmul / mm_dequant / Linear8bitLt(th 0)", [&](bool& pass) {
    auto CA = st->get<int8_t>("i8.th0.0.CA", "I8");
    auto SCA = st->get<float>("i8.th0.0.SCA", "F32");
    auto CB = st->get<int8_t>("i8.CB", "I8");
    auto SCB = st->get<float>("i8.SCB", "F32");
    auto bias = st->get<uint16_t>("i8.bias", "F16");
    DevBuf dA(CA), dB(CB), dC(M * N * 4), dsa(SCA), dsb(SCB), dbias(bias), dout(M * N * 2);
    cuda::int8_linear_matmul(dA.as<int8_t>(), dB.as<int8_t>(), M, N, K, dC.as<int32_t>());
    size_t bc = count_mismatch(dC.download<int32_t>(M * N), st->get<int32_t>("i8.C32", "I32"));
    cuda::int8_mm_dequant(dC.as<int32_t>(), dsa.as<float>(), dsb.as<float>(), dbias.as<uint16_t>(), M, N,
                          dout.as<uint16_t>());
    auto got = dout.download<uint16_t>(M * N);
    auto ref = st->get<uint16_t>("i8.mm_dequant", "F16");
    size_t bd = 0;
    for (int64_t i = 0; i < M * N; i++) bd += std::abs((int)got[i] - (int)ref[i]) > 1 && got[i] != ref[i];
    // Linear8bitLt without outliers: quantize x, int8 product with dequant fused
    DevBuf dx(xraw), dq(M * K), ds(M * 4);
    cuda::int8_vectorwise_quant(dx.p, DType::F16, M, K, 0.0f, dq.as<int8_t>(), ds.as<float>(), nullptr);
    cuda::int8_linear_matmul_dequant(dq.as<int8_t>(), dB.as<int8_t>(), M, N, K, ds.as<float>(), dsb.as<float>(),
                                     dbias.as<uint16_t>(), dout.as<uint16_t>());
    auto lin = to_floats(dout.download<uint8_t>(M * N * 2), DType::F16);
    auto lref = to_floats(st->raw("lin8.th0.0.out"), DType::F16);
    double e = rel_l2(lin, lref);
    pass = bc == 0 && bd == 0 && e <= 1e-3;
    return "C32 mismatches " + std::to_string(bc) + ", mm_dequant beyond 1 ulp " + std::to_string(bd) +
           ", Linear8bitLt rel L2 " + fmt_g(e);
  });
  // Linear4bit (double quant, blocksize 64) on i8.w / i8.x / i8.bias
  for (QuantType qt : kQuantTypes)
    for (DType dt : {DType::F16, DType::F32}) {
      const std::string pre = std::string("lin4.") + qtn(qt) + "." + dtype_name(dt) + ".";
      if (!st->has(pre + "out_b64")) continue;
      run_guarded(t, "bnb " + pre + "out_b1/out_b64", [&](bool& pass) {
        auto wf = to_floats(st->raw("i8.w"), DType::F16);
        QWeight q = make_weight(wf, N, K, 64, qt);
        DevWeight dw(q);
        auto xf = to_floats(xraw, DType::F16);
        auto bf = to_floats(st->raw("i8.bias"), DType::F16);
        HostFloats xh(dt, xf), bh(dt, bf);
        DevBuf dx(xh.data(), xh.size_bytes()), db(bh.data(), bh.size_bytes()), dout(M * N * dtype_size(dt));
        std::string detail;
        bool ok = true;
        for (int64_t rows : {(int64_t)1, M}) {
          cuda::matmul_4bit(dx.p, dt, rows, dw.view(q, true), db.p, dout.p);
          auto got = to_floats(dout.download<uint8_t>(rows * N * dtype_size(dt)), dt);
          auto ref = st->get<float>(pre + (rows == 1 ? "out_b1" : "out_b64"), "F32");
          double e = rel_l2(got, ref);
          ok = ok && e <= 1e-3;
          detail += "M=" + std::to_string(rows) + " rel L2 " + fmt_g(e) + "  ";
        }
        {  // the row-interleaved GEMV on the same weight
          DevBuf buf(cuda::rows_layout_bytes(N, K, 64, true));
          const cuda::Weight4bitRows rw = cuda::make_rows_layout(dw.view(q, true), buf.p);
          cuda::gemv_4bit_rows(dx.p, dt, rw, db.p, dout.p);
          auto got = to_floats(dout.download<uint8_t>(N * dtype_size(dt)), dt);
          double e = rel_l2(got, st->get<float>(pre + "out_b1", "F32"));
          ok = ok && e <= 1e-3;
          detail += "rows GEMV rel L2 " + fmt_g(e);
        }
        if (dt != DType::F32 && cuda::tiles_layout_unsupported(dw.view(q, true)).empty()) {  // the tiles GEMM
          DevBuf buf(cuda::tiles_layout_bytes(N, K, 64, true));
          const cuda::Weight4bitTiles tw = cuda::make_tiles_layout(dw.view(q, true), buf.p);
          cuda::matmul_4bit_tiles(dx.p, dt, M, tw, db.p, dout.p);
          auto got = to_floats(dout.download<uint8_t>(M * N * dtype_size(dt)), dt);
          double e = rel_l2(got, st->get<float>(pre + "out_b64", "F32"));
          ok = ok && e <= 1e-3;
          detail += "  tiles GEMM M=" + std::to_string(M) + " rel L2 " + fmt_g(e);
        }
        pass = ok;
        return detail;
      });
    }
}

// ---- bad input ----------------------------------------------------------------------------------------
void test_errors(Table& t) {
  run_guarded(t, "errors are exceptions, not aborts", [&](bool& pass) {
    int thrown = 0, expected = 0;
    DevBuf x(4096 * 4), p(4096), a(4096);
    auto expect_throw = [&](const std::function<void()>& f) {
      expected++;
      try {
        f();
      } catch (const std::exception&) {
        thrown++;
      }
    };
    expect_throw([&] { cuda::quantize_4bit(x.p, DType::F32, 100, 48, QuantType::NF4, p.as<uint8_t>(), a.as<float>()); });
    expect_throw([&] { cuda::quantize_4bit(x.p, DType::F32, 0, 64, QuantType::NF4, p.as<uint8_t>(), a.as<float>()); });
    expect_throw([&] { cuda::quantize_4bit(x.p, DType::I32, 100, 64, QuantType::NF4, p.as<uint8_t>(), a.as<float>()); });
    expect_throw([&] { cuda::quantize_blockwise(a.as<float>(), x.p, DType::F32, 100, 32, p.as<uint8_t>(), a.as<float>()); });
    cuda::Weight4bit w;
    w.packed = p.as<uint8_t>();
    w.absmax = a.as<float>();
    w.N = 8;
    w.K = 64;
    expect_throw([&] { cuda::matmul_4bit_path(cuda::Matmul4bitPath::Mma, x.p, DType::F32, 2, w, nullptr, x.p); });
    w.K = 77;
    expect_throw([&] { cuda::matmul_4bit_path(cuda::Matmul4bitPath::Gemv, x.p, DType::F16, 1, w, nullptr, x.p); });
    w.blocksize = 100;
    expect_throw([&] { cuda::matmul_4bit(x.p, DType::F16, 1, w, nullptr, x.p); });
    expect_throw([&] { cuda::int8_linear_matmul(x.as<int8_t>(), x.as<int8_t>(), 0, 4, 4, x.as<int32_t>()); });
    // the row layout: K not a multiple of 32, rows not whole blocks, K past the staging limit
    for (int64_t k : {(int64_t)77, (int64_t)96, cuda::kRowsMaxK + 64}) {
      cuda::Weight4bit r = w;
      r.K = k, r.blocksize = 64;
      expected++;
      if (!cuda::rows_layout_unsupported(r).empty()) thrown++;
      expect_throw([&] { cuda::make_rows_layout(r, a.p); });
    }
    // the tiles layout: K not a multiple of 64, blocksize 32, rows not whole blocks; x float32
    for (auto kb : {std::make_pair((int64_t)96, 32), std::make_pair((int64_t)128, 32), std::make_pair((int64_t)192, 128)}) {
      cuda::Weight4bit r = w;
      r.K = kb.first, r.blocksize = kb.second;
      expected++;
      if (!cuda::tiles_layout_unsupported(r).empty()) thrown++;
      expect_throw([&] { cuda::make_tiles_layout(r, a.p); });
    }
    {
      cuda::Weight4bit r = w;
      r.K = 64, r.blocksize = 64;
      cuda::Weight4bitTiles tw = cuda::tiles_layout_view(r, a.p);
      expect_throw([&] { cuda::matmul_4bit_tiles(x.p, DType::F32, 2, tw, nullptr, x.p); });
      expect_throw([&] { cuda::matmul_4bit_tiles(x.p, DType::F16, 0, tw, nullptr, x.p); });
    }
    NIBBLE_CUDA_CHECK(cudaDeviceSynchronize(), "after error checks");
    pass = thrown == expected;
    return std::to_string(thrown) + "/" + std::to_string(expected) + " bad calls threw";
  });
}

}  // namespace

int main(int argc, char** argv) {
  uint64_t seed = std::random_device{}();
  seed = (seed << 32) ^ (uint64_t)std::chrono::high_resolution_clock::now().time_since_epoch().count();
  std::string fixtures = "test/fixtures/bnb_vectors.safetensors";
  for (int i = 1; i < argc; i++) {
    std::string a = argv[i];
    if (a == "--seed" && i + 1 < argc) seed = std::strtoull(argv[++i], nullptr, 10);
    else if (a == "--fixtures" && i + 1 < argc) fixtures = argv[++i];
    else if (a == "--only" && i + 1 < argc) g_only = argv[++i];
  }
  int ndev = 0;
  if (cudaGetDeviceCount(&ndev) != cudaSuccess || ndev == 0) {
    std::printf("test_quant_cuda: no CUDA device; nothing tested\n");
    return 2;
  }
  cudaDeviceProp prop;
  cudaGetDeviceProperties(&prop, 0);
  std::printf("test_quant_cuda on %s (sm_%d%d, %d SMs), seed %llu\n\n", prop.name, prop.major, prop.minor,
              prop.multiProcessorCount, (unsigned long long)seed);
  std::mt19937_64 rng(seed);
  Table t;
  auto t0 = std::chrono::steady_clock::now();
  test_fixtures(t, fixtures);
  test_errors(t);
  test_4bit(t, rng);
  test_blockwise(t, rng);
  test_int8(t, rng);
  test_matmul4(t, rng);
  test_gemv_rows(t, rng);
  test_mma_tiles(t, rng);
  t.summary();
  std::printf("seed %llu, %.1f s\n", (unsigned long long)seed,
              std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  return t.failures() == 0 ? 0 : 1;
}
