import { copyFileSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { AutoModelForCausalLM } from '../lib/models/auto.js';
import { readSafetensors, writeSafetensors } from '../lib/io/safetensors.js';
import { Tensor } from '../lib/tensor.js';
import { tempDir } from './helpers/tmp.js';

const TINY = 'test/fixtures/tiny-random-gpt2';
const tmp = tempDir();

/** A copy of tiny-random-gpt2 with its tensors and config edited by `edit`. */
async function variant(name: string, edit: (t: Map<string, Tensor>, cfg: Record<string, unknown>) => void): Promise<string> {
  const dir = join(tmp, name);
  mkdirSync(dir);
  const { tensors } = readSafetensors(join(TINY, 'model.safetensors'));
  const cfg = JSON.parse(readFileSync(join(TINY, 'config.json'), 'utf8'));
  edit(tensors, cfg);
  await writeSafetensors(join(dir, 'model.safetensors'), tensors, { format: 'pt' });
  writeFileSync(join(dir, 'config.json'), JSON.stringify(cfg));
  return dir;
}

describe('AutoModelForCausalLM on the CPU', () => {
  it('loads the embedded default model with its tokenizer and generation config', async () => {
    const model = await AutoModelForCausalLM.fromPretrained();
    expect(model.config.nLayer).toBe(6);
    expect(model.tokenizer?.encode('The future of AI is')).toEqual([464, 2003, 286, 9552, 318]);
    const [row] = await model.generate('The future of AI is', { maxNewTokens: 12 });
    expect(row!.slice(0, 7)).toEqual([464, 2003, 286, 9552, 318, 257, 1049]);
    expect(row).toHaveLength(17);
    model.dispose();
  });

  it('seeded sampling is reproducible; topK=1 and a tiny topP equal greedy', async () => {
    const model = await AutoModelForCausalLM.fromPretrained();
    const prompt = model.tokenizer!.encode('A fortune:');
    const greedy = await model.generate(prompt, { maxNewTokens: 20 });
    const s1 = await model.generate(prompt, { maxNewTokens: 20, doSample: true, seed: 7 });
    const s2 = await model.generate(prompt, { maxNewTokens: 20, doSample: true, seed: 7 });
    const s3 = await model.generate(prompt, { maxNewTokens: 20, doSample: true, seed: 8 });
    expect(s1).toEqual(s2);
    expect(s1).not.toEqual(s3);
    expect(await model.generate(prompt, { maxNewTokens: 20, doSample: true, topK: 1, seed: 3 })).toEqual(greedy);
    expect(await model.generate(prompt, { maxNewTokens: 20, doSample: true, topP: 1e-6, seed: 3 })).toEqual(greedy);
    model.dispose();
  });

  it('a left-padded batch generates what each prompt generates alone', async () => {
    const model = await AutoModelForCausalLM.fromPretrained();
    const a = model.tokenizer!.encode('You will meet a tall dark stranger');
    const b = model.tokenizer!.encode('Never');
    const both = await model.generate([a, b], { maxNewTokens: 15 });
    expect(both[0]).toEqual((await model.generate(a, { maxNewTokens: 15 }))[0]);
    expect(both[1]).toEqual((await model.generate(b, { maxNewTokens: 15 }))[0]);
    model.dispose();
  });

  it('streams the same tokens generate returns, with text', async () => {
    const model = await AutoModelForCausalLM.fromPretrained();
    const ids = model.tokenizer!.encode('The future of AI is');
    const pieces = [];
    for await (const p of model.stream(ids, { maxNewTokens: 10 })) pieces.push(p);
    const [row] = await model.generate(ids, { maxNewTokens: 10 });
    expect(pieces.map((p) => p.token)).toEqual(row!.slice(ids.length));
    expect(pieces.map((p) => p.text).join('')).toBe(model.tokenizer!.decode(row!.slice(ids.length)));
    model.dispose();
  });

  it('keeps a 10 ms interval timer firing while generate runs', async () => {
    const model = await AutoModelForCausalLM.fromPretrained();
    let ticks = 0;
    const timer = setInterval(() => { ticks++; }, 10);
    const t0 = performance.now();
    // greedy from this prompt never reaches <|endoftext|>, so all 150 steps run
    const [row] = await model.generate('The future of AI is', { maxNewTokens: 150 });
    expect(row).toHaveLength(155);
    const ms = performance.now() - t0;
    clearInterval(timer);
    expect(ms).toBeGreaterThan(100); // long enough for the check to mean something
    expect(ticks).toBeGreaterThanOrEqual(Math.floor((ms / 10) * 0.5));
    model.dispose();
  });

  describe('bad input gives a clear error', () => {
    it('a missing tensor', async () => {
      const dir = await variant('missing', (t) => t.delete('transformer.h.1.mlp.c_fc.weight'));
      await expect(AutoModelForCausalLM.fromPretrained(dir)).rejects.toThrow(/missing tensor 'transformer\.h\.1\.mlp\.c_fc\.weight'/);
    });
    it('a tensor of the wrong shape', async () => {
      const dir = await variant('shape', (t) => t.set('transformer.h.0.attn.c_proj.weight', Tensor.zeros([64, 32])));
      await expect(AutoModelForCausalLM.fromPretrained(dir)).rejects.toThrow(/'transformer\.h\.0\.attn\.c_proj\.weight' has shape \[64, 32\], expected \[64, 64\]/);
    });
    it('a bad config', async () => {
      const dir = await variant('config', (_, c) => { c.n_head = 5; });
      await expect(AutoModelForCausalLM.fromPretrained(dir)).rejects.toThrow(/n_embd \(64\) must be divisible by n_head \(5\)/);
      const dir2 = await variant('config2', (_, c) => { c.model_type = 'llama'; });
      await expect(AutoModelForCausalLM.fromPretrained(dir2)).rejects.toThrow(/model_type "llama" is not supported/);
      const dir3 = join(tmp, 'config3');
      mkdirSync(dir3);
      copyFileSync(join(TINY, 'model.safetensors'), join(dir3, 'model.safetensors'));
      writeFileSync(join(dir3, 'config.json'), '{ "model_type": ');
      await expect(AutoModelForCausalLM.fromPretrained(dir3)).rejects.toThrow(/config\.json: not valid JSON/);
    });
    it('checkpoints without the transformer. prefix and with attn.bias buffers load the same', async () => {
      const dir = await variant('noprefix', (t) => {
        for (const [k, v] of [...t]) { t.delete(k); t.set(k.replace(/^transformer\./, ''), v); }
        t.set('h.0.attn.bias', Tensor.zeros([1, 1, 64, 64]));
        t.set('h.0.attn.masked_bias', Tensor.zeros([]));
      });
      const a = await AutoModelForCausalLM.fromPretrained(dir);
      const b = await AutoModelForCausalLM.fromPretrained(TINY);
      const la = await (await a.forward([[1, 2, 3]])).logits.toFloat32();
      const lb = await (await b.forward([[1, 2, 3]])).logits.toFloat32();
      expect(Array.from(la)).toEqual(Array.from(lb));
    });
    it('an unknown device and a folder that does not exist', async () => {
      await expect(AutoModelForCausalLM.fromPretrained(TINY, { deviceMap: 'tpu:0' })).rejects.toThrow(/unknown device "tpu:0"/);
      await expect(AutoModelForCausalLM.fromPretrained(join(tmp, 'nope'))).rejects.toThrow(/nope/);
    });
    it('an empty prompt and a prompt too long for the context', async () => {
      const model = await AutoModelForCausalLM.fromPretrained(TINY);
      await expect(model.generate([], { maxNewTokens: 5 })).rejects.toThrow(/empty/);
      await expect(model.generate(new Array(60).fill(1), { maxNewTokens: 10 })).rejects.toThrow(/60.*10.*64|64.*60/);
      model.dispose();
    });
  });
});

describe('deviceMap', () => {
  it("'auto' means the CPU on a machine without a usable GPU; per-module maps are refused clearly", async () => {
    const { deviceFromMap } = await import('../lib/models/auto.js');
    const { native } = await import('../lib/native.js');
    expect(deviceFromMap('auto')).toBe(native().info().cudaDeviceCount > 0 ? 'cuda:0' : 'cpu');
    expect(deviceFromMap({ '': 'cuda:1' })).toBe('cuda:1');
    expect(() => deviceFromMap({ 'transformer.h.0': 'cpu', lm_head: 'cuda:0' })).toThrow(/per-module device maps are not supported yet/);
  });
});
