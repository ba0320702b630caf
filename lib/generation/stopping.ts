// When a sequence is done: an end-of-sequence token, or text ending in a stop string. (The
// length budget is a plain step count in generate.ts.)

/** Anything that turns ids into text; the tokenizer in practice. */
export interface TextDecoderLike {
  decode(ids: readonly number[]): string;
}

export class EosCriterion {
  private readonly ids: Set<number>;
  constructor(eosTokenIds: readonly number[]) {
    this.ids = new Set(eosTokenIds);
  }
  get active(): boolean {
    return this.ids.size > 0;
  }
  isEos(token: number): boolean {
    return this.ids.has(token);
  }
}

/**
 * Stops when a stop string has just been completed: it occurs in the decoded tail of the
 * sequence and ends inside the newest token's text, as transformers' StopStringCriteria does
 * (the last token may run past the end of the string). Occurrences that were already complete
 * before this token, e.g. inside the prompt, do not count.
 */
export class StopStringCriterion {
  private readonly stops: string[];
  private readonly window: number;

  constructor(stopStrings: readonly string[], private readonly decoder: TextDecoderLike) {
    this.stops = [...stopStrings];
    // A token adds at least one byte and a character has at most 4, so the last L characters
    // come from at most 4L tokens; one more covers a character cut at the window's start.
    const longest = this.stops.reduce((m, s) => Math.max(m, s.length), 0);
    this.window = 4 * longest + 1;
  }

  get active(): boolean {
    return this.stops.length > 0;
  }

  /** True when `ids` (the whole sequence, newest token last) just completed a stop string. */
  matches(ids: readonly number[]): boolean {
    if (!this.active || ids.length === 0) return false;
    const tail = ids.slice(Math.max(0, ids.length - 1 - this.window));
    const before = this.decoder.decode(tail.slice(0, -1));
    const after = this.decoder.decode(tail);
    // Text that the newest token could not have changed: the common prefix of both decodes
    // (a character cut in `before` decodes as U+FFFD and differs in `after`).
    let common = 0;
    const n = Math.min(before.length, after.length);
    while (common < n && before.charCodeAt(common) === after.charCodeAt(common)) common++;
    for (const s of this.stops) {
      // Any occurrence ending after `common` was completed by the newest token.
      let from = Math.max(0, common - s.length + 1);
      for (;;) {
        const at = after.indexOf(s, from);
        if (at < 0) break;
        if (at + s.length > common) return true;
        from = at + 1;
      }
    }
    return false;
  }
}
