/**
 * One `postgres` server process: spawn, wait until it accepts connections, stop.
 *
 * Spawned directly (not through pg_ctl) in its own process group, so we hold its pid, get its
 * exit, and can SIGKILL the whole group (postmaster and backends) as a last resort. As root the
 * process runs as the postgres OS user. Stop modes are PostgreSQL's: smart (SIGTERM), fast
 * (SIGINT) and immediate (SIGQUIT); each waits for the exit, bounded, then escalates to SIGKILL.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, fchownSync, openSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import pg from 'pg';
import { StrataError } from '../util/errors.ts';
import { pgBinDir, postgresRunAs } from '../postgres/pgbin.ts';

export type StopMode = 'smart' | 'fast' | 'immediate';

export class ComputeError extends StrataError {
  constructor(message: string, context: Record<string, string | number> = {}, cause?: unknown) {
    super('compute_failed', message, context, { cause });
    this.name = 'ComputeError';
  }
}

/** A free TCP port on 127.0.0.1 (bind :0, read, close; a race with other processes is possible). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.unref();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const addr = server.address();
      if (addr === null || typeof addr === 'string') {
        server.close();
        reject(new ComputeError('could not read the port of a probe socket'));
        return;
      }
      server.close(() => resolve(addr.port));
    });
  });
}

const running = new Set<PostgresProcess>();
let exitHookInstalled = false;

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  // A forgotten server must not outlive us: SIGKILL every process group we started.
  process.on('exit', () => {
    for (const p of running) {
      try {
        process.kill(-p.pid, 'SIGKILL');
      } catch { /* already gone */ }
    }
  });
}

export class PostgresProcess {
  readonly pid: number;
  readonly dataDir: string;
  readonly port: number;
  readonly logFile: string;
  private readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  private exitInfo: { code: number | null; signal: NodeJS.Signals | null } | null = null;

  private constructor(child: ChildProcess, dataDir: string, port: number, logFile: string) {
    this.pid = child.pid!;
    this.dataDir = dataDir;
    this.port = port;
    this.logFile = logFile;
    this.exited = new Promise((resolve) => {
      child.once('exit', (code, signal) => {
        this.exitInfo = { code, signal };
        running.delete(this);
        resolve(this.exitInfo);
      });
    });
  }

  get isRunning(): boolean {
    return this.exitInfo === null;
  }

  /**
   * Starts `postgres -D dataDir` (the config there sets the port) and waits until it accepts
   * queries. `outliveUs`: the server is meant to keep running after this process exits (the CLI's
   * endpoints), so the exit hook leaves it alone.
   */
  static async start(opts: { dataDir: string; port: number; logFile: string; binDir?: string; readyTimeoutMs?: number; user?: string; outliveUs?: boolean }): Promise<PostgresProcess> {
    installExitHook();
    const runAs = postgresRunAs();
    const logFd = openSync(opts.logFile, 'a', 0o644);
    let child: ChildProcess;
    try {
      if (runAs !== null) fchownSync(logFd, runAs.uid, runAs.gid);
      child = spawn(path.join(pgBinDir(opts.binDir), 'postgres'), ['-D', opts.dataDir], {
        cwd: opts.dataDir,
        env: { ...process.env, LC_ALL: 'C' },
        stdio: ['ignore', logFd, logFd],
        detached: true,
        ...(runAs !== null ? { uid: runAs.uid, gid: runAs.gid } : {}),
      });
    } finally {
      closeSync(logFd);
    }
    if (child.pid === undefined) {
      const err = await new Promise<Error>((resolve) => child.once('error', resolve));
      throw new ComputeError(`could not start postgres: ${err.message}`, { dataDir: opts.dataDir }, err);
    }
    child.unref();
    const proc = new PostgresProcess(child, opts.dataDir, opts.port, opts.logFile);
    if (opts.outliveUs !== true) running.add(proc);
    try {
      await proc.waitReady(opts.readyTimeoutMs ?? 60_000, opts.user ?? 'postgres');
    } catch (err) {
      await proc.stop('immediate').catch(() => undefined);
      throw err;
    }
    return proc;
  }

  private async waitReady(timeoutMs: number, user: string): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    let lastError = '';
    for (let attempt = 0; Date.now() < deadline; attempt++) {
      if (!this.isRunning) {
        throw new ComputeError(`postgres exited during startup (code ${this.exitInfo?.code}, signal ${this.exitInfo?.signal}); see ${this.logFile}`, { logFile: this.logFile });
      }
      const client = new pg.Client({ host: '127.0.0.1', port: this.port, user, database: 'postgres', connectionTimeoutMillis: 2000 });
      try {
        await client.connect();
        await client.query('SELECT 1');
        return;
      } catch (err) {
        lastError = err instanceof Error ? err.message : String(err);
      } finally {
        await client.end().catch(() => undefined);
      }
      await new Promise((r) => setTimeout(r, Math.min(200, 20 * (attempt + 1))));
    }
    throw new ComputeError(`postgres did not accept connections within ${timeoutMs} ms (${lastError}); see ${this.logFile}`, { logFile: this.logFile });
  }

  /** Stops the server and waits for it to exit (escalating to SIGKILL of the group after the timeout). */
  async stop(mode: StopMode = 'fast', timeoutMs = 60_000): Promise<void> {
    if (!this.isRunning) return;
    const signal: NodeJS.Signals = mode === 'smart' ? 'SIGTERM' : mode === 'fast' ? 'SIGINT' : 'SIGQUIT';
    try {
      process.kill(this.pid, signal);
    } catch { /* exited meanwhile */ }
    const timer = new Promise<'timeout'>((r) => setTimeout(() => r('timeout'), timeoutMs).unref());
    if (await Promise.race([this.exited.then(() => 'exited' as const), timer]) === 'timeout') {
      try {
        process.kill(-this.pid, 'SIGKILL');
      } catch { /* gone */ }
      await this.exited;
    }
  }

  /** SIGKILL of the whole process group: a crash. */
  async kill(): Promise<void> {
    if (!this.isRunning) return;
    try {
      process.kill(-this.pid, 'SIGKILL');
    } catch { /* gone */ }
    await this.exited;
  }
}
