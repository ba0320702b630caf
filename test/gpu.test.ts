// GPT-2 on CUDA: every op against the CPU kernels on random inputs, the model against
// transformers' references and against the CPU, and the errors a user can hit. The GPU
// blocks skip when this machine has no usable GPU; the no-GPU errors are checked here.
import { describe, expect, it } from 'vitest';
import { AutoModelForCausalLM } from '../lib/models/auto.js';
import { loadGPT2 } from '../lib/models/gpt2-loader.js';
import type { GPT2LMHeadModel } from '../lib/models/gpt2.js';
import { native } from '../lib/native.js';
import * as ops from '../lib/ops.js';
import { Tensor, type DType } from '../lib/tensor.js';
import { argmaxRows, maxAbsDiff, refFloat, refInts } from './helpers/refs.js';

const TINY = 'test/fixtures/tiny-random-gpt2';
const FORTUNE = 'models/fortune-gpt2';
const hasGpu = native().info().cudaDeviceCount > 0;

let seed = (Date.now() ^ 0x9e3779b9) >>> 0;
function uniform(): number {
  // mulberry32: fresh values per run, no dependency
  seed = (seed + 0x6d2b79f5) >>> 0;
  let t = seed;
  t = Math.imul(t ^ (t >>> 15), t | 1);
  t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
  return (((t ^ (t >>> 14)) >>> 0) + 1) / 4294967297;
}
function randn(n: number, scale = 1): Float32Array {
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = Math.sqrt(-2 * Math.log(uniform())) * Math.cos(2 * Math.PI * uniform()) * scale;
  return out;
}

function relErr(got: Float32Array, want: Float32Array): number {
  let num = 0;
  let den = 0;
  for (let i = 0; i < want.length; i++) {
    if (Number.isNaN(got[i])) return Infinity;
    num += (got[i]! - want[i]!) ** 2;
    den += want[i]! ** 2;
  }
  return Math.sqrt(num / (den || 1));
}

const gpu = (t: Tensor) => t.toDevice('cuda:0');

async function greedy(model: GPT2LMHeadModel, prompt: number[], n: number): Promise<number[]> {
  const out = await model.generate(prompt, { maxNewTokens: n, doSample: false });
  return out[0]!;
}

describe.skipIf(hasGpu)('CUDA requested on a machine without a GPU', () => {
  it('loading onto cuda throws a clear error and the CPU path keeps working', async () => {
    await expect(AutoModelForCausalLM.fromPretrained(TINY, { deviceMap: 'cuda', noTokenizer: true })).rejects.toThrow(
      /device cuda:0: .*(CUDA is not available|without CUDA)/,
    );
    await expect(loadGPT2(TINY, { device: 'cuda:0' })).rejects.toThrow(/use deviceMap 'cpu'/);
    const model = await AutoModelForCausalLM.fromPretrained(TINY, { deviceMap: 'cpu', noTokenizer: true });
    expect((await model.generate([1, 2, 3], { maxNewTokens: 2 }))[0]).toHaveLength(5);
    model.dispose();
  });
});

describe.skipIf(!hasGpu)('GPT-2 ops on CUDA match the CPU kernels', () => {
  const dtypes: DType[] = ['float32', 'float16', 'bfloat16'];

  it('linear at decode and prefill sizes, every parameter dtype', async () => {
    for (const dt of dtypes)
      for (const [M, K, N] of [[1, 768, 257], [3, 67, 96], [8, 1600, 33], [16, 5, 7], [17, 200, 131], [70, 64, 1]]) {
        const x = Tensor.from(randn(M! * K!), [M!, K!]);
        const w = Tensor.from(randn(N! * K!, 0.05), [N!, K!]).to(dt);
        const b = Tensor.from(randn(N!), [N!]).to(dt);
        const want = await ops.linear(x, w, b).toFloat32();
        const got = await ops.linear(gpu(x), gpu(w), gpu(b)).toFloat32();
        expect(relErr(got, want), `linear ${dt} M=${M} K=${K} N=${N}`).toBeLessThan(1e-5);
      }
  });

  it('embedding, layernorm, gelu, add, softmax', async () => {
    for (const dt of dtypes) {
      const wte = Tensor.from(randn(100 * 33), [100, 33]).to(dt);
      const wpe = Tensor.from(randn(20 * 33, 0.1), [20, 33]).to(dt);
      const ids = Tensor.from(Int32Array.from([5, 99, 0, 42, 7]));
      const pos = Tensor.from(Int32Array.from([0, 1, 2, 19, 3]));
      const e = await ops.embedding(wte, wpe, ids, pos).toFloat32();
      const eg = await ops.embedding(gpu(wte), gpu(wpe), gpu(ids), gpu(pos)).toFloat32();
      expect(relErr(eg, e)).toBeLessThan(1e-6);
      const x = Tensor.from(randn(7 * 1601, 3), [7, 1601]);
      const lw = Tensor.from(randn(1601), [1601]).to(dt);
      const lb = Tensor.from(randn(1601), [1601]).to(dt);
      const ln = await ops.layerNorm(x, lw, lb, 1e-5).toFloat32();
      expect(relErr(await ops.layerNorm(gpu(x), gpu(lw), gpu(lb), 1e-5).toFloat32(), ln)).toBeLessThan(1e-5);
    }
    const a = Tensor.from(randn(100003, 3));
    const b = Tensor.from(randn(100003));
    expect(relErr(await ops.geluNew(gpu(a)).toFloat32(), await ops.geluNew(a).toFloat32())).toBeLessThan(1e-6);
    expect(relErr(await ops.add(gpu(a), gpu(b)).toFloat32(), await ops.add(a, b).toFloat32())).toBeLessThan(1e-7);
    const s = Tensor.from(randn(5 * 50257, 4), [5, 50257]);
    expect(relErr(await ops.softmax(gpu(s)).toFloat32(), await ops.softmax(s).toFloat32())).toBeLessThan(1e-5);
  });

  it('attention with a KV cache and left padding, prefill then decode', async () => {
    const [B, H, D, Tmax] = [3, 4, 16, 24];
    const shape = [B, H, Tmax, D];
    const kc = Tensor.zeros(shape), vc = Tensor.zeros(shape);
    const kg = gpu(kc), vg = gpu(vc);
    let past = 0;
    for (const T of [9, 1, 1, 1]) {
      const qkv = Tensor.from(randn(B * T * 3 * H * D), [B, T, 3 * H * D]);
      // Sequence b is left-padded by pad[b] positions; the last one's whole prompt is padding.
      const pad = [0, 4, 9];
      const m = Int32Array.from({ length: B * (past + T) }, (_, i) => (i % (past + T) >= pad[Math.floor(i / (past + T))]! ? 1 : 0));
      const mask = Tensor.from(m, [B, past + T]);
      const want = await ops.attention(qkv, kc, vc, mask, past).toFloat32();
      const got = await ops.attention(gpu(qkv), kg, vg, gpu(mask), past).toFloat32();
      expect(relErr(got, want), `past=${past} T=${T}`).toBeLessThan(2e-5);
      past += T;
    }
    expect(maxAbsDiff(await kg.toFloat32(), await kc.toFloat32())).toBe(0);
  });

  it('mixed devices and bad shapes are JS errors naming the tensor', () => {
    const x = Tensor.from(randn(4 * 8), [4, 8]);
    const w = Tensor.from(randn(3 * 8), [3, 8]);
    const out = Tensor.empty([4, 3], 'float32', 'cuda:0');
    expect(() => native().linear(out, gpu(x), w, null)).toThrow(/'weight' is float32\[3, 8\] on cpu but the output is on cuda:0/);
    expect(() => native().linear(out, gpu(x), gpu(Tensor.from(randn(3 * 7), [3, 7])), null)).toThrow(/8 features/);
  });

  it('out of GPU memory is a JS error naming the size, and the GPU stays usable', async () => {
    const total = native().info().gpus[0]!.totalMemory;
    expect(() => Tensor.empty([Math.ceil((total * 2) / 4)], 'float32', 'cuda:0')).toThrow(/out of memory allocating \d+ bytes on cuda:0/);
    const x = gpu(Tensor.from(randn(64)));
    expect((await ops.add(x, x).toFloat32()).length).toBe(64);
  });
});

describe.skipIf(!hasGpu)('GPT-2 on CUDA', () => {
  it('tiny-random-gpt2 logits within 1e-4 of transformers, same greedy tokens', async () => {
    const model = await AutoModelForCausalLM.fromPretrained(TINY, { deviceMap: { '': 'cuda:0' }, noTokenizer: true });
    expect(model.device).toBe('cuda:0');
    const ids = await refInts('tiny.input_ids');
    const rows = [ids.slice(0, 10), ids.slice(10, 20)];
    const { logits, pastKeyValues } = await model.forward(rows);
    expect(logits.device).toBe('cuda:0');
    expect(maxAbsDiff(await logits.toFloat32(), await refFloat('tiny.fp32.logits'))).toBeLessThanOrEqual(1e-4);
    pastKeyValues.dispose();
    const want = await refInts('tiny.fp32.greedy');
    expect(await greedy(model, rows[0]!, want.length - 10)).toEqual(want);
    model.dispose();
  });

  it('fortune-gpt2: CUDA and CPU give the same greedy tokens and close logits, also for a left-padded batch', async () => {
    const cpu = await loadGPT2(FORTUNE);
    const cuda = await loadGPT2(FORTUNE, { device: 'cuda:0' });
    const prompt = [464, 2003, 286, 9552, 318];
    const a = await (await cpu.forward([prompt])).logits.toFloat32();
    const b = await (await cuda.forward([prompt])).logits.toFloat32();
    expect(maxAbsDiff(a, b)).toBeLessThanOrEqual(2e-3);
    expect(argmaxRows(b, 50257)).toEqual(argmaxRows(a, 50257));
    expect(await greedy(cuda, prompt, 40)).toEqual(await greedy(cpu, prompt, 40));
    const batch = [prompt, [50256, 17], [1169, 2003, 286]];
    const opts = { maxNewTokens: 12, doSample: false };
    expect(await cuda.generate(batch, opts)).toEqual(await cpu.generate(batch, opts));
    cpu.dispose();
    cuda.dispose();
  });

  it('the per-op path (used by quantized models) matches the whole-forward path', async () => {
    const batch = [[464, 2003, 286, 9552, 318], [50256, 17]];
    const opts = { maxNewTokens: 10, doSample: false };
    // The plan is chosen at a model's first forward: run the fused model before switching.
    const fused = await loadGPT2(FORTUNE, { device: 'cuda:0' });
    const a = await (await fused.forward([batch[0]!])).logits.toFloat32();
    const fusedTokens = await fused.generate(batch, opts);
    fused.dispose();
    process.env.NIBBLE_CUDA_FUSED = '0';
    try {
      const perOp = await loadGPT2(FORTUNE, { device: 'cuda:0' });
      const b = await (await perOp.forward([batch[0]!])).logits.toFloat32();
      expect(maxAbsDiff(a, b)).toBeLessThanOrEqual(1e-5);
      expect(await perOp.generate(batch, opts)).toEqual(fusedTokens);
      perOp.dispose();
    } finally {
      delete process.env.NIBBLE_CUDA_FUSED;
    }
  });

  it('float16 parameters on CUDA stay within 2e-2 of float32', async () => {
    const f32 = await loadGPT2(TINY, { device: 'cuda:0' });
    const f16 = await loadGPT2(TINY, { device: 'cuda:0', dtype: 'float16' });
    const ids = (await refInts('tiny.input_ids')).slice(0, 10);
    const a = await (await f32.forward([ids])).logits.toFloat32();
    const b = await (await f16.forward([ids])).logits.toFloat32();
    expect(maxAbsDiff(a, b)).toBeLessThanOrEqual(2e-2);
    f32.dispose();
    f16.dispose();
  });
});
