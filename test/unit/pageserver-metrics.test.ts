/**
 * Pageserver metrics, in process: a TenantManager with real tenants and timelines, its registry
 * rendered to text and read back with a strict exposition parser (test/support/prometheus-text.ts).
 *
 * Each test makes something happen and checks that exactly the expected samples move, with
 * expected values taken from what the test did (records fed at LSNs it chose, files it finds on
 * disk, prom-client's own Histogram fed the same observations) — never from the metrics code.
 * Series of deleted timelines and tenants must be gone from the text.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Histogram, Registry } from 'prom-client';
import { encodeRecord } from '../../src/postgres/walwriter.ts';
import { decodeXLogRecord } from '../../src/postgres/xlogrecord.ts';
import { encodeCheckPoint, type CheckPoint } from '../../src/postgres/records/xlog.ts';
import { RM_XLOG_ID } from '../../src/postgres/rmgr.ts';
import type { Lsn } from '../../src/postgres/lsn.ts';
import { CHECKPOINT_KEY, KEY_MAX, KEY_MIN, relBlockKey, type Key } from '../../src/storage/key.ts';
import { parseLayerFileName } from '../../src/storage/layerfile/format.ts';
import { TenantManager } from '../../src/pageserver/tenantmgr.ts';
import type { Timeline } from '../../src/pageserver/timeline/timeline.ts';
import { checkpoint } from '../../src/pageserver/timeline/flush.ts';
import { getPage } from '../../src/pageserver/timeline/read.ts';
import { createImageLayer } from '../../src/pageserver/timeline/images.ts';
import { WalIngest } from '../../src/pageserver/walingest/walingest.ts';
import { BackgroundLoopKind, CRITICAL_OP_BUCKETS, PageserverMetrics } from '../../src/pageserver/metrics.ts';
import { TENANT_STATE_KINDS } from '../../src/pageserver/states.ts';
import { findSamples, parsePrometheusText, sampleValue, type PromExposition } from '../support/prometheus-text.ts';

process.env['STRATA_LOG'] ??= 'error';

const K1 = relBlockKey({ spcNode: 1663, dbNode: 5, relNode: 16384, forkNum: 0 }, 0);
const K2 = relBlockKey({ spcNode: 1663, dbNode: 5, relNode: 16384, forkNum: 0 }, 1);
const START_LSN = 0x0100_0000n;

async function withManagers(fn: (open: (name?: string) => Promise<TenantManager>, dir: string) => Promise<void>): Promise<void> {
  const dir = await mkdtemp(path.join(tmpdir(), 'strata-metrics-'));
  const opened: TenantManager[] = [];
  const open = async (name = 'ps'): Promise<TenantManager> => {
    const mgr = await TenantManager.open({ workdir: path.join(dir, name), pageCacheBytes: 1 << 20, blockCacheBytes: 1 << 20, waitLsnTimeoutMs: 5000 });
    opened.push(mgr);
    return mgr;
  };
  try {
    await fn(open, dir);
  } finally {
    for (const m of opened) await m.shutdown({ flush: false }).catch(() => undefined);
    await rm(dir, { recursive: true, force: true });
  }
}

async function scrape(mgr: TenantManager): Promise<PromExposition> {
  assert.match(mgr.metrics.contentType, /^text\/plain; version=0\.0\.4/);
  return parsePrometheusText(await mgr.metrics.registry.metrics());
}

function value(exp: PromExposition, name: string, labels: Record<string, string> = {}): number {
  const v = sampleValue(exp, name, labels);
  assert.notEqual(v, undefined, `no sample ${name}${JSON.stringify(labels)}`);
  return v ?? NaN;
}

const tlLabels = (tl: Timeline): Record<string, string> => ({ tenant_id: tl.tenantId, timeline_id: tl.timelineId });
const GETPAGE = { smgr_query_type: 'get_page_at_lsn' };

function image(fill: number): { kind: 'image'; image: Buffer } {
  return { kind: 'image', image: Buffer.alloc(8192, fill) };
}

/** One record writing `puts` at `endLsn` (the timeline's write API, as ingest uses it). */
function write(tl: Timeline, endLsn: Lsn, puts: [Key, number][]): void {
  for (const [k, fill] of puts) tl.put(k, endLsn, image(fill));
  tl.finishRecord(endLsn, tl.lastRecordLsn);
}

/** Layer files in a timeline directory and their total size, read from the filesystem. */
async function layerFilesOnDisk(tl: Timeline): Promise<{ deltas: number; images: number; bytes: number }> {
  let deltas = 0;
  let images = 0;
  let bytes = 0;
  for (const name of await readdir(tl.dir)) {
    const parsed = parseLayerFileName(name);
    if (parsed === null) continue;
    if (parsed.kind === 'delta') deltas++;
    else images++;
    bytes += (await stat(path.join(tl.dir, name))).size;
  }
  return { deltas, images, bytes };
}

test('an allocation-free histogram exposes exactly what a prom-client Histogram would', async () => {
  const metrics = new PageserverMetrics({ tenants: () => [], processMetrics: false });
  const reference = new Registry();
  const h = new Histogram({ name: 'pageserver_wait_lsn_seconds', help: 'x', buckets: [...CRITICAL_OP_BUCKETS], registers: [reference] });
  // Below the first bound, exactly on bounds (le is inclusive), between bounds, beyond the last.
  const observations = [0, 0.000_000_5, 0.000_001, 0.000_002, 0.003, 0.1, 0.1000001, 99.9, 100, 250];
  for (const v of observations) {
    metrics.waitLsn.observe(v);
    h.observe(v);
  }
  const mine = parsePrometheusText(await metrics.registry.metrics());
  const ours = ['_bucket', '_sum', '_count'].flatMap((suffix) => findSamples(mine, `pageserver_wait_lsn_seconds${suffix}`));
  const exp = parsePrometheusText(await reference.metrics());
  const theirs = exp.samples;
  assert.equal(ours.length, CRITICAL_OP_BUCKETS.length + 3);
  const key = (s: { name: string; labels: Record<string, string> }): string => `${s.name}${JSON.stringify(Object.entries(s.labels).sort())}`;
  const byKey = new Map(theirs.map((s) => [key(s), s.value]));
  for (const s of ours) {
    assert.ok(byKey.has(key(s)), `prom-client has no sample ${key(s)}`);
    assert.ok(Math.abs((byKey.get(key(s)) ?? NaN) - s.value) < 1e-9, `${key(s)}: ours ${s.value}, prom-client ${byKey.get(key(s))}`);
  }
  assert.equal(mine.types.get('pageserver_wait_lsn_seconds'), 'histogram');
  // The +Inf bucket holds every observation.
  assert.equal(value(exp, 'pageserver_wait_lsn_seconds_bucket', { le: '+Inf' }), observations.length);
});

test('WAL ingest: records and bytes received count each ingested record once, by the WAL span it covers', async () => {
  await withManagers(async (open) => {
    const mgr = await open();
    const tenant = await mgr.createTenant();
    const tl = await tenant.createTimeline({ pgVersion: 15, startLsn: START_LSN });
    // The minimal imported state a NEXTOID record needs: the checkpoint value.
    const cp: CheckPoint = {
      redoLsn: START_LSN, thisTimeLineId: 1, prevTimeLineId: 1, fullPageWrites: true, nextXid: 1000n, nextOid: 20000,
      nextMulti: 1, nextMultiOffset: 0, oldestXid: 727, oldestXidDb: 1, oldestMulti: 1, oldestMultiDb: 1,
      timeUnixSec: 1_700_000_000n, oldestCommitTsXid: 0, newestCommitTsXid: 0, oldestActiveXid: 0,
    };
    const importEnd = START_LSN + 8n;
    tl.put(CHECKPOINT_KEY, importEnd, { kind: 'image', image: Buffer.from(encodeCheckPoint(cp)) });
    tl.finishRecord(importEnd, null);

    const before = await scrape(mgr);
    assert.equal(value(before, 'pageserver_wal_ingest_records_received'), 0);
    assert.equal(value(before, 'pageserver_wal_ingest_bytes_received'), 0);

    const ingest = new WalIngest(tl);
    let at = importEnd;
    let prev = START_LSN;
    const RECORDS = 5;
    for (let i = 0; i < RECORDS; i++) {
      const main = Buffer.alloc(4);
      main.writeUInt32LE(30000 + i);
      const bytes = encodeRecord({ xid: 0, rmid: RM_XLOG_ID, info: 0x30 /* XLOG_NEXTOID */, mainData: main }, prev);
      // Records are placed with a gap of 16 bytes after each one (as if page headers were there).
      const end = at + BigInt((bytes.length + 7) & ~7) + 16n;
      ingest.ingest(decodeXLogRecord(bytes, at, end));
      prev = at;
      at = end;
    }
    const after = await scrape(mgr);
    assert.equal(value(after, 'pageserver_wal_ingest_records_received'), RECORDS);
    assert.equal(value(after, 'pageserver_wal_ingest_bytes_received'), Number(at - importEnd), 'the WAL span from the first record start to the last record end');
    assert.equal(after.types.get('pageserver_wal_ingest_records_received'), 'counter');

    // A record that cannot be ingested (its end is not after the last record) is not counted.
    const main = Buffer.alloc(4);
    const stale = encodeRecord({ xid: 0, rmid: RM_XLOG_ID, info: 0x30, mainData: main }, prev);
    assert.throws(() => ingest.ingest(decodeXLogRecord(stale, prev, at)));
    assert.equal(value(await scrape(mgr), 'pageserver_wal_ingest_records_received'), RECORDS);
    assert.equal(value(await scrape(mgr), 'pageserver_last_record_lsn', tlLabels(tl)), Number(at));
  });
});

test('GetPage@LSN: the per-timeline and global smgr histograms and wait_lsn count every request, waits included', async () => {
  await withManagers(async (open) => {
    const mgr = await open();
    const tenant = await mgr.createTenant();
    const a = await tenant.createTimeline({ pgVersion: 15, startLsn: START_LSN });
    const b = await tenant.createTimeline({ pgVersion: 15, startLsn: START_LSN });
    write(a, START_LSN + 8n, [[K1, 1]]);
    write(b, START_LSN + 8n, [[K1, 2]]);

    const s0 = await scrape(mgr);
    assert.equal(s0.types.get('pageserver_smgr_query_seconds'), 'histogram');
    assert.equal(value(s0, 'pageserver_smgr_query_seconds_count', { ...GETPAGE, ...tlLabels(a) }), 0);
    assert.equal(value(s0, 'pageserver_smgr_query_seconds_global_count', GETPAGE), 0);
    const wait0 = value(s0, 'pageserver_wait_lsn_seconds_count');

    for (let i = 0; i < 3; i++) assert.equal((await getPage(a, K1, START_LSN + 8n))[0], 1);
    assert.equal((await getPage(b, K1, START_LSN + 8n))[0], 2);
    // A failed request is a request too.
    await assert.rejects(getPage(a, K2, START_LSN + 8n), /no version/);

    const s1 = await scrape(mgr);
    assert.equal(value(s1, 'pageserver_smgr_query_seconds_count', { ...GETPAGE, ...tlLabels(a) }), 4);
    assert.equal(value(s1, 'pageserver_smgr_query_seconds_count', { ...GETPAGE, ...tlLabels(b) }), 1);
    assert.equal(value(s1, 'pageserver_smgr_query_seconds_bucket', { ...GETPAGE, ...tlLabels(a), le: '+Inf' }), 4);
    assert.equal(value(s1, 'pageserver_smgr_query_seconds_global_count', GETPAGE), 5);
    assert.ok(value(s1, 'pageserver_smgr_query_seconds_global_sum', GETPAGE) > 0);
    assert.equal(value(s1, 'pageserver_wait_lsn_seconds_count'), wait0 + 5);
    const waitSum1 = value(s1, 'pageserver_wait_lsn_seconds_sum');
    const waitFast1 = value(s1, 'pageserver_wait_lsn_seconds_bucket', { le: '0.01' });

    // A read of an LSN not ingested yet waits for it (about 50 ms here).
    const WAIT_MS = 50;
    const read = getPage(a, K1, START_LSN + 16n);
    await new Promise((r) => setTimeout(r, WAIT_MS));
    write(a, START_LSN + 16n, [[K1, 3]]);
    assert.equal((await read)[0], 3);
    const s2 = await scrape(mgr);
    assert.equal(value(s2, 'pageserver_wait_lsn_seconds_count'), wait0 + 6);
    assert.ok(value(s2, 'pageserver_wait_lsn_seconds_sum') - waitSum1 >= (WAIT_MS - 5) / 1000, 'the wait is in the sum');
    assert.equal(value(s2, 'pageserver_wait_lsn_seconds_bucket', { le: '0.01' }), waitFast1, 'the wait is not in the 10 ms bucket');
    const slow = value(s2, 'pageserver_smgr_query_seconds_sum', { ...GETPAGE, ...tlLabels(a) }) - value(s1, 'pageserver_smgr_query_seconds_sum', { ...GETPAGE, ...tlLabels(a) });
    assert.ok(slow >= (WAIT_MS - 5) / 1000, `the GetPage time includes its wait (${slow} s)`);
  });
});

test('storage operations: layer flush, checkpoint, create images, load layer map, create tenant; sizes and LSNs per timeline', async () => {
  await withManagers(async (open) => {
    let mgr = await open();
    const t1 = await mgr.createTenant();
    await mgr.createTenant();
    const tl = await t1.createTimeline({ pgVersion: 15, startLsn: START_LSN });
    const idle = await t1.createTimeline({ pgVersion: 15, startLsn: START_LSN });
    write(tl, START_LSN + 8n, [[K1, 1], [K2, 2]]);
    write(tl, START_LSN + 16n, [[K1, 3]]);
    await checkpoint(tl);
    await createImageLayer(tl, { start: KEY_MIN, end: KEY_MAX }, START_LSN + 16n);

    const disk = await layerFilesOnDisk(tl);
    assert.equal(disk.images, 1);
    const s = await scrape(mgr);
    const op = (operation: string, t: Timeline): Record<string, string> => ({ operation, ...tlLabels(t) });
    assert.equal(value(s, 'pageserver_storage_operations_seconds_count', op('layer flush', tl)), disk.deltas, 'one flush per L0 file written');
    assert.equal(value(s, 'pageserver_storage_operations_seconds_count', op('checkpoint', tl)), 1);
    assert.equal(value(s, 'pageserver_storage_operations_seconds_count', op('create images', tl)), 1);
    assert.ok(value(s, 'pageserver_storage_operations_seconds_sum', op('layer flush', tl)) > 0);
    assert.equal(value(s, 'pageserver_storage_operations_seconds_count', op('layer flush', idle)), 0);
    assert.equal(value(s, 'pageserver_storage_operations_seconds_count', op('gc', tl)), 0, 'every timeline operation has a series');
    assert.equal(value(s, 'pageserver_storage_operations_seconds_global_count', { operation: 'layer flush' }), disk.deltas);
    assert.equal(value(s, 'pageserver_storage_operations_seconds_global_count', { operation: 'create tenant' }), 2);
    assert.equal(s.types.get('pageserver_storage_operations_seconds_global'), 'histogram');

    assert.equal(value(s, 'pageserver_last_record_lsn', tlLabels(tl)), Number(START_LSN + 16n));
    assert.equal(value(s, 'pageserver_disk_consistent_lsn', tlLabels(tl)), Number(START_LSN + 16n));
    assert.equal(value(s, 'pageserver_disk_consistent_lsn', tlLabels(idle)), Number(START_LSN));
    assert.equal(value(s, 'pageserver_resident_physical_size', tlLabels(tl)), disk.bytes);
    assert.equal(value(s, 'pageserver_resident_physical_size', tlLabels(idle)), 0);
    assert.equal(value(s, 'pageserver_resident_physical_size_global'), disk.bytes);

    // After a restart, each timeline's layer map load is timed.
    await mgr.shutdown({ flush: true });
    mgr = await open();
    const r = await scrape(mgr);
    assert.equal(value(r, 'pageserver_storage_operations_seconds_count', op('load layer map', tl)), 1);
    assert.equal(value(r, 'pageserver_storage_operations_seconds_count', op('load layer map', idle)), 1);
    assert.equal(value(r, 'pageserver_storage_operations_seconds_global_count', { operation: 'load layer map' }), 2);
    assert.equal(value(r, 'pageserver_storage_operations_seconds_global_count', { operation: 'create tenant' }), 0, 'a new registry per pageserver');
    assert.equal(value(r, 'pageserver_resident_physical_size', tlLabels(tl)), disk.bytes);
  });
});

test('tenant states: every state has a series; an Active and a Broken tenant are counted', async () => {
  await withManagers(async (open, dir) => {
    let mgr = await open();
    const good = await mgr.createTenant();
    const bad = await mgr.createTenant();
    const badTl = await bad.createTimeline({ pgVersion: 15, startLsn: START_LSN });
    let s = await scrape(mgr);
    assert.equal(value(s, 'pageserver_tenant_states_count', { state: 'Active' }), 2);
    assert.equal(value(s, 'pageserver_broken_tenants_count'), 0);
    await mgr.shutdown({ flush: true });
    // Damage the timeline's metadata: the tenant fails to load and is kept as Broken.
    await writeFile(path.join(dir, 'ps', 'tenants', bad.tenantId, 'timelines', badTl.timelineId, 'metadata'), 'not metadata');
    mgr = await open();
    assert.equal(mgr.getTenant(bad.tenantId).state, 'Broken');
    assert.equal(mgr.getTenant(good.tenantId).state, 'Active');
    s = await scrape(mgr);
    for (const state of TENANT_STATE_KINDS) {
      const expected = state === 'Active' || state === 'Broken' ? 1 : 0;
      assert.equal(value(s, 'pageserver_tenant_states_count', { state }), expected, state);
    }
    assert.equal(findSamples(s, 'pageserver_tenant_states_count').length, TENANT_STATE_KINDS.length);
    assert.equal(value(s, 'pageserver_broken_tenants_count'), 1);
  });
});

test('deleting a timeline or a tenant removes its series; other timelines keep theirs', async () => {
  await withManagers(async (open) => {
    const mgr = await open();
    const t1 = await mgr.createTenant();
    const t2 = await mgr.createTenant();
    const keep = await t1.createTimeline({ pgVersion: 15, startLsn: START_LSN });
    const gone = await t1.createTimeline({ pgVersion: 15, startLsn: START_LSN });
    const other = await t2.createTimeline({ pgVersion: 15, startLsn: START_LSN });
    for (const tl of [keep, gone, other]) {
      write(tl, START_LSN + 8n, [[K1, 1]]);
      await getPage(tl, K1, START_LSN + 8n);
    }
    const withTimeline = (s: PromExposition, id: string): string[] =>
      [...new Set(s.samples.filter((x) => x.labels['timeline_id'] === id).map((x) => x.name))].sort();
    const withTenant = (s: PromExposition, id: string): number => s.samples.filter((x) => x.labels['tenant_id'] === id).length;

    const s0 = await scrape(mgr);
    const perTimeline = withTimeline(s0, gone.timelineId);
    for (const name of ['pageserver_last_record_lsn', 'pageserver_disk_consistent_lsn', 'pageserver_resident_physical_size',
      'pageserver_smgr_query_seconds_count', 'pageserver_smgr_query_seconds_bucket', 'pageserver_storage_operations_seconds_count',
      'pageserver_storage_operations_seconds_sum']) {
      assert.ok(perTimeline.includes(name), `${name} has a series for the timeline before the delete`);
    }

    await t1.deleteTimeline(gone.timelineId);
    const s1 = await scrape(mgr);
    assert.deepEqual(withTimeline(s1, gone.timelineId), [], 'no series of the deleted timeline');
    assert.deepEqual(withTimeline(s1, keep.timelineId), perTimeline, 'the sibling keeps all its series');
    assert.equal(value(s1, 'pageserver_smgr_query_seconds_count', { ...GETPAGE, ...tlLabels(keep) }), 1);

    await mgr.deleteTenant(t2.tenantId);
    const s2 = await scrape(mgr);
    assert.equal(withTenant(s2, t2.tenantId), 0, 'no series of the deleted tenant');
    assert.ok(withTenant(s2, t1.tenantId) > 0);
    assert.equal(value(s2, 'pageserver_tenant_states_count', { state: 'Active' }), 1);
    // Global histograms keep what happened.
    assert.equal(value(s2, 'pageserver_smgr_query_seconds_global_count', GETPAGE), 3);
  });
});

test('background loop overruns: the tenant tick that takes longer than its period is counted', async () => {
  await withManagers(async (open) => {
    const mgr = await open();
    const tenant = await mgr.createTenant();
    const tl = await tenant.createTimeline({ pgVersion: 15, startLsn: START_LSN });
    const overruns = async (): Promise<number> =>
      findSamples(await scrape(mgr), 'pageserver_background_loop_period_overrun_count', { task: 'ingest_house_keeping' }).reduce((n, x) => n + x.value, 0);
    assert.equal(await overruns(), 0);

    // The direct API: at or beyond the period counts, below it does not.
    assert.equal(mgr.metrics.backgroundLoopIteration(BackgroundLoopKind.gc, 10_000, 9_999), false);
    assert.equal(mgr.metrics.backgroundLoopIteration(BackgroundLoopKind.gc, 10_000, 12_000), true);
    assert.equal(value(await scrape(mgr), 'pageserver_background_loop_period_overrun_count', { task: 'gc', period: '10' }), 1);

    // Make one iteration of the tenant's 1-second tick take longer than a second: it asks each
    // active timeline for its config, which is slowed down once.
    const resources = tl.resources;
    const original = resources.config;
    let slowed = false;
    resources.config = () => {
      if (!slowed) {
        slowed = true;
        const until = performance.now() + 1100;
        while (performance.now() < until) { /* busy: the tick is synchronous */ }
      }
      return original();
    };
    try {
      write(tl, START_LSN + 8n, [[K1, 1]]); // WAL pending, so the tick looks at the config
      const deadline = Date.now() + 10_000;
      while ((await overruns()) === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
    } finally {
      resources.config = original;
    }
    assert.ok(slowed, 'the tick ran');
    assert.equal(value(await scrape(mgr), 'pageserver_background_loop_period_overrun_count', { task: 'ingest_house_keeping', period: '1' }), 1);
  });
});

test('two pageservers in one process: separate registries, each with only its own tenants', async () => {
  await withManagers(async (open) => {
    const a = await open('a');
    const b = await open('b');
    const ta = await a.createTenant();
    const tb = await b.createTenant();
    await ta.createTimeline({ pgVersion: 15, startLsn: START_LSN });
    await tb.createTimeline({ pgVersion: 15, startLsn: START_LSN });
    const sa = await scrape(a);
    const sb = await scrape(b);
    const tenantsOf = (s: PromExposition): string[] => [...new Set(s.samples.map((x) => x.labels['tenant_id']).filter((x) => x !== undefined))];
    assert.deepEqual(tenantsOf(sa), [ta.tenantId]);
    assert.deepEqual(tenantsOf(sb), [tb.tenantId]);
    // Process metrics are in both (created once per process, registered in each registry).
    assert.ok(value(sa, 'process_cpu_user_seconds_total') > 0);
    assert.ok(value(sb, 'process_cpu_user_seconds_total') > 0);
    assert.notEqual(a.metrics.registry, b.metrics.registry);
  });
});
