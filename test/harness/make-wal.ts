/**
 * make-wal: produce real PostgreSQL 15 WAL segment files for benchmarks and manual checks.
 *
 *   node --import tsx test/harness/make-wal.ts --out DIR [--workload ddl|pgbench|both] [--conf k=v ...]
 *        [--initdb-arg ARG ...] [--scale N] [--transactions N | --duration S] [--clients N] [--fsync]
 *
 * Starts a throwaway cluster (test/harness/postgres.ts), runs the workload, switches WAL so the last record
 * is in a segment file, copies the segments that hold WAL up to the switch (older ones included, recycled
 * future segments excluded) into DIR, prints a JSON summary on stdout, then stops and removes the cluster.
 * LSNs in the JSON are PostgreSQL's X/X text form. Progress goes to stderr so stdout stays parseable.
 */
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import { formatLsn } from '../../src/postgres/lsn.ts';
import type { Lsn } from '../../src/postgres/lsn.ts';
import { startPostgres } from './postgres.ts';
import type { ConfValue, PostgresHandle } from './postgres.ts';
import { ddlMixWorkload, pgbenchWorkload } from './workloads.ts';
import type { PgbenchWorkloadOptions } from './workloads.ts';

const USAGE = 'usage: node --import tsx test/harness/make-wal.ts --out DIR [--workload ddl|pgbench|both] [--conf k=v ...] [--initdb-arg ARG ...] [--scale N] [--transactions N | --duration S] [--clients N] [--fsync]';

function fail(message: string): never {
  process.stderr.write(`make-wal: ${message}\n${USAGE}\n`);
  process.exit(2);
}

function intOpt(name: string, v: string | undefined): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isInteger(n) || n <= 0) fail(`--${name} must be a positive integer, got "${v}"`);
  return n;
}

async function main(): Promise<void> {
  let parsed;
  try {
    parsed = parseArgs({
      options: {
        out: { type: 'string' },
        workload: { type: 'string', default: 'ddl' },
        conf: { type: 'string', multiple: true, default: [] },
        'initdb-arg': { type: 'string', multiple: true, default: [] },
        scale: { type: 'string' },
        transactions: { type: 'string' },
        duration: { type: 'string' },
        clients: { type: 'string' },
        fsync: { type: 'boolean', default: false },
        help: { type: 'boolean', default: false },
      },
      strict: true,
      allowPositionals: false,
    });
  } catch (err) {
    fail((err as Error).message);
  }
  const v = parsed.values;
  if (v.help === true) {
    process.stdout.write(USAGE + '\n');
    return;
  }
  if (v.out === undefined || v.out === '') fail('--out DIR is required');
  const workload = v.workload ?? 'ddl';
  if (workload !== 'ddl' && workload !== 'pgbench' && workload !== 'both') fail(`unknown --workload "${workload}"`);
  const conf: Record<string, ConfValue> = {};
  for (const kv of v.conf ?? []) {
    const eq = kv.indexOf('=');
    if (eq <= 0) fail(`--conf expects name=value, got "${kv}"`);
    conf[kv.slice(0, eq)] = kv.slice(eq + 1);
  }
  const pgbenchOpts: PgbenchWorkloadOptions = {};
  const scale = intOpt('scale', v.scale);
  const transactions = intOpt('transactions', v.transactions);
  const durationS = intOpt('duration', v.duration);
  const clients = intOpt('clients', v.clients);
  if (transactions !== undefined && durationS !== undefined) fail('give --transactions or --duration, not both');
  if (scale !== undefined) pgbenchOpts.scale = scale;
  if (transactions !== undefined) pgbenchOpts.transactions = transactions;
  if (durationS !== undefined) pgbenchOpts.durationS = durationS;
  if (clients !== undefined) pgbenchOpts.clients = clients;

  const outDir = path.resolve(v.out);
  const t0 = Date.now();
  const log = (msg: string): void => {
    process.stderr.write(`make-wal [${((Date.now() - t0) / 1000).toFixed(1)}s] ${msg}\n`);
  };

  log('starting PostgreSQL');
  let pg: PostgresHandle | null = null;
  try {
    pg = await startPostgres({ conf, initdbArgs: v['initdb-arg'] ?? [], fsync: v.fsync === true });
    log(`cluster at ${pg.dataDir}, port ${pg.port}, segment size ${pg.walSegmentSizeBytes}`);
    const startLsn: Lsn = await pg.currentLsn();
    if (workload === 'ddl' || workload === 'both') {
      log('running the DDL mix');
      const r = await ddlMixWorkload(pg);
      log(`DDL mix: ${formatLsn(r.startLsn)} .. ${formatLsn(r.endLsn)}`);
    }
    if (workload === 'pgbench' || workload === 'both') {
      log(`running pgbench ${JSON.stringify(pgbenchOpts)}`);
      const r = await pgbenchWorkload(pg, pgbenchOpts);
      log(`pgbench: ${formatLsn(r.startLsn)} .. ${formatLsn(r.endLsn)}`);
    }
    const endLsn = await pg.currentLsn();
    const switchLsn = await pg.switchWal();
    const segments = await pg.copyWal(outDir, { throughLsn: switchLsn });
    log(`copied ${segments.length} segments to ${outDir}`);
    const summary = {
      workload,
      startLsn: formatLsn(startLsn),
      endLsn: formatLsn(endLsn),
      switchLsn: formatLsn(switchLsn),
      walSegmentSizeBytes: pg.walSegmentSizeBytes,
      systemIdentifier: pg.systemIdentifier.toString(),
      timeline: 1,
      outDir,
      segments: segments.map((p) => path.basename(p)),
    };
    process.stdout.write(JSON.stringify(summary, null, 2) + '\n');
  } finally {
    if (pg !== null) {
      log('stopping PostgreSQL');
      await pg.stop();
      await pg.cleanup();
    }
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`make-wal: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exitCode = 1;
});
