// Subcommand table. Each command module exports `command: CliCommand`.
import type { CliCommand } from './args.js';

const commands: Record<string, () => Promise<{ command: CliCommand }>> = {
  generate: () => import('./commands/generate.js'),
  inspect: () => import('./commands/inspect.js'),
  info: () => import('./commands/info.js'),
  perplexity: () => import('./commands/perplexity.js'),
  quantize: () => import('./commands/quantize.js'),
};

const SUMMARIES: Record<string, string> = {
  generate: 'stream a continuation of a prompt',
  inspect: 'list the modules, dtypes, shapes and memory footprint of a model',
  info: 'which native binary loaded and why; GPUs, CPU features, Hub cache',
  perplexity: 'exp(mean NLL) of a model over a text file',
  quantize: 'save a checkpoint quantized to 4 or 8 bits (transformers + bitsandbytes format)',
};

function usage(): string {
  return [
    'Usage: nibble <command> [options]',
    '',
    'Commands:',
    ...Object.keys(commands).map((c) => `  ${c.padEnd(11)} ${SUMMARIES[c] ?? ''}`.trimEnd()),
    '',
    'Run `nibble <command> --help` for a command\'s options.',
  ].join('\n');
}

export async function runCli(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (!name || name === '--help' || name === '-h' || name === 'help') {
    process.stdout.write(usage() + '\n');
    return name ? 0 : 1;
  }
  const load = commands[name];
  if (!load) throw new Error(`unknown command '${name}'. ${usage()}`);
  const { command } = await load();
  return command.run(rest);
}
