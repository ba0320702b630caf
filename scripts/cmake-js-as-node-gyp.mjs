#!/usr/bin/env node
// prebuildify drives node-gyp (`node-gyp rebuild --target=.. --devdir=.. --arch=.. --release`);
// this stands in for it so prebuildify builds with cmake-js from CMakeLists.txt instead.
// Extra CMake options come from NIBBLE_CMAKE_ARGS (set by scripts/prebuild.mjs). The addon
// lands in ./build/Release, where prebuildify looks for it. `compile` rather than `rebuild`:
// a repeated prebuild only recompiles what changed.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';

const args = process.argv.slice(2);
if (args[0] !== 'rebuild') {
  console.error(`cmake-js-as-node-gyp: only 'rebuild' is supported, got '${args.join(' ')}'`);
  process.exit(2);
}
const opt = (name) => args.find((a) => a.startsWith(`--${name}=`))?.split('=')[1];
const require = createRequire(`${process.cwd()}/`);
const cmakeJs = require.resolve('cmake-js/bin/cmake-js');
const cmd = [cmakeJs, 'compile', '--out', 'build', ...(opt('arch') ? ['--arch', opt('arch')] : []),
  ...(args.includes('--debug') ? ['--debug'] : []),
  ...(process.env.NIBBLE_CMAKE_ARGS ?? '').split(/\s+/).filter(Boolean)];
console.log(`cmake-js ${cmd.slice(1).join(' ')}`);
// cmake-js downloads Node's headers unless told where they are (npm passes its `nodedir`
// setting); the running Node's own headers avoid a network fetch when it ships them.
const env = { ...process.env };
const prefix = dirname(dirname(process.execPath));
if (!env.npm_config_nodedir && existsSync(join(prefix, 'include', 'node', 'node_api.h'))) env.npm_config_nodedir = prefix;
const r = spawnSync(process.execPath, cmd, { stdio: 'inherit', env });
process.exit(r.status ?? 1);
