/**
 * Test support: a pageserver in a child process (test/support/pageserver-child.ts), so a test can
 * SIGKILL it. The child reports, every 100 ms, each timeline's durable LSN (disk_consistent_lsn)
 * and last record LSN; they are collected in `durable` and `last`, keyed `<tenant>/<timeline>`.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { parseLsn, type Lsn } from '../../src/postgres/lsn.ts';

const CHILD = path.join(import.meta.dirname, 'pageserver-child.ts');

export interface PageserverChild {
  proc: ChildProcess;
  /** Resolves once the child printed `ready`; rejects if it exits before. */
  ready: Promise<void>;
  durable: Map<string, Lsn>;
  last: Map<string, Lsn>;
  exited: Promise<void>;
}

/** Starts a pageserver child on `workdir`; with `broker`, it finds safekeepers through it. */
export function startPageserverChild(workdir: string, broker?: string): PageserverChild {
  const args = ['--import', 'tsx', CHILD, workdir, ...(broker !== undefined ? [broker] : [])];
  const proc = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, STRATA_LOG: 'warn' } });
  const durable = new Map<string, Lsn>();
  const last = new Map<string, Lsn>();
  let stderr = '';
  proc.stderr!.on('data', (d: Buffer) => { stderr += d.toString(); });
  let buf = '';
  let resolveReady!: () => void;
  let rejectReady!: (e: Error) => void;
  const ready = new Promise<void>((res, rej) => { resolveReady = res; rejectReady = rej; });
  proc.stdout!.on('data', (d: Buffer) => {
    buf += d.toString();
    let nl: number;
    while ((nl = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, nl);
      buf = buf.slice(nl + 1);
      if (line === 'ready') resolveReady();
      const m = /^(durable|last) (\S+) (\S+)$/.exec(line);
      if (m !== null) (m[1] === 'durable' ? durable : last).set(m[2]!, parseLsn(m[3]!));
    }
  });
  const exited = new Promise<void>((res) => proc.once('exit', () => {
    rejectReady(new Error(`pageserver child exited before it was ready: ${stderr}`));
    res();
  }));
  return { proc, ready, durable, last, exited };
}
