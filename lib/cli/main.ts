// The `nibble` command: one module per subcommand under ./commands, dispatched by name.
import { runCli } from './run.js';

runCli(process.argv.slice(2)).then(
  (code) => { process.exitCode = code; },
  (err: unknown) => {
    process.stderr.write(`nibble: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exitCode = 1;
  },
);
