// Subcommand table. Each command module exports `command: CliCommand`.
import type { CliCommand } from './args.js';

const commands: Record<string, () => Promise<{ command: CliCommand }>> = {
  generate: () => import('./commands/generate.js'),
  inspect: () => import('./commands/inspect.js'),
  info: () => import('./commands/info.js'),
  perplexity: () => import('./commands/perplexity.js'),
  quantize: () => import('./commands/quantize.js'),
};

function usage(): string {
  return [
    'Usage: nibble <command> [options]',
    '',
    'Commands:',
    ...Object.keys(commands).map((c) => `  ${c}`),
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
