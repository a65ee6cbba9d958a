/**
 * Bringing an existing cluster in (pg_basebackup -Ft -X stream → new timeline → compute with the
 * same pg_dumpall), and the page service's `basebackup` command fetched with plain psql and
 * started as a vanilla PostgreSQL.
 */
import { execFileSync } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync, appendFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { Endpoint } from '../../src/compute/endpoint.ts';
import { PostgresProcess, freePort } from '../../src/compute/postgresprocess.ts';
import { bootstrapTimeline } from '../../src/pageserver/import/bootstrap.ts';
import { importPgBasebackup } from '../../src/pageserver/import/pgbasebackup.ts';
import { Pageserver } from '../../src/pageserver/pageserver.ts';
import type { Tenant } from '../../src/pageserver/tenant.ts';
import { formatLsn } from '../../src/postgres/lsn.ts';
import { chownForPostgres } from '../../src/postgres/pgbin.ts';
import { withPostgres } from '../harness/postgres.ts';
import { ddlMixWorkload, pgbenchWorkload } from '../harness/workloads.ts';
import { amcheckAll, assertSameDump, dumpAll, psqlValue, runClientTool } from '../support/endpoint-target.ts';

describe('import and page service', { timeout: 600_000 }, () => {
  const workdir = mkdtempSync(path.join(os.tmpdir(), 'strata-import-'));
  chmodSync(workdir, 0o755);
  let ps: Pageserver;
  let tenant: Tenant;
  const endpoints: Endpoint[] = [];
  const servers: PostgresProcess[] = [];

  before(async () => {
    ps = await Pageserver.start({
      workdir: path.join(workdir, 'pageserver'), pageCacheBytes: 64 << 20, blockCacheBytes: 32 << 20, waitLsnTimeoutMs: 60_000,
      listenPg: { host: '127.0.0.1', port: 0 },
    });
    tenant = await ps.tenants.createTenant({});
  });

  after(async () => {
    for (const ep of endpoints) await ep.kill().catch(() => undefined);
    for (const s of servers) await s.kill().catch(() => undefined);
    await ps?.shutdown({ flush: false }).catch(() => undefined);
    if (process.env['STRATA_KEEP_TMP'] !== '1') rmSync(workdir, { recursive: true, force: true });
  });

  test('a pg_basebackup of an existing cluster becomes a timeline with the same pg_dumpall', async (t) => {
    // The source is quiet while the backup runs (no autovacuum): see pgbasebackup.ts on why.
    const source = await withPostgres(t, { conf: { autovacuum: 'off' } });
    await pgbenchWorkload(source, { scale: 1, transactions: 50, clients: 2 });
    await ddlMixWorkload(source);
    await source.query('CREATE TABLE open_2pc (id int)');
    const c = await source.connect();
    await c.query('BEGIN');
    await c.query('INSERT INTO open_2pc VALUES (7)');
    await c.query("PREPARE TRANSACTION 'imported_2pc'");
    await c.end();
    const sourceDump = await dumpAll(source.port);

    const backupDir = path.join(workdir, 'backup');
    await source.run('pg_basebackup', ['-D', backupDir, '-Ft', '-X', 'stream', '-c', 'fast', '--no-sync']);
    const res = await importPgBasebackup(tenant, { backupDir });
    assert.ok(res.consistentLsn > res.startLsn, 'the backup becomes consistent after its start');
    assert.equal(res.timeline.latestGcCutoffLsn, res.consistentLsn, 'nothing before the consistent point can be read');
    await assert.rejects(tenant.branchTimeline({ ancestorTimelineId: res.timeline.timelineId, ancestorStartLsn: res.startLsn }),
      /below the GC cutoff/, 'a branch inside the fuzzy backup window is refused');

    const ep = await Endpoint.start({ pageserver: ps, tenantId: tenant.tenantId, timelineId: res.timeline.timelineId, dir: path.join(workdir, 'ep-import'), settings: { fsync: false } });
    endpoints.push(ep);
    assertSameDump(await dumpAll(ep.port), sourceDump, `pg_dumpall of the imported timeline (start ${formatLsn(res.startLsn)}, consistent ${formatLsn(res.consistentLsn)})`);
    assert.equal(await psqlValue(ep.port, 'SELECT gid FROM pg_prepared_xacts'), 'imported_2pc');
    await psqlValue(ep.port, "COMMIT PREPARED 'imported_2pc'");
    assert.equal(await psqlValue(ep.port, 'SELECT id FROM open_2pc'), '7');
    const check = await amcheckAll(ep.port);
    assert.equal(check.exitCode, 0, check.stdout + check.stderr);
    // The imported timeline keeps working as a Strata timeline: writes are ingested.
    await runClientTool(ep.port, 'pgbench', ['-c', '2', '-t', '30', 'postgres']);
    await ep.stop();
  });

  test('the page service serves `basebackup` over CopyOut; psql writes a tar a vanilla PostgreSQL starts on', async () => {
    const tl = await bootstrapTimeline(tenant);
    const port = ps.pageServicePort!;
    const tarFile = path.join(workdir, 'bb.tar');
    // psql writes CopyOut data of any command to its output. (Never execFileSync here: the
    // pageserver runs in this process and must keep serving.)
    await runClientTool(port, 'psql', ['-X', '-q', '-o', tarFile, '-c', `basebackup ${tenant.tenantId} ${tl.timelineId}`]);
    const listing = execFileSync('tar', ['-tf', tarFile], { encoding: 'utf8' }).split('\n');
    for (const must of ['global/pg_control', 'PG_VERSION', 'base/1/PG_VERSION', 'global/pg_filenode.map', 'pg_xact/0000']) {
      assert.ok(listing.includes(must), `${must} in the tar`);
    }
    assert.ok(listing.some((l) => l.startsWith('pg_wal/0000000100000000')), 'a WAL segment in the tar');

    const dataDir = path.join(workdir, 'from-tar');
    mkdirSync(dataDir, { mode: 0o700 });
    execFileSync('tar', ['-xf', tarFile, '-C', dataDir]);
    const pgPort = await freePort();
    const sockDir = path.join(workdir, 'from-tar-sock');
    mkdirSync(sockDir);
    appendFileSync(path.join(dataDir, 'postgresql.conf'), `port = ${pgPort}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '${sockDir}'\n`);
    writeFileSync(path.join(workdir, 'from-tar.log'), '');
    for (const p of [dataDir, sockDir, path.join(workdir, 'from-tar.log')]) await chownForPostgres(p);
    const server = await PostgresProcess.start({ dataDir, port: pgPort, logFile: path.join(workdir, 'from-tar.log') });
    servers.push(server);
    assert.equal(await psqlValue(pgPort, 'SELECT count(*) FROM pg_database'), '3');
    await psqlValue(pgPort, 'CREATE TABLE t (a int); INSERT INTO t VALUES (1)');
    await server.stop('fast');

    // Errors are in-band and name what is wrong; the connection stays usable.
    const bad = await runClientTool(port, 'psql', ['-X', '-c', `basebackup ${tenant.tenantId} ${'0'.repeat(32)}`], { allowFailure: true });
    assert.notEqual(bad.exitCode, 0);
    assert.match(bad.stderr, /not found/);
    const badLsn = await runClientTool(port, 'psql', ['-X', '-c', `basebackup ${tenant.tenantId} ${tl.timelineId} 0/1`], { allowFailure: true });
    assert.match(badLsn.stderr, /not 8-byte aligned|below the GC cutoff|before the timeline/);
    const unknown = await runClientTool(port, 'psql', ['-X', '-c', 'frobnicate'], { allowFailure: true });
    assert.match(unknown.stderr, /unknown page service command "frobnicate"/);
    const rlsn = await psqlValue(port, `get_last_record_rlsn ${tenant.tenantId} ${tl.timelineId}`);
    assert.equal(rlsn, `${formatLsn(tl.prevRecordLsn!)}|${formatLsn(tl.lastRecordLsn)}`);
  });
});
