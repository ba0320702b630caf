// The Hugging Face cache layout, shared with Python's huggingface_hub so that a model
// downloaded by either is found by the other:
//   <cache>/models--<org>--<name>/blobs/<etag>            file contents, named by server hash
//   <cache>/models--<org>--<name>/refs/<revision>         commit hash the revision pointed to
//   <cache>/models--<org>--<name>/snapshots/<commit>/<f>  relative symlink to ../../blobs/<etag>
//   <cache>/.locks/models--<org>--<name>/                  download locks
// Only paths and small files here; the network lives in hub.ts / hub-download.ts.
import { existsSync, readFileSync, statSync } from 'node:fs';
import { copyFile, lstat, mkdir, readFile, rename, rm, symlink, writeFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import { dirname, join, relative, resolve, sep } from 'node:path';

const TRUE_VALUES = new Set(['1', 'ON', 'YES', 'TRUE']);

/** Python's `_is_true` for environment switches such as HF_HUB_OFFLINE. */
export function envFlag(name: string): boolean {
  const v = process.env[name];
  return v !== undefined && TRUE_VALUES.has(v.trim().toUpperCase());
}

/** $HF_HOME, else $XDG_CACHE_HOME/huggingface, else ~/.cache/huggingface (as huggingface_hub). */
export function hfHome(): string {
  if (process.env.HF_HOME) return resolve(expandHome(process.env.HF_HOME));
  const xdg = process.env.XDG_CACHE_HOME ? expandHome(process.env.XDG_CACHE_HOME) : join(homedir(), '.cache');
  return resolve(xdg, 'huggingface');
}

/** $HF_HUB_CACHE (or the legacy $HUGGINGFACE_HUB_CACHE), else $HF_HOME/hub. */
export function hubCacheDir(): string {
  const explicit = process.env.HF_HUB_CACHE || process.env.HUGGINGFACE_HUB_CACHE;
  return explicit ? resolve(expandHome(explicit)) : join(hfHome(), 'hub');
}

/**
 * The token from $HF_TOKEN (or the legacy $HUGGING_FACE_HUB_TOKEN), else the file `hf auth
 * login` writes ($HF_TOKEN_PATH or $HF_HOME/token). Callers put it in a header and nowhere else.
 */
export function hubToken(): string | undefined {
  const env = process.env.HF_TOKEN || process.env.HUGGING_FACE_HUB_TOKEN;
  if (env && env.trim()) return env.trim();
  const path = process.env.HF_TOKEN_PATH ? expandHome(process.env.HF_TOKEN_PATH) : join(hfHome(), 'token');
  try {
    const t = readFileSync(path, 'utf8').trim();
    return t || undefined;
  } catch {
    return undefined;
  }
}

function expandHome(p: string): string {
  return p === '~' || p.startsWith('~/') ? join(homedir(), p.slice(1)) : p;
}

export const COMMIT_HASH = /^[0-9a-f]{40}$/;

/** One repository's folder in the cache, and the files in it. */
export class RepoCache {
  readonly root: string;

  readonly folder: string;

  constructor(readonly cacheDir: string, readonly repoId: string) {
    this.folder = `models--${repoId.replace(/\//g, '--')}`;
    this.root = join(cacheDir, this.folder);
  }

  /** Our download lock for a blob, beside huggingface_hub's `.locks/<repo>/<etag>.lock` (a different name: Python's are flock()ed and left behind). */
  lockPath(etag: string): string {
    return join(this.cacheDir, '.locks', this.folder, `${etag}.nibble.lock`);
  }

  blobPath(etag: string): string {
    return join(this.root, 'blobs', etag);
  }

  /** Where a download in progress lives: never a name a reader would take for a finished blob. */
  incompletePath(etag: string): string {
    return this.blobPath(etag) + '.incomplete';
  }

  snapshotDir(commit: string): string {
    return join(this.root, 'snapshots', commit);
  }

  snapshotFile(commit: string, file: string): string {
    return join(this.snapshotDir(commit), ...file.split('/'));
  }

  /** The commit a branch or tag pointed to when last seen online, or the commit itself. */
  commitFor(revision: string): string | undefined {
    if (COMMIT_HASH.test(revision)) return revision;
    try {
      const c = readFileSync(join(this.root, 'refs', ...revision.split('/')), 'utf8').trim();
      return COMMIT_HASH.test(c) ? c : undefined;
    } catch {
      return undefined;
    }
  }

  async writeRef(revision: string, commit: string): Promise<void> {
    if (revision === commit) return;
    const path = join(this.root, 'refs', ...revision.split('/'));
    await mkdir(dirname(path), { recursive: true });
    let current: string | undefined;
    try {
      current = (await readFile(path, 'utf8')).trim();
    } catch {
      current = undefined;
    }
    if (current === commit) return;
    const tmp = `${path}.${process.pid}.tmp`;
    await writeFile(tmp, commit);
    await rename(tmp, path);
  }

  /** True when the snapshot entry exists and resolves to a file (a dangling link is not a hit). */
  hasFile(commit: string, file: string): boolean {
    try {
      return statSync(this.snapshotFile(commit, file)).isFile();
    } catch {
      return false;
    }
  }

  /**
   * Points snapshots/<commit>/<file> at blobs/<etag> with a relative symlink, as
   * huggingface_hub does; where symlinks are not allowed the blob is copied instead.
   */
  async linkSnapshot(commit: string, file: string, etag: string): Promise<string> {
    const dst = this.snapshotFile(commit, file);
    const blob = this.blobPath(etag);
    await mkdir(dirname(dst), { recursive: true });
    await rm(dst, { force: true });
    try {
      await symlink(relative(dirname(dst), blob), dst);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'EEXIST') return dst;
      const tmp = `${dst}.${process.pid}.tmp`;
      await copyFile(blob, tmp);
      await rename(tmp, dst);
    }
    return dst;
  }

  async blobExists(etag: string): Promise<boolean> {
    try {
      return (await lstat(this.blobPath(etag))).isFile();
    } catch {
      return false;
    }
  }
}

/** Rejects repository file names that would escape the snapshot folder. */
export function checkRepoFileName(file: string): void {
  const parts = file.split('/');
  if (!file || file.startsWith('/') || file.includes('\\') || file.includes(sep === '\\' ? ':' : '\0') ||
      parts.some((p) => p === '' || p === '.' || p === '..'))
    throw new Error(`invalid file name in repository: '${file}'`);
}

export function isDirectory(path: string): boolean {
  try {
    return existsSync(path) && statSync(path).isDirectory();
  } catch {
    return false;
  }
}
