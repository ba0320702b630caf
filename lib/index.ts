// Public API of nibble-llm. Everything a user imports comes from here.
export { Tensor, type DType, type Device } from './tensor.js';
export { AutoModelForCausalLM, type FromPretrainedOptions } from './models/auto.js';
export { GPT2LMHeadModel, GPT2KVCache } from './models/gpt2.js';
export { type GPT2Config, parseGPT2Config, loadGPT2Config, ConfigError } from './models/gpt2-config.js';
export type { CausalLM, KVCache, ForwardOptions, ForwardOutput } from './models/types.js';
export { Module, type LinearLike } from './nn/module.js';
export { Linear } from './nn/Linear.js';
export { LayerNorm } from './nn/LayerNorm.js';
export { Embedding } from './nn/Embedding.js';
export { readSafetensors, openSafetensors, openCheckpoint, writeSafetensors, writeCheckpoint, readSafetensorsHeader, SafetensorsError } from './io/safetensors.js';
export { AutoTokenizer, PreTrainedTokenizer, type BatchEncoding, type BatchEncodeOptions, type DecodeOptions } from './tokenizer.js';
export { generate, type GenerateOptions, type GenerateInput } from './generation/generate.js';
export { stream, TextStreamDecoder, type StreamChunk, type StreamOptions, type StreamTokenizer } from './generation/stream.js';
export { loadGenerationConfig, resolveGenerationConfig, GENERATION_DEFAULTS, type GenerationOptions, type GenerationConfig } from './generation/generation-config.js';
export {
  applyRepetitionPenalty, applyTemperature, applyTopK, applyTopP, applyMinP, buildLogitsProcessors, type LogitsProcessor,
} from './generation/logits-processors.js';
export { Xoshiro128, argmax, sampleToken } from './generation/sampler.js';
export {
  quantize4bit, dequantize4bit, quantizeBlockwise, dequantizeBlockwise, int8VectorwiseQuant, int8LinearMatmul,
  int8MmDequant, matmul4bit, gemv4bitLayout, gemm4bitLayout, stateAbsmax, BLOCKSIZES_4BIT, BLOCKSIZES_8BIT,
  type Quantize4bitOptions, type QuantizeBlockwiseOptions, type Matmul4bitOptions,
} from './functional.js';
export { QuantState, QuantStateError, quantMap, type QuantType, type QuantStateValue } from './quantization/quant-state.js';
export { Linear4bit, type Linear4bitOptions } from './nn/Linear4bit.js';
export { Linear8bitLt, type Linear8bitLtOptions } from './nn/Linear8bitLt.js';
export { resolveModelDir, hubCacheDir, type ResolveModelOptions, type HubProgress } from './io/hub.js';
export { nativeLoadInfo, type NativeLoadInfo, type AddonVariant } from './native.js';
export { BitsAndBytesConfig, QuantizationConfigError, type BitsAndBytesConfigOptions } from './quantization/bitsandbytes-config.js';
export { perplexity, type PerplexityResult } from './evaluation/perplexity.js';
