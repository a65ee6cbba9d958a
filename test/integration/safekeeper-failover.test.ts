/**
 * Safekeeper failover, with real processes: a stale safekeeper from an older term rejoining cuts
 * its divergent tail (and the pageserver never ingested that tail, which was never committed); the
 * pageserver switches safekeeper when its current one dies and when it falls behind; a pageserver
 * killed with SIGKILL mid-run restarts, finds the safekeepers again and catches up.
 */
import { chmodSync, mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import pg from 'pg';
import { Endpoint } from '../../src/compute/endpoint.ts';
import { bootstrapTimeline } from '../../src/pageserver/import/bootstrap.ts';
import { Pageserver } from '../../src/pageserver/pageserver.ts';
import type { TenantConfigOverrides } from '../../src/pageserver/tenantconfig.ts';
import { formatLsn, parseLsn, type Lsn } from '../../src/postgres/lsn.ts';
import { AckWriter, BrokerProcess, query, SafekeeperProcess, waitFor, waitForAcks } from '../support/cluster.ts';
import { runClientTool } from '../support/endpoint-target.ts';
import { startPageserverChild, type PageserverChild } from '../support/pageserver-process.ts';

const COMPUTE_SETTINGS = { fsync: false, autovacuum: false } as const;

interface Setup {
  workdir: string;
  broker: BrokerProcess;
  sks: SafekeeperProcess[];
  ps: Pageserver | null;
  endpoints: Endpoint[];
  writers: AckWriter[];
}

async function setUp(t: TestContext, name: string): Promise<Setup> {
  const workdir = mkdtempSync(path.join(os.tmpdir(), `strata-${name}-`));
  chmodSync(workdir, 0o755);
  const broker = await BrokerProcess.create();
  const sks = await Promise.all([1, 2, 3].map((i) => SafekeeperProcess.create(i, path.join(workdir, `sk${i}`), broker.endpoint)));
  const s: Setup = { workdir, broker, sks, ps: null, endpoints: [], writers: [] };
  t.after(async () => {
    for (const w of s.writers) await w.abandon().catch(() => undefined);
    for (const ep of s.endpoints) await ep.kill().catch(() => undefined);
    await s.ps?.shutdown({ flush: false }).catch(() => undefined);
    for (const sk of sks) {
      sk.resume();
      await sk.kill();
    }
    await broker.kill();
    if (process.env['STRATA_KEEP_TMP'] !== '1') rmSync(workdir, { recursive: true, force: true });
  });
  await broker.start();
  await Promise.all(sks.map((sk) => sk.start()));
  return s;
}

async function startPageserver(s: Setup): Promise<Pageserver> {
  s.ps = await Pageserver.start({
    workdir: path.join(s.workdir, 'pageserver'), pageCacheBytes: 16 << 20, blockCacheBytes: 8 << 20, waitLsnTimeoutMs: 60_000,
    brokerEndpoint: s.broker.endpoint, walReceiverBackoffMs: { min: 20, max: 500 },
  });
  return s.ps;
}

async function computeLsn(port: number): Promise<Lsn> {
  return parseLsn((await query(port, 'SELECT pg_current_wal_flush_lsn()::text AS l')).rows[0].l as string);
}

test('a stale safekeeper of an older term truncates its divergent tail; the pageserver never ingests past the commit LSN', { timeout: 300_000 }, async (t) => {
  const s = await setUp(t, 'sk-stale');
  const [sk1, sk2, sk3] = s.sks as [SafekeeperProcess, SafekeeperProcess, SafekeeperProcess];
  const ps = await startPageserver(s);
  const tenant = await ps.tenants.createTenant({});
  const tl = await bootstrapTimeline(tenant);
  const ids = { tenantId: tenant.tenantId, timelineId: tl.timelineId };
  const addrs = s.sks.map((x) => x.address);
  const ep1 = await Endpoint.start({ pageserver: ps, ...ids, dir: path.join(s.workdir, 'ep1'), settings: COMPUTE_SETTINGS, safekeepers: addrs });
  s.endpoints.push(ep1);
  await query(ep1.port, 'CREATE TABLE acks (id int PRIMARY KEY, pad text)');
  await query(ep1.port, "INSERT INTO acks SELECT g, 'committed' FROM generate_series(1, 100) g");

  // Everything so far is on all three safekeepers: that is the last committed position, X.
  const committedX = await computeLsn(ep1.port);
  await waitFor('all safekeepers have X', async () => {
    for (const sk of s.sks) if (await sk.flushLsn(ids.tenantId, ids.timelineId) < committedX) return false;
    return true;
  }, 30_000);
  // Two safekeepers die. A transaction's WAL still reaches the third, but its COMMIT cannot return.
  await sk1.kill();
  await sk2.kill();
  const hanging = new pg.Client({ host: '127.0.0.1', port: ep1.port, user: 'postgres', database: 'postgres' });
  hanging.on('error', () => undefined);
  await hanging.connect();
  const hangingInsert = hanging.query("INSERT INTO acks SELECT g, repeat('u', 500) FROM generate_series(1001, 3000) g").then(() => 'returned', () => 'failed');
  let tail = { commit: 0n, flush: 0n };
  await waitFor('the surviving safekeeper has WAL past X', async () => {
    const st = await sk3.status(ids.tenantId, ids.timelineId);
    tail = { commit: parseLsn(st.commit_lsn), flush: parseLsn(st.flush_lsn) };
    return tail.flush - committedX > 100_000n && tail.flush >= await computeLsn(ep1.port);
  }, 30_000);
  await new Promise((r) => setTimeout(r, 500));
  assert.equal(await Promise.race([hangingInsert, new Promise((r) => setTimeout(() => r('waiting'), 10))]), 'waiting', 'the COMMIT must not return without a quorum');
  // The pageserver streams from sk3 (the only one alive) but never past what a quorum has: X.
  assert.ok(tail.commit <= committedX, `sk3 claims ${formatLsn(tail.commit)} committed, but only ${formatLsn(committedX)} is on a quorum`);
  assert.ok(tl.lastRecordLsn <= committedX, `the pageserver ingested up to ${formatLsn(tl.lastRecordLsn)}, past the committed ${formatLsn(committedX)}`);
  tail.commit = committedX;
  const oldTail = await sk3.readWal(ids.tenantId, ids.timelineId, 1, tail.commit, Number(tail.flush - tail.commit));
  assert.equal(oldTail.length, Number(tail.flush - tail.commit));

  // The compute and sk3 die; sk1 and sk2 return and a new compute opens term 2 without sk3.
  await ep1.kill();
  await sk3.kill();
  await hanging.end().catch(() => undefined);
  await sk1.start();
  await sk2.start();
  const ep2 = await Endpoint.start({ pageserver: ps, ...ids, dir: path.join(s.workdir, 'ep2'), settings: COMPUTE_SETTINGS, safekeepers: addrs });
  s.endpoints.push(ep2);
  assert.equal(ep2.term, 2n);
  assert.ok(ep2.startLsn < tail.flush, `term 2 starts at ${formatLsn(ep2.startLsn)}, before sk3's old tail ends (${formatLsn(tail.flush)})`);
  assert.equal((await query(ep2.port, 'SELECT count(*)::int AS n FROM acks')).rows[0].n, 100, 'the unacknowledged transaction is gone');
  // Term 2 writes well past where sk3's old tail ended.
  await query(ep2.port, "INSERT INTO acks SELECT g, repeat('t', 300) FROM generate_series(5001, 9000) g");
  const end2 = await computeLsn(ep2.port);
  assert.ok(end2 > tail.flush);

  // sk3 returns in term 1: it learns term 2 from its peers, cuts its tail at term 2's start and catches up.
  await sk3.start();
  const st1 = await sk1.status(ids.tenantId, ids.timelineId);
  await waitFor('sk3 adopts term 2 and catches up', async () => {
    const st3 = await sk3.status(ids.tenantId, ids.timelineId);
    return st3.acceptor_state.term === 2 && JSON.stringify(st3.acceptor_state.term_history) === JSON.stringify(st1.acceptor_state.term_history) &&
      parseLsn(st3.flush_lsn) >= end2;
  }, 60_000);
  const from = ep2.startLsn;
  const len = Number(tail.flush - from);
  const after3 = await sk3.readWal(ids.tenantId, ids.timelineId, 2, from, len);
  const after1 = await sk1.readWal(ids.tenantId, ids.timelineId, 2, from, len);
  assert.equal(after3.length, len);
  assert.ok(after3.equals(after1), 'sk3 holds term 2\'s WAL where its old tail was');
  const oldPart = oldTail.subarray(Number(from - tail.commit));
  assert.ok(!after3.subarray(len - oldPart.length).equals(oldPart), 'the old tail bytes are gone');

  // The pageserver has term 2's history: a branch at the end has what the compute has.
  await tl.waitLsn(end2, 60_000);
  const branch = await tenant.branchTimeline({ ancestorTimelineId: tl.timelineId, ancestorStartLsn: tl.lastRecordLsn });
  const ep3 = await Endpoint.start({ pageserver: ps, tenantId: tenant.tenantId, timelineId: branch.timelineId, dir: path.join(s.workdir, 'ep3'), settings: COMPUTE_SETTINGS, safekeepers: addrs });
  s.endpoints.push(ep3);
  assert.equal((await query(ep3.port, 'SELECT count(*)::int AS n FROM acks')).rows[0].n, 4100);
});

test('the pageserver switches safekeeper when its current one dies and when it falls behind', { timeout: 300_000 }, async (t) => {
  const s = await setUp(t, 'sk-switch');
  const ps = await startPageserver(s);
  // Lag of 256 KiB triggers a switch; silence alone would take 60 s (so the lag rule is what acts).
  const config: TenantConfigOverrides = { maxLsnWalLagBytes: 256 * 1024, walreceiverConnectTimeoutMs: 60_000, laggingWalTimeoutMs: 60_000 };
  const tenant = await ps.tenants.createTenant({ config });
  const tl = await bootstrapTimeline(tenant);
  const ids = { tenantId: tenant.tenantId, timelineId: tl.timelineId };
  const ep = await Endpoint.start({ pageserver: ps, ...ids, dir: path.join(s.workdir, 'ep'), settings: COMPUTE_SETTINGS, safekeepers: s.sks.map((x) => x.address) });
  s.endpoints.push(ep);
  const mgr = ps.connectionManager(ids.tenantId, ids.timelineId);
  assert.ok(mgr !== null);
  await waitFor('the pageserver streams from a safekeeper', () => mgr.status.state === 'streaming' && mgr.status.safekeeperId !== null, 30_000);
  await runClientTool(ep.port, 'pgbench', ['-i', '-q', '-s', '1']);

  // 1. The current safekeeper dies. (With a 256 KiB lag limit the manager may still be switching
  // after pgbench -i: wait until it has caught up and settled on one.)
  const lsn0 = await computeLsn(ep.port);
  await waitFor('the pageserver caught up and streams', () => tl.lastRecordLsn >= lsn0 && mgr.status.state === 'streaming' && mgr.status.safekeeperId !== null, 60_000);
  const first = mgr.status.safekeeperId!;
  const victim = s.sks.find((x) => x.id === first);
  assert.ok(victim !== undefined, `the current safekeeper ${first} is one of ours`);
  await victim.kill();
  await runClientTool(ep.port, 'pgbench', ['-n', '-c', '2', '-t', '300']);
  const lsnA = await computeLsn(ep.port);
  await waitFor('ingest continues from another safekeeper', () => tl.lastRecordLsn >= lsnA, 60_000);
  const second = mgr.status.safekeeperId;
  assert.ok(second !== null && second !== first, `switched from safekeeper ${first} to ${second}`);
  await victim.start();

  // 2. The current safekeeper hangs (SIGSTOP: connection open, silent) while the others advance.
  await waitFor('the pageserver streams again', () => mgr.status.state === 'streaming' && mgr.status.safekeeperId !== null, 30_000);
  const current = mgr.status.safekeeperId!;
  const switchesBefore = mgr.status.switches;
  const hung = s.sks.find((x) => x.id === current);
  assert.ok(hung !== undefined, `the current safekeeper ${current} is one of ours`);
  hung.pause();
  try {
    await runClientTool(ep.port, 'pgbench', ['-n', '-c', '2', '-t', '500']);
    const lsnB = await computeLsn(ep.port);
    await waitFor('the pageserver leaves the lagging safekeeper and catches up', () => tl.lastRecordLsn >= lsnB, 60_000);
    assert.ok(mgr.status.switches > switchesBefore);
    assert.notEqual(mgr.status.safekeeperId, current);
    assert.equal(mgr.status.lastReason?.kind, 'LaggingWal', `switch reason: ${mgr.status.lastReasonText}`);
  } finally {
    hung.resume();
  }
});

test('a pageserver killed with SIGKILL mid-run restarts, reconnects to the safekeepers and catches up', { timeout: 300_000 }, async (t) => {
  const s = await setUp(t, 'sk-pskill');
  const psDir = path.join(s.workdir, 'pageserver');
  let ps: Pageserver | null = await startPageserver(s);
  let child: PageserverChild | null = null;
  t.after(() => {
    if (child !== null && child.proc.exitCode === null) child.proc.kill('SIGKILL');
  });
  const tenant = await ps.tenants.createTenant({ config: { checkpointDistanceBytes: 4 * 1024 * 1024 } });
  const tl = await bootstrapTimeline(tenant);
  const ids = { tenantId: tenant.tenantId, timelineId: tl.timelineId };
  const key = `${ids.tenantId}/${ids.timelineId}`;
  const addrs = s.sks.map((x) => x.address);
  const ep = await Endpoint.start({ pageserver: ps, ...ids, dir: path.join(s.workdir, 'ep'), settings: COMPUTE_SETTINGS, safekeepers: addrs });
  s.endpoints.push(ep);
  await query(ep.port, 'CREATE TABLE acks (id int PRIMARY KEY)');
  const w = new AckWriter(ep.port, 1);
  s.writers.push(w);
  await w.start();
  await waitForAcks(w, 50, 30_000, 'before the pageserver moves to a child process');
  await ps.shutdown({ flush: true });
  s.ps = null;
  ps = null;

  const startChild = async (): Promise<PageserverChild> => {
    const c = startPageserverChild(psDir, s.broker.endpoint);
    await c.ready;
    return c;
  };
  const kill = async (c: PageserverChild): Promise<void> => {
    c.proc.kill('SIGKILL');
    await c.exited;
  };

  let c = await startChild();
  child = c;
  const before = c.last.get(key) ?? 0n;
  await waitForAcks(w, 100, 30_000, 'with the pageserver in a child process');
  await waitFor('the child pageserver ingests', () => (c.last.get(key) ?? 0n) > before, 30_000);
  await kill(c);
  // The compute does not need the pageserver to commit.
  await waitForAcks(w, 100, 30_000, 'while the pageserver is down');
  c = await startChild();
  child = c;
  await waitForAcks(w, 100, 30_000, 'after the pageserver restarted');
  await w.stop();
  const end = await computeLsn(ep.port);
  await waitFor(`the restarted pageserver catches up to ${formatLsn(end)}`, () => (c.last.get(key) ?? 0n) >= end, 60_000);
  c.proc.kill('SIGTERM');
  await c.exited;
  child = null;

  // Back in this process: a branch at the end has every acknowledged row.
  ps = await startPageserver(s);
  const tl2 = ps.tenants.getTenant(tenant.tenantId).getTimeline(tl.timelineId);
  await tl2.waitLsn(end, 60_000);
  const branch = await ps.tenants.getTenant(tenant.tenantId).branchTimeline({ ancestorTimelineId: tl.timelineId, ancestorStartLsn: tl2.lastRecordLsn });
  const ep2 = await Endpoint.start({ pageserver: ps, tenantId: tenant.tenantId, timelineId: branch.timelineId, dir: path.join(s.workdir, 'ep-branch'), settings: COMPUTE_SETTINGS, safekeepers: addrs });
  s.endpoints.push(ep2);
  const present = new Set<number>((await query(ep2.port, 'SELECT id FROM acks')).rows.map((r: { id: number }) => r.id));
  const missing = w.acked.filter((id) => !present.has(id));
  assert.deepEqual(missing, [], 'every acknowledged row is on the branch');
  t.diagnostic(`${w.acked.length} commits acknowledged across a pageserver SIGKILL; ingested up to ${formatLsn(tl2.lastRecordLsn)}`);
});
