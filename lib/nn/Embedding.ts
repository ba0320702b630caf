import type { Tensor } from '../tensor.js';
import { Module } from './module.js';

/** A lookup table [num, dim]; GPT-2 adds token and position rows in one fused kernel. */
export class Embedding extends Module {
  readonly type = 'Embedding';
  constructor(readonly weight: Tensor) {
    super();
  }
  tensors(): Record<string, Tensor> {
    return { weight: this.weight };
  }
}
