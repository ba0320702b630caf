// A stand-in for the Hugging Face Hub on 127.0.0.1, for tests: the revision API, the resolve
// URLs with the Hub's headers (X-Repo-Commit, ETag = git blob id, and for LFS files a 302 to
// a second "CDN" server carrying X-Linked-Etag = sha256 and X-Linked-Size), Range requests,
// and faults to inject (cut connections, corrupt bytes). Both servers close themselves after
// `lifetimeMs` even if a test forgets to stop them.
import { createHash } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';

export interface HubRevision {
  commit: string;
  files: Record<string, Buffer>;
}

export interface HubRepo {
  /** Revision name ('main', a tag) or commit hash to contents. */
  revisions: Record<string, HubRevision>;
  /** When set, requests must carry `Authorization: Bearer <token>` (a private repo). */
  token?: string;
}

export interface Faults {
  /** Close the CDN connection after this many body bytes of `file`, `times` times. */
  cut?: { file: string; afterBytes: number; times: number };
  /** Serve `file` with one byte changed (its announced hash stays the original one). */
  corrupt?: string;
}

export interface LoggedRequest {
  server: 'hub' | 'cdn';
  method: string;
  path: string;
  range?: string;
  authorized: boolean;
}

const LFS = (name: string, data: Buffer) => name.endsWith('.safetensors') || name.endsWith('.bin') || data.length > 10 * 1024 * 1024;

export function gitBlobId(data: Buffer): string {
  return createHash('sha1').update(`blob ${data.length}\0`).update(data).digest('hex');
}

export function sha256(data: Buffer): string {
  return createHash('sha256').update(data).digest('hex');
}

/** A 40-hex commit id derived from a label, so tests can name revisions by meaning. */
export function fakeCommit(label: string): string {
  return createHash('sha1').update(label).digest('hex');
}

export function readModelDir(dir: string): Record<string, Buffer> {
  const files: Record<string, Buffer> = {};
  for (const name of readdirSync(dir)) files[name] = readFileSync(join(dir, name));
  return files;
}

export class HubServer {
  readonly log: LoggedRequest[] = [];
  faults: Faults = {};
  hubUrl = '';
  cdnUrl = '';
  private hub: Server;
  private cdn: Server;
  private blobs = new Map<string, { file: string; data: Buffer }>();
  private cutsDone = 0;
  private lifetime: NodeJS.Timeout | undefined;

  constructor(readonly repos: Record<string, HubRepo>, private lifetimeMs = 120_000) {
    for (const repo of Object.values(repos))
      for (const rev of Object.values(repo.revisions))
        for (const [file, data] of Object.entries(rev.files)) if (LFS(file, data)) this.blobs.set(sha256(data), { file, data });
    this.hub = createServer((req, res) => this.handleHub(req, res));
    this.cdn = createServer((req, res) => this.handleCdn(req, res));
  }

  async start(): Promise<this> {
    const listen = (s: Server) => new Promise<number>((ok) => s.listen(0, '127.0.0.1', () => ok((s.address() as AddressInfo).port)));
    this.hubUrl = `http://127.0.0.1:${await listen(this.hub)}`;
    this.cdnUrl = `http://127.0.0.1:${await listen(this.cdn)}`;
    this.lifetime = setTimeout(() => void this.stop(), this.lifetimeMs);
    this.lifetime.unref();
    return this;
  }

  async stop(): Promise<void> {
    clearTimeout(this.lifetime);
    const close = (s: Server) => new Promise<void>((ok) => {
      if (!s.listening) return ok();
      s.close(() => ok());
      s.closeAllConnections();
    });
    await Promise.all([close(this.hub), close(this.cdn)]);
  }

  resetFaults(): void {
    this.faults = {};
    this.cutsDone = 0;
  }

  private record(server: 'hub' | 'cdn', req: IncomingMessage): void {
    this.log.push({ server, method: req.method ?? '', path: req.url ?? '', range: req.headers.range, authorized: !!req.headers.authorization });
  }

  private error(res: ServerResponse, status: number, code: string, message: string): void {
    res.writeHead(status, { 'x-error-code': code, 'x-error-message': message, 'content-type': 'application/json' });
    res.end(JSON.stringify({ error: message }));
  }

  private lookup(req: IncomingMessage, res: ServerResponse, repoId: string, revision: string): HubRevision | undefined {
    const repo = this.repos[repoId];
    // The real Hub answers 401 for a repo it will not show, so it cannot be probed.
    if (!repo || (repo.token && req.headers.authorization !== `Bearer ${repo.token}`)) {
      this.error(res, 401, 'RepoNotFound', 'Repository not found');
      return undefined;
    }
    const rev = repo.revisions[revision] ?? Object.values(repo.revisions).find((r) => r.commit === revision);
    if (!rev) this.error(res, 404, 'RevisionNotFound', 'Invalid rev id');
    return rev;
  }

  private handleHub(req: IncomingMessage, res: ServerResponse): void {
    this.record('hub', req);
    const url = new URL(req.url ?? '/', this.hubUrl);
    const api = /^\/api\/models\/(.+)\/revision\/([^/]+)$/.exec(url.pathname);
    if (api && req.method === 'GET') {
      const rev = this.lookup(req, res, decodeURIComponent(api[1]), decodeURIComponent(api[2]));
      if (!rev) return;
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ id: api[1], sha: rev.commit, siblings: Object.keys(rev.files).map((rfilename) => ({ rfilename })) }));
      return;
    }
    const resolve = /^\/(.+?)\/resolve\/([^/]+)\/(.+)$/.exec(url.pathname);
    if (!resolve || (req.method !== 'GET' && req.method !== 'HEAD')) return this.error(res, 404, 'NotFound', 'Not found');
    const rev = this.lookup(req, res, decodeURIComponent(resolve[1]), decodeURIComponent(resolve[2]));
    if (!rev) return;
    const file = decodeURIComponent(resolve[3]);
    const data = rev.files[file];
    if (!data) return this.error(res, 404, 'EntryNotFound', `${file} does not exist on "${resolve[2]}"`);
    if (LFS(file, data)) {
      const oid = sha256(data);
      res.writeHead(302, {
        location: `${this.cdnUrl}/lfs/${oid}?sig=signed-url`,
        'x-repo-commit': rev.commit,
        etag: `"${gitBlobId(Buffer.from(`version https://git-lfs.github.com/spec/v1\noid sha256:${oid}\nsize ${data.length}\n`))}"`,
        'x-linked-etag': `"${oid}"`,
        'x-linked-size': String(data.length),
        'content-length': '0',
      });
      res.end();
      return;
    }
    const body = this.faults.corrupt === file ? corrupted(data) : data;
    res.writeHead(200, { 'x-repo-commit': rev.commit, etag: `"${gitBlobId(data)}"`, 'content-length': String(body.length), 'accept-ranges': 'bytes' });
    res.end(req.method === 'HEAD' ? undefined : body);
  }

  private handleCdn(req: IncomingMessage, res: ServerResponse): void {
    this.record('cdn', req);
    const m = /^\/lfs\/([0-9a-f]{64})$/.exec(new URL(req.url ?? '/', this.cdnUrl).pathname);
    const blob = m ? this.blobs.get(m[1]) : undefined;
    if (!blob) {
      res.writeHead(404);
      res.end();
      return;
    }
    let data = this.faults.corrupt === blob.file ? corrupted(blob.data) : blob.data;
    let start = 0;
    const range = /^bytes=(\d+)-$/.exec(req.headers.range ?? '');
    if (range) {
      start = Number(range[1]);
      if (start >= data.length) {
        res.writeHead(416, { 'content-range': `bytes */${data.length}` });
        res.end();
        return;
      }
      res.writeHead(206, { 'content-range': `bytes ${start}-${data.length - 1}/${data.length}`, 'content-length': String(data.length - start) });
    } else {
      res.writeHead(200, { 'content-length': String(data.length), 'accept-ranges': 'bytes' });
    }
    data = data.subarray(start);
    const cut = this.faults.cut;
    if (req.method !== 'HEAD' && cut && cut.file === blob.file && this.cutsDone < cut.times && data.length > cut.afterBytes) {
      this.cutsDone++;
      // Send part of the body, then drop the connection as a flaky network would.
      res.write(data.subarray(0, cut.afterBytes), () => setTimeout(() => res.socket?.destroy(), 20));
      return;
    }
    res.end(req.method === 'HEAD' ? undefined : data);
  }
}

function corrupted(data: Buffer): Buffer {
  const copy = Buffer.from(data);
  copy[copy.length >> 1] ^= 0x5a;
  return copy;
}
