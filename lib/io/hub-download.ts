// One file from the Hub into the cache: ask the resolve URL for its hash and size (HEAD,
// stopping at the CDN redirect like huggingface_hub), download into blobs/<etag>.incomplete
// with Range resumes, verify against the server's hash, and only then rename it into place.
// A failure never leaves anything under a finished blob's name.
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdir, open, rename, stat, truncate, unlink } from 'node:fs/promises';
import { dirname } from 'node:path';
import type { RepoCache } from './hf-cache.js';

export interface HubProgress {
  file: string;
  loaded: number;
  total: number;
}

export interface HubContext {
  endpoint: string;
  token?: string;
  /** Seconds to wait for response headers, and between two chunks of a body. */
  timeoutS: number;
  /** Attempts per file (the first included) before a download gives up. */
  maxAttempts: number;
  userAgent: string;
}

export interface FileMeta {
  commit: string;
  /** The server's hash of the file: sha256 for LFS files, git blob sha1 otherwise. */
  etag: string;
  size: number | undefined;
  /** Where the bytes are (the CDN URL of an LFS redirect, else the resolve URL). */
  location: string;
}

/** A failed HTTP exchange; `status` 0 means the server could not be reached. */
export class HubHttpError extends Error {
  constructor(message: string, readonly status: number, readonly errorCode?: string) {
    super(message);
    this.name = 'HubHttpError';
  }
}

const MAX_REDIRECTS = 5;

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** The token goes only to the Hub's own origin, never to a CDN a redirect points at. */
function headersFor(ctx: HubContext, url: string, extra: Record<string, string> = {}): Record<string, string> {
  const h: Record<string, string> = { 'user-agent': ctx.userAgent, 'accept-encoding': 'identity', ...extra };
  if (ctx.token && new URL(url).origin === new URL(ctx.endpoint).origin) h.authorization = `Bearer ${ctx.token}`;
  return h;
}

/** fetch with a deadline for the headers; turns transport failures into HubHttpError(0). */
export async function hubFetch(ctx: HubContext, url: string, init: { method?: string; headers?: Record<string, string>; signal?: AbortSignal } = {}): Promise<Response> {
  const ac = new AbortController();
  const timer = setTimeout(() => ac.abort(new Error(`no response within ${ctx.timeoutS}s`)), ctx.timeoutS * 1000);
  const onOuter = () => ac.abort(init.signal?.reason);
  init.signal?.addEventListener('abort', onOuter, { once: true });
  try {
    return await fetch(url, { method: init.method ?? 'GET', headers: headersFor(ctx, url, init.headers), redirect: 'manual', signal: ac.signal });
  } catch (err) {
    if (init.signal?.aborted) throw init.signal.reason ?? err;
    throw new HubHttpError(`cannot reach ${new URL(url).origin}: ${describeTransportError(err)}`, 0);
  } finally {
    clearTimeout(timer);
    init.signal?.removeEventListener('abort', onOuter);
  }
}

function describeTransportError(err: unknown): string {
  const e = err as { message?: string; cause?: { code?: string; message?: string } };
  if (e?.cause?.code) return e.cause.code;
  return e?.cause?.message ?? e?.message ?? String(err);
}

/** The Hub's `X-Error-Code` / status turned into a sentence naming the repo, revision or file. */
export function httpError(res: Response, what: { repo: string; revision: string; file?: string; endpoint: string }): HubHttpError {
  const code = res.headers.get('x-error-code') ?? undefined;
  const where = `'${what.repo}' (revision '${what.revision}') on ${what.endpoint}`;
  let msg: string;
  if (code === 'RepoNotFound' || (!code && !what.file && (res.status === 404 || res.status === 401)))
    msg = `model ${where} was not found (HTTP ${res.status}). Check the name; a private model needs HF_TOKEN`;
  else if (code === 'RevisionNotFound') msg = `revision '${what.revision}' does not exist in model '${what.repo}' on ${what.endpoint} (HTTP ${res.status})`;
  else if (code === 'EntryNotFound' || (what.file && res.status === 404)) msg = `file '${what.file}' was not found in model ${where} (HTTP ${res.status})`;
  else if (code === 'GatedRepo') msg = `model ${where} is gated: accept its conditions on the Hub, then set HF_TOKEN (HTTP ${res.status})`;
  else if (res.status === 401 || res.status === 403) msg = `access to model ${where} was refused (HTTP ${res.status}); check HF_TOKEN`;
  else msg = `the Hub answered HTTP ${res.status} for ${what.file ? `file '${what.file}' of ` : ''}model ${where}`;
  return new HubHttpError(msg, res.status, code);
}

function stripEtag(v: string | null): string | undefined {
  if (!v) return undefined;
  return v.replace(/^W\//, '').replace(/^"|"$/g, '') || undefined;
}

function intHeader(v: string | null): number | undefined {
  if (v === null || !/^\d+$/.test(v)) return undefined;
  return Number(v);
}

/**
 * HEADs `{endpoint}/{repo}/resolve/{revision}/{file}`. Relative redirects (a renamed repo) are
 * followed; an absolute one is where the bytes are, and its own headers carry the LFS hash.
 */
export async function fileMeta(ctx: HubContext, repo: string, revision: string, file: string, signal?: AbortSignal): Promise<FileMeta> {
  let url = resolveUrl(ctx.endpoint, repo, revision, file);
  for (let hop = 0; hop <= MAX_REDIRECTS; hop++) {
    const res = await hubFetch(ctx, url, { method: 'HEAD', signal });
    const location = res.headers.get('location');
    const isRedirect = res.status >= 300 && res.status < 400 && location;
    if (!res.ok && !isRedirect) throw httpError(res, { repo, revision, file, endpoint: ctx.endpoint });
    const target = isRedirect ? new URL(location, url) : undefined;
    if (target && target.origin === new URL(url).origin && !res.headers.get('x-linked-etag')) {
      url = target.href;
      continue;
    }
    const commit = res.headers.get('x-repo-commit') ?? undefined;
    const etag = stripEtag(res.headers.get('x-linked-etag')) ?? stripEtag(res.headers.get('etag'));
    if (!commit || !etag)
      throw new HubHttpError(`the server at ${ctx.endpoint} did not send ${!commit ? 'X-Repo-Commit' : 'an ETag'} for '${file}' of '${repo}': is HF_ENDPOINT a Hugging Face Hub?`, res.status);
    if (!/^[\w.-]+$/.test(etag)) throw new HubHttpError(`unexpected ETag '${etag}' for '${file}' of '${repo}'`, res.status);
    const size = intHeader(res.headers.get('x-linked-size')) ?? intHeader(res.headers.get('content-length'));
    return { commit, etag, size, location: target?.href ?? url };
  }
  throw new HubHttpError(`too many redirects for '${file}' of '${repo}'`, 310);
}

export function resolveUrl(endpoint: string, repo: string, revision: string, file: string): string {
  const enc = (p: string) => p.split('/').map(encodeURIComponent).join('/');
  return `${endpoint}/${enc(repo)}/resolve/${encodeURIComponent(revision)}/${enc(file)}`;
}

async function sizeOf(path: string): Promise<number> {
  try {
    return (await stat(path)).size;
  } catch {
    return 0;
  }
}

/**
 * GETs `location` into `incomplete`, appending from its current size with a Range request.
 * Returns when the body ended; throws on a transport error, leaving the bytes received so far.
 */
async function getInto(ctx: HubContext, location: string, incomplete: string, report: (loaded: number, total: number) => void, size: number | undefined, signal?: AbortSignal): Promise<void> {
  let have = await sizeOf(incomplete);
  let url = location;
  let res: Response | undefined;
  for (let hop = 0; hop <= MAX_REDIRECTS; hop++) {
    res = await hubFetch(ctx, url, { headers: have > 0 ? { range: `bytes=${have}-` } : {}, signal });
    const loc = res.headers.get('location');
    if (res.status >= 300 && res.status < 400 && loc) {
      await res.body?.cancel();
      url = new URL(loc, url).href;
      res = undefined;
      continue;
    }
    break;
  }
  if (!res) throw new HubHttpError(`too many redirects downloading ${new URL(location).pathname}`, 310);
  if (res.status === 416 && size !== undefined && have >= size) {
    // Already have every byte (or more than the file: the check after the download decides).
    await res.body?.cancel();
    return;
  }
  if (res.status === 200 && have > 0) {
    // The server ignored the Range: start over rather than append a second copy.
    await truncate(incomplete, 0);
    have = 0;
  } else if (res.status === 206) {
    const m = /^bytes (\d+)-/.exec(res.headers.get('content-range') ?? '');
    if (!m || Number(m[1]) !== have) {
      await res.body?.cancel();
      await truncate(incomplete, 0);
      throw new HubHttpError(`the server resumed at the wrong offset (${res.headers.get('content-range')}, expected ${have})`, 206);
    }
  } else if (!res.ok) {
    await res.body?.cancel();
    throw new HubHttpError(`HTTP ${res.status} downloading ${new URL(location).pathname}`, res.status);
  }
  const total = size ?? (intHeader(res.headers.get('content-length')) ?? 0) + have;
  const fh = await open(incomplete, 'a');
  const reader = res.body!.getReader();
  let loaded = have;
  // A stalled body (no bytes for timeoutS) counts as a cut connection.
  let idle: NodeJS.Timeout | undefined;
  let stalled!: (e: Error) => void;
  const stall = new Promise<never>((_, reject) => { stalled = reject; });
  stall.catch(() => {});
  const arm = () => {
    clearTimeout(idle);
    idle = setTimeout(() => stalled(new HubHttpError(`no data for ${ctx.timeoutS}s`, 0)), ctx.timeoutS * 1000);
  };
  arm();
  const onAbort = () => stalled(signal?.reason ?? new Error('aborted'));
  signal?.addEventListener('abort', onAbort, { once: true });
  try {
    report(loaded, total);
    for (;;) {
      const { done, value } = await Promise.race([reader.read(), stall]);
      signal?.throwIfAborted();
      if (done) break;
      arm();
      await fh.write(value);
      loaded += value.byteLength;
      report(loaded, total);
    }
  } catch (err) {
    reader.cancel().catch(() => {});
    if (signal?.aborted) throw signal.reason ?? err;
    if (err instanceof HubHttpError) throw err;
    throw new HubHttpError(`connection lost after ${loaded} of ${total} bytes: ${describeTransportError(err)}`, 0);
  } finally {
    clearTimeout(idle);
    signal?.removeEventListener('abort', onAbort);
    await fh.close();
  }
}

async function hashFile(path: string, algo: 'sha256' | 'sha1', prefix?: string): Promise<string> {
  const h = createHash(algo);
  if (prefix) h.update(prefix);
  for await (const chunk of createReadStream(path)) h.update(chunk as Buffer);
  return h.digest('hex');
}

/** Checks the finished download against the server's hash; returns a reason or undefined. */
async function verify(path: string, meta: FileMeta): Promise<string | undefined> {
  const got = await sizeOf(path);
  if (meta.size !== undefined && got !== meta.size) return `size ${got} bytes, the server announced ${meta.size}`;
  if (/^[0-9a-f]{64}$/.test(meta.etag)) {
    const h = await hashFile(path, 'sha256');
    if (h !== meta.etag) return `sha256 ${h}, the server announced ${meta.etag}`;
  } else if (/^[0-9a-f]{40}$/.test(meta.etag)) {
    // Non-LFS files are named by their git blob id: sha1("blob <size>\0" + contents).
    const h = await hashFile(path, 'sha1', `blob ${got}\0`);
    if (h !== meta.etag) return `git blob id ${h}, the server announced ${meta.etag}`;
  }
  return undefined;
}

const RETRYABLE = (err: unknown) => err instanceof HubHttpError && (err.status === 0 || err.status >= 500 || err.status === 206);

/**
 * Puts the file described by `meta` at blobs/<etag>. Transport failures are retried with a
 * Range resume (bounded by ctx.maxAttempts); a partial file survives a final failure so the
 * next call resumes it, but a file failing verification is deleted.
 */
export async function downloadBlob(ctx: HubContext, cache: RepoCache, file: string, meta: FileMeta, onProgress?: (p: HubProgress) => void, signal?: AbortSignal): Promise<void> {
  const incomplete = cache.incompletePath(meta.etag);
  await mkdir(dirname(incomplete), { recursive: true });
  let lastEmit = 0;
  let lastLoaded = -1;
  const report = (loaded: number, total: number) => {
    if (!onProgress) return;
    const now = Date.now();
    if (loaded !== total && now - lastEmit < 100 && loaded - lastLoaded < 1 << 22) return;
    lastEmit = now;
    lastLoaded = loaded;
    onProgress({ file, loaded, total });
  };
  for (let attempt = 1; ; attempt++) {
    const have = await sizeOf(incomplete);
    if (meta.size !== undefined && have > meta.size) await truncate(incomplete, 0);
    if (meta.size === undefined || have < meta.size) {
      try {
        await getInto(ctx, meta.location, incomplete, report, meta.size, signal);
      } catch (err) {
        if (!RETRYABLE(err)) throw err;
        if (attempt >= ctx.maxAttempts) {
          const kept = await sizeOf(incomplete);
          throw new HubHttpError(
            `downloading '${file}' of '${cache.repoId}' failed after ${attempt} attempts (${(err as Error).message}); ` +
              `${kept} bytes are kept in ${incomplete} and the next call resumes from there`,
            (err as HubHttpError).status,
          );
        }
        await sleep(Math.min(100 * 2 ** (attempt - 1), 2000));
        continue;
      }
      if (meta.size !== undefined && (await sizeOf(incomplete)) < meta.size) {
        // The body ended early without an error: the same as a cut connection.
        if (attempt >= ctx.maxAttempts) throw new HubHttpError(`downloading '${file}' of '${cache.repoId}' ended early ${ctx.maxAttempts} times; the partial file is kept in ${incomplete}`, 0);
        continue;
      }
    }
    const bad = await verify(incomplete, meta);
    if (bad) {
      await unlink(incomplete).catch(() => {});
      throw new HubHttpError(`download of '${file}' from '${cache.repoId}' is corrupt (${bad}); it was deleted and nothing was cached`, 0);
    }
    await rename(incomplete, cache.blobPath(meta.etag));
    return;
  }
}
