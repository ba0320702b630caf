// Native test of the CPU quantization kernels, runnable without Node.js (llm.c dev/ style):
//  1. every fast path against its _ref kernel on fresh random inputs and odd sizes
//     (bit-exact for quantize/dequantize/int8 ops, rel L2 for matmul_4bit);
//  2. the reference kernels against bitsandbytes' outputs in test/fixtures/bnb_vectors.safetensors.
// Usage: test_quant_cpu [--seed N] [--fixtures path]   (exit code 1 on any failure)
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "cpu/quant_ops.h"
#include "safetensors_lite.h"

using namespace nibble;
using cpu::QuantType;

namespace {

int g_fail = 0, g_pass = 0;
void check(bool ok, const std::string& what) {
  (ok ? g_pass : g_fail)++;
  if (!ok) std::printf("FAIL  %s\n", what.c_str());
}

std::vector<uint8_t> random_floats(std::mt19937_64& rng, DType dt, int64_t n, float scale) {
  std::normal_distribution<float> d(0.0f, scale);
  std::vector<uint8_t> b((size_t)n * dtype_size(dt));
  for (int64_t i = 0; i < n; i++) store_from_float(b.data(), dt, (size_t)i, d(rng));
  return b;
}

template <typename T>
bool same(const std::vector<T>& a, const std::vector<T>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0;
}

void test_fast_vs_ref(uint64_t seed) {
  std::mt19937_64 rng(seed);
  const DType dts[] = {DType::F32, DType::F16, DType::BF16};
  const int64_t sizes[] = {1, 7, 33, 1023, 4097, 65537};
  for (DType dt : dts)
    for (QuantType qt : {QuantType::NF4, QuantType::FP4})
      for (int bs = 32; bs <= 4096; bs *= 2)
        for (int64_t n : sizes) {
          auto x = random_floats(rng, dt, n, 2.0f);
          if (n > bs) std::memset(x.data(), 0, (size_t)bs * dtype_size(dt));  // an all-zero block
          int64_t nb = fmt::num_blocks(n, bs);
          std::vector<uint8_t> pf(fmt::packed4_bytes(n)), pr(pf.size());
          std::vector<float> af(nb), ar(nb);
          cpu::quantize_4bit(x.data(), dt, n, bs, qt, pf.data(), af.data());
          cpu::quantize_4bit_ref(x.data(), dt, n, bs, qt, pr.data(), ar.data());
          std::string tag = std::string(dtype_name(dt)) + (qt == QuantType::NF4 ? " nf4" : " fp4") + " bs" +
                            std::to_string(bs) + " n" + std::to_string(n);
          check(same(pf, pr) && same(af, ar), "quantize_4bit fast == ref " + tag);
          std::vector<uint8_t> df((size_t)n * dtype_size(dt)), dr(df.size());
          cpu::dequantize_4bit(pr.data(), ar.data(), n, bs, qt, df.data(), dt);
          cpu::dequantize_4bit_ref(pr.data(), ar.data(), n, bs, qt, dr.data(), dt);
          check(same(df, dr), "dequantize_4bit fast == ref " + tag);
        }
  // matmul_4bit over M = 1 (GEMV paths) and M > 1 (tiles), aligned and ragged K
  const int64_t shapes[][3] = {{1, 96, 128}, {1, 35, 256}, {1, 17, 77}, {3, 40, 64}, {17, 31, 100}, {64, 48, 320}};
  for (auto& s : shapes)
    for (int bs : {32, 64, 256})
      for (bool dq : {false, true}) {
        const int64_t M = s[0], N = s[1], K = s[2], nb = fmt::num_blocks(N * K, bs);
        auto w = random_floats(rng, DType::F32, N * K, 1.0f);
        auto x = random_floats(rng, DType::F32, M * K, 1.0f);
        std::vector<uint8_t> packed(fmt::packed4_bytes(N * K)), q(nb);
        std::vector<float> absmax(nb), nested(fmt::num_blocks(nb, 256)), code(256);
        for (int i = 0; i < 256; i++) code[i] = fmt::bits_to_float(fmt::kDynamicMapSignedBits[i]);
        cpu::quantize_4bit(w.data(), DType::F32, N * K, bs, QuantType::NF4, packed.data(), absmax.data());
        cpu::Weight4bit W;
        W.packed = packed.data(), W.blocksize = bs, W.N = N, W.K = K;
        if (dq) {
          W.offset = cpu::compress_absmax(absmax.data(), nb, q.data(), nested.data());
          W.qabsmax = q.data(), W.nested_absmax = nested.data(), W.nested_code = code.data();
        } else {
          W.absmax = absmax.data();
        }
        std::vector<float> of(M * N), orf(M * N);
        cpu::matmul_4bit(x.data(), DType::F32, M, W, nullptr, of.data());
        cpu::matmul_4bit_ref(x.data(), DType::F32, M, W, nullptr, orf.data());
        double num = 0, den = 0;
        for (size_t i = 0; i < of.size(); i++) num += std::pow(of[i] - orf[i], 2), den += std::pow(orf[i], 2);
        check(std::sqrt(num / den) < 1e-5, "matmul_4bit fast ~ ref M" + std::to_string(M) + " N" + std::to_string(N) +
                                              " K" + std::to_string(K) + " bs" + std::to_string(bs) + (dq ? " dq" : ""));
      }
}

void test_fixtures(const std::string& path) {
  nibble_test::SafeTensors st(path);
  auto in32 = st.raw("q4.input_f32");
  auto in16 = st.raw("q4.input_odd_f16");
  for (const char* inp : {"f32", "odd_f16"})
    for (const char* qts : {"nf4", "fp4"})
      for (int bs : {64, 128, 256, 4096}) {
        std::string key = std::string("q4.") + inp + "." + qts + ".bs" + std::to_string(bs);
        if (!st.has(key + ".dq0.packed")) continue;
        bool f32 = std::strcmp(inp, "f32") == 0;
        DType dt = f32 ? DType::F32 : DType::F16;
        const auto& x = f32 ? in32 : in16;
        int64_t n = (int64_t)(x.size() / dtype_size(dt)), nb = fmt::num_blocks(n, bs);
        QuantType qt = std::strcmp(qts, "nf4") == 0 ? QuantType::NF4 : QuantType::FP4;
        std::vector<uint8_t> packed(fmt::packed4_bytes(n)), q(nb);
        std::vector<float> absmax(nb), nested(fmt::num_blocks(nb, 256));
        cpu::quantize_4bit_ref(x.data(), dt, n, bs, qt, packed.data(), absmax.data());
        check(packed == st.raw(key + ".dq0.packed"), key + " packed");
        check(same(absmax, st.get<float>(key + ".dq0.absmax", "F32")), key + " absmax");
        float offset = cpu::compress_absmax(absmax.data(), nb, q.data(), nested.data());
        check(q == st.raw(key + ".dq1.absmax"), key + " double-quant absmax codes");
        check(same(nested, st.get<float>(key + ".dq1.nested_absmax", "F32")), key + " nested_absmax");
        check(offset == st.get<float>(key + ".dq1.offset", "F32")[0], key + " offset");
      }
  for (int bs : {256, 4096}) {
    std::string key = "qb.bs" + std::to_string(bs);
    int64_t n = (int64_t)(in32.size() / 4), nb = fmt::num_blocks(n, bs);
    std::vector<uint8_t> q(n);
    std::vector<float> absmax(nb), code(256);
    for (int i = 0; i < 256; i++) code[i] = fmt::bits_to_float(fmt::kDynamicMapSignedBits[i]);
    cpu::quantize_blockwise_ref(code.data(), in32.data(), DType::F32, n, bs, q.data(), absmax.data());
    check(q == st.raw(key + ".q") && same(absmax, st.get<float>(key + ".absmax", "F32")), key + " q and absmax");
  }
  auto x = st.raw("i8.x"), w = st.raw("i8.w");
  for (const char* th : {"0.0", "6.0"}) {
    std::vector<int8_t> CA(64 * 512);
    std::vector<float> SCA(64);
    std::vector<uint8_t> cols(512);
    cpu::int8_vectorwise_quant_ref(x.data(), DType::F16, 64, 512, (float)std::atof(th), CA.data(), SCA.data(), cols.data());
    auto want = st.raw(std::string("i8.th") + th + ".CA");
    check(std::memcmp(CA.data(), want.data(), CA.size()) == 0, std::string("i8 CA th") + th);
    check(same(SCA, st.get<float>(std::string("i8.th") + th + ".SCA", "F32")), std::string("i8 SCA th") + th);
  }
  std::vector<int8_t> CB(256 * 512);
  std::vector<float> SCB(256);
  cpu::int8_vectorwise_quant_ref(w.data(), DType::F16, 256, 512, 0.0f, CB.data(), SCB.data(), nullptr);
  auto wantCB = st.raw("i8.CB");
  check(std::memcmp(CB.data(), wantCB.data(), CB.size()) == 0 && same(SCB, st.get<float>("i8.SCB", "F32")), "i8 CB/SCB");
  auto CA = st.raw("i8.th0.0.CA");
  std::vector<int32_t> C(64 * 256);
  cpu::int8_linear_matmul_ref((const int8_t*)CA.data(), CB.data(), 64, 256, 512, C.data());
  check(same(C, st.get<int32_t>("i8.C32", "I32")), "i8 C32");
  auto bias = st.raw("i8.bias");
  std::vector<uint16_t> out(64 * 256);
  cpu::int8_mm_dequant_ref(C.data(), st.get<float>("i8.th0.0.SCA", "F32").data(), SCB.data(), (const uint16_t*)bias.data(),
                           64, 256, out.data());
  auto want = st.raw("i8.mm_dequant");
  int worst = 0;
  for (size_t i = 0; i < out.size(); i++) {
    uint16_t b;
    std::memcpy(&b, want.data() + 2 * i, 2);
    worst = std::max(worst, std::abs((int)out[i] - (int)b));  // same-sign fp16: bit distance = ulps
  }
  check(worst <= 1, "i8 mm_dequant within 1 fp16 ulp");
}

}  // namespace

int main(int argc, char** argv) {
  uint64_t seed = std::random_device{}();
  std::string fixtures = "test/fixtures/bnb_vectors.safetensors";
  for (int i = 1; i < argc; i++) {
    std::string a = argv[i];
    if (a == "--seed" && i + 1 < argc) seed = std::strtoull(argv[++i], nullptr, 10);
    else if (a == "--fixtures" && i + 1 < argc) fixtures = argv[++i];
  }
  std::printf("test_quant_cpu: seed %llu\n", (unsigned long long)seed);
  try {
    test_fast_vs_ref(seed);
    test_fixtures(fixtures);
  } catch (const std::exception& e) {
    std::printf("FAIL  %s\n", e.what());
    g_fail++;
  }
  std::printf("%d passed, %d failed\n", g_pass, g_fail);
  return g_fail ? 1 : 0;
}
