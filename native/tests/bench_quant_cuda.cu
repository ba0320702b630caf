// GPU benchmark of the quantization kernels (the issue's speed table). Not a test: it checks
// nothing beyond "the kernel ran" and prints times, bandwidths and ratios against baselines
// measured in the same run (a device-to-device copy here; fp16 matmul through torch/cuBLAS by
// bench/kernels/baselines.py, read from --baselines JSON). Writes --json with every number.
//
// Timing: CUDA events around batches of launches after a warm-up, median of the batches;
// inputs random (never zeros); weights rotated among enough copies that the working set
// exceeds L2, so repeated launches measure HBM, not cache.
//
// Usage: bench_quant_cuda [--baselines baselines.json] [--json out.json] [--quick]
#include <algorithm>
#include <cstdio>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <sstream>

#include "cpu/quant_ops.h"
#include "cuda/gpt2_decode_gemv.h"
#include "cuda/quant_cuda.h"
#include "tests/cuda_test_util.h"

using namespace nibble;
using namespace nibble_test;
using fmt::QuantType;

namespace {

bool g_quick = false;
std::string g_only;  // run only the sections whose tag contains this
bool want(const char* tag) { return g_only.empty() || std::string(tag).find(g_only) != std::string::npos; }

// Median time (ms) of one call of fn(i), i = launch counter (used to rotate buffers).
double time_ms(const std::function<void(int)>& fn, int per_batch = 20, int batches = 11) {
  if (g_quick) {
    per_batch = 5;
    batches = 3;
  }
  cudaEvent_t a, b;
  NIBBLE_CUDA_CHECK(cudaEventCreate(&a), "event");
  NIBBLE_CUDA_CHECK(cudaEventCreate(&b), "event");
  int k = 0;
  for (int i = 0; i < 5; i++) fn(k++);
  NIBBLE_CUDA_CHECK(cudaDeviceSynchronize(), "warm-up");
  std::vector<double> v;
  for (int bi = 0; bi < batches; bi++) {
    NIBBLE_CUDA_CHECK(cudaEventRecord(a), "record");
    for (int i = 0; i < per_batch; i++) fn(k++);
    NIBBLE_CUDA_CHECK(cudaEventRecord(b), "record");
    NIBBLE_CUDA_CHECK(cudaEventSynchronize(b), "sync");
    float ms = 0;
    NIBBLE_CUDA_CHECK(cudaEventElapsedTime(&ms, a, b), "elapsed");
    v.push_back(ms / per_batch);
  }
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// Random device data without a host round trip per copy: upload once, replicate on device.
void fill_random(void* dst, size_t bytes, std::mt19937_64& rng) {
  const size_t chunk = std::min<size_t>(bytes, 64 << 20);
  std::vector<uint8_t> h(chunk);
  for (size_t i = 0; i + 8 <= chunk; i += 8) {
    uint64_t r = rng();
    std::memcpy(&h[i], &r, 8);
  }
  for (size_t off = 0; off < bytes; off += chunk) {
    size_t n = std::min(chunk, bytes - off);
    NIBBLE_CUDA_CHECK(cudaMemcpy((uint8_t*)dst + off, h.data(), n, cudaMemcpyHostToDevice), "fill");
  }
}

void fill_halves(void* dst, size_t count, std::mt19937_64& rng, float scale) {
  std::normal_distribution<float> d(0.0f, scale);
  const size_t chunk = std::min<size_t>(count, 16 << 20);
  std::vector<uint16_t> h(chunk);
  for (auto& v : h) v = float_to_half(d(rng));
  for (size_t off = 0; off < count; off += chunk) {
    size_t n = std::min(chunk, count - off);
    NIBBLE_CUDA_CHECK(cudaMemcpy((uint16_t*)dst + off, h.data(), n * 2, cudaMemcpyHostToDevice), "fill");
  }
}

// A 4-bit NF4 weight with double-quantized absmax, made on the GPU by our own kernels.
struct Q4 {
  int64_t N, K;
  DevBuf packed, absmax, qabs, nested, offset, code;
  Q4(int64_t n, int64_t k, std::mt19937_64& rng, int bs = 64)
      : N(n), K(k), packed(n * k / 2), absmax(n * k / bs * 4), qabs(n * k / bs), nested((n * k / bs / 256 + 1) * 4),
        offset(4), code(256 * 4) {
    DevBuf w(n * k * 2);
    fill_halves(w.p, n * k, rng, 0.02f);
    cuda::quantize_4bit(w.p, DType::F16, n * k, bs, QuantType::NF4, packed.as<uint8_t>(), absmax.as<float>());
    cuda::compress_absmax(absmax.as<float>(), n * k / bs, qabs.as<uint8_t>(), nested.as<float>(), offset.as<float>());
    std::vector<float> c(256);
    for (int i = 0; i < 256; i++) c[i] = fmt::bits_to_float(fmt::kDynamicMapSignedBits[i]);
    code.upload(c.data(), 1024);
    NIBBLE_CUDA_CHECK(cudaDeviceSynchronize(), "make weight");
  }
  cuda::Weight4bit view(bool dq = true, int bs = 64) const {
    cuda::Weight4bit v;
    v.packed = packed.as<uint8_t>();
    if (dq) {
      v.qabsmax = qabs.as<uint8_t>();
      v.nested_absmax = nested.as<float>();
      v.nested_code = code.as<float>();
      v.offset_ptr = offset.as<float>();
    } else {
      v.absmax = absmax.as<float>();
    }
    v.blocksize = bs;
    v.qt = QuantType::NF4;
    v.N = N;
    v.K = K;
    return v;
  }
  size_t weight_bytes() const { return (size_t)(N * K / 2); }
};

int copies_for(size_t bytes) { return (int)std::max<size_t>(2, (256ull << 20) / std::max<size_t>(bytes, 1) + 1); }

// Minimal reader for the flat {"key": number} JSON that baselines.py writes.
std::map<std::string, double> read_baselines(const std::string& path) {
  std::map<std::string, double> m;
  std::ifstream f(path);
  if (!f) return m;
  std::stringstream ss;
  ss << f.rdbuf();
  std::string s = ss.str();
  size_t p = 0;
  while ((p = s.find('"', p)) != std::string::npos) {
    size_t e = s.find('"', p + 1);
    if (e == std::string::npos) break;
    std::string key = s.substr(p + 1, e - p - 1);
    size_t c = s.find(':', e);
    if (c == std::string::npos) break;
    size_t v = c + 1;
    while (v < s.size() && s[v] == ' ') v++;
    if (v < s.size() && (isdigit((unsigned char)s[v]) || s[v] == '-' || s[v] == '.')) m[key] = std::strtod(&s[v], nullptr);
    p = e + 1;
  }
  return m;
}

struct Row {
  std::string op, shape, metric, target, verdict;
  double value, ratio;
};

}  // namespace

int main(int argc, char** argv) {
  std::string baselines_path, json_path;
  for (int i = 1; i < argc; i++) {
    std::string a = argv[i];
    if (a == "--baselines" && i + 1 < argc) baselines_path = argv[++i];
    else if (a == "--json" && i + 1 < argc) json_path = argv[++i];
    else if (a == "--quick") g_quick = true;
    else if (a == "--only" && i + 1 < argc) g_only = argv[++i];
  }
  cudaDeviceProp prop;
  if (cudaGetDeviceProperties(&prop, 0) != cudaSuccess) {
    std::printf("bench_quant_cuda: no CUDA device\n");
    return 2;
  }
  std::printf("bench_quant_cuda on %s, %d SMs, L2 %d MB\n", prop.name, prop.multiProcessorCount, prop.l2CacheSize >> 20);
  auto base = read_baselines(baselines_path);
  std::mt19937_64 rng(1234);
  std::vector<Row> rows;
  std::map<std::string, double> raw;

  try {
    // ---- ceiling: device-to-device copy (bytes read + written) ----
    const size_t copy_bytes = 1ull << 30;
    DevBuf c0(copy_bytes), c1(copy_bytes);
    fill_random(c0.p, copy_bytes, rng);
    double copy_ms = time_ms([&](int) { cudaMemcpyAsync(c1.p, c0.p, copy_bytes, cudaMemcpyDeviceToDevice); }, 5, 7);
    const double copy_gbs = 2.0 * copy_bytes / (copy_ms * 1e-3) / 1e9;
    raw["copy_gbs"] = copy_gbs;
    std::printf("device-to-device copy: %.0f GB/s (read+write)\n", copy_gbs);

    // ---- 4-bit GEMV, M = 1, nf4 + double quant, fp16 ----
    const int64_t gemv_shapes[][2] = {{8192, 8192}, {28672, 8192}, {4096, 4096}};
    for (auto& s : gemv_shapes) {
      if (!want("gemv")) break;
      const int64_t N = s[0], K = s[1];
      const int nc = copies_for(N * K / 2);
      std::vector<std::unique_ptr<Q4>> ws;
      for (int i = 0; i < nc; i++) ws.emplace_back(new Q4(N, K, rng));
      DevBuf x(K * 2), y(N * 2);
      fill_halves(x.p, K, rng, 1.0f);
      for (auto path : {cuda::Matmul4bitPath::Gemv, cuda::Matmul4bitPath::GemvHalfLut,
                        cuda::Matmul4bitPath::GemvHalf2Acc, cuda::Matmul4bitPath::Auto}) {
        double ms = time_ms([&](int i) {
          cuda::matmul_4bit_path(path, x.p, DType::F16, 1, ws[i % nc]->view(), nullptr, y.p);
        });
        const double gbs = ws[0]->weight_bytes() / (ms * 1e-3) / 1e9;
        const char* pn = path == cuda::Matmul4bitPath::Gemv          ? "gemv-f32lut"
                         : path == cuda::Matmul4bitPath::GemvHalfLut ? "gemv-halflut"
                         : path == cuda::Matmul4bitPath::Auto        ? "auto"
                                                                     : "gemv-hfma2";
        std::string shape = std::to_string(N) + "x" + std::to_string(K);
        raw[std::string("gemv4_") + pn + "_" + shape + "_us"] = ms * 1e3;
        rows.push_back({std::string("4-bit GEMV M=1 nf4+dq (") + pn + ")", shape, "GB/s eff. weight", ">=85% copy",
                        gbs / copy_gbs >= 0.85 ? "met" : "missed", gbs, gbs / copy_gbs});
      }
      {
        // The GPT-2 plan's decode GEMV (gpt2_decode_gemv.cu): float32 activations, the same
        // packed weight and double-quantized state.
        DevBuf xf(K * 4), yf(N * 4);
        fill_random(xf.p, K * 4, rng);
        std::vector<float> hx(K);
        for (auto& v : hx) v = (float)((rng() % 2001) - 1000) / 1000.0f;
        cudaMemcpy(xf.p, hx.data(), K * 4, cudaMemcpyHostToDevice);
        auto ql = [&](int i) {
          const cuda::Weight4bit v = ws[i % nc]->view();
          gpt2_cuda::QLinear L;
          L.kind = gpt2_cuda::QLinear::k4bit, L.N = N, L.K = K, L.packed = v.packed, L.absmax = v.absmax;
          L.qabsmax = v.qabsmax, L.nested_absmax = v.nested_absmax, L.nested_code = v.nested_code;
          L.offset = v.offset_ptr, L.blocksize = v.blocksize, L.quant_type = (int)v.qt;
          return L;
        };
        double ms = time_ms([&](int i) {
          if (!gpt2_cuda::decode_gemv_4bit(ql(i), DType::F32, 0, (float*)yf.p, (const float*)xf.p, 1, nullptr, 0))
            throw std::runtime_error("decode GEMV refused the shape");
        });
        const double gbs = ws[0]->weight_bytes() / (ms * 1e-3) / 1e9;
        std::string shape = std::to_string(N) + "x" + std::to_string(K);
        raw["gemv4_decode_" + shape + "_us"] = ms * 1e3;
        rows.push_back({"4-bit GEMV M=1 nf4+dq (plan decode, f32 x)", shape, "GB/s eff. weight", ">=85% copy",
                        gbs / copy_gbs >= 0.85 ? "met" : "missed", gbs, gbs / copy_gbs});
        // matmul_4bit's default path for one float32 row (it takes the decode GEMV above).
        double ams = time_ms([&](int i) {
          cuda::matmul_4bit(xf.p, DType::F32, 1, ws[i % nc]->view(), nullptr, yf.p);
        });
        const double agbs = ws[0]->weight_bytes() / (ams * 1e-3) / 1e9;
        raw["gemv4_auto_f32_" + shape + "_us"] = ams * 1e3;
        rows.push_back({"4-bit GEMV M=1 nf4+dq (auto, f32 x)", shape, "GB/s eff. weight", ">=85% copy",
                        agbs / copy_gbs >= 0.85 ? "met" : "missed", agbs, agbs / copy_gbs});
        // The row-interleaved copy (quant_gemv4_rows.cu), made once per weight as at load time.
        std::vector<std::unique_ptr<DevBuf>> bufs;
        std::vector<cuda::Weight4bitRows> rws;
        for (int i = 0; i < nc; i++) {
          bufs.emplace_back(new DevBuf(cuda::rows_layout_bytes(N, K, 64, true)));
          rws.push_back(cuda::make_rows_layout(ws[i]->view(), bufs.back()->p));
        }
        for (DType xdt : {DType::F16, DType::F32}) {
          const bool f32 = xdt == DType::F32;
          double rms = time_ms([&](int i) { cuda::gemv_4bit_rows(f32 ? xf.p : x.p, xdt, rws[i % nc], nullptr, f32 ? yf.p : y.p); });
          const double rgbs = ws[0]->weight_bytes() / (rms * 1e-3) / 1e9;
          raw[std::string("gemv4_rows_") + (f32 ? "f32_" : "f16_") + shape + "_us"] = rms * 1e3;
          rows.push_back({std::string("4-bit GEMV M=1 nf4+dq (rows layout, ") + (f32 ? "f32" : "f16") + " x)", shape,
                          "GB/s eff. weight", ">=85% copy", rgbs / copy_gbs >= 0.85 ? "met" : "missed", rgbs,
                          rgbs / copy_gbs});
        }
      }
    }

    // ---- 4-bit GEMM vs fp16 (torch) ----
    for (int64_t M : {16, 64, 256}) {
      const int64_t gemm_shapes[][2] = {{8192, 8192}, {28672, 8192}};
      if (!want(("gemm" + std::to_string(M)).c_str())) continue;
      for (auto& s : gemm_shapes) {
        const int64_t N = s[0], K = s[1];
        const int nc = copies_for(N * K / 2);
        std::vector<std::unique_ptr<Q4>> ws;
        for (int i = 0; i < nc; i++) ws.emplace_back(new Q4(N, K, rng));
        DevBuf x(M * K * 2), y(M * N * 2);
        fill_halves(x.p, M * K, rng, 1.0f);
        double ms = time_ms([&](int i) { cuda::matmul_4bit(x.p, DType::F16, M, ws[i % nc]->view(), nullptr, y.p); });
        std::string shape = std::to_string(M) + "x" + std::to_string(N) + "x" + std::to_string(K);
        raw["gemm4_" + shape + "_us"] = ms * 1e3;
        const std::string key = "fp16_mm_" + shape + "_us";
        const double ref = base.count(key) ? base[key] : 0.0;
        const double speedup = ref > 0 ? ref / (ms * 1e3) : 0.0;
        const double want = M == 16 ? 3.0 : M == 64 ? 2.0 : 1.0;
        rows.push_back({"4-bit GEMM nf4+dq vs fp16", shape, "us", ">=" + fmt_g(want) + "x fp16",
                        ref > 0 ? (speedup >= want ? "met" : "missed") : "no baseline", ms * 1e3, speedup});
        // The fragment-ordered copy (quant_mma4_tiles.cu), made once per weight as at load time.
        std::vector<std::unique_ptr<DevBuf>> bufs;
        std::vector<cuda::Weight4bitTiles> tws;
        for (int i = 0; i < nc; i++) {
          bufs.emplace_back(new DevBuf(cuda::tiles_layout_bytes(N, K, 64, true)));
          tws.push_back(cuda::make_tiles_layout(ws[i]->view(), bufs.back()->p));
        }
        const double tms = time_ms([&](int i) { cuda::matmul_4bit_tiles(x.p, DType::F16, M, tws[i % nc], nullptr, y.p); });
        raw["gemm4_tiles_" + shape + "_us"] = tms * 1e3;
        const double tsp = ref > 0 ? ref / (tms * 1e3) : 0.0;
        rows.push_back({"4-bit GEMM nf4+dq (tiles layout) vs fp16", shape, "us", ">=" + fmt_g(want) + "x fp16",
                        ref > 0 ? (tsp >= want ? "met" : "missed") : "no baseline", tms * 1e3, tsp});
      }
    }

    // ---- Linear8bitLt (no outliers): quantize x, int8 product with fused dequant ----
    for (int64_t M : {1, 2048}) {
      if (!want(("lin8_" + std::to_string(M)).c_str())) continue;
      const int64_t N = 8192, K = 8192;
      const int nc = copies_for(N * K);
      std::vector<std::unique_ptr<DevBuf>> wq;
      DevBuf scb(N * 4);
      {
        std::vector<float> h(N, 0.05f);
        scb.upload(h.data(), N * 4);
      }
      for (int i = 0; i < nc; i++) {
        wq.emplace_back(new DevBuf(N * K));
        fill_random(wq.back()->p, N * K, rng);
      }
      DevBuf x(M * K * 2), xq(M * K), rs(M * 4), y(M * N * 2);
      fill_halves(x.p, M * K, rng, 1.0f);
      double ms = time_ms([&](int i) {
        cuda::int8_vectorwise_quant(x.p, DType::F16, M, K, 0.0f, xq.as<int8_t>(), rs.as<float>(), nullptr);
        cuda::int8_linear_matmul_dequant(xq.as<int8_t>(), wq[i % nc]->as<int8_t>(), M, N, K, rs.as<float>(),
                                         scb.as<float>(), nullptr, y.as<uint16_t>());
      });
      std::string shape = std::to_string(M) + "x" + std::to_string(N) + "x" + std::to_string(K);
      raw["lin8_" + shape + "_us"] = ms * 1e3;
      const std::string key = "fp16_mm_" + shape + "_us";
      const double ref = base.count(key) ? base[key] : 0.0;
      const double speedup = ref > 0 ? ref / (ms * 1e3) : 0.0;
      const double want = M == 1 ? 1.6 : 1.2;
      rows.push_back({"Linear8bitLt no outliers vs fp16", shape, "us", ">=" + fmt_g(want) + "x fp16",
                      ref > 0 ? (speedup >= want ? "met" : "missed") : "no baseline", ms * 1e3, speedup});
      if (M == 2048) {  // the int8 tensor-core product alone, for the record
        double mm = time_ms([&](int i) {
          cuda::int8_linear_matmul_dequant(xq.as<int8_t>(), wq[i % nc]->as<int8_t>(), M, N, K, rs.as<float>(),
                                           scb.as<float>(), nullptr, y.as<uint16_t>());
        });
        raw["int8_mm_" + shape + "_tops"] = 2.0 * M * N * K / (mm * 1e-3) / 1e12;
        rows.push_back({"int8 tensor-core GEMM (+dequant)", shape, "TOPS", "-", "-", 2.0 * M * N * K / (mm * 1e-3) / 1e12,
                        0.0});
      }
    }

    // ---- quantize4bit / dequantize4bit, 8192x8192 fp16, nf4 bs64 ----
    if (want("quant")) {
      const int64_t n = 8192LL * 8192;
      const int nc = 2;
      std::vector<std::unique_ptr<DevBuf>> xs;
      for (int i = 0; i < nc; i++) {
        xs.emplace_back(new DevBuf(n * 2));
        fill_halves(xs.back()->p, n, rng, 1.0f);
      }
      DevBuf packed(n / 2), absmax(n / 64 * 4), qabs(n / 64), nested((n / 64 / 256 + 1) * 4), off(4), out(n * 2);
      double qms = time_ms([&](int i) {
        cuda::quantize_4bit(xs[i % nc]->p, DType::F16, n, 64, QuantType::NF4, packed.as<uint8_t>(), absmax.as<float>());
      });
      const double qgbs = n * 2.0 / (qms * 1e-3) / 1e9;
      raw["quantize4bit_8192x8192_f16_us"] = qms * 1e3;
      rows.push_back({"quantize4bit nf4 bs64", "8192x8192 fp16", "GB/s of input", ">=1500 GB/s",
                      qgbs >= 1500 ? "met" : "missed", qgbs, qgbs / copy_gbs});
      double qdms = time_ms([&](int i) {
        cuda::quantize_4bit(xs[i % nc]->p, DType::F16, n, 64, QuantType::NF4, packed.as<uint8_t>(), absmax.as<float>());
        cuda::compress_absmax(absmax.as<float>(), n / 64, qabs.as<uint8_t>(), nested.as<float>(), off.as<float>());
      });
      rows.push_back({"quantize4bit nf4 bs64 + double quant", "8192x8192 fp16", "GB/s of input", "-", "-",
                      n * 2.0 / (qdms * 1e-3) / 1e9, 0.0});
      std::vector<float> c(256);
      for (int i = 0; i < 256; i++) c[i] = fmt::bits_to_float(fmt::kDynamicMapSignedBits[i]);
      DevBuf code(c);
      double dms = time_ms([&](int) {
        cuda::dequantize_4bit(packed.as<uint8_t>(), absmax.as<float>(), n, 64, QuantType::NF4, out.p, DType::F16);
      });
      const double dbytes = n / 2.0 + n / 64 * 4.0 + n * 2.0;
      const double dgbs = dbytes / (dms * 1e-3) / 1e9;
      raw["dequantize4bit_8192x8192_f16_us"] = dms * 1e3;
      rows.push_back({"dequantize4bit nf4 bs64", "8192x8192 -> fp16", "GB/s read+write", ">=2500 GB/s",
                      dgbs >= 2500 ? "met" : "missed", dgbs, dgbs / copy_gbs});
      double ddms = time_ms([&](int) {
        cuda::dequantize_4bit_dq(packed.as<uint8_t>(), qabs.as<uint8_t>(), nested.as<float>(), code.as<float>(),
                                 off.as<float>(), n, 64, QuantType::NF4, out.p, DType::F16);
      });
      const double ddbytes = n / 2.0 + n / 64.0 + n * 2.0;
      rows.push_back({"dequantize4bit nf4 bs64 double quant", "8192x8192 -> fp16", "GB/s read+write", ">=2500 GB/s",
                      ddbytes / (ddms * 1e-3) / 1e9 >= 2500 ? "met" : "missed", ddbytes / (ddms * 1e-3) / 1e9,
                      ddbytes / (ddms * 1e-3) / 1e9 / copy_gbs});
    }
  } catch (const std::exception& e) {
    std::printf("bench failed: %s\n", e.what());
    return 1;
  }

  std::printf("\n%-44s %-18s %12s %-16s %10s %-18s %s\n", "op", "shape", "value", "unit", "ratio", "target", "verdict");
  for (auto& r : rows)
    std::printf("%-44s %-18s %12.1f %-16s %10.3f %-18s %s\n", r.op.c_str(), r.shape.c_str(), r.value, r.metric.c_str(),
                r.ratio, r.target.c_str(), r.verdict.c_str());
  std::printf("(ratio: GEMV/quantize/dequantize rows = fraction of the copy bandwidth %.0f GB/s; "
              "GEMM/Linear8bitLt rows = speedup over torch fp16 matmul in the same run)\n",
              raw["copy_gbs"]);
  if (!json_path.empty()) {
    std::ofstream f(json_path);
    f << "{\n  \"device\": \"" << prop.name << "\",\n  \"raw\": {";
    bool first = true;
    for (auto& kv : raw) {
      f << (first ? "\n" : ",\n") << "    \"" << kv.first << "\": " << kv.second;
      first = false;
    }
    f << "\n  },\n  \"baselines\": {";
    first = true;
    for (auto& kv : base) {
      f << (first ? "\n" : ",\n") << "    \"" << kv.first << "\": " << kv.second;
      first = false;
    }
    f << "\n  },\n  \"rows\": [";
    for (size_t i = 0; i < rows.size(); i++) {
      auto& r = rows[i];
      f << (i ? ",\n" : "\n") << "    {\"op\": \"" << r.op << "\", \"shape\": \"" << r.shape << "\", \"value\": " << r.value
        << ", \"unit\": \"" << r.metric << "\", \"ratio\": " << r.ratio << ", \"target\": \"" << r.target
        << "\", \"verdict\": \"" << r.verdict << "\"}";
    }
    f << "\n  ]\n}\n";
  }
  return 0;
}
