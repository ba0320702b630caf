// config.json -> GPT2Config, validated: a bad config must fail with the field's name, not as
// a shape error deep inside the forward pass.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';

export interface GPT2Config {
  modelType: 'gpt2';
  vocabSize: number;
  nPositions: number;
  nEmbd: number;
  nLayer: number;
  nHead: number;
  nInner: number;
  layerNormEpsilon: number;
  activationFunction: 'gelu_new';
  tieWordEmbeddings: boolean;
  bosTokenId: number | null;
  eosTokenId: number | null;
  padTokenId: number | null;
  /** The checkpoint's dtype as config.json states it ("float16", ...), if any. */
  torchDtype: string | null;
  /** config.json's quantization_config, untouched (snake_case), when the checkpoint is pre-quantized. */
  quantizationConfig: Record<string, unknown> | null;
  /** The raw JSON, for saving it back. */
  raw: Record<string, unknown>;
}

export class ConfigError extends Error {
  override name = 'ConfigError';
}

function posInt(raw: Record<string, unknown>, key: string, file: string, fallback?: number): number {
  const v = raw[key] ?? fallback;
  if (!Number.isSafeInteger(v) || (v as number) <= 0) throw new ConfigError(`${file}: "${key}" must be a positive integer, got ${JSON.stringify(raw[key])}`);
  return v as number;
}

function optId(raw: Record<string, unknown>, key: string, file: string): number | null {
  const v = raw[key];
  if (v === undefined || v === null) return null;
  if (Array.isArray(v) && v.length && v.every((x) => Number.isSafeInteger(x))) return v[0] as number;
  if (!Number.isSafeInteger(v) || (v as number) < 0) throw new ConfigError(`${file}: "${key}" must be a token id, got ${JSON.stringify(v)}`);
  return v as number;
}

export function parseGPT2Config(raw: unknown, file = 'config.json'): GPT2Config {
  if (!raw || typeof raw !== 'object' || Array.isArray(raw)) throw new ConfigError(`${file}: must be a JSON object`);
  const r = raw as Record<string, unknown>;
  if (r.model_type !== 'gpt2')
    throw new ConfigError(`${file}: model_type ${JSON.stringify(r.model_type)} is not supported (nibble implements "gpt2")`);
  const nEmbd = posInt(r, 'n_embd', file);
  const nHead = posInt(r, 'n_head', file);
  if (nEmbd % nHead !== 0) throw new ConfigError(`${file}: n_embd (${nEmbd}) must be divisible by n_head (${nHead})`);
  const act = r.activation_function ?? 'gelu_new';
  if (act !== 'gelu_new') throw new ConfigError(`${file}: activation_function ${JSON.stringify(act)} is not supported (only "gelu_new")`);
  if (r.scale_attn_by_inverse_layer_idx === true || r.reorder_and_upcast_attn === true)
    throw new ConfigError(`${file}: scale_attn_by_inverse_layer_idx / reorder_and_upcast_attn are not supported`);
  if (r.scale_attn_weights === false) throw new ConfigError(`${file}: scale_attn_weights=false is not supported`);
  const eps = r.layer_norm_epsilon ?? 1e-5;
  if (typeof eps !== 'number' || !(eps > 0)) throw new ConfigError(`${file}: "layer_norm_epsilon" must be a positive number, got ${JSON.stringify(eps)}`);
  const nInner = r.n_inner === null || r.n_inner === undefined ? 4 * nEmbd : posInt(r, 'n_inner', file);
  const q = r.quantization_config;
  if (q !== undefined && q !== null && (typeof q !== 'object' || Array.isArray(q)))
    throw new ConfigError(`${file}: "quantization_config" must be an object`);
  return {
    modelType: 'gpt2',
    vocabSize: posInt(r, 'vocab_size', file),
    nPositions: posInt(r, 'n_positions', file, r.n_ctx as number | undefined),
    nEmbd,
    nLayer: posInt(r, 'n_layer', file),
    nHead,
    nInner,
    layerNormEpsilon: eps,
    activationFunction: 'gelu_new',
    tieWordEmbeddings: r.tie_word_embeddings !== false,
    bosTokenId: optId(r, 'bos_token_id', file),
    eosTokenId: optId(r, 'eos_token_id', file),
    padTokenId: optId(r, 'pad_token_id', file),
    torchDtype: typeof (r.dtype ?? r.torch_dtype) === 'string' ? ((r.dtype ?? r.torch_dtype) as string) : null,
    quantizationConfig: (q as Record<string, unknown>) ?? null,
    raw: r,
  };
}

export function loadGPT2Config(dir: string): GPT2Config {
  const file = join(dir, 'config.json');
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    throw new ConfigError(`cannot read ${file}: ${(e as Error).message}`);
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    throw new ConfigError(`${file}: not valid JSON (${(e as Error).message})`);
  }
  return parseGPT2Config(raw, file);
}
