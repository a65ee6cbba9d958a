/**
 * Safekeepers end to end, with real processes and real kill -9: a broker, three safekeepers (the
 * `strata` CLI), a pageserver, vanilla PostgreSQL 15 computes with `ANY 2 (sk_1, sk_2, sk_3)`.
 *
 * The durability claim under test: a commit whose COMMIT returned is on a quorum of safekeepers'
 * disks, so it survives any single safekeeper crash, the crash of two (commits then wait), and the
 * crash of the compute — a new compute started on the timeline (a new term) has every
 * acknowledged row. The pageserver only ever ingests committed WAL.
 */
import { chmodSync, mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Endpoint } from '../../src/compute/endpoint.ts';
import { bootstrapTimeline } from '../../src/pageserver/import/bootstrap.ts';
import { Pageserver } from '../../src/pageserver/pageserver.ts';
import { formatLsn, parseLsn, type Lsn } from '../../src/postgres/lsn.ts';
import { AckWriter, BrokerProcess, query, SafekeeperProcess, waitFor, waitForAcks } from '../support/cluster.ts';

const COMPUTE_SETTINGS = { fsync: false, autovacuum: false } as const;

test('acknowledged commits survive safekeeper and compute crashes (3 safekeepers, ANY 2)', { timeout: 300_000 }, async (t) => {
  const workdir = mkdtempSync(path.join(os.tmpdir(), 'strata-sk-'));
  chmodSync(workdir, 0o755);
  const broker = await BrokerProcess.create();
  const sks = await Promise.all([1, 2, 3].map((i) => SafekeeperProcess.create(i, path.join(workdir, `sk${i}`), broker.endpoint)));
  let ps: Pageserver | null = null;
  const endpoints: Endpoint[] = [];
  const writers: AckWriter[] = [];
  t.after(async () => {
    for (const w of writers) await w.abandon().catch(() => undefined);
    for (const ep of endpoints) await ep.kill().catch(() => undefined);
    await ps?.shutdown({ flush: false }).catch(() => undefined);
    for (const sk of sks) await sk.kill();
    await broker.kill();
    if (process.env['STRATA_KEEP_TMP'] !== '1') rmSync(workdir, { recursive: true, force: true });
  });
  await broker.start();
  await Promise.all(sks.map((sk) => sk.start()));
  ps = await Pageserver.start({
    workdir: path.join(workdir, 'pageserver'), pageCacheBytes: 16 << 20, blockCacheBytes: 8 << 20, waitLsnTimeoutMs: 60_000,
    brokerEndpoint: broker.endpoint, walReceiverBackoffMs: { min: 20, max: 500 },
  });
  const tenant = await ps.tenants.createTenant({});
  const tl = await bootstrapTimeline(tenant);
  const ids = { tenantId: tenant.tenantId, timelineId: tl.timelineId };
  const addrs = sks.map((s) => s.address);

  const ep1 = await Endpoint.start({ pageserver: ps, ...ids, dir: path.join(workdir, 'ep1'), settings: COMPUTE_SETTINGS, safekeepers: addrs });
  endpoints.push(ep1);
  assert.equal(ep1.term, 1n, 'the first compute opens term 1');
  const sync = await query(ep1.port, "SELECT current_setting('synchronous_standby_names') AS s");
  assert.equal(sync.rows[0].s, 'ANY 2 (sk_1, sk_2, sk_3)');
  await query(ep1.port, 'CREATE TABLE acks (id int PRIMARY KEY)');
  await waitFor('all three safekeepers streaming as synchronous standbys', async () => {
    const r = await query(ep1.port, "SELECT count(*)::int AS n FROM pg_stat_replication WHERE application_name LIKE 'sk_%' AND state = 'streaming'");
    return r.rows[0].n === 3;
  }, 30_000);

  const w1 = new AckWriter(ep1.port, 1);
  writers.push(w1);
  await w1.start();
  await waitForAcks(w1, 50, 30_000, 'all safekeepers up');

  // One safekeeper dies: a quorum (2 of 3) remains, commits go on.
  await sks[0]!.kill();
  await waitForAcks(w1, 100, 30_000, 'safekeeper 1 killed');
  // It comes back and catches up (from the compute, whose slot kept its WAL).
  await sks[0]!.start();
  await waitFor('safekeeper 1 catches up', async () => {
    const [a, b] = [await sks[0]!.flushLsn(ids.tenantId, ids.timelineId), await sks[1]!.flushLsn(ids.tenantId, ids.timelineId)];
    return a >= b - 0n && a > 0n;
  }, 60_000);

  // Two die: no quorum, so no COMMIT returns...
  await sks[1]!.kill();
  await sks[2]!.kill();
  await new Promise((r) => setTimeout(r, 300)); // the commit in flight when they died may complete
  const frozenAt = w1.ackedCount;
  await new Promise((r) => setTimeout(r, 2_000));
  assert.equal(w1.ackedCount, frozenAt, 'no commit may be acknowledged while only one safekeeper is up');
  assert.equal(w1.error, null);
  // ...until one returns.
  await sks[1]!.start();
  await waitForAcks(w1, 50, 60_000, 'safekeeper 2 back');
  await sks[2]!.start();
  await waitForAcks(w1, 50, 60_000, 'all back');

  // sk3 falls behind (down while the others take more commits), then the compute dies mid-run and
  // sk3 returns: the election must pick the most advanced WAL among the voters, not sk3's.
  await sks[2]!.kill();
  await waitForAcks(w1, 100, 30_000, 'safekeeper 3 down');
  const ackedBefore = [...w1.acked];
  await ep1.kill();
  await w1.abandon();
  const attempted = w1.attempted;
  const ackedAll = [...w1.acked];
  assert.ok(ackedAll.length >= ackedBefore.length);
  await sks[2]!.start();
  const behind = await sks[2]!.flushLsn(ids.tenantId, ids.timelineId);
  assert.ok(behind < await sks[0]!.flushLsn(ids.tenantId, ids.timelineId), 'sk3 is behind when the new compute starts');
  const ep2 = await Endpoint.start({ pageserver: ps, ...ids, dir: path.join(workdir, 'ep2'), settings: COMPUTE_SETTINGS, safekeepers: addrs });
  endpoints.push(ep2);
  assert.equal(ep2.term, 2n, 'the second compute opens term 2');
  assert.ok(ep2.startLsn > behind, 'term 2 starts after the lagging safekeeper\'s WAL end');
  const present = new Set<number>((await query(ep2.port, 'SELECT id FROM acks')).rows.map((r: { id: number }) => r.id));
  const missing = ackedAll.filter((id) => !present.has(id));
  assert.deepEqual(missing, [], `acknowledged ids missing after the compute crash: ${missing.slice(0, 20).join(',')}`);
  for (const id of present) assert.ok(id >= 1 && id <= attempted, `id ${id} was never written`);
  t.diagnostic(`${ackedAll.length} commits acknowledged, ${present.size} rows present after the crash, ${attempted} attempted`);

  // The new compute writes on; every safekeeper is in term 2 with the same history.
  const w2 = new AckWriter(ep2.port, attempted + 1);
  writers.push(w2);
  await w2.start();
  await waitForAcks(w2, 50, 30_000, 'second compute');
  await w2.stop();
  const histories = await Promise.all(sks.map(async (sk) => JSON.stringify((await sk.status(ids.tenantId, ids.timelineId)).acceptor_state.term_history)));
  assert.equal(new Set(histories).size, 1, `term histories differ: ${histories.join(' | ')}`);

  // The pageserver ingests what the safekeepers committed, and a branch there has every row.
  const endLsn = parseLsn((await query(ep2.port, 'SELECT pg_current_wal_flush_lsn() AS l')).rows[0].l as string);
  await tl.waitLsn(endLsn, 60_000);
  const rows = (await query(ep2.port, 'SELECT count(*)::int AS n FROM acks')).rows[0].n as number;
  const branch = await tenant.branchTimeline({ ancestorTimelineId: tl.timelineId, ancestorStartLsn: tl.lastRecordLsn });
  const ep3 = await Endpoint.start({ pageserver: ps, tenantId: tenant.tenantId, timelineId: branch.timelineId, dir: path.join(workdir, 'ep3'), settings: COMPUTE_SETTINGS, safekeepers: addrs });
  endpoints.push(ep3);
  assert.equal((await query(ep3.port, 'SELECT count(*)::int AS n FROM acks')).rows[0].n, rows, 'a branch at the end has every row');
  t.diagnostic(`timeline ingested up to ${formatLsn(tl.lastRecordLsn)}`);
});

export type { Lsn };
