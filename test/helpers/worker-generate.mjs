// Child process for test/worker-threads.test.ts: nibble (the built package, dist/) used from
// worker_threads Workers. The main thread does not load nibble until the end, so the addon's
// last environment closes whenever the workers exit; then a second round of workers loads it
// again. Prints one JSON line: every worker's and the main thread's generated token ids.
// NIBBLE_WORKER_TEST_DEVICE=cuda:0 runs the models on the GPU, where the three concurrent
// Workers race for CUDA: one wins, the others report the error (one thread uses the GPU).
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('../../', import.meta.url));
const dist = new URL('../../dist/index.js', import.meta.url).href;

async function generate() {
  const { AutoModelForCausalLM, BitsAndBytesConfig } = await import(dist);
  const device = process.env.NIBBLE_WORKER_TEST_DEVICE; // e.g. cuda:0 (bench/gpu runs it on the GPU host)
  const model = await AutoModelForCausalLM.fromPretrained(`${root}test/fixtures/tiny-random-gpt2`, {
    noTokenizer: true,
    ...(device ? { deviceMap: { '': device } } : {}),
    quantizationConfig: new BitsAndBytesConfig({ loadIn4bit: true, bnb4bitQuantType: 'nf4', bnb4bitUseDoubleQuant: true }),
  });
  let out;
  for (let r = 0; r < 5; r++) out = await model.generate([[1, 2, 3], [7, 8, 9]], { maxNewTokens: 20, doSample: false });
  model.dispose();
  return out;
}

function runWorker(i) {
  return new Promise((resolve, reject) => {
    const w = new Worker(new URL(import.meta.url), { workerData: { i } });
    let result;
    w.on('message', (m) => (result = m));
    w.on('error', reject);
    w.on('exit', (code) => (code === 0 ? resolve(result) : reject(new Error(`worker ${i} exited with ${code}`))));
  });
}

if (isMainThread) {
  const first = await Promise.all([0, 1, 2].map(runWorker)); // concurrently
  const second = await runWorker(3); // after every earlier worker has exited
  const main = await generate();
  process.stdout.write(JSON.stringify({ workers: [...first, second], main }) + '\n');
} else if (process.env.NIBBLE_WORKER_TEST_DEVICE) {
  // On a GPU one thread at a time may use CUDA: a Worker refused reports the error instead.
  try {
    parentPort.postMessage(await generate());
  } catch (e) {
    parentPort.postMessage({ error: String(e.message ?? e) });
  }
} else {
  parentPort.postMessage(await generate());
}
