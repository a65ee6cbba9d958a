/**
 * Test support for the control-plane CLI: run `strata …` as a child process (as users do), and make
 * sure nothing it started in the background outlives the test.
 *
 * The CLI starts services and computes detached, so they are not our children: teardown runs
 * `strata stop`, then, as a last resort, SIGKILLs the process group of every process whose command
 * line mentions the test's directory (services name their state directory, postmasters their data
 * directory; postgres backends are in their postmaster's group).
 */
import { execFile } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';

export const STRATA_BIN = path.join(import.meta.dirname, '..', '..', 'bin', 'strata.js');

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs `node bin/strata.js …args` in `cwd`; never rejects on a non-zero exit. */
export function strata(cwd: string, args: readonly string[], opts: { timeoutMs?: number; env?: NodeJS.ProcessEnv } = {}): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    execFile(process.execPath, [STRATA_BIN, ...args], {
      cwd, encoding: 'utf8', timeout: opts.timeoutMs ?? 240_000, maxBuffer: 16 * 1024 * 1024,
      env: { ...process.env, ...(opts.env ?? {}) },
    }, (err, stdout, stderr) => {
      if (err !== null && typeof err.code !== 'number') {
        reject(new Error(`strata ${args.join(' ')}: ${err.message}\n${stderr}`));
        return;
      }
      resolve({ code: err === null ? 0 : (err.code as number), stdout, stderr });
    });
  });
}

/** Like strata(), but throws (with both outputs) unless the exit code is 0. */
export async function strataOk(cwd: string, args: readonly string[], opts: { timeoutMs?: number } = {}): Promise<CliResult> {
  const r = await strata(cwd, args, opts);
  if (r.code !== 0) throw new Error(`strata ${args.join(' ')} exited ${r.code}\nstdout: ${r.stdout}\nstderr: ${r.stderr}`);
  return r;
}

/** Pids of live (non-zombie) processes whose command line contains `needle`. */
export function pidsMentioning(needle: string): number[] {
  const out: number[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^[0-9]+$/.test(name) || Number(name) === process.pid) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, 'utf8');
      if (stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) === 'Z') continue;
      if (readFileSync(`/proc/${name}/cmdline`).toString('utf8').includes(needle)) out.push(Number(name));
    } catch { /* gone */ }
  }
  return out;
}

export function isAlive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return false;
  }
}

/** SIGKILL to the group and the pid of every process mentioning `dir`. Returns what was killed. */
export function killEverythingUnder(dir: string): number[] {
  const pids = pidsMentioning(dir);
  for (const pid of pids) {
    try { process.kill(-pid, 'SIGKILL'); } catch { /* not a group leader */ }
    try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ }
  }
  return pids;
}

/** True when a TCP connect to 127.0.0.1:port is refused. */
export function portClosed(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect({ host: '127.0.0.1', port });
    s.setTimeout(2_000);
    s.once('connect', () => { s.destroy(); resolve(false); });
    s.once('timeout', () => { s.destroy(); resolve(false); });
    s.once('error', () => resolve(true));
  });
}

export interface StatusJson {
  workdir: string;
  services: Array<{ name: string; kind: string; state: string; pid: number | null; healthy: boolean; stale_pid: number | null; ports: Record<string, string>; log_file: string }>;
  endpoints: Array<{ name: string; state: string; pid: number | null; tenant_id: string; timeline_id: string; timeline: string | null; port: number; connection_string: string; start_lsn: string | null; term: string | null }>;
}

export async function statusJson(cwd: string, extra: readonly string[] = []): Promise<StatusJson> {
  return JSON.parse((await strataOk(cwd, [...extra, 'status', '--json'])).stdout) as StatusJson;
}

/** Every port of the services (from status --json) and endpoints. */
export function allPorts(s: StatusJson): number[] {
  return [...s.services.flatMap((v) => Object.values(v.ports).map((a) => Number(a.split(':')[1]))), ...s.endpoints.map((e) => e.port)];
}

/** Errors are one line on stderr. */
export function oneLine(r: CliResult): string {
  const lines = r.stderr.split('\n').filter((l) => l.trim() !== '');
  if (lines.length !== 1) throw new Error(`expected one line on stderr, got ${lines.length}: ${r.stderr}`);
  return lines[0]!;
}
