// The CPU kernels against bitsandbytes' own outputs (test/fixtures/bnb_vectors.safetensors,
// produced by bitsandbytes 0.50 on an H100): identical bytes where the algorithm is
// deterministic, stated tolerances where summation order differs.
import { describe, expect, it } from 'vitest';
import {
  dequantize4bit, dequantizeBlockwise, int8LinearCpu, int8LinearMatmul, int8MmDequant, int8OutlierMatmulAdd, int8VectorwiseQuant,
  int8VectorwiseQuantMask,
  quantize4bit, quantizeBlockwise, QuantState, quantMap,
} from '../lib/functional.js';
import { readSafetensors } from '../lib/io/safetensors.js';
import { Linear4bit } from '../lib/nn/Linear4bit.js';
import { Linear8bitLt } from '../lib/nn/Linear8bitLt.js';
import { bytes, firstDiff, relL2 } from './helpers/compare.js';
import { Tensor } from '../lib/tensor.js';

const { tensors: ref, metadata } = readSafetensors(new URL('./fixtures/bnb_vectors.safetensors', import.meta.url).pathname);
const get = (k: string): Tensor => {
  const t = ref.get(k);
  if (!t) throw new Error(`fixture lacks ${k}`);
  return t;
};
function expectSameBytes(actual: Tensor, expected: Tensor, what: string): void {
  expect(actual.nbytes, `${what}: byte size`).toBe(expected.nbytes);
  expect(firstDiff(bytes(actual), bytes(expected)), `${what}: first differing byte`).toBe(-1);
}
/** ULP distance of two values in the spacing of `dtype` (float32: 2^-23 relative). */
function ulps(a: number, b: number, dtype: 'float32' | 'float16'): number {
  if (a === b) return 0;
  const m = Math.max(Math.abs(a), Math.abs(b));
  const mantissa = dtype === 'float32' ? 23 : 10;
  const minExp = dtype === 'float32' ? -126 : -14;
  const e = Math.max(Math.floor(Math.log2(m)), minExp);
  return Math.abs(a - b) / 2 ** (e - mantissa);
}
function maxUlps(a: Float32Array, b: Float32Array, dtype: 'float32' | 'float16'): number {
  expect(a.length).toBe(b.length);
  let worst = 0;
  for (let i = 0; i < a.length; i++) worst = Math.max(worst, ulps(a[i]!, b[i]!, dtype));
  return worst;
}

describe('codebooks and maps (native/formats.h)', () => {
  it('NF4 and FP4 quant maps equal bitsandbytes get_4bit_type', () => {
    expectSameBytes(quantMap('nf4'), get('q4.f32.nf4.bs64.dq0.code'), 'nf4 code');
    expectSameBytes(quantMap('fp4'), get('q4.f32.fp4.bs64.dq0.code'), 'fp4 code');
  });
  it('dynamic maps equal create_dynamic_map(signed) and (unsigned)', () => {
    expectSameBytes(quantMap('dynamic'), get('dynamic_map_signed'), 'signed');
    expectSameBytes(quantMap('dynamic_unsigned'), get('dynamic_map_unsigned'), 'unsigned');
    expectSameBytes(quantMap('dynamic'), get('qb.bs256.code'), 'quantize_blockwise code');
  });
});

const q4Cases: [string, string, number][] = [];
for (const qt of ['nf4', 'fp4']) {
  for (const bs of [64, 128, 256, 4096]) q4Cases.push(['f32', qt, bs]);
  q4Cases.push(['odd_f16', qt, 64]);
}

describe.each([false, true])('quantize4bit vs bitsandbytes (ref kernel: %s)', (useRef) => {
  for (const [inp, qt, bs] of q4Cases) {
    for (const dq of [0, 1]) {
      const key = `q4.${inp}.${qt}.bs${bs}.dq${dq}`;
      it(`${key}: packed, absmax, nested state and offset`, () => {
        const x = get(inp === 'f32' ? 'q4.input_f32' : 'q4.input_odd_f16');
        const [packed, state] = quantize4bit(x, { quantType: qt as 'nf4' | 'fp4', blocksize: bs, compressStatistics: dq === 1, ref: useRef });
        expect(packed.shape).toEqual([Math.floor((x.numel + 1) / 2), 1]);
        expectSameBytes(packed, get(`${key}.packed`), 'packed');
        expectSameBytes(state.absmax, get(`${key}.absmax`), 'absmax');
        expectSameBytes(state.code, get(`${key}.code`), 'code');
        if (dq) {
          expectSameBytes(state.state2!.absmax, get(`${key}.nested_absmax`), 'nested_absmax');
          expectSameBytes(state.state2!.code, get(`${key}.nested_code`), 'nested_code');
          const off = state.offsetValue(), want = (get(`${key}.offset`).dataSync() as Float32Array)[0]!;
          expect(Math.abs(off - want) / Math.abs(want)).toBeLessThanOrEqual(1e-6);
        }
        if (ref.has(`${key}.dequant`)) {
          const want = get(`${key}.dequant`);
          const out = dequantize4bit(packed, state, { ref: useRef });
          expect(out.dtype).toBe(want.dtype);
          expect(out.shape).toEqual(want.shape);
          expect(maxUlps(out.toFloat32Sync(), want.toFloat32Sync(), want.dtype as 'float32' | 'float16')).toBeLessThanOrEqual(1);
        }
      });
    }
  }
});

describe('quantizeBlockwise (8-bit dynamic) vs bitsandbytes', () => {
  for (const bs of [256, 4096]) {
    for (const useRef of [false, true]) {
      it(`bs${bs} (ref ${useRef}): q, absmax identical, dequant within 1 ulp`, () => {
        const [q, state] = quantizeBlockwise(get('q4.input_f32'), { blocksize: bs, ref: useRef });
        expectSameBytes(q, get(`qb.bs${bs}.q`), 'q');
        expectSameBytes(state.absmax, get(`qb.bs${bs}.absmax`), 'absmax');
        const out = dequantizeBlockwise(q, state, { ref: useRef });
        expect(maxUlps(out.toFloat32Sync(), get(`qb.bs${bs}.dequant`).toFloat32Sync(), 'float32')).toBeLessThanOrEqual(1);
      });
    }
  }
});

describe('LLM.int8() ops vs bitsandbytes', () => {
  for (const th of ['0.0', '6.0']) {
    for (const useRef of [false, true]) {
      it(`int8VectorwiseQuant threshold ${th} (ref ${useRef}): CA, SCA, outlier columns identical`, () => {
        const [CA, SCA, cols] = int8VectorwiseQuant(get('i8.x'), Number(th), { ref: useRef });
        expectSameBytes(CA, get(`i8.th${th}.CA`), 'CA');
        expectSameBytes(SCA, get(`i8.th${th}.SCA`), 'SCA');
        if (th === '0.0') expect(cols).toBeNull();
        else expect(Array.from(cols!.dataSync() as Int32Array)).toEqual(Array.from(get(`i8.th${th}.outlier_cols`).dataSync() as Int32Array));
      });
    }
  }
  it('weight quantization reproduces CB and SCB', () => {
    const [CB, SCB] = int8VectorwiseQuant(get('i8.w'), 0);
    expectSameBytes(CB, get('i8.CB'), 'CB');
    expectSameBytes(SCB, get('i8.SCB'), 'SCB');
  });
  for (const useRef of [false, true]) {
    it(`int8LinearMatmul (ref ${useRef}) reproduces C32 exactly`, () => {
      expectSameBytes(int8LinearMatmul(get('i8.th0.0.CA'), get('i8.CB'), { ref: useRef }), get('i8.C32'), 'C32');
    });
    it(`int8MmDequant (ref ${useRef}) within 1 float16 ulp`, () => {
      const out = int8MmDequant(get('i8.C32'), get('i8.th0.0.SCA'), get('i8.SCB'), { bias: get('i8.bias'), ref: useRef });
      expect(out.dtype).toBe('float16');
      expect(maxUlps(out.toFloat32Sync(), get('i8.mm_dequant').toFloat32Sync(), 'float16')).toBeLessThanOrEqual(1);
    });
  }
});

describe('nn layers vs bitsandbytes', () => {
  for (const th of [0, 6]) {
    it(`Linear8bitLt threshold ${th} within 1e-3 relative L2`, () => {
      const layer = Linear8bitLt.fromFloat(get('i8.w'), get('i8.bias'), { threshold: th });
      const out = layer.forward(get('i8.x'));
      expect(out.dtype).toBe('float16');
      expect(relL2(out.toFloat32Sync(), get(`lin8.th${th}.0.out`).toFloat32Sync())).toBeLessThan(1e-3);
    });
  }
  it('Linear8bitLt on the CPU (one fused native task) equals the op-by-op kernels bit for bit', () => {
    // float16 and float32 x, with and without bias, threshold 0 and 6 (outlier columns present
    // in i8.x at 6), one row and many: the fused task runs the same four kernels.
    for (const th of [0, 6])
      for (const withBias of [true, false])
        for (const xdt of ['float16', 'float32'] as const) {
          const layer = Linear8bitLt.fromFloat(get('i8.w'), withBias ? get('i8.bias') : null, { threshold: th });
          for (const x of [get('i8.x'), get('i8.x').narrow(0, 1)]) {
            const xin = x.to(xdt);
            const got = layer.forward(xin);
            const xh = xin.to('float16');
            const [CA, SCA, mask] = int8VectorwiseQuantMask(xh, th);
            const want = int8MmDequant(int8LinearMatmul(CA, layer.CB), SCA, layer.SCB, { bias: withBias ? get('i8.bias') : null });
            if (th > 0) int8OutlierMatmulAdd(want, xh, mask, layer.CB, layer.SCB);
            expect(got.dtype).toBe(xdt);
            expect(firstDiff(bytes(got), bytes(want.to(xdt))), `th ${th} bias ${withBias} ${xdt} rows ${x.shape[0]}`).toBe(-1);
          }
        }
    expect(() => int8LinearCpu(Tensor.empty([2, 7], 'float16'), get('i8.CB'), get('i8.SCB'), null, 0)).toThrow(/int8LinearCpu: shape mismatch: x float16\[2, 7\]/);
    expect(() => int8LinearCpu(get('i8.x'), get('i8.CB'), get('i8.SCB'), null, -1)).toThrow(/threshold must be a finite number >= 0/);
  });
  it('Linear8bitLt with threshold 6 differs from threshold 0 (the outlier path is exercised)', () => {
    const a = get('lin8.th0.0.out').toFloat32Sync(), b = get('lin8.th6.0.out').toFloat32Sync();
    const outA = Linear8bitLt.fromFloat(get('i8.w'), get('i8.bias'), { threshold: 0 }).forward(get('i8.x')).toFloat32Sync();
    const outB = Linear8bitLt.fromFloat(get('i8.w'), get('i8.bias'), { threshold: 6 }).forward(get('i8.x')).toFloat32Sync();
    expect(relL2(a, b)).toBeGreaterThan(1e-3);
    expect(relL2(outB, b)).toBeLessThan(relL2(outA, b));
  });
  for (const qt of ['nf4', 'fp4'] as const) {
    for (const dt of ['float16', 'float32'] as const) {
      it(`Linear4bit ${qt} compute ${dt}: batch 1 (GEMV) and batch 64 within 1e-3 relative L2`, () => {
        const w = get('i8.w'), bias = get('i8.bias'), x = get('i8.x');
        const wIn = dt === 'float32' ? w.to('float32') : w;
        const layer = Linear4bit.fromFloat(wIn, bias.to(dt), { quantType: qt, blocksize: 64, compressStatistics: true, computeDtype: dt });
        const xIn = x.to(dt);
        const out64 = layer.forward(xIn);
        expect(out64.dtype).toBe(dt);
        expect(relL2(out64.toFloat32Sync(), get(`lin4.${qt}.${dt}.out_b64`).toFloat32Sync())).toBeLessThan(1e-3);
        const out1 = layer.forward(xIn.narrow(0, 1));
        expect(out1.shape).toEqual([1, 256]);
        expect(relL2(out1.toFloat32Sync(), get(`lin4.${qt}.${dt}.out_b1`).toFloat32Sync())).toBeLessThan(1e-3);
      });
    }
  }
});

describe('Linear4bit compute dtype bfloat16 (no bnb fixture: compared with its float32 output)', () => {
  for (const qt of ['nf4', 'fp4'] as const) {
    it(`${qt}: within bfloat16 precision of bitsandbytes' float32 result`, () => {
      const w = get('i8.w').to('float32'), bias = get('i8.bias').to('bfloat16'), x = get('i8.x').to('bfloat16');
      const layer = Linear4bit.fromFloat(w, bias, { quantType: qt, blocksize: 64, compressStatistics: true, computeDtype: 'bfloat16' });
      const out = layer.forward(x);
      expect(out.dtype).toBe('bfloat16');
      // bfloat16 keeps 8 significant bits: inputs, bias and output rounding give ~4e-3 rel L2
      expect(relL2(out.toFloat32Sync(), get(`lin4.${qt}.float32.out_b64`).toFloat32Sync())).toBeLessThan(1e-2);
    });
  }
});

describe('round-trip error of bitsandbytes (fixture metadata q4_errors)', () => {
  const errs = (JSON.parse(metadata.meta ?? '{}') as { q4_errors?: Record<string, { mean_abs: number; max_abs: number }> }).q4_errors ?? {};
  it('the fixture carries the error table', () => expect(Object.keys(errs).length).toBeGreaterThanOrEqual(20));
  for (const [key, e] of Object.entries(errs)) {
    it(`${key}: mean and max abs error equal bitsandbytes' to float32 rounding`, () => {
      const [, inp, qt, bsTag, dqTag] = key.split('.') as [string, string, 'nf4' | 'fp4', string, string];
      const x = get(inp === 'f32' ? 'q4.input_f32' : 'q4.input_odd_f16');
      const [packed, state] = quantize4bit(x, { quantType: qt, blocksize: Number(bsTag.slice(2)), compressStatistics: dqTag === 'dq1' });
      const back = dequantize4bit(packed, state).toFloat32Sync(), xs = x.toFloat32Sync();
      let sum = 0, max = 0;
      for (let i = 0; i < xs.length; i++) {
        const d = Math.abs(back[i]! - xs[i]!);
        sum += d;
        max = Math.max(max, d);
      }
      expect(Math.abs(sum / xs.length - e.mean_abs)).toBeLessThan(1e-6);
      expect(Math.abs(max - e.max_abs)).toBeLessThan(1e-6);
    });
  }
});

describe('QuantState serialization', () => {
  it('asDict(packed) matches the keys and JSON of a transformers-saved checkpoint, and fromDict round-trips', () => {
    const ck = readSafetensors(new URL('./fixtures/tiny-random-gpt2-bnb-nf4/model.safetensors', import.meta.url).pathname).tensors;
    const prefix = 'transformer.h.0.attn.c_attn.weight.';
    const dict: Record<string, Tensor> = {};
    for (const [k, v] of ck) if (k.startsWith(prefix)) dict[k.slice(prefix.length)] = v;
    const state = QuantState.fromDict(dict);
    expect(state.quantType).toBe('nf4');
    expect(state.shape).toEqual([192, 64]);
    expect(state.nested).toBe(true);
    const again = state.asDict(true);
    expect(Object.keys(again).sort()).toEqual(Object.keys(dict).sort());
    for (const k of Object.keys(dict)) expectSameBytes(again[k] as Tensor, dict[k]!, k);
  });
});
