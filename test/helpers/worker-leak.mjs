// Child process for test/worker-threads.test.ts: Workers that each load the embedded model
// (fortune-gpt2, ~31 MB of float32 weights), generate a few tokens and exit without
// dispose(). Prints one JSON line: the process's RSS (MB) after the 2nd and after the 12th.
import { Worker, isMainThread } from 'node:worker_threads';

const dist = new URL('../../dist/index.js', import.meta.url).href;

if (isMainThread) {
  const rss = () => process.memoryUsage().rss / 1e6;
  const marks = [];
  for (let i = 0; i < 12; i++) {
    await new Promise((resolve, reject) => {
      const w = new Worker(new URL(import.meta.url));
      w.on('error', reject);
      w.on('exit', (code) => (code === 0 ? resolve() : reject(new Error(`worker exited with ${code}`))));
    });
    if (i === 1 || i === 11) marks.push(rss());
  }
  process.stdout.write(JSON.stringify({ after2: marks[0], after12: marks[1] }) + '\n');
} else {
  const { AutoModelForCausalLM } = await import(dist);
  const model = await AutoModelForCausalLM.fromPretrained(undefined, { noTokenizer: true });
  await model.generate([[1, 2, 3]], { maxNewTokens: 4, doSample: false }); // makes the CPU plan
  // no dispose(): the Worker's exit must release what the plan holds
}
