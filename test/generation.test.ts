// generate(), its processors, sampler, stopping rules and stream(), driven by a deterministic
// fake CausalLM (test/helpers/fake-lm.ts) so every expectation is computed independently.
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { generate } from '../lib/generation/generate.js';
import { stream, TextStreamDecoder } from '../lib/generation/stream.js';
import {
  applyMinP, applyRepetitionPenalty, applyTemperature, applyTopK, applyTopP, buildLogitsProcessors, kthLargest,
} from '../lib/generation/logits-processors.js';
import { Xoshiro128, argmax, sampleToken } from '../lib/generation/sampler.js';
import { StopStringCriterion } from '../lib/generation/stopping.js';
import { GENERATION_DEFAULTS, loadGenerationConfig, resolveGenerationConfig } from '../lib/generation/generation-config.js';
import { AutoTokenizer } from '../lib/tokenizer.js';
import { embeddedModelsDir } from '../lib/paths.js';
import { FakeLM, greedyChain, mulberry32 } from './helpers/fake-lm.js';

const NEG = -Infinity;
const row = (xs: number[]) => Float32Array.from(xs);
const kept = (s: Float32Array) => Array.from(s, (v, i) => (v > NEG ? i : -1)).filter((i) => i >= 0);

/** Letters a..z, A..Z, then '<eos>': a tokenizer stand-in for stop strings. */
const ALPHA = 'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ';
const letterTokenizer = {
  decode: (ids: readonly number[]) => ids.map((i) => (i < ALPHA.length ? ALPHA[i] : '<eos>')).join(''),
  encode: (s: string) => Array.from(s, (c) => ALPHA.indexOf(c)),
};

/** Ids are UTF-8 bytes: exercises characters split over tokens. */
const byteTokenizer = {
  decode: (ids: readonly number[]) => new TextDecoder().decode(Uint8Array.from(ids)),
  encode: (s: string) => Array.from(new TextEncoder().encode(s)),
};

function randomPrompt(seed: number, len: number, vocab: number): number[] {
  const r = mulberry32(seed);
  return Array.from({ length: len }, () => Math.floor(r() * vocab));
}

describe('greedy generation', () => {
  it('is the argmax chain, prefilled once then one token per step through the cache', async () => {
    const model = new FakeLM();
    const prompt = randomPrompt(1, 7, 53);
    const out = await generate(model, prompt, { maxNewTokens: 12 });
    expect(out).toEqual([greedyChain(model, prompt, 12)]);
    expect(model.calls[0]).toMatchObject({ T: 7, lastTokenOnly: true, hadCache: false, masked: false });
    expect(model.calls.slice(1).every((c) => c.T === 1 && c.hadCache && c.lastTokenOnly)).toBe(true);
    expect(model.calls.length).toBe(12); // the last token is never fed back
    expect(model.caches.every((c) => c.disposed)).toBe(true);
    // The chain is not trivially constant.
    expect(new Set(out[0]!.slice(7)).size).toBeGreaterThan(3);
  });

  it('uses maxLength (transformers default 20) when maxNewTokens is absent', async () => {
    const model = new FakeLM();
    const prompt = randomPrompt(2, 6, 53);
    expect((await generate(model, prompt))[0]!.length).toBe(20);
    expect((await generate(model, prompt, { maxLength: 9 }))[0]).toEqual(greedyChain(model, prompt, 3));
    // maxNewTokens wins over maxLength.
    expect((await generate(model, prompt, { maxLength: 9, maxNewTokens: 5 }))[0]!.length).toBe(11);
  });

  it('with left padding gives each row what it gives alone', async () => {
    const model = new FakeLM();
    const prompts = [randomPrompt(3, 3, 53), randomPrompt(4, 9, 53), randomPrompt(5, 1, 53), randomPrompt(6, 6, 53)];
    const alone = await Promise.all(prompts.map((p) => generate(new FakeLM(), p, { maxNewTokens: 10 })));
    const batch = await generate(model, prompts, { maxNewTokens: 10 });
    expect(batch).toEqual(alone.map((o) => o[0]));
    expect(model.calls.every((c) => c.masked && c.B === 4)).toBe(true);

    // The same batch given pre-padded with a mask comes back padded, with the same tokens.
    const width = 9;
    const inputIds = prompts.map((p) => [...new Array(width - p.length).fill(0), ...p]);
    const attentionMask = prompts.map((p) => [...new Array(width - p.length).fill(0), ...new Array(p.length).fill(1)]);
    const padded = await generate(new FakeLM(), { inputIds, attentionMask }, { maxNewTokens: 10 });
    padded.forEach((r, b) => {
      expect(r.slice(0, width)).toEqual(inputIds[b]);
      expect(r.slice(width)).toEqual(alone[b]![0]!.slice(prompts[b]!.length));
    });
  });
});

describe('sampling', () => {
  const prompt = randomPrompt(7, 5, 53);
  const opts = { maxNewTokens: 24, doSample: true, temperature: 1.5, topK: 0 };

  it('is reproducible with a seed; different seeds differ', async () => {
    const a = await generate(new FakeLM(), prompt, { ...opts, seed: 42 });
    const b = await generate(new FakeLM(), prompt, { ...opts, seed: 42 });
    const c = await generate(new FakeLM(), prompt, { ...opts, seed: 43 });
    expect(a).toEqual(b);
    expect(c).not.toEqual(a);
    // Sampling at temperature 1.5 over 53 tokens leaves the greedy chain.
    expect(a[0]).not.toEqual(greedyChain(new FakeLM(), prompt, 24));
  });

  it('topK=1 and a tiny topP both equal greedy, whatever the seed', async () => {
    const greedy = greedyChain(new FakeLM(), prompt, 24);
    for (const seed of [1, 2, 3]) {
      expect((await generate(new FakeLM(), prompt, { ...opts, seed, topK: 1 }))[0]).toEqual(greedy);
      expect((await generate(new FakeLM(), prompt, { ...opts, seed, topP: 1e-6 }))[0]).toEqual(greedy);
      expect((await generate(new FakeLM(), prompt, { ...opts, seed, minP: 1 }))[0]).toEqual(greedy);
    }
  });

  it('draws tokens with their softmax probabilities', () => {
    const rng = new Xoshiro128(9);
    const scores = row([Math.log(0.1), Math.log(0.2), NEG, Math.log(0.7)]);
    const counts = [0, 0, 0, 0];
    const n = 20000;
    for (let i = 0; i < n; i++) counts[sampleToken(scores, rng)]!++;
    expect(counts[2]).toBe(0);
    expect(Math.abs(counts[0]! / n - 0.1)).toBeLessThan(0.015);
    expect(Math.abs(counts[1]! / n - 0.2)).toBeLessThan(0.015);
    expect(Math.abs(counts[3]! / n - 0.7)).toBeLessThan(0.015);
  });

  it('xoshiro128** matches the published reference outputs from state [1, 2, 3, 4]', () => {
    const g = Xoshiro128.fromState(1, 2, 3, 4);
    const got = Array.from({ length: 10 }, () => g.nextUint32());
    expect(got).toEqual([11520, 0, 5927040, 70819200, 2031721883, 1637235492, 1287239034, 3734860849, 3729100597, 4258142804]);
    const f = new Xoshiro128(5);
    for (let i = 0; i < 1000; i++) {
      const u = f.nextFloat();
      expect(u >= 0 && u < 1).toBe(true);
    }
  });

  it('argmax takes the first maximum; NaN logits and a fully filtered row are errors', () => {
    expect(argmax(row([1, 3, 3, 2]))).toBe(1);
    expect(() => argmax(row([1, NaN, 2]))).toThrow(/NaN/);
    expect(() => sampleToken(row([NEG, NEG]), new Xoshiro128(1))).toThrow(/filtered out/);
  });

  it('topP and minP on a row with NaN remove nothing and leave the NaN for the sampler to report', () => {
    // The probabilities of a NaN row are all NaN: no nucleus can be cut (transformers removes
    // nothing: NaN sums compare false). The row must come back as it went in (it used to lose
    // all but its last token), and sampling it is the clear error.
    for (const p of [0.1, 0.5, 0.95]) {
      const s = row([1, NaN, 2, 0.5, NEG, 3]);
      applyTopP(s, p);
      expect(Array.from(s)).toEqual([1, NaN, 2, 0.5, NEG, 3]);
      expect(() => sampleToken(s, new Xoshiro128(3))).toThrow(/NaN \(token 1\)/);
    }
    const m = row([1, NaN, 2, 0.5, NEG, 3]);
    applyMinP(m, 0.2); // minP likewise: NaN probabilities are below no threshold
    expect(Array.from(m)).toEqual([1, NaN, 2, 0.5, NEG, 3]);
    // The same after topK (the usual chain: a few finite scores, the rest -Infinity).
    const s = Float32Array.from({ length: 5000 }, (_, i) => Math.sin(i));
    s[4321] = NaN;
    applyTopK(s, 20);
    const before = Array.from(s);
    applyTopP(s, 0.9);
    expect(Array.from(s)).toEqual(before);
    expect(() => sampleToken(s, new Xoshiro128(3))).toThrow(/NaN \(token 4321\)/);
  });
});

describe('logits processors (hand-computed expectations)', () => {
  it('temperature divides the logits', () => {
    const s = row([1, 2, -3, 0]);
    applyTemperature(s, 2);
    expect(Array.from(s)).toEqual([0.5, 1, -1.5, 0]);
  });

  it('topK keeps scores >= the k-th best, ties included', () => {
    const a = row([1, 3, 3, 2, -1]);
    applyTopK(a, 2);
    expect(Array.from(a)).toEqual([NEG, 3, 3, NEG, NEG]);
    const b = row([1, 3, 3, 2, -1]);
    applyTopK(b, 3);
    expect(Array.from(b)).toEqual([NEG, 3, 3, 2, NEG]);
    const c = row([5, 4, 4, 4, 1]);
    applyTopK(c, 2);
    expect(kept(c)).toEqual([0, 1, 2, 3]);
    const d = row([5, 4]);
    applyTopK(d, 10);
    expect(Array.from(d)).toEqual([5, 4]);
  });

  it('topP removes tokens whose ascending running total is <= 1 - topP', () => {
    const lp = (ps: number[]) => row(ps.map(Math.log));
    const a = lp([0.125, 0.125, 0.25, 0.5]);
    applyTopP(a, 0.75); // totals .125, .25 (= 1 - .75: removed), .5 -> keep {2, 3}
    expect(kept(a)).toEqual([2, 3]);
    const b = lp([0.125, 0.125, 0.25, 0.5]);
    applyTopP(b, 0.8); // limit .2: only token 0 (.125) goes
    expect(kept(b)).toEqual([1, 2, 3]);
    const c = lp([0.125, 0.125, 0.25, 0.5]);
    applyTopP(c, 0);
    expect(kept(c)).toEqual([3]); // at least one token stays
  });

  it('topP at a boundary of tied tokens removes the lower ids first (stable ascending sort)', () => {
    const a = row([0, 0, 0, 0]); // four tokens at 0.25
    applyTopP(a, 0.6); // totals .25 (removed), .5 > .4
    expect(kept(a)).toEqual([1, 2, 3]);
    const b = row([0, 0, 0, 0]);
    applyTopP(b, 0.5); // totals .25, .5 <= .5 removed
    expect(kept(b)).toEqual([2, 3]);
    const c = row([2, 0, 0, 2]);
    applyTopP(c, 1e-6);
    expect(kept(c)).toEqual([3]);
  });

  it('fast topP and topK equal plain full-sort versions on random rows (odd sizes, ties, -Infinity)', () => {
    // The plain algorithm: stable ascending sort of every token, running float32 total.
    const topPPlain = (s: Float32Array, p: number) => {
      let max = -Infinity;
      for (const v of s) max = Math.max(max, v);
      const e = Array.from(s, (v) => Math.exp(v - max));
      const sum = e.reduce((a, b) => a + b, 0);
      const probs = e.map((v) => Math.fround(v / sum));
      const order = Array.from(s.keys()).sort((a, b) => s[a]! - s[b]! || a - b);
      let cum = 0;
      for (let j = 0; j < order.length - 1; j++) {
        cum += probs[order[j]!]!;
        if (Math.fround(cum) <= Math.fround(1 - p)) s[order[j]!] = NEG;
      }
    };
    const r = mulberry32(2024);
    let checked = 0;
    for (const n of [1, 2, 7, 255, 256, 257, 1000, 5003, 50257]) {
      for (const spread of [0.5, 4, 30]) {
        const base = Float32Array.from({ length: n }, () => Math.round((r() * 2 - 1) * spread * 8) / 8); // many ties
        for (let i = 0; i < n; i += 13) base[i] = NEG;
        if (n > 1 && base.every((v) => v === NEG)) base[1] = 0;
        for (const p of [0.05, 0.5, 0.9, 0.999]) {
          const fast = base.slice();
          const plain = base.slice();
          applyTopP(fast, p);
          topPPlain(plain, p);
          expect(kept(fast), `n=${n} spread=${spread} p=${p}`).toEqual(kept(plain));
          checked++;
        }
        for (const k of [1, 3, 50, 300]) {
          const fast = base.slice();
          applyTopK(fast, k);
          const thr = [...base].sort((a, b) => b - a)[Math.min(k, n) - 1]!;
          expect(kept(fast)).toEqual(kept(base.map((v) => (v < thr ? NEG : v))));
        }
      }
    }
    expect(checked).toBe(108);
  });

  it('top-p after top-k, kthLargest of a few, and the draw equal whole-row versions (the compact paths)', () => {
    // The draw over every token of the row (sampleToken before it skipped the filtered ones).
    const drawPlain = (s: Float32Array, u01: number) => {
      let max = -Infinity;
      for (const v of s) if (v > max) max = v;
      const w = Array.from(s, (v) => (v === NEG ? 0 : Math.exp(v - max)));
      const total = w.reduce((a, b) => a + b, 0);
      const u = u01 * total;
      let acc = 0, last = -1;
      for (let i = 0; i < w.length; i++) {
        if (w[i] === 0) continue;
        acc += w[i]!;
        last = i;
        if (u < acc) return i;
      }
      return last;
    };
    const topPWholeRow = (s: Float32Array, p: number) => {
      // softmax over the whole row, then the same selection (applyTopP takes the softmax
      // over the finite scores alone).
      const order = Array.from(s.keys()).filter((i) => s[i]! > NEG).sort((a, b) => s[a]! - s[b]! || a - b);
      let max = -Infinity;
      for (const v of s) if (v > max) max = v;
      let sum = 0;
      for (const v of s) if (v !== NEG) sum += Math.exp(v - max);
      let cum = 0;
      for (let j = 0; j < order.length - 1; j++) {
        cum += Math.fround(Math.exp(s[order[j]!]! - max) * (1 / sum));
        if (Math.fround(cum) <= Math.fround(1 - p)) s[order[j]!] = NEG;
      }
    };
    const r = mulberry32(77);
    for (const n of [300, 5003, 50257]) {
      const base = Float32Array.from({ length: n }, () => Math.round((r() * 2 - 1) * 40) / 8);
      for (const k of [5, 50]) {
        const row0 = base.slice();
        applyTopK(row0, k);
        for (const p of [0.5, 0.9, 0.99]) {
          const fast = row0.slice(), plain = row0.slice();
          applyTopP(fast, p);
          topPWholeRow(plain, p);
          expect(kept(fast), `n=${n} k=${k} p=${p}`).toEqual(kept(plain));
          for (const u of [0, 0.123, 0.5, 0.9999999]) {
            expect(sampleToken(fast.slice(), { nextFloat: () => u } as unknown as Xoshiro128)).toBe(drawPlain(fast, u));
          }
        }
      }
      // the heap path of kthLargest (k * 64 <= n), NaN counted as -Infinity
      const withNaN = base.slice();
      withNaN[3] = NaN;
      for (const k of [2, 4]) {
        const sorted = Array.from(withNaN, (v) => (Number.isNaN(v) ? -Infinity : v)).sort((a, b) => b - a);
        expect(kthLargest(withNaN, k)).toBe(sorted[k - 1]);
      }
    }
  });

  it('minP drops tokens below minP x the top probability', () => {
    const lp = (ps: number[]) => row(ps.map(Math.log));
    const a = lp([0.5, 0.25, 0.125, 0.125]);
    applyMinP(a, 0.3); // threshold .15
    expect(kept(a)).toEqual([0, 1]);
    const b = lp([0.5, 0.25, 0.125, 0.125]);
    applyMinP(b, 0.5); // threshold .25: 0.25 is not below it
    expect(kept(b)).toEqual([0, 1]);
    const c = lp([0.25, 0.5, 0.125, 0.125]);
    applyMinP(c, 1);
    expect(kept(c)).toEqual([1]);
  });

  it('repetitionPenalty divides positive scores and multiplies negative ones, once per token', () => {
    const s = row([2, -2, 1, 0.5]);
    applyRepetitionPenalty(s, [0, 1, 1, 1], 2);
    expect(Array.from(s)).toEqual([1, -4, 1, 0.5]);
  });

  it('runs in transformers order: penalty, temperature, topK, topP, minP; warpers only when sampling', () => {
    const cfg = resolveGenerationConfig({ doSample: true, temperature: 0.5, topP: 0.8, topK: 0 });
    // p = [.25, .75]; at temperature .5 it becomes [.1, .9], and topP .8 then drops token 0.
    const s = row([0, Math.log(3)]);
    for (const p of buildLogitsProcessors(cfg)) p(s, []);
    expect(kept(s)).toEqual([1]);
    // Had topP run first it would have kept both (.25 > .2).
    const t = row([0, Math.log(3)]);
    applyTopP(t, 0.8);
    expect(kept(t)).toEqual([0, 1]);
    // Penalty before temperature: 2 / 2 (penalty) / 0.5 (temperature) = 2.
    const u = row([2, 1]);
    for (const p of buildLogitsProcessors(resolveGenerationConfig({ doSample: true, temperature: 0.5, topK: 0, repetitionPenalty: 2 }))) p(u, [0]);
    expect(Array.from(u)).toEqual([2, 2]);
    expect(buildLogitsProcessors(resolveGenerationConfig({ temperature: 0.5, topP: 0.1 })).length).toBe(0);
    expect(buildLogitsProcessors(resolveGenerationConfig({ repetitionPenalty: 1.3 })).length).toBe(1);
    // transformers' topK default of 50 applies when sampling.
    expect(buildLogitsProcessors(resolveGenerationConfig({ doSample: true })).length).toBe(1);
  });

  it('repetitionPenalty changes a greedy generation', async () => {
    const model = new FakeLM({ scale: 0.5 });
    const prompt = randomPrompt(8, 12, 53);
    const plain = await generate(model, prompt, { maxNewTokens: 30 });
    const penalized = await generate(model, prompt, { maxNewTokens: 30, repetitionPenalty: 100 });
    expect(penalized).not.toEqual(plain);
    // A huge penalty on positive logits leaves no repeats while fresh positive tokens remain.
    const fresh = penalized[0]!.slice(12);
    expect(fresh.filter((t) => prompt.includes(t)).length).toBeLessThan(fresh.length);
  });
});

describe('stopping', () => {
  it('eos ends a sequence; in a batch a finished row is filled with the pad id', async () => {
    const model = new FakeLM();
    const prompt = randomPrompt(9, 4, 53);
    const chain = greedyChain(model, prompt, 20);
    const k = chain.slice(4).findIndex((t, i, a) => i >= 2 && !a.slice(0, i).includes(t));
    const eos = chain[4 + k]!;
    const out = await generate(model, prompt, { maxNewTokens: 20, eosTokenId: eos });
    expect(out[0]).toEqual(chain.slice(0, 4 + k + 1));
    // A list of eos ids works too, and the model's own eos is used by default.
    expect((await generate(model, prompt, { maxNewTokens: 20, eosTokenId: [52, eos] }))[0]!.at(-1)).toBe(eos);
    expect((await generate(new FakeLM({ eosTokenId: eos }), prompt, { maxNewTokens: 20 }))[0]).toEqual(out[0]);

    const other = randomPrompt(10, 4, 53);
    const otherChain = greedyChain(model, other, 20);
    const stopAt = otherChain.slice(4).indexOf(eos);
    const batch = await generate(new FakeLM(), [prompt, other], { maxNewTokens: 20, eosTokenId: eos, padTokenId: 0 });
    const rowLen = 4 + (stopAt >= 0 ? Math.max(k, stopAt) : 19) + 1;
    expect(batch[0]).toEqual([...out[0]!, ...new Array(rowLen - out[0]!.length).fill(0)]);
    expect(batch[1]!.length).toBe(rowLen);
  });

  it('stop strings end the sequence once its text ends with one (prompt occurrences do not count)', async () => {
    const model = new FakeLM({ vocabSize: ALPHA.length });
    const prompt = randomPrompt(11, 5, ALPHA.length);
    const chain = greedyChain(model, prompt, 20);
    const text = letterTokenizer.decode(chain);
    // A two-token stop string whose first occurrence ends at new token 6.
    const stop = text.slice(5 + 4, 5 + 6);
    expect(text.indexOf(stop)).toBe(5 + 4);
    const out = await generate(model, prompt, { maxNewTokens: 20, stopStrings: [stop, 'zzzzzz'], tokenizer: letterTokenizer });
    expect(out[0]).toEqual(chain.slice(0, 5 + 6));
    // The prompt itself contains this string; generation still runs to the budget.
    const inPrompt = letterTokenizer.decode(prompt.slice(1, 3));
    const full = await generate(model, prompt, { maxNewTokens: 20, stopStrings: inPrompt, tokenizer: letterTokenizer });
    const firstNew = letterTokenizer.decode(chain).indexOf(inPrompt, 4);
    expect(full[0]!.length).toBe(firstNew < 0 ? 25 : Math.min(25, firstNew + inPrompt.length));
  });

  it('a stop string may end inside the last token (multi-character tokens, real tokenizer)', () => {
    const tok = AutoTokenizer.fromPretrainedSync(join(embeddedModelsDir, 'fortune-gpt2'));
    const ids = tok.encode('The future of AI is bright');
    const crit = new StopStringCriterion(['of A', 'brig'], tok);
    const hits = ids.map((_, i) => crit.matches(ids.slice(0, i + 1)));
    // ' AI' completes 'of A' (the token overhangs it); ' bright' completes 'brig'.
    expect(hits).toEqual([false, false, false, true, false, true]);
  });
});

describe('stream', () => {
  it('yields each token with the text it completes; split characters wait until whole', async () => {
    const target = 'hé🎉!';
    const bytes = byteTokenizer.encode(target);
    const prompt = [104];
    const model = new FakeLM({ vocabSize: 256, script: { promptLength: 1, tokens: bytes } });
    const chunks = [];
    for await (const c of stream(model, byteTokenizer, prompt, { maxNewTokens: bytes.length })) chunks.push(c);
    expect(chunks.map((c) => c.token)).toEqual(bytes);
    expect(chunks.map((c) => c.text).join('')).toBe(target);
    // 'é' is 2 bytes, '🎉' 4: the first byte of each yields no text.
    expect(chunks.map((c) => c.text)).toEqual(['h', '', 'é', '', '', '', '🎉', '!']);
    // Same tokens as generate().
    const g = await generate(new FakeLM({ vocabSize: 256, script: { promptLength: 1, tokens: bytes } }), prompt, { maxNewTokens: bytes.length });
    expect(g[0]!.slice(1)).toEqual(bytes);
  });

  it('flushes a character cut by the length budget, and frees the cache when the consumer stops early', async () => {
    const bytes = byteTokenizer.encode('a🎉');
    const model = new FakeLM({ vocabSize: 256, script: { promptLength: 1, tokens: bytes } });
    const texts = [];
    for await (const c of stream(model, byteTokenizer, [97], { maxNewTokens: 3 })) texts.push(c.text);
    expect(texts).toEqual(['a', '', '\uFFFD']);

    const many = new FakeLM();
    let n = 0;
    for await (const c of stream(many, letterTokenizer, randomPrompt(12, 3, 53), { maxNewTokens: 30 })) {
      expect(typeof c.token).toBe('number');
      if (++n === 4) break;
    }
    expect(many.caches.length).toBe(1);
    expect(many.caches[0]!.disposed).toBe(true);
    expect(many.calls.length).toBe(4);
  });

  it('decodes a real GPT-2 emoji split over tokens only once complete', () => {
    const tok = AutoTokenizer.fromPretrainedSync(join(embeddedModelsDir, 'fortune-gpt2'));
    const ids = tok.encode(' party 🎉 time 日本<|endoftext|>');
    const dec = new TextStreamDecoder(tok);
    const pieces = ids.map((id) => dec.push(id));
    expect(pieces.join('') + dec.flush()).toBe(' party 🎉 time 日本');
    expect(pieces.some((p) => p === '')).toBe(true);
    expect(pieces.every((p) => !p.includes('\uFFFD'))).toBe(true);
  });

  it('accepts a string prompt and rejects batches', async () => {
    const model = new FakeLM({ vocabSize: ALPHA.length });
    const out = [];
    for await (const c of stream(model, letterTokenizer, 'abc', { maxNewTokens: 4 })) out.push(c.token);
    expect(out).toEqual(greedyChain(model, [0, 1, 2], 4).slice(3));
    await expect(stream(model, letterTokenizer, [[1], [2]] as unknown as number[]).next()).rejects.toThrow(/use generate\(\) for batches/);
  });
});

describe('generation config', () => {
  it('loads generation_config.json defaults and lets the caller override them', () => {
    const g = loadGenerationConfig(join(embeddedModelsDir, 'fortune-gpt2'));
    expect(g).toEqual({ bosTokenId: 50256, eosTokenId: 50256, padTokenId: 50256 });
    const cfg = resolveGenerationConfig(g, { maxNewTokens: 8, eosTokenId: [1, 2] });
    expect(cfg).toMatchObject({ eosTokenId: [1, 2], padTokenId: 50256, maxNewTokens: 8, doSample: false, topK: 50, maxLength: 20 });
    expect(resolveGenerationConfig().temperature).toBe(GENERATION_DEFAULTS.temperature);
    expect(loadGenerationConfig(join(embeddedModelsDir, 'no-such-model'))).toEqual({});
  });

  it('uses a model\'s generationConfig below the caller\'s options', async () => {
    const model = Object.assign(new FakeLM(), { generationConfig: { maxNewTokens: 3, doSample: true, seed: 5 } });
    const prompt = randomPrompt(13, 4, 53);
    const a = await generate(model, prompt);
    expect(a[0]!.length).toBe(7);
    expect(await generate(model, prompt)).toEqual(a);
    expect((await generate(model, prompt, { doSample: false }))[0]).toEqual(greedyChain(model, prompt, 3));
  });

  it('rejects a malformed generation_config.json naming the file', () => {
    const dir = mkdtempSync(join(tmpdir(), 'nibble-gen-'));
    writeFileSync(join(dir, 'generation_config.json'), '{ "max_new_tokens": ');
    expect(() => loadGenerationConfig(dir)).toThrow(/generation_config.json is not valid JSON/);
    writeFileSync(join(dir, 'generation_config.json'), '{ "top_p": 3 }');
    expect(() => loadGenerationConfig(dir)).toThrow(/generation_config.json: topP must be a number in \[0, 1\], got 3/);
  });
});

describe('bad input gives a clear error', () => {
  const model = new FakeLM({ nPositions: 32 });
  it('empty prompt', async () => {
    await expect(generate(model, [])).rejects.toThrow(/prompt 0 is empty/);
    await expect(generate(model, [[1, 2], []])).rejects.toThrow(/prompt 1 is empty/);
    await expect(generate(model, { inputIds: [[0, 0]], attentionMask: [[0, 0]] })).rejects.toThrow(/prompt 0 is empty/);
    await expect(generate(model, [[]] as number[][])).rejects.toThrow(/prompt 0 is empty/);
  });
  it('prompt plus maxNewTokens past n_positions names both numbers', async () => {
    await expect(generate(model, new Array(30).fill(1), { maxNewTokens: 5 })).rejects.toThrow(
      /prompt length \(30\) \+ maxNewTokens \(5\) = 35 exceeds the model's 32 positions/,
    );
    await expect(generate(model, new Array(30).fill(1), { maxLength: 40 })).rejects.toThrow(/prompt length \(30\) \+ maxNewTokens \(10, from maxLength 40\)/);
    await expect(generate(model, new Array(25).fill(1))).rejects.toThrow(/prompt is 25 tokens long but maxLength is 20/);
    // Exactly n_positions is allowed.
    expect((await generate(model, new Array(30).fill(1), { maxNewTokens: 2 }))[0]!.length).toBe(32);
    expect(model.caches.at(-1)!.disposed).toBe(true);
  });
  it('ids that are not token ids', async () => {
    await expect(generate(model, [1, 2.5])).rejects.toThrow(/prompt 0, position 1: 2.5 is not a token id \(integers 0..52\)/);
    await expect(generate(model, [[1], [53]])).rejects.toThrow(/prompt 1, position 0: 53 is not a token id/);
    await expect(generate(model, [-1])).rejects.toThrow(/-1 is not a token id/);
    await expect(generate(model, 'hello' as unknown as number[])).rejects.toThrow(/input must be token ids/);
  });
  it('an aborted signal stops generation between steps and frees the cache', async () => {
    const m = new FakeLM();
    const ac = new AbortController();
    let seen = 0;
    const run = (async () => {
      for await (const c of stream(m, letterTokenizer, [1, 2, 3], { maxNewTokens: 40, signal: ac.signal })) {
        if (++seen === 5) ac.abort(new Error('user stopped it'));
        expect(c.token).toBeGreaterThanOrEqual(0);
      }
    })();
    await expect(run).rejects.toThrow(/user stopped it/);
    expect(seen).toBe(5);
    expect(m.caches[0]!.disposed).toBe(true);
    await expect(generate(m, [1], { signal: AbortSignal.abort() })).rejects.toThrow(/abort/i);
    await expect(generate(m, [1], { signal: 'stop' as never })).rejects.toThrow(/signal must be an AbortSignal/);
  });
  it('bad options', async () => {
    await expect(generate(model, [1], { max_new_tokens: 3 } as never)).rejects.toThrow(/unknown option 'max_new_tokens' \(did you mean maxNewTokens\?\)/);
    await expect(generate(model, [1], { doSample: true, temperature: 0 })).rejects.toThrow(/temperature must be > 0 when sampling/);
    await expect(generate(model, [1], { topP: 1.5 })).rejects.toThrow(/topP must be a number in \[0, 1\], got 1.5/);
    await expect(generate(model, [1], { topK: -1 })).rejects.toThrow(/topK must be an integer >= 0/);
    await expect(generate(model, [1], { maxNewTokens: 0 })).rejects.toThrow(/maxNewTokens must be a positive integer, got 0/);
    await expect(generate(model, [1], { seed: 1.5 })).rejects.toThrow(/seed must be an integer/);
    await expect(generate(model, [1], { eosTokenId: [1, -2] })).rejects.toThrow(/eosTokenId must be a token id/);
    await expect(generate(model, [1], { eosTokenId: 99 })).rejects.toThrow(/special token id 99 is outside the model's vocabulary \(53\)/);
    await expect(generate(model, [1], { stopStrings: ['x'] })).rejects.toThrow(/stopStrings need a tokenizer/);
    await expect(generate(model, [1], { stopStrings: [''], tokenizer: letterTokenizer })).rejects.toThrow(/stopStrings must be a non-empty string/);
    await expect(generate(model, { inputIds: [[1, 2]], attentionMask: [[1, 0]] })).rejects.toThrow(/padding after a token/);
    await expect(generate(model, { inputIds: [[1, 2]], attentionMask: [[1]] })).rejects.toThrow(/attentionMask row 0 must have 2 entries/);
  });
});

it('keeps a 10 ms interval timer firing while generate runs (the loop yields every step)', async () => {
  // Each forward burns 4 ms synchronously and everything settles as microtasks: timers only
  // run if the loop itself gives the event loop a turn between steps.
  const model = new FakeLM({ busyMs: 4, microtaskLogits: true });
  let ticks = 0;
  const timer = setInterval(() => ticks++, 10);
  const t0 = performance.now();
  try {
    await generate(model, randomPrompt(14, 4, 53), { maxNewTokens: 50 });
  } finally {
    clearInterval(timer);
  }
  const elapsed = performance.now() - t0;
  expect(elapsed).toBeGreaterThan(150);
  expect(ticks).toBeGreaterThanOrEqual(Math.floor(elapsed / 10 / 3));
});

describe('with the embedded fortune-gpt2 model and its tokenizer', () => {
  it('stream() text concatenates to the decoded tokens of generate(); a tokenizer batch gives each row its solo result', async () => {
    const { AutoModelForCausalLM } = await import('../lib/models/auto.js');
    const model = await AutoModelForCausalLM.fromPretrained();
    const tok = AutoTokenizer.fromPretrainedSync(join(embeddedModelsDir, 'fortune-gpt2'));
    try {
      const prompt = tok.encode('The future of AI is');
      const opts = { maxNewTokens: 30, doSample: true, seed: 11, topP: 0.95 };
      const chunks = [];
      for await (const c of stream(model, tok, prompt, opts)) chunks.push(c);
      const generated = (await generate(model, prompt, opts))[0]!.slice(prompt.length);
      expect(chunks.map((c) => c.token)).toEqual(generated);
      expect(chunks.map((c) => c.text).join('')).toBe(tok.decode(generated, { skipSpecialTokens: true }));

      const texts = ['Hello world', 'The future of AI is', 'A fortune: you will'];
      const enc = tok.batchEncode(texts);
      const batch = await generate(model, enc, { maxNewTokens: 12 });
      for (let b = 0; b < texts.length; b++) {
        const solo = (await generate(model, tok.encode(texts[b]!), { maxNewTokens: 12 }))[0]!;
        const width = enc.inputIds[0]!.length;
        const fresh = batch[b]!.slice(width);
        // Rows that stop at eos are filled with eos (the pad id) up to the batch's length.
        const soloFresh = solo.slice(tok.encode(texts[b]!).length);
        expect(fresh.slice(0, soloFresh.length)).toEqual(soloFresh);
        expect(fresh.slice(soloFresh.length).every((t) => t === 50256)).toBe(true);
      }
    } finally {
      model.dispose();
    }
  });
});
