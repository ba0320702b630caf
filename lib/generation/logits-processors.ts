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
  // torch does this in float32 with the penalty cast to float32; the double operation on
  // float32 inputs, rounded on store, is that same correctly rounded float32 result.
  const p = Math.fround(penalty);
  const seen = new Set<number>();
  for (const id of inputIds) {
    if (seen.has(id) || id < 0 || id >= scores.length) continue;
    seen.add(id);
    const s = scores[id]!;
    scores[id] = s < 0 ? s * p : s / p;
  }
}

/** Divides by the temperature in float32 arithmetic, bit for bit what torch's CPU division gives. */
export function applyTemperature(scores: Float32Array, temperature: number): void {
  if (temperature === 1) return;
  const t = Math.fround(temperature);
  for (let i = 0; i < scores.length; i++) scores[i] = scores[i]! / t;
}

/**
 * The k-th largest value (1-based) of `values`, in expected linear time (quickselect on a
 * copy). NaN counts as -Infinity. Sorting a 50k-entry vocabulary on every step would cost
 * several milliseconds; this costs a fraction of one.
 */
export function kthLargest(values: ArrayLike<number>, k: number): number {
  const n = values.length;
  if (!(k >= 1 && k <= n)) throw new RangeError(`kthLargest: k = ${k} is outside 1..${n}`);
  if (k === 1) {
    let m = -Infinity;
    for (let i = 0; i < n; i++) if (values[i]! > m) m = values[i]!;
    return m;
  }
  if (k * 64 <= n) return kthLargestHeap(values, k);
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

/**
 * kthLargest for small k (top-k sampling's 50 of 50,257): one pass keeping the k largest in a
 * min-heap, so most values cost one comparison with its root (~4x faster than quickselect on
 * a copy of the row). The same value: the k-th largest of the multiset, NaN as -Infinity.
 */
function kthLargestHeap(values: ArrayLike<number>, k: number): number {
  const h = new Float64Array(k);
  let size = 0;
  for (let i = 0; i < values.length; i++) {
    let v = values[i]!;
    if (Number.isNaN(v)) v = -Infinity;
    if (size < k) {
      let j = size++; // sift up
      while (j > 0) {
        const parent = (j - 1) >> 1;
        if (h[parent]! <= v) break;
        h[j] = h[parent]!;
        j = parent;
      }
      h[j] = v;
    } else if (v > h[0]!) {
      let j = 0; // replace the root, sift down
      for (;;) {
        const l = 2 * j + 1;
        if (l >= k) break;
        const c = l + 1 < k && h[l + 1]! < h[l]! ? l + 1 : l;
        if (h[c]! >= v) break;
        h[j] = h[c]!;
        j = c;
      }
      h[j] = v;
    }
  }
  return h[0]!;
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

/**
 * Softmax in double precision, each probability rounded to float32 as torch stores them. A
 * row with NaN has no probabilities: every entry but the -Infinity ones is NaN.
 */
export function softmax(scores: Float32Array): Float64Array {
  const p = new Float64Array(scores.length);
  const f = finiteSoftmax(scores);
  if (!f) {
    for (let i = 0; i < scores.length; i++) if (scores[i] !== -Infinity) p[i] = NaN;
    return p;
  }
  for (let j = 0; j < f.ids.length; j++) p[f.ids[j]!] = f.probs[j]!;
  return p;
}

/**
 * softmax() of the finite scores alone (-Infinity ones have probability 0): their ids,
 * ascending, and probabilities; null when the row holds NaN. After top-k those are a few
 * dozen of 50,257 entries, so top-p takes its probabilities here instead of over the row.
 */
function finiteSoftmax(scores: Float32Array): { ids: Int32Array; probs: Float64Array } | null {
  const all = finiteScratch(scores.length);
  let n = 0;
  let max = -Infinity;
  for (let i = 0; i < scores.length; i++) {
    const v = scores[i]!;
    if (v > -Infinity) {
      all[n++] = i;
      if (v > max) max = v;
    } else if (v !== v) return null;
  }
  const ids = all.slice(0, n);
  const probs = new Float64Array(n);
  let sum = 0;
  for (let j = 0; j < n; j++) {
    const e = Math.exp(scores[ids[j]!]! - max);
    probs[j] = e;
    sum += e;
  }
  const inv = 1 / sum;
  for (let j = 0; j < n; j++) if (probs[j]! !== 0) probs[j] = Math.fround(probs[j]! * inv);
  return { ids, probs };
}

/**
 * Nucleus filtering the way transformers does it: sort ascending, accumulate probabilities,
 * remove every token whose running total (itself included) is <= 1 - topP, always keeping
 * the `minTokensToKeep` best. Tokens tied at the boundary are ordered by id (a stable sort,
 * which is what torch's CPU sort does on short rows), so the lower id is removed first.
 */
export function applyTopP(scores: Float32Array, topP: number, minTokensToKeep = 1): void {
  if (topP >= 1) return;
  // torch compares the float32 cumulative sum with (1 - top_p) rounded to float32; the CPU
  // cumsum accumulates in double.
  const limit = Math.fround(1 - topP);
  // -Infinity entries have probability 0 and lead the ascending order, where they are
  // removed anyway: only finite ones take part. A row with NaN has NaN probabilities and no
  // nucleus: as in transformers (NaN cumulative sums compare false), nothing is removed, and
  // the sampler reports the NaN.
  const f = finiteSoftmax(scores);
  if (f) removeNucleusTail(scores, f.ids, f.probs, limit, minTokensToKeep);
}

let scratch = new Int32Array(0);
/** A reusable index buffer of at least n entries (the finite tokens of one row). */
export function finiteScratch(n: number): Int32Array {
  if (scratch.length < n) scratch = new Int32Array(n);
  return scratch;
}

/**
 * The nucleus cut over the finite tokens (`finite` ascending ids, `fp` their probabilities).
 * Rather than sorting the whole row: find the probability tau at which the ascending running
 * total first exceeds the limit (linear-time selection). Everything below tau is removed and
 * everything above it kept; only tokens tied at tau need ordering. The best minTokensToKeep
 * always stay, so tau is at most the minTokensToKeep-th largest.
 */
function removeNucleusTail(scores: Float32Array, finite: Int32Array, fp: Float64Array, limit: number, minTokensToKeep: number): void {
  const nFinite = finite.length;
  const tau = nFinite === 0 ? Infinity : Math.min(ascendingCrossing(fp, limit), kthLargest(fp, Math.min(minTokensToKeep, nFinite)));
  const below = sumBelow(fp, tau);
  const candidates: number[] = [];
  let above = 0;
  for (let j = 0; j < nFinite; j++) {
    const i = finite[j]!;
    if (fp[j]! < tau) scores[i] = -Infinity;
    else if (fp[j]! > tau) above++;
    else candidates.push(i);
  }
  const order = ascendingOrder(scores, candidates);
  const removable = order.length - Math.min(Math.max(0, minTokensToKeep - above), order.length);
  let cum = below;
  for (let j = 0; j < removable; j++) {
    const id = order[j]!;
    cum += tau; // a candidate's probability is tau itself
    if (Math.fround(cum) <= limit) scores[id] = -Infinity;
    else break; // the running total only grows
  }
}

/**
 * The value at which the ascending running total of `values` first exceeds `limit` (in
 * float32, as torch compares): a quickselect that recurses on the side holding the crossing,
 * so it costs O(n) where sorting would cost O(n log n). +Infinity if the total never does.
 */
export function ascendingCrossing(values: Float64Array, limit: number): number {
  const a = values.slice();
  let lo = 0;
  let hi = a.length; // exclusive
  let acc = 0; // sum of everything known to sort before a[lo]
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    const x = a[lo]!, y = a[mid]!, z = a[hi - 1]!;
    const pivot = x < y ? (y < z ? y : x < z ? z : x) : x < z ? x : y < z ? z : y;
    // Three-way partition: [lo, lt) < pivot, [lt, gt) == pivot, [gt, hi) > pivot.
    let lt = lo;
    let i = lo;
    let gt = hi;
    let sumLess = 0;
    while (i < gt) {
      const v = a[i]!;
      if (v < pivot) {
        a[i] = a[lt]!;
        a[lt++] = v;
        sumLess += v;
        i++;
      } else if (v > pivot) {
        a[i] = a[--gt]!;
        a[gt] = v;
      } else i++;
    }
    if (Math.fround(acc + sumLess) > limit) {
      hi = lt;
      continue;
    }
    let sumEq = 0;
    for (let j = lt; j < gt; j++) sumEq += a[j]!;
    if (Math.fround(acc + sumLess + sumEq) > limit) return pivot;
    acc += sumLess + sumEq;
    lo = gt;
  }
  return Infinity;
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
  const threshold = Math.fround(Math.fround(minP) * top);
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
