/**
 * bench:basebackup — issue 4's benchmark: a basebackup of a Strata timeline next to pg_basebackup,
 * and a compute on a new branch at a past LSN next to classic point-in-time recovery, on a
 * pgbench database (scale 10 ≈ 160 MB of tables and indexes; BENCH_QUICK=1: scale 2).
 *
 * Strata side (one process: an in-process pageserver, computes as child postgres processes):
 *  1. A pageserver with a bootstrapped timeline and a compute on it (wal_consistency_checking=all
 *     and wal_compression=zstd, as every Strata compute runs: that WAL volume is part of what is
 *     measured). `pgbench -i -s N`, then the "past LSN" (the compute's insert LSN), then
 *     `pgbench -T t -c 2`, then wait until the timeline has ingested up to the compute's insert
 *     LSN. WAL ingest MB/s = (end LSN − start LSN) / wall time from the start of `pgbench -i` until
 *     caught up. That is bounded by how fast the compute writes, so the lag (compute insert LSN −
 *     timeline last_record_lsn, sampled) and the catch-up after pgbench ends are reported too: when
 *     the timeline is still ≥ 8 MB behind at that point, the catch-up rate (compute idle, the
 *     pageserver the bottleneck) is the ingest capacity.
 *  2. (a) `basebackupToTarFile` of the timeline at its tip (in-process, no network), and the same
 *     through the page service with `psql -c "basebackup …" > file` (CopyOut over TCP).
 *  3. (b) branchTimeline at the past LSN + Endpoint.start on the branch, which returns once the
 *     new postgres has answered `SELECT 1`: the wall time of both is "time to query". Then
 *     (untimed) pgbench_accounts must hold N × 100,000 rows and pgbench_history none (the branch
 *     really is at the past LSN, before any `pgbench -T` transaction).
 *
 * Reference side: a vanilla PostgreSQL 15 (test/harness/postgres.ts) with the SAME data made the
 * same way (`pgbench -i -s N` on it too; the database sizes are reported side by side), with
 * shared_buffers 128MB like the compute, archive_mode=on into a local archive directory.
 *  - Base backup 0: `pg_basebackup -X stream` of the empty cluster (before `pgbench -i`).
 *  - `pgbench -i -s N`; base backup 1: `pg_basebackup -X stream`; the target LSN = the insert LSN
 *    after base backup 1 (the data is then exactly what `pgbench -i` left, as at Strata's past
 *    LSN); `pgbench -T t -c 2`; pg_switch_wal and wait until that segment is archived.
 *  - (a) `pg_basebackup -D dir -Ft -X fetch -c fast --no-sync --no-manifest`, preceded by an
 *    untimed CHECKPOINT so its own checkpoint is cheap. -X fetch puts the WAL needed to start into
 *    the tar (one 16 MiB segment), as Strata's tar carries its synthesised WAL segment; no
 *    manifest and no fsync because Strata's tar has neither. Every choice favours the reference.
 *    MB/s = tar bytes / wall time; ratioVsPgBasebackup = Strata MB/s ÷ pg_basebackup MB/s.
 *  - (b) PITR: `cp -a` base backup 1 to a fresh directory (timed), recovery.signal,
 *    restore_command = cp from the archive, recovery_target_lsn = target (exclusive),
 *    recovery_target_action = promote; start postgres and wait until it answers `SELECT 1` (the
 *    same poller as Endpoint.start) and pg_is_in_recovery() is false. Time = copy + recovery.
 *    Base backup 1 was taken just before the target, so this replays almost no WAL: the most
 *    favourable PITR there is (the headline speedupVsPitr uses it). The usual case — a base
 *    backup from before the load, all of its WAL replayed — is measured once from base backup 0
 *    (pitrFromEmptyTimeToQueryMs). Both restored servers are checked like the branch.
 *
 * Runs: each timed measurement is repeated (quick 2, full 3), Strata and the reference
 * interleaved; the figures are the best run of each (all runs are printed), and the first Strata
 * run is reported too. Everything runs while the main compute and the vanilla server idle.
 * All temporary directories (pageserver, computes, the harness's cluster, base backups, archive)
 * live under one work directory — TMPDIR is pointed at it — removed at the end, on error and on
 * SIGINT/SIGTERM. MB = 10^6 bytes. Progress goes to stderr; the summary and, as the last line, one JSON object
 * to stdout. STRATA_LOG defaults to `warn` here, so pageserver info logs do not drown the output.
 */
import { spawn } from 'node:child_process';
import { chmodSync, chownSync, closeSync, existsSync, mkdirSync, mkdtempSync, openSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { appendFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { Endpoint } from '../src/compute/endpoint.ts';
import { PostgresProcess, freePort } from '../src/compute/postgresprocess.ts';
import { basebackupToTarFile } from '../src/pageserver/basebackup.ts';
import { bootstrapTimeline } from '../src/pageserver/import/bootstrap.ts';
import { Pageserver } from '../src/pageserver/pageserver.ts';
import type { Tenant } from '../src/pageserver/tenant.ts';
import type { Timeline } from '../src/pageserver/timeline/timeline.ts';
import { formatLsn, parseLsn, type Lsn } from '../src/postgres/lsn.ts';
import { Logger, type LogFields, type LogLevel } from '../src/util/log.ts';
import { postgresOsUser, startPostgres, type PostgresHandle } from '../test/harness/postgres.ts';

process.env['STRATA_LOG'] ??= 'warn';

const quick = process.env['BENCH_QUICK'] === '1';
const SCALE = quick ? 2 : 10;
const BENCH_SEC = quick ? 3 : 10;
const RUNS = quick ? 2 : 3;
const ACCOUNTS_PER_SCALE = 100_000;
const PG_BIN = process.env['STRATA_PG_BIN'] ?? '/usr/lib/postgresql/15/bin';
const MB = 1e6;
const LOAD_TIMEOUT_MS = 30 * 60_000;
const TOOL_TIMEOUT_MS = 10 * 60_000;
const CATCH_UP_TIMEOUT_MS = 10 * 60_000;
const PROMOTE_TIMEOUT_MS = 10 * 60_000;
const LAG_SAMPLE_MS = 200;
const PROMOTE_POLL_MS = 5;
/** Below this much WAL left to ingest when pgbench ends, no catch-up rate is reported (too short to time). */
const CATCH_UP_MIN_BYTES = 8 * 1000 * 1000;
const MAX_TOOL_OUTPUT_BYTES = 16 << 20;
const COMPUTE_SETTINGS = { fsync: false, autovacuum: false } as const;

function log(msg: string): void {
  process.stderr.write(`[bench:basebackup] ${msg}\n`);
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function round(n: number, digits: number): number {
  const f = 10 ** digits;
  return Math.round(n * f) / f;
}

function mbps(bytes: number, ms: number): number {
  return bytes / MB / (ms / 1000);
}

// ---------------------------------------------------------------------------------------------
// Processes and clients.

interface ToolResult {
  stdout: string;
  stderr: string;
  ms: number;
}

/**
 * Runs a PostgreSQL client tool (or `cp`) against 127.0.0.1:port as user postgres; bounded output
 * and time. With `stdoutFile` the tool's stdout goes straight into that file (psql CopyOut).
 */
function runTool(file: string, args: readonly string[], opts: { port?: number; stdoutFile?: string; timeoutMs?: number } = {}): Promise<ToolResult> {
  return new Promise((resolve, reject) => {
    const env: NodeJS.ProcessEnv = { ...process.env, LC_ALL: 'C', PGUSER: 'postgres', PGDATABASE: 'postgres', PGHOST: '127.0.0.1' };
    if (opts.port !== undefined) env['PGPORT'] = String(opts.port);
    const outFd = opts.stdoutFile === undefined ? null : openSync(opts.stdoutFile, 'w', 0o600);
    const started = performance.now();
    let child;
    try {
      child = spawn(file, [...args], { env, stdio: ['ignore', outFd ?? 'pipe', 'pipe'] });
    } finally {
      if (outFd !== null) closeSync(outFd);
    }
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    let outBytes = 0;
    let failure: Error | null = null;
    const name = path.basename(file);
    const timer = setTimeout(() => {
      failure = new Error(`${name} did not finish within ${opts.timeoutMs ?? TOOL_TIMEOUT_MS} ms; killed`);
      child.kill('SIGKILL');
    }, opts.timeoutMs ?? TOOL_TIMEOUT_MS);
    const collect = (into: Buffer[]) => (chunk: Buffer): void => {
      outBytes += chunk.length;
      if (outBytes <= MAX_TOOL_OUTPUT_BYTES) into.push(chunk);
    };
    child.stdout?.on('data', collect(out));
    child.stderr?.on('data', collect(err));
    child.once('error', (e) => {
      clearTimeout(timer);
      reject(new Error(`could not run ${file}: ${e.message}`));
    });
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      const ms = performance.now() - started;
      const stdout = Buffer.concat(out).toString('utf8');
      const stderr = Buffer.concat(err).toString('utf8');
      if (failure !== null) reject(failure);
      else if (code !== 0) reject(new Error(`${name} ${args.join(' ')} exited ${code ?? signal}: ${stderr.trim().split('\n').slice(-10).join('\n')}`));
      else resolve({ stdout, stderr, ms });
    });
  });
}

const pgTool = (name: string): string => path.join(PG_BIN, name);

async function withClient<T>(port: number, fn: (c: pg.Client) => Promise<T>): Promise<T> {
  const c = new pg.Client({ host: '127.0.0.1', port, user: 'postgres', database: 'postgres' });
  c.on('error', () => undefined);
  await c.connect();
  try {
    return await fn(c);
  } finally {
    await c.end().catch(() => undefined);
  }
}

async function queryValue(port: number, sql: string): Promise<string> {
  return withClient(port, async (c) => {
    const r = await c.query<{ v: string }>(`SELECT (${sql})::text AS v`);
    const v = r.rows[0]?.v;
    if (v === undefined) throw new Error(`no value from ${sql} on port ${port}`);
    return v;
  });
}

const insertLsn = async (port: number): Promise<Lsn> => parseLsn(await queryValue(port, 'SELECT pg_current_wal_insert_lsn()'));

/** pgbench_accounts must hold scale × 100,000 rows and pgbench_history none (state right after `pgbench -i`). */
async function checkPastState(port: number, what: string): Promise<void> {
  const accounts = Number(await queryValue(port, 'SELECT count(*) FROM pgbench_accounts'));
  const history = Number(await queryValue(port, 'SELECT count(*) FROM pgbench_history'));
  if (accounts !== SCALE * ACCOUNTS_PER_SCALE || history !== 0) {
    throw new Error(`${what}: pgbench_accounts has ${accounts} rows (expected ${SCALE * ACCOUNTS_PER_SCALE}), pgbench_history ${history} (expected 0)`);
  }
}

function parseTps(out: string): number {
  const m = /tps = ([\d.]+)/.exec(out);
  return m?.[1] === undefined ? Number.NaN : Number(m[1]);
}

function dirBytes(dir: string, maxEntries = 100_000): number {
  let total = 0;
  let seen = 0;
  const walk = (p: string): void => {
    if (++seen > maxEntries) throw new Error(`more than ${maxEntries} entries under ${dir}`);
    const st = statSync(p);
    if (st.isDirectory()) for (const n of readdirSync(p)) walk(path.join(p, n));
    else total += st.size;
  };
  walk(dir);
  return total;
}

/** A directory the postgres OS user owns (when we are root), so its processes can write there. */
function postgresDir(p: string): string {
  mkdirSync(p, { recursive: true, mode: 0o755 });
  const user = postgresOsUser();
  if (user !== null) chownSync(p, user.uid, user.gid);
  return p;
}

/** Keeps the endpoint's own log events (Endpoint.start logs the basebackup's elapsed_ms); prints warnings. */
class CaptureLogger extends Logger {
  readonly events: { message: string; fields: LogFields }[];

  constructor(events: { message: string; fields: LogFields }[] = [], fields: LogFields = {}) {
    super(fields);
    this.events = events;
  }

  override child(fields: LogFields): Logger {
    return new CaptureLogger(this.events, { ...this.fields, ...fields });
  }

  override log(level: LogLevel, message: string, fields: LogFields): void {
    if (this.events.length < 1000) this.events.push({ message, fields });
    if (level === 'warn' || level === 'error') super.log(level, message, fields);
  }
}

// ---------------------------------------------------------------------------------------------
// The benchmark.

interface Resources {
  workdir: string;
  ps: Pageserver | null;
  endpoints: Set<Endpoint>;
  restored: Set<PostgresProcess>;
  vanilla: PostgresHandle | null;
}

async function main(): Promise<void> {
  const wallStart = performance.now();
  const workdir = mkdtempSync(path.join(tmpdir(), 'strata-bench-basebackup-'));
  // As root, PostgreSQL runs as the postgres OS user and must traverse the work directory.
  chmodSync(workdir, 0o755);
  // Every temporary directory made from here on (the harness's clusters, bootstrap's initdb
  // scratch) goes under the work directory, so removing it removes them all — also after a signal
  // that arrives before the harness tracks a cluster (during its initdb).
  process.env['TMPDIR'] = workdir;
  const res: Resources = { workdir, ps: null, endpoints: new Set(), restored: new Set(), vanilla: null };
  const onSignal = (sig: NodeJS.Signals): void => {
    log(`${sig}: exiting; servers are killed by the exit hooks, then ${workdir} is removed`);
    // Registered now, so it runs after the exit hooks of the harness and of PostgresProcess.
    process.on('exit', () => rmSync(workdir, { recursive: true, force: true, maxRetries: 3 }));
    process.exit(130);
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  try {
    await run(res);
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    await teardown(res);
    log(`total wall time ${((performance.now() - wallStart) / 1000).toFixed(1)} s`);
  }
}

async function teardown(res: Resources): Promise<void> {
  const errors: unknown[] = [];
  for (const ep of res.endpoints) await ep.kill().catch((e: unknown) => errors.push(e));
  for (const p of res.restored) await p.stop('immediate').catch((e: unknown) => errors.push(e));
  await res.ps?.shutdown({ flush: false }).catch((e: unknown) => errors.push(e));
  if (res.vanilla !== null) {
    await res.vanilla.stop().catch((e: unknown) => errors.push(e));
    await res.vanilla.cleanup().catch((e: unknown) => errors.push(e));
  }
  if (process.env['STRATA_KEEP_TMP'] === '1') log(`STRATA_KEEP_TMP=1: keeping ${res.workdir}`);
  else await rm(res.workdir, { recursive: true, force: true, maxRetries: 3 }).catch((e: unknown) => errors.push(e));
  for (const e of errors) log(`teardown: ${e instanceof Error ? e.message : String(e)}`);
}

interface StrataLoad {
  tenant: Tenant;
  main: Timeline;
  mainEp: Endpoint;
  pastLsn: Lsn;
  walBytes: number;
  ingestMs: number;
  catchUpMs: number;
  /** WAL the timeline still had to ingest when pgbench ended (ingested while the compute idled). */
  catchUpBytes: number;
  maxLagBytes: number;
  receiverRecords: number;
  receiverWalBytes: number;
  initMs: number;
  tps: number;
  dbSizeBytes: number;
}

/** Step 1: a compute on a bootstrapped timeline, pgbench, ingest figures. */
async function loadStrata(res: Resources): Promise<StrataLoad> {
  log('starting the pageserver, bootstrapping a timeline (initdb), starting a compute ...');
  const ps = await Pageserver.start({
    workdir: path.join(res.workdir, 'pageserver'), pageCacheBytes: 64 << 20, blockCacheBytes: 32 << 20, waitLsnTimeoutMs: 60_000,
    listenPg: { host: '127.0.0.1', port: 0 },
  });
  res.ps = ps;
  const tenant = await ps.tenants.createTenant({});
  const main = await bootstrapTimeline(tenant);
  const mainEp = await Endpoint.start({ pageserver: ps, tenantId: tenant.tenantId, timelineId: main.timelineId, dir: path.join(res.workdir, 'ep-main'), settings: COMPUTE_SETTINGS });
  res.endpoints.add(mainEp);
  const port = mainEp.port;

  const startLsn = await insertLsn(port);
  await main.waitLsn(startLsn, CATCH_UP_TIMEOUT_MS);
  const receiver = ps.walReceiver(tenant.tenantId, main.timelineId);
  const recordsBefore = receiver?.status.records ?? 0;
  const walBytesBefore = receiver?.status.walBytes ?? 0;

  // Lag sampler: compute insert LSN − timeline last_record_lsn, while pgbench runs.
  let sampling = true;
  let maxLagBytes = 0;
  const sampler = (async () => {
    const c = new pg.Client({ host: '127.0.0.1', port, user: 'postgres', database: 'postgres' });
    c.on('error', () => undefined);
    await c.connect();
    try {
      while (sampling) {
        const r = await c.query<{ v: string }>('SELECT pg_current_wal_insert_lsn()::text AS v');
        const lag = Number(parseLsn(r.rows[0]?.v ?? '0/0') - main.lastRecordLsn);
        if (lag > maxLagBytes) maxLagBytes = lag;
        await sleep(LAG_SAMPLE_MS);
      }
    } finally {
      await c.end().catch(() => undefined);
    }
  })();

  let initMs: number;
  let pastLsn: Lsn;
  let tps: number;
  let endLsn: Lsn;
  let pgbenchEnd: number;
  let lsnAtBenchEnd: Lsn;
  const t0 = performance.now();
  try {
    log(`compute: pgbench -i -s ${SCALE} (WAL from ${formatLsn(startLsn)}) ...`);
    initMs = (await runTool(pgTool('pgbench'), ['-i', '-s', String(SCALE), '-q'], { port, timeoutMs: LOAD_TIMEOUT_MS })).ms;
    pastLsn = await insertLsn(port);
    log(`compute: pgbench -i took ${(initMs / 1000).toFixed(1)} s; past LSN ${formatLsn(pastLsn)}; pgbench -T ${BENCH_SEC} -c 2 ...`);
    const bench = await runTool(pgTool('pgbench'), ['-T', String(BENCH_SEC), '-c', '2', '-j', '2', '-n'], { port, timeoutMs: LOAD_TIMEOUT_MS });
    tps = parseTps(bench.stdout);
    endLsn = await insertLsn(port);
    pgbenchEnd = performance.now();
    lsnAtBenchEnd = main.lastRecordLsn;
  } finally {
    sampling = false;
    await sampler.catch((e: unknown) => log(`lag sampler: ${e instanceof Error ? e.message : String(e)}`));
  }
  await main.waitLsn(endLsn, CATCH_UP_TIMEOUT_MS);
  const t1 = performance.now();
  const status = ps.walReceiver(tenant.tenantId, main.timelineId)?.status;
  const history = Number(await queryValue(port, 'SELECT count(*) FROM pgbench_history'));
  if (!(history > 0)) throw new Error(`pgbench -T left ${history} rows in pgbench_history on the compute; expected some`);
  const dbSizeBytes = Number(await queryValue(port, "SELECT pg_database_size('postgres')"));
  const load: StrataLoad = {
    tenant, main, mainEp, pastLsn,
    walBytes: Number(endLsn - startLsn), ingestMs: t1 - t0, catchUpMs: t1 - pgbenchEnd, maxLagBytes,
    catchUpBytes: lsnAtBenchEnd < endLsn ? Number(endLsn - lsnAtBenchEnd) : 0,
    receiverRecords: (status?.records ?? 0) - recordsBefore, receiverWalBytes: (status?.walBytes ?? 0) - walBytesBefore,
    initMs, tps, dbSizeBytes,
  };
  log(`compute: ${(load.walBytes / MB).toFixed(1)} MB of WAL (${formatLsn(startLsn)} .. ${formatLsn(endLsn)}) ingested in ${(load.ingestMs / 1000).toFixed(1)} s ` +
    `= ${mbps(load.walBytes, load.ingestMs).toFixed(1)} MB/s; caught up ${load.catchUpMs.toFixed(0)} ms after pgbench ended ` +
    `(${(load.catchUpBytes / MB).toFixed(1)} MB left then = ${mbps(load.catchUpBytes, load.catchUpMs).toFixed(1)} MB/s with the compute idle); max lag ${(maxLagBytes / MB).toFixed(1)} MB; ` +
    `receiver: ${load.receiverRecords} records, ${(load.receiverWalBytes / MB).toFixed(1)} MB; pgbench -T: ${tps} tps; database ${(dbSizeBytes / MB).toFixed(1)} MB`);
  return load;
}

interface VanillaLoad {
  pg: PostgresHandle;
  archiveDir: string;
  base0: string;
  base1: string;
  targetLsn: Lsn;
  initMs: number;
  tps: number;
  dbSizeBytes: number;
}

/** The reference server with the same data, two base backups and a WAL archive. */
async function loadVanilla(res: Resources): Promise<VanillaLoad> {
  const refDir = postgresDir(path.join(res.workdir, 'ref'));
  const archiveDir = postgresDir(path.join(refDir, 'archive'));
  log('vanilla PostgreSQL 15: starting (archive_mode=on) ...');
  const vpg = await startPostgres({
    conf: {
      shared_buffers: '128MB', autovacuum: false, archive_mode: true,
      archive_command: `test ! -f ${archiveDir}/%f && cp %p ${archiveDir}/%f`,
    },
  });
  res.vanilla = vpg;
  const base0 = path.join(refDir, 'base0');
  const base1 = path.join(refDir, 'base1');
  await vpg.run('pg_basebackup', ['-D', base0, '-X', 'stream', '-c', 'fast', '--no-sync'], { asPostgresUser: true, timeoutMs: TOOL_TIMEOUT_MS });
  log(`vanilla: base backup 0 (empty cluster) taken; pgbench -i -s ${SCALE} ...`);
  const t0 = performance.now();
  await vpg.run('pgbench', ['-i', '-s', String(SCALE), '-q'], { timeoutMs: LOAD_TIMEOUT_MS });
  const initMs = performance.now() - t0;
  await vpg.run('pg_basebackup', ['-D', base1, '-X', 'stream', '-c', 'fast', '--no-sync'], { asPostgresUser: true, timeoutMs: TOOL_TIMEOUT_MS });
  const targetLsn = await vpg.currentLsn('insert');
  log(`vanilla: pgbench -i took ${(initMs / 1000).toFixed(1)} s; base backup 1 taken; target LSN ${formatLsn(targetLsn)}; pgbench -T ${BENCH_SEC} -c 2 ...`);
  const bench = await vpg.run('pgbench', ['-T', String(BENCH_SEC), '-c', '2', '-j', '2', '-n'], { timeoutMs: LOAD_TIMEOUT_MS });
  const tps = parseTps(bench.stdout);
  const seg = (await vpg.query<{ seg: string }>('SELECT pg_walfile_name(pg_switch_wal()) AS seg')).rows[0]?.seg;
  if (seg === undefined) throw new Error('pg_switch_wal returned nothing');
  const deadline = Date.now() + CATCH_UP_TIMEOUT_MS;
  for (;;) {
    const st = (await vpg.query<{ last: string | null; failed: string }>('SELECT last_archived_wal AS last, failed_count::text AS failed FROM pg_stat_archiver')).rows[0];
    if (st?.last !== null && st?.last !== undefined && st.last >= seg) break;
    if (Date.now() > deadline) throw new Error(`WAL segment ${seg} not archived within ${CATCH_UP_TIMEOUT_MS} ms (last archived ${st?.last}, failures ${st?.failed})`);
    await sleep(50);
  }
  const dbSizeBytes = Number((await vpg.query<{ v: string }>("SELECT pg_database_size('postgres')::text AS v")).rows[0]?.v);
  log(`vanilla: pgbench -T: ${tps} tps; WAL archived through ${seg}; database ${(dbSizeBytes / MB).toFixed(1)} MB`);
  return { pg: vpg, archiveDir, base0, base1, targetLsn, initMs, tps, dbSizeBytes };
}

interface PitrRun {
  copyMs: number;
  recoveryMs: number;
  totalMs: number;
}

/** Classic PITR: copy a base backup, recover from the archive to the target LSN, promote. Timed until promoted. */
async function pitr(res: Resources, v: VanillaLoad, base: string, name: string): Promise<PitrRun> {
  const dir = postgresDir(path.join(res.workdir, 'ref', name));
  const dataDir = path.join(dir, 'pgdata');
  const port = await freePort();
  const t0 = performance.now();
  await runTool('cp', ['-a', base, dataDir]);
  const t1 = performance.now();
  await appendFile(path.join(dataDir, 'postgresql.auto.conf'), [
    '', '# bench:basebackup PITR',
    `port = ${port}`, "listen_addresses = '127.0.0.1'", `unix_socket_directories = '${dir}'`,
    'archive_mode = off', `restore_command = 'cp ${v.archiveDir}/%f %p'`,
    `recovery_target_lsn = '${formatLsn(v.targetLsn)}'`, 'recovery_target_inclusive = off', "recovery_target_action = 'promote'",
    '',
  ].join('\n'));
  const signal = path.join(dataDir, 'recovery.signal');
  writeFileSync(signal, '');
  const user = postgresOsUser();
  if (user !== null) chownSync(signal, user.uid, user.gid);
  const proc = await PostgresProcess.start({ dataDir, port, logFile: path.join(dir, 'postgres.log'), binDir: PG_BIN, readyTimeoutMs: PROMOTE_TIMEOUT_MS });
  res.restored.add(proc);
  try {
    await withClient(port, async (c) => {
      const deadline = Date.now() + PROMOTE_TIMEOUT_MS;
      for (;;) {
        const r = await c.query<{ rec: boolean }>('SELECT pg_is_in_recovery() AS rec');
        if (r.rows[0]?.rec === false) return;
        if (Date.now() > deadline) throw new Error(`${name}: still in recovery after ${PROMOTE_TIMEOUT_MS} ms; see ${proc.logFile}`);
        await sleep(PROMOTE_POLL_MS);
      }
    });
    const t2 = performance.now();
    await checkPastState(port, `PITR ${name}`);
    return { copyMs: t1 - t0, recoveryMs: t2 - t1, totalMs: t2 - t0 };
  } finally {
    await proc.stop('immediate');
    res.restored.delete(proc);
    await rm(dir, { recursive: true, force: true });
  }
}

interface BranchRun {
  totalMs: number;
  branchMs: number;
  basebackupMs: number;
}

/** A new branch at the past LSN and a compute on it; timed until it answers SELECT 1. */
async function branchToQuery(res: Resources, s: StrataLoad, name: string): Promise<BranchRun> {
  const ps = res.ps;
  if (ps === null) throw new Error('no pageserver');
  const dir = path.join(res.workdir, name);
  const capture = new CaptureLogger();
  const t0 = performance.now();
  const br = await s.tenant.branchTimeline({ ancestorTimelineId: s.main.timelineId, ancestorStartLsn: s.pastLsn });
  const t1 = performance.now();
  const ep = await Endpoint.start({ pageserver: ps, tenantId: s.tenant.tenantId, timelineId: br.timelineId, dir, settings: COMPUTE_SETTINGS, log: capture });
  const t2 = performance.now();
  res.endpoints.add(ep);
  try {
    await checkPastState(ep.port, `branch ${name} at ${formatLsn(s.pastLsn)}`);
  } finally {
    await ep.stop();
    res.endpoints.delete(ep);
    await rm(dir, { recursive: true, force: true });
  }
  const bb = capture.events.find((e) => e.message === 'basebackup done');
  const bbMs = typeof bb?.fields['elapsed_ms'] === 'number' ? bb.fields['elapsed_ms'] : Number.NaN;
  return { totalMs: t2 - t0, branchMs: t1 - t0, basebackupMs: bbMs };
}

async function run(res: Resources): Promise<void> {
  log(`${quick ? 'BENCH_QUICK: ' : ''}scale ${SCALE}, pgbench -T ${BENCH_SEC} -c 2, ${RUNS} runs per measurement; work dir ${res.workdir}`);
  const s = await loadStrata(res);
  const v = await loadVanilla(res);
  const psPort = res.ps?.pageServicePort ?? null;
  if (psPort === null) throw new Error('the page service is not listening');

  // (a) basebackup throughput.
  const tarDir = path.join(res.workdir, 'tars');
  mkdirSync(tarDir);
  const pgTarRoot = postgresDir(path.join(res.workdir, 'ref', 'tars'));
  const strataRuns: { ms: number; bytes: number; blocks: number }[] = [];
  const serviceRuns: { ms: number; bytes: number }[] = [];
  const pgRuns: { ms: number; bytes: number }[] = [];
  for (let i = 0; i < RUNS; i++) {
    const file = path.join(tarDir, `strata-${i}.tar`);
    const lsn = s.main.lastRecordLsn;
    const t0 = performance.now();
    const r = await basebackupToTarFile({ timeline: s.main, file });
    const ms = performance.now() - t0;
    const bytes = statSync(file).size;
    if (i === 0) {
      const list = await runTool('tar', ['-tf', file]);
      for (const must of ['global/pg_control', 'PG_VERSION', 'pg_xact/0000']) {
        if (!list.stdout.split('\n').includes(must)) throw new Error(`Strata's tar ${file} has no ${must}`);
      }
    }
    rmSync(file);
    strataRuns.push({ ms, bytes, blocks: r.blocks });
    log(`(a) Strata basebackupToTarFile at ${formatLsn(lsn)}: ${(bytes / MB).toFixed(1)} MB tar (${r.blocks} blocks) in ${ms.toFixed(0)} ms = ${mbps(bytes, ms).toFixed(1)} MB/s`);

    const sfile = path.join(tarDir, `service-${i}.tar`);
    const sr = await runTool(pgTool('psql'), ['-X', '-q', '-h', '127.0.0.1', '-p', String(psPort), '-U', 'postgres', '-d', 'postgres',
      '-c', `basebackup ${s.tenant.tenantId} ${s.main.timelineId}`], { stdoutFile: sfile });
    const sbytes = statSync(sfile).size;
    rmSync(sfile);
    serviceRuns.push({ ms: sr.ms, bytes: sbytes });
    log(`(a) Strata page service (psql -c basebackup > file): ${(sbytes / MB).toFixed(1)} MB in ${sr.ms.toFixed(0)} ms = ${mbps(sbytes, sr.ms).toFixed(1)} MB/s`);

    await v.pg.checkpoint();
    const pdir = path.join(pgTarRoot, `run-${i}`);
    const pms = await timedAsPostgres(v.pg, 'pg_basebackup', ['-D', pdir, '-Ft', '-X', 'fetch', '-c', 'fast', '--no-sync', '--no-manifest']);
    const pbytes = dirBytes(pdir);
    rmSync(pdir, { recursive: true, force: true });
    pgRuns.push({ ms: pms, bytes: pbytes });
    log(`(a) pg_basebackup -Ft -X fetch: ${(pbytes / MB).toFixed(1)} MB in ${pms.toFixed(0)} ms = ${mbps(pbytes, pms).toFixed(1)} MB/s`);
  }

  // (b) time to query at the past LSN: branch vs PITR, interleaved.
  const branchRuns: BranchRun[] = [];
  const pitrRuns: PitrRun[] = [];
  for (let i = 0; i < RUNS; i++) {
    const b = await branchToQuery(res, s, `branch-${i}`);
    branchRuns.push(b);
    log(`(b) Strata branch at ${formatLsn(s.pastLsn)} → compute answers queries: ${b.totalMs.toFixed(0)} ms ` +
      `(branchTimeline ${b.branchMs.toFixed(0)} ms, basebackup into the data dir ${b.basebackupMs} ms, rest = postgres start ${(b.totalMs - b.branchMs - b.basebackupMs).toFixed(0)} ms)`);
    const p = await pitr(res, v, v.base1, `pitr-${i}`);
    pitrRuns.push(p);
    log(`(b) PITR from base backup 1 to ${formatLsn(v.targetLsn)}: ${p.totalMs.toFixed(0)} ms (copy ${p.copyMs.toFixed(0)} ms, recovery until promoted ${p.recoveryMs.toFixed(0)} ms)`);
  }
  const p0 = await pitr(res, v, v.base0, 'pitr-from-empty');
  log(`(b) PITR from base backup 0 (before pgbench -i) to ${formatLsn(v.targetLsn)}: ${p0.totalMs.toFixed(0)} ms (copy ${p0.copyMs.toFixed(0)} ms, recovery ${p0.recoveryMs.toFixed(0)} ms)`);

  // Figures: best run of each.
  const best = <T>(xs: T[], key: (x: T) => number): T => xs.reduce((a, b) => (key(b) < key(a) ? b : a));
  const sb = best(strataRuns, (r) => r.ms);
  const svc = best(serviceRuns, (r) => r.ms);
  const pb = best(pgRuns, (r) => r.ms);
  const br = best(branchRuns, (r) => r.totalMs);
  const pt = best(pitrRuns, (r) => r.totalMs);
  const strataMbps = mbps(sb.bytes, sb.ms);
  const serviceMbps = mbps(svc.bytes, svc.ms);
  const pgMbps = mbps(pb.bytes, pb.ms);
  const result = {
    scale: SCALE,
    quick,
    runs: RUNS,
    dbSizeBytes: s.dbSizeBytes,
    vanillaDbSizeBytes: v.dbSizeBytes,
    basebackupBytes: sb.bytes,
    basebackupBlocks: sb.blocks,
    basebackupMs: round(sb.ms, 1),
    basebackupFirstMs: round(strataRuns[0]!.ms, 1),
    basebackupMbPerSec: round(strataMbps, 1),
    pageServiceBasebackupMs: round(svc.ms, 1),
    pageServiceBasebackupMbPerSec: round(serviceMbps, 1),
    pgBasebackupBytes: pb.bytes,
    pgBasebackupMs: round(pb.ms, 1),
    pgBasebackupMbPerSec: round(pgMbps, 1),
    ratioVsPgBasebackup: round(strataMbps / pgMbps, 3),
    pageServiceRatioVsPgBasebackup: round(serviceMbps / pgMbps, 3),
    timeRatioVsPgBasebackup: round(pb.ms / sb.ms, 3),
    branchTimeToQueryMs: round(br.totalMs, 1),
    branchTimeToQueryFirstMs: round(branchRuns[0]!.totalMs, 1),
    branchTimeToQueryRunsMs: branchRuns.map((r) => round(r.totalMs, 1)),
    branchBasebackupMs: br.basebackupMs,
    pitrTimeToQueryMs: round(pt.totalMs, 1),
    pitrCopyMs: round(pt.copyMs, 1),
    pitrRecoveryMs: round(pt.recoveryMs, 1),
    pitrTimeToQueryRunsMs: pitrRuns.map((r) => round(r.totalMs, 1)),
    pitrFromEmptyTimeToQueryMs: round(p0.totalMs, 1),
    speedupVsPitr: round(pt.totalMs / br.totalMs, 3),
    speedupVsPitrFromEmpty: round(p0.totalMs / br.totalMs, 3),
    walIngestMB: round(s.walBytes / MB, 1),
    walIngestMbPerSec: round(mbps(s.walBytes, s.ingestMs), 1),
    walIngestRecords: s.receiverRecords,
    walIngestRecordsPerSec: Math.round(s.receiverRecords / (s.ingestMs / 1000)),
    walIngestCatchUpMs: round(s.catchUpMs, 1),
    walIngestCatchUpMB: round(s.catchUpBytes / MB, 1),
    // Ingest capacity (the compute idle, the pageserver the bottleneck); only meaningful with enough WAL left over.
    walIngestCatchUpMbPerSec: s.catchUpBytes >= CATCH_UP_MIN_BYTES ? round(mbps(s.catchUpBytes, s.catchUpMs), 1) : null,
    walIngestMaxLagMB: round(s.maxLagBytes / MB, 1),
    computePgbenchInitMs: round(s.initMs, 0),
    vanillaPgbenchInitMs: round(v.initMs, 0),
    computeTps: s.tps,
    vanillaTps: v.tps,
    targetRatioVsPgBasebackup: 2,
    targetSpeedupVsPitr: 3,
    targetBranchTimeToQueryMs: 1000,
  };
  const ok = (pass: boolean): string => (pass ? 'met' : 'MISSED');
  console.log(`bench:basebackup${quick ? ' (BENCH_QUICK)' : ''}: pgbench scale ${SCALE}; database ${(s.dbSizeBytes / MB).toFixed(1)} MB on Strata, ${(v.dbSizeBytes / MB).toFixed(1)} MB on vanilla PostgreSQL 15; best of ${RUNS} runs`);
  console.log(`(a) basebackup: Strata ${result.basebackupMbPerSec} MB/s (${(sb.bytes / MB).toFixed(1)} MB in ${sb.ms.toFixed(0)} ms; page service via psql ${result.pageServiceBasebackupMbPerSec} MB/s), ` +
    `pg_basebackup ${result.pgBasebackupMbPerSec} MB/s (${(pb.bytes / MB).toFixed(1)} MB in ${pb.ms.toFixed(0)} ms); ratio ${result.ratioVsPgBasebackup} (target >= 2: ${ok(result.ratioVsPgBasebackup >= 2)})`);
  console.log(`(b) time to query at a past LSN: Strata branch ${result.branchTimeToQueryMs} ms (target <= 1000: ${ok(result.branchTimeToQueryMs <= 1000)}), ` +
    `PITR ${result.pitrTimeToQueryMs} ms (copy ${result.pitrCopyMs} + recovery ${result.pitrRecoveryMs}); speedup ${result.speedupVsPitr} (target >= 3: ${ok(result.speedupVsPitr >= 3)}); ` +
    `PITR from a base backup before the load ${result.pitrFromEmptyTimeToQueryMs} ms (speedup ${result.speedupVsPitrFromEmpty})`);
  console.log(`WAL ingest: ${result.walIngestMB} MB in ${(s.ingestMs / 1000).toFixed(1)} s = ${result.walIngestMbPerSec} MB/s, ${result.walIngestRecordsPerSec} records/s ` +
    `(bounded by the compute's write rate; caught up ${result.walIngestCatchUpMs} ms after pgbench, max lag ${result.walIngestMaxLagMB} MB; ` +
    `catch-up with the compute idle: ${result.walIngestCatchUpMbPerSec === null ? 'n/a, too little WAL left' : `${result.walIngestCatchUpMbPerSec} MB/s`})`);
  console.log(JSON.stringify(result));
}

/** Runs a binary from the PostgreSQL bin dir as the postgres OS user against the vanilla server; returns its wall time in ms. */
async function timedAsPostgres(vpg: PostgresHandle, binary: string, args: readonly string[]): Promise<number> {
  const t0 = performance.now();
  await vpg.run(binary, args, { asPostgresUser: true, timeoutMs: TOOL_TIMEOUT_MS });
  return performance.now() - t0;
}

if (!existsSync(pgTool('pgbench'))) throw new Error(`no pgbench in ${PG_BIN} (set STRATA_PG_BIN)`);
await main();
