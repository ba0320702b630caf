// savePretrained for GPT-2: transformers' layout (Conv1D weights back to [in, out], tied
// lm_head omitted) and, for quantized modules, the bitsandbytes serialized keys each module's
// stateDict() yields. Everything is written to temp files first and renamed only when all
// are complete, so a failure never leaves a half-written checkpoint.
import { accessSync, constants, copyFileSync, existsSync, mkdirSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { writeCheckpoint } from '../io/safetensors.js';
import { native } from '../native.js';
import { Linear } from '../nn/Linear.js';
import { Tensor } from '../tensor.js';
import type { GPT2LMHeadModel } from './gpt2.js';

const TOKENIZER_FILES = ['tokenizer.json', 'tokenizer_config.json', 'vocab.json', 'merges.txt', 'special_tokens_map.json'];

export class SaveError extends Error {
  override name = 'SaveError';
}

/** Conv1D layout for a plain Linear's weight: [out, in] -> [in, out], on the CPU. */
function conv1dWeight(w: Tensor): Tensor {
  const host = w.device === 'cpu' ? w : w.toDevice('cpu');
  const t = Tensor.empty([w.shape[1]!, w.shape[0]!], w.dtype);
  native().transpose2d(t, host);
  if (host !== w) host.dispose();
  return t;
}

export function gpt2StateDict(model: GPT2LMHeadModel): { tensors: Map<string, Tensor>; temporaries: Tensor[] } {
  const tensors = new Map<string, Tensor>();
  const temporaries: Tensor[] = [];
  const tiedHead = model.config.tieWordEmbeddings;
  for (const [name, m] of model.namedModules()) {
    if (name === 'lm_head' && tiedHead) continue;
    const isConv1d = name.startsWith('transformer.h.') && /\.(c_attn|c_proj|c_fc)$/.test(name);
    for (const [key, t] of m.stateDict(`${name}.`)) {
      let out = t;
      if (isConv1d && m instanceof Linear && key === `${name}.weight`) {
        out = conv1dWeight(t);
        temporaries.push(out);
      } else if (t.device !== 'cpu') {
        out = t.toDevice('cpu');
        temporaries.push(out);
      }
      tensors.set(key, out);
    }
  }
  return { tensors, temporaries };
}

export async function saveGPT2(model: GPT2LMHeadModel, dir: string, extraConfig: Record<string, unknown> = {}): Promise<void> {
  try {
    if (!existsSync(dir)) mkdirSync(dir, { recursive: true });
    if (!statSync(dir).isDirectory()) throw new Error('not a directory');
    accessSync(dir, constants.W_OK);
  } catch (e) {
    throw new SaveError(`savePretrained: cannot write to ${dir}: ${(e as Error).message}`);
  }
  const { tensors, temporaries } = gpt2StateDict(model);
  const temps: [string, string][] = [];
  const tmpName = (f: string) => join(dir, `.${f}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`);
  try {
    // Shards are renamed by writeCheckpoint itself only once all of them are written.
    await writeCheckpoint(dir, tensors, { metadata: { format: 'pt' } });
    const config = { ...model.config.raw, ...extraConfig };
    for (const [file, text] of [['config.json', JSON.stringify(config, null, 2) + '\n']] as const) {
      const tmp = tmpName(file);
      writeFileSync(tmp, text);
      temps.push([tmp, join(dir, file)]);
    }
    if (model.modelDir) {
      for (const f of ['generation_config.json', ...TOKENIZER_FILES]) {
        const src = join(model.modelDir, f);
        if (!existsSync(src) || src === join(dir, f)) continue;
        const tmp = tmpName(f);
        copyFileSync(src, tmp);
        temps.push([tmp, join(dir, f)]);
      }
    }
    for (const [tmp, target] of temps) renameSync(tmp, target);
  } catch (e) {
    for (const [tmp] of temps) rmSync(tmp, { force: true });
    throw new SaveError(`savePretrained: writing ${dir} failed: ${(e as Error).message}`);
  } finally {
    for (const t of temporaries) t.dispose();
  }
}
