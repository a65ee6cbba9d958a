/**
 * Node 20 does not expand globs in `--test` arguments, so `npm test` names every test file. This
 * test fails when a test file exists that the list forgets (it would silently never run).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, readdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import path from 'node:path';

const root = fileURLToPath(new URL('../../', import.meta.url));

test('npm test lists every *.test.ts file', () => {
  const pkg = JSON.parse(readFileSync(path.join(root, 'package.json'), 'utf8')) as { scripts: Record<string, string> };
  const listed = new Set(pkg.scripts['test']!.split(/\s+/).filter((a) => a.endsWith('.test.ts')));
  const found: string[] = [];
  for (const dir of ['test/unit', 'test/integration']) {
    for (const name of readdirSync(path.join(root, dir))) if (name.endsWith('.test.ts')) found.push(`${dir}/${name}`);
  }
  assert.ok(found.length > 10, 'test files were found');
  const missing = found.filter((f) => !listed.has(f));
  assert.deepEqual(missing, [], `add these to the "test" script in package.json: ${missing.join(' ')}`);
  for (const f of listed) assert.ok(found.includes(f), `the test script names a file that does not exist: ${f}`);
});
