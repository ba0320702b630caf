// Allocating wrappers over the native kernels: each takes input tensors, allocates the
// output on the same device and enqueues the kernel. The model code reads like math.
import { native } from './native.js';
import { Tensor } from './tensor.js';

const outLike = (shape: readonly number[], like: Tensor) => Tensor.empty(shape, 'float32', like.device);

export function embedding(wte: Tensor, wpe: Tensor, ids: Tensor, pos: Tensor): Tensor {
  const out = outLike([ids.numel, wte.shape[1]!], wte);
  native().embedding(out, wte, wpe, ids, pos);
  return out;
}

export function layerNorm(x: Tensor, weight: Tensor, bias: Tensor, eps: number): Tensor {
  const out = outLike(x.shape, x);
  native().layernorm(out, x, weight, bias, eps);
  return out;
}

/** x[..., K] . weight[N, K]^T + bias */
export function linear(x: Tensor, weight: Tensor, bias: Tensor | null): Tensor {
  const out = outLike([...x.shape.slice(0, -1), weight.shape[0]!], x);
  native().linear(out, x, weight, bias);
  return out;
}

export function geluNew(x: Tensor): Tensor {
  const out = outLike(x.shape, x);
  native().geluNew(out, x);
  return out;
}

export function add(a: Tensor, b: Tensor): Tensor {
  const out = outLike(a.shape, a);
  native().add(out, a, b);
  return out;
}

/** In place: a += b (the residual stream). */
export function addInPlace(a: Tensor, b: Tensor): Tensor {
  native().add(a, a, b);
  return a;
}

export function softmax(x: Tensor): Tensor {
  const out = outLike(x.shape, x);
  native().softmax(out, x);
  return out;
}

/** Causal attention over qkv [B,T,3C] with the cache [B,H,Tmax,D]; returns [B,T,C]. */
export function attention(qkv: Tensor, kCache: Tensor, vCache: Tensor, mask: Tensor | null, past: number): Tensor {
  const [B, T, C3] = qkv.shape as [number, number, number];
  const out = outLike([B, T, C3 / 3], qkv);
  native().attention(out, qkv, kCache, vCache, mask, past);
  return out;
}
