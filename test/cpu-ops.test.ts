// Every GPT-2 CPU kernel's fast path (threads + AVX2) against its plain reference, on fresh
// random inputs of awkward sizes and every parameter dtype.
import { describe, expect, it } from 'vitest';
import { native } from '../lib/native.js';
import { Tensor, type DType } from '../lib/tensor.js';
import { relL2 } from './helpers/compare.js';

let seed = (Date.now() ^ 0x5bd1e995) >>> 0;
function rand(n: number, scale = 1): Float32Array {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    seed = (seed + 0x6d2b79f5) >>> 0;
    let t = seed;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    a[i] = ((((t ^ (t >>> 14)) >>> 0) / 4294967296) * 2 - 1) * scale;
  }
  return a;
}
const f32 = (shape: number[], scale = 1) => Tensor.from(rand(shape.reduce((a, b) => a * b, 1), scale), shape);
const param = (shape: number[], dtype: DType, scale = 1) => f32(shape, scale).to(dtype);


async function both(shape: number[], run: (out: Tensor, ref: boolean) => void): Promise<[Float32Array, Float32Array]> {
  const a = Tensor.empty(shape), b = Tensor.empty(shape);
  run(a, false);
  run(b, true);
  return [await a.toFloat32(), await b.toFloat32()];
}

const DTYPES: DType[] = ['float32', 'float16', 'bfloat16'];

describe(`CPU kernels: fast path vs reference (seed ${seed})`, () => {
  it('linear over odd shapes and weight dtypes', async () => {
    for (const dt of DTYPES)
      for (const [M, K, N] of [[1, 1, 1], [1, 7, 5], [3, 64, 33], [5, 129, 17], [17, 130, 70], [64, 96, 9]] as const) {
        const x = f32([M, K]), w = param([N, K], dt), b = param([N], dt);
        const [fast, ref] = await both([M, N], (out, r) => native().linear(out, x, w, b, r));
        expect(relL2(fast, ref), `${dt} M=${M} K=${K} N=${N}`).toBeLessThan(1e-5);
        const [fast2, ref2] = await both([M, N], (out, r) => native().linear(out, x, w, null, r));
        expect(relL2(fast2, ref2)).toBeLessThan(1e-5);
      }
  });

  it('layernorm, embedding, gelu, add, softmax', async () => {
    for (const dt of DTYPES) {
      const x = f32([7, 67], 3), w = param([67], dt), b = param([67], dt);
      let [f, r] = await both([7, 67], (o, ref) => native().layernorm(o, x, w, b, 1e-5, ref));
      expect(relL2(f, r)).toBeLessThan(1e-5);
      const wte = param([50, 33], dt), wpe = param([20, 33], dt);
      const ids = Tensor.from(new Int32Array([0, 49, 7, 7, 13])), pos = Tensor.from(new Int32Array([0, 1, 2, 19, 4]));
      [f, r] = await both([5, 33], (o, ref) => native().embedding(o, wte, wpe, ids, pos, ref));
      expect(Array.from(f)).toEqual(Array.from(r));
    }
    const x = f32([3, 1001], 4);
    let [f, r] = await both([3, 1001], (o, ref) => native().geluNew(o, x, ref));
    expect(relL2(f, r)).toBeLessThan(1e-6);
    // the tails (exp clamping) and values near zero, elementwise: within a few float32 ulps of
    // |x| (0.5 x (1 + tanh) itself loses that much to cancellation for negative x)
    const wv = Float32Array.from([...rand(4099, 40), -1e-30, 1e-30, 0, -0, 88, -88, 1e4, -1e4]);
    const wide = Tensor.from(wv);
    [f, r] = await both([wide.numel], (o, ref) => native().geluNew(o, wide, ref));
    f.forEach((v, i) => expect(Math.abs(v - r[i]!), `x=${wv[i]}`).toBeLessThanOrEqual(4e-7 * Math.max(1, Math.abs(wv[i]!))));
    const y = f32([3, 1001]);
    [f, r] = await both([3, 1001], (o, ref) => native().add(o, x, y, ref));
    expect(Array.from(f)).toEqual(Array.from(r));
    [f, r] = await both([3, 1001], (o, ref) => native().softmax(o, x, ref));
    expect(relL2(f, r)).toBeLessThan(1e-5);
  });

  it('attention with a KV cache and a padding mask', async () => {
    for (const [B, T, past, H, D] of [[1, 1, 9, 3, 5], [2, 4, 0, 2, 8], [3, 2, 5, 4, 64]] as const) {
      const Tmax = past + T + 3;
      const qkv = f32([B, T, 3 * H * D]);
      const mask = Tensor.from(Int32Array.from({ length: B * (past + T) }, (_, i) => (i % (past + T) === 0 && B > 1 && i > 0 ? 0 : 1)), [B, past + T]);
      const caches = [0, 1].map(() => { const k = f32([B, H, Tmax, D]), v = f32([B, H, Tmax, D]); return [k, k.clone(), v, v.clone()]; });
      const [k, k2, v, v2] = caches[0]!;
      const a = Tensor.empty([B, T, H * D]), b = Tensor.empty([B, T, H * D]);
      native().attention(a, qkv, k!, v!, mask, past, false);
      native().attention(b, qkv, k2!, v2!, mask, past, true);
      expect(relL2(await a.toFloat32(), await b.toFloat32())).toBeLessThan(1e-5);
      expect(Array.from(await k!.toFloat32())).toEqual(Array.from(await k2!.toFloat32()));
    }
  });

  it('rejects mismatched shapes, dtypes and devices', () => {
    const x = f32([2, 8]), w = f32([4, 8]);
    expect(() => native().linear(Tensor.empty([2, 4]), f32([2, 7]), w, null)).toThrow(/x float32\[2, 7\] on cpu has 7 features but the weight float32\[4, 8\] on cpu expects 8/);
    expect(() => native().linear(Tensor.empty([2, 5]), x, w, null)).toThrow(/'out' must have 8 elements/);
    expect(() => native().linear(Tensor.empty([2, 4]), x, w, param([4], 'float16'))).toThrow(/must share one dtype/);
    expect(() => native().linear(Tensor.empty([2, 4]), x.to('int32'), w, null)).toThrow(/'x' must be float32/);
    const disposed = f32([4, 8]);
    disposed.dispose();
    expect(() => native().linear(Tensor.empty([2, 4]), x, disposed, null)).toThrow(/used after dispose/);
    expect(() => native().attention(Tensor.empty([1, 1, 8]), f32([1, 1, 24]), f32([1, 2, 4, 4]), f32([1, 2, 4, 4]), null, 4)).toThrow(/5 positions exceed the KV cache length 4/);
  });
});

describe('dtype conversion (Tensor.to)', () => {
  it('the F16C fast path equals the scalar reference bit for bit, specials included', async () => {
    const special = [0, -0, 65504, 65519.99, 65520, -65520, 6.1e-5, 5.96e-8, 2.98e-8, 2.99e-8, 1e-10, Infinity, -Infinity, NaN, -NaN, 1 / 3, 0.1];
    const x = Tensor.from(Float32Array.from([...rand(70001, 70000), ...rand(999, 1e-6), ...special]));
    for (const [from, to] of [['float32', 'float16'], ['float16', 'float32'], ['float32', 'bfloat16'], ['bfloat16', 'float32'], ['float16', 'bfloat16']] as const) {
      const src = from === 'float32' ? x : x.to(from);
      const a = Tensor.empty(src.shape, to), b = Tensor.empty(src.shape, to);
      native().cast(a, src, false);
      native().cast(b, src, true);
      const [da, db] = [new Uint8Array((await a.data()).buffer), new Uint8Array((await b.data()).buffer)];
      expect(Buffer.compare(Buffer.from(da), Buffer.from(db)), `${from} -> ${to}`).toBe(0);
    }
  });
});
