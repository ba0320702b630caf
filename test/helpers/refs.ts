// The peers' reference outputs (transformers + bitsandbytes), copied from shared/reference.
import { readSafetensors } from '../../lib/io/safetensors.js';

const file = readSafetensors('test/fixtures/hf_gpt2_refs.safetensors');
export const refMeta = JSON.parse(file.metadata.meta!) as Record<string, any>;
export const refs = file.tensors;

export async function refFloat(name: string): Promise<Float32Array> {
  const t = refs.get(name);
  if (!t) throw new Error(`reference tensor ${name} missing`);
  return t.toFloat32();
}

export async function refInts(name: string): Promise<number[]> {
  const t = refs.get(name);
  if (!t) throw new Error(`reference tensor ${name} missing`);
  return t.toArray();
}

export function maxAbsDiff(a: Float32Array, b: Float32Array): number {
  if (a.length !== b.length) throw new Error(`length ${a.length} vs ${b.length}`);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

export function argmaxRows(x: Float32Array, cols: number): number[] {
  const out: number[] = [];
  for (let r = 0; r < x.length / cols; r++) {
    let best = 0;
    for (let c = 1; c < cols; c++) if (x[r * cols + c]! > x[r * cols + best]!) best = c;
    out.push(best);
  }
  return out;
}
