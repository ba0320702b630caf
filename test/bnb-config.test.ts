import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { BitsAndBytesConfig } from '../lib/quantization/bitsandbytes-config.js';

const fixture = (v: string) => JSON.parse(readFileSync(`test/fixtures/tiny-random-gpt2-bnb-${v}/config.json`, 'utf8')).quantization_config;

describe('BitsAndBytesConfig', () => {
  it('has transformers defaults', () => {
    const c = new BitsAndBytesConfig();
    expect([c.loadIn4bit, c.loadIn8bit, c.llmInt8Threshold, c.llmInt8SkipModules, c.bnb4bitComputeDtype, c.bnb4bitQuantType, c.bnb4bitUseDoubleQuant, c.bnb4bitQuantStorage])
      .toEqual([false, false, 6.0, null, 'float32', 'fp4', false, 'uint8']);
  });

  it('round-trips the quantization_config transformers saved, key for key', () => {
    for (const v of ['nf4', 'fp4', 'int8']) {
      const d = fixture(v);
      expect(BitsAndBytesConfig.fromDict(d).toDict()).toEqual(d);
    }
    expect(BitsAndBytesConfig.fromDict(fixture('nf4')).bnb4bitUseDoubleQuant).toBe(true);
  });

  it('rejects bad configs with clear errors', () => {
    expect(() => new BitsAndBytesConfig({ loadIn4bit: true, loadIn8bit: true })).toThrow(/both true; choose one/);
    expect(() => new BitsAndBytesConfig({ loadIn4bit: true, bnb4bitQuantType: 'int3' as never })).toThrow(/bnb4bitQuantType must be one of 'nf4', 'fp4', got "int3"/);
    expect(() => new BitsAndBytesConfig({ bnb4bitComputeDtype: 'float64' as never })).toThrow(/bnb4bitComputeDtype must be one of/);
    expect(() => new BitsAndBytesConfig({ llmInt8Threshold: -1 })).toThrow(/llmInt8Threshold must be a finite number >= 0/);
    expect(() => new BitsAndBytesConfig({ llmInt8Threshold: NaN })).toThrow(/llmInt8Threshold/);
    expect(() => new BitsAndBytesConfig({ loadIn4Bit: true } as never)).toThrow(/unknown option 'loadIn4Bit'/);
    expect(() => BitsAndBytesConfig.fromDict({ ...fixture('nf4'), bnb_4bit_quant_type: 'nf5' })).toThrow(/'nf4', 'fp4', got "nf5"/);
    expect(() => BitsAndBytesConfig.fromDict({ ...fixture('nf4'), bnb_4bit_blocksize: 64 })).toThrow(/unknown field 'bnb_4bit_blocksize'/);
    expect(() => BitsAndBytesConfig.fromDict({ ...fixture('nf4'), quant_method: 'gptq' })).toThrow(/quant_method "gptq" is not supported/);
    expect(() => BitsAndBytesConfig.fromDict({ ...fixture('nf4'), _load_in_4bit: false })).toThrow(/disagree/);
    expect(() => BitsAndBytesConfig.fromDict([])).toThrow(/must be an object/);
  });
});
