// Linear8bitLt: LLM.int8() inference. The weight is int8 with one float32 scale per output row
// (CB, SCB); activations are quantized per row; columns with an |x| >= threshold outlier
// go through a 16-bit matmul instead (the mixed decomposition). Output in x's dtype after
// float16 rounding, as bitsandbytes.nn.Linear8bitLt(has_fp16_weights=False).
import { int8LinearCpu, int8LinearMatmul, int8MmDequant, int8OutlierMatmulAdd, int8VectorwiseQuant, int8VectorwiseQuantMask } from '../functional.js';
import { Tensor } from '../tensor.js';
import { Module, type LinearLike } from './module.js';

export interface Linear8bitLtOptions {
  /** Outlier threshold; 0 disables the mixed decomposition. bitsandbytes' default is 0, transformers' 6.0. */
  threshold?: number;
}

export class Linear8bitLt extends Module implements LinearLike {
  readonly type = 'Linear8bitLt';
  readonly inFeatures: number;
  readonly outFeatures: number;
  readonly threshold: number;

  /** CB: int8 [out, in]; SCB: float32 [out] row absmax; bias: any float dtype [out]. */
  constructor(readonly CB: Tensor, readonly SCB: Tensor, readonly bias: Tensor | null, opts: Linear8bitLtOptions = {}) {
    super();
    if (CB.dtype !== 'int8' || CB.ndim !== 2) throw new TypeError(`Linear8bitLt: weight must be int8 [out, in], got ${CB.dtype}[${CB.shape.join(', ')}]`);
    [this.outFeatures, this.inFeatures] = CB.shape as [number, number];
    if (SCB.dtype !== 'float32' || SCB.numel !== this.outFeatures)
      throw new TypeError(`Linear8bitLt: SCB must be float32 [${this.outFeatures}], got ${SCB.dtype}[${SCB.shape.join(', ')}]`);
    if (bias && bias.numel !== this.outFeatures) throw new RangeError(`Linear8bitLt: bias has ${bias.numel} elements, expected ${this.outFeatures}`);
    this.threshold = opts.threshold ?? 0;
    if (!(this.threshold >= 0) || !Number.isFinite(this.threshold)) throw new RangeError(`Linear8bitLt: threshold must be a finite number >= 0, got ${this.threshold}`);
  }

  /** Quantizes a float weight [out, in] row-wise (bitsandbytes int8_vectorwise_quant of weight.half()). */
  static fromFloat(weight: Tensor, bias: Tensor | null, opts: Linear8bitLtOptions = {}): Linear8bitLt {
    if (weight.ndim !== 2) throw new RangeError(`Linear8bitLt.fromFloat: weight must be 2-D [out, in], got [${weight.shape.join(', ')}]`);
    const wh = weight.dtype === 'float16' ? weight : weight.to('float16');
    const [CB, SCB] = int8VectorwiseQuant(wh, 0);
    if (wh !== weight) wh.dispose();
    return new Linear8bitLt(CB, SCB, bias, opts);
  }

  forward(x: Tensor): Tensor {
    if (x.shape[x.ndim - 1] !== this.inFeatures)
      throw new RangeError(`Linear8bitLt: shape mismatch: x [${x.shape.join(', ')}] has ${x.shape[x.ndim - 1]} features, the layer expects ${this.inFeatures}`);
    const xh = x.dtype === 'float16' ? x : x.to('float16');
    if (xh.device === 'cpu' && this.CB.device === 'cpu') return this.finish(x, xh, int8LinearCpu(xh, this.CB, this.SCB, this.bias, this.threshold));
    // The outlier columns stay a device-side mask: nothing here waits for a kernel.
    const [CA, SCA, mask] = int8VectorwiseQuantMask(xh, this.threshold);
    const C = int8LinearMatmul(CA, this.CB);
    const out = int8MmDequant(C, SCA, this.SCB, { bias: this.bias });
    let result = out;
    if (this.threshold > 0) {
      if (out.device === 'cpu') {
        int8OutlierMatmulAdd(out, xh, mask, this.CB, this.SCB);
      } else {
        // The 16-bit outlier product has no CUDA kernel yet: it runs on host copies (outlier
        // columns are few, so this moves little compute but costs transfers and a wait).
        const host = [out, xh, mask, this.CB, this.SCB].map((t) => t.toDevice('cpu'));
        int8OutlierMatmulAdd(host[0]!, host[1]!, host[2]!, host[3]!, host[4]!);
        result = host[0]!.toDevice(out.device);
        out.dispose();
        for (const t of host) t.dispose();
      }
    }
    for (const t of [CA, SCA, C, mask]) t.dispose();
    return this.finish(x, xh, result);
  }

  /** The float16 result in x's dtype; frees the float16 copy of x when one was made. */
  private finish(x: Tensor, xh: Tensor, result: Tensor): Tensor {
    if (xh !== x) xh.dispose();
    if (x.dtype === 'float16') return result;
    const cast = result.to(x.dtype);
    result.dispose();
    return cast;
  }

  tensors(): Record<string, Tensor> {
    return this.bias ? { weight: this.CB, bias: this.bias } : { weight: this.CB };
  }

  override quantConstants(): Record<string, Tensor> {
    return { SCB: this.SCB };
  }

  /** Checkpoint tensors under bitsandbytes' names: weight (int8), SCB, weight_format (uint8 0 = row). */
  override stateDict(prefix = ''): Map<string, Tensor> {
    const m = new Map<string, Tensor>([[`${prefix}weight`, this.CB], [`${prefix}SCB`, this.SCB]]);
    m.set(`${prefix}weight_format`, Tensor.from(new Uint8Array([0]), [], 'uint8'));
    if (this.bias) m.set(`${prefix}bias`, this.bias);
    return m;
  }

  static fromStateDict(get: (name: string) => Tensor | undefined, prefix = '', opts: Linear8bitLtOptions = {}): Linear8bitLt {
    const CB = get(`${prefix}weight`), SCB = get(`${prefix}SCB`);
    if (!CB || !SCB) throw new Error(`Linear8bitLt.fromStateDict: missing '${prefix}${CB ? 'SCB' : 'weight'}'`);
    const fmt = get(`${prefix}weight_format`);
    if (fmt && (fmt.dataSync() as Uint8Array)[0] !== 0) throw new Error(`Linear8bitLt.fromStateDict: only weight_format 0 (row-major) is supported`);
    return new Linear8bitLt(CB, SCB, get(`${prefix}bias`) ?? null, opts);
  }
}
