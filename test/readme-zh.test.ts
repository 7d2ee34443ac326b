import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import test from 'ava';
import { ROOT } from './helpers/gateway.js';

/**
 * README.zh-CN.md is README.md in Chinese: the two link to each other at the top, have the same `##` /
 * `###` sections in the same order (a heading's code spans are kept), the same keys in the configuration
 * table, and the same code blocks, word for word. A section added to one only fails here.
 */
const en = readFileSync(join(ROOT, 'README.md'), 'utf8');
const zh = readFileSync(join(ROOT, 'README.zh-CN.md'), 'utf8');

/** The text outside fenced code blocks, and the blocks themselves. */
function split(md: string): { prose: string[]; blocks: string[] } {
  const prose: string[] = [];
  const blocks: string[] = [];
  let block: string[] | undefined;
  for (const line of md.split('\n')) {
    if (/^\s*```/.test(line)) {
      if (block) {
        blocks.push(block.join('\n'));
        block = undefined;
      } else block = [line];
    } else if (block) block.push(line);
    else prose.push(line);
  }
  return { prose, blocks };
}

interface Section {
  level: number;
  /** the heading's `code` spans */
  code: string[];
  heading: string;
  lines: string[];
}

function sections(md: string): Section[] {
  const out: Section[] = [];
  for (const line of split(md).prose) {
    const h = /^(#{2,3}) (.+)$/.exec(line);
    if (h) out.push({ level: h[1]!.length, heading: h[2]!, code: [...h[2]!.matchAll(/`([^`]+)`/g)].map((m) => m[1]!), lines: [] });
    else out.at(-1)?.lines.push(line);
  }
  return out;
}

/** The first cells' code spans of the configuration table's rows. */
function configKeys(s: Section): string[] {
  return s.lines.filter((l) => l.startsWith('| `')).map((l) => [...l.split(' | ')[0]!.matchAll(/`([^`]+)`/g)].map((m) => m[1]).join(' '));
}

const enSections = sections(en);
const zhSections = sections(zh);

test('each README links to the other at the top', (t) => {
  t.regex(en.split('\n').slice(0, 5).join('\n'), /\]\(README\.zh-CN\.md\)/);
  t.regex(zh.split('\n').slice(0, 5).join('\n'), /\]\(README\.md\)/);
});

test('the same ## and ### sections in the same order', (t) => {
  t.true(enSections.length > 20, `${enSections.length} sections in README.md`);
  const shape = (s: Section[]) => s.map((x) => `${'#'.repeat(x.level)} ${x.code.join(' ')}`);
  t.deepEqual(shape(zhSections), shape(enSections), `README.md: ${enSections.map((s) => s.heading).join(' / ')}`);
});

test('the configuration table has the same keys in both', (t) => {
  const i = enSections.findIndex((s) => s.heading === 'Configuration');
  t.true(i >= 0);
  const keys = configKeys(enSections[i]!);
  t.true(keys.length > 40, `${keys.length} rows`);
  t.deepEqual(configKeys(zhSections[i]!), keys);
});

test('the same code blocks, word for word, in the same order', (t) => {
  const blocks = split(en).blocks;
  t.true(blocks.length > 5);
  t.deepEqual(split(zh).blocks, blocks);
});

test('every src/ file either README names exists', (t) => {
  for (const md of [en, zh]) {
    for (const [, file] of md.matchAll(/`(src\/[\w/.-]+\.ts)`/g)) t.true(existsSync(join(ROOT, file!)), file);
  }
});
