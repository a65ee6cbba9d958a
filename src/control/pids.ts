/**
 * Background processes the CLI started in an earlier invocation: pid files, "is it still ours?",
 * and stopping by pid.
 *
 * The CLI that started a service or a compute has long exited, so we are not the parent: we cannot
 * wait() for the process, only look at /proc. Three facts decide whether a pid file still names a
 * live process of ours:
 *   - /proc/<pid> exists and the process is not a zombie (state Z: dead, waiting to be reaped by
 *     whoever inherited it — in a container without a reaping init that can take forever);
 *   - /proc/<pid>/cmdline still is the command we started (a pid can be reused by an unrelated
 *     program after ours died: such a pid file is stale, and we must never signal that program).
 * Stopping sends a signal, waits (bounded) for the process to be gone, then SIGKILLs its whole
 * process group — every background process is started detached, so it leads its own group and
 * its children (postgres backends, initdb) go with it.
 */
import { readFileSync } from 'node:fs';
import { open, readFile, unlink } from 'node:fs/promises';
import path from 'node:path';
import { writeFileDurable } from '../util/durable.ts';

const MAX_PID_FILE_BYTES = 4096;

/** The pid a pid file names (first line), or null when the file is missing or not a pid. */
export async function readPidFile(file: string): Promise<number | null> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch {
    return null;
  }
  const first = text.slice(0, MAX_PID_FILE_BYTES).split('\n')[0]!.trim();
  if (!/^[0-9]{1,9}$/.test(first)) return null;
  const pid = Number(first);
  return pid > 1 ? pid : null;
}

export async function writePidFile(file: string, pid: number): Promise<void> {
  await writeFileDurable(file, Buffer.from(`${pid}\n`));
}

export async function removePidFile(file: string): Promise<void> {
  await unlink(file).catch(() => undefined);
}

/** The process's argv from /proc, or null when it is gone or a zombie. */
export function processArgv(pid: number): string[] | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // "pid (comm) S ...": comm may contain spaces and parentheses; the state follows the last ')'.
    const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
    if (state === 'Z' || state === 'X') return null;
    const raw = readFileSync(`/proc/${pid}/cmdline`);
    if (raw.length === 0) return null; // kernel thread or exiting
    const parts = raw.toString('utf8').split('\0');
    if (parts[parts.length - 1] === '') parts.pop();
    return parts;
  } catch {
    return null;
  }
}

export function isAlive(pid: number): boolean {
  return processArgv(pid) !== null;
}

/** True when `pid` runs `node <script> <args…>` exactly (any node binary). */
export function runsStrata(pid: number, script: string, args: readonly string[]): boolean {
  const argv = processArgv(pid);
  if (argv === null || argv.length !== args.length + 2) return false;
  if (path.resolve(argv[1]!) !== path.resolve(script)) return false;
  return args.every((a, i) => argv[i + 2] === a);
}

/** True when `pid` is a postmaster of data directory `dataDir` (`postgres -D dataDir`). */
export function runsPostgres(pid: number, dataDir: string): boolean {
  const argv = processArgv(pid);
  if (argv === null || argv.length < 3) return false;
  if (path.basename(argv[0]!) !== 'postgres') return false;
  const d = argv.indexOf('-D');
  return d >= 0 && argv[d + 1] !== undefined && path.resolve(argv[d + 1]!) === path.resolve(dataDir);
}

function signal(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(pid, sig);
  } catch { /* gone */ }
}

/** Waits until the process is gone (or a zombie); false on timeout. */
export async function waitGone(pid: number, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  for (let i = 0; ; i++) {
    if (!isAlive(pid)) return true;
    if (Date.now() >= deadline) return false;
    await new Promise((r) => setTimeout(r, Math.min(100, 10 * (i + 1))));
  }
}

/**
 * Sends `sig` to `pid`, waits up to `timeoutMs` for it to be gone, then SIGKILLs its process group
 * and the pid. Returns how it ended.
 */
export async function stopPid(pid: number, sig: NodeJS.Signals, timeoutMs: number): Promise<'exited' | 'killed'> {
  signal(pid, sig);
  if (await waitGone(pid, timeoutMs)) return 'exited';
  killGroup(pid);
  signal(pid, 'SIGKILL');
  await waitGone(pid, 10_000);
  return 'killed';
}

/** SIGKILL to a process group (leftover children of a leader that is gone). */
export function killGroup(pgid: number): void {
  try {
    process.kill(-pgid, 'SIGKILL');
  } catch { /* no such group */ }
}

/** Last non-empty line of a log file (for error messages), at most `maxChars`. */
export async function lastLogLine(file: string, maxChars = 300): Promise<string> {
  try {
    const fh = await open(file, 'r');
    try {
      const st = await fh.stat();
      const len = Math.min(st.size, 16 * 1024);
      const buf = Buffer.alloc(len);
      await fh.read(buf, 0, len, st.size - len);
      const lines = buf.toString('utf8').split('\n').map((l) => l.trim()).filter((l) => l.length > 0);
      const last = lines[lines.length - 1] ?? '';
      return last.length > maxChars ? last.slice(0, maxChars) + '…' : last;
    } finally {
      await fh.close();
    }
  } catch {
    return '';
  }
}
