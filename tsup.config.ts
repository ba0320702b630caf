import { defineConfig } from 'tsup';

// One bundle per entry, as ESM (.js) and CommonJS (.cjs); `shims` gives the CJS build a
// working import.meta.url, which lib/paths.ts uses to find the package root.
export default defineConfig([
  {
    entry: { index: 'lib/index.ts' },
    format: ['esm', 'cjs'],
    dts: true,
    shims: true,
    sourcemap: true,
    clean: true,
    target: 'node20',
    external: ['@huggingface/tokenizers', 'node-gyp-build'],
  },
  {
    entry: { cli: 'lib/cli/main.ts' },
    format: ['esm'],
    shims: true,
    sourcemap: true,
    target: 'node20',
    banner: { js: '#!/usr/bin/env node' },
    external: ['@huggingface/tokenizers', 'node-gyp-build'],
  },
]);
