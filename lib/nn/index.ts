// The nn layer vocabulary, for `import { Linear4bit } from 'nibble-llm'` via lib/index.ts.
export { Module, type LinearLike } from './module.js';
export { Linear } from './Linear.js';
export { Linear4bit, type Linear4bitOptions } from './Linear4bit.js';
export { Linear8bitLt, type Linear8bitLtOptions } from './Linear8bitLt.js';
