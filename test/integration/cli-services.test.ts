/**
 * The control plane's process management, through the CLI: errors before init and with a port
 * taken, `strata start` idempotent, kill -9 of the broker, a safekeeper, the pageserver and an
 * endpoint's postgres followed by `strata start` / `strata endpoint start` bringing everything back
 * with the data, stale pid files (a dead pid, and a pid now used by another program, which must
 * never be signalled), and `strata stop` leaving nothing behind. Real processes, real PostgreSQL.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { chmod, mkdtemp, rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import pg from 'pg';
import {
  allPorts, isAlive, killEverythingUnder, oneLine, pidsMentioning, portClosed, statusJson, strata, strataOk, type StatusJson,
} from '../support/strata-cli.ts';

let dir = '';
let state = '';
const W: string[] = [];
const bystanders: ChildProcess[] = [];

async function query(port: number, sql: string, params: unknown[] = []): Promise<pg.QueryResult> {
  const c = new pg.Client({ host: '127.0.0.1', port, user: 'postgres', database: 'postgres', connectionTimeoutMillis: 10_000, query_timeout: 60_000 });
  c.on('error', () => undefined);
  await c.connect();
  try {
    return await c.query(sql, params);
  } finally {
    await c.end().catch(() => undefined);
  }
}

function svc(s: StatusJson, name: string): StatusJson['services'][number] {
  const v = s.services.find((x) => x.name === name);
  assert.ok(v !== undefined, name);
  return v;
}

async function waitDead(pid: number): Promise<void> {
  for (let i = 0; i < 200 && isAlive(pid); i++) await new Promise((r) => setTimeout(r, 25));
  assert.equal(isAlive(pid), false, `pid ${pid} survived SIGKILL`);
}

before(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'strata-cli-services-'));
  await chmod(dir, 0o755);
  state = path.join(dir, 'state');
  W.push('--workdir', state);
});

after(async () => {
  for (const b of bystanders) b.kill('SIGKILL');
  if (dir === '') return;
  await strata(dir, [...W, 'stop'], { timeoutMs: 120_000 }).catch(() => undefined);
  const left = killEverythingUnder(dir);
  if (left.length > 0) process.stderr.write(`cli-services teardown: killed leftover processes ${left.join(', ')}\n`);
  await rm(dir, { recursive: true, force: true });
});

test('before init, every command says so in one line and exits non-zero', async () => {
  for (const args of [['status'], ['start'], ['stop'], ['tenant', 'list'], ['timeline', 'list'], ['endpoint', 'list']]) {
    const r = await strata(dir, [...W, ...args]);
    assert.equal(r.code, 1, `${args.join(' ')}: ${r.stderr}`);
    assert.match(oneLine(r), /^strata: error: no Strata state in .*state \(run `strata init` first/);
    assert.equal(r.stdout, '');
  }
  // --workdir also works after the command.
  const r = await strata(dir, ['status', '--workdir', state]);
  assert.match(oneLine(r), /no Strata state in/);
  const bad = await strata(dir, [...W, 'init', '--safekeepers', '0']);
  assert.equal(bad.code, 2);
  assert.match(oneLine(bad), /--safekeepers must be a whole number ≥ 1/);
});

test('services: start with a port taken, idempotent start, kill -9 of each kind and back, stale pid files, stop', { timeout: 900_000 }, async () => {
  const init = await strataOk(dir, [...W, 'init', '--free-ports', '--safekeepers', '3', '--remote-storage', 's3://strata-test/dev']);
  assert.match(init.stdout, /remote storage s3:\/\/strata-test\/dev: recorded, but Strata has no remote storage yet/);
  const again = await strata(dir, [...W, 'init', '--free-ports']);
  assert.equal(again.code, 1);
  assert.match(oneLine(again), /already exists/);

  // A port held by another program: start refuses, naming it; nothing of ours holds it.
  const s0 = await statusJson(dir, W);
  const psHttp = Number(svc(s0, 'pageserver').ports['http']!.split(':')[1]);
  const blocker = net.createServer();
  await new Promise<void>((r) => blocker.listen(psHttp, '127.0.0.1', r));
  try {
    const r = await strata(dir, [...W, 'start']);
    assert.equal(r.code, 1);
    assert.match(oneLine(r), new RegExp(`^strata: error: cannot start pageserver: port ${psHttp} \\(pageserver HTTP.*already in use by another program`));
    assert.equal(svc(await statusJson(dir, W), 'pageserver').state, 'stopped');
  } finally {
    await new Promise((r) => blocker.close(r));
  }

  await strataOk(dir, [...W, 'start']);
  const s1 = await statusJson(dir, W);
  assert.equal(s1.services.length, 5);
  for (const v of s1.services) assert.ok(v.state === 'running' && v.healthy, JSON.stringify(v));
  // Idempotent: a second start changes nothing.
  const again2 = await strataOk(dir, [...W, 'start']);
  assert.equal((again2.stdout.match(/is already running/g) ?? []).length, 5, again2.stdout);
  const s2 = await statusJson(dir, W);
  assert.deepEqual(s2.services.map((v) => v.pid), s1.services.map((v) => v.pid));

  await strataOk(dir, [...W, 'tenant', 'create']);
  await strataOk(dir, [...W, 'timeline', 'create', 'main']);
  await strataOk(dir, [...W, 'endpoint', 'start', 'main', '--timeline', 'main']);
  let ep = (await statusJson(dir, W)).endpoints[0]!;
  await query(ep.port, 'CREATE TABLE acks (id int PRIMARY KEY)');
  let next = 1;
  const write = async (n: number): Promise<void> => {
    for (let i = 0; i < n; i++, next++) await query(ep.port, 'INSERT INTO acks VALUES ($1)', [next]);
  };
  await write(20);

  // Errors: an unknown tenant; a second endpoint on a timeline that has one.
  const unknown = '0123456789abcdef0123456789abcdef';
  for (const args of [['timeline', 'list', '--tenant', unknown], ['tenant', 'show', unknown], ['tenant', 'show', '--tenant', unknown], ['tenant', 'config', 'set', '--tenant', unknown, 'gc_horizon=0']]) {
    const r = await strata(dir, [...W, ...args]);
    assert.equal(r.code, 1, r.stderr);
    assert.match(oneLine(r), new RegExp(`^strata: error: pageserver: .*${unknown}.*\\(HTTP 404`));
  }
  const second = await strata(dir, [...W, 'endpoint', 'start', 'other', '--timeline', 'main']);
  assert.equal(second.code, 1);
  assert.match(oneLine(second), /already has a running endpoint \("main"/);

  // kill -9 of each kind of service; `strata start` notices and brings it back.
  for (const name of ['broker', 'safekeeper-2', 'pageserver']) {
    const before = svc(await statusJson(dir, W), name);
    process.kill(before.pid!, 'SIGKILL');
    await waitDead(before.pid!);
    const dead = svc(await statusJson(dir, W), name);
    assert.equal(dead.state, 'stopped', name);
    assert.equal(dead.stale_pid, before.pid, name);
    const r = await strataOk(dir, [...W, 'start']);
    assert.match(r.stdout, new RegExp(`started ${name.replace('-', ' ')}`), r.stdout);
    assert.match(r.stdout, /removing a stale pid file/);
    const back = svc(await statusJson(dir, W), name);
    assert.ok(back.state === 'running' && back.healthy && back.pid !== before.pid, JSON.stringify(back));
    await write(10); // commits still get their quorum
  }
  // The restarted pageserver serves everything: a fresh basebackup for the restarted endpoint.
  await strataOk(dir, [...W, 'endpoint', 'stop', 'main']);
  await strataOk(dir, [...W, 'endpoint', 'start', 'main']);
  ep = (await statusJson(dir, W)).endpoints[0]!;
  assert.equal(Number((await query(ep.port, 'SELECT count(*) AS n FROM acks')).rows[0].n), next - 1);

  // kill -9 of the endpoint's postmaster: status says stopped, start hints, endpoint start brings it back.
  process.kill(ep.pid!, 'SIGKILL');
  await waitDead(ep.pid!);
  assert.equal((await statusJson(dir, W)).endpoints[0]!.state, 'stopped');
  const hint = await strataOk(dir, [...W, 'start']);
  assert.match(hint.stderr, /endpoint main is not running \(start it with `strata endpoint start main`\)/);
  await strataOk(dir, [...W, 'endpoint', 'start', 'main']);
  ep = (await statusJson(dir, W)).endpoints[0]!;
  assert.equal(ep.state, 'running');
  assert.equal(Number((await query(ep.port, 'SELECT count(*) AS n FROM acks')).rows[0].n), next - 1);
  await write(5);

  const final = await statusJson(dir, W);
  const pids = [...final.services.map((v) => v.pid!), ...final.endpoints.map((e) => e.pid!)];
  const ports = allPorts(final);
  const stop = await strataOk(dir, [...W, 'stop'], { timeoutMs: 240_000 });
  assert.match(stop.stdout, /endpoint main: stopped/);
  for (const pid of pids) assert.equal(isAlive(pid), false, `pid ${pid} alive after stop`);
  assert.deepEqual(pidsMentioning(dir), []);
  for (const p of ports) assert.equal(await portClosed(p), true, `port ${p} open after stop`);

  // Stale pid files: one names a dead pid, one a live program that is not ours (never signalled).
  const bystander = spawn('sleep', ['600'], { stdio: 'ignore' });
  bystanders.push(bystander);
  await writeFile(path.join(state, 'broker', 'pid'), `${bystander.pid}\n`);
  await writeFile(path.join(state, 'pageserver', 'pid'), `${2 ** 22 + 7}\n`);
  const st = await statusJson(dir, W);
  assert.deepEqual([svc(st, 'broker').state, svc(st, 'broker').stale_pid], ['stopped', bystander.pid]);
  assert.deepEqual([svc(st, 'pageserver').state, svc(st, 'pageserver').stale_pid], ['stopped', 2 ** 22 + 7]);
  const stop2 = await strataOk(dir, [...W, 'stop']);
  assert.match(stop2.stdout, /broker: not running/);
  assert.equal(isAlive(bystander.pid!), true, 'strata stop signalled a process that is not its own');
  await strataOk(dir, [...W, 'start']);
  assert.equal(isAlive(bystander.pid!), true);
  const st2 = await statusJson(dir, W);
  for (const v of st2.services) assert.ok(v.state === 'running' && v.healthy && v.pid !== bystander.pid, JSON.stringify(v));
  await strataOk(dir, [...W, 'stop']);
  assert.equal(isAlive(bystander.pid!), true);
  assert.deepEqual(pidsMentioning(dir), []);

  // A service that exits during startup: one line naming it and its log (with the log's last line).
  const idFile = path.join(state, 'safekeeper-2', 'safekeeper.id');
  await writeFile(idFile, '9\n');
  const failed = await strata(dir, [...W, 'start']);
  assert.equal(failed.code, 1);
  const line = oneLine(failed);
  assert.match(line, /^strata: error: safekeeper 2 exited during startup \(code 1\); see .*safekeeper-2\.log \(last line: .*belongs to safekeeper 9/);
  assert.equal(svc(await statusJson(dir, W), 'safekeeper-2').state, 'stopped');
  await writeFile(idFile, '2\n');
  await strataOk(dir, [...W, 'start']);
  for (const v of (await statusJson(dir, W)).services) assert.ok(v.state === 'running' && v.healthy, JSON.stringify(v));
  await strataOk(dir, [...W, 'stop']);
  assert.deepEqual(pidsMentioning(dir), []);
});
