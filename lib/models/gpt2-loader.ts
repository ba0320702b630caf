// Builds a GPT2LMHeadModel from a checkpoint folder, one layer at a time. Conv1D weights
// ([in, out]) become Linear [out, in] float32; a `makeLinear` hook lets quantization turn
// each one into Linear4bit / Linear8bitLt as it is read, so the whole float model never
// has to exist in memory at once. On a GPU each layer is prepared on the CPU and moved
// before the next is read, so host memory holds about one layer beyond the mapped file.
import { native } from '../native.js';
import { Embedding } from '../nn/Embedding.js';
import { LayerNorm } from '../nn/LayerNorm.js';
import { Linear } from '../nn/Linear.js';
import type { LinearLike } from '../nn/module.js';
import { openCheckpoint, type Checkpoint } from '../io/safetensors.js';
import { Tensor, deviceIndex, type Device } from '../tensor.js';
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
  /** [out, in] in the load dtype, on the CPU */
  weight: Tensor;
  bias: Tensor | null;
  /** Where the model runs: the hook places the module it returns there. */
  device: Device;
}

export interface GPT2LoadOptions {
  device?: Device;
  /**
   * Type the unquantized parameters are kept in (transformers' `dtype`). On the CPU the
   * activations are float32 whatever this is; float16/bfloat16 halve the weights' memory and
   * the bytes a decode step reads.
   */
  dtype?: ParamDType;
  /**
   * Builds a Linear straight from the checkpoint without reading a float weight (checkpoints
   * saved quantized). Takes precedence over makeLinear.
   */
  loadLinear?: (name: string, inF: number, outF: number, ck: Checkpoint, prefix: string, device: Device) => LinearLike | Promise<LinearLike>;
  /** Replaces Linear construction (quantize on load). Takes ownership of weight and bias. */
  makeLinear?: (spec: LinearSpec, ck: Checkpoint, prefix: string) => LinearLike | Promise<LinearLike>;
  onProgress?: (p: LoadProgress) => void;
  /** Read config.json already parsed (saves a re-read). */
  config?: GPT2Config;
}

export type ParamDType = 'float32' | 'float16' | 'bfloat16';

/** A float tensor in `dtype`: zero-copy when it already is, else a converted copy. */
function asDType(t: Tensor, dtype: ParamDType, name: string): Tensor {
  if (t.dtype === dtype) return t;
  if (t.dtype !== 'float32' && t.dtype !== 'float16' && t.dtype !== 'bfloat16')
    throw new CheckpointError(`tensor '${name}' is ${t.dtype}, expected a float tensor`);
  const out = t.to(dtype);
  t.dispose();
  return out;
}

/** Throws a clear error unless `device` is the CPU or a GPU this process can use. */
export function assertDeviceUsable(device: Device): void {
  if (device === 'cpu') return;
  const info = native().info();
  const idx = deviceIndex(device);
  if (!info.cudaCompiled) throw new Error(`device ${device}: ${info.cudaUnavailableReason}; use deviceMap 'cpu'`);
  if (info.cudaDeviceCount === 0) throw new Error(`device ${device}: CUDA is not available (${info.cudaUnavailableReason}); use deviceMap 'cpu'`);
  if (idx >= info.cudaDeviceCount)
    throw new Error(`device ${device}: this machine has ${info.cudaDeviceCount} GPU(s) (cuda:0..cuda:${info.cudaDeviceCount - 1})`);
}

export async function loadGPT2(dir: string, opts: GPT2LoadOptions = {}): Promise<GPT2LMHeadModel> {
  const device = opts.device ?? 'cpu';
  const dtype = opts.dtype ?? 'float32';
  if (!['float32', 'float16', 'bfloat16'].includes(dtype)) throw new CheckpointError(`dtype must be float32, float16 or bfloat16, got ${JSON.stringify(dtype)}`);
  assertDeviceUsable(device);
  // Host tensors in the parameter dtype, then (on a GPU) moved over; the host copy is freed.
  const place = (t: Tensor): Tensor => {
    if (device === 'cpu') return t;
    const d = t.toDevice(device);
    t.dispose();
    return d;
  };
  const config = opts.config ?? loadGPT2Config(dir);
  const { nEmbd: C, nLayer, vocabSize: V, nPositions: P, nInner, layerNormEpsilon: eps } = config;
  const ck = openCheckpoint(dir);
  try {
    const prefix = ck.has('transformer.wte.weight') ? 'transformer.' : ck.has('wte.weight') ? '' : null;
    if (prefix === null) throw new CheckpointError(`checkpoint ${dir} is missing tensor 'transformer.wte.weight' (nor 'wte.weight'): not a GPT-2 checkpoint`);
    const getRaw = (name: string, shape: number[]): Tensor => {
      const key = prefix + name;
      if (!ck.has(key)) throw new CheckpointError(`checkpoint ${dir} is missing tensor '${key}'`);
      const info = ck.info(key);
      if (info.shape.length !== shape.length || info.shape.some((d, i) => d !== shape[i]))
        throw new CheckpointError(`tensor '${key}' has shape [${info.shape.join(', ')}], expected [${shape.join(', ')}] for this config (n_embd=${C}, n_inner=${nInner}, vocab_size=${V}, n_positions=${P})`);
      return ck.get(key);
    };
    const get = (name: string, shape: number[]): Tensor => asDType(getRaw(name, shape), dtype, prefix + name);
    const conv1d = async (name: string, inF: number, outF: number): Promise<LinearLike> => {
      if (opts.loadLinear) return opts.loadLinear(`transformer.${name}`, inF, outF, ck, prefix, device);
      const w = get(`${name}.weight`, [inF, outF]);
      const wt = Tensor.empty([outF, inF], w.dtype);
      native().transpose2d(wt, w);
      w.dispose();
      const bias = get(`${name}.bias`, [outF]);
      // The hook gets host tensors in the load dtype (what bitsandbytes quantizes) and places
      // what it builds; plain Linears are placed here.
      if (opts.makeLinear) return opts.makeLinear({ name: `transformer.${name}`, weight: wt, bias, device }, ck, prefix);
      return new Linear(place(wt), place(bias));
    };
    const norm = (name: string) => new LayerNorm(place(get(`${name}.weight`, [C])), place(get(`${name}.bias`, [C])), eps);

    const total = nLayer + 2;
    const wte = new Embedding(place(get('wte.weight', [V, C])));
    const wpe = new Embedding(place(get('wpe.weight', [P, C])));
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
      ck.dropPages();
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
      lmHead = new Linear(place(asDType(ck.get('lm_head.weight'), dtype, 'lm_head.weight')), null);
    }
    await native().sync();
    opts.onProgress?.({ stage: 'load', done: total, total });
    return new GPT2LMHeadModel(config, device, wte, wpe, blocks, lnF, lmHead);
  } finally {
    ck.close();
  }
}
