/**
 * `strata waldump`: print the records of PostgreSQL WAL segment files, one line each.
 *
 * The text form is for people; `--json` prints one JSON object per record for scripts and for the
 * tests that hold Strata's decoder to pg_waldump's output. LSNs are `X/X` strings; the record type
 * (`info`) is named as pg_waldump names it. The last line on stderr says how the WAL ended.
 *
 * Exit status: 0 when the WAL ends normally (zeros, a recycled page, the end of the files, or
 * --end), 1 when it ends in damage (bad CRC, bad header, a record cut off), 2 for usage errors.
 */
import { formatLsn, formatLsnPadded, parseLsn, type Lsn } from '../postgres/lsn.ts';
import { recordTypeName, rmgrName } from '../postgres/rmgr.ts';
import { scanWal } from '../postgres/walfiles.ts';
import { FORK_NAMES, fpiLength, type DecodedRecord } from '../postgres/xlogrecord.ts';
import { decodeRecordBody } from '../postgres/records/index.ts';
import { LineWriter } from './output.ts';

export interface WaldumpOptions {
  start?: string;
  end?: string;
  json?: boolean;
}

export interface WaldumpStreams {
  stdout: NodeJS.WritableStream & import('node:stream').Writable;
  stderr: NodeJS.WritableStream;
}

export interface BlockJson {
  id: number;
  spc: number;
  db: number;
  rel: number;
  fork: string;
  blk: number;
  image: boolean;
  apply: boolean;
  willInit: boolean;
  dataLen: number;
  hole?: { offset: number; length: number };
  compression?: string;
  imageLen?: number;
}

export interface RecordJson {
  lsn: string;
  end: string;
  prev: string;
  xid: number;
  rmgr: string;
  info: string;
  totalLen: number;
  recLen: number;
  fpiLen: number;
  mainDataLen: number;
  blocks: BlockJson[];
  origin?: number;
  toplevelXid?: number;
  /** The typed body, for the record types the pageserver interprets. */
  body?: unknown;
  /** Why the body could not be decoded (the record's CRC was fine: this is damage or a Strata bug). */
  bodyError?: string;
}

export function forkName(forkNum: number): string {
  return FORK_NAMES[forkNum] ?? `fork${forkNum}`;
}

export function recordToJson(rec: DecodedRecord): RecordJson {
  const fpi = fpiLength(rec);
  const out: RecordJson = {
    lsn: formatLsn(rec.lsn),
    end: formatLsn(rec.endLsn),
    prev: formatLsn(rec.prev),
    xid: rec.xid,
    rmgr: rmgrName(rec.rmid),
    info: recordTypeName(rec.rmid, rec.info),
    totalLen: rec.totLen,
    recLen: rec.totLen - fpi,
    fpiLen: fpi,
    mainDataLen: rec.mainDataLength,
    blocks: rec.blocks.map((b) => {
      const j: BlockJson = {
        id: b.id, spc: b.rnode.spcNode, db: b.rnode.dbNode, rel: b.rnode.relNode, fork: forkName(b.forkNum),
        blk: b.blkno, image: b.image !== undefined, apply: b.image?.apply ?? false, willInit: b.willInit, dataLen: b.dataLength,
      };
      if (b.image) {
        j.imageLen = b.image.lengthBytes;
        j.hole = { offset: b.image.holeOffset, length: b.image.holeLength };
        j.compression = b.image.compression;
      }
      return j;
    }),
  };
  if (rec.origin !== 0) out.origin = rec.origin;
  if (rec.toplevelXid !== 0) out.toplevelXid = rec.toplevelXid;
  try {
    const typed = decodeRecordBody(rec);
    if (typed !== null) out.body = typed.body;
  } catch (e) {
    out.bodyError = (e as Error).message;
  }
  return out;
}

/**
 * JSON.stringify replacer for record bodies: bigints become strings (LSN fields, named `...Lsn`,
 * in X/X form), byte arrays become hex when short and a length when long.
 */
export function jsonReplacer(key: string, value: unknown): unknown {
  if (typeof value === 'bigint') return key.endsWith('Lsn') ? formatLsn(value) : value.toString();
  if (value instanceof Uint8Array) return value.byteLength <= 32 ? Buffer.from(value.buffer, value.byteOffset, value.byteLength).toString('hex') : `<${value.byteLength} bytes>`;
  return value;
}

export function recordToText(rec: DecodedRecord): string {
  const fpi = fpiLength(rec);
  let s = `${formatLsnPadded(rec.lsn)} ${(rmgrName(rec.rmid) + '/' + recordTypeName(rec.rmid, rec.info)).padEnd(30)} len ${String(rec.totLen).padStart(6)} (rec ${rec.totLen - fpi}) tx ${String(rec.xid).padStart(8)} prev ${formatLsnPadded(rec.prev)}`;
  for (const b of rec.blocks) {
    s += `; blk#${b.id} ${b.rnode.spcNode}/${b.rnode.dbNode}/${b.rnode.relNode} ${forkName(b.forkNum)} ${b.blkno}`;
    if (b.willInit) s += ' will-init';
    if (b.image) {
      s += b.image.apply ? ' FPI' : ' FPI-for-check';
      if (b.image.holeLength > 0) s += ` hole ${b.image.holeOffset}+${b.image.holeLength}`;
      if (b.image.compression !== 'none') s += ` ${b.image.compression} ${b.image.lengthBytes}B`;
    }
  }
  return s;
}

function optLsn(text: string | undefined, what: string): Lsn | undefined {
  if (text === undefined) return undefined;
  try {
    return parseLsn(text);
  } catch (e) {
    throw new UsageError(`--${what}: ${(e as Error).message}`);
  }
}

export class UsageError extends Error {}

/** Runs waldump; returns the process exit code. */
export async function runWaldump(paths: string[], opts: WaldumpOptions, io: WaldumpStreams): Promise<number> {
  if (paths.length === 0) throw new UsageError('give at least one WAL segment file or directory');
  const startLsn = optLsn(opts.start, 'start');
  const endLsn = optLsn(opts.end, 'end');
  if (startLsn !== undefined && endLsn !== undefined && endLsn < startLsn) {
    throw new UsageError(`--end ${formatLsn(endLsn)} is before --start ${formatLsn(startLsn)}`);
  }
  const out = new LineWriter(io.stdout);
  let bodyErrors = 0;
  let pending: Promise<void> | null = null;
  const result = await scanWal(
    paths,
    { ...(startLsn !== undefined ? { startLsn } : {}), ...(endLsn !== undefined ? { endLsn } : {}), afterChunk: () => pending },
    (rec) => {
      let line: string;
      if (opts.json) {
        const j = recordToJson(rec);
        if (j.bodyError !== undefined && bodyErrors++ < 20) io.stderr.write(`strata waldump: record at ${j.lsn} (${j.rmgr}/${j.info}): ${j.bodyError}\n`);
        line = JSON.stringify(j, jsonReplacer);
      } else {
        line = recordToText(rec);
      }
      const p = out.line(line);
      if (p !== null) pending = p;
      return out.open;
    },
  );
  await out.end();
  const e = result.end;
  const summary = `${result.records} records; WAL ends at ${formatLsn(e.lsn)}: ${e.reason}`;
  if (e.clean && bodyErrors === 0) {
    io.stderr.write(`strata waldump: ${summary}\n`);
    return 0;
  }
  if (bodyErrors > 0) io.stderr.write(`strata waldump: error: ${bodyErrors} records have bodies that could not be decoded\n`);
  io.stderr.write(`strata waldump: error: ${summary}\n`);
  return 1;
}
