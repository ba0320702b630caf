// The decode loop: one prefill over the (left-padded) prompts, then one token per step through
// the model's KV cache. Every step awaits the model and yields to the event loop, so a
// generation never blocks timers or I/O for more than one step's JS work.
import type { CausalLM, ForwardOutput, KVCache } from '../models/types.js';
import { Tensor } from '../tensor.js';
import {
  isGenerationOptionKey, resolveGenerationConfig, unknownOptionError,
  type GenerationConfig, type GenerationOptions,
} from './generation-config.js';
import { DeviceSampler, switchOn } from './device-sampler.js';
import { buildLogitsProcessors } from './logits-processors.js';
import { Xoshiro128, argmax, sampleToken } from './sampler.js';
import { EosCriterion, StopStringCriterion, type TextDecoderLike } from './stopping.js';

/** One prompt, several prompts (any lengths: they are left-padded), or a padded batch with its mask. */
export type GenerateInput = readonly number[] | readonly (readonly number[])[] | { inputIds: readonly (readonly number[])[]; attentionMask?: readonly (readonly number[])[] };

export interface GenerateOptions extends GenerationOptions {
  /** [B][T] mask (1 = token, 0 = padding) for an already padded batch. */
  attentionMask?: readonly (readonly number[])[];
  /** Defaults below the caller's options, e.g. a model's generation_config.json. */
  generationConfig?: GenerationOptions;
  /** Needed for stopStrings. */
  tokenizer?: TextDecoderLike;
  /** Stops the generation between steps: generate() then rejects with the signal's reason. */
  signal?: AbortSignal;
}

/** A model that may carry its generation_config.json defaults. */
export type GenerationModel = CausalLM & { generationConfig?: GenerationOptions };

export interface GenerationStep {
  /** The token chosen for each sequence at this step (the pad id for finished ones). */
  tokens: number[];
  /** Which sequences are finished after this step. */
  finished: boolean[];
  /** True on the final step (all finished or the length budget reached). */
  last: boolean;
}

const OWN_KEYS = new Set(['attentionMask', 'generationConfig', 'tokenizer', 'signal']);

/**
 * Generates continuations. Returns, for each sequence, its input row followed by the new
 * tokens. Rows given with different lengths are left-padded internally and come back as
 * given; a padded batch (`{inputIds, attentionMask}`) comes back padded. Sequences that finish
 * early are filled with the pad id (default: the eos id), as transformers does, so all rows
 * get the same number of new tokens.
 *
 * Lengths: the padded prompt length plus the new tokens must fit the model's context
 * (config.nPositions); otherwise this throws, naming both numbers, instead of truncating.
 */
export async function generate(model: GenerationModel, input: GenerateInput, options: GenerateOptions = {}): Promise<number[][]> {
  const run = startGeneration(model, input, options, 'generate');
  const out = run.rows.map((r) => [...r]);
  for await (const step of run.steps) step.tokens.forEach((t, b) => out[b]!.push(t));
  return out;
}

export interface GenerationRun {
  /** The input rows as the caller gave them (unpadded for ragged input). */
  rows: number[][];
  config: GenerationConfig;
  steps: AsyncGenerator<GenerationStep, void, undefined>;
}

/**
 * Validates everything up front (so errors surface before any model work) and returns an async
 * step iterator. Breaking out of it early frees the KV cache. Used by generate() and stream().
 */
export function startGeneration(model: GenerationModel, input: GenerateInput, options: GenerateOptions, where: string): GenerationRun {
  if (!model || typeof model.forward !== 'function' || !model.config) throw new TypeError(`${where}: model must be a CausalLM (forward + config)`);
  if (options === null || typeof options !== 'object') throw new TypeError(`${where}: options must be an object`);
  const user: GenerationOptions = {};
  for (const [k, v] of Object.entries(options)) {
    if (isGenerationOptionKey(k)) (user as Record<string, unknown>)[k] = v;
    else if (!OWN_KEYS.has(k)) throw unknownOptionError(where, k);
  }
  const fromModel: GenerationOptions = {
    eosTokenId: model.config.eosTokenId ?? undefined,
    bosTokenId: model.config.bosTokenId ?? undefined,
  };
  const config = resolveGenerationConfig(fromModel, model.generationConfig, options.generationConfig, user);

  const vocab = model.config.vocabSize;
  const { rows, padded, mask, givenPadded } = normalizeInput(input, options.attentionMask, config, vocab, where);
  const width = padded[0]!.length;

  let maxNew: number;
  let budget: string;
  if (config.maxNewTokens !== null) {
    maxNew = config.maxNewTokens;
    budget = `maxNewTokens (${maxNew})`;
  } else {
    maxNew = config.maxLength - width;
    budget = `maxNewTokens (${maxNew}, from maxLength ${config.maxLength})`;
    if (maxNew <= 0)
      throw new RangeError(`${where}: the prompt is ${width} tokens long but maxLength is ${config.maxLength}: set maxNewTokens, or a maxLength above the prompt length`);
  }
  const nPositions = model.config.nPositions;
  if (width + maxNew > nPositions)
    throw new RangeError(
      `${where}: prompt length (${width}) + ${budget} = ${width + maxNew} exceeds the model's ${nPositions} positions (n_positions); shorten the prompt or ask for fewer tokens`,
    );

  for (const t of [config.padTokenId, ...config.eosTokenId])
    if (t !== null && t >= vocab) throw new RangeError(`${where}: special token id ${t} is outside the model's vocabulary (${vocab})`);
  if (config.stopStrings.length > 0 && !options.tokenizer)
    throw new TypeError(`${where}: stopStrings need a tokenizer to decode text: pass options.tokenizer`);

  const signal = options.signal;
  if (signal !== undefined && !(signal instanceof AbortSignal)) throw new TypeError(`${where}: signal must be an AbortSignal`);
  const steps = decodeLoop(model, padded, mask, maxNew, config, options.tokenizer, signal);
  return { rows: givenPadded ? padded : rows, config, steps };
}

interface NormalizedInput {
  rows: number[][];
  padded: number[][];
  mask: number[][];
  givenPadded: boolean;
}

function normalizeInput(
  input: GenerateInput,
  maskOpt: GenerateOptions['attentionMask'],
  config: GenerationConfig,
  vocab: number,
  where: string,
): NormalizedInput {
  let rows: readonly (readonly number[])[];
  let mask: readonly (readonly number[])[] | undefined = maskOpt;
  if (Array.isArray(input)) {
    rows = input.length > 0 && Array.isArray(input[0]) ? (input as readonly (readonly number[])[]) : [input as readonly number[]];
  } else if (input && typeof input === 'object' && Array.isArray((input as { inputIds?: unknown }).inputIds)) {
    const enc = input as { inputIds: readonly (readonly number[])[]; attentionMask?: readonly (readonly number[])[] };
    rows = enc.inputIds;
    mask = enc.attentionMask ?? maskOpt;
  } else {
    throw new TypeError(`${where}: input must be token ids (number[]), a batch (number[][]) or {inputIds, attentionMask}`);
  }
  if (rows.length === 0) throw new RangeError(`${where}: the batch is empty: give at least one prompt`);

  rows.forEach((r, b) => {
    if (!Array.isArray(r)) throw new TypeError(`${where}: prompt ${b} must be an array of token ids`);
    for (let i = 0; i < r.length; i++) {
      const id = r[i];
      if (!Number.isInteger(id) || (id as number) < 0 || (id as number) >= vocab)
        throw new RangeError(`${where}: prompt ${b}, position ${i}: ${String(id)} is not a token id (integers 0..${vocab - 1})`);
    }
  });

  if (mask !== undefined) {
    if (!Array.isArray(mask) || mask.length !== rows.length) throw new RangeError(`${where}: attentionMask must have one row per prompt (${rows.length})`);
    const width = rows[0]!.length;
    rows.forEach((r, b) => {
      const m = mask![b];
      if (r.length !== width) throw new RangeError(`${where}: with an attentionMask all rows must have the same length (row 0: ${width}, row ${b}: ${r.length})`);
      if (!Array.isArray(m) || m.length !== width) throw new RangeError(`${where}: attentionMask row ${b} must have ${width} entries like its prompt`);
      let seenToken = false;
      for (let i = 0; i < m.length; i++) {
        if (m[i] !== 0 && m[i] !== 1) throw new RangeError(`${where}: attentionMask[${b}][${i}] must be 0 or 1, got ${String(m[i])}`);
        if (m[i] === 1) seenToken = true;
        else if (seenToken) throw new RangeError(`${where}: attentionMask row ${b} has padding after a token: decoder-only generation needs left padding`);
      }
      if (!seenToken) throw new RangeError(emptyPrompt(where, b));
    });
    return { rows: rows.map((r) => [...r]), padded: rows.map((r) => [...r]), mask: mask.map((m) => [...m]), givenPadded: true };
  }

  rows.forEach((r, b) => {
    if (r.length === 0) throw new RangeError(emptyPrompt(where, b));
  });
  const width = rows.reduce((m, r) => Math.max(m, r.length), 0);
  const padId = config.padTokenId ?? config.eosTokenId[0] ?? 0;
  const padded = rows.map((r) => [...new Array<number>(width - r.length).fill(padId), ...r]);
  const m = rows.map((r) => [...new Array<number>(width - r.length).fill(0), ...new Array<number>(r.length).fill(1)]);
  return { rows: rows.map((r) => [...r]), padded, mask: m, givenPadded: false };
}

function emptyPrompt(where: string, b: number): string {
  return `${where}: prompt ${b} is empty: give at least one token id (for unconditional text start with the bos/eos token, 50256 for GPT-2)`;
}

// Lets timers and I/O run between steps even when a model's forward settles as a microtask.
const yieldToEventLoop = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

/** Whether generate() may queue step t+1 before step t's ids reach the host (NIBBLE_DECODE_AHEAD=0 forbids it). */
export function decodeAheadAllowed(env: Record<string, string | undefined> = process.env): boolean {
  return switchOn('NIBBLE_DECODE_AHEAD', env);
}

/**
 * How many steps generate() may queue before a step's ids reach the host: 0 (NIBBLE_DECODE_AHEAD
 * off), 1 (NIBBLE_DECODE_AHEAD=1: step t+1's forward), or 2 (the default: also step t+1's
 * sampling and step t+2's forward, when the sampling reads no token history).
 */
export function decodeAheadDepth(env: Record<string, string | undefined> = process.env): 0 | 1 | 2 {
  if (!decodeAheadAllowed(env)) return 0;
  return (env.NIBBLE_DECODE_AHEAD ?? '').trim() === '1' ? 1 : 2;
}

async function* decodeLoop(
  model: CausalLM,
  padded: number[][],
  mask: number[][],
  maxNew: number,
  config: GenerationConfig,
  tokenizer: TextDecoderLike | undefined,
  signal: AbortSignal | undefined,
): AsyncGenerator<GenerationStep, void, undefined> {
  const batch = padded.length;
  const width = padded[0]!.length;
  const seqs = padded.map((r) => [...r]);
  const masks = mask.map((r) => [...r]);
  const hasPadding = masks.some((r) => r.includes(0));
  const processors = buildLogitsProcessors(config);
  const rng = config.doSample ? new Xoshiro128(config.seed ?? Math.floor(Math.random() * 2 ** 32)) : null;
  const eos = new EosCriterion(config.eosTokenId);
  const stops = tokenizer ? new StopStringCriterion(config.stopStrings, tokenizer) : null;
  const padId = config.padTokenId ?? config.eosTokenId[0] ?? 0;
  const finished = new Array<boolean>(batch).fill(false);
  // Logits on a GPU: the processors and the choice run there and only the ids come back.
  const deviceSampler = DeviceSampler.create(config);
  // Decoding ahead: when the GPU samples and the model can read its next ids from device
  // memory, step t+1 is queued right behind step t's sampling, before step t's ids reach the
  // host; the host's per-step work (the ids' trip back, EOS checks, this loop, the event loop)
  // then overlaps the GPU's next step instead of leaving the GPU idle. The step queued ahead
  // is exactly the step the host would queue (the same ids, for every unfinished row); only
  // when the host must choose a token itself (a NaN, see DeviceSampler) is it undone.
  const depth = decodeAheadDepth();
  const aheadAllowed = deviceSampler !== null && typeof model.forwardFromDevice === 'function' && depth >= 1;
  // Two steps ahead: step t+1's sampling (for the rows unfinished so far) and step t+2's
  // forward are queued too, so the host's work for step t may take up to two GPU steps
  // before the GPU waits for it (one step of GPT-2 124M is ~240 us, about what a slow host
  // needs). Only for samplers that read no token history (it would lack step t's ids), and
  // undone when a row finishes at step t (the draws of step t+1 would no longer be the
  // host's) or step t goes to the host.
  const twoAhead = aheadAllowed && depth >= 2 && !deviceSampler.usesHistory;
  let feed: Tensor | null = null; // int32 [B] on the GPU: the ids the sampler chose last
  let ahead: Promise<ForwardOutput> | null = null;
  // Step t+1's sampling and step t+2's forward, queued during step t (twoAhead).
  type Queued = {
    pending: Promise<number[] | null>; // step t+1's ids
    active: number[]; // the rows it samples
    rngBefore: ReturnType<Xoshiro128['state']> | null; // the generator before its draws
    logits: Tensor; // step t+1's logits (what it samples)
    next: Promise<ForwardOutput> | null; // step t+2's forward, reading the ids it writes
  };
  let queued: Queued | null = null;
  // Undoes a queued step t+1 (its sampling and step t+2's forward): awaited, freed, the cache
  // position of step t+2 dropped. The generator is left where the caller puts it.
  const dropQueued = async (): Promise<void> => {
    const q = queued!;
    queued = null;
    await q.pending.catch(() => null);
    if (q.next) {
      const unused = await q.next;
      unused.logits.dispose();
      cache!.truncate!(cache!.length - 1);
    }
  };

  let cache: KVCache | undefined;
  let out: ForwardOutput | undefined;
  try {
    signal?.throwIfAborted();
    out = await model.forward(seqs, {
      attentionMask: hasPadding ? masks : undefined,
      lastTokenOnly: true,
      cacheCapacity: width + maxNew,
    });
    cache = out.pastKeyValues;
    for (let step = 0; step < maxNew; step++) {
      const logits = out.logits;
      const shape = logits.shape;
      const vocab = shape[shape.length - 1]!;
      const positions = shape.length === 3 ? shape[1]! : 1;
      if (shape[0] !== batch) throw new Error(`generate: the model returned logits [${shape.join(', ')}] for a batch of ${batch}`);
      let tokens: number[] | null = null;
      if (deviceSampler?.accepts(logits)) {
        let active: number[];
        let pending: Promise<number[] | null>;
        let rngBefore: ReturnType<Xoshiro128['state']> | null;
        if (queued && queued.logits === logits) {
          // This step's sampling and the next step's forward were queued during the last step.
          ({ active, pending, rngBefore } = queued);
          ahead = queued.next;
          queued = null;
        } else {
          active = [];
          for (let b = 0; b < batch; b++) if (!finished[b]) active.push(b);
          let feedNow: Tensor | null = null;
          if (aheadAllowed && step < maxNew - 1 && typeof cache?.truncate === 'function') {
            feed ??= Tensor.zeros([batch], 'int32', logits.device);
            feedNow = feed;
          }
          rngBefore = rng?.state() ?? null;
          pending = deviceSampler.sample(logits, active, seqs, rng, feedNow);
          if (feedNow) {
            ahead = model.forwardFromDevice!(feedNow, {
              pastKeyValues: cache,
              attentionMask: hasPadding ? masks.map((r) => [...r, 1]) : undefined,
              lastTokenOnly: true,
            });
            ahead?.catch(() => {}); // awaited below; meanwhile a failure is not "unhandled"
          }
        }
        if (twoAhead && ahead) {
          // The forward is queued, not run: its logits can be sampled (on the stream, after it).
          const nextLogits: Tensor = (await ahead).logits;
          const feedNext = step + 2 < maxNew ? feed : null;
          const before = rng?.state() ?? null;
          const p = deviceSampler.sample(nextLogits, active, seqs, rng, feedNext);
          p.catch(() => {}); // awaited with the next step, or by dropQueued
          let next: Promise<ForwardOutput> | null = null;
          if (feedNext) {
            next = model.forwardFromDevice!(feedNext, {
              pastKeyValues: cache,
              attentionMask: hasPadding ? masks.map((r) => [...r, 1, 1]) : undefined,
              lastTokenOnly: true,
            });
            next?.catch(() => {});
          }
          queued = { pending: p, active, rngBefore: before, logits: nextLogits, next };
        }
        const picked = await pending;
        if (picked) {
          tokens = new Array<number>(batch).fill(padId);
          active.forEach((b, i) => (tokens![b] = picked[i]!));
        } else if (ahead) {
          // The host chooses this step's tokens: the steps queued ahead read a stale id. Undo
          // them, and rewind the generator to this step's start (the host draws for it again).
          if (queued) await dropQueued();
          if (rng && rngBefore) rng.restore(rngBefore);
          const wasted = ahead;
          ahead = null;
          (await wasted).logits.dispose();
          cache!.truncate!(cache!.length - 1);
        }
      }
      if (!tokens) {
        // The host path: the whole logits tensor comes back (also when the GPU left a row to it).
        const data = await logits.toFloat32();
        tokens = new Array<number>(batch);
        for (let b = 0; b < batch; b++) {
          if (finished[b]) {
            tokens[b] = padId;
            continue;
          }
          const start = (b * positions + positions - 1) * vocab;
          const scores = data.subarray(start, start + vocab);
          for (const p of processors) p(scores, seqs[b]!);
          tokens[b] = rng ? sampleToken(scores, rng) : argmax(scores);
        }
      }
      logits.dispose();
      for (let b = 0; b < batch; b++) {
        seqs[b]!.push(tokens[b]!);
        masks[b]!.push(1);
        if (finished[b]) continue;
        if (eos.isEos(tokens[b]!) || (stops?.active && stops.matches(seqs[b]!))) finished[b] = true;
      }
      const last = step === maxNew - 1 || finished.every(Boolean);
      if (queued && !last && queued.active.some((b) => finished[b])) {
        // A row finished at this step: the next step's queued draws covered it. Sample again.
        const rewind = queued.rngBefore;
        await dropQueued();
        if (rng && rewind) rng.restore(rewind);
      }
      yield { tokens, finished: [...finished], last };
      if (last) break;

      await yieldToEventLoop();
      signal?.throwIfAborted();
      if (ahead) {
        const queued = ahead;
        ahead = null;
        out = await queued;
      } else {
        out = await model.forward(tokens.map((t) => [t]), {
          pastKeyValues: cache,
          attentionMask: hasPadding ? masks : undefined,
          lastTokenOnly: true,
        });
      }
      if (out.pastKeyValues !== cache) {
        cache.dispose();
        cache = out.pastKeyValues;
      }
    }
  } finally {
    if (queued) await dropQueued().catch(() => {});
    if (ahead) {
      // A step queued ahead that nobody will read (the run ended or failed meanwhile).
      const unused = await ahead.catch(() => null);
      if (unused && !unused.logits.disposed) unused.logits.dispose();
    }
    if (out && !out.logits.disposed) out.logits.dispose();
    feed?.dispose();
    cache?.dispose();
  }
}
