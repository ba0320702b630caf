// A few decode steps of a bench checkpoint, for `ncu` (per-kernel GPU times): the kernels of
// one GPT-2 decode step, launched one by one (NIBBLE_CUDA_GRAPH=0 recommended under ncu).
//   NIBBLE_ADDON=/abs/nibble.node node bench/gpu/profile-step.mjs <checkpoint dir> <fp16|nf4|int8> [B] [new tokens]
import { loadBenchModel } from './bench-model.mjs';

const [dir, mode = 'fp16', bArg = '1', newArg = '3'] = process.argv.slice(2);
const model = await loadBenchModel(dir, mode);
const prompts = Array.from({ length: Number(bArg) }, (_, b) => Array.from({ length: 16 }, (_, i) => (i * 31 + b * 7) % 50000));
await model.generate(prompts, { maxNewTokens: Number(newArg), doSample: false });
model.dispose();
