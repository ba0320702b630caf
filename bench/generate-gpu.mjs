// bench/generate-gpu: GPT-2 generation speed on a GPU for random-weight checkpoints shaped
// like GPT-2 124M and GPT-2 XL (float16 safetensors, written here on first run): load time,
// GPU memory, prefill tokens/s, decode tokens/s at B=1 and B=8 (128 new tokens after a
// 16-token prompt), and the B=1 decode's share of the copy bandwidth measured in the same
// process (weight bytes per token x tokens/s / device-to-device copy bytes per second, the
// copy counting bytes read plus written).
// Run after `npx tsup`, with the CUDA addon:
//   NIBBLE_ADDON=/abs/nibble.node node bench/generate-gpu.mjs [--models 124m,xl] [--dir /tmp/nibble-bench] [--json out.json]
import { closeSync, existsSync, mkdirSync, openSync, renameSync, writeFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { createRequire } from 'node:module';
import { AutoModelForCausalLM, BitsAndBytesConfig, Tensor } from '../dist/index.js';

const argv = process.argv.slice(2);
const opt = (name, dflt) => (argv.includes(`--${name}`) ? argv[argv.indexOf(`--${name}`) + 1] : dflt);
const MODELS = opt('models', '124m,xl').split(',');
// Storage modes: unquantized parameters in float16 throughout; the Linear layers in int8
// (LLM.int8, threshold 6) or nf4 + double quant (float32 compute) for the quantized modes.
const MODES = {
  fp16: { label: 'float16', opts: {} },
  int8: { label: 'int8 (LLM.int8)', opts: { quantizationConfig: new BitsAndBytesConfig({ loadIn8bit: true }) } },
  nf4: { label: 'nf4 + double quant', opts: { quantizationConfig: new BitsAndBytesConfig({ loadIn4bit: true, bnb4bitQuantType: 'nf4', bnb4bitUseDoubleQuant: true }) } },
};
const MODE_KEYS = opt('modes', 'fp16,nf4,int8').split(',');
const DIR = opt('dir', '/tmp/nibble-bench');
const JSON_OUT = opt('json', join(new URL('.', import.meta.url).pathname, 'out', 'generate-gpu.json'));
const NEW = 128;
const PROMPT = 16;
const require = createRequire(import.meta.url);
const addon = require(process.env.NIBBLE_ADDON ?? join(new URL('..', import.meta.url).pathname, 'build', 'Release', 'nibble.node'));

const SHAPES = {
  '124m': { nLayer: 12, nEmbd: 768, nHead: 12 },
  xl: { nLayer: 48, nEmbd: 1600, nHead: 25 },
};

// float16 bit patterns of N(0, 0.02) values; tensors are filled by tiling this pool (never
// zeros, and writing gigabytes stays fast).
function halfPool(n, scale, seed) {
  const f = new Float32Array(1);
  const u = new Uint32Array(f.buffer);
  const out = new Uint16Array(n);
  let s = seed >>> 0 || 1;
  const next = () => ((s ^= s << 13), (s ^= s >>> 17), (s ^= s << 5), (s >>> 0) / 4294967296);
  for (let i = 0; i < n; i++) {
    f[0] = (next() + next() + next() - 1.5) * 2 * scale; // Irwin-Hall(3): bell-shaped, sd = scale
    const x = u[0];
    const sign = (x >>> 16) & 0x8000;
    const e = ((x >>> 23) & 0xff) - 127 + 15;
    out[i] = e <= 0 ? sign : sign | (e << 10) | ((x >>> 13) & 0x3ff); // truncation is fine for noise
  }
  return out;
}

/** Writes config.json + model.safetensors (float16, transformers' key layout) unless present. */
function writeRandomGPT2(dir, { nLayer, nEmbd: C, nHead }, vocab = 50257, nPos = 1024) {
  const file = join(dir, 'model.safetensors');
  if (existsSync(file) && existsSync(join(dir, 'config.json'))) return dir;
  mkdirSync(dir, { recursive: true });
  const specs = [['transformer.wte.weight', [vocab, C], 0.02], ['transformer.wpe.weight', [nPos, C], 0.01]];
  for (let l = 0; l < nLayer; l++) {
    const p = `transformer.h.${l}.`;
    specs.push([p + 'ln_1.weight', [C], 'one'], [p + 'ln_1.bias', [C], 0.01],
      [p + 'attn.c_attn.weight', [C, 3 * C], 0.02], [p + 'attn.c_attn.bias', [3 * C], 0.01],
      [p + 'attn.c_proj.weight', [C, C], 0.02], [p + 'attn.c_proj.bias', [C], 0.01],
      [p + 'ln_2.weight', [C], 'one'], [p + 'ln_2.bias', [C], 0.01],
      [p + 'mlp.c_fc.weight', [C, 4 * C], 0.02], [p + 'mlp.c_fc.bias', [4 * C], 0.01],
      [p + 'mlp.c_proj.weight', [4 * C, C], 0.02], [p + 'mlp.c_proj.bias', [C], 0.01]);
  }
  specs.push(['transformer.ln_f.weight', [C], 'one'], ['transformer.ln_f.bias', [C], 0.01]);
  const header = { __metadata__: { format: 'pt' } };
  let off = 0;
  for (const [name, shape] of specs) {
    const bytes = shape.reduce((a, b) => a * b, 1) * 2;
    header[name] = { dtype: 'F16', shape, data_offsets: [off, off + bytes] };
    off += bytes;
  }
  let json = JSON.stringify(header);
  json += ' '.repeat((8 - (json.length % 8)) % 8);
  const pools = { 0.02: halfPool(1 << 20, 0.02, 1), 0.01: halfPool(1 << 20, 0.01, 2), one: halfPool(1 << 16, 0.05, 3) };
  for (let i = 0; i < pools.one.length; i++) pools.one[i] = 0x3c00 + (pools.one[i] & 0x3f); // 1.0 plus a little noise
  const fd = openSync(file + '.tmp', 'w');
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(json.length));
  writeSync(fd, len);
  writeSync(fd, Buffer.from(json));
  let shift = 0;
  for (const [, shape, kind] of specs) {
    let left = shape.reduce((a, b) => a * b, 1);
    const pool = pools[kind];
    while (left > 0) {
      const start = (shift = (shift + 7919) % pool.length);
      const n = Math.min(left, pool.length - start);
      writeSync(fd, new Uint8Array(pool.buffer, start * 2, n * 2));
      left -= n;
    }
  }
  closeSync(fd);
  renameSync(file + '.tmp', file);
  writeFileSync(join(dir, 'config.json'), JSON.stringify({
    model_type: 'gpt2', vocab_size: vocab, n_positions: nPos, n_embd: C, n_layer: nLayer, n_head: nHead, n_inner: null,
    activation_function: 'gelu_new', layer_norm_epsilon: 1e-5, tie_word_embeddings: true, torch_dtype: 'float16',
    // no eos_token_id: random weights would stop some rows early and change the token count
  }));
  return dir;
}

/** Bytes a B=1 decode step must read: every Linear weight and bias, including the tied lm_head. */
function weightBytesPerToken(model) {
  const seen = new Set();
  let bytes = 0;
  for (const [name, m] of model.namedModules()) {
    if (name.endsWith('.wte') || name.endsWith('.wpe')) continue;
    for (const t of Object.values({ ...m.tensors(), ...m.quantConstants() })) if (!seen.has(t)) seen.add(t), (bytes += t.nbytes);
  }
  return bytes;
}

/** Bytes of every parameter and quantization constant the model holds (its GPU footprint;
 * a cudaMemInfo difference would miss memory the caching allocator reuses between modes). */
function residentBytes(model) {
  const seen = new Set();
  let bytes = 0;
  for (const [, m] of model.namedModules())
    for (const t of Object.values({ ...m.tensors(), ...m.quantConstants() })) if (!seen.has(t)) seen.add(t), (bytes += t.nbytes);
  return bytes;
}

/** Device-to-device copy bandwidth (bytes read + written per second) over 1 GiB buffers. */
async function copyBandwidth() {
  const n = 1 << 28;
  const src = Tensor.empty([n], 'float32', 'cuda:0');
  const dst = Tensor.empty([n], 'float32', 'cuda:0');
  // A one-element read waits for the copies (they run on the legacy stream, which reads
  // are ordered after); sync() alone only covers the GPT-2 streams.
  const wait = async () => {
    const v = dst.narrow(0, 1);
    await v.data();
    v.dispose();
  };
  addon.copy(dst, src);
  await wait();
  const iters = 20;
  const t0 = performance.now();
  for (let i = 0; i < iters; i++) addon.copy(i % 2 ? src : dst, i % 2 ? dst : src);
  await wait();
  const s = (performance.now() - t0) / 1000;
  src.dispose();
  dst.dispose();
  return (2 * n * 4 * iters) / s;
}

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

async function timePrefill(model, batch) {
  const ids = Array.from({ length: batch }, (_, b) => Array.from({ length: PROMPT }, (_, i) => (i * 7919 + b * 131 + 13) % 50257));
  const times = [];
  for (let r = 0; r < 6; r++) {
    const t0 = performance.now();
    const out = await model.forward(ids, { lastTokenOnly: true, cacheCapacity: PROMPT + NEW });
    await out.logits.toFloat32();
    times.push(performance.now() - t0);
    out.logits.dispose();
    out.pastKeyValues.dispose();
  }
  return { ids, ms: median(times.slice(1)) };
}

async function timeDecode(model, batch) {
  const { ids, ms: prefillMs } = await timePrefill(model, batch);
  const gen = { maxNewTokens: NEW, doSample: false };
  await model.generate(ids, { ...gen, maxNewTokens: 8 }); // warm-up
  const runs = [];
  for (let r = 0; r < 3; r++) {
    const t0 = performance.now();
    const out = await model.generate(ids, gen);
    runs.push(performance.now() - t0);
    if (out[0].length !== PROMPT + NEW) throw new Error(`generate returned ${out[0].length} tokens`);
  }
  const decodeMs = median(runs) - prefillMs;
  return { prefillMs, decodeMs, tokensPerSec: (batch * (NEW - 1)) / (decodeMs / 1000), gpuOnly: await timeQueuedSteps(model, ids) };
}

// Diagnostic: decode steps queued back to back with no logits read or sampling in between,
// so the time is launches + GPU work alone (what generate() would reach with GPU sampling).
async function timeQueuedSteps(model, ids) {
  const first = await model.forward(ids, { lastTokenOnly: true, cacheCapacity: PROMPT + NEW });
  first.logits.dispose();
  const cache = first.pastKeyValues;
  await addon.sync();
  const t0 = performance.now();
  for (let i = 0; i < NEW - 1; i++) {
    const out = await model.forward(ids.map((r) => [r[i % PROMPT]]), { pastKeyValues: cache, lastTokenOnly: true });
    out.logits.dispose();
  }
  await addon.sync();
  const s = (performance.now() - t0) / 1000;
  cache.dispose();
  return (ids.length * (NEW - 1)) / s;
}

if (argv.includes('--write-only')) {
  for (const key of MODELS) console.log(writeRandomGPT2(join(DIR, `gpt2-${key}-random-f16`), SHAPES[key]));
  process.exit(0);
}
const info = addon.info();
const gpu = info.gpus[0];
if (!gpu) throw new Error(`no GPU: ${info.cudaUnavailableReason}`);
console.log(`${gpu.name}, ${(gpu.totalMemory / 2 ** 30).toFixed(1)} GiB; node ${process.version}`);
const copyBps = await copyBandwidth();
console.log(`device-to-device copy: ${(copyBps / 1e9).toFixed(0)} GB/s (read + write)`);

const results = [];
for (const key of MODELS) {
  const shape = SHAPES[key];
  if (!shape) throw new Error(`unknown model ${key}: use ${Object.keys(SHAPES).join(', ')}`);
  const tw = performance.now();
  const dir = writeRandomGPT2(join(DIR, `gpt2-${key}-random-f16`), shape);
  console.log(`${key}: checkpoint ready in ${((performance.now() - tw) / 1000).toFixed(1)} s (${dir})`);
  for (const modeKey of MODE_KEYS) {
  const mode = MODES[modeKey];
  if (!mode) throw new Error(`unknown mode ${modeKey}: use ${Object.keys(MODES).join(', ')}`);
  try {
  const free0 = addon.cudaMemInfo(0).free;
  const t0 = performance.now();
  const model = await AutoModelForCausalLM.fromPretrained(dir, { deviceMap: 'cuda:0', dtype: 'float16', noTokenizer: true, ...mode.opts });
  await addon.sync();
  const loadS = (performance.now() - t0) / 1000;
  const wBytes = weightBytesPerToken(model);
  const row = { model: key, mode: mode.label, loadS, gpuMemGiB: residentBytes(model) / 2 ** 30, weightBytesPerToken: wBytes };
  const pre1 = await timePrefill(model, 1);
  const pre8 = await timePrefill(model, 8);
  row.prefillTokPerSecB1 = PROMPT / (pre1.ms / 1000);
  row.prefillTokPerSecB8 = (8 * PROMPT) / (pre8.ms / 1000);
  const d1 = await timeDecode(model, 1);
  const d8 = await timeDecode(model, 8);
  row.decodeTokPerSecB1 = d1.tokensPerSec;
  row.decodeTokPerSecB8 = d8.tokensPerSec;
  row.queuedStepsTokPerSecB1 = d1.gpuOnly;
  row.queuedStepsTokPerSecB8 = d8.gpuOnly;
  row.peakGpuMemGiB = (free0 - addon.cudaMemInfo(0).free) / 2 ** 30;
  row.bandwidthShareB1 = (wBytes * d1.tokensPerSec) / copyBps;
  results.push(row);
  console.log(JSON.stringify(row));
  model.dispose();
  } catch (e) {
    console.log(`${key} ${modeKey}: FAILED: ${e.message.split('\n')[0]}`);
  }
  }
}

mkdirSync(join(JSON_OUT, '..'), { recursive: true });
writeFileSync(JSON_OUT, JSON.stringify({ gpu: gpu.name, copyBytesPerSec: copyBps, newTokens: NEW, prompt: PROMPT, results }, null, 2));
console.log(`\n${gpu.name}; copy ${(copyBps / 1e9).toFixed(0)} GB/s; ${PROMPT}-token prompt, ${NEW} new tokens (greedy, through generate())`);
console.log('| model | mode | load s | weights on GPU GiB | prefill tok/s B=1 / B=8 | decode tok/s B=1 | decode tok/s B=8 | B=1 bandwidth share | queued steps tok/s B=1 / B=8 |');
console.log('|---|---|---|---|---|---|---|---|---|');
for (const r of results)
  console.log(`| ${r.model} | ${r.mode} | ${r.loadS.toFixed(1)} | ${r.gpuMemGiB.toFixed(2)} | ${r.prefillTokPerSecB1.toFixed(0)} / ${r.prefillTokPerSecB8.toFixed(0)} | ${r.decodeTokPerSecB1.toFixed(0)} | ${r.decodeTokPerSecB8.toFixed(0)} | ${(100 * r.bandwidthShareB1).toFixed(1)}% | ${r.queuedStepsTokPerSecB1.toFixed(0)} / ${r.queuedStepsTokPerSecB8.toFixed(0)} |`);
