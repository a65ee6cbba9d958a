/**
 * Runs the real `pg_waldump -b` and parses its output, so tests can hold Strata's decoder to
 * PostgreSQL's own reader record by record.
 *
 * Output shape (PG15, --bkp-details):
 *   rmgr: Heap        len (rec/tot):     54/   150, tx:        735, lsn: 0/01D41E88, prev 0/01D41E50, desc: INSERT off 7 flags 0x00
 *   \tblkref #0: rel 1663/5/16384 fork main blk 0 (FPW); hole: offset: 48, length: 392, compression saved: 100, method: lz4
 */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { join } from 'node:path';

const execFileP = promisify(execFile);

export interface PgWaldumpBlock {
  id: number;
  spc: number;
  db: number;
  rel: number;
  fork: string;
  blk: number;
  /** 'none' | 'apply' ("(FPW)") | 'check' ("(FPW for WAL verification)") */
  image: 'none' | 'apply' | 'check';
  holeOffset?: number;
  holeLength?: number;
  method?: string;
}

export interface PgWaldumpRecord {
  rmgr: string;
  recLen: number;
  totLen: number;
  xid: number;
  lsn: string;
  prev: string;
  info: string;
  desc: string;
  blocks: PgWaldumpBlock[];
}

const RECORD_LINE = /^rmgr: (\S+)\s+len \(rec\/tot\):\s+(\d+)\/\s*(\d+), tx:\s+(\d+), lsn: ([0-9A-F]+\/[0-9A-F]+), prev ([0-9A-F]+\/[0-9A-F]+), desc: (.*)$/;
const BLOCK_LINE = /^\tblkref #(\d+): rel (\d+)\/(\d+)\/(\d+) fork (\w+) blk (\d+)(?: \(FPW( for WAL verification)?\); hole: offset: (\d+), length: (\d+)(?:, compression saved: -?\d+, method: (\w+))?)?$/;

/** Normalizes `0/01D41E88` to `0/1D41E88` (Strata's formatLsn form). */
export function normLsn(s: string): string {
  const [hi, lo] = s.split('/');
  return `${parseInt(hi!, 16).toString(16).toUpperCase()}/${parseInt(lo!, 16).toString(16).toUpperCase()}`;
}

export function parsePgWaldump(text: string): PgWaldumpRecord[] {
  const out: PgWaldumpRecord[] = [];
  for (const line of text.split('\n')) {
    if (line.startsWith('rmgr: ')) {
      const m = RECORD_LINE.exec(line);
      if (!m) throw new Error(`unparsed pg_waldump record line: ${line}`);
      const desc = m[7]!;
      // The record type is the identify() string; "UNKNOWN (x)" has a space in it.
      const info = desc.startsWith('UNKNOWN (') ? desc.slice(0, desc.indexOf(')') + 1) : desc.split(' ')[0]!;
      out.push({
        rmgr: m[1]!, recLen: +m[2]!, totLen: +m[3]!, xid: +m[4]!, lsn: normLsn(m[5]!), prev: normLsn(m[6]!),
        info: info.replace(/,$/, ''), desc, blocks: [],
      });
    } else if (line.startsWith('\tblkref')) {
      const m = BLOCK_LINE.exec(line);
      if (!m) throw new Error(`unparsed pg_waldump block line: ${line}`);
      const rec = out[out.length - 1];
      if (!rec) throw new Error(`block line before any record: ${line}`);
      const b: PgWaldumpBlock = {
        id: +m[1]!, spc: +m[2]!, db: +m[3]!, rel: +m[4]!, fork: m[5]!, blk: +m[6]!,
        image: m[8] === undefined ? 'none' : m[7] ? 'check' : 'apply',
      };
      if (m[8] !== undefined) {
        b.holeOffset = +m[8];
        b.holeLength = +m[9]!;
        b.method = m[10] ?? 'none';
      }
      rec.blocks.push(b);
    }
  }
  return out;
}

/**
 * Runs pg_waldump -b over the WAL in `walDir`, from the first to the last segment file named (only
 * the first when no last is given), as far as the WAL is valid. pg_waldump exits 1 at the end of valid WAL ("invalid record length"); that is
 * expected, so its stderr is returned for the caller to check.
 */
export async function runPgWaldump(pgBin: string, walDir: string, firstSegment: string, lastSegment?: string): Promise<{ records: PgWaldumpRecord[]; stderr: string }> {
  let stdout = '';
  let stderr = '';
  try {
    const r = await execFileP(join(pgBin, 'pg_waldump'), ['-b', '-p', walDir, firstSegment, ...(lastSegment ? [lastSegment] : [])], { maxBuffer: 2 * 1024 * 1024 * 1024, env: { ...process.env, TZ: 'UTC' } });
    stdout = r.stdout;
    stderr = r.stderr;
  } catch (e) {
    const err = e as { stdout?: string; stderr?: string; code?: number };
    if (typeof err.stdout !== 'string') throw e;
    stdout = err.stdout;
    stderr = err.stderr ?? '';
  }
  return { records: parsePgWaldump(stdout), stderr };
}

/** The fields of `strata waldump --json` that the comparison reads. */
export interface StrataJsonRecord {
  lsn: string;
  prev: string;
  xid: number;
  rmgr: string;
  info: string;
  totalLen: number;
  recLen: number;
  blocks: { id: number; spc: number; db: number; rel: number; fork: string; blk: number; image: boolean; apply: boolean; hole?: { offset: number; length: number }; compression?: string }[];
}

/**
 * Compares Strata's records with pg_waldump's, field by field. Returns human-readable mismatch
 * descriptions (at most `limit`); an empty list means they agree on every record.
 */
export function diffAgainstPgWaldump(ours: StrataJsonRecord[], theirs: PgWaldumpRecord[], limit = 20): string[] {
  const problems: string[] = [];
  const say = (s: string): boolean => {
    problems.push(s);
    return problems.length >= limit;
  };
  if (ours.length !== theirs.length) say(`record count: strata ${ours.length}, pg_waldump ${theirs.length}`);
  const n = Math.min(ours.length, theirs.length);
  for (let i = 0; i < n; i++) {
    const a = ours[i]!;
    const b = theirs[i]!;
    const at = `record #${i} at ${b.lsn} (${b.rmgr}/${b.info})`;
    const fields: [string, unknown, unknown][] = [
      ['lsn', a.lsn, b.lsn], ['prev', a.prev, b.prev], ['rmgr', a.rmgr, b.rmgr], ['info', a.info, b.info],
      ['totalLen', a.totalLen, b.totLen], ['recLen', a.recLen, b.recLen], ['xid', a.xid, b.xid],
      ['block count', a.blocks.length, b.blocks.length],
    ];
    for (const [name, x, y] of fields) if (x !== y && say(`${at}: ${name} strata=${String(x)} pg_waldump=${String(y)}`)) return problems;
    for (let j = 0; j < Math.min(a.blocks.length, b.blocks.length); j++) {
      const x = a.blocks[j]!;
      const y = b.blocks[j]!;
      const xi = x.image ? (x.apply ? 'apply' : 'check') : 'none';
      const pairs: [string, unknown, unknown][] = [
        ['id', x.id, y.id], ['rel', `${x.spc}/${x.db}/${x.rel}`, `${y.spc}/${y.db}/${y.rel}`], ['fork', x.fork, y.fork],
        ['blk', x.blk, y.blk], ['image', xi, y.image],
      ];
      if (x.image) {
        pairs.push(['hole offset', x.hole?.offset, y.holeOffset], ['hole length', x.hole?.length, y.holeLength], ['compression', x.compression, y.method]);
      }
      for (const [name, p, q] of pairs) if (p !== q && say(`${at} block ${j}: ${name} strata=${String(p)} pg_waldump=${String(q)}`)) return problems;
    }
  }
  return problems;
}
