// One downloader per blob: two processes (or two calls in one process) fetching the same
// file would append to the same .incomplete and corrupt it. The lock is a file created with
// O_EXCL next to huggingface_hub's own locks (<cache>/.locks/<repo folder>/); its holder
// touches it every few seconds, so a lock left by a killed process goes stale and is taken over.
import { mkdir, open, stat, unlink, utimes } from 'node:fs/promises';
import { dirname } from 'node:path';

const HEARTBEAT_MS = 2_000;
const STALE_MS = 15_000;
const POLL_MS = 100;

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/**
 * Runs `work` holding the lock at `path`. While another holder is alive, waits, calling
 * `done()` each poll: when it says the other holder finished the job, returns without running.
 */
export async function withFileLock<T>(path: string, done: () => Promise<boolean>, work: () => Promise<T>, signal?: AbortSignal): Promise<T | undefined> {
  await mkdir(dirname(path), { recursive: true });
  for (;;) {
    signal?.throwIfAborted();
    try {
      const fh = await open(path, 'wx');
      await fh.writeFile(`${process.pid}\n`);
      await fh.close();
      break;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
    if (await done()) return undefined;
    try {
      if (Date.now() - (await stat(path)).mtimeMs > STALE_MS) await unlink(path).catch(() => {});
    } catch {
      /* released between the two calls: try again at once */
      continue;
    }
    await sleep(POLL_MS);
  }
  const beat = setInterval(() => {
    const now = new Date();
    utimes(path, now, now).catch(() => {});
  }, HEARTBEAT_MS);
  beat.unref();
  try {
    return await work();
  } finally {
    clearInterval(beat);
    await unlink(path).catch(() => {});
  }
}
