import * as ops from '../ops.js';
import type { Tensor } from '../tensor.js';
import { Module, type LinearLike } from './module.js';

/** y = x W^T + b with W in [out, in] orientation (GPT-2's Conv1D weights are transposed at load). */
export class Linear extends Module implements LinearLike {
  readonly type = 'Linear';
  readonly inFeatures: number;
  readonly outFeatures: number;

  constructor(readonly weight: Tensor, readonly bias: Tensor | null) {
    super();
    if (weight.ndim !== 2) throw new RangeError(`Linear weight must be 2-D [out, in], got [${weight.shape.join(', ')}]`);
    [this.outFeatures, this.inFeatures] = weight.shape as [number, number];
    if (bias && bias.numel !== this.outFeatures)
      throw new RangeError(`Linear bias has ${bias.numel} elements, expected ${this.outFeatures}`);
  }

  forward(x: Tensor): Tensor {
    return ops.linear(x, this.weight, this.bias);
  }

  tensors(): Record<string, Tensor> {
    return this.bias ? { weight: this.weight, bias: this.bias } : { weight: this.weight };
  }
}
