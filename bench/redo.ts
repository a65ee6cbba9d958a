/**
 * bench:redo — issue 7's benchmark: how fast Strata's TypeScript redo applies the WAL of a pgbench
 * run, next to PostgreSQL's own recovery replaying the very same WAL, plus what
 * wal_consistency_checking costs in WAL volume.
 *
 * Generation (untimed), one throwaway PostgreSQL 15 (test/harness/postgres.ts), fsync off,
 * autovacuum off, checkpoints only on request:
 *  1. `pgbench -i -s N`.
 *  2. WAL per transaction (part 3 of the issue): CHECKPOINT, `pgbench -c 2 -t T` with
 *     wal_consistency_checking = off, then CHECKPOINT, the same with = all (ALTER SYSTEM + reload,
 *     checked with SHOW). Bytes per transaction = insert-LSN difference / transactions. The
 *     checkpoint before each run gives both the same full-page-write situation.
 *  3. `pg_basebackup -X stream -c fast` (its checkpoint makes every first touch of a block after
 *     it a full-page image), then the timed WAL: `pgbench -c 2 -t T` with
 *     wal_consistency_checking = off — the realistic redo_mode=typescript case: records without
 *     images except full-page writes. Then the server is stopped (fast: a shutdown checkpoint
 *     record ends the WAL) and its segments are copied aside.
 *
 * The replayed range is the same for both sides: from the base backup's redo point (backup_label
 * "START WAL LOCATION") to the end of valid WAL in the copied segments (the shutdown checkpoint).
 *
 * Strata (timed): RedoVerifier (src/redo/verify.ts) over the segment files via
 * runRedoVerifyOnFiles, startLsn = the redo point: read + decode + CRC + FPI restore + TypeScript
 * redo for every block reference. With no consistency images it only replays; the block cache is
 * sized to hold every block, so nothing is evicted. One untimed warm-up, then best of RUNS. A
 * decode-only pass (scanWal, same options) is timed the same way so the redo share can be
 * reported. In-process (the warm-up brings the JIT to steady state).
 *
 * Reference (timed): `cp -a` of the base backup, the copied segments put into its pg_wal,
 * recovery.signal, restore_command = 'false' (so PostgreSQL reads the segments from pg_wal and
 * no copying is timed), no recovery target: it replays to the end of WAL, then promotes. The
 * figure is the "elapsed" of PostgreSQL's own `redo done at X system usage: … elapsed: S s` log
 * line — the redo loop only, without process startup, end-of-recovery checkpoint or promotion —
 * which is the fair comparison with Strata's loop. PostgreSQL's shared_buffers = 128MB; the
 * pages it redoes without an image are read from the OS page cache (the copy just wrote them).
 * Start-to-accepting-connections wall time is reported too. Best of RUNS. The "redo starts at" and
 * "redo done at" LSNs are checked against Strata's first record and last record.
 *
 * Ratio = Strata records/s ÷ PostgreSQL records/s (same records, so = PG elapsed ÷ Strata time).
 * Target ≥ 1.0.
 *
 * Everything lives under one work directory (TMPDIR points there), removed at the end, on error
 * and on SIGINT/SIGTERM; every server is stopped in finally blocks and by the exit hooks of the
 * harness and PostgresProcess. MB = 10^6 bytes. Progress goes to stderr; the summary and, as the
 * last line, one JSON object to stdout.
 */
import { spawn } from 'node:child_process';
import { chmodSync, chownSync, copyFileSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { appendFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { PostgresProcess, freePort } from '../src/compute/postgresprocess.ts';
import { formatLsn, parseLsn, type Lsn } from '../src/postgres/lsn.ts';
import { scanWal } from '../src/postgres/walfiles.ts';
import { runRedoVerifyOnFiles, type VerifyReport } from '../src/redo/verify.ts';
import { postgresOsUser, startPostgres, type PostgresHandle } from '../test/harness/postgres.ts';

process.env['STRATA_LOG'] ??= 'warn';

const quick = process.env['BENCH_QUICK'] === '1';
const SCALE = quick ? 2 : 10;
const CLIENTS = 2;
/** Transactions per client of the timed run. */
const TX_PER_CLIENT = quick ? 10000 : 50000;
/** Transactions per client of each WAL-volume run. */
const WALVOL_TX_PER_CLIENT = quick ? 500 : 2000;
const RUNS = quick ? 2 : 3;
const PG_BIN = process.env['STRATA_PG_BIN'] ?? '/usr/lib/postgresql/15/bin';
const MB = 1e6;
const TOOL_TIMEOUT_MS = 20 * 60_000;
const RECOVERY_TIMEOUT_MS = 20 * 60_000;
const RELOAD_WAIT_MS = 300;
const MAX_SEGMENTS = 4096;

function log(msg: string): void {
  process.stderr.write(`[bench:redo] ${msg}\n`);
}

function round(n: number, digits: number): number {
  const f = 10 ** digits;
  return Math.round(n * f) / f;
}

/** A directory the postgres OS user owns (when we are root). */
function postgresDir(p: string): string {
  mkdirSync(p, { recursive: true, mode: 0o755 });
  const user = postgresOsUser();
  if (user !== null) chownSync(p, user.uid, user.gid);
  return p;
}

function chownToPostgres(p: string): void {
  const user = postgresOsUser();
  if (user !== null) chownSync(p, user.uid, user.gid);
}

function runCp(args: readonly string[]): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn('cp', [...args], { stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    child.stderr.on('data', (d: Buffer) => {
      if (err.length < 4096) err += d.toString();
    });
    child.once('error', reject);
    child.once('close', (code) => (code === 0 ? resolve() : reject(new Error(`cp ${args.join(' ')} exited ${code}: ${err}`))));
  });
}

async function setConsistencyChecking(pg: PostgresHandle, value: 'off' | 'all'): Promise<void> {
  await pg.query(`ALTER SYSTEM SET wal_consistency_checking = '${value === 'off' ? '' : value}'`);
  await pg.query('SELECT pg_reload_conf()');
  await new Promise((r) => setTimeout(r, RELOAD_WAIT_MS));
  // A new session sees the reloaded value (pgbench connects anew).
  const c = await pg.connect();
  try {
    const r = await c.query<{ wal_consistency_checking: string }>('SHOW wal_consistency_checking');
    const got = r.rows[0]?.wal_consistency_checking ?? '';
    const ok = value === 'off' ? got === '' || got === 'off' : got === 'all';
    if (!ok) throw new Error(`wal_consistency_checking is "${got}" after setting "${value}"`);
  } finally {
    await c.end().catch(() => undefined);
  }
}

async function pgbench(pg: PostgresHandle, txPerClient: number): Promise<void> {
  await pg.run('pgbench', ['-n', '-c', String(CLIENTS), '-j', String(CLIENTS), '-t', String(txPerClient)], { timeoutMs: TOOL_TIMEOUT_MS });
}

interface Generated {
  baseDir: string;
  walFiles: string[];
  redoLsn: Lsn;
  timedStartLsn: Lsn;
  timedEndLsn: Lsn;
  dbBytes: number;
  walPerTxOffBytes: number;
  walPerTxAllBytes: number;
}

async function generate(workdir: string, onServer: (pg: PostgresHandle | null) => void): Promise<Generated> {
  const pg = await startPostgres({
    conf: {
      max_wal_size: '16GB', min_wal_size: '1GB', checkpoint_timeout: '1h', wal_keep_size: '16GB', autovacuum: 'off',
      full_page_writes: 'on', wal_compression: 'off',
    },
  });
  onServer(pg);
  try {
    log(`pgbench -i -s ${SCALE} ...`);
    await pg.run('pgbench', ['-i', '-s', String(SCALE), '-q'], { timeoutMs: TOOL_TIMEOUT_MS });
    const dbBytes = Number((await pg.query<{ b: string }>('SELECT pg_database_size(current_database())::text AS b')).rows[0]?.b ?? '0');

    // WAL volume per transaction, off vs all.
    const perTx: Record<'off' | 'all', number> = { off: 0, all: 0 };
    for (const mode of ['off', 'all'] as const) {
      await setConsistencyChecking(pg, mode);
      await pg.checkpoint();
      const a = await pg.currentLsn();
      await pgbench(pg, WALVOL_TX_PER_CLIENT);
      const b = await pg.currentLsn();
      perTx[mode] = Number(b - a) / (WALVOL_TX_PER_CLIENT * CLIENTS);
      log(`wal_consistency_checking=${mode}: ${(Number(b - a) / MB).toFixed(1)} MB for ${WALVOL_TX_PER_CLIENT * CLIENTS} transactions = ${perTx[mode].toFixed(0)} bytes/tx`);
    }
    await setConsistencyChecking(pg, 'off');

    // Base backup (its checkpoint is the redo point), then the timed WAL.
    const baseDir = postgresDir(path.join(workdir, 'base'));
    await pg.run('pg_basebackup', ['-D', baseDir, '-X', 'stream', '-c', 'fast', '--no-sync', '--no-manifest'], { asPostgresUser: true, timeoutMs: TOOL_TIMEOUT_MS });
    const label = readFileSync(path.join(baseDir, 'backup_label'), 'utf8');
    const m = /START WAL LOCATION: ([0-9A-F]+\/[0-9A-F]+)/i.exec(label);
    if (m?.[1] === undefined) throw new Error(`no START WAL LOCATION in backup_label: ${label}`);
    const redoLsn = parseLsn(m[1]);
    const timedStartLsn = await pg.currentLsn();
    log(`base backup redo point ${formatLsn(redoLsn)}; timed pgbench -c ${CLIENTS} -t ${TX_PER_CLIENT} from ${formatLsn(timedStartLsn)} ...`);
    await pgbench(pg, TX_PER_CLIENT);
    const timedEndLsn = await pg.currentLsn();
    await pg.stop({ mode: 'fast' });
    const walDir = path.join(workdir, 'wal');
    const walFiles = await pg.copyWal(walDir, { fromLsn: redoLsn });
    if (walFiles.length === 0 || walFiles.length > MAX_SEGMENTS) throw new Error(`unexpected number of WAL segments: ${walFiles.length}`);
    return { baseDir, walFiles, redoLsn, timedStartLsn, timedEndLsn, dbBytes, walPerTxOffBytes: perTx.off, walPerTxAllBytes: perTx.all };
  } finally {
    await pg.stop().catch(() => undefined);
    await pg.cleanup().catch(() => undefined);
    onServer(null);
  }
}

interface StrataRun {
  ms: number;
  report: VerifyReport;
  endCode: string;
}

async function strataReplay(g: Generated, maxPages: number): Promise<StrataRun> {
  const t0 = performance.now();
  const { report, end } = await runRedoVerifyOnFiles(g.walFiles, { maxPages, scan: { startLsn: g.redoLsn } });
  return { ms: performance.now() - t0, report, endCode: end.code };
}

async function decodeOnly(g: Generated): Promise<{ ms: number; records: number }> {
  let n = 0;
  const t0 = performance.now();
  await scanWal(g.walFiles, { startLsn: g.redoLsn }, () => {
    n++;
  });
  return { ms: performance.now() - t0, records: n };
}

interface PgRun {
  redoElapsedMs: number;
  redoCpuUserMs: number;
  startToReadyMs: number;
  redoStartLsn: string;
  redoDoneLsn: string;
}

async function pgRecovery(workdir: string, g: Generated, name: string, live: Set<PostgresProcess>): Promise<PgRun> {
  const dir = postgresDir(path.join(workdir, name));
  const dataDir = path.join(dir, 'pgdata');
  await runCp(['-a', g.baseDir, dataDir]);
  chmodSync(dataDir, 0o700);
  const pgWal = path.join(dataDir, 'pg_wal');
  for (const f of g.walFiles) {
    const dest = path.join(pgWal, path.basename(f));
    copyFileSync(f, dest);
    chownToPostgres(dest);
  }
  const port = await freePort();
  await appendFile(path.join(dataDir, 'postgresql.auto.conf'), [
    '', '# bench:redo recovery', `port = ${port}`, "listen_addresses = '127.0.0.1'", `unix_socket_directories = '${dir}'`,
    'archive_mode = off', "restore_command = 'false'", 'shared_buffers = 128MB', 'fsync = off', 'autovacuum = off',
    // No hot standby: the server accepts connections only after recovery ended and it promoted.
    'hot_standby = off', '',
  ].join('\n'));
  const signal = path.join(dataDir, 'recovery.signal');
  writeFileSync(signal, '');
  chownToPostgres(signal);
  const logFile = path.join(dir, 'postgres.log');
  const t0 = performance.now();
  const proc = await PostgresProcess.start({ dataDir, port, logFile, binDir: PG_BIN, readyTimeoutMs: RECOVERY_TIMEOUT_MS });
  live.add(proc);
  try {
    const startToReadyMs = performance.now() - t0;
    let text = readFileSync(logFile, 'utf8');
    for (let i = 0; i < 200 && !text.includes('redo done at'); i++) {
      await new Promise((r) => setTimeout(r, 10));
      text = readFileSync(logFile, 'utf8');
    }
    const done = /redo done at ([0-9A-F]+\/[0-9A-F]+) system usage: CPU: user: ([\d.]+) s, system: ([\d.]+) s, elapsed: ([\d.]+) s/.exec(text);
    const starts = /redo starts at ([0-9A-F]+\/[0-9A-F]+)/.exec(text);
    if (done === null || starts === null) throw new Error(`${name}: no "redo starts at"/"redo done at … elapsed" line in ${logFile}:\n${text.slice(-3000)}`);
    return {
      redoElapsedMs: Number(done[4]) * 1000, redoCpuUserMs: Number(done[2]) * 1000, startToReadyMs,
      redoStartLsn: starts[1]!, redoDoneLsn: done[1]!,
    };
  } finally {
    await stopProcess(proc);
    live.delete(proc);
    await rm(dir, { recursive: true, force: true });
  }
}

/**
 * Stops a recovered server. PostgresProcess's child is unref'd and its stop timer too, so a ref'd
 * interval keeps the event loop alive until the exit is seen (else Node would exit with code 13).
 */
async function stopProcess(proc: PostgresProcess): Promise<void> {
  const keepAlive = setInterval(() => undefined, 1000);
  try {
    await proc.stop('immediate').catch(() => undefined);
  } finally {
    clearInterval(keepAlive);
  }
}

function dirBytes(dir: string): number {
  let total = 0;
  for (const n of readdirSync(dir)) total += statSync(path.join(dir, n)).size;
  return total;
}

async function run(workdir: string, live: Set<PostgresProcess>, setServer: (pg: PostgresHandle | null) => void): Promise<void> {
  const g = await generate(workdir, setServer);
  const maxPages = Math.ceil(g.dbBytes / 8192) * 2 + 16384;
  log(`${g.walFiles.length} segments (${(dirBytes(path.dirname(g.walFiles[0]!)) / MB).toFixed(0)} MB of files); database ${(g.dbBytes / MB).toFixed(0)} MB; verifier cache ${maxPages} pages`);

  log('Strata warm-up (untimed) ...');
  await strataReplay(g, maxPages);
  const strataRuns: StrataRun[] = [];
  const decodeRuns: number[] = [];
  const pgRuns: PgRun[] = [];
  for (let i = 0; i < RUNS; i++) {
    const s = await strataReplay(g, maxPages);
    strataRuns.push(s);
    const d = await decodeOnly(g);
    decodeRuns.push(d.ms);
    if (d.records !== s.report.records) throw new Error(`decode-only saw ${d.records} records, redo ${s.report.records}`);
    const p = await pgRecovery(workdir, g, `pgrec-${i}`, live);
    pgRuns.push(p);
    log(`run ${i + 1}: Strata ${s.ms.toFixed(0)} ms (decode only ${d.ms.toFixed(0)} ms); PostgreSQL redo ${p.redoElapsedMs.toFixed(0)} ms (start to ready ${p.startToReadyMs.toFixed(0)} ms)`);
  }
  const s = strataRuns.reduce((a, b) => (b.ms < a.ms ? b : a));
  const p = pgRuns.reduce((a, b) => (b.redoElapsedMs < a.redoElapsedMs ? b : a));
  const decodeMs = Math.min(...decodeRuns);
  const r = s.report;
  const t = r.totals;
  const records = r.records;
  const walBytes = Number((r.lastEndLsn ?? g.redoLsn) - g.redoLsn);
  const failures = t.failed + t.mismatched;
  // PostgreSQL's "redo done at" is the start LSN of the last record it replayed.
  let lastLsn: Lsn | null = null;
  await scanWal(g.walFiles, { startLsn: g.redoLsn }, (rec) => {
    lastLsn = rec.lsn;
  });
  const sameRange = p.redoStartLsn === formatLsn(g.redoLsn) && lastLsn !== null && p.redoDoneLsn === formatLsn(lastLsn);
  if (!sameRange) log(`WARNING: PostgreSQL replayed ${p.redoStartLsn}..${p.redoDoneLsn}, Strata ${formatLsn(g.redoLsn)}..${lastLsn === null ? '?' : formatLsn(lastLsn)}`);

  const strataRecPerSec = records / (s.ms / 1000);
  const pgRecPerSec = records / (p.redoElapsedMs / 1000);
  const result = {
    quick,
    scale: SCALE,
    timedTransactions: TX_PER_CLIENT * CLIENTS,
    walMB: round(walBytes / MB, 1),
    records,
    blocks: t.blocks,
    blocksRestoredFpi: t.restored,
    blocksRedone: t.applied,
    noBase: t.skippedNoBase,
    unsupported: t.unsupported,
    failures,
    sameRangeAsPostgres: sameRange,
    strataMs: round(s.ms, 1),
    strataRecordsPerSec: Math.round(strataRecPerSec),
    strataMBPerSec: round(walBytes / MB / (s.ms / 1000), 1),
    strataDecodeOnlyMs: round(decodeMs, 1),
    strataRedoShareMs: round(s.ms - decodeMs, 1),
    strataRunsMs: strataRuns.map((x) => round(x.ms, 1)),
    pgRedoElapsedMs: round(p.redoElapsedMs, 1),
    pgRedoCpuUserMs: round(p.redoCpuUserMs, 1),
    pgRecordsPerSec: Math.round(pgRecPerSec),
    pgMBPerSec: round(walBytes / MB / (p.redoElapsedMs / 1000), 1),
    pgStartToReadyMs: round(p.startToReadyMs, 1),
    pgRedoRunsMs: pgRuns.map((x) => round(x.redoElapsedMs, 1)),
    ratioVsPgRecovery: round(strataRecPerSec / pgRecPerSec, 3),
    targetRatioVsPgRecovery: 1.0,
    walPerTxConsistencyOffBytes: Math.round(g.walPerTxOffBytes),
    walPerTxConsistencyAllBytes: Math.round(g.walPerTxAllBytes),
    walPerTxRatioAllVsOff: round(g.walPerTxAllBytes / g.walPerTxOffBytes, 2),
  };
  console.log(`WAL ${formatLsn(g.redoLsn)}.. (${result.walMB} MB, ${records} records, ${t.blocks} block refs: ${t.restored} FPI restored, ${t.applied} redone, ${t.skippedNoBase} no base, ${t.unsupported} unsupported, ${failures} failures; end ${s.endCode})`);
  console.log(`Strata redo: ${result.strataMs} ms = ${result.strataRecordsPerSec} records/s, ${result.strataMBPerSec} MB/s (decode alone ${result.strataDecodeOnlyMs} ms)`);
  console.log(`PostgreSQL recovery: redo ${result.pgRedoElapsedMs} ms = ${result.pgRecordsPerSec} records/s, ${result.pgMBPerSec} MB/s (start to ready ${result.pgStartToReadyMs} ms)`);
  console.log(`ratio ${result.ratioVsPgRecovery} (target >= 1.0: ${result.ratioVsPgRecovery >= 1 ? 'met' : 'NOT met'})`);
  console.log(`WAL per transaction: ${result.walPerTxConsistencyOffBytes} bytes (wal_consistency_checking=off), ${result.walPerTxConsistencyAllBytes} bytes (=all), ×${result.walPerTxRatioAllVsOff}`);
  console.log(JSON.stringify(result));
  if (failures !== 0) process.exitCode = 1;
}

async function main(): Promise<void> {
  const wallStart = performance.now();
  const workdir = mkdtempSync(path.join(tmpdir(), 'strata-bench-redo-'));
  chmodSync(workdir, 0o755);
  process.env['TMPDIR'] = workdir;
  const live = new Set<PostgresProcess>();
  let server: PostgresHandle | null = null;
  const onSignal = (sig: NodeJS.Signals): void => {
    log(`${sig}: exiting; servers are killed by the exit hooks, then ${workdir} is removed`);
    process.on('exit', () => rmSync(workdir, { recursive: true, force: true, maxRetries: 3 }));
    process.exit(130);
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  try {
    await run(workdir, live, (pg) => {
      server = pg;
    });
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    for (const p of live) await stopProcess(p);
    const srv = server as PostgresHandle | null;
    if (srv !== null) {
      await srv.stop().catch(() => undefined);
      await srv.cleanup().catch(() => undefined);
    }
    if (process.env['STRATA_KEEP_TMP'] === '1') log(`STRATA_KEEP_TMP=1: keeping ${workdir}`);
    else await rm(workdir, { recursive: true, force: true, maxRetries: 3 });
    log(`total wall time ${((performance.now() - wallStart) / 1000).toFixed(1)} s`);
  }
}

await main();
