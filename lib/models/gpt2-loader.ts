// Builds a GPT2LMHeadModel from a checkpoint folder, one layer at a time. Conv1D weights
// ([in, out]) become Linear [out, in] float32; a `makeLinear` hook lets quantization turn
// each one into Linear4bit / Linear8bitLt as it is read, so the whole float model never
// has to exist in memory at once.
import { native } from '../native.js';
import { Embedding } from '../nn/Embedding.js';
import { LayerNorm } from '../nn/LayerNorm.js';
import { Linear } from '../nn/Linear.js';
import type { LinearLike } from '../nn/module.js';
import { openCheckpoint, type Checkpoint } from '../io/safetensors.js';
import { Tensor, type Device } from '../tensor.js';
import { loadGPT2Config, type GPT2Config } from './gpt2-config.js';
import { GPT2LMHeadModel, type GPT2Block } from './gpt2.js';

export class CheckpointError extends Error {
  override name = 'CheckpointError';
}

export interface LoadProgress {
  stage: 'load';
  /** Layers done (embeddings count as one, the final norm/head as one). */
  done: number;
  total: number;
}

export interface LinearSpec {
  /** transformers' module name, e.g. transformer.h.0.attn.c_attn */
  name: string;
  /** float32 [out, in] */
  weight: Tensor;
  bias: Tensor | null;
}

export interface GPT2LoadOptions {
  device?: Device;
  /** Replaces Linear construction (quantize on load). Takes ownership of weight and bias. */
  makeLinear?: (spec: LinearSpec, ck: Checkpoint, prefix: string) => LinearLike | Promise<LinearLike>;
  onProgress?: (p: LoadProgress) => void;
  /** Read config.json already parsed (saves a re-read). */
  config?: GPT2Config;
}

/** Float tensor as float32: zero-copy when already float32, else a converted copy. */
function asFloat32(t: Tensor): Tensor {
  if (t.dtype === 'float32') return t;
  if (t.dtype !== 'float16' && t.dtype !== 'bfloat16') throw new CheckpointError(`expected a float tensor, got ${t.dtype}`);
  const out = t.to('float32');
  t.dispose();
  return out;
}

export async function loadGPT2(dir: string, opts: GPT2LoadOptions = {}): Promise<GPT2LMHeadModel> {
  const device = opts.device ?? 'cpu';
  if (device !== 'cpu') throw new CheckpointError(`device ${device}: this build runs GPT-2 on the CPU only`);
  const config = opts.config ?? loadGPT2Config(dir);
  const { nEmbd: C, nLayer, vocabSize: V, nPositions: P, nInner, layerNormEpsilon: eps } = config;
  const ck = openCheckpoint(dir);
  try {
    const prefix = ck.has('transformer.wte.weight') ? 'transformer.' : ck.has('wte.weight') ? '' : null;
    if (prefix === null) throw new CheckpointError(`checkpoint ${dir} is missing tensor 'transformer.wte.weight' (nor 'wte.weight'): not a GPT-2 checkpoint`);
    const get = (name: string, shape: number[]): Tensor => {
      const key = prefix + name;
      if (!ck.has(key)) throw new CheckpointError(`checkpoint ${dir} is missing tensor '${key}'`);
      const info = ck.info(key);
      if (info.shape.length !== shape.length || info.shape.some((d, i) => d !== shape[i]))
        throw new CheckpointError(`tensor '${key}' has shape [${info.shape.join(', ')}], expected [${shape.join(', ')}] for this config (n_embd=${C}, n_inner=${nInner}, vocab_size=${V}, n_positions=${P})`);
      return asFloat32(ck.get(key));
    };
    const conv1d = async (name: string, inF: number, outF: number): Promise<LinearLike> => {
      const w = get(`${name}.weight`, [inF, outF]);
      const wt = Tensor.empty([outF, inF], 'float32');
      native().transpose2d(wt, w);
      w.dispose();
      const bias = get(`${name}.bias`, [outF]);
      const spec = { name: `transformer.${name}`, weight: wt, bias };
      return opts.makeLinear ? opts.makeLinear(spec, ck, prefix) : new Linear(wt, bias);
    };
    const norm = (name: string) => new LayerNorm(get(`${name}.weight`, [C]), get(`${name}.bias`, [C]), eps);

    const total = nLayer + 2;
    const wte = new Embedding(get('wte.weight', [V, C]));
    const wpe = new Embedding(get('wpe.weight', [P, C]));
    opts.onProgress?.({ stage: 'load', done: 1, total });
    const blocks: GPT2Block[] = [];
    for (let i = 0; i < nLayer; i++) {
      const p = `h.${i}.`;
      blocks.push({
        ln1: norm(p + 'ln_1'),
        cAttn: await conv1d(p + 'attn.c_attn', C, 3 * C),
        attnProj: await conv1d(p + 'attn.c_proj', C, C),
        ln2: norm(p + 'ln_2'),
        cFc: await conv1d(p + 'mlp.c_fc', C, nInner),
        mlpProj: await conv1d(p + 'mlp.c_proj', nInner, C),
      });
      // Let queued conversions of this layer finish before reading the next one: bounds
      // peak memory to about one layer of float32 beyond the converted model.
      await native().sync();
      opts.onProgress?.({ stage: 'load', done: i + 2, total });
    }
    const lnF = norm('ln_f');
    let lmHead: LinearLike;
    if (config.tieWordEmbeddings) {
      lmHead = new Linear(wte.weight, null);
    } else {
      if (!ck.has('lm_head.weight')) throw new CheckpointError(`checkpoint ${dir} is missing tensor 'lm_head.weight' (tie_word_embeddings is false)`);
      const info = ck.info('lm_head.weight');
      if (info.shape[0] !== V || info.shape[1] !== C)
        throw new CheckpointError(`tensor 'lm_head.weight' has shape [${info.shape.join(', ')}], expected [${V}, ${C}]`);
      lmHead = new Linear(asFloat32(ck.get('lm_head.weight')), null);
    }
    await native().sync();
    opts.onProgress?.({ stage: 'load', done: total, total });
    return new GPT2LMHeadModel(config, device, wte, wpe, blocks, lnF, lmHead);
  } finally {
    ck.close();
  }
}
