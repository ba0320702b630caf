// Fast CPU paths against the reference kernels over odd sizes and fresh random inputs, and
// the round-trip error of randn(1024, 1024) against bitsandbytes' published table.
import { describe, expect, it } from 'vitest';
import {
  dequantize4bit, dequantizeBlockwise, int8LinearMatmul, int8MmDequant, int8VectorwiseQuant, matmul4bit,
  quantize4bit, quantizeBlockwise,
} from '../lib/functional.js';
import { type DType, Tensor } from '../lib/tensor.js';
import { bytes, firstDiff, mulberry32, relL2 } from './helpers/compare.js';

// A fresh seed per run (printed, so a failure can be replayed with NIBBLE_TEST_SEED).
const SEED = Number(process.env.NIBBLE_TEST_SEED ?? (Date.now() % 1e9));
console.log(`quant-sweep seed ${SEED}`);

function randn(n: number, seed: number, scale = 1): Float32Array {
  const r = mulberry32(seed), out = new Float32Array(n);
  for (let i = 0; i < n; i += 2) {
    const u = Math.max(r(), 1e-12), v = r();
    const m = Math.sqrt(-2 * Math.log(u)) * scale;
    out[i] = m * Math.cos(2 * Math.PI * v);
    if (i + 1 < n) out[i + 1] = m * Math.sin(2 * Math.PI * v);
  }
  return out;
}
function tensorOf(values: Float32Array, shape: number[], dtype: DType): Tensor {
  const t = Tensor.from(values, shape, 'float32');
  if (dtype === 'float32') return t;
  const c = t.to(dtype);
  t.dispose();
  return c;
}

const DTYPES: DType[] = ['float32', 'float16', 'bfloat16'];
// Odd counts, partial final blocks, a single element, sizes straddling the SIMD width.
const SIZES = [1, 7, 31, 33, 100, 1023, 4097, 10010, 65537];

describe(`4-bit quantize/dequantize: fast == reference (seed ${SEED})`, () => {
  let s = SEED;
  for (const dtype of DTYPES) {
    for (const qt of ['nf4', 'fp4'] as const) {
      for (const bs of [32, 64, 128, 256, 512, 1024, 2048, 4096]) {
        for (const dq of [false, true]) {
          it(`${dtype} ${qt} bs${bs}${dq ? ' double-quant' : ''}`, () => {
            for (const n of SIZES) {
              const vals = randn(n, ++s, 3);
              // A zero block and an exact zero in the data: the NaN-code path of bnb.
              if (n > bs) vals.fill(0, 0, bs);
              const x = tensorOf(vals, [n], dtype);
              const [pf, sf] = quantize4bit(x, { quantType: qt, blocksize: bs, compressStatistics: dq });
              const [pr, sr] = quantize4bit(x, { quantType: qt, blocksize: bs, compressStatistics: dq, ref: true });
              expect(firstDiff(bytes(pf), bytes(pr)), `packed n=${n}`).toBe(-1);
              expect(firstDiff(bytes(sf.absmax), bytes(sr.absmax)), `absmax n=${n}`).toBe(-1);
              const df = dequantize4bit(pf, sf), dr = dequantize4bit(pf, sf, { ref: true });
              expect(firstDiff(bytes(df), bytes(dr)), `dequant n=${n}`).toBe(-1);
              if (n > bs && qt === 'nf4') {
                // all-zero block: bnb's NaN path gives code 0 (-1.0), which dequantizes to
                // -0 with an exact absmax (with double quant the decoded absmax is not 0)
                expect(bytes(pf)[0]).toBe(0);
                if (!dq) expect(Object.is(df.toFloat32Sync()[0], -0)).toBe(true);
              }
              for (const t of [x, pf, pr, df, dr]) t.dispose();
              sf.dispose();
              sr.dispose();
            }
          });
        }
      }
    }
  }
});

describe(`8-bit blockwise and LLM.int8 ops: fast == reference (seed ${SEED})`, () => {
  let s = SEED + 1000;
  for (const dtype of DTYPES) {
    it(`quantizeBlockwise ${dtype}, every blocksize, odd sizes`, () => {
      for (const bs of [64, 128, 256, 512, 1024, 2048, 4096]) {
        for (const n of [1, 63, 65, 5000, 12289]) {
          const x = tensorOf(randn(n, ++s, 2), [n], dtype);
          const [qf, sf] = quantizeBlockwise(x, { blocksize: bs });
          const [qr, sr] = quantizeBlockwise(x, { blocksize: bs, ref: true });
          expect(firstDiff(bytes(qf), bytes(qr)), `q bs${bs} n${n}`).toBe(-1);
          expect(firstDiff(bytes(sf.absmax), bytes(sr.absmax))).toBe(-1);
          expect(firstDiff(bytes(dequantizeBlockwise(qf, sf)), bytes(dequantizeBlockwise(qf, sf, { ref: true })))).toBe(-1);
        }
      }
    });
    it(`int8VectorwiseQuant ${dtype}, thresholds 0 and 3, odd shapes`, () => {
      for (const [rows, cols] of [[1, 1], [3, 17], [17, 130], [64, 515]] as const) {
        const vals = randn(rows * cols, ++s, 1.5);
        const x = tensorOf(vals, [rows, cols], dtype);
        for (const th of [0, 3]) {
          const f = int8VectorwiseQuant(x, th), r = int8VectorwiseQuant(x, th, { ref: true });
          expect(firstDiff(bytes(f[0]), bytes(r[0]))).toBe(-1);
          expect(firstDiff(bytes(f[1]), bytes(r[1]))).toBe(-1);
          if (th === 0) expect(f[2]).toBeNull();
          else expect(Array.from(f[2]!.dataSync() as Int32Array)).toEqual(Array.from(r[2]!.dataSync() as Int32Array));
        }
      }
    });
  }
  it('int8LinearMatmul is exact over the whole int8 range (-128 included) and long rows', () => {
    // The AVX-512 VNNI kernel (2+ rows of A) offsets A to unsigned and subtracts 128 * sum(B):
    // extremes, masked tails (K % 64) and partial tiles of 4 weight rows must all come out exact.
    for (const [M, N, K] of [[1, 7, 3072], [2, 5, 4097], [5, 9, 129], [3, 3, 63], [16, 6, 640]] as const) {
      const fill = (n: number, seed: number) => {
        const v = new Int8Array(n);
        let x = seed;
        for (let i = 0; i < n; i++) {
          x = (x * 1103515245 + 12345) >>> 0;
          const r = x >>> 24;
          v[i] = r < 40 ? -128 : r < 80 ? 127 : (r % 256) - 128;
        }
        return v;
      };
      const A = fill(M * K, ++s), B = fill(N * K, ++s);
      const a = Tensor.from(A, [M, K], 'int8'), b = Tensor.from(B, [N, K], 'int8');
      const cf = int8LinearMatmul(a, b), cr = int8LinearMatmul(a, b, { ref: true });
      const C = cf.dataSync() as Int32Array;
      for (let m = 0; m < M; m++)
        for (let n = 0; n < N; n++) {
          let acc = 0;
          for (let k = 0; k < K; k++) acc += A[m * K + k]! * B[n * K + k]!;
          expect(C[m * N + n], `C[${m}, ${n}] ${M}x${N}x${K}`).toBe(acc);
        }
      expect(firstDiff(bytes(cf), bytes(cr)), `C ${M}x${N}x${K} fast vs ref`).toBe(-1);
    }
  });
  it('int8LinearMatmul and int8MmDequant, odd shapes (K not a multiple of 16)', () => {
    for (const [M, N, K] of [[1, 1, 1], [3, 17, 33], [17, 64, 130], [64, 130, 515]] as const) {
      const a = int8VectorwiseQuant(tensorOf(randn(M * K, ++s), [M, K], 'float16'))[0];
      const [b, sb] = int8VectorwiseQuant(tensorOf(randn(N * K, ++s), [N, K], 'float16'));
      const cf = int8LinearMatmul(a, b), cr = int8LinearMatmul(a, b, { ref: true });
      expect(firstDiff(bytes(cf), bytes(cr)), `C ${M}x${N}x${K}`).toBe(-1);
      // exact integer check on a few entries, independently of both kernels
      const A = a.dataSync() as Int8Array, B = b.dataSync() as Int8Array, C = cf.dataSync() as Int32Array;
      for (const [m, n] of [[0, 0], [M - 1, N - 1]] as const) {
        let acc = 0;
        for (let k = 0; k < K; k++) acc += A[m * K + k]! * B[n * K + k]!;
        expect(C[m * N + n]).toBe(acc);
      }
      const rs = Tensor.from(randn(M, ++s).map(Math.abs), [M]), bias = tensorOf(randn(N, ++s), [N], 'float16');
      const df = int8MmDequant(cf, rs, sb, { bias }), dr = int8MmDequant(cf, rs, sb, { bias, ref: true });
      expect(firstDiff(bytes(df), bytes(dr))).toBe(-1);
    }
  });
});

describe(`matmul4bit: fast (GEMV / tiled) vs reference (seed ${SEED})`, () => {
  let s = SEED + 2000;
  const shapes: [number, number, number][] = [
    [1, 96, 128], [1, 35, 256], [1, 5, 4096], [1, 33, 200], [1, 17, 77], [3, 40, 64], [16, 64, 256], [17, 31, 100], [64, 48, 320], [130, 20, 96],
  ];
  for (const dtype of DTYPES) {
    for (const dq of [false, true]) {
      it(`${dtype}${dq ? ' double-quant' : ''}: M in 1..130, K not a multiple of 64, with and without bias`, () => {
        for (const [M, N, K] of shapes) {
          for (const bs of K === 4096 ? [4096, 2048] : [32, 64, 256]) {
            const w = tensorOf(randn(N * K, ++s), [N, K], dtype);
            const [packed, state] = quantize4bit(w, { quantType: s % 2 ? 'nf4' : 'fp4', blocksize: bs, compressStatistics: dq });
            const x = tensorOf(randn(M * K, ++s), [M, K], dtype);
            const bias = s % 3 ? tensorOf(randn(N, ++s), [N], dtype) : null;
            const f = matmul4bit(x, packed, state, bias), r = matmul4bit(x, packed, state, bias, { ref: true });
            expect(f.shape).toEqual([M, N]);
            expect(f.dtype).toBe(dtype);
            const tol = dtype === 'float32' ? 1e-5 : dtype === 'float16' ? 2e-3 : 1e-2;
            expect(relL2(f.toFloat32Sync(), r.toFloat32Sync()), `M${M} N${N} K${K} bs${bs}`).toBeLessThan(tol);
            // and against dequantize-then-matmul computed here in float64
            const W = dequantize4bit(packed, state, { dtype: 'float32' }).toFloat32Sync(), X = x.toFloat32Sync();
            const B = bias?.toFloat32Sync(), want = new Float32Array(M * N);
            for (let m = 0; m < M; m++)
              for (let n = 0; n < N; n++) {
                let acc = B ? B[n]! : 0;
                for (let k = 0; k < K; k++) acc += X[m * K + k]! * W[n * K + k]!;
                want[m * N + n] = acc;
              }
            expect(relL2(f.toFloat32Sync(), want)).toBeLessThan(tol);
          }
        }
      });
    }
  }
});

describe('round-trip error of randn(1024, 1024) vs the bitsandbytes table', () => {
  // bitsandbytes' mean absolute error (tests/test_functional.py, CUDA) per blocksize.
  const table: Record<'nf4' | 'fp4', Record<number, number>> = {
    nf4: { 32: 0.0677, 64: 0.0728, 128: 0.0768, 256: 0.0803 },
    fp4: { 32: 0.0889, 64: 0.0965, 128: 0.1030, 256: 0.1087 },
  };
  const n = 1024 * 1024;
  const x = Tensor.from(randn(n, SEED + 3000), [1024, 1024]);
  const xs = x.toFloat32Sync();
  for (const qt of ['nf4', 'fp4'] as const) {
    for (const bs of [32, 64, 128, 256]) {
      it(`${qt} bs${bs}: mean abs error ${table[qt][bs]} within 7 sigma`, () => {
        const [p, st] = quantize4bit(x, { quantType: qt, blocksize: bs });
        const y = dequantize4bit(p, st).toFloat32Sync();
        let sum = 0, sq = 0;
        for (let i = 0; i < n; i++) {
          const d = Math.abs(y[i]! - xs[i]!);
          sum += d;
          sq += d * d;
        }
        const mean = sum / n, sigma = Math.sqrt((sq / n - mean * mean) / n);
        // table values carry 4 decimals: allow their rounding on top of 7 sigma
        expect(Math.abs(mean - table[qt][bs]!)).toBeLessThan(7 * sigma + 5e-5);
      });
    }
  }
});
