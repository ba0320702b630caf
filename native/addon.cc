// Entry point of the Node addon: exports every binding registered by native/bindings/*.cc.
#include <napi.h>

#if defined(__unix__) || defined(__APPLE__)
#include <dlfcn.h>
#endif

#include "bindings/registry.h"

namespace nibble {
std::vector<BindingEntry>& binding_registry() {
  static std::vector<BindingEntry> r;
  return r;
}
std::vector<InitHook>& init_hooks() {
  static std::vector<InitHook> h;
  return h;
}
}  // namespace nibble

// The addon starts threads that outlive any one JS environment (the CPU stream's dispatcher,
// the kernel thread pool). Node unloads an addon when the last environment that loaded it
// closes, e.g. the only worker_threads Worker using nibble exits; those threads would then run
// unmapped code (a segfault). So the first load pins the library for the process's lifetime.
static void pin_library() {
#if defined(__unix__) || defined(__APPLE__)
  static bool pinned = [] {
    Dl_info info;
    if (dladdr(reinterpret_cast<void*>(&pin_library), &info) && info.dli_fname)
      return dlopen(info.dli_fname, RTLD_NOW | RTLD_NOLOAD | RTLD_NODELETE) != nullptr;
    return false;
  }();
  (void)pinned;
#endif
}

static Napi::Object Init(Napi::Env env, Napi::Object exports) {
  pin_library();
  for (auto hook : nibble::init_hooks()) hook(env, exports);
  for (const auto& e : nibble::binding_registry()) exports.Set(e.name, Napi::Function::New(env, e.fn, e.name));
  return exports;
}

NODE_API_MODULE(nibble, Init)
