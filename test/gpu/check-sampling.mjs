// Sampling on the GPU (native/cuda/sampling.cu), for the GPU host (plain node: vitest is not
// there). Needs dist/ (npx tsup) and the CUDA addon: NIBBLE_ADDON=/abs/nibble.node.
//   node test/gpu/check-sampling.mjs
// Checks:
//  A. the kernel (addon.sampleTokens) against the host processors + sampler on the same rows
//     and the same u: synthetic rows (Gaussian, integer ties, -inf entries) at V = 1000, 50257
//     (shared memory), 50257 forced to global memory and 100000 (global memory);
//  B. the same on real fortune-gpt2 logits ([B, T, V] from a CUDA forward; last position);
//  C. fortune-gpt2 generation on cuda:0, device sampling against NIBBLE_DEVICE_SAMPLING=0 (host
//     sampling of the same GPU logits): the same seed must give the same tokens;
//  D. cuda:0 against cpu with the same seed and options. The two forwards differ in float
//     rounding (logits within ~1e-3), so a sampled sequence may legitimately part ways: when it
//     does, the first differing step is replayed (both models' logits for the common prefix,
//     the generator's u for that step) to show whether the logits or the sampler caused it;
//  E. decode speed with device sampling and with host sampling.
// Prints a PASS/FAIL table last; exit status 1 on any FAIL.
import { createRequire } from 'node:module';
import {
  AutoModelForCausalLM, Tensor, Xoshiro128, argmax, buildLogitsProcessors, generate, resolveGenerationConfig, sampleToken,
} from '../../dist/index.js';

const require = createRequire(import.meta.url);
if (!process.env.NIBBLE_ADDON) throw new Error('set NIBBLE_ADDON to the CUDA build of nibble.node');
const addon = require(process.env.NIBBLE_ADDON);
const FORTUNE = 'models/fortune-gpt2';

const rows = [];
function record(check, value, pass) {
  const verdict = pass === true ? 'PASS' : pass === false ? 'FAIL' : pass;
  rows.push({ check, value: String(value), verdict });
  console.log(`${verdict}  ${check}: ${value}`);
}
async function attempt(name, fn) {
  try {
    await fn();
  } catch (e) {
    record(name, `threw: ${String(e?.stack ?? e).split('\n').slice(0, 3).join(' | ')}`, false);
  }
}

const info = addon.info();
console.log(`GPU: ${info.gpus.map((g) => g.name).join(', ') || 'none'}; driver ${info.cudaDriverVersion}`);
if (!info.cudaDeviceCount) {
  console.log(`no GPU: ${info.cudaUnavailableReason}`);
  process.exit(2);
}
if (typeof addon.sampleTokens !== 'function') throw new Error('this addon has no sampleTokens');

function mulberry32(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const OPTION_SETS = [
  ['greedy', { doSample: false }],
  ['greedy rp1.3', { doSample: false, repetitionPenalty: 1.3 }],
  ['sample (topK50 default)', { doSample: true }],
  ['t0.7 topK40', { doSample: true, temperature: 0.7, topK: 40 }],
  ['topK1', { doSample: true, topK: 1 }],
  ['topP0.9', { doSample: true, topK: 0, topP: 0.9 }],
  ['topP0.5', { doSample: true, topK: 0, topP: 0.5 }],
  ['minP0.1', { doSample: true, topK: 0, minP: 0.1 }],
  ['minP0.5', { doSample: true, topK: 0, minP: 0.5 }],
  ['sample rp1.3', { doSample: true, topK: 0, repetitionPenalty: 1.3 }],
  ['all: t0.9 topK50 topP0.9 minP0.05 rp1.2', { doSample: true, temperature: 0.9, topK: 50, topP: 0.9, minP: 0.05, repetitionPenalty: 1.2 }],
];
const kernelConfig = (o) => {
  const c = resolveGenerationConfig(o);
  return { doSample: c.doSample, temperature: c.temperature, topK: c.topK, topP: c.topP, minP: c.minP, repetitionPenalty: c.repetitionPenalty, minTokensToKeep: 1 };
};

/** The host path's choice for one row. */
function hostChoice(row, history, opts, u) {
  const cfg = resolveGenerationConfig(opts);
  const scores = Float32Array.from(row);
  for (const p of buildLogitsProcessors(cfg)) p(scores, history);
  return cfg.doSample ? sampleToken(scores, { nextFloat: () => u }) : argmax(scores);
}

function pack(hists) {
  const offsets = new Int32Array(hists.length + 1);
  hists.forEach((h, i) => (offsets[i + 1] = offsets[i] + h.length));
  const history = new Int32Array(offsets[hists.length]);
  hists.forEach((h, i) => history.set(h, offsets[i]));
  return { history, offsets };
}

/** Kernel vs host on every batch row of `data` ([B, P, V], last position), `reps` u's per row. */
async function compareRows(logits, data, B, P, V, opts, rnd, reps, extra = {}) {
  const rowsIdx = Int32Array.from({ length: B }, (_, i) => i);
  const hists = Array.from({ length: B }, () => Array.from({ length: 60 }, () => Math.floor(rnd() * V)));
  const { history, offsets } = pack(hists);
  let bad = 0, total = 0, statusBad = 0;
  let example = '';
  for (let r = 0; r < reps; r++) {
    const u = Float64Array.from(rowsIdx, () => rnd());
    const got = await addon.sampleTokens(logits, rowsIdx, opts.doSample ? u : null, history, offsets, { ...kernelConfig(opts), ...extra });
    for (let b = 0; b < B; b++) {
      const start = (b * P + P - 1) * V;
      const want = hostChoice(data.subarray(start, start + V), hists[b], opts, u[b]);
      total++;
      if (got.status[b] !== 0) statusBad++;
      if (got.ids[b] !== want) {
        bad++;
        if (!example) example = ` e.g. row ${b}: gpu ${got.ids[b]} host ${want} (u ${u[b]})`;
      }
    }
  }
  return { bad, total, statusBad, example };
}

// ---- A: synthetic rows ----------------------------------------------------------------------
const KINDS = [
  ['randn*3', (rnd) => (rnd() + rnd() + rnd() - 1.5) * 6],
  ['integer ties', (rnd) => Math.round((rnd() - 0.5) * 8)],
  ['30% -inf', (rnd) => (rnd() < 0.3 ? -Infinity : (rnd() - 0.5) * 10)],
];
const SHAPES = [
  [1000, {}],
  [50257, {}],
  [50257, { forceGlobal: true }],
  [100000, {}],
];
for (const [V, extra] of SHAPES) {
  await attempt(`A kernel vs host, V=${V}${extra.forceGlobal ? ' (global)' : ''}`, async () => {
    const rnd = mulberry32(V + (extra.forceGlobal ? 1 : 0));
    const perKind = [];
    let bad = 0, total = 0, statusBad = 0, example = '';
    for (const [kind, gen] of KINDS) {
      const B = 4;
      const data = Float32Array.from({ length: B * V }, () => gen(rnd));
      const logits = Tensor.from(data, [B, 1, V], 'float32', 'cuda:0');
      for (const [name, opts] of OPTION_SETS) {
        const r = await compareRows(logits, data, B, 1, V, opts, rnd, V > 60000 ? 2 : 4, extra);
        bad += r.bad;
        total += r.total;
        statusBad += r.statusBad;
        if (r.bad && !example) example = ` [${kind}, ${name}:${r.example}]`;
      }
      logits.dispose();
      perKind.push(kind);
    }
    record(`A kernel vs host, V=${V}${extra.forceGlobal ? ' forced global' : ''} (${KINDS.length} kinds x ${OPTION_SETS.length} option sets)`,
      `${total - bad}/${total} rows agree, ${statusBad} statuses${example}`, bad === 0 && statusBad === 0);
  });
}

// ---- B: real logits -------------------------------------------------------------------------
const cuda = await AutoModelForCausalLM.fromPretrained(FORTUNE, { deviceMap: { '': 'cuda:0' }, noTokenizer: true });
const cpu = await AutoModelForCausalLM.fromPretrained(FORTUNE, { deviceMap: 'cpu', noTokenizer: true });
console.log(`models: ${cuda.device} and ${cpu.device}`);
const PROMPTS = [
  [464, 2003, 286, 9552, 318, 257],
  [1639, 481, 307, 257, 845, 1310],
  [40, 1101, 407, 1654, 644, 345],
  [32, 1545, 287, 761, 318, 257],
];
await attempt('B kernel vs host on fortune-gpt2 logits', async () => {
  const { logits, pastKeyValues } = await cuda.forward(PROMPTS);
  pastKeyValues.dispose();
  const [B, P, V] = logits.shape;
  const data = await logits.toFloat32();
  const rnd = mulberry32(7);
  let bad = 0, total = 0, statusBad = 0, example = '';
  for (const [name, opts] of OPTION_SETS) {
    const r = await compareRows(logits, data, B, P, V, opts, rnd, 25);
    bad += r.bad;
    total += r.total;
    statusBad += r.statusBad;
    if (r.bad && !example) example = ` [${name}:${r.example}]`;
  }
  logits.dispose();
  record(`B kernel vs host on fortune-gpt2 logits [${B}, ${P}, ${V}] (${OPTION_SETS.length} option sets x 25 draws)`,
    `${total - bad}/${total} rows agree, ${statusBad} statuses${example}`, bad === 0 && statusBad === 0);
});

// ---- C and D: generation --------------------------------------------------------------------
const GEN_SETS = [
  ['greedy', { doSample: false }],
  ['t0.8 topK40', { doSample: true, temperature: 0.8, topK: 40 }],
  ['topP0.9', { doSample: true, topK: 0, topP: 0.9 }],
  ['minP0.1', { doSample: true, topK: 0, minP: 0.1 }],
  ['greedy rp1.3', { doSample: false, repetitionPenalty: 1.3 }],
  ['sample rp1.3 topK50', { doSample: true, repetitionPenalty: 1.3 }],
  ['all: t0.9 topK50 topP0.9 minP0.05 rp1.2', { doSample: true, temperature: 0.9, topK: 50, topP: 0.9, minP: 0.05, repetitionPenalty: 1.2 }],
];
const SEEDS = [1, 2, 3];
const N_NEW = 60;
const table = [];

async function hostSampling(fn) {
  process.env.NIBBLE_DEVICE_SAMPLING = '0';
  try {
    return await fn();
  } finally {
    delete process.env.NIBBLE_DEVICE_SAMPLING;
  }
}

/** The last-position logits of `ids` under `model` (no cache). */
async function lastLogits(model, ids) {
  const { logits, pastKeyValues } = await model.forward([ids]);
  pastKeyValues.dispose();
  const V = logits.shape[2];
  const d = await logits.toFloat32();
  logits.dispose();
  return d.slice(d.length - V);
}

for (const [name, opts] of GEN_SETS) {
  await attempt(`C/D ${name}`, async () => {
    let cMatch = 0, dMatch = 0, dExplained = 0;
    const notes = [];
    for (const seed of SEEDS) {
      const o = { ...opts, maxNewTokens: N_NEW, seed };
      const prompt = PROMPTS[seed % PROMPTS.length];
      const dev = (await generate(cuda, prompt, o))[0];
      const host = (await hostSampling(() => generate(cuda, prompt, o)))[0];
      if (JSON.stringify(dev) === JSON.stringify(host)) cMatch++;
      else notes.push(`seed ${seed}: device/host sampling differ at token ${dev.findIndex((t, i) => t !== host[i]) - prompt.length}`);
      const onCpu = (await generate(cpu, prompt, o))[0];
      if (JSON.stringify(dev) === JSON.stringify(onCpu)) {
        dMatch++;
        continue;
      }
      // Replay the first differing step: same prefix, both models' logits, that step's u.
      const k = dev.findIndex((t, i) => t !== onCpu[i]);
      const step = k - prompt.length;
      const prefix = dev.slice(0, k);
      let u = 0;
      if (o.doSample) {
        const g = new Xoshiro128(seed);
        for (let i = 0; i <= step; i++) u = g.nextFloat();
      }
      const lc = await lastLogits(cuda, prefix);
      const lp = await lastLogits(cpu, prefix);
      let maxd = 0;
      for (let i = 0; i < lc.length; i++) maxd = Math.max(maxd, Math.abs(lc[i] - lp[i]));
      const hostOnCuda = hostChoice(lc, prefix, o, u);
      const hostOnCpu = hostChoice(lp, prefix, o, u);
      const explained = hostOnCuda === dev[k] && hostOnCpu === onCpu[k];
      if (explained) dExplained++;
      notes.push(`seed ${seed}: cuda/cpu part at token ${step} (${dev[k]} vs ${onCpu[k]}; logits max|d| ${maxd.toExponential(1)}; ` +
        `host sampler on each side's logits gives ${hostOnCuda}/${hostOnCpu}: ${explained ? 'the logits, not the sampler' : 'NOT explained by the logits'})`);
    }
    const n = SEEDS.length;
    table.push({ name, c: `${cMatch}/${n}`, d: `${dMatch}/${n}` + (dExplained ? ` (+${dExplained} explained by logits)` : '') });
    record(`C ${name}: cuda device vs host sampling, same tokens (${N_NEW} new, seeds ${SEEDS.join(',')})`, `${cMatch}/${n}`, cMatch === n);
    const dPass = dMatch + dExplained === n;
    record(`D ${name}: cuda vs cpu, same tokens`, `${dMatch}/${n} identical` + (dExplained ? `, ${dExplained} part where the logits differ` : ''),
      dMatch === n ? true : dPass ? 'PASS*' : false);
    for (const s of notes) console.log('      ' + s);
  });
}

await attempt('C batch with padding and finished rows', async () => {
  const batch = [[464, 2003, 286, 9552, 318], [50256, 17], [1169, 2003, 286]];
  let same = 0;
  const sets = GEN_SETS.filter(([, o]) => o.doSample);
  for (const [, opts] of sets) {
    const o = { ...opts, maxNewTokens: 40, seed: 11 };
    const dev = await generate(cuda, batch, o);
    const host = await hostSampling(() => generate(cuda, batch, o));
    if (JSON.stringify(dev) === JSON.stringify(host)) same++;
  }
  record('C left-padded batch of 3, sampling sets: device vs host sampling', `${same}/${sets.length} identical`, same === sets.length);
});

// ---- E: speed -------------------------------------------------------------------------------
await attempt('E decode speed', async () => {
  for (const [label, opts] of [['greedy', { doSample: false }], ['t0.8 topK50 topP0.9', { doSample: true, temperature: 0.8, topP: 0.9 }]]) {
    for (const B of [1, 8]) {
      const batch = Array.from({ length: B }, (_, i) => PROMPTS[i % PROMPTS.length]);
      const o = { ...opts, maxNewTokens: 200, seed: 1, eosTokenId: [] };
      const time = async () => {
        await generate(cuda, batch, { ...o, maxNewTokens: 5 });
        const t0 = performance.now();
        await generate(cuda, batch, o);
        return (B * 200) / ((performance.now() - t0) / 1000);
      };
      const dev = await time();
      const host = await hostSampling(time);
      record(`E ${label}, B=${B}: tokens/s with device sampling vs host sampling`, `${dev.toFixed(0)} vs ${host.toFixed(0)} (x${(dev / host).toFixed(2)})`, 'INFO');
    }
  }
});

cuda.dispose();
cpu.dispose();

console.log('\nGeneration summary (C: device vs host sampling on cuda:0; D: cuda:0 vs cpu), seeds per row:');
for (const r of table) console.log(`  ${r.name.padEnd(42)} C ${r.c.padEnd(6)} D ${r.d}`);
console.log('\n==== check-sampling results ====');
const w = Math.max(...rows.map((r) => r.check.length));
for (const r of rows) console.log(`${r.verdict.padEnd(5)} ${r.check.padEnd(w)}  ${r.value}`);
const failed = rows.filter((r) => r.verdict === 'FAIL').length;
console.log(`${rows.length} checks, ${failed} failed (PASS* = the sequences part only where the cuda and cpu logits differ)`);
process.exit(failed ? 1 : 0);
