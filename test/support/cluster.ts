/**
 * Test support: real `strata broker` and `strata safekeeper` processes (the CLI, as users run it),
 * on ports chosen at run time and kept across restarts, so a test can kill -9 and restart them.
 * Every process started here is killed by `killAll()` (tests call it in teardown) and, as a last
 * resort, when the test process exits.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import pg from 'pg';
import path from 'node:path';
import { freePort } from '../../src/compute/postgresprocess.ts';
import type { SafekeeperAddress } from '../../src/compute/election.ts';
import { formatLsn, parseLsn, type Lsn } from '../../src/postgres/lsn.ts';

const STRATA = path.join(import.meta.dirname, '..', '..', 'bin', 'strata.js');
const live = new Set<ChildProcess>();
process.on('exit', () => {
  for (const p of live) {
    try { p.kill('SIGKILL'); } catch { /* gone */ }
  }
});

export class ManagedProcess {
  readonly name: string;
  private readonly args: string[];
  private readonly readyPattern: RegExp;
  private readonly env: NodeJS.ProcessEnv;
  proc: ChildProcess | null = null;
  output = '';
  private exitPromise: Promise<void> = Promise.resolve();

  constructor(name: string, args: string[], readyPattern: RegExp, env: NodeJS.ProcessEnv = {}) {
    this.name = name;
    this.args = args;
    this.readyPattern = readyPattern;
    this.env = env;
  }

  get running(): boolean {
    return this.proc !== null && this.proc.exitCode === null && this.proc.signalCode === null;
  }

  get pid(): number {
    return this.proc?.pid ?? -1;
  }

  async start(timeoutMs = 30_000): Promise<void> {
    if (this.running) throw new Error(`${this.name} is already running`);
    const proc = spawn(process.execPath, [STRATA, ...this.args], {
      stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, STRATA_LOG: process.env['STRATA_LOG'] ?? 'warn', ...this.env },
    });
    this.proc = proc;
    live.add(proc);
    this.output = '';
    let stdout = '';
    const onData = (d: Buffer): void => {
      this.output += d.toString();
      if (this.output.length > 200_000) this.output = this.output.slice(-100_000);
    };
    proc.stderr!.on('data', onData);
    this.exitPromise = new Promise<void>((res) => proc.once('exit', () => {
      live.delete(proc);
      res();
    }));
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`${this.name} did not start within ${timeoutMs} ms: ${this.output}`)), timeoutMs);
      proc.stdout!.on('data', (d: Buffer) => {
        onData(d);
        stdout += d.toString();
        if (this.readyPattern.test(stdout)) {
          clearTimeout(timer);
          resolve();
        }
      });
      proc.once('exit', (code, sig) => {
        clearTimeout(timer);
        reject(new Error(`${this.name} exited (${code ?? sig}) before it was ready: ${this.output}`));
      });
    });
  }

  /** kill -9. */
  async kill(): Promise<void> {
    if (!this.running) return;
    this.proc!.kill('SIGKILL');
    await this.exitPromise;
  }

  async stop(): Promise<void> {
    if (!this.running) return;
    this.proc!.kill('SIGTERM');
    const t = setTimeout(() => this.proc?.kill('SIGKILL'), 10_000);
    await this.exitPromise;
    clearTimeout(t);
  }

  /** SIGSTOP / SIGCONT: a process that hangs (alive, sockets open, silent). */
  pause(): void {
    this.proc?.kill('SIGSTOP');
  }

  resume(): void {
    this.proc?.kill('SIGCONT');
  }
}

export class BrokerProcess extends ManagedProcess {
  readonly endpoint: string;

  private constructor(port: number, httpPort: number) {
    super('broker', ['broker', '--listen', `127.0.0.1:${port}`, '--listen-http', `127.0.0.1:${httpPort}`], /listen/i);
    this.endpoint = `127.0.0.1:${port}`;
  }

  static async create(): Promise<BrokerProcess> {
    return new BrokerProcess(await freePort(), await freePort());
  }
}

export interface TimelineStatus {
  acceptor_state: { term: number; epoch: number; term_history: { term: number; start_lsn: string }[] };
  flush_lsn: string;
  commit_lsn: string;
  first_lsn: string;
  remote_consistent_lsn: string;
}

export class SafekeeperProcess extends ManagedProcess {
  readonly id: bigint;
  readonly pgPort: number;
  readonly httpPort: number;
  readonly dataDir: string;

  private constructor(id: bigint, dataDir: string, pgPort: number, httpPort: number, broker: string | null) {
    super(`safekeeper ${id}`, [
      'safekeeper', '--id', id.toString(), '--datadir', dataDir, '--listen-pg', `127.0.0.1:${pgPort}`, '--listen-http', `127.0.0.1:${httpPort}`,
      ...(broker !== null ? ['--broker', broker] : []),
    ], /replication on/);
    this.id = id;
    this.dataDir = dataDir;
    this.pgPort = pgPort;
    this.httpPort = httpPort;
  }

  static async create(id: number, dataDir: string, broker: string | null): Promise<SafekeeperProcess> {
    return new SafekeeperProcess(BigInt(id), dataDir, await freePort(), await freePort(), broker);
  }

  get address(): SafekeeperAddress {
    return { id: this.id, pgConnstr: `127.0.0.1:${this.pgPort}`, httpConnstr: `http://127.0.0.1:${this.httpPort}` };
  }

  async status(tenantId: string, timelineId: string): Promise<TimelineStatus> {
    const res = await fetch(`http://127.0.0.1:${this.httpPort}/v1/tenant/${tenantId}/timeline/${timelineId}`, { signal: AbortSignal.timeout(5_000) });
    if (!res.ok) throw new Error(`safekeeper ${this.id} status: HTTP ${res.status} ${await res.text()}`);
    return await res.json() as TimelineStatus;
  }

  async flushLsn(tenantId: string, timelineId: string): Promise<Lsn> {
    return parseLsn((await this.status(tenantId, timelineId)).flush_lsn);
  }

  /** Raw WAL [start, start + maxBytes) as this safekeeper has it (the peer-recovery endpoint). */
  async readWal(tenantId: string, timelineId: string, term: number, start: Lsn, maxBytes: number): Promise<Buffer> {
    const res = await fetch(`http://127.0.0.1:${this.httpPort}/v1/tenant/${tenantId}/timeline/${timelineId}/wal?start_lsn=${formatLsn(start)}&term=${term}&max_bytes=${maxBytes}`,
      { signal: AbortSignal.timeout(10_000) });
    if (!res.ok) throw new Error(`safekeeper ${this.id} wal: HTTP ${res.status} ${await res.text()}`);
    return Buffer.from(await res.arrayBuffer());
  }
}

/** Polls `check` every 50 ms until it returns true; throws with `what` after timeoutMs. */
export async function waitFor(what: string, check: () => Promise<boolean> | boolean, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let lastErr = '';
  while (Date.now() < deadline) {
    try {
      if (await check()) return;
    } catch (err) {
      lastErr = err instanceof Error ? err.message : String(err);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${lastErr !== '' ? ` (last error: ${lastErr})` : ''}`);
}

/** Inserts ids 1, 2, 3, … one transaction each, remembering which COMMITs returned. */
export class AckWriter {
  readonly acked: number[] = [];
  attempted = 0;
  error: Error | null = null;
  private stopped = false;
  private client: pg.Client | null = null;
  private loop: Promise<void> | null = null;
  private readonly port: number;
  private readonly firstId: number;

  constructor(port: number, firstId: number) {
    this.port = port;
    this.firstId = firstId;
  }

  async start(): Promise<void> {
    const client = new pg.Client({ host: '127.0.0.1', port: this.port, user: 'postgres', database: 'postgres' });
    client.on('error', () => undefined);
    await client.connect();
    this.client = client;
    this.attempted = this.firstId - 1;
    this.loop = (async () => {
      try {
        while (!this.stopped) {
          const id = ++this.attempted;
          await client.query('INSERT INTO acks (id) VALUES ($1)', [id]);
          this.acked.push(id);
        }
      } catch (err) {
        this.error = err as Error;
      }
    })();
  }

  get ackedCount(): number {
    return this.acked.length;
  }

  /** Stops after the statement in flight (which may wait for a quorum). */
  async stop(): Promise<void> {
    this.stopped = true;
    await this.loop;
    await this.client?.end().catch(() => undefined);
  }

  /** The compute died: the statement in flight fails; do not wait for it. */
  async abandon(): Promise<void> {
    this.stopped = true;
    await Promise.race([this.loop, new Promise((r) => setTimeout(r, 5_000))]);
  }
}

export async function query(port: number, sql: string): Promise<pg.QueryResult> {
  const c = new pg.Client({ host: '127.0.0.1', port, user: 'postgres', database: 'postgres' });
  await c.connect();
  try {
    return await c.query(sql);
  } finally {
    await c.end();
  }
}

export async function waitForAcks(w: AckWriter, more: number, timeoutMs: number, what: string): Promise<void> {
  const target = w.ackedCount + more;
  await waitFor(`${what}: ${more} more acknowledged commits (have ${w.ackedCount}, error: ${w.error?.message ?? 'none'})`, () => w.ackedCount >= target, timeoutMs);
}

