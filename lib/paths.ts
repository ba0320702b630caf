// Locations inside the installed package. This file sits one folder below the package root
// both as source (lib/paths.ts) and when bundled (dist/*.js), so the root is its parent.
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export const packageRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..');
export const embeddedModelsDir = resolve(packageRoot, 'models');
