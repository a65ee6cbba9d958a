/**
 * bench:safekeepers — what it costs to make every commit durable on Strata's safekeepers, next to
 * the same PostgreSQL 15 with a vanilla synchronous standby and with no synchronous replication.
 *
 * Four configurations, all on 127.0.0.1, all started and stopped by this benchmark:
 *   1sk         a Strata compute (Endpoint.start) with 1 safekeeper: `ANY 1 (sk_1)`;
 *   3sk         a Strata compute with 3 safekeepers: `ANY 2 (sk_1, sk_2, sk_3)`;
 *   vanillaSync a plain primary (initdb) plus a streaming standby made by `pg_basebackup -R`
 *               (application_name=standby1, its own physical slot), `ANY 1 (standby1)`;
 *   noSync      that same primary alone: synchronous_standby_names = '', the standby stopped.
 * Safekeepers and the broker run as `strata` CLI processes (test/support/cluster.ts), the
 * pageserver in this process. Every safekeeper, the standby and every primary run with fsync=on.
 *
 * Fairness: the only difference between the configurations is who the synchronous standby is.
 *  - The vanilla primary gets every postgresql.conf setting the Strata compute runs with, read from
 *    the 3-safekeeper compute's pg_settings (source = configuration file): wal_consistency_checking
 *    = all (Strata's current redo mode puts a page image of every touched block into every WAL
 *    record: by itself that costs a lot of TPS), wal_compression = zstd, full_page_writes,
 *    shared_buffers, max_wal_senders, …; only the port, the socket directory,
 *    synchronous_standby_names and Strata's own `strata.*` settings differ. After the start the
 *    whole pg_settings of both is compared and every difference is printed (and put in the JSON).
 *    The standby is a base backup of that primary, so it has the same settings.
 *  - Same bench settings on both sides: fsync=on, autovacuum=off (no background vacuum in a 30 s
 *    run), wal_sender_timeout=5min (so a paused receiver, below, is not disconnected).
 *  - The pageserver is not on the commit path (the compute's data directory is local; the
 *    pageserver only ingests committed WAL from the safekeepers). It is shut down once both Strata
 *    computes run, before any load, so its WAL ingest does not compete for this machine's CPUs
 *    during the vanilla runs or the Strata ones (a deployment runs it on other machines).
 *    BENCH_SK_PAGESERVER=1 keeps it running (and ingesting) instead.
 *
 * TPS and latency: `pgbench -i -s 10` once per database (BENCH_QUICK=1: -s 2), then per run
 * `VACUUM pgbench_branches, pgbench_tellers; TRUNCATE pgbench_history; CHECKPOINT`, every
 * standby/safekeeper caught up, then `pgbench -c 4 -j 2 -T 30 -n -r -l` (quick: -T 5), the default
 * TPC-B-like script. Full form: 2 rounds of the four configurations interleaved, the figures are
 * each configuration's best-TPS run (all runs are printed); quick: 1 round. Latency: average, p50,
 * p99 and max over every transaction from pgbench's per-transaction log (-l), and the average
 * latency of the END (commit) statement from -r. Then one more run per configuration with a single
 * client (`pgbench -c 1 -j 1 -T 10`, quick -T 2): with little CPU contention its commit latency is
 * the round trip to the synchronous standby or the safekeepers, which separates "slower per commit"
 * from "more CPU per commit" on a small machine. Per run, the machine's CPU use (/proc/stat) and
 * the CPU time of the primary, the standby or each safekeeper (/proc/<pid>/stat; exited backends
 * count through the postmaster's reaped-children time) are printed, so what bounds a result can
 * be read off; and the machine's busy time not spent in anything this benchmark started
 * (foreignCpuPct: other work on a shared machine; the JSON's foreignCpuPctMax says whether the
 * figures come from a quiet one).
 *
 * Bulk load through one safekeeper (1sk) and through the vanilla standby (vanillaSync):
 *  - streaming: `INSERT INTO bulk SELECT g, repeat('x', 200) FROM generate_series(1, N) g` (one
 *    transaction), WAL bytes = the compute's flush LSN after − insert LSN before, time = from the
 *    INSERT until the safekeeper's flush_lsn (HTTP status) / the standby's pg_stat_replication
 *    flush_lsn reaches that end LSN (polled every 10 ms, the standby's over one open connection). The standby/safekeeper lag is sampled while
 *    the INSERT runs. This is bounded by how fast the primary writes WAL if the receiver keeps up.
 *  - catch-up: the same INSERT while the receiver is paused (SIGSTOP of the safekeeper process / of
 *    the standby's walreceiver); when the INSERT waits for its commit (wait_event SyncRep) the
 *    receiver is resumed and the time until it has flushed the end LSN is the receiver's throughput
 *    with the WAL already written: walsender read + loopback TCP + receive + write + fsync.
 * N = 1,000,000 (about 500 MB of WAL; quick: 100,000). Both are run twice, interleaved (quick:
 * once), and the best of each is reported (all runs are in the JSON). The
 * catch-up writes every byte to disk and syncs it, so the disk's own sequential write + fdatasync
 * rate (256 MiB in 1 MiB writes, measured at the end) is printed as its ceiling: on a shared VM it
 * varies a lot from minute to minute.
 * MB = 10^6 bytes. The ratios are Strata ÷ reference (> 1 means Strata is faster).
 *
 * Endpoint.start is retried (up to 3 attempts) when it loses a race with a safekeeper over
 * creating that safekeeper's replication slot (SQLSTATE 42710; see startEndpoint).
 *
 * Everything lives under one work directory (TMPDIR points there), removed at the end, on error and
 * on SIGINT/SIGTERM (STRATA_KEEP_TMP=1 keeps it). Progress goes to stderr; a summary and, as the
 * last line, one JSON object to stdout. STRATA_LOG defaults to `warn`.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, chownSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { appendFile, open, rm } from 'node:fs/promises';
import os, { tmpdir } from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { Endpoint, type EndpointOptions } from '../src/compute/endpoint.ts';
import { PostgresProcess, freePort } from '../src/compute/postgresprocess.ts';
import { bootstrapTimeline } from '../src/pageserver/import/bootstrap.ts';
import { Pageserver } from '../src/pageserver/pageserver.ts';
import { formatLsn, parseLsn, type Lsn } from '../src/postgres/lsn.ts';
import { postgresRunAs, runPgTool } from '../src/postgres/pgbin.ts';
import { BrokerProcess, SafekeeperProcess } from '../test/support/cluster.ts';

process.env['STRATA_LOG'] ??= 'warn';

const quick = process.env['BENCH_QUICK'] === '1';
const keepPageserver = process.env['BENCH_SK_PAGESERVER'] === '1';
const SCALE = quick ? 2 : 10;
const BENCH_SEC = quick ? 5 : 30;
const ROUNDS = quick ? 1 : 2;
const CLIENTS = 4;
const THREADS = 2;
const SINGLE_CLIENT_SEC = quick ? 2 : 10;
const BULK_ROWS = quick ? 100_000 : 1_000_000;
const BULK_ROUNDS = quick ? 1 : 2;
const DISK_PROBE_BYTES = 256 * 1024 * 1024;
const PG_BIN = process.env['STRATA_PG_BIN'] ?? '/usr/lib/postgresql/15/bin';
const MB = 1e6;
const TOOL_TIMEOUT_MS = 30 * 60_000;
const CATCH_UP_TIMEOUT_MS = 10 * 60_000;
const POLL_MS = 10;
const LAG_SAMPLE_MS = 50;
const MAX_TOOL_OUTPUT_BYTES = 16 << 20;
const MAX_LOG_TRANSACTIONS = 20_000_000;
const MAX_PROC_ENTRIES = 100_000;
/** USER_HZ: the unit of /proc/stat and /proc/<pid>/stat times; 100 on every Linux platform. */
const CLK_TCK = 100;
const CPU_SETTLE_MS = 300;
const STANDBY_NAME = 'standby1';
/** Same on every primary: durability on, no background vacuum, a paused receiver is not dropped. */
const BENCH_SETTINGS = { fsync: true, synchronous_commit: 'on', autovacuum: false, wal_sender_timeout: '5min' } as const;
/** postgresql.conf settings of the Strata compute that the vanilla primary does not copy. */
const NOT_COPIED = new Set(['port', 'unix_socket_directories', 'synchronous_standby_names', 'listen_addresses']);

type ConfigName = '1sk' | '3sk' | 'vanillaSync' | 'noSync';
const CONFIGS: readonly ConfigName[] = ['1sk', '3sk', 'vanillaSync', 'noSync'];

function log(msg: string): void {
  process.stderr.write(`[bench:safekeepers] ${msg}\n`);
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

function errText(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

// ---------------------------------------------------------------------------------------------
// Processes and clients.

interface ToolResult {
  stdout: string;
  stderr: string;
  ms: number;
}

/** Client tools (pgbench) still running: killed when this process exits, whatever the reason. */
const liveTools = new Set<ChildProcess>();
process.on('exit', () => {
  for (const c of liveTools) c.kill('SIGKILL');
});

/** Runs a PostgreSQL client tool against 127.0.0.1:port as database user postgres; bounded output and time. */
function runTool(file: string, args: readonly string[], port: number, timeoutMs = TOOL_TIMEOUT_MS): Promise<ToolResult> {
  return new Promise((resolve, reject) => {
    const env: NodeJS.ProcessEnv = {
      ...process.env, LC_ALL: 'C', PGUSER: 'postgres', PGDATABASE: 'postgres', PGHOST: '127.0.0.1', PGPORT: String(port),
    };
    const started = performance.now();
    const child = spawn(file, [...args], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    liveTools.add(child);
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    let outBytes = 0;
    let failure: Error | null = null;
    const name = path.basename(file);
    const timer = setTimeout(() => {
      failure = new Error(`${name} did not finish within ${timeoutMs} ms; killed`);
      child.kill('SIGKILL');
    }, timeoutMs);
    const collect = (into: Buffer[]) => (chunk: Buffer): void => {
      outBytes += chunk.length;
      if (outBytes <= MAX_TOOL_OUTPUT_BYTES) into.push(chunk);
    };
    child.stdout.on('data', collect(out));
    child.stderr.on('data', collect(err));
    child.once('error', (e) => {
      clearTimeout(timer);
      liveTools.delete(child);
      reject(new Error(`could not run ${file}: ${e.message}`));
    });
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      liveTools.delete(child);
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

async function connect(port: number): Promise<pg.Client> {
  const c = new pg.Client({ host: '127.0.0.1', port, user: 'postgres', database: 'postgres', connectionTimeoutMillis: 10_000 });
  c.on('error', () => undefined);
  await c.connect();
  return c;
}

async function withClient<T>(port: number, fn: (c: pg.Client) => Promise<T>): Promise<T> {
  const c = await connect(port);
  try {
    return await fn(c);
  } finally {
    await c.end().catch(() => undefined);
  }
}

async function queryValue(port: number, sql: string): Promise<string> {
  return withClient(port, async (c) => {
    const r = await c.query<{ v: string | null }>(`SELECT (${sql})::text AS v`);
    const v = r.rows[0]?.v;
    if (v === undefined || v === null) throw new Error(`no value from ${sql} on port ${port}`);
    return v;
  });
}

async function exec(port: number, sql: string): Promise<void> {
  await withClient(port, async (c) => {
    await c.query(sql);
  });
}

const flushLsnOf = async (port: number): Promise<Lsn> => parseLsn(await queryValue(port, 'SELECT pg_current_wal_flush_lsn()'));
const insertLsnOf = async (port: number): Promise<Lsn> => parseLsn(await queryValue(port, 'SELECT pg_current_wal_insert_lsn()'));

/** Polls `check` every `everyMs` until it returns true; throws with `what` after timeoutMs. */
async function waitUntil(what: string, check: () => Promise<boolean>, timeoutMs: number, everyMs = 50): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let lastErr = '';
  while (Date.now() < deadline) {
    try {
      if (await check()) return;
    } catch (err) {
      lastErr = errText(err);
    }
    await sleep(everyMs);
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${lastErr !== '' ? ` (last error: ${lastErr})` : ''}`);
}

/** A directory the postgres OS user owns (when we are root), so its processes can write there. */
function postgresDir(p: string): string {
  mkdirSync(p, { recursive: true, mode: 0o755 });
  const user = postgresRunAs();
  if (user !== null) chownSync(p, user.uid, user.gid);
  return p;
}

function confLine(name: string, value: string | number | boolean): string {
  const v = typeof value === 'boolean' ? (value ? 'on' : 'off') : String(value);
  return `${name} = '${v.replace(/'/g, "''")}'`;
}

// ---------------------------------------------------------------------------------------------
// CPU accounting from /proc.

interface CpuSample {
  busyTicks: number;
  iowaitTicks: number;
  /** Time the hypervisor ran something else while this VM wanted to run. */
  stealTicks: number;
  totalTicks: number;
}

function machineCpu(): CpuSample {
  const line = readFileSync('/proc/stat', 'utf8').split('\n')[0] ?? '';
  const f = line.trim().split(/\s+/).slice(1).map(Number);
  // user nice system idle iowait irq softirq steal (guest time is already in user).
  const total = f.slice(0, 8).reduce((a, b) => a + b, 0);
  const idle = f[3] ?? 0;
  const iowait = f[4] ?? 0;
  return { busyTicks: total - idle - iowait, iowaitTicks: iowait, stealTicks: f[7] ?? 0, totalTicks: total };
}

function readProcStat(pid: number): { ppid: number; ticks: number; childTicks: number } | null {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return null;
  }
  // The command name (field 2) is in parentheses and may contain spaces: parse after the last ')'.
  const rest = text.slice(text.lastIndexOf(')') + 2).split(' ');
  // rest[0] is field 3 (state); field n is rest[n - 3].
  const num = (field: number): number => Number(rest[field - 3] ?? 0);
  return { ppid: num(4), ticks: num(14) + num(15), childTicks: num(16) + num(17) };
}

/**
 * CPU milliseconds used so far by a process tree: for the root and every live descendant, its own
 * time plus that of its reaped children (a postmaster reaps its backends, this process reaps
 * pgbench, so the time of exited processes is included). A process that exits between two samples
 * moves from its own entry to its parent's reaped-children time, so differences stay right.
 */
function treeCpuMs(rootPid: number): number {
  const root = readProcStat(rootPid);
  if (root === null) return 0;
  const children = new Map<number, number[]>();
  const ticks = new Map<number, number>();
  let n = 0;
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    if (++n > MAX_PROC_ENTRIES) break;
    const pid = Number(name);
    const st = readProcStat(pid);
    if (st === null) continue;
    ticks.set(pid, st.ticks + st.childTicks);
    const list = children.get(st.ppid);
    if (list === undefined) children.set(st.ppid, [pid]);
    else list.push(pid);
  }
  let total = root.ticks + root.childTicks;
  const stack = [...(children.get(rootPid) ?? [])];
  for (let i = 0; stack.length > 0 && i < MAX_PROC_ENTRIES; i++) {
    const pid = stack.pop()!;
    total += ticks.get(pid) ?? 0;
    stack.push(...(children.get(pid) ?? []));
  }
  return (total * 1000) / CLK_TCK;
}

// ---------------------------------------------------------------------------------------------
// pgbench output.

interface LatencyStats {
  transactions: number;
  avgMs: number;
  p50Ms: number;
  p99Ms: number;
  maxMs: number;
}

/** Reads pgbench's per-transaction logs (`client tx latency_us script epoch_s epoch_us`, one file per thread). */
function readTransactionLogs(dir: string, prefix: string): LatencyStats {
  const lat: number[] = [];
  for (const name of readdirSync(dir)) {
    if (!name.startsWith(`${prefix}.`)) continue;
    const text = readFileSync(path.join(dir, name), 'utf8');
    for (const line of text.split('\n')) {
      if (line === '') continue;
      const f = line.split(' ');
      const us = Number(f[2]);
      if (!Number.isFinite(us)) throw new Error(`unexpected line in pgbench log ${name}: ${line}`);
      if (lat.length >= MAX_LOG_TRANSACTIONS) throw new Error(`more than ${MAX_LOG_TRANSACTIONS} transactions in the pgbench logs`);
      lat.push(us);
    }
  }
  if (lat.length === 0) throw new Error(`no transactions in the pgbench logs under ${dir}`);
  const sorted = Float64Array.from(lat).sort();
  const pct = (p: number): number => sorted[Math.min(sorted.length - 1, Math.ceil(p * sorted.length) - 1)]! / 1000;
  let sum = 0;
  for (const v of sorted) sum += v;
  return { transactions: sorted.length, avgMs: sum / sorted.length / 1000, p50Ms: pct(0.5), p99Ms: pct(0.99), maxMs: sorted[sorted.length - 1]! / 1000 };
}

function parseNumber(re: RegExp, text: string, what: string): number {
  const m = re.exec(text);
  if (m?.[1] === undefined) throw new Error(`no ${what} in pgbench's output:\n${text}`);
  return Number(m[1]);
}

// ---------------------------------------------------------------------------------------------
// The setups.

interface Resources {
  workdir: string;
  broker: BrokerProcess | null;
  safekeepers: SafekeeperProcess[];
  ps: Pageserver | null;
  endpoints: Endpoint[];
  pgProcs: PostgresProcess[];
  /** Processes paused with SIGSTOP, resumed in teardown whatever happened. */
  paused: Set<number>;
  clients: pg.Client[];
}

interface Vanilla {
  primary: PostgresProcess;
  standby: PostgresProcess | null;
  standbyDataDir: string;
  standbyDir: string;
  settingsDiff: string[];
}

interface StrataSetup {
  tenantId: string;
  ep1: Endpoint;
  ep3: Endpoint;
  timeline1: string;
  timeline3: string;
}

/**
 * Endpoint.start, retried when it loses the race for a safekeeper's replication slot: the endpoint
 * creates each safekeeper's slot with a check-then-create while the safekeeper, already pulling,
 * creates it too, so the endpoint can fail with "replication slot sk_N already exists" (SQLSTATE
 * 42710). A failed start stops its postgres; the next attempt runs a new election.
 */
async function startEndpoint(opts: EndpointOptions): Promise<Endpoint> {
  const attempts = 3;
  for (let i = 1; ; i++) {
    try {
      return await Endpoint.start(opts);
    } catch (err) {
      const code = (err as { code?: unknown }).code;
      if (i >= attempts || code !== '42710') throw err;
      log(`Endpoint.start of ${path.basename(opts.dir)} lost the slot race with a safekeeper (${errText(err)}); attempt ${i + 1} of ${attempts}`);
    }
  }
}

async function startStrata(res: Resources): Promise<StrataSetup> {
  log('starting the broker and 3 safekeepers (strata CLI processes), an in-process pageserver ...');
  const broker = await BrokerProcess.create();
  res.broker = broker;
  await broker.start();
  for (const i of [1, 2, 3]) res.safekeepers.push(await SafekeeperProcess.create(i, path.join(res.workdir, `sk${i}`), broker.endpoint));
  await Promise.all(res.safekeepers.map((sk) => sk.start()));
  const ps = await Pageserver.start({
    workdir: path.join(res.workdir, 'pageserver'), pageCacheBytes: 64 << 20, blockCacheBytes: 32 << 20, waitLsnTimeoutMs: 120_000,
    brokerEndpoint: broker.endpoint, walReceiverBackoffMs: { min: 20, max: 1_000 },
  });
  res.ps = ps;
  const tenant = await ps.tenants.createTenant({});
  const tl1 = await bootstrapTimeline(tenant);
  const tl3 = await bootstrapTimeline(tenant);
  const sks = res.safekeepers;
  const ep1 = await startEndpoint({
    pageserver: ps, tenantId: tenant.tenantId, timelineId: tl1.timelineId, dir: path.join(res.workdir, 'ep-1sk'), settings: BENCH_SETTINGS,
    safekeepers: [sks[0]!.address],
  });
  res.endpoints.push(ep1);
  const ep3 = await startEndpoint({
    pageserver: ps, tenantId: tenant.tenantId, timelineId: tl3.timelineId, dir: path.join(res.workdir, 'ep-3sk'), settings: BENCH_SETTINGS,
    safekeepers: sks.map((s) => s.address),
  });
  res.endpoints.push(ep3);
  for (const [ep, want] of [[ep1, 'ANY 1 (sk_1)'], [ep3, 'ANY 2 (sk_1, sk_2, sk_3)']] as const) {
    const got = await queryValue(ep.port, "SELECT current_setting('synchronous_standby_names')");
    if (got !== want) throw new Error(`compute on port ${ep.port}: synchronous_standby_names is '${got}', expected '${want}'`);
  }
  if (!keepPageserver) {
    // Not on the commit path: stopped so it does not compete for CPU with what is measured.
    await ps.shutdown({ flush: false });
    res.ps = null;
    log('pageserver shut down (not on the commit path; BENCH_SK_PAGESERVER=1 keeps it running)');
  }
  log(`Strata computes: 1 safekeeper on port ${ep1.port}, 3 safekeepers on port ${ep3.port}`);
  return { tenantId: tenant.tenantId, ep1, ep3, timeline1: tl1.timelineId, timeline3: tl3.timelineId };
}

/** The settings of a server as pg_settings shows them. */
async function pgSettings(port: number, where: string): Promise<Map<string, string>> {
  return withClient(port, async (c) => {
    const r = await c.query<{ name: string; setting: string | null }>(`SELECT name, setting FROM pg_settings WHERE ${where}`);
    return new Map(r.rows.map((row) => [row.name, row.setting ?? '']));
  });
}

async function startVanilla(res: Resources, strataPort: number): Promise<Vanilla> {
  const dir = postgresDir(path.join(res.workdir, 'vanilla'));
  const primaryDir = postgresDir(path.join(dir, 'primary'));
  const standbyDir = postgresDir(path.join(dir, 'standby'));
  const dataDir = path.join(primaryDir, 'pgdata');
  log('vanilla: initdb (the same arguments as a Strata bootstrap) ...');
  await runPgTool('initdb', ['-D', dataDir, '-U', 'postgres', '-E', 'UTF8', '--locale=C', '--auth=trust', '--no-sync', '--no-instructions'],
    { binDir: PG_BIN, asServerUser: true });
  // Every setting the Strata compute runs with, from its pg_settings. initdb's postgresql.conf is
  // replaced, not appended to: a compute's postgresql.conf holds only what Endpoint writes (the rest
  // are built-in defaults), while initdb's sets shared_buffers, the time zone, lc_messages, ...
  const strataConf = await pgSettings(strataPort, "source = 'configuration file'");
  const port = await freePort();
  const lines = ['# bench:safekeepers: the settings of the Strata compute (from its pg_settings), plus port and socket'];
  for (const [name, setting] of strataConf) {
    if (NOT_COPIED.has(name) || name.includes('.')) continue;
    lines.push(confLine(name, setting));
  }
  lines.push(confLine('port', port), confLine('listen_addresses', '127.0.0.1'), confLine('unix_socket_directories', primaryDir), '');
  const user = postgresRunAs();
  writeFileSync(path.join(dataDir, 'postgresql.conf'), lines.join('\n'), { mode: 0o600 });
  if (user !== null) chownSync(path.join(dataDir, 'postgresql.conf'), user.uid, user.gid);
  const primary = await PostgresProcess.start({ dataDir, port, logFile: path.join(primaryDir, 'postgres.log'), binDir: PG_BIN });
  res.pgProcs.push(primary);

  // Fairness check: the whole pg_settings, side by side.
  const a = await pgSettings(strataPort, 'true');
  const b = await pgSettings(port, 'true');
  const diff: string[] = [];
  for (const name of new Set([...a.keys(), ...b.keys()])) {
    if (a.get(name) !== b.get(name)) diff.push(name);
  }
  diff.sort();
  const expected = new Set(['port', 'unix_socket_directories', 'synchronous_standby_names', 'data_directory', 'config_file', 'hba_file', 'ident_file']);
  const unexpected = diff.filter((n) => !expected.has(n));
  log(`vanilla primary on port ${port}; settings that differ from the Strata compute: ${diff.join(', ')}`);
  if (unexpected.length > 0) {
    throw new Error(`the vanilla primary's settings differ from the Strata compute's beyond the expected ones: ${unexpected.map((n) => `${n} (strata '${a.get(n)}', vanilla '${b.get(n)}')`).join('; ')}`);
  }

  await exec(port, `SELECT pg_create_physical_replication_slot('${STANDBY_NAME}', true)`);
  const standbyDataDir = path.join(standbyDir, 'pgdata');
  log('vanilla: pg_basebackup -R of the primary for the standby ...');
  await runPgTool('pg_basebackup', ['-h', '127.0.0.1', '-p', String(port), '-U', 'postgres', '-D', standbyDataDir, '-R', '-X', 'stream', '-c', 'fast', '--no-sync'],
    { binDir: PG_BIN, asServerUser: true, timeoutMs: TOOL_TIMEOUT_MS });
  const v: Vanilla = { primary, standby: null, standbyDataDir, standbyDir, settingsDiff: diff };
  await startStandby(res, v);
  return v;
}

async function startStandby(res: Resources, v: Vanilla): Promise<void> {
  const port = await freePort();
  // Later lines win over what pg_basebackup -R wrote; rewritten at every start (the last port wins too).
  await appendFile(path.join(v.standbyDataDir, 'postgresql.auto.conf'), [
    '', '# bench:safekeepers standby',
    confLine('port', port), confLine('unix_socket_directories', v.standbyDir),
    confLine('primary_conninfo', `host=127.0.0.1 port=${v.primary.port} user=postgres application_name=${STANDBY_NAME}`),
    confLine('primary_slot_name', STANDBY_NAME), '',
  ].join('\n'));
  const standby = await PostgresProcess.start({ dataDir: v.standbyDataDir, port, logFile: path.join(v.standbyDir, 'postgres.log'), binDir: PG_BIN });
  res.pgProcs.push(standby);
  v.standby = standby;
  await waitUntil('the vanilla standby streaming', async () =>
    (await queryValue(v.primary.port, `SELECT count(*) FROM pg_stat_replication WHERE application_name = '${STANDBY_NAME}' AND state = 'streaming'`)) === '1',
  60_000);
}

async function stopStandby(res: Resources, v: Vanilla): Promise<void> {
  if (v.standby === null) return;
  await v.standby.stop('fast');
  res.pgProcs = res.pgProcs.filter((p) => p !== v.standby);
  v.standby = null;
}

async function setSyncNames(port: number, value: string): Promise<void> {
  await exec(port, `ALTER SYSTEM SET synchronous_standby_names = '${value}'`);
  await exec(port, 'SELECT pg_reload_conf()');
  await waitUntil(`synchronous_standby_names = '${value}' on port ${port}`, async () =>
    (await queryValue(port, "SELECT current_setting('synchronous_standby_names')")) === value, 10_000, 20);
}

// ---------------------------------------------------------------------------------------------
// Configurations: how to reach each one, how to know its receivers are caught up.

interface Config {
  name: ConfigName;
  label: string;
  port: number;
  /** Puts the configuration in place (vanilla: standby on/off, synchronous_standby_names). */
  activate(): Promise<void>;
  /** Resolves once every receiver has flushed everything the primary has flushed. */
  caughtUp(): Promise<void>;
  /** Pids whose CPU time is reported per run (the primary's postmaster first). */
  cpuPids(): { name: string; pid: number }[];
}

function strataConfig(name: '1sk' | '3sk', ep: Endpoint, sks: SafekeeperProcess[], tenantId: string, timelineId: string): Config {
  return {
    name, label: name === '1sk' ? 'Strata, 1 safekeeper (ANY 1)' : 'Strata, 3 safekeepers (ANY 2)', port: ep.port,
    activate: async () => undefined,
    caughtUp: async () => {
      const target = await flushLsnOf(ep.port);
      await waitUntil(`${name}: every safekeeper flushed ${formatLsn(target)}`, async () => {
        for (const sk of sks) if ((await sk.flushLsn(tenantId, timelineId)) < target) return false;
        return true;
      }, CATCH_UP_TIMEOUT_MS);
    },
    cpuPids: () => [{ name: 'compute', pid: ep.pid }, ...sks.map((sk) => ({ name: `sk${sk.id}`, pid: sk.pid }))],
  };
}

/** The standby's flushed position as the primary sees it; on `client` when given (no connection per poll). */
async function standbyFlushLsn(primaryPort: number, client?: pg.Client): Promise<Lsn> {
  const sql = `SELECT flush_lsn::text AS v FROM pg_stat_replication WHERE application_name = '${STANDBY_NAME}'`;
  const run = async (c: pg.Client): Promise<Lsn> => {
    const v = (await c.query<{ v: string | null }>(sql)).rows[0]?.v;
    if (v === undefined || v === null) throw new Error(`standby ${STANDBY_NAME} is not streaming from the primary on port ${primaryPort}`);
    return parseLsn(v);
  };
  return client === undefined ? withClient(primaryPort, run) : run(client);
}

function vanillaConfigs(res: Resources, v: Vanilla): Config[] {
  const port = v.primary.port;
  const sync: Config = {
    name: 'vanillaSync', label: 'vanilla primary + synchronous standby (ANY 1 (standby1))', port,
    activate: async () => {
      if (v.standby === null) await startStandby(res, v);
      await sync.caughtUp();
      await setSyncNames(port, `ANY 1 (${STANDBY_NAME})`);
      await waitUntil('standby1 is a synchronous (quorum) standby', async () =>
        (await queryValue(port, `SELECT sync_state FROM pg_stat_replication WHERE application_name = '${STANDBY_NAME}'`)) === 'quorum', 30_000);
    },
    caughtUp: async () => {
      const target = await flushLsnOf(port);
      await waitUntil(`the standby flushed ${formatLsn(target)}`, async () => (await standbyFlushLsn(port)) >= target, CATCH_UP_TIMEOUT_MS);
    },
    cpuPids: () => [{ name: 'primary', pid: v.primary.pid }, ...(v.standby !== null ? [{ name: 'standby', pid: v.standby.pid }] : [])],
  };
  const noSync: Config = {
    name: 'noSync', label: 'the same primary, no synchronous replication (standby stopped)', port,
    activate: async () => {
      await setSyncNames(port, '');
      await stopStandby(res, v);
    },
    caughtUp: async () => undefined,
    cpuPids: () => [{ name: 'primary', pid: v.primary.pid }],
  };
  return [sync, noSync];
}

// ---------------------------------------------------------------------------------------------
// pgbench runs.

interface RunResult {
  config: ConfigName;
  round: number;
  tps: number;
  pgbenchLatencyAvgMs: number;
  commitLatencyAvgMs: number;
  latency: LatencyStats;
  cpuBusyPct: number;
  iowaitPct: number;
  foreignCpuPct: number;
  stealPct: number;
  cpuMs: Record<string, number>;
  loadAvg1m: number;
  progress: string;
}

interface PgbenchShape {
  clients: number;
  threads: number;
  seconds: number;
}

const MAIN_SHAPE: PgbenchShape = { clients: CLIENTS, threads: THREADS, seconds: BENCH_SEC };
/** One client: (almost) no CPU contention, so the commit latency is the round trip to the standby/safekeepers. */
const SINGLE_SHAPE: PgbenchShape = { clients: 1, threads: 1, seconds: SINGLE_CLIENT_SEC };

async function pgbenchRun(cfg: Config, roundNo: number, workdir: string, shape: PgbenchShape = MAIN_SHAPE): Promise<RunResult> {
  await cfg.activate();
  await exec(cfg.port, 'VACUUM pgbench_branches, pgbench_tellers');
  await exec(cfg.port, 'TRUNCATE pgbench_history');
  await exec(cfg.port, 'CHECKPOINT');
  await cfg.caughtUp();
  const logDir = mkdtempSync(path.join(workdir, `pgbench-${cfg.name}-`));
  const prefix = 'tx';
  const pids = cfg.cpuPids();
  const cpu0 = machineCpu();
  const proc0 = pids.map((p) => treeCpuMs(p.pid));
  const ours0 = treeCpuMs(process.pid);
  const bench = await runTool(pgTool('pgbench'), [
    '-c', String(shape.clients), '-j', String(shape.threads), '-T', String(shape.seconds), '-n', '-r', '-P', String(quick ? 1 : 5),
    '-l', `--log-prefix=${path.join(logDir, prefix)}`,
  ], cfg.port, shape.seconds * 1000 + TOOL_TIMEOUT_MS);
  // Let the postmaster reap the backends pgbench's connections leave behind, so their CPU time is
  // in its children's time (a process that is exiting can be missed by a /proc walk).
  await sleep(CPU_SETTLE_MS);
  const cpu1 = machineCpu();
  const proc1 = pids.map((p) => treeCpuMs(p.pid));
  const ours1 = treeCpuMs(process.pid);
  const loadAvg1m = os.loadavg()[0] ?? Number.NaN;
  const latency = readTransactionLogs(logDir, prefix);
  rmSync(logDir, { recursive: true, force: true });
  const tps = parseNumber(/tps = ([\d.]+)/, bench.stdout, 'tps');
  const pgbenchLatencyAvgMs = parseNumber(/latency average = ([\d.]+) ms/, bench.stdout, 'latency average');
  const commitLatencyAvgMs = parseNumber(/^\s*([\d.]+)\s+(?:\d+\s+)?END;\s*$/m, bench.stdout, 'END latency (-r)');
  const dt = cpu1.totalTicks - cpu0.totalTicks;
  const cpuMs: Record<string, number> = {};
  pids.forEach((p, i) => {
    cpuMs[p.name] = Math.round(proc1[i]! - proc0[i]!);
  });
  const progress = [...bench.stderr.matchAll(/progress: [\d.]+ s, ([\d.]+) tps/g)].map((m) => Math.round(Number(m[1]))).join(' ');
  return {
    config: cfg.name, round: roundNo, tps, pgbenchLatencyAvgMs, commitLatencyAvgMs, latency,
    cpuBusyPct: (100 * (cpu1.busyTicks - cpu0.busyTicks)) / dt, iowaitPct: (100 * (cpu1.iowaitTicks - cpu0.iowaitTicks)) / dt,
    stealPct: (100 * (cpu1.stealTicks - cpu0.stealTicks)) / dt,
    // Busy time of the machine not spent in anything this benchmark started: other work on the
    // machine (steal is not counted: no process of this VM ran then).
    foreignCpuPct: Math.max(0, (100 * (cpu1.busyTicks - cpu0.busyTicks - (cpu1.stealTicks - cpu0.stealTicks) - ((ours1 - ours0) * CLK_TCK) / 1000)) / dt),
    cpuMs, loadAvg1m, progress,
  };
}

function describeRun(r: RunResult): string {
  const perTx = Object.entries(r.cpuMs).map(([k, ms]) => `${k} ${ms} ms (${((ms * 1000) / r.latency.transactions).toFixed(0)} µs/tx)`).join(', ');
  return `${r.config} round ${r.round}: ${r.tps.toFixed(0)} tps; latency avg ${r.latency.avgMs.toFixed(2)} ms, p50 ${r.latency.p50Ms.toFixed(2)}, ` +
    `p99 ${r.latency.p99Ms.toFixed(2)}, max ${r.latency.maxMs.toFixed(1)} ms; END (commit) avg ${r.commitLatencyAvgMs.toFixed(3)} ms; ` +
    `machine CPU busy ${r.cpuBusyPct.toFixed(0)} % (not ours ${r.foreignCpuPct.toFixed(0)} %, steal ${r.stealPct.toFixed(0)} %), iowait ${r.iowaitPct.toFixed(0)} %; CPU: ${perTx}; load ${r.loadAvg1m.toFixed(2)}; progress tps: ${r.progress}`;
}

// ---------------------------------------------------------------------------------------------
// Bulk load.

interface BulkTarget {
  name: '1sk' | 'vanillaSync';
  port: number;
  /** The receiver's flushed position (safekeeper HTTP status / the primary's pg_stat_replication). */
  receiverFlush(): Promise<Lsn>;
  pause(): Promise<void>;
  resume(): Promise<void>;
}

interface BulkResult {
  walBytes: number;
  ms: number;
  insertMs: number;
  maxLagBytes: number;
}

interface CatchUpResult {
  walBytes: number;
  ms: number;
}

const BULK_INSERT = `INSERT INTO bulk SELECT g, repeat('x', 200) FROM generate_series(1, ${BULK_ROWS}) g`;

async function prepareBulk(t: BulkTarget): Promise<void> {
  await exec(t.port, 'CREATE TABLE IF NOT EXISTS bulk (id int, v text)');
  await exec(t.port, 'TRUNCATE bulk');
  await exec(t.port, 'CHECKPOINT');
  const target = await flushLsnOf(t.port);
  await waitUntil(`${t.name}: receiver caught up`, async () => (await t.receiverFlush()) >= target, CATCH_UP_TIMEOUT_MS);
}

/** The INSERT streams through the (synchronous) receiver; time until the receiver has flushed it all. */
async function bulkStreaming(t: BulkTarget): Promise<BulkResult> {
  await prepareBulk(t);
  const c = await connect(t.port);
  let sampling = true;
  let maxLagBytes = 0;
  const sampler = (async () => {
    const s = await connect(t.port);
    try {
      while (sampling) {
        const ins = parseLsn((await s.query<{ v: string }>('SELECT pg_current_wal_insert_lsn()::text AS v')).rows[0]!.v);
        const lag = Number(ins - (await t.receiverFlush()));
        if (lag > maxLagBytes) maxLagBytes = lag;
        await sleep(LAG_SAMPLE_MS);
      }
    } finally {
      await s.end().catch(() => undefined);
    }
  })();
  try {
    const start = parseLsn((await c.query<{ v: string }>('SELECT pg_current_wal_insert_lsn()::text AS v')).rows[0]!.v);
    const t0 = performance.now();
    await c.query(BULK_INSERT);
    const t1 = performance.now();
    const end = parseLsn((await c.query<{ v: string }>('SELECT pg_current_wal_flush_lsn()::text AS v')).rows[0]!.v);
    await waitUntil(`${t.name}: receiver flushed ${formatLsn(end)}`, async () => (await t.receiverFlush()) >= end, CATCH_UP_TIMEOUT_MS, POLL_MS);
    const t2 = performance.now();
    return { walBytes: Number(end - start), ms: t2 - t0, insertMs: t1 - t0, maxLagBytes };
  } finally {
    sampling = false;
    await sampler.catch((e: unknown) => log(`lag sampler: ${errText(e)}`));
    await c.end().catch(() => undefined);
  }
}

/** The INSERT runs while the receiver is paused; then the receiver's catch-up through that WAL is timed. */
async function bulkCatchUp(t: BulkTarget): Promise<CatchUpResult> {
  await prepareBulk(t);
  const before = await t.receiverFlush();
  const c = await connect(t.port);
  const backendPid = Number((await c.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0]!.pid);
  let insert: Promise<unknown> | null = null;
  await t.pause();
  try {
    insert = c.query(BULK_INSERT);
    insert.catch(() => undefined);
    await waitUntil(`${t.name}: the INSERT waits for its commit (SyncRep)`, async () =>
      (await queryValue(t.port, `SELECT coalesce(wait_event, '-') FROM pg_stat_activity WHERE pid = ${backendPid}`)) === 'SyncRep', CATCH_UP_TIMEOUT_MS, 20);
  } catch (err) {
    await t.resume();
    throw err;
  }
  const end = await flushLsnOf(t.port);
  const t0 = performance.now();
  await t.resume();
  await waitUntil(`${t.name}: receiver caught up to ${formatLsn(end)}`, async () => (await t.receiverFlush()) >= end, CATCH_UP_TIMEOUT_MS, POLL_MS);
  const ms = performance.now() - t0;
  await insert;
  await c.end().catch(() => undefined);
  return { walBytes: Number(end - before), ms };
}

/** Writes DISK_PROBE_BYTES in 1 MiB writes, fdatasync, timed; the file is removed. */
async function diskWriteMBps(file: string): Promise<number> {
  const chunk = Buffer.alloc(1 << 20, 0x5a);
  const fh = await open(file, 'w');
  try {
    const t0 = performance.now();
    for (let off = 0; off < DISK_PROBE_BYTES; off += chunk.length) await fh.write(chunk, 0, chunk.length, off);
    await fh.datasync();
    return mbps(DISK_PROBE_BYTES, performance.now() - t0);
  } finally {
    await fh.close();
    await rm(file, { force: true });
  }
}

function pauseProcess(res: Resources, pid: number): void {
  process.kill(pid, 'SIGSTOP');
  res.paused.add(pid);
}

function resumeProcess(res: Resources, pid: number): void {
  process.kill(pid, 'SIGCONT');
  res.paused.delete(pid);
}

// ---------------------------------------------------------------------------------------------
// Main.

async function main(): Promise<void> {
  const wallStart = performance.now();
  const workdir = mkdtempSync(path.join(tmpdir(), 'strata-bench-safekeepers-'));
  // As root, PostgreSQL runs as the postgres OS user and must traverse the work directory.
  chmodSync(workdir, 0o755);
  process.env['TMPDIR'] = workdir;
  const res: Resources = { workdir, broker: null, safekeepers: [], ps: null, endpoints: [], pgProcs: [], paused: new Set(), clients: [] };
  const onSignal = (sig: NodeJS.Signals): void => {
    log(`${sig}: exiting; servers are killed by the exit hooks, then ${workdir} is removed`);
    for (const pid of res.paused) {
      try { process.kill(pid, 'SIGCONT'); } catch { /* gone */ }
    }
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
  for (const pid of res.paused) {
    try { process.kill(pid, 'SIGCONT'); } catch { /* gone */ }
  }
  for (const c of res.clients) await c.end().catch(() => undefined);
  for (const ep of res.endpoints) await ep.kill().catch((e: unknown) => errors.push(e));
  for (const p of res.pgProcs) await p.stop('immediate').catch((e: unknown) => errors.push(e));
  await res.ps?.shutdown({ flush: false }).catch((e: unknown) => errors.push(e));
  for (const sk of res.safekeepers) await sk.kill().catch((e: unknown) => errors.push(e));
  await res.broker?.kill().catch((e: unknown) => errors.push(e));
  if (process.env['STRATA_KEEP_TMP'] === '1') log(`STRATA_KEEP_TMP=1: keeping ${res.workdir}`);
  else await rm(res.workdir, { recursive: true, force: true, maxRetries: 3 }).catch((e: unknown) => errors.push(e));
  for (const e of errors) log(`teardown: ${errText(e)}`);
}

async function run(res: Resources): Promise<void> {
  const loadStart = os.loadavg();
  log(`${quick ? 'BENCH_QUICK: ' : ''}pgbench -i -s ${SCALE}; pgbench -c ${CLIENTS} -j ${THREADS} -T ${BENCH_SEC}, ${ROUNDS} round(s) of 4 configurations; ` +
    `bulk INSERT of ${BULK_ROWS} rows; load average ${loadStart.map((l) => l.toFixed(2)).join(' ')} on ${os.cpus().length} CPUs; work dir ${res.workdir}`);
  const s = await startStrata(res);
  const sks = res.safekeepers;
  const v = await startVanilla(res, s.ep3.port);
  const [vSync, vNoSync] = vanillaConfigs(res, v);
  const configs: Record<ConfigName, Config> = {
    '1sk': strataConfig('1sk', s.ep1, [sks[0]!], s.tenantId, s.timeline1),
    '3sk': strataConfig('3sk', s.ep3, sks, s.tenantId, s.timeline3),
    vanillaSync: vSync!,
    noSync: vNoSync!,
  };

  // Data: pgbench -i on each database (the vanilla one with its standby attached asynchronously).
  const initMs: Partial<Record<string, number>> = {};
  for (const [name, port] of [['1sk', s.ep1.port], ['3sk', s.ep3.port], ['vanilla', v.primary.port]] as const) {
    log(`${name}: pgbench -i -s ${SCALE} ...`);
    const r = await runTool(pgTool('pgbench'), ['-i', '-s', String(SCALE), '-q'], port);
    initMs[name] = Math.round(r.ms);
    log(`${name}: pgbench -i took ${(r.ms / 1000).toFixed(1)} s`);
  }

  const runs: RunResult[] = [];
  for (let r = 1; r <= ROUNDS; r++) {
    for (const name of CONFIGS) {
      log(`round ${r}/${ROUNDS}: ${configs[name].label}: pgbench -T ${BENCH_SEC} ...`);
      const rr = await pgbenchRun(configs[name], r, res.workdir);
      runs.push(rr);
      log(describeRun(rr));
    }
  }

  // One client per configuration, once: the commit round trip without CPU contention.
  const single = {} as Record<ConfigName, RunResult>;
  for (const name of CONFIGS) {
    log(`single client: ${configs[name].label}: pgbench -c 1 -T ${SINGLE_CLIENT_SEC} ...`);
    single[name] = await pgbenchRun(configs[name], 1, res.workdir, SINGLE_SHAPE);
    log(`single client: ${describeRun(single[name])}`);
  }

  // Bulk load: 1 safekeeper vs the vanilla synchronous standby.
  await configs.vanillaSync.activate();
  const sk1 = sks[0]!;
  let walReceiverPid = 0;
  // One connection for the standby's position: a new backend per poll would cost CPU during the timing.
  const monitor = await connect(v.primary.port);
  res.clients.push(monitor);
  const bulkTargets: BulkTarget[] = [
    {
      name: '1sk', port: s.ep1.port,
      receiverFlush: () => sk1.flushLsn(s.tenantId, s.timeline1),
      pause: async () => pauseProcess(res, sk1.pid),
      resume: async () => resumeProcess(res, sk1.pid),
    },
    {
      name: 'vanillaSync', port: v.primary.port,
      receiverFlush: () => standbyFlushLsn(v.primary.port, monitor),
      pause: async () => {
        if (v.standby === null) throw new Error('no standby');
        walReceiverPid = Number(await queryValue(v.standby.port, 'SELECT pid FROM pg_stat_wal_receiver'));
        pauseProcess(res, walReceiverPid);
      },
      resume: async () => resumeProcess(res, walReceiverPid),
    },
  ];
  const bulk: Record<string, BulkResult> = {};
  const catchUp: Record<string, CatchUpResult> = {};
  const bulkRuns: Record<string, number[]> = { '1sk': [], vanillaSync: [] };
  const catchUpRuns: Record<string, number[]> = { '1sk': [], vanillaSync: [] };
  for (let r = 1; r <= BULK_ROUNDS; r++) {
    for (const t of bulkTargets) {
      log(`bulk round ${r}/${BULK_ROUNDS}: ${t.name}: INSERT of ${BULK_ROWS} rows, streaming ...`);
      const b = await bulkStreaming(t);
      bulkRuns[t.name]!.push(round(mbps(b.walBytes, b.ms), 1));
      if (bulk[t.name] === undefined || mbps(b.walBytes, b.ms) > mbps(bulk[t.name]!.walBytes, bulk[t.name]!.ms)) bulk[t.name] = b;
      log(`${t.name}: ${(b.walBytes / MB).toFixed(1)} MB of WAL flushed by the receiver ${b.ms.toFixed(0)} ms after the INSERT started = ${mbps(b.walBytes, b.ms).toFixed(1)} MB/s ` +
        `(INSERT incl. commit ${b.insertMs.toFixed(0)} ms; receiver at most ${(b.maxLagBytes / MB).toFixed(1)} MB behind the insert position)`);
      log(`bulk round ${r}/${BULK_ROUNDS}: ${t.name}: INSERT with the receiver paused, then its catch-up ...`);
      const c = await bulkCatchUp(t);
      catchUpRuns[t.name]!.push(round(mbps(c.walBytes, c.ms), 1));
      if (catchUp[t.name] === undefined || mbps(c.walBytes, c.ms) > mbps(catchUp[t.name]!.walBytes, catchUp[t.name]!.ms)) catchUp[t.name] = c;
      log(`${t.name}: catch-up through ${(c.walBytes / MB).toFixed(1)} MB of WAL in ${c.ms.toFixed(0)} ms = ${mbps(c.walBytes, c.ms).toFixed(1)} MB/s`);
    }
  }
  // The disk's sequential write + fdatasync rate, the ceiling of any catch-up (every byte is written and synced).
  const diskMBps = await diskWriteMBps(path.join(res.workdir, 'disk-probe'));
  log(`disk: sequential write of ${(DISK_PROBE_BYTES / MB).toFixed(0)} MB + fdatasync: ${diskMBps.toFixed(1)} MB/s`);
  const loadEnd = os.loadavg();

  // Figures: each configuration's best-TPS run.
  const best = {} as Record<ConfigName, RunResult>;
  for (const name of CONFIGS) {
    const mine = runs.filter((r) => r.config === name);
    best[name] = mine.reduce((a, b) => (b.tps > a.tps ? b : a));
  }
  const key = { '1sk': '1Sk', '3sk': '3Sk', vanillaSync: 'VanillaSync', noSync: 'NoSync' } as const;
  const result: Record<string, unknown> = { quick, scale: SCALE, durationSec: BENCH_SEC, clients: CLIENTS, threads: THREADS, rounds: ROUNDS, pageserverRunning: keepPageserver };
  for (const name of CONFIGS) result[`tps${key[name]}`] = round(best[name].tps, 1);
  for (const name of CONFIGS) result[`latencyMsAvg${key[name]}`] = round(best[name].latency.avgMs, 3);
  for (const name of CONFIGS) result[`latencyMsP50${key[name]}`] = round(best[name].latency.p50Ms, 3);
  for (const name of CONFIGS) result[`latencyMsP99${key[name]}`] = round(best[name].latency.p99Ms, 3);
  for (const name of CONFIGS) result[`commitLatencyMsAvg${key[name]}`] = round(best[name].commitLatencyAvgMs, 3);
  for (const name of CONFIGS) result[`cpuBusyPct${key[name]}`] = round(best[name].cpuBusyPct, 1);
  for (const name of CONFIGS) {
    const r = best[name];
    const perTx = (ms: number): number => round((ms * 1000) / r.latency.transactions, 0);
    if (name === '1sk' || name === '3sk') {
      result[`cpuUsPerTxCompute${key[name]}`] = perTx(r.cpuMs['compute'] ?? Number.NaN);
      result[`cpuUsPerTxSafekeepers${key[name]}`] = perTx(Object.entries(r.cpuMs).filter(([k]) => k.startsWith('sk')).reduce((a, [, ms]) => a + ms, 0));
    } else {
      result[`cpuUsPerTxPrimary${key[name]}`] = perTx(r.cpuMs['primary'] ?? Number.NaN);
      if (name === 'vanillaSync') result['cpuUsPerTxStandbyVanillaSync'] = perTx(r.cpuMs['standby'] ?? Number.NaN);
    }
  }
  // CPU used by anything this benchmark did not start, during the runs: > 10 % means a busy machine.
  const allRuns = [...runs, ...Object.values(single)];
  result['foreignCpuPctMax'] = round(Math.max(...allRuns.map((r) => r.foreignCpuPct)), 1);
  result['stealPctMax'] = round(Math.max(...allRuns.map((r) => r.stealPct)), 1);
  const ratio = (a: ConfigName, b: ConfigName): number => round(best[a].tps / best[b].tps, 3);
  result['ratio1SkVsVanillaSync'] = ratio('1sk', 'vanillaSync');
  result['ratio3SkVsVanillaSync'] = ratio('3sk', 'vanillaSync');
  result['ratio1SkVsNoSync'] = ratio('1sk', 'noSync');
  result['ratio3SkVsNoSync'] = ratio('3sk', 'noSync');
  result['ratioVanillaSyncVsNoSync'] = ratio('vanillaSync', 'noSync');
  result['targetRatio3SkVsVanillaSync'] = 0.9;
  for (const name of CONFIGS) result[`tps1Client${key[name]}`] = round(single[name].tps, 1);
  for (const name of CONFIGS) result[`commitLatencyMsAvg1Client${key[name]}`] = round(single[name].commitLatencyAvgMs, 3);
  for (const name of CONFIGS) result[`latencyMsP991Client${key[name]}`] = round(single[name].latency.p99Ms, 3);
  result['ratio1Client1SkVsVanillaSync'] = round(single['1sk'].tps / single.vanillaSync.tps, 3);
  result['ratio1Client3SkVsVanillaSync'] = round(single['3sk'].tps / single.vanillaSync.tps, 3);
  for (const name of CONFIGS) result[`tpsRuns${key[name]}`] = runs.filter((r) => r.config === name).map((r) => round(r.tps, 1));
  const b1 = bulk['1sk']!;
  const bv = bulk['vanillaSync']!;
  const c1 = catchUp['1sk']!;
  const cv = catchUp['vanillaSync']!;
  result['bulkRows'] = BULK_ROWS;
  result['bulkMB1Sk'] = round(b1.walBytes / MB, 1);
  result['bulkMBVanillaSync'] = round(bv.walBytes / MB, 1);
  result['bulkMBps1Sk'] = round(mbps(b1.walBytes, b1.ms), 1);
  result['bulkMBpsVanillaSync'] = round(mbps(bv.walBytes, bv.ms), 1);
  result['ratioBulkVsVanillaSync'] = round(mbps(b1.walBytes, b1.ms) / mbps(bv.walBytes, bv.ms), 3);
  result['bulkMaxLagMB1Sk'] = round(b1.maxLagBytes / MB, 1);
  result['bulkMaxLagMBVanillaSync'] = round(bv.maxLagBytes / MB, 1);
  result['catchUpMBps1Sk'] = round(mbps(c1.walBytes, c1.ms), 1);
  result['catchUpMBpsVanillaSync'] = round(mbps(cv.walBytes, cv.ms), 1);
  result['ratioCatchUpVsVanillaSync'] = round(mbps(c1.walBytes, c1.ms) / mbps(cv.walBytes, cv.ms), 3);
  result['bulkMBpsRuns1Sk'] = bulkRuns['1sk'];
  result['bulkMBpsRunsVanillaSync'] = bulkRuns['vanillaSync'];
  result['catchUpMBpsRuns1Sk'] = catchUpRuns['1sk'];
  result['catchUpMBpsRunsVanillaSync'] = catchUpRuns['vanillaSync'];
  result['diskWriteFsyncMBps'] = round(diskMBps, 1);
  result['pgbenchInitMs'] = initMs;
  result['loadAvg1mStart'] = round(loadStart[0] ?? Number.NaN, 2);
  result['loadAvg1mEnd'] = round(loadEnd[0] ?? Number.NaN, 2);
  result['cpus'] = os.cpus().length;
  result['settingsDifferences'] = v.settingsDiff;

  console.log(`bench:safekeepers${quick ? ' (BENCH_QUICK)' : ''}: pgbench -c ${CLIENTS} -j ${THREADS} -T ${BENCH_SEC}, scale ${SCALE}, best of ${ROUNDS} run(s); ` +
    `every primary with the Strata compute's settings (wal_consistency_checking=all, wal_compression=zstd, fsync=on, autovacuum=off); ` +
    `settings that differ: ${v.settingsDiff.join(', ')}; pageserver ${keepPageserver ? 'running' : 'stopped during the runs'}`);
  for (const name of CONFIGS) {
    const r = best[name];
    console.log(`  ${configs[name].label}: ${r.tps.toFixed(0)} tps, latency avg ${r.latency.avgMs.toFixed(2)} ms, p99 ${r.latency.p99Ms.toFixed(2)} ms, commit (END) avg ${r.commitLatencyAvgMs.toFixed(3)} ms`);
  }
  console.log(`  ratios: 1 sk / vanilla sync ${String(result['ratio1SkVsVanillaSync'])}, 3 sk / vanilla sync ${String(result['ratio3SkVsVanillaSync'])} (target >= 0.9: ${(result['ratio3SkVsVanillaSync'] as number) >= 0.9 ? 'met' : 'MISSED'}), ` +
    `1 sk / no sync ${String(result['ratio1SkVsNoSync'])}, 3 sk / no sync ${String(result['ratio3SkVsNoSync'])}, vanilla sync / no sync ${String(result['ratioVanillaSyncVsNoSync'])}`);
  console.log(`  one client (pgbench -c 1 -T ${SINGLE_CLIENT_SEC}): ` + CONFIGS.map((n) => `${n} ${single[n].tps.toFixed(0)} tps, commit ${single[n].commitLatencyAvgMs.toFixed(3)} ms`).join('; ') +
    `; ratios 1 sk / vanilla sync ${String(result['ratio1Client1SkVsVanillaSync'])}, 3 sk / vanilla sync ${String(result['ratio1Client3SkVsVanillaSync'])}`);
  console.log(`  bulk INSERT (${BULK_ROWS} rows): 1 safekeeper ${String(result['bulkMBps1Sk'])} MB/s over ${String(result['bulkMB1Sk'])} MB, vanilla standby ${String(result['bulkMBpsVanillaSync'])} MB/s ` +
    `(ratio ${String(result['ratioBulkVsVanillaSync'])}); catch-up with the WAL already written: 1 safekeeper ${String(result['catchUpMBps1Sk'])} MB/s, ` +
    `vanilla standby ${String(result['catchUpMBpsVanillaSync'])} MB/s (ratio ${String(result['ratioCatchUpVsVanillaSync'])}); ` +
    `the disk's sequential write + fdatasync rate ${String(result['diskWriteFsyncMBps'])} MB/s`);
  console.log(`  load average (1 min) ${String(result['loadAvg1mStart'])} at the start, ${String(result['loadAvg1mEnd'])} at the end, ${os.cpus().length} CPUs; ` +
    `CPU used by other work during the runs at most ${String(result['foreignCpuPctMax'])} % of the machine`);
  console.log(JSON.stringify(result));
}

if (!existsSync(pgTool('pgbench'))) throw new Error(`no pgbench in ${PG_BIN} (set STRATA_PG_BIN)`);
await main();
