// Types of the native addon (native/bindings/*.cc). Internal: users go through lib/.
export interface StorageRef {
  readonly nbytes: number;
  /** -1 for host memory, else the CUDA device ordinal. */
  readonly device: number;
  readonly alive: boolean;
  readonly kind: 'host' | 'mapped' | 'cuda' | 'released';
  release(): void;
  /** A new handle on the same memory (views hold their own). */
  share(): StorageRef;
  /** Memory-mapped files only: release the pages read so far (they are re-read if touched). */
  dropPages(): void;
}

/** What a JS Tensor looks like to the native side. */
export interface TensorLike {
  _h: StorageRef;
  _off: number;
  _dt: number;
  shape: readonly number[];
}

export interface NativeInfo {
  cudaCompiled: boolean;
  cudaDeviceCount: number;
  cudaUnavailableReason: string;
  cudaDriverVersion: number;
  gpus: { index: number; name: string; totalMemory: number }[];
  cpuFeatures: string;
  threads: number;
  hostCacheBytes: number;
}

export interface NativeBinding {
  [op: string]: unknown;
  alloc(nbytes: number, device: number, zero?: boolean): StorageRef;
  mapFile(path: string): StorageRef;
  fromBytes(view: ArrayBufferView, device?: number): StorageRef;
  read(t: TensorLike): Promise<ArrayBuffer>;
  readSync(t: TensorLike): ArrayBuffer;
  write(t: TensorLike, view: ArrayBufferView): void;
  copy(dst: TensorLike, src: TensorLike): void;
  cast(out: TensorLike, x: TensorLike, ref?: boolean): void;
  transpose2d(out: TensorLike, x: TensorLike): void;
  sync(): Promise<void>;
  syncBlocking(): void;
  info(): NativeInfo;
  setNumThreads(n: number): void;
  cudaProbe(n: number, device?: number): Float32Array;
  memoryBandwidth(nbytes: number, iters: number): { readBytesPerSec: number; copyBytesPerSec: number };
  /** cudaMemGetInfo for a GPU (bytes). */
  cudaMemInfo(device?: number): { free: number; total: number };
  /** Whole-forward plans, on a GPU or the CPU (native/bindings/gpt2_plan_bindings.cc). */
  /** params: tensors, or for a quantized Linear's weight a description ({ kind: '4bit' | 'int8', ... }, see gpt2_plan_bindings.cc). */
  gpt2Plan(params: unknown[], nHead: number, eps: number): number;
  gpt2PlanRelease(plan: number): void;
  gpt2PlanCache(plan: number, k: TensorLike[], v: TensorLike[]): number;
  gpt2PlanCacheRelease(cache: number): void;
  /** deviceIds (GPU plans): int32 [B*T] on the plan's GPU, read when the step runs (ids may then be null). */
  gpt2PlanForward(plan: number, cache: number, logits: TensorLike, ids: Int32Array | null, pos: Int32Array, mask: Int32Array | null, past: number, B: number, T: number, lastOnly: boolean, deviceIds?: TensorLike | null): void;

  embedding(out: TensorLike, wte: TensorLike, wpe: TensorLike, ids: TensorLike, pos: TensorLike, ref?: boolean): void;
  layernorm(out: TensorLike, x: TensorLike, w: TensorLike, b: TensorLike, eps: number, ref?: boolean): void;
  linear(out: TensorLike, x: TensorLike, w: TensorLike, bias: TensorLike | null, ref?: boolean): void;
  geluNew(out: TensorLike, x: TensorLike, ref?: boolean): void;
  add(out: TensorLike, a: TensorLike, b: TensorLike, ref?: boolean): void;
  softmax(out: TensorLike, x: TensorLike, ref?: boolean): void;
  attention(out: TensorLike, qkv: TensorLike, k: TensorLike, v: TensorLike, mask: TensorLike | null, past: number, ref?: boolean): void;

  /**
   * Logits processors and the choice of the next token on the GPU (native/bindings/sampling_bindings.cc):
   * for each batch row in `rows`, the last position of `logits` ([B, V] or [B, positions, V] on CUDA).
   * `u`: one uniform in [0, 1) per row when sampling; `history`/`historyOffsets`: each row's ids for the
   * repetition penalty. status 0 = ids[i] is the token; anything else: the host path must do this step.
   */
  sampleTokens(
    logits: TensorLike, rows: Int32Array, u: Float64Array | null, history: Int32Array | null,
    historyOffsets: Int32Array | null, config: DeviceSamplingConfig,
    /** int32 [B] on the logits' GPU: each settled row's id is also written to feed[row] there. */
    feed?: TensorLike | null,
  ): Promise<{ ids: Int32Array; status: Int32Array }>;
}

/** The sampling options sampleTokens applies, with lib/generation's meanings. */
export interface DeviceSamplingConfig {
  doSample: boolean;
  temperature: number;
  topK: number;
  topP: number;
  minP: number | null;
  repetitionPenalty: number;
  minTokensToKeep?: number;
  /** Tests: keep the row in global memory even when it fits in shared memory. */
  forceGlobal?: boolean;
}
