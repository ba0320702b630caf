// Sampling on the GPU (lib/generation/device-sampler.ts, native/cuda/sampling.cu).
// Without a GPU: the JS side (packing, the generator's rewind, decodeLoop's use of the
// device path, its fallback to the host and NIBBLE_DEVICE_SAMPLING=0) runs against a stand-in
// for the native sampleTokens built from the host processors, on logits that claim to live on
// cuda:0. With a GPU: the kernel against the host processors on random rows and real logits,
// and fortune-gpt2 generation with device sampling against host sampling.
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import type { DeviceSamplingConfig, NativeBinding, TensorLike } from '../binding.js';
import {
  DeviceSampler, deviceSamplingAllowed, deviceSamplingConfig, packHistories,
} from '../lib/generation/device-sampler.js';
import { decodeAheadAllowed, decodeAheadDepth, generate, startGeneration } from '../lib/generation/generate.js';
import { GENERATION_DEFAULTS, resolveGenerationConfig, type GenerationOptions } from '../lib/generation/generation-config.js';
import { buildLogitsProcessors } from '../lib/generation/logits-processors.js';
import { Xoshiro128, argmax, sampleToken } from '../lib/generation/sampler.js';
import type { CausalLM, ForwardOptions, ForwardOutput } from '../lib/models/types.js';
import { loadGPT2 } from '../lib/models/gpt2-loader.js';
import { native } from '../lib/native.js';
import { Tensor } from '../lib/tensor.js';
import { FakeLM, mulberry32 } from './helpers/fake-lm.js';

const hasGpu = native().info().cudaDeviceCount > 0;
const FORTUNE = 'models/fortune-gpt2';

/** The host's choice for one row: buildLogitsProcessors then argmax or sampleToken with this u. */
function hostChoice(row: Float32Array, history: readonly number[], cfg: DeviceSamplingConfig, u: number): number {
  const config = { ...GENERATION_DEFAULTS, ...cfg, minP: cfg.minP ?? null };
  const scores = row.slice();
  for (const p of buildLogitsProcessors(config)) p(scores, history);
  return config.doSample ? sampleToken(scores, { nextFloat: () => u } as unknown as Xoshiro128) : argmax(scores);
}

const SETS: [string, GenerationOptions][] = [
  ['greedy', { doSample: false }],
  ['greedy rp1.3', { doSample: false, repetitionPenalty: 1.3 }],
  ['sample (topK 50 default)', { doSample: true }],
  ['t0.7 topK5', { doSample: true, temperature: 0.7, topK: 5 }],
  ['topP0.9', { doSample: true, topK: 0, topP: 0.9 }],
  ['minP0.1', { doSample: true, topK: 0, minP: 0.1 }],
  ['all + rp', { doSample: true, temperature: 1.3, topK: 20, topP: 0.8, minP: 0.02, repetitionPenalty: 1.2 }],
];

describe('device sampler: the JS side', () => {
  it('packs histories and the config', () => {
    const { history, offsets } = packHistories([0, 2], [[1, 2], [9], [3, 4, 5]]);
    expect(Array.from(history)).toEqual([1, 2, 3, 4, 5]);
    expect(Array.from(offsets)).toEqual([0, 2, 5]);
    const cfg = resolveGenerationConfig({ doSample: true, topP: 0.5, minP: 0.1, repetitionPenalty: 1.1 });
    expect(deviceSamplingConfig(cfg)).toEqual({
      doSample: true, temperature: 1, topK: 50, topP: 0.5, minP: 0.1, repetitionPenalty: 1.1, minTokensToKeep: 1,
    });
  });

  it('NIBBLE_DEVICE_SAMPLING=0 turns it off', () => {
    expect(deviceSamplingAllowed({})).toBe(true);
    expect(deviceSamplingAllowed({ NIBBLE_DEVICE_SAMPLING: '1' })).toBe(true);
    for (const v of ['0', 'false', 'off']) expect(deviceSamplingAllowed({ NIBBLE_DEVICE_SAMPLING: v })).toBe(false);
    expect(DeviceSampler.create(resolveGenerationConfig({}), { NIBBLE_DEVICE_SAMPLING: '0' })).toBeNull();
  });

  it('the generator rewinds to a saved state', () => {
    const g = new Xoshiro128(42);
    g.nextFloat();
    const s = g.state();
    const a = [g.nextFloat(), g.nextFloat()];
    g.restore(s);
    expect([g.nextFloat(), g.nextFloat()]).toEqual(a);
  });

  it('the addon has sampleTokens, and it refuses logits in host memory', async () => {
    const b = native();
    expect(typeof b.sampleTokens).toBe('function');
    const t = Tensor.from(new Float32Array(8), [2, 4]);
    expect(() => b.sampleTokens(t, Int32Array.of(0), null, null, null, deviceSamplingConfig(resolveGenerationConfig({})))).toThrow(
      /logits must be on a CUDA device/,
    );
    t.dispose();
  });
});

/** Logits that say they live on cuda:0; reads are counted (the device path must not read them). */
class FakeGpuLogits {
  readonly device = 'cuda:0';
  readonly dtype = 'float32';
  disposed = false;
  constructor(
    readonly data: Float32Array,
    readonly shape: number[],
    private readonly reads: { n: number },
  ) {}
  async toFloat32(): Promise<Float32Array> {
    this.reads.n++;
    return this.data;
  }
  dispose(): void {
    this.disposed = true;
  }
}

/** FakeLM whose logits claim to be on the GPU. */
class FakeGpuLM implements CausalLM {
  readonly reads = { n: 0 };
  constructor(readonly inner: FakeLM) {}
  get config() {
    return this.inner.config;
  }
  async forward(ids: number[][], options: ForwardOptions = {}): Promise<ForwardOutput> {
    const out = await this.inner.forward(ids, options);
    const data = await out.logits.toFloat32();
    const shape = [...out.logits.shape];
    out.logits.dispose();
    return { logits: new FakeGpuLogits(data, shape, this.reads) as unknown as Tensor, pastKeyValues: out.pastKeyValues };
  }
}

interface Call {
  rows: number[];
  u: number[] | null;
  histories: number[][] | null;
}

/** sampleTokens made of the host processors; `fail(step)` marks row 0 of that call for the host. */
function fakeSampleTokens(calls: Call[], fail: (call: number) => boolean): NativeBinding['sampleTokens'] {
  return async (logits: TensorLike, rows, u, history, offsets, cfg, feed) => {
    const t = logits as unknown as FakeGpuLogits;
    const V = t.shape[t.shape.length - 1]!;
    const P = t.shape.length === 3 ? t.shape[1]! : 1;
    const call = calls.length;
    const histories = history && offsets ? Array.from(rows, (_, i) => Array.from(history.subarray(offsets[i]!, offsets[i + 1]!))) : null;
    calls.push({ rows: Array.from(rows), u: u ? Array.from(u) : null, histories });
    const ids = new Int32Array(rows.length);
    const status = new Int32Array(rows.length);
    rows.forEach((b, i) => {
      const start = (b * P + P - 1) * V;
      ids[i] = hostChoice(t.data.subarray(start, start + V), histories?.[i] ?? [], cfg, u ? u[i]! : 0);
    });
    if (fail(call)) {
      status[0] = 1;
      ids[0] = -1;
    }
    // As the kernel does, before anything queued after this call runs: settled rows' ids to feed.
    if (feed) rows.forEach((b, i) => status[i] === 0 && ((feed as unknown as FakeFeed).data[b] = ids[i]!));
    return { ids, status };
  };
}

describe('decodeLoop with logits on a (stand-in) GPU', () => {
  const binding = native() as NativeBinding & { sampleTokens: NativeBinding['sampleTokens'] };
  const original = binding.sampleTokens;
  afterEach(() => {
    binding.sampleTokens = original;
    delete process.env.NIBBLE_DEVICE_SAMPLING;
  });

  const prompts = [[3, 1, 4, 1, 5], [9, 2], [6, 5, 3, 5]];
  const lm = () => new FakeLM({ vocabSize: 61, eosTokenId: 7, scale: 3, seed: 99 });

  it.each(SETS)('%s: the same tokens as the host path, no logits read, one draw per unfinished row', async (_name, opts) => {
    const o = { ...opts, maxNewTokens: 25, seed: 1234 };
    const want = await generate(lm(), prompts, o);
    const calls: Call[] = [];
    binding.sampleTokens = fakeSampleTokens(calls, () => false);
    const gpu = new FakeGpuLM(lm());
    expect(await generate(gpu, prompts, o)).toEqual(want);
    expect(gpu.reads.n).toBe(0);
    expect(calls.length).toBeGreaterThan(0);
    // Rows that finished (eos) are not asked for again; each asked-for row has its own u.
    const finishedAfter = new Set<number>();
    calls.forEach((c, step) => {
      for (const b of c.rows) expect(finishedAfter.has(b)).toBe(false);
      if (opts.doSample) expect(c.u).toHaveLength(c.rows.length);
      else expect(c.u).toBeNull();
      if (opts.repetitionPenalty && opts.repetitionPenalty !== 1) {
        // the history is the padded prompt plus the tokens so far
        c.rows.forEach((b, i) => expect(c.histories![i]!.length).toBe(5 + step));
      } else expect(c.histories).toBeNull();
      c.rows.forEach((b) => {
        const tok = want[b]![prompts[b]!.length + step]!;
        if (tok === 7) finishedAfter.add(b);
      });
    });
  });

  it('a row the GPU leaves to the host: the step reruns on the host with the generator rewound', async () => {
    const o = { doSample: true, topP: 0.9, maxNewTokens: 20, seed: 77 };
    const want = await generate(lm(), prompts, o);
    const calls: Call[] = [];
    binding.sampleTokens = fakeSampleTokens(calls, (c) => c === 2 || c === 5);
    const gpu = new FakeGpuLM(lm());
    expect(await generate(gpu, prompts, o)).toEqual(want);
    expect(gpu.reads.n).toBe(2);
  });

  it('NIBBLE_DEVICE_SAMPLING=0 and CPU logits take the host path', async () => {
    const calls: Call[] = [];
    binding.sampleTokens = fakeSampleTokens(calls, () => false);
    const o = { doSample: true, maxNewTokens: 5, seed: 3 };
    process.env.NIBBLE_DEVICE_SAMPLING = '0';
    const gpu = new FakeGpuLM(lm());
    const a = await generate(gpu, prompts, o);
    expect(gpu.reads.n).toBeGreaterThan(0);
    delete process.env.NIBBLE_DEVICE_SAMPLING;
    expect(await generate(lm(), prompts, o)).toEqual(a);
    expect(calls).toHaveLength(0);
  });
});

/** The int32 [B] device tensor generate() allocates for the sampler's ids, on a stand-in GPU. */
class FakeFeed {
  readonly device = 'cuda:0';
  readonly dtype = 'int32';
  disposed = false;
  constructor(readonly data: Int32Array) {}
  get numel(): number {
    return this.data.length;
  }
  get shape(): number[] {
    return [this.data.length];
  }
  dispose(): void {
    this.disposed = true;
  }
}

/** FakeGpuLM that can queue a step whose ids it reads from a feed (as the CUDA plan does). */
class FakeAheadLM extends FakeGpuLM {
  readonly ahead = { n: 0 };
  readonly logits: FakeGpuLogits[] = [];
  override async forward(ids: number[][], options: ForwardOptions = {}): Promise<ForwardOutput> {
    const p = super.forward(ids, options); // queues (the stand-in's cache grows) before returning
    const out = await p;
    this.logits.push(out.logits as unknown as FakeGpuLogits);
    return out;
  }
  forwardFromDevice(ids: Tensor, options: ForwardOptions): Promise<ForwardOutput> {
    this.ahead.n++;
    // Read now: on the GPU the ids are read when the step runs, after everything queued before
    // it, so the sampler call that writes them must already have been made.
    const feed = ids as unknown as FakeFeed;
    return this.forward(Array.from(feed.data, (t) => [t]), options);
  }
}

describe('decoding ahead (stand-in GPU): step t+1 queued before step t\'s ids reach the host', () => {
  const binding = native() as NativeBinding & { sampleTokens: NativeBinding['sampleTokens'] };
  const original = binding.sampleTokens;
  const feeds: FakeFeed[] = [];
  beforeEach(() => {
    feeds.length = 0;
    vi.spyOn(Tensor, 'zeros').mockImplementation((shape, dtype, device) => {
      expect([dtype, device]).toEqual(['int32', 'cuda:0']);
      const f = new FakeFeed(new Int32Array(shape[0]!));
      feeds.push(f);
      return f as unknown as Tensor;
    });
  });
  afterEach(() => {
    vi.restoreAllMocks();
    binding.sampleTokens = original;
    delete process.env.NIBBLE_DECODE_AHEAD;
  });
  const prompts = [[3, 1, 4, 1, 5], [9, 2], [6, 5, 3, 5]];
  const lm = () => new FakeLM({ vocabSize: 61, eosTokenId: 7, scale: 3, seed: 99 });
  const allDisposed = (m: FakeAheadLM) => {
    expect(m.logits.every((l) => l.disposed)).toBe(true);
    expect(m.inner.caches.every((c) => c.disposed)).toBe(true);
    expect(feeds.every((f) => f.disposed)).toBe(true);
  };

  it('NIBBLE_DECODE_AHEAD: unset/1/2 allow it, 0/false/off/no forbid it; 1 means one step, else two', () => {
    expect(decodeAheadAllowed({})).toBe(true);
    expect(decodeAheadAllowed({ NIBBLE_DECODE_AHEAD: '1' })).toBe(true);
    for (const v of ['0', 'false', 'OFF', ' no ']) expect(decodeAheadAllowed({ NIBBLE_DECODE_AHEAD: v })).toBe(false);
    expect(decodeAheadDepth({})).toBe(2);
    expect(decodeAheadDepth({ NIBBLE_DECODE_AHEAD: '2' })).toBe(2);
    expect(decodeAheadDepth({ NIBBLE_DECODE_AHEAD: ' 1 ' })).toBe(1);
    expect(decodeAheadDepth({ NIBBLE_DECODE_AHEAD: 'off' })).toBe(0);
  });

  const depths = [['1', 1], ['2', 2]] as const;
  for (const [env, depth] of depths) {
    it.each(SETS)(`depth ${depth}: %s: the same tokens as the host path, every later step queued ahead`, async (_name, opts) => {
      process.env.NIBBLE_DECODE_AHEAD = env;
      const o = { ...opts, maxNewTokens: 25, seed: 4321 };
      const want = await generate(lm(), prompts, o);
      const calls: Call[] = [];
      binding.sampleTokens = fakeSampleTokens(calls, () => false);
      const m = new FakeAheadLM(lm());
      // Sampler calls made by the time each step reaches the consumer: step t's, and with two
      // steps ahead (no history read) step t+1's too, until the last step or a row finishing.
      const run = startGeneration(m, prompts, o, 'generate');
      const got = run.rows.map((r) => [...r]);
      const callsAtStep: number[] = [];
      for await (const s of run.steps) {
        callsAtStep.push(calls.length);
        s.tokens.forEach((t, b) => got[b]!.push(t));
      }
      expect(got).toEqual(want);
      expect(m.reads.n).toBe(0);
      const steps = want[0]!.length - prompts[0]!.length;
      const twoAhead = depth === 2 && !(opts.repetitionPenalty && opts.repetitionPenalty !== 1);
      expect(callsAtStep[3]).toBe(twoAhead ? 5 : 4);
      // Every decode step but the first came from forwardFromDevice (one or two more, unused,
      // when all rows finish before maxNewTokens; with two ahead, one more a row that finishes
      // early: the steps queued past it are undone and queued again).
      expect(m.ahead.n).toBeGreaterThanOrEqual(steps - 1);
      expect(m.ahead.n).toBeLessThanOrEqual(twoAhead ? steps + 1 + prompts.length : steps);
      allDisposed(m);
    });

    it(`depth ${depth}: rows finishing early (eos) and steps the host must choose: undone, same tokens, nothing leaked`, async () => {
      process.env.NIBBLE_DECODE_AHEAD = env;
      const o = { doSample: true, topP: 0.9, maxNewTokens: 30, seed: 77 };
      const want = await generate(lm(), prompts, o);
      binding.sampleTokens = fakeSampleTokens([], (c) => c === 2 || c === 5);
      const m = new FakeAheadLM(lm());
      expect(await generate(m, prompts, o)).toEqual(want);
      // The host steps read their logits: the two failed calls' steps (with two ahead, a failed
      // call may be a queued one that a finishing row undid before it was used).
      expect(m.reads.n).toBeGreaterThanOrEqual(1);
      expect(m.reads.n).toBeLessThanOrEqual(2);
      // One cache position per fed token (the undone steps were truncated): the padded prompt,
      // then every new token but the last, plus the steps still queued ahead when the rows all
      // finished early.
      const width = Math.max(...prompts.map((p) => p.length));
      const N = want[0]!.length - prompts[0]!.length;
      expect(m.inner.caches).toHaveLength(1);
      const len = m.inner.caches[0]!.length;
      if (N === 30) expect(len).toBe(width + N - 1);
      else expect(len - (width + N)).toBeGreaterThanOrEqual(0), expect(len - (width + N)).toBeLessThanOrEqual(depth - 1);
      allDisposed(m);
    });
  }

  it('a consumer that stops early or an abort: the step queued ahead is awaited and freed', async () => {
    binding.sampleTokens = fakeSampleTokens([], () => false);
    const m = new FakeAheadLM(lm());
    const ac = new AbortController();
    // Abort as the third step returns (a step is then queued ahead): deterministic, where a
    // timer's third tick could come after the 20 stand-in steps had all finished.
    const forward = m.forward.bind(m);
    let n = 0;
    m.forward = async (ids, o) => {
      const out = await forward(ids, o);
      if (++n === 3) ac.abort(new Error('stop'));
      return out;
    };
    const run = generate(m, prompts, { maxNewTokens: 20, signal: ac.signal, doSample: false });
    await expect(run).rejects.toThrow('stop');
    expect(n).toBeLessThan(20);
    allDisposed(m);
  });

  it('NIBBLE_DECODE_AHEAD=0: every step waits for the ids (forward only), same tokens', async () => {
    const o = { doSample: true, maxNewTokens: 12, seed: 3 };
    binding.sampleTokens = fakeSampleTokens([], () => false);
    const a = new FakeAheadLM(lm());
    const ahead = await generate(a, prompts, o);
    expect(a.ahead.n).toBeGreaterThan(0);
    process.env.NIBBLE_DECODE_AHEAD = '0';
    const b = new FakeAheadLM(lm());
    expect(await generate(b, prompts, o)).toEqual(ahead);
    expect(b.ahead.n).toBe(0);
    allDisposed(b);
  });
});

describe.skipIf(!hasGpu)('sampling on the GPU', () => {
  const configs: [string, DeviceSamplingConfig][] = SETS.map(([n, o]) => {
    const c = deviceSamplingConfig(resolveGenerationConfig(o));
    return [n, c];
  });

  it.each([1000, 50257])('V=%i: the kernel picks what the host picks, row for row', async (V) => {
    const rnd = mulberry32(V);
    const B = 6;
    const data = new Float32Array(B * V);
    for (let i = 0; i < data.length; i++) data[i] = i < 2 * V ? Math.round((rnd() - 0.5) * 8) : (rnd() - 0.5) * 12;
    const logits = Tensor.from(data, [B, 1, V], 'float32', 'cuda:0');
    const rows = Int32Array.of(0, 1, 2, 4, 5);
    const hist = Array.from(rows, () => Array.from({ length: 40 }, () => Math.floor(rnd() * V)));
    const { history, offsets } = packHistories([0, 1, 2, 3, 4], hist);
    for (const [name, cfg] of configs) {
      for (let rep = 0; rep < 4; rep++) {
        const u = Float64Array.from(rows, () => rnd());
        const got = await native().sampleTokens(logits, rows, cfg.doSample ? u : null, history, offsets, cfg);
        const want = Array.from(rows, (b, i) => hostChoice(data.subarray(b * V, (b + 1) * V), hist[i]!, cfg, u[i]!));
        expect(Array.from(got.status), name).toEqual(Array.from(rows, () => 0));
        expect(Array.from(got.ids), name).toEqual(want);
      }
    }
    logits.dispose();
  });

  it('a NaN row comes back with a status (the host then throws its error)', async () => {
    const data = new Float32Array(2 * 100).fill(0);
    data[150] = NaN;
    const logits = Tensor.from(data, [2, 100], 'float32', 'cuda:0');
    const got = await native().sampleTokens(logits, Int32Array.of(0, 1), null, null, null, configs[0]![1]);
    expect(Array.from(got.status)).toEqual([0, 1]);
    logits.dispose();
  });

  it('fortune-gpt2 on cuda:0: device sampling gives the host sampling tokens', async () => {
    const model = await loadGPT2(FORTUNE, { device: 'cuda:0' });
    const batch = [[464, 2003, 286, 9552, 318], [50256, 17], [1169, 2003, 286]];
    for (const [, opts] of SETS) {
      const o = { ...opts, maxNewTokens: 24, seed: 5 };
      const device = await generate(model, batch, o);
      process.env.NIBBLE_DEVICE_SAMPLING = '0';
      try {
        expect(device).toEqual(await generate(model, batch, o));
      } finally {
        delete process.env.NIBBLE_DEVICE_SAMPLING;
      }
    }
    model.dispose();
  });
});
