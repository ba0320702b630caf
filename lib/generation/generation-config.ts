// Generation settings: transformers' defaults, then the model's generation_config.json, then
// what the caller passes. Names are transformers' in camelCase; values are validated once here
// so the decode loop can trust them.
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

export interface GenerationOptions {
  /** New tokens to generate per sequence; takes precedence over maxLength. */
  maxNewTokens?: number;
  /** Total length (padded prompt + new tokens). transformers' default is 20. */
  maxLength?: number;
  /** Sample from the distribution (true) or take the argmax (false, the default). */
  doSample?: boolean;
  /** Divides the logits before sampling (> 0). Only used when doSample. */
  temperature?: number;
  /** Keep only the k most likely tokens (0 = off; transformers' default is 50). Only used when doSample. */
  topK?: number;
  /** Keep the smallest set of tokens whose probability reaches topP (1 = off). Only used when doSample. */
  topP?: number;
  /** Drop tokens less likely than minP × the top token's probability (null = off). Only used when doSample. */
  minP?: number | null;
  /** > 1 discourages tokens already in the sequence (1 = off). Applies to greedy and sampling. */
  repetitionPenalty?: number;
  /** Seed of the sampling generator: the same seed gives the same tokens. Random when absent. */
  seed?: number;
  /** Generation of a sequence ends after one of these tokens. */
  eosTokenId?: number | number[] | null;
  /** Fills finished sequences and left padding. Defaults to the first eos id. */
  padTokenId?: number | null;
  bosTokenId?: number | null;
  /** Generation of a sequence ends once its text ends with one of these (needs a tokenizer). */
  stopStrings?: string | string[] | null;
}

/** Every setting decided: what generate() runs with. */
export interface GenerationConfig {
  maxNewTokens: number | null;
  maxLength: number;
  doSample: boolean;
  temperature: number;
  topK: number;
  topP: number;
  minP: number | null;
  repetitionPenalty: number;
  seed: number | null;
  eosTokenId: number[];
  padTokenId: number | null;
  bosTokenId: number | null;
  stopStrings: string[];
}

/** transformers' GenerationConfig defaults (those this library implements). */
export const GENERATION_DEFAULTS: Readonly<GenerationConfig> = Object.freeze({
  maxNewTokens: null,
  maxLength: 20,
  doSample: false,
  temperature: 1.0,
  topK: 50,
  topP: 1.0,
  minP: null,
  repetitionPenalty: 1.0,
  seed: null,
  eosTokenId: [],
  padTokenId: null,
  bosTokenId: null,
  stopStrings: [],
});

const OPTION_KEYS: (keyof GenerationOptions)[] = [
  'maxNewTokens', 'maxLength', 'doSample', 'temperature', 'topK', 'topP', 'minP', 'repetitionPenalty',
  'seed', 'eosTokenId', 'padTokenId', 'bosTokenId', 'stopStrings',
];
const SNAKE: Record<string, keyof GenerationOptions> = Object.fromEntries(
  OPTION_KEYS.map((k) => [k.replace(/[A-Z]/g, (c) => '_' + c.toLowerCase()), k]),
);

/** The option names generate() accepts besides these (checked by generate itself). */
export function isGenerationOptionKey(k: string): k is keyof GenerationOptions {
  return (OPTION_KEYS as string[]).includes(k);
}

/** Name the camelCase option when someone writes transformers' snake_case. */
export function unknownOptionError(where: string, key: string): TypeError {
  const hint = SNAKE[key] ? ` (did you mean ${SNAKE[key]}?)` : '';
  return new TypeError(`${where}: unknown option '${key}'${hint}`);
}

/**
 * Reads generation_config.json (snake_case) into options. Keys this library does not use are
 * ignored; a missing file gives {}.
 */
export function loadGenerationConfig(modelDir: string): GenerationOptions {
  const path = join(modelDir, 'generation_config.json');
  if (!existsSync(path)) return {};
  let json: unknown;
  try {
    json = JSON.parse(readFileSync(path, 'utf8'));
  } catch (e) {
    throw new Error(`${path} is not valid JSON: ${(e as Error).message}`);
  }
  return generationOptionsFromJson(json, path);
}

export function generationOptionsFromJson(json: unknown, source = 'generation config'): GenerationOptions {
  if (!json || typeof json !== 'object' || Array.isArray(json)) throw new Error(`${source}: expected a JSON object`);
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(json as Record<string, unknown>)) {
    const key = SNAKE[k];
    if (key && v !== undefined) out[key] = v;
  }
  try {
    checkOptions(out as GenerationOptions, source);
  } catch (e) {
    throw new Error(`${source}: ${(e as Error).message}`);
  }
  return out as GenerationOptions;
}

/**
 * Merges option layers (later wins; undefined never overrides) over transformers' defaults
 * and validates the result.
 */
export function resolveGenerationConfig(...layers: (GenerationOptions | undefined | null)[]): GenerationConfig {
  const merged: Record<string, unknown> = { ...GENERATION_DEFAULTS };
  for (const layer of layers) {
    if (!layer) continue;
    checkOptions(layer, 'generate');
    for (const [k, v] of Object.entries(layer)) if (v !== undefined && isGenerationOptionKey(k)) merged[k] = v;
  }
  const m = merged as unknown as GenerationOptions & GenerationConfig;
  const eos = m.eosTokenId;
  const stops = m.stopStrings;
  const cfg: GenerationConfig = {
    ...m,
    eosTokenId: eos == null ? [] : Array.isArray(eos) ? [...eos] : [eos],
    stopStrings: stops == null ? [] : Array.isArray(stops) ? [...stops] : [stops],
    padTokenId: m.padTokenId ?? null,
    bosTokenId: m.bosTokenId ?? null,
    minP: m.minP ?? null,
    seed: m.seed ?? null,
    maxNewTokens: m.maxNewTokens ?? null,
  };
  if (cfg.doSample && !(cfg.temperature > 0))
    throw new RangeError(`generate: temperature must be > 0 when sampling, got ${cfg.temperature} (for greedy decoding set doSample: false)`);
  return cfg;
}

function isInt(v: unknown): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v);
}

/** Type and range checks of each option present; messages name the option and the value. */
function checkOptions(o: GenerationOptions, where: string): void {
  const bad = (name: string, want: string, v: unknown) =>
    new RangeError(`${where}: ${name} must be ${want}, got ${typeof v === 'string' ? JSON.stringify(v) : Array.isArray(v) ? JSON.stringify(v) : String(v)}`);
  const num = (name: keyof GenerationOptions, want: string, ok: (v: number) => boolean, nullable = false) => {
    const v = o[name] as unknown;
    if (v === undefined || (nullable && v === null)) return;
    if (typeof v !== 'number' || !Number.isFinite(v) || !ok(v)) throw bad(name, want, v);
  };
  num('maxNewTokens', 'a positive integer', (v) => isInt(v) && v > 0, true);
  num('maxLength', 'a positive integer', (v) => isInt(v) && v > 0);
  if (o.doSample !== undefined && typeof o.doSample !== 'boolean') throw bad('doSample', 'true or false', o.doSample);
  num('temperature', 'a number >= 0', (v) => v >= 0);
  num('topK', 'an integer >= 0', (v) => isInt(v) && v >= 0);
  num('topP', 'a number in [0, 1]', (v) => v >= 0 && v <= 1);
  num('minP', 'a number in [0, 1]', (v) => v >= 0 && v <= 1, true);
  num('repetitionPenalty', 'a number > 0', (v) => v > 0);
  num('seed', 'an integer', isInt, true);
  num('padTokenId', 'a token id (integer >= 0)', (v) => isInt(v) && v >= 0, true);
  num('bosTokenId', 'a token id (integer >= 0)', (v) => isInt(v) && v >= 0, true);
  const eos = o.eosTokenId;
  if (eos !== undefined && eos !== null) {
    const list = Array.isArray(eos) ? eos : [eos];
    if (!list.every((e) => isInt(e) && e >= 0)) throw bad('eosTokenId', 'a token id or a list of token ids', eos);
  }
  const stops = o.stopStrings;
  if (stops !== undefined && stops !== null) {
    const list = Array.isArray(stops) ? stops : [stops];
    if (!list.every((s) => typeof s === 'string' && s.length > 0)) throw bad('stopStrings', 'a non-empty string or a list of them', stops);
  }
}
