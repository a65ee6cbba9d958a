/**
 * npm run quickstart — Strata's main job today, end to end, on this machine.
 *
 * 1. starts a storage broker, one safekeeper and a pageserver (work directory .strata/quickstart,
 *    every service on a free port of 127.0.0.1),
 * 2. bootstraps a `main` timeline (initdb imported into layer files),
 * 3. starts a vanilla PostgreSQL 15 compute on it — the safekeeper is its synchronous standby, so a
 *    COMMIT returns once the safekeeper fsynced it; the pageserver gets the WAL from the safekeeper —
 *    and writes with pgbench,
 * 4. notes the LSN, then makes a "mistake" (drops a table),
 * 5. branches at the noted LSN (metadata only) and starts a second compute on the branch,
 * 6. shows that the branch still has the table while main does not, and stops everything.
 *
 * Everything runs in this process plus the postgres servers it starts; nothing outlives it.
 * The long-lived control plane (`strata start`, `strata endpoint start`, …) is issue 6.
 */
import { chmod, mkdir, rm } from 'node:fs/promises';
import path from 'node:path';
import pg from 'pg';
import { Endpoint } from '../src/compute/endpoint.ts';
import { startBroker } from '../src/broker/server.ts';
import { Safekeeper } from '../src/safekeeper/safekeeper.ts';
import { bootstrapTimeline } from '../src/pageserver/import/bootstrap.ts';
import { Pageserver } from '../src/pageserver/pageserver.ts';
import { formatLsn, parseLsn } from '../src/postgres/lsn.ts';
import { runPgTool } from '../src/postgres/pgbin.ts';
import { rootLogger } from '../src/util/log.ts';

const say = (s: string): void => void process.stdout.write(s + '\n');

async function query(port: number, sql: string): Promise<pg.QueryResult> {
  const c = new pg.Client({ host: '127.0.0.1', port, user: 'postgres', database: 'postgres' });
  await c.connect();
  try {
    return await c.query(sql);
  } finally {
    await c.end();
  }
}

async function main(): Promise<void> {
  const workdir = path.resolve('.strata', 'quickstart');
  await rm(workdir, { recursive: true, force: true });
  await mkdir(workdir, { recursive: true });
  // When run as root, PostgreSQL runs as the postgres OS user and must reach the endpoint dirs.
  for (let p = workdir; p !== path.dirname(p); p = path.dirname(p)) {
    if (p === path.resolve('.')) break;
    await chmod(p, 0o755);
  }
  // Progress is printed below; the servers' own log lines only when asked for (STRATA_LOG=info).
  process.env['STRATA_LOG'] ??= 'warn';
  const log = rootLogger;
  const t0 = Date.now();
  say('1/6 starting a storage broker, a safekeeper and a pageserver ...');
  const broker = await startBroker({ host: '127.0.0.1', port: 0, log });
  const brokerEndpoint = `127.0.0.1:${broker.grpcPort}`;
  const sk = await Safekeeper.start({
    id: 1n, dataDir: path.join(workdir, 'safekeeper-1'), listenPg: { host: '127.0.0.1', port: 0 }, listenHttp: { host: '127.0.0.1', port: 0 },
    brokerEndpoint, log,
  });
  const ps = await Pageserver.start({
    workdir: path.join(workdir, 'pageserver'), pageCacheBytes: 64 << 20, blockCacheBytes: 32 << 20, waitLsnTimeoutMs: 60_000,
    listenPg: { host: '127.0.0.1', port: 0 }, brokerEndpoint, log,
  });
  const safekeepers = [{ id: sk.id, pgConnstr: sk.pgConnstr, httpConnstr: sk.httpConnstr }];
  const endpoints: Endpoint[] = [];
  try {
    say(`    broker on ${brokerEndpoint}; safekeeper 1: WAL service ${sk.pgConnstr}, HTTP ${sk.httpConnstr}`);
    say(`    pageserver: page service on 127.0.0.1:${ps.pageServicePort}, data in ${path.join(workdir, 'pageserver')}`);
    const tenant = await ps.tenants.createTenant({});
    say('2/6 bootstrapping timeline `main` (initdb, imported into layer files) ...');
    const main = await bootstrapTimeline(tenant);
    say(`    tenant ${tenant.tenantId}, timeline ${main.timelineId} at ${formatLsn(main.lastRecordLsn)}`);

    say('3/6 starting a PostgreSQL 15 compute on `main` and running pgbench -i -s 1 ...');
    const epMain = await Endpoint.start({ pageserver: ps, tenantId: tenant.tenantId, timelineId: main.timelineId, dir: path.join(workdir, 'ep-main'), log, safekeepers });
    endpoints.push(epMain);
    say(`    ${epMain.connectionString()} (term ${epMain.term}, synchronous standby: safekeeper 1)`);
    await runPgTool('pgbench', ['-i', '-s', '1', '-q', '-h', '127.0.0.1', '-p', String(epMain.port), '-U', 'postgres', 'postgres']);
    const before = await query(epMain.port, 'SELECT count(*)::int AS n, pg_current_wal_insert_lsn()::text AS lsn, now()::text AS at FROM pgbench_accounts');
    const lsn = parseLsn(String(before.rows[0].lsn));
    say(`    pgbench_accounts has ${before.rows[0].n} rows at LSN ${formatLsn(lsn)} (${before.rows[0].at})`);

    say('4/6 the mistake: DROP TABLE pgbench_accounts ...');
    await query(epMain.port, 'DROP TABLE pgbench_accounts');
    await main.waitLsn(parseLsn(String((await query(epMain.port, 'SELECT pg_current_wal_insert_lsn()::text AS l')).rows[0].l)), 30_000);
    say(`    main has ingested the drop (last record ${formatLsn(main.lastRecordLsn)})`);

    say(`5/6 branching at ${formatLsn(lsn)}, just before the mistake, and starting a compute on the branch ...`);
    const tb = Date.now();
    const branch = await tenant.branchTimeline({ ancestorTimelineId: main.timelineId, ancestorStartLsn: lsn });
    const epBranch = await Endpoint.start({ pageserver: ps, tenantId: tenant.tenantId, timelineId: branch.timelineId, dir: path.join(workdir, 'ep-branch'), log, safekeepers });
    endpoints.push(epBranch);
    say(`    branch ${branch.timelineId}: compute accepting queries ${Date.now() - tb} ms after the branch request (${epBranch.connectionString()})`);

    say('6/6 checking ...');
    const onBranch = await query(epBranch.port, 'SELECT count(*)::int AS n FROM pgbench_accounts');
    const onMain = await query(epMain.port, "SELECT count(*)::int AS n FROM pg_class WHERE relname = 'pgbench_accounts'");
    say(`    branch: pgbench_accounts has ${onBranch.rows[0].n} rows; main: the table ${onMain.rows[0].n === 0 ? 'is gone' : 'still exists'}`);
    if (onBranch.rows[0].n !== before.rows[0].n || onMain.rows[0].n !== 0) throw new Error('the branch does not show the data of the branch point');
    say(`Strata works: a vanilla PostgreSQL started on a branch at a past LSN sees exactly the data of that moment (${((Date.now() - t0) / 1000).toFixed(1)} s in all).`);
    say('Next: `npm test` runs the test suite; docs/architecture.md explains the parts.');
  } finally {
    for (const ep of endpoints) await ep.stop().catch(() => ep.kill());
    await ps.shutdown({ flush: true });
    await sk.shutdown();
    await broker.close();
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`quickstart failed: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
