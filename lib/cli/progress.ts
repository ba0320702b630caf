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
