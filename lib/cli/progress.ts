// A one-line progress bar on stderr (redrawn in place on a terminal, a line per 10% otherwise,
// so logs stay short). Stdout stays clean for the command's real output.
export function progressBar(label: string, stream: NodeJS.WriteStream = process.stderr) {
  const start = Date.now();
  let lastDecile = -1;
  return {
    update(done: number, total: number, extra = '') {
      const frac = total > 0 ? Math.min(1, done / total) : 1;
      const secs = ((Date.now() - start) / 1000).toFixed(1);
      if (stream.isTTY) {
        const width = 30;
        const fill = Math.round(frac * width);
        stream.write(`\r${label} [${'#'.repeat(fill)}${'.'.repeat(width - fill)}] ${done}/${total} ${secs}s ${extra}`.padEnd(80));
        if (done >= total) stream.write('\n');
      } else {
        const decile = Math.floor(frac * 10);
        if (decile !== lastDecile) {
          lastDecile = decile;
          stream.write(`${label} ${Math.round(frac * 100)}% (${done}/${total}, ${secs}s) ${extra}\n`);
        }
      }
    },
  };
}

/**
 * Progress callbacks for fromPretrained: a bar per downloaded file and one for loading
 * (layers read / quantized). Drawn only on a terminal unless `always`, so piped output of
 * `nibble generate` stays just the text.
 */
export function loadProgress(always = false) {
  if (!always && !process.stderr.isTTY) return {};
  const files = new Map<string, ReturnType<typeof progressBar>>();
  const load = progressBar('load');
  return {
    onDownloadProgress(p: { file: string; loaded: number; total: number }) {
      let bar = files.get(p.file);
      if (!bar) files.set(p.file, (bar = progressBar(`download ${p.file}`)));
      bar.update(Math.round(p.loaded / 1024), Math.max(1, Math.round(p.total / 1024)), 'KiB');
    },
    onProgress(p: { done: number; total: number }) {
      load.update(p.done, p.total);
    },
  };
}
