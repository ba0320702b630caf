// GPT-2 byte-level BPE tokenizer, backed by @huggingface/tokenizers so ids are Hugging Face's.
// A model folder holds either a `tokenizer.json` (fast-tokenizer layout) or only the older
// `vocab.json` + `merges.txt`; for the latter we build the tokenizer.json object that
// transformers' slow-to-fast GPT-2 converter would produce and hand it to the same library,
// so there is one BPE implementation behind both layouts.
import { existsSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { Tokenizer as HFTokenizer } from '@huggingface/tokenizers';
import { resolveModelDir, type ResolveModelOptions } from './io/hub.js';
import { embeddedModelsDir } from './paths.js';

export const EMBEDDED_MODEL_ID = 'fortune-gpt2';

export interface DecodeOptions {
  /** Drop special tokens such as `<|endoftext|>` from the text (default false). */
  skipSpecialTokens?: boolean;
  /**
   * Remove spaces before punctuation (" ." -> "."), the legacy transformers clean-up. Off by
   * default, as in transformers 5: it breaks decode(encode(s)) == s.
   */
  cleanUpTokenizationSpaces?: boolean;
}

export interface BatchEncodeOptions {
  /** Pad rows to the longest one (default true). */
  padding?: boolean;
  /**
   * Which side gets the padding. Default 'left': decoder-only generation needs the last
   * prompt token of every row in the same column. (transformers defaults GPT-2 to 'right'.)
   */
  paddingSide?: 'left' | 'right';
  /** Cut rows longer than this many tokens (keeping the start, like transformers' default). */
  maxLength?: number;
}

export interface BatchEncoding {
  /** [B][T] token ids, padded with `padTokenId` where the mask is 0. */
  inputIds: number[][];
  /** [B][T] 1 for real tokens, 0 for padding. */
  attentionMask: number[][];
}

type SpecialTokenName = 'bos' | 'eos' | 'unk' | 'pad';

interface AddedTokenJson {
  id: number;
  content: string;
  single_word: boolean;
  lstrip: boolean;
  rstrip: boolean;
  normalized: boolean;
  special: boolean;
}

/** A loaded tokenizer: encode, decode, batch encode with padding. */
export class PreTrainedTokenizer {
  /** Number of ids (vocabulary plus added tokens). */
  readonly vocabSize: number;
  readonly bosToken: string | null;
  readonly eosToken: string | null;
  readonly unkToken: string | null;
  readonly padToken: string | null;
  readonly modelMaxLength: number | null;
  private readonly tok: HFTokenizer;
  private readonly specialIds: Set<number>;

  /** @internal use AutoTokenizer.fromPretrained. */
  constructor(tokenizerJson: Record<string, unknown>, tokenizerConfig: Record<string, unknown>, source: string) {
    // The library's decode defaults clean-up to true when the config is silent; transformers 5
    // defaults it to false, and we follow transformers.
    const cfg = { ...tokenizerConfig, clean_up_tokenization_spaces: tokenizerConfig.clean_up_tokenization_spaces ?? false };
    try {
      this.tok = new HFTokenizer(tokenizerJson, cfg);
    } catch (e) {
      throw new Error(`tokenizer in ${source} could not be built: ${(e as Error).message}`);
    }
    const vocab = this.tok.get_vocab(true);
    let maxId = -1;
    for (const id of vocab.values()) if (id > maxId) maxId = id;
    this.vocabSize = maxId + 1;
    const name = (k: SpecialTokenName): string | null => tokenContent(tokenizerConfig[`${k}_token`]);
    this.bosToken = name('bos');
    this.eosToken = name('eos');
    this.unkToken = name('unk');
    this.padToken = name('pad');
    const mml = tokenizerConfig.model_max_length;
    // transformers writes a huge sentinel (1e30) when there is no limit.
    this.modelMaxLength = typeof mml === 'number' && mml < 1e15 ? mml : null;
    this.specialIds = new Set(Array.from(this.tok.get_added_tokens_decoder()).filter(([, t]) => t.special).map(([id]) => id));
  }

  get bosTokenId(): number | null { return this.idOf(this.bosToken); }
  get eosTokenId(): number | null { return this.idOf(this.eosToken); }
  get unkTokenId(): number | null { return this.idOf(this.unkToken); }
  get padTokenId(): number | null { return this.idOf(this.padToken); }
  /** Ids of the special (added) tokens, e.g. 50256 for `<|endoftext|>`. */
  get allSpecialIds(): number[] { return [...this.specialIds].sort((a, b) => a - b); }

  private idOf(token: string | null): number | null {
    return token === null ? null : (this.tok.token_to_id(token) ?? null);
  }

  /** Text to ids. Special tokens written in the text (`<|endoftext|>`) become their ids. */
  encode(text: string): number[] {
    if (typeof text !== 'string') throw new TypeError(`tokenizer.encode: text must be a string, got ${describe(text)}`);
    if (text.length === 0) return [];
    return this.tok.encode(text, { add_special_tokens: true }).ids;
  }

  /** Text to token strings (byte-level symbols, e.g. 'ĠWorld'). */
  tokenize(text: string): string[] {
    if (typeof text !== 'string') throw new TypeError(`tokenizer.tokenize: text must be a string, got ${describe(text)}`);
    return text.length === 0 ? [] : this.tok.tokenize(text);
  }

  /** Ids to text. Bytes that do not form valid UTF-8 become U+FFFD. */
  decode(ids: readonly number[] | Int32Array | Uint32Array, options: DecodeOptions = {}): string {
    if (ids instanceof Int32Array || ids instanceof Uint32Array) ids = Array.from(ids);
    this.checkIds(ids, 'tokenizer.decode');
    if (ids.length === 0) return '';
    const kept = options.skipSpecialTokens ? ids.filter((i) => !this.specialIds.has(i)) : ids;
    if (kept.length === 0) return '';
    return this.tok.decode(kept as number[], {
      skip_special_tokens: false,
      clean_up_tokenization_spaces: options.cleanUpTokenizationSpaces ?? false,
    });
  }

  batchDecode(batch: readonly (readonly number[])[], options: DecodeOptions = {}): string[] {
    if (!Array.isArray(batch)) throw new TypeError(`tokenizer.batchDecode: expected an array of id arrays, got ${describe(batch)}`);
    return batch.map((ids) => this.decode(ids, options));
  }

  /**
   * Encodes several texts into one padded rectangle plus its attention mask. Rows are padded
   * with the pad token, or `<|endoftext|>` when the tokenizer has none (GPT-2's case: the mask
   * hides those positions, so the id only has to be valid).
   */
  batchEncode(texts: readonly string[], options: BatchEncodeOptions = {}): BatchEncoding {
    if (!Array.isArray(texts)) throw new TypeError(`tokenizer.batchEncode: texts must be an array of strings, got ${describe(texts)}`);
    const side = options.paddingSide ?? 'left';
    if (side !== 'left' && side !== 'right') throw new RangeError(`tokenizer.batchEncode: paddingSide must be 'left' or 'right', got ${describe(side)}`);
    const maxLength = options.maxLength;
    if (maxLength !== undefined && !(Number.isInteger(maxLength) && maxLength > 0))
      throw new RangeError(`tokenizer.batchEncode: maxLength must be a positive integer, got ${describe(maxLength)}`);
    const rows = texts.map((t, i) => {
      if (typeof t !== 'string') throw new TypeError(`tokenizer.batchEncode: texts[${i}] must be a string, got ${describe(t)}`);
      const ids = this.encode(t);
      return maxLength !== undefined && ids.length > maxLength ? ids.slice(0, maxLength) : ids;
    });
    return padBatch(rows, this.padTokenId ?? this.eosTokenId ?? 0, { padding: options.padding ?? true, side });
  }

  tokenToId(token: string): number | undefined {
    return this.tok.token_to_id(token);
  }
  idToToken(id: number): string | undefined {
    return this.tok.id_to_token(id);
  }

  /** Throws a RangeError naming the first id that is not an integer in [0, vocabSize). */
  checkIds(ids: readonly number[], what: string): void {
    if (!Array.isArray(ids)) throw new TypeError(`${what}: ids must be an array of integers, got ${describe(ids)}`);
    for (let i = 0; i < ids.length; i++) {
      const id = ids[i];
      if (!Number.isInteger(id) || (id as number) < 0 || (id as number) >= this.vocabSize)
        throw new RangeError(`${what}: ids[${i}] = ${describe(id)} is not a token id (integers 0..${this.vocabSize - 1})`);
    }
  }
}

/**
 * Pads id rows into a rectangle. Exported for generate(), which pads raw id arrays the same way.
 * With padding off, rows must already have equal lengths.
 */
export function padBatch(rows: readonly (readonly number[])[], padId: number, opts: { padding?: boolean; side?: 'left' | 'right' } = {}): BatchEncoding {
  const width = rows.reduce((m, r) => Math.max(m, r.length), 0);
  const inputIds: number[][] = [];
  const attentionMask: number[][] = [];
  for (const r of rows) {
    const n = width - r.length;
    if (n > 0 && opts.padding === false) throw new RangeError(`rows have different lengths (${r.length} vs ${width}) and padding is off`);
    const pad = new Array<number>(n).fill(padId);
    const zeros = new Array<number>(n).fill(0);
    const ones = new Array<number>(r.length).fill(1);
    if ((opts.side ?? 'left') === 'left') {
      inputIds.push([...pad, ...r]);
      attentionMask.push([...zeros, ...ones]);
    } else {
      inputIds.push([...r, ...pad]);
      attentionMask.push([...ones, ...zeros]);
    }
  }
  return { inputIds, attentionMask };
}

function describe(x: unknown): string {
  if (typeof x === 'string') return JSON.stringify(x.length > 40 ? x.slice(0, 40) + '…' : x);
  if (typeof x === 'number' || typeof x === 'boolean' || typeof x === 'bigint' || x == null) return String(x);
  if (Array.isArray(x)) return `an array of ${x.length}`;
  return typeof x;
}

/** tokenizer_config.json writes a special token as a string or as {content: ...}. */
function tokenContent(v: unknown): string | null {
  if (typeof v === 'string') return v;
  if (v && typeof v === 'object' && typeof (v as { content?: unknown }).content === 'string') return (v as { content: string }).content;
  return null;
}

function readJson(path: string): Record<string, unknown> {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    throw new Error(`cannot read ${path}: ${(e as Error).message}`);
  }
  try {
    const v = JSON.parse(text) as unknown;
    if (!v || typeof v !== 'object' || Array.isArray(v)) throw new Error('expected a JSON object');
    return v as Record<string, unknown>;
  } catch (e) {
    throw new Error(`${path} is not valid JSON: ${(e as Error).message}`);
  }
}

/**
 * The tokenizer.json that transformers' GPT-2 converter writes for a vocab.json + merges.txt
 * pair: byte-level pre-tokenizer (GPT-2's split regex is the ByteLevel default), BPE model,
 * byte-level decoder, and the special tokens from the config as added tokens.
 */
function tokenizerJsonFromVocabMerges(dir: string, config: Record<string, unknown>): Record<string, unknown> {
  const vocabPath = join(dir, 'vocab.json');
  const mergesPath = join(dir, 'merges.txt');
  const vocab = readJson(vocabPath);
  for (const [tok, id] of Object.entries(vocab))
    if (!Number.isInteger(id) || (id as number) < 0) throw new Error(`${vocabPath}: token ${JSON.stringify(tok)} has id ${JSON.stringify(id)}, expected a non-negative integer`);
  const merges: [string, string][] = [];
  const lines = readFileSync(mergesPath, 'utf8').split('\n');
  lines.forEach((raw, i) => {
    const line = raw.replace(/\r$/, '');
    if (line === '' || (i === 0 && line.startsWith('#version'))) return;
    const parts = line.split(' ');
    if (parts.length !== 2 || !parts[0] || !parts[1]) throw new Error(`${mergesPath}:${i + 1}: expected two symbols separated by one space, got ${JSON.stringify(line)}`);
    if (!(parts[0] in vocab) || !(parts[1] in vocab)) throw new Error(`${mergesPath}:${i + 1}: merge ${JSON.stringify(line)} uses a symbol missing from vocab.json`);
    merges.push([parts[0], parts[1]]);
  });

  // Special tokens: whatever the config names, else GPT-2's single <|endoftext|>.
  const names = new Set<string>();
  for (const k of ['bos_token', 'eos_token', 'unk_token', 'pad_token']) {
    const c = tokenContent(config[k]);
    if (c !== null) names.add(c);
  }
  const extra = config.additional_special_tokens;
  if (Array.isArray(extra)) for (const t of extra) { const c = tokenContent(t); if (c !== null) names.add(c); }
  if (names.size === 0 && '<|endoftext|>' in vocab) names.add('<|endoftext|>');
  const added: AddedTokenJson[] = [];
  for (const content of names) {
    const id = vocab[content];
    if (typeof id !== 'number') throw new Error(`${dir}: special token ${JSON.stringify(content)} is not in vocab.json`);
    added.push({ id, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true });
  }
  added.sort((a, b) => a.id - b.id);

  return {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: added,
    normalizer: null,
    pre_tokenizer: { type: 'ByteLevel', add_prefix_space: Boolean(config.add_prefix_space ?? false), trim_offsets: true, use_regex: true },
    post_processor: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: false, use_regex: true },
    decoder: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true },
    model: {
      type: 'BPE', dropout: null, unk_token: null, continuing_subword_prefix: '', end_of_word_suffix: '',
      fuse_unk: false, byte_fallback: false, ignore_merges: false, vocab, merges,
    },
  };
}

/** Defaults GPT-2's slow tokenizer applies when no tokenizer_config.json exists. */
const GPT2_DEFAULT_CONFIG = { bos_token: '<|endoftext|>', eos_token: '<|endoftext|>', unk_token: '<|endoftext|>' };

export class AutoTokenizer {
  /**
   * Loads a tokenizer: no argument or 'fortune-gpt2' gives the embedded default model's, a
   * folder is read as it is, anything else is a Hugging Face Hub id, fetched into (or found
   * in) the shared Hub cache with the rest of that model's files, so loading the model
   * afterwards downloads nothing more.
   */
  static async fromPretrained(pathOrId: string = EMBEDDED_MODEL_ID, options: ResolveModelOptions = {}): Promise<PreTrainedTokenizer> {
    if (typeof pathOrId !== 'string' || pathOrId === '')
      throw new TypeError(`AutoTokenizer.fromPretrained: expected a model folder, a Hub id or '${EMBEDDED_MODEL_ID}', got ${describe(pathOrId)}`);
    let dir: string;
    try {
      dir = await resolveModelDir(pathOrId, options);
    } catch (e) {
      throw new Error(`AutoTokenizer.fromPretrained: ${(e as Error).message}`);
    }
    return loadFromDir(dir);
  }

  /** The same for a local folder (or 'fortune-gpt2'), without touching the network. */
  static fromPretrainedSync(pathOrId: string = EMBEDDED_MODEL_ID): PreTrainedTokenizer {
    if (typeof pathOrId !== 'string' || pathOrId === '')
      throw new TypeError(`AutoTokenizer.fromPretrainedSync: expected a model folder or '${EMBEDDED_MODEL_ID}', got ${describe(pathOrId)}`);
    const dir = pathOrId === EMBEDDED_MODEL_ID ? join(embeddedModelsDir, EMBEDDED_MODEL_ID) : pathOrId;
    if (!existsSync(dir) || !statSync(dir).isDirectory())
      throw new Error(`AutoTokenizer.fromPretrainedSync: '${pathOrId}' is not a local folder (use fromPretrained for Hub ids)`);
    return loadFromDir(dir);
  }
}

function loadFromDir(dir: string): PreTrainedTokenizer {
  const configPath = join(dir, 'tokenizer_config.json');
  const hasConfig = existsSync(configPath);
  const config = hasConfig ? readJson(configPath) : {};
  const fastPath = join(dir, 'tokenizer.json');
  if (existsSync(fastPath)) return new PreTrainedTokenizer(readJson(fastPath), config, fastPath);
  if (existsSync(join(dir, 'vocab.json')) && existsSync(join(dir, 'merges.txt'))) {
    const cfg = hasConfig ? config : GPT2_DEFAULT_CONFIG;
    return new PreTrainedTokenizer(tokenizerJsonFromVocabMerges(dir, cfg), cfg, dir);
  }
  throw new Error(`AutoTokenizer: ${dir} has neither tokenizer.json nor vocab.json + merges.txt`);
}
