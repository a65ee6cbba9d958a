/**
 * redo_mode = verify inside the pageserver, with real PostgreSQL 15: a tenant in verify mode (its
 * computes run with wal_consistency_checking = all), pgbench plus UPDATE / DELETE / VACUUM /
 * CREATE INDEX, then the API report (GET …/redo_verify) and /metrics must show blocks verified for
 * Heap, Heap2 and Btree and nothing mismatched or failed.
 *
 * Then a fault: the heap redo is wrapped (registerRmgrRedo) so that it flips one byte of the tuple
 * data of every INSERT. Every insert of the next statement must be counted as mismatched, the
 * first N logged (rate limit) and reported with key, LSN and the differing offset — and a compute
 * on a branch must still read exactly the rows PostgreSQL wrote, because the consistency image, not
 * our redo, is what is stored. After the fault is removed, inserts verify again (the stored images
 * are good bases).
 */
import { chmodSync, mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { Endpoint } from '../../src/compute/endpoint.ts';
import { bootstrapTimeline } from '../../src/pageserver/import/bootstrap.ts';
import { Pageserver } from '../../src/pageserver/pageserver.ts';
import { startPageserverHttp, type PageserverHttp } from '../../src/pageserver/http/server.ts';
import type { Tenant } from '../../src/pageserver/tenant.ts';
import { formatLsn, type Lsn } from '../../src/postgres/lsn.ts';
import { getPage } from '../../src/pageserver/timeline/read.ts';
import { parseHeapInsert } from '../../src/postgres/records/heap.ts';
import { RM_HEAP_ID } from '../../src/postgres/rmgr.ts';
import { registerRmgrRedo, rmgrRedoFn } from '../../src/redo/index.ts';
import { relBlockKey } from '../../src/storage/key.ts';
import { pgbenchWorkload } from '../harness/workloads.ts';
import { endpointTarget, psqlValue } from '../support/endpoint-target.ts';
import { parsePrometheusText } from '../support/prometheus-text.ts';

// The mismatch log lines are warnings; make sure they are printed.
if (process.env['STRATA_LOG'] === 'error') process.env['STRATA_LOG'] = 'warn';

const SETTINGS = { fsync: false, autovacuum: false } as const;
const KEPT = 20; // DEFAULT_MAX_MISMATCHES_KEPT of src/redo/ingestverify.ts, restated
const FAULT_ROWS = 60;

interface TypeRow { rmgr: string; record_type: string; verified: number; mismatched: number; unsupported: number; failed: number; no_base: number }
interface MismatchJson { lsn: string; rmgr: string; record_type: string; key: string; rel: string; fork: string; blkno: number; differing_bytes: number; first_diffs: { offset: number; ours: number; theirs: number }[]; reason: string | null }
interface Report { redo_mode: string; types: TypeRow[]; mismatches: MismatchJson[]; mismatches_not_kept: number }

type Counter = 'verified' | 'mismatched' | 'unsupported' | 'failed' | 'no_base';
function sum(r: Report, what: Counter, pick: (t: TypeRow) => boolean = () => true): number {
  return r.types.filter(pick).reduce((n, t) => n + t[what], 0);
}
const isHeapInsert = (t: TypeRow): boolean => t.rmgr === 'Heap' && (t.record_type === 'INSERT' || t.record_type === 'INSERT+INIT');

describe('redo_mode = verify: ingest compares Strata\'s redo with every consistency image', { timeout: 600_000 }, () => {
  const workdir = mkdtempSync(path.join(os.tmpdir(), 'strata-verify-'));
  chmodSync(workdir, 0o755);
  const endpoints: Endpoint[] = [];
  let ps: Pageserver;
  let api: PageserverHttp;
  let tenant: Tenant;
  let mainId = '';
  let main: Endpoint;
  let epCount = 0;

  const get = async (url: string): Promise<{ status: number; text: string }> => {
    const res = await fetch(`http://127.0.0.1:${api.port}${url}`);
    return { status: res.status, text: await res.text() };
  };
  const report = async (timelineId = mainId): Promise<Report> => {
    const r = await get(`/v1/tenant/${tenant.tenantId}/timeline/${timelineId}/redo_verify`);
    assert.equal(r.status, 200, r.text);
    return JSON.parse(r.text) as Report;
  };
  const startEndpoint = async (timelineId: string): Promise<Endpoint> => {
    const ep = await Endpoint.start({ pageserver: ps, tenantId: tenant.tenantId, timelineId, dir: path.join(workdir, `ep${++epCount}`), settings: SETTINGS });
    endpoints.push(ep);
    return ep;
  };
  /** Waits until the timeline has ingested everything the compute has written; returns that LSN. */
  const caughtUp = async (ep: Endpoint, timelineId = mainId): Promise<Lsn> => {
    const t = endpointTarget(ep.port);
    try {
      const lsn = await t.currentLsn('insert');
      await ps.getTimeline(tenant.tenantId, timelineId).waitLsn(lsn, 60_000);
      return lsn;
    } finally {
      await t.close();
    }
  };
  /** The API report and /metrics taken at a moment when nothing was ingested in between. */
  const reportWithMetrics = async (): Promise<{ rep: Report; samples: { labels: Record<string, string>; value: number }[] }> => {
    for (let attempt = 0; attempt < 10; attempt++) {
      const a = await report();
      const metrics = await get('/metrics');
      assert.equal(metrics.status, 200);
      const b = await report();
      if (JSON.stringify(a.types) !== JSON.stringify(b.types)) continue;
      const expo = parsePrometheusText(metrics.text);
      assert.equal(expo.types.get('pageserver_redo_verify_blocks_total'), 'counter');
      const samples = expo.samples.filter((s) => s.name === 'pageserver_redo_verify_blocks_total'
        && s.labels['tenant_id'] === tenant.tenantId && s.labels['timeline_id'] === mainId);
      return { rep: b, samples };
    }
    throw new Error('ingest never paused for the report and /metrics to be compared');
  };
  const assertMetricsMatch = (rep: Report, samples: { labels: Record<string, string>; value: number }[]): void => {
    const results: Counter[] = ['verified', 'mismatched', 'unsupported', 'failed', 'no_base'];
    assert.equal(samples.length, rep.types.length * results.length, 'one series per record type and result');
    for (const t of rep.types) {
      for (const result of results) {
        const s = samples.find((x) => x.labels['rmgr'] === t.rmgr && x.labels['record_type'] === t.record_type && x.labels['result'] === result);
        assert.ok(s !== undefined, `series for ${t.rmgr}/${t.record_type} ${result}`);
        assert.equal(s.value, t[result], `${t.rmgr}/${t.record_type} ${result}: /metrics and the API agree`);
      }
    }
  };

  before(async () => {
    ps = await Pageserver.start({
      workdir: path.join(workdir, 'pageserver'), pageCacheBytes: 32 << 20, blockCacheBytes: 16 << 20, waitLsnTimeoutMs: 60_000,
      listenPg: { host: '127.0.0.1', port: 0 }, walReceiverBackoffMs: { min: 50, max: 1000 },
    });
    api = await startPageserverHttp({ pageserver: ps, nodeId: 7, host: '127.0.0.1', port: 0, log: ps.log });
    tenant = await ps.tenants.createTenant({ config: { redoMode: 'verify' } });
    mainId = (await bootstrapTimeline(tenant)).timelineId;
    main = await startEndpoint(mainId);
  });

  after(async () => {
    for (const ep of endpoints) await ep.kill().catch(() => undefined);
    await api?.close().catch(() => undefined);
    await ps?.shutdown({ flush: false }).catch(() => undefined);
    if (process.env['STRATA_KEEP_TMP'] !== '1') rmSync(workdir, { recursive: true, force: true });
  });

  test('pgbench, UPDATE, DELETE, VACUUM, CREATE INDEX: Heap, Heap2 and Btree verified, nothing mismatched or failed', async () => {
    assert.equal(await psqlValue(main.port, 'SHOW wal_consistency_checking'), 'all', 'verify mode: the compute logs consistency images');
    const target = endpointTarget(main.port);
    try {
      await pgbenchWorkload(target, { scale: 1, transactions: 100, clients: 2 });
      await target.query('UPDATE pgbench_accounts SET abalance = abalance + 7, filler = \'updated\' WHERE aid % 97 = 0');
      await target.query('DELETE FROM pgbench_accounts WHERE aid % 89 = 0');
      await target.query('CREATE TABLE verify_t (id serial PRIMARY KEY, v text)');
      await target.query("INSERT INTO verify_t (v) SELECT repeat('x', g % 50) FROM generate_series(1, 3000) g");
      await target.query('DELETE FROM verify_t WHERE id % 3 = 0');
      await target.query('VACUUM pgbench_accounts');
      await target.query('VACUUM verify_t');
      await target.query('CREATE INDEX ON pgbench_accounts (abalance)');
      await target.query('UPDATE verify_t SET v = v || \'y\' WHERE id % 5 = 0');
    } finally {
      await target.close();
    }
    await caughtUp(main);

    const { rep, samples } = await reportWithMetrics();
    assert.equal(rep.redo_mode, 'verify');
    // Coverage, for the record (per record type: verified mismatched unsupported failed no_base).
    console.log(rep.types.map((t) => `${t.rmgr.padEnd(8)} ${t.record_type.padEnd(18)} ${[t.verified, t.mismatched, t.unsupported, t.failed, t.no_base].map((n) => String(n).padStart(7)).join('')}`).join('\n'));
    for (const rmgr of ['Heap', 'Heap2', 'Btree']) {
      assert.ok(sum(rep, 'verified', (t) => t.rmgr === rmgr) > 0, `${rmgr}: blocks verified (${JSON.stringify(rep.types.filter((t) => t.rmgr === rmgr))})`);
    }
    for (const type of ['INSERT', 'UPDATE', 'HOT_UPDATE', 'DELETE']) {
      assert.ok(sum(rep, 'verified', (t) => t.rmgr === 'Heap' && t.record_type === type) > 0, `Heap ${type} verified`);
    }
    assert.equal(sum(rep, 'mismatched'), 0, `no mismatch: ${JSON.stringify(rep.mismatches.slice(0, 3))}`);
    assert.equal(sum(rep, 'failed'), 0, 'no redo failure');
    assert.deepEqual(rep.mismatches, []);
    assert.equal(rep.mismatches_not_kept, 0);
    assertMetricsMatch(rep, samples);
  });

  test('a heap redo fault: every affected block counted and the first ones logged; the stored pages stay PostgreSQL\'s', async () => {
    await psqlValue(main.port, 'CREATE EXTENSION pageinspect');
    await psqlValue(main.port, 'CREATE TABLE fault_t (id int, v text)');
    const relfilenode = await psqlValue(main.port, "SELECT pg_relation_filenode('fault_t')");
    const dbOid = await psqlValue(main.port, "SELECT oid FROM pg_database WHERE datname = 'postgres'");
    await caughtUp(main);
    const before = await report();
    assert.equal(sum(before, 'mismatched'), 0);

    // Capture the pageserver's log lines about redo verification (the logger writes to stderr).
    const logged: string[] = [];
    const stderrWrite = process.stderr.write;
    process.stderr.write = function (this: NodeJS.WriteStream, chunk: unknown, ...rest: unknown[]): boolean {
      if (typeof chunk === 'string' && chunk.includes('redo verify')) logged.push(chunk);
      return (stderrWrite as (...a: unknown[]) => boolean).call(this, chunk, ...rest);
    } as typeof process.stderr.write;

    const heapRedo = rmgrRedoFn(RM_HEAP_ID)!;
    let corrupted = 0;
    registerRmgrRedo(RM_HEAP_ID, (page, rec, blockId, endLsn) => {
      heapRedo(page, rec, blockId, endLsn);
      if ((rec.info & 0x70) !== 0x00) return; // XLOG_HEAP_INSERT (with or without INIT_PAGE)
      // Flip the first data byte of the inserted tuple: line pointer -> tuple -> t_hoff.
      const lp = page.readUInt32LE(24 + (parseHeapInsert(rec).offnum - 1) * 4);
      const tuple = lp & 0x7fff;
      const at = tuple + page[tuple + 22]!;
      page[at] = page[at]! ^ 0xff;
      corrupted++;
    });
    let branchLsn: Lsn;
    try {
      await psqlValue(main.port, `INSERT INTO fault_t SELECT g, 'row ' || g FROM generate_series(1, ${FAULT_ROWS}) g`);
      branchLsn = await caughtUp(main);
      assert.equal(corrupted, FAULT_ROWS, 'our (sabotaged) heap redo ran once per inserted row');

      // The stored page is PostgreSQL's, byte for byte: the compute's buffer (read raw, before any
      // SELECT sets hint bits; pd_lsn is the last record's end on both sides) equals the page the
      // pageserver serves at that LSN.
      const computePage = Buffer.from(await psqlValue(main.port, "SELECT encode(get_raw_page('fault_t', 0), 'hex')"), 'hex');
      assert.equal(computePage.length, 8192);
      const served = await getPage(ps.getTimeline(tenant.tenantId, mainId),
        relBlockKey({ spcNode: 1663, dbNode: Number(dbOid), relNode: Number(relfilenode), forkNum: 0 }, 0), branchLsn);
      assert.ok(served.equals(computePage), 'the page the pageserver serves is the one PostgreSQL has');

      const rep = await report();
      assert.equal(sum(rep, 'mismatched', isHeapInsert) - sum(before, 'mismatched', isHeapInsert), FAULT_ROWS, 'every inserted row is a mismatch');
      assert.equal(sum(rep, 'verified', isHeapInsert), sum(before, 'verified', isHeapInsert), 'no insert verified under the fault');
      assert.equal(sum(rep, 'mismatched', (t) => !isHeapInsert(t)), 0, 'other record types unaffected');
      assert.equal(rep.mismatches.length, KEPT, 'the first mismatches are kept');
      assert.equal(rep.mismatches_not_kept, FAULT_ROWS - KEPT);
      for (const m of rep.mismatches) {
        assert.equal(m.rmgr, 'Heap');
        assert.match(m.record_type, /^INSERT(\+INIT)?$/);
        assert.equal(m.rel, `1663/${dbOid}/${relfilenode}`);
        assert.equal(m.fork, 'main');
        assert.equal(m.blkno, 0);
        assert.equal(m.key, `rel 1663/${dbOid}/${relfilenode} main blk 0`);
        assert.equal(m.differing_bytes, 1, 'exactly the flipped byte differs');
        assert.equal(m.first_diffs.length, 1);
        const d = m.first_diffs[0]!;
        assert.equal(d.ours, d.theirs ^ 0xff);
        assert.equal(m.reason, null);
      }
      const lsns = rep.mismatches.map((m) => m.lsn);
      assert.equal(new Set(lsns).size, KEPT, 'one mismatch per record');
      assert.equal(rep.mismatches[0]!.record_type, 'INSERT+INIT', 'the first insert initialised the page');

      const lines = logged.filter((l) => l.includes('differs from the consistency image'));
      assert.equal(lines.length, KEPT, `the first ${KEPT} mismatches are logged, no more`);
      for (let i = 0; i < KEPT; i++) {
        assert.ok(lines[i]!.includes(lsns[i]!), `log line ${i} names the record LSN ${lsns[i]}: ${lines[i]}`);
        for (const part of [`rel 1663/${dbOid}/${relfilenode} main blk 0`, 'INSERT', tenant.tenantId, mainId]) {
          assert.ok(lines[i]!.includes(part), `log line ${i} names ${part}: ${lines[i]}`);
        }
      }
      assert.equal(logged.filter((l) => l.includes('log limit reached')).length, 1);

      const { rep: r2, samples } = await reportWithMetrics();
      assertMetricsMatch(r2, samples);

      // The image is the truth: a compute on a branch (basebackup + GetPage from the pageserver)
      // reads the rows PostgreSQL wrote, while the sabotaged redo is still installed.
      const expected = await psqlValue(main.port, "SELECT count(*) || ' ' || md5(string_agg(id || ':' || v, ',' ORDER BY id)) FROM fault_t");
      assert.match(expected, new RegExp(`^${FAULT_ROWS} [0-9a-f]{32}$`));
      const branch = await tenant.branchTimeline({ ancestorTimelineId: mainId, ancestorStartLsn: branchLsn });
      const ep = await startEndpoint(branch.timelineId);
      try {
        assert.equal(await psqlValue(ep.port, "SELECT count(*) || ' ' || md5(string_agg(id || ':' || v, ',' ORDER BY id)) FROM fault_t"), expected,
          `rows on a branch at ${formatLsn(branchLsn)} are PostgreSQL's`);
        assert.equal(await psqlValue(ep.port, 'SELECT min(id) || \' \' || max(id) FROM fault_t'), `1 ${FAULT_ROWS}`);
      } finally {
        await ep.stop();
      }
    } finally {
      registerRmgrRedo(RM_HEAP_ID, heapRedo);
      process.stderr.write = stderrWrite;
    }

    // Without the fault, new inserts on the same page verify again: the stored images are good bases.
    const mid = await report();
    await psqlValue(main.port, 'INSERT INTO fault_t SELECT g, \'more \' || g FROM generate_series(1, 10) g');
    await caughtUp(main);
    const last = await report();
    assert.equal(sum(last, 'verified', isHeapInsert) - sum(mid, 'verified', isHeapInsert), 10);
    assert.equal(sum(last, 'mismatched'), sum(mid, 'mismatched'));
  });

  test('outside verify mode nothing is compared (the setting is read live)', async () => {
    const put = await fetch(`http://127.0.0.1:${api.port}/v1/tenant/config`, {
      method: 'PUT', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ tenant_id: tenant.tenantId, redo_mode: 'images' }),
    });
    assert.equal(put.status, 200, await put.text());
    const before = await report();
    assert.equal(before.redo_mode, 'images');
    // The running compute still logs consistency images (wal_consistency_checking is read at its start).
    await psqlValue(main.port, 'INSERT INTO fault_t SELECT g, \'images \' || g FROM generate_series(1, 10) g');
    await caughtUp(main);
    const after = await report();
    assert.deepEqual(after.types, before.types, 'no block counted with redo_mode = images');
  });

  test('the report of an unknown timeline is a 404', async () => {
    const r = await get(`/v1/tenant/${tenant.tenantId}/timeline/${'ab'.repeat(16)}/redo_verify`);
    assert.equal(r.status, 404, r.text);
  });
});
