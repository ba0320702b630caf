#include "bindings/tensor_arg.h"

#include <sys/mman.h>

#include <sstream>

#include "core/stream.h"

#include "bindings/registry.h"

namespace nibble {

namespace {
// Handoff from Wrap() to the constructor it calls. Per thread: each worker_threads Worker
// runs its own JS thread with its own env, and a process-wide slot let one worker's Wrap()
// clear it under another's constructor ("StorageRef cannot be constructed from JavaScript").
thread_local std::shared_ptr<Storage>* g_pending = nullptr;

// The StorageRef constructor, kept for Wrap(). StorageRef objects carry a type tag, which
// tensor_from_value checks instead of walking the prototype chain with instanceof.
struct AddonData {
  Napi::FunctionReference ctor;
};
constexpr napi_type_tag kStorageTag = {0x6e6962626c652d73ull, 0x746f726167657265ull};
}  // namespace

void StorageRef::Define(Napi::Env env, Napi::Object exports) {
  Napi::Function ctor = DefineClass(env, "StorageRef",
                                    {InstanceMethod("release", &StorageRef::Release),
                                     InstanceMethod("share", &StorageRef::Share),
                                     InstanceMethod("dropPages", &StorageRef::DropPages),
                                     InstanceAccessor("nbytes", &StorageRef::GetNbytes, nullptr),
                                     InstanceAccessor("device", &StorageRef::GetDevice, nullptr),
                                     InstanceAccessor("alive", &StorageRef::GetAlive, nullptr),
                                     InstanceAccessor("kind", &StorageRef::GetKind, nullptr)});
  auto* data = new AddonData;
  data->ctor = Napi::Persistent(ctor);
  env.SetInstanceData<AddonData>(data);
  exports.Set("StorageRef", ctor);
}
NIBBLE_INIT_HOOK(StorageRef::Define);

Napi::Object StorageRef::Wrap(Napi::Env env, std::shared_ptr<Storage> s) {
  auto* data = env.GetInstanceData<AddonData>();
  g_pending = &s;
  Napi::Object o = data->ctor.New({});
  g_pending = nullptr;
  return o;
}

StorageRef::StorageRef(const Napi::CallbackInfo& info) : Napi::ObjectWrap<StorageRef>(info) {
  if (!g_pending) throw Napi::TypeError::New(info.Env(), "StorageRef cannot be constructed from JavaScript");
  storage = *g_pending;
  info.This().As<Napi::Object>().TypeTag(&kStorageTag);
  // Tell V8 how much memory this handle keeps alive so GC runs the finalizer in time.
  if (storage && storage->kind == StorageKind::Host) {
    accounted_ = (int64_t)storage->nbytes;
    Napi::MemoryManagement::AdjustExternalMemory(info.Env(), accounted_);
  }
}

StorageRef::~StorageRef() {
  // The finalizer: the safety net when a tensor was never disposed. Queued kernels keep
  // their own references, so this never frees memory in use. (External memory accounting
  // is dropped with the env; adjusting it here is not allowed during GC.)
  storage.reset();
}

Napi::Value StorageRef::Release(const Napi::CallbackInfo& info) {
  if (storage && accounted_) {
    Napi::MemoryManagement::AdjustExternalMemory(info.Env(), -accounted_);
    accounted_ = 0;
  }
  storage.reset();
  return info.Env().Undefined();
}
// A second handle on the same memory: views get their own, so disposing one view never
// pulls memory from under another.
Napi::Value StorageRef::Share(const Napi::CallbackInfo& info) {
  if (!storage) throw Napi::Error::New(info.Env(), "Tensor was used after dispose()");
  return Wrap(info.Env(), storage);
}
// For a memory-mapped file: lets the kernel drop the pages read so far from this process
// (they are re-read from the file if touched again). Loading a checkpoint layer by layer
// calls it after each layer, so resident memory stays near the converted model's size
// instead of growing to the whole file. Never loses data: the mapping is never written.
Napi::Value StorageRef::DropPages(const Napi::CallbackInfo& info) {
  if (storage && storage->kind == StorageKind::Mapped && storage->data && storage->nbytes) {
    CpuStream::instance().sync();  // queued kernels may still be reading the mapping
    madvise(storage->data, storage->nbytes, MADV_DONTNEED);
  }
  return info.Env().Undefined();
}

Napi::Value StorageRef::GetNbytes(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), storage ? (double)storage->nbytes : 0);
}
Napi::Value StorageRef::GetDevice(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), storage ? storage->device : -1);
}
Napi::Value StorageRef::GetAlive(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), !!storage); }
Napi::Value StorageRef::GetKind(const Napi::CallbackInfo& info) {
  if (!storage) return Napi::String::New(info.Env(), "released");
  const char* k = storage->kind == StorageKind::Host ? "host" : storage->kind == StorageKind::Mapped ? "mapped" : "cuda";
  return Napi::String::New(info.Env(), k);
}

std::string TensorArg::describe() const {
  std::ostringstream o;
  o << dtype_name(dt) << "[";
  for (size_t i = 0; i < shape.size(); i++) o << (i ? ", " : "") << shape[i];
  o << "] on " << (st && st->device >= 0 ? "cuda:" + std::to_string(st->device) : std::string("cpu"));
  return o.str();
}

TensorArg tensor_from_value(Napi::Env env, Napi::Value v, const char* name) {
  if (!v.IsObject()) throw Napi::TypeError::New(env, std::string("argument '") + name + "' must be a Tensor");
  Napi::Object o = v.As<Napi::Object>();
  Napi::Value h = o.Get("_h");
  if (!h.IsObject() || !h.As<Napi::Object>().CheckTypeTag(&kStorageTag))
    throw Napi::TypeError::New(env, std::string("argument '") + name + "' must be a Tensor");
  StorageRef* ref = StorageRef::Unwrap(h.As<Napi::Object>());
  if (!ref->storage) throw Napi::Error::New(env, std::string("Tensor '") + name + "' was used after dispose()");
  TensorArg t;
  t.st = ref->storage;
  t.off = (size_t)o.Get("_off").As<Napi::Number>().Int64Value();
  int dt = o.Get("_dt").As<Napi::Number>().Int32Value();
  if (dt < 0 || dt >= kNumDTypes) throw Napi::TypeError::New(env, std::string("Tensor '") + name + "' has a bad dtype code");
  t.dt = (DType)dt;
  Napi::Array shape = o.Get("shape").As<Napi::Array>();
  const uint32_t rank = shape.Length();
  t.shape.resize(rank);
  for (uint32_t k = 0; k < rank; k++) t.shape[k] = shape.Get(k).As<Napi::Number>().Int64Value();
  if (t.off + t.nbytes() > t.st->nbytes)
    throw Napi::RangeError::New(env, std::string("Tensor '") + name + "' view " + t.describe() +
                                         " extends past its storage (" + std::to_string(t.st->nbytes) + " bytes)");
  return t;
}

TensorArg tensor_arg(const Napi::CallbackInfo& info, size_t i, const char* name) {
  if (i >= info.Length()) throw Napi::TypeError::New(info.Env(), std::string("argument '") + name + "' must be a Tensor");
  return tensor_from_value(info.Env(), info[i], name);
}

bool optional_tensor_arg(const Napi::CallbackInfo& info, size_t i, const char* name, TensorArg* out) {
  if (i >= info.Length() || info[i].IsNull() || info[i].IsUndefined()) return false;
  *out = tensor_arg(info, i, name);
  return true;
}


void expect_dtype(const char* op, const char* name, const TensorArg& t, DType want) {
  if (t.dt != want)
    throw std::invalid_argument(std::string(op) + ": '" + name + "' must be " + dtype_name(want) + ", got " +
                                t.describe());
}
void expect_float(const char* op, const char* name, const TensorArg& t) {
  if (!is_float_dtype(t.dt))
    throw std::invalid_argument(std::string(op) + ": '" + name + "' must be float32, float16 or bfloat16, got " +
                                t.describe());
}
void expect_rank(const char* op, const char* name, const TensorArg& t, size_t rank) {
  if (t.shape.size() != rank)
    throw std::invalid_argument(std::string(op) + ": '" + name + "' must have " + std::to_string(rank) +
                                " dimensions, got " + t.describe());
}
void expect_numel(const char* op, const char* name, const TensorArg& t, int64_t n) {
  if (t.numel() != n)
    throw std::invalid_argument(std::string(op) + ": '" + name + "' must have " + std::to_string(n) +
                                " elements, got " + t.describe());
}
void expect_same_device(const char* op, const TensorArg& a, const TensorArg& b) {
  if (a.device() != b.device())
    throw std::invalid_argument(std::string(op) + ": tensors on different devices (" + a.describe() + " vs " +
                                b.describe() + ")");
}
void expect_cpu(const char* op, const TensorArg& t) {
  if (!t.on_cpu()) throw std::invalid_argument(std::string(op) + ": expected a CPU tensor, got " + t.describe());
}
void expect_on_device(const char* op, const char* name, const TensorArg& t, int device, const char* whose) {
  if (t.device() == device) return;
  const std::string where = device < 0 ? "cpu" : "cuda:" + std::to_string(device);
  throw std::invalid_argument(std::string(op) + ": '" + name + "' is " + t.describe() + " but " + whose + " is on " +
                              where + "; move it with .toDevice('" + where + "')");
}

int64_t int_arg(const Napi::CallbackInfo& info, size_t i, const char* name) {
  if (i >= info.Length() || !info[i].IsNumber())
    throw Napi::TypeError::New(info.Env(), std::string("argument '") + name + "' must be a number");
  return info[i].As<Napi::Number>().Int64Value();
}
double num_arg(const Napi::CallbackInfo& info, size_t i, const char* name) {
  if (i >= info.Length() || !info[i].IsNumber())
    throw Napi::TypeError::New(info.Env(), std::string("argument '") + name + "' must be a number");
  return info[i].As<Napi::Number>().DoubleValue();
}

}  // namespace nibble
