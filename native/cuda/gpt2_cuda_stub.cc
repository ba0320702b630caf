// Used only when the addon is built without nvcc: the GPT-2 CUDA entry points explain why
// they cannot run instead of failing to link.
#include <stdexcept>

#include "cuda/gpt2_cuda.h"

namespace nibble {
namespace gpt2_cuda {

static const char* kNoCuda =
    "this nibble binary was built without CUDA support (no nvcc at build time); "
    "rebuild with nvcc on PATH (npm rebuild nibble-llm) to run GPT-2 on a GPU";

cudaStream_t stream(int) { throw std::runtime_error(kNoCuda); }
void synchronize_all() {}
void mem_info(int, size_t*, size_t*) { throw std::runtime_error(kNoCuda); }
void embedding(float*, const void*, const void*, DType, const int32_t*, const int32_t*, int64_t, int64_t, int64_t,
               int64_t, int) {
  throw std::runtime_error(kNoCuda);
}
void layernorm(float*, const float*, const void*, const void*, DType, int64_t, int64_t, float, int) {
  throw std::runtime_error(kNoCuda);
}
void linear(float*, const float*, const void*, const void*, DType, int64_t, int64_t, int64_t, int) {
  throw std::runtime_error(kNoCuda);
}
void linear_path(int, float*, const float*, const void*, const void*, DType, int64_t, int64_t, int64_t, int) {
  throw std::runtime_error(kNoCuda);
}
void gelu_new(float*, const float*, int64_t, int) { throw std::runtime_error(kNoCuda); }
void add(float*, const float*, const float*, int64_t, int) { throw std::runtime_error(kNoCuda); }
void softmax(float*, const float*, int64_t, int64_t, int) { throw std::runtime_error(kNoCuda); }
void attention(float*, const float*, float*, float*, const int32_t*, int64_t, int64_t, int64_t, int64_t, int64_t,
               int64_t, int) {
  throw std::runtime_error(kNoCuda);
}

}  // namespace gpt2_cuda
}  // namespace nibble

namespace nibble {
namespace gpt2_cuda {
void linear_ex(int, int, float*, const float*, const void*, const void*, DType, int64_t, int64_t, int64_t, int) {
  throw std::runtime_error(kNoCuda);
}
size_t gpt2_scratch_bytes(const Gpt2Weights&, int64_t, int64_t, int64_t) { throw std::runtime_error(kNoCuda); }
void qlinear(const QLinear&, DType, int, float*, const float*, int64_t, void*, int) { throw std::runtime_error(kNoCuda); }
size_t qlinear_scratch_bytes(const Gpt2Weights&, int64_t) { throw std::runtime_error(kNoCuda); }
void qlinear_ln(const QLinear&, const void*, const void*, float, DType, int, float*, const float*, float*, int64_t, void*,
                int, const LnFold*) {
  throw std::runtime_error(kNoCuda);
}
size_t ln_fold_bytes(const Gpt2Weights&) { throw std::runtime_error(kNoCuda); }
void ln_fold_build(Gpt2Weights&, void*, int) { throw std::runtime_error(kNoCuda); }
void gpt2_forward(const Gpt2Weights&, void*, const int32_t*, const int32_t*, const int32_t*, float* const*,
                  float* const*, int64_t, int64_t, int64_t, int64_t, bool, float*, int, const int32_t*) {
  throw std::runtime_error(kNoCuda);
}
}  // namespace gpt2_cuda
}  // namespace nibble

namespace nibble {
namespace gpt2_cuda {
struct DecodeGraph {};
void attention_decode_dev(float*, const float*, float*, float*, const int32_t*, const int32_t*, int64_t, int64_t, int64_t,
                          int64_t, int) {
  throw std::runtime_error(kNoCuda);
}
DecodeGraph* decode_graph_create(const Gpt2Weights&, float* const*, float* const*, int64_t, int64_t, int) {
  throw std::runtime_error(kNoCuda);
}
void decode_graph_run(DecodeGraph*, const int32_t*, const int32_t*, const int32_t*, int64_t, float*, const int32_t*) {
  throw std::runtime_error(kNoCuda);
}
void decode_graph_destroy(DecodeGraph*) {}
}  // namespace gpt2_cuda
}  // namespace nibble
