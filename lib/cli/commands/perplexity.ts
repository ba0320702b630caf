// nibble perplexity: exp(mean NLL) of a model over a text file.
import { readFileSync } from 'node:fs';
import { perplexity } from '../../evaluation/perplexity.js';
import { AutoModelForCausalLM } from '../../models/auto.js';
import { numberOption, parse, stringOption, type CliCommand } from '../args.js';
import { loadProgress, progressBar } from '../progress.js';
import { loadOptionsFromFlags, quantizationFlags, quantizationHelp } from '../quant-flags.js';

const help = `Usage: nibble perplexity --file text.txt [options]

Tokenizes the whole file, splits it into non-overlapping windows of n_positions tokens
(dropping the last partial one), predicts tokens 2..n of each window from their prefix and
prints exp(mean NLL) with the token count.

Options:
  --file <path>           text to score (required)
  --model <dir|id>        model folder or name (default: the embedded fortune-gpt2)
  --window <N>            window size (default: the model's n_positions)
  --device <cpu|cuda:N>   where to run (default cpu)
${quantizationHelp}
  -h, --help              show this help`;

export const command: CliCommand = {
  name: 'perplexity',
  help,
  async run(argv) {
    const { values, positionals } = parse('perplexity', argv, {
      file: { type: 'string' }, model: { type: 'string' }, window: { type: 'string' }, device: { type: 'string' }, ...quantizationFlags,
    });
    if (values.help) {
      process.stdout.write(help + '\n');
      return 0;
    }
    if (positionals.length) throw new Error(`perplexity: unexpected argument '${positionals[0]}'`);
    const file = stringOption(values.file);
    if (!file) throw new Error('perplexity: --file is required');
    let text: string;
    try {
      text = readFileSync(file, 'utf8');
    } catch (e) {
      throw new Error(`perplexity: cannot read ${file}: ${(e as Error).message}`);
    }
    const windowSize = numberOption('perplexity', 'window', values.window, { int: true, min: 2 });
    const model = await AutoModelForCausalLM.fromPretrained(stringOption(values.model), {
      deviceMap: stringOption(values.device), ...loadOptionsFromFlags('perplexity', values), ...loadProgress(),
    });
    if (!model.tokenizer) throw new Error(`perplexity: ${model.modelDir} has no tokenizer files`);
    const ids = model.tokenizer.encode(text);
    const bar = progressBar('perplexity');
    const r = await perplexity(model, ids, { windowSize, onProgress: (p) => bar.update(p.window, p.windows) });
    process.stdout.write(`perplexity ${r.perplexity.toFixed(4)} over ${r.predictedTokens} predicted tokens (${r.windows} windows of ${r.windowSize}; ${r.totalTokens} tokens in the file)\n`);
    model.dispose();
    return 0;
  },
};
