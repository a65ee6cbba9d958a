/**
 * Tests of the PostgreSQL test harness (test/harness/postgres.ts) and the WAL workloads
 * (test/harness/workloads.ts) against real PostgreSQL 15 binaries.
 *
 * What matters most in a harness is that it never leaks servers, so besides "it starts and answers" these
 * tests check from the outside (/proc, ps, a TCP connect) that a stopped server is really gone, including
 * when the test that started it fails (run in a child `node --test` process) or its process is killed by a
 * signal. The workload test checks the WAL with pg_waldump, an independent reader, for record types each
 * workload is meant to produce.
 */
import { spawn, execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as fsp from 'node:fs/promises';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { formatLsn } from '../../src/postgres/lsn.ts';
import { isProcessAlive, runningPostgresCount, startPostgres, stopAllPostgres, withPostgres } from '../harness/postgres.ts';
import { ddlMixWorkload, pgbenchWorkload } from '../harness/workloads.ts';

const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const FIXTURE = path.join(REPO_ROOT, 'test', 'integration', 'fixtures', 'harness-leak.fixture.ts');

/** Resolves with the connect error code, or 'connected' if something accepted the connection. */
function tcpProbe(port: number): Promise<string> {
  return new Promise((resolve) => {
    const sock = net.connect({ host: '127.0.0.1', port });
    const timer = setTimeout(() => { sock.destroy(); resolve('timeout'); }, 2_000);
    sock.once('connect', () => { clearTimeout(timer); sock.destroy(); resolve('connected'); });
    sock.once('error', (err: NodeJS.ErrnoException) => { clearTimeout(timer); resolve(err.code ?? 'error'); });
  });
}

/** Processes (pid and command line) whose command line mentions `needle` or whose process group is `pgid`. */
function processesOf(needle: string, pgid: number): string[] {
  const out = execFileSync('ps', ['-eo', 'pid=,pgid=,stat=,args='], { encoding: 'utf8' });
  return out.split('\n').filter((line) => {
    const m = /^\s*(\d+)\s+(\d+)\s+(\S+)\s+(.*)$/.exec(line);
    if (m === null) return false;
    if (m[3]!.startsWith('Z')) return false; // an unreaped zombie runs nothing
    return Number(m[2]) === pgid || m[4]!.includes(needle);
  });
}

function osUidOf(pid: number): number {
  const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  const m = /^Uid:\s+(\d+)/m.exec(status);
  assert.ok(m !== null, `no Uid line in /proc/${pid}/status`);
  return Number(m[1]);
}

async function assertServerGone(info: { pid: number; port: number; dataDir: string; tmpDir: string }): Promise<void> {
  assert.equal(isProcessAlive(info.pid), false, `postmaster pid ${info.pid} is still alive`);
  assert.deepEqual(processesOf(info.dataDir, info.pid), [], 'processes of the stopped server remain');
  assert.equal(await tcpProbe(info.port), 'ECONNREFUSED', `port ${info.port} still accepts connections`);
  assert.equal(fs.existsSync(info.tmpDir), false, `temp dir ${info.tmpDir} was not removed`);
}

test('a cluster starts, answers on a loopback port chosen at run time, and stop() really stops it', async (t) => {
  const pg = await withPostgres(t, { conf: { work_mem: '7MB' } });

  const answer = await pg.query<{ x: number }>('SELECT 6 * 7 AS x');
  assert.equal(answer.rows[0]?.x, 42);

  const where = await pg.query<{ addr: string; port: number; listen: string; wal_level: string; fsync: string; mpx: string; wm: string }>(
    `SELECT host(inet_server_addr()) AS addr, inet_server_port() AS port, current_setting('listen_addresses') AS listen,
            current_setting('wal_level') AS wal_level, current_setting('fsync') AS fsync,
            current_setting('max_prepared_transactions') AS mpx, current_setting('work_mem') AS wm`,
  );
  const row = where.rows[0];
  assert.ok(row !== undefined);
  assert.equal(row.addr, '127.0.0.1');
  assert.equal(row.port, pg.port);
  assert.equal(row.listen, '127.0.0.1');
  assert.equal(row.wal_level, 'replica');
  assert.equal(row.fsync, 'off');
  assert.equal(row.mpx, '10');
  assert.equal(row.wm, '7MB');
  // Chosen by the kernel from the ephemeral range, not a fixed default such as 5432.
  const [lo, hi] = fs.readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/).map(Number);
  assert.ok(lo !== undefined && hi !== undefined && pg.port >= lo && pg.port <= hi, `port ${pg.port} outside the ephemeral range ${lo}-${hi}`);

  // The real psql binary, and the server's OS user (never root).
  assert.equal((await pg.psql('SELECT 40 + 2;')).stdout.trim(), '42');
  const expectedUid = process.getuid?.() === 0 ? Number(execFileSync('id', ['-u', 'postgres'], { encoding: 'utf8' }).trim()) : process.getuid?.();
  assert.equal(osUidOf(pg.pid), expectedUid);
  assert.ok(fs.existsSync(path.join(pg.walDir, '000000010000000000000001')), 'pg_wal has the first segment');

  // An open client must not keep stop() from finishing.
  const client = await pg.connect();
  await client.query('SELECT 1');
  const pid = pg.pid;
  assert.equal(isProcessAlive(pid), true);
  assert.equal(await tcpProbe(pg.port), 'connected');

  await pg.stop();
  assert.equal(isProcessAlive(pid), false, 'postmaster still alive after stop()');
  assert.deepEqual(processesOf(pg.dataDir, pid), []);
  assert.equal(await tcpProbe(pg.port), 'ECONNREFUSED');
  await pg.stop(); // idempotent
  assert.ok(fs.existsSync(pg.dataDir), 'stop() keeps the data dir');
  await pg.cleanup();
  assert.equal(fs.existsSync(pg.tmpDir), false, 'cleanup() removes the temp dir');
  assert.equal(runningPostgresCount(), 0);
});

test('a server that cannot start fails fast with its log, and leaves nothing behind', async () => {
  let dataDir = '';
  await assert.rejects(startPostgres({ conf: { shared_buffers: 'lots' } }), (err: Error) => {
    assert.match(err.message, /failed to start/);
    assert.match(err.message, /shared_buffers/); // from the server log
    const m = /PostgreSQL in (\S+) failed to start/.exec(err.message);
    assert.ok(m !== null, `the error names the data dir: ${err.message}`);
    dataDir = m[1]!;
    return true;
  });
  assert.ok(dataDir.startsWith(path.join(os.tmpdir(), 'strata-pg-')), dataDir);
  assert.equal(fs.existsSync(path.dirname(dataDir)), false, `temp dir of the failed cluster remains: ${path.dirname(dataDir)}`);
  assert.equal(runningPostgresCount(), 0);
});

test('stopAllPostgres() stops and removes every running cluster', async (t) => {
  const a = await startPostgres();
  const b = await startPostgres();
  t.after(async () => { await a.cleanup(); await b.cleanup(); }); // no-ops when the test passes
  assert.notEqual(a.port, b.port);
  assert.equal(runningPostgresCount(), 2);
  await stopAllPostgres();
  assert.equal(runningPostgresCount(), 0);
  await assertServerGone(a);
  await assertServerGone(b);
});

interface FixtureRun {
  code: number | null;
  signal: NodeJS.Signals | null;
  output: string;
  info: { pid: number; port: number; dataDir: string; tmpDir: string };
}

async function runFixture(mode: 'after' | 'forgotten' | 'signal', infoDir: string): Promise<FixtureRun> {
  const infoFile = path.join(infoDir, `${mode}.json`);
  const env: NodeJS.ProcessEnv = { ...process.env, FIXTURE_MODE: mode, FIXTURE_INFO: infoFile };
  delete env['NODE_TEST_CONTEXT']; // otherwise the child thinks it reports to our runner
  const args = mode === 'signal' ? ['--import', 'tsx', FIXTURE] : ['--import', 'tsx', '--test', FIXTURE];
  const child = spawn(process.execPath, args, { cwd: REPO_ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  child.stdout.on('data', (d: Buffer) => { output += d.toString(); });
  child.stderr.on('data', (d: Buffer) => { output += d.toString(); });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.once('exit', (code, signal) => resolve({ code, signal }));
  });
  const killTimer = setTimeout(() => child.kill('SIGKILL'), 60_000);
  try {
    if (mode === 'signal') {
      for (let i = 0; i < 600 && !fs.existsSync(infoFile) && child.exitCode === null; i++) await new Promise((r) => setTimeout(r, 50));
      assert.ok(fs.existsSync(infoFile), `fixture wrote no info file; output:\n${output}`);
      child.kill('SIGTERM');
    }
    const { code, signal } = await exited;
    assert.ok(fs.existsSync(infoFile), `fixture wrote no info file; output:\n${output}`);
    const info = JSON.parse(fs.readFileSync(infoFile, 'utf8')) as FixtureRun['info'];
    return { code, signal, output, info };
  } finally {
    clearTimeout(killTimer);
    child.kill('SIGKILL');
  }
}

test('a failing or killed test leaves no server behind', async (t) => {
  const infoDir = await fsp.mkdtemp(path.join(os.tmpdir(), 'strata-harness-test-'));
  t.after(() => fsp.rm(infoDir, { recursive: true, force: true }));

  await t.test('subtest fails after withPostgres(t): teardown runs', async () => {
    const run = await runFixture('after', infoDir);
    assert.equal(run.code, 1, `the fixture's test should fail; output:\n${run.output}`);
    assert.match(run.output, /deliberate failure/);
    await assertServerGone(run.info);
  });

  await t.test('subtest fails after startPostgres() with no teardown: the exit hook kills the server', async () => {
    const run = await runFixture('forgotten', infoDir);
    assert.equal(run.code, 1, `the fixture's test should fail; output:\n${run.output}`);
    assert.match(run.output, /deliberate failure/);
    await assertServerGone(run.info);
  });

  await t.test('process gets SIGTERM while a server runs: the signal hook kills the server', async () => {
    const run = await runFixture('signal', infoDir);
    assert.equal(run.signal, 'SIGTERM', `fixture should die of SIGTERM; got code ${run.code}; output:\n${run.output}`);
    await assertServerGone(run.info);
  });
});

/** Record counts by `Rmgr/TYPE` from `pg_waldump --stats=record`. */
function parseStats(text: string): Map<string, number> {
  const counts = new Map<string, number>();
  for (const line of text.split('\n')) {
    const m = /^(\w+\/\w+)\s+(\d+)\s/.exec(line);
    if (m !== null) counts.set(m[1]!, Number(m[2]));
  }
  return counts;
}

test('workloads produce WAL that pg_waldump reads back', async (t) => {
  const pg = await withPostgres(t, { initdbArgs: ['--wal-segsize=1'] });
  const dest = await fsp.mkdtemp(path.join(os.tmpdir(), 'strata-harness-wal-'));
  t.after(() => fsp.rm(dest, { recursive: true, force: true }));
  assert.equal(pg.walSegmentSizeBytes, 1024 * 1024);

  const ddl = await ddlMixWorkload(pg);
  assert.ok(ddl.endLsn > ddl.startLsn);
  assert.ok(ddl.switchLsn > ddl.startLsn && ddl.switchLsn < ddl.endLsn, 'the WAL switch is inside the range');
  assert.ok(ddl.checkpointRedoLsn > ddl.switchLsn && ddl.checkpointRedoLsn < ddl.endLsn, 'the checkpoint is inside the range');

  const bench = await pgbenchWorkload(pg, { scale: 1, transactions: 50, clients: 2 });
  assert.ok(bench.startLsn >= ddl.endLsn && bench.endLsn > bench.startLsn);
  const history = await pg.query<{ n: string }>('SELECT count(*)::text AS n FROM pgbench_history');
  assert.equal(history.rows[0]?.n, '100', '2 clients x 50 transactions');

  const switchLsn = await pg.switchWal();
  const segments = await pg.copyWal(dest, { throughLsn: switchLsn });
  const firstName = (await pg.query<{ f: string }>('SELECT pg_walfile_name($1::pg_lsn) AS f', [formatLsn(ddl.startLsn)])).rows[0]?.f;
  const lastName = (await pg.query<{ f: string }>('SELECT pg_walfile_name($1::pg_lsn) AS f', [formatLsn(switchLsn - 1n)])).rows[0]?.f;
  const names = segments.map((p) => path.basename(p));
  assert.ok(firstName !== undefined && names.includes(firstName), `segment ${firstName} holding the start is copied`);
  assert.equal(names.at(-1), lastName, 'nothing past the switched-out segment is copied');
  for (const p of segments) assert.equal(fs.statSync(p).size, 1024 * 1024);

  const ddlStats = parseStats((await pg.run('pg_waldump', ['-p', dest, '-s', formatLsn(ddl.startLsn), '-e', formatLsn(ddl.endLsn), '--stats=record'])).stdout);
  const expected: Record<string, number> = {
    'Transaction/PREPARE': 2,
    'Transaction/COMMIT_PREPARED': 1,
    'Transaction/ABORT_PREPARED': 1,
    'Transaction/ASSIGNMENT': 1, // > 64 subtransactions with xids in one transaction
    'MultiXact/CREATE_ID': 2,
    'Heap/LOCK': 1,
    'Database/CREATE_WAL_LOG': 1,
    'Database/CREATE_FILE_COPY': 1,
    'Database/DROP': 2,
    'Storage/CREATE': 1,
    'Sequence/LOG': 1,
    'Heap2/FREEZE_PAGE': 1,
    'XLOG/SWITCH': 1,
    'XLOG/CHECKPOINT_ONLINE': 1,
  };
  for (const [type, min] of Object.entries(expected)) {
    assert.ok((ddlStats.get(type) ?? 0) >= min, `${type}: expected at least ${min} in the DDL mix, pg_waldump counted ${ddlStats.get(type) ?? 0}`);
  }

  // The full (non-stats) dump of the pgbench range: every transaction commits, and its updates are there.
  const dump = (await pg.run('pg_waldump', ['-p', dest, '-s', formatLsn(bench.startLsn), '-e', formatLsn(bench.endLsn)])).stdout;
  const commits = dump.split('\n').filter((l) => /rmgr: Transaction .*desc: COMMIT /.test(l)).length;
  const updates = dump.split('\n').filter((l) => /rmgr: Heap .*desc: (HOT_)?UPDATE /.test(l)).length;
  assert.ok(commits >= 100, `expected >= 100 commits in the pgbench range, found ${commits}`);
  assert.ok(updates >= 300, `expected >= 300 heap updates (3 per pgbench transaction), found ${updates}`);
});
