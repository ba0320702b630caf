// Each bindings/*.cc file registers its functions with NIBBLE_BINDING(name, fn) at static
// initialisation; addon.cc exports whatever was registered. Adding an op never touches
// addon.cc.
#pragma once
#include <napi.h>

#include <vector>

namespace nibble {

using BindingFn = Napi::Value (*)(const Napi::CallbackInfo&);
struct BindingEntry {
  const char* name;
  BindingFn fn;
};
std::vector<BindingEntry>& binding_registry();
// Hooks that need the env at load time (e.g. defining a class).
using InitHook = void (*)(Napi::Env, Napi::Object);
std::vector<InitHook>& init_hooks();

struct BindingRegistrar {
  BindingRegistrar(const char* name, BindingFn fn) { binding_registry().push_back({name, fn}); }
};
struct InitRegistrar {
  explicit InitRegistrar(InitHook h) { init_hooks().push_back(h); }
};

}  // namespace nibble

#define NIBBLE_CAT2(a, b) a##b
#define NIBBLE_CAT(a, b) NIBBLE_CAT2(a, b)
#define NIBBLE_BINDING(name, fn) static ::nibble::BindingRegistrar NIBBLE_CAT(nibble_reg_, __LINE__)(name, fn)
#define NIBBLE_INIT_HOOK(fn) static ::nibble::InitRegistrar NIBBLE_CAT(nibble_init_, __LINE__)(fn)
