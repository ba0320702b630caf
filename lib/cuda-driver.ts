// Is an NVIDIA driver with a GPU present? Answered from the file system alone, so the loader
// can choose between the CPU and CUDA binaries before loading either: the driver library
// (libcuda.so.1, which the statically linked CUDA runtime opens) and a GPU device node.
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

export interface DriverProbe {
  /** True when both the driver library and at least one GPU device were found. */
  usable: boolean;
  /** Path of libcuda.so.1, if found. */
  library?: string;
  /** GPU device nodes (/dev/nvidia0 ...) or WSL's /dev/dxg. */
  devices: string[];
  /** The kernel module's version line (/proc/driver/nvidia/version), if readable. */
  kernelModule?: string;
  /** One sentence: what was found or what is missing. */
  summary: string;
}

function libraryDirs(): string[] {
  const triplet = process.arch === 'arm64' ? 'aarch64-linux-gnu' : 'x86_64-linux-gnu';
  const fromEnv = (process.env.LD_LIBRARY_PATH ?? '').split(':').filter(Boolean);
  return [
    ...fromEnv,
    `/usr/lib/${triplet}`, '/usr/lib64', '/usr/lib', '/lib64', `/lib/${triplet}`,
    // Container runtimes, WSL and NixOS put the driver's user-space library here.
    '/usr/local/nvidia/lib64', '/usr/local/nvidia/lib', '/usr/lib/wsl/lib', '/run/opengl-driver/lib',
  ];
}

export function probeCudaDriver(): DriverProbe {
  if (process.platform !== 'linux') return { usable: false, devices: [], summary: `no CUDA prebuild for ${process.platform}` };
  const library = libraryDirs().map((d) => join(d, 'libcuda.so.1')).find((p) => existsSync(p));
  let devices: string[] = [];
  try {
    devices = readdirSync('/dev').filter((n) => /^nvidia\d+$/.test(n) || n === 'dxg').map((n) => `/dev/${n}`);
  } catch {
    devices = [];
  }
  let kernelModule: string | undefined;
  try {
    kernelModule = readFileSync('/proc/driver/nvidia/version', 'utf8').split('\n')[0].replace(/\s+/g, ' ').trim();
  } catch {
    kernelModule = undefined;
  }
  const usable = !!library && devices.length > 0;
  const summary = usable
    ? `NVIDIA driver found (${library}) with ${devices.length} GPU device node(s) (${devices.join(', ')})`
    : !library
      ? 'no NVIDIA driver library (libcuda.so.1) found'
      : `the NVIDIA driver library is present (${library}) but no GPU device node (/dev/nvidia0) is visible`;
  return { usable, library, devices, kernelModule, summary };
}
