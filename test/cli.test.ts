// The `nibble` command, run in-process through the same entry the bin uses.
import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it, vi } from 'vitest';
import { runCli } from '../lib/cli/run.js';
import { perplexity } from '../lib/evaluation/perplexity.js';
import { Tensor } from '../lib/tensor.js';
import type { CausalLM } from '../lib/models/types.js';
import { tempDir } from './helpers/tmp.js';

const tmp = tempDir();

async function cli(...argv: string[]): Promise<{ code: number; out: string; err: string }> {
  let out = '', err = '';
  const o = vi.spyOn(process.stdout, 'write').mockImplementation((s) => { out += String(s); return true; });
  const e = vi.spyOn(process.stderr, 'write').mockImplementation((s) => { err += String(s); return true; });
  try {
    return { code: await runCli(argv), out, err };
  } finally {
    o.mockRestore();
    e.mockRestore();
  }
}

describe('nibble CLI', () => {
  it('generate streams a seeded, reproducible continuation', async () => {
    const a = await cli('generate', 'The future of AI is', '--max-new-tokens', '12', '--seed', '5');
    const b = await cli('generate', 'The future of AI is', '--max-new-tokens', '12', '--seed', '5');
    expect(a.code).toBe(0);
    expect(a.out.startsWith('The future of AI is')).toBe(true);
    expect(a.out.length).toBeGreaterThan('The future of AI is'.length + 5);
    expect(a.out).toBe(b.out);
    const g = await cli('generate', 'The future of AI is', '--max-new-tokens', '3', '--greedy');
    expect(g.out).toBe('The future of AI is a great deal\n'); // tokens 257, 1049, 1730 (greedy, as test/gpt2.test.ts)
  });

  it('generate with quantization flags', async () => {
    const r = await cli('generate', 'Hello', '--max-new-tokens', '4', '--load-in-4bit', '--quant-type', 'nf4', '--double-quant', '--seed', '1');
    expect(r.code).toBe(0);
    expect(r.out.startsWith('Hello')).toBe(true);
  });

  it('inspect prints every module and the footprint before and after', async () => {
    const r = await cli('inspect', '--model', 'test/fixtures/tiny-random-gpt2', '--load-in-4bit', '--quant-type', 'nf4', '--double-quant');
    expect(r.out).toMatch(/transformer\.h\.1\.mlp\.c_proj\s+Linear4bit\s+uint8/);
    expect(r.out).toMatch(/transformer\.ln_f\s+LayerNorm\s+float32\s+\[64\]/);
    expect(r.out).toMatch(/memory footprint: before 672768 bytes .* after 328704 bytes/);
  });

  it('quantize writes a checkpoint that loads pre-quantized', async () => {
    const out = join(tmp, 'q8');
    const r = await cli('quantize', 'test/fixtures/tiny-random-gpt2', out, '--load-in-8bit');
    expect(r.code).toBe(0);
    expect(existsSync(join(out, 'model.safetensors'))).toBe(true);
    const i = await cli('inspect', '--model', out);
    expect(i.out).toMatch(/transformer\.h\.0\.attn\.c_attn\s+Linear8bitLt\s+int8/);
  });

  it('perplexity prints exp(mean NLL) and the token count', async () => {
    const file = join(tmp, 'text.txt');
    writeFileSync(file, 'Never put off till tomorrow what you can do today. '.repeat(60));
    const r = await cli('perplexity', '--file', file, '--window', '64');
    expect(r.out).toMatch(/^perplexity \d+\.\d{4} over \d+ predicted tokens \(\d+ windows of 64; \d+ tokens in the file\)/);
    expect(r.err).toMatch(/perplexity 100%/);
  });

  it('every error is one clear line with a non-zero exit', async () => {
    await expect(cli('frobnicate')).rejects.toThrow(/unknown command 'frobnicate'/);
    await expect(cli('generate', '--max-new-tokens', 'ten')).rejects.toThrow(/--max-new-tokens must be an integer, got 'ten'/);
    await expect(cli('generate', '--greedy', '--temperature', '0.7')).rejects.toThrow(/--greedy cannot be combined/);
    await expect(cli('generate', '--bogus')).rejects.toThrow(/generate: Unknown option '--bogus'/);
    await expect(cli('generate', '--quant-type', 'nf4')).rejects.toThrow(/need --load-in-4bit/);
    await expect(cli('generate', '--load-in-4bit', '--load-in-8bit')).rejects.toThrow(/choose one/);
    await expect(cli('perplexity', '--file', join(tmp, 'missing.txt'))).rejects.toThrow(/cannot read .*missing\.txt/);
    await expect(cli('quantize', 'test/fixtures/tiny-random-gpt2', join(tmp, 'x'))).rejects.toThrow(/give --load-in-4bit or --load-in-8bit/);
    expect((await cli('generate', '--help')).out).toMatch(/Usage: nibble generate/);
    expect((await cli('--help')).code).toBe(0);
  });
});

describe('perplexity method', () => {
  const fake = (V: number, logitFor: (prev: number) => Float32Array): CausalLM => ({
    config: { vocabSize: V, nPositions: 8 },
    device: 'cpu',
    async forward(ids) {
      const row = ids[0]!;
      const data = new Float32Array(row.length * V);
      row.forEach((id, t) => data.set(logitFor(id), t * V));
      return { logits: Tensor.from(data, [1, row.length, V]), pastKeyValues: { length: 0, capacity: 0, batchSize: 1, dispose() {} } };
    },
  });

  it('a uniform model has perplexity = vocabulary size; windows drop the partial tail', async () => {
    const r = await perplexity(fake(10, () => new Float32Array(10)), Array.from({ length: 21 }, (_, i) => i % 10));
    expect(r.windows).toBe(2);
    expect(r.predictedTokens).toBe(14);
    expect(r.perplexity).toBeCloseTo(10, 9);
  });

  it('a model that always predicts the next token has perplexity near 1', async () => {
    const r = await perplexity(fake(5, (prev) => Float32Array.from({ length: 5 }, (_, v) => (v === (prev + 1) % 5 ? 30 : 0))), Array.from({ length: 16 }, (_, i) => i % 5));
    expect(r.perplexity).toBeLessThan(1.001);
    expect(r.perplexity).toBeGreaterThanOrEqual(1);
  });

  it('rejects a text shorter than one window', async () => {
    await expect(perplexity(fake(5, () => new Float32Array(5)), [1, 2, 3])).rejects.toThrow(/fewer than one window of 8/);
  });
});
