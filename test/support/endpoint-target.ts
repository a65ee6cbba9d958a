/**
 * Test helpers for Strata compute endpoints: a WorkloadTarget (so the harness workloads run on a
 * compute), pg_dumpall / pg_amcheck / psql against a port, and LSN helpers.
 */
import { execFile } from 'node:child_process';
import assert from 'node:assert/strict';
import path from 'node:path';
import pg from 'pg';
import { parseLsn, type Lsn } from '../../src/postgres/lsn.ts';
import { pgBinDir } from '../../src/postgres/pgbin.ts';
import type { RunOptions, RunResult } from '../harness/postgres.ts';
import type { WorkloadTarget } from '../harness/workloads.ts';

export function runClientTool(port: number, binary: string, args: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
  const file = binary.includes('/') ? binary : path.join(pgBinDir(), binary);
  return new Promise((resolve, reject) => {
    const child = execFile(file, [...args], {
      encoding: 'utf8', maxBuffer: 512 * 1024 * 1024, timeout: opts.timeoutMs ?? 180_000,
      env: { ...process.env, LC_ALL: 'C', PGHOST: '127.0.0.1', PGPORT: String(port), PGUSER: 'postgres', PGDATABASE: 'postgres', ...(opts.env ?? {}) },
    }, (err, stdout, stderr) => {
      const result: RunResult = {
        command: `${binary} ${args.join(' ')}`, exitCode: child.exitCode, signal: child.signalCode, stdout, stderr,
      };
      if (err !== null && opts.allowFailure !== true) {
        reject(new Error(`${result.command} failed (exit ${result.exitCode}): ${stderr.trim().split('\n').slice(-8).join('\n')}`));
        return;
      }
      resolve(result);
    });
    if (opts.input !== undefined) child.stdin?.end(opts.input);
  });
}

/** A WorkloadTarget for a server on 127.0.0.1:port (user postgres, trust). Close with close(). */
export function endpointTarget(port: number): WorkloadTarget & { close(): Promise<void> } {
  const clients: pg.Client[] = [];
  let shared: pg.Client | null = null;
  const connect = async (database = 'postgres'): Promise<pg.Client> => {
    const c = new pg.Client({ host: '127.0.0.1', port, user: 'postgres', database });
    await c.connect();
    clients.push(c);
    return c;
  };
  const query = async (sql: string, params?: unknown[]) => {
    shared ??= await connect();
    return shared.query(sql, params);
  };
  return {
    connect,
    query: query as WorkloadTarget['query'],
    async currentLsn(kind: 'insert' | 'flush' = 'insert'): Promise<Lsn> {
      const r = await query(`SELECT pg_current_wal_${kind}_lsn()::text AS l`);
      return parseLsn(String(r.rows[0]!.l));
    },
    async switchWal(): Promise<Lsn> {
      const r = await query('SELECT pg_switch_wal()::text AS l');
      return parseLsn(String(r.rows[0]!.l));
    },
    async checkpoint(): Promise<void> {
      await query('CHECKPOINT');
    },
    run: (binary: string, args: readonly string[], opts?: RunOptions) => runClientTool(port, binary, args, opts),
    async close(): Promise<void> {
      await Promise.all(clients.map((c) => c.end().catch(() => undefined)));
      clients.length = 0;
      shared = null;
    },
  };
}

/** pg_dumpall of the whole server; unlogged tables are empty after any restart (and on branches), so their rows are left out. */
export async function dumpAll(port: number): Promise<string> {
  const r = await runClientTool(port, 'pg_dumpall', ['--no-sync', '--no-unlogged-table-data', '--restrict-key=strataTestKey']);
  return r.stdout;
}

/**
 * pg_amcheck of every connectable database: verify_heapam on every table and bt_index_check
 * (with heapallindexed) on every B-tree index; installs amcheck where missing.
 */
export function amcheckAll(port: number): Promise<RunResult> {
  return runClientTool(port, 'pg_amcheck', ['--all', '--install-missing', '--heapallindexed'], { allowFailure: true });
}

export async function psqlValue(port: number, sql: string, database = 'postgres'): Promise<string> {
  const r = await runClientTool(port, 'psql', ['-X', '-At', '-v', 'ON_ERROR_STOP=1', '-d', database, '-c', sql]);
  return r.stdout.trim();
}

// ---------------------------------------------------------------------------------------------
// Dump comparison: sequences may be ahead (below); it reports the first differing lines instead of
// handing two multi-megabyte strings to assert.equal.

/**
 * Sequences are the one legitimate difference. When nextval has to WAL-log, it logs the value
 * SEQ_LOG_VALS (32) increments beyond what it hands out (and caches); later calls change only the
 * buffer, and the page written at shutdown is not WAL-logged. A store built from WAL therefore
 * shows a sequence up to 32 increments ahead, as PostgreSQL itself does after a crash. So a setval
 * value must be the recorded one plus k increments, 0 <= k <= 32 (the increment comes from the
 * dump's CREATE SEQUENCE or identity definition, default 1); everything else must be identical.
 */
const SETVAL = /^SELECT pg_catalog\.setval\('([^']+)', (-?\d+), (true|false)\);$/gm;
const SEQ_DEFINITION = /^(?:CREATE SEQUENCE |    SEQUENCE NAME )(.+)\n((?:    .*\n)*)/gm;
const SEQ_LOG_VALS = 32n;

function sequenceIncrements(dump: string): Map<string, bigint> {
  const increments = new Map<string, bigint>();
  for (const m of dump.matchAll(SEQ_DEFINITION)) increments.set(m[1]!, BigInt(/INCREMENT BY (-?\d+)/.exec(m[2]!)?.[1] ?? '1'));
  return increments;
}

function firstDifference(actual: string, expected: string, contextLines = 3): string {
  const a = actual.split('\n');
  const e = expected.split('\n');
  let i = 0;
  while (i < a.length && i < e.length && a[i] === e[i]) i++;
  const from = Math.max(0, i - contextLines);
  const show = (lines: string[], sign: string) => lines.slice(from, i + contextLines + 1).map((l, k) => `${from + k === i ? sign : ' '} ${l}`).join('\n');
  return `first difference at line ${i + 1} (actual ${a.length} lines, expected ${e.length} lines)\n`
    + `--- expected\n${show(e, '-')}\n+++ actual\n${show(a, '+')}`;
}

export function assertSameDump(actual: string, expected: string, message: string): void {
  const seqs = (dump: string) => new Map(Array.from(dump.matchAll(SETVAL), (m) => [m[1]!, BigInt(m[2]!)]));
  const want = seqs(expected);
  const got = seqs(actual);
  const increments = sequenceIncrements(expected);
  assert.deepEqual(Array.from(got.keys()), Array.from(want.keys()), `${message}: the sequences differ`);
  for (const [name, v] of want) {
    const g = got.get(name)!;
    const increment = increments.get(name) ?? 1n;
    const ahead = increment === 0n ? 0n : (g - v) / increment;
    assert.ok(v + ahead * increment === g && ahead >= 0n && ahead <= SEQ_LOG_VALS,
      `${message}: sequence ${name} is at ${g}, recorded ${v}; allowed: ${v} plus 0..${SEQ_LOG_VALS} increments of ${increment}`);
  }
  const mask = (dump: string) => dump.replace(SETVAL, "SELECT pg_catalog.setval('$1', <n>, $3);");
  const ma = mask(actual);
  const me = mask(expected);
  if (ma !== me) assert.fail(`${message}: ${firstDifference(ma, me)}`);
}
