// The whole-forward path for GPT-2: one native call per forward instead of one per op. On a
// GPU: native/cuda/gpt2_forward.cu, and a CUDA graph per decode step. On the CPU: one queued
// task running the per-op path's kernels in its order (native/cpu/gpt2_forward_cpu.cc), which
// removes the ~150 binding calls, allocations and disposes of a decode step. Used when every
// Linear is a plain Linear, a Linear4bit or a Linear8bitLt with a bias, and the unquantized
// parameters share one dtype on one device; anything else takes the per-op path. The quantized layers keep
// their modules' arithmetic (native/cuda/gpt2_qlinear.cu; on the CPU the same kernels).
// NIBBLE_CUDA_FUSED=0 / NIBBLE_CPU_FUSED=0 turn it off (the checks compare the two paths).
import { native } from '../native.js';
import { Linear } from '../nn/Linear.js';
import { Linear4bit } from '../nn/Linear4bit.js';
import { Linear8bitLt } from '../nn/Linear8bitLt.js';
import { DTYPE_CODES, type Tensor } from '../tensor.js';
import type { GPT2Block } from './gpt2.js';

export interface FusedModelParts {
  wte: Tensor;
  wpe: Tensor;
  blocks: GPT2Block[];
  lnF: { weight: Tensor; bias: Tensor };
  lmHead: unknown;
  nHead: number;
  eps: number;
}

const releasePlan = new FinalizationRegistry<number>((id) => {
  try {
    native().gpt2PlanRelease(id);
  } catch {
    // the addon is going away with the process
  }
});

/** A native plan holding the model's weights, or null when the model does not qualify. */
export class GPT2Plan {
  private constructor(readonly id: number) {}

  static tryCreate(owner: object, m: FusedModelParts): GPT2Plan | null {
    const cpu = m.wte.device === 'cpu';
    if (process.env[cpu ? 'NIBBLE_CPU_FUSED' : 'NIBBLE_CUDA_FUSED'] === '0') return null;
    const linears = m.blocks.flatMap((b) => [b.cAttn, b.attnProj, b.cFc, b.mlpProj]);
    if (!linears.every((l) => (l instanceof Linear || l instanceof Linear4bit || l instanceof Linear8bitLt) && l.bias)) return null;
    if (!(m.lmHead instanceof Linear) || (m.lmHead as Linear).bias) return null;
    const params: unknown[] = [m.wte, m.wpe];
    const plain: Tensor[] = [m.wte, m.wpe];
    const quant: Tensor[] = [];
    const layer = (l: unknown): unknown => {
      if (l instanceof Linear) {
        plain.push(l.weight);
        return l.weight;
      }
      if (l instanceof Linear8bitLt) {
        quant.push(l.CB, l.SCB);
        return { kind: 'int8', CB: l.CB, SCB: l.SCB, threshold: l.threshold };
      }
      const q = (l as Linear4bit).quantState;
      quant.push((l as Linear4bit).weight, q.absmax, ...[q.state2?.absmax, q.state2?.code, q.offset].filter((t): t is Tensor => !!t));
      return {
        kind: '4bit', packed: (l as Linear4bit).weight, absmax: q.absmax, nestedAbsmax: q.state2?.absmax ?? null,
        nestedCode: q.state2?.code ?? null, offset: q.offset, blocksize: q.blocksize, quantType: q.quantType === 'nf4' ? 1 : 0,
        computeDtype: DTYPE_CODES[(l as Linear4bit).computeDtype ?? 'float32'],
      };
    };
    for (const b of m.blocks) {
      const biases = [b.cAttn, b.attnProj, b.cFc, b.mlpProj].map((l) => (l as unknown as { bias: Tensor }).bias);
      plain.push(b.ln1.weight, b.ln1.bias, b.ln2.weight, b.ln2.bias, ...biases);
      params.push(b.ln1.weight, b.ln1.bias, layer(b.cAttn), biases[0], layer(b.attnProj), biases[1], b.ln2.weight, b.ln2.bias,
        layer(b.cFc), biases[2], layer(b.mlpProj), biases[3]);
    }
    params.push(m.lnF.weight, m.lnF.bias, (m.lmHead as Linear).weight);
    plain.push(m.lnF.weight, m.lnF.bias, (m.lmHead as Linear).weight);
    if (plain.some((t) => t.dtype !== m.wte.dtype || t.device !== m.wte.device)) return null;
    if (quant.some((t) => t.device !== m.wte.device)) return null;
    const plan = new GPT2Plan(native().gpt2Plan(params, m.nHead, m.eps));
    releasePlan.register(owner, plan.id, plan);
    return plan;
  }

  /** Binds a cache's per-layer tensors once; the id is released with the cache. */
  bindCache(k: Tensor[], v: Tensor[]): number {
    return native().gpt2PlanCache(this.id, k, v);
  }

  forward(cacheId: number, logits: Tensor, ids: Int32Array, pos: Int32Array, mask: Int32Array | null, past: number, B: number, T: number, lastOnly: boolean, deviceIds: Tensor | null = null): void {
    native().gpt2PlanForward(this.id, cacheId, logits, deviceIds ? null : ids, pos, mask, past, B, T, lastOnly, deviceIds);
  }

  release(): void {
    releasePlan.unregister(this);
    native().gpt2PlanRelease(this.id);
  }
}
