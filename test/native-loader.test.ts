// The addon loader's choice between NIBBLE_ADDON, a local build and the CPU/CUDA prebuilds,
// with the file system and the driver probe faked; then one real load of a broken CUDA
// binary next to a working CPU one.
import { copyFileSync, existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import type { NativeBinding } from '../binding.js';
import type { DriverProbe } from '../lib/cuda-driver.js';
import { probeCudaDriver } from '../lib/cuda-driver.js';
import { findPrebuilds, loadAddon, type LoadOptions } from '../lib/native.js';
import { packageRoot } from '../lib/paths.js';
import { tempDir } from './helpers/tmp.js';

const tmp = tempDir('nibble-loader-');
let n = 0;

const GPU: DriverProbe = { usable: true, library: '/usr/lib/x86_64-linux-gnu/libcuda.so.1', devices: ['/dev/nvidia0'], summary: 'NVIDIA driver found (fake) with 1 GPU device node(s)' };
const NO_GPU: DriverProbe = { usable: false, devices: [], summary: 'no NVIDIA driver library (libcuda.so.1) found' };

/** A package root holding the given files (empty), and loader options whose `load` records paths. */
function fakeRoot(files: string[], over: Partial<LoadOptions> & { fail?: RegExp } = {}) {
  const root = join(tmp, `root${n++}`);
  for (const f of files) {
    mkdirSync(join(root, f, '..'), { recursive: true });
    writeFileSync(join(root, f), '');
  }
  const loads: string[] = [];
  const warnings: string[] = [];
  const opts: LoadOptions = {
    root,
    env: {},
    platform: 'linux',
    arch: 'x64',
    libc: 'glibc',
    probe: () => GPU,
    load: (p) => {
      loads.push(p.slice(root.length + 1));
      if (over.fail?.test(p)) throw new Error(`dlopen failed: ${p.split('/').pop()}: cannot open shared object file`);
      return { tag: p } as unknown as NativeBinding;
    },
    warn: (m) => warnings.push(m),
    ...over,
  };
  return { root, opts, loads, warnings };
}

const CPU = 'prebuilds/linux-x64/nibble-cpu.glibc.node';
const CUDA = 'prebuilds/linux-x64/nibble-cuda.glibc.node';

describe('native loader: choice of binary', () => {
  it('picks the CUDA prebuild when a driver and a GPU are present', () => {
    const { opts, loads, warnings } = fakeRoot([CPU, CUDA]);
    const { info } = loadAddon(opts);
    expect(info.variant).toBe('cuda');
    expect(info.reason).toMatch(/NVIDIA driver found/);
    expect(loads).toEqual([CUDA]);
    expect(warnings).toEqual([]);
  });

  it('picks the CPU prebuild without a driver, and never touches the CUDA one', () => {
    const { opts, loads } = fakeRoot([CPU, CUDA], { probe: () => NO_GPU });
    const { info } = loadAddon(opts);
    expect(info).toMatchObject({ variant: 'cpu', reason: 'no NVIDIA driver library (libcuda.so.1) found' });
    expect(loads).toEqual([CPU]);
  });

  it('NIBBLE_DEVICE=cpu forces the CPU prebuild without probing', () => {
    const { opts, loads } = fakeRoot([CPU, CUDA], { env: { NIBBLE_DEVICE: 'cpu' }, probe: () => { throw new Error('must not probe'); } });
    expect(loadAddon(opts).info).toMatchObject({ variant: 'cpu', reason: 'NIBBLE_DEVICE=cpu' });
    expect(loads).toEqual([CPU]);
  });

  it('falls back to CPU with exactly one warning when the CUDA binary fails to load', () => {
    const { opts, loads, warnings } = fakeRoot([CPU, CUDA], { fail: /cuda/ });
    const { info } = loadAddon(opts);
    expect(info.variant).toBe('cpu');
    expect(loads).toEqual([CUDA, CPU]);
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toMatch(/CUDA build failed to load \(dlopen failed.*\); using the CPU build.*NIBBLE_DEVICE=cpu/);
    expect(info.warning).toBe(warnings[0]);
    expect(info.tried.some((t) => t.includes('nibble-cuda'))).toBe(true);
  });

  it('NIBBLE_DEVICE=cuda makes a CUDA load failure an error instead of a fallback', () => {
    const { opts } = fakeRoot([CPU, CUDA], { env: { NIBBLE_DEVICE: 'cuda' }, fail: /cuda/ });
    expect(() => loadAddon(opts)).toThrow(/NIBBLE_DEVICE=cuda but the CUDA build could not be loaded/);
    const none = fakeRoot([CPU], { env: { NIBBLE_DEVICE: 'cuda:0' } });
    expect(() => loadAddon(none.opts)).toThrow(/no CUDA build for linux-x64/);
  });

  it('uses the CPU prebuild, saying why, when a GPU is present but no CUDA prebuild ships', () => {
    const { opts } = fakeRoot([CPU]);
    expect(loadAddon(opts).info.reason).toMatch(/NVIDIA driver found.*but there is no CUDA prebuild for linux-x64/);
  });

  it('prefers a local build over prebuilds, and falls through when it fails', () => {
    const local = 'build/Release/nibble.node';
    const ok = fakeRoot([local, CPU, CUDA]);
    expect(loadAddon(ok.opts).info.variant).toBe('local');
    expect(ok.loads).toEqual([local]);
    const broken = fakeRoot([local, CPU], { fail: /build\/Release/, probe: () => NO_GPU });
    const { info } = loadAddon(broken.opts);
    expect(info.variant).toBe('cpu');
    expect(info.tried[0]).toMatch(/build\/Release\/nibble\.node: dlopen failed/);
  });

  it('NIBBLE_ADDON wins, and a bad one is an error naming it', () => {
    const { opts, loads } = fakeRoot([CPU], { env: { NIBBLE_ADDON: '/opt/x/nibble.node' } });
    expect(loadAddon(opts).info).toMatchObject({ variant: 'explicit', path: '/opt/x/nibble.node' });
    expect(loads).toHaveLength(1);
    const bad = fakeRoot([CPU], { env: { NIBBLE_ADDON: '/opt/x/nibble.node' }, fail: /opt/ });
    expect(() => loadAddon(bad.opts)).toThrow(/NIBBLE_ADDON=\/opt\/x\/nibble\.node could not be loaded: dlopen failed/);
  });

  it('with nothing to load, lists every path tried and says how to build from source', () => {
    const { opts } = fakeRoot([], { probe: () => NO_GPU });
    let msg = '';
    try {
      loadAddon(opts);
    } catch (e) {
      msg = (e as Error).message;
    }
    expect(msg).toMatch(/could not load nibble's native addon/);
    expect(msg).toMatch(/build\/Release\/nibble\.node: no local build/);
    expect(msg).toMatch(/prebuilds\/linux-x64: no CPU prebuild for linux-x64 \(glibc\)/);
    expect(msg).toMatch(/npm rebuild nibble-llm/);
  });

  it('rejects an unknown NIBBLE_DEVICE', () => {
    const { opts } = fakeRoot([CPU], { env: { NIBBLE_DEVICE: 'tpu' } });
    expect(() => loadAddon(opts)).toThrow(/NIBBLE_DEVICE must be 'cpu', 'cuda' or 'auto', got 'tpu'/);
  });

  it('matches prebuild names by variant and libc, ignoring other files', () => {
    const { root } = fakeRoot([CPU, 'prebuilds/linux-x64/nibble-cuda.musl.node', 'prebuilds/linux-x64/other.node', 'prebuilds/linux-x64/nibble-cpu.napi.musl.node']);
    const dir = join(root, 'prebuilds/linux-x64');
    expect(findPrebuilds(dir, 'glibc')).toEqual({ cpu: join(dir, 'nibble-cpu.glibc.node') });
    expect(findPrebuilds(dir, 'musl')).toEqual({ cpu: join(dir, 'nibble-cpu.napi.musl.node'), cuda: join(dir, 'nibble-cuda.musl.node') });
    expect(findPrebuilds(join(root, 'nope'), 'glibc')).toEqual({});
  });

  it('the driver probe answers consistently on this machine', () => {
    const p = probeCudaDriver();
    expect(p.usable).toBe(!!p.library && p.devices.length > 0);
    expect(p.summary.length).toBeGreaterThan(10);
  });
});

describe('native loader: real binaries', () => {
  const built = process.env.NIBBLE_ADDON ?? join(packageRoot, 'build', 'Release', 'nibble.node');

  it.skipIf(!existsSync(built))('a corrupt CUDA binary falls back to a working CPU binary with one warning', () => {
    const { root, opts, warnings } = fakeRoot([]);
    mkdirSync(join(root, 'prebuilds/linux-x64'), { recursive: true });
    copyFileSync(built, join(root, CPU));
    writeFileSync(join(root, CUDA), Buffer.from('\x7fELF this is not a shared object'));
    const require = createRequire(import.meta.url);
    const { binding, info } = loadAddon({ ...opts, load: (p) => require(p) as NativeBinding });
    expect(info.variant).toBe('cpu');
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toMatch(/CUDA build failed to load/);
    // The fallback binary really works.
    expect(binding.info().threads).toBeGreaterThan(0);
  });
});
