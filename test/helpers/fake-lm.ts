// A deterministic stand-in for a CausalLM: next-token logits are a pure function of the
// unpadded token history, read from a seeded random table. It keeps the real contract
// (Tensors out, a KV cache, left padding under an attention mask) so generate() is tested
// against it without native model code.
import { Tensor } from '../../lib/tensor.js';
import { mulberry32 } from './compare.js';
import type { CausalLM, ForwardOptions, ForwardOutput, KVCache } from '../../lib/models/types.js';

export { mulberry32 };

class FakeCache implements KVCache {
  /** Per row: [token, mask] for every stored position. */
  readonly rows: { tok: number; m: number }[][];
  disposed = false;
  constructor(readonly batchSize: number, readonly capacity: number) {
    this.rows = Array.from({ length: batchSize }, () => []);
  }
  get length(): number {
    return this.rows[0]!.length;
  }
  dispose(): void {
    this.disposed = true;
  }
  truncate(length: number): void {
    if (length < 0 || length > this.length) throw new Error(`fake: cannot truncate ${this.length} positions to ${length}`);
    for (const r of this.rows) r.length = length;
  }
}

export interface FakeLMOptions {
  vocabSize?: number;
  nPositions?: number;
  seed?: number;
  /** Logit spread; larger makes the distribution peakier. */
  scale?: number;
  eosTokenId?: number | null;
  /** If set, the greedy next token is script[number of real tokens so far - promptLength]. */
  script?: { promptLength: number; tokens: number[] };
  /** Synchronous CPU work per forward, in ms (to test that generate yields to timers). */
  busyMs?: number;
  /**
   * Return logits as a Tensor look-alike whose reads settle as microtasks (a real Tensor's read
   * completes on the native thread, which already gives timers a turn).
   */
  microtaskLogits?: boolean;
}

export class FakeLM implements CausalLM {
  readonly config: { vocabSize: number; nPositions: number; eosTokenId: number | null; bosTokenId: number | null };
  readonly device = 'cpu' as const;
  readonly calls: { T: number; B: number; lastTokenOnly: boolean; hadCache: boolean; masked: boolean }[] = [];
  readonly caches: FakeCache[] = [];
  private readonly table: Float32Array;
  private readonly opts: FakeLMOptions;

  constructor(opts: FakeLMOptions = {}) {
    this.opts = opts;
    this.config = { vocabSize: opts.vocabSize ?? 53, nPositions: opts.nPositions ?? 64, eosTokenId: opts.eosTokenId ?? null, bosTokenId: null };
    const rnd = mulberry32(opts.seed ?? 1234);
    this.table = Float32Array.from({ length: 4099 }, () => (rnd() * 2 - 1) * (opts.scale ?? 4));
  }

  /** The logits after `history` (real tokens only). Pure: tests use it to build expectations. */
  logitsFor(history: readonly number[]): Float32Array {
    const V = this.config.vocabSize;
    const out = new Float32Array(V);
    const s = this.opts.script;
    if (s) {
      const want = s.tokens[history.length - s.promptLength] ?? 0;
      out.fill(-5);
      out[want] = 5;
      return out;
    }
    let h = 2166136261;
    for (const t of history) h = Math.imul(h ^ (t + 1), 16777619) >>> 0;
    for (let v = 0; v < V; v++) out[v] = this.table[(h + Math.imul(v, 97)) % this.table.length]!;
    return out;
  }

  async forward(inputIds: number[][], options: ForwardOptions = {}): Promise<ForwardOutput> {
    const B = inputIds.length;
    const T = inputIds[0]!.length;
    const cache = (options.pastKeyValues as FakeCache | undefined) ?? new FakeCache(B, options.cacheCapacity ?? this.config.nPositions);
    if (!options.pastKeyValues) this.caches.push(cache);
    if (cache.disposed) throw new Error('fake: cache used after dispose');
    if (cache.batchSize !== B) throw new Error('fake: batch size changed');
    const past = cache.length;
    if (past + T > cache.capacity) throw new Error(`fake: cache capacity ${cache.capacity} exceeded`);
    const mask = options.attentionMask;
    if (mask && mask.some((r) => r.length !== past + T)) throw new Error('fake: mask length must be past + T');
    this.calls.push({ T, B, lastTokenOnly: !!options.lastTokenOnly, hadCache: !!options.pastKeyValues, masked: !!mask });
    if (this.opts.busyMs) {
      const end = performance.now() + this.opts.busyMs;
      while (performance.now() < end) { /* emulate synchronous work */ }
    }
    const V = this.config.vocabSize;
    const positions = options.lastTokenOnly ? 1 : T;
    const logits = new Float32Array(B * positions * V);
    for (let b = 0; b < B; b++) {
      for (let t = 0; t < T; t++) cache.rows[b]!.push({ tok: inputIds[b]![t]!, m: mask ? mask[b]![past + t]! : 1 });
      for (let p = 0; p < positions; p++) {
        const upto = past + (options.lastTokenOnly ? T : p + 1);
        const history = cache.rows[b]!.slice(0, upto).filter((e) => e.m === 1).map((e) => e.tok);
        logits.set(this.logitsFor(history), (b * positions + p) * V);
      }
    }
    if (this.opts.microtaskLogits) {
      let disposed = false;
      const fake = {
        shape: [B, positions, V], dtype: 'float32', get disposed() { return disposed; },
        toFloat32: async () => logits, dispose: () => { disposed = true; },
      };
      return { logits: fake as unknown as Tensor, pastKeyValues: cache };
    }
    return { logits: Tensor.from(logits, [B, positions, V]), pastKeyValues: cache };
  }
}

/** Greedy continuation computed straight from logitsFor, without generate(). */
export function greedyChain(model: FakeLM, prompt: readonly number[], n: number, stopAt?: (t: number) => boolean): number[] {
  const seq = [...prompt];
  for (let i = 0; i < n; i++) {
    const l = model.logitsFor(seq);
    let best = 0;
    for (let v = 1; v < l.length; v++) if (l[v]! > l[best]!) best = v;
    seq.push(best);
    if (stopAt?.(best)) break;
  }
  return seq;
}
