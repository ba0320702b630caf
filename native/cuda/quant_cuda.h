// CUDA quantization kernels. Same contracts as the CPU reference in native/cpu/quant_ops.h
// (read that file for the arithmetic each op must reproduce); here every pointer is device
// memory and work is queued on `stream` (0 = legacy default stream). Functions only validate
// what the bindings cannot know (alignment, launch limits) and throw std::runtime_error
// with the op and the CUDA error string; they never abort. Built without nvcc, every
// function throws "built without CUDA" (quant_cuda_stub.cc).
#pragma once
#include <cstdint>
#include <string>

#include "core/dtype.h"
#include "formats.h"

typedef struct CUstream_st* cudaStream_t;

namespace nibble {
namespace cuda {

using fmt::QuantType;

// ---- 4-bit (NF4 / FP4) ------------------------------------------------------------------
void quantize_4bit(const void* x, DType dt, int64_t n, int blocksize, QuantType qt, uint8_t* packed,
                   float* absmax, cudaStream_t stream = 0);
void dequantize_4bit(const uint8_t* packed, const float* absmax, int64_t n, int blocksize, QuantType qt, void* out,
                     DType out_dt, cudaStream_t stream = 0);
// dequantize_4bit with the double-quantized absmax decoded in the kernel (never materialised):
// absmax[b] = nested_code[qabsmax[b]] * nested_absmax[b / 256] + *offset (two rounded float ops).
// offset is a device pointer to one float32 (the QuantState's offset tensor).
void dequantize_4bit_dq(const uint8_t* packed, const uint8_t* qabsmax, const float* nested_absmax,
                        const float* nested_code, const float* offset, int64_t n, int blocksize, QuantType qt,
                        void* out, DType out_dt, cudaStream_t stream = 0);

// Double quantization of a float32 absmax vector (cpu::compress_absmax): the mean, accumulated
// in double, goes to *offset (device, one float32) so nothing waits for the host.
void compress_absmax(const float* absmax, int64_t nblocks, uint8_t* qabsmax, float* nested_absmax, float* offset,
                     cudaStream_t stream = 0);
void decompress_absmax(const uint8_t* qabsmax, const float* nested_absmax, const float* nested_code,
                       const float* offset, int64_t nblocks, float* absmax, cudaStream_t stream = 0);

// ---- 8-bit blockwise (dynamic map; code = 256 ascending float32 in device memory) --------
void quantize_blockwise(const float* code, const void* x, DType dt, int64_t n, int blocksize, uint8_t* q,
                        float* absmax, cudaStream_t stream = 0);
void dequantize_blockwise(const float* code, const uint8_t* q, const float* absmax, int64_t n, int blocksize,
                          void* out, DType out_dt, cudaStream_t stream = 0);

// ---- LLM.int8() ---------------------------------------------------------------------------
// outlier_cols: uint8 [cols] (1 = outlier column), written when threshold > 0 (may be null
// when threshold == 0).
void int8_vectorwise_quant(const void* x, DType dt, int64_t rows, int64_t cols, float threshold, int8_t* out,
                           float* row_stats, uint8_t* outlier_cols, cudaStream_t stream = 0);
// C[m, n] = sum_k A[m, k] * B[n, k], exact int32 (int8 tensor cores when K % 16 == 0).
void int8_linear_matmul(const int8_t* A, const int8_t* B, int64_t M, int64_t N, int64_t K, int32_t* C,
                        cudaStream_t stream = 0);
// out (float16) = fp16(fmaf(C * row_stats[m] * col_stats[n], 1/127^2, bias[n])); bias float16 or null.
void int8_mm_dequant(const int32_t* C, const float* row_stats, const float* col_stats, const uint16_t* bias,
                     int64_t M, int64_t N, uint16_t* out, cudaStream_t stream = 0);
// int8_linear_matmul followed by int8_mm_dequant in one kernel (the int32 product stays in
// registers); bit-identical to running the two ops.
void int8_linear_matmul_dequant(const int8_t* A, const int8_t* B, int64_t M, int64_t N, int64_t K,
                                const float* row_stats, const float* col_stats, const uint16_t* bias, uint16_t* out,
                                cudaStream_t stream = 0);

// ---- dequant-fused 4-bit matmul -------------------------------------------------------------
// Device-side mirror of cpu::Weight4bit. offset is read from device memory (offset_ptr)
// when set, else the host value `offset` is used.
struct Weight4bit {
  const uint8_t* packed = nullptr;       // [(N*K+1)/2]
  const float* absmax = nullptr;         // [nblocks] or null when qabsmax is used
  const uint8_t* qabsmax = nullptr;      // [nblocks]
  const float* nested_absmax = nullptr;  // [ceil(nblocks/256)]
  const float* nested_code = nullptr;    // [256]
  float offset = 0.0f;
  const float* offset_ptr = nullptr;
  int blocksize = 64;
  QuantType qt = QuantType::NF4;
  int64_t N = 0, K = 0;
};

// out[m, n] = sum_k x[m, k] * Wdq[n, k] + bias[n]; x, bias and out have dtype x_dt.
// M == 1: a GEMV streaming the packed weight once. M > 1, float16/bfloat16, K % 32 == 0:
// a tensor-core (mma.sync) GEMM that dequantizes into registers. Other cases: a SIMT kernel
// that dequantizes tiles into shared memory. The dequantized weight never reaches global memory.
void matmul_4bit(const void* x, DType x_dt, int64_t M, const Weight4bit& w, const void* bias, void* out,
                 cudaStream_t stream = 0);

// Kernel variants, for the native tests and the benchmark (llm.c style): the dispatcher in
// matmul_4bit picks one; these force a path. Each throws when the shape does not suit it.
enum class Matmul4bitPath { Auto = 0, Gemv = 1, GemvHalfLut = 2, Mma = 3, Simt = 4, GemvHalf2Acc = 5 };
void matmul_4bit_path(Matmul4bitPath path, const void* x, DType x_dt, int64_t M, const Weight4bit& w,
                      const void* bias, void* out, cudaStream_t stream = 0);

// ---- 4-bit GEMV over a row-interleaved copy (quant_gemv4_rows.cu) ---------------------------
// A copy of a 4-bit weight laid out for the one-row GEMV: for each group of 32 rows and each
// 32-element chunk of K, the 32 rows' 16-byte chunks are adjacent (absmax likewise), so a warp
// owns 32 rows and reads its activations once per chunk. Made once, when a weight is loaded;
// the bitsandbytes layout stays the one that is saved. The copy refers to the source's nested
// absmax, nested code and offset (they must outlive it) and holds its own workspace, so one
// copy serves one stream at a time.
constexpr int64_t kRowsMaxK = 16384;  // activations staged as float32 in shared memory
struct Weight4bitRows {
  uint8_t* packed = nullptr;   // [ceil(N/32)][K/32][32][16 bytes]
  uint8_t* qabsmax = nullptr;  // [ceil(N/32)][K/blocksize][32], double quantization
  float* absmax = nullptr;     // [ceil(N/32)][K/blocksize][32], plain absmax
  const float* nested_absmax = nullptr;
  const float* nested_code = nullptr;
  const float* offset_ptr = nullptr;
  float offset = 0.0f;
  float* partial = nullptr;  // split-K workspace
  int* counters = nullptr;   // one per row group, zero between launches
  int blocksize = 64;
  QuantType qt = QuantType::NF4;
  int64_t N = 0, K = 0;
};
// Why a weight cannot take the row layout ("" when it can): K % 32, rows of whole blocks, K limit
// (the shape), and for a weight in memory also the packed data's alignment.
std::string rows_layout_unsupported(int64_t N, int64_t K, int blocksize);
std::string rows_layout_unsupported(const Weight4bit& w);
// Device bytes make_rows_layout needs for its buffer.
size_t rows_layout_bytes(int64_t N, int64_t K, int blocksize, bool double_quant);
// Fills `buffer` (device, rows_layout_bytes) from w, queued on stream; the view refers to it.
Weight4bitRows make_rows_layout(const Weight4bit& w, void* buffer, cudaStream_t stream = 0);
// The view of a buffer that make_rows_layout filled earlier for the same weight (no work queued).
Weight4bitRows rows_layout_view(const Weight4bit& w, void* buffer);
// out[N] = x[K] @ Wdq^T + bias, x/bias/out of dtype x_dt (float32, float16, bfloat16).
void gemv_4bit_rows(const void* x, DType x_dt, const Weight4bitRows& w, const void* bias, void* out,
                    cudaStream_t stream = 0);

// ---- 4-bit GEMM over a fragment-ordered copy (quant_mma4_tiles.cu) --------------------------
// A copy of a 4-bit weight laid out for the tensor-core GEMM with few activation rows: for each
// group of 32 rows and each 64-column chunk, two 512-byte tiles in which lane l's 16 bytes are
// its mma.m16n8k16 A fragments, then the 32 rows' absmax codes (double quantization, 32 bytes)
// or absmax (128 bytes). Made once, when a weight is loaded; refers to the source's nested
// absmax, nested code and offset, and holds split-K counters, so one copy serves one stream
// at a time.
struct Weight4bitTiles {
  uint8_t* chunks = nullptr;  // [ceil(N/32)][K/64][1024 + 32 or 128 bytes]
  bool double_quant = true;
  const float* nested_absmax = nullptr;
  const float* nested_code = nullptr;
  const float* offset_ptr = nullptr;
  float offset = 0.0f;
  int* counters = nullptr;  // one per row group, zero between launches
  int blocksize = 64;
  QuantType qt = QuantType::NF4;
  int64_t N = 0, K = 0;
};
// Why a weight cannot take the tiles layout ("" when it can): K % 64, blocksize < 64 or rows
// not whole blocks, size (32-bit indexing), missing state.
std::string tiles_layout_unsupported(int64_t N, int64_t K, int blocksize);
std::string tiles_layout_unsupported(const Weight4bit& w);
// Device bytes make_tiles_layout needs for its buffer.
size_t tiles_layout_bytes(int64_t N, int64_t K, int blocksize, bool double_quant);
// Fills `buffer` (device, tiles_layout_bytes) from w, queued on stream; the view refers to it.
Weight4bitTiles make_tiles_layout(const Weight4bit& w, void* buffer, cudaStream_t stream = 0);
// The view of a buffer that make_tiles_layout filled earlier for the same weight.
Weight4bitTiles tiles_layout_view(const Weight4bit& w, void* buffer);
// out[M, N] = x[M, K] @ Wdq^T + bias; x/bias/out float16 or bfloat16, float32 accumulation.
void matmul_4bit_tiles(const void* x, DType x_dt, int64_t M, const Weight4bitTiles& w, const void* bias, void* out,
                       cudaStream_t stream = 0);

}  // namespace cuda
}  // namespace nibble
