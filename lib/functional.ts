// Tensor-level quantization API with bitsandbytes.functional's names in camelCase. Each
// function checks its arguments (clear errors before any native call), allocates outputs on
// the input's device and queues the kernel; nothing waits unless a result must be read
// (the outlier columns of int8VectorwiseQuant, like bitsandbytes' own .any()).
import { native } from './native.js';
import { QuantState, type QuantType, QUANT_TYPES, quantMap } from './quantization/quant-state.js';
import { type DType, Tensor } from './tensor.js';

export { QuantState, type QuantType, quantMap } from './quantization/quant-state.js';

/** Options that only tests use. */
export interface KernelOptions {
  /** @internal run the plain reference kernel instead of the fast path */
  ref?: boolean;
}

interface QuantBinding {
  quantize4bit(x: Tensor, packed: Tensor, absmax: Tensor, blocksize: number, qt: number, ref?: boolean): void;
  dequantize4bit(packed: Tensor, absmax: Tensor, out: Tensor, blocksize: number, qt: number, ref?: boolean): void;
  compressAbsmax(absmax: Tensor, q: Tensor, nested: Tensor, offset: Tensor): void;
  decompressAbsmax(q: Tensor, nested: Tensor, code: Tensor, offset: Tensor, out: Tensor): void;
  quantizeBlockwise(code: Tensor, x: Tensor, q: Tensor, absmax: Tensor, blocksize: number, ref?: boolean): void;
  dequantizeBlockwise(code: Tensor, q: Tensor, absmax: Tensor, out: Tensor, blocksize: number, ref?: boolean): void;
  int8VectorwiseQuant(x: Tensor, out: Tensor, rowStats: Tensor, outlierCols: Tensor, threshold: number, ref?: boolean): void;
  int8LinearMatmul(A: Tensor, B: Tensor, C: Tensor, ref?: boolean): void;
  int8MmDequant(C: Tensor, rowStats: Tensor, colStats: Tensor, bias: Tensor | null, out: Tensor, ref?: boolean): void;
  matmul4bit(x: Tensor, packed: Tensor, absmax: Tensor, nested: Tensor | null, nestedCode: Tensor | null, offset: Tensor | null,
    bias: Tensor | null, out: Tensor, N: number, K: number, blocksize: number, qt: number, ref?: boolean, gemvLayout?: Tensor | null,
    gemmLayout?: Tensor | null): void;
  rowsLayout4bitBytes(N: number, K: number, blocksize: number, doubleQuant: boolean): number;
  rowsLayout4bit(packed: Tensor, absmax: Tensor, nested: Tensor | null, nestedCode: Tensor | null, offset: Tensor | null,
    layout: Tensor, N: number, K: number, blocksize: number, qt: number): void;
  tilesLayout4bitBytes(N: number, K: number, blocksize: number, doubleQuant: boolean): number;
  tilesLayout4bit(packed: Tensor, absmax: Tensor, nested: Tensor | null, nestedCode: Tensor | null, offset: Tensor | null,
    layout: Tensor, N: number, K: number, blocksize: number, qt: number): void;
  int8OutlierMatmulAdd(out: Tensor, x: Tensor, colMask: Tensor, CB: Tensor, SCB: Tensor): void;
  int8LinearCpu(x: Tensor, CB: Tensor, SCB: Tensor, bias: Tensor | null, out: Tensor, threshold: number): void;
}
const q = () => native() as unknown as QuantBinding;

export const BLOCKSIZES_4BIT = [32, 64, 128, 256, 512, 1024, 2048, 4096] as const;
export const BLOCKSIZES_8BIT = [64, 128, 256, 512, 1024, 2048, 4096] as const;
const FLOAT_DTYPES: readonly DType[] = ['float32', 'float16', 'bfloat16'];
const QT_CODE: Record<QuantType, number> = { fp4: 0, nf4: 1 };

function checkTensor(op: string, name: string, t: unknown): asserts t is Tensor {
  if (!(t instanceof Tensor)) throw new TypeError(`${op}: '${name}' must be a Tensor, got ${t === null ? 'null' : typeof t}`);
  if (t.disposed) throw new Error(`${op}: '${name}' was used after dispose()`);
}
function checkFloat(op: string, name: string, t: Tensor): void {
  if (!FLOAT_DTYPES.includes(t.dtype)) throw new TypeError(`${op}: '${name}' must be float32, float16 or bfloat16, got ${t.dtype}`);
}
function checkNotEmpty(op: string, name: string, t: Tensor): void {
  if (t.numel === 0) throw new RangeError(`${op}: '${name}' is empty (shape [${t.shape.join(', ')}])`);
}
function checkBlocksize(op: string, bs: unknown, allowed: readonly number[]): number {
  if (typeof bs !== 'number' || !allowed.includes(bs)) throw new RangeError(`${op}: blocksize ${String(bs)} is not supported (use one of ${allowed.join(', ')})`);
  return bs;
}
function checkQuantType(op: string, qt: unknown): QuantType {
  if (!QUANT_TYPES.includes(qt as QuantType)) throw new TypeError(`${op}: quant type must be 'nf4' or 'fp4', got ${JSON.stringify(qt)}`);
  return qt as QuantType;
}
const prod = (s: readonly number[]) => s.reduce((a, b) => a * b, 1);
const f32 = (shape: number[], like: Tensor) => Tensor.empty(shape, 'float32', like.device);

// ---- 4-bit -------------------------------------------------------------------------------

export interface Quantize4bitOptions extends KernelOptions {
  /** 'nf4' or 'fp4'; bitsandbytes' default is 'fp4'. */
  quantType?: QuantType;
  /** 32 ... 4096, default 64. */
  blocksize?: number;
  /** Double quantization: absmax - mean stored as 8-bit codes in blocks of 256. */
  compressStatistics?: boolean;
}

/**
 * Blockwise 4-bit quantization (bitsandbytes quantize_4bit). Returns the packed codes
 * (uint8 [(n+1)/2, 1], first element in the high nibble) and the QuantState.
 * NaN inputs are skipped by the absmax and stored as code 0; an Inf makes its block's absmax
 * Inf, itself code 0 and the rest of the block zero (bitsandbytes behaves the same).
 */
export function quantize4bit(A: Tensor, opts: Quantize4bitOptions = {}): [Tensor, QuantState] {
  const op = 'quantize4bit';
  checkTensor(op, 'A', A);
  checkFloat(op, 'A', A);
  checkNotEmpty(op, 'A', A);
  const quantType = checkQuantType(op, opts.quantType ?? 'fp4');
  const blocksize = checkBlocksize(op, opts.blocksize ?? 64, BLOCKSIZES_4BIT);
  const n = A.numel;
  const nb = Math.ceil(n / blocksize);
  const packed = Tensor.empty([Math.floor((n + 1) / 2), 1], 'uint8', A.device);
  const absmax = f32([nb], A);
  q().quantize4bit(A, packed, absmax, blocksize, QT_CODE[quantType], opts.ref);
  const code = quantMap(quantType, A.device);
  if (!opts.compressStatistics)
    return [packed, new QuantState({ absmax, shape: A.shape, code, blocksize, quantType, dtype: A.dtype })];
  const qabsmax = Tensor.empty([nb], 'uint8', A.device);
  const nested = f32([Math.ceil(nb / 256)], A);
  const offset = f32([1], A);
  q().compressAbsmax(absmax, qabsmax, nested, offset);
  absmax.dispose();
  const state2 = new QuantState({ absmax: nested, shape: [nb], code: quantMap('dynamic', A.device), blocksize: 256, dtype: 'float32' });
  return [packed, new QuantState({ absmax: qabsmax, shape: A.shape, code, blocksize, quantType, dtype: A.dtype, offset, state2 })];
}

/** The float32 absmax of a state, decoding double quantization (a new tensor when nested). */
export function stateAbsmax(state: QuantState): Tensor {
  if (!state.state2) return state.absmax;
  const out = f32([state.absmax.numel], state.absmax);
  q().decompressAbsmax(state.absmax, state.state2.absmax, state.state2.code, state.offset!, out);
  return out;
}

function check4bitState(op: string, state: unknown): QuantState {
  if (!(state instanceof QuantState)) throw new TypeError(`${op}: quantState must be a QuantState`);
  checkQuantType(op, state.quantType);
  checkBlocksize(op, state.blocksize, BLOCKSIZES_4BIT);
  if (!FLOAT_DTYPES.includes(state.dtype)) throw new TypeError(`${op}: quantState.dtype must be float32, float16 or bfloat16, got ${state.dtype}`);
  if (state.state2 && state.absmax.dtype !== 'uint8') throw new TypeError(`${op}: a double-quantized state needs uint8 absmax codes, got ${state.absmax.dtype}`);
  if (!state.state2 && state.absmax.dtype !== 'float32') throw new TypeError(`${op}: absmax must be float32, got ${state.absmax.dtype}`);
  return state;
}

/** Inverse of quantize4bit: a tensor of quantState.shape and quantState.dtype (or `dtype`). */
export function dequantize4bit(A: Tensor, quantState: QuantState, opts: KernelOptions & { dtype?: DType } = {}): Tensor {
  const op = 'dequantize4bit';
  checkTensor(op, 'A', A);
  const state = check4bitState(op, quantState);
  if (A.dtype !== 'uint8') throw new TypeError(`${op}: packed input must be uint8, got ${A.dtype}`);
  const dtype = opts.dtype ?? state.dtype;
  if (!FLOAT_DTYPES.includes(dtype)) throw new TypeError(`${op}: dtype must be float32, float16 or bfloat16, got ${dtype}`);
  const n = prod(state.shape);
  if (n === 0) throw new RangeError(`${op}: quantState.shape [${state.shape.join(', ')}] is empty`);
  if (A.numel !== Math.floor((n + 1) / 2))
    throw new RangeError(`${op}: ${A.numel} packed bytes do not hold shape [${state.shape.join(', ')}] (${Math.floor((n + 1) / 2)} bytes)`);
  const absmax = stateAbsmax(state);
  const out = Tensor.empty(state.shape, dtype, A.device);
  q().dequantize4bit(A, absmax, out, state.blocksize, QT_CODE[state.quantType!], opts.ref);
  if (absmax !== state.absmax) absmax.dispose();
  return out;
}

// ---- 8-bit blockwise -----------------------------------------------------------------------

export interface QuantizeBlockwiseOptions extends KernelOptions {
  /** 256 ascending float32 values; default the signed dynamic map. */
  code?: Tensor;
  /** 64 ... 4096, default 4096. */
  blocksize?: number;
}

/** 8-bit blockwise quantization with a 256-entry codebook (bitsandbytes quantize_blockwise). */
export function quantizeBlockwise(A: Tensor, opts: QuantizeBlockwiseOptions = {}): [Tensor, QuantState] {
  const op = 'quantizeBlockwise';
  checkTensor(op, 'A', A);
  checkFloat(op, 'A', A);
  checkNotEmpty(op, 'A', A);
  const blocksize = checkBlocksize(op, opts.blocksize ?? 4096, BLOCKSIZES_8BIT);
  const code = opts.code ?? quantMap('dynamic', A.device);
  checkTensor(op, 'code', code);
  if (code.dtype !== 'float32' || code.numel !== 256) throw new TypeError(`${op}: code must be float32 [256], got ${code.dtype}[${code.shape.join(', ')}]`);
  const out = Tensor.empty(A.shape, 'uint8', A.device);
  const absmax = f32([Math.ceil(A.numel / blocksize)], A);
  q().quantizeBlockwise(code, A, out, absmax, blocksize, opts.ref);
  return [out, new QuantState({ absmax, shape: A.shape, code, blocksize, dtype: A.dtype })];
}

export function dequantizeBlockwise(A: Tensor, quantState: QuantState, opts: KernelOptions = {}): Tensor {
  const op = 'dequantizeBlockwise';
  checkTensor(op, 'A', A);
  if (!(quantState instanceof QuantState)) throw new TypeError(`${op}: quantState must be a QuantState`);
  if (A.dtype !== 'uint8') throw new TypeError(`${op}: A must be uint8, got ${A.dtype}`);
  checkNotEmpty(op, 'A', A);
  checkBlocksize(op, quantState.blocksize, BLOCKSIZES_8BIT);
  const absmax = stateAbsmax(quantState);
  const out = Tensor.empty(A.shape, quantState.dtype, A.device);
  q().dequantizeBlockwise(quantState.code, A, absmax, out, quantState.blocksize, opts.ref);
  if (absmax !== quantState.absmax) absmax.dispose();
  return out;
}

// ---- LLM.int8() -------------------------------------------------------------------------------

/**
 * Row-wise int8 quantization (bitsandbytes int8_vectorwise_quant). Returns [CA int8, SCA
 * float32 row absmax, outlierCols int32 | null]. With threshold > 0, columns holding any
 * |x| >= threshold are outliers: excluded from the row absmax, zeroed in CA and listed.
 * NaN is ignored by the absmax and quantizes to 0.
 */
export function int8VectorwiseQuant(A: Tensor, threshold = 0, opts: KernelOptions = {}): [Tensor, Tensor, Tensor | null] {
  const [CA, SCA, mask] = int8VectorwiseQuantMask(A, threshold, opts);
  let outlierCols: Tensor | null = null;
  if (threshold > 0) {
    const m = (mask.device === 'cpu' ? mask : mask.toDevice('cpu')).dataSync() as Uint8Array;
    const idx: number[] = [];
    m.forEach((v, i) => { if (v) idx.push(i); });
    outlierCols = Tensor.from(new Int32Array(idx), [idx.length], 'int32', A.device);
  }
  mask.dispose();
  return [CA, SCA, outlierCols];
}

/**
 * @internal int8VectorwiseQuant with the outlier columns as a uint8 mask [cols] that stays on
 * the device: nothing waits for the kernel (Linear8bitLt uses this).
 */
export function int8VectorwiseQuantMask(A: Tensor, threshold = 0, opts: KernelOptions = {}): [Tensor, Tensor, Tensor] {
  const op = 'int8VectorwiseQuant';
  checkTensor(op, 'A', A);
  checkFloat(op, 'A', A);
  checkNotEmpty(op, 'A', A);
  if (typeof threshold !== 'number' || !(threshold >= 0) || !Number.isFinite(threshold))
    throw new RangeError(`${op}: threshold must be a finite number >= 0, got ${String(threshold)}`);
  const cols = A.shape[A.ndim - 1]!;
  const CA = Tensor.empty(A.shape, 'int8', A.device);
  const SCA = f32([A.numel / cols], A);
  const mask = Tensor.zeros([cols], 'uint8', A.device);
  q().int8VectorwiseQuant(A, CA, SCA, mask, threshold, opts.ref);
  return [CA, SCA, mask];
}

/** int32 A @ B^T for int8 A [..., K] and B [N, K] (bitsandbytes int8_linear_matmul). */
export function int8LinearMatmul(A: Tensor, B: Tensor, opts: KernelOptions = {}): Tensor {
  const op = 'int8LinearMatmul';
  checkTensor(op, 'A', A);
  checkTensor(op, 'B', B);
  if (A.dtype !== 'int8' || B.dtype !== 'int8') throw new TypeError(`${op}: A and B must be int8, got ${A.dtype} and ${B.dtype}`);
  if (B.ndim !== 2) throw new RangeError(`${op}: B must be 2-D [N, K], got [${B.shape.join(', ')}]`);
  checkNotEmpty(op, 'A', A);
  checkNotEmpty(op, 'B', B);
  if (A.shape[A.ndim - 1] !== B.shape[1])
    throw new RangeError(`${op}: shape mismatch: A [${A.shape.join(', ')}] @ B^T with B [${B.shape.join(', ')}] (inner dimensions ${A.shape[A.ndim - 1]} vs ${B.shape[1]})`);
  const C = Tensor.empty([...A.shape.slice(0, -1), B.shape[0]!], 'int32', A.device);
  q().int8LinearMatmul(A, B, C, opts.ref);
  return C;
}

/**
 * float16 C * rowStats * colStats / 127^2 + bias (bitsandbytes int8_mm_dequant). A bias of
 * another dtype is converted to float16 first; `dtype` converts the float16 result.
 */
export function int8MmDequant(A: Tensor, rowStats: Tensor, colStats: Tensor, opts: KernelOptions & { bias?: Tensor | null; dtype?: DType } = {}): Tensor {
  const op = 'int8MmDequant';
  checkTensor(op, 'A', A);
  checkTensor(op, 'rowStats', rowStats);
  checkTensor(op, 'colStats', colStats);
  if (A.dtype !== 'int32') throw new TypeError(`${op}: A must be int32, got ${A.dtype}`);
  if (rowStats.dtype !== 'float32' || colStats.dtype !== 'float32') throw new TypeError(`${op}: rowStats and colStats must be float32`);
  checkNotEmpty(op, 'A', A);
  const N = A.shape[A.ndim - 1]!;
  if (rowStats.numel !== A.numel / N || colStats.numel !== N)
    throw new RangeError(`${op}: shape mismatch: A [${A.shape.join(', ')}] needs ${A.numel / N} row stats and ${N} column stats, got ${rowStats.numel} and ${colStats.numel}`);
  let bias = opts.bias ?? null;
  if (bias) {
    checkTensor(op, 'bias', bias);
    if (bias.numel !== N) throw new RangeError(`${op}: bias has ${bias.numel} elements, expected ${N}`);
  }
  const converted = bias && bias.dtype !== 'float16' ? bias.to('float16') : null;
  if (converted) bias = converted;
  const out = Tensor.empty(A.shape, 'float16', A.device);
  q().int8MmDequant(A, rowStats, colStats, bias, out, opts.ref);
  converted?.dispose();
  if (opts.dtype && opts.dtype !== 'float16') {
    const cast = out.to(opts.dtype);
    out.dispose();
    return cast;
  }
  return out;
}

/** @internal the 16-bit outlier part of LLM.int8(): out += x[:, mask] @ (CB[:, mask] * SCB / 127)^T */
export function int8OutlierMatmulAdd(out: Tensor, x: Tensor, colMask: Tensor, CB: Tensor, SCB: Tensor): void {
  q().int8OutlierMatmulAdd(out, x, colMask, CB, SCB);
}

/**
 * @internal Linear8bitLt's forward for CPU tensors as one native task (quantize x with the
 * outlier mask, int8 product, dequantization with bias, outlier product): the same kernels as
 * the op-by-op path, hence the same float16 result. x is float16 [.., K].
 */
export function int8LinearCpu(x: Tensor, CB: Tensor, SCB: Tensor, bias: Tensor | null, threshold: number): Tensor {
  const out = Tensor.empty([...x.shape.slice(0, -1), CB.shape[0]!], 'float16', x.device);
  // The dequantization adds a float16 bias, as int8MmDequant converts it (a float32 model's).
  const converted = bias && bias.dtype !== 'float16' ? bias.to('float16') : null;
  try {
    q().int8LinearCpu(x, CB, SCB, converted ?? bias, out, threshold);
  } catch (e) {
    out.dispose();
    throw e;
  } finally {
    converted?.dispose();
  }
  return out;
}

// ---- 4-bit matmul ------------------------------------------------------------------------------

/**
 * x [..., K] @ W^T (+ bias) with W [N, K] the 4-bit weight described by quantState (shape
 * [N, K]); the weight is dequantized inside the kernel, never materialised. Output dtype =
 * x dtype; bias, if given, must have x's dtype or is converted.
 */
export interface Matmul4bitOptions extends KernelOptions {
  /** The weight's row-interleaved copy from gemv4bitLayout: one-row products on CUDA use it. */
  gemvLayout?: Tensor | null;
  /**
   * The weight's fragment-ordered copy from gemm4bitLayout: products of more than one
   * float16/bfloat16 row on CUDA use it (float32 rows and one-row products do not).
   */
  gemmLayout?: Tensor | null;
}

export function matmul4bit(A: Tensor, B: Tensor, quantState: QuantState, bias: Tensor | null = null, opts: Matmul4bitOptions = {}): Tensor {
  const op = 'matmul4bit';
  checkTensor(op, 'A', A);
  checkTensor(op, 'B', B);
  checkFloat(op, 'A', A);
  checkNotEmpty(op, 'A', A);
  const state = check4bitState(op, quantState);
  if (state.shape.length !== 2) throw new RangeError(`${op}: quantState.shape must be 2-D [N, K], got [${state.shape.join(', ')}]`);
  const [N, K] = state.shape as [number, number];
  if (B.dtype !== 'uint8' || B.numel !== Math.floor((N * K + 1) / 2))
    throw new TypeError(`${op}: B must be the packed uint8 weight of [${N}, ${K}] (${Math.floor((N * K + 1) / 2)} bytes), got ${B.dtype}[${B.shape.join(', ')}]`);
  if (A.shape[A.ndim - 1] !== K)
    throw new RangeError(`${op}: shape mismatch: x [${A.shape.join(', ')}] has ${A.shape[A.ndim - 1]} features but the weight is [${N}, ${K}] (out_features, in_features)`);
  let b = bias;
  if (b) {
    checkTensor(op, 'bias', b);
    if (b.numel !== N) throw new RangeError(`${op}: bias has ${b.numel} elements, expected ${N}`);
  }
  const converted = b && b.dtype !== A.dtype ? b.to(A.dtype) : null;
  if (converted) b = converted;
  const out = Tensor.empty([...A.shape.slice(0, -1), N], A.dtype, A.device);
  if (opts.gemvLayout) checkTensor(op, 'gemvLayout', opts.gemvLayout);
  if (opts.gemmLayout) checkTensor(op, 'gemmLayout', opts.gemmLayout);
  q().matmul4bit(A, B, state.absmax, state.state2?.absmax ?? null, state.state2?.code ?? null, state.offset,
    b, out, N, K, state.blocksize, QT_CODE[state.quantType!], opts.ref, opts.gemvLayout ?? null, opts.gemmLayout ?? null);
  converted?.dispose();
  return out;
}

/**
 * A row-interleaved copy of a 4-bit CUDA weight for one-row products (M = 1, the decode
 * step): matmul4bit(x, B, quantState, bias, { gemvLayout }) then reads it instead of B. Made
 * once per weight (it costs as much device memory as B again); B stays the bitsandbytes
 * layout that is saved. It refers to quantState's nested absmax, code and offset, and holds
 * a small split-K workspace, so use it from one stream at a time. Needs K % 32 == 0, rows of
 * whole blocks (K % blocksize == 0) and K <= 16384.
 */
export function gemv4bitLayout(B: Tensor, quantState: QuantState): Tensor {
  return makeLayout('gemv4bitLayout', 'row', B, quantState, 'rowsLayout4bitBytes', 'rowsLayout4bit');
}

/**
 * A fragment-ordered copy of a 4-bit CUDA weight for products of a few rows (prefill, small
 * batches): matmul4bit(x, B, quantState, bias, { gemmLayout }) then runs a tensor-core GEMM
 * whose loads are the mma fragments themselves (bench/kernels: M = 16 1.7-2.2x torch's fp16
 * matmul on the H100, against 0.64x for the bitsandbytes layout). Made once per weight (about
 * B's device memory again, absmax codes included); B stays the bitsandbytes layout that is
 * saved. It refers to quantState's nested absmax, code and offset and holds split-K counters,
 * so use it from one stream at a time. Needs K % 64 == 0 and blocksize >= 64 with rows of
 * whole blocks; float16/bfloat16 inputs.
 */
export function gemm4bitLayout(B: Tensor, quantState: QuantState): Tensor {
  return makeLayout('gemm4bitLayout', 'tiles', B, quantState, 'tilesLayout4bitBytes', 'tilesLayout4bit');
}

// The two optional copies of a CUDA 4-bit weight: checked as matmul4bit checks the weight, sized
// by the native call (which names what a weight lacks), filled on the weight's device.
function makeLayout(op: string, name: string, B: Tensor, quantState: QuantState,
  bytesOf: 'rowsLayout4bitBytes' | 'tilesLayout4bitBytes', fill: 'rowsLayout4bit' | 'tilesLayout4bit'): Tensor {
  checkTensor(op, 'B', B);
  const state = check4bitState(op, quantState);
  if (state.shape.length !== 2) throw new RangeError(`${op}: quantState.shape must be 2-D [N, K], got [${state.shape.join(', ')}]`);
  const [N, K] = state.shape as [number, number];
  if (B.device === 'cpu') throw new Error(`${op}: the ${name} layout is for weights on a CUDA device; this weight is on cpu`);
  const layout = Tensor.empty([q()[bytesOf](N, K, state.blocksize, !!state.state2)], 'uint8', B.device);
  try {
    q()[fill](B, state.absmax, state.state2?.absmax ?? null, state.state2?.code ?? null, state.offset, layout, N, K,
      state.blocksize, QT_CODE[state.quantType!]);
  } catch (e) {
    layout.dispose();
    throw e;
  }
  return layout;
}
