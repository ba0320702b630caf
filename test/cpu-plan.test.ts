// The whole-forward CPU plan (native/cpu/gpt2_forward_cpu.cc) against the op-by-op path it
// replaces (NIBBLE_CPU_FUSED=0): the same kernels in the same order, so the logits must be the
// same bits, for every storage mode, batched and left-padded prompts, and decode steps.
import { afterEach, describe, expect, it } from 'vitest';
import { AutoModelForCausalLM } from '../lib/models/auto.js';
import { native } from '../lib/native.js';
import { Tensor } from '../lib/tensor.js';
import type { GPT2KVCache, GPT2LMHeadModel } from '../lib/models/gpt2.js';
import { BitsAndBytesConfig, type BitsAndBytesConfigOptions } from '../lib/quantization/bitsandbytes-config.js';

const TINY = 'test/fixtures/tiny-random-gpt2';

type Variant = [string, string | undefined, BitsAndBytesConfigOptions | null, { dtype?: 'float16' }];
const VARIANTS: Variant[] = [
  ['tiny float32', TINY, null, {}],
  ['tiny float16', TINY, null, { dtype: 'float16' }],
  ['tiny nf4 + double quant', TINY, { loadIn4bit: true, bnb4bitQuantType: 'nf4', bnb4bitUseDoubleQuant: true }, {}],
  ['tiny fp4', TINY, { loadIn4bit: true, bnb4bitQuantType: 'fp4' }, {}],
  ['tiny nf4, float16 compute', TINY, { loadIn4bit: true, bnb4bitQuantType: 'nf4', bnb4bitUseDoubleQuant: true, bnb4bitComputeDtype: 'float16' }, { dtype: 'float16' }],
  ['tiny nf4, float32 compute, float16 rest', TINY, { loadIn4bit: true, bnb4bitQuantType: 'nf4', bnb4bitUseDoubleQuant: true }, { dtype: 'float16' }],
  ['tiny int8 (threshold 6)', TINY, { loadIn8bit: true }, { dtype: 'float16' }],
  ['tiny int8, no outliers', TINY, { loadIn8bit: true, llmInt8Threshold: 0 }, { dtype: 'float16' }],
  ['tiny int8, float32 parameters', TINY, { loadIn8bit: true }, {}],
  ['fortune-gpt2 nf4', undefined, { loadIn4bit: true, bnb4bitQuantType: 'nf4', bnb4bitUseDoubleQuant: true }, { dtype: 'float16' }],
  ['fortune-gpt2 float32', undefined, null, {}],
];

async function load(dir: string | undefined, q: BitsAndBytesConfigOptions | null, opts: { dtype?: 'float16' }, fused: boolean) {
  const model = (await AutoModelForCausalLM.fromPretrained(dir, {
    noTokenizer: true,
    ...opts,
    ...(q ? { quantizationConfig: new BitsAndBytesConfig(q) } : {}),
  })) as GPT2LMHeadModel;
  // The plan is made (or not) at the first forward, reading the switch then.
  process.env.NIBBLE_CPU_FUSED = fused ? '1' : '0';
  try {
    const out = await model.forward([[1]]);
    await out.logits.data();
    out.logits.dispose();
    out.pastKeyValues.dispose();
  } finally {
    delete process.env.NIBBLE_CPU_FUSED;
  }
  return model;
}

const usesPlan = (m: GPT2LMHeadModel) => !!(m as unknown as { plan: unknown }).plan;

/** Prefill of two left-padded rows, then three greedy decode steps; every step's logits. */
async function run(model: GPT2LMHeadModel, V: number, lastTokenOnly: boolean): Promise<Float32Array[]> {
  const ids = [[0, 0, 11, 12, 13, 14], [21, 22, 23, 24, 25, 26]].map((r) => r.map((v) => v % V));
  const mask = [[0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]];
  const steps: Float32Array[] = [];
  let out = await model.forward(ids, { attentionMask: mask, lastTokenOnly, cacheCapacity: 12 });
  let cache = out.pastKeyValues as GPT2KVCache;
  steps.push(await out.logits.toFloat32());
  for (let s = 0; s < 3; s++) {
    const last = steps[steps.length - 1]!;
    const rows = last.length / V;
    const next = [0, 1].map((b) => {
      const row = last.subarray((b * rows + rows - 1) * V, (b * rows + rows) * V);
      let best = 0;
      for (let v = 1; v < V; v++) if (row[v]! > row[best]!) best = v;
      return [best];
    });
    out.logits.dispose();
    out = await model.forward(next, { pastKeyValues: cache, lastTokenOnly });
    cache = out.pastKeyValues as GPT2KVCache;
    steps.push(await out.logits.toFloat32());
  }
  out.logits.dispose();
  cache.dispose();
  return steps;
}

const bits = (a: Float32Array) => Buffer.from(a.buffer, a.byteOffset, a.byteLength);

describe('whole-forward CPU plan = op-by-op path, bit for bit', () => {
  const opened: GPT2LMHeadModel[] = [];
  afterEach(() => {
    for (const m of opened.splice(0)) m.dispose();
  });
  for (const [name, dir, q, opts] of VARIANTS)
    it(name, async () => {
      const fused = await load(dir, q, opts, true);
      const perOp = await load(dir, q, opts, false);
      opened.push(fused, perOp);
      expect(usesPlan(fused)).toBe(true);
      expect(usesPlan(perOp)).toBe(false);
      const V = fused.config.vocabSize;
      for (const lastTokenOnly of [false, true]) {
        const a = await run(fused, V, lastTokenOnly);
        const b = await run(perOp, V, lastTokenOnly);
        expect(a.length).toBe(b.length);
        for (let i = 0; i < a.length; i++) {
          expect(a[i]!.length).toBe(b[i]!.length);
          expect(bits(a[i]!).equals(bits(b[i]!)), `step ${i}, lastTokenOnly ${lastTokenOnly}`).toBe(true);
        }
      }
    });

  it('generate() gives the same tokens with and without the plan (sampled, seeded)', async () => {
    const fused = await load(TINY, { loadIn4bit: true, bnb4bitQuantType: 'nf4' }, {}, true);
    const perOp = await load(TINY, { loadIn4bit: true, bnb4bitQuantType: 'nf4' }, {}, false);
    opened.push(fused, perOp);
    const opts = { maxNewTokens: 12, doSample: true, temperature: 0.9, topK: 20, seed: 7 };
    expect(await fused.generate([[5, 6, 7], [8, 9, 10]], opts)).toEqual(await perOp.generate([[5, 6, 7], [8, 9, 10]], opts));
  });

  it('a disposed model refuses to run, and a cache outlives nothing it needs', async () => {
    const m = await load(TINY, null, {}, true);
    const out = await m.forward([[1, 2, 3]]);
    await out.logits.data();
    m.dispose();
    await expect(m.forward([[4]], { pastKeyValues: out.pastKeyValues })).rejects.toThrow();
    out.logits.dispose();
    out.pastKeyValues.dispose();
  });

  it('bad plan descriptions are refused with a message naming the problem', () => {
    const t = (shape: number[], dtype: 'float32' | 'float16' = 'float32') => Tensor.zeros(shape, dtype);
    const made: Tensor[] = [];
    const keep = <T extends Tensor>(x: T) => (made.push(x), x);
    expect(() => native().gpt2Plan([keep(t([4, 2]))], 1, 1e-5)).toThrow(/expected 5 \+ 12 \* nLayer parameter tensors/);
    const C = 4, V = 8, P = 6, I = 16;
    const layer = () => [t([C]), t([C]), t([3 * C, C]), t([3 * C]), t([C, C]), t([C]), t([C]), t([C]), t([I, C]), t([I]), t([C, I]), t([C])].map(keep);
    const params = [keep(t([V, C])), keep(t([P, C])), ...layer(), keep(t([C])), keep(t([C])), keep(t([V, C]))];
    native().gpt2PlanRelease(native().gpt2Plan(params, 2, 1e-5));
    const mixed = [...params];
    mixed[4] = keep(t([3 * C, C], 'float16'));
    expect(() => native().gpt2Plan(mixed, 2, 1e-5)).toThrow(/c_attn\.weight' is float16\[12, 4\] on cpu, wte is float32/);
    const badShape = [...params];
    badShape[4] = keep(t([3 * C, C + 1]));
    expect(() => native().gpt2Plan(badShape, 2, 1e-5)).toThrow(/c_attn\.weight' is float32\[12, 5\] on cpu, expected \[12, 4\]/);
    const badKind = [...params];
    badKind[4] = { kind: '2bit' } as unknown as Tensor;
    expect(() => native().gpt2Plan(badKind, 2, 1e-5)).toThrow(/unknown kind '2bit'/);
    expect(() => native().gpt2Plan(params, 3, 1e-5)).toThrow(/n_embd is not a multiple of n_head/);
    for (const x of made) x.dispose();
  });
});
