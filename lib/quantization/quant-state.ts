// QuantState: everything needed to undo a blockwise quantization (absmax, codebook,
// blocksize, type, original dtype and shape, and for double quantization the offset and the
// nested state), with bitsandbytes' state-dict serialization (asDict / fromDict).
import { native } from '../native.js';
import { type Device, type DType, Tensor, isDType } from '../tensor.js';

export type QuantType = 'nf4' | 'fp4';
export const QUANT_TYPES: readonly QuantType[] = ['nf4', 'fp4'];

/** Key names bitsandbytes writes for a quant state (after the parameter prefix). */
const VALID_KEYS = new Set([
  'absmax', 'quant_map', 'nested_absmax', 'nested_quant_map', 'quant_state', 'quant_type',
  'blocksize', 'dtype', 'shape', 'nested_blocksize', 'nested_dtype', 'nested_offset',
]);
const PACKED_PREFIX = 'quant_state.bitsandbytes__';

export class QuantStateError extends Error {
  override name = 'QuantStateError';
}

/** A value of a quant-state dict: a tensor, or a plain value of the unpacked form. */
export type QuantStateValue = Tensor | string | number | number[] | null;

export interface QuantStateInit {
  absmax: Tensor;
  shape: readonly number[];
  code: Tensor;
  blocksize: number;
  quantType?: QuantType | null;
  dtype: DType;
  /** float32 [1]: mean of the absmax vector subtracted before double quantization. */
  offset?: Tensor | null;
  /** State of the 8-bit quantization of absmax (double quantization). */
  state2?: QuantState | null;
}

export class QuantState {
  absmax: Tensor;
  shape: readonly number[];
  code: Tensor;
  blocksize: number;
  quantType: QuantType | null;
  dtype: DType;
  offset: Tensor | null;
  state2: QuantState | null;

  constructor(init: QuantStateInit) {
    this.absmax = init.absmax;
    this.shape = Object.freeze([...init.shape]);
    this.code = init.code;
    this.blocksize = init.blocksize;
    this.quantType = init.quantType ?? null;
    this.dtype = init.dtype;
    this.offset = init.offset ?? null;
    this.state2 = init.state2 ?? null;
    if ((this.offset === null) !== (this.state2 === null))
      throw new QuantStateError('QuantState: offset and state2 come together (double quantization) or not at all');
  }

  /** True when absmax is itself 8-bit quantized (compressStatistics / double quant). */
  get nested(): boolean {
    return this.state2 !== null;
  }

  get device(): Device {
    return this.absmax.device;
  }

  /** The offset as a number (waits for pending kernels). */
  offsetValue(): number {
    if (!this.offset) throw new QuantStateError('QuantState: not double-quantized, there is no offset');
    return (this.offset.dataSync() as Float32Array)[0]!;
  }

  /**
   * The state as bitsandbytes' QuantState.as_dict(): with `packed`, only tensors, the
   * non-tensor items JSON-encoded in a uint8 tensor under `quant_state.bitsandbytes__<type>`
   * (what safetensors checkpoints hold, after the parameter prefix `weight.`).
   */
  asDict(packed = false): Record<string, QuantStateValue> {
    const d: Record<string, QuantStateValue> = {
      quant_type: this.quantType,
      absmax: this.absmax,
      blocksize: this.blocksize,
      quant_map: this.code,
      dtype: this.dtype,
      shape: [...this.shape],
    };
    if (this.state2) {
      d.nested_absmax = this.state2.absmax;
      d.nested_blocksize = this.state2.blocksize;
      d.nested_quant_map = this.state2.code;
      d.nested_dtype = this.state2.dtype;
      d.nested_offset = this.offsetValue();
    }
    if (!packed || this.quantType === null) return d;
    const tensors: Record<string, QuantStateValue> = {};
    const rest: Record<string, QuantStateValue> = {};
    for (const [k, v] of Object.entries(d)) (v instanceof Tensor ? tensors : rest)[k] = v;
    tensors[PACKED_PREFIX + this.quantType] = packDictToTensor(rest);
    return tensors;
  }

  /**
   * Rebuilds a state from asDict() output or from a checkpoint's tensors (keys may keep a
   * prefix such as `weight.`; only the last dotted part counts, as in bitsandbytes).
   */
  static fromDict(dict: Record<string, QuantStateValue> | Map<string, QuantStateValue>, device?: Device | string): QuantState {
    const entries = dict instanceof Map ? [...dict.entries()] : Object.entries(dict);
    const packedKeys = entries.filter(([k, v]) => k.includes('quant_state') && v instanceof Tensor).map(([k]) => k);
    const hasUnpacked = entries.some(([k]) => k.split('.').pop() === 'quant_type');
    const flat: Record<string, QuantStateValue> = {};
    if (!hasUnpacked) {
      if (packedKeys.length === 0)
        throw new QuantStateError('QuantState.fromDict: expected packed or unpacked quant_state items, found neither ' +
          `(keys: ${entries.map(([k]) => k).join(', ') || 'none'})`);
      if (packedKeys.length !== 1 || !/bitsandbytes__(nf4|fp4)$/.test(packedKeys[0]!))
        throw new QuantStateError(`QuantState.fromDict: there must be exactly one 'quant_state.bitsandbytes__nf4|fp4' item, found ${JSON.stringify(packedKeys)}`);
    }
    for (const [k, v] of entries) {
      if (packedKeys.length === 1 && k === packedKeys[0]) {
        Object.assign(flat, unpackTensorToDict(v as Tensor));
        continue;
      }
      const short = k.split('.').pop()!;
      if (!VALID_KEYS.has(short)) throw new QuantStateError(`QuantState.fromDict: unexpected key '${k}'`);
      flat[short] = v;
    }
    const need = (k: string): QuantStateValue => {
      if (!(k in flat) || flat[k] === undefined)
        throw new QuantStateError(`QuantState.fromDict: missing key '${k}' (have: ${Object.keys(flat).join(', ')})`);
      return flat[k]!;
    };
    const tensor = (k: string): Tensor => {
      const v = need(k);
      if (!(v instanceof Tensor)) throw new QuantStateError(`QuantState.fromDict: '${k}' must be a Tensor`);
      return device && v.device !== device ? v.toDevice(device) : v;
    };
    const int = (k: string): number => {
      const v = need(k);
      if (typeof v !== 'number' || !Number.isInteger(v) || v <= 0) throw new QuantStateError(`QuantState.fromDict: '${k}' must be a positive integer, got ${JSON.stringify(v)}`);
      return v;
    };
    const dtype = (k: string): DType => {
      const v = need(k);
      if (!isDType(v)) throw new QuantStateError(`QuantState.fromDict: '${k}' must be a dtype name, got ${JSON.stringify(v)}`);
      return v;
    };
    const quantType = need('quant_type');
    if (quantType !== null && quantType !== 'nf4' && quantType !== 'fp4')
      throw new QuantStateError(`QuantState.fromDict: quant_type must be 'nf4' or 'fp4', got ${JSON.stringify(quantType)}`);
    const shape = need('shape');
    if (!Array.isArray(shape) || !shape.every((s) => Number.isInteger(s) && s >= 0))
      throw new QuantStateError(`QuantState.fromDict: 'shape' must be a list of sizes, got ${JSON.stringify(shape)}`);
    let offset: Tensor | null = null;
    let state2: QuantState | null = null;
    // Any nested item means double quantization: then every nested item must be there.
    if (['nested_absmax', 'nested_quant_map', 'nested_offset', 'nested_blocksize', 'nested_dtype'].some((k) => k in flat)) {
      const off = need('nested_offset');
      if (typeof off !== 'number') throw new QuantStateError(`QuantState.fromDict: 'nested_offset' must be a number`);
      offset = Tensor.from(new Float32Array([off]), [1], 'float32', device ?? tensor('nested_absmax').device);
      state2 = new QuantState({
        absmax: tensor('nested_absmax'), shape: [], code: tensor('nested_quant_map'),
        blocksize: int('nested_blocksize'), dtype: dtype('nested_dtype'),
      });
    }
    return new QuantState({
      absmax: tensor('absmax'), shape, code: tensor('quant_map'), blocksize: int('blocksize'),
      quantType: quantType as QuantType | null, dtype: dtype('dtype'), offset, state2,
    });
  }

  /** A copy of every tensor on another device. */
  toDevice(device: Device | string): QuantState {
    return new QuantState({
      absmax: this.absmax.toDevice(device), shape: this.shape, code: this.code.toDevice(device),
      blocksize: this.blocksize, quantType: this.quantType, dtype: this.dtype,
      offset: this.offset?.toDevice(device) ?? null, state2: this.state2?.toDevice(device) ?? null,
    });
  }

  /** The tensors this state owns, by bitsandbytes key name (for memory accounting). */
  tensors(): Record<string, Tensor> {
    const t: Record<string, Tensor> = { absmax: this.absmax, quant_map: this.code };
    if (this.state2) {
      t.nested_absmax = this.state2.absmax;
      t.nested_quant_map = this.state2.code;
    }
    if (this.offset) t.offset = this.offset;
    return t;
  }

  dispose(): void {
    for (const t of Object.values(this.tensors())) t.dispose();
  }
}

/** A codebook as a tensor: 'nf4' | 'fp4' (16 values) or 'dynamic' | 'dynamic_unsigned' (256). */
export function quantMap(kind: QuantType | 'dynamic' | 'dynamic_unsigned', device: Device | string = 'cpu'): Tensor {
  const v = (native() as unknown as { quantMap(k: string): Float32Array }).quantMap(kind);
  return Tensor.from(v, [v.length], 'float32', device);
}

/** Python's repr() of a float, which bitsandbytes' json.dumps writes for nested_offset. */
export function pythonFloatRepr(x: number): string {
  if (Number.isNaN(x)) return 'NaN';
  if (!Number.isFinite(x)) return x > 0 ? 'Infinity' : '-Infinity';
  if (x === 0) return Object.is(x, -0) ? '-0.0' : '0.0';
  const exp = Math.floor(Math.log10(Math.abs(x)));
  // Python switches to exponent form below 1e-4 and from 1e16; JS below 1e-6 and from 1e21.
  if (exp < -4 || exp >= 16) {
    const [m, e] = x.toExponential().split('e') as [string, string];
    const n = Number(e);
    return `${m}e${n < 0 ? '-' : '+'}${String(Math.abs(n)).padStart(2, '0')}`;
  }
  const s = String(x);
  return /[.e]/.test(s) ? s : `${s}.0`;
}

function jsonValue(v: QuantStateValue): string {
  if (v === null) return 'null';
  if (typeof v === 'string') return JSON.stringify(v);
  if (Array.isArray(v)) return `[${v.map((x) => String(x)).join(', ')}]`;
  if (typeof v === 'number') return Number.isInteger(v) ? String(v) : pythonFloatRepr(v);
  throw new QuantStateError('QuantState: cannot JSON-encode a tensor');
}

/** bitsandbytes' pack_dict_to_tensor: json.dumps (", " and ": " separators) as UTF-8 uint8. */
export function packDictToTensor(d: Record<string, QuantStateValue>): Tensor {
  // nested_offset is a float even when integral; bitsandbytes writes it with Python's repr.
  const body = Object.entries(d)
    .map(([k, v]) => `${JSON.stringify(k)}: ${k === 'nested_offset' && typeof v === 'number' ? pythonFloatRepr(v) : jsonValue(v)}`)
    .join(', ');
  const bytes = new TextEncoder().encode(`{${body}}`);
  return Tensor.from(bytes, [bytes.length], 'uint8');
}

export function unpackTensorToDict(t: Tensor): Record<string, QuantStateValue> {
  if (t.dtype !== 'uint8') throw new QuantStateError(`QuantState: the packed quant_state tensor must be uint8, got ${t.dtype}`);
  const bytes = t.device === 'cpu' ? (t.dataSync() as Uint8Array) : (t.toDevice('cpu').dataSync() as Uint8Array);
  try {
    const parsed = JSON.parse(new TextDecoder().decode(bytes)) as unknown;
    if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) throw new Error('not an object');
    return parsed as Record<string, QuantStateValue>;
  } catch (e) {
    throw new QuantStateError(`QuantState: the packed quant_state tensor is not a JSON object (${(e as Error).message})`);
  }
}
