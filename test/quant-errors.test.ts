// Bad input gets a clear error (in TS and again in the native bindings, which must never
// crash), and the documented NaN/Inf behaviour holds.
import { describe, expect, it } from 'vitest';
import {
  dequantize4bit, dequantizeBlockwise, gemm4bitLayout, gemv4bitLayout, int8LinearMatmul, int8MmDequant, int8VectorwiseQuant, matmul4bit,
  quantize4bit, quantizeBlockwise, QuantState,
} from '../lib/functional.js';
import { native } from '../lib/native.js';
import { Linear4bit } from '../lib/nn/Linear4bit.js';
import { Linear8bitLt } from '../lib/nn/Linear8bitLt.js';
import { packDictToTensor } from '../lib/quantization/quant-state.js';
import { Tensor } from '../lib/tensor.js';

const f32 = (vals: number[], shape?: number[]) => Tensor.from(new Float32Array(vals), shape ?? [vals.length]);
const ramp = (n: number, shape?: number[]) => f32(Array.from({ length: n }, (_, i) => Math.sin(i + 1)), shape);
const nat = () => native() as unknown as Record<string, (...a: unknown[]) => unknown>;

describe('unsupported blocksize or quant type', () => {
  it('quantize4bit rejects blocksizes outside 32..4096 powers of two', () => {
    for (const bs of [16, 48, 100, 8192, 0, -64])
      expect(() => quantize4bit(ramp(256), { blocksize: bs })).toThrow(new RegExp(`blocksize ${bs} is not supported`));
  });
  it('quantizeBlockwise rejects blocksize 32 (8-bit starts at 64)', () => {
    expect(() => quantizeBlockwise(ramp(256), { blocksize: 32 })).toThrow(/blocksize 32 is not supported.*64, 128/);
  });
  it('quantize4bit rejects unknown quant types', () => {
    expect(() => quantize4bit(ramp(64), { quantType: 'int4' as 'nf4' })).toThrow(/quant type must be 'nf4' or 'fp4', got "int4"/);
  });
  it('the native layer validates too (no crash on a bypassed TS check)', () => {
    const x = ramp(64), packed = Tensor.empty([32], 'uint8'), absmax = Tensor.empty([1], 'float32');
    expect(() => nat().quantize4bit(x, packed, absmax, 48, 1)).toThrow(/quantize4bit: blocksize 48 is not supported/);
    expect(() => nat().quantize4bit(x, packed, absmax, 64, 7)).toThrow(/quant type code 7 is not fp4 \(0\) or nf4 \(1\)/);
    expect(() => nat().quantize4bit(x, Tensor.empty([31], 'uint8'), absmax, 64, 1)).toThrow(/'packed' must have 32/);
    expect(() => nat().quantize4bit(x, packed, Tensor.empty([1], 'float16'), 64, 1)).toThrow(/'absmax' must be float32/);
    expect(() => nat().dequantizeBlockwise(Tensor.empty([255], 'float32'), Tensor.empty([64], 'uint8'), absmax, Tensor.empty([64]), 64)).toThrow(/'code' must have 256/);
  });
});

describe('wrong dtype', () => {
  it('quantize ops need float32/float16/bfloat16 input', () => {
    const i8 = Tensor.from(new Int8Array(64), [64], 'int8');
    expect(() => quantize4bit(i8)).toThrow(/'A' must be float32, float16 or bfloat16, got int8/);
    expect(() => quantizeBlockwise(i8)).toThrow(/must be float32, float16 or bfloat16, got int8/);
    expect(() => int8VectorwiseQuant(i8)).toThrow(/must be float32, float16 or bfloat16, got int8/);
  });
  it('int8 ops need int8/int32 inputs', () => {
    expect(() => int8LinearMatmul(ramp(8, [2, 4]), Tensor.from(new Int8Array(8), [2, 4], 'int8'))).toThrow(/A and B must be int8, got float32 and int8/);
    expect(() => int8MmDequant(ramp(4, [2, 2]), ramp(2), ramp(2))).toThrow(/A must be int32, got float32/);
  });
  it('dequantize4bit needs a uint8 packed tensor; matmul4bit a float x', () => {
    const [p, st] = quantize4bit(ramp(128), { blocksize: 64 });
    expect(() => dequantize4bit(ramp(64), st)).toThrow(/packed input must be uint8, got float32/);
    const [pw, sw] = quantize4bit(ramp(64, [8, 8]), { blocksize: 32 });
    expect(() => matmul4bit(Tensor.from(new Int8Array(8), [1, 8], 'int8'), pw, sw)).toThrow(/'A' must be float32, float16 or bfloat16/);
    expect(() => matmul4bit(ramp(8, [1, 8]), ramp(32), sw)).toThrow(/B must be the packed uint8 weight of \[8, 8\]/);
    p.dispose();
  });
});

describe('shape mismatch', () => {
  const [pw, sw] = quantize4bit(ramp(64 * 48, [48, 64]), { quantType: 'nf4', blocksize: 64, compressStatistics: true });
  it('matmul4bit: x features vs weight in_features', () => {
    expect(() => matmul4bit(ramp(3 * 60, [3, 60]), pw, sw)).toThrow(/shape mismatch: x \[3, 60\] has 60 features but the weight is \[48, 64\]/);
    expect(() => nat().matmul4bit(ramp(60, [1, 60]), pw, sw.absmax, sw.state2!.absmax, sw.state2!.code, sw.offset, null,
      Tensor.empty([1, 48]), 48, 64, 64, 1)).toThrow(/matmul4bit: shape mismatch/);
  });
  it('matmul4bit: bias length', () => {
    expect(() => matmul4bit(ramp(64, [1, 64]), pw, sw, ramp(47))).toThrow(/bias has 47 elements, expected 48/);
  });
  it('gemv4bitLayout: CUDA weights only; the native size check names what a weight lacks', () => {
    expect(() => gemv4bitLayout(pw, sw)).toThrow(/gemv4bitLayout: the row layout is for weights on a CUDA device; this weight is on cpu/);
    const bytes = (N: number, K: number, bs: number) => nat().rowsLayout4bitBytes(N, K, bs, true);
    if ((native().info() as { cudaCompiled: boolean }).cudaCompiled) {
      expect(bytes(48, 64, 64)).toBeGreaterThan(48 * 32);
      expect(() => bytes(48, 77, 64)).toThrow(/gemv4bitLayout: weight \[48, 77\] blocksize 64: K must be a multiple of 32/);
      expect(() => bytes(48, 96, 64)).toThrow(/every row must be whole absmax blocks/);
      expect(() => bytes(8, 32768, 64)).toThrow(/K is larger than 16384/);
    } else {
      expect(() => bytes(48, 64, 64)).toThrow(/gemv4bitLayout: .*built without CUDA/);
    }
    // A CPU layout buffer cannot be filled, and a wrong-sized one is refused by name.
    expect(() => nat().rowsLayout4bit(pw, sw.absmax, sw.state2!.absmax, sw.state2!.code, sw.offset, Tensor.empty([7], 'uint8'),
      48, 64, 64, 1)).toThrow(/gemv4bitLayout: 'layout'|gemv4bitLayout: .*(cpu|CUDA)/);
    expect(() => matmul4bit(ramp(64, [1, 64]), pw, sw, null, { gemvLayout: Tensor.empty([7], 'float32') }))
      .toThrow(/matmul4bit: 'gemvLayout' must be uint8/);
    expect(() => matmul4bit(ramp(64, [1, 64]), pw, sw, null, { gemvLayout: Tensor.empty([7], 'uint8') }))
      .toThrow(/matmul4bit: 'gemvLayout' must have \d+ elements, got uint8\[7\]/);
    // the weight itself is checked as matmul4bit checks it (packed size, absmax codes)
    expect(() => nat().rowsLayout4bit(Tensor.empty([5], 'uint8'), sw.absmax, sw.state2!.absmax, sw.state2!.code, sw.offset,
      Tensor.empty([7], 'uint8'), 48, 64, 64, 1)).toThrow(/gemv4bitLayout: 'packed' must have 1536 elements, got uint8\[5\]/);
    expect(() => nat().rowsLayout4bit(pw, sw.absmax, sw.state2!.absmax, null, sw.offset, Tensor.empty([7], 'uint8'),
      48, 64, 64, 1)).toThrow(/gemv4bitLayout: double-quantized absmax needs nestedCode and offset/);
  });
  it('gemm4bitLayout: CUDA weights only; the native size check names what a weight lacks', () => {
    expect(() => gemm4bitLayout(pw, sw)).toThrow(/gemm4bitLayout: the tiles layout is for weights on a CUDA device; this weight is on cpu/);
    const bytes = (N: number, K: number, bs: number) => nat().tilesLayout4bitBytes(N, K, bs, true);
    if ((native().info() as { cudaCompiled: boolean }).cudaCompiled) {
      expect(bytes(48, 64, 64)).toBeGreaterThan(48 * 32);
      expect(() => bytes(48, 96, 32)).toThrow(/gemm4bitLayout: weight \[48, 96\] blocksize 32: K must be a multiple of 64/);
      expect(() => bytes(48, 128, 32)).toThrow(/every row must be whole absmax blocks of at least 64/);
      expect(() => bytes(48, 192, 128)).toThrow(/every row must be whole absmax blocks of at least 64/);
    } else {
      expect(() => bytes(48, 64, 64)).toThrow(/gemm4bitLayout: .*built without CUDA/);
    }
    expect(() => nat().tilesLayout4bit(pw, sw.absmax, sw.state2!.absmax, sw.state2!.code, sw.offset, Tensor.empty([7], 'uint8'),
      48, 64, 64, 1)).toThrow(/gemm4bitLayout: 'layout'|gemm4bitLayout: .*(cpu|CUDA)/);
    expect(() => matmul4bit(ramp(128, [2, 64]), pw, sw, null, { gemmLayout: Tensor.empty([7], 'float32') }))
      .toThrow(/matmul4bit: 'gemmLayout' must be uint8/);
    expect(() => matmul4bit(ramp(128, [2, 64]), pw, sw, null, { gemmLayout: Tensor.empty([7], 'uint8') }))
      .toThrow(/matmul4bit: 'gemmLayout' must have \d+ elements, got uint8\[7\]/);
    expect(() => nat().tilesLayout4bit(Tensor.empty([5], 'uint8'), sw.absmax, sw.state2!.absmax, sw.state2!.code, sw.offset,
      Tensor.empty([7], 'uint8'), 48, 64, 64, 1)).toThrow(/gemm4bitLayout: 'packed' must have 1536 elements, got uint8\[5\]/);
  });
  it('Linear4bit with gemmLayout on a CPU weight computes as without it', () => {
    const plain = new Linear4bit(pw, sw, null), tiles = new Linear4bit(pw, sw, null, { gemmLayout: true, computeDtype: 'float16' });
    const x = ramp(3 * 64, [3, 64]);
    const p16 = new Linear4bit(pw, sw, null, { computeDtype: 'float16' });
    expect(Array.from(tiles.forward(x).toArray())).toEqual(Array.from(p16.forward(x).toArray()));
    expect(plain.forward(x).shape).toEqual([3, 48]);
  });
  it('Linear4bit with gemvLayout on a CPU weight computes as without it', () => {
    const plain = new Linear4bit(pw, sw, null), rows = new Linear4bit(pw, sw, null, { gemvLayout: true });
    const x = ramp(64, [1, 64]);
    expect(Array.from(rows.forward(x).toArray())).toEqual(Array.from(plain.forward(x).toArray()));
  });
  it('Linear4bit / Linear8bitLt forward', () => {
    const l4 = new Linear4bit(pw, sw, null);
    expect(() => l4.forward(ramp(32, [1, 32]))).toThrow(/shape mismatch/);
    const l8 = Linear8bitLt.fromFloat(ramp(64 * 8, [8, 64]).to('float16'), null, { threshold: 6 });
    expect(() => l8.forward(ramp(32, [1, 32]))).toThrow(/shape mismatch: x \[1, 32\] has 32 features, the layer expects 64/);
  });
  it('int8LinearMatmul inner dimensions; int8MmDequant stats', () => {
    const a = Tensor.from(new Int8Array(6), [2, 3], 'int8'), b = Tensor.from(new Int8Array(8), [2, 4], 'int8');
    expect(() => int8LinearMatmul(a, b)).toThrow(/shape mismatch: A \[2, 3\] @ B\^T with B \[2, 4\]/);
    const c = Tensor.from(new Int32Array(6), [2, 3], 'int32');
    expect(() => int8MmDequant(c, ramp(3), ramp(3))).toThrow(/needs 2 row stats and 3 column stats, got 3 and 3/);
  });
  it('dequantize4bit: packed size vs state shape', () => {
    const [p, st] = quantize4bit(ramp(100), { blocksize: 32 });
    expect(() => dequantize4bit(p.view([-1]).narrow(0, 49), st)).toThrow(/49 packed bytes do not hold shape \[100\]/);
  });
});

describe('empty tensors', () => {
  const empty = Tensor.empty([0, 64], 'float32');
  it('every op names the empty argument', () => {
    expect(() => quantize4bit(empty)).toThrow(/quantize4bit: 'A' is empty \(shape \[0, 64\]\)/);
    expect(() => quantizeBlockwise(empty)).toThrow(/quantizeBlockwise: 'A' is empty/);
    expect(() => int8VectorwiseQuant(empty)).toThrow(/int8VectorwiseQuant: 'A' is empty/);
    const [pw, sw] = quantize4bit(ramp(64 * 4, [4, 64]));
    expect(() => matmul4bit(empty, pw, sw)).toThrow(/matmul4bit: 'A' is empty/);
    expect(() => int8LinearMatmul(Tensor.empty([0, 4], 'int8'), Tensor.from(new Int8Array(8), [2, 4], 'int8'))).toThrow(/'A' is empty/);
    expect(() => nat().quantize4bit(empty, Tensor.empty([0], 'uint8'), Tensor.empty([0]), 64, 1)).toThrow(/'x' is empty/);
  });
});

describe('disposed tensors and bad thresholds', () => {
  it('a disposed input throws, it does not crash', () => {
    const x = ramp(64);
    x.dispose();
    expect(() => quantize4bit(x)).toThrow(/used after dispose/);
  });
  it('int8VectorwiseQuant threshold must be finite and >= 0', () => {
    for (const th of [-1, NaN, Infinity]) expect(() => int8VectorwiseQuant(ramp(8, [2, 4]), th)).toThrow(/threshold must be a finite number >= 0/);
  });
});

describe('NaN and Inf (documented in native/cpu/quant_ops.h; same as bitsandbytes)', () => {
  it('4-bit: NaN is skipped by absmax and stored as code 0; an Inf poisons only its own block', () => {
    // block 0: [NaN, 1, -2, 0.5 ...]; block 1: [Inf, 1, ...]; block 2: ordinary
    const vals = new Float32Array(96).map((_, i) => Math.cos(i) * 0.5);
    vals[0] = NaN; vals[2] = -2;
    vals[32] = Infinity;
    const [p, st] = quantize4bit(Tensor.from(vals, [96]), { quantType: 'nf4', blocksize: 32 });
    const absmax = st.absmax.dataSync() as Float32Array, packed = p.dataSync() as Uint8Array;
    expect(absmax[0]).toBe(2);
    expect(absmax[1]).toBe(Infinity);
    expect(packed[0]! >> 4).toBe(0); // NaN -> code 0 (-1.0)
    expect(packed[16]! >> 4).toBe(0); // Inf * (1/Inf) = NaN -> code 0
    expect(packed[16]! & 15).toBe(7); // finite * 0 -> exact zero code
    const back = dequantize4bit(p, st).toFloat32Sync();
    expect(back[0]).toBe(-2); // NaN came back as -absmax
    expect(back[1]).toBeCloseTo(2 * 0.16093020141124725, 6); // cos(1)/2 / 2 = 0.135 -> NF4 level 0.1609
    expect(Number.isNaN(back[33]!)).toBe(true); // 0 * Inf
    expect(back.slice(64).every(Number.isFinite)).toBe(true);
  });
  it('int8: NaN is ignored by the row absmax and quantizes to 0; Inf is an outlier column when threshold > 0', () => {
    const x = f32([NaN, 1, -2, 0.5, 3, Infinity, 1, 1], [2, 4]).to('float16');
    const [CA, SCA] = int8VectorwiseQuant(x, 0);
    expect(Array.from(SCA.dataSync() as Float32Array)).toEqual([2, Infinity]);
    expect(Array.from(CA.dataSync() as Int8Array)).toEqual([0, 64, -127, 32, 0, 0, 0, 0]);
    const [CA6, SCA6, cols] = int8VectorwiseQuant(x, 6);
    expect(Array.from(cols!.dataSync() as Int32Array)).toEqual([1]);
    expect(Array.from(SCA6.dataSync() as Float32Array)).toEqual([2, 3]);
    expect(Array.from(CA6.dataSync() as Int8Array)).toEqual([0, 0, -127, 32, 127, 0, 42, 42]);
  });
});

describe('QuantState dicts with missing or bad keys', () => {
  const [, st] = quantize4bit(ramp(64 * 8, [8, 64]), { quantType: 'nf4', compressStatistics: true });
  const packed = st.asDict(true) as Record<string, Tensor>;
  it('round-trips', () => {
    const back = QuantState.fromDict(packed);
    expect(back.quantType).toBe('nf4');
    expect(back.shape).toEqual([8, 64]);
    expect(back.nested).toBe(true);
    expect(back.offsetValue()).toBe(st.offsetValue());
  });
  for (const k of ['absmax', 'quant_map', 'nested_absmax', 'nested_quant_map']) {
    it(`missing tensor '${k}'`, () => {
      const d = { ...packed };
      delete d[k];
      expect(() => QuantState.fromDict(d)).toThrow(new RegExp(`missing key '${k}'`));
    });
  }
  it('missing the packed quant_state item', () => {
    const d = { ...packed };
    delete d['quant_state.bitsandbytes__nf4'];
    expect(() => QuantState.fromDict(d)).toThrow(/expected packed or unpacked quant_state items, found neither/);
  });
  it('packed JSON without blocksize, or with a bad quant_type', () => {
    const d = { ...packed, 'quant_state.bitsandbytes__nf4': packDictToTensor({ quant_type: 'nf4', dtype: 'float32', shape: [8, 64], nested_blocksize: 256, nested_dtype: 'float32', nested_offset: 0.5 }) };
    expect(() => QuantState.fromDict(d)).toThrow(/missing key 'blocksize'/);
    const e = { ...packed, 'quant_state.bitsandbytes__nf4': packDictToTensor({ quant_type: 'int4', blocksize: 64, dtype: 'float32', shape: [8, 64], nested_blocksize: 256, nested_dtype: 'float32', nested_offset: 0.5 }) };
    expect(() => QuantState.fromDict(e)).toThrow(/quant_type must be 'nf4' or 'fp4', got "int4"/);
  });
  it('unknown keys are refused', () => {
    expect(() => QuantState.fromDict({ ...packed, bogus: packed.absmax! })).toThrow(/unexpected key 'bogus'/);
  });
  it('dequantizeBlockwise needs a QuantState', () => {
    expect(() => dequantizeBlockwise(Tensor.empty([64], 'uint8'), {} as QuantState)).toThrow(/quantState must be a QuantState/);
  });
});
