// nibble inspect: the model's modules with their tensors, and totals.
import { AutoModelForCausalLM } from '../../models/auto.js';
import type { Module } from '../../nn/module.js';
import type { Tensor } from '../../tensor.js';
import { loadProgress } from '../progress.js';
import { parse, stringOption, type CliCommand } from '../args.js';
import { loadOptionsFromFlags, quantizationFlags, quantizationHelp } from '../quant-flags.js';

const help = `Usage: nibble inspect [options]

Prints every module of the model: name, type, dtype, shape, device and bytes, then totals.
With quantization flags, loads the model that way and prints its memory footprint next to
the unquantized float32 one (transformers' get_memory_footprint definition).

Options:
  --model <dir|id>        model folder or name (default: the embedded fortune-gpt2)
  --device <cpu|cuda:N>   where to load it (default cpu)
${quantizationHelp}
  -h, --help              show this help`;

export function formatBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${i ? n.toFixed(2) : n} ${units[i]}`;
}

export function moduleTable(modules: [string, Module][]): string {
  const rows: string[][] = [['module', 'type', 'dtype', 'shape', 'device', 'bytes']];
  const seen = new Set<Tensor>();
  let total = 0;
  let params = 0;
  for (const [name, m] of modules) {
    const tensors = Object.values({ ...m.tensors(), ...m.quantConstants() });
    const fresh = tensors.filter((t) => !seen.has(t));
    fresh.forEach((t) => seen.add(t));
    const bytes = fresh.reduce((a, t) => a + t.nbytes, 0);
    total += bytes;
    params += fresh.reduce((a, t) => a + t.numel, 0);
    const w = m.tensors().weight ?? tensors[0];
    const tied = w && !fresh.includes(w) ? ' (tied)' : '';
    rows.push([name, m.type, w?.dtype ?? '-', w ? `[${w.shape.join(', ')}]${tied}` : '-', w?.device ?? '-', String(bytes)]);
  }
  rows.push(['total', `${modules.length} modules`, '', `${params} elements`, '', `${total} (${formatBytes(total)})`]);
  const widths = rows[0]!.map((_, c) => Math.max(...rows.map((r) => r[c]!.length)));
  const line = (r: string[]) => r.map((v, c) => (c === r.length - 1 ? v.padStart(widths[c]!) : v.padEnd(widths[c]!))).join('  ').trimEnd();
  return [line(rows[0]!), widths.map((w) => '-'.repeat(w)).join('  '), ...rows.slice(1).map(line)].join('\n');
}

export const command: CliCommand = {
  name: 'inspect',
  help,
  async run(argv) {
    const { values, positionals } = parse('inspect', argv, { model: { type: 'string' }, device: { type: 'string' }, ...quantizationFlags });
    if (values.help) {
      process.stdout.write(help + '\n');
      return 0;
    }
    if (positionals.length) throw new Error(`inspect: unexpected argument '${positionals[0]}'`);
    const load = loadOptionsFromFlags('inspect', values);
    const id = stringOption(values.model);
    const model = await AutoModelForCausalLM.fromPretrained(id, { deviceMap: stringOption(values.device), noTokenizer: true, ...load, ...loadProgress() });
    process.stdout.write(moduleTable(model.namedModules()) + '\n');
    const after = model.getMemoryFootprint();
    const withConsts = model.getMemoryFootprint({ includeQuantConstants: true });
    model.dispose();
    if (load.quantizationConfig || load.dtype) {
      const base = await AutoModelForCausalLM.fromPretrained(id, { noTokenizer: true });
      const before = base.getMemoryFootprint();
      base.dispose();
      process.stdout.write(`\nmemory footprint: before ${before} bytes (${formatBytes(before)}, float32), after ${after} bytes (${formatBytes(after)}), ` +
        `${(before / after).toFixed(2)}x smaller; with quantization constants ${withConsts} bytes (${formatBytes(withConsts)})\n`);
    } else {
      process.stdout.write(`\nmemory footprint: ${after} bytes (${formatBytes(after)})\n`);
    }
    return 0;
  },
};
