/**
 * Running PostgreSQL's own programs (initdb, postgres, pg_ctl, …) from Strata.
 *
 * PostgreSQL refuses to run as root. When Strata runs as root (CI, containers), server-side
 * programs are spawned as the `postgres` OS user (uid/gid from `id`), and the directories they
 * write are handed to that user first. Everything else runs as the current user.
 *
 * The binaries come from a directory: `STRATA_PG_BIN`, else Debian's PostgreSQL 15 location.
 */
import { execFile, execFileSync } from 'node:child_process';
import { chown, lstat, readdir } from 'node:fs/promises';
import path from 'node:path';
import { StrataError } from '../util/errors.ts';

export const DEFAULT_PG_BIN_DIR = '/usr/lib/postgresql/15/bin';

export function pgBinDir(explicit?: string): string {
  return explicit ?? process.env['STRATA_PG_BIN'] ?? DEFAULT_PG_BIN_DIR;
}

export class PgToolError extends StrataError {
  constructor(message: string, context: Record<string, string | number>, cause?: unknown) {
    super('pg_tool_failed', message, context, { cause });
    this.name = 'PgToolError';
  }
}

export interface OsUser {
  uid: number;
  gid: number;
}

let cachedUser: OsUser | null | undefined;

/** The `postgres` OS user when we are root (PostgreSQL must not run as root); null otherwise. */
export function postgresRunAs(): OsUser | null {
  if (cachedUser !== undefined) return cachedUser;
  if (typeof process.getuid !== 'function' || process.getuid() !== 0) return (cachedUser = null);
  try {
    const uid = Number(execFileSync('id', ['-u', 'postgres'], { encoding: 'utf8' }).trim());
    const gid = Number(execFileSync('id', ['-g', 'postgres'], { encoding: 'utf8' }).trim());
    if (!Number.isInteger(uid) || !Number.isInteger(gid) || uid === 0) throw new Error(`unusable uid/gid ${uid}/${gid}`);
    cachedUser = { uid, gid };
    return cachedUser;
  } catch (err) {
    throw new PgToolError('running as root, but there is no usable `postgres` OS user to run PostgreSQL as (installing postgresql-15 creates it)', {}, err);
  }
}

/** Hands a directory tree to the postgres OS user (no-op when not root). Bounded walk. */
export async function chownForPostgres(dir: string, maxEntries = 10_000_000): Promise<void> {
  const user = postgresRunAs();
  if (user === null) return;
  let seen = 0;
  const walk = async (p: string): Promise<void> => {
    if (++seen > maxEntries) throw new PgToolError(`more than ${maxEntries} entries under ${dir}`, { dir });
    await chown(p, user.uid, user.gid);
    const st = await lstat(p);
    if (!st.isDirectory()) return;
    for (const name of await readdir(p)) await walk(path.join(p, name));
  };
  await walk(dir);
}

export interface RunToolOptions {
  binDir?: string;
  /** Run as the postgres OS user when we are root (server-side tools). */
  asServerUser?: boolean;
  env?: Record<string, string>;
  timeoutMs?: number;
  cwd?: string;
}

/** Runs a PostgreSQL program to completion; rejects with its stderr on failure. */
export function runPgTool(tool: string, args: string[], opts: RunToolOptions = {}): Promise<{ stdout: string; stderr: string }> {
  const bin = path.join(pgBinDir(opts.binDir), tool);
  const user = opts.asServerUser === true ? postgresRunAs() : null;
  return new Promise((resolve, reject) => {
    execFile(bin, args, {
      encoding: 'utf8', maxBuffer: 64 * 1024 * 1024, timeout: opts.timeoutMs ?? 300_000, cwd: opts.cwd ?? '/',
      env: { ...process.env, LC_ALL: 'C', ...(opts.env ?? {}) },
      ...(user === null ? {} : { uid: user.uid, gid: user.gid }),
    }, (err, stdout, stderr) => {
      if (err !== null) {
        reject(new PgToolError(`${tool} failed: ${stderr.trim().split('\n').slice(-5).join(' | ') || err.message}`, { tool, args: args.join(' ') }, err));
        return;
      }
      resolve({ stdout, stderr });
    });
  });
}
