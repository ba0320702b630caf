// GPT-2 forward pass with a KV cache, written op by op over the native kernels (llm.c's
// gpt2_forward is the model for its shape). Every op is queued; the only wait is when the
// caller reads the logits, so the event loop stays free during a forward pass.
import type { Embedding } from '../nn/Embedding.js';
import type { LayerNorm } from '../nn/LayerNorm.js';
import type { LinearLike, Module } from '../nn/module.js';
import * as ops from '../ops.js';
import { native } from '../native.js';
import { Tensor, type Device } from '../tensor.js';
import { generate, type GenerateInput, type GenerateOptions } from '../generation/generate.js';
import type { GenerationOptions } from '../generation/generation-config.js';
import { stream, type StreamChunk, type StreamOptions, type StreamTokenizer } from '../generation/stream.js';
import type { GPT2Config } from './gpt2-config.js';
import { GPT2Plan } from './gpt2-plan.js';
import type { CausalLM, ForwardOptions, ForwardOutput, KVCache } from './types.js';

export interface GPT2Block {
  ln1: LayerNorm;
  cAttn: LinearLike;
  attnProj: LinearLike;
  ln2: LayerNorm;
  cFc: LinearLike;
  mlpProj: LinearLike;
}

export class GPT2KVCache implements KVCache {
  length = 0;
  /** 0/1 per cached position and sequence: padding stays masked on later steps. */
  mask: number[][];
  constructor(readonly k: Tensor[], readonly v: Tensor[], readonly batchSize: number, readonly capacity: number) {
    this.mask = Array.from({ length: batchSize }, () => []);
  }
  /** @internal the native binding of this cache for the whole-forward CUDA path */
  _nativeId?: number;
  /** Forgets positions from `length` on; the next forward overwrites them. */
  truncate(length: number): void {
    if (!Number.isInteger(length) || length < 0 || length > this.length)
      throw new RangeError(`KV cache: cannot truncate ${this.length} positions to ${length}`);
    this.length = length;
    this.mask = this.mask.map((r) => r.slice(0, length));
  }
  dispose(): void {
    if (this._nativeId !== undefined) native().gpt2PlanCacheRelease(this._nativeId);
    this._nativeId = undefined;
    for (const t of [...this.k, ...this.v]) t.dispose();
  }
}

export class ForwardError extends Error {
  override name = 'ForwardError';
}

export class GPT2LMHeadModel implements CausalLM {
  /** Defaults from the checkpoint's generation_config.json. */
  generationConfig?: GenerationOptions;
  /** The checkpoint's tokenizer, when its folder has one (used by stream() and stop strings). */
  tokenizer?: StreamTokenizer;
  /** Folder the weights were read from. */
  modelDir?: string;

  constructor(
    readonly config: GPT2Config,
    readonly device: Device,
    readonly wte: Embedding,
    readonly wpe: Embedding,
    readonly blocks: GPT2Block[],
    readonly lnF: LayerNorm,
    readonly lmHead: LinearLike,
  ) {}

  /** Modules by transformers' dotted names (GPT2LMHeadModel layout). */
  namedModules(): [string, Module][] {
    const out: [string, Module][] = [['transformer.wte', this.wte], ['transformer.wpe', this.wpe]];
    this.blocks.forEach((b, i) => {
      const p = `transformer.h.${i}.`;
      out.push([p + 'ln_1', b.ln1], [p + 'attn.c_attn', b.cAttn], [p + 'attn.c_proj', b.attnProj],
        [p + 'ln_2', b.ln2], [p + 'mlp.c_fc', b.cFc], [p + 'mlp.c_proj', b.mlpProj]);
    });
    out.push(['transformer.ln_f', this.lnF], ['lm_head', this.lmHead]);
    return out;
  }

  /** A fresh KV cache for `batchSize` sequences of up to `capacity` positions. */
  createCache(batchSize: number, capacity = this.config.nPositions): GPT2KVCache {
    if (capacity > this.config.nPositions)
      throw new ForwardError(`cache capacity ${capacity} exceeds n_positions (${this.config.nPositions})`);
    const { nLayer, nHead, nEmbd } = this.config;
    const shape = [batchSize, nHead, capacity, nEmbd / nHead];
    const mk = () => Array.from({ length: nLayer }, () => Tensor.empty(shape, 'float32', this.device));
    return new GPT2KVCache(mk(), mk(), batchSize, capacity);
  }

  async forward(inputIds: number[][], options: ForwardOptions = {}): Promise<ForwardOutput> {
    const { vocabSize, nPositions, nEmbd, layerNormEpsilon } = this.config;
    const B = inputIds.length;
    if (!B) throw new ForwardError('forward: inputIds is empty (expected [batch][tokens])');
    const T = inputIds[0]!.length;
    if (!T) throw new ForwardError('forward: the prompt is empty: give at least one token');
    inputIds.forEach((row, b) => {
      if (row.length !== T) throw new ForwardError(`forward: row ${b} has ${row.length} tokens, row 0 has ${T}: left-pad to equal length and pass an attentionMask`);
      for (const id of row)
        if (!Number.isInteger(id) || id < 0 || id >= vocabSize)
          throw new ForwardError(`forward: token id ${id} in row ${b} is outside the vocabulary (0..${vocabSize - 1})`);
    });
    const given = options.pastKeyValues;
    if (given && !(given instanceof GPT2KVCache)) throw new ForwardError('forward: pastKeyValues must come from this model');
    if (given && given.batchSize !== B) throw new ForwardError(`forward: pastKeyValues holds ${given.batchSize} sequences, inputIds has ${B}`);
    const cache = (given as GPT2KVCache | undefined) ?? this.createCache(B, Math.min(nPositions, Math.max(T, options.cacheCapacity ?? nPositions)));
    const past = cache.length;
    if (past + T > cache.capacity)
      throw new ForwardError(`forward: ${past} cached + ${T} new tokens exceed ${cache.capacity === nPositions ? `n_positions (${nPositions})` : `the cache capacity (${cache.capacity})`}`);

    // The full mask over cached + new positions; padding remembered from earlier calls.
    let mask: number[][];
    if (options.attentionMask) {
      mask = options.attentionMask;
      if (mask.length !== B || mask.some((r) => r.length !== past + T))
        throw new ForwardError(`forward: attentionMask must be [${B}][${past + T}] (cached + new positions)`);
    } else {
      mask = cache.mask.map((r) => [...r, ...new Array<number>(T).fill(1)]);
    }
    // Positions as transformers' generate computes them: cumsum(mask) - 1, padding at 1.
    const ids = new Int32Array(B * T);
    const pos = new Int32Array(B * T);
    let padded = false;
    for (let b = 0; b < B; b++) {
      let seen = 0;
      const m = mask[b]!;
      for (let j = 0; j < past + T; j++) {
        const on = m[j] ? 1 : 0;
        if (!on) padded = true;
        seen += on;
        if (j >= past) {
          ids[b * T + j - past] = inputIds[b]![j - past]!;
          pos[b * T + j - past] = on ? seen - 1 : 1;
        }
      }
    }
    const plan = this.wholePlan();
    const deviceIds = options.deviceInputIds;
    if (deviceIds) {
      if (!plan || this.device === 'cpu') throw new ForwardError('forward: deviceInputIds needs the whole-forward CUDA path (see forwardFromDevice)');
      if (deviceIds.dtype !== 'int32' || deviceIds.device !== this.device || deviceIds.numel !== B * T)
        throw new ForwardError(`forward: deviceInputIds must be int32 [${B * T}] on ${this.device}, got ${deviceIds.dtype} [${deviceIds.shape.join(', ')}] on ${deviceIds.device}`);
    }
    if (plan) {
      const rows = options.lastTokenOnly ? 1 : T;
      const logits = Tensor.empty([B, rows, vocabSize], 'float32', this.device);
      cache._nativeId ??= plan.bindCache(cache.k, cache.v);
      const maskArr = padded ? Int32Array.from(mask.flat(), (v) => (v ? 1 : 0)) : null;
      plan.forward(cache._nativeId, logits, ids, pos, maskArr, past, B, T, !!options.lastTokenOnly, deviceIds ?? null);
      cache.length = past + T;
      cache.mask = mask;
      return { logits, pastKeyValues: cache };
    }
    // On a GPU these small index tensors are copied over with the kernels' inputs; the ids
    // were range-checked above, since a kernel cannot throw.
    const idsT = Tensor.from(ids, [B * T], 'int32', this.device);
    const posT = Tensor.from(pos, [B * T], 'int32', this.device);
    const maskT = padded ? Tensor.from(Int32Array.from(mask.flat(), (v) => (v ? 1 : 0)), [B, past + T], 'int32', this.device) : null;

    const x = ops.embedding(this.wte.weight, this.wpe.weight, idsT, posT); // [B*T, C]
    const scratch: Tensor[] = [idsT, posT];
    if (maskT) scratch.push(maskT);
    this.blocks.forEach((blk, l) => {
      const h = blk.ln1.forward(x);
      const qkv = blk.cAttn.forward(h);
      const qkv3 = qkv.view([B, T, 3 * nEmbd]);
      const a = ops.attention(qkv3, cache.k[l]!, cache.v[l]!, maskT, past);
      const a2 = a.view([B * T, nEmbd]);
      const o = blk.attnProj.forward(a2);
      ops.addInPlace(x, o);
      const h2 = blk.ln2.forward(x);
      const f = blk.cFc.forward(h2);
      const g = ops.geluNew(f);
      const m = blk.mlpProj.forward(g);
      ops.addInPlace(x, m);
      scratch.push(h, qkv, qkv3, a, a2, o, h2, f, g, m);
    });
    let last = x;
    let rows = T;
    if (options.lastTokenOnly && T > 1) {
      last = Tensor.empty([B, nEmbd], 'float32', this.device);
      for (let b = 0; b < B; b++) {
        const dst = last.narrow(b, 1);
        const src = x.narrow(b * T + T - 1, 1);
        native().copy(dst, src);
        dst.dispose();
        src.dispose();
      }
      rows = 1;
      scratch.push(x);
    }
    const xf = this.lnF.forward(last);
    const flat = this.lmHead.forward(xf);
    const logits = flat.view([B, rows, vocabSize]);
    scratch.push(last, xf, flat);
    // Disposing drops our references; kernels still queued hold their own.
    for (const t of scratch) t.dispose();
    cache.length = past + T;
    cache.mask = mask;
    return { logits, pastKeyValues: cache };
  }

  /**
   * Generates continuations of one prompt (ids or, with a tokenizer, text) or of a batch
   * (rows are left-padded). Returns prompt + new tokens per row. Defaults come from
   * generation_config.json; greedy unless doSample is true.
   */
  async generate(input: GenerateInput | string, options: GenerateOptions = {}): Promise<number[][]> {
    const ids = typeof input === 'string' ? this.requireTokenizer('generate').encode(input) : input;
    return generate(this, ids, { tokenizer: this.tokenizer, ...options });
  }

  /** Streams `{ token, text }` for one prompt as tokens are produced. */
  stream(prompt: readonly number[] | string, options: StreamOptions = {}): AsyncGenerator<StreamChunk, void, undefined> {
    return stream(this, this.requireTokenizer('stream'), prompt, options);
  }

  private requireTokenizer(where: string): StreamTokenizer {
    if (!this.tokenizer) throw new Error(`${where}: this model was loaded without a tokenizer (its folder has no tokenizer files); pass token ids or use lib/generation with a tokenizer`);
    return this.tokenizer;
  }

  /**
   * Bytes of parameters and buffers, as transformers' get_memory_footprint(): packed 4-bit and
   * int8 weights count, their quantization constants (absmax, codebooks, scales) do not unless
   * `includeQuantConstants`. Tied tensors count once.
   */
  getMemoryFootprint(options: { includeQuantConstants?: boolean } = {}): number {
    const seen = new Set<Tensor>();
    for (const [, m] of this.namedModules()) {
      for (const t of Object.values(m.tensors())) seen.add(t);
      if (options.includeQuantConstants) for (const t of Object.values(m.quantConstants())) seen.add(t);
    }
    let bytes = 0;
    for (const t of seen) bytes += t.nbytes;
    return bytes;
  }

  /** Writes config.json, model.safetensors (transformers + bitsandbytes format) and tokenizer files. */
  async savePretrained(dir: string): Promise<void> {
    const { saveGPT2 } = await import('./gpt2-save.js');
    await saveGPT2(this, dir, this.quantizationConfig ? { quantization_config: this.quantizationConfig } : {});
  }

  /**
   * Queues a one-token decode step reading its ids from `ids` (int32 [B] on this model's GPU)
   * when it runs: generate() queues step t+1 right behind the sampling of step t, so the GPU
   * never waits for the host between steps. null when the whole-forward CUDA path is off.
   */
  forwardFromDevice(ids: Tensor, options: ForwardOptions): Promise<ForwardOutput> | null {
    if (this.device === 'cpu' || !this.wholePlan()) return null;
    const placeholder = Array.from({ length: ids.numel }, () => [0]);
    return this.forward(placeholder, { ...options, deviceInputIds: ids });
  }

  /** config.json's quantization_config when the model is quantized (set by the loader). */
  quantizationConfig?: Record<string, unknown>;

  private plan: GPT2Plan | null | undefined;
  /** The whole-forward plan (CUDA or CPU), made on first use; null when the model does not qualify. */
  private wholePlan(): GPT2Plan | null {
    if (this.plan === undefined)
      this.plan = GPT2Plan.tryCreate(this, {
        wte: this.wte.weight, wpe: this.wpe.weight, blocks: this.blocks, lnF: this.lnF, lmHead: this.lmHead,
        nHead: this.config.nHead, eps: this.config.layerNormEpsilon,
      });
    return this.plan;
  }

  /** Frees every weight now (also done by the finalizers when the model is collected). */
  dispose(): void {
    this.plan?.release();
    this.plan = null;
    const seen = new Set<Module>();
    for (const [, m] of this.namedModules()) if (!seen.has(m)) { seen.add(m); m.dispose(); }
  }
}
