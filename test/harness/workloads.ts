/**
 * WAL workload generators for tests and benchmarks.
 *
 * Each generator drives a real PostgreSQL 15 server (a PostgresHandle from ./postgres.ts) and returns the
 * WAL range it produced: `startLsn` is pg_current_wal_insert_lsn() before the first statement and `endLsn`
 * the same after the last one. Other sessions (autovacuum, the checkpointer, the harness's own probes) may
 * add records inside that range; consumers must not assume the range holds only our records.
 *
 * The generators do not call pg_switch_wal() at the end; callers that want every record of the range in
 * the segment files (rather than only in WAL buffers) should call `pg.switchWal()` before copying.
 *
 * ddlMixWorkload() aims for breadth, not volume: one small instance of each WAL-producing operation a
 * storage engine must replay (catalog changes, relation create/drop/truncate, both CREATE DATABASE
 * strategies, TOAST, subtransaction overflow, two-phase commit, multixacts, unlogged relations, sequences,
 * VACUUM/FREEZE, a WAL switch and a checkpoint mid-stream). Object names carry a per-run suffix so the
 * workload can run more than once against the same cluster.
 */
import type { Client } from 'pg';
import { parseLsn } from '../../src/postgres/lsn.ts';
import type { Lsn } from '../../src/postgres/lsn.ts';
import { InvalidInputError } from '../../src/util/errors.ts';
import type { PostgresHandle } from './postgres.ts';

/** What the workloads need from a server: a harness cluster or a Strata compute endpoint. */
export type WorkloadTarget = Pick<PostgresHandle, 'query' | 'connect' | 'currentLsn' | 'switchWal' | 'checkpoint' | 'run'>;

export interface WalRange {
  startLsn: Lsn;
  endLsn: Lsn;
}

export interface PgbenchWorkloadOptions {
  /** pgbench -i -s; default 1. */
  scale?: number;
  /** pgbench -t: transactions per client. Give this or durationS; default 100 when neither is given. */
  transactions?: number;
  /** pgbench -T: run time in seconds. */
  durationS?: number;
  /** pgbench -c; default 2. */
  clients?: number;
  /** pgbench -j; default min(clients, 2). */
  jobs?: number;
  database?: string;
  /** Run `pgbench -i` first; default true. */
  init?: boolean;
  /** Extra arguments for the benchmark run (not for -i). */
  extraRunArgs?: readonly string[];
}

export interface PgbenchWorkloadResult extends WalRange {
  /** pgbench's report of the run (tps, latency). */
  report: string;
}

function positiveInt(name: string, v: number): number {
  if (!Number.isInteger(v) || v <= 0) throw new InvalidInputError(`${name} must be a positive integer, got ${v}`, { [name]: v });
  return v;
}

/** Runs the real pgbench binary: `pgbench -i -s N` then a bounded run (-t or -T). */
export async function pgbenchWorkload(pg: WorkloadTarget, opts: PgbenchWorkloadOptions = {}): Promise<PgbenchWorkloadResult> {
  if (opts.transactions !== undefined && opts.durationS !== undefined) {
    throw new InvalidInputError('pgbenchWorkload: give transactions or durationS, not both');
  }
  const scale = positiveInt('scale', opts.scale ?? 1);
  const clients = positiveInt('clients', opts.clients ?? 2);
  const jobs = positiveInt('jobs', opts.jobs ?? Math.min(clients, 2));
  const database = opts.database ?? 'postgres';
  const bound = opts.durationS !== undefined
    ? ['-T', String(positiveInt('durationS', opts.durationS))]
    : ['-t', String(positiveInt('transactions', opts.transactions ?? 100))];
  // Generous: init of scale N writes ~N * 15 MB; the run is bounded by -t/-T.
  const timeoutMs = 120_000 + scale * 10_000 + (opts.durationS ?? 0) * 1_000 * 2;

  const startLsn = await pg.currentLsn();
  if (opts.init !== false) {
    await pg.run('pgbench', ['-i', '-q', '-s', String(scale), database], { timeoutMs });
  }
  const res = await pg.run('pgbench', ['-c', String(clients), '-j', String(jobs), ...bound, ...(opts.extraRunArgs ?? []), database], { timeoutMs });
  const endLsn = await pg.currentLsn();
  return { startLsn, endLsn, report: res.stdout };
}

export interface DdlMixResult extends WalRange {
  /** Result of the pg_switch_wal() done mid-workload. */
  switchLsn: Lsn;
  /** Redo LSN of the checkpoint done mid-workload (from pg_control_checkpoint()). */
  checkpointRedoLsn: Lsn;
  /** Suffix used in every object name of this run. */
  suffix: string;
}

let runCounter = 0;

/** Number of subtransactions with an xid in one transaction: more than PGPROC_MAX_CACHED_SUBXIDS (64). */
const SUBXACT_COUNT = 80;

async function withClient<T>(pg: WorkloadTarget, database: string, fn: (c: Client) => Promise<T>): Promise<T> {
  const client = await pg.connect(database);
  try {
    return await fn(client);
  } finally {
    await client.end();
  }
}

/** A broad mix of DDL and transaction-machinery WAL; a few seconds on a laptop-class machine. */
export async function ddlMixWorkload(pg: WorkloadTarget): Promise<DdlMixResult> {
  runCounter += 1;
  const s = `${process.pid.toString(36)}_${Date.now().toString(36)}_${runCounter}`;
  const q = (sql: string): Promise<unknown> => pg.query(sql);

  const startLsn = await pg.currentLsn();

  // Tables, an index, DML, DROP INDEX, DROP TABLE, TRUNCATE.
  await q(`CREATE TABLE ddl_main_${s} (id int PRIMARY KEY, k int NOT NULL, v text)`);
  await q(`INSERT INTO ddl_main_${s} SELECT g, g % 97, md5(g::text) FROM generate_series(1, 2000) g`);
  await q(`CREATE INDEX ddl_main_${s}_k ON ddl_main_${s} (k)`);
  await q(`UPDATE ddl_main_${s} SET v = v || 'u' WHERE id % 10 = 0`);
  await q(`UPDATE ddl_main_${s} SET k = k + 1 WHERE id % 13 = 0`);
  await q(`DELETE FROM ddl_main_${s} WHERE id % 7 = 0`);
  await q(`DROP INDEX ddl_main_${s}_k`);
  await q(`CREATE TABLE ddl_drop_${s} (id int PRIMARY KEY, v text)`);
  await q(`INSERT INTO ddl_drop_${s} SELECT g, 'd' || g FROM generate_series(1, 200) g`);
  await q(`DROP TABLE ddl_drop_${s}`);
  await q(`CREATE TABLE ddl_trunc_${s} (id int PRIMARY KEY)`);
  await q(`INSERT INTO ddl_trunc_${s} SELECT generate_series(1, 500)`);
  await q(`TRUNCATE ddl_trunc_${s}`);
  await q(`INSERT INTO ddl_trunc_${s} SELECT generate_series(1, 10)`);

  // Sequences: nextval logs a record every 32 values.
  await q(`CREATE SEQUENCE ddl_seq_${s}`);
  await q(`SELECT count(nextval('ddl_seq_${s}')) FROM generate_series(1, 500)`);

  // Subtransactions: more than 64 with xids in one transaction (XLOG_XACT_ASSIGNMENT), some rolled back,
  // some nested.
  await q(`CREATE TABLE ddl_sub_${s} (id int, v text)`);
  const sub: string[] = ['BEGIN', `INSERT INTO ddl_sub_${s} VALUES (0, 'top')`];
  for (let i = 1; i <= SUBXACT_COUNT; i++) {
    sub.push(`SAVEPOINT sp${i}`, `INSERT INTO ddl_sub_${s} VALUES (${i}, 'sub')`);
    if (i % 10 === 0) sub.push(`ROLLBACK TO SAVEPOINT sp${i}`);
    sub.push(`RELEASE SAVEPOINT sp${i}`);
  }
  sub.push(
    'SAVEPOINT n1', `INSERT INTO ddl_sub_${s} VALUES (1001, 'n1')`,
    'SAVEPOINT n2', `INSERT INTO ddl_sub_${s} VALUES (1002, 'n2')`,
    'SAVEPOINT n3', `INSERT INTO ddl_sub_${s} VALUES (1003, 'n3')`,
    'RELEASE SAVEPOINT n3', 'ROLLBACK TO SAVEPOINT n2', 'RELEASE SAVEPOINT n2', 'RELEASE SAVEPOINT n1',
    'COMMIT',
  );
  await withClient(pg, 'postgres', async (c) => {
    await c.query(sub.join(';\n'));
  });

  // Two-phase commit: one committed (with a subtransaction inside), one rolled back.
  await q(`CREATE TABLE ddl_2pc_${s} (id int PRIMARY KEY, v text)`);
  await withClient(pg, 'postgres', async (c) => {
    await c.query('BEGIN');
    await c.query(`INSERT INTO ddl_2pc_${s} VALUES (1, 'commit')`);
    await c.query('SAVEPOINT a');
    await c.query(`INSERT INTO ddl_2pc_${s} VALUES (2, 'commit-sub')`);
    await c.query('RELEASE SAVEPOINT a');
    await c.query(`PREPARE TRANSACTION 'strata_commit_${s}'`);
    await c.query('BEGIN');
    await c.query(`INSERT INTO ddl_2pc_${s} VALUES (3, 'rollback')`);
    await c.query(`PREPARE TRANSACTION 'strata_rollback_${s}'`);
  });
  await q(`COMMIT PREPARED 'strata_commit_${s}'`);
  await q(`ROLLBACK PREPARED 'strata_rollback_${s}'`);

  const switchLsn = await pg.switchWal();

  // Multixacts: two open transactions share-lock the same rows; then a key-share lock plus a non-key
  // update (a multixact with an updater).
  await q(`CREATE TABLE ddl_mx_${s} (id int PRIMARY KEY, v text)`);
  await q(`INSERT INTO ddl_mx_${s} SELECT g, 'm' || g FROM generate_series(1, 50) g`);
  {
    const a = await pg.connect();
    const b = await pg.connect();
    try {
      await a.query('BEGIN');
      await a.query(`SELECT id FROM ddl_mx_${s} WHERE id <= 20 FOR SHARE`);
      await b.query('BEGIN');
      await b.query(`SELECT id FROM ddl_mx_${s} WHERE id <= 20 FOR SHARE`);
      await a.query('COMMIT');
      await b.query('COMMIT');
      await a.query('BEGIN');
      await a.query(`SELECT id FROM ddl_mx_${s} WHERE id > 40 FOR KEY SHARE`);
      await b.query('BEGIN');
      await b.query(`UPDATE ddl_mx_${s} SET v = v || 'x' WHERE id > 40`);
      await b.query('COMMIT');
      await a.query('COMMIT');
    } finally {
      await Promise.all([a.end(), b.end()]);
    }
  }

  // An unlogged table with data and an index (init forks are WAL-logged, the data is not).
  await q(`CREATE UNLOGGED TABLE ddl_unlogged_${s} (id int PRIMARY KEY, v text)`);
  await q(`INSERT INTO ddl_unlogged_${s} SELECT g, md5(g::text) FROM generate_series(1, 1000) g`);
  await q(`CREATE INDEX ddl_unlogged_${s}_v ON ddl_unlogged_${s} (v)`);

  await pg.checkpoint();
  const cp = await pg.query<{ redo: string }>('SELECT redo_lsn::text AS redo FROM pg_control_checkpoint()');
  const checkpointRedoLsn = parseLsn(cp.rows[0]?.redo ?? '');

  // TOAST: values far above the 2 kB threshold, stored out of line without compression.
  await q(`CREATE TABLE ddl_toast_${s} (id int PRIMARY KEY, v text)`);
  await q(`ALTER TABLE ddl_toast_${s} ALTER COLUMN v SET STORAGE EXTERNAL`);
  await q(`INSERT INTO ddl_toast_${s} SELECT g, repeat('x', 100000) FROM generate_series(1, 3) g`);
  await q(`INSERT INTO ddl_toast_${s} SELECT 100 + g, (SELECT string_agg(md5(random()::text || g::text || i::text), '') FROM generate_series(1, 1500) i) FROM generate_series(1, 3) g`);
  await q(`UPDATE ddl_toast_${s} SET v = v || 'y' WHERE id = 1`);
  await q(`DELETE FROM ddl_toast_${s} WHERE id = 2`);

  // CREATE DATABASE with both strategies, a write in each, then DROP DATABASE.
  const dbWal = `ddl_wal_log_${s}`;
  const dbCopy = `ddl_file_copy_${s}`;
  await q(`CREATE DATABASE ${dbWal} STRATEGY WAL_LOG`);
  await q(`CREATE DATABASE ${dbCopy} STRATEGY FILE_COPY`);
  for (const db of [dbWal, dbCopy]) {
    await withClient(pg, db, async (c) => {
      await c.query('CREATE TABLE t (id int PRIMARY KEY, v text)');
      await c.query("INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 100) g");
    });
  }
  await q(`DROP DATABASE ${dbWal}`);
  await q(`DROP DATABASE ${dbCopy}`);

  // VACUUM (FREEZE) on one table, a plain VACUUM of the database.
  await q(`VACUUM (FREEZE) ddl_main_${s}`);
  await q(`VACUUM ddl_toast_${s}`);
  await q('VACUUM');

  const endLsn = await pg.currentLsn();
  return { startLsn, endLsn, switchLsn, checkpointRedoLsn, suffix: s };
}
