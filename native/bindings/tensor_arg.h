// Reading JS Tensor objects in bindings. A JS Tensor (lib/tensor.ts) carries
//   _h: StorageRef (native handle), _off: byte offset, _dt: dtype code, shape: number[].
// Bindings check dtype, shape and device here, on the JS thread, so kernels never see bad input.
#pragma once
#include <napi.h>

#include <memory>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "core/storage.h"

namespace nibble {

class StorageRef : public Napi::ObjectWrap<StorageRef> {
 public:
  static void Define(Napi::Env env, Napi::Object exports);
  static Napi::Object Wrap(Napi::Env env, std::shared_ptr<Storage> s);
  explicit StorageRef(const Napi::CallbackInfo& info);
  ~StorageRef() override;

  std::shared_ptr<Storage> storage;

 private:
  Napi::Value Release(const Napi::CallbackInfo& info);
  Napi::Value Share(const Napi::CallbackInfo& info);
  Napi::Value DropPages(const Napi::CallbackInfo& info);
  Napi::Value GetNbytes(const Napi::CallbackInfo& info);
  Napi::Value GetDevice(const Napi::CallbackInfo& info);
  Napi::Value GetAlive(const Napi::CallbackInfo& info);
  Napi::Value GetKind(const Napi::CallbackInfo& info);
  int64_t accounted_ = 0;
};

struct TensorArg {
  std::shared_ptr<Storage> st;
  size_t off = 0;
  DType dt = DType::F32;
  std::vector<int64_t> shape;

  int64_t numel() const {
    int64_t n = 1;
    for (auto d : shape) n *= d;
    return n;
  }
  size_t nbytes() const { return (size_t)numel() * dtype_size(dt); }
  int device() const { return st->device; }
  bool on_cpu() const { return st->device < 0; }
  template <typename T = void>
  T* ptr() const {
    return reinterpret_cast<T*>(static_cast<char*>(st->data) + off);
  }
  int64_t dim(int i) const { return shape[i < 0 ? shape.size() + i : i]; }
  std::string describe() const;  // e.g. "float32[2, 10, 64] on cpu"
};

// Reads argument i as a Tensor; `name` is used in error messages.
TensorArg tensor_arg(const Napi::CallbackInfo& info, size_t i, const char* name);
// The same for any JS value (a Tensor held in an array or object).
TensorArg tensor_from_value(Napi::Env env, Napi::Value v, const char* name);
// Same, or an empty optional when the argument is null/undefined.
bool optional_tensor_arg(const Napi::CallbackInfo& info, size_t i, const char* name, TensorArg* out);

// Validation helpers: each throws a JS TypeError/RangeError naming the op and argument.
void expect_dtype(const char* op, const char* name, const TensorArg& t, DType want);
void expect_float(const char* op, const char* name, const TensorArg& t);
void expect_rank(const char* op, const char* name, const TensorArg& t, size_t rank);
void expect_numel(const char* op, const char* name, const TensorArg& t, int64_t n);
void expect_same_device(const char* op, const TensorArg& a, const TensorArg& b);
void expect_cpu(const char* op, const TensorArg& t);
// t must sit on `device` (-1: the CPU), which `whose` set ("the plan", "the output"): a mix
// would make a kernel read another device's pointers. The error says where to move it.
void expect_on_device(const char* op, const char* name, const TensorArg& t, int device, const char* whose);

int64_t int_arg(const Napi::CallbackInfo& info, size_t i, const char* name);
double num_arg(const Napi::CallbackInfo& info, size_t i, const char* name);

}  // namespace nibble
