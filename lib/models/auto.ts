// AutoModelForCausalLM.fromPretrained: resolve the name to a local folder, read its config,
// build the model (quantizing on load when asked) and attach tokenizer and generation
// defaults, so `model.generate()` / `model.stream()` work out of the box.
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { loadGenerationConfig } from '../generation/generation-config.js';
import { resolveModelDir, type HubProgress } from '../io/hub.js';
import { native } from '../native.js';
import { parseDevice, type Device } from '../tensor.js';
import { AutoTokenizer } from '../tokenizer.js';
import { BitsAndBytesConfig } from '../quantization/bitsandbytes-config.js';
import { loadQuantizedLinear, quantizeLinear } from '../quantization/quantize-on-load.js';
import { loadGPT2Config } from './gpt2-config.js';
import { loadGPT2, type LoadProgress, type ParamDType } from './gpt2-loader.js';
import type { GPT2LMHeadModel } from './gpt2.js';

export interface FromPretrainedOptions {
  /**
   * Quantize Linear layers while loading (4-bit NF4/FP4 or LLM.int8()). Ignored, as in
   * transformers, when the checkpoint is already quantized (its config.json says how).
   */
  quantizationConfig?: BitsAndBytesConfig;
  /** Type of the unquantized parameters (transformers' `dtype`), default float32. */
  dtype?: ParamDType;
  /** Where to run: 'cpu' (default), 'cuda', 'cuda:N', 'auto' (a GPU if there is one), or {'': device}. */
  deviceMap?: string | Record<string, string>;
  /** Hub revision (branch, tag or commit) for Hub ids. */
  revision?: string;
  onProgress?: (p: LoadProgress) => void;
  /** Download progress for Hub ids (bytes of each file). */
  onDownloadProgress?: (p: HubProgress) => void;
  /** Skip loading the tokenizer even when the folder has one. */
  noTokenizer?: boolean;
}

/**
 * The device a whole model goes to. 'auto' takes the first GPU when this binary has CUDA and
 * one is present, else the CPU; no deviceMap means the CPU, as in transformers.
 */
export function deviceFromMap(deviceMap: FromPretrainedOptions['deviceMap']): Device {
  if (deviceMap === undefined) return 'cpu';
  if (deviceMap === 'auto') return native().info().cudaDeviceCount > 0 ? 'cuda:0' : 'cpu';
  if (typeof deviceMap === 'string') return parseDevice(deviceMap);
  const entries = Object.entries(deviceMap);
  if (entries.length === 1 && entries[0]![0] === '') return parseDevice(entries[0]![1]);
  throw new Error(`deviceMap ${JSON.stringify(deviceMap)}: per-module device maps are not supported yet; use 'cpu', 'cuda:N' or {'': device}`);
}

export class AutoModelForCausalLM {
  /** Loads a GPT-2 checkpoint. No name, or 'fortune-gpt2', loads the embedded default model. */
  static async fromPretrained(idOrDir?: string, options: FromPretrainedOptions = {}): Promise<GPT2LMHeadModel> {
    const dir = await resolveModelDir(idOrDir, { revision: options.revision, onProgress: options.onDownloadProgress });
    const device = deviceFromMap(options.deviceMap);
    const config = loadGPT2Config(dir);
    if (options.quantizationConfig !== undefined && !(options.quantizationConfig instanceof BitsAndBytesConfig))
      throw new TypeError('fromPretrained: quantizationConfig must be a BitsAndBytesConfig');
    // A checkpoint saved quantized says so in config.json and is read as stored.
    const saved = config.quantizationConfig ? BitsAndBytesConfig.fromDict(config.quantizationConfig) : null;
    const quant = saved ?? (options.quantizationConfig?.quantized ? options.quantizationConfig : null);
    const model = await loadGPT2(dir, {
      device,
      dtype: options.dtype,
      config,
      onProgress: options.onProgress,
      ...(saved ? { loadLinear: loadQuantizedLinear(saved) } : quant ? { makeLinear: quantizeLinear(quant) } : {}),
    });
    if (quant) model.quantizationConfig = quant.toDict();
    model.modelDir = dir;
    if (existsSync(join(dir, 'generation_config.json'))) model.generationConfig = loadGenerationConfig(dir);
    const hasTokenizer = ['tokenizer.json', 'vocab.json'].some((f) => existsSync(join(dir, f)));
    if (hasTokenizer && !options.noTokenizer) model.tokenizer = await AutoTokenizer.fromPretrained(dir);
    return model;
  }
}
