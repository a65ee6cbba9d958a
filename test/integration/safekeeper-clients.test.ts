/**
 * Real PostgreSQL 15 clients against the safekeepers of a running Strata system: a broker, three
 * `strata safekeeper` processes (the CLI), an in-process pageserver that finds them through the
 * broker, and a vanilla PostgreSQL compute started through an election (Endpoint.start with
 * safekeepers, `ANY 2 (sk_1, sk_2, sk_3)`).
 *
 * The oracles are PostgreSQL's own files and behaviour, never the safekeeper's word:
 *  - pg_receivewal from a safekeeper writes segment files equal, byte for byte, to the compute's own
 *    pg_wal files of the same name; its .partial holds the compute's bytes up to where it stopped
 *    (as it reports with -v) and zero padding after;
 *  - a hot standby built with pg_basebackup -X none from the compute, streaming from a safekeeper,
 *    can only become consistent with that WAL, and then shows rows inserted on the compute; a frozen
 *    standby (SIGSTOP) does not hold the compute's commits (it is no synchronous standby);
 *  - /metrics agrees with the status JSON and counts the pageserver's stream (and a client's);
 *  - with a tenant that checkpoints every 4 MiB, old WAL segments disappear from the safekeepers'
 *    directories once the pageserver's disk_consistent_lsn passed them — and at no time does a
 *    safekeeper's first_lsn exceed the pageserver's durable LSN or its own remote_consistent_lsn.
 *
 * The compute is configured so it neither checkpoints nor recycles segments on its own during the
 * test (checkpoint_timeout 1h, max_wal_size 4GB): its pg_wal is the byte oracle for test 1.
 * Every process (broker, safekeepers, computes, standby, pg_receivewal) is stopped in teardown,
 * also when a test fails.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, mkdtempSync, rmSync } from 'node:fs';
import { appendFile, mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import pg from 'pg';
import { Endpoint } from '../../src/compute/endpoint.ts';
import { PostgresProcess, freePort } from '../../src/compute/postgresprocess.ts';
import { bootstrapTimeline } from '../../src/pageserver/import/bootstrap.ts';
import { Pageserver } from '../../src/pageserver/pageserver.ts';
import type { Timeline } from '../../src/pageserver/timeline/timeline.ts';
import { formatLsn, parseLsn, type Lsn } from '../../src/postgres/lsn.ts';
import { chownForPostgres, pgBinDir } from '../../src/postgres/pgbin.ts';
import { parseWalSegmentFileName, walSegmentFileName } from '../../src/postgres/walformat.ts';
import { BrokerProcess, SafekeeperProcess, waitFor } from '../support/cluster.ts';
import { runClientTool } from '../support/endpoint-target.ts';

// Quiet in-process logs (the pageserver); the CLI processes get the same level (cluster.ts).
process.env['STRATA_LOG'] ??= 'warn';

const COMPUTE_SETTINGS = { fsync: false, autovacuum: false, checkpoint_timeout: '1h', max_wal_size: '4GB' } as const;
const HOST = '127.0.0.1';
const CHILD_TIMEOUT_MS = 120_000;

// ---------------------------------------------------------------------------------------------
// Shared system (started in before(), stopped in after())

interface Env {
  workdir: string;
  broker: BrokerProcess;
  sks: SafekeeperProcess[];
  ps: Pageserver;
  tenantId: string;
  tl: Timeline;
  ep: Endpoint;
  segSize: number;
}

let env: Env | null = null;
const endpoints: Endpoint[] = [];
const standbys: PostgresProcess[] = [];
const children = new Set<ChildProcess>();
let partial: { workdir: string | null; broker: BrokerProcess | null; sks: SafekeeperProcess[]; ps: Pageserver | null } = { workdir: null, broker: null, sks: [], ps: null };

before(async () => {
  const workdir = mkdtempSync(path.join(os.tmpdir(), 'strata-skc-'));
  chmodSync(workdir, 0o755);
  partial.workdir = workdir;
  const broker = await BrokerProcess.create();
  partial.broker = broker;
  const sks = await Promise.all([1, 2, 3].map((i) => SafekeeperProcess.create(i, path.join(workdir, `sk${i}`), broker.endpoint)));
  partial.sks = sks;
  await broker.start();
  await Promise.all(sks.map((sk) => sk.start()));
  const ps = await Pageserver.start({
    workdir: path.join(workdir, 'pageserver'), pageCacheBytes: 16 << 20, blockCacheBytes: 8 << 20, waitLsnTimeoutMs: 60_000,
    brokerEndpoint: broker.endpoint, walReceiverBackoffMs: { min: 20, max: 500 },
  });
  partial.ps = ps;
  const tenant = await ps.tenants.createTenant({});
  const tl = await bootstrapTimeline(tenant);
  const ep = await Endpoint.start({
    pageserver: ps, tenantId: tenant.tenantId, timelineId: tl.timelineId, dir: path.join(workdir, 'ep'), settings: COMPUTE_SETTINGS,
    safekeepers: sks.map((s) => s.address),
  });
  endpoints.push(ep);
  const st = await sks[0]!.status(tenant.tenantId, tl.timelineId) as unknown as { wal_seg_size: number };
  env = { workdir, broker, sks, ps, tenantId: tenant.tenantId, tl, ep, segSize: st.wal_seg_size };
}, { timeout: 180_000 });

after(async () => {
  for (const c of children) {
    try { c.kill('SIGKILL'); } catch { /* gone */ }
  }
  for (const s of standbys) {
    try { process.kill(-s.pid, 'SIGCONT'); } catch { /* gone */ }
    await s.stop('immediate', 10_000).catch(() => undefined);
  }
  for (const ep of endpoints) await ep.kill().catch(() => undefined);
  await partial.ps?.shutdown({ flush: false }).catch(() => undefined);
  for (const sk of partial.sks) await sk.kill().catch(() => undefined);
  await partial.broker?.kill().catch(() => undefined);
  if (partial.workdir !== null && process.env['STRATA_KEEP_TMP'] !== '1') rmSync(partial.workdir, { recursive: true, force: true });
  partial = { workdir: null, broker: null, sks: [], ps: null };
}, { timeout: 120_000 });

function getEnv(): Env {
  assert.ok(env !== null, 'the system did not start (see the before hook)');
  return env;
}

// ---------------------------------------------------------------------------------------------
// Helpers

async function query(port: number, sql: string, params: unknown[] = []): Promise<pg.QueryResult> {
  const c = new pg.Client({ host: HOST, port, user: 'postgres', database: 'postgres', connectionTimeoutMillis: 10_000 });
  await c.connect();
  try {
    return await c.query(sql, params);
  } finally {
    await c.end();
  }
}

async function flushLsnOf(port: number): Promise<Lsn> {
  return parseLsn(String((await query(port, 'SELECT pg_current_wal_flush_lsn()::text AS l')).rows[0].l));
}

/** A small committed write followed by a segment switch; returns the switch's position. */
async function switchWal(port: number): Promise<void> {
  await query(port, 'CREATE TABLE IF NOT EXISTS wal_filler (id bigserial, pad text)');
  await query(port, "INSERT INTO wal_filler (pad) VALUES ('x')");
  await query(port, 'SELECT pg_switch_wal()');
}

interface ToolRun {
  proc: ChildProcess;
  stderr: () => string;
  done: Promise<{ code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string }>;
}

/** Spawns a PostgreSQL client program (no PG* variables from outside); killed in teardown if still running. */
function startTool(binary: string, args: string[], timeoutMs = CHILD_TIMEOUT_MS): ToolRun {
  const cleanEnv: NodeJS.ProcessEnv = { LC_ALL: 'C' };
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('PG') && v !== undefined && k !== 'LC_ALL') cleanEnv[k] = v;
  const proc = spawn(path.join(pgBinDir(), binary), args, { env: cleanEnv, stdio: ['ignore', 'pipe', 'pipe'] });
  children.add(proc);
  let stdout = '';
  let stderr = '';
  proc.stdout!.on('data', (d: Buffer) => { if (stdout.length < 1_000_000) stdout += d.toString(); });
  proc.stderr!.on('data', (d: Buffer) => { if (stderr.length < 1_000_000) stderr += d.toString(); });
  const timer = setTimeout(() => proc.kill('SIGKILL'), timeoutMs);
  const done = new Promise<{ code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string }>((resolve) => {
    proc.once('close', (code, signal) => {
      clearTimeout(timer);
      children.delete(proc);
      resolve({ code, signal, stdout, stderr });
    });
    proc.once('error', (err) => {
      clearTimeout(timer);
      children.delete(proc);
      resolve({ code: null, signal: null, stdout, stderr: stderr + String(err) });
    });
  });
  return { proc, stderr: () => stderr, done };
}

function skConninfo(sk: SafekeeperProcess, tenantId: string, timelineId: string, extra = ''): string {
  return `host=${HOST} port=${sk.pgPort} user=postgres options='-c tenant_id=${tenantId} -c timeline_id=${timelineId}'${extra === '' ? '' : ' ' + extra}`;
}

interface FullStatus {
  flush_lsn: string;
  commit_lsn: string;
  first_lsn: string;
  remote_consistent_lsn: string;
  timeline_start_lsn: string;
  local_start_lsn: string;
}

async function skStatus(sk: SafekeeperProcess, tenantId: string, timelineId: string): Promise<FullStatus> {
  return await sk.status(tenantId, timelineId) as unknown as FullStatus;
}

async function metricsText(sk: SafekeeperProcess): Promise<string> {
  const res = await fetch(`http://${HOST}:${sk.httpPort}/metrics`, { signal: AbortSignal.timeout(5_000) });
  assert.equal(res.status, 200);
  return res.text();
}

/** The value of `name{labels}` in Prometheus text (labels must match exactly, in any order); null if absent. */
function metricValue(text: string, name: string, labels: Record<string, string> = {}): number | null {
  const want = Object.entries(labels).sort().map(([k, v]) => `${k}="${v}"`).join(',');
  for (const line of text.split('\n')) {
    if (line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{([^}]*)\})?\s+(\S+)/.exec(line);
    if (m === null || m[1] !== name) continue;
    const got = (m[2] ?? '').split(',').filter((s) => s !== '').sort().join(',');
    if (got === want) return Number(m[3]);
  }
  return null;
}

function segStart(segNo: bigint, segSize: number): Lsn {
  return segNo * BigInt(segSize);
}

function firstDifference(a: Buffer, b: Buffer): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return i;
  return a.length === b.length ? -1 : n;
}

/** Which safekeeper the pageserver streams this timeline from (null while not streaming). */
function pageserverSafekeeper(e: Env, tenantId: string, timelineId: string): bigint | null {
  const st = e.ps.connectionManager(tenantId, timelineId)?.status;
  return st !== undefined && st.state === 'streaming' ? st.safekeeperId : null;
}

// ---------------------------------------------------------------------------------------------

test('pg_receivewal from a safekeeper writes the compute\'s WAL segments byte for byte', { timeout: 240_000 }, async () => {
  const e = getEnv();
  const seg = BigInt(e.segSize);
  const sk = e.sks[1]!;
  const ids = { tenantId: e.tenantId, timelineId: e.tl.timelineId };
  const startLsn = e.ep.startLsn;

  // WAL: pgbench -i, then segment switches until the compute is at least 2 segments past its start.
  await runClientTool(e.ep.port, 'pgbench', ['-i', '-s', '2', '-q', '--no-vacuum'], { timeoutMs: 180_000 });
  for (let i = 0; i < 20 && (await flushLsnOf(e.ep.port)) / seg < startLsn / seg + 3n; i++) await switchWal(e.ep.port);
  const f0 = await flushLsnOf(e.ep.port);
  assert.ok(f0 / seg >= startLsn / seg + 3n, `the compute's WAL (${formatLsn(f0)}) is 3+ segments past its start ${formatLsn(startLsn)}`);
  await waitFor(`safekeeper ${sk.id} commit_lsn to reach the compute's flush ${formatLsn(f0)}`,
    async () => parseLsn((await skStatus(sk, ids.tenantId, ids.timelineId)).commit_lsn) >= f0, 60_000);

  const before = await skStatus(sk, ids.tenantId, ids.timelineId);
  const c0 = parseLsn(before.commit_lsn);
  const firstLsn = parseLsn(before.first_lsn);
  assert.equal(before.timeline_start_lsn, formatLsn(startLsn), 'the safekeepers\' timeline starts at the compute\'s start LSN');
  // pg_receivewal starts at the segment of IDENTIFY_SYSTEM's xlogpos (our commit LSN): it must be all here.
  assert.ok(segStart(c0 / seg, e.segSize) >= firstLsn, `the segment of ${formatLsn(c0)} is wholly on the safekeeper (first_lsn ${formatLsn(firstLsn)})`);
  // Stop well into the third segment after the start, so at least two complete segments come first
  // even if background WAL moves the start one segment on.
  const endpos = segStart(c0 / seg + 3n, e.segSize) + 12_345n;

  const dir = path.join(e.workdir, 'receivewal');
  await mkdir(dir, { recursive: true });
  const rw = startTool('pg_receivewal', ['-d', skConninfo(sk, ids.tenantId, ids.timelineId), '-D', dir, '--no-loop', '--no-sync', '-v', '-E', formatLsn(endpos)]);
  await waitFor('pg_receivewal to start streaming', () => /starting log streaming at/.test(rw.stderr()) || rw.proc.exitCode !== null, 30_000);
  assert.equal(rw.proc.exitCode, null, `pg_receivewal is running: ${rw.stderr()}`);

  // More WAL on the compute, committed, until it is past endpos.
  for (let i = 0; i < 20 && (await flushLsnOf(e.ep.port)) <= endpos + 8192n; i++) {
    await query(e.ep.port, "INSERT INTO wal_filler (pad) SELECT repeat('y', 200) FROM generate_series(1, 5000)");
    if ((await flushLsnOf(e.ep.port)) <= endpos) await query(e.ep.port, 'SELECT pg_switch_wal()');
  }
  assert.ok((await flushLsnOf(e.ep.port)) > endpos, 'the compute wrote past endpos');
  const res = await rw.done;
  assert.equal(res.code, 0, `pg_receivewal exits 0 after reaching endpos: ${res.stderr}`);

  const started = /starting log streaming at ([0-9A-F]+\/[0-9A-F]+) \(timeline 1\)/.exec(res.stderr);
  const stopped = /stopped log streaming at ([0-9A-F]+\/[0-9A-F]+) \(timeline 1\)/.exec(res.stderr);
  assert.ok(started !== null && stopped !== null, `pg_receivewal -v reports where it started and stopped: ${res.stderr}`);
  const from = parseLsn(started[1]!);
  const to = parseLsn(stopped[1]!);
  assert.equal(from % seg, 0n, 'pg_receivewal starts at a segment boundary');
  assert.ok(from >= segStart(c0 / seg, e.segSize), `it started at the segment of the commit LSN or later (${formatLsn(from)} vs ${formatLsn(c0)})`);
  assert.ok(to > endpos, `it stopped past endpos (${formatLsn(to)} > ${formatLsn(endpos)})`);
  // Nothing beyond the compute's flush (the safekeeper serves committed WAL only).
  assert.ok(to <= await flushLsnOf(e.ep.port));

  // The files: exactly the segments [from, to), complete ones final, the last one .partial.
  const names = (await readdir(dir)).sort();
  const parsed = names.map((n) => ({ name: n, p: parseWalSegmentFileName(n, e.segSize) }));
  for (const x of parsed) assert.ok(x.p !== null && x.p.timeline === 1, `unexpected file ${x.name} from pg_receivewal`);
  const firstSeg = from / seg;
  const lastSeg = (to - 1n) / seg;
  const expectNames: string[] = [];
  for (let s = firstSeg; s <= lastSeg; s++) {
    const complete = segStart(s + 1n, e.segSize) <= to;
    expectNames.push(walSegmentFileName(1, s, e.segSize) + (complete ? '' : '.partial'));
  }
  assert.deepEqual(names, expectNames.sort(), 'pg_receivewal wrote exactly the segments it streamed');
  const complete = expectNames.filter((n) => !n.endsWith('.partial'));
  assert.ok(complete.length >= 2, `at least two complete segments (${complete.join(', ')})`);

  const pgWal = path.join(e.ep.dataDir, 'pg_wal');
  for (const name of complete) {
    const ours = await readFile(path.join(dir, name));
    const theirs = await readFile(path.join(pgWal, name));
    assert.equal(ours.length, e.segSize, `${name} is a whole segment`);
    const d = firstDifference(ours, theirs);
    assert.equal(d, -1, `${name} equals the compute's pg_wal/${name} (first difference at byte ${d})`);
  }
  const partialName = expectNames.find((n) => n.endsWith('.partial'));
  if (partialName !== undefined) {
    const name = partialName.slice(0, -'.partial'.length);
    const ours = await readFile(path.join(dir, partialName));
    const theirs = await readFile(path.join(pgWal, name));
    const n = Number(to - segStart(lastSeg, e.segSize));
    assert.equal(ours.length, e.segSize, 'pg_receivewal pads its .partial to a whole segment');
    const d = firstDifference(ours.subarray(0, n), theirs.subarray(0, n));
    assert.equal(d, -1, `${partialName} holds the compute's bytes up to ${formatLsn(to)} (first difference at byte ${d})`);
    assert.ok(ours.subarray(n).every((b) => b === 0), 'and zeros after');
  }
});

test('a vanilla hot standby streams from a safekeeper and sees the compute\'s rows; it is no synchronous standby', { timeout: 240_000 }, async () => {
  const e = getEnv();
  const seg = BigInt(e.segSize);
  const sk = e.sks[2]!;
  const ids = { tenantId: e.tenantId, timelineId: e.tl.timelineId };

  await query(e.ep.port, 'CREATE TABLE hs_rows (id int PRIMARY KEY, note text)');
  await switchWal(e.ep.port);
  const sbDir = path.join(e.workdir, 'standby');
  const dataDir = path.join(sbDir, 'pgdata');
  await mkdir(sbDir, { recursive: true, mode: 0o755 });
  const bb = startTool('pg_basebackup', ['-h', HOST, '-p', String(e.ep.port), '-U', 'postgres', '-D', dataDir, '-X', 'none', '-c', 'fast', '--no-sync']);
  const bbRes = await bb.done;
  assert.equal(bbRes.code, 0, `pg_basebackup from the compute: ${bbRes.stderr}`);

  // The standby starts streaming at the segment of the backup's start: it must be on the safekeeper.
  const label = await readFile(path.join(dataDir, 'backup_label'), 'utf8');
  const m = /START WAL LOCATION: ([0-9A-F]+\/[0-9A-F]+)/.exec(label);
  assert.ok(m !== null, `backup_label has a start location: ${label}`);
  const backupStart = parseLsn(m[1]!);
  const st = await skStatus(sk, ids.tenantId, ids.timelineId);
  assert.ok(segStart(backupStart / seg, e.segSize) >= parseLsn(st.first_lsn),
    `the standby's start segment (${formatLsn(backupStart)}) is on safekeeper ${sk.id} (first_lsn ${st.first_lsn})`);

  const port = await freePort();
  const conn = `host=${HOST} port=${sk.pgPort} user=postgres options=''-c tenant_id=${ids.tenantId} -c timeline_id=${ids.timelineId}'' application_name=replica1`;
  await appendFile(path.join(dataDir, 'postgresql.auto.conf'), [
    '', '# hot standby of a Strata safekeeper',
    `port = ${port}`,
    `unix_socket_directories = '${sbDir}'`,
    `primary_conninfo = '${conn}'`,
    'hot_standby = on',
    "wal_receiver_status_interval = '1s'",
    "wal_retrieve_retry_interval = '500ms'",
    '',
  ].join('\n'));
  await writeFile(path.join(dataDir, 'standby.signal'), '');
  await chownForPostgres(sbDir);
  // -X none: the standby has no WAL of its own; it becomes consistent only by streaming from the safekeeper.
  const standby = await PostgresProcess.start({ dataDir, port, logFile: path.join(sbDir, 'standby.log'), readyTimeoutMs: 60_000 });
  standbys.push(standby);

  const rcv = (await query(port, 'SELECT status, sender_host, sender_port, conninfo FROM pg_stat_wal_receiver')).rows;
  assert.equal(rcv.length, 1, 'the standby has a WAL receiver');
  assert.equal(rcv[0].status, 'streaming');
  assert.equal(rcv[0].sender_host, HOST);
  assert.equal(rcv[0].sender_port, sk.pgPort, 'it streams from the safekeeper\'s port');
  assert.match(String(rcv[0].conninfo), new RegExp(`tenant_id=${ids.tenantId}`));

  await query(e.ep.port, "INSERT INTO hs_rows SELECT g, 'row ' || g FROM generate_series(1, 3000) g");
  const target = await flushLsnOf(e.ep.port);
  await waitFor('the rows on the standby', async () => {
    const r = await query(port, 'SELECT count(*)::int AS n, sum(id)::bigint AS s FROM hs_rows');
    return r.rows[0].n === 3000 && String(r.rows[0].s) === '4501500';
  }, 60_000);
  const replay = parseLsn(String((await query(port, 'SELECT pg_last_wal_replay_lsn()::text AS l')).rows[0].l));
  assert.ok(replay >= target, `the standby replayed past the insert (${formatLsn(replay)} ≥ ${formatLsn(target)})`);

  // 'replica1' is no synchronous standby: the compute does not see it, and a frozen replica holds no commit.
  const sync = await query(e.ep.port, 'SELECT application_name, sync_state FROM pg_stat_replication ORDER BY application_name');
  assert.ok(sync.rows.every((r: { application_name: string }) => r.application_name !== 'replica1'), 'the compute has no replica1 connection');
  assert.doesNotMatch(String((await query(e.ep.port, "SELECT current_setting('synchronous_standby_names') AS s")).rows[0].s), /replica1/);
  process.kill(-standby.pid, 'SIGSTOP');
  try {
    const t0 = Date.now();
    for (let i = 0; i < 20; i++) await query(e.ep.port, 'INSERT INTO hs_rows VALUES ($1, $2)', [100_000 + i, 'while frozen']);
    const took = Date.now() - t0;
    assert.ok(took < 10_000, `20 commits with the replica frozen took ${took} ms`);
  } finally {
    process.kill(-standby.pid, 'SIGCONT');
  }
  await waitFor('the standby to catch up after being frozen', async () => {
    const r = await query(port, "SELECT count(*)::int AS n FROM hs_rows WHERE note = 'while frozen'");
    return r.rows[0].n === 20;
  }, 60_000);
  // A replica's replies are no pageserver feedback: they must not move remote_consistent_lsn past what the pageserver has durable.
  const after = await skStatus(sk, ids.tenantId, ids.timelineId);
  const durable = e.tl.diskConsistent.lsn;
  assert.ok(parseLsn(after.remote_consistent_lsn) <= durable,
    `remote_consistent_lsn ${after.remote_consistent_lsn} ≤ the pageserver's durable LSN ${formatLsn(durable)}`);

  const log = await readFile(path.join(sbDir, 'standby.log'), 'utf8');
  assert.match(log, /started streaming WAL from primary at \S+ on timeline 1/);
  await standby.stop('fast', 30_000);
});

test('safekeeper /metrics: flush LSN as in the status, walsender streams counted', { timeout: 120_000 }, async () => {
  const e = getEnv();
  const ids = { tenantId: e.tenantId, timelineId: e.tl.timelineId };
  const labels = { tenant_id: ids.tenantId, timeline_id: ids.timelineId };

  for (const sk of e.sks) {
    let checked = false;
    for (let i = 0; i < 100 && !checked; i++) {
      const s1 = (await skStatus(sk, ids.tenantId, ids.timelineId)).flush_lsn;
      const text = await metricsText(sk);
      const s2 = (await skStatus(sk, ids.tenantId, ids.timelineId)).flush_lsn;
      if (s1 !== s2) continue; // WAL arrived meanwhile; try again
      const v = metricValue(text, 'safekeeper_flush_lsn', labels);
      assert.ok(v !== null, `safekeeper ${sk.id} exports safekeeper_flush_lsn for the timeline`);
      assert.equal(v, Number(parseLsn(s1)), `safekeeper ${sk.id}: safekeeper_flush_lsn = status flush_lsn ${s1}`);
      const received = metricValue(text, 'safekeeper_wal_received_bytes_total');
      assert.ok(received !== null && received > 0, `safekeeper ${sk.id} counts the WAL it received (${received})`);
      checked = true;
    }
    assert.ok(checked, `safekeeper ${sk.id}: the flush LSN was never stable across two status reads`);
  }

  // The pageserver streams from one of them; no other client is connected now.
  let psSk: bigint | null = null;
  await waitFor('the pageserver streaming from one safekeeper, and no other walsender stream anywhere', async () => {
    psSk = pageserverSafekeeper(e, ids.tenantId, ids.timelineId);
    if (psSk === null) return false;
    for (const sk of e.sks) {
      const n = metricValue(await metricsText(sk), 'safekeeper_walsender_streams');
      if (n === null) return false;
      if (sk.id === psSk ? n < 1 : n !== 0) return false;
    }
    return pageserverSafekeeper(e, ids.tenantId, ids.timelineId) === psSk;
  }, 30_000);
  assert.ok(psSk !== null);

  // A client on another safekeeper is counted there while it streams, and no longer once it is gone.
  const other = e.sks.find((s) => s.id !== psSk)!;
  const dir = path.join(e.workdir, 'receivewal-metrics');
  await mkdir(dir, { recursive: true });
  const rw = startTool('pg_receivewal', ['-d', skConninfo(other, ids.tenantId, ids.timelineId), '-D', dir, '--no-loop', '--no-sync', '-v']);
  try {
    await waitFor(`safekeeper ${other.id} counting pg_receivewal's stream`, async () =>
      metricValue(await metricsText(other), 'safekeeper_walsender_streams') === 1, 30_000);
  } finally {
    rw.proc.kill('SIGINT');
    await rw.done;
  }
  await waitFor(`safekeeper ${other.id} to drop the ended stream`, async () =>
    metricValue(await metricsText(other), 'safekeeper_walsender_streams') === 0, 10_000);
  assert.ok((metricValue(await metricsText(e.sks.find((s) => s.id === psSk)!), 'safekeeper_walsender_streams') ?? 0) >= 1);
});

test('safekeepers remove WAL the pageserver has made durable, and never more', { timeout: 300_000 }, async () => {
  const e = getEnv();
  const seg = BigInt(e.segSize);
  const tenant = await e.ps.tenants.createTenant({ config: { checkpointDistanceBytes: 4 * 1024 * 1024 } });
  const tl = await bootstrapTimeline(tenant);
  const ids = { tenantId: tenant.tenantId, timelineId: tl.timelineId };
  const ep = await Endpoint.start({
    pageserver: e.ps, ...ids, dir: path.join(e.workdir, 'ep-removal'), settings: COMPUTE_SETTINGS, safekeepers: e.sks.map((s) => s.address),
  });
  endpoints.push(ep);
  const startSeg = ep.startLsn / seg;
  const boundary = segStart(startSeg + 3n, e.segSize); // segments below it are "old"

  const violations: string[] = [];
  /** first_lsn never passes the pageserver's durable LSN nor the safekeeper's own remote_consistent_lsn. */
  const checkSafety = async (): Promise<FullStatus[]> => {
    const out: FullStatus[] = [];
    for (const sk of e.sks) {
      const s = await skStatus(sk, ids.tenantId, ids.timelineId);
      const durable = tl.diskConsistent.lsn; // read after the status: it only grows
      const first = parseLsn(s.first_lsn);
      if (first > parseLsn(s.local_start_lsn)) {
        if (first > durable) violations.push(`safekeeper ${sk.id}: first_lsn ${s.first_lsn} > pageserver durable ${formatLsn(durable)}`);
        if (first > parseLsn(s.remote_consistent_lsn)) violations.push(`safekeeper ${sk.id}: first_lsn ${s.first_lsn} > remote_consistent_lsn ${s.remote_consistent_lsn}`);
      }
      out.push(s);
    }
    return out;
  };

  await runClientTool(ep.port, 'pgbench', ['-i', '-s', '2', '-q', '--no-vacuum'], { timeoutMs: 180_000 });
  await query(ep.port, 'CREATE TABLE filler (id bigserial, pad text)');
  // Enough WAL that the pageserver checkpoints past the boundary (it flushes every 4 MiB of ingested WAL).
  for (let i = 0; i < 60 && tl.diskConsistent.lsn < boundary + seg; i++) {
    await query(ep.port, "INSERT INTO filler (pad) SELECT repeat('z', 300) FROM generate_series(1, 20000)");
    if ((await flushLsnOf(ep.port)) < boundary + 2n * seg) await query(ep.port, 'SELECT pg_switch_wal()');
    await checkSafety();
    await new Promise((r) => setTimeout(r, 200));
  }
  assert.ok(tl.diskConsistent.lsn >= boundary, `the pageserver's durable LSN ${formatLsn(tl.diskConsistent.lsn)} passed ${formatLsn(boundary)}`);
  assert.deepEqual(violations, []);

  // The CLI removes WAL every 10 s: give it a few rounds. Every safekeeper may remove: the pageserver's
  // durable LSN is what it reports to the one it streams from, and safekeepers share their positions
  // through the broker (as in Neon, where remote_consistent_lsn travels in SafekeeperTimelineInfo).
  const removedOn = (sts: FullStatus[]): bigint[] => sts.flatMap((s, i) => (parseLsn(s.first_lsn) >= boundary ? [e.sks[i]!.id] : []));
  let final = await checkSafety();
  const deadline = Date.now() + 45_000;
  while (removedOn(final).length < e.sks.length && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 250));
    final = await checkSafety();
  }
  assert.deepEqual(violations, [], 'first_lsn stayed at or below what the pageserver has durable');
  const summary = final.map((s, i) => `sk${e.sks[i]!.id}: first ${s.first_lsn} remote_consistent ${s.remote_consistent_lsn} flush ${s.flush_lsn}`).join('; ');
  const context = `${summary}; pageserver durable ${formatLsn(tl.diskConsistent.lsn)}, streaming from sk ${pageserverSafekeeper(e, ids.tenantId, ids.timelineId)}`;
  const removed = removedOn(final);

  // Whatever removed WAL did it right: the old segment files are gone, the one holding first_lsn is there.
  for (const [i, sk] of e.sks.entries()) {
    // Removal may go on meanwhile: first_lsn before the listing bounds what must be gone, first_lsn
    // after it names a segment that must still have been there.
    const dir = path.join(sk.dataDir, ids.tenantId, ids.timelineId);
    const first = parseLsn(final[i]!.first_lsn);
    const segs = (await readdir(dir)).map((n) => parseWalSegmentFileName(n, e.segSize)).filter((p) => p !== null);
    const firstAfter = parseLsn((await skStatus(sk, ids.tenantId, ids.timelineId)).first_lsn);
    const old = segs.filter((p) => segStart(p.segNo + 1n, e.segSize) <= first);
    assert.deepEqual(old, [], `safekeeper ${sk.id} has no segment files below first_lsn ${formatLsn(first)}`);
    assert.ok(segs.some((p) => p.segNo === firstAfter / seg), `safekeeper ${sk.id} still has the segment holding first_lsn ${formatLsn(firstAfter)}`);
    if (removed.includes(sk.id)) assert.ok(!segs.some((p) => p.segNo === startSeg), `safekeeper ${sk.id}: the timeline's first segment is gone`);
  }
  // The compute is unaffected.
  const rows = (await query(ep.port, 'SELECT count(*)::int AS n FROM pgbench_accounts')).rows[0].n as number;
  assert.equal(rows, 200_000);
  assert.ok(removed.length > 0, `at least the safekeeper the pageserver reports to removed WAL below ${formatLsn(boundary)} within 45 s (${context})`);
  assert.deepEqual(removed, e.sks.map((s) => s.id), `every safekeeper removed WAL below ${formatLsn(boundary)} within 45 s (${context})`);

});
