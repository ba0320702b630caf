// Sampling on the GPU. When a step's logits live on a CUDA device, the logits processors and
// the choice of the token run there (native/cuda/sampling.cu, one block per row) and only the
// chosen ids cross to the host, instead of the whole [B, V] logits. The random numbers stay on
// the host: every row that samples takes one rng.nextFloat(), in row order, as the host path
// does, so a seed consumes the stream identically on either path.
//
// A row the kernel does not settle (a NaN in the logits; when sampling, a +inf score or no
// finite score at all) sends the whole step back to the host path with the generator rewound,
// which then gives exactly the host's tokens or the host's error.
// NIBBLE_DEVICE_SAMPLING=0 turns this off (the host path always runs).
import type { DeviceSamplingConfig, NativeBinding } from '../../binding.js';
import { native } from '../native.js';
import type { Tensor } from '../tensor.js';
import type { GenerationConfig } from './generation-config.js';
import type { Xoshiro128 } from './sampler.js';

/** The options the GPU applies, from a resolved generation config (the same rules as buildLogitsProcessors). */
export function deviceSamplingConfig(cfg: GenerationConfig): DeviceSamplingConfig {
  return {
    doSample: cfg.doSample,
    temperature: cfg.temperature,
    topK: cfg.topK,
    topP: cfg.topP,
    minP: cfg.minP,
    repetitionPenalty: cfg.repetitionPenalty,
    minTokensToKeep: 1,
  };
}

/** The rows' sequences, concatenated, with rows.length + 1 offsets. */
export function packHistories(rows: readonly number[], seqs: readonly (readonly number[])[]): { history: Int32Array; offsets: Int32Array } {
  const offsets = new Int32Array(rows.length + 1);
  let total = 0;
  rows.forEach((b, i) => {
    total += seqs[b]!.length;
    offsets[i + 1] = total;
  });
  const history = new Int32Array(total);
  rows.forEach((b, i) => history.set(seqs[b]!, offsets[i]!));
  return { history, offsets };
}

/** Whether an on-by-default switch is left on: 0, false, off or no (any case) turn it off. */
export function switchOn(name: string, env: Record<string, string | undefined> = process.env): boolean {
  const v = (env[name] ?? '').trim().toLowerCase();
  return !(v === '0' || v === 'false' || v === 'off' || v === 'no');
}

/** Whether the environment allows sampling on the device (NIBBLE_DEVICE_SAMPLING=0 forbids it). */
export function deviceSamplingAllowed(env: Record<string, string | undefined> = process.env): boolean {
  return switchOn('NIBBLE_DEVICE_SAMPLING', env);
}

export class DeviceSampler {
  private readonly cfg: DeviceSamplingConfig;
  /** Whether a step's sampling reads the rows' token histories (the repetition penalty does). */
  readonly usesHistory: boolean;

  private constructor(
    private readonly binding: NativeBinding,
    config: GenerationConfig,
  ) {
    this.cfg = deviceSamplingConfig(config);
    this.usesHistory = config.repetitionPenalty !== 1;
  }

  /** A sampler for this generation, or null when device sampling is off or the addon lacks it. */
  static create(config: GenerationConfig, env: Record<string, string | undefined> = process.env): DeviceSampler | null {
    if (!deviceSamplingAllowed(env)) return null;
    let binding: NativeBinding;
    try {
      binding = native();
    } catch {
      return null;
    }
    if (typeof binding.sampleTokens !== 'function') return null;
    return new DeviceSampler(binding, config);
  }

  /** True when these logits are on a CUDA device (anything else takes the host path). */
  accepts(logits: Tensor): boolean {
    const device: unknown = logits.device;
    return typeof device === 'string' && device.startsWith('cuda');
  }

  /**
   * One token for each batch row in `rows` (the unfinished ones, ascending), from the last
   * position of `logits`; `seqs[b]` is row b's sequence so far (the repetition penalty's
   * history). Takes one rng draw per row when sampling. Returns null, with the generator
   * rewound, when the host path must do this step. The kernel is queued before this returns
   * (the promise only waits for the ids); with `feed` (int32 [B] on the logits' GPU) each
   * chosen id is also written to feed[row] there, for a step queued right after.
   */
  async sample(logits: Tensor, rows: readonly number[], seqs: readonly (readonly number[])[], rng: Xoshiro128 | null, feed: Tensor | null = null): Promise<number[] | null> {
    const saved = rng?.state();
    let u: Float64Array | null = null;
    if (this.cfg.doSample) {
      if (!rng) throw new Error('device sampling: doSample needs a generator');
      u = new Float64Array(rows.length);
      for (let i = 0; i < rows.length; i++) u[i] = rng.nextFloat();
    }
    const packed = this.usesHistory ? packHistories(rows, seqs) : null;
    const { ids, status } = await this.binding.sampleTokens(
      logits, Int32Array.from(rows), u, packed?.history ?? null, packed?.offsets ?? null, this.cfg, feed,
    );
    if (status.some((s) => s !== 0)) {
      if (rng && saved) rng.restore(saved);
      return null;
    }
    return Array.from(ids);
  }
}
