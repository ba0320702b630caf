// Benchmark probes (bench/ only): host memory bandwidth measured in the same process.
#include <napi.h>

#include "bindings/registry.h"
#include "bindings/tensor_arg.h"
#include "core/stream.h"
#include "cpu/membench.h"

namespace nibble {
namespace {

Napi::Value MemoryBandwidth(const Napi::CallbackInfo& info) {
  size_t nbytes = (size_t)int_arg(info, 0, "nbytes");
  int iters = (int)int_arg(info, 1, "iters");
  CpuStream::instance().sync();
  Napi::Object o = Napi::Object::New(info.Env());
  o.Set("readBytesPerSec", cpu::read_bandwidth(nbytes, iters));
  o.Set("copyBytesPerSec", cpu::copy_bandwidth(nbytes, iters));
  return o;
}
NIBBLE_BINDING("memoryBandwidth", MemoryBandwidth);

}  // namespace
}  // namespace nibble
