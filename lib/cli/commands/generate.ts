// nibble generate: stream a continuation of a prompt to stdout.
import { AutoModelForCausalLM } from '../../models/auto.js';
import { loadProgress } from '../progress.js';
import { numberOption, parse, stringOption, type CliCommand } from '../args.js';
import { loadOptionsFromFlags, quantizationFlags, quantizationHelp } from '../quant-flags.js';

const help = `Usage: nibble generate [prompt] [options]

Streams a continuation of the prompt to stdout. Without a prompt the model starts from
<|endoftext|> (an unconditional sample). Samples with temperature 0.8 and top-p 0.95 unless
--greedy or other sampling options are given.

Options:
  --model <dir|id>        model folder or name (default: the embedded fortune-gpt2)
  --max-new-tokens <N>    tokens to generate (default 64)
  --temperature <T>       sampling temperature (> 0)
  --top-k <K>             keep the K most likely tokens
  --top-p <P>             nucleus sampling threshold (0 < P <= 1)
  --seed <S>              seed for reproducible sampling
  --greedy                always take the most likely token
  --device <cpu|cuda:N>   where to run (default cpu)
${quantizationHelp}
  -h, --help              show this help`;

export const command: CliCommand = {
  name: 'generate',
  help,
  async run(argv) {
    const { values, positionals } = parse('generate', argv, {
      model: { type: 'string' },
      'max-new-tokens': { type: 'string' },
      temperature: { type: 'string' },
      'top-k': { type: 'string' },
      'top-p': { type: 'string' },
      seed: { type: 'string' },
      greedy: { type: 'boolean' },
      device: { type: 'string' },
      ...quantizationFlags,
    });
    if (values.help) {
      process.stdout.write(help + '\n');
      return 0;
    }
    if (positionals.length > 1) throw new Error(`generate: expected one prompt, got ${positionals.length} (quote the prompt)`);
    const maxNewTokens = numberOption('generate', 'max-new-tokens', values['max-new-tokens'], { int: true, min: 1 }) ?? 64;
    const temperature = numberOption('generate', 'temperature', values.temperature, { min: Number.MIN_VALUE });
    const topK = numberOption('generate', 'top-k', values['top-k'], { int: true, min: 1 });
    const topP = numberOption('generate', 'top-p', values['top-p'], { min: Number.MIN_VALUE, max: 1 });
    const seed = numberOption('generate', 'seed', values.seed, { int: true, min: 0 });
    const sampling = temperature !== undefined || topK !== undefined || topP !== undefined;
    if (values.greedy && sampling) throw new Error('generate: --greedy cannot be combined with --temperature, --top-k or --top-p');

    const model = await AutoModelForCausalLM.fromPretrained(stringOption(values.model), {
      deviceMap: stringOption(values.device), ...loadOptionsFromFlags('generate', values), ...loadProgress(),
    });
    const tokenizer = model.tokenizer;
    if (!tokenizer) throw new Error(`generate: ${model.modelDir} has no tokenizer files`);
    const prompt = positionals[0] ?? '';
    const ids = prompt ? tokenizer.encode(prompt) : [model.config.bosTokenId ?? model.config.eosTokenId ?? 0];
    const options = values.greedy
      ? { maxNewTokens, doSample: false }
      : { maxNewTokens, doSample: true, temperature: temperature ?? (sampling ? undefined : 0.8), topK, topP: topP ?? (sampling ? undefined : 0.95), seed };
    process.stdout.write(prompt);
    for await (const piece of model.stream(ids, options)) process.stdout.write(piece.text);
    process.stdout.write('\n');
    model.dispose();
    return 0;
  },
};
