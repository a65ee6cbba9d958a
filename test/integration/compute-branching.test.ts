/**
 * End to end, with real PostgreSQL 15 everywhere: bootstrap a timeline, run a compute on it,
 * write (pgbench, the DDL mix, 2PC, sequences, unlogged tables), record (LSN, pg_dumpall) at
 * several moments, restart the pageserver and the compute along the way, then branch at every
 * recorded LSN and check that a compute on the branch dumps exactly what was recorded and that
 * amcheck finds nothing wrong. Then branch isolation, branch of a branch, prepared transactions,
 * sequences and unlogged tables on branches.
 */
import { chmodSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { Endpoint } from '../../src/compute/endpoint.ts';
import { generateBasebackup, type BasebackupSink } from '../../src/pageserver/basebackup.ts';
import { bootstrapTimeline } from '../../src/pageserver/import/bootstrap.ts';
import { chownForPostgres } from '../../src/postgres/pgbin.ts';
import { Pageserver } from '../../src/pageserver/pageserver.ts';
import type { Tenant } from '../../src/pageserver/tenant.ts';
import { formatLsn, type Lsn } from '../../src/postgres/lsn.ts';
import { ddlMixWorkload, pgbenchWorkload } from '../harness/workloads.ts';
import { amcheckAll, assertSameDump, dumpAll, endpointTarget, psqlValue, runClientTool } from '../support/endpoint-target.ts';

const SETTINGS = { fsync: false, autovacuum: false } as const;

interface Moment {
  name: string;
  lsn: Lsn;
  dump: string;
}

/**
 * Both ways of rebuilding pages: `images` (computes log a full image with every change:
 * wal_consistency_checking=all) and `typescript` (images only for rmgrs without TypeScript redo;
 * heap, btree, sequence and generic records are replayed by src/redo/).
 */
const REDO_MODES_UNDER_TEST = ['images', 'typescript'] as const;

for (const redoMode of REDO_MODES_UNDER_TEST) describe(`compute on a Strata timeline, branches at recorded LSNs (redo_mode = ${redoMode})`, { timeout: 900_000 }, () => {
  const workdir = mkdtempSync(path.join(os.tmpdir(), 'strata-e2e-'));
  chmodSync(workdir, 0o755);
  const endpoints: Endpoint[] = [];
  let ps: Pageserver;
  let tenant: Tenant;
  let mainId = '';
  let main: Endpoint;
  const moments: Moment[] = [];
  let epCount = 0;

  const startPageserver = () => Pageserver.start({
    workdir: path.join(workdir, 'pageserver'), pageCacheBytes: 64 << 20, blockCacheBytes: 32 << 20, waitLsnTimeoutMs: 60_000,
    listenPg: { host: '127.0.0.1', port: 0 }, walReceiverBackoffMs: { min: 50, max: 1000 },
  });

  const startEndpoint = async (timelineId: string): Promise<Endpoint> => {
    const ep = await Endpoint.start({ pageserver: ps, tenantId: tenant.tenantId, timelineId, dir: path.join(workdir, `ep${++epCount}`), settings: SETTINGS });
    endpoints.push(ep);
    return ep;
  };

  /** Waits until the timeline has ingested everything the compute has written. */
  const caughtUp = async (ep: Endpoint, timelineId: string): Promise<Lsn> => {
    const t = endpointTarget(ep.port);
    try {
      const lsn = await t.currentLsn('insert');
      await ps.getTimeline(tenant.tenantId, timelineId).waitLsn(lsn, 60_000);
      return lsn;
    } finally {
      await t.close();
    }
  };

  const record = async (name: string, ep: Endpoint): Promise<void> => {
    const lsn = await caughtUp(ep, mainId);
    moments.push({ name, lsn, dump: await dumpAll(ep.port) });
  };

  before(async () => {
    ps = await startPageserver();
    tenant = await ps.tenants.createTenant({ config: { redoMode } });
    const tl = await bootstrapTimeline(tenant);
    mainId = tl.timelineId;
    main = await startEndpoint(mainId);
  });

  after(async () => {
    for (const ep of endpoints) await ep.kill().catch(() => undefined);
    await ps?.shutdown({ flush: false }).catch(() => undefined);
    if (process.env['STRATA_KEEP_TMP'] !== '1') rmSync(workdir, { recursive: true, force: true });
  });

  test('workload on the main timeline with recorded moments, pageserver and compute restarts', async () => {
    const target = endpointTarget(main.port);
    try {
      const wcc = await psqlValue(main.port, 'SHOW wal_consistency_checking');
      assert.equal(wcc, redoMode === 'images' ? 'all' : 'hash,gin,gist,spgist,brin', 'which records carry full images');
      await record('empty cluster', main);
      await pgbenchWorkload(target, { scale: 2, transactions: 100, clients: 2 });
      await record('after pgbench -i -s 2 and a run', main);
      await ddlMixWorkload(target);
      await record('after the DDL mix', main);

      // State that branches must carry: an open prepared transaction, a sequence, an unlogged table.
      await target.query('CREATE SEQUENCE e2e_seq');
      await target.query("SELECT nextval('e2e_seq') FROM generate_series(1, 40)");
      await target.query('CREATE UNLOGGED TABLE e2e_unlogged (id int PRIMARY KEY, v text)');
      await target.query("INSERT INTO e2e_unlogged SELECT g, 'u' || g FROM generate_series(1, 500) g");
      await target.query('CREATE TABLE e2e_2pc (id int PRIMARY KEY)');
      const c = await target.connect();
      await c.query('BEGIN');
      await c.query('INSERT INTO e2e_2pc VALUES (1), (2)');
      await c.query("PREPARE TRANSACTION 'e2e_keep'");
      await record('prepared transaction open', main);
    } finally {
      await target.close();
    }

    // Restart the pageserver while pgbench runs: ingestion resumes from disk_consistent_lsn.
    const bench = runClientTool(main.port, 'pgbench', ['-c', '2', '-j', '2', '-T', '6', 'postgres']);
    await new Promise((r) => setTimeout(r, 2000));
    const before = ps.getTimeline(tenant.tenantId, mainId).lastRecordLsn;
    await ps.shutdown({ flush: false });
    ps = await startPageserver();
    tenant = ps.tenants.getTenant(tenant.tenantId);
    for (const ep of endpoints) ep.usePageserver(ps);
    const reopened = ps.getTimeline(tenant.tenantId, mainId);
    assert.ok(reopened.lastRecordLsn <= before, 'a restart without flush resumes at or before where ingestion was');
    await bench;
    await record('after a pageserver restart mid-pgbench', main);
    assert.ok(reopened.lastRecordLsn > before, `ingestion continued after the restart (${formatLsn(reopened.lastRecordLsn)} > ${formatLsn(before)})`);

    // Restart the compute at the tip: the data is there and pgbench continues.
    const dumpBeforeStop = moments[moments.length - 1]!.dump;
    await main.stop();
    main = await startEndpoint(mainId);
    assertSameDump(await dumpAll(main.port), dumpBeforeStop, 'a compute restarted at the tip sees exactly the data before the stop');
    assert.equal(await psqlValue(main.port, "SELECT gid FROM pg_prepared_xacts WHERE gid = 'e2e_keep'"), 'e2e_keep');
    await runClientTool(main.port, 'pgbench', ['-c', '2', '-t', '50', 'postgres']);
    await record('after a compute restart and more pgbench', main);
  });

  test('a branch at each recorded LSN dumps what was recorded there, and amcheck is clean', async () => {
    assert.ok(moments.length >= 5);
    for (const m of moments) {
      const br = await tenant.branchTimeline({ ancestorTimelineId: mainId, ancestorStartLsn: m.lsn });
      const ep = await startEndpoint(br.timelineId);
      try {
        const dump = await dumpAll(ep.port);
        assertSameDump(dump, m.dump, `pg_dumpall of a branch at ${formatLsn(m.lsn)} (${m.name}) differs from the one recorded`);
        const check = await amcheckAll(ep.port);
        assert.equal(check.exitCode, 0, `pg_amcheck on the branch at ${m.name}: ${check.stdout}${check.stderr}`);
      } finally {
        await ep.stop();
      }
    }
  });

  test('branches are isolated; a branch of a branch works; 2PC, sequences and unlogged tables carry over correctly', async () => {
    const m = moments.find((x) => x.name === 'prepared transaction open')!;
    const a = await tenant.branchTimeline({ ancestorTimelineId: mainId, ancestorStartLsn: m.lsn });
    const b = await tenant.branchTimeline({ ancestorTimelineId: mainId, ancestorStartLsn: m.lsn });
    const epA = await startEndpoint(a.timelineId);
    const epB = await startEndpoint(b.timelineId);
    try {
      // The prepared transaction is there, still prepared, and can be committed on a branch.
      assert.equal(await psqlValue(epA.port, 'SELECT gid FROM pg_prepared_xacts'), 'e2e_keep');
      assert.equal(await psqlValue(epA.port, 'SELECT count(*) FROM e2e_2pc'), '0');
      await psqlValue(epA.port, "COMMIT PREPARED 'e2e_keep'");
      assert.equal(await psqlValue(epA.port, 'SELECT count(*) FROM e2e_2pc'), '2');
      // Sequences continue past what the parent handed out; unlogged tables start empty.
      assert.ok(Number(await psqlValue(epA.port, "SELECT nextval('e2e_seq')")) > 40);
      assert.equal(await psqlValue(epA.port, 'SELECT count(*) FROM e2e_unlogged'), '0');
      await psqlValue(epA.port, "INSERT INTO e2e_unlogged VALUES (1, 'after branch')");

      // Writes on A are seen neither by its sibling B nor by the parent.
      await psqlValue(epA.port, 'CREATE TABLE only_on_a (v int); INSERT INTO only_on_a SELECT generate_series(1, 1000)');
      assert.equal(await psqlValue(epB.port, "SELECT count(*) FROM pg_class WHERE relname = 'only_on_a'"), '0');
      assert.equal(await psqlValue(main.port, "SELECT count(*) FROM pg_class WHERE relname = 'only_on_a'"), '0');
      assert.equal(await psqlValue(epB.port, 'SELECT gid FROM pg_prepared_xacts'), 'e2e_keep');
      await psqlValue(epB.port, "ROLLBACK PREPARED 'e2e_keep'");
      assert.equal(await psqlValue(epB.port, 'SELECT count(*) FROM e2e_2pc'), '0');
      assert.equal(await psqlValue(main.port, "SELECT count(*) FROM pg_prepared_xacts WHERE gid = 'e2e_keep'"), '1');

      // One compute per timeline: a second one on A is refused while A's is running.
      await assert.rejects(Endpoint.start({ pageserver: ps, tenantId: tenant.tenantId, timelineId: a.timelineId, dir: path.join(workdir, 'second-on-a') }),
        /already has a running compute/);

      // Tablespaces: relations in one cannot be served (a clear error), an emptied one is no obstacle.
      const tsDir = path.join(workdir, 'tablespace');
      mkdirSync(tsDir);
      await chownForPostgres(tsDir);
      await psqlValue(epA.port, `CREATE TABLESPACE strata_ts LOCATION '${tsDir}'`);
      await psqlValue(epA.port, 'CREATE TABLE in_ts (a int) TABLESPACE strata_ts; INSERT INTO in_ts VALUES (1)');
      await caughtUp(epA, a.timelineId);
      const discard: BasebackupSink = { directory: async () => undefined, file: async (_p, _n, fill) => fill(async () => undefined), finish: async () => undefined };
      await assert.rejects(generateBasebackup({ timeline: a, sink: discard }), /relations in tablespace \d+.*only pg_default and pg_global/);
      await psqlValue(epA.port, 'DROP TABLE in_ts');
      await psqlValue(epA.port, 'DROP TABLESPACE strata_ts');
      await caughtUp(epA, a.timelineId);
      await generateBasebackup({ timeline: a, sink: discard });

      // A branch of branch A at its tip sees A's writes.
      const aLsn = await caughtUp(epA, a.timelineId);
      const aa = await tenant.branchTimeline({ ancestorTimelineId: a.timelineId, ancestorStartLsn: aLsn });
      const epAA = await startEndpoint(aa.timelineId);
      try {
        assert.equal(await psqlValue(epAA.port, 'SELECT count(*) FROM only_on_a'), '1000');
        assert.equal(await psqlValue(epAA.port, 'SELECT count(*) FROM e2e_2pc'), '2');
        assert.equal(await psqlValue(epAA.port, 'SELECT count(*) FROM e2e_unlogged'), '0');
        await psqlValue(epAA.port, 'INSERT INTO only_on_a VALUES (-1)');
        assert.equal(await psqlValue(epA.port, 'SELECT count(*) FROM only_on_a'), '1000');
      } finally {
        await epAA.stop();
      }
    } finally {
      await epA.stop();
      await epB.stop();
    }
  });
});
