// bench/sampling: the JS cost of choosing one token (logits processors + sampler) on a
// 50,257-entry GPT-2 row, next to the model's own decode step, so the share generation adds
// on top of the forward pass is visible. Logits come from fortune-gpt2 (a real distribution)
// and from a flat random row (the worst case for top-p). Prints a table; writes
// bench/out/sampling.json. Run after `npm run build`: node bench/sampling.mjs [--iters 200]
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  AutoModelForCausalLM, applyMinP, applyRepetitionPenalty, applyTemperature, applyTopK, applyTopP,
  argmax, buildLogitsProcessors, resolveGenerationConfig, sampleToken, Xoshiro128,
} from '../dist/index.js';

const args = Object.fromEntries(process.argv.slice(2).map((a, i, all) => (a.startsWith('--') ? [a.slice(2), all[i + 1]] : null)).filter(Boolean));
const ITERS = Number(args.iters ?? 200);
const outDir = join(import.meta.dirname ?? new URL('.', import.meta.url).pathname, 'out');
mkdirSync(outDir, { recursive: true });

const model = await AutoModelForCausalLM.fromPretrained();
const prompt = model.tokenizer.encode('The future of AI is');
const out = await model.forward([prompt], { lastTokenOnly: true });
const real = await out.logits.toFloat32();
out.pastKeyValues.dispose();

// Time of one decode step of the model itself, for scale.
const steps = 64;
const t0 = performance.now();
await model.generate(prompt, { maxNewTokens: steps, eosTokenId: [] });
const stepMs = (performance.now() - t0) / steps;

let s = 12345;
const flat = Float32Array.from({ length: real.length }, () => {
  s = (Math.imul(s, 1103515245) + 12345) >>> 0;
  return (s / 2 ** 32) * 2 - 1;
});

const rng = new Xoshiro128(1);
const history = Array.from({ length: 200 }, (_, i) => (i * 251) % real.length);
const chain = buildLogitsProcessors(resolveGenerationConfig({ doSample: true, temperature: 0.8, topK: 50, topP: 0.9, repetitionPenalty: 1.1 }));
const cases = [
  ['argmax (greedy)', (x) => argmax(x)],
  ['repetitionPenalty (200 ids)', (x) => applyRepetitionPenalty(x, history, 1.1)],
  ['temperature', (x) => applyTemperature(x, 0.8)],
  ['topK 50', (x) => applyTopK(x, 50)],
  ['topP 0.9', (x) => applyTopP(x, 0.9)],
  ['minP 0.05', (x) => applyMinP(x, 0.05)],
  ['sample (softmax + draw)', (x) => sampleToken(x, rng)],
  ['chain: pen+T+topK+topP+sample', (x) => { for (const p of chain) p(x, history); sampleToken(x, rng); }],
];

function time(fn, row) {
  for (let i = 0; i < 5; i++) fn(row.slice());
  const copies = Array.from({ length: ITERS }, () => row.slice());
  const t = performance.now();
  for (let i = 0; i < ITERS; i++) fn(copies[i]);
  return (performance.now() - t) / ITERS;
}

const results = cases.map(([name, fn]) => ({ name, realMs: time(fn, real), flatMs: time(fn, flat) }));
const rows = [['operation', 'fortune logits ms', 'flat row ms'], ...results.map((r) => [r.name, r.realMs.toFixed(3), r.flatMs.toFixed(3)])];
rows.push(['fortune-gpt2 decode step (greedy)', stepMs.toFixed(3), '']);
const w = rows[0].map((_, c) => Math.max(...rows.map((r) => r[c].length)));
for (const r of rows) console.log(r.map((v, c) => (c ? v.padStart(w[c]) : v.padEnd(w[c]))).join('  '));
writeFileSync(join(outDir, 'sampling.json'), JSON.stringify({ date: new Date().toISOString(), vocab: real.length, iters: ITERS, decodeStepMs: stepMs, results }, null, 2));
model.dispose();
