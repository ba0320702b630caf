// Entry point of the Node addon: exports every binding registered by native/bindings/*.cc.
#include <napi.h>

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

static Napi::Object Init(Napi::Env env, Napi::Object exports) {
  for (auto hook : nibble::init_hooks()) hook(env, exports);
  for (const auto& e : nibble::binding_registry()) exports.Set(e.name, Napi::Function::New(env, e.fn, e.name));
  return exports;
}

NODE_API_MODULE(nibble, Init)
