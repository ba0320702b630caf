// Loads the native addon once, choosing the binary:
//   1. NIBBLE_ADDON=/abs/path/nibble.node, when set (a second build folder, a GPU-host build);
//   2. a local build (build/Release/nibble.node): made by `npm rebuild`/cmake-js when no
//      prebuild matched or the user asked for a source build, and by developers; as with
//      node-gyp-build it wins over the prebuilds, so a fresh build is never shadowed by a stale one;
//   3. prebuilds/<platform>-<arch>/nibble-cuda.* when an NVIDIA driver and a GPU are present
//      (and NIBBLE_DEVICE is not 'cpu'); if it fails to load, one warning and then
//   4. prebuilds/<platform>-<arch>/nibble-cpu.*.
// The error, when nothing loads, lists every path tried and how to build from source.
import { existsSync, readdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join, resolve } from 'node:path';
import type { NativeBinding } from '../binding.js';
import { type DriverProbe, probeCudaDriver } from './cuda-driver.js';
import { packageRoot } from './paths.js';

export type AddonVariant = 'cuda' | 'cpu' | 'local' | 'explicit';

export interface NativeLoadInfo {
  variant: AddonVariant;
  path: string;
  /** Why this binary was chosen, in words. */
  reason: string;
  /** Binaries that were considered and not used, each with why. */
  tried: string[];
  /** Set when the CUDA binary failed to load and the CPU one was used instead. */
  warning?: string;
}

export interface LoadOptions {
  root: string;
  env: Record<string, string | undefined>;
  platform: string;
  arch: string;
  libc: 'glibc' | 'musl';
  probe: () => DriverProbe;
  load: (path: string) => NativeBinding;
  warn: (message: string) => void;
}

/** The prebuilt binaries for this platform, by variant (file names from scripts/prebuild.mjs). */
export function findPrebuilds(dir: string, libc: string): { cpu?: string; cuda?: string } {
  const found: { cpu?: string; cuda?: string } = {};
  let names: string[];
  try {
    names = readdirSync(dir).sort();
  } catch {
    return found;
  }
  for (const name of names) {
    const m = /^nibble-(cpu|cuda)(?:\.napi)?(?:\.(glibc|musl))?\.node$/.exec(name);
    if (!m || (m[2] && m[2] !== libc)) continue;
    found[m[1] as 'cpu' | 'cuda'] ??= join(dir, name);
  }
  return found;
}

const message = (err: unknown) => (err instanceof Error ? err.message : String(err)).split('\n')[0];

export function loadAddon(o: LoadOptions): { binding: NativeBinding; info: NativeLoadInfo } {
  const tried: string[] = [];
  const explicit = o.env.NIBBLE_ADDON;
  if (explicit) {
    const path = resolve(explicit);
    try {
      return { binding: o.load(path), info: { variant: 'explicit', path, reason: 'NIBBLE_ADDON names this file', tried } };
    } catch (err) {
      throw new Error(`NIBBLE_ADDON=${path} could not be loaded: ${message(err)}`);
    }
  }
  const device = (o.env.NIBBLE_DEVICE ?? '').trim().toLowerCase();
  if (device && device !== 'auto' && device !== 'cpu' && !/^cuda(:\d+)?$/.test(device))
    throw new Error(`NIBBLE_DEVICE must be 'cpu', 'cuda' or 'auto', got '${o.env.NIBBLE_DEVICE}'`);

  const local = join(o.root, 'build', 'Release', 'nibble.node');
  if (existsSync(local)) {
    try {
      return { binding: o.load(local), info: { variant: 'local', path: local, reason: 'a local build exists (build/Release); it takes precedence over prebuilds', tried } };
    } catch (err) {
      tried.push(`${local}: ${message(err)}`);
    }
  } else tried.push(`${local}: no local build`);

  const dir = join(o.root, 'prebuilds', `${o.platform}-${o.arch}`);
  const builds = findPrebuilds(dir, o.libc);
  let why: string;
  let wantCuda: boolean;
  if (device === 'cpu') {
    wantCuda = false;
    why = 'NIBBLE_DEVICE=cpu';
  } else if (device.startsWith('cuda')) {
    wantCuda = true;
    why = `NIBBLE_DEVICE=${device}`;
  } else {
    const probe = o.probe();
    wantCuda = probe.usable;
    why = probe.summary;
  }
  let warning: string | undefined;
  if (wantCuda && builds.cuda) {
    try {
      return { binding: o.load(builds.cuda), info: { variant: 'cuda', path: builds.cuda, reason: why, tried } };
    } catch (err) {
      tried.push(`${builds.cuda}: ${message(err)}`);
      if (device.startsWith('cuda')) throw new Error(`NIBBLE_DEVICE=${device} but the CUDA build could not be loaded: ${builds.cuda}: ${message(err)}`);
      warning = `nibble: the CUDA build failed to load (${message(err)}); using the CPU build, so no GPU will be used. Set NIBBLE_DEVICE=cpu to skip the CUDA build.`;
      o.warn(warning);
      why = `the CUDA build failed to load (${message(err)})`;
    }
  } else if (wantCuda) {
    tried.push(`${dir}: no CUDA prebuild for ${o.platform}-${o.arch} (${o.libc})`);
    if (device.startsWith('cuda')) throw new Error(`NIBBLE_DEVICE=${device} but this package has no CUDA build for ${o.platform}-${o.arch}; run \`npm rebuild nibble-llm\` with nvcc on PATH`);
    why += `, but there is no CUDA prebuild for ${o.platform}-${o.arch}`;
  }
  if (builds.cpu) {
    try {
      return { binding: o.load(builds.cpu), info: { variant: 'cpu', path: builds.cpu, reason: why, tried, warning } };
    } catch (err) {
      tried.push(`${builds.cpu}: ${message(err)}`);
    }
  } else tried.push(`${dir}: no CPU prebuild for ${o.platform}-${o.arch} (${o.libc})`);
  // The CUDA binary also runs on machines without a GPU: the last resort when the CPU one is missing.
  if (!wantCuda && builds.cuda) {
    try {
      return { binding: o.load(builds.cuda), info: { variant: 'cuda', path: builds.cuda, reason: `${why}; the CPU prebuild is missing, and the CUDA one also runs without a GPU`, tried, warning } };
    } catch (err) {
      tried.push(`${builds.cuda}: ${message(err)}`);
    }
  }
  throw new Error(
    `could not load nibble's native addon. Tried:\n${tried.map((t) => `  - ${t}`).join('\n')}\n` +
      'Run `npm rebuild nibble-llm` to build it from source (needs cmake and a C++ compiler; nvcc for CUDA; ' +
      'npm 11 runs it only after `npm install-scripts approve nibble-llm`), or set NIBBLE_ADDON=/path/to/nibble.node.',
  );
}

let loaded: { binding: NativeBinding; info: NativeLoadInfo } | undefined;

function defaults(): LoadOptions {
  const require = createRequire(import.meta.url);
  return {
    root: packageRoot,
    env: process.env,
    platform: process.platform,
    arch: process.arch,
    libc: existsSync('/etc/alpine-release') ? 'musl' : 'glibc',
    probe: probeCudaDriver,
    load: (path) => require(path) as NativeBinding,
    warn: (m) => process.emitWarning(m, { code: 'NIBBLE_CUDA_FALLBACK' }),
  };
}

export function native(): NativeBinding {
  loaded ??= loadAddon(defaults());
  return loaded.binding;
}

/** Which binary `native()` loaded and why (loads it if needed). */
export function nativeLoadInfo(): NativeLoadInfo {
  native();
  return loaded!.info;
}
