// nibble from worker_threads Workers (test/helpers/worker-generate.mjs, run as a child
// process on the built package): concurrent Workers, a Worker loading the addon again after
// every earlier one has exited, and the process exiting cleanly. Before the addon pinned
// itself in memory, a Worker's exit unloaded it under its own threads (a segfault in about
// half the runs), and two Workers creating tensors at once raced on the handle constructor.
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { AutoModelForCausalLM } from '../lib/models/auto.js';
import { BitsAndBytesConfig } from '../lib/quantization/bitsandbytes-config.js';
import { native } from '../lib/native.js';

const run = promisify(execFile);
const script = new URL('./helpers/worker-generate.mjs', import.meta.url);
const dist = new URL('../dist/index.js', import.meta.url);
const hasGpu = native().info().cudaDeviceCount > 0;

async function expected(): Promise<number[][]> {
  const model = await AutoModelForCausalLM.fromPretrained('test/fixtures/tiny-random-gpt2', {
    noTokenizer: true,
    quantizationConfig: new BitsAndBytesConfig({ loadIn4bit: true, bnb4bitQuantType: 'nf4', bnb4bitUseDoubleQuant: true }),
  });
  try {
    return await model.generate([[1, 2, 3], [7, 8, 9]], { maxNewTokens: 20, doSample: false });
  } finally {
    model.dispose();
  }
}

describe('worker threads', () => {
  it('Workers generate what the main thread does, and the process exits cleanly (5 runs)', async () => {
    expect(existsSync(dist), 'dist/ is missing: `npm install` (or `npm run build:ts`) builds it').toBe(true);
    const want = await expected();
    for (let r = 0; r < 5; r++) {
      // A crash is a rejected promise here (a signal or a non-zero exit), with the child's stderr.
      const { stdout } = await run(process.execPath, [script.pathname], { timeout: 60_000 });
      const got = JSON.parse(stdout.trim()) as { workers: number[][][]; main: number[][] };
      expect(got.workers).toHaveLength(4);
      for (const w of got.workers) expect(w).toEqual(want);
      expect(got.main).toEqual(want);
    }
  }, 120_000);

  it('a Worker exiting without dispose() releases its models (10 Workers, RSS flat)', async () => {
    // Each Worker's fortune-gpt2 plan kept ~31 MB registered for the life of the process
    // before environments released their CPU plans on exit (a ~310 MB climb here).
    const { stdout } = await run(process.execPath, [new URL('./helpers/worker-leak.mjs', import.meta.url).pathname], {
      timeout: 60_000,
    });
    const { after2, after12 } = JSON.parse(stdout.trim()) as { after2: number; after12: number };
    expect(after12 - after2, `RSS ${after2.toFixed(0)} -> ${after12.toFixed(0)} MB`).toBeLessThan(100);
  }, 120_000);

  // One thread at a time uses CUDA (native/bindings/tensor_bindings.cc, claim_gpu): of three
  // concurrent Workers one runs on the GPU and the others get an error naming the rule; a
  // Worker started after they exit, and then the main thread, get the GPU in turn.
  it.skipIf(!hasGpu)('on a GPU, one thread at a time: the others are refused with a clear error', async () => {
    const want = await expected(); // greedy tokens: CUDA = CPU in float32 compute
    const { stdout } = await run(process.execPath, [script.pathname], {
      timeout: 60_000,
      env: { ...process.env, NIBBLE_WORKER_TEST_DEVICE: 'cuda:0' },
    });
    const got = JSON.parse(stdout.trim()) as { workers: (number[][] | { error: string })[]; main: number[][] };
    const first = got.workers.slice(0, 3);
    expect(first.filter((w) => !('error' in w)).length).toBeGreaterThanOrEqual(1);
    for (const w of first) {
      if ('error' in w) expect(w.error).toMatch(/CUDA is in use by another thread of this process/);
      else expect(w).toEqual(want);
    }
    expect(got.workers[3]).toEqual(want);
    expect(got.main).toEqual(want);
  }, 120_000);
});
