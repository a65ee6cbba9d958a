/**
 * Time travel with real PostgreSQL 15 (direct mode: the pageserver streams from the compute).
 *
 * Groups of transactions commit at separated times (≥ 50 ms apart, checked). The reference for a
 * commit's time is pg_xact_commit_timestamp with track_commit_timestamp = on: PostgreSQL records
 * exactly the time it writes into the commit record (xactStopTimestamp, no replication origin
 * here), so it is the very value Strata's CLOG trailers hold — read through SQL, not through any
 * Strata code. A commit's LSN is pg_current_wal_insert_lsn() right after it, in a session where
 * nothing else writes: the position after the commit record.
 *
 * Checked: a fresh timeline has no data; for a time between two groups the answer is `present`
 * and a compute on a branch there sees exactly the earlier groups (row counts per group); the
 * boundary is exact at every commit (the commit at ts itself is excluded, 8 bytes later it is
 * visible); before everything → past, after everything → future; getTimestampOfLsn at a commit's
 * LSN is that commit's time. Then GC: the default pitr_interval (7 days) keeps everything, a PITR
 * window ending between two groups puts the cutoff exactly at the boundary LSN, branches and
 * lookups below it are refused while an older branch keeps working, gc_horizon 0 moves the cutoff
 * to disk_consistent_lsn, it never moves back, and it survives a pageserver restart.
 */
import { chmodSync, mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import pg from 'pg';
import { Endpoint } from '../../src/compute/endpoint.ts';
import { bootstrapTimeline } from '../../src/pageserver/import/bootstrap.ts';
import { Pageserver } from '../../src/pageserver/pageserver.ts';
import type { Tenant } from '../../src/pageserver/tenant.ts';
import { checkpoint } from '../../src/pageserver/timeline/flush.ts';
import { gcTimeline } from '../../src/pageserver/timeline/gc.ts';
import {
  PG_EPOCH_UNIX_MS, dateToTimestampUs, findLsnForTimestamp, formatTimestampUs, getTimestampOfLsn, timestampUsToDate,
} from '../../src/pageserver/timeline/lsntime.ts';
import { LsnBelowGcCutoffError, type Timeline } from '../../src/pageserver/timeline/timeline.ts';
import { formatLsn, parseLsn, type Lsn } from '../../src/postgres/lsn.ts';

const GROUPS = 4;
const ROWS_PER_GROUP = 15; // 10 in one transaction, 5 in another (with a subtransaction)
const GAP_MS = 100;

interface Commit {
  group: number;
  xid: string;
  /** pg_xact_commit_timestamp in µs since 2000-01-01. */
  ts: bigint;
  /** PostgreSQL's own rendering of that time, in UTC. */
  text: string;
  /** pg_current_wal_insert_lsn() right after the commit. */
  lsn: Lsn;
}

const hex = (lsn: Lsn): string => formatLsn(lsn);

describe('LSN <-> commit time and the GC cutoff, with PostgreSQL 15', { timeout: 600_000 }, () => {
  const workdir = mkdtempSync(path.join(os.tmpdir(), 'strata-lsntime-'));
  chmodSync(workdir, 0o755);
  const endpoints: Endpoint[] = [];
  let ps: Pageserver;
  let tenant: Tenant;
  let main: Timeline;
  let mainEp: Endpoint;
  let client: pg.Client | null = null;
  let epCount = 0;
  const commits: Commit[] = [];
  /** Per group k (1-based): the LSN found for a time between group k and k+1, and that time. */
  const boundaries = new Map<number, { tsUs: bigint; lsn: Lsn }>();
  const branchAt = new Map<number, string>();
  let beforeEverythingUs = 0n;

  const startPageserver = () => Pageserver.start({
    workdir: path.join(workdir, 'pageserver'), pageCacheBytes: 16 << 20, blockCacheBytes: 16 << 20, waitLsnTimeoutMs: 60_000,
    listenPg: null, walReceiverBackoffMs: { min: 50, max: 1000 },
  });

  const startEndpoint = async (timelineId: string, settings: Record<string, string | number | boolean> = {}): Promise<Endpoint> => {
    const ep = await Endpoint.start({
      pageserver: ps, tenantId: tenant.tenantId, timelineId, dir: path.join(workdir, `ep${++epCount}`),
      settings: { fsync: false, autovacuum: false, ...settings },
    });
    endpoints.push(ep);
    return ep;
  };

  const countsOn = async (ep: Endpoint): Promise<Map<number, number>> => {
    const c = new pg.Client({ host: '127.0.0.1', port: ep.port, user: 'postgres', database: 'postgres' });
    await c.connect();
    try {
      const r = await c.query('SELECT grp, count(*)::int AS n FROM t GROUP BY grp ORDER BY grp');
      return new Map(r.rows.map((row: { grp: number; n: number }) => [row.grp, row.n]));
    } finally {
      await c.end();
    }
  };

  const expectedCounts = (upTo: number): Map<number, number> => {
    const m = new Map<number, number>();
    for (let g = 1; g <= upTo; g++) m.set(g, ROWS_PER_GROUP);
    return m;
  };

  before(async () => {
    ps = await startPageserver();
    tenant = await ps.tenants.createTenant({});
    main = await bootstrapTimeline(tenant);
  });

  after(async () => {
    await client?.end().catch(() => undefined);
    for (const ep of endpoints) await ep.kill().catch(() => undefined);
    await ps?.shutdown({ flush: false }).catch(() => undefined);
    if (process.env['STRATA_KEEP_TMP'] !== '1') rmSync(workdir, { recursive: true, force: true });
  });

  test('a freshly bootstrapped timeline has no commit times: nodata', async () => {
    // initdb's own commits are in the imported CLOG pages, which carry no trailer.
    const r = await findLsnForTimestamp(main, dateToTimestampUs(new Date()));
    assert.deepEqual(r, { kind: 'nodata', lsn: main.initdbLsn });
    assert.equal(await getTimestampOfLsn(main, main.lastRecordLsn), null);
  });

  test('groups of commits at separated times: the commit record times are what PostgreSQL reports', async () => {
    beforeEverythingUs = dateToTimestampUs(new Date()) - 1_000_000n;
    mainEp = await startEndpoint(main.timelineId, { track_commit_timestamp: true });
    client = new pg.Client({ host: '127.0.0.1', port: mainEp.port, user: 'postgres', database: 'postgres' });
    await client.connect();
    const c = client;
    await c.query('CREATE TABLE t (grp int, i int)');
    const recordCommit = async (group: number, xid: string): Promise<void> => {
      const l = await c.query('SELECT pg_current_wal_insert_lsn()::text AS l');
      const r = await c.query(`SELECT ((extract(epoch FROM ts) - ${PG_EPOCH_UNIX_MS / 1000}) * 1000000)::bigint::text AS us,
          to_char(ts AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS txt
        FROM (SELECT pg_xact_commit_timestamp($1::xid) AS ts) s`, [xid]);
      assert.notEqual(r.rows[0].us, null, `commit time of xid ${xid} (track_commit_timestamp)`);
      commits.push({ group, xid, ts: BigInt(r.rows[0].us), text: r.rows[0].txt, lsn: parseLsn(l.rows[0].l) });
    };
    for (let g = 1; g <= GROUPS; g++) {
      await new Promise((r) => setTimeout(r, GAP_MS));
      const a = await c.query('INSERT INTO t SELECT $1, i FROM generate_series(1, 10) i RETURNING xmin::text AS x', [g]);
      await recordCommit(g, a.rows[0].x);
      await c.query('BEGIN');
      const b = await c.query('INSERT INTO t SELECT $1, i FROM generate_series(11, 13) i RETURNING xmin::text AS x', [g]);
      await c.query('SAVEPOINT s');
      await c.query('INSERT INTO t SELECT $1, i FROM generate_series(14, 15) i', [g]);
      await c.query('RELEASE SAVEPOINT s');
      await c.query('COMMIT');
      await recordCommit(g, b.rows[0].x);
      // An aborted transaction: no commit time, its rows never visible.
      await c.query('BEGIN');
      await c.query('INSERT INTO t SELECT $1, i FROM generate_series(100, 120) i', [g]);
      await c.query('ROLLBACK');
    }
    const end = parseLsn((await c.query('SELECT pg_current_wal_insert_lsn()::text AS l')).rows[0].l);
    await main.waitLsn(end, 60_000);

    for (let i = 1; i < commits.length; i++) {
      assert.ok(commits[i]!.ts > commits[i - 1]!.ts && commits[i]!.lsn > commits[i - 1]!.lsn, 'commits are in time and WAL order');
      if (commits[i]!.group !== commits[i - 1]!.group) {
        assert.ok(commits[i]!.ts - commits[i - 1]!.ts >= 50_000n, `groups ${commits[i - 1]!.group} and ${commits[i]!.group} are ≥ 50 ms apart`);
      }
    }
    for (const cm of commits) {
      assert.equal(formatTimestampUs(cm.ts), cm.text, 'RFC 3339 rendering agrees with PostgreSQL\'s to_char in UTC');
      assert.equal(await getTimestampOfLsn(main, cm.lsn), cm.ts, `getTimestampOfLsn at ${hex(cm.lsn)} (after xid ${cm.xid}'s commit)`);
    }
  });

  test('every commit is an exact boundary: the commit at ts excluded, visible 8 bytes later', async () => {
    for (const cm of commits) {
      const at = await findLsnForTimestamp(main, cm.ts);
      assert.equal(at.kind, 'present', `ts of xid ${cm.xid}`);
      assert.ok(at.lsn + 8n <= cm.lsn, `found ${hex(at.lsn)} is before xid ${cm.xid}'s commit ending by ${hex(cm.lsn)}`);
      const newest = await getTimestampOfLsn(main, at.lsn);
      assert.ok(newest !== null && newest < cm.ts, `at ${hex(at.lsn)} the newest commit (${newest}) is before ts`);
      assert.equal(await getTimestampOfLsn(main, at.lsn + 8n), cm.ts, `at ${hex(at.lsn + 8n)} xid ${cm.xid}'s commit is visible`);
      // One microsecond later, the commit is included.
      const after1 = await findLsnForTimestamp(main, cm.ts + 1n);
      assert.ok(after1.kind === 'present' || after1.kind === 'future');
      assert.equal(await getTimestampOfLsn(main, after1.lsn), cm.ts);
    }
  });

  test('a time between groups k and k+1 gives present; a compute on a branch there sees exactly groups ≤ k', async () => {
    for (let k = 1; k < GROUPS; k++) {
      const lastOfK = commits.filter((x) => x.group === k).at(-1)!;
      const firstOfNext = commits.find((x) => x.group === k + 1)!;
      // Between the two, rounded to a millisecond (the GC test below needs it as a Date).
      const tsUs = dateToTimestampUs(timestampUsToDate((lastOfK.ts + firstOfNext.ts) / 2n));
      assert.ok(tsUs > lastOfK.ts && tsUs < firstOfNext.ts);
      const r = await findLsnForTimestamp(main, tsUs);
      assert.equal(r.kind, 'present', `between groups ${k} and ${k + 1}`);
      assert.ok(r.lsn >= lastOfK.lsn && r.lsn < firstOfNext.lsn, `${hex(r.lsn)} is between the commits of groups ${k} and ${k + 1}`);
      assert.equal(await getTimestampOfLsn(main, r.lsn), lastOfK.ts, 'the newest commit there is the last of group k');
      boundaries.set(k, { tsUs, lsn: r.lsn });
      const br = await tenant.branchTimeline({ ancestorTimelineId: main.timelineId, ancestorStartLsn: r.lsn });
      branchAt.set(k, br.timelineId);
      const ep = await startEndpoint(br.timelineId);
      try {
        assert.deepEqual(await countsOn(ep), expectedCounts(k), `branch at ${hex(r.lsn)} has exactly groups 1..${k}`);
      } finally {
        await ep.stop();
      }
    }
  });

  test('before every commit: past at the start of the history; after every commit: future at the last record', async () => {
    const past = await findLsnForTimestamp(main, beforeEverythingUs);
    assert.deepEqual(past, { kind: 'past', lsn: main.latestGcCutoffLsn });
    assert.equal(main.latestGcCutoffLsn, main.initdbLsn);
    const lrlBefore = main.lastRecordLsn;
    const future = await findLsnForTimestamp(main, commits.at(-1)!.ts + 1n);
    assert.equal(future.kind, 'future');
    assert.ok(future.lsn >= lrlBefore && future.lsn <= main.lastRecordLsn, `future at the last record (${hex(future.lsn)})`);
    assert.equal(await getTimestampOfLsn(main, future.lsn), commits.at(-1)!.ts);
    await assert.rejects(getTimestampOfLsn(main, main.lastRecordLsn + 8n), { code: 'lsn_out_of_range' });
  });

  test('GC: pitr keeps history, a PITR window puts the cutoff at the boundary, horizon 0 moves it, never back, survives a restart', async () => {
    await checkpoint(main);
    // Default pitr_interval (7 days): the window starts before every commit → past → nothing moves.
    let r = await gcTimeline(tenant, main, { now: new Date(), gcHorizonBytes: 0n });
    assert.equal(r.pitr_lookup, 'past');
    assert.equal(r.cutoff_moved, false);
    assert.equal(main.latestGcCutoffLsn, main.initdbLsn);

    // A PITR window of one minute ending so that it starts between groups 2 and 3.
    const b2 = boundaries.get(2)!;
    await tenant.setConfig({ pitrIntervalMs: 60_000 });
    r = await gcTimeline(tenant, main, { now: new Date(timestampUsToDate(b2.tsUs).getTime() + 60_000), gcHorizonBytes: 0n });
    assert.equal(r.pitr_lookup, 'present');
    assert.equal(r.new_gc_cutoff_lsn, b2.lsn, 'cutoff at the boundary LSN between groups 2 and 3');
    assert.deepEqual(r.retain_lsns, [...branchAt.keys()].map((k) => boundaries.get(k)!.lsn).sort((x, y) => (x < y ? -1 : 1)));
    assert.equal(r.layers_removed, 0);

    // Below the cutoff: branches and lookups refused; the search starts at the cutoff.
    const b1 = boundaries.get(1)!;
    await assert.rejects(tenant.branchTimeline({ ancestorTimelineId: main.timelineId, ancestorStartLsn: b1.lsn }),
      (e: unknown) => e instanceof LsnBelowGcCutoffError && e.message.includes(formatLsn(b2.lsn)));
    await assert.rejects(getTimestampOfLsn(main, b1.lsn), LsnBelowGcCutoffError);
    assert.deepEqual(await findLsnForTimestamp(main, b1.tsUs), { kind: 'past', lsn: b2.lsn });
    assert.deepEqual(await findLsnForTimestamp(main, boundaries.get(3)!.tsUs), { kind: 'present', lsn: boundaries.get(3)!.lsn });

    // The branch made at the group-1 boundary before GC still works (nothing was removed).
    const ep1 = await startEndpoint(branchAt.get(1)!);
    try {
      assert.deepEqual(await countsOn(ep1), expectedCounts(1));
    } finally {
      await ep1.stop();
    }

    // pitr_interval 0 and gc_horizon 0: the cutoff goes to disk_consistent_lsn.
    await tenant.setConfig({ pitrIntervalMs: 0 });
    await checkpoint(main);
    r = await gcTimeline(tenant, main, { now: new Date(), gcHorizonBytes: 0n });
    assert.equal(r.pitr_lookup, 'disabled');
    assert.equal(r.cutoff_moved, true);
    assert.equal(r.new_gc_cutoff_lsn, main.diskConsistentLsn, 'min(last_record_lsn − 0, disk_consistent_lsn)');
    const cutoff = main.latestGcCutoffLsn;
    assert.ok(cutoff > b2.lsn);

    // Never backwards: a wide horizon or a long PITR window leave it where it is.
    r = await gcTimeline(tenant, main, { now: new Date(), gcHorizonBytes: main.lastRecordLsn });
    assert.equal(r.cutoff_moved, false);
    assert.equal(r.new_gc_cutoff_lsn, cutoff);
    await tenant.setConfig({ pitrIntervalMs: 7 * 24 * 3600 * 1000 });
    r = await gcTimeline(tenant, main, { now: new Date(), gcHorizonBytes: 0n });
    assert.equal(main.latestGcCutoffLsn, cutoff);

    // Survives a restart of the pageserver (the main compute stops first).
    await client?.end();
    client = null;
    await mainEp.stop();
    await ps.shutdown({ flush: true });
    ps = await startPageserver();
    tenant = ps.tenants.getTenant(tenant.tenantId);
    const reopened = ps.getTimeline(tenant.tenantId, main.timelineId);
    assert.equal(reopened.latestGcCutoffLsn, cutoff, 'the cutoff was persisted');
    await assert.rejects(tenant.branchTimeline({ ancestorTimelineId: main.timelineId, ancestorStartLsn: cutoff - 8n }), LsnBelowGcCutoffError);
    // Lookups work from the layer files after the restart.
    assert.equal(await getTimestampOfLsn(reopened, reopened.lastRecordLsn), commits.at(-1)!.ts);
    const lastGroupStart = commits.find((x) => x.group === GROUPS)!;
    assert.equal((await findLsnForTimestamp(reopened, lastGroupStart.ts)).kind, 'past', 'group 4 commits are below the cutoff now');
  });
});
