// nibble info: which native binary loaded and why, the CUDA driver and GPUs, the CPU
// features the kernels can use, and where Hub downloads are cached.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { probeCudaDriver } from '../../cuda-driver.js';
import { envFlag, hubCacheDir, hubToken } from '../../io/hf-cache.js';
import { native, nativeLoadInfo } from '../../native.js';
import { packageRoot } from '../../paths.js';
import { parse, type CliCommand } from '../args.js';

const help = `Usage: nibble info [--json]

Prints which native binary variant was loaded (CUDA or CPU prebuild, local build) and why,
the CUDA driver version and GPUs with their memory, the CPU features the kernels can use,
and the Hugging Face cache folder that Hub downloads go to.

Options:
  --json       print the same facts as JSON
  -h, --help   show this help`;

function driverVersion(v: number): string {
  return v > 0 ? `${Math.floor(v / 1000)}.${Math.floor((v % 1000) / 10)}` : 'unknown';
}

const gib = (n: number) => `${(n / 2 ** 30).toFixed(1)} GiB`;

/** Everything `nibble info` reports, as data (the CLI prints it; tests read it). */
export function collectInfo() {
  const load = nativeLoadInfo();
  const n = native().info();
  const driver = probeCudaDriver();
  let version = 'unknown';
  try {
    version = (JSON.parse(readFileSync(join(packageRoot, 'package.json'), 'utf8')) as { version: string }).version;
  } catch {
    /* a bundled copy without package.json still reports the rest */
  }
  return {
    nibble: version,
    node: process.version,
    platform: `${process.platform}-${process.arch}`,
    binary: { variant: load.variant, path: load.path, reason: load.reason, tried: load.tried, warning: load.warning ?? null },
    cuda: {
      compiledIn: n.cudaCompiled,
      driverLibrary: driver.library ?? null,
      kernelModule: driver.kernelModule ?? null,
      driverVersion: n.cudaDriverVersion > 0 ? driverVersion(n.cudaDriverVersion) : null,
      deviceCount: n.cudaDeviceCount,
      unavailableReason: n.cudaUnavailableReason || null,
      gpus: n.gpus.map((g) => ({ device: `cuda:${g.index}`, name: g.name, totalMemory: g.totalMemory })),
    },
    cpu: { features: n.cpuFeatures.split(' ').filter((f) => f && f !== 'none'), threads: n.threads },
    hub: {
      cacheDir: hubCacheDir(),
      endpoint: process.env.HF_ENDPOINT || 'https://huggingface.co',
      offline: envFlag('HF_HUB_OFFLINE'),
      // Whether a token is configured, never the token.
      token: hubToken() ? 'set' : 'not set',
    },
  };
}

function format(i: ReturnType<typeof collectInfo>): string {
  const variant = { cuda: 'CUDA prebuild', cpu: 'CPU prebuild', local: 'local build', explicit: 'NIBBLE_ADDON' }[i.binary.variant];
  const lines = [
    `nibble-llm ${i.nibble} on Node.js ${i.node} (${i.platform})`,
    '',
    `binary    ${variant}: ${i.binary.path}`,
    `  why     ${i.binary.reason}`,
    ...i.binary.tried.map((t) => `  skipped ${t}`),
    ...(i.binary.warning ? [`  warning ${i.binary.warning}`] : []),
    '',
    `CUDA      ${i.cuda.compiledIn ? 'compiled into this binary' : 'not in this binary (CPU build)'}`,
    `  driver  ${i.cuda.driverVersion ? `CUDA ${i.cuda.driverVersion}` : i.cuda.driverLibrary ? 'library present' : 'none found'}` +
      `${i.cuda.kernelModule ? ` (${i.cuda.kernelModule})` : ''}${i.cuda.driverLibrary ? `, ${i.cuda.driverLibrary}` : ''}`,
    ...(i.cuda.gpus.length
      ? i.cuda.gpus.map((g) => `  ${g.device.padEnd(7)} ${g.name}, ${gib(g.totalMemory)}`)
      : [`  GPUs    none${i.cuda.unavailableReason ? ` (${i.cuda.unavailableReason})` : ''}`]),
    '',
    `CPU       ${i.cpu.features.join(' ') || 'no SIMD extensions detected'} (kernels pick their widest path at run time), ${i.cpu.threads} threads`,
    `  AVX-512 ${i.cpu.features.includes('avx512f') ? 'yes' : 'no'}, VNNI ${i.cpu.features.includes('avx512vnni') ? 'yes' : 'no'}`,
    '',
    `Hub cache ${i.hub.cacheDir}`,
    `  endpoint ${i.hub.endpoint}${i.hub.offline ? ' (offline: HF_HUB_OFFLINE)' : ''}, token ${i.hub.token}`,
  ];
  return lines.join('\n');
}

export const command: CliCommand = {
  name: 'info',
  help,
  async run(argv) {
    const { values, positionals } = parse('info', argv, { json: { type: 'boolean' } });
    if (values.help) {
      process.stdout.write(help + '\n');
      return 0;
    }
    if (positionals.length) throw new Error(`info: unexpected argument '${positionals[0]}'`);
    const info = collectInfo();
    process.stdout.write((values.json ? JSON.stringify(info, null, 2) : format(info)) + '\n');
    return 0;
  },
};
