// Hub downloads against a local stand-in server (test/helpers/hub-server.ts): first download,
// cache hits without a network, offline mode, revisions, errors, resumes and corrupt bytes,
// and the cache layout huggingface_hub documents.
import { createHash } from 'node:crypto';
import { existsSync, lstatSync, mkdirSync, readdirSync, readFileSync, readlinkSync, realpathSync, statSync, utimesSync, writeFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { resolveModelDir, hubCacheDir, isRepoId } from '../lib/io/hub.js';
import { embeddedModelsDir } from '../lib/paths.js';
import { HubServer, fakeCommit, gitBlobId, readModelDir, sha256 } from './helpers/hub-server.js';
import { tempDir } from './helpers/tmp.js';

const FORTUNE = 'nibble-test/fortune-gpt2';
const TINY = 'nibble-test/tiny-random-gpt2';
const PRIVATE = 'nibble-test/private-gpt2';
const SECRET = 'hf_testSecretToken1234567890';

const fortune = readModelDir(join(embeddedModelsDir, 'fortune-gpt2'));
const tiny = readModelDir(join(__dirname, 'fixtures', 'tiny-random-gpt2'));
const MAIN = fakeCommit('fortune main');
const V1 = fakeCommit('fortune v1');
const TINY_MAIN = fakeCommit('tiny main');

// A sharded checkpoint: the shards' bytes only need to be distinct and hashable here.
const shardA = Buffer.from(tiny['model.safetensors'].subarray(0, 300_000));
const shardB = Buffer.from(tiny['model.safetensors'].subarray(300_000));
const shardIndex = Buffer.from(JSON.stringify({ metadata: {}, weight_map: { 'a.weight': 'model-00001-of-00002.safetensors', 'b.weight': 'model-00002-of-00002.safetensors' } }));

const server = new HubServer({
  [FORTUNE]: {
    revisions: {
      main: { commit: MAIN, files: { ...fortune, 'README.md': Buffer.from('# fortune\n'), 'pytorch_model.bin': Buffer.from('pickle!') } },
      // A tag pointing at an older commit with other contents.
      v1: { commit: V1, files: { 'config.json': tiny['config.json'], 'model.safetensors': tiny['model.safetensors'] } },
    },
  },
  [TINY]: { revisions: { main: { commit: TINY_MAIN, files: tiny } } },
  'nibble-test/sharded': {
    revisions: { main: { commit: fakeCommit('sharded'), files: { 'config.json': tiny['config.json'], 'model.safetensors.index.json': shardIndex, 'model-00001-of-00002.safetensors': shardA, 'model-00002-of-00002.safetensors': shardB } } },
  },
  'nibble-test/pickle-only': { revisions: { main: { commit: fakeCommit('pickle'), files: { 'config.json': tiny['config.json'], 'pytorch_model.bin': Buffer.from('not a real pickle') } } } },
  'nibble-test/no-config': { revisions: { main: { commit: fakeCommit('noconf'), files: { 'model.safetensors': shardA } } } },
  [PRIVATE]: { token: SECRET, revisions: { main: { commit: fakeCommit('private'), files: { 'config.json': tiny['config.json'], 'model.safetensors': shardB } } } },
});

const ENV_KEYS = ['HF_ENDPOINT', 'HF_HUB_CACHE', 'HF_HOME', 'HF_HUB_OFFLINE', 'HF_TOKEN', 'HF_TOKEN_PATH', 'HF_HUB_DOWNLOAD_TIMEOUT'] as const;
const savedEnv = Object.fromEntries(ENV_KEYS.map((k) => [k, process.env[k]]));
const root = tempDir('nibble-hub-');
let cacheN = 0;
let cache = '';

beforeAll(async () => {
  await server.start();
});
afterAll(async () => {
  await server.stop();
  for (const k of ENV_KEYS) if (savedEnv[k] === undefined) delete process.env[k]; else process.env[k] = savedEnv[k];
});
beforeEach(() => {
  for (const k of ENV_KEYS) delete process.env[k];
  process.env.HF_ENDPOINT = server.hubUrl;
  // An empty token file location, so a developer's own login never leaks into the tests.
  process.env.HF_TOKEN_PATH = join(root, 'no-token');
  cache = join(root, `cache${cacheN++}`);
  process.env.HF_HUB_CACHE = cache;
  server.log.length = 0;
  server.resetFaults();
});
afterEach(() => server.resetFaults());

const requests = (server_: 'hub' | 'cdn' | 'any' = 'any') => server.log.filter((r) => server_ === 'any' || r.server === server_);
const repoRoot = (repo: string) => join(cache, `models--${repo.replace('/', '--')}`);

/** Every path under `dir`, with symlink targets, as `ls -R` would show the layout. */
function listing(dir: string): string[] {
  const out: string[] = [];
  const walk = (d: string) => {
    for (const name of readdirSync(d).sort()) {
      const p = join(d, name);
      const st = lstatSync(p);
      const rel = relative(dir, p);
      if (st.isSymbolicLink()) out.push(`${rel} -> ${readlinkSync(p)}`);
      else if (st.isDirectory()) {
        out.push(`${rel}/`);
        walk(p);
      } else out.push(rel);
    }
  };
  walk(dir);
  return out;
}

describe('resolveModelDir: local names', () => {
  it('gives the embedded model for undefined and fortune-gpt2, with no request', async () => {
    const embedded = join(embeddedModelsDir, 'fortune-gpt2');
    expect(await resolveModelDir(undefined)).toBe(embedded);
    expect(await resolveModelDir('fortune-gpt2')).toBe(embedded);
    expect(requests()).toHaveLength(0);
  });

  it('uses an existing folder as it is', async () => {
    const dir = join(__dirname, 'fixtures', 'tiny-random-gpt2');
    expect(await resolveModelDir(dir)).toBe(dir);
    expect(requests()).toHaveLength(0);
  });

  it('refuses a local folder holding only a pickle checkpoint', async () => {
    const dir = join(root, 'pickle-dir');
    await import('node:fs/promises').then((fs) => fs.mkdir(dir, { recursive: true }));
    writeFileSync(join(dir, 'config.json'), '{}');
    writeFileSync(join(dir, 'pytorch_model.bin'), 'x');
    await expect(resolveModelDir(dir)).rejects.toThrow(/only has pickle checkpoints \(pytorch_model\.bin\).*can run code/);
  });

  it('rejects a file, a missing path and invalid ids with clear messages', async () => {
    await expect(resolveModelDir(join(embeddedModelsDir, 'fortune-gpt2', 'config.json'))).rejects.toThrow(/is a file/);
    await expect(resolveModelDir('./no/such/dir')).rejects.toThrow(/neither an existing folder nor a valid Hugging Face Hub id/);
    await expect(resolveModelDir('a--b')).rejects.toThrow(/not.*valid Hugging Face Hub id|neither/);
    await expect(resolveModelDir('')).rejects.toThrow(/Hub id or a folder/);
    expect(isRepoId('gpt2')).toBe(true);
    expect(isRepoId('openai-community/gpt2-medium')).toBe(true);
    expect(isRepoId('a/b/c')).toBe(false);
    expect(isRepoId('org/..')).toBe(false);
    expect(requests()).toHaveLength(0);
  });
});

describe('resolveModelDir: Hub downloads', () => {
  it('downloads config, tokenizer and weights into the shared cache layout', async () => {
    const progress: { file: string; loaded: number; total: number }[] = [];
    const dir = await resolveModelDir(FORTUNE, { onProgress: (p) => progress.push(p) });
    expect(dir).toBe(join(repoRoot(FORTUNE), 'snapshots', MAIN));
    for (const f of Object.keys(fortune)) expect(readFileSync(join(dir, f)).equals(fortune[f]), f).toBe(true);
    // Only the files a model needs: no README, and never the pickle file beside the safetensors.
    expect(readdirSync(dir).sort()).toEqual(Object.keys(fortune).sort());
    // The weights came from the CDN, and the last progress event of each file is complete.
    expect(requests('cdn').some((r) => r.method === 'GET')).toBe(true);
    const last = new Map(progress.map((p) => [p.file, p]));
    expect(last.get('model.safetensors')).toEqual({ file: 'model.safetensors', loaded: fortune['model.safetensors'].length, total: fortune['model.safetensors'].length });
    expect(hubCacheDir()).toBe(cache);
  });

  it('matches the layout huggingface_hub documents (blobs by hash, refs, relative symlinks)', async () => {
    await resolveModelDir(FORTUNE);
    const etag = (f: string) => (f.endsWith('.safetensors') ? sha256(fortune[f]) : gitBlobId(fortune[f]));
    const files = Object.keys(fortune).sort();
    const expected = [
      'blobs/',
      ...files.map((f) => `blobs/${etag(f)}`).sort(),
      'refs/',
      'refs/main',
      'snapshots/',
      `snapshots/${MAIN}/`,
      ...files.map((f) => `snapshots/${MAIN}/${f} -> ../../blobs/${etag(f)}`),
    ];
    expect(listing(repoRoot(FORTUNE))).toEqual(expected);
    // huggingface_hub keeps its locks in <cache>/.locks too; ours are gone once downloads end.
    expect(readdirSync(cache).sort()).toEqual(['.locks', 'models--nibble-test--fortune-gpt2']);
    expect(readdirSync(join(cache, '.locks', 'models--nibble-test--fortune-gpt2'))).toEqual([]);
    expect(readFileSync(join(repoRoot(FORTUNE), 'refs', 'main'), 'utf8')).toBe(MAIN);
    // The LFS blob is named by the sha256 of its bytes, the small files by their git blob id.
    const weights = join(repoRoot(FORTUNE), 'blobs', sha256(fortune['model.safetensors']));
    expect(createHash('sha256').update(readFileSync(weights)).digest('hex')).toBe(sha256(fortune['model.safetensors']));
  });

  it('serves a second call from the cache after the server is gone', async () => {
    const dir = await resolveModelDir(TINY);
    const alone = new HubServer({});
    await alone.start();
    const deadEndpoint = alone.hubUrl;
    await alone.stop();
    process.env.HF_ENDPOINT = deadEndpoint;
    server.log.length = 0;
    const t0 = Date.now();
    expect(await resolveModelDir(TINY)).toBe(dir);
    expect(Date.now() - t0).toBeLessThan(5_000);
    expect(requests()).toHaveLength(0);
    // Not cached at all: the error says the Hub is unreachable and what is missing.
    await expect(resolveModelDir(FORTUNE)).rejects.toThrow(/cannot reach .*ECONNREFUSED.*lacks everything.*Check the network/);
  });

  it('makes no request in offline mode, and says what is missing when the cache lacks the model', async () => {
    const dir = await resolveModelDir(TINY);
    server.log.length = 0;
    process.env.HF_HUB_OFFLINE = '1';
    expect(await resolveModelDir(TINY)).toBe(dir);
    await expect(resolveModelDir(FORTUNE)).rejects.toThrow(/offline mode is on \(HF_HUB_OFFLINE\).*HF_HUB_OFFLINE unset/);
    await expect(resolveModelDir(TINY, { revision: 'v9' })).rejects.toThrow(/revision 'v9'.*offline/);
    expect(requests()).toHaveLength(0);
    // A half-populated snapshot is not a hit: the weights link is gone.
    const { rm } = await import('node:fs/promises');
    await rm(join(dir, 'model.safetensors'));
    await expect(resolveModelDir(TINY)).rejects.toThrow(/lacks model\.safetensors/);
  });

  it('a warm cache costs one API request and no file transfer', async () => {
    await resolveModelDir(FORTUNE);
    server.log.length = 0;
    await resolveModelDir(FORTUNE);
    expect(requests().map((r) => `${r.method} ${r.path}`)).toEqual([`GET /api/models/${FORTUNE}/revision/main`]);
  });

  it('downloads a revision (tag and commit hash) into its own snapshot with its own ref', async () => {
    const main = await resolveModelDir(FORTUNE);
    const v1 = await resolveModelDir(FORTUNE, { revision: 'v1' });
    expect(v1).toBe(join(repoRoot(FORTUNE), 'snapshots', V1));
    expect(v1).not.toBe(main);
    expect(readFileSync(join(v1, 'config.json')).equals(tiny['config.json'])).toBe(true);
    expect(readFileSync(join(main, 'config.json')).equals(fortune['config.json'])).toBe(true);
    expect(readFileSync(join(repoRoot(FORTUNE), 'refs', 'v1'), 'utf8')).toBe(V1);
    // Asking by commit hash needs no ref, and offline it is found with none.
    process.env.HF_HUB_OFFLINE = '1';
    expect(await resolveModelDir(FORTUNE, { revision: V1 })).toBe(v1);
    expect(await resolveModelDir(FORTUNE, { revision: 'v1' })).toBe(v1);
  });

  it('two concurrent calls download each file once and both get the snapshot', async () => {
    const [a, b] = await Promise.all([resolveModelDir(FORTUNE), resolveModelDir(FORTUNE)]);
    expect(a).toBe(b);
    expect(requests('cdn').filter((r) => r.method === 'GET')).toHaveLength(1);
    expect(readFileSync(join(a, 'model.safetensors')).equals(fortune['model.safetensors'])).toBe(true);
  });

  it('takes over a download lock left behind by a killed process', async () => {
    const lock = join(cache, '.locks', 'models--nibble-test--tiny-random-gpt2', `${sha256(tiny['model.safetensors'])}.nibble.lock`);
    mkdirSync(join(lock, '..'), { recursive: true });
    writeFileSync(lock, '999999\n');
    const old = new Date(Date.now() - 60_000);
    utimesSync(lock, old, old);
    const dir = await resolveModelDir(TINY);
    expect(readFileSync(join(dir, 'model.safetensors')).equals(tiny['model.safetensors'])).toBe(true);
    expect(existsSync(lock)).toBe(false);
  });

  it('downloads every shard a sharded index names', async () => {
    const dir = await resolveModelDir('nibble-test/sharded');
    expect(readFileSync(join(dir, 'model-00001-of-00002.safetensors')).equals(shardA)).toBe(true);
    expect(readFileSync(join(dir, 'model-00002-of-00002.safetensors')).equals(shardB)).toBe(true);
    process.env.HF_HUB_OFFLINE = '1';
    expect(await resolveModelDir('nibble-test/sharded')).toBe(dir);
  });

  it('downloads exactly the files asked for', async () => {
    const dir = await resolveModelDir(FORTUNE, { files: ['config.json', 'README.md'] });
    expect(readdirSync(dir).sort()).toEqual(['README.md', 'config.json']);
    await expect(resolveModelDir(FORTUNE, { files: ['nope.json'] })).rejects.toThrow(/file 'nope\.json' is not in model 'nibble-test\/fortune-gpt2'/);
    await expect(resolveModelDir(FORTUNE, { files: ['../escape'] })).rejects.toThrow(/invalid file name/);
  });
});

describe('resolveModelDir: errors', () => {
  it('a missing repository, revision or file is a clear error (404/401)', async () => {
    await expect(resolveModelDir('nibble-test/does-not-exist')).rejects.toThrow(/model 'nibble-test\/does-not-exist' \(revision 'main'\) on http:\/\/127\.0\.0\.1:\d+ was not found \(HTTP 401\)/);
    await expect(resolveModelDir(TINY, { revision: 'no-such-branch' })).rejects.toThrow(/revision 'no-such-branch' does not exist in model 'nibble-test\/tiny-random-gpt2'.*HTTP 404/);
    await expect(resolveModelDir('nibble-test/no-config')).rejects.toThrow(/has no config\.json/);
    expect(existsSync(repoRoot('nibble-test/does-not-exist'))).toBe(false);
  });

  it('refuses pickle-only checkpoints before downloading anything', async () => {
    await expect(resolveModelDir('nibble-test/pickle-only')).rejects.toThrow(/only has pickle checkpoints \(pytorch_model\.bin\): nibble loads only safetensors/);
    await expect(resolveModelDir(FORTUNE, { files: ['pytorch_model.bin'] })).rejects.toThrow(/pickle/);
    expect(requests().filter((r) => r.path.includes('/resolve/'))).toHaveLength(0);
  });

  it('sends HF_TOKEN to the Hub only, and never shows it in an error', async () => {
    await expect(resolveModelDir(PRIVATE)).rejects.toThrow(/was not found \(HTTP 401\).*HF_TOKEN/);
    expect(requests('hub').some((r) => r.authorized)).toBe(false);
    process.env.HF_TOKEN = SECRET;
    server.log.length = 0;
    const dir = await resolveModelDir(PRIVATE);
    expect(statSync(join(dir, 'model.safetensors')).size).toBe(shardB.length);
    expect(requests('hub').filter((r) => r.path.includes(PRIVATE)).every((r) => r.authorized)).toBe(true);
    // The signed CDN URL needs no token, and must not receive it.
    expect(requests('cdn').length).toBeGreaterThan(0);
    expect(requests('cdn').some((r) => r.authorized)).toBe(false);
    // A wrong token: the error names the problem, not the token.
    process.env.HF_TOKEN = 'hf_wrongTokenValue_000';
    const err = await resolveModelDir(PRIVATE, { revision: 'other' }).catch((e: Error) => e);
    expect(String((err as Error).message)).toMatch(/HTTP 401/);
    expect(String((err as Error).message)).not.toContain('hf_wrongTokenValue_000');
    expect(JSON.stringify(err)).not.toContain('hf_wrongTokenValue_000');
  });

  it('an unreachable HF_ENDPOINT with an empty cache fails fast with a clear message', async () => {
    process.env.HF_ENDPOINT = 'http://127.0.0.1:9';
    await expect(resolveModelDir(TINY)).rejects.toThrow(/cannot reach http:\/\/127\.0\.0\.1:9/);
    process.env.HF_ENDPOINT = 'not a url';
    await expect(resolveModelDir(TINY)).rejects.toThrow(/HF_ENDPOINT 'not a url' is not a URL/);
  });
});

describe('resolveModelDir: interrupted and corrupt downloads', () => {
  const weights = () => fortune['model.safetensors'];
  const blob = () => join(repoRoot(FORTUNE), 'blobs', sha256(weights()));

  it('resumes a connection cut halfway with a Range request, and the blob verifies', async () => {
    server.faults.cut = { file: 'model.safetensors', afterBytes: 5_000_000, times: 2 };
    const dir = await resolveModelDir(FORTUNE);
    const gets = requests('cdn').filter((r) => r.method === 'GET');
    expect(gets).toHaveLength(3);
    expect(gets[0].range).toBeUndefined();
    const starts = gets.slice(1).map((g) => Number(/^bytes=(\d+)-$/.exec(g.range ?? '')?.[1]));
    expect(starts[0]).toBeGreaterThan(0);
    expect(starts[1]).toBeGreaterThan(starts[0]);
    expect(readFileSync(join(dir, 'model.safetensors')).equals(weights())).toBe(true);
    expect(existsSync(blob() + '.incomplete')).toBe(false);
  });

  it('gives up after bounded retries leaving only an .incomplete file, and the next call resumes it', async () => {
    server.faults.cut = { file: 'model.safetensors', afterBytes: 1_000_000, times: 1_000 };
    await expect(resolveModelDir(FORTUNE)).rejects.toThrow(/failed after 5 attempts.*next call resumes/);
    expect(requests('cdn').filter((r) => r.method === 'GET')).toHaveLength(5);
    // Nothing looks complete: no blob under its final name, no snapshot link, no ref.
    expect(existsSync(blob())).toBe(false);
    expect(existsSync(join(repoRoot(FORTUNE), 'snapshots', MAIN, 'model.safetensors'))).toBe(false);
    expect(existsSync(join(repoRoot(FORTUNE), 'refs', 'main'))).toBe(false);
    const partial = statSync(blob() + '.incomplete').size;
    expect(partial).toBeGreaterThan(0);
    expect(partial).toBeLessThan(weights().length);
    process.env.HF_HUB_OFFLINE = '1';
    await expect(resolveModelDir(FORTUNE)).rejects.toThrow(/lacks/);
    delete process.env.HF_HUB_OFFLINE;

    server.resetFaults();
    server.log.length = 0;
    const dir = await resolveModelDir(FORTUNE);
    const gets = requests('cdn').filter((r) => r.method === 'GET');
    expect(gets.map((g) => g.range)).toEqual([`bytes=${partial}-`]);
    expect(readFileSync(join(dir, 'model.safetensors')).equals(weights())).toBe(true);
    expect(existsSync(blob() + '.incomplete')).toBe(false);
  });

  it('stops when the caller aborts, keeping the partial file for a later resume', async () => {
    const ac = new AbortController();
    const onProgress = (p: { file: string }) => { if (p.file === 'model.safetensors') ac.abort(new Error('user gave up')); };
    await expect(resolveModelDir(FORTUNE, { signal: ac.signal, onProgress })).rejects.toThrow(/user gave up/);
    expect(existsSync(blob())).toBe(false);
    expect(existsSync(join(repoRoot(FORTUNE), 'snapshots', MAIN, 'model.safetensors'))).toBe(false);
    expect(readdirSync(join(cache, '.locks', 'models--nibble-test--fortune-gpt2'))).toEqual([]);
    const dir = await resolveModelDir(FORTUNE);
    expect(readFileSync(join(dir, 'model.safetensors')).equals(weights())).toBe(true);
  });

  it('rejects bytes that do not match the announced sha256 and keeps nothing', async () => {
    server.faults.corrupt = 'model.safetensors';
    await expect(resolveModelDir(FORTUNE)).rejects.toThrow(/download of 'model\.safetensors' from 'nibble-test\/fortune-gpt2' is corrupt \(sha256 [0-9a-f]{64}, the server announced [0-9a-f]{64}\); it was deleted/);
    expect(existsSync(blob())).toBe(false);
    expect(existsSync(blob() + '.incomplete')).toBe(false);
    expect(existsSync(join(repoRoot(FORTUNE), 'snapshots', MAIN, 'model.safetensors'))).toBe(false);
    expect(existsSync(join(repoRoot(FORTUNE), 'refs', 'main'))).toBe(false);
    // Once the server is healthy the same call succeeds.
    server.resetFaults();
    const dir = await resolveModelDir(FORTUNE);
    expect(realpathSync(join(dir, 'model.safetensors'))).toBe(blob());
  });

  it('rejects a small file whose git blob id does not match', async () => {
    server.faults.corrupt = 'config.json';
    await expect(resolveModelDir(TINY)).rejects.toThrow(/'config\.json'.*corrupt \(git blob id [0-9a-f]{40}, the server announced [0-9a-f]{40}\)/);
    expect(readdirSync(join(repoRoot(TINY), 'blobs'))).toEqual([]);
  });
});
