// bench/footprint: get_memory_footprint() of fortune-gpt2 and a GPT-2-124M-shaped model in each
// storage mode (transformers' definition: parameters + buffers; quantization constants not
// counted, shown separately). Run after `npm run build`: node bench/footprint.mjs
import { join } from 'node:path';
import { AutoModelForCausalLM, BitsAndBytesConfig } from '../dist/index.js';
import { SHAPES, writeRandomGPT2 } from './lib/random-gpt2.mjs';

const models = [['fortune-gpt2', undefined], ['GPT-2 124M-shaped', writeRandomGPT2(join(import.meta.dirname, 'out', 'gpt2-124m-random-f32'), SHAPES['124M'])]];
const modes = [
  ['float32', {}],
  ['float16', { dtype: 'float16' }],
  ['int8 (LLM.int8, float16 rest)', { dtype: 'float16', quantizationConfig: new BitsAndBytesConfig({ loadIn8bit: true }) }],
  ['nf4 (float32 rest)', { quantizationConfig: new BitsAndBytesConfig({ loadIn4bit: true, bnb4bitQuantType: 'nf4' }) }],
  ['nf4 + double quant (float32 rest)', { quantizationConfig: new BitsAndBytesConfig({ loadIn4bit: true, bnb4bitQuantType: 'nf4', bnb4bitUseDoubleQuant: true }) }],
  ['nf4 + double quant (float16 rest)', { dtype: 'float16', quantizationConfig: new BitsAndBytesConfig({ loadIn4bit: true, bnb4bitQuantType: 'nf4', bnb4bitUseDoubleQuant: true, bnb4bitComputeDtype: 'float16' }) }],
];
const rows = [['mode', ...models.flatMap(([m]) => [`${m}`, '+ constants'])]];
for (const [name, opts] of modes) {
  const row = [name];
  for (const [, dir] of models) {
    const model = await AutoModelForCausalLM.fromPretrained(dir, { ...opts, noTokenizer: true });
    row.push(`${(model.getMemoryFootprint() / 2 ** 20).toFixed(2)} MiB`, `${(model.getMemoryFootprint({ includeQuantConstants: true }) / 2 ** 20).toFixed(2)} MiB`);
    model.dispose();
  }
  rows.push(row);
}
const w = rows[0].map((_, c) => Math.max(...rows.map((r) => r[c].length)));
for (const r of rows) console.log(r.map((v, c) => (c ? v.padStart(w[c]) : v.padEnd(w[c]))).join('  '));
