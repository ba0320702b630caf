// bench/load-rss: peak resident memory while loading a GPT-2-XL-shaped random float32
// checkpoint (6.2 GB, written here on first run) with 4-bit quantization on load, in a
// fresh child process per mode. Prints a table; writes bench/out/load-rss.json.
// Run after `npm run build`: node bench/load-rss.mjs [--shape XL|124M]
import { execFileSync } from 'node:child_process';
import { statSync, writeFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { SHAPES, writeRandomGPT2 } from './lib/random-gpt2.mjs';

const shape = process.argv.includes('--shape') ? process.argv[process.argv.indexOf('--shape') + 1] : 'XL';
const out = join(import.meta.dirname, 'out');
mkdirSync(out, { recursive: true });
const dir = join(out, `gpt2-${shape.toLowerCase()}-random-f32`);
const t0 = performance.now();
writeRandomGPT2(dir, SHAPES[shape]);
const fileBytes = statSync(join(dir, 'model.safetensors')).size;
console.error(`checkpoint ${dir}: ${(fileBytes / 1e9).toFixed(2)} GB (ready in ${((performance.now() - t0) / 1000).toFixed(0)} s)`);

const child = (quant) => `
  import { AutoModelForCausalLM, BitsAndBytesConfig } from ${JSON.stringify(join(import.meta.dirname, '..', 'dist', 'index.js'))};
  const t = performance.now();
  const q = ${JSON.stringify(quant)};
  const model = await AutoModelForCausalLM.fromPretrained(${JSON.stringify(dir)}, q ? { quantizationConfig: new BitsAndBytesConfig(q), noTokenizer: true } : { noTokenizer: true });
  const loadS = (performance.now() - t) / 1000;
  const status = (await import('node:fs')).readFileSync('/proc/self/status', 'utf8');
  const kb = (k) => Number(status.match(new RegExp(k + ':\\\\s+(\\\\d+)'))[1]) * 1024;
  console.log(JSON.stringify({ loadS, peakRss: kb('VmHWM'), rss: kb('VmRSS'), footprint: model.getMemoryFootprint() }));
`;
const modes = [
  ['nf4 + double quant', { loadIn4bit: true, bnb4bitQuantType: 'nf4', bnb4bitUseDoubleQuant: true }],
  ['int8', { loadIn8bit: true }],
];
const rows = [];
for (const [name, q] of modes) {
  const r = JSON.parse(execFileSync(process.execPath, ['--input-type=module', '-e', child(q)], { encoding: 'utf8' }).trim().split('\n').pop());
  rows.push({ mode: name, ...r });
}
console.log(`GPT-2 ${shape}-shaped float32 checkpoint, ${(fileBytes / 1e9).toFixed(2)} GB on disk; loaded on the CPU with quantization on load\n`);
const table = [['mode', 'load s', 'peak RSS', 'RSS after', 'footprint'], ...rows.map((r) => [r.mode, r.loadS.toFixed(1), `${(r.peakRss / 1e9).toFixed(2)} GB`, `${(r.rss / 1e9).toFixed(2)} GB`, `${(r.footprint / 1e9).toFixed(2)} GB`])];
const w = table[0].map((_, c) => Math.max(...table.map((r) => r[c].length)));
for (const r of table) console.log(r.map((v, c) => (c ? v.padStart(w[c]) : v.padEnd(w[c]))).join('  '));
writeFileSync(join(out, 'load-rss.json'), JSON.stringify({ date: new Date().toISOString(), shape, fileBytes, rows }, null, 2));
