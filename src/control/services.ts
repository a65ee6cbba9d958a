/**
 * The cluster's long-lived services — storage broker, safekeepers, pageserver — as background
 * processes of the local control plane (neon_local's `start`/`stop`).
 *
 * Each service is `node bin/strata.js <service> …` (the launcher registers tsx itself, so no
 * loader flags are needed), spawned detached in its own process group and session with stdin
 * closed and stdout+stderr appended to `<state>/<service>/<service>.log`, so it outlives the CLI
 * and survives the terminal closing. Its pid goes to `<state>/<service>/pid`, written durably.
 *
 * Invariants:
 *   - A service "runs" only if its pid file names a live process whose /proc cmdline is exactly
 *     the command line we would start now (pids.ts); anything else is a stale pid file, removed
 *     when found. We never signal a process that is not ours.
 *   - `start` is idempotent: a running, healthy service is left alone. A service that is not
 *     running is started only if all its ports are free — a port held by another program is an
 *     error naming the port, not a service that dies in its log.
 *   - Ready means healthy: its HTTP status endpoint answers 200 (and, for the safekeeper and the
 *     pageserver, with our node id). Every wait is bounded; a service that exits or does not get
 *     healthy in time is killed, its pid file removed, and the error points to its log.
 */
import { spawn } from 'node:child_process';
import { closeSync, openSync, writeSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { StrataError } from '../util/errors.ts';
import { parseHostPortStrict, type HostPort, type StrataConfig } from './config.ts';
import { killGroup, lastLogLine, readPidFile, removePidFile, runsStrata, stopPid, waitGone, writePidFile } from './pids.ts';

/** The launcher every background service runs through. */
export const STRATA_BIN = path.resolve(import.meta.dirname, '..', '..', 'bin', 'strata.js');

export const DEFAULT_START_TIMEOUT_MS = 60_000;
/** A pageserver flushes its open layers on SIGTERM; give it time before SIGKILL. */
export const DEFAULT_STOP_TIMEOUT_MS = 60_000;

export type ServiceKind = 'broker' | 'safekeeper' | 'pageserver';

export interface ServicePort {
  /** Short key for JSON: grpc, http, pg. */
  key: 'grpc' | 'http' | 'pg';
  /** For people: "pageserver HTTP". */
  what: string;
  addr: HostPort;
}

export interface ServiceSpec {
  kind: ServiceKind;
  /** Node id (safekeeper, pageserver); null for the broker. */
  id: number | null;
  /** Directory name and key: broker, safekeeper-1, pageserver. */
  name: string;
  /** For people: "broker", "safekeeper 1", "pageserver". */
  label: string;
  dir: string;
  logFile: string;
  pidFile: string;
  /** Arguments after bin/strata.js. */
  args: string[];
  ports: ServicePort[];
  healthUrl: string;
}

export class ServiceError extends StrataError {
  constructor(message: string, context: Record<string, string | number> = {}) {
    super('service_failed', message, context);
    this.name = 'ServiceError';
  }
}

/** Every service of the cluster, in start order (broker, safekeepers, pageserver). */
export function serviceSpecs(c: StrataConfig, stateDir: string): ServiceSpec[] {
  const spec = (kind: ServiceKind, id: number | null, name: string, label: string, args: string[], ports: ServicePort[], healthUrl: string): ServiceSpec => {
    const dir = path.join(stateDir, name);
    return { kind, id, name, label, dir, logFile: path.join(dir, `${name}.log`), pidFile: path.join(dir, 'pid'), args, ports, healthUrl };
  };
  const hp = (text: string, key: ServicePort['key'], what: string): ServicePort => ({ key, what, addr: parseHostPortStrict(text, what) });
  const out: ServiceSpec[] = [];
  out.push(spec('broker', null, 'broker', 'broker',
    ['broker', '--listen', c.broker.listen, '--listen-http', c.broker.listen_http],
    [hp(c.broker.listen, 'grpc', 'broker gRPC'), hp(c.broker.listen_http, 'http', 'broker HTTP')], `http://${c.broker.listen_http}/status`));
  for (const sk of c.safekeepers) {
    const name = `safekeeper-${sk.id}`;
    out.push(spec('safekeeper', sk.id, name, `safekeeper ${sk.id}`,
      ['safekeeper', '--id', String(sk.id), '--datadir', path.join(stateDir, name), '--listen-pg', sk.listen_pg, '--listen-http', sk.listen_http, '--broker', c.broker.listen],
      [hp(sk.listen_pg, 'pg', `safekeeper ${sk.id} WAL service`), hp(sk.listen_http, 'http', `safekeeper ${sk.id} HTTP`)], `http://${sk.listen_http}/v1/status`));
  }
  const ps = c.pageserver;
  out.push(spec('pageserver', ps.id, 'pageserver', 'pageserver',
    ['pageserver', '--id', String(ps.id), '--workdir', path.join(stateDir, 'pageserver'), '--listen-http', ps.listen_http, '--listen-pg', ps.listen_pg,
      '--broker', c.broker.listen, '--pg-bin', c.pg_bin],
    [hp(ps.listen_http, 'http', 'pageserver HTTP'), hp(ps.listen_pg, 'pg', 'pageserver page service')], `http://${ps.listen_http}/v1/status`));
  return out;
}

export interface ServiceStatus {
  name: string;
  label: string;
  kind: ServiceKind;
  state: 'running' | 'stopped';
  pid: number | null;
  healthy: boolean;
  /** A pid file whose process is gone (or is another program now). */
  stalePid: number | null;
  ports: ServicePort[];
  logFile: string;
}

/** One health probe: 200 within 2 s (with our node id where the service reports one). */
export async function probeHealth(spec: ServiceSpec, timeoutMs = 2_000): Promise<boolean> {
  try {
    const res = await fetch(spec.healthUrl, { signal: AbortSignal.timeout(timeoutMs) });
    const text = await res.text();
    if (res.status !== 200) return false;
    if (spec.id === null) return true;
    const body = JSON.parse(text) as { id?: unknown };
    return Number(body.id) === spec.id;
  } catch {
    return false;
  }
}

/** The pid of our running process for `spec`, or null; reports a stale pid file. */
export async function findRunning(spec: ServiceSpec): Promise<{ pid: number | null; stalePid: number | null }> {
  const pid = await readPidFile(spec.pidFile);
  if (pid === null) return { pid: null, stalePid: null };
  if (runsStrata(pid, STRATA_BIN, spec.args)) return { pid, stalePid: null };
  return { pid: null, stalePid: pid };
}

export async function serviceStatus(spec: ServiceSpec): Promise<ServiceStatus> {
  const { pid, stalePid } = await findRunning(spec);
  const healthy = pid !== null && await probeHealth(spec);
  return { name: spec.name, label: spec.label, kind: spec.kind, state: pid !== null ? 'running' : 'stopped', pid, healthy, stalePid, ports: spec.ports, logFile: spec.logFile };
}

/**
 * True when nothing listens on the address (we could bind it), false when it is in use; any other
 * failure to bind (an address that is not local, …) is an error saying so.
 */
export function portIsFree(addr: HostPort): Promise<boolean> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.unref();
    server.once('error', (err: NodeJS.ErrnoException) => {
      if (err.code === 'EADDRINUSE') resolve(false);
      else reject(new ServiceError(`cannot listen on ${addr.host}:${addr.port}: ${err.code ?? err.message}`, { port: addr.port }));
    });
    server.listen({ host: addr.host, port: addr.port, exclusive: true }, () => server.close(() => resolve(true)));
  });
}

export type Progress = (line: string) => void;

/**
 * Starts the service unless it already runs; waits until it is healthy. Returns what happened.
 */
export async function startService(spec: ServiceSpec, opts: { timeoutMs?: number; env?: NodeJS.ProcessEnv; progress?: Progress } = {}): Promise<'started' | 'already running'> {
  const timeoutMs = opts.timeoutMs ?? DEFAULT_START_TIMEOUT_MS;
  const { pid: running, stalePid } = await findRunning(spec);
  if (running !== null) {
    if (await waitHealthy(spec, running, timeoutMs, null)) return 'already running';
    throw new ServiceError(`${spec.label} runs (pid ${running}) but is not healthy (${spec.healthUrl} does not answer) after ${timeoutMs} ms; see ${spec.logFile}`, { service: spec.name });
  }
  if (stalePid !== null) {
    opts.progress?.(`${spec.label}: removing a stale pid file (pid ${stalePid} is not running it any more)`);
    await removePidFile(spec.pidFile);
  }
  for (const p of spec.ports) {
    if (!(await portIsFree(p.addr))) {
      throw new ServiceError(`cannot start ${spec.label}: port ${p.addr.port} (${p.what}, ${p.addr.host}:${p.addr.port}) is already in use by another program`, { service: spec.name, port: p.addr.port });
    }
  }
  await mkdir(spec.dir, { recursive: true, mode: 0o755 });
  const logFd = openSync(spec.logFile, 'a', 0o644);
  let child;
  try {
    writeSync(logFd, `--- ${new Date().toISOString()} strata: starting ${spec.label}: ${[STRATA_BIN, ...spec.args].join(' ')}\n`);
    child = spawn(process.execPath, [STRATA_BIN, ...spec.args], {
      cwd: spec.dir, detached: true, stdio: ['ignore', logFd, logFd], env: opts.env ?? process.env,
    });
  } finally {
    closeSync(logFd);
  }
  if (child.pid === undefined) {
    const err = await new Promise<Error>((resolve) => child.once('error', resolve));
    throw new ServiceError(`could not start ${spec.label}: ${err.message}`, { service: spec.name });
  }
  const pid = child.pid;
  let exited: string | null = null;
  child.once('exit', (code, sig) => { exited = sig !== null ? `signal ${sig}` : `code ${code}`; });
  child.unref();
  try {
    await writePidFile(spec.pidFile, pid);
  } catch (err) {
    killGroup(pid);
    throw new ServiceError(`could not write ${spec.pidFile}: ${(err as Error).message}; ${spec.label} stopped again`, { service: spec.name });
  }
  if (await waitHealthy(spec, pid, timeoutMs, () => exited)) return 'started';
  const why = exited !== null ? `exited during startup (${exited})` : `did not become healthy within ${timeoutMs} ms (${spec.healthUrl})`;
  killGroup(pid);
  await waitGone(pid, 5_000);
  await removePidFile(spec.pidFile);
  const last = await lastLogLine(spec.logFile);
  throw new ServiceError(`${spec.label} ${why}; see ${spec.logFile}${last !== '' ? ` (last line: ${last})` : ''}`, { service: spec.name });
}

async function waitHealthy(spec: ServiceSpec, pid: number, timeoutMs: number, exited: (() => string | null) | null): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  for (let i = 0; ; i++) {
    if (await probeHealth(spec)) return true;
    if (exited !== null && exited() !== null) return false;
    if (!runsStrata(pid, STRATA_BIN, spec.args)) return false;
    if (Date.now() >= deadline) return false;
    await new Promise((r) => setTimeout(r, Math.min(200, 20 * (i + 1))));
  }
}

/** Stops the service (SIGTERM, then SIGKILL after the timeout) and removes its pid file. */
export async function stopService(spec: ServiceSpec, opts: { timeoutMs?: number } = {}): Promise<'stopped' | 'killed' | 'not running'> {
  const { pid, stalePid } = await findRunning(spec);
  if (pid === null) {
    if (stalePid !== null) await removePidFile(spec.pidFile);
    return 'not running';
  }
  const how = await stopPid(pid, 'SIGTERM', opts.timeoutMs ?? DEFAULT_STOP_TIMEOUT_MS);
  await removePidFile(spec.pidFile);
  return how === 'exited' ? 'stopped' : 'killed';
}
