import * as ops from '../ops.js';
import type { Tensor } from '../tensor.js';
import { Module } from './module.js';

export class LayerNorm extends Module {
  readonly type = 'LayerNorm';
  constructor(readonly weight: Tensor, readonly bias: Tensor, readonly eps: number) {
    super();
  }
  forward(x: Tensor): Tensor {
    return ops.layerNorm(x, this.weight, this.bias, this.eps);
  }
  tensors(): Record<string, Tensor> {
    return { weight: this.weight, bias: this.bias };
  }
}
