/**
 * Time travel without PostgreSQL: TimestampTz conversions and RFC 3339 text against independent
 * oracles (Date, values computed with Python's datetime), and the LSN <-> time search on
 * timelines whose CLOG values are written by hand, so every boundary is known exactly: which
 * record ends where and which commit time it carries. Also the GC cutoff rules.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { SlruKind, relBlockKey, slruBlockKey, slruDirKey, slruSegmentSizeKey, type Key } from '../../src/storage/key.ts';
import type { Value } from '../../src/storage/value.ts';
import { encodeSize, encodeSlruDir } from '../../src/pageserver/datadir/dirs.ts';
import { TenantManager } from '../../src/pageserver/tenantmgr.ts';
import type { Tenant } from '../../src/pageserver/tenant.ts';
import type { Timeline } from '../../src/pageserver/timeline/timeline.ts';
import { checkpoint } from '../../src/pageserver/timeline/flush.ts';
import {
  PG_EPOCH_UNIX_MS, dateToTimestampUs, findLsnForTimestamp, formatTimestampUs, getTimestampOfLsn, parseRfc3339ToTimestampUs,
  timestampUsToDate,
} from '../../src/pageserver/timeline/lsntime.ts';
import { classifyLayers, gcTimeline, gcResultToJson } from '../../src/pageserver/timeline/gc.ts';
import type { HistoricLayer } from '../../src/storage/layermap.ts';
import type { TenantConfigOverrides } from '../../src/pageserver/tenantconfig.ts';

process.env['STRATA_LOG'] ??= 'error';

// ------------------------------------------------------------------------------ conversions

test('TimestampTz <-> Date: PostgreSQL epoch, floors below a millisecond, negative values', () => {
  assert.equal(dateToTimestampUs(new Date('2000-01-01T00:00:00Z')), 0n);
  assert.equal(dateToTimestampUs(new Date('1970-01-01T00:00:00Z')), -946_684_800_000_000n); // Python datetime
  assert.equal(dateToTimestampUs(new Date('2024-05-01T12:34:56.123Z')), 767_882_096_123_000n);
  assert.equal(timestampUsToDate(767_882_096_123_456n).toISOString(), '2024-05-01T12:34:56.123Z');
  assert.equal(timestampUsToDate(-1n).toISOString(), '1999-12-31T23:59:59.999Z', 'floored, not truncated toward zero');
  assert.equal(timestampUsToDate(0n).getTime(), PG_EPOCH_UNIX_MS);
  assert.throws(() => dateToTimestampUs(new Date(Number.NaN)), /invalid Date/);
});

test('formatTimestampUs: RFC 3339 UTC with six fractional digits; agrees with Date.toISOString', () => {
  assert.equal(formatTimestampUs(0n), '2000-01-01T00:00:00.000000Z');
  assert.equal(formatTimestampUs(767_882_096_123_456n), '2024-05-01T12:34:56.123456Z');
  assert.equal(formatTimestampUs(12_627_964_799_999_999n), '2400-02-29T23:59:59.999999Z', 'leap day of a 400-year');
  assert.equal(formatTimestampUs(-1n), '1999-12-31T23:59:59.999999Z');
  // Random instants between 1900 and 2100 against Date (which prints milliseconds).
  let seed = 12345;
  const rnd = (): number => (seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648;
  for (let i = 0; i < 2000; i++) {
    const ms = Math.floor((rnd() * 200 - 70) * 365.25 * 86_400_000);
    const usPart = Math.floor(rnd() * 1000);
    const us = BigInt(ms - PG_EPOCH_UNIX_MS) * 1000n + BigInt(usPart);
    const iso = new Date(ms).toISOString(); // YYYY-MM-DDTHH:MM:SS.mmmZ
    assert.equal(formatTimestampUs(us), `${iso.slice(0, 23)}${String(usPart).padStart(3, '0')}Z`);
    assert.equal(parseRfc3339ToTimestampUs(formatTimestampUs(us)), us, 'parse(format(x)) = x');
  }
  assert.throws(() => formatTimestampUs(-70_000_000_000_000_000n), /cannot be written as RFC 3339/);
});

test('parseRfc3339ToTimestampUs: offsets, fractions, and refusals', () => {
  const z = parseRfc3339ToTimestampUs('2023-01-01T00:00:00Z');
  assert.equal(z, BigInt(Date.parse('2023-01-01T00:00:00Z') - PG_EPOCH_UNIX_MS) * 1000n);
  assert.equal(parseRfc3339ToTimestampUs('2023-01-01T01:00:00+01:00'), z);
  assert.equal(parseRfc3339ToTimestampUs('2022-12-31T19:30:00-04:30'), z);
  assert.equal(parseRfc3339ToTimestampUs('2023-01-01t00:00:00z'), z);
  assert.equal(parseRfc3339ToTimestampUs('2023-01-01 00:00:00.5Z'), z + 500_000n);
  assert.equal(parseRfc3339ToTimestampUs('2023-01-01T00:00:00.0000019Z'), z + 1n, 'nanoseconds are floored to microseconds');
  assert.equal(parseRfc3339ToTimestampUs('2024-05-01T12:34:56.123456Z'), 767_882_096_123_456n);
  assert.equal(parseRfc3339ToTimestampUs('2024-02-29T00:00:00Z'), BigInt(Date.parse('2024-02-29T00:00:00Z') - PG_EPOCH_UNIX_MS) * 1000n);
  for (const bad of ['2023-02-29T00:00:00Z', '2023-13-01T00:00:00Z', '2023-00-10T00:00:00Z', '2023-04-31T00:00:00Z',
    '2023-01-01T24:00:00Z', '2023-01-01T00:60:00Z', '2023-12-31T23:59:60Z', '2023-01-01T00:00:00', '2023-01-01',
    'yesterday', '', '2023-01-01T00:00:00+25:00', '2023-01-01T00:00:00.Z', '2023-01-01T00:00:00.1234567890Z']) {
    assert.throws(() => parseRfc3339ToTimestampUs(bad), { code: 'invalid_input' }, bad);
  }
});

// ------------------------------------------------------------------------------ synthetic timelines

const ZERO_PAGE = Buffer.alloc(8192);
const K1 = relBlockKey({ spcNode: 1663, dbNode: 5, relNode: 16384, forkNum: 0 }, 0);
const CLOG0 = slruBlockKey(SlruKind.clog, 0, 0);
const CLOG1 = slruBlockKey(SlruKind.clog, 0, 1);

function img(buf: Buffer): Value {
  return { kind: 'image', image: buf };
}

function commit(xid: number, timestampUs: bigint | null): Value {
  return { kind: 'clogSetStatus', status: timestampUs === null ? 2 : 1, xids: [xid], timestampUs };
}

function write(tl: Timeline, endLsn: bigint, puts: [Key, Value][]): void {
  for (const [k, v] of puts) tl.put(k, endLsn, v);
  tl.finishRecord(endLsn, tl.lastRecordLsn);
}

async function withTenant(config: TenantConfigOverrides, fn: (t: { mgr: TenantManager; tenant: Tenant; reopen: () => Promise<TenantManager> }) => Promise<void>): Promise<void> {
  const dir = await mkdtemp(path.join(tmpdir(), 'strata-lsntime-'));
  const opened: TenantManager[] = [];
  const open = async (): Promise<TenantManager> => {
    const m = await TenantManager.open({ workdir: dir, pageCacheBytes: 1 << 20, blockCacheBytes: 1 << 20, waitLsnTimeoutMs: 2000 });
    opened.push(m);
    return m;
  };
  try {
    const mgr = await open();
    const tenant = await mgr.createTenant({ config });
    await fn({ mgr, tenant, reopen: open });
  } finally {
    for (const m of opened) await m.shutdown({ flush: false }).catch(() => undefined);
    await rm(dir, { recursive: true, force: true });
  }
}

/**
 * History starts at 0x108 (a CLOG segment of two zero pages). Records (end LSN: content):
 *   0x140 commit xid 3 @1000   0x160 K1   0x180 commit xid 4 @2000   0x1c0 abort xid 5
 *   0x1e0 commit xid 40000 (page 1) @2500   0x200 commit xid 6 (page 0) @3000   0x240 K1
 */
async function buildMain(tenant: Tenant): Promise<Timeline> {
  const tl = await tenant.createTimeline({ pgVersion: 15, startLsn: 0x100n, initdbLsn: 0x108n });
  write(tl, 0x108n, [
    [slruDirKey(SlruKind.clog), img(encodeSlruDir([0]))], [slruSegmentSizeKey(SlruKind.clog, 0), img(encodeSize(2))],
    [CLOG0, img(ZERO_PAGE)], [CLOG1, img(ZERO_PAGE)],
  ]);
  write(tl, 0x140n, [[CLOG0, commit(3, 1000n)]]);
  write(tl, 0x160n, [[K1, img(Buffer.alloc(8192, 1))]]);
  write(tl, 0x180n, [[CLOG0, commit(4, 2000n)]]);
  write(tl, 0x1c0n, [[CLOG0, commit(5, null)]]);
  write(tl, 0x1e0n, [[CLOG1, commit(40000, 2500n)]]);
  write(tl, 0x200n, [[CLOG0, commit(6, 3000n)]]);
  write(tl, 0x240n, [[K1, img(Buffer.alloc(8192, 2))]]);
  return tl;
}

test('findLsnForTimestamp: present is 8 bytes before the end of the first commit at or after ts; past, future, nodata', async () => {
  await withTenant({}, async ({ tenant }) => {
    const tl = await buildMain(tenant);
    const expect: [bigint, string, bigint][] = [
      [999n, 'past', 0x108n], // before every commit
      [1000n, 'past', 0x108n], // the first commit is exactly at ts: nothing in range is before ts
      [1001n, 'present', 0x178n], // first commit >= ts ends at 0x180
      [1999n, 'present', 0x178n],
      [2000n, 'present', 0x178n], // a commit exactly at ts is excluded
      [2001n, 'present', 0x1d8n], // xid 40000 @2500 ends at 0x1e0
      [2500n, 'present', 0x1d8n],
      [2501n, 'present', 0x1f8n], // xid 6 @3000 ends at 0x200; the newest page (1) still says 2500 then
      [3000n, 'present', 0x1f8n],
      [3001n, 'future', 0x240n], // after every commit: last_record_lsn
    ];
    for (const [ts, kind, lsn] of expect) {
      const r = await findLsnForTimestamp(tl, ts);
      assert.deepEqual(r, { kind, lsn }, `ts ${ts}`);
    }
    // The branch property, checked with the other lookup: for present answers, everything visible
    // is before ts, and 8 bytes later a commit at or after ts is.
    for (let ts = 1001n; ts <= 3000n; ts += 37n) {
      const r = await findLsnForTimestamp(tl, ts);
      assert.equal(r.kind, 'present');
      const at = await getTimestampOfLsn(tl, r.lsn);
      assert.ok(at !== null && at < ts, `at ${r.lsn.toString(16)} newest commit ${at} < ${ts}`);
      const after = await getTimestampOfLsn(tl, r.lsn + 8n);
      assert.ok(after !== null && after >= ts, `at ${(r.lsn + 8n).toString(16)} newest commit ${after} >= ${ts}`);
    }
    // Probes are bounded: ⌈log2(range/8)⌉ + 1.
    let probes = 0;
    await findLsnForTimestamp(tl, 2222n, { onProbe: () => { probes++; } });
    assert.ok(probes >= 1 && probes <= Math.ceil(Math.log2(Number((0x240n - 0x108n) / 8n + 1n))) + 1, `${probes} probes`);
    // Cancellation.
    await assert.rejects(findLsnForTimestamp(tl, 2222n, { signal: AbortSignal.abort() }), { name: 'AbortError' });
  });
});

test('findLsnForTimestamp: nodata without commit times (aborts only), and on a branch the range starts at the branch point', async () => {
  await withTenant({}, async ({ tenant }) => {
    const tl = await tenant.createTimeline({ pgVersion: 15, startLsn: 0x100n, initdbLsn: 0x108n });
    write(tl, 0x108n, [[slruDirKey(SlruKind.clog), img(encodeSlruDir([0]))], [slruSegmentSizeKey(SlruKind.clog, 0), img(encodeSize(1))], [CLOG0, img(ZERO_PAGE)]]);
    write(tl, 0x140n, [[CLOG0, commit(3, null)]]);
    write(tl, 0x180n, [[K1, img(ZERO_PAGE)]]);
    assert.deepEqual(await findLsnForTimestamp(tl, 5n), { kind: 'nodata', lsn: 0x108n });
    assert.equal(await getTimestampOfLsn(tl, 0x180n), null);

    const main = await buildMain(tenant);
    const br = await tenant.branchTimeline({ ancestorTimelineId: main.timelineId, ancestorStartLsn: 0x1a0n });
    write(br, 0x2c0n, [[CLOG0, commit(7, 5000n)]]);
    write(br, 0x300n, [[K1, img(ZERO_PAGE)]]);
    assert.deepEqual(await findLsnForTimestamp(br, 1500n), { kind: 'past', lsn: 0x1a0n }, 'the commit @2000 is visible at the branch point');
    assert.deepEqual(await findLsnForTimestamp(br, 2001n), { kind: 'present', lsn: 0x2b8n }, 'the branch does not see the parent\'s later commits');
    assert.deepEqual(await findLsnForTimestamp(br, 5001n), { kind: 'future', lsn: 0x300n });
    assert.equal(await getTimestampOfLsn(br, 0x1a0n), 2000n);
    assert.equal(await getTimestampOfLsn(br, 0x2c0n), 5000n);
    await assert.rejects(getTimestampOfLsn(br, 0x180n), (e: Error & { code?: string }) =>
      e.code === 'lsn_out_of_range' && e.message.includes(br.timelineId) && e.message.includes('0/180'));
  });
});

test('getTimestampOfLsn: the largest trailer over all CLOG pages, exact at record ends, and range errors', async () => {
  await withTenant({}, async ({ tenant }) => {
    const tl = await buildMain(tenant);
    const expect: [bigint, bigint | null][] = [
      [0x108n, null], [0x138n, null], [0x140n, 1000n], [0x178n, 1000n], [0x180n, 2000n], [0x1c0n, 2000n], // abort keeps the trailer
      [0x1e0n, 2500n], [0x1f8n, 2500n], [0x200n, 3000n], // page 1 (newer) says 2500, page 0 says 3000: max
      [0x240n, 3000n],
    ];
    for (const [lsn, ts] of expect) assert.equal(await getTimestampOfLsn(tl, lsn), ts, `at ${lsn.toString(16)}`);
    await assert.rejects(getTimestampOfLsn(tl, 0x248n), (e: Error & { code?: string }) =>
      e.code === 'lsn_out_of_range' && e.message.includes('0/248') && e.message.includes(tl.timelineId));
    await assert.rejects(getTimestampOfLsn(tl, 0x100n), { code: 'lsn_below_gc_cutoff' });
    await tl.advanceGcCutoff(0x180n);
    await assert.rejects(getTimestampOfLsn(tl, 0x178n), { code: 'lsn_below_gc_cutoff' });
    assert.equal(await getTimestampOfLsn(tl, 0x180n), 2000n);
    // The search starts at the cutoff now.
    assert.deepEqual(await findLsnForTimestamp(tl, 1500n), { kind: 'past', lsn: 0x180n });
    assert.deepEqual(await findLsnForTimestamp(tl, 2001n), { kind: 'present', lsn: 0x1d8n });
    // At the cutoff 0x200 the newest page (1) says 2500 and page 0 says 3000: for ts 2800 the
    // first probe point already has a commit at or after ts although a smaller time was seen too.
    await tl.advanceGcCutoff(0x200n);
    assert.deepEqual(await findLsnForTimestamp(tl, 2800n), { kind: 'past', lsn: 0x200n }, 'never an LSN below the range');
  });
});

// ------------------------------------------------------------------------------ GC

/** Commit times in µs of main2: 10 s, 20 s, 30 s after the PostgreSQL epoch. */
const S = 1_000_000n;
async function buildTimed(tenant: Tenant): Promise<Timeline> {
  const tl = await tenant.createTimeline({ pgVersion: 15, startLsn: 0x1000n, initdbLsn: 0x1008n });
  write(tl, 0x1008n, [[slruDirKey(SlruKind.clog), img(encodeSlruDir([0]))], [slruSegmentSizeKey(SlruKind.clog, 0), img(encodeSize(1))], [CLOG0, img(ZERO_PAGE)]]);
  write(tl, 0x2000n, [[CLOG0, commit(3, 10n * S)]]);
  write(tl, 0x3000n, [[CLOG0, commit(4, 20n * S)]]);
  write(tl, 0x4000n, [[CLOG0, commit(5, 30n * S)]]);
  write(tl, 0x5000n, [[K1, img(ZERO_PAGE)]]);
  return tl;
}

const atPgSeconds = (s: number): Date => new Date(PG_EPOCH_UNIX_MS + s * 1000);

test('gcTimeline: cutoff = min(horizon, disk_consistent_lsn, pitr); never backwards; persisted', async () => {
  await withTenant({ pitrIntervalMs: 0, gcHorizonBytes: 0x800 }, async ({ mgr, tenant, reopen }) => {
    const tl = await buildTimed(tenant);
    // Nothing durable yet beyond the start: disk_consistent_lsn holds the cutoff back.
    let r = await gcTimeline(tenant, tl, { now: new Date() });
    assert.equal(r.new_gc_cutoff_lsn, 0x1008n);
    assert.equal(r.cutoff_moved, false);
    assert.equal(r.pitr_lookup, 'disabled');
    await checkpoint(tl);
    assert.equal(tl.diskConsistentLsn, 0x5000n);
    r = await gcTimeline(tenant, tl, { now: new Date() });
    assert.equal(r.new_gc_cutoff_lsn, 0x5000n - 0x800n, 'tenant gc_horizon');
    assert.equal(r.cutoff_moved, true);
    assert.equal(r.layers_removed, 0);
    assert.equal(tl.latestGcCutoffLsn, 0x4800n);
    // A larger horizon would mean an older cutoff: it does not move back.
    r = await gcTimeline(tenant, tl, { now: new Date(), gcHorizonBytes: 0x3000n });
    assert.equal(r.new_gc_cutoff_lsn, 0x4800n);
    assert.equal(r.cutoff_moved, false);
    assert.equal(r.horizon_cutoff_lsn, 0x2000n);
    // The override: horizon 0 moves it to the last record.
    r = await gcTimeline(tenant, tl, { now: new Date(), gcHorizonBytes: 0n });
    assert.equal(r.new_gc_cutoff_lsn, 0x5000n);
    const json = gcResultToJson(r);
    assert.equal(json['new_gc_cutoff_lsn'], '0/5000');
    assert.equal(json['latest_gc_cutoff_lsn'], '0/5000');
    assert.equal(json['layers_removed'], 0);
    assert.ok(!('elapsed_ms' in json), 'Neon\'s wire name is elapsed');
    assert.equal(typeof json['elapsed'], 'number');
    await assert.rejects(tenant.branchTimeline({ ancestorTimelineId: tl.timelineId, ancestorStartLsn: 0x4ff8n }), { code: 'lsn_below_gc_cutoff' });
    await assert.rejects(gcTimeline(tenant, tl, { now: new Date(), gcHorizonBytes: -1n }), { code: 'invalid_input' });
    await mgr.shutdown({ flush: true });
    const mgr2 = await reopen();
    assert.equal(mgr2.getTenant(tenant.tenantId).getTimeline(tl.timelineId).latestGcCutoffLsn, 0x5000n, 'persisted');
  });
});

test('gcTimeline with pitr_interval: present -> that LSN, future -> horizon, past/nodata -> unchanged', async () => {
  await withTenant({ pitrIntervalMs: 5000, gcHorizonBytes: 0 }, async ({ tenant }) => {
    const tl = await buildTimed(tenant);
    await checkpoint(tl);
    // now − pitr = 5 s: before every commit → past → keep.
    let r = await gcTimeline(tenant, tl, { now: atPgSeconds(10) });
    assert.equal(r.pitr_lookup, 'past');
    assert.equal(r.new_gc_cutoff_lsn, 0x1008n);
    // now − pitr = 30 s: the commit @30 s ends at 0x4000 → cutoff 0x3ff8.
    r = await gcTimeline(tenant, tl, { now: atPgSeconds(35) });
    assert.equal(r.pitr_lookup, 'present');
    assert.equal(r.pitr_cutoff_lsn, 0x3ff8n);
    assert.equal(r.new_gc_cutoff_lsn, 0x3ff8n);
    // An earlier window (15 s) does not move it back: the search starts at the cutoff, where the
    // commit @20 s is already visible, so it is 'past' and the cutoff stays.
    r = await gcTimeline(tenant, tl, { now: atPgSeconds(20) });
    assert.equal(r.pitr_lookup, 'past');
    assert.equal(r.pitr_cutoff_lsn, 0x3ff8n);
    assert.equal(r.new_gc_cutoff_lsn, 0x3ff8n);
    assert.equal(r.cutoff_moved, false);
    // now − pitr after every commit → future → the horizon cutoff (last record − 0).
    r = await gcTimeline(tenant, tl, { now: atPgSeconds(100) });
    assert.equal(r.pitr_lookup, 'future');
    assert.equal(r.new_gc_cutoff_lsn, 0x5000n);
  });
  await withTenant({ pitrIntervalMs: 5000, gcHorizonBytes: 0 }, async ({ tenant }) => {
    const tl = await tenant.createTimeline({ pgVersion: 15, startLsn: 0x100n, initdbLsn: 0x108n });
    write(tl, 0x108n, [[slruDirKey(SlruKind.clog), img(encodeSlruDir([0]))], [slruSegmentSizeKey(SlruKind.clog, 0), img(encodeSize(1))], [CLOG0, img(ZERO_PAGE)]]);
    write(tl, 0x200n, [[K1, img(ZERO_PAGE)]]);
    await checkpoint(tl);
    const r = await gcTimeline(tenant, tl, { now: atPgSeconds(100) });
    assert.equal(r.pitr_lookup, 'nodata');
    assert.equal(r.new_gc_cutoff_lsn, 0x108n, 'no commit times: nothing is given up');
  });
});

test('gcTimeline: child branch points are retain_lsns; the cutoff still moves past them and the child reads on', async () => {
  await withTenant({ pitrIntervalMs: 0, gcHorizonBytes: 0 }, async ({ tenant }) => {
    const tl = await buildTimed(tenant);
    const child = await tenant.branchTimeline({ ancestorTimelineId: tl.timelineId, ancestorStartLsn: 0x2000n });
    await checkpoint(tl);
    const r = await gcTimeline(tenant, tl, { now: new Date() });
    assert.deepEqual(r.retain_lsns, [0x2000n]);
    assert.equal(r.new_gc_cutoff_lsn, 0x5000n);
    assert.ok(r.layers_total >= 1);
    assert.equal(await getTimestampOfLsn(child, 0x2000n), 10n * S, 'the child still reads its ancestor at its branch point');
  });
});

test('classifyLayers: Neon\'s keep rules in order', () => {
  const MINK = '\x00'.repeat(18) as Key;
  const MIDK = ('\x00'.repeat(17) + '\x80') as Key;
  const MAXK = '\xff'.repeat(18) as Key;
  const layer = (kind: 'delta' | 'image', start: bigint, end: bigint, keyStart = MINK, keyEnd = MAXK): HistoricLayer =>
    ({ desc: { kind, keyRange: { start: keyStart, end: keyEnd }, lsnRange: { start, end } } }) as unknown as HistoricLayer;
  const layers = [
    layer('delta', 0x100n, 0x200n), // starts at or below the branch point 0x150 -> branches
    layer('delta', 0x200n, 0x300n), // below both cutoffs, after the branch point, images above cover it -> removable
    layer('delta', 0x300n, 0x500n), // end > pitr 0x480 -> pitr
    layer('delta', 0x500n, 0x700n), // end > horizon 0x600 -> cutoff
    layer('image', 0x380n, 0x381n, MINK, MIDK), // nothing newer covers it -> not updated
    layer('image', 0x390n, 0x391n, MIDK, MAXK), // likewise
  ];
  const c = classifyLayers(layers, { horizon: 0x600n, pitrCutoff: 0x480n, retainLsns: [0x150n], cutoff: 0x480n });
  assert.deepEqual(c, {
    layers_total: 6, layers_needed_by_cutoff: 1, layers_needed_by_pitr: 1, layers_needed_by_branches: 1, layers_not_updated: 2, layers_removable: 1,
  });
  // Without the second half image, the first delta is still the newest data for half the keys.
  const c2 = classifyLayers(layers.slice(0, 5), { horizon: 0x600n, pitrCutoff: 0x480n, retainLsns: [0x150n], cutoff: 0x480n });
  assert.equal(c2.layers_removable, 0);
  assert.equal(c2.layers_not_updated, 2);
  // A branch point exactly at a layer's start keeps it (start is inclusive).
  const c3 = classifyLayers(layers, { horizon: 0x600n, pitrCutoff: 0x480n, retainLsns: [0x200n], cutoff: 0x480n });
  assert.equal(c3.layers_needed_by_branches, 2);
  assert.equal(c3.layers_removable, 0);
  // Images that leave a gap in the key range do not make the delta redundant.
  const Q1 = ('\x00'.repeat(17) + '\x40') as Key;
  const gap = [layers[1]!, layer('image', 0x380n, 0x381n, MINK, Q1), layer('image', 0x390n, 0x391n, MIDK, MAXK)];
  const c4 = classifyLayers(gap, { horizon: 0x600n, pitrCutoff: 0x480n, retainLsns: [], cutoff: 0x480n });
  assert.deepEqual([c4.layers_removable, c4.layers_not_updated], [0, 3]);
});
