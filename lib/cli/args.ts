// Shared CLI plumbing: option parsing with node:util parseArgs (strict, so a typo is an
// error, not a silently ignored flag) and number parsing with clear messages.
import { parseArgs, type ParseArgsConfig } from 'node:util';

export interface CliCommand {
  name: string;
  /** Full --help text. */
  help: string;
  run(argv: string[]): Promise<number>;
}

export type Options = NonNullable<ParseArgsConfig['options']>;
export interface Parsed {
  values: Record<string, string | boolean | undefined>;
  positionals: string[];
}

const helpOption = { help: { type: 'boolean', short: 'h' } } as const;

export function parse(cmd: string, argv: string[], options: Options): Parsed {
  try {
    return parseArgs({ args: argv, options: { ...options, ...helpOption }, allowPositionals: true, strict: true }) as Parsed;
  } catch (e) {
    throw new Error(`${cmd}: ${(e as Error).message}`);
  }
}

export function stringOption(value: string | boolean | undefined): string | undefined {
  return typeof value === 'string' ? value : undefined;
}

export function numberOption(cmd: string, name: string, value: string | boolean | undefined, opts: { int?: boolean; min?: number; max?: number } = {}): number | undefined {
  if (value === undefined) return undefined;
  const n = typeof value === 'string' && value.trim() !== '' ? Number(value) : NaN;
  if (!Number.isFinite(n) || (opts.int && !Number.isInteger(n)))
    throw new Error(`${cmd}: --${name} must be ${opts.int ? 'an integer' : 'a number'}, got '${value}'`);
  if (opts.min !== undefined && n < opts.min) throw new Error(`${cmd}: --${name} must be >= ${opts.min}, got ${n}`);
  if (opts.max !== undefined && n > opts.max) throw new Error(`${cmd}: --${name} must be <= ${opts.max}, got ${n}`);
  return n;
}
