// Where the host's time goes in a GPU generate() (B=1, greedy): runs the bench's 124M
// checkpoint (bench/generate-gpu.mjs --write-only first) and writes a V8 CPU profile of the
// timed generations plus per-mode timings.
//   NIBBLE_ADDON=/abs/nibble.node node bench/gpu/host-profile.mjs <checkpoint dir> <mode> <out dir>
import { Session } from 'node:inspector/promises';
import { writeFileSync } from 'node:fs';
import { AutoModelForCausalLM, BitsAndBytesConfig } from '../../dist/index.js';

const [dir, mode = 'nf4', outDir = '.'] = process.argv.slice(2);
const quant = mode === 'nf4' ? new BitsAndBytesConfig({ loadIn4bit: true, bnb4bitQuantType: 'nf4', bnb4bitUseDoubleQuant: true }) : undefined;
const model = await AutoModelForCausalLM.fromPretrained(dir, { deviceMap: 'cuda:0', dtype: 'float16', noTokenizer: true, quantizationConfig: quant });
const prompt = Array.from({ length: 16 }, (_, i) => (i * 31) % 50000);
const opts = { maxNewTokens: 128, doSample: false, eosTokenId: [] };
const time = async (n) => {
  const t0 = performance.now();
  for (let i = 0; i < n; i++) await model.generate(prompt, opts);
  return (n * 127) / ((performance.now() - t0) / 1000);
};
await time(2);
for (const ahead of ['2', '1', '0']) {
  process.env.NIBBLE_DECODE_AHEAD = ahead;
  console.log(`decode ahead ${ahead}: ${(await time(5)).toFixed(0)} tok/s (incl. prefill)`);
}
delete process.env.NIBBLE_DECODE_AHEAD;
const session = new Session();
session.connect();
await session.post('Profiler.enable');
await session.post('Profiler.setSamplingInterval', { interval: 50 });
await session.post('Profiler.start');
const rate = await time(5);
const { profile } = await session.post('Profiler.stop');
writeFileSync(`${outDir}/host-${mode}.cpuprofile`, JSON.stringify(profile));
console.log(`profiled: ${rate.toFixed(0)} tok/s`);
// Self time by function, top 25.
const self = new Map();
const dt = profile.timeDeltas;
const byId = new Map(profile.nodes.map((n) => [n.id, n]));
for (let i = 0; i < profile.samples.length; i++) {
  const n = byId.get(profile.samples[i]);
  const key = `${n.callFrame.functionName || '(anon)'} ${n.callFrame.url.split('/').pop()}:${n.callFrame.lineNumber}`;
  self.set(key, (self.get(key) ?? 0) + (dt[i] ?? 0));
}
const total = [...self.values()].reduce((a, b) => a + b, 0);
for (const [k, v] of [...self.entries()].sort((a, b) => b[1] - a[1]).slice(0, 25))
  console.log(`${((100 * v) / total).toFixed(1).padStart(5)}%  ${(v / 1000 / (5 * 127)).toFixed(1).padStart(6)} us/step  ${k}`);
model.dispose();
