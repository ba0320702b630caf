// The whole-forward CUDA path for GPT-2: one native call per forward instead of one per op
// (native/cuda/gpt2_forward.cu). Used when every linear is a plain Linear and all parameters
// share one dtype on one GPU; anything else (quantized linears) takes the per-op path.
// NIBBLE_CUDA_FUSED=0 turns it off (the GPU checks compare the two paths).
import { native } from '../native.js';
import { Linear } from '../nn/Linear.js';
import type { Tensor } from '../tensor.js';
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
    native().gpt2CudaPlanRelease(id);
  } catch {
    // the addon is going away with the process
  }
});

/** A native plan holding the model's weights, or null when the model does not qualify. */
export class GPT2CudaPlan {
  private constructor(readonly id: number) {}

  static tryCreate(owner: object, m: FusedModelParts): GPT2CudaPlan | null {
    if (process.env.NIBBLE_CUDA_FUSED === '0') return null;
    const linears = m.blocks.flatMap((b) => [b.cAttn, b.attnProj, b.cFc, b.mlpProj]);
    if (!linears.every((l) => l instanceof Linear && l.bias) || !(m.lmHead instanceof Linear) || (m.lmHead as Linear).bias) return null;
    const params: Tensor[] = [m.wte, m.wpe];
    for (const b of m.blocks) {
      const [a, p, f, q] = [b.cAttn, b.attnProj, b.cFc, b.mlpProj] as Linear[];
      params.push(b.ln1.weight, b.ln1.bias, a!.weight, a!.bias!, p!.weight, p!.bias!, b.ln2.weight, b.ln2.bias,
        f!.weight, f!.bias!, q!.weight, q!.bias!);
    }
    params.push(m.lnF.weight, m.lnF.bias, (m.lmHead as Linear).weight);
    if (params.some((t) => t.dtype !== m.wte.dtype || t.device !== m.wte.device)) return null;
    const plan = new GPT2CudaPlan(native().gpt2CudaPlan(params, m.nHead, m.eps));
    releasePlan.register(owner, plan.id, plan);
    return plan;
  }

  /** Binds a cache's per-layer tensors once; the id is released with the cache. */
  bindCache(k: Tensor[], v: Tensor[]): number {
    return native().gpt2CudaCache(this.id, k, v);
  }

  forward(cacheId: number, logits: Tensor, ids: Int32Array, pos: Int32Array, mask: Int32Array | null, past: number, B: number, T: number, lastOnly: boolean): void {
    native().gpt2CudaForward(this.id, cacheId, logits, ids, pos, mask, past, B, T, lastOnly);
  }

  release(): void {
    releasePlan.unregister(this);
    native().gpt2CudaPlanRelease(this.id);
  }
}
