// Quantization ops for JS: validate every argument on the JS thread (dtype, size, blocksize,
// quant type, device), then queue the kernel — CPU tensors on the CpuStream, CUDA tensors
// through native/cuda/quant_cuda.h. Outputs are preallocated by lib/functional.ts.
// The trailing `ref` flag selects the reference kernel (tests compare it with the fast path).
#include <napi.h>

#include <cmath>
#include <stdexcept>
#include <vector>
#include <string>

#include "bindings/registry.h"
#include "bindings/tensor_arg.h"
#include "core/stream.h"
#include "cpu/quant_ops.h"
#include "cuda/quant_cuda.h"  // without CUDA its functions throw "built without CUDA" (quant_cuda_stub.cc)
#if defined(NIBBLE_WITH_CUDA)
#include "cuda/gpt2_cuda.h"
#endif

namespace nibble {
namespace {

using fmt::QuantType;

[[noreturn]] void bad(const std::string& msg) { throw std::invalid_argument(msg); }

bool use_ref(const Napi::CallbackInfo& info, size_t i) { return info.Length() > i && info[i].ToBoolean(); }

QuantType quant_type_arg(const Napi::CallbackInfo& info, size_t i, const char* op) {
  int64_t q = int_arg(info, i, "quantType");
  if (q != 0 && q != 1) bad(std::string(op) + ": quant type code " + std::to_string(q) + " is not fp4 (0) or nf4 (1)");
  return (QuantType)q;
}

int blocksize_4bit(const Napi::CallbackInfo& info, size_t i, const char* op) {
  int64_t b = int_arg(info, i, "blocksize");
  if (!fmt::valid_4bit_blocksize(b))
    bad(std::string(op) + ": blocksize " + std::to_string(b) +
        " is not supported (4-bit blocksizes: 32, 64, 128, 256, 512, 1024, 2048, 4096)");
  return (int)b;
}

int blocksize_8bit(const Napi::CallbackInfo& info, size_t i, const char* op) {
  int64_t b = int_arg(info, i, "blocksize");
  if (!fmt::valid_8bit_blocksize(b))
    bad(std::string(op) + ": blocksize " + std::to_string(b) +
        " is not supported (8-bit blocksizes: 64, 128, 256, 512, 1024, 2048, 4096)");
  return (int)b;
}

void not_empty(const char* op, const char* name, const TensorArg& t) {
  if (t.numel() == 0) bad(std::string(op) + ": '" + name + "' is empty (" + t.describe() + ")");
}

// All tensors of one call on one device; returns true for CUDA.
bool on_cuda(const char* op, std::initializer_list<const TensorArg*> ts) {
  const TensorArg* first = *ts.begin();
  for (const TensorArg* t : ts) expect_same_device(op, *first, *t);
  if (first->on_cpu()) return false;
#if !defined(NIBBLE_WITH_CUDA)
  bad(std::string(op) + ": CUDA quantization kernels not built (this addon was compiled without CUDA); got " +
      first->describe());
#endif
  return true;
}

#if defined(NIBBLE_WITH_CUDA)
// Quantization kernels share the device's compute stream with the GPT-2 kernels, so a
// quantized linear is ordered with the layers around it.
cudaStream_t stream_of(const TensorArg& t) { return gpt2_cuda::stream(t.device()); }
#endif

// ---- 4-bit ------------------------------------------------------------------------------

// quantize4bit(x, packed u8[(n+1)/2], absmax f32[nblocks], blocksize, quantType, ref?)
Napi::Value Quantize4bit(const Napi::CallbackInfo& info) {
  const char* op = "quantize4bit";
  auto x = tensor_arg(info, 0, "x"), packed = tensor_arg(info, 1, "packed"), absmax = tensor_arg(info, 2, "absmax");
  int bs = blocksize_4bit(info, 3, op);
  QuantType qt = quant_type_arg(info, 4, op);
  expect_float(op, "x", x);
  not_empty(op, "x", x);
  const int64_t n = x.numel();
  expect_dtype(op, "packed", packed, DType::U8), expect_numel(op, "packed", packed, fmt::packed4_bytes(n));
  expect_dtype(op, "absmax", absmax, DType::F32), expect_numel(op, "absmax", absmax, fmt::num_blocks(n, bs));
  bool ref = use_ref(info, 5);
  if (on_cuda(op, {&x, &packed, &absmax})) {
#if defined(NIBBLE_WITH_CUDA)
    cuda::quantize_4bit(x.ptr(), x.dt, n, bs, qt, packed.ptr<uint8_t>(), absmax.ptr<float>(), stream_of(x));
#endif
  } else {
    CpuStream::instance().enqueue([=] {
      (ref ? cpu::quantize_4bit_ref : cpu::quantize_4bit)(x.ptr(), x.dt, n, bs, qt, packed.ptr<uint8_t>(),
                                                          absmax.ptr<float>());
    });
  }
  return info.Env().Undefined();
}
NIBBLE_BINDING("quantize4bit", Quantize4bit);

// dequantize4bit(packed, absmax f32, out, blocksize, quantType, ref?): n = out.numel().
Napi::Value Dequantize4bit(const Napi::CallbackInfo& info) {
  const char* op = "dequantize4bit";
  auto packed = tensor_arg(info, 0, "packed"), absmax = tensor_arg(info, 1, "absmax"), out = tensor_arg(info, 2, "out");
  int bs = blocksize_4bit(info, 3, op);
  QuantType qt = quant_type_arg(info, 4, op);
  expect_float(op, "out", out);
  not_empty(op, "out", out);
  const int64_t n = out.numel();
  expect_dtype(op, "packed", packed, DType::U8), expect_numel(op, "packed", packed, fmt::packed4_bytes(n));
  expect_dtype(op, "absmax", absmax, DType::F32), expect_numel(op, "absmax", absmax, fmt::num_blocks(n, bs));
  bool ref = use_ref(info, 5);
  if (on_cuda(op, {&packed, &absmax, &out})) {
#if defined(NIBBLE_WITH_CUDA)
    cuda::dequantize_4bit(packed.ptr<uint8_t>(), absmax.ptr<float>(), n, bs, qt, out.ptr(), out.dt, stream_of(out));
#endif
  } else {
    CpuStream::instance().enqueue([=] {
      (ref ? cpu::dequantize_4bit_ref : cpu::dequantize_4bit)(packed.ptr<uint8_t>(), absmax.ptr<float>(), n, bs, qt,
                                                              out.ptr(), out.dt);
    });
  }
  return info.Env().Undefined();
}
NIBBLE_BINDING("dequantize4bit", Dequantize4bit);

// compressAbsmax(absmax f32[nb], qabsmax u8[nb], nestedAbsmax f32[ceil(nb/256)], offset f32[1])
Napi::Value CompressAbsmax(const Napi::CallbackInfo& info) {
  const char* op = "compressAbsmax";
  auto absmax = tensor_arg(info, 0, "absmax"), q = tensor_arg(info, 1, "qabsmax"),
       nested = tensor_arg(info, 2, "nestedAbsmax"), offset = tensor_arg(info, 3, "offset");
  expect_dtype(op, "absmax", absmax, DType::F32);
  not_empty(op, "absmax", absmax);
  const int64_t nb = absmax.numel();
  expect_dtype(op, "qabsmax", q, DType::U8), expect_numel(op, "qabsmax", q, nb);
  expect_dtype(op, "nestedAbsmax", nested, DType::F32);
  expect_numel(op, "nestedAbsmax", nested, fmt::num_blocks(nb, fmt::kNestedBlocksize));
  expect_dtype(op, "offset", offset, DType::F32), expect_numel(op, "offset", offset, 1);
  if (on_cuda(op, {&absmax, &q, &nested, &offset})) {
#if defined(NIBBLE_WITH_CUDA)
    cuda::compress_absmax(absmax.ptr<float>(), nb, q.ptr<uint8_t>(), nested.ptr<float>(), offset.ptr<float>(), stream_of(absmax));
#endif
  } else {
    CpuStream::instance().enqueue([=] {
      *offset.ptr<float>() = cpu::compress_absmax(absmax.ptr<float>(), nb, q.ptr<uint8_t>(), nested.ptr<float>());
    });
  }
  return info.Env().Undefined();
}
NIBBLE_BINDING("compressAbsmax", CompressAbsmax);

// decompressAbsmax(qabsmax u8, nestedAbsmax f32, nestedCode f32[256], offset f32[1], out f32[nb])
Napi::Value DecompressAbsmax(const Napi::CallbackInfo& info) {
  const char* op = "decompressAbsmax";
  auto q = tensor_arg(info, 0, "qabsmax"), nested = tensor_arg(info, 1, "nestedAbsmax"),
       code = tensor_arg(info, 2, "nestedCode"), offset = tensor_arg(info, 3, "offset"), out = tensor_arg(info, 4, "out");
  expect_dtype(op, "qabsmax", q, DType::U8);
  not_empty(op, "qabsmax", q);
  const int64_t nb = q.numel();
  expect_dtype(op, "nestedAbsmax", nested, DType::F32);
  expect_numel(op, "nestedAbsmax", nested, fmt::num_blocks(nb, fmt::kNestedBlocksize));
  expect_dtype(op, "nestedCode", code, DType::F32), expect_numel(op, "nestedCode", code, 256);
  expect_dtype(op, "offset", offset, DType::F32), expect_numel(op, "offset", offset, 1);
  expect_dtype(op, "out", out, DType::F32), expect_numel(op, "out", out, nb);
  if (on_cuda(op, {&q, &nested, &code, &offset, &out})) {
#if defined(NIBBLE_WITH_CUDA)
    cuda::decompress_absmax(q.ptr<uint8_t>(), nested.ptr<float>(), code.ptr<float>(), offset.ptr<float>(), nb,
                            out.ptr<float>(), stream_of(out));
#endif
  } else {
    CpuStream::instance().enqueue([=] {
      cpu::decompress_absmax(q.ptr<uint8_t>(), nested.ptr<float>(), code.ptr<float>(), *offset.ptr<float>(), nb,
                             out.ptr<float>());
    });
  }
  return info.Env().Undefined();
}
NIBBLE_BINDING("decompressAbsmax", DecompressAbsmax);

// ---- 8-bit blockwise -----------------------------------------------------------------------

void check_code(const char* op, const TensorArg& code) {
  expect_dtype(op, "code", code, DType::F32), expect_numel(op, "code", code, 256);
}

// quantizeBlockwise(code f32[256], x, q u8[n], absmax f32[nblocks], blocksize, ref?)
Napi::Value QuantizeBlockwise(const Napi::CallbackInfo& info) {
  const char* op = "quantizeBlockwise";
  auto code = tensor_arg(info, 0, "code"), x = tensor_arg(info, 1, "x"), q = tensor_arg(info, 2, "q"),
       absmax = tensor_arg(info, 3, "absmax");
  int bs = blocksize_8bit(info, 4, op);
  check_code(op, code);
  expect_float(op, "x", x);
  not_empty(op, "x", x);
  const int64_t n = x.numel();
  expect_dtype(op, "q", q, DType::U8), expect_numel(op, "q", q, n);
  expect_dtype(op, "absmax", absmax, DType::F32), expect_numel(op, "absmax", absmax, fmt::num_blocks(n, bs));
  bool ref = use_ref(info, 5);
  if (on_cuda(op, {&code, &x, &q, &absmax})) {
#if defined(NIBBLE_WITH_CUDA)
    cuda::quantize_blockwise(code.ptr<float>(), x.ptr(), x.dt, n, bs, q.ptr<uint8_t>(), absmax.ptr<float>(), stream_of(x));
#endif
  } else {
    CpuStream::instance().enqueue([=] {
      (ref ? cpu::quantize_blockwise_ref : cpu::quantize_blockwise)(code.ptr<float>(), x.ptr(), x.dt, n, bs,
                                                                    q.ptr<uint8_t>(), absmax.ptr<float>());
    });
  }
  return info.Env().Undefined();
}
NIBBLE_BINDING("quantizeBlockwise", QuantizeBlockwise);

// dequantizeBlockwise(code, q u8, absmax f32, out, blocksize, ref?)
Napi::Value DequantizeBlockwise(const Napi::CallbackInfo& info) {
  const char* op = "dequantizeBlockwise";
  auto code = tensor_arg(info, 0, "code"), q = tensor_arg(info, 1, "q"), absmax = tensor_arg(info, 2, "absmax"),
       out = tensor_arg(info, 3, "out");
  int bs = blocksize_8bit(info, 4, op);
  check_code(op, code);
  expect_float(op, "out", out);
  not_empty(op, "out", out);
  const int64_t n = out.numel();
  expect_dtype(op, "q", q, DType::U8), expect_numel(op, "q", q, n);
  expect_dtype(op, "absmax", absmax, DType::F32), expect_numel(op, "absmax", absmax, fmt::num_blocks(n, bs));
  bool ref = use_ref(info, 5);
  if (on_cuda(op, {&code, &q, &absmax, &out})) {
#if defined(NIBBLE_WITH_CUDA)
    cuda::dequantize_blockwise(code.ptr<float>(), q.ptr<uint8_t>(), absmax.ptr<float>(), n, bs, out.ptr(), out.dt, stream_of(out));
#endif
  } else {
    CpuStream::instance().enqueue([=] {
      (ref ? cpu::dequantize_blockwise_ref : cpu::dequantize_blockwise)(code.ptr<float>(), q.ptr<uint8_t>(),
                                                                        absmax.ptr<float>(), n, bs, out.ptr(), out.dt);
    });
  }
  return info.Env().Undefined();
}
NIBBLE_BINDING("dequantizeBlockwise", DequantizeBlockwise);

// ---- LLM.int8() ---------------------------------------------------------------------------

// int8VectorwiseQuant(x [.., cols], out i8, rowStats f32[rows], outlierCols u8[cols], threshold, ref?)
Napi::Value Int8VectorwiseQuant(const Napi::CallbackInfo& info) {
  const char* op = "int8VectorwiseQuant";
  auto x = tensor_arg(info, 0, "x"), out = tensor_arg(info, 1, "out"), stats = tensor_arg(info, 2, "rowStats"),
       cols_t = tensor_arg(info, 3, "outlierCols");
  double th = num_arg(info, 4, "threshold");
  if (!(th >= 0.0) || std::isinf(th)) bad(std::string(op) + ": threshold must be a finite number >= 0, got " + std::to_string(th));
  expect_float(op, "x", x);
  not_empty(op, "x", x);
  if (x.shape.empty()) bad(std::string(op) + ": x must have at least one dimension");
  const int64_t cols = x.dim(-1), rows = x.numel() / cols;
  expect_dtype(op, "out", out, DType::I8), expect_numel(op, "out", out, x.numel());
  expect_dtype(op, "rowStats", stats, DType::F32), expect_numel(op, "rowStats", stats, rows);
  expect_dtype(op, "outlierCols", cols_t, DType::U8), expect_numel(op, "outlierCols", cols_t, cols);
  bool ref = use_ref(info, 5);
  float thf = (float)th;
  if (on_cuda(op, {&x, &out, &stats, &cols_t})) {
#if defined(NIBBLE_WITH_CUDA)
    cuda::int8_vectorwise_quant(x.ptr(), x.dt, rows, cols, thf, out.ptr<int8_t>(), stats.ptr<float>(),
                                cols_t.ptr<uint8_t>(), stream_of(x));
#endif
  } else {
    CpuStream::instance().enqueue([=] {
      (ref ? cpu::int8_vectorwise_quant_ref : cpu::int8_vectorwise_quant)(
          x.ptr(), x.dt, rows, cols, thf, out.ptr<int8_t>(), stats.ptr<float>(), cols_t.ptr<uint8_t>());
    });
  }
  return info.Env().Undefined();
}
NIBBLE_BINDING("int8VectorwiseQuant", Int8VectorwiseQuant);

// int8LinearMatmul(A i8 [.., K], B i8 [N, K], C i32 [.., N], ref?)
Napi::Value Int8LinearMatmul(const Napi::CallbackInfo& info) {
  const char* op = "int8LinearMatmul";
  auto A = tensor_arg(info, 0, "A"), B = tensor_arg(info, 1, "B"), C = tensor_arg(info, 2, "C");
  expect_dtype(op, "A", A, DType::I8), expect_dtype(op, "B", B, DType::I8), expect_dtype(op, "C", C, DType::I32);
  not_empty(op, "A", A), not_empty(op, "B", B);
  expect_rank(op, "B", B, 2);
  if (A.shape.empty()) bad(std::string(op) + ": A must have at least one dimension");
  const int64_t N = B.dim(0), K = B.dim(1);
  if (A.dim(-1) != K)
    bad(std::string(op) + ": shape mismatch: A " + A.describe() + " has " + std::to_string(A.dim(-1)) +
        " columns but B " + B.describe() + " has " + std::to_string(K));
  const int64_t M = A.numel() / K;
  expect_numel(op, "C", C, M * N);
  bool ref = use_ref(info, 3);
  if (on_cuda(op, {&A, &B, &C})) {
#if defined(NIBBLE_WITH_CUDA)
    cuda::int8_linear_matmul(A.ptr<int8_t>(), B.ptr<int8_t>(), M, N, K, C.ptr<int32_t>(), stream_of(C));
#endif
  } else {
    CpuStream::instance().enqueue([=] {
      (ref ? cpu::int8_linear_matmul_ref : cpu::int8_linear_matmul)(A.ptr<int8_t>(), B.ptr<int8_t>(), M, N, K,
                                                                    C.ptr<int32_t>());
    });
  }
  return info.Env().Undefined();
}
NIBBLE_BINDING("int8LinearMatmul", Int8LinearMatmul);

// int8MmDequant(C i32 [.., N], rowStats f32[M], colStats f32[N], bias f16[N] | null, out f16, ref?)
Napi::Value Int8MmDequant(const Napi::CallbackInfo& info) {
  const char* op = "int8MmDequant";
  auto C = tensor_arg(info, 0, "C"), rs = tensor_arg(info, 1, "rowStats"), cs = tensor_arg(info, 2, "colStats");
  TensorArg bias;
  bool has_bias = optional_tensor_arg(info, 3, "bias", &bias);
  auto out = tensor_arg(info, 4, "out");
  expect_dtype(op, "C", C, DType::I32);
  not_empty(op, "C", C);
  if (C.shape.empty()) bad(std::string(op) + ": C must have at least one dimension");
  const int64_t N = C.dim(-1), M = C.numel() / N;
  expect_dtype(op, "rowStats", rs, DType::F32), expect_numel(op, "rowStats", rs, M);
  expect_dtype(op, "colStats", cs, DType::F32), expect_numel(op, "colStats", cs, N);
  if (has_bias) expect_dtype(op, "bias", bias, DType::F16), expect_numel(op, "bias", bias, N);
  expect_dtype(op, "out", out, DType::F16), expect_numel(op, "out", out, M * N);
  bool ref = use_ref(info, 5);
  if (has_bias ? on_cuda(op, {&C, &rs, &cs, &bias, &out}) : on_cuda(op, {&C, &rs, &cs, &out})) {
#if defined(NIBBLE_WITH_CUDA)
    cuda::int8_mm_dequant(C.ptr<int32_t>(), rs.ptr<float>(), cs.ptr<float>(), has_bias ? bias.ptr<uint16_t>() : nullptr,
                          M, N, out.ptr<uint16_t>(), stream_of(out));
#endif
  } else {
    CpuStream::instance().enqueue([=] {
      (ref ? cpu::int8_mm_dequant_ref : cpu::int8_mm_dequant)(C.ptr<int32_t>(), rs.ptr<float>(), cs.ptr<float>(),
                                                              has_bias ? bias.ptr<uint16_t>() : nullptr, M, N,
                                                              out.ptr<uint16_t>());
    });
  }
  return info.Env().Undefined();
}
NIBBLE_BINDING("int8MmDequant", Int8MmDequant);

// ---- 4-bit matmul ----------------------------------------------------------------------------

// A 4-bit weight as the bindings receive it: packed u8, absmax (f32, or u8 codes when
// double-quantized), nestedAbsmax | null, nestedCode | null, offset f32[1] | null at argument
// `i`..i+4, checked against N, K and the blocksize.
struct Weight4bitArgs {
  TensorArg packed, absmax, nested, code, offset;
  bool dq = false;
  std::vector<const TensorArg*> all() const {
    std::vector<const TensorArg*> v = {&packed, &absmax};
    if (dq) v.insert(v.end(), {&nested, &code, &offset});
    return v;
  }
#if defined(NIBBLE_WITH_CUDA)
  cuda::Weight4bit cuda_view(int64_t N, int64_t K, int bs, QuantType qt) const {
    cuda::Weight4bit w;
    w.packed = packed.ptr<uint8_t>();
    if (dq) {
      w.qabsmax = absmax.ptr<uint8_t>(), w.nested_absmax = nested.ptr<float>(), w.nested_code = code.ptr<float>();
      w.offset_ptr = offset.ptr<float>();
    } else {
      w.absmax = absmax.ptr<float>();
    }
    w.blocksize = bs, w.qt = qt, w.N = N, w.K = K;
    return w;
  }
#endif
};
Weight4bitArgs weight4bit_args(const Napi::CallbackInfo& info, size_t i, const char* op, int64_t N, int64_t K, int bs) {
  Weight4bitArgs w;
  w.packed = tensor_arg(info, i, "packed"), w.absmax = tensor_arg(info, i + 1, "absmax");
  w.dq = optional_tensor_arg(info, i + 2, "nestedAbsmax", &w.nested);
  bool has_code = optional_tensor_arg(info, i + 3, "nestedCode", &w.code);
  bool has_offset = optional_tensor_arg(info, i + 4, "offset", &w.offset);
  if (N <= 0 || K <= 0) bad(std::string(op) + ": weight shape [" + std::to_string(N) + ", " + std::to_string(K) + "] is empty");
  const int64_t nb = fmt::num_blocks(N * K, bs);
  expect_dtype(op, "packed", w.packed, DType::U8), expect_numel(op, "packed", w.packed, fmt::packed4_bytes(N * K));
  expect_numel(op, "absmax", w.absmax, nb);
  if (w.dq) {
    if (!has_code || !has_offset) bad(std::string(op) + ": double-quantized absmax needs nestedCode and offset");
    expect_dtype(op, "absmax", w.absmax, DType::U8);
    expect_dtype(op, "nestedAbsmax", w.nested, DType::F32);
    expect_numel(op, "nestedAbsmax", w.nested, fmt::num_blocks(nb, fmt::kNestedBlocksize));
    expect_dtype(op, "nestedCode", w.code, DType::F32), expect_numel(op, "nestedCode", w.code, 256);
    expect_dtype(op, "offset", w.offset, DType::F32), expect_numel(op, "offset", w.offset, 1);
  } else {
    expect_dtype(op, "absmax", w.absmax, DType::F32);
  }
  return w;
}

// matmul4bit(x [.., K], packed, absmax, nestedAbsmax | null, nestedCode | null, offset | null,
//            bias | null, out [.., N], N, K, blocksize, quantType, ref?, gemvLayout u8 | null,
//            gemmLayout u8 | null)
// gemvLayout: the weight's row-interleaved copy (rowsLayout4bit), used for one row on CUDA.
// gemmLayout: its fragment-ordered copy (tilesLayout4bit), used on CUDA for more than one
// float16/bfloat16 row (float32 rows take the bitsandbytes-layout kernels).
Napi::Value Matmul4bit(const Napi::CallbackInfo& info) {
  const char* op = "matmul4bit";
  auto x = tensor_arg(info, 0, "x");
  TensorArg bias, layout;
  bool has_bias = optional_tensor_arg(info, 6, "bias", &bias);
  auto out = tensor_arg(info, 7, "out");
  const int64_t N = int_arg(info, 8, "N"), K = int_arg(info, 9, "K");
  int bs = blocksize_4bit(info, 10, op);
  QuantType qt = quant_type_arg(info, 11, op);
  bool ref = use_ref(info, 12);
  bool has_layout = optional_tensor_arg(info, 13, "gemvLayout", &layout);
  TensorArg tiles;
  bool has_tiles = optional_tensor_arg(info, 14, "gemmLayout", &tiles);
  const Weight4bitArgs wa = weight4bit_args(info, 1, op, N, K, bs);
  expect_float(op, "x", x);
  not_empty(op, "x", x);
  if (x.shape.empty() || x.dim(-1) != K)
    bad(std::string(op) + ": shape mismatch: x " + x.describe() + " has " +
        std::to_string(x.shape.empty() ? 0 : x.dim(-1)) + " features but the weight is [" + std::to_string(N) + ", " +
        std::to_string(K) + "] (out_features, in_features)");
  const int64_t M = x.numel() / K;
  if (has_bias) expect_dtype(op, "bias", bias, x.dt), expect_numel(op, "bias", bias, N);
  expect_dtype(op, "out", out, x.dt), expect_numel(op, "out", out, M * N);
  std::vector<const TensorArg*> all = wa.all();
  all.insert(all.end(), {&x, &out});
  if (has_bias) all.push_back(&bias);
  if (has_layout) {
    expect_dtype(op, "gemvLayout", layout, DType::U8);
    expect_numel(op, "gemvLayout", layout, (int64_t)cuda::rows_layout_bytes(N, K, bs, wa.dq));
    all.push_back(&layout);
  }
  if (has_tiles) {
    expect_dtype(op, "gemmLayout", tiles, DType::U8);
    expect_numel(op, "gemmLayout", tiles, (int64_t)cuda::tiles_layout_bytes(N, K, bs, wa.dq));
    all.push_back(&tiles);
  }
  for (auto* t : all) expect_same_device(op, x, *t);
  if (!x.on_cpu()) {
#if defined(NIBBLE_WITH_CUDA)
    const cuda::Weight4bit w = wa.cuda_view(N, K, bs, qt);
    if (has_layout && M == 1)
      cuda::gemv_4bit_rows(x.ptr(), x.dt, cuda::rows_layout_view(w, layout.ptr()), has_bias ? bias.ptr() : nullptr,
                           out.ptr(), stream_of(out));
    else if (has_tiles && M > 1 && (x.dt == DType::F16 || x.dt == DType::BF16))
      cuda::matmul_4bit_tiles(x.ptr(), x.dt, M, cuda::tiles_layout_view(w, tiles.ptr()), has_bias ? bias.ptr() : nullptr,
                              out.ptr(), stream_of(out));
    else
      cuda::matmul_4bit(x.ptr(), x.dt, M, w, has_bias ? bias.ptr() : nullptr, out.ptr(), stream_of(out));
#else
    on_cuda(op, {&x});
#endif
    return info.Env().Undefined();
  }
  CpuStream::instance().enqueue([=] {
    cpu::Weight4bit w;
    w.packed = wa.packed.ptr<uint8_t>();
    if (wa.dq) {
      w.qabsmax = wa.absmax.ptr<uint8_t>(), w.nested_absmax = wa.nested.ptr<float>(), w.nested_code = wa.code.ptr<float>();
      w.offset = *wa.offset.ptr<float>();  // read when the kernel runs: compressAbsmax may still be queued
    } else {
      w.absmax = wa.absmax.ptr<float>();
    }
    w.blocksize = bs, w.qt = qt, w.N = N, w.K = K;
    (ref ? cpu::matmul_4bit_ref : cpu::matmul_4bit)(x.ptr(), x.dt, M, w, has_bias ? bias.ptr() : nullptr, out.ptr());
  });
  return info.Env().Undefined();
}
NIBBLE_BINDING("matmul4bit", Matmul4bit);

// The two optional CUDA copies of a 4-bit weight share their bindings: a size query that says
// why a weight cannot have the copy, and a fill that checks the weight as matmul4bit does.
struct LayoutKind {
  const char* op;    // the TS function named in errors
  const char* name;  // "row" / "tiles"
  std::string (*unsupported)(int64_t, int64_t, int);
  size_t (*bytes)(int64_t, int64_t, int, bool);
  void (*make)(const cuda::Weight4bit&, void*, cudaStream_t);
};
const LayoutKind kRowsLayout{"gemv4bitLayout", "row", cuda::rows_layout_unsupported, cuda::rows_layout_bytes,
                             [](const cuda::Weight4bit& w, void* p, cudaStream_t s) { cuda::make_rows_layout(w, p, s); }};
const LayoutKind kTilesLayout{"gemm4bitLayout", "tiles", cuda::tiles_layout_unsupported, cuda::tiles_layout_bytes,
                              [](const cuda::Weight4bit& w, void* p, cudaStream_t s) { cuda::make_tiles_layout(w, p, s); }};

// (N, K, blocksize, doubleQuant) -> bytes of the copy, or throws with the shape's reason (the
// data's alignment and the GPU are checked when the copy is made).
Napi::Value layout_bytes(const LayoutKind& kind, const Napi::CallbackInfo& info) {
  const char* op = kind.op;
  const int64_t N = int_arg(info, 0, "N"), K = int_arg(info, 1, "K");
  int bs = blocksize_4bit(info, 2, op);
  const bool dq = info.Length() > 3 && info[3].ToBoolean().Value();
  const std::string why = kind.unsupported(N, K, bs);
  if (!why.empty()) bad(std::string(op) + ": weight [" + std::to_string(N) + ", " + std::to_string(K) + "] blocksize " +
                        std::to_string(bs) + ": " + why);
  return Napi::Number::New(info.Env(), (double)kind.bytes(N, K, bs, dq));
}

// (packed, absmax, nestedAbsmax | null, nestedCode | null, offset | null, layout u8, N, K,
//  blocksize, quantType): fills layout with the weight's copy.
Napi::Value layout_fill(const LayoutKind& kind, const Napi::CallbackInfo& info) {
  const char* op = kind.op;
  auto layout = tensor_arg(info, 5, "layout");
  const int64_t N = int_arg(info, 6, "N"), K = int_arg(info, 7, "K");
  int bs = blocksize_4bit(info, 8, op);
  QuantType qt = quant_type_arg(info, 9, op);
  const Weight4bitArgs wa = weight4bit_args(info, 0, op, N, K, bs);
  expect_dtype(op, "layout", layout, DType::U8);
  expect_numel(op, "layout", layout, (int64_t)kind.bytes(N, K, bs, wa.dq));
  for (auto* t : wa.all()) expect_same_device(op, layout, *t);
  if (layout.on_cpu())
    bad(std::string(op) + ": the " + kind.name + " layout is for weights on a CUDA device; this weight is on cpu");
#if defined(NIBBLE_WITH_CUDA)
  kind.make(wa.cuda_view(N, K, bs, qt), layout.ptr(), stream_of(layout));
#else
  (void)qt;
  on_cuda(op, {&layout});
#endif
  return info.Env().Undefined();
}

// rowsLayout4bitBytes / rowsLayout4bit: the row-interleaved copy (one-row GEMV; K % 32, rows of
// whole blocks, K limit). tilesLayout4bitBytes / tilesLayout4bit: the fragment-ordered copy
// (few-row GEMM; K % 64, blocksize >= 64, a Hopper GPU).
Napi::Value RowsLayout4bitBytes(const Napi::CallbackInfo& info) { return layout_bytes(kRowsLayout, info); }
NIBBLE_BINDING("rowsLayout4bitBytes", RowsLayout4bitBytes);
Napi::Value RowsLayout4bit(const Napi::CallbackInfo& info) { return layout_fill(kRowsLayout, info); }
NIBBLE_BINDING("rowsLayout4bit", RowsLayout4bit);
Napi::Value TilesLayout4bitBytes(const Napi::CallbackInfo& info) { return layout_bytes(kTilesLayout, info); }
NIBBLE_BINDING("tilesLayout4bitBytes", TilesLayout4bitBytes);
Napi::Value TilesLayout4bit(const Napi::CallbackInfo& info) { return layout_fill(kTilesLayout, info); }
NIBBLE_BINDING("tilesLayout4bit", TilesLayout4bit);

// int8OutlierMatmulAdd(out f16 [M, N], x [M, K] float, colMask u8[K], CB i8 [N, K], SCB f32[N]):
// out += the outlier columns' 16-bit product (cpu::int8_outlier_matmul_add).
Napi::Value Int8OutlierMatmulAdd(const Napi::CallbackInfo& info) {
  const char* op = "int8OutlierMatmulAdd";
  auto out = tensor_arg(info, 0, "out"), x = tensor_arg(info, 1, "x"), mask = tensor_arg(info, 2, "colMask"),
       CB = tensor_arg(info, 3, "CB"), SCB = tensor_arg(info, 4, "SCB");
  expect_dtype(op, "out", out, DType::F16), expect_float(op, "x", x);
  expect_dtype(op, "colMask", mask, DType::U8), expect_dtype(op, "CB", CB, DType::I8), expect_dtype(op, "SCB", SCB, DType::F32);
  expect_rank(op, "CB", CB, 2);
  const int64_t N = CB.dim(0), K = CB.dim(1);
  if (x.shape.empty() || x.dim(-1) != K)
    bad(std::string(op) + ": shape mismatch: x " + x.describe() + " vs CB " + CB.describe());
  const int64_t M = x.numel() / K;
  expect_numel(op, "out", out, M * N), expect_numel(op, "SCB", SCB, N), expect_numel(op, "colMask", mask, K);
  for (auto* t : {&x, &mask, &CB, &SCB}) expect_same_device(op, out, *t);
  if (!out.on_cpu()) bad(std::string(op) + ": CUDA tensors are not supported by this op yet; got " + out.describe());
  CpuStream::instance().enqueue([=] {
    cpu::int8_outlier_matmul_add(out.ptr<uint16_t>(), x.ptr(), x.dt, mask.ptr<uint8_t>(), CB.ptr<int8_t>(),
                                 SCB.ptr<float>(), M, N, K);
  });
  return info.Env().Undefined();
}
NIBBLE_BINDING("int8OutlierMatmulAdd", Int8OutlierMatmulAdd);

// int8LinearCpu(x float [.., K], CB i8 [N, K], SCB f32[N], bias f16[N] | null, out f16 [.., N], threshold):
// Linear8bitLt's forward on the CPU as one queued task: int8_vectorwise_quant (outlier mask),
// int8_linear_matmul, int8_mm_dequant (bias), then the outlier columns' 16-bit product: the same
// four kernels Linear8bitLt would queue one op at a time, so the same bits, without three
// round trips through the queue and their intermediate tensors (a decode step has 48 of these).
Napi::Value Int8LinearCpu(const Napi::CallbackInfo& info) {
  const char* op = "int8LinearCpu";
  auto x = tensor_arg(info, 0, "x"), CB = tensor_arg(info, 1, "CB"), SCB = tensor_arg(info, 2, "SCB");
  TensorArg bias;
  const bool has_bias = optional_tensor_arg(info, 3, "bias", &bias);
  auto out = tensor_arg(info, 4, "out");
  const double th = num_arg(info, 5, "threshold");
  if (!(th >= 0.0) || std::isinf(th)) bad(std::string(op) + ": threshold must be a finite number >= 0, got " + std::to_string(th));
  expect_float(op, "x", x);
  not_empty(op, "x", x);
  expect_dtype(op, "CB", CB, DType::I8), expect_rank(op, "CB", CB, 2);
  const int64_t N = CB.dim(0), K = CB.dim(1);
  if (x.shape.empty() || x.dim(-1) != K)
    bad(std::string(op) + ": shape mismatch: x " + x.describe() + " vs CB " + CB.describe());
  const int64_t M = x.numel() / K;
  expect_dtype(op, "SCB", SCB, DType::F32), expect_numel(op, "SCB", SCB, N);
  if (has_bias) expect_dtype(op, "bias", bias, DType::F16), expect_numel(op, "bias", bias, N);
  expect_dtype(op, "out", out, DType::F16), expect_numel(op, "out", out, M * N);
  for (auto* t : {&x, &CB, &SCB}) expect_same_device(op, out, *t);
  if (has_bias) expect_same_device(op, out, bias);
  if (!out.on_cpu()) bad(std::string(op) + ": for CPU tensors; got " + out.describe());
  const float thf = (float)th;
  CpuStream::instance().enqueue([=] {
    cpu::int8_linear(x.ptr(), x.dt, M, K, CB.ptr<int8_t>(), SCB.ptr<float>(), has_bias ? bias.ptr<uint16_t>() : nullptr,
                     N, thf, out.ptr<uint16_t>());
  });
  return info.Env().Undefined();
}
NIBBLE_BINDING("int8LinearCpu", Int8LinearCpu);

// Codebooks for QuantState.code / quant_map: quantMap(kind) with kind 'nf4' | 'fp4' |
// 'dynamic' | 'dynamic_unsigned' -> Float32Array.
Napi::Value QuantMap(const Napi::CallbackInfo& info) {
  if (info.Length() < 1 || !info[0].IsString()) throw Napi::TypeError::New(info.Env(), "quantMap: kind must be a string");
  std::string kind = info[0].As<Napi::String>().Utf8Value();
  Napi::Float32Array a;
  if (kind == "nf4" || kind == "fp4") {
    a = Napi::Float32Array::New(info.Env(), 16);
    for (int i = 0; i < 16; i++) a[i] = kind == "nf4" ? fmt::kNf4Values[i] : fmt::kFp4QuantMap[i];
  } else if (kind == "dynamic" || kind == "dynamic_unsigned") {
    a = Napi::Float32Array::New(info.Env(), 256);
    const uint32_t* bits = kind == "dynamic" ? fmt::kDynamicMapSignedBits : fmt::kDynamicMapUnsignedBits;
    for (int i = 0; i < 256; i++) a[i] = fmt::bits_to_float(bits[i]);
  } else {
    throw Napi::TypeError::New(info.Env(), "quantMap: unknown kind '" + kind + "' (nf4, fp4, dynamic, dynamic_unsigned)");
  }
  return a;
}
NIBBLE_BINDING("quantMap", QuantMap);

}  // namespace
}  // namespace nibble
