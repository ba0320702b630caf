// bench/generate: CPU decode and prefill speed for fortune-gpt2 and a GPT-2-124M-shaped
// random float32 checkpoint (written here on first run), against this machine's memory
// bandwidth measured in the same process. Prints a table; writes bench/out/generate-cpu.json.
// Run after `npm run build`: node bench/generate.mjs [--tokens 128] [--prompt 16]
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createRequire } from 'node:module';
import { AutoModelForCausalLM, Tensor, writeSafetensors } from '../dist/index.js';

const args = Object.fromEntries(process.argv.slice(2).map((a, i, all) => (a.startsWith('--') ? [a.slice(2), all[i + 1]] : null)).filter(Boolean));
const NEW = Number(args.tokens ?? 128);
const PROMPT = Number(args.prompt ?? 16);
const outDir = join(import.meta.dirname ?? new URL('.', import.meta.url).pathname, 'out');
mkdirSync(outDir, { recursive: true });

const require = createRequire(import.meta.url);
const native = process.env.NIBBLE_ADDON ? require(process.env.NIBBLE_ADDON) : require('node-gyp-build')(join(outDir, '..', '..'));

/** GPT-2 124M shapes with N(0, 0.02) weights, float32, transformers' key layout. */
async function writeRandomGPT2(dir, { nLayer = 12, nEmbd = 768, nHead = 12, vocab = 50257, nPos = 1024 } = {}) {
  if (existsSync(join(dir, 'model.safetensors'))) return dir;
  mkdirSync(dir, { recursive: true });
  let s = 0x9e3779b9;
  const rand = (n, scale) => {
    const a = new Float32Array(n);
    for (let i = 0; i < n; i++) {
      s ^= s << 13; s ^= s >>> 17; s ^= s << 5; // xorshift32; sum of two uniforms ~ bell-shaped
      const u = (s >>> 0) / 4294967296;
      s ^= s << 13; s ^= s >>> 17; s ^= s << 5;
      a[i] = (u + (s >>> 0) / 4294967296 - 1) * scale * 2.45;
    }
    return a;
  };
  const t = new Map();
  const C = nEmbd;
  t.set('transformer.wte.weight', Tensor.from(rand(vocab * C, 0.02), [vocab, C]));
  t.set('transformer.wpe.weight', Tensor.from(rand(nPos * C, 0.01), [nPos, C]));
  for (let l = 0; l < nLayer; l++) {
    const p = `transformer.h.${l}.`;
    t.set(p + 'ln_1.weight', Tensor.from(new Float32Array(C).fill(1), [C]));
    t.set(p + 'ln_1.bias', Tensor.from(new Float32Array(C), [C]));
    t.set(p + 'attn.c_attn.weight', Tensor.from(rand(C * 3 * C, 0.02), [C, 3 * C]));
    t.set(p + 'attn.c_attn.bias', Tensor.from(new Float32Array(3 * C), [3 * C]));
    t.set(p + 'attn.c_proj.weight', Tensor.from(rand(C * C, 0.02), [C, C]));
    t.set(p + 'attn.c_proj.bias', Tensor.from(new Float32Array(C), [C]));
    t.set(p + 'ln_2.weight', Tensor.from(new Float32Array(C).fill(1), [C]));
    t.set(p + 'ln_2.bias', Tensor.from(new Float32Array(C), [C]));
    t.set(p + 'mlp.c_fc.weight', Tensor.from(rand(C * 4 * C, 0.02), [C, 4 * C]));
    t.set(p + 'mlp.c_fc.bias', Tensor.from(new Float32Array(4 * C), [4 * C]));
    t.set(p + 'mlp.c_proj.weight', Tensor.from(rand(4 * C * C, 0.02), [4 * C, C]));
    t.set(p + 'mlp.c_proj.bias', Tensor.from(new Float32Array(C), [C]));
  }
  t.set('transformer.ln_f.weight', Tensor.from(new Float32Array(C).fill(1), [C]));
  t.set('transformer.ln_f.bias', Tensor.from(new Float32Array(C), [C]));
  await writeSafetensors(join(dir, 'model.safetensors'), t, { format: 'pt' });
  for (const x of t.values()) x.dispose();
  writeFileSync(join(dir, 'config.json'), JSON.stringify({
    model_type: 'gpt2', vocab_size: vocab, n_positions: nPos, n_embd: C, n_layer: nLayer, n_head: nHead,
    n_inner: null, activation_function: 'gelu_new', layer_norm_epsilon: 1e-5, tie_word_embeddings: true,
    bos_token_id: 50256, eos_token_id: 50256,
  }));
  return dir;
}

/** Bytes a B=1 decode step must read: every Linear weight + the tied lm_head (wte). */
function weightBytesPerToken(model) {
  let bytes = 0;
  for (const [name, m] of model.namedModules()) {
    if (name.endsWith('wte') || name.endsWith('wpe') || name.includes('ln_')) continue;
    const ts = { ...m.tensors(), ...m.quantConstants() };
    for (const t of Object.values(ts)) bytes += t.nbytes;
  }
  return bytes;
}

async function measure(name, dir) {
  const t0 = performance.now();
  const model = await AutoModelForCausalLM.fromPretrained(dir, { noTokenizer: true });
  const loadS = (performance.now() - t0) / 1000;
  const prompt = Array.from({ length: PROMPT }, (_, i) => (i * 7919 + 13) % model.config.vocabSize);
  // warm-up (page-in, pool start)
  let out = await model.forward([prompt], { lastTokenOnly: true, cacheCapacity: PROMPT + NEW + 1 });
  await out.logits.data();
  out.pastKeyValues.dispose();
  // prefill
  const tp = performance.now();
  out = await model.forward([prompt], { lastTokenOnly: true, cacheCapacity: PROMPT + NEW + 1 });
  let logits = await out.logits.toFloat32();
  const prefillS = (performance.now() - tp) / 1000;
  // decode (greedy)
  const td = performance.now();
  for (let i = 0; i < NEW; i++) {
    let best = 0;
    for (let v = 1; v < logits.length; v++) if (logits[v] > logits[best]) best = v;
    out = await model.forward([[best]], { pastKeyValues: out.pastKeyValues, lastTokenOnly: true });
    logits = await out.logits.toFloat32();
  }
  const decodeS = (performance.now() - td) / 1000;
  const wbytes = weightBytesPerToken(model);
  out.pastKeyValues.dispose();
  model.dispose();
  return { model: name, loadS, prefillTokPerS: PROMPT / prefillS, decodeTokPerS: NEW / decodeS, weightBytesPerToken: wbytes, decodeBytesPerS: (wbytes * NEW) / decodeS };
}

const bw = native.memoryBandwidth(1 << 30, 5);
const results = [];
results.push(await measure('fortune-gpt2 (7.7M, fp32)', undefined));
results.push(await measure('gpt2-124M-shaped (fp32)', await writeRandomGPT2(join(outDir, 'gpt2-124m-random'))));

const info = native.info();
console.log(`CPU: ${info.threads} threads, SIMD: ${info.cpuFeatures}`);
console.log(`memory bandwidth (same run): read ${(bw.readBytesPerSec / 1e9).toFixed(1)} GB/s, copy ${(bw.copyBytesPerSec / 1e9).toFixed(1)} GB/s (read+write)`);
console.log(`batch 1, prompt ${PROMPT}, ${NEW} new tokens, greedy\n`);
const rows = [['model', 'load s', 'prefill tok/s', 'decode tok/s', 'weights/token', 'decode GB/s', '% of read bw']];
for (const r of results)
  rows.push([r.model, r.loadS.toFixed(2), r.prefillTokPerS.toFixed(0), r.decodeTokPerS.toFixed(1), `${(r.weightBytesPerToken / 1e6).toFixed(1)} MB`,
    (r.decodeBytesPerS / 1e9).toFixed(2), `${((100 * r.decodeBytesPerS) / bw.readBytesPerSec).toFixed(0)}%`]);
const w = rows[0].map((_, c) => Math.max(...rows.map((r) => r[c].length)));
for (const r of rows) console.log(r.map((v, c) => (c ? v.padStart(w[c]) : v.padEnd(w[c]))).join('  '));
writeFileSync(join(outDir, 'generate-cpu.json'), JSON.stringify({ date: new Date().toISOString(), bandwidth: bw, cpu: info.cpuFeatures, threads: info.threads, prompt: PROMPT, newTokens: NEW, results }, null, 2));
