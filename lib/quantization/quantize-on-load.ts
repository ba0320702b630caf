// What transformers' bitsandbytes quantizer does to a GPT-2 while it loads: every Conv1D/Linear
// becomes Linear4bit or Linear8bitLt, except lm_head (tied to the embeddings) and the modules
// named in llmInt8SkipModules; a checkpoint saved quantized is read back without re-quantizing.
import type { Checkpoint } from '../io/safetensors.js';
import { Linear } from '../nn/Linear.js';
import { Linear4bit } from '../nn/Linear4bit.js';
import { Linear8bitLt } from '../nn/Linear8bitLt.js';
import type { LinearLike } from '../nn/module.js';
import type { Device, Tensor } from '../tensor.js';
import type { BitsAndBytesConfig } from './bitsandbytes-config.js';
import { QuantState, type QuantStateValue } from './quant-state.js';

export class QuantizedCheckpointError extends Error {
  override name = 'QuantizedCheckpointError';
}

/** transformers' rule: a skip entry matches the module itself or any module under/ending with it. */
export function isSkipped(name: string, skip: readonly string[] | null): boolean {
  if (!skip) return false;
  return skip.some((k) => name === k || name.startsWith(k + '.') || name.endsWith('.' + k) || name.includes('.' + k + '.'));
}

const place = (t: Tensor | null, device: Device): Tensor | null => {
  if (!t || t.device === device) return t;
  const d = t.toDevice(device);
  t.dispose();
  return d;
};

/** makeLinear hook: quantizes each float [out, in] weight as it is read. */
export function quantizeLinear(cfg: BitsAndBytesConfig) {
  return (spec: { name: string; weight: Tensor; bias: Tensor | null; device: Device }): LinearLike => {
    const { name, weight, bias, device } = spec;
    if (isSkipped(name, cfg.llmInt8SkipModules)) return new Linear(place(weight, device)!, place(bias, device));
    // Quantize where the model will run; the float weight is dropped right after.
    const w = place(weight, device)!;
    const b = place(bias, device);
    let layer: LinearLike;
    if (cfg.loadIn4bit) {
      layer = Linear4bit.fromFloat(w, b, {
        quantType: cfg.bnb4bitQuantType,
        compressStatistics: cfg.bnb4bitUseDoubleQuant,
        blocksize: 64,
        computeDtype: cfg.bnb4bitComputeDtype,
      });
    } else {
      layer = Linear8bitLt.fromFloat(w, b, { threshold: cfg.llmInt8Threshold });
    }
    w.dispose();
    return layer;
  };
}

/**
 * loadLinear hook for checkpoints saved quantized: builds the layer from the serialized
 * tensors, checking every key and shape against the config so a broken file is a clear error.
 */
export function loadQuantizedLinear(cfg: BitsAndBytesConfig) {
  return (name: string, inF: number, outF: number, ck: Checkpoint, prefix: string, device: Device): LinearLike => {
    const key = name.replace(/^transformer\./, prefix) + '.';
    const keys = ck.keys().filter((k) => k.startsWith(key));
    const get = (k: string): Tensor | undefined => (ck.has(k) ? place(ck.get(k), device)! : undefined);
    if (!ck.has(`${key}weight`)) throw new QuantizedCheckpointError(`pre-quantized checkpoint ${ck.dir} is missing '${key}weight'`);
    const fail = (e: unknown): never => {
      throw new QuantizedCheckpointError(`pre-quantized checkpoint ${ck.dir}, module '${name}': ${(e as Error).message}`);
    };
    if (isSkipped(name, cfg.llmInt8SkipModules)) fail(new Error('skipped modules are stored unquantized; not supported yet'));
    if (cfg.loadIn4bit) {
      const qsKeys = keys.filter((k) => k.startsWith(`${key}weight.`));
      for (const need of ['absmax', 'quant_map'])
        if (!qsKeys.includes(`${key}weight.${need}`)) fail(new Error(`missing '${key}weight.${need}'`));
      if (!qsKeys.some((k) => k.startsWith(`${key}weight.quant_state.bitsandbytes__`))) fail(new Error(`missing '${key}weight.quant_state.bitsandbytes__${cfg.bnb4bitQuantType}'`));
      let state: QuantState;
      try {
        const dict: Record<string, QuantStateValue> = {};
        for (const k of qsKeys) dict[k.slice(key.length + 'weight.'.length)] = get(k)!;
        state = QuantState.fromDict(dict);
      } catch (e) {
        return fail(e);
      }
      const [o, i] = state.shape;
      if (state.shape.length !== 2 || o !== outF || i !== inF)
        fail(new Error(`quant_state shape [${state.shape.join(', ')}] disagrees with the config, which needs [${outF}, ${inF}]`));
      try {
        return new Linear4bit(get(`${key}weight`)!, state, get(`${key}bias`) ?? null, { computeDtype: cfg.bnb4bitComputeDtype });
      } catch (e) {
        return fail(e);
      }
    }
    let layer: Linear8bitLt;
    try {
      layer = Linear8bitLt.fromStateDict(get, key, { threshold: cfg.llmInt8Threshold });
    } catch (e) {
      return fail(e);
    }
    if (layer.outFeatures !== outF || layer.inFeatures !== inF)
      fail(new Error(`weight shape [${layer.outFeatures}, ${layer.inFeatures}] disagrees with the config, which needs [${outF}, ${inF}]`));
    return layer;
  };
}
