#!/usr/bin/env bash
# The CUDA prebuild as a user gets it, on a GPU machine with only the NVIDIA driver.
#   bash .ci/gpu-demo.sh pack   (here, with nvcc) build both prebuilds, npm pack, install the
#                               tarball into a fresh project with no compiler on PATH, and put
#                               that project plus this Node.js binary in .gpu/demo.tar.xz
#   bash .ci/gpu-demo.sh run    (on the GPU host, from the repo root with .gpu/ carried there)
#                               unpack to a temporary folder and, with no CUDA toolkit on PATH or
#                               the library path, run `nibble info` and `nibble generate` on cuda:0
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

case "${1:-}" in
pack)
  command -v nvcc >/dev/null || [ -x /usr/local/cuda/bin/nvcc ] || { echo "gpu-demo pack: nvcc not found: the CUDA prebuild needs it" >&2; exit 1; }
  work=$(mktemp -d "${TMPDIR:-/tmp}/nibble-gpu-demo.XXXXXX")
  trap 'rm -rf "$work"' EXIT
  node scripts/prebuild.mjs
  ls prebuilds/*/nibble-cuda.*.node >/dev/null
  tarball="$work/$(npm pack --silent --pack-destination "$work" | tail -n 1)"
  mkdir -p "$work/demo/app" "$work/demo/bin"
  cp "$(readlink -f "$(command -v node)")" "$work/demo/bin/node"
  # (Installing without a compiler is what .ci/install-test.sh checks; here it only must not build.)
  (cd "$work/demo/app" && echo '{ "name": "gpu-demo", "private": true }' > package.json &&
    npm install --no-audit --no-fund --prefer-offline --loglevel=error "$tarball")
  [ ! -e "$work/demo/app/node_modules/nibble-llm/build" ] || { echo "gpu-demo pack: the install built from source" >&2; exit 1; }
  mkdir -p .gpu
  # The embedded model (19 MB, barely compressible) travels to the GPU host anyway as a tracked
  # file of the repo, and the device's carry limit counts both: leave it out of the archive,
  # record its hash, and put the repo's identical copy back at run time.
  model=demo/app/node_modules/nibble-llm/models/fortune-gpt2/model.safetensors
  (cd "$work" && sha256sum "$model" > demo/model.sha256)
  tar -C "$work" --exclude="$model" -cJf .gpu/demo.tar.xz demo
  ls -lh .gpu/demo.tar.xz
  echo "now on the GPU host: bash .ci/gpu-demo.sh run   (carry .gpu)"
  ;;
run)
  [ -f .gpu/demo.tar.xz ] || { echo "gpu-demo run: .gpu/demo.tar.xz is missing: run 'bash .ci/gpu-demo.sh pack' first and carry .gpu" >&2; exit 1; }
  work=$(mktemp -d "${TMPDIR:-/tmp}/nibble-gpu-demo.XXXXXX")
  trap 'rm -rf "$work"' EXIT
  tar -C "$work" -xJf .gpu/demo.tar.xz
  if [ -f "$work/demo/model.sha256" ]; then
    cp "$repo/models/fortune-gpt2/model.safetensors" "$work/demo/app/node_modules/nibble-llm/models/fortune-gpt2/"
    (cd "$work" && sha256sum -c demo/model.sha256) || { echo "FAIL: the repo's model differs from the packed one" >&2; exit 1; }
  fi
  cd "$work/demo/app"
  addon=$(ls node_modules/nibble-llm/prebuilds/linux-x64/nibble-cuda.*.node)
  # Keep library folders the driver may live in (containers), drop any holding the CUDA runtime.
  libpath=""
  IFS=: read -ra dirs <<<"${LD_LIBRARY_PATH:-}"
  for d in "${dirs[@]}"; do
    [ -n "$d" ] || continue
    if compgen -G "$d/libcudart.so*" >/dev/null; then echo "dropping $d from LD_LIBRARY_PATH (CUDA toolkit)"; continue; fi
    libpath="${libpath:+$libpath:}$d"
  done
  clean_env=(env -i HOME="$HOME" PATH="$work/demo/bin:/usr/bin:/bin" LD_LIBRARY_PATH="$libpath")
  echo "== demo environment: nvcc $("${clean_env[@]}" sh -c 'command -v nvcc || echo absent'), LD_LIBRARY_PATH='$libpath'"
  echo "== libcudart visible to the loader: $(ldconfig -p 2>/dev/null | grep -c libcudart || true) entries in ld.so.cache"
  echo "== dynamic dependencies of $addon"
  ldd "$addon" | sed 's/^/  /'
  if ldd "$addon" | grep -q libcudart; then echo "FAIL: the CUDA prebuild needs libcudart" >&2; exit 1; fi
  echo "== nibble info"
  info=$("${clean_env[@]}" node node_modules/nibble-llm/dist/cli.js info)
  echo "$info"
  grep -q '^binary    CUDA prebuild' <<<"$info" || { echo "FAIL: the CUDA prebuild was not chosen (see 'why' above)" >&2; exit 1; }
  echo "== nibble generate --device cuda:0"
  "${clean_env[@]}" node node_modules/nibble-llm/dist/cli.js generate "The future of AI is" --max-new-tokens 40 --greedy --device cuda:0
  echo
  echo "== nibble generate --device cuda:0 --load-in-4bit"
  "${clean_env[@]}" node node_modules/nibble-llm/dist/cli.js generate "The future of AI is" --max-new-tokens 40 --greedy --device cuda:0 --load-in-4bit
  ;;
*)
  echo "usage: bash .ci/gpu-demo.sh pack|run" >&2
  exit 2
  ;;
esac
