// nibble quantize <in> <out>: load a checkpoint quantized on the fly and save it in the
// transformers + bitsandbytes serialized format (loadable by both).
import { AutoModelForCausalLM } from '../../models/auto.js';
import { parse, stringOption, type CliCommand } from '../args.js';
import { loadProgress } from '../progress.js';
import { loadOptionsFromFlags, quantizationFlags, quantizationHelp } from '../quant-flags.js';
import { formatBytes } from './inspect.js';

const help = `Usage: nibble quantize <in> <out> --load-in-4bit|--load-in-8bit [options]

Loads the checkpoint <in> (a folder or a name), quantizing its Linear layers while loading,
and writes <out> in the transformers + bitsandbytes format (config.json with
quantization_config, model.safetensors, tokenizer and generation files). Files are written
to temporaries and renamed at the end: a failure leaves no partial checkpoint.

Options:
${quantizationHelp}
  -h, --help              show this help`;

export const command: CliCommand = {
  name: 'quantize',
  help,
  async run(argv) {
    const { values, positionals } = parse('quantize', argv, { ...quantizationFlags });
    if (values.help) {
      process.stdout.write(help + '\n');
      return 0;
    }
    if (positionals.length !== 2) throw new Error(`quantize: expected <in> <out>, got ${positionals.length} argument(s)`);
    const [input, output] = positionals as [string, string];
    const load = loadOptionsFromFlags('quantize', values);
    if (!load.quantizationConfig) throw new Error('quantize: give --load-in-4bit or --load-in-8bit');
    const model = await AutoModelForCausalLM.fromPretrained(input, { ...load, ...loadProgress(true) });
    await model.savePretrained(output);
    const bytes = model.getMemoryFootprint();
    model.dispose();
    process.stdout.write(`wrote ${output} (${formatBytes(bytes)} of parameters)\n`);
    return 0;
  },
};
