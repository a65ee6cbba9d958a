/**
 * Test harness: throwaway PostgreSQL 15 clusters for integration tests and benchmarks.
 *
 * Each call to startPostgres() creates a private temp dir (`strata-pg-XXXXXX` under os.tmpdir()) that
 * holds everything the cluster owns: the data dir (`data/`), the server log (`postgres.log`) and the
 * Unix socket. Nothing is shared between clusters, so tests can run side by side, and deleting the temp
 * dir removes every trace.
 *
 * Why it is built this way:
 * - PostgreSQL refuses to run as root, and CI runs as root. When we are root, the temp dir is handed to
 *   the `postgres` OS user and every server-side binary (initdb, postgres) is spawned with that uid/gid.
 *   Root can still read the files (copyWal, pg_waldump over copies) without changing ownership back.
 * - The port is picked by the kernel (bind 127.0.0.1:0, read it, close it). Another process can grab it
 *   in the gap, so startup retries with a fresh port when the server log says the address is in use, and
 *   the readiness probe checks `data_directory` so we never mistake someone else's server for ours.
 * - The postmaster is spawned directly (not via pg_ctl) in its own process group, so we hold its pid and
 *   can signal it (SIGTERM smart, SIGINT fast, SIGQUIT immediate) and, as a last resort, SIGKILL the whole
 *   group (postmaster and every backend).
 * - Leaks are the main hazard of a test harness, so there are three layers: (1) withPostgres() registers
 *   teardown with node:test, which runs even when the test fails; (2) every running cluster sits in a
 *   module-level set, and stopAllPostgres() stops them all; (3) a process 'exit' hook and SIGINT/SIGTERM/
 *   SIGHUP handlers stop survivors synchronously (SIGQUIT, a bounded busy-wait, then SIGKILL of the
 *   process group) and remove their temp dirs. For (3) to fire, a forgotten server must not keep the
 *   process alive, so the postmaster child and the harness's own idle connection are unref()'d (the
 *   connection is ref()'d while one of its queries is in flight). Clients handed out by connect() stay
 *   ref'd: a test that forgets both them and stop() will hang rather than exit.
 * - Defaults favour speed and WAL coverage: fsync off, wal_level=replica, room for WAL senders, slots and
 *   prepared transactions, and wal_keep_size large enough that checkpoints do not delete WAL a test still
 *   wants to copy out with copyWal().
 *
 * Invariants: a handle's temp dir exists from startPostgres() until cleanup(); stop() is idempotent and
 * resolves only once the postmaster has exited; a handle is in the running set exactly while its
 * postmaster may be alive.
 */
import { execFileSync, spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as fsp from 'node:fs/promises';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import pg from 'pg';
import type { QueryResult, QueryResultRow } from 'pg';
import { parseLsn } from '../../src/postgres/lsn.ts';
import type { Lsn } from '../../src/postgres/lsn.ts';
import { parseWalSegmentFileName } from '../../src/postgres/walformat.ts';
import { InvalidInputError, StrataError } from '../../src/util/errors.ts';
import type { ErrorContext } from '../../src/util/errors.ts';

export const DEFAULT_PG_BIN_DIR = '/usr/lib/postgresql/15/bin';
export const LOOPBACK_HOST = '127.0.0.1';

const DEFAULT_START_TIMEOUT_MS = 60_000;
const DEFAULT_STOP_TIMEOUT_MS = 15_000;
const KILL_WAIT_MS = 5_000;
const CLIENT_END_TIMEOUT_MS = 2_000;
const READY_POLL_INTERVAL_MS = 50;
const READY_CONNECT_TIMEOUT_MS = 2_000;
const MAX_READY_PROBES = 100_000;
const MAX_PORT_ATTEMPTS = 5;
const DEFAULT_RUN_TIMEOUT_MS = 120_000;
const DEFAULT_MAX_OUTPUT_BYTES = 256 * 1024 * 1024;
const LOG_TAIL_BYTES = 16 * 1024;
const LOG_TAIL_LINES = 40;
const EXIT_HOOK_QUIT_WAIT_MS = 3_000;
const EXIT_HOOK_KILL_WAIT_MS = 2_000;

export type ShutdownMode = 'smart' | 'fast' | 'immediate';

const SHUTDOWN_SIGNAL = { smart: 'SIGTERM', fast: 'SIGINT', immediate: 'SIGQUIT' } as const;

export type ConfValue = string | number | boolean;

export interface StartPostgresOptions {
  /** Directory with initdb/postgres/psql/...; default env STRATA_PG_BIN, then /usr/lib/postgresql/15/bin. */
  binDir?: string;
  /** Extra initdb arguments, e.g. ['--wal-segsize=1']. */
  initdbArgs?: readonly string[];
  /** postgresql.conf settings; override the harness defaults. `port` is always chosen by the harness. */
  conf?: Readonly<Record<string, ConfValue>>;
  /** fsync=on when true; default off (throwaway clusters). */
  fsync?: boolean;
  /** Bound on initdb + startup until the server accepts connections. Default 60 s. */
  startTimeoutMs?: number;
}

export interface RunOptions {
  /** Extra environment on top of PGHOST/PGPORT/PGUSER/PGDATABASE/PGDATA. */
  env?: Readonly<Record<string, string>>;
  /** Written to the child's stdin, which is then closed. */
  input?: string | Uint8Array;
  /** Run as the `postgres` OS user when we are root (needed for binaries that write the data dir). Default false. */
  asPostgresUser?: boolean;
  /** Do not throw on a non-zero exit status. Default false. */
  allowFailure?: boolean;
  /** Kill the child (SIGKILL) after this long and throw. Default 120 s. */
  timeoutMs?: number;
  /** Fail when stdout or stderr grows past this. Default 256 MiB. */
  maxOutputBytes?: number;
  cwd?: string;
}

export interface RunResult {
  command: string;
  exitCode: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

export interface PsqlOptions {
  database?: string;
  /** Added after the harness's own flags (-X -q -A -t -v ON_ERROR_STOP=1 ... -f -). */
  extraArgs?: readonly string[];
  allowFailure?: boolean;
  timeoutMs?: number;
}

export interface StopOptions {
  /** smart = SIGTERM, fast = SIGINT (default), immediate = SIGQUIT. */
  mode?: ShutdownMode;
  /** How long to wait for the postmaster before SIGKILL of its process group. Default 15 s. */
  timeoutMs?: number;
}

export interface CopyWalOptions {
  /** Skip segments that end at or before this LSN. */
  fromLsn?: Lsn;
  /** Skip segments that start after this LSN (e.g. recycled future segments past the end of WAL). */
  throughLsn?: Lsn;
}

export interface PostgresHandle {
  readonly tmpDir: string;
  readonly dataDir: string;
  readonly walDir: string;
  readonly logFile: string;
  readonly socketDir: string;
  readonly binDir: string;
  readonly host: string;
  readonly port: number;
  /** pid of the postmaster. */
  readonly pid: number;
  readonly walSegmentSizeBytes: number;
  readonly systemIdentifier: bigint;
  connectionConfig(database?: string): pg.ClientConfig;
  connectionString(database?: string): string;
  /** A connected client; closed by stop() if the caller has not closed it. */
  connect(database?: string): Promise<pg.Client>;
  /** Runs SQL on a harness-owned connection to database `postgres`. */
  query<R extends QueryResultRow = QueryResultRow>(sql: string, params?: unknown[]): Promise<QueryResult<R>>;
  /** Runs SQL through the real psql binary (script on stdin; -X -q -A -t; ON_ERROR_STOP), as the postgres OS user when root. */
  psql(sql: string, opts?: PsqlOptions): Promise<RunResult>;
  /** Runs a binary (a bare name is looked up in binDir) with PGHOST/PGPORT/PGUSER/PGDATABASE/PGDATA set. */
  run(binary: string, args: readonly string[], opts?: RunOptions): Promise<RunResult>;
  /** pg_current_wal_insert_lsn() (default) or pg_current_wal_flush_lsn(). */
  currentLsn(kind?: 'insert' | 'flush'): Promise<Lsn>;
  /** pg_switch_wal(); returns its result (the end of the switch record, or the current position if nothing was written). */
  switchWal(): Promise<Lsn>;
  checkpoint(): Promise<void>;
  /** Copies WAL segment files now in pg_wal to destDir (created if missing); returns the copied paths in WAL order. */
  copyWal(destDir: string, opts?: CopyWalOptions): Promise<string[]>;
  isRunning(): boolean;
  stop(opts?: StopOptions): Promise<void>;
  /** Stops the server if needed, then removes the temp dir (kept when STRATA_KEEP_TMP=1). */
  cleanup(): Promise<void>;
}

/** What node:test hands us: a TestContext, or `{ after }` imported from node:test for suite-level use. */
export interface TeardownRegistrar {
  after(fn: () => unknown): void;
}

export class HarnessError extends StrataError {
  constructor(message: string, context: ErrorContext = {}, cause?: unknown) {
    super('test_harness', message, context, cause === undefined ? undefined : { cause });
    this.name = 'HarnessError';
  }
}

// ---------------------------------------------------------------------------------------------
// Module-level safety net

const running = new Set<PostgresCluster>();
let hooksInstalled = false;

function installProcessHooks(): void {
  if (hooksInstalled) return;
  hooksInstalled = true;
  process.on('exit', killSurvivorsSync);
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    const handler = (): void => {
      killSurvivorsSync();
      process.removeListener(sig, handler);
      // Nobody else handles this signal: re-raise it so the default action (termination) happens.
      if (process.listenerCount(sig) === 0) process.kill(process.pid, sig);
    };
    process.on(sig, handler);
  }
}

function killSurvivorsSync(): void {
  for (const cluster of [...running]) cluster.killSync();
}

/** Stops (fast) and removes every cluster this process started that is still running. */
export async function stopAllPostgres(): Promise<void> {
  const clusters = [...running];
  const results = await Promise.allSettled(clusters.map(async (c) => {
    await c.stop();
    await c.cleanup();
  }));
  const failed = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (failed.length > 0) {
    throw new HarnessError(`stopAllPostgres: ${failed.length} of ${clusters.length} clusters failed to stop: ${failed.map((f) => String(f.reason)).join('; ')}`);
  }
}

/** Number of clusters this process started whose postmaster may still be running. */
export function runningPostgresCount(): number {
  return running.size;
}

/** Starts a cluster and registers stop + cleanup as teardown with node:test (runs also when the test fails). */
export async function withPostgres(t: TeardownRegistrar, opts: StartPostgresOptions = {}): Promise<PostgresHandle> {
  const handle = await startPostgres(opts);
  t.after(async () => {
    try {
      await handle.stop();
    } finally {
      await handle.cleanup();
    }
  });
  return handle;
}

// ---------------------------------------------------------------------------------------------
// OS helpers

interface OsUser {
  uid: number;
  gid: number;
}

let postgresUserCache: OsUser | null | undefined;

/** The `postgres` OS user when we run as root (servers must not run as root); null otherwise. */
export function postgresOsUser(): OsUser | null {
  if (postgresUserCache !== undefined) return postgresUserCache;
  if (typeof process.getuid !== 'function' || process.getuid() !== 0) {
    postgresUserCache = null;
    return null;
  }
  let uid: number;
  let gid: number;
  try {
    uid = Number(execFileSync('id', ['-u', 'postgres'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }).trim());
    gid = Number(execFileSync('id', ['-g', 'postgres'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }).trim());
  } catch (err) {
    throw new HarnessError('running as root, but there is no `postgres` OS user to run PostgreSQL as (installing postgresql-15 creates it)', {}, err);
  }
  if (!Number.isInteger(uid) || !Number.isInteger(gid) || uid === 0) {
    throw new HarnessError(`unusable uid/gid for the postgres OS user: ${uid}/${gid}`);
  }
  postgresUserCache = { uid, gid };
  return postgresUserCache;
}

/** True while the process exists and is not a zombie. */
export function isProcessAlive(pid: number): boolean {
  let stat: string;
  try {
    stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ESRCH') return false;
    try {
      process.kill(pid, 0); // no /proc: fall back to a signal probe (cannot tell zombies apart)
      return true;
    } catch {
      return false;
    }
  }
  const close = stat.lastIndexOf(')');
  const state = stat.slice(close + 2, close + 3);
  return state !== 'Z' && state !== 'X' && state !== '';
}

function sleepSync(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function trySignal(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(pid, signal);
  } catch {
    // already gone
  }
}

/** A port the kernel considers free on 127.0.0.1 right now. */
export function getFreePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.unref();
    server.once('error', reject);
    server.listen(0, LOOPBACK_HOST, () => {
      const addr = server.address();
      if (addr === null || typeof addr === 'string') {
        server.close();
        reject(new HarnessError('could not read the port of a probe socket bound to 127.0.0.1:0'));
        return;
      }
      const port = addr.port;
      server.close(() => resolve(port));
    });
  });
}

/** When running as root, the postgres user must be able to reach the temp dir. */
function checkTraversable(dir: string, user: OsUser): void {
  let cur = path.dirname(dir);
  for (let depth = 0; depth < 64; depth++) {
    const st = fs.statSync(cur);
    const ok = (st.mode & 0o001) !== 0 || (st.uid === user.uid && (st.mode & 0o100) !== 0) || (st.gid === user.gid && (st.mode & 0o010) !== 0);
    if (!ok) {
      throw new HarnessError(`the postgres OS user cannot traverse ${cur} (mode ${(st.mode & 0o777).toString(8)}), so it cannot reach the temp dir ${dir}; set TMPDIR to a world-traversable directory such as /tmp`, { dir: cur });
    }
    const parent = path.dirname(cur);
    if (parent === cur) return;
    cur = parent;
  }
}

function readLogTail(logFile: string, fromOffset = 0): string {
  let fd: number;
  try {
    fd = fs.openSync(logFile, 'r');
  } catch {
    return '(no server log)';
  }
  try {
    const size = fs.fstatSync(fd).size;
    const start = Math.max(fromOffset, size - LOG_TAIL_BYTES);
    const buf = Buffer.alloc(Math.max(0, size - start));
    fs.readSync(fd, buf, 0, buf.length, start);
    return buf.toString('utf8').split('\n').slice(-LOG_TAIL_LINES).join('\n');
  } finally {
    fs.closeSync(fd);
  }
}

function fileSize(p: string): number {
  try {
    return fs.statSync(p).size;
  } catch {
    return 0;
  }
}

/** Environment for PostgreSQL binaries: ours, minus any PG* variables that would point them elsewhere. */
function baseEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (!k.startsWith('PG') && v !== undefined) env[k] = v;
  }
  return env;
}

function quoteConfValue(v: ConfValue): string {
  if (typeof v === 'boolean') return v ? 'on' : 'off';
  if (typeof v === 'number') {
    if (!Number.isFinite(v)) throw new InvalidInputError(`postgresql.conf value must be finite, got ${v}`);
    return String(v);
  }
  return `'${v.replace(/\\/g, '\\\\').replace(/'/g, "''")}'`;
}

const CONF_NAME = /^[A-Za-z_][A-Za-z0-9_.]*$/;

function keepTmp(): boolean {
  return process.env['STRATA_KEEP_TMP'] === '1';
}

interface SpawnedResult {
  exitCode: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** Spawns, collects bounded output, enforces a timeout. Never throws on exit status (callers decide). */
function runProcess(file: string, args: readonly string[], opts: {
  env: NodeJS.ProcessEnv;
  cwd: string;
  user: OsUser | null;
  input?: string | Uint8Array | undefined;
  timeoutMs: number;
  maxOutputBytes: number;
}): Promise<SpawnedResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(file, [...args], {
      env: opts.env,
      cwd: opts.cwd,
      stdio: ['pipe', 'pipe', 'pipe'],
      ...(opts.user !== null ? { uid: opts.user.uid, gid: opts.user.gid } : {}),
    });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    let outBytes = 0;
    let errBytes = 0;
    let failure: Error | null = null;
    const fail = (e: Error): void => {
      if (failure === null) failure = e;
      child.kill('SIGKILL');
    };
    const name = path.basename(file);
    const timer = setTimeout(() => fail(new HarnessError(`${name} did not finish within ${opts.timeoutMs} ms; killed`, { command: file })), opts.timeoutMs);
    child.stdout.on('data', (chunk: Buffer) => {
      outBytes += chunk.length;
      if (outBytes > opts.maxOutputBytes) fail(new HarnessError(`${name} wrote more than ${opts.maxOutputBytes} bytes to stdout; killed`, { command: file }));
      else out.push(chunk);
    });
    child.stderr.on('data', (chunk: Buffer) => {
      errBytes += chunk.length;
      if (errBytes > opts.maxOutputBytes) fail(new HarnessError(`${name} wrote more than ${opts.maxOutputBytes} bytes to stderr; killed`, { command: file }));
      else err.push(chunk);
    });
    child.stdin.on('error', () => {
      // EPIPE when the child exits without reading its input; the exit status tells the story.
    });
    child.once('error', (e) => {
      clearTimeout(timer);
      reject(new HarnessError(`could not run ${file}: ${e.message}`, { command: file }, e));
    });
    child.once('close', (exitCode, signal) => {
      clearTimeout(timer);
      if (failure !== null) {
        reject(failure);
        return;
      }
      resolve({ exitCode, signal, stdout: Buffer.concat(out).toString('utf8'), stderr: Buffer.concat(err).toString('utf8') });
    });
    if (opts.input !== undefined) child.stdin.end(opts.input);
    else child.stdin.end();
  });
}

interface RefCounted {
  ref(): unknown;
  unref(): unknown;
}

/** The net.Socket under a pg.Client (pg keeps it at client.connection.stream). */
function socketOf(client: pg.Client): RefCounted | null {
  const stream = (client as unknown as { connection?: { stream?: Partial<RefCounted> } }).connection?.stream;
  if (stream !== undefined && typeof stream.ref === 'function' && typeof stream.unref === 'function') return stream as RefCounted;
  return null;
}

function parseSizeSetting(setting: string, unit: string | null): number {
  const n = Number(setting);
  const mult: Record<string, number> = { B: 1, kB: 1024, '8kB': 8192, MB: 1024 * 1024, GB: 1024 * 1024 * 1024 };
  const m = unit === null ? 1 : mult[unit];
  if (!Number.isInteger(n) || m === undefined) throw new HarnessError(`cannot interpret wal_segment_size setting "${setting}" with unit "${unit}"`);
  return n * m;
}

// ---------------------------------------------------------------------------------------------
// The cluster

interface ExitInfo {
  code: number | null;
  signal: NodeJS.Signals | null;
  error?: Error;
}

class PostgresCluster implements PostgresHandle {
  readonly tmpDir: string;
  readonly dataDir: string;
  readonly walDir: string;
  readonly logFile: string;
  readonly socketDir: string;
  readonly binDir: string;
  readonly host = LOOPBACK_HOST;
  port = 0;
  pid = 0;
  walSegmentSizeBytes = 0;
  systemIdentifier = 0n;

  readonly #user: OsUser | null;
  #child: ChildProcess | null = null;
  #exited: Promise<ExitInfo> | null = null;
  #exitInfo: ExitInfo | null = null;
  #stopPromise: Promise<void> | null = null;
  #cleanupPromise: Promise<void> | null = null;
  #admin: pg.Client | null = null;
  #adminBroken = false;
  #adminInFlight = 0;
  readonly #clients = new Set<pg.Client>();

  constructor(tmpDir: string, binDir: string, user: OsUser | null) {
    this.tmpDir = tmpDir;
    this.binDir = binDir;
    this.dataDir = path.join(tmpDir, 'data');
    this.walDir = path.join(this.dataDir, 'pg_wal');
    this.logFile = path.join(tmpDir, 'postgres.log');
    this.socketDir = tmpDir;
    this.#user = user;
  }

  // ---- startup --------------------------------------------------------------------------------

  async init(opts: StartPostgresOptions, deadline: number): Promise<void> {
    const initdbArgs = ['-D', this.dataDir, '-A', 'trust', '-U', 'postgres', '--no-sync', '-E', 'UTF8', '--locale=C', '--no-instructions', ...(opts.initdbArgs ?? [])];
    const res = await runProcess(path.join(this.binDir, 'initdb'), initdbArgs, {
      env: this.#serverEnv(),
      cwd: this.tmpDir,
      user: this.#user,
      timeoutMs: Math.max(1, deadline - Date.now()),
      maxOutputBytes: 16 * 1024 * 1024,
    });
    if (res.exitCode !== 0) {
      throw new HarnessError(`initdb failed (exit ${res.exitCode ?? res.signal}) for ${this.dataDir}:\n${res.stderr.trim()}\n${res.stdout.trim()}`, { dataDir: this.dataDir });
    }
    fs.appendFileSync(path.join(this.dataDir, 'postgresql.conf'), "\n# Added by the Strata test harness (test/harness/postgres.ts)\ninclude 'strata-harness.conf'\n");
  }

  #writeHarnessConf(opts: StartPostgresOptions, port: number): void {
    const settings: Record<string, ConfValue> = {
      listen_addresses: LOOPBACK_HOST,
      unix_socket_directories: this.socketDir,
      fsync: opts.fsync === true,
      wal_level: 'replica',
      max_wal_senders: 10,
      max_replication_slots: 10,
      max_prepared_transactions: 10,
      max_connections: 50,
      shared_buffers: '32MB',
      // Keep WAL around so a test can still copy a range out after checkpoints.
      wal_keep_size: '1GB',
      max_wal_size: '1GB',
      logging_collector: false,
      log_line_prefix: '%m [%p] %q%a ',
      log_checkpoints: true,
      ...opts.conf,
      port,
    };
    const lines = ['# Written by the Strata test harness; rewritten at every start.'];
    for (const [name, value] of Object.entries(settings)) {
      if (!CONF_NAME.test(name)) throw new InvalidInputError(`invalid postgresql.conf setting name "${name}"`, { setting: name });
      lines.push(`${name} = ${quoteConfValue(value)}`);
    }
    const confPath = path.join(this.dataDir, 'strata-harness.conf');
    fs.writeFileSync(confPath, lines.join('\n') + '\n', { mode: 0o644 });
    if (this.#user !== null) fs.chownSync(confPath, this.#user.uid, this.#user.gid);
  }

  async start(opts: StartPostgresOptions, deadline: number): Promise<void> {
    if (opts.conf !== undefined && Object.hasOwn(opts.conf, 'port')) {
      throw new InvalidInputError('startPostgres: `port` cannot be set in conf; the harness picks a free port at run time');
    }
    for (let attempt = 1; attempt <= MAX_PORT_ATTEMPTS; attempt++) {
      const port = await getFreePort();
      this.#writeHarnessConf(opts, port);
      const logOffset = fileSize(this.logFile);
      this.#spawnPostmaster();
      this.port = port;
      const outcome = await this.#waitReady(deadline);
      if (outcome === 'ready') return;
      const tail = readLogTail(this.logFile, logOffset);
      if (outcome === 'exited' && /Address already in use/i.test(tail) && attempt < MAX_PORT_ATTEMPTS) {
        continue; // someone took the port between our probe and the server's bind
      }
      const why = outcome === 'exited'
        ? `the server exited (${this.#exitInfo?.error?.message ?? `code ${this.#exitInfo?.code}, signal ${this.#exitInfo?.signal}`})`
        : 'it did not accept connections in time';
      throw new HarnessError(`PostgreSQL in ${this.dataDir} failed to start on ${LOOPBACK_HOST}:${port}: ${why}. Last lines of ${this.logFile}:\n${tail}`, { dataDir: this.dataDir, port });
    }
  }

  #spawnPostmaster(): void {
    const logFd = fs.openSync(this.logFile, 'a', 0o644);
    let child: ChildProcess;
    try {
      if (this.#user !== null) fs.fchownSync(logFd, this.#user.uid, this.#user.gid);
      child = spawn(path.join(this.binDir, 'postgres'), ['-D', this.dataDir], {
        env: this.#serverEnv(),
        cwd: this.tmpDir,
        stdio: ['ignore', logFd, logFd],
        detached: true, // own process group: SIGKILL of -pid reaches every backend
        ...(this.#user !== null ? { uid: this.#user.uid, gid: this.#user.gid } : {}),
      });
    } finally {
      fs.closeSync(logFd);
    }
    this.#child = child;
    this.#exitInfo = null;
    this.#exited = new Promise<ExitInfo>((resolve) => {
      child.once('exit', (code, signal) => {
        this.#exitInfo = { code, signal };
        resolve(this.#exitInfo);
      });
      child.once('error', (error) => {
        this.#exitInfo = { code: null, signal: null, error };
        resolve(this.#exitInfo);
      });
    });
    child.unref();
    if (child.pid !== undefined) {
      this.pid = child.pid;
      running.add(this);
    }
  }

  async #waitReady(deadline: number): Promise<'ready' | 'exited' | 'timeout'> {
    for (let probe = 0; probe < MAX_READY_PROBES; probe++) {
      if (this.#exitInfo !== null) {
        running.delete(this);
        return 'exited';
      }
      if (Date.now() >= deadline) return 'timeout';
      const client = new pg.Client({ ...this.connectionConfig('postgres'), connectionTimeoutMillis: READY_CONNECT_TIMEOUT_MS });
      client.on('error', () => { /* reported by connect() or irrelevant while probing */ });
      try {
        await client.connect();
        const res = await client.query<{ data_directory: string; seg: string; unit: string | null; sysid: string }>(
          "SELECT current_setting('data_directory') AS data_directory, s.setting AS seg, s.unit, (SELECT system_identifier::text FROM pg_control_system()) AS sysid FROM pg_settings s WHERE s.name = 'wal_segment_size'",
        );
        const row = res.rows[0];
        if (row === undefined || path.resolve(row.data_directory) !== path.resolve(this.dataDir)) {
          // Another server owns this port (our postmaster will exit with "Address already in use").
          await client.end().catch(() => undefined);
          await Promise.race([sleep(READY_POLL_INTERVAL_MS), this.#exited]);
          continue;
        }
        this.walSegmentSizeBytes = parseSizeSetting(row.seg, row.unit);
        this.systemIdentifier = BigInt(row.sysid);
        this.#trackAdmin(client);
        return 'ready';
      } catch {
        await client.end().catch(() => undefined);
        await Promise.race([sleep(READY_POLL_INTERVAL_MS), this.#exited]);
      }
    }
    return 'timeout';
  }

  #trackAdmin(client: pg.Client): void {
    this.#admin = client;
    this.#adminBroken = false;
    this.#adminInFlight = 0;
    // An idle harness-owned connection must not keep a test process alive: if a test forgets to stop its
    // server, the process has to be able to exit so that the exit hook can kill the server.
    socketOf(client)?.unref();
    client.on('error', () => {
      this.#adminBroken = true;
    });
    client.on('end', () => {
      this.#adminBroken = true;
    });
  }

  #serverEnv(): NodeJS.ProcessEnv {
    const env = baseEnv();
    if (this.#user !== null) env['HOME'] = this.tmpDir;
    return env;
  }

  // ---- clients --------------------------------------------------------------------------------

  connectionConfig(database = 'postgres'): pg.ClientConfig {
    return { host: LOOPBACK_HOST, port: this.port, user: 'postgres', database };
  }

  connectionString(database = 'postgres'): string {
    return `postgresql://postgres@${LOOPBACK_HOST}:${this.port}/${encodeURIComponent(database)}`;
  }

  async connect(database = 'postgres'): Promise<pg.Client> {
    this.#assertRunning('connect');
    const client = new pg.Client(this.connectionConfig(database));
    // Without a listener, a server-side disconnect (e.g. at stop) would crash the process.
    client.on('error', () => undefined);
    this.#clients.add(client);
    client.once('end', () => this.#clients.delete(client));
    try {
      await client.connect();
    } catch (err) {
      this.#clients.delete(client);
      throw new HarnessError(`could not connect to database "${database}" on ${LOOPBACK_HOST}:${this.port}: ${(err as Error).message}`, { database, port: this.port }, err);
    }
    return client;
  }

  async query<R extends QueryResultRow = QueryResultRow>(sql: string, params?: unknown[]): Promise<QueryResult<R>> {
    this.#assertRunning('query');
    if (this.#admin === null || this.#adminBroken) {
      const old = this.#admin;
      this.#admin = null;
      if (old !== null) await old.end().catch(() => undefined);
      const client = new pg.Client(this.connectionConfig('postgres'));
      client.on('error', () => undefined);
      await client.connect();
      this.#trackAdmin(client);
    }
    const admin = this.#admin;
    if (admin === null) throw new HarnessError('internal: no admin connection');
    // The admin socket is unref'd while idle (see #trackAdmin); hold a ref while a query is in flight so
    // that the event loop waits for the answer.
    const socket = socketOf(admin);
    if (this.#adminInFlight++ === 0) socket?.ref();
    try {
      return params === undefined ? await admin.query<R>(sql) : await admin.query<R>(sql, params);
    } finally {
      if (--this.#adminInFlight === 0) socket?.unref();
    }
  }

  #assertRunning(what: string): void {
    if (!this.isRunning()) throw new HarnessError(`${what}: the PostgreSQL server in ${this.dataDir} is not running`, { dataDir: this.dataDir });
  }

  isRunning(): boolean {
    return this.#child !== null && this.#exitInfo === null && this.#stopPromise === null;
  }

  // ---- binaries -------------------------------------------------------------------------------

  async run(binary: string, args: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
    const file = binary.includes('/') ? binary : path.join(this.binDir, binary);
    const asPg = opts.asPostgresUser === true && this.#user !== null;
    const env: NodeJS.ProcessEnv = {
      ...baseEnv(),
      PGHOST: LOOPBACK_HOST,
      PGPORT: String(this.port),
      PGUSER: 'postgres',
      PGDATABASE: 'postgres',
      PGDATA: this.dataDir,
      ...(asPg ? { HOME: this.tmpDir } : {}),
      ...opts.env,
    };
    const command = [file, ...args].join(' ');
    const res = await runProcess(file, args, {
      env,
      cwd: opts.cwd ?? (asPg ? this.tmpDir : process.cwd()),
      user: asPg ? this.#user : null,
      input: opts.input,
      timeoutMs: opts.timeoutMs ?? DEFAULT_RUN_TIMEOUT_MS,
      maxOutputBytes: opts.maxOutputBytes ?? DEFAULT_MAX_OUTPUT_BYTES,
    });
    const result: RunResult = { command, exitCode: res.exitCode, signal: res.signal, stdout: res.stdout, stderr: res.stderr };
    if (res.exitCode !== 0 && opts.allowFailure !== true) {
      throw new HarnessError(`\`${command}\` failed (exit ${res.exitCode ?? res.signal}):\n${res.stderr.trim().split('\n').slice(-20).join('\n')}`, { command, port: this.port });
    }
    return result;
  }

  psql(sql: string, opts: PsqlOptions = {}): Promise<RunResult> {
    const args = ['-X', '-q', '-A', '-t', '-v', 'ON_ERROR_STOP=1', '-h', LOOPBACK_HOST, '-p', String(this.port), '-U', 'postgres', '-d', opts.database ?? 'postgres', '-f', '-', ...(opts.extraArgs ?? [])];
    return this.run('psql', args, {
      input: sql,
      asPostgresUser: true,
      ...(opts.allowFailure !== undefined ? { allowFailure: opts.allowFailure } : {}),
      ...(opts.timeoutMs !== undefined ? { timeoutMs: opts.timeoutMs } : {}),
    });
  }

  // ---- WAL ------------------------------------------------------------------------------------

  async currentLsn(kind: 'insert' | 'flush' = 'insert'): Promise<Lsn> {
    const fn = kind === 'insert' ? 'pg_current_wal_insert_lsn' : 'pg_current_wal_flush_lsn';
    const res = await this.query<{ lsn: string }>(`SELECT ${fn}()::text AS lsn`);
    return parseLsn(res.rows[0]?.lsn ?? '');
  }

  async switchWal(): Promise<Lsn> {
    const res = await this.query<{ lsn: string }>('SELECT pg_switch_wal()::text AS lsn');
    return parseLsn(res.rows[0]?.lsn ?? '');
  }

  async checkpoint(): Promise<void> {
    await this.query('CHECKPOINT');
  }

  async copyWal(destDir: string, opts: CopyWalOptions = {}): Promise<string[]> {
    if (this.walSegmentSizeBytes <= 0) throw new HarnessError('copyWal: WAL segment size unknown (the server never became ready)');
    const seg = BigInt(this.walSegmentSizeBytes);
    await fsp.mkdir(destDir, { recursive: true });
    const names = (await fsp.readdir(this.walDir)).sort();
    const copied: string[] = [];
    for (const name of names) {
      const parsed = parseWalSegmentFileName(name, this.walSegmentSizeBytes);
      if (parsed === null || parsed.partial) continue;
      const segStart = parsed.segNo * seg;
      if (opts.throughLsn !== undefined && segStart > opts.throughLsn) continue;
      if (opts.fromLsn !== undefined && segStart + seg <= opts.fromLsn) continue;
      const dest = path.join(destDir, name);
      await fsp.copyFile(path.join(this.walDir, name), dest);
      copied.push(dest);
    }
    return copied;
  }

  // ---- shutdown -------------------------------------------------------------------------------

  stop(opts: StopOptions = {}): Promise<void> {
    if (this.#stopPromise === null) this.#stopPromise = this.#doStop(opts.mode ?? 'fast', opts.timeoutMs ?? DEFAULT_STOP_TIMEOUT_MS);
    return this.#stopPromise;
  }

  async #closeClients(): Promise<void> {
    const all = [...this.#clients];
    if (this.#admin !== null) all.push(this.#admin);
    this.#clients.clear();
    this.#admin = null;
    if (all.length === 0) return;
    let timer: NodeJS.Timeout | undefined;
    const bound = new Promise<void>((resolve) => { timer = setTimeout(resolve, CLIENT_END_TIMEOUT_MS); });
    await Promise.race([Promise.all(all.map((c) => c.end().catch(() => undefined))), bound]);
    clearTimeout(timer);
  }

  async #doStop(mode: ShutdownMode, timeoutMs: number): Promise<void> {
    await this.#closeClients();
    const exited = this.#exited;
    if (this.#child === null || exited === null || this.#exitInfo !== null) {
      running.delete(this);
      return;
    }
    trySignal(this.pid, SHUTDOWN_SIGNAL[mode]);
    let timer: NodeJS.Timeout | undefined;
    // The timer is ref'd on purpose: it keeps the event loop alive while we wait for the unref'd child.
    const timedOut = await Promise.race([
      exited.then(() => false),
      new Promise<boolean>((resolve) => { timer = setTimeout(() => resolve(true), timeoutMs); }),
    ]);
    clearTimeout(timer);
    if (timedOut) {
      trySignal(-this.pid, 'SIGKILL');
      trySignal(this.pid, 'SIGKILL');
      const killed = await Promise.race([
        exited.then(() => true),
        new Promise<boolean>((resolve) => { timer = setTimeout(() => resolve(false), KILL_WAIT_MS); }),
      ]);
      clearTimeout(timer);
      if (!killed) {
        throw new HarnessError(`postmaster pid ${this.pid} (${this.dataDir}) survived SIGKILL for ${KILL_WAIT_MS} ms`, { pid: this.pid, dataDir: this.dataDir });
      }
      // After a SIGKILL, backends may outlive the postmaster for a moment; the group kill above reaches them.
    }
    running.delete(this);
  }

  cleanup(): Promise<void> {
    if (this.#cleanupPromise === null) {
      this.#cleanupPromise = (async () => {
        await this.stop();
        if (keepTmp()) {
          process.stderr.write(`strata test harness: STRATA_KEEP_TMP=1, keeping ${this.tmpDir}\n`);
          return;
        }
        await fsp.rm(this.tmpDir, { recursive: true, force: true, maxRetries: 3 });
      })();
    }
    return this.#cleanupPromise;
  }

  /** Synchronous last resort for the exit hook: immediate shutdown, then SIGKILL of the group, then rm. */
  killSync(): void {
    running.delete(this);
    if (this.#exitInfo !== null || this.pid <= 0) {
      // Already reaped: nothing to signal (the pid may even belong to someone else by now).
    } else if (isProcessAlive(this.pid)) {
      trySignal(this.pid, 'SIGQUIT');
      const quitDeadline = Date.now() + EXIT_HOOK_QUIT_WAIT_MS;
      while (isProcessAlive(this.pid) && Date.now() < quitDeadline) sleepSync(20);
      trySignal(-this.pid, 'SIGKILL');
      const killDeadline = Date.now() + EXIT_HOOK_KILL_WAIT_MS;
      while (isProcessAlive(this.pid) && Date.now() < killDeadline) sleepSync(20);
    } else {
      // A zombie we have not reaped yet: it still holds the process group id; kill any backends left in it.
      trySignal(-this.pid, 'SIGKILL');
    }
    if (!keepTmp()) {
      try {
        fs.rmSync(this.tmpDir, { recursive: true, force: true });
      } catch {
        // best effort while the process exits
      }
    }
  }
}

function resolveBinDir(opts: StartPostgresOptions): string {
  return opts.binDir ?? process.env['STRATA_PG_BIN'] ?? DEFAULT_PG_BIN_DIR;
}

/** Creates, initdb's and starts a throwaway PostgreSQL 15 cluster. See the module comment. */
export async function startPostgres(opts: StartPostgresOptions = {}): Promise<PostgresHandle> {
  const deadline = Date.now() + (opts.startTimeoutMs ?? DEFAULT_START_TIMEOUT_MS);
  const binDir = resolveBinDir(opts);
  if (!fs.existsSync(path.join(binDir, 'postgres'))) {
    throw new HarnessError(`no postgres binary in ${binDir} (set STRATA_PG_BIN or the binDir option; on Debian install postgresql-15)`, { binDir });
  }
  const user = postgresOsUser();
  installProcessHooks();
  const tmpDir = await fsp.mkdtemp(path.join(os.tmpdir(), 'strata-pg-'));
  const cluster = new PostgresCluster(tmpDir, binDir, user);
  try {
    if (user !== null) {
      checkTraversable(tmpDir, user);
      await fsp.chown(tmpDir, user.uid, user.gid);
    }
    await cluster.init(opts, deadline);
    await cluster.start(opts, deadline);
    return cluster;
  } catch (err) {
    try {
      await cluster.stop({ mode: 'immediate', timeoutMs: 5_000 });
    } finally {
      await cluster.cleanup();
    }
    throw err;
  }
}
