import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import test from 'ava';
import { ROOT } from './helpers/gateway.js';

/** SECURITY.md lists what the suite tries, file by file: the list and the files must not drift apart. */
const doc = readFileSync(join(ROOT, 'SECURITY.md'), 'utf8');

test('SECURITY.md names every test file of test/security/ and test/faults/, and no file that does not exist', (t) => {
  for (const dir of ['test/security', 'test/faults']) {
    const files = readdirSync(join(ROOT, dir)).filter((f) => f.endsWith('.test.ts'));
    t.true(files.length > 0, dir);
    for (const f of files) t.true(doc.includes(`\`${dir}/${f}\``), `${dir}/${f} is not in SECURITY.md's list`);
  }
  for (const [, named] of doc.matchAll(/`(test\/[\w/.-]+\.test\.ts)`/g)) {
    t.notThrows(() => readFileSync(join(ROOT, named!)), `SECURITY.md names ${named}, which does not exist`);
  }
});

test('SECURITY.md has no placeholder left (reporting address, advisory URL, sections to be written)', (t) => {
  for (const re of [/placeholder/i, /to be written/i, /<owner>/, /\.invalid\b/, /TODO|TBD/]) t.notRegex(doc, re);
  t.regex(doc, /## Faults and limits\n\n\S/, 'the section has content');
});
