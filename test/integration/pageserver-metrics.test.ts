/**
 * Pageserver metrics with real PostgreSQL 15: a timeline bootstrapped with initdb (its WAL
 * ingested from files), a compute started on it (a basebackup, then its WAL streamed and
 * ingested), a failing basebackup. The registry's text is parsed (test/support/prometheus-text.ts)
 * and compared with what the test can see independently: the timeline's positions, the number of
 * statements it ran, the layer files on disk.
 */
import { chmodSync, mkdtempSync, rmSync } from 'node:fs';
import { readdir, stat } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { Endpoint } from '../../src/compute/endpoint.ts';
import { generateBasebackup, type BasebackupSink } from '../../src/pageserver/basebackup.ts';
import { bootstrapTimeline } from '../../src/pageserver/import/bootstrap.ts';
import { Pageserver } from '../../src/pageserver/pageserver.ts';
import type { Tenant } from '../../src/pageserver/tenant.ts';
import type { Timeline } from '../../src/pageserver/timeline/timeline.ts';
import { checkpoint } from '../../src/pageserver/timeline/flush.ts';
import { parseLsn } from '../../src/postgres/lsn.ts';
import { parseLayerFileName } from '../../src/storage/layerfile/format.ts';
import { psqlValue } from '../support/endpoint-target.ts';
import { parsePrometheusText, sampleValue, type PromExposition } from '../support/prometheus-text.ts';

process.env['STRATA_LOG'] ??= 'error';

describe('pageserver metrics with a real compute', { timeout: 600_000 }, () => {
  const workdir = mkdtempSync(path.join(os.tmpdir(), 'strata-metrics-'));
  chmodSync(workdir, 0o755);
  let ps: Pageserver;
  let tenant: Tenant;
  let tl: Timeline;
  const endpoints: Endpoint[] = [];

  before(async () => {
    ps = await Pageserver.start({
      workdir: path.join(workdir, 'pageserver'), pageCacheBytes: 16 << 20, blockCacheBytes: 16 << 20, waitLsnTimeoutMs: 60_000,
      listenPg: { host: '127.0.0.1', port: 0 }, walReceiverBackoffMs: { min: 50, max: 1000 },
    });
    tenant = await ps.tenants.createTenant({});
  });

  after(async () => {
    for (const ep of endpoints) await ep.kill().catch(() => undefined);
    await ps?.shutdown({ flush: false }).catch(() => undefined);
    if (process.env['STRATA_KEEP_TMP'] !== '1') rmSync(workdir, { recursive: true, force: true });
  });

  const scrape = async (): Promise<PromExposition> => parsePrometheusText(await ps.tenants.metrics.registry.metrics());
  const value = (exp: PromExposition, name: string, labels: Record<string, string> = {}): number => {
    const v = sampleValue(exp, name, labels);
    assert.notEqual(v, undefined, `no sample ${name}${JSON.stringify(labels)}`);
    return v ?? NaN;
  };
  const tlLabels = (): Record<string, string> => ({ tenant_id: tl.tenantId, timeline_id: tl.timelineId });

  test('bootstrap, a compute and its writes move the ingest counters, the basebackup histogram and the positions', async (t) => {
    const s0 = await scrape();
    assert.equal(value(s0, 'pageserver_wal_ingest_records_received'), 0);

    // Bootstrap: initdb's WAL from its checkpoint on is ingested from files, through WalIngest.
    tl = await bootstrapTimeline(tenant);
    const s1 = await scrape();
    const bootRecords = value(s1, 'pageserver_wal_ingest_records_received');
    assert.ok(bootRecords >= 1, 'at least the shutdown checkpoint record');
    // The bootstrap WAL is one contiguous run of records from initdb's checkpoint.
    const span1 = Number(tl.lastRecordLsn - tl.initdbLsn);
    const bytes1 = value(s1, 'pageserver_wal_ingest_bytes_received');
    assert.ok(bytes1 <= span1 && bytes1 > span1 * 0.99, `bytes ${bytes1} vs the WAL span ${span1} (page headers between records excepted)`);
    assert.equal(value(s1, 'pageserver_storage_operations_seconds_count', { operation: 'checkpoint', ...tlLabels() }), 1, 'creation ends with a checkpoint');
    assert.equal(value(s1, 'pageserver_disk_consistent_lsn', tlLabels()), Number(tl.lastRecordLsn));

    // A compute: one basebackup (ok), then its WAL streamed and ingested.
    const ep = await Endpoint.start({ pageserver: ps, tenantId: tenant.tenantId, timelineId: tl.timelineId, dir: path.join(workdir, 'ep1'), settings: { fsync: false, autovacuum: false } });
    endpoints.push(ep);
    const s2 = await scrape();
    assert.equal(value(s2, 'pageserver_basebackup_query_seconds_count', { result: 'ok' }), 1);
    assert.equal(value(s2, 'pageserver_basebackup_query_seconds_count', { result: 'error' }), 0);
    assert.ok(value(s2, 'pageserver_basebackup_query_seconds_sum', { result: 'ok' }) > 0);

    const STATEMENTS = 20;
    await psqlValue(ep.port, 'CREATE TABLE m (id int)');
    for (let i = 0; i < STATEMENTS; i++) await psqlValue(ep.port, `INSERT INTO m VALUES (${i})`);
    const lsn = parseLsn(await psqlValue(ep.port, 'SELECT pg_current_wal_insert_lsn()'));
    await tl.waitLsn(lsn, 60_000);

    const s3 = await scrape();
    const records = value(s3, 'pageserver_wal_ingest_records_received') - bootRecords;
    // Each autocommitted INSERT writes at least a heap insert and a commit record.
    assert.ok(records >= 2 * STATEMENTS, `${records} records ingested for ${STATEMENTS} inserts`);
    const span3 = Number(tl.lastRecordLsn - tl.initdbLsn);
    const bytes3 = value(s3, 'pageserver_wal_ingest_bytes_received');
    t.diagnostic(`bootstrap: ${bootRecords} records, ${bytes1} of ${span1} bytes; after the inserts: ${records} more records, ${bytes3} of ${span3} bytes`);
    assert.ok(bytes3 <= span3 && bytes3 > span3 * 0.99, `bytes ${bytes3} vs the WAL span ${span3}`);
    assert.equal(value(s3, 'pageserver_last_record_lsn', tlLabels()), Number(tl.lastRecordLsn));

    // A checkpoint: disk_consistent_lsn and the layer files on disk are what the gauges say.
    await checkpoint(tl);
    const s4 = await scrape();
    assert.equal(value(s4, 'pageserver_disk_consistent_lsn', tlLabels()), Number(tl.diskConsistentLsn));
    let bytesOnDisk = 0;
    let deltas = 0;
    for (const name of await readdir(tl.dir)) {
      const parsed = parseLayerFileName(name);
      if (parsed === null) continue;
      if (parsed.kind === 'delta') deltas++;
      bytesOnDisk += (await stat(path.join(tl.dir, name))).size;
    }
    assert.equal(value(s4, 'pageserver_resident_physical_size', tlLabels()), bytesOnDisk);
    assert.equal(value(s4, 'pageserver_storage_operations_seconds_count', { operation: 'layer flush', ...tlLabels() }), deltas, 'one flush per L0 file');
    await ep.stop();
  });

  test('a basebackup that fails is observed with result="error"', async () => {
    const sink: BasebackupSink = {
      directory: async () => undefined,
      file: async () => undefined,
      finish: async () => undefined,
    };
    const before = value(await scrape(), 'pageserver_basebackup_query_seconds_count', { result: 'error' });
    // An LSN that is not 8-byte aligned is refused.
    await assert.rejects(generateBasebackup({ timeline: tl, lsn: tl.lastRecordLsn + 1n, sink }), /aligned/);
    const s = await scrape();
    assert.equal(value(s, 'pageserver_basebackup_query_seconds_count', { result: 'error' }), before + 1);
    assert.equal(value(s, 'pageserver_basebackup_query_seconds_count', { result: 'ok' }), 1);
  });
});
