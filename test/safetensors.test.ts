import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { openCheckpoint, readSafetensors, readSafetensorsHeader, writeCheckpoint, writeSafetensors } from '../lib/io/safetensors.js';
import { Tensor } from '../lib/tensor.js';
import { tempDir } from './helpers/tmp.js';

const dir = tempDir();

/** Builds a safetensors file by hand so each corruption is exactly the one under test. */
function rawFile(name: string, header: unknown, dataBytes: number, opts: { lenOverride?: bigint; truncateTo?: number } = {}): string {
  const h = Buffer.from(typeof header === 'string' ? header : JSON.stringify(header));
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(opts.lenOverride ?? BigInt(h.length));
  let buf = Buffer.concat([len, h, Buffer.alloc(dataBytes, 7)]);
  if (opts.truncateTo !== undefined) buf = buf.subarray(0, opts.truncateTo);
  const p = join(dir, name);
  writeFileSync(p, buf);
  return p;
}

describe('safetensors', () => {
  it('writes and reads back every dtype with metadata, zero-copy', async () => {
    const p = join(dir, 'rt.safetensors');
    const tensors = {
      a: Tensor.from(new Float32Array([1, 2, 3, 4, 5, 6]), [2, 3]),
      b: Tensor.from(new Uint16Array([0x3c00, 0x4000]), [2], 'float16'),
      c: Tensor.from(new Uint16Array([0x3f80]), [1, 1], 'bfloat16'),
      d: Tensor.from(new Int8Array([-3, 4, 5]), [3]),
      e: Tensor.from(new Uint8Array([9]), []),
      f: Tensor.from(new Int32Array([7, -7]), [2]),
      g: Tensor.from(new BigInt64Array([123n]), [1]),
      empty: Tensor.from(new Float32Array(0), [0, 4]),
    };
    await writeSafetensors(p, tensors, { format: 'pt', note: 'hello' });
    const { tensors: back, metadata } = readSafetensors(p);
    expect(metadata).toEqual({ format: 'pt', note: 'hello' });
    for (const [k, t] of Object.entries(tensors)) {
      const b = back.get(k)!;
      expect(b.dtype).toBe(t.dtype);
      expect(b.shape).toEqual(t.shape);
      expect(Array.from((await b.data()) as ArrayLike<unknown>)).toEqual(Array.from((await t.data()) as ArrayLike<unknown>));
    }
    expect(readFileSync(p).readBigUInt64LE(0) % 8n).toBe(0n);
    expect(readdirSync(dir).filter((f) => f.endsWith('.tmp'))).toEqual([]);
  });

  it('reads the fixture model', () => {
    const { tensors } = readSafetensors('test/fixtures/tiny-random-gpt2/model.safetensors');
    expect(tensors.get('transformer.wte.weight')?.shape).toEqual([1000, 64]);
  });

  it('writes sharded checkpoints with an index and reads them back', async () => {
    const d = join(dir, 'sharded');
    mkdirSync(d);
    const ts = new Map<string, Tensor>();
    for (let i = 0; i < 5; i++) ts.set(`w${i}`, Tensor.from(new Float32Array(100).fill(i), [10, 10]));
    const names = await writeCheckpoint(d, ts, { maxShardBytes: 900 });
    expect(names).toEqual(['model-00001-of-00003.safetensors', 'model-00002-of-00003.safetensors', 'model-00003-of-00003.safetensors']);
    const idx = JSON.parse(readFileSync(join(d, 'model.safetensors.index.json'), 'utf8'));
    expect(idx.weight_map.w4).toBe('model-00003-of-00003.safetensors');
    const ck = openCheckpoint(d);
    expect(ck.keys().sort()).toEqual(['w0', 'w1', 'w2', 'w3', 'w4']);
    expect((await ck.get('w3').toFloat32())[99]).toBe(3);
    ck.close();
  });

  describe('rejects bad files with a clear error', () => {
    const ok = { x: { dtype: 'F32', shape: [2], data_offsets: [0, 8] } };
    it('truncated below the length prefix', () => {
      const p = rawFile('t1.safetensors', ok, 8, { truncateTo: 5 });
      expect(() => readSafetensorsHeader(p)).toThrow(/t1\.safetensors: truncated: the file is 5 bytes/);
    });
    it('truncated data section', () => {
      const p = rawFile('t2.safetensors', ok, 4);
      expect(() => readSafetensors(p)).toThrow(/t2\.safetensors: tensor 'x': data_offsets \[0, 8\] run past the end of the data section \(4 bytes\)/);
    });
    it('header length past the end', () => {
      const p = rawFile('t3.safetensors', ok, 8, { lenOverride: 1n << 40n });
      expect(() => readSafetensors(p)).toThrow(/header length 1099511627776 runs past the end of the file/);
    });
    it('offsets past the end', () => {
      const p = rawFile('t4.safetensors', { x: { dtype: 'F32', shape: [2], data_offsets: [8, 16] } }, 8);
      expect(() => readSafetensors(p)).toThrow(/tensor 'x': data_offsets \[8, 16\] run past the end/);
    });
    it('overlapping tensors', () => {
      const p = rawFile('t5.safetensors', { x: { dtype: 'F32', shape: [2], data_offsets: [0, 8] }, y: { dtype: 'F32', shape: [2], data_offsets: [4, 12] } }, 12);
      expect(() => readSafetensors(p)).toThrow(/tensors 'x' \[0, 8\] and 'y' \[4, 12\] overlap/);
    });
    it('unknown dtype', () => {
      const p = rawFile('t6.safetensors', { x: { dtype: 'F33', shape: [2], data_offsets: [0, 8] } }, 8);
      expect(() => readSafetensors(p)).toThrow(/tensor 'x': unknown dtype "F33"/);
      const q = rawFile('t6b.safetensors', { x: { dtype: 'F64', shape: [1], data_offsets: [0, 8] } }, 8);
      expect(() => readSafetensors(q)).toThrow(/tensor 'x': unsupported dtype "F64"/);
    });
    it('shape and byte length disagree', () => {
      const p = rawFile('t7.safetensors', { x: { dtype: 'F32', shape: [3], data_offsets: [0, 8] } }, 8);
      expect(() => readSafetensors(p)).toThrow(/tensor 'x': shape \[3\] of F32 needs 12 bytes but data_offsets span 8/);
    });
    it('non-JSON header', () => {
      const p = rawFile('t8.safetensors', '{"x": {dtype', 8);
      expect(() => readSafetensors(p)).toThrow(/t8\.safetensors: header is not valid JSON/);
    });
    it('bad metadata and bad shapes', () => {
      expect(() => readSafetensors(rawFile('t9.safetensors', { __metadata__: { a: 1 } }, 0))).toThrow(/__metadata__ must map strings to strings/);
      expect(() => readSafetensors(rawFile('t10.safetensors', { x: { dtype: 'F32', shape: [-1], data_offsets: [0, 0] } }, 0))).toThrow(/shape \[-1\] is not a list/);
    });
    it('a missing file', () => {
      expect(() => readSafetensors(join(dir, 'nope.safetensors'))).toThrow(/cannot open .*nope\.safetensors/);
    });
    it('a folder with only a pickle checkpoint', () => {
      const d = join(dir, 'pickle');
      mkdirSync(d);
      writeFileSync(join(d, 'pytorch_model.bin'), 'x');
      expect(() => openCheckpoint(d)).toThrow(/only a pickle checkpoint \(pytorch_model\.bin\).*never runs code/);
      expect(existsSync(join(d, 'model.safetensors'))).toBe(false);
    });
  });
});
