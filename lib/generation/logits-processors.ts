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

/** Keeps every token scoring at least the k-th best score (ties with it survive, as in torch). */
export function applyTopK(scores: Float32Array, k: number, minTokensToKeep = 1): void {
  const keep = Math.min(Math.max(k, minTokensToKeep), scores.length);
  if (keep <= 0 || keep >= scores.length) return;
  const sorted = Float32Array.from(scores).sort(); // ascending; NaN last
  const threshold = sorted[scores.length - keep]!;
  for (let i = 0; i < scores.length; i++) if (scores[i]! < threshold) scores[i] = -Infinity;
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
  const probs = softmax(scores);
  // -Infinity entries have probability 0 and sit at the front of the ascending order, where
  // they would be removed anyway: leave them out of the sort.
  const order: number[] = [];
  for (let i = 0; i < scores.length; i++) if (scores[i]! > -Infinity) order.push(i);
  order.sort((a, b) => scores[a]! - scores[b]! || a - b);
  // torch compares the float32 cumulative sum with (1 - top_p) rounded to float32; the CPU
  // cumsum accumulates in double.
  const limit = Math.fround(1 - topP);
  const removable = order.length - Math.min(minTokensToKeep, order.length);
  let cum = 0;
  for (let j = 0; j < removable; j++) {
    const id = order[j]!;
    cum += probs[id]!;
    if (Math.fround(cum) <= limit) scores[id] = -Infinity;
    else break; // the running total only grows
  }
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
