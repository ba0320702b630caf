// Tensor: a dtype and shape over native memory (host heap, a memory-mapped file, or a GPU).
// Kernels run asynchronously on a native queue; reading data back (`data()`, `toArray()`)
// waits for them without blocking the event loop.
import type { StorageRef, TensorLike } from '../binding.js';
import { native } from './native.js';

export type DType = 'float32' | 'float16' | 'bfloat16' | 'int8' | 'uint8' | 'int32' | 'int64';
export type Device = 'cpu' | `cuda:${number}`;

/** Numeric codes shared with native/core/dtype.h. */
export const DTYPE_CODES: Record<DType, number> = {
  float32: 0, float16: 1, bfloat16: 2, int8: 3, uint8: 4, int32: 5, int64: 6,
};
export const DTYPE_SIZES: Record<DType, number> = {
  float32: 4, float16: 2, bfloat16: 2, int8: 1, uint8: 1, int32: 4, int64: 8,
};
export const DTYPES = Object.keys(DTYPE_CODES) as DType[];

export type TypedArrayFor<D extends DType> = D extends 'float32' ? Float32Array
  : D extends 'float16' | 'bfloat16' ? Uint16Array
  : D extends 'int8' ? Int8Array
  : D extends 'uint8' ? Uint8Array
  : D extends 'int32' ? Int32Array
  : BigInt64Array;
export type AnyTypedArray = Float32Array | Uint16Array | Int8Array | Uint8Array | Int32Array | BigInt64Array;

export function isDType(x: unknown): x is DType {
  return typeof x === 'string' && x in DTYPE_CODES;
}

export function assertDType(x: unknown, what = 'dtype'): DType {
  if (!isDType(x)) throw new TypeError(`${what} must be one of ${DTYPES.join(', ')}; got ${JSON.stringify(x)}`);
  return x;
}

/** Parses 'cpu', 'cuda', 'cuda:N' (or a bare GPU index) into a Device. */
export function parseDevice(d: unknown): Device {
  if (d === undefined || d === 'cpu') return 'cpu';
  if (d === 'cuda') return 'cuda:0';
  if (typeof d === 'number' && Number.isInteger(d) && d >= 0) return `cuda:${d}`;
  if (typeof d === 'string' && /^cuda:\d+$/.test(d)) return d as Device;
  throw new TypeError(`unknown device ${JSON.stringify(d)}: expected 'cpu', 'cuda' or 'cuda:N'`);
}

export function deviceIndex(d: Device): number {
  return d === 'cpu' ? -1 : Number(d.slice(5));
}

function checkShape(shape: readonly number[]): number {
  let n = 1;
  for (const s of shape) {
    if (!Number.isInteger(s) || s < 0) throw new RangeError(`bad tensor shape [${shape.join(', ')}]`);
    n *= s;
  }
  return n;
}

function typedArrayOf(dtype: DType, buf: ArrayBuffer, byteOffset = 0, length?: number): AnyTypedArray {
  switch (dtype) {
    case 'float32': return new Float32Array(buf, byteOffset, length);
    case 'float16':
    case 'bfloat16': return new Uint16Array(buf, byteOffset, length);
    case 'int8': return new Int8Array(buf, byteOffset, length);
    case 'uint8': return new Uint8Array(buf, byteOffset, length);
    case 'int32': return new Int32Array(buf, byteOffset, length);
    case 'int64': return new BigInt64Array(buf, byteOffset, length);
  }
}

function dtypeOfArray(a: ArrayBufferView): DType {
  if (a instanceof Float32Array) return 'float32';
  if (a instanceof Uint16Array) return 'float16';
  if (a instanceof Int8Array) return 'int8';
  if (a instanceof Uint8Array) return 'uint8';
  if (a instanceof Int32Array) return 'int32';
  if (a instanceof BigInt64Array) return 'int64';
  throw new TypeError(`unsupported array type ${a.constructor.name}`);
}

// float16 / bfloat16 bit patterns -> float32, matching native/core/dtype.h.
const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);
export function halfToFloat(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >> 10) & 0x1f;
  const man = h & 0x3ff;
  if (exp === 0) return sign * man * 2 ** -24;
  if (exp === 31) return man ? NaN : sign * Infinity;
  return sign * (1 + man / 1024) * 2 ** (exp - 15);
}
export function bf16ToFloat(b: number): number {
  u32[0] = b << 16;
  return f32[0];
}

export class Tensor implements TensorLike {
  readonly dtype: DType;
  readonly shape: readonly number[];
  readonly device: Device;
  /** @internal native storage handle (shared between views) */
  _h: StorageRef;
  /** @internal byte offset into the storage */
  _off: number;
  /** @internal dtype code */
  readonly _dt: number;
  private _disposed = false;

  /** @internal use the static constructors. */
  constructor(h: StorageRef, byteOffset: number, dtype: DType, shape: readonly number[]) {
    const n = checkShape(shape);
    if (byteOffset + n * DTYPE_SIZES[dtype] > h.nbytes)
      throw new RangeError(`tensor ${dtype}[${shape.join(', ')}] at offset ${byteOffset} does not fit its ${h.nbytes}-byte storage`);
    this._h = h;
    this._off = byteOffset;
    this.dtype = dtype;
    this._dt = DTYPE_CODES[dtype];
    this.shape = Object.freeze([...shape]);
    this.device = h.device < 0 ? 'cpu' : (`cuda:${h.device}` as Device);
  }

  static empty(shape: readonly number[], dtype: DType = 'float32', device: Device | string = 'cpu'): Tensor {
    const dev = parseDevice(device);
    const n = checkShape(shape) * DTYPE_SIZES[assertDType(dtype)];
    return new Tensor(native().alloc(n, deviceIndex(dev)), 0, dtype, shape);
  }

  static zeros(shape: readonly number[], dtype: DType = 'float32', device: Device | string = 'cpu'): Tensor {
    const dev = parseDevice(device);
    const n = checkShape(shape) * DTYPE_SIZES[assertDType(dtype)];
    return new Tensor(native().alloc(n, deviceIndex(dev), true), 0, dtype, shape);
  }

  /**
   * Copies a TypedArray into a new tensor. float16/bfloat16 data comes as Uint16Array bit
   * patterns (pass the dtype); a plain number[] becomes float32 (or `dtype`).
   */
  static from(data: ArrayBufferView | number[], shape?: readonly number[], dtype?: DType, device: Device | string = 'cpu'): Tensor {
    let view: ArrayBufferView;
    if (Array.isArray(data)) {
      const dt = dtype ?? 'float32';
      if (dt === 'float16' || dt === 'bfloat16') throw new TypeError('Tensor.from: pass float16/bfloat16 data as Uint16Array bit patterns');
      const arr = typedArrayOf(dt, new ArrayBuffer(data.length * DTYPE_SIZES[dt]));
      if (arr instanceof BigInt64Array) data.forEach((v, i) => { arr[i] = BigInt(v); });
      else arr.set(data);
      view = arr;
      dtype = dt;
    } else {
      view = data;
    }
    const dt = dtype ?? dtypeOfArray(view);
    const elems = view.byteLength / DTYPE_SIZES[dt];
    if (!Number.isInteger(elems)) throw new RangeError(`Tensor.from: ${view.byteLength} bytes is not a whole number of ${dt} elements`);
    const shp = shape ?? [elems];
    if (checkShape(shp) !== elems)
      throw new RangeError(`Tensor.from: shape [${shp.join(', ')}] needs ${checkShape(shp)} elements, the data has ${elems}`);
    return new Tensor(native().fromBytes(view, deviceIndex(parseDevice(device))), 0, dt, shp);
  }

  get numel(): number {
    return this.shape.reduce((a, b) => a * b, 1);
  }
  get nbytes(): number {
    return this.numel * DTYPE_SIZES[this.dtype];
  }
  get ndim(): number {
    return this.shape.length;
  }
  get disposed(): boolean {
    return this._disposed || !this._h.alive;
  }

  private live(): void {
    if (this.disposed) throw new Error(`Tensor ${this.dtype}[${this.shape.join(', ')}] was used after dispose()`);
  }

  /** A view with another shape over the same elements (no copy). One dimension may be -1. */
  view(shape: readonly number[]): Tensor {
    this.live();
    const s = [...shape];
    const neg = s.indexOf(-1);
    if (neg >= 0) {
      const rest = s.reduce((a, b, i) => (i === neg ? a : a * b), 1);
      s[neg] = rest ? this.numel / rest : 0;
    }
    if (checkShape(s) !== this.numel)
      throw new RangeError(`cannot view ${this.dtype}[${this.shape.join(', ')}] as [${shape.join(', ')}]`);
    return new Tensor(this._h.share(), this._off, this.dtype, s);
  }

  /** Rows [start, start+length) along the first dimension, as a view (no copy). */
  narrow(start: number, length: number): Tensor {
    this.live();
    const rows = this.shape[0] ?? 0;
    if (!Number.isInteger(start) || !Number.isInteger(length) || start < 0 || length < 0 || start + length > rows)
      throw new RangeError(`narrow(${start}, ${length}) is outside the first dimension (${rows}) of [${this.shape.join(', ')}]`);
    const rowBytes = (this.numel / (rows || 1)) * DTYPE_SIZES[this.dtype];
    return new Tensor(this._h.share(), this._off + start * rowBytes, this.dtype, [length, ...this.shape.slice(1)]);
  }

  /** The raw elements (float16/bfloat16 as Uint16Array bits), after pending kernels finish. */
  async data(): Promise<AnyTypedArray> {
    this.live();
    return typedArrayOf(this.dtype, await native().read(this));
  }
  dataSync(): AnyTypedArray {
    this.live();
    return typedArrayOf(this.dtype, native().readSync(this));
  }

  /** The elements as float32 (half types converted), after pending kernels finish. */
  async toFloat32(): Promise<Float32Array> {
    return toF32(this.dtype, await this.data());
  }
  toFloat32Sync(): Float32Array {
    return toF32(this.dtype, this.dataSync());
  }

  /** A nested-array-free summary: plain numbers in a flat array (int64 as Number). */
  async toArray(): Promise<number[]> {
    const d = await this.data();
    if (d instanceof BigInt64Array) return Array.from(d, Number);
    if (this.dtype === 'float16' || this.dtype === 'bfloat16') return Array.from(toF32(this.dtype, d));
    return Array.from(d as Float32Array);
  }

  /** Copies bytes from a TypedArray into this tensor (same byte length). */
  write(src: ArrayBufferView): this {
    this.live();
    native().write(this, src);
    return this;
  }

  /** A copy converted to another dtype (CPU). */
  to(dtype: DType): Tensor {
    this.live();
    assertDType(dtype);
    const out = Tensor.empty(this.shape, dtype, this.device);
    if (dtype === this.dtype) native().copy(out, this);
    else native().cast(out, this);
    return out;
  }

  /** A copy on another device. */
  toDevice(device: Device | string): Tensor {
    this.live();
    const out = Tensor.empty(this.shape, this.dtype, parseDevice(device));
    native().copy(out, this);
    return out;
  }

  clone(): Tensor {
    return this.toDevice(this.device);
  }

  /** Frees this tensor's reference to its memory now (views keep shared memory alive). */
  dispose(): void {
    if (this._disposed) return;
    this._disposed = true;
    this._h.release();
  }

  toString(): string {
    return `Tensor(${this.dtype}[${this.shape.join(', ')}], ${this.device}${this.disposed ? ', disposed' : ''})`;
  }
}

function toF32(dtype: DType, d: AnyTypedArray): Float32Array {
  if (dtype === 'float32') return d as Float32Array;
  const out = new Float32Array(d.length);
  if (dtype === 'float16') for (let i = 0; i < d.length; i++) out[i] = halfToFloat((d as Uint16Array)[i]!);
  else if (dtype === 'bfloat16') for (let i = 0; i < d.length; i++) out[i] = bf16ToFloat((d as Uint16Array)[i]!);
  else if (d instanceof BigInt64Array) for (let i = 0; i < d.length; i++) out[i] = Number(d[i]);
  else out.set(d as ArrayLike<number>);
  return out;
}
