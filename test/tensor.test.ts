import { describe, expect, it } from 'vitest';
import { Tensor } from '../lib/tensor.js';

describe('Tensor', () => {
  it('round-trips every dtype through native memory', async () => {
    const cases = [
      [new Float32Array([1.5, -2, 3.25]), 'float32'],
      [new Uint16Array([0x3c00, 0xc000, 0x7bff]), 'float16'],
      [new Uint16Array([0x3f80, 0xc000]), 'bfloat16'],
      [new Int8Array([-128, 0, 127]), 'int8'],
      [new Uint8Array([0, 255, 7]), 'uint8'],
      [new Int32Array([-5, 1 << 30]), 'int32'],
      [new BigInt64Array([-1n, 1n << 40n]), 'int64'],
    ] as const;
    for (const [arr, dtype] of cases) {
      const t = Tensor.from(arr, undefined, dtype);
      expect(t.dtype).toBe(dtype);
      expect(Array.from(await t.data() as ArrayLike<unknown>)).toEqual(Array.from(arr as ArrayLike<unknown>));
      t.dispose();
    }
  });

  it('converts half types to float32', async () => {
    const h = Tensor.from(new Uint16Array([0x3c00, 0xc000, 0x0001, 0x7c00]), [4], 'float16');
    expect(Array.from(await h.toFloat32())).toEqual([1, -2, 2 ** -24, Infinity]);
    const f = Tensor.from([1, 0.1, 65520, -3e-8]);
    expect(Array.from(await f.to('float16').data() as Uint16Array)).toEqual([0x3c00, 0x2e66, 0x7c00, 0x8001]);
    expect(Array.from(await f.to('bfloat16').data() as Uint16Array)).toEqual([0x3f80, 0x3dcd, 0x4780, 0xb301]);
  });

  it('views share memory and outlive a disposed sibling', async () => {
    const t = Tensor.from(new Float32Array([1, 2, 3, 4, 5, 6]), [3, 2]);
    const row = t.narrow(1, 2);
    expect(row.shape).toEqual([2, 2]);
    t.dispose();
    expect(Array.from(await row.data() as Float32Array)).toEqual([3, 4, 5, 6]);
    expect(() => t.view([6])).toThrow(/after dispose/);
    expect(() => row.view([5])).toThrow(/cannot view/);
    expect(() => row.narrow(1, 2)).toThrow(/outside/);
  });

  it('rejects bad shapes, devices and data sizes', () => {
    expect(() => Tensor.empty([2, -1])).toThrow(/bad tensor shape/);
    expect(() => Tensor.empty([2], 'float32', 'tpu')).toThrow(/unknown device/);
    expect(() => Tensor.from(new Float32Array(3), [2, 2])).toThrow(/needs 4 elements/);
    expect(() => Tensor.empty([2], 'float64' as never)).toThrow(/dtype must be one of/);
  });
});
