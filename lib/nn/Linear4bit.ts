// Linear4bit: a Linear layer whose weight is stored 4-bit (NF4/FP4, bitsandbytes layout) and
// used through the dequant-fused matmul4bit; y = x W^T + b computed in computeDtype and
// returned in x's dtype, as bitsandbytes.nn.Linear4bit does.
import { gemm4bitLayout, gemv4bitLayout, matmul4bit, quantize4bit, type Quantize4bitOptions } from '../functional.js';
import { QuantState, type QuantStateValue } from '../quantization/quant-state.js';
import { type DType, Tensor } from '../tensor.js';
import { Module, type LinearLike } from './module.js';

export interface Linear4bitOptions {
  /** dtype of the matmul; default: the input's dtype. */
  computeDtype?: DType | null;
  /**
   * Keep a row-interleaved copy of a CUDA weight (gemv4bitLayout), made at the first one-row
   * forward, for one-row inputs: a faster GEMV on large layers (bench/kernels), for the
   * weight's device memory again. Default false. Ignored for weights on the CPU.
   */
  gemvLayout?: boolean;
  /**
   * Keep a fragment-ordered copy of a CUDA weight (gemm4bitLayout), made at the first forward
   * of several float16/bfloat16 rows, for such inputs: a tensor-core GEMM 1.8-3.4x faster than the
   * bitsandbytes-layout one at M = 16..64 (bench/kernels), for the weight's device
   * memory again. Default false. Ignored for weights on the CPU and weights it cannot take
   * (K % 64, blocksize < 64).
   */
  gemmLayout?: boolean;
}

const COMPUTE_DTYPES: readonly DType[] = ['float32', 'float16', 'bfloat16'];

export class Linear4bit extends Module implements LinearLike {
  readonly type = 'Linear4bit';
  readonly inFeatures: number;
  readonly outFeatures: number;
  computeDtype: DType | null;
  readonly useGemvLayout: boolean;
  readonly useGemmLayout: boolean;
  private layout: Tensor | null = null;
  private tiles: Tensor | null | undefined = undefined;  // undefined: not tried yet; null: the weight cannot take it

  /** weight: packed uint8 [(out*in+1)/2, 1]; quantState.shape = [out, in]. */
  constructor(readonly weight: Tensor, readonly quantState: QuantState, readonly bias: Tensor | null, opts: Linear4bitOptions = {}) {
    super();
    if (!(quantState instanceof QuantState) || quantState.shape.length !== 2)
      throw new TypeError('Linear4bit: quantState must be a QuantState with a 2-D shape [out, in]');
    [this.outFeatures, this.inFeatures] = quantState.shape as [number, number];
    if (weight.dtype !== 'uint8' || weight.numel !== Math.floor((this.outFeatures * this.inFeatures + 1) / 2))
      throw new TypeError(`Linear4bit: weight must be packed uint8 for [${quantState.shape.join(', ')}], got ${weight.dtype}[${weight.shape.join(', ')}]`);
    if (bias && bias.numel !== this.outFeatures) throw new RangeError(`Linear4bit: bias has ${bias.numel} elements, expected ${this.outFeatures}`);
    this.computeDtype = opts.computeDtype ?? null;
    this.useGemvLayout = opts.gemvLayout ?? false;
    this.useGemmLayout = opts.gemmLayout ?? false;
    if (this.computeDtype && !COMPUTE_DTYPES.includes(this.computeDtype))
      throw new TypeError(`Linear4bit: computeDtype must be float32, float16 or bfloat16, got ${this.computeDtype}`);
  }

  /** Quantizes a float weight [out, in] (bitsandbytes defaults: fp4, blocksize 64, double quant on). */
  static fromFloat(weight: Tensor, bias: Tensor | null, opts: Quantize4bitOptions & Linear4bitOptions = {}): Linear4bit {
    if (weight.ndim !== 2) throw new RangeError(`Linear4bit.fromFloat: weight must be 2-D [out, in], got [${weight.shape.join(', ')}]`);
    const [packed, state] = quantize4bit(weight, { compressStatistics: true, ...opts });
    return new Linear4bit(packed, state, bias, opts);
  }

  forward(x: Tensor): Tensor {
    const dt = this.computeDtype ?? x.dtype;
    const xc = x.dtype === dt ? x : x.to(dt);
    const oneRow = xc.numel === this.inFeatures;
    if (this.useGemvLayout && oneRow && this.weight.device !== 'cpu') this.layout ??= gemv4bitLayout(this.weight, this.quantState);
    const manyRows = !oneRow && (dt === 'float16' || dt === 'bfloat16') && this.weight.device !== 'cpu';
    if (this.useGemmLayout && manyRows && this.tiles === undefined) this.tiles = this.makeTiles();
    const out = matmul4bit(xc, this.weight, this.quantState, this.bias,
      { gemvLayout: oneRow ? this.layout : null, gemmLayout: manyRows ? this.tiles ?? null : null });
    if (xc !== x) xc.dispose();
    if (out.dtype === x.dtype) return out;
    const cast = out.to(x.dtype);
    out.dispose();
    return cast;
  }

  // The fragment-ordered copy, or null when the weight's shape or GPU cannot take it (the
  // bitsandbytes-layout kernels then serve it, as without the option). The rules live in the
  // native layer; its refusals name the weight's shape or the GPU.
  private makeTiles(): Tensor | null {
    try {
      return gemm4bitLayout(this.weight, this.quantState);
    } catch (e) {
      if (e instanceof Error && /gemm4bitLayout: weight \[|needs a Hopper/.test(e.message)) return null;
      throw e;
    }
  }

  override dispose(): void {
    super.dispose();
    this.layout?.dispose();
    this.layout = null;
    this.tiles?.dispose();
    this.tiles = undefined;
  }

  tensors(): Record<string, Tensor> {
    return this.bias ? { weight: this.weight, bias: this.bias } : { weight: this.weight };
  }

  override quantConstants(): Record<string, Tensor> {
    return this.quantState.tensors();
  }

  /** Checkpoint tensors under bitsandbytes' names (weight, weight.absmax, weight.quant_state.bitsandbytes__nf4, ...). */
  override stateDict(prefix = ''): Map<string, Tensor> {
    const m = new Map<string, Tensor>();
    m.set(`${prefix}weight`, this.weight);
    for (const [k, v] of Object.entries(this.quantState.asDict(true))) m.set(`${prefix}weight.${k}`, v as Tensor);
    if (this.bias) m.set(`${prefix}bias`, this.bias);
    return m;
  }

  /** Rebuilds a layer from a checkpoint's tensors (`get(name)` returns undefined when absent). */
  static fromStateDict(get: (name: string) => Tensor | undefined, keys: Iterable<string>, prefix = '', opts: Linear4bitOptions = {}): Linear4bit {
    const weight = get(`${prefix}weight`);
    if (!weight) throw new Error(`Linear4bit.fromStateDict: missing '${prefix}weight'`);
    const qs: Record<string, QuantStateValue> = {};
    for (const k of keys) if (k.startsWith(`${prefix}weight.`)) qs[k.slice(prefix.length + 7)] = get(k)!;
    return new Linear4bit(weight, QuantState.fromDict(qs), get(`${prefix}bias`) ?? null, opts);
  }
}
