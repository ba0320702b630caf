import { chmodSync, mkdirSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { readSafetensorsHeader } from '../lib/io/safetensors.js';
import { AutoModelForCausalLM } from '../lib/models/auto.js';
import { refMeta } from './helpers/refs.js';
import { tempDir } from './helpers/tmp.js';

const TINY = 'test/fixtures/tiny-random-gpt2';
const tmp = tempDir();

describe('getMemoryFootprint and savePretrained (unquantized)', () => {
  it('footprint equals transformers for tiny-random-gpt2 in float32', async () => {
    const model = await AutoModelForCausalLM.fromPretrained(TINY);
    expect(model.getMemoryFootprint()).toBe(refMeta['tiny.fp32'].footprint);
    expect(model.getMemoryFootprint()).toBe(672768);
    const half = await AutoModelForCausalLM.fromPretrained(TINY, { dtype: 'float16' });
    expect(half.getMemoryFootprint()).toBe(672768 / 2);
  });

  it('round-trips bit-exactly with the same keys, dtypes and shapes as the original', async () => {
    const model = await AutoModelForCausalLM.fromPretrained(TINY);
    const out = join(tmp, 'saved');
    await model.savePretrained(out);
    const orig = readSafetensorsHeader(join(TINY, 'model.safetensors')).tensors;
    const saved = readSafetensorsHeader(join(out, 'model.safetensors')).tensors;
    expect([...saved.keys()].sort()).toEqual([...orig.keys()].sort());
    for (const [k, i] of orig) {
      expect(saved.get(k)!.dtype).toBe(i.dtype);
      expect(saved.get(k)!.shape).toEqual(i.shape);
    }
    expect(JSON.parse(readFileSync(join(out, 'config.json'), 'utf8'))).toEqual(JSON.parse(readFileSync(join(TINY, 'config.json'), 'utf8')));
    const back = await AutoModelForCausalLM.fromPretrained(out);
    const a = await (await model.forward([[3, 1, 4, 1, 5]])).logits.toFloat32();
    const b = await (await back.forward([[3, 1, 4, 1, 5]])).logits.toFloat32();
    expect(Array.from(b)).toEqual(Array.from(a));
    expect(readdirSync(out).filter((f) => f.endsWith('.tmp'))).toEqual([]);
  });

  it('refuses a folder it cannot write, leaving nothing behind', async () => {
    if (process.getuid?.() === 0) {
      // root ignores permission bits: use a path below a regular file instead
      const model = await AutoModelForCausalLM.fromPretrained(TINY);
      await expect(model.savePretrained(join(TINY, 'config.json', 'sub'))).rejects.toThrow(/savePretrained: cannot write to .*config\.json\/sub/);
      return;
    }
    const ro = join(tmp, 'readonly');
    mkdirSync(ro);
    chmodSync(ro, 0o500);
    const model = await AutoModelForCausalLM.fromPretrained(TINY);
    await expect(model.savePretrained(ro)).rejects.toThrow(/cannot write to/);
    expect(readdirSync(ro)).toEqual([]);
  });
});
