// Logits processors and warpers with transformers' semantics. Each edits one row of scores
// (float32, one entry per vocabulary id) in place; removed tokens become -Infinity.
// Order, as transformers builds it: repetition penalty (greedy and sampling), then, only when
// sampling, temperature -> top-k -> top-p -> min-p.
import type { GenerationConfig } from './generation-config.js';

/** Edits `scores` for the sequence `inputIds` (prompt, padding included, plus tokens so far). */
export type LogitsProcessor = (scores: Float32Array, inputIds: readonly number[]) => void;

/**
 * Tokens already present get their score divided by `penalty` when positive and multiplied
 * when negative, so a penalty > 1 always makes them less likely. Each distinct token once.
 */
export function applyRepetitionPenalty(scores: Float32Array, inputIds: readonly number[], penalty: number): void {
  if (penalty === 1) return;
  const seen = new Set<number>();
  for (const id of inputIds) {
    if (seen.has(id) || id < 0 || id >= scores.length) continue;
    seen.add(id);
    const s = scores[id]!;
    scores[id] = s < 0 ? s * penalty : s / penalty;
  }
}

export function applyTemperature(scores: Float32Array, temperature: number): void {
  if (temperature === 1) return;
  for (let i = 0; i < scores.length; i++) scores[i] = scores[i]! / temperature;
}

/**
 * The k-th largest value (1-based) of `values`, in expected linear time (quickselect on a
 * copy). NaN counts as -Infinity. Sorting a 50k-entry vocabulary on every step would cost
 * several milliseconds; this costs a fraction of one.
 */
export function kthLargest(values: ArrayLike<number>, k: number): number {
  const n = values.length;
  if (!(k >= 1 && k <= n)) throw new RangeError(`kthLargest: k = ${k} is outside 1..${n}`);
  const a = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    const v = values[i]!;
    a[i] = Number.isNaN(v) ? -Infinity : v;
  }
  const target = n - k; // index in ascending order
  let lo = 0;
  let hi = n - 1;
  while (lo < hi) {
    // Median of three as pivot keeps sorted or constant runs from going quadratic.
    const mid = (lo + hi) >>> 1;
    const x = a[lo]!, y = a[mid]!, z = a[hi]!;
    const pivot = x < y ? (y < z ? y : x < z ? z : x) : x < z ? x : y < z ? z : y;
    let i = lo;
    let j = hi;
    while (i <= j) {
      while (a[i]! < pivot) i++;
      while (a[j]! > pivot) j--;
      if (i <= j) {
        const t = a[i]!;
        a[i] = a[j]!;
        a[j] = t;
        i++;
        j--;
      }
    }
    if (target <= j) hi = j;
    else if (target >= i) lo = i;
    else return a[target]!;
  }
  return a[target]!;
}

/** Keeps every token scoring at least the k-th best score (ties with it survive, as in torch). */
export function applyTopK(scores: Float32Array, k: number, minTokensToKeep = 1): void {
  const keep = Math.min(Math.max(k, minTokensToKeep), scores.length);
  if (keep <= 0 || keep >= scores.length) return;
  const threshold = kthLargest(scores, keep);
  for (let i = 0; i < scores.length; i++) if (scores[i]! < threshold) scores[i] = -Infinity;
}

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/**
 * `ids` sorted by (score ascending, id ascending). Each float32 score maps to a uint32 that
 * orders like the float; with the id below it the pair fits a double exactly (32 + 21 bits),
 * so one native Float64Array sort replaces a comparator sort several times slower.
 */
export function ascendingOrder(scores: Float32Array, ids: readonly number[]): number[] {
  if (scores.length > 1 << 21) return [...ids].sort((a, b) => scores[a]! - scores[b]! || a - b);
  const keys = new Float64Array(ids.length);
  for (let j = 0; j < ids.length; j++) {
    const id = ids[j]!;
    f32[0] = scores[id]! + 0; // -0 and +0 tie, as the floats do
    const bits = u32[0]!;
    const ordered = bits & 0x80000000 ? ~bits >>> 0 : (bits | 0x80000000) >>> 0;
    keys[j] = ordered * 2097152 + id;
  }
  keys.sort();
  const out = new Array<number>(ids.length);
  for (let j = 0; j < ids.length; j++) out[j] = keys[j]! % 2097152;
  return out;
}

/** Softmax in double precision, each probability rounded to float32 as torch stores them. */
export function softmax(scores: Float32Array): Float64Array {
  let max = -Infinity;
  for (let i = 0; i < scores.length; i++) if (scores[i]! > max) max = scores[i]!;
  const p = new Float64Array(scores.length);
  if (max === -Infinity) return p;
  let sum = 0;
  for (let i = 0; i < scores.length; i++) {
    const e = Math.exp(scores[i]! - max);
    p[i] = e;
    sum += e;
  }
  for (let i = 0; i < scores.length; i++) p[i] = Math.fround(p[i]! / sum);
  return p;
}

/**
 * Nucleus filtering the way transformers does it: sort ascending, accumulate probabilities,
 * remove every token whose running total (itself included) is <= 1 - topP, always keeping
 * the `minTokensToKeep` best. Tokens tied at the boundary are ordered by id (a stable sort,
 * which is what torch's CPU sort does on short rows), so the lower id is removed first.
 */
export function applyTopP(scores: Float32Array, topP: number, minTokensToKeep = 1): void {
  if (topP >= 1) return;
  const n = scores.length;
  const probs = softmax(scores);
  // torch compares the float32 cumulative sum with (1 - top_p) rounded to float32; the CPU
  // cumsum accumulates in double.
  const limit = Math.fround(1 - topP);
  let finite = 0;
  for (let i = 0; i < n; i++) if (scores[i]! > -Infinity) finite++;
  // Only the most likely tokens need sorting: if everything below some probability tau adds
  // up to <= limit, all of it is removed whatever its order, and the running total resumes
  // from that sum. A quickselect for the 256th largest usually finds such a tau; otherwise
  // one native sort of the probabilities gives the exact one.
  let tau = -Infinity;
  const k = Math.max(256, minTokensToKeep);
  if (k < finite) {
    const t = kthLargest(probs, k);
    if (t > 0 && Math.fround(sumBelow(probs, t)) <= limit) tau = t;
  }
  if (tau === -Infinity && finite > minTokensToKeep) {
    const sorted = Float64Array.from(probs).sort();
    let cum = 0;
    for (let j = 0; j < sorted.length - minTokensToKeep; j++) {
      if (Math.fround(cum + sorted[j]!) > limit) {
        tau = sorted[j]!;
        break;
      }
      cum += sorted[j]!;
    }
    if (tau === -Infinity) tau = sorted[sorted.length - minTokensToKeep]!;
  }
  const below = tau === -Infinity ? 0 : sumBelow(probs, tau);
  const candidates: number[] = [];
  for (let i = 0; i < n; i++) {
    if (scores[i]! === -Infinity) continue; // probability 0: removed in any order
    if (probs[i]! < tau) scores[i] = -Infinity;
    else candidates.push(i);
  }
  const order = ascendingOrder(scores, candidates);
  const removable = order.length - Math.min(minTokensToKeep, order.length);
  let cum = below;
  for (let j = 0; j < removable; j++) {
    const id = order[j]!;
    cum += probs[id]!;
    if (Math.fround(cum) <= limit) scores[id] = -Infinity;
    else break; // the running total only grows
  }
}

function sumBelow(probs: Float64Array, t: number): number {
  let sum = 0;
  for (let i = 0; i < probs.length; i++) if (probs[i]! < t) sum += probs[i]!;
  return sum;
}

/** Removes tokens whose probability is below minP × the most likely token's probability. */
export function applyMinP(scores: Float32Array, minP: number, minTokensToKeep = 1): void {
  const probs = softmax(scores);
  let top = 0;
  for (let i = 0; i < probs.length; i++) if (probs[i]! > top) top = probs[i]!;
  const threshold = Math.fround(minP * top);
  let kept = 0;
  for (let i = 0; i < probs.length; i++) if (!(probs[i]! < threshold)) kept++;
  if (kept >= minTokensToKeep) {
    for (let i = 0; i < probs.length; i++) if (probs[i]! < threshold) scores[i] = -Infinity;
    return;
  }
  // Too few survive: keep the best minTokensToKeep by score instead.
  const best = Array.from(scores.keys()).sort((a, b) => scores[b]! - scores[a]! || a - b).slice(0, minTokensToKeep);
  const keep = new Set(best);
  for (let i = 0; i < scores.length; i++) if (probs[i]! < threshold && !keep.has(i)) scores[i] = -Infinity;
}

/** The processors a configuration asks for, in transformers' order. */
export function buildLogitsProcessors(cfg: GenerationConfig): LogitsProcessor[] {
  const list: LogitsProcessor[] = [];
  if (cfg.repetitionPenalty !== 1) list.push((s, ids) => applyRepetitionPenalty(s, ids, cfg.repetitionPenalty));
  if (cfg.doSample) {
    if (cfg.temperature !== 1) list.push((s) => applyTemperature(s, cfg.temperature));
    if (cfg.topK !== 0) list.push((s) => applyTopK(s, cfg.topK));
    if (cfg.topP < 1) list.push((s) => applyTopP(s, cfg.topP));
    if (cfg.minP !== null) list.push((s) => applyMinP(s, cfg.minP!));
  }
  return list;
}
