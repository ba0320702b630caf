// `nibble info`: the facts it reports come from the loaded addon, the driver probe and the
// Hub settings; the token is reported as set, never shown.
import { afterEach, describe, expect, it, vi } from 'vitest';
import { collectInfo, command } from '../lib/cli/commands/info.js';
import { nativeLoadInfo } from '../lib/native.js';

const saved = { HF_HUB_CACHE: process.env.HF_HUB_CACHE, HF_TOKEN: process.env.HF_TOKEN };
afterEach(() => {
  for (const [k, v] of Object.entries(saved)) if (v === undefined) delete process.env[k]; else process.env[k] = v;
  vi.restoreAllMocks();
});

async function runInfo(argv: string[]): Promise<string> {
  let out = '';
  vi.spyOn(process.stdout, 'write').mockImplementation((chunk) => { out += String(chunk); return true; });
  expect(await command.run(argv)).toBe(0);
  vi.restoreAllMocks();
  return out;
}

describe('nibble info', () => {
  it('reports the loaded binary, CPU features, CUDA state and the cache folder', async () => {
    process.env.HF_HUB_CACHE = '/tmp/some-hf-cache';
    process.env.HF_TOKEN = 'hf_infoTestSecret_123';
    const info = collectInfo();
    expect(info.binary.variant).toBe(nativeLoadInfo().variant);
    expect(info.binary.path).toMatch(/\.node$/);
    expect(info.cpu.threads).toBeGreaterThan(0);
    expect(Array.isArray(info.cpu.features)).toBe(true);
    expect(info.cuda.gpus.length).toBe(info.cuda.deviceCount);
    if (!info.cuda.compiledIn) expect(info.cuda.unavailableReason).toMatch(/without CUDA/);
    expect(info.hub.cacheDir).toBe('/tmp/some-hf-cache');
    expect(info.hub.token).toBe('set');

    const text = await runInfo([]);
    expect(text).toMatch(/^nibble-llm \d+\.\d+\.\d+ on Node\.js v\d+/);
    expect(text).toMatch(/binary {4}(CUDA prebuild|CPU prebuild|local build|NIBBLE_ADDON): .*\.node\n {2}why {5}\S/);
    expect(text).toMatch(/Hub cache \/tmp\/some-hf-cache/);
    expect(text).toMatch(/AVX-512 (yes|no), VNNI (yes|no)/);
    const json = JSON.parse(await runInfo(['--json']));
    expect(json.hub.cacheDir).toBe('/tmp/some-hf-cache');
    expect(text + JSON.stringify(json)).not.toContain('hf_infoTestSecret_123');
  });

  it('rejects unknown options and arguments', async () => {
    await expect(command.run(['--bogus'])).rejects.toThrow(/info: Unknown option '--bogus'/);
    await expect(command.run(['extra'])).rejects.toThrow(/info: unexpected argument 'extra'/);
  });
});
