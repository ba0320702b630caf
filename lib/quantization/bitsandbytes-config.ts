// BitsAndBytesConfig: transformers' class of the same name, camelCase in JS, the snake_case
// form of config.json's `quantization_config` on disk. Same fields, same defaults, and a
// clear error for every value transformers would reject.

export type ComputeDType = 'float32' | 'float16' | 'bfloat16';
export type QuantType4bit = 'nf4' | 'fp4';
export type QuantStorage = 'uint8' | 'float16' | 'bfloat16' | 'float32' | 'int8';

export interface BitsAndBytesConfigOptions {
  loadIn8bit?: boolean;
  loadIn4bit?: boolean;
  llmInt8Threshold?: number;
  llmInt8SkipModules?: string[] | null;
  llmInt8EnableFp32CpuOffload?: boolean;
  llmInt8HasFp16Weight?: boolean;
  bnb4bitComputeDtype?: ComputeDType;
  bnb4bitQuantType?: QuantType4bit;
  bnb4bitUseDoubleQuant?: boolean;
  bnb4bitQuantStorage?: QuantStorage;
}

const COMPUTE_DTYPES: ComputeDType[] = ['float32', 'float16', 'bfloat16'];
const QUANT_TYPES: QuantType4bit[] = ['nf4', 'fp4'];
const STORAGES: QuantStorage[] = ['uint8', 'float16', 'bfloat16', 'float32', 'int8'];

/** camelCase option <-> snake_case JSON key. */
const KEYS: [keyof BitsAndBytesConfigOptions, string][] = [
  ['loadIn8bit', 'load_in_8bit'],
  ['loadIn4bit', 'load_in_4bit'],
  ['llmInt8Threshold', 'llm_int8_threshold'],
  ['llmInt8SkipModules', 'llm_int8_skip_modules'],
  ['llmInt8EnableFp32CpuOffload', 'llm_int8_enable_fp32_cpu_offload'],
  ['llmInt8HasFp16Weight', 'llm_int8_has_fp16_weight'],
  ['bnb4bitComputeDtype', 'bnb_4bit_compute_dtype'],
  ['bnb4bitQuantType', 'bnb_4bit_quant_type'],
  ['bnb4bitUseDoubleQuant', 'bnb_4bit_use_double_quant'],
  ['bnb4bitQuantStorage', 'bnb_4bit_quant_storage'],
];
/** Keys transformers writes that carry no extra information. */
const DERIVED_KEYS = new Set(['quant_method', '_load_in_4bit', '_load_in_8bit']);

export class QuantizationConfigError extends Error {
  override name = 'QuantizationConfigError';
}

function bool(v: unknown, name: string): boolean {
  if (typeof v !== 'boolean') throw new QuantizationConfigError(`BitsAndBytesConfig: ${name} must be true or false, got ${JSON.stringify(v)}`);
  return v;
}

function oneOf<T extends string>(v: unknown, allowed: T[], name: string): T {
  if (typeof v !== 'string' || !allowed.includes(v as T))
    throw new QuantizationConfigError(`BitsAndBytesConfig: ${name} must be one of ${allowed.map((a) => `'${a}'`).join(', ')}, got ${JSON.stringify(v)}`);
  return v as T;
}

export class BitsAndBytesConfig {
  readonly loadIn8bit: boolean;
  readonly loadIn4bit: boolean;
  readonly llmInt8Threshold: number;
  readonly llmInt8SkipModules: string[] | null;
  readonly llmInt8EnableFp32CpuOffload: boolean;
  readonly llmInt8HasFp16Weight: boolean;
  readonly bnb4bitComputeDtype: ComputeDType;
  readonly bnb4bitQuantType: QuantType4bit;
  readonly bnb4bitUseDoubleQuant: boolean;
  readonly bnb4bitQuantStorage: QuantStorage;

  constructor(options: BitsAndBytesConfigOptions = {}) {
    if (!options || typeof options !== 'object') throw new QuantizationConfigError('BitsAndBytesConfig: options must be an object');
    const known = new Set(KEYS.map(([k]) => k as string));
    for (const k of Object.keys(options))
      if (!known.has(k)) throw new QuantizationConfigError(`BitsAndBytesConfig: unknown option '${k}' (known: ${[...known].join(', ')})`);
    const o = options;
    this.loadIn8bit = bool(o.loadIn8bit ?? false, 'loadIn8bit');
    this.loadIn4bit = bool(o.loadIn4bit ?? false, 'loadIn4bit');
    if (this.loadIn8bit && this.loadIn4bit)
      throw new QuantizationConfigError('BitsAndBytesConfig: loadIn4bit and loadIn8bit are both true; choose one');
    const th = o.llmInt8Threshold ?? 6.0;
    if (typeof th !== 'number' || !Number.isFinite(th) || th < 0)
      throw new QuantizationConfigError(`BitsAndBytesConfig: llmInt8Threshold must be a finite number >= 0, got ${JSON.stringify(th)}`);
    this.llmInt8Threshold = th;
    const skip = o.llmInt8SkipModules ?? null;
    if (skip !== null && (!Array.isArray(skip) || skip.some((s) => typeof s !== 'string')))
      throw new QuantizationConfigError(`BitsAndBytesConfig: llmInt8SkipModules must be a list of module names, got ${JSON.stringify(skip)}`);
    this.llmInt8SkipModules = skip ? [...skip] : null;
    this.llmInt8EnableFp32CpuOffload = bool(o.llmInt8EnableFp32CpuOffload ?? false, 'llmInt8EnableFp32CpuOffload');
    this.llmInt8HasFp16Weight = bool(o.llmInt8HasFp16Weight ?? false, 'llmInt8HasFp16Weight');
    this.bnb4bitComputeDtype = oneOf(o.bnb4bitComputeDtype ?? 'float32', COMPUTE_DTYPES, 'bnb4bitComputeDtype');
    this.bnb4bitQuantType = oneOf(o.bnb4bitQuantType ?? 'fp4', QUANT_TYPES, 'bnb4bitQuantType');
    this.bnb4bitUseDoubleQuant = bool(o.bnb4bitUseDoubleQuant ?? false, 'bnb4bitUseDoubleQuant');
    this.bnb4bitQuantStorage = oneOf(o.bnb4bitQuantStorage ?? 'uint8', STORAGES, 'bnb4bitQuantStorage');
    if (this.bnb4bitQuantStorage !== 'uint8')
      throw new QuantizationConfigError(`BitsAndBytesConfig: bnb4bitQuantStorage '${this.bnb4bitQuantStorage}' is not supported by nibble (only 'uint8')`);
    if (this.llmInt8HasFp16Weight)
      throw new QuantizationConfigError('BitsAndBytesConfig: llmInt8HasFp16Weight (8-bit training weights) is not supported by nibble');
  }

  /** True when the config asks for any quantization. */
  get quantized(): boolean {
    return this.loadIn4bit || this.loadIn8bit;
  }

  /** config.json's `quantization_config`, as transformers writes it. */
  toDict(): Record<string, unknown> {
    const d: Record<string, unknown> = { quant_method: 'bitsandbytes', _load_in_4bit: this.loadIn4bit, _load_in_8bit: this.loadIn8bit };
    for (const [k, snake] of KEYS) d[snake] = this[k];
    return Object.fromEntries(Object.entries(d).sort(([a], [b]) => (a < b ? -1 : 1)));
  }

  static fromDict(dict: unknown): BitsAndBytesConfig {
    if (!dict || typeof dict !== 'object' || Array.isArray(dict))
      throw new QuantizationConfigError('quantization_config must be an object');
    const d = dict as Record<string, unknown>;
    if (d.quant_method !== undefined && d.quant_method !== 'bitsandbytes')
      throw new QuantizationConfigError(`quantization_config: quant_method ${JSON.stringify(d.quant_method)} is not supported (only "bitsandbytes")`);
    const bySnake = new Map(KEYS.map(([k, s]) => [s, k]));
    const opts: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(d)) {
      if (DERIVED_KEYS.has(k)) continue;
      const camel = bySnake.get(k);
      if (!camel) throw new QuantizationConfigError(`quantization_config: unknown field '${k}'`);
      if (v !== null || k === 'llm_int8_skip_modules') opts[camel] = v;
    }
    // transformers stores both load_in_4bit and _load_in_4bit; a disagreement is a broken file.
    for (const bits of ['4', '8'])
      if (d[`_load_in_${bits}bit`] !== undefined && d[`load_in_${bits}bit`] !== undefined && d[`_load_in_${bits}bit`] !== d[`load_in_${bits}bit`])
        throw new QuantizationConfigError(`quantization_config: _load_in_${bits}bit and load_in_${bits}bit disagree`);
    return new BitsAndBytesConfig(opts as BitsAndBytesConfigOptions);
  }
}
