// One configuration of a same-run A/B: decode tokens/s through generate() and "queued steps"
// (decode steps issued back to back) for one bench checkpoint, mode and batch. The kernels'
// switches are environment variables read once per process, so ab.sh runs this once per
// configuration and alternates them.
//   NIBBLE_ADDON=/abs/nibble.node node bench/gpu/ab-step.mjs <checkpoint dir> <fp16|nf4|int8> [B]
import { loadBenchModel } from './bench-model.mjs';

const [dir, mode = 'fp16', bArg = '1'] = process.argv.slice(2);
const B = Number(bArg), NEW = 128;
const model = await loadBenchModel(dir, mode);
const ids = Array.from({ length: B }, (_, b) => Array.from({ length: 16 }, (_, i) => (i * 7919 + b * 131 + 13) % 50257));
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
await model.generate(ids, { maxNewTokens: 8, doSample: false });
const gen = [];
for (let r = 0; r < 5; r++) {
  const t0 = performance.now();
  await model.generate(ids, { maxNewTokens: NEW, doSample: false });
  gen.push(performance.now() - t0);
}
// The prompt's share: one prefill, timed alone.
const pre = [];
for (let r = 0; r < 5; r++) {
  const t0 = performance.now();
  const out = await model.forward(ids, { lastTokenOnly: true, cacheCapacity: 16 + NEW });
  await out.logits.toFloat32();
  pre.push(performance.now() - t0);
  out.logits.dispose();
  out.pastKeyValues.dispose();
}
const decodeS = (median(gen) - median(pre)) / 1000;
const first = await model.forward(ids, { lastTokenOnly: true, cacheCapacity: 16 + NEW });
first.logits.dispose();
const t0 = performance.now();
for (let i = 0; i < NEW - 1; i++) {
  const out = await model.forward(ids.map((r) => [r[i % 16]]), { pastKeyValues: first.pastKeyValues, lastTokenOnly: true });
  if (i === NEW - 2) await out.logits.toFloat32();
  out.logits.dispose();
}
const queuedS = (performance.now() - t0) / 1000;
first.pastKeyValues.dispose();
model.dispose();
console.log(JSON.stringify({ mode, B, decode: (B * (NEW - 1)) / decodeS, queued: (B * (NEW - 1)) / queuedS }));
