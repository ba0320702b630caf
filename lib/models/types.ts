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
}
