// Tokenizer ids must be Hugging Face's, whichever file layout the model folder uses.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AutoTokenizer } from '../lib/tokenizer.js';
import { embeddedModelsDir } from '../lib/paths.js';
import { HubServer, fakeCommit, readModelDir } from './helpers/hub-server.js';

const fixtures = join(__dirname, 'fixtures');
const fast = AutoTokenizer.fromPretrainedSync(join(embeddedModelsDir, 'fortune-gpt2'));
const slow = AutoTokenizer.fromPretrainedSync(join(fixtures, 'gpt2-tokenizer'));

// Reference ids of GPT-2's encoding. The first three are Hugging Face's (reference README);
// the others were produced by an independent implementation of the same encoding (OpenAI's
// r50k_base tables, as shipped in the npm package gpt-tokenizer), not by this code.
const KNOWN: [string, number[]][] = [
  ['The future of AI is', [464, 2003, 286, 9552, 318]],
  ['Hello world', [15496, 995]],
  ['<|endoftext|>', [50256]],
  ['emoji 🎉🚀 family 👨‍👩‍👧‍👦 flags 🇫🇷 skin 👍🏽', [368, 31370, 12520, 236, 231, 8582, 248, 222, 1641, 50169, 101, 447, 235, 41840, 102, 447,
    235, 41840, 100, 447, 235, 41840, 99, 9701, 12520, 229, 104, 8582, 229, 115, 4168, 50169, 235, 8582, 237, 121]],
  ['whitespace   runs\t\ttabs\n\n\nnewlines  \n  mixed   ', [1929, 2737, 10223, 220, 220, 4539, 197, 197, 8658, 82, 628, 198, 3605, 6615,
    220, 220, 198, 220, 7668, 220, 220, 220]],
  ['héllo wörld — naïve café', [71, 2634, 18798, 266, 30570, 335, 851, 41492, 40304]],
  ["contractions: don't, I'm, we'll", [28484, 507, 25, 836, 470, 11, 314, 1101, 11, 356, 1183]],
  ['\u0000\u0001 control \u007f chars', [188, 189, 1630, 220, 221, 34534]],
];

const STRINGS = [
  'The future of AI is',
  'Hello world',
  '<|endoftext|>',
  'a<|endoftext|>b <|endoftext|> c',
  'héllo wörld — naïve café, Ελληνικά, русский, 日本語のテキスト, 한국어',
  'emoji 🎉🚀 family 👨‍👩‍👧‍👦 flags 🇫🇷 skin 👍🏽',
  'whitespace   runs\t\ttabs\n\n\nnewlines  \n  mixed   ',
  "   leading and trailing   ",
  "contractions: don't, I'm, we'll, they've, she'd, it's",
  'numbers 1234567890 3.14159 -42 1e-5',
  'code: fn(x) { return x**2; } // ok?!',
  '\u0000\u0001 control \u007f chars',
  'a'.repeat(300),
  '',
];

describe('AutoTokenizer', () => {
  it('gives Hugging Face ids for known strings, from both layouts', () => {
    for (const [s, ids] of KNOWN) {
      expect(fast.encode(s), s).toEqual(ids);
      expect(slow.encode(s), s).toEqual(ids);
    }
  });

  it('tokenizer.json and vocab.json + merges.txt agree on unicode, emoji, whitespace, special tokens', () => {
    for (const s of STRINGS) expect(slow.encode(s), JSON.stringify(s)).toEqual(fast.encode(s));
    // Non-trivial: the emoji string is split into byte-level pieces, more ids than characters.
    expect(fast.encode(STRINGS[5]!).length).toBeGreaterThan(10);
    // A special token inside text becomes its single id.
    expect(fast.encode('a<|endoftext|>b')).toEqual([64, 50256, 65]);
  });

  it('round-trips every test string', () => {
    for (const s of STRINGS) {
      expect(fast.decode(fast.encode(s))).toBe(s);
      expect(slow.decode(slow.encode(s))).toBe(s);
    }
  });

  it('encodes the validation text to 35,490 tokens (Python count) and decodes it back', () => {
    const text = readFileSync(join(fixtures, 'fortunes-val.txt'), 'utf8');
    const ids = fast.encode(text);
    expect(ids.length).toBe(35490);
    expect(slow.encode(text)).toEqual(ids);
    expect(fast.decode(ids)).toBe(text);
    expect(ids.filter((i) => i === 50256).length).toBe(text.split('<|endoftext|>').length - 1);
  });

  it('knows its special tokens and vocabulary size', () => {
    for (const t of [fast, slow]) {
      expect(t.vocabSize).toBe(50257);
      expect(t.eosTokenId).toBe(50256);
      expect(t.bosTokenId).toBe(50256);
      expect(t.padTokenId).toBeNull();
      expect(t.allSpecialIds).toEqual([50256]);
      expect(t.tokenize('Hello World')).toEqual(['Hello', 'ĠWorld']);
      expect(t.idToToken(995)).toBe('Ġworld');
      expect(t.tokenToId('Ġworld')).toBe(995);
    }
  });

  it('decodes with and without special tokens; clean-up of spaces only on request', () => {
    const ids = fast.encode('<|endoftext|>Hello world .<|endoftext|>');
    expect(fast.decode(ids)).toBe('<|endoftext|>Hello world .<|endoftext|>');
    expect(fast.decode(ids, { skipSpecialTokens: true })).toBe('Hello world .');
    expect(fast.decode(ids, { skipSpecialTokens: true, cleanUpTokenizationSpaces: true })).toBe('Hello world.');
    expect(fast.decode([])).toBe('');
    expect(fast.decode(Int32Array.from([15496, 995]))).toBe('Hello world');
    expect(fast.decode([50256], { skipSpecialTokens: true })).toBe('');
    expect(fast.batchDecode([[15496], [995]])).toEqual(['Hello', ' world']);
  });

  it('a character split across tokens decodes to U+FFFD until complete', () => {
    const ids = fast.encode('🎉');
    expect(ids.length).toBeGreaterThan(1);
    expect(fast.decode(ids.slice(0, 1))).toContain('\uFFFD');
    expect(fast.decode(ids)).toBe('🎉');
  });

  it('batch-encodes with left padding (default) and right padding, with attention masks', () => {
    const texts = ['Hello world', 'The future of AI is', ''];
    const left = fast.batchEncode(texts);
    expect(left.inputIds).toEqual([
      [50256, 50256, 50256, 15496, 995],
      [464, 2003, 286, 9552, 318],
      [50256, 50256, 50256, 50256, 50256],
    ]);
    expect(left.attentionMask).toEqual([[0, 0, 0, 1, 1], [1, 1, 1, 1, 1], [0, 0, 0, 0, 0]]);
    const right = fast.batchEncode(texts.slice(0, 2), { paddingSide: 'right' });
    expect(right.inputIds[0]).toEqual([15496, 995, 50256, 50256, 50256]);
    expect(right.attentionMask[0]).toEqual([1, 1, 0, 0, 0]);
    const cut = fast.batchEncode(texts.slice(0, 2), { maxLength: 3 });
    expect(cut.inputIds).toEqual([[50256, 15496, 995], [464, 2003, 286]]);
    expect(() => fast.batchEncode(texts.slice(0, 2), { padding: false })).toThrow(/different lengths/);
  });

  it('fromPretrained() and fromPretrained("fortune-gpt2") load the embedded tokenizer', async () => {
    for (const t of [await AutoTokenizer.fromPretrained(), await AutoTokenizer.fromPretrained('fortune-gpt2')]) {
      expect(t.encode('The future of AI is')).toEqual([464, 2003, 286, 9552, 318]);
    }
  });

  describe('bad input gives a clear error', () => {
    it('missing folder', async () => {
      await expect(AutoTokenizer.fromPretrained(join(fixtures, 'no-such-model'))).rejects.toThrow(/no-such-model' is neither an existing folder nor a valid Hugging Face Hub id/);
      expect(() => AutoTokenizer.fromPretrainedSync(join(fixtures, 'no-such-model'))).toThrow(/no-such-model' is not a local folder/);
      await expect(AutoTokenizer.fromPretrained('')).rejects.toThrow(/expected a model folder, a Hub id/);
    });
    it('folder without tokenizer files', async () => {
      await expect(AutoTokenizer.fromPretrained(join(fixtures, 'tiny-random-gpt2'))).rejects.toThrow(/tiny-random-gpt2 has neither tokenizer.json nor vocab.json \+ merges.txt/);
    });
    it('malformed vocab.json / merges.txt name the file', async () => {
      const dir = mkdtempSync(join(tmpdir(), 'nibble-tok-'));
      writeFileSync(join(dir, 'vocab.json'), '{"a": 0, "b": 1, "ab": 2');
      writeFileSync(join(dir, 'merges.txt'), '#version: 0.2\na b\n');
      await expect(AutoTokenizer.fromPretrained(dir)).rejects.toThrow(/vocab.json is not valid JSON/);
      writeFileSync(join(dir, 'vocab.json'), '{"a": 0, "b": 1, "ab": 2}');
      writeFileSync(join(dir, 'merges.txt'), '#version: 0.2\na b c\n');
      await expect(AutoTokenizer.fromPretrained(dir)).rejects.toThrow(/merges.txt:2: expected two symbols separated by one space/);
      writeFileSync(join(dir, 'merges.txt'), '#version: 0.2\na x\n');
      await expect(AutoTokenizer.fromPretrained(dir)).rejects.toThrow(/merges.txt:2: merge "a x" uses a symbol missing from vocab.json/);
      writeFileSync(join(dir, 'vocab.json'), '{"a": 0, "b": -1}');
      await expect(AutoTokenizer.fromPretrained(dir)).rejects.toThrow(/token "b" has id -1/);
      rmSync(dir, { recursive: true, force: true });
    });
    it('non-string text', () => {
      expect(() => fast.encode(42 as unknown as string)).toThrow(/text must be a string, got 42/);
      expect(() => fast.batchEncode(['ok', null as unknown as string])).toThrow(/texts\[1\] must be a string/);
    });
    it('ids that are not token ids', () => {
      expect(() => fast.decode([15496, 50257])).toThrow(/ids\[1\] = 50257 is not a token id \(integers 0..50256\)/);
      expect(() => fast.decode([1.5])).toThrow(/ids\[0\] = 1.5/);
      expect(() => fast.decode([-1])).toThrow(/ids\[0\] = -1/);
      expect(() => fast.decode('abc' as unknown as number[])).toThrow(/ids must be an array/);
    });
    it('bad padding options', () => {
      expect(() => fast.batchEncode(['a'], { paddingSide: 'middle' as 'left' })).toThrow(/paddingSide/);
      expect(() => fast.batchEncode(['a'], { maxLength: 0 })).toThrow(/maxLength must be a positive integer/);
    });
  });
});

describe('AutoTokenizer from a Hub id (local Hub stand-in)', () => {
  const tiny = readModelDir(join(fixtures, 'tiny-random-gpt2'));
  const slowFiles = readModelDir(join(fixtures, 'gpt2-tokenizer'));
  const fortune = readModelDir(join(embeddedModelsDir, 'fortune-gpt2'));
  const server = new HubServer({
    'nibble-test/gpt2-slow': { revisions: { main: { commit: fakeCommit('slow tok'), files: { ...tiny, ...slowFiles } } } },
    'nibble-test/gpt2-fast': {
      revisions: { main: { commit: fakeCommit('fast tok'), files: { ...tiny, 'tokenizer.json': fortune['tokenizer.json']!, 'tokenizer_config.json': fortune['tokenizer_config.json']! } } },
    },
  });
  const cacheDir = mkdtempSync(join(tmpdir(), 'nibble-tok-hub-'));
  beforeAll(async () => {
    await server.start();
  });
  afterAll(async () => {
    await server.stop();
    rmSync(cacheDir, { recursive: true, force: true });
  });

  it('downloads tokenizer.json or vocab.json + merges.txt into the cache and gives HF ids', async () => {
    const opts = { endpoint: server.hubUrl, cacheDir, token: '' };
    for (const repo of ['nibble-test/gpt2-slow', 'nibble-test/gpt2-fast']) {
      const tok = await AutoTokenizer.fromPretrained(repo, opts);
      expect(tok.encode('The future of AI is')).toEqual([464, 2003, 286, 9552, 318]);
      expect(tok.encode('<|endoftext|>')).toEqual([50256]);
    }
    // A second load is served from the cache, even offline.
    const again = await AutoTokenizer.fromPretrained('nibble-test/gpt2-slow', { ...opts, offline: true });
    expect(again.encode('Hello world')).toEqual([15496, 995]);
  });

  it('an unknown repository is a clear error', async () => {
    await expect(AutoTokenizer.fromPretrained('nibble-test/missing', { endpoint: server.hubUrl, cacheDir, token: '' })).rejects.toThrow(
      /AutoTokenizer.fromPretrained: .*nibble-test\/missing/,
    );
  });
});
