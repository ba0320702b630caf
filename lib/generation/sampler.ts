// Choosing the next token: argmax, or a draw from the softmax with a seeded generator so a
// seed reproduces a run exactly (across machines: the generator is integer-only).
import { finiteScratch } from './logits-processors.js';

/**
 * xoshiro128** (Blackman and Vigna): 128-bit state, period 2^128 - 1, fast in 32-bit
 * integer arithmetic. The state is filled from the seed by splitmix32 so nearby seeds give
 * unrelated streams and the state is never all zero.
 */
export class Xoshiro128 {
  private s0: number;
  private s1: number;
  private s2: number;
  private s3: number;

  constructor(seed: number) {
    if (!Number.isSafeInteger(seed)) throw new RangeError(`seed must be an integer, got ${seed}`);
    // Fold both halves of a 53-bit seed into the splitmix state.
    let x = (seed >>> 0) ^ Math.imul(Math.floor(seed / 2 ** 32) | 0, 0x9e3779b9);
    const next = (): number => {
      x = (x + 0x9e3779b9) | 0;
      let z = x;
      z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
      z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
      return (z ^ (z >>> 16)) >>> 0;
    };
    this.s0 = next();
    this.s1 = next();
    this.s2 = next();
    this.s3 = next();
  }

  /** A generator with an explicit state (the published test vectors start from [1, 2, 3, 4]). */
  static fromState(s0: number, s1: number, s2: number, s3: number): Xoshiro128 {
    if (((s0 | s1 | s2 | s3) >>> 0) === 0) throw new RangeError('xoshiro128 state must not be all zero');
    const g = new Xoshiro128(0);
    g.s0 = s0 | 0;
    g.s1 = s1 | 0;
    g.s2 = s2 | 0;
    g.s3 = s3 | 0;
    return g;
  }

  /** The four state words (for saving a position in the stream and going back to it). */
  state(): [number, number, number, number] {
    return [this.s0, this.s1, this.s2, this.s3];
  }

  /** Goes back to a position saved with state(). */
  restore(state: readonly [number, number, number, number]): void {
    [this.s0, this.s1, this.s2, this.s3] = state;
  }

  /** Uniform 32-bit unsigned integer. */
  nextUint32(): number {
    const result = Math.imul(rotl(Math.imul(this.s1, 5), 7), 9) >>> 0;
    const t = this.s1 << 9;
    this.s2 ^= this.s0;
    this.s3 ^= this.s1;
    this.s1 ^= this.s2;
    this.s0 ^= this.s3;
    this.s2 ^= t;
    this.s3 = rotl(this.s3, 11);
    return result;
  }

  /** Uniform double in [0, 1) with 53 random bits. */
  nextFloat(): number {
    const hi = this.nextUint32() >>> 5; // 27 bits
    const lo = this.nextUint32() >>> 6; // 26 bits
    return (hi * 67108864 + lo) / 9007199254740992;
  }
}

function rotl(x: number, k: number): number {
  return (x << k) | (x >>> (32 - k));
}

/** Index of the largest score; the first one on ties (torch.argmax's rule). */
export function argmax(scores: Float32Array): number {
  let best = 0;
  let bestVal = -Infinity;
  for (let i = 0; i < scores.length; i++) {
    const v = scores[i]!;
    if (v > bestVal) {
      bestVal = v;
      best = i;
    } else if (Number.isNaN(v)) {
      throw new RangeError(`logits contain NaN (token ${i}): the model produced invalid values`);
    }
  }
  return best;
}

/**
 * Draws a token from softmax(scores). -Infinity scores are never drawn. After top-k or top-p
 * only a few dozen of 50,257 scores are finite: the weights are computed for those alone (the
 * same terms, added in the same ascending order, as over the whole row).
 */
export function sampleToken(scores: Float32Array, rng: Xoshiro128): number {
  let max = -Infinity;
  let n = 0;
  const ids = finiteScratch(scores.length);
  for (let i = 0; i < scores.length; i++) {
    const v = scores[i]!;
    if (v > max) max = v;
    if (v !== -Infinity) {
      if (v !== v) throw new RangeError(`logits contain NaN (token ${i}): cannot sample`);
      ids[n++] = i;
    }
  }
  if (max === -Infinity) throw new RangeError('every token was filtered out: nothing left to sample');
  if (max === Infinity) return scores.indexOf(Infinity);
  const w = new Float64Array(n);
  let total = 0;
  for (let j = 0; j < n; j++) {
    const e = Math.exp(scores[ids[j]!]! - max);
    w[j] = e;
    total += e;
  }
  const u = rng.nextFloat() * total;
  let acc = 0;
  let last = -1;
  for (let j = 0; j < n; j++) {
    if (w[j] === 0) continue;
    acc += w[j]!;
    last = ids[j]!;
    if (u < acc) return last;
  }
  return last; // rounding put u at the very end
}
