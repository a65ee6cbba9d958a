/**
 * Transaction (RM_XACT_ID) record bodies: commit, abort, their two-phase variants, PREPARE,
 * ASSIGNMENT and INVALIDATION.
 *
 * Commit and abort records are variable: an 8-byte xact_time, then — only when xl_info has
 * XLOG_XACT_HAS_INFO (0x80) — a 32-bit xinfo whose bits say which optional parts follow, always in
 * this order: dbinfo, subxacts, relfilenodes, dropped stats (PG15), invalidation messages (commit
 * only; PostgreSQL's abort parser never reads them, so neither do we), the two-phase xid and (with
 * HAS_GID, only inside the two-phase part) a NUL-terminated GID with no padding after it, and last
 * the replication-origin pair {lsn, timestamp}. Because the GID has any length, the origin pair can
 * sit at any byte offset; all reads here are unaligned anyway, so nothing special is needed.
 * Every count is a signed 32-bit int and is checked against the bytes that remain.
 *
 * PREPARE's main data is the whole two-phase state file body (what PostgreSQL later writes to
 * pg_twophase/XXXXXXXX, followed by a CRC-32C): a 72-byte TwoPhaseFileHeader, then the GID and the
 * arrays, each segment padded to a multiple of 8 bytes from the start of the body, then the 2PC
 * rmgr records (not parsed here). The header's total_len counts the body plus the 4-byte CRC, so a
 * well-formed record has total_len == main data length + 4. `stateData` keeps the body bytes (a
 * view into the record, copy it to keep it) so the pageserver can store the file verbatim.
 */
import { crc32c } from '../crc32c.ts';
import type { DecodedRecord, RelFileNode } from '../xlogrecord.ts';
import { BodyReader, SIZE_OF_REL_FILE_NODE, SIZE_OF_SHARED_INVAL_MESSAGE, decodeCString } from './common.ts';

export const XLOG_XACT_COMMIT = 0x00;
export const XLOG_XACT_PREPARE = 0x10;
export const XLOG_XACT_ABORT = 0x20;
export const XLOG_XACT_COMMIT_PREPARED = 0x30;
export const XLOG_XACT_ABORT_PREPARED = 0x40;
export const XLOG_XACT_ASSIGNMENT = 0x50;
export const XLOG_XACT_INVALIDATIONS = 0x60;
export const XLOG_XACT_OPMASK = 0x70;
export const XLOG_XACT_HAS_INFO = 0x80;

export const XACT_XINFO_HAS_DBINFO = 1 << 0;
export const XACT_XINFO_HAS_SUBXACTS = 1 << 1;
export const XACT_XINFO_HAS_RELFILENODES = 1 << 2;
export const XACT_XINFO_HAS_INVALS = 1 << 3;
export const XACT_XINFO_HAS_TWOPHASE = 1 << 4;
export const XACT_XINFO_HAS_ORIGIN = 1 << 5;
export const XACT_XINFO_HAS_AE_LOCKS = 1 << 6;
export const XACT_XINFO_HAS_GID = 1 << 7;
export const XACT_XINFO_HAS_DROPPED_STATS = 1 << 8;
export const XACT_COMPLETION_APPLY_FEEDBACK = 1 << 29;
export const XACT_COMPLETION_UPDATE_RELCACHE_FILE = 1 << 30;
export const XACT_COMPLETION_FORCE_SYNC_COMMIT = 2 ** 31;

/** TwoPhaseFileHeader.magic. */
export const TWOPHASE_MAGIC = 0x57f94534;
/** sizeof(TwoPhaseFileHeader) (already a multiple of 8). */
export const SIZE_OF_TWOPHASE_FILE_HEADER = 72;
/** sizeof(xl_xact_stats_item): kind i32, dboid, objoid. */
export const SIZE_OF_XACT_STATS_ITEM = 12;

export interface DroppedStatsItem {
  /** PgStat_Kind. */
  kind: number;
  dboid: number;
  objoid: number;
}

export interface XactInvalidations {
  count: number;
  /** The raw SharedInvalidationMessages, 16 bytes each (a view into the record). */
  bytes: Uint8Array;
}

export type XactFinishOp = 'commit' | 'abort' | 'commit_prepared' | 'abort_prepared';

/** Body of COMMIT, ABORT, COMMIT_PREPARED and ABORT_PREPARED. Absent parts read as 0 / empty / null. */
export interface XactFinishBody {
  op: XactFinishOp;
  /** The transaction this record finishes: the two-phase xid when there is one, else the record's xl_xid. */
  xid: number;
  xactTimeUs: bigint;
  /** 0 when xl_info lacks XLOG_XACT_HAS_INFO. */
  xinfo: number;
  dbId: number;
  tsId: number;
  subxacts: number[];
  /** Relations to unlink (created and aborted, or dropped and committed). */
  relfilenodes: RelFileNode[];
  droppedStats: DroppedStatsItem[];
  invalidations: XactInvalidations;
  /** 0 unless XACT_XINFO_HAS_TWOPHASE. */
  twophaseXid: number;
  /** The GID (only written with wal_level=logical), else null. */
  gid: string | null;
  originLsn: bigint;
  originTimeUs: bigint;
  /** XACT_XINFO_HAS_AE_LOCKS: the transaction held AccessExclusiveLocks (standby must release them). */
  aeLocks: boolean;
  /** XACT_COMPLETION_UPDATE_RELCACHE_FILE. */
  relcacheInitFileInval: boolean;
  /** XACT_COMPLETION_FORCE_SYNC_COMMIT. */
  forceSyncCommit: boolean;
  /** XACT_COMPLETION_APPLY_FEEDBACK. */
  applyFeedback: boolean;
}

const EMPTY = new Uint8Array(0);

function finishOp(op: number): XactFinishOp | null {
  switch (op) {
    case XLOG_XACT_COMMIT: return 'commit';
    case XLOG_XACT_ABORT: return 'abort';
    case XLOG_XACT_COMMIT_PREPARED: return 'commit_prepared';
    case XLOG_XACT_ABORT_PREPARED: return 'abort_prepared';
    default: return null;
  }
}

function readStatsItems(r: BodyReader, n: number, label: string): DroppedStatsItem[] {
  r.checkCount(n, SIZE_OF_XACT_STATS_ITEM, `${label} count ${n}`);
  const out = new Array<DroppedStatsItem>(n);
  for (let i = 0; i < n; i++) {
    const p = r.pos + i * SIZE_OF_XACT_STATS_ITEM;
    out[i] = { kind: r.i32At(p), dboid: r.u32At(p + 4), objoid: r.u32At(p + 8) };
  }
  r.pos += n * SIZE_OF_XACT_STATS_ITEM;
  return out;
}

/** Parses COMMIT / ABORT / COMMIT_PREPARED / ABORT_PREPARED. */
export function parseXactFinish(rec: DecodedRecord): XactFinishBody {
  const r = new BodyReader(rec);
  const op = finishOp(rec.info & XLOG_XACT_OPMASK);
  if (op === null) return r.fail('not a commit or abort record');
  const isCommit = op === 'commit' || op === 'commit_prepared';

  const xactTimeUs = r.i64('xact_time');
  const xinfo = (rec.info & XLOG_XACT_HAS_INFO) !== 0 ? r.u32('xinfo') : 0;

  let dbId = 0;
  let tsId = 0;
  if (xinfo & XACT_XINFO_HAS_DBINFO) {
    dbId = r.u32('dbinfo.dbId');
    tsId = r.u32('dbinfo.tsId');
  }
  const subxacts = xinfo & XACT_XINFO_HAS_SUBXACTS ? r.countedU32s('subxact') : [];
  const relfilenodes = xinfo & XACT_XINFO_HAS_RELFILENODES ? r.relFileNodeArray(r.i32('relfilenode count'), 'relfilenode') : [];
  const droppedStats = xinfo & XACT_XINFO_HAS_DROPPED_STATS ? readStatsItems(r, r.i32('dropped stats count'), 'dropped stats') : [];
  let invalidations: XactInvalidations = { count: 0, bytes: EMPTY };
  if (isCommit && xinfo & XACT_XINFO_HAS_INVALS) {
    const n = r.i32('invalidation message count');
    r.checkCount(n, SIZE_OF_SHARED_INVAL_MESSAGE, `invalidation message count ${n}`);
    invalidations = { count: n, bytes: r.bytes(n * SIZE_OF_SHARED_INVAL_MESSAGE, 'invalidation messages') };
  }
  let twophaseXid = 0;
  let gid: string | null = null;
  if (xinfo & XACT_XINFO_HAS_TWOPHASE) {
    twophaseXid = r.u32('twophase xid');
    if (xinfo & XACT_XINFO_HAS_GID) gid = r.cString('gid');
  }
  let originLsn = 0n;
  let originTimeUs = 0n;
  if (xinfo & XACT_XINFO_HAS_ORIGIN) {
    originLsn = r.u64('origin lsn');
    originTimeUs = r.i64('origin timestamp');
  }
  if ((op === 'commit_prepared' || op === 'abort_prepared') && twophaseXid === 0) {
    r.fail('prepared-transaction record without a two-phase xid (XACT_XINFO_HAS_TWOPHASE not set or xid 0)', { xinfo });
  }
  return {
    op,
    xid: twophaseXid !== 0 ? twophaseXid : rec.xid,
    xactTimeUs,
    xinfo,
    dbId,
    tsId,
    subxacts,
    relfilenodes,
    droppedStats,
    invalidations,
    twophaseXid,
    gid,
    originLsn,
    originTimeUs,
    aeLocks: (xinfo & XACT_XINFO_HAS_AE_LOCKS) !== 0,
    relcacheInitFileInval: (xinfo & XACT_COMPLETION_UPDATE_RELCACHE_FILE) !== 0,
    forceSyncCommit: (xinfo & XACT_COMPLETION_FORCE_SYNC_COMMIT) !== 0,
    applyFeedback: (xinfo & XACT_COMPLETION_APPLY_FEEDBACK) !== 0,
  };
}

/** Body of PREPARE: the two-phase state file header and the arrays the pageserver cares about. */
export interface XactPrepareBody {
  magic: number;
  /** total_len from the header: body bytes + 4 (the CRC the file gets on disk). */
  totalLenBytes: number;
  xid: number;
  dbId: number;
  preparedAtUs: bigint;
  owner: number;
  gid: string;
  subxacts: number[];
  commitRels: RelFileNode[];
  abortRels: RelFileNode[];
  commitStats: DroppedStatsItem[];
  abortStats: DroppedStatsItem[];
  invalidations: XactInvalidations;
  initFileInval: boolean;
  originLsn: bigint;
  originTimeUs: bigint;
  /** The state file body exactly as logged (a view into the record; copy it to keep it). */
  stateData: Uint8Array;
}

/** Parses PREPARE. */
export function parseXactPrepare(rec: DecodedRecord): XactPrepareBody {
  const r = new BodyReader(rec);
  r.needTotal(SIZE_OF_TWOPHASE_FILE_HEADER, 'TwoPhaseFileHeader');
  const magic = r.u32At(0);
  if (magic !== TWOPHASE_MAGIC) r.fail(`two-phase state magic is 0x${magic.toString(16)}, expected 0x${TWOPHASE_MAGIC.toString(16)}`);
  const totalLenBytes = r.u32At(4);
  if (totalLenBytes !== r.length + 4) {
    r.fail(`two-phase header total_len is ${totalLenBytes}, expected main data length ${r.length} + 4-byte CRC = ${r.length + 4}`);
  }
  const xid = r.u32At(8);
  const dbId = r.u32At(12);
  const preparedAtUs = r.i64At(16);
  const owner = r.u32At(24);
  const nsubxacts = r.i32At(28);
  const ncommitrels = r.i32At(32);
  const nabortrels = r.i32At(36);
  const ncommitstats = r.i32At(40);
  const nabortstats = r.i32At(44);
  const ninvalmsgs = r.i32At(48);
  const initFileInval = r.data[52]! !== 0;
  const gidlen = r.u16At(54);
  const originLsn = r.u64At(56);
  const originTimeUs = r.i64At(64);
  r.pos = SIZE_OF_TWOPHASE_FILE_HEADER;

  // Each segment is padded to 8 bytes (relative to the body start, which is what PostgreSQL's
  // reader assumes: the body starts MAXALIGNed in its buffer).
  if (gidlen === 0) r.fail('two-phase gidlen is 0 (it counts the terminating NUL, so it is at least 1)');
  const gidBytes = r.bytes(gidlen, `gid of gidlen ${gidlen}`);
  const nul = gidBytes.indexOf(0);
  const gid = decodeCString(nul >= 0 ? gidBytes.subarray(0, nul) : gidBytes);
  r.alignTo8('padding after the gid');
  const segment = <T>(n: number, itemSize: number, label: string, read: (n: number) => T): T => {
    r.checkCount(n, itemSize, `${label} count ${n}`);
    if (n === 0) return read(0);
    const v = read(n);
    r.alignTo8(`padding after the ${label} array`);
    return v;
  };
  const subxacts = segment(nsubxacts, 4, 'subxact', (n) => r.u32Array(n, 'subxact'));
  const commitRels = segment(ncommitrels, SIZE_OF_REL_FILE_NODE, 'commit rel', (n) => r.relFileNodeArray(n, 'commit rel'));
  const abortRels = segment(nabortrels, SIZE_OF_REL_FILE_NODE, 'abort rel', (n) => r.relFileNodeArray(n, 'abort rel'));
  const commitStats = segment(ncommitstats, SIZE_OF_XACT_STATS_ITEM, 'commit stats', (n) => readStatsItems(r, n, 'commit stats'));
  const abortStats = segment(nabortstats, SIZE_OF_XACT_STATS_ITEM, 'abort stats', (n) => readStatsItems(r, n, 'abort stats'));
  const invalidations = segment(ninvalmsgs, SIZE_OF_SHARED_INVAL_MESSAGE, 'invalidation message', (n) => ({
    count: n,
    bytes: n === 0 ? EMPTY : r.bytes(n * SIZE_OF_SHARED_INVAL_MESSAGE, 'invalidation messages'),
  }));
  return {
    magic, totalLenBytes, xid, dbId, preparedAtUs, owner, gid, subxacts, commitRels, abortRels, commitStats, abortStats,
    invalidations, initFileInval, originLsn, originTimeUs, stateData: r.data,
  };
}

/** pg_twophase file name for a prepared xid (`%08X`). */
export function twoPhaseFileName(xid: number): string {
  return xid.toString(16).toUpperCase().padStart(8, '0');
}

/** The on-disk pg_twophase file: the state body followed by its CRC-32C (little-endian). */
export function twoPhaseFileBytes(stateData: Uint8Array): Uint8Array {
  const out = new Uint8Array(stateData.byteLength + 4);
  out.set(stateData, 0);
  new DataView(out.buffer).setUint32(stateData.byteLength, crc32c(stateData), true);
  return out;
}

/** Body of ASSIGNMENT: subtransaction xids assigned to a top-level xid (logged every 64 subxacts). */
export interface XactAssignmentBody {
  xtop: number;
  subxacts: number[];
}

export function parseXactAssignment(rec: DecodedRecord): XactAssignmentBody {
  const r = new BodyReader(rec);
  const xtop = r.u32('xtop');
  return { xtop, subxacts: r.countedU32s('subxact') };
}

/** Body of INVALIDATION (wal_level=logical, per command): only the message count. */
export interface XactInvalidationsBody {
  count: number;
}

export function parseXactInvalidations(rec: DecodedRecord): XactInvalidationsBody {
  const r = new BodyReader(rec);
  const n = r.i32('invalidation message count');
  r.checkCount(n, SIZE_OF_SHARED_INVAL_MESSAGE, `invalidation message count ${n}`);
  return { count: n };
}

