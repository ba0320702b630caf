// The contract between models and generation: anything that maps token ids to next-token
// logits with a KV cache can be driven by lib/generation.
import type { Tensor, Device } from '../tensor.js';

/** Per-layer key/value caches plus how many positions they hold. */
export interface KVCache {
  /** Number of positions already stored (the next token's absolute cache slot). */
  readonly length: number;
  /** Capacity in positions. */
  readonly capacity: number;
  readonly batchSize: number;
  dispose(): void;
  /** Optional: forget the positions from `length` on (undoes a step queued ahead). */
  truncate?(length: number): void;
}

export interface ForwardOptions {
  /** Cache from a previous call; the new tokens are appended to it. */
  pastKeyValues?: KVCache;
  /**
   * [B][past + T] of 0/1 over all positions (cached and new). 0 marks left padding. Defaults
   * to all ones.
   */
  attentionMask?: number[][];
  /** Only compute logits for the last position of each sequence (generation). */
  lastTokenOnly?: boolean;
  /** Cache capacity to allocate when no pastKeyValues is given (default n_positions). */
  cacheCapacity?: number;
  /**
   * @internal An int32 [B * T] tensor on the model's GPU holding the token ids, read when the
   * step runs (the ids the GPU sampler just wrote); inputIds then only give the shape.
   */
  deviceInputIds?: Tensor;
}

export interface ForwardOutput {
  /** float32 [B, T, vocab] (or [B, 1, vocab] with lastTokenOnly). */
  logits: Tensor;
  pastKeyValues: KVCache;
}

export interface CausalLM {
  readonly config: { vocabSize: number; nPositions: number; eosTokenId?: number | null; bosTokenId?: number | null };
  readonly device: Device;
  /** Token ids as [B][T] (equal lengths; pad on the left and mask). */
  forward(inputIds: number[][], options?: ForwardOptions): Promise<ForwardOutput>;
  /**
   * Optional: queues a one-token decode step whose ids are read from `ids` (int32 [B] on the
   * model's GPU) when it runs, so generate() can queue step t+1 before step t's tokens reach
   * the host. Returns null when this model cannot (generate() then waits and uses forward()).
   */
  forwardFromDevice?(ids: Tensor, options: ForwardOptions): Promise<ForwardOutput> | null;
}
