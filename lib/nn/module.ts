// The module vocabulary a model is built from. A module owns its tensors; models list their
// modules by dotted name (namedModules), which is what quantization replaces and what
// `nibble inspect` and getMemoryFootprint() walk.
import type { Tensor } from '../tensor.js';

export abstract class Module {
  /** Class name as transformers/bitsandbytes print it: Linear, Linear4bit, LayerNorm, ... */
  abstract readonly type: string;
  /** Parameters and buffers owned by this module, by local name (weight, bias, ...). */
  abstract tensors(): Record<string, Tensor>;
  /** Tensors that are quantization constants (absmax, codebooks): not parameters in transformers' count. */
  quantConstants(): Record<string, Tensor> {
    return {};
  }
  /**
   * What a checkpoint stores for this module, keyed `${prefix}weight`, `${prefix}bias`,
   * `${prefix}weight.absmax`, ... in transformers' serialized format (prefix ends with '.').
   * Default: the module's tensors as they are.
   */
  stateDict(prefix = ''): Map<string, Tensor> {
    return new Map(Object.entries(this.tensors()).map(([k, t]) => [prefix + k, t]));
  }
  dispose(): void {
    for (const t of Object.values(this.tensors())) t.dispose();
    for (const t of Object.values(this.quantConstants())) t.dispose();
  }
}

/** Anything that maps [..., inFeatures] float32 activations to [..., outFeatures]. */
export interface LinearLike extends Module {
  readonly inFeatures: number;
  readonly outFeatures: number;
  forward(x: Tensor): Tensor;
}
