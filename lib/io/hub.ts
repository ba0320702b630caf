// Turns what a user names a model by ('fortune-gpt2', a folder, 'gpt2', 'org/name') into a
// local folder holding config, tokenizer and safetensors files. Hub models go through the
// cache huggingface_hub uses (hf-cache.ts), one verified file at a time (hub-download.ts).
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { embeddedModelsDir } from '../paths.js';
import { withFileLock } from './blob-lock.js';
import { COMMIT_HASH, RepoCache, checkRepoFileName, envFlag, hubCacheDir, hubToken, isDirectory } from './hf-cache.js';
import { type HubContext, type HubProgress, HubHttpError, downloadBlob, fileMeta, httpError, hubFetch } from './hub-download.js';

export { hubCacheDir } from './hf-cache.js';
export type { HubProgress } from './hub-download.js';

export const DEFAULT_MODEL = 'fortune-gpt2';

export interface ResolveModelOptions {
  /** Branch, tag or commit hash on the Hub (default 'main'). Ignored for local folders. */
  revision?: string;
  /** Called as bytes arrive: `loaded` of `total` bytes of `file`. */
  onProgress?: (p: HubProgress) => void;
  /** Exactly these repository files instead of the default config/tokenizer/weights set. */
  files?: string[];
  /** Overrides $HF_HUB_CACHE / $HF_HOME/hub. */
  cacheDir?: string;
  /** Overrides $HF_ENDPOINT (default https://huggingface.co). */
  endpoint?: string;
  /** Overrides $HF_TOKEN and the saved login token. */
  token?: string;
  /** Use only the cache (as HF_HUB_OFFLINE=1). */
  offline?: boolean;
  signal?: AbortSignal;
}

// Files a GPT-2 style checkpoint may carry besides its weights; absent ones are skipped.
const SIDE_FILES = ['config.json', 'generation_config.json', 'tokenizer.json', 'tokenizer_config.json', 'vocab.json', 'merges.txt', 'special_tokens_map.json', 'added_tokens.json'];
const SINGLE_WEIGHTS = 'model.safetensors';
const SHARD_INDEX = 'model.safetensors.index.json';
const PICKLE = /\.(bin|pt|pth|ckpt|pkl|pickle)$/i;

export function pickleRefusal(model: string, files: string[]): Error {
  return new Error(
    `model '${model}' only has pickle checkpoints (${files.slice(0, 3).join(', ')}): nibble loads only safetensors, ` +
      'because a pickle file can run code when it is loaded. Use a revision with model.safetensors, or convert it ' +
      '(for example with transformers: model.save_pretrained(dir, safe_serialization=True)).',
  );
}

/** huggingface_hub's repo id rule: 'name' or 'org/name' of [\w.-], no '--' or '..', 96 chars at most. */
export function isRepoId(id: string): boolean {
  return /^(?:[\w.-]+\/)?[\w.-]{1,96}$/.test(id) && !id.includes('--') && !id.includes('..') &&
    !/^[.-]|[.-]$/.test(id.split('/').pop()!) && !id.endsWith('.git');
}

/**
 * A local folder with the model's files. `undefined` and 'fortune-gpt2' give the embedded
 * model, an existing folder is used as it is, anything else is a Hub id downloaded (or found)
 * in the shared cache.
 */
export async function resolveModelDir(idOrDir: string | undefined, opts: ResolveModelOptions = {}): Promise<string> {
  if (idOrDir === undefined || idOrDir === DEFAULT_MODEL) {
    const dir = join(embeddedModelsDir, DEFAULT_MODEL);
    if (!isDirectory(dir)) throw new Error(`the embedded model is missing from this installation (${dir}); reinstall nibble-llm`);
    return dir;
  }
  if (typeof idOrDir !== 'string' || idOrDir.trim() === '') throw new Error(`model must be a Hub id or a folder, got ${JSON.stringify(idOrDir)}`);
  if (isDirectory(idOrDir)) {
    const dir = resolve(idOrDir);
    refusePickleOnlyFolder(idOrDir, dir);
    return dir;
  }
  if (existsSync(idOrDir)) throw new Error(`model path '${idOrDir}' is a file; give the folder that holds config.json and the safetensors files`);
  if (!isRepoId(idOrDir)) throw new Error(`model '${idOrDir}' is neither an existing folder nor a valid Hugging Face Hub id ('name' or 'org/name')`);
  return hubSnapshot(idOrDir, opts);
}

function refusePickleOnlyFolder(model: string, dir: string): void {
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return;
  }
  if (names.some((n) => n.endsWith('.safetensors') || n === SHARD_INDEX)) return;
  const pickles = names.filter((n) => PICKLE.test(n));
  if (pickles.length) throw pickleRefusal(model, pickles);
}

function context(opts: ResolveModelOptions): HubContext {
  const endpoint = (opts.endpoint ?? process.env.HF_ENDPOINT ?? 'https://huggingface.co').replace(/\/+$/, '');
  try {
    new URL(endpoint);
  } catch {
    throw new Error(`HF_ENDPOINT '${endpoint}' is not a URL`);
  }
  const timeout = Number(process.env.HF_HUB_DOWNLOAD_TIMEOUT ?? 10);
  return {
    endpoint,
    token: opts.token ?? hubToken(),
    timeoutS: Number.isFinite(timeout) && timeout > 0 ? timeout : 10,
    maxAttempts: 5,
    userAgent: 'nibble-llm (node)',
  };
}

/** Every error leaving this module goes through here: a token never reaches a message. */
function redact<T>(err: T, token: string | undefined): T {
  if (token && err instanceof Error && err.message.includes(token)) err.message = err.message.split(token).join('***');
  return err;
}

async function hubSnapshot(repo: string, opts: ResolveModelOptions): Promise<string> {
  const ctx = context(opts);
  try {
    return await hubSnapshotUnsafe(repo, opts, ctx);
  } catch (err) {
    throw redact(err, ctx.token);
  }
}

async function hubSnapshotUnsafe(repo: string, opts: ResolveModelOptions, ctx: HubContext): Promise<string> {
  const revision = opts.revision ?? 'main';
  if (!revision || /(^|\/)\.\.(\/|$)/.test(revision) || revision.startsWith('/')) throw new Error(`invalid revision '${revision}'`);
  for (const f of opts.files ?? []) {
    checkRepoFileName(f);
    if (PICKLE.test(f)) throw pickleRefusal(repo, [f]);
  }
  const cache = new RepoCache(opts.cacheDir ?? hubCacheDir(), repo);
  const offline = opts.offline ?? envFlag('HF_HUB_OFFLINE');
  if (offline) return cachedSnapshot(cache, revision, opts, 'offline mode is on (HF_HUB_OFFLINE)', true);

  let listing: { sha: string; siblings: string[] };
  try {
    listing = await listRepo(ctx, repo, revision, opts.signal);
  } catch (err) {
    // Like huggingface_hub: when the Hub cannot be reached, a complete cached snapshot will do.
    if (err instanceof HubHttpError && err.status === 0) return cachedSnapshot(cache, revision, opts, err.message, false);
    throw err;
  }
  const commit = listing.sha;
  const files = opts.files ? [...opts.files] : selectFiles(repo, listing.siblings);
  for (const f of files) if (!listing.siblings.includes(f)) throw new Error(`file '${f}' is not in model '${repo}' (revision '${revision}') on ${ctx.endpoint}`);

  for (const f of files) await fetchFile(ctx, cache, commit, f, opts);
  if (!opts.files && files.includes(SHARD_INDEX)) {
    const shards = await shardNames(cache.snapshotFile(commit, SHARD_INDEX), repo);
    for (const s of shards) {
      if (!listing.siblings.includes(s)) throw new Error(`model '${repo}': ${SHARD_INDEX} names shard '${s}', which is not in the repository`);
      await fetchFile(ctx, cache, commit, s, opts);
    }
  }
  await cache.writeRef(revision, commit);
  return cache.snapshotDir(commit);
}

/** GET /api/models/{repo}/revision/{revision}: the commit it points to and the file list. */
async function listRepo(ctx: HubContext, repo: string, revision: string, signal?: AbortSignal): Promise<{ sha: string; siblings: string[] }> {
  const url = `${ctx.endpoint}/api/models/${repo.split('/').map(encodeURIComponent).join('/')}/revision/${encodeURIComponent(revision)}`;
  const res = await hubFetch(ctx, url, { signal });
  if (!res.ok) {
    await res.body?.cancel();
    throw httpError(res, { repo, revision, endpoint: ctx.endpoint });
  }
  let body: { sha?: unknown; siblings?: unknown };
  try {
    body = (await res.json()) as typeof body;
  } catch (err) {
    throw new HubHttpError(`the Hub's answer for '${repo}' (revision '${revision}') is not JSON: ${(err as Error).message}`, res.status);
  }
  const sha = body.sha;
  const siblings = Array.isArray(body.siblings) ? body.siblings.map((s: { rfilename?: unknown }) => s?.rfilename).filter((s): s is string => typeof s === 'string') : undefined;
  if (typeof sha !== 'string' || !COMMIT_HASH.test(sha) || !siblings)
    throw new HubHttpError(`the Hub's answer for '${repo}' (revision '${revision}') has no commit sha or file list`, res.status);
  for (const s of siblings) checkRepoFileName(s);
  return { sha, siblings };
}

function selectFiles(repo: string, siblings: string[]): string[] {
  const files = SIDE_FILES.filter((f) => siblings.includes(f));
  if (!files.includes('config.json')) throw new Error(`model '${repo}' has no config.json: it is not a transformers model`);
  if (siblings.includes(SINGLE_WEIGHTS)) files.push(SINGLE_WEIGHTS);
  else if (siblings.includes(SHARD_INDEX)) files.push(SHARD_INDEX);
  else {
    const pickles = siblings.filter((s) => PICKLE.test(s));
    if (pickles.length) throw pickleRefusal(repo, pickles);
    throw new Error(`model '${repo}' has no ${SINGLE_WEIGHTS} or ${SHARD_INDEX}`);
  }
  return files;
}

async function shardNames(indexPath: string, repo: string): Promise<string[]> {
  let index: { weight_map?: Record<string, unknown> };
  try {
    index = JSON.parse(await readFile(indexPath, 'utf8'));
  } catch (err) {
    throw new Error(`model '${repo}': ${SHARD_INDEX} is not valid JSON (${(err as Error).message})`);
  }
  const names = [...new Set(Object.values(index.weight_map ?? {}))];
  if (!names.length || names.some((n) => typeof n !== 'string' || !n.endsWith('.safetensors')))
    throw new Error(`model '${repo}': ${SHARD_INDEX} has no weight_map of .safetensors shards`);
  for (const n of names as string[]) checkRepoFileName(n);
  return names as string[];
}

async function fetchFile(ctx: HubContext, cache: RepoCache, commit: string, file: string, opts: ResolveModelOptions): Promise<void> {
  if (cache.hasFile(commit, file)) return;
  const meta = await fileMeta(ctx, cache.repoId, commit, file, opts.signal);
  if (meta.commit !== commit)
    throw new HubHttpError(`the Hub served '${file}' of '${cache.repoId}' from commit ${meta.commit}, expected ${commit}`, 200);
  const have = () => cache.blobExists(meta.etag);
  if (!(await have())) {
    // Another process (or call) may be fetching the same blob: wait for it rather than race it.
    await withFileLock(cache.lockPath(meta.etag), have, async () => {
      if (!(await have())) await downloadBlob(ctx, cache, file, meta, opts.onProgress, opts.signal);
    }, opts.signal);
  }
  if (!(await have())) throw new HubHttpError(`'${file}' of '${cache.repoId}' is still missing after its download`, 0);
  opts.onProgress?.({ file, loaded: meta.size ?? 0, total: meta.size ?? 0 });
  await cache.linkSnapshot(commit, file, meta.etag);
}

/** The snapshot the revision last pointed to, if it holds a loadable model; else a clear error. */
function cachedSnapshot(cache: RepoCache, revision: string, opts: ResolveModelOptions, why: string, offline: boolean): string {
  const offlineHint = offline ? 'Download it once with HF_HUB_OFFLINE unset.' : 'Check the network connection and HF_ENDPOINT.';
  const commit = cache.commitFor(revision);
  const missing = (f: string) => !commit || !cache.hasFile(commit, f);
  let lacking: string[];
  if (opts.files) lacking = opts.files.filter(missing);
  else if (!commit || !isDirectory(cache.snapshotDir(commit))) lacking = ['everything'];
  else {
    lacking = missing('config.json') ? ['config.json'] : [];
    if (!missing(SINGLE_WEIGHTS)) {
      /* complete */
    } else if (!missing(SHARD_INDEX)) {
      try {
        const index = JSON.parse(readFileSync(cache.snapshotFile(commit, SHARD_INDEX), 'utf8')) as { weight_map?: Record<string, string> };
        lacking.push(...new Set(Object.values(index.weight_map ?? {}).filter(missing)));
      } catch {
        lacking.push(SHARD_INDEX);
      }
    } else {
      const pickles = readdirSync(cache.snapshotDir(commit)).filter((n) => PICKLE.test(n));
      if (pickles.length) throw pickleRefusal(cache.repoId, pickles);
      lacking.push(SINGLE_WEIGHTS);
    }
  }
  if (lacking.length === 0) return cache.snapshotDir(commit!);
  throw new Error(
    `cannot download model '${cache.repoId}' (revision '${revision}'): ${why}; and the cache ${cache.root} ` +
      `lacks ${lacking.join(', ')}. ${offlineHint}`,
  );
}
