/**
 * The tour, end to end through the `strata` CLI as a user runs it (child processes, state in
 * `.strata/` of a temporary directory, free ports): init → start → tenant → timeline `main` →
 * endpoint → write data → note the time → a mistake → branch at the noted time → an endpoint on the
 * branch has the data and not the mistake → stop → nothing left running, every port closed.
 * Real broker, safekeeper, pageserver and PostgreSQL 15 processes.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { chmod, mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import pg from 'pg';
import {
  allPorts, isAlive, killEverythingUnder, oneLine, pidsMentioning, portClosed, statusJson, strata, strataOk, type StatusJson,
} from '../support/strata-cli.ts';

let dir = '';

async function query(port: number, sql: string): Promise<pg.QueryResult> {
  const c = new pg.Client({ host: '127.0.0.1', port, user: 'postgres', database: 'postgres' });
  await c.connect();
  try {
    return await c.query(sql);
  } finally {
    await c.end();
  }
}

before(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'strata-cli-tour-'));
  await chmod(dir, 0o755); // as root, postgres runs as the postgres OS user and must reach .strata/endpoints
});

after(async () => {
  if (dir === '') return;
  await strata(dir, ['stop'], { timeoutMs: 120_000 }).catch(() => undefined);
  const left = killEverythingUnder(dir);
  if (left.length > 0) process.stderr.write(`cli-tour teardown: killed leftover processes ${left.join(', ')}\n`);
  await rm(dir, { recursive: true, force: true });
});

test('the tour: branch at a noted time, just before a mistake, and find the data there', { timeout: 600_000 }, async () => {
  const init = await strataOk(dir, ['init', '--free-ports']);
  assert.match(init.stdout, /initialised Strata in .*\.strata/);
  const config = JSON.parse(await readFile(path.join(dir, '.strata', 'config.json'), 'utf8')) as { safekeepers: unknown[]; pageserver: { listen_http: string } };
  assert.equal(config.safekeepers.length, 1);

  const start = await strataOk(dir, ['start']);
  assert.match(start.stdout, /started broker/);
  assert.match(start.stdout, /started safekeeper 1/);
  assert.match(start.stdout, /started pageserver/);

  // status --json: every service running and healthy, with its pid and ports; no endpoints yet.
  const s0 = await statusJson(dir);
  assert.equal(s0.workdir, path.join(dir, '.strata'));
  assert.deepEqual(s0.services.map((v) => [v.name, v.kind, v.state, v.healthy]), [
    ['broker', 'broker', 'running', true], ['safekeeper-1', 'safekeeper', 'running', true], ['pageserver', 'pageserver', 'running', true],
  ]);
  for (const v of s0.services) {
    assert.ok(typeof v.pid === 'number' && isAlive(v.pid), `${v.name} pid ${v.pid}`);
    assert.equal(v.stale_pid, null);
    assert.ok(Object.keys(v.ports).length === 2, JSON.stringify(v.ports));
    assert.equal(v.log_file, path.join(dir, '.strata', v.name, `${v.name}.log`));
  }
  assert.deepEqual(Object.keys(s0.services[2]!.ports).sort(), ['http', 'pg']);
  assert.equal(s0.services[2]!.ports['http'], config.pageserver.listen_http);
  assert.deepEqual(s0.endpoints, []);

  const tc = await strataOk(dir, ['tenant', 'create']);
  const tenantId = /tenant ([0-9a-f]{32}) created \(the default tenant\)/.exec(tc.stdout)?.[1];
  assert.ok(tenantId !== undefined, tc.stdout);

  const tl = await strataOk(dir, ['timeline', 'create', 'main']);
  // Progress appears once the bootstrap has taken a second (it usually does).
  if (tl.stderr !== '') assert.match(tl.stderr, /^creating timeline "main" \(initdb, imported into layer files\) \.\.\.\n/);
  const mainId = /timeline "main" created: ([0-9a-f]{32})/.exec(tl.stdout)?.[1];
  assert.ok(mainId !== undefined, tl.stdout);

  const ep = await strataOk(dir, ['endpoint', 'start', 'main', '--timeline', 'main']);
  const conn = ep.stdout.trim().split('\n').pop()!;
  const port = Number(/^postgresql:\/\/postgres@127\.0\.0\.1:(\d+)\/postgres$/.exec(conn)?.[1]);
  assert.ok(port > 0, ep.stdout);

  // Write data through `strata psql` (stdio passed through, exit code 0), check it with a client.
  const w = await strataOk(dir, ['psql', 'main', '--', '-v', 'ON_ERROR_STOP=1', '-c',
    "CREATE TABLE accounts (id int PRIMARY KEY, owner text, balance int); INSERT INTO accounts SELECT g, 'owner ' || g, g * 10 FROM generate_series(1, 5000) g; CREATE TABLE audit (at timestamptz DEFAULT now(), what text); INSERT INTO audit (what) VALUES ('opened')"]);
  assert.match(w.stdout, /INSERT 0 5000/);
  const sum = Number((await query(port, 'SELECT sum(balance) AS s FROM accounts')).rows[0].s);
  assert.equal(sum, 10 * 5000 * 5001 / 2);

  // Note the time between the last good commit and the mistake (same clock as PostgreSQL's).
  await new Promise((r) => setTimeout(r, 500));
  const noted = new Date().toISOString();
  await new Promise((r) => setTimeout(r, 500));
  await query(port, 'DELETE FROM accounts WHERE id > 10');
  await query(port, 'DROP TABLE audit');
  assert.equal(Number((await query(port, 'SELECT count(*) AS n FROM accounts')).rows[0].n), 10);

  // A time before any history is refused and creates nothing; a future one branches at the tip.
  const past = await strata(dir, ['timeline', 'branch', 'ancient', '--from', 'main', '--at', '2001-01-01T00:00:00Z']);
  assert.notEqual(past.code, 0);
  assert.match(oneLine(past), /^strata: error: .*(past|nodata).*nothing was created/);

  const br = await strataOk(dir, ['timeline', 'branch', 'before', '--from', 'main', '--at', noted]);
  assert.match(br.stderr, /kind present/);
  const branchLsn = /branched from "main" at ([0-9A-F]+\/[0-9A-F]+)/.exec(br.stdout)?.[1];
  assert.ok(branchLsn !== undefined, br.stdout);

  const fut = await strataOk(dir, ['timeline', 'branch', 'tip', '--from', 'main', '--at', new Date(Date.now() + 3_600_000).toISOString()]);
  assert.match(fut.stderr, /kind future .* last record LSN/);

  const list = await strataOk(dir, ['timeline', 'list']);
  const lines = list.stdout.trim().split('\n');
  assert.match(lines[0]!, /^NAME\s+TIMELINE ID\s+ANCESTOR\s+LAST RECORD LSN$/);
  assert.ok(lines.some((l) => new RegExp(`^main\\s+${mainId}\\s+-\\s+[0-9A-F]+/[0-9A-F]+$`).test(l)), list.stdout);
  assert.ok(lines.some((l) => new RegExp(`^[├└]─ before\\s+[0-9a-f]{32}\\s+main @ ${branchLsn.replace('/', '\\/')}\\s+`).test(l)), list.stdout);
  assert.ok(lines.some((l) => /^[├└]─ tip\s/.test(l)), list.stdout);
  assert.ok(!list.stdout.includes('ancient'), list.stdout);

  const epb = await strataOk(dir, ['endpoint', 'start', 'before', '--timeline', 'before']);
  const bport = Number(/127\.0\.0\.1:(\d+)\/postgres\s*$/.exec(epb.stdout)?.[1]);
  assert.ok(bport > 0 && bport !== port, epb.stdout);

  // The branch has the data and not the mistake; main still has the mistake.
  assert.equal(Number((await query(bport, 'SELECT count(*) AS n FROM accounts')).rows[0].n), 5000);
  assert.equal(Number((await query(bport, 'SELECT sum(balance) AS s FROM accounts')).rows[0].s), sum);
  assert.equal((await query(bport, 'SELECT what FROM audit')).rows[0].what, 'opened');
  assert.equal(Number((await query(port, "SELECT count(*) AS n FROM pg_class WHERE relname = 'audit'")).rows[0].n), 0);
  assert.equal(Number((await query(port, 'SELECT count(*) AS n FROM accounts')).rows[0].n), 10);

  // psql's exit code comes through.
  const bad = await strata(dir, ['psql', 'before', '--', '-c', 'SELECT no_such_column']);
  assert.equal(bad.code, 1);
  assert.match(bad.stderr, /no_such_column/);

  const s1: StatusJson = await statusJson(dir);
  assert.deepEqual(s1.endpoints.map((e) => [e.name, e.state, e.timeline, e.port]), [['before', 'running', 'before', bport], ['main', 'running', 'main', port]]);
  for (const e of s1.endpoints) assert.ok(e.pid !== null && isAlive(e.pid));
  const pids = [...s1.services.map((v) => v.pid!), ...s1.endpoints.map((e) => e.pid!)];
  const ports = allPorts(s1);

  const stop = await strataOk(dir, ['stop'], { timeoutMs: 180_000 });
  assert.match(stop.stdout, /endpoint before: stopped/);
  assert.match(stop.stdout, /broker: stopped/);
  for (const pid of pids) assert.equal(isAlive(pid), false, `pid ${pid} still alive after strata stop`);
  assert.deepEqual(pidsMentioning(dir), [], 'processes mentioning the test directory after strata stop');
  for (const p of ports) assert.equal(await portClosed(p), true, `port ${p} still open after strata stop`);
  const s2 = await statusJson(dir);
  assert.deepEqual([...s2.services.map((v) => v.state), ...s2.endpoints.map((e) => e.state)], ['stopped', 'stopped', 'stopped', 'stopped', 'stopped']);
});
