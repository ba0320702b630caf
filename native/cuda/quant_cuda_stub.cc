// Used only when nibble is built without nvcc: every CUDA quantization entry point explains
// why it cannot run instead of failing to link.
#include <stdexcept>
#include <string>

#include "cuda/quant_cuda.h"

namespace nibble {
namespace cuda {

[[noreturn]] static void no_cuda(const char* op) {
  throw std::runtime_error(std::string(op) +
                           ": this nibble binary was built without CUDA support (no nvcc at build time); "
                           "rebuild with nvcc on PATH (npm rebuild nibble-llm) to run it on a GPU");
}

void quantize_4bit(const void*, DType, int64_t, int, QuantType, uint8_t*, float*, cudaStream_t) {
  no_cuda("quantize_4bit");
}
void dequantize_4bit(const uint8_t*, const float*, int64_t, int, QuantType, void*, DType, cudaStream_t) {
  no_cuda("dequantize_4bit");
}
void dequantize_4bit_dq(const uint8_t*, const uint8_t*, const float*, const float*, const float*, int64_t, int,
                        QuantType, void*, DType, cudaStream_t) {
  no_cuda("dequantize_4bit");
}
void compress_absmax(const float*, int64_t, uint8_t*, float*, float*, cudaStream_t) { no_cuda("compress_absmax"); }
void decompress_absmax(const uint8_t*, const float*, const float*, const float*, int64_t, float*, cudaStream_t) {
  no_cuda("decompress_absmax");
}
void quantize_blockwise(const float*, const void*, DType, int64_t, int, uint8_t*, float*, cudaStream_t) {
  no_cuda("quantize_blockwise");
}
void dequantize_blockwise(const float*, const uint8_t*, const float*, int64_t, int, void*, DType, cudaStream_t) {
  no_cuda("dequantize_blockwise");
}
void int8_vectorwise_quant(const void*, DType, int64_t, int64_t, float, int8_t*, float*, uint8_t*, cudaStream_t) {
  no_cuda("int8_vectorwise_quant");
}
void int8_linear_matmul(const int8_t*, const int8_t*, int64_t, int64_t, int64_t, int32_t*, cudaStream_t) {
  no_cuda("int8_linear_matmul");
}
void int8_mm_dequant(const int32_t*, const float*, const float*, const uint16_t*, int64_t, int64_t, uint16_t*,
                     cudaStream_t) {
  no_cuda("int8_mm_dequant");
}
void int8_linear_matmul_dequant(const int8_t*, const int8_t*, int64_t, int64_t, int64_t, const float*, const float*,
                                const uint16_t*, uint16_t*, cudaStream_t) {
  no_cuda("int8_linear_matmul_dequant");
}
void matmul_4bit(const void*, DType, int64_t, const Weight4bit&, const void*, void*, cudaStream_t) {
  no_cuda("matmul_4bit");
}
void matmul_4bit_path(Matmul4bitPath, const void*, DType, int64_t, const Weight4bit&, const void*, void*,
                      cudaStream_t) {
  no_cuda("matmul_4bit");
}

std::string rows_layout_unsupported(int64_t, int64_t, int) { return "built without CUDA"; }
std::string rows_layout_unsupported(const Weight4bit&) { return "built without CUDA"; }
size_t rows_layout_bytes(int64_t, int64_t, int, bool) { return 0; }
Weight4bitRows make_rows_layout(const Weight4bit&, void*, cudaStream_t) { no_cuda("make_rows_layout"); }
Weight4bitRows rows_layout_view(const Weight4bit&, void*) { no_cuda("rows_layout_view"); }
void gemv_4bit_rows(const void*, DType, const Weight4bitRows&, const void*, void*, cudaStream_t) {
  no_cuda("gemv_4bit_rows");
}
std::string tiles_layout_unsupported(int64_t, int64_t, int) { return "built without CUDA"; }
std::string tiles_layout_unsupported(const Weight4bit&) { return "built without CUDA"; }
size_t tiles_layout_bytes(int64_t, int64_t, int, bool) { return 0; }
Weight4bitTiles make_tiles_layout(const Weight4bit&, void*, cudaStream_t) { no_cuda("make_tiles_layout"); }
Weight4bitTiles tiles_layout_view(const Weight4bit&, void*) { no_cuda("tiles_layout_view"); }
void matmul_4bit_tiles(const void*, DType, int64_t, const Weight4bitTiles&, const void*, void*, cudaStream_t) {
  no_cuda("matmul_4bit_tiles");
}

}  // namespace cuda
}  // namespace nibble
