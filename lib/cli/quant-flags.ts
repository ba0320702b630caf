// The quantization flags shared by generate, inspect, perplexity and quantize, mapped to
// fromPretrained's { dtype, quantizationConfig } exactly as a transformers user would set them.
import { BitsAndBytesConfig } from '../quantization/bitsandbytes-config.js';
import type { Options, Parsed } from './args.js';
import { stringOption } from './args.js';

export const quantizationFlags: Options = {
  dtype: { type: 'string' },
  'load-in-4bit': { type: 'boolean' },
  'load-in-8bit': { type: 'boolean' },
  'quant-type': { type: 'string' },
  'double-quant': { type: 'boolean' },
  'compute-dtype': { type: 'string' },
};

export const quantizationHelp = `  --dtype <float32|float16|bfloat16>   type of the unquantized weights (transformers' dtype)
  --load-in-4bit          quantize Linear weights to 4 bits on load
  --load-in-8bit          quantize Linear weights to int8 (LLM.int8()) on load
  --quant-type <nf4|fp4>  4-bit data type (default fp4, as transformers)
  --double-quant          quantize the 4-bit absmax constants too
  --compute-dtype <float32|float16|bfloat16>  4-bit matmul compute type (default float32)`;

const DTYPES = ['float32', 'float16', 'bfloat16'] as const;
export type ModelDType = (typeof DTYPES)[number];

export function loadOptionsFromFlags(cmd: string, values: Parsed['values']): { dtype?: ModelDType; quantizationConfig?: BitsAndBytesConfig } {
  const dtype = stringOption(values.dtype);
  if (dtype !== undefined && !DTYPES.includes(dtype as ModelDType))
    throw new Error(`${cmd}: --dtype must be one of ${DTYPES.join(', ')}, got '${dtype}'`);
  const four = values['load-in-4bit'] === true;
  const eight = values['load-in-8bit'] === true;
  const quantType = stringOption(values['quant-type']);
  const compute = stringOption(values['compute-dtype']);
  if (!four && (quantType !== undefined || values['double-quant'] || compute !== undefined))
    throw new Error(`${cmd}: --quant-type, --double-quant and --compute-dtype need --load-in-4bit`);
  if (!four && !eight) return { dtype: dtype as ModelDType | undefined };
  try {
    const quantizationConfig = new BitsAndBytesConfig({
      loadIn4bit: four,
      loadIn8bit: eight,
      ...(quantType !== undefined ? { bnb4bitQuantType: quantType as never } : {}),
      ...(values['double-quant'] ? { bnb4bitUseDoubleQuant: true } : {}),
      ...(compute !== undefined ? { bnb4bitComputeDtype: compute as never } : {}),
    });
    return { dtype: dtype as ModelDType | undefined, quantizationConfig };
  } catch (e) {
    throw new Error(`${cmd}: ${(e as Error).message.replace(/^BitsAndBytesConfig: /, '')}`);
  }
}
