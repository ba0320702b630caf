#!/usr/bin/env node
// Builds the binaries shipped in the npm package, with prebuildify and cmake-js:
//   prebuilds/<platform>-<arch>/nibble-cpu.<libc>.node   (-DNIBBLE_CUDA=OFF)
//   prebuilds/<platform>-<arch>/nibble-cuda.<libc>.node  (static CUDA runtime, the default
//       archs of CMakeLists.txt: sm_80..sm_90 + PTX), only when nvcc is found.
// Each variant builds in its own folder under build/ (build/prebuild-<variant>, a view of the
// sources through symlinks) so a developer's build/Release is never touched.
// Usage: node scripts/prebuild.mjs [--cpu-only] ; NIBBLE_CUDA_ARCHS=... overrides the archs.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { delimiter, dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const cpuOnly = process.argv.includes('--cpu-only');
const prebuildify = join(root, 'node_modules', 'prebuildify', 'bin.js');
const shim = join(root, 'scripts', 'cmake-js-as-node-gyp.mjs');

function findNvcc() {
  const candidates = [process.env.CUDACXX, ...(process.env.PATH ?? '').split(delimiter).map((d) => d && join(d, 'nvcc')), '/usr/local/cuda/bin/nvcc'];
  return candidates.find((p) => p && existsSync(p) && statSync(p).isFile());
}

function stage(variant) {
  const dir = join(root, 'build', `prebuild-${variant}`);
  mkdirSync(dir, { recursive: true });
  for (const name of ['CMakeLists.txt', 'native', 'node_modules', 'package.json']) {
    const link = join(dir, name);
    if (!existsSync(link)) symlinkSync(join(root, name), link);
  }
  return dir;
}

function build(variant, cmakeArgs, envSwitches) {
  const cwd = stage(variant);
  // cmake-js `compile` reuses an existing CMake cache, which would keep old options (archs):
  // start the variant's build folder afresh whenever its options change.
  const config = JSON.stringify({ cmakeArgs, envSwitches, archs: process.env.NIBBLE_CUDA_ARCHS ?? null });
  const stamp = join(cwd, 'options.json');
  if (!existsSync(stamp) || readFileSync(stamp, 'utf8') !== config) {
    rmSync(join(cwd, 'build'), { recursive: true, force: true });
    writeFileSync(stamp, config);
  }
  console.log(`\n== prebuild ${variant}: cmake-js ${cmakeArgs.join(' ')}`);
  const r = spawnSync(process.execPath, [prebuildify, '--napi', '--strip', '--tag-libc', '--name', `nibble-${variant}`,
    '--node-gyp', shim, '--cwd', cwd, '--out', root], { stdio: 'inherit', env: { ...process.env, ...envSwitches, NIBBLE_CMAKE_ARGS: cmakeArgs.join(' ') } });
  if (r.status !== 0) throw new Error(`prebuild of the ${variant} variant failed (exit ${r.status})`);
}

/** The CUDA binary must not need libcudart.so: users have only the driver. */
function checkNoCudartDependency(file) {
  const r = spawnSync('readelf', ['-d', file], { encoding: 'utf8' });
  if (r.status !== 0) {
    console.warn(`(readelf unavailable: the dynamic dependencies of ${file} were not checked)`);
    return;
  }
  const needed = [...r.stdout.matchAll(/\(NEEDED\).*\[(.+)\]/g)].map((m) => m[1]);
  const bad = needed.filter((n) => /^lib(cudart|cublas|cublasLt|cusparse|nvrtc)\b/.test(n));
  if (bad.length) throw new Error(`${file} depends on ${bad.join(', ')}: the CUDA runtime must be linked statically`);
  console.log(`${file}: needs ${needed.join(', ')}`);
}

const platformDir = join(root, 'prebuilds', `${process.platform}-${process.arch}`);
rmSync(platformDir, { recursive: true, force: true });
// CMakeLists.txt lets $NIBBLE_CUDA override -DNIBBLE_CUDA, so each variant sets both.
build('cpu', ['--CDNIBBLE_CUDA=OFF'], { NIBBLE_CUDA: 'OFF' });
const nvcc = cpuOnly ? undefined : findNvcc();
if (nvcc) {
  console.log(`\nCUDA archs: ${process.env.NIBBLE_CUDA_ARCHS ?? 'the CMakeLists.txt default (sm_80, 86, 89, 90 + PTX)'}`);
  build('cuda', ['--CDNIBBLE_CUDA=ON', `--CDCMAKE_CUDA_COMPILER=${nvcc}`], { NIBBLE_CUDA: 'ON' });
  const libc = existsSync('/etc/alpine-release') ? 'musl' : 'glibc';
  checkNoCudartDependency(join(platformDir, `nibble-cuda.${libc}.node`));
} else {
  console.log(cpuOnly ? '\n(--cpu-only: CUDA variant skipped)' : '\n(no nvcc found: CUDA variant skipped)');
}
console.log(`\nprebuilds: ${platformDir}`);
