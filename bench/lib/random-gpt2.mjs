// Writes a GPT-2-shaped checkpoint of random weights straight to disk, one tensor at a time,
// so even a GPT-2-XL-shaped float32 file (6.2 GB) never has to fit in memory.
import { closeSync, existsSync, mkdirSync, openSync, renameSync, writeFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';

export const SHAPES = {
  '124M': { nLayer: 12, nEmbd: 768, nHead: 12 },
  XL: { nLayer: 48, nEmbd: 1600, nHead: 25 },
};

export function writeRandomGPT2(dir, { nLayer, nEmbd: C, nHead, vocab = 50257, nPos = 1024, dtype = 'float32' }) {
  if (existsSync(join(dir, 'model.safetensors'))) return dir;
  mkdirSync(dir, { recursive: true });
  const st = dtype === 'float32' ? 'F32' : 'F16';
  const es = dtype === 'float32' ? 4 : 2;
  const entries = [['transformer.wte.weight', [vocab, C], 0.02], ['transformer.wpe.weight', [nPos, C], 0.01]];
  for (let l = 0; l < nLayer; l++) {
    const p = `transformer.h.${l}.`;
    entries.push([p + 'ln_1.weight', [C], 'one'], [p + 'ln_1.bias', [C], 'zero'],
      [p + 'attn.c_attn.weight', [C, 3 * C], 0.02], [p + 'attn.c_attn.bias', [3 * C], 'zero'],
      [p + 'attn.c_proj.weight', [C, C], 0.02], [p + 'attn.c_proj.bias', [C], 'zero'],
      [p + 'ln_2.weight', [C], 'one'], [p + 'ln_2.bias', [C], 'zero'],
      [p + 'mlp.c_fc.weight', [C, 4 * C], 0.02], [p + 'mlp.c_fc.bias', [4 * C], 'zero'],
      [p + 'mlp.c_proj.weight', [4 * C, C], 0.02], [p + 'mlp.c_proj.bias', [C], 'zero']);
  }
  entries.push(['transformer.ln_f.weight', [C], 'one'], ['transformer.ln_f.bias', [C], 'zero']);
  const header = { __metadata__: { format: 'pt' } };
  let off = 0;
  for (const [name, shape] of entries) {
    const n = shape.reduce((a, b) => a * b, 1) * es;
    header[name] = { dtype: st, shape, data_offsets: [off, off + n] };
    off += n;
  }
  let h = Buffer.from(JSON.stringify(header));
  h = Buffer.concat([h, Buffer.alloc((8 - (h.length % 8)) % 8, 0x20)]);
  const tmp = join(dir, 'model.safetensors.partial');
  const fd = openSync(tmp, 'w');
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(h.length));
  writeSync(fd, len);
  writeSync(fd, h);
  let s = 0x9e3779b9;
  const f16 = new Float32Array(1), u16 = new Uint32Array(f16.buffer);
  for (const [, shape, kind] of entries) {
    const n = shape.reduce((a, b) => a * b, 1);
    const CH = 1 << 20;
    for (let i0 = 0; i0 < n; i0 += CH) {
      const m = Math.min(CH, n - i0);
      const f = new Float32Array(m);
      if (kind === 'one') f.fill(1);
      else if (kind !== 'zero')
        for (let i = 0; i < m; i++) {
          s ^= s << 13; s ^= s >>> 17; s ^= s << 5;
          const u = (s >>> 0) / 4294967296;
          s ^= s << 13; s ^= s >>> 17; s ^= s << 5;
          f[i] = (u + (s >>> 0) / 4294967296 - 1) * kind * 2.45; // triangular, std = kind
        }
      if (es === 4) writeSync(fd, new Uint8Array(f.buffer));
      else {
        const h16 = new Uint16Array(m);
        for (let i = 0; i < m; i++) { f16[0] = f[i]; const x = u16[0]; h16[i] = ((x >>> 16) & 0x8000) | ((((x >>> 23) & 0xff) - 112) << 10 & 0x7c00) | ((x >>> 13) & 0x3ff); if (f[i] === 0 || Math.abs(f[i]) < 6.2e-5) h16[i] = 0; }
        writeSync(fd, new Uint8Array(h16.buffer));
      }
    }
  }
  closeSync(fd);
  renameSync(tmp, join(dir, 'model.safetensors'));
  writeFileSync(join(dir, 'config.json'), JSON.stringify({
    model_type: 'gpt2', vocab_size: vocab, n_positions: nPos, n_embd: C, n_layer: nLayer, n_head: nHead,
    n_inner: null, activation_function: 'gelu_new', layer_norm_epsilon: 1e-5, tie_word_embeddings: true,
    bos_token_id: 50256, eos_token_id: 50256, dtype,
  }));
  return dir;
}
