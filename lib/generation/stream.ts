// Streaming generation: an async iterator of {token, text} for one prompt. A character whose
// UTF-8 bytes are spread over several tokens (emoji, CJK) is held back until it is complete,
// so concatenating every `text` gives exactly the decoded continuation.
import { startGeneration, type GenerateOptions, type GenerationModel } from './generate.js';
import type { TextDecoderLike } from './stopping.js';

export interface StreamChunk {
  /** The token generated at this step. */
  token: number;
  /** Text that became decodable with this token; '' while a character is still incomplete. */
  text: string;
}

/** A tokenizer as stream() needs it. */
export interface StreamTokenizer extends TextDecoderLike {
  encode(text: string): number[];
  decode(ids: readonly number[], options?: { skipSpecialTokens?: boolean }): string;
}

export interface StreamOptions extends GenerateOptions {
  /** Leave special tokens such as `<|endoftext|>` out of the text (default true). */
  skipSpecialTokens?: boolean;
}

/**
 * Turns a growing token list into text pieces. It decodes only the tokens since the last
 * emitted piece (plus the one before, as context), so each step costs O(piece), not O(sequence).
 */
export class TextStreamDecoder {
  private ids: number[] = [];
  private prefix = 0; // start of the tokens decoded for context
  private read = 0; // tokens before this were already emitted as text

  constructor(private readonly tokenizer: StreamTokenizer, private readonly skipSpecialTokens = true) {}

  private decode(ids: number[]): string {
    return ids.length === 0 ? '' : this.tokenizer.decode(ids, { skipSpecialTokens: this.skipSpecialTokens });
  }

  /** Adds a token; returns the text it completed ('' if a character is still partial). */
  push(token: number): string {
    this.ids.push(token);
    const before = this.decode(this.ids.slice(this.prefix, this.read));
    const now = this.decode(this.ids.slice(this.prefix));
    if (now.length > before.length && !now.endsWith('\uFFFD') && now.startsWith(before)) {
      this.prefix = this.read;
      this.read = this.ids.length;
      return now.slice(before.length);
    }
    return '';
  }

  /** Whatever is still held back (an incomplete character decodes as U+FFFD). */
  flush(): string {
    const before = this.decode(this.ids.slice(this.prefix, this.read));
    const now = this.decode(this.ids.slice(this.prefix));
    this.prefix = this.read = this.ids.length;
    return now.startsWith(before) ? now.slice(before.length) : now;
  }
}

/**
 * Generates from one prompt (token ids or text), yielding each new token with its text.
 * Options are generate()'s; the tokenizer also serves stopStrings.
 */
export async function* stream(
  model: GenerationModel,
  tokenizer: StreamTokenizer,
  prompt: readonly number[] | string,
  options: StreamOptions = {},
): AsyncGenerator<StreamChunk, void, undefined> {
  if (!tokenizer || typeof tokenizer.decode !== 'function' || typeof tokenizer.encode !== 'function')
    throw new TypeError('stream: a tokenizer (with encode and decode) is required');
  const ids = typeof prompt === 'string' ? tokenizer.encode(prompt) : prompt;
  if (!Array.isArray(ids) || (ids.length > 0 && Array.isArray(ids[0])))
    throw new TypeError('stream: prompt must be one sequence of token ids (number[]) or a string; use generate() for batches');
  const { skipSpecialTokens = true, ...rest } = options;
  const run = startGeneration(model, ids, { ...rest, tokenizer: rest.tokenizer ?? tokenizer }, 'stream');
  const text = new TextStreamDecoder(tokenizer, skipSpecialTokens);
  for await (const step of run.steps) {
    const token = step.tokens[0]!;
    const piece = text.push(token);
    // The final chunk also carries anything held back (a character the budget cut in half).
    yield { token, text: step.last ? piece + text.flush() : piece };
  }
}
