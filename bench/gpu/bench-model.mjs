// A bench checkpoint (bench/generate-gpu.mjs --write-only) loaded onto cuda:0 in one of the
// bench's storage modes; shared by the per-step scripts (profile-step.mjs, ab-step.mjs).
import { AutoModelForCausalLM, BitsAndBytesConfig } from '../../dist/index.js';

const QUANT = {
  fp16: () => undefined,
  int8: () => new BitsAndBytesConfig({ loadIn8bit: true }),
  nf4: () => new BitsAndBytesConfig({ loadIn4bit: true, bnb4bitQuantType: 'nf4', bnb4bitUseDoubleQuant: true }),
};

export function loadBenchModel(dir, mode) {
  if (!QUANT[mode]) throw new Error(`unknown mode ${mode}: use ${Object.keys(QUANT).join(', ')}`);
  return AutoModelForCausalLM.fromPretrained(dir, { deviceMap: 'cuda:0', dtype: 'float16', noTokenizer: true, quantizationConfig: QUANT[mode]() });
}
