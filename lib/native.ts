// Loads the native addon once. node-gyp-build looks for a local build (build/Release) and
// then for a matching prebuild under prebuilds/; the error lists what was tried.
import { createRequire } from 'node:module';
import type { NativeBinding } from '../binding.js';
import { packageRoot } from './paths.js';

let binding: NativeBinding | undefined;

export function native(): NativeBinding {
  if (binding) return binding;
  const require = createRequire(import.meta.url);
  const load = require('node-gyp-build') as (dir: string) => NativeBinding;
  try {
    // NIBBLE_ADDON names a specific .node file (a second build folder, a GPU-host build).
    const explicit = process.env.NIBBLE_ADDON;
    binding = explicit ? (require(explicit) as NativeBinding) : load(packageRoot);
  } catch (err) {
    const e = new Error(
      `nibble: could not load its native addon from ${packageRoot} (${(err as Error).message}). ` +
        'No prebuilt binary matches this platform and no local build exists: run `npm rebuild nibble-llm` ' +
        '(needs cmake and a C++ compiler) to build it from source.',
    );
    (e as { cause?: unknown }).cause = err;
    throw e;
  }
  return binding;
}
