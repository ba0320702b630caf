// Model-level GPU checks for the GPT-2 path, for the GPU host (plain node: vitest is not
// there). Needs dist/ (npx tsup) and the CUDA addon: NIBBLE_ADDON=/abs/nibble.node.
//   node --expose-gc test/gpu/check-gpu.mjs [--loops 1000]
// Checks: tiny-random-gpt2 on CUDA vs transformers' logits (1e-4) and greedy tokens;
// float16 parameters within 2e-2; fortune-gpt2 CUDA vs CPU (same greedy tokens, logits
// close, a left-padded batch too); errors (mixed devices, out of memory) leave the GPU
// usable; the event loop keeps running during GPU generation; N generate calls in a loop
// with flat GPU memory and host RSS. Prints a table last; exit status 1 on any failure.
import { createRequire } from 'node:module';
import {
  AutoModelForCausalLM, BitsAndBytesConfig, Linear4bit, Tensor, gemm4bitLayout, gemv4bitLayout, matmul4bit, quantize4bit, readSafetensors,
} from '../../dist/index.js';

const args = process.argv.slice(2);
const LOOPS = Number(args[args.indexOf('--loops') + 1] ?? 1000) || 1000;
// Memory is compared between call 50 and the last one.
if (LOOPS <= 50) {
  console.error(`check-gpu: --loops must be more than 50 (memory is compared from call 50 on), got ${LOOPS}`);
  process.exit(2);
}
const require = createRequire(import.meta.url);
if (!process.env.NIBBLE_ADDON) throw new Error('set NIBBLE_ADDON to the CUDA build of nibble.node');
const addon = require(process.env.NIBBLE_ADDON); // the same module instance dist loads

const TINY = 'test/fixtures/tiny-random-gpt2';
const FORTUNE = 'models/fortune-gpt2';
const rows = [];
function record(check, value, limit, pass) {
  rows.push({ check, value: String(value), limit: String(limit), pass });
  console.log(`${pass ? 'PASS' : 'FAIL'}  ${check}: ${value} (limit ${limit})`);
}
async function attempt(name, fn) {
  try {
    await fn();
  } catch (e) {
    record(name, `threw: ${e.message.split('\n')[0]}`, 'no error', false);
  }
}
const maxAbsDiff = (a, b) => {
  if (a.length !== b.length) return Infinity;
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return Number.isNaN(m) ? Infinity : m;
};
const sameTokens = (a, b) => JSON.stringify(a) === JSON.stringify(b);
const gpuFree = () => addon.cudaMemInfo(0).free;

const info = addon.info();
console.log(`GPU: ${info.gpus.map((g) => `${g.name} (${(g.totalMemory / 2 ** 30).toFixed(1)} GiB)`).join(', ') || 'none'}; driver ${info.cudaDriverVersion}`);
if (!info.cudaDeviceCount) {
  console.log(`no GPU: ${info.cudaUnavailableReason}`);
  process.exit(2);
}

const refs = readSafetensors('test/fixtures/hf_gpt2_refs.safetensors').tensors;
const ref = async (n) => refs.get(n).toFloat32();
const refIds = async (n) => refs.get(n).toArray();

await attempt('tiny fp32 logits vs transformers', async () => {
  for (const deviceMap of [{ '': 'cuda:0' }, 'cuda']) {
    const model = await AutoModelForCausalLM.fromPretrained(TINY, { deviceMap, noTokenizer: true });
    const ids = await refIds('tiny.input_ids');
    const prompts = [ids.slice(0, 10), ids.slice(10, 20)];
    const { logits, pastKeyValues } = await model.forward(prompts);
    const d = maxAbsDiff(await logits.toFloat32(), await ref('tiny.fp32.logits'));
    record(`tiny fp32 logits max|d| (deviceMap ${JSON.stringify(deviceMap)}, ${model.device})`, d.toExponential(2), '1e-4', d <= 1e-4);
    logits.dispose();
    pastKeyValues.dispose();
    const want = await refIds('tiny.fp32.greedy');
    const got = (await model.generate(prompts[0], { maxNewTokens: want.length - 10, doSample: false }))[0];
    record(`tiny fp32 greedy ${want.length - 10} tokens = transformers`, sameTokens(got, want) ? 'same' : `differ: ${got.slice(10)}`, 'same', sameTokens(got, want));
    model.dispose();
  }
});

await attempt('tiny float16/bfloat16 parameters', async () => {
  const ids = (await refIds('tiny.input_ids')).slice(0, 10);
  const want = (await ref('tiny.fp32.logits')).subarray(0, 10 * 1000);
  for (const [dtype, limit] of [['float16', 2e-2], ['bfloat16', 1e-1]]) {
    const model = await AutoModelForCausalLM.fromPretrained(TINY, { deviceMap: 'cuda', dtype, noTokenizer: true });
    const { logits, pastKeyValues } = await model.forward([ids]);
    const d = maxAbsDiff(await logits.toFloat32(), want);
    record(`tiny ${dtype} parameters, float32 compute: logits max|d| vs transformers fp32`, d.toExponential(2), limit, d <= limit);
    logits.dispose();
    pastKeyValues.dispose();
    model.dispose();
  }
});

await attempt('fortune CUDA vs CPU', async () => {
  const cpu = await AutoModelForCausalLM.fromPretrained(FORTUNE, { noTokenizer: true });
  const cuda = await AutoModelForCausalLM.fromPretrained(FORTUNE, { deviceMap: 'cuda:0', noTokenizer: true });
  const prompt = [464, 2003, 286, 9552, 318];
  const a = await cpu.forward([prompt]);
  const b = await cuda.forward([prompt]);
  const d = maxAbsDiff(await a.logits.toFloat32(), await b.logits.toFloat32());
  record('fortune fp32 logits CUDA vs CPU max|d|', d.toExponential(2), '2e-3', d <= 2e-3);
  for (const o of [a, b]) o.logits.dispose(), o.pastKeyValues.dispose();
  const gc = await cpu.generate(prompt, { maxNewTokens: 40, doSample: false });
  const gg = await cuda.generate(prompt, { maxNewTokens: 40, doSample: false });
  record('fortune fp32 greedy 40 tokens CUDA = CPU', sameTokens(gc, gg) ? 'same' : 'differ', 'same', sameTokens(gc, gg));
  const batch = [prompt, [50256, 17], [1169, 2003, 286]];
  const bc = await cpu.generate(batch, { maxNewTokens: 16, doSample: false });
  const bg = await cuda.generate(batch, { maxNewTokens: 16, doSample: false });
  record('fortune left-padded batch of 3, greedy CUDA = CPU', sameTokens(bc, bg) ? 'same' : 'differ', 'same', sameTokens(bc, bg));
  // The per-op path (what quantized models use) against the whole-forward path.
  process.env.NIBBLE_CUDA_FUSED = '0';
  const perOp = await AutoModelForCausalLM.fromPretrained(FORTUNE, { deviceMap: 'cuda:0', noTokenizer: true });
  const po = await perOp.forward([prompt]);
  const fu = await cuda.forward([prompt]);
  const dpo = maxAbsDiff(await po.logits.toFloat32(), await fu.logits.toFloat32());
  record('fortune per-op CUDA path vs whole-forward path max|d|', dpo.toExponential(2), '1e-5', dpo <= 1e-5);
  for (const o of [po, fu]) o.logits.dispose(), o.pastKeyValues.dispose();
  const bp = await perOp.generate(batch, { maxNewTokens: 16, doSample: false });
  record('fortune padded batch greedy, per-op CUDA = CPU', sameTokens(bc, bp) ? 'same' : 'differ', 'same', sameTokens(bc, bp));
  perOp.dispose();
  delete process.env.NIBBLE_CUDA_FUSED;
  const f16 = await AutoModelForCausalLM.fromPretrained(FORTUNE, { deviceMap: 'cuda:0', dtype: 'float16', noTokenizer: true });
  const h = await f16.forward([prompt]);
  const c2 = await cpu.forward([prompt]);
  const d16 = maxAbsDiff(await h.logits.toFloat32(), await c2.logits.toFloat32());
  record('fortune float16 parameters vs CPU fp32 logits max|d|', d16.toExponential(2), '2e-2', d16 <= 2e-2);
  for (const o of [h, c2]) o.logits.dispose(), o.pastKeyValues.dispose();
  f16.dispose();
  cpu.dispose();
  cuda.dispose();
});

// Batched decode (2..16 rows) runs the 4-bit and 16-bit layers on the tensor cores
// (native/cuda/gpt2_decode_mma.cu, float32 accuracy): a batch of 6 must decode to the CPU's
// tokens, nf4 + double quant (float32 compute) and float16 parameters alike.
await attempt('fortune batched decode on the tensor cores = CPU', async () => {
  const batch = [[464, 2003, 286, 9552, 318], [50256, 17], [1169, 2003, 286], [40, 1101], [7454, 2402, 257, 640, 11, 612], [464]];
  const variants = [
    ['nf4+dq', { quantizationConfig: new BitsAndBytesConfig({ loadIn4bit: true, bnb4bitQuantType: 'nf4', bnb4bitUseDoubleQuant: true }) }],
    ['float16', { dtype: 'float16' }],
  ];
  for (const [label, opts] of variants) {
    const cpu = await AutoModelForCausalLM.fromPretrained(FORTUNE, { noTokenizer: true, ...opts });
    const gpu = await AutoModelForCausalLM.fromPretrained(FORTUNE, { deviceMap: 'cuda:0', noTokenizer: true, ...opts });
    const c = await cpu.generate(batch, { maxNewTokens: 24, doSample: false });
    const g = await gpu.generate(batch, { maxNewTokens: 24, doSample: false });
    record(`fortune ${label} batch of 6, 24 greedy tokens CUDA = CPU`, sameTokens(c, g) ? 'same' : 'differ', 'same', sameTokens(c, g));
    cpu.dispose();
    gpu.dispose();
  }
});

await attempt('errors', async () => {
  const x = Tensor.from(new Float32Array(32).fill(0.5), [4, 8]).toDevice('cuda:0');
  const w = Tensor.from(new Float32Array(24).fill(0.25), [3, 8]);
  const out = Tensor.empty([4, 3], 'float32', 'cuda:0');
  let msg = '';
  try { addon.linear(out, x, w, null); } catch (e) { msg = e.message; }
  record('CPU weight with a CUDA input: JS error', msg.slice(0, 70) || 'no error', 'names the tensor', /'weight' .* on cpu/.test(msg));
  msg = '';
  let big;
  try { big = Tensor.empty([Math.ceil(info.gpus[0].totalMemory / 2)], 'float32', 'cuda:0'); } catch (e) { msg = e.message; }
  big?.dispose();
  record('allocating 2x the GPU memory: JS error', msg.slice(0, 70) || 'no error', 'out of memory + bytes', /out of memory allocating \d+ bytes/.test(msg));
  const model = await AutoModelForCausalLM.fromPretrained(FORTUNE, { deviceMap: 'cuda', noTokenizer: true });
  const g = await model.generate([464, 2003], { maxNewTokens: 5, doSample: false });
  record('generation works after the errors', g[0].length, 7, g[0].length === 7);
  model.dispose();
});

// The plan's quantized-layer descriptions (gpt2Plan): each malformed one is refused with a
// message naming the layer and the problem, and a well-formed one is accepted.
await attempt('plan descriptions', async () => {
  const [C, I, V, P, dev] = [8, 32, 10, 4, 'cuda:0'];
  const owned = [];
  const t = (shape, dtype = 'float16') => {
    const x = Tensor.zeros(shape, dtype, dev);
    owned.push(x);
    return x;
  };
  const params = (attn) => [t([V, C]), t([P, C]), t([C]), t([C]), attn, t([3 * C]), t([C, C]), t([C]), t([C]), t([C]),
    t([I, C]), t([I]), t([C, I]), t([C]), t([C]), t([C]), t([V, C])];
  const q4 = (o = {}) => ({ kind: '4bit', packed: t([(3 * C * C) / 2], 'uint8'), absmax: t([3], 'float32'), nestedAbsmax: null,
    nestedCode: null, offset: null, blocksize: 64, quantType: 1, computeDtype: 0, ...o });
  const i8 = (o = {}) => ({ kind: 'int8', CB: t([3 * C, C], 'int8'), SCB: t([3 * C], 'float32'), threshold: 6, ...o });
  const good = [q4(), i8()].map((d) => addon.gpt2Plan(params(d), 2, 1e-5));
  good.forEach((id) => addon.gpt2PlanRelease(id));
  record('plan: well-formed 4-bit and int8 descriptions accepted', good.length, 2, good.length === 2);
  const bad = [
    ['unknown kind', { kind: '2bit' }, /unknown kind '2bit'/],
    ['bad blocksize', q4({ blocksize: 48 }), /c_attn.weight' has an unsupported blocksize 48/],
    ['bad quant type', q4({ quantType: 7 }), /unknown quant type/],
    ['bad compute dtype', q4({ computeDtype: 3 }), /compute dtype/],
    ['packed of the wrong size', q4({ packed: t([10], 'uint8') }), /c_attn.weight.packed' is .* expected uint8 with 96 elements/],
    ['double quant without its code', q4({ absmax: t([3], 'uint8'), nestedAbsmax: t([1], 'float32') }), /has no 'nestedCode'/],
    ['CB of the wrong dtype', i8({ CB: t([3 * C, C], 'uint8') }), /c_attn.weight.CB' is .* expected int8/],
    ['negative threshold', i8({ threshold: -1 }), /bad outlier threshold/],
  ];
  for (const [name, desc, re] of bad) {
    let msg = 'no error';
    try {
      addon.gpt2PlanRelease(addon.gpt2Plan(params(desc), 2, 1e-5));
    } catch (e) {
      msg = e.message;
    }
    record(`plan refuses ${name}`, msg.slice(0, 90), String(re), re.test(msg));
  }
  owned.forEach((x) => x.dispose());
});

await attempt('event loop and memory', async () => {
  const model = await AutoModelForCausalLM.fromPretrained(FORTUNE, { deviceMap: 'cuda:0', noTokenizer: true });
  const prompt = [464, 2003, 286, 9552, 318];
  let last = performance.now();
  let worst = 0;
  const timer = setInterval(() => {
    const now = performance.now();
    worst = Math.max(worst, now - last);
    last = now;
  }, 5);
  const t0 = performance.now();
  const long = await model.generate(prompt, { maxNewTokens: 200, doSample: true, seed: 3, topP: 0.9 });
  const secs = (performance.now() - t0) / 1000;
  clearInterval(timer);
  record('5 ms timer during a 200-token GPU generate: worst gap', `${worst.toFixed(1)} ms`, '50 ms', worst <= 50);
  console.log(`  (fortune-gpt2 decode through generate(): ${(200 / secs).toFixed(0)} tokens/s)`);
  void long;

  const snap = () => {
    globalThis.gc?.();
    return { gpu: gpuFree(), rss: process.memoryUsage().rss };
  };
  let base;
  const t1 = performance.now();
  for (let i = 0; i < LOOPS; i++) {
    const sample = i % 2 === 1;
    await model.generate(i % 3 === 0 ? [prompt, [50256, 17]] : prompt, { maxNewTokens: 8, doSample: sample, seed: i, topK: 40 });
    if (i === 49) base = snap();
  }
  const end = snap();
  const dGpu = base.gpu - end.gpu;
  const dRss = end.rss - base.rss;
  record(`${LOOPS} generate calls: GPU memory used, call 50 -> ${LOOPS}`, `${(dGpu / 2 ** 20).toFixed(1)} MiB`, '2 MiB', Math.abs(dGpu) <= 2 * 2 ** 20);
  record(`${LOOPS} generate calls: host RSS, call 50 -> ${LOOPS}`, `${(dRss / 2 ** 20).toFixed(1)} MiB`, '32 MiB', dRss <= 32 * 2 ** 20);
  console.log(`  (${LOOPS} calls in ${((performance.now() - t1) / 1000).toFixed(1)} s)`);
  model.dispose();
});

// Quantized on load, on the GPU: the same references as the CPU tests (test/quantize-on-load).
const QUANT = [
  ['nf4_dq_fp32', { loadIn4bit: true, bnb4bitQuantType: 'nf4', bnb4bitUseDoubleQuant: true }, {}, 1e-4],
  ['nf4_fp32', { loadIn4bit: true, bnb4bitQuantType: 'nf4' }, {}, 1e-4],
  ['fp4_fp32', { loadIn4bit: true, bnb4bitQuantType: 'fp4' }, {}, 1e-4],
  ['nf4_dq_fp16', { loadIn4bit: true, bnb4bitQuantType: 'nf4', bnb4bitUseDoubleQuant: true, bnb4bitComputeDtype: 'float16' }, { dtype: 'float16' }, 2e-2],
  ['int8', { loadIn8bit: true }, { dtype: 'float16' }, 2e-2],
];
for (const [name, q, opts, tol] of QUANT)
  await attempt(`tiny ${name} on CUDA`, async () => {
    const ids = await refIds('tiny.input_ids');
    const prompts = [ids.slice(0, 10), ids.slice(10, 20)];
    const cfg = { quantizationConfig: new BitsAndBytesConfig(q), noTokenizer: true, ...opts };
    const model = await AutoModelForCausalLM.fromPretrained(TINY, { deviceMap: 'cuda:0', ...cfg });
    const { logits } = await model.forward(prompts);
    const d = maxAbsDiff(await logits.toFloat32(), await ref(`tiny.${name}.logits`));
    record(`tiny ${name} on CUDA: logits max|d| vs transformers+bnb`, d.toExponential(2), String(tol), d <= tol);
    const cpu = await AutoModelForCausalLM.fromPretrained(TINY, cfg);
    const [g] = await model.generate(prompts[0], { maxNewTokens: 20 });
    const [c] = await cpu.generate(prompts[0], { maxNewTokens: 20 });
    record(`tiny ${name}: 20 greedy tokens CUDA = CPU`, sameTokens(g, c) ? 'same' : `differ: ${g.slice(10)} vs ${c.slice(10)}`, 'same', tol > 1e-4 || sameTokens(g, c));
    // The whole-forward plan (quantized layers in native/cuda/gpt2_qlinear.cu, decode steps as
    // a CUDA graph) against the module-by-module path it replaces.
    process.env.NIBBLE_CUDA_FUSED = '0';
    const perOp = await AutoModelForCausalLM.fromPretrained(TINY, { deviceMap: 'cuda:0', ...cfg });
    const po = await perOp.forward(prompts);
    const [gp] = await perOp.generate(prompts[0], { maxNewTokens: 20 });
    const bp = await perOp.generate(prompts, { maxNewTokens: 12 });
    delete process.env.NIBBLE_CUDA_FUSED;
    const dp = maxAbsDiff(await logits.toFloat32(), await po.logits.toFloat32());
    record(`tiny ${name}: plan vs per-op logits max|d|`, dp.toExponential(2), '1e-4', dp <= 1e-4);
    const bf = await model.generate(prompts, { maxNewTokens: 12 });
    const same = sameTokens(g, gp) && sameTokens(bf, bp);
    record(`tiny ${name}: greedy tokens plan = per-op (B=1 and B=2)`, same ? 'same' : 'differ', 'same', same);
    po.logits.dispose(), po.pastKeyValues.dispose();
    perOp.dispose();
    model.dispose();
    cpu.dispose();
  });

// Decoding ahead (generate() queues step t+1 with the ids the GPU sampler writes, before they
// reach the host) against waiting for every step's ids: the same tokens, greedy and sampled,
// in a padded batch, float32 and nf4.
await attempt('fortune decode ahead = waiting for each step', async () => {
  const batch = [[464, 2003, 286, 9552, 318], [50256, 17], [1169, 2003, 286]];
  const sets = [{ doSample: false }, { doSample: true, seed: 11, topP: 0.9, repetitionPenalty: 1.2 }, { doSample: true, seed: 3, temperature: 1.5 }];
  for (const [label, q] of [['fp32', null], ['nf4', { loadIn4bit: true, bnb4bitQuantType: 'nf4', bnb4bitUseDoubleQuant: true }]]) {
    const model = await AutoModelForCausalLM.fromPretrained(FORTUNE, { deviceMap: 'cuda:0', ...(q ? { quantizationConfig: new BitsAndBytesConfig(q) } : {}) });
    let same = true;
    for (const o of sets) {
      const ahead = await model.generate(batch, { ...o, maxNewTokens: 40 });
      process.env.NIBBLE_DECODE_AHEAD = '0';
      const wait = await model.generate(batch, { ...o, maxNewTokens: 40 });
      delete process.env.NIBBLE_DECODE_AHEAD;
      same &&= sameTokens(ahead, wait);
    }
    record(`fortune ${label}: tokens with decode ahead = without (greedy, sampled + rp, B=3 padded)`, same ? 'same' : 'differ', 'same', same);
    model.dispose();
  }
});

// The device-ids inputs refuse bad tensors with a message naming them, and nothing is queued.
await attempt('device ids: bad inputs refused', async () => {
  const model = await AutoModelForCausalLM.fromPretrained(TINY, { deviceMap: 'cuda:0', noTokenizer: true });
  const { logits, pastKeyValues } = await model.forward([[1, 2, 3]], { lastTokenOnly: true });
  const bad = [
    ['float32 ids', Tensor.zeros([1], 'float32', 'cuda:0'), /deviceInputIds must be int32 \[1\] on cuda:0, got float32/],
    ['2 ids for B=1', Tensor.zeros([2], 'int32', 'cuda:0'), /deviceInputIds must be int32 \[1\]/],
    ['ids on the cpu', Tensor.zeros([1], 'int32'), /deviceInputIds must be int32 \[1\] on cuda:0, got int32 \[1\] on cpu/],
  ];
  for (const [name, ids, want] of bad) {
    const err = await model.forward([[0]], { pastKeyValues, lastTokenOnly: true, deviceInputIds: ids }).then(() => null, (e) => e);
    record(`forward deviceInputIds (${name}) refused`, err ? err.message.slice(0, 90) : 'accepted', String(want), !!err && want.test(err.message));
    ids.dispose();
  }
  record('the cache did not move after the refusals', pastKeyValues.length, 3, pastKeyValues.length === 3);
  const cfg = { doSample: false, temperature: 1, topK: 0, topP: 1, minP: null, repetitionPenalty: 1 };
  for (const [name, feed] of [['float32 feed', Tensor.zeros([1], 'float32', 'cuda:0')], ['feed of 3', Tensor.zeros([3], 'int32', 'cuda:0')], ['cpu feed', Tensor.zeros([1], 'int32')]]) {
    let msg = 'accepted';
    try {
      await addon.sampleTokens(logits, Int32Array.of(0), null, null, null, cfg, feed);
    } catch (e) {
      msg = e.message;
    }
    record(`sampleTokens ${name} refused`, msg.slice(0, 90), '/feed must be an int32 tensor of 1 elements/', /feed must be an int32 tensor of 1 elements/.test(msg));
    feed.dispose();
  }
  logits.dispose(), pastKeyValues.dispose(), model.dispose();
});

// The row-interleaved GEMV through the public API: gemv4bitLayout + matmul4bit(..., { gemvLayout })
// against the bitsandbytes-layout path on the same weight (one row), odd N, both quant types and
// float dtypes; Linear4bit({ gemvLayout: true }) makes the copy once and frees it on dispose.
await attempt('gemv4bitLayout', async () => {
  let worst = 0, cases = 0;
  for (const [N, K, bs] of [[1000, 4096, 64], [33, 1600, 32], [4097, 512, 128]])
    for (const quantType of ['nf4', 'fp4'])
      for (const dtype of ['float32', 'float16']) {
        const w = Tensor.from(Float32Array.from({ length: N * K }, (_, i) => Math.sin(i * 0.37) * 0.05), [N, K]).to(dtype).toDevice('cuda:0');
        const [packed, state] = quantize4bit(w, { quantType, blocksize: bs, compressStatistics: true });
        const x = Tensor.from(Float32Array.from({ length: K }, (_, i) => Math.cos(i * 0.11)), [1, K]).to(dtype).toDevice('cuda:0');
        const layout = gemv4bitLayout(packed, state);
        const a = await matmul4bit(x, packed, state).toFloat32();
        const b = await matmul4bit(x, packed, state, null, { gemvLayout: layout }).toFloat32();
        let num = 0, den = 0;
        for (let i = 0; i < N; i++) num += (a[i] - b[i]) ** 2, den += a[i] ** 2;
        worst = Math.max(worst, Number.isFinite(num) ? Math.sqrt(num / den) : Infinity);
        cases++;
        for (const t of [w, packed, x, layout]) t.dispose();
        state.dispose?.();
      }
  record(`gemv4bitLayout vs the bitsandbytes layout (${cases} cases), rel L2`, worst.toExponential(2), 2e-3, worst <= 2e-3);
  const w = Tensor.from(Float32Array.from({ length: 1024 * 2048 }, (_, i) => Math.sin(i) * 0.05), [1024, 2048]).to('float16').toDevice('cuda:0');
  const l = Linear4bit.fromFloat(w, null, { quantType: 'nf4', gemvLayout: true });
  const x1 = Tensor.from(Float32Array.from({ length: 2048 }, (_, i) => Math.cos(i)), [1, 2048]).to('float16').toDevice('cuda:0');
  const x3 = Tensor.from(Float32Array.from({ length: 3 * 2048 }, (_, i) => Math.cos(i)), [3, 2048]).to('float16').toDevice('cuda:0');
  const y1 = await l.forward(x1).toFloat32(), y3 = await l.forward(x3).toFloat32();
  // One row takes the row-layout GEMV (float32 products), three rows the tensor-core GEMM
  // (float16 products): equal to float16 rounding.
  let num = 0, den = 0;
  for (let i = 0; i < 1024; i++) num += (y1[i] - y3[i]) ** 2, den += y3[i] ** 2;
  const rel = Math.sqrt(num / den);
  record('Linear4bit gemvLayout: one row = first of three rows (rel L2)', rel.toExponential(2), 2e-3, rel <= 2e-3);
  const copy = l.layout; // private in TypeScript, visible here
  const made = copy instanceof Tensor && copy.device === 'cuda:0' && copy.numel >= 1024 * 1024;
  l.dispose();
  record('Linear4bit gemvLayout: copy made by the one-row forward, freed by dispose', `${made ? copy.numel : 'none'} bytes, disposed ${copy?.disposed}`,
    'made and disposed', made && copy.disposed === true && l.layout === null);
  for (const t of [w, x1, x3]) t.dispose();
});

// The fragment-ordered GEMM through the public API: gemm4bitLayout + matmul4bit(..., { gemmLayout })
// against the bitsandbytes-layout GEMM on the same weight, rows 2..130 (one to three launches
// of 64), odd N, both quant types, float16/bfloat16; Linear4bit({ gemmLayout: true }) makes the
// copy at its first many-row forward and frees it on dispose; a float32 input ignores it.
await attempt('gemm4bitLayout', async () => {
  let worst = 0, cases = 0;
  for (const [N, K, bs] of [[1000, 4096, 64], [33, 1600, 64], [4097, 512, 128]])
    for (const quantType of ['nf4', 'fp4'])
      for (const dtype of ['float16', 'bfloat16'])
        for (const M of [2, 17, 64, 130]) {
          const w = Tensor.from(Float32Array.from({ length: N * K }, (_, i) => Math.sin(i * 0.37) * 0.05), [N, K]).to(dtype).toDevice('cuda:0');
          const [packed, state] = quantize4bit(w, { quantType, blocksize: bs, compressStatistics: true });
          const x = Tensor.from(Float32Array.from({ length: M * K }, (_, i) => Math.cos(i * 0.11)), [M, K]).to(dtype).toDevice('cuda:0');
          const layout = gemm4bitLayout(packed, state);
          const a = await matmul4bit(x, packed, state).toFloat32();
          const b = await matmul4bit(x, packed, state, null, { gemmLayout: layout }).toFloat32();
          let num = 0, den = 0;
          for (let i = 0; i < M * N; i++) num += (a[i] - b[i]) ** 2, den += a[i] ** 2;
          worst = Math.max(worst, Number.isFinite(num) ? Math.sqrt(num / den) : Infinity);
          cases++;
          for (const t of [w, packed, x, layout]) t.dispose();
          state.dispose?.();
        }
  record(`gemm4bitLayout vs the bitsandbytes layout (${cases} cases), rel L2`, worst.toExponential(2), 1e-2, worst <= 1e-2);
  const w = Tensor.from(Float32Array.from({ length: 1024 * 2048 }, (_, i) => Math.sin(i) * 0.05), [1024, 2048]).to('float16').toDevice('cuda:0');
  const l = Linear4bit.fromFloat(w, null, { quantType: 'nf4', gemmLayout: true });
  const x16 = Tensor.from(Float32Array.from({ length: 16 * 2048 }, (_, i) => Math.cos(i)), [16, 2048]).to('float16').toDevice('cuda:0');
  const ya = await matmul4bit(x16, l.weight, l.quantState).toFloat32(), yb = await l.forward(x16).toFloat32();
  let num = 0, den = 0;
  for (let i = 0; i < ya.length; i++) num += (ya[i] - yb[i]) ** 2, den += ya[i] ** 2;
  const rel = Math.sqrt(num / den);
  record('Linear4bit gemmLayout: 16 rows = the bitsandbytes-layout GEMM (rel L2)', rel.toExponential(2), 2e-3, rel <= 2e-3);
  const copy = l.tiles; // private in TypeScript, visible here
  const made = copy instanceof Tensor && copy.device === 'cuda:0' && copy.numel >= 1024 * 1024;
  l.dispose();
  record('Linear4bit gemmLayout: copy made by the many-row forward, freed by dispose', `${made ? copy.numel : 'none'} bytes, disposed ${copy?.disposed}`,
    'made and disposed', made && copy.disposed === true && l.tiles === undefined);
  // A weight the copy cannot take (K % 64, blocksize 32): the native refusal is caught and the
  // layer keeps the bitsandbytes-layout GEMM, with the same result.
  const wo = Tensor.from(Float32Array.from({ length: 40 * 96 }, (_, i) => Math.sin(i) * 0.05), [40, 96]).to('float16').toDevice('cuda:0');
  const lo = Linear4bit.fromFloat(wo, null, { quantType: 'nf4', blocksize: 32, gemmLayout: true });
  const xo = Tensor.from(Float32Array.from({ length: 5 * 96 }, (_, i) => Math.cos(i)), [5, 96]).to('float16').toDevice('cuda:0');
  const yo = await lo.forward(xo).toFloat32(), yr = await matmul4bit(xo, lo.weight, lo.quantState).toFloat32();
  const same = yo.length === yr.length && yo.every((v, i) => v === yr[i]);
  record('Linear4bit gemmLayout: a weight it cannot take (K 96, blocksize 32) keeps the bitsandbytes layout',
    `copy ${lo.tiles === null ? 'none' : 'made'}, outputs ${same ? 'identical' : 'differ'}`, 'none, identical', lo.tiles === null && same);
  lo.dispose();
  for (const t of [w, x16, wo, xo]) t.dispose();
});

console.log('\n| check | value | limit | result |\n|---|---|---|---|');
for (const r of rows) console.log(`| ${r.check} | ${r.value} | ${r.limit} | ${r.pass ? 'pass' : 'FAIL'} |`);
const failed = rows.filter((r) => !r.pass).length;
console.log(`\n${failed ? 'FAILED' : 'PASSED'}: ${rows.length - failed} of ${rows.length} checks`);
process.exit(failed ? 1 : 0);
