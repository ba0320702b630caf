// safetensors reader (memory-mapped, zero-copy tensor views) and writer (atomic), including
// sharded checkpoints. Format: u64 little-endian header length N, N bytes of JSON
// {name: {dtype, shape, data_offsets: [begin, end]}, __metadata__?: {str: str}}, then data.
// Every check names the file and the tensor, because a bad checkpoint must be a clear
// error, never a crash or garbage logits.
import { closeSync, existsSync, fstatSync, fsyncSync, openSync, readFileSync, readSync, renameSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { native } from '../native.js';
import { DTYPE_SIZES, Tensor, type DType } from '../tensor.js';

const ST_TO_DTYPE: Record<string, DType> = {
  F32: 'float32', F16: 'float16', BF16: 'bfloat16', I8: 'int8', U8: 'uint8', I32: 'int32', I64: 'int64',
};
const DTYPE_TO_ST: Record<DType, string> = Object.fromEntries(Object.entries(ST_TO_DTYPE).map(([k, v]) => [v, k])) as Record<DType, string>;
/** Names the format defines that nibble does not compute with. */
const KNOWN_UNSUPPORTED = new Set(['F64', 'I16', 'U16', 'U32', 'U64', 'BOOL', 'F8_E4M3', 'F8_E5M2']);
const MAX_HEADER = 100 * 1024 * 1024;

export class SafetensorsError extends Error {
  override name = 'SafetensorsError';
}

export interface TensorInfo {
  dtype: DType;
  shape: number[];
  /** Byte range inside the data section. */
  dataOffsets: [number, number];
}

export interface SafetensorsHeader {
  tensors: Map<string, TensorInfo>;
  metadata: Record<string, string>;
  /** Byte offset of the data section in the file (8 + header length). */
  dataStart: number;
}

function fail(path: string, msg: string): never {
  throw new SafetensorsError(`${basename(path)}: ${msg} (${path})`);
}

/** Parses and validates the header against the file size. Reads only the header bytes. */
export function readSafetensorsHeader(path: string): SafetensorsHeader {
  let fd: number;
  try {
    fd = openSync(path, 'r');
  } catch (e) {
    throw new SafetensorsError(`cannot open ${path}: ${(e as Error).message}`);
  }
  try {
    const size = fstatSync(fd).size;
    if (size < 8) fail(path, `truncated: the file is ${size} bytes, shorter than the 8-byte header length`);
    const lenBuf = Buffer.alloc(8);
    readSync(fd, lenBuf, 0, 8, 0);
    const n = lenBuf.readBigUInt64LE(0);
    if (n > BigInt(size - 8))
      fail(path, `header length ${n} runs past the end of the file (${size} bytes): the file is truncated or not safetensors`);
    if (n > BigInt(MAX_HEADER)) fail(path, `header length ${n} is larger than the ${MAX_HEADER}-byte limit`);
    const hlen = Number(n);
    const hbuf = Buffer.alloc(hlen);
    readSync(fd, hbuf, 0, hlen, 8);
    let json: unknown;
    try {
      json = JSON.parse(hbuf.toString('utf8'));
    } catch (e) {
      fail(path, `header is not valid JSON (${(e as Error).message})`);
    }
    if (!json || typeof json !== 'object' || Array.isArray(json)) fail(path, 'header must be a JSON object');
    const dataStart = 8 + hlen;
    const dataLen = size - dataStart;
    const tensors = new Map<string, TensorInfo>();
    let metadata: Record<string, string> = {};
    for (const [name, raw] of Object.entries(json as Record<string, unknown>)) {
      if (name === '__metadata__') {
        if (!raw || typeof raw !== 'object' || Array.isArray(raw) || Object.values(raw).some((v) => typeof v !== 'string'))
          fail(path, '__metadata__ must map strings to strings');
        metadata = raw as Record<string, string>;
        continue;
      }
      const info = raw as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
      if (!info || typeof info !== 'object') fail(path, `tensor '${name}': entry is not an object`);
      const stType = info.dtype;
      if (typeof stType !== 'string' || !(stType in ST_TO_DTYPE)) {
        const why = typeof stType === 'string' && KNOWN_UNSUPPORTED.has(stType) ? 'unsupported' : 'unknown';
        fail(path, `tensor '${name}': ${why} dtype ${JSON.stringify(stType)} (supported: ${Object.keys(ST_TO_DTYPE).join(', ')})`);
      }
      const dtype = ST_TO_DTYPE[stType]!;
      const shape = info.shape;
      if (!Array.isArray(shape) || shape.some((d) => !Number.isSafeInteger(d) || d < 0))
        fail(path, `tensor '${name}': shape ${JSON.stringify(shape)} is not a list of non-negative integers`);
      const offs = info.data_offsets;
      if (!Array.isArray(offs) || offs.length !== 2 || offs.some((d) => !Number.isSafeInteger(d) || d < 0))
        fail(path, `tensor '${name}': data_offsets ${JSON.stringify(offs)} must be two non-negative integers`);
      const [begin, end] = offs as [number, number];
      if (begin > end) fail(path, `tensor '${name}': data_offsets [${begin}, ${end}] end before they begin`);
      if (end > dataLen)
        fail(path, `tensor '${name}': data_offsets [${begin}, ${end}] run past the end of the data section (${dataLen} bytes): the file is truncated`);
      const need = (shape as number[]).reduce((a, b) => a * b, 1) * DTYPE_SIZES[dtype];
      if (need !== end - begin)
        fail(path, `tensor '${name}': shape [${(shape as number[]).join(', ')}] of ${stType} needs ${need} bytes but data_offsets span ${end - begin}`);
      tensors.set(name, { dtype, shape: shape as number[], dataOffsets: [begin, end] });
    }
    const sorted = [...tensors.entries()].sort((a, b) => a[1].dataOffsets[0] - b[1].dataOffsets[0] || a[1].dataOffsets[1] - b[1].dataOffsets[1]);
    for (let i = 1; i < sorted.length; i++) {
      const [pn, p] = sorted[i - 1]!;
      const [cn, c] = sorted[i]!;
      if (c.dataOffsets[0] < p.dataOffsets[1] && c.dataOffsets[1] > c.dataOffsets[0])
        fail(path, `tensors '${pn}' [${p.dataOffsets.join(', ')}] and '${cn}' [${c.dataOffsets.join(', ')}] overlap`);
    }
    return { tensors, metadata, dataStart };
  } finally {
    closeSync(fd);
  }
}

export interface SafetensorsFile {
  path: string;
  metadata: Record<string, string>;
  /** Names in file order. */
  keys(): string[];
  has(name: string): boolean;
  info(name: string): TensorInfo;
  /** A zero-copy view over the mapped file; dispose it when done (the mapping lives while any view does). */
  get(name: string): Tensor;
  /** Lets the OS drop the pages read so far (re-read on access); bounds RSS while streaming. */
  dropPages(): void;
  /** Drops this file's own reference to the mapping. */
  close(): void;
}

/** Validates the header, then memory-maps the file. Tensors are views, not copies. */
export function openSafetensors(path: string): SafetensorsFile {
  const header = readSafetensorsHeader(path);
  const mapping = native().mapFile(path);
  return {
    path,
    metadata: header.metadata,
    keys: () => [...header.tensors.keys()],
    has: (name) => header.tensors.has(name),
    info(name) {
      const i = header.tensors.get(name);
      if (!i) fail(path, `no tensor named '${name}'`);
      return i;
    },
    get(name) {
      const i = this.info(name);
      if (!mapping.alive) fail(path, 'file was closed');
      return new Tensor(mapping.share(), header.dataStart + i.dataOffsets[0], i.dtype, i.shape);
    },
    dropPages() {
      if (mapping.alive) mapping.dropPages();
    },
    close() {
      mapping.release();
    },
  };
}

/** Reads every tensor of a file as views: convenient for tests and small files. */
export function readSafetensors(path: string): { tensors: Map<string, Tensor>; metadata: Record<string, string> } {
  const f = openSafetensors(path);
  try {
    return { tensors: new Map(f.keys().map((k) => [k, f.get(k)])), metadata: f.metadata };
  } finally {
    f.close();
  }
}

function tempPathFor(path: string): string {
  return join(dirname(path), `.${basename(path)}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`);
}

/** Serialises tensors into a safetensors byte layout in a temp file; returns its path. */
async function writeTemp(path: string, tensors: Iterable<[string, Tensor]>, metadata?: Record<string, string>): Promise<string> {
  const entries = [...tensors];
  const header: Record<string, unknown> = {};
  if (metadata && Object.keys(metadata).length) {
    for (const [k, v] of Object.entries(metadata))
      if (typeof v !== 'string') throw new TypeError(`safetensors metadata '${k}' must be a string`);
    header.__metadata__ = metadata;
  }
  let offset = 0;
  for (const [name, t] of entries) {
    if (name === '__metadata__') throw new TypeError("'__metadata__' is not a valid tensor name");
    header[name] = { dtype: DTYPE_TO_ST[t.dtype], shape: [...t.shape], data_offsets: [offset, offset + t.nbytes] };
    offset += t.nbytes;
  }
  let hjson = Buffer.from(JSON.stringify(header), 'utf8');
  const pad = (8 - (hjson.length % 8)) % 8; // keep the data section 8-byte aligned
  if (pad) hjson = Buffer.concat([hjson, Buffer.alloc(pad, 0x20)]);
  const tmp = tempPathFor(path);
  const fd = openSync(tmp, 'w');
  try {
    const len = Buffer.alloc(8);
    len.writeBigUInt64LE(BigInt(hjson.length));
    writeSync(fd, len);
    writeSync(fd, hjson);
    for (const [, t] of entries) {
      const d = await t.data();
      writeSync(fd, new Uint8Array(d.buffer, d.byteOffset, d.byteLength));
    }
    fsyncSync(fd);
  } catch (e) {
    closeSync(fd);
    rmSync(tmp, { force: true });
    throw e;
  }
  closeSync(fd);
  return tmp;
}

/**
 * Writes a safetensors file atomically: a temp file in the same folder, fsync, then rename.
 * A failure leaves the previous file (or nothing) in place, never a half-written one.
 */
export async function writeSafetensors(path: string, tensors: Map<string, Tensor> | Record<string, Tensor>, metadata?: Record<string, string>): Promise<void> {
  const entries = tensors instanceof Map ? [...tensors.entries()] : Object.entries(tensors);
  const tmp = await writeTemp(path, entries, metadata);
  try {
    renameSync(tmp, path);
  } catch (e) {
    rmSync(tmp, { force: true });
    throw e;
  }
}

export const SAFETENSORS_INDEX = 'model.safetensors.index.json';
export const SAFETENSORS_SINGLE = 'model.safetensors';

/**
 * Writes `model.safetensors`, or shards `model-0000i-of-0000n.safetensors` plus
 * `model.safetensors.index.json` when the tensors exceed maxShardBytes. All files are
 * written to temps first and renamed only when every one is complete.
 */
export async function writeCheckpoint(dir: string, tensors: Map<string, Tensor>, opts: { metadata?: Record<string, string>; maxShardBytes?: number } = {}): Promise<string[]> {
  const max = opts.maxShardBytes ?? 5 * 1024 ** 3;
  const shards: [string, Tensor][][] = [[]];
  let size = 0;
  for (const e of tensors) {
    if (size > 0 && size + e[1].nbytes > max) {
      shards.push([]);
      size = 0;
    }
    shards[shards.length - 1]!.push(e);
    size += e[1].nbytes;
  }
  const n = shards.length;
  const names = n === 1 ? [SAFETENSORS_SINGLE] : shards.map((_, i) => `model-${String(i + 1).padStart(5, '0')}-of-${String(n).padStart(5, '0')}.safetensors`);
  const temps: [string, string][] = [];
  try {
    for (let i = 0; i < n; i++) {
      const target = join(dir, names[i]!);
      temps.push([await writeTemp(target, shards[i]!, opts.metadata ?? { format: 'pt' }), target]);
    }
    if (n > 1) {
      const weightMap: Record<string, string> = {};
      shards.forEach((s, i) => s.forEach(([k]) => { weightMap[k] = names[i]!; }));
      const total = [...tensors.values()].reduce((a, t) => a + t.nbytes, 0);
      const target = join(dir, SAFETENSORS_INDEX);
      const tmp = tempPathFor(target);
      writeFileSync(tmp, JSON.stringify({ metadata: { total_size: total }, weight_map: weightMap }, null, 2));
      temps.push([tmp, target]);
    }
  } catch (e) {
    for (const [t] of temps) rmSync(t, { force: true });
    throw e;
  }
  for (const [t, target] of temps) renameSync(t, target);
  return names;
}

/** All tensors of a checkpoint folder, single-file or sharded, opened lazily per file. */
export interface Checkpoint {
  dir: string;
  keys(): string[];
  has(name: string): boolean;
  info(name: string): TensorInfo;
  get(name: string): Tensor;
  metadata: Record<string, string>;
  /** Lets the OS drop the pages read so far in every opened file (see SafetensorsFile). */
  dropPages(): void;
  close(): void;
}

export function openCheckpoint(dir: string): Checkpoint {
  const indexPath = join(dir, SAFETENSORS_INDEX);
  const single = join(dir, SAFETENSORS_SINGLE);
  const files = new Map<string, SafetensorsFile>();
  const owner = new Map<string, string>();
  const open = (file: string): SafetensorsFile => {
    let f = files.get(file);
    if (!f) {
      f = openSafetensors(join(dir, file));
      files.set(file, f);
    }
    return f;
  };
  if (existsSync(indexPath)) {
    let index: { weight_map?: Record<string, string> };
    try {
      index = JSON.parse(readFileSync(indexPath, 'utf8'));
    } catch (e) {
      throw new SafetensorsError(`${SAFETENSORS_INDEX}: not valid JSON (${(e as Error).message}) (${indexPath})`);
    }
    if (!index.weight_map || typeof index.weight_map !== 'object')
      throw new SafetensorsError(`${SAFETENSORS_INDEX}: missing "weight_map" (${indexPath})`);
    for (const [k, file] of Object.entries(index.weight_map)) {
      if (typeof file !== 'string' || file.includes('/') || file.includes('\\') || file.startsWith('.'))
        throw new SafetensorsError(`${SAFETENSORS_INDEX}: tensor '${k}' maps to a bad file name ${JSON.stringify(file)}`);
      owner.set(k, file);
    }
    for (const file of new Set(owner.values())) {
      const f = open(file);
      for (const [k, fileOfK] of owner) if (fileOfK === file && !f.has(k))
        throw new SafetensorsError(`${file}: the index says it holds '${k}' but it does not (${join(dir, file)})`);
    }
  } else if (existsSync(single)) {
    const f = open(SAFETENSORS_SINGLE);
    for (const k of f.keys()) owner.set(k, SAFETENSORS_SINGLE);
  } else {
    const pickle = ['pytorch_model.bin', 'model.bin', 'pytorch_model.bin.index.json'].find((p) => existsSync(join(dir, p)));
    if (pickle)
      throw new SafetensorsError(`${dir} holds only a pickle checkpoint (${pickle}); nibble loads safetensors only and never runs code from a model file. Convert it to safetensors first.`);
    throw new SafetensorsError(`no ${SAFETENSORS_SINGLE} or ${SAFETENSORS_INDEX} in ${dir}`);
  }
  const fileOf = (name: string) => {
    const f = owner.get(name);
    if (!f) throw new SafetensorsError(`checkpoint ${dir} has no tensor '${name}'`);
    return open(f);
  };
  return {
    dir,
    keys: () => [...owner.keys()],
    has: (name) => owner.has(name),
    info: (name) => fileOf(name).info(name),
    get: (name) => fileOf(name).get(name),
    get metadata() {
      return files.values().next().value?.metadata ?? {};
    },
    dropPages() {
      for (const f of files.values()) f.dropPages();
    },
    close() {
      for (const f of files.values()) f.close();
      files.clear();
    },
  };
}
