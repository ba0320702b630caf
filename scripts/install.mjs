#!/usr/bin/env node
// The package's install script. A matching prebuilt binary (prebuilds/<platform>-<arch>/) or
// an existing local build means there is nothing to do; otherwise the addon is built from
// source with cmake-js (CMakeLists.txt; CUDA kernels too when nvcc is present). npm 11 skips
// dependencies' install scripts unless approved, so an installed nibble-llm must work from
// its prebuilds alone; this script is the source fallback (`npm rebuild nibble-llm`).
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const platform = `${process.platform}-${process.arch}`;
const prebuilt = join(root, 'prebuilds', platform);
const hasPrebuild = existsSync(prebuilt) && readdirSync(prebuilt).some((f) => f.endsWith('.node'));
const hasLocal = existsSync(join(root, 'build', 'Release', 'nibble.node'));
const force = process.env.NIBBLE_BUILD_FROM_SOURCE === '1' || process.env.npm_config_build_from_source === 'true';

if ((hasPrebuild || hasLocal) && !force) process.exit(0);

const require = createRequire(join(root, 'package.json'));
let cmakeJs;
try {
  cmakeJs = require.resolve('cmake-js/bin/cmake-js');
} catch {
  console.error('nibble-llm: no prebuilt binary for ' + platform + ' and cmake-js is not installed to build one.');
  process.exit(1);
}
// cmake-js would download Node's headers; the running Node's own headers avoid that.
const env = { ...process.env };
const prefix = dirname(dirname(process.execPath));
if (!env.npm_config_nodedir && existsSync(join(prefix, 'include', 'node', 'node_api.h'))) env.npm_config_nodedir = prefix;
console.error(`nibble-llm: no prebuilt binary for ${platform}; building from source with cmake-js`);
const r = spawnSync(process.execPath, [cmakeJs, 'compile', '--out', 'build'], { cwd: root, stdio: 'inherit', env });
if (r.status !== 0) {
  console.error(
    `nibble-llm: the source build failed. It needs cmake (>= 3.18) and a C++17 compiler (nvcc optional, for CUDA).\n` +
      `Install them and run \`npm rebuild nibble-llm\`, or use a platform with prebuilt binaries (${platform} has none in this package).`,
  );
  process.exit(r.status ?? 1);
}
