// Storage and data movement: allocate, map files, read/write bytes, copy, cast, transpose,
// synchronise, and report what the binary supports.
#include <napi.h>

#include <cstring>
#include <mutex>
#include <stdexcept>
#include <thread>

#include "bindings/registry.h"
#include "bindings/tensor_arg.h"
#include "core/parallel.h"
#include "core/stream.h"
#include "cpu/convert.h"
#include "cpu/cpu_features.h"
#include "cuda/cast_cuda.h"
#include "cuda/cuda_api.h"
#include "cuda/gpt2_cuda.h"

namespace nibble {
namespace {

// One JS thread at a time uses the GPU. The CUDA kernels of every environment share one
// stream a device, and a decode step is captured into a CUDA graph on it: another thread's
// launches or copies during a capture would be recorded into it or break it (a segfault or
// "operation not permitted ... capturing stream" from a second worker_threads Worker). So the
// first thread to put memory on a GPU owns CUDA until its environment closes; others get an
// error naming the rule (their CPU work is unaffected).
std::mutex& g_gpu_mu = *new std::mutex;
bool g_gpu_owned = false;
std::thread::id g_gpu_owner;
void release_gpu(void*) {
  std::lock_guard<std::mutex> lock(g_gpu_mu);
  g_gpu_owned = false;
}
// Allocates device memory for this thread, which then owns CUDA (a failed allocation, e.g. no
// GPU, claims nothing, so other threads keep seeing that error rather than this rule's).
std::shared_ptr<Storage> cuda_alloc_claiming(napi_env env, size_t nbytes, int device) {
  std::lock_guard<std::mutex> lock(g_gpu_mu);
  const bool mine = g_gpu_owned && g_gpu_owner == std::this_thread::get_id();
  if (g_gpu_owned && !mine)
    throw std::runtime_error(
        "CUDA is in use by another thread of this process (the main thread or a worker_threads Worker): nibble "
        "runs GPU work from one thread at a time; load GPU models in that thread, or run this one on the CPU");
  auto s = Storage::cuda(nbytes, device);
  if (!mine) {
    if (napi_add_env_cleanup_hook(env, release_gpu, nullptr) != napi_ok)
      throw std::runtime_error("CUDA: could not register the thread's GPU ownership");
    g_gpu_owned = true, g_gpu_owner = std::this_thread::get_id();
  }
  return s;
}

std::shared_ptr<Storage> alloc_on(napi_env env, int device, size_t nbytes, bool zero) {
  if (device < 0) return Storage::host(nbytes, zero);
  auto s = cuda_alloc_claiming(env, nbytes, device);
  if (zero && nbytes) {
    std::vector<char> z(nbytes, 0);
    cuda_api::copy_host_to_device(s->data, z.data(), nbytes, device);
  }
  return s;
}

Napi::Value Alloc(const Napi::CallbackInfo& info) {
  int64_t nbytes = int_arg(info, 0, "nbytes");
  int device = (int)int_arg(info, 1, "device");
  bool zero = info.Length() > 2 && info[2].ToBoolean();
  if (nbytes < 0) throw Napi::RangeError::New(info.Env(), "alloc: negative size");
  return StorageRef::Wrap(info.Env(), alloc_on(info.Env(), device, (size_t)nbytes, zero));
}
NIBBLE_BINDING("alloc", Alloc);

Napi::Value MapFile(const Napi::CallbackInfo& info) {
  if (info.Length() < 1 || !info[0].IsString()) throw Napi::TypeError::New(info.Env(), "mapFile: path must be a string");
  return StorageRef::Wrap(info.Env(), Storage::map_file(info[0].As<Napi::String>().Utf8Value()));
}
NIBBLE_BINDING("mapFile", MapFile);

// fromBytes(view: ArrayBufferView, device) -> StorageRef holding a copy of the bytes.
Napi::Value FromBytes(const Napi::CallbackInfo& info) {
  if (info.Length() < 1 || !info[0].IsTypedArray())
    throw Napi::TypeError::New(info.Env(), "fromBytes: expected a TypedArray");
  Napi::TypedArray ta = info[0].As<Napi::TypedArray>();
  int device = info.Length() > 1 ? (int)int_arg(info, 1, "device") : -1;
  const char* src = static_cast<const char*>(ta.ArrayBuffer().Data()) + ta.ByteOffset();
  size_t n = ta.ByteLength();
  std::shared_ptr<Storage> s = alloc_on(info.Env(), device, n, false);
  if (device < 0) {
    if (n) std::memcpy(s->data, src, n);
  } else {
    cuda_api::copy_host_to_device(s->data, src, n, device);
  }
  return StorageRef::Wrap(info.Env(), s);
}
NIBBLE_BINDING("fromBytes", FromBytes);

void copy_out(const TensorArg& t, void* dst) {
  if (t.on_cpu())
    std::memcpy(dst, t.ptr(), t.nbytes());
  else
    cuda_api::copy_device_to_host(dst, t.ptr(), t.nbytes(), t.device());
}

class ReadWorker : public Napi::AsyncWorker {
 public:
  ReadWorker(Napi::Env env, TensorArg t, Napi::ArrayBuffer buf)
      : Napi::AsyncWorker(env, "nibble.read"), t_(std::move(t)), deferred_(Napi::Promise::Deferred::New(env)) {
    buf_ref_ = Napi::Persistent(buf);
    dst_ = buf.Data();
  }
  Napi::Promise promise() { return deferred_.Promise(); }
  void Execute() override {
    try {
      CpuStream::instance().sync();
      copy_out(t_, dst_);
    } catch (const std::exception& e) {
      SetError(e.what());
    }
  }
  void OnOK() override { deferred_.Resolve(buf_ref_.Value()); }
  void OnError(const Napi::Error& e) override { deferred_.Reject(e.Value()); }

 private:
  TensorArg t_;
  Napi::Promise::Deferred deferred_;
  Napi::Reference<Napi::ArrayBuffer> buf_ref_;
  void* dst_;
};

// read(tensor) -> Promise<ArrayBuffer>: waits for queued kernels off the JS thread.
Napi::Value Read(const Napi::CallbackInfo& info) {
  TensorArg t = tensor_arg(info, 0, "tensor");
  Napi::ArrayBuffer buf = Napi::ArrayBuffer::New(info.Env(), t.nbytes());
  auto* w = new ReadWorker(info.Env(), t, buf);
  Napi::Promise p = w->promise();
  w->Queue();
  return p;
}
NIBBLE_BINDING("read", Read);

Napi::Value ReadSync(const Napi::CallbackInfo& info) {
  TensorArg t = tensor_arg(info, 0, "tensor");
  CpuStream::instance().sync();
  Napi::ArrayBuffer buf = Napi::ArrayBuffer::New(info.Env(), t.nbytes());
  copy_out(t, buf.Data());
  return buf;
}
NIBBLE_BINDING("readSync", ReadSync);

// write(tensor, view): copies bytes into the tensor after pending kernels finish.
Napi::Value Write(const Napi::CallbackInfo& info) {
  TensorArg t = tensor_arg(info, 0, "tensor");
  if (info.Length() < 2 || !info[1].IsTypedArray()) throw Napi::TypeError::New(info.Env(), "write: expected a TypedArray");
  Napi::TypedArray ta = info[1].As<Napi::TypedArray>();
  if (ta.ByteLength() != t.nbytes())
    throw Napi::RangeError::New(info.Env(), "write: " + std::to_string(ta.ByteLength()) + " bytes given for " +
                                                t.describe() + " (" + std::to_string(t.nbytes()) + " bytes)");
  const char* src = static_cast<const char*>(ta.ArrayBuffer().Data()) + ta.ByteOffset();
  if (!CpuStream::instance().idle()) CpuStream::instance().sync();
  if (t.on_cpu())
    std::memcpy(t.ptr(), src, t.nbytes());
  else
    cuda_api::copy_host_to_device(t.ptr(), src, t.nbytes(), t.device());
  return info.Env().Undefined();
}
NIBBLE_BINDING("write", Write);

// copy(dst, src): same dtype and element count; any devices.
Napi::Value Copy(const Napi::CallbackInfo& info) {
  TensorArg dst = tensor_arg(info, 0, "dst"), src = tensor_arg(info, 1, "src");
  if (dst.dt != src.dt || dst.numel() != src.numel())
    throw std::invalid_argument("copy: " + src.describe() + " does not fit " + dst.describe());
  if (dst.on_cpu() && src.on_cpu()) {
    CpuStream::instance().enqueue([dst, src] { std::memcpy(dst.ptr(), src.ptr(), dst.nbytes()); });
  } else {
    CpuStream::instance().sync();
    if (dst.on_cpu())
      cuda_api::copy_device_to_host(dst.ptr(), src.ptr(), dst.nbytes(), src.device());
    else if (src.on_cpu())
      cuda_api::copy_host_to_device(dst.ptr(), src.ptr(), dst.nbytes(), dst.device());
    else if (dst.device() == src.device())
      cuda_api::copy_device_to_device(dst.ptr(), src.ptr(), dst.nbytes(), dst.device());
    else {
      std::vector<char> tmp(dst.nbytes());
      cuda_api::copy_device_to_host(tmp.data(), src.ptr(), tmp.size(), src.device());
      cuda_api::copy_host_to_device(dst.ptr(), tmp.data(), tmp.size(), dst.device());
    }
  }
  return info.Env().Undefined();
}
NIBBLE_BINDING("copy", Copy);

// cast(out, x): elementwise dtype conversion (round-to-nearest-even, as torch's .to()).
Napi::Value Cast(const Napi::CallbackInfo& info) {
  TensorArg out = tensor_arg(info, 0, "out"), x = tensor_arg(info, 1, "x");
  expect_numel("cast", "out", out, x.numel());
  expect_same_device("cast", out, x);
  if (!x.on_cpu()) {
    cuda_cast::cast(out.ptr(), out.dt, x.ptr(), x.dt, x.numel(), x.device());
    return info.Env().Undefined();
  }
  bool ref = info.Length() > 2 && info[2].ToBoolean();
  CpuStream::instance().enqueue([out, x, ref] {
    (ref ? cpu::convert_ref : cpu::convert)(out.ptr(), out.dt, x.ptr(), x.dt, x.numel());
  });
  return info.Env().Undefined();
}
NIBBLE_BINDING("cast", Cast);

// transpose2d(out[C,R], x[R,C]): any dtype; used to turn Conv1D [in,out] weights into
// Linear [out,in] orientation at load time.
Napi::Value Transpose2d(const Napi::CallbackInfo& info) {
  TensorArg out = tensor_arg(info, 0, "out"), x = tensor_arg(info, 1, "x");
  expect_rank("transpose2d", "x", x, 2);
  expect_rank("transpose2d", "out", out, 2);
  if (out.dt != x.dt || out.dim(0) != x.dim(1) || out.dim(1) != x.dim(0))
    throw std::invalid_argument("transpose2d: " + out.describe() + " is not the transpose of " + x.describe());
  expect_cpu("transpose2d", x);
  expect_cpu("transpose2d", out);
  CpuStream::instance().enqueue([out, x] {
    const int64_t R = x.dim(0), C = x.dim(1);
    const size_t es = dtype_size(x.dt);
    const char* s = x.ptr<char>();
    char* d = out.ptr<char>();
    parallel_for(C, 16, [&](int64_t c0, int64_t c1) {
      for (int64_t c = c0; c < c1; c++)
        for (int64_t r = 0; r < R; r++) std::memcpy(d + (c * R + r) * es, s + (r * C + c) * es, es);
    });
  });
  return info.Env().Undefined();
}
NIBBLE_BINDING("transpose2d", Transpose2d);

class SyncWorker : public Napi::AsyncWorker {
 public:
  explicit SyncWorker(Napi::Env env) : Napi::AsyncWorker(env, "nibble.sync"), d_(Napi::Promise::Deferred::New(env)) {}
  Napi::Promise promise() { return d_.Promise(); }
  void Execute() override {
    try {
      CpuStream::instance().sync();
      gpt2_cuda::synchronize_all();  // GPU kernels are queued on CUDA streams, not the CPU queue
    } catch (const std::exception& e) {
      SetError(e.what());
    }
  }
  void OnOK() override { d_.Resolve(Env().Undefined()); }
  void OnError(const Napi::Error& e) override { d_.Reject(e.Value()); }

 private:
  Napi::Promise::Deferred d_;
};

Napi::Value Sync(const Napi::CallbackInfo& info) {
  auto* w = new SyncWorker(info.Env());
  Napi::Promise p = w->promise();
  w->Queue();
  return p;
}
NIBBLE_BINDING("sync", Sync);

Napi::Value SyncBlocking(const Napi::CallbackInfo& info) {
  CpuStream::instance().sync();
  gpt2_cuda::synchronize_all();
  return info.Env().Undefined();
}
NIBBLE_BINDING("syncBlocking", SyncBlocking);

Napi::Value Info(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env);
  o.Set("cudaCompiled", cuda_api::compiled_with_cuda());
  int n = cuda_api::device_count();
  o.Set("cudaDeviceCount", n);
  o.Set("cudaUnavailableReason", cuda_api::unavailable_reason());
  o.Set("cudaDriverVersion", cuda_api::driver_version());
  Napi::Array gpus = Napi::Array::New(env);
  for (int i = 0; i < n; i++) {
    Napi::Object g = Napi::Object::New(env);
    g.Set("index", i);
    g.Set("name", cuda_api::device_name(i));
    g.Set("totalMemory", (double)cuda_api::device_total_memory(i));
    gpus.Set(i, g);
  }
  o.Set("gpus", gpus);
  o.Set("cpuFeatures", cpu::features_string());
  o.Set("threads", num_threads());
  o.Set("hostCacheBytes", (double)host_cache_bytes());
  return o;
}
NIBBLE_BINDING("info", Info);

Napi::Value SetNumThreads(const Napi::CallbackInfo& info) {
  int n = (int)int_arg(info, 0, "n");
  CpuStream::instance().sync();
  set_num_threads(n);
  return info.Env().Undefined();
}
NIBBLE_BINDING("setNumThreads", SetNumThreads);

Napi::Value CudaProbe(const Napi::CallbackInfo& info) {
  int n = (int)int_arg(info, 0, "n");
  int device = info.Length() > 1 ? (int)int_arg(info, 1, "device") : 0;
  Napi::Float32Array out = Napi::Float32Array::New(info.Env(), n);
  cuda_api::probe_kernel(out.Data(), n, 2.0f, 1.0f, device);
  return out;
}
NIBBLE_BINDING("cudaProbe", CudaProbe);

}  // namespace
}  // namespace nibble
