// bench/generate: CPU decode and prefill speed for fortune-gpt2 and a GPT-2-124M-shaped
// random float32 checkpoint (written here on first run) in float32, float16, int8 and
// nf4 + double quant, against this machine's memory bandwidth measured in the same process.
// Prints a table; writes bench/out/generate-cpu.json.
// Run after `npm run build`: node bench/generate.mjs [--tokens 128] [--prompt 16] [--modes fp32,fp16,int8,nf4]
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createRequire } from 'node:module';
import { AutoModelForCausalLM, BitsAndBytesConfig } from '../dist/index.js';
import { SHAPES, writeRandomGPT2 } from './lib/random-gpt2.mjs';

const args = Object.fromEntries(process.argv.slice(2).map((a, i, all) => (a.startsWith('--') ? [a.slice(2), all[i + 1]] : null)).filter(Boolean));
const NEW = Number(args.tokens ?? 128);
const PROMPT = Number(args.prompt ?? 16);
const outDir = join(import.meta.dirname ?? new URL('.', import.meta.url).pathname, 'out');
mkdirSync(outDir, { recursive: true });

const require = createRequire(import.meta.url);
const native = process.env.NIBBLE_ADDON ? require(process.env.NIBBLE_ADDON) : require('node-gyp-build')(join(outDir, '..', '..'));

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

const MODES = {
  fp32: {},
  fp16: { dtype: 'float16' },
  int8: { dtype: 'float16', quantizationConfig: new BitsAndBytesConfig({ loadIn8bit: true }) },
  nf4: { dtype: 'float16', quantizationConfig: new BitsAndBytesConfig({ loadIn4bit: true, bnb4bitQuantType: 'nf4', bnb4bitUseDoubleQuant: true }) },
};
const modes = String(args.modes ?? 'fp32,fp16,int8,nf4').split(',');

async function measure(name, dir, mode) {
  const t0 = performance.now();
  const model = await AutoModelForCausalLM.fromPretrained(dir, { noTokenizer: true, ...MODES[mode] });
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
  return { model: name, mode, loadS, prefillTokPerS: PROMPT / prefillS, decodeTokPerS: NEW / decodeS, weightBytesPerToken: wbytes, decodeBytesPerS: (wbytes * NEW) / decodeS };
}

const bw = native.memoryBandwidth(1 << 30, 5);
const results = [];
const dir124 = writeRandomGPT2(join(outDir, 'gpt2-124m-random-f32'), SHAPES['124M']);
for (const mode of modes) {
  if (!MODES[mode]) throw new Error(`unknown mode ${mode} (${Object.keys(MODES).join(', ')})`);
  results.push(await measure('fortune-gpt2', undefined, mode));
  results.push(await measure('GPT-2 124M-shaped', dir124, mode));
}

const info = native.info();
console.log(`CPU: ${info.threads} threads, SIMD: ${info.cpuFeatures}`);
console.log(`memory bandwidth (same run): read ${(bw.readBytesPerSec / 1e9).toFixed(1)} GB/s, copy ${(bw.copyBytesPerSec / 1e9).toFixed(1)} GB/s (read+write)`);
console.log(`batch 1, prompt ${PROMPT}, ${NEW} new tokens, greedy\n`);
const rows = [['model', 'mode', 'load s', 'prefill tok/s', 'decode tok/s', 'weights/token', 'decode GB/s', '% of read bw']];
for (const r of results)
  rows.push([r.model, r.mode, r.loadS.toFixed(2), r.prefillTokPerS.toFixed(0), r.decodeTokPerS.toFixed(1), `${(r.weightBytesPerToken / 1e6).toFixed(1)} MB`,
    (r.decodeBytesPerS / 1e9).toFixed(2), `${((100 * r.decodeBytesPerS) / bw.readBytesPerSec).toFixed(0)}%`]);
const w = rows[0].map((_, c) => Math.max(...rows.map((r) => r[c].length)));
for (const r of rows) console.log(r.map((v, c) => (c > 1 ? v.padStart(w[c]) : v.padEnd(w[c]))).join('  '));
writeFileSync(join(outDir, 'generate-cpu.json'), JSON.stringify({ date: new Date().toISOString(), bandwidth: bw, cpu: info.cpuFeatures, threads: info.threads, prompt: PROMPT, newTokens: NEW, results }, null, 2));
