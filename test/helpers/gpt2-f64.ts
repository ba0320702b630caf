// An independent GPT-2 forward in plain float64 JavaScript (no native kernels), used as a
// second reference: shared/reference's fortune-gpt2 logits do not correspond to the
// shipped checkpoint (see test/gpt2.test.ts), so the fortune model is also checked against
// this straightforward transcription of the GPT-2 equations.
import { openCheckpoint } from '../../lib/io/safetensors.js';
import { loadGPT2Config } from '../../lib/models/gpt2-config.js';

export async function gpt2LogitsF64(dir: string, ids: number[]): Promise<Float64Array> {
  const cfg = loadGPT2Config(dir);
  const ck = openCheckpoint(dir);
  const w = async (n: string) => Float64Array.from(await ck.get('transformer.' + n).toFloat32());
  const { nEmbd: C, nHead: H, nLayer, vocabSize: V, nInner: F, layerNormEpsilon: eps } = cfg;
  const D = C / H, T = ids.length;
  const wte = await w('wte.weight'), wpe = await w('wpe.weight');
  let x = ids.map((id, t) => Float64Array.from({ length: C }, (_, c) => wte[id * C + c]! + wpe[t * C + c]!));
  const ln = (v: Float64Array, g: Float64Array, b: Float64Array) => {
    const m = v.reduce((a, c) => a + c, 0) / C;
    const s = v.reduce((a, c) => a + (c - m) ** 2, 0) / C;
    return v.map((c, i) => ((c - m) / Math.sqrt(s + eps)) * g[i]! + b[i]!);
  };
  // Conv1D: y = x W + b with W stored [in, out]
  const conv = (v: Float64Array, W: Float64Array, b: Float64Array, inF: number, outF: number) => {
    const y = Float64Array.from(b);
    for (let i = 0; i < inF; i++) for (let o = 0; o < outF; o++) y[o] += v[i]! * W[i * outF + o]!;
    return y;
  };
  for (let l = 0; l < nLayer; l++) {
    const p = `h.${l}.`;
    const [l1w, l1b, caw, cab, cpw, cpb, l2w, l2b, fw, fb, pw, pb] = await Promise.all(
      ['ln_1.weight', 'ln_1.bias', 'attn.c_attn.weight', 'attn.c_attn.bias', 'attn.c_proj.weight', 'attn.c_proj.bias',
        'ln_2.weight', 'ln_2.bias', 'mlp.c_fc.weight', 'mlp.c_fc.bias', 'mlp.c_proj.weight', 'mlp.c_proj.bias'].map((n) => w(p + n)));
    const qkv = x.map((v) => conv(ln(v, l1w!, l1b!), caw!, cab!, C, 3 * C));
    const att = x.map(() => new Float64Array(C));
    for (let h = 0; h < H; h++)
      for (let t = 0; t < T; t++) {
        const s = [];
        for (let j = 0; j <= t; j++) {
          let d = 0;
          for (let k = 0; k < D; k++) d += qkv[t]![h * D + k]! * qkv[j]![C + h * D + k]!;
          s.push(d / Math.sqrt(D));
        }
        const mx = Math.max(...s);
        const e = s.map((v) => Math.exp(v - mx));
        const z = e.reduce((a, c) => a + c, 0);
        for (let j = 0; j <= t; j++) for (let k = 0; k < D; k++) att[t]![h * D + k] += (e[j]! / z) * qkv[j]![2 * C + h * D + k]!;
      }
    x = x.map((v, t) => { const o = conv(att[t]!, cpw!, cpb!, C, C); return v.map((c, i) => c + o[i]!); });
    x = x.map((v) => {
      const f = conv(ln(v, l2w!, l2b!), fw!, fb!, C, F).map((u) => 0.5 * u * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (u + 0.044715 * u ** 3))));
      const o = conv(f, pw!, pb!, F, C);
      return v.map((c, i) => c + o[i]!);
    });
  }
  const lfw = await w('ln_f.weight'), lfb = await w('ln_f.bias');
  const out = new Float64Array(T * V);
  x.forEach((v, t) => {
    const h = ln(v, lfw, lfb);
    for (let o = 0; o < V; o++) { let d = 0; for (let c = 0; c < C; c++) d += h[c]! * wte[o * C + c]!; out[t * V + o] = d; }
  });
  ck.close();
  return out;
}
