#!/usr/bin/env bash
# Install nibble-llm as a new user would: pack the package (with its prebuilt binaries), install
# the tarball into a fresh project with no compiler on PATH, then generate with the CLI, from
# CommonJS and from ESM, and type-check a TypeScript example against the published types.
# Needs: node/npm, the repo's devDependencies (prebuildify, tsup, typescript), network or an npm
# cache for the package's dependencies. Cleans up after itself.
#   INSTALL_TEST_KEEP=1      keep the temporary project (its path is printed)
#   INSTALL_TEST_CUDA=1      also build the CUDA prebuild (when nvcc exists and no fresh prebuilds are there)
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
work=$(mktemp -d "${TMPDIR:-/tmp}/nibble-install-test.XXXXXX")
platform_dir="prebuilds/$(node -p 'process.platform + "-" + process.arch')"
made_prebuilds=0

cleanup() {
  if [ "${INSTALL_TEST_KEEP:-0}" = 1 ]; then echo "kept $work"; else rm -rf "$work"; fi
  # Prebuilds made only for this test must not shadow the next source build of this checkout
  # (npm install skips the source build when a prebuild matches).
  if [ "$made_prebuilds" = 1 ]; then rm -rf "$repo/prebuilds"; fi
}
trap cleanup EXIT

step() { printf '\n== %s\n' "$*"; }
fail() { echo "install-test: FAIL: $*" >&2; exit 1; }

step "prebuilt binaries"
# Reuse prebuilds newer than every native source (e.g. from `npm run build:prebuilds`, which
# also makes the CUDA variant); otherwise build them here: the CPU variant only, unless
# INSTALL_TEST_CUDA=1 (the CUDA one takes minutes on a small machine).
fresh=""
cpu_prebuild=$(ls "$platform_dir"/nibble-cpu.*.node 2>/dev/null | head -n 1 || true)
if [ -n "$cpu_prebuild" ] && [ -z "$(find native CMakeLists.txt -newer "$cpu_prebuild" -print -quit)" ]; then fresh=1; fi
if [ ! -d prebuilds ]; then made_prebuilds=1; fi
if [ -n "$fresh" ]; then
  echo "reusing $platform_dir (newer than native/ and CMakeLists.txt)"
elif [ "${INSTALL_TEST_CUDA:-0}" = 1 ]; then
  node scripts/prebuild.mjs
else
  node scripts/prebuild.mjs --cpu-only
fi
ls -l "$platform_dir"
ls "$platform_dir"/nibble-cpu.*.node >/dev/null || fail "no CPU prebuild in $platform_dir"

step "npm pack"
tarball=$(npm pack --silent --pack-destination "$work" | tail -n 1)
tarball="$work/$tarball"
[ -f "$tarball" ] || fail "npm pack produced no tarball"
listing=$(tar -tzf "$tarball")
for f in package/dist/index.js package/dist/index.cjs package/dist/index.d.ts package/dist/cli.js package/binding.d.ts \
         package/CMakeLists.txt package/models/fortune-gpt2/model.safetensors "package/$platform_dir/"; do
  grep -q "^$f" <<<"$listing" || fail "$f is missing from the tarball"
done
if grep -q '^package/build/' <<<"$listing"; then fail "the tarball ships a local build/ folder"; fi
echo "$(basename "$tarball"): $(du -h "$tarball" | cut -f1), $(wc -l <<<"$listing") files"

step "fresh project, no compiler on PATH"
app="$work/app"
mkdir -p "$app" "$work/bin"
# The user's commands run with a PATH holding only node, npm and a shell: no build tools.
for tool in node npm npx sh; do ln -s "$(command -v "$tool")" "$work/bin/$tool"; done
user() { env PATH="$work/bin" "$@"; }
for tool in cc gcc g++ c++ clang cmake make ninja nvcc; do
  if user /bin/sh -c "command -v $tool" >/dev/null 2>&1; then fail "$tool is still on the user's PATH"; fi
done
cd "$app"
cat > package.json <<'EOF'
{ "name": "nibble-install-test-app", "version": "1.0.0", "private": true }
EOF
user npm install --no-audit --no-fund --prefer-offline --loglevel=error "$tarball" typescript@5 @types/node@20
[ ! -e node_modules/nibble-llm/build ] || fail "installing built from source; the prebuild should have been used"

step "npx nibble info"
info=$(user npx --no-install nibble info)
echo "$info"
grep -Eq '^binary +(CPU|CUDA) prebuild: .*node_modules/nibble-llm/prebuilds/' <<<"$info" || fail "nibble info does not report a prebuilt binary"

step "npx nibble generate"
out=$(user npx --no-install nibble generate "Hello" --max-new-tokens 5)
echo "$out"
[ -n "$out" ] || fail "nibble generate printed nothing"

step "require() (CommonJS)"
cat > generate.cjs <<'EOF'
const { AutoModelForCausalLM, AutoTokenizer } = require('nibble-llm');
(async () => {
  const tokenizer = await AutoTokenizer.fromPretrained();
  const model = await AutoModelForCausalLM.fromPretrained();
  const ids = tokenizer.encode('Hello');
  const [row] = await model.generate(ids, { maxNewTokens: 5 });
  if (row.length !== ids.length + 5) throw new Error(`expected ${ids.length + 5} ids, got ${row.length}`);
  console.log('cjs:', JSON.stringify(tokenizer.decode(row)));
})().catch((e) => { console.error(e); process.exit(1); });
EOF
user node generate.cjs

step "import (ESM)"
cat > generate.mjs <<'EOF'
import { AutoModelForCausalLM, AutoTokenizer } from 'nibble-llm';
const tokenizer = await AutoTokenizer.fromPretrained();
const model = await AutoModelForCausalLM.fromPretrained();
const ids = tokenizer.encode('Hello');
const [row] = await model.generate(ids, { maxNewTokens: 5, doSample: true, seed: 1 });
if (row.length !== ids.length + 5) throw new Error(`expected ${ids.length + 5} ids, got ${row.length}`);
let streamed = '';
for await (const piece of model.stream(ids, { maxNewTokens: 3 })) streamed += piece.text;
console.log('esm:', JSON.stringify(tokenizer.decode(row)), 'stream:', JSON.stringify(streamed));
EOF
user node generate.mjs

step "tsc --noEmit over the public types"
cat > tsconfig.json <<'EOF'
{ "compilerOptions": { "target": "ES2022", "module": "NodeNext", "moduleResolution": "NodeNext", "strict": true,
  "noEmit": true, "types": ["node"] }, "files": ["example.mts"] }
EOF
cat > example.mts <<'EOF'
import { AutoModelForCausalLM, AutoTokenizer, Tensor, type GenerateOptions, type FromPretrainedOptions } from 'nibble-llm';

const load: FromPretrainedOptions = { deviceMap: 'cpu' };
const options: GenerateOptions = { maxNewTokens: 5, doSample: true, topP: 0.9, seed: 1 };
const tokenizer = await AutoTokenizer.fromPretrained();
const model = await AutoModelForCausalLM.fromPretrained(undefined, load);
const ids: number[] = tokenizer.encode('Hello');
const rows: number[][] = await model.generate(ids, options);
const text: string = tokenizer.decode(rows[0]!);
const t: Tensor = Tensor.from(new Float32Array([1, 2, 3, 4]), [2, 2], 'float32');
const shape: readonly number[] = t.shape;
console.log(text, shape);
EOF
user npx --no-install tsc -p tsconfig.json
echo "tsc: ok"

step "install test passed"
