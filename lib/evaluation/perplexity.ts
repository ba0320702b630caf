// Perplexity over a token stream, by the method shared/reference states: non-overlapping
// windows of n_positions tokens (the last partial window dropped); inside each window,
// tokens 2..n are predicted from their prefix; exp(mean NLL) over every predicted token.
import type { CausalLM } from '../models/types.js';

export interface PerplexityProgress {
  window: number;
  windows: number;
}

export interface PerplexityResult {
  perplexity: number;
  meanNll: number;
  /** Tokens predicted (windows * (windowSize - 1)). */
  predictedTokens: number;
  windows: number;
  windowSize: number;
  /** Tokens in the text, including the dropped tail. */
  totalTokens: number;
}

export async function perplexity(
  model: CausalLM,
  ids: readonly number[],
  opts: { windowSize?: number; onProgress?: (p: PerplexityProgress) => void } = {},
): Promise<PerplexityResult> {
  const W = opts.windowSize ?? model.config.nPositions;
  if (!Number.isInteger(W) || W < 2 || W > model.config.nPositions)
    throw new RangeError(`perplexity: window size must be an integer in 2..${model.config.nPositions}, got ${W}`);
  const windows = Math.floor(ids.length / W);
  if (windows === 0)
    throw new RangeError(`perplexity: the text has ${ids.length} tokens, fewer than one window of ${W}`);
  const V = model.config.vocabSize;
  let nll = 0;
  for (let w = 0; w < windows; w++) {
    const win = ids.slice(w * W, (w + 1) * W) as number[];
    const { logits, pastKeyValues } = await model.forward([win]);
    const x = await logits.toFloat32();
    logits.dispose();
    pastKeyValues.dispose();
    for (let t = 0; t < W - 1; t++) {
      const row = x.subarray(t * V, (t + 1) * V);
      let mx = -Infinity;
      for (let v = 0; v < V; v++) if (row[v]! > mx) mx = row[v]!;
      let z = 0;
      for (let v = 0; v < V; v++) z += Math.exp(row[v]! - mx);
      nll += Math.log(z) + mx - row[win[t + 1]!]!;
    }
    opts.onProgress?.({ window: w + 1, windows });
  }
  const predicted = windows * (W - 1);
  const meanNll = nll / predicted;
  return { perplexity: Math.exp(meanNll), meanNll, predictedTokens: predicted, windows, windowSize: W, totalTokens: ids.length };
}
