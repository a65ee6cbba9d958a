/**
 * The synthesized WAL that makes a vanilla PostgreSQL 15 start as "shut down at L".
 *
 * Why: a basebackup taken from the pageserver at LSN L has no real WAL. A stock server needs, in
 * pg_wal, the checkpoint record that pg_control points at; if that record is a
 * XLOG_CHECKPOINT_SHUTDOWN whose redo pointer is its own LSN and pg_control says DB_SHUTDOWNED,
 * startup performs no recovery: WAL simply continues after the record. So we write one 114-byte
 * checkpoint record at L into a segment that is otherwise zeros, plus the page headers a reader
 * needs to find it.
 *
 * Layout of what we write (all other bytes are zero):
 *  - every page from the first page of L's segment up to and including L's page gets a header
 *    (long on page 0). The bytes before L are declared to be the tail of a record that started
 *    earlier: XLP_FIRST_IS_CONTRECORD with xlp_rem_len = the record-data bytes still to come before
 *    L (page headers not counted). A reader that starts at any of those page boundaries — pg_waldump
 *    scanning from a page or segment start, Strata's decoder — skips straight to L. PostgreSQL itself
 *    reads the record at L directly and only checks page 0's long header and L's page header.
 *  - at L: the record (rmid XLOG, info CHECKPOINT_SHUTDOWN, xid 0, xl_prev = prevLsn, main data = the
 *    88-byte CheckPoint with redo = L). If it does not fit on L's page it continues on the next page(s)
 *    after a header with XLP_FIRST_IS_CONTRECORD and xlp_rem_len = record bytes still to come. The
 *    next page may be the first page of the next segment (long header), so the result is one
 *    segment, or two when the record crosses a segment boundary; the caller writes all of them.
 *  - pages after the record: zeros. The server initializes them when it writes there.
 *
 * Positions: a record starts 8-aligned and never inside a page header. `normalizeCheckpointLsn`
 * moves an L that sits exactly on a page boundary past the page header (the same position the server
 * would use for a record inserted there), and rejects anything else that is not a record position.
 * The record's end follows PostgreSQL's EndRecPtr convention: MAXALIGN of its last byte + 1, which
 * is the page boundary itself when the record ends at the end of a page; the server's next record
 * then starts after that page's header (`nextRecordLsn`).
 */
import { encodeRecord } from './walwriter.ts';
import { formatLsn, type Lsn } from './lsn.ts';
import { encodeCheckPoint, SIZE_OF_CHECKPOINT, XLOG_CHECKPOINT_SHUTDOWN, type CheckPoint } from './records/xlog.ts';
import { RM_XLOG_ID } from './rmgr.ts';
import {
  DEFAULT_WAL_SEGMENT_SIZE, SIZE_OF_LONG_PAGE_HEADER, SIZE_OF_SHORT_PAGE_HEADER, SIZE_OF_XLOG_RECORD, walSegmentFileName,
  XLOG_BLCKSZ, XLOG_PAGE_MAGIC, XLP_BKP_REMOVABLE, XLP_FIRST_IS_CONTRECORD, XLP_LONG_HEADER,
} from './walformat.ts';
import { InvalidInputError, assert } from '../util/errors.ts';

/** xl_tot_len of a checkpoint record: header + XLR_BLOCK_ID_DATA_SHORT + length byte + CheckPoint. */
export const CHECKPOINT_RECORD_SIZE_BYTES = SIZE_OF_XLOG_RECORD + 2 + SIZE_OF_CHECKPOINT;

const PAGE = BigInt(XLOG_BLCKSZ);

function checkSegmentSize(segmentSizeBytes: number): bigint {
  const s = segmentSizeBytes;
  if (!Number.isInteger(s) || s < 1024 * 1024 || s > 1024 * 1024 * 1024 || (s & (s - 1)) !== 0) {
    throw new InvalidInputError(`invalid WAL segment size ${s}: PostgreSQL allows powers of two from 1 MiB to 1 GiB`, { segmentSizeBytes: s });
  }
  return BigInt(s);
}

/** Size of the page header of the page starting at `pageStart`. */
function headerSizeAt(pageStart: Lsn, seg: bigint): number {
  return pageStart % seg === 0n ? SIZE_OF_LONG_PAGE_HEADER : SIZE_OF_SHORT_PAGE_HEADER;
}

/**
 * Turns a requested L into a record position: a page boundary moves past the page header (40 bytes
 * at a segment start, 24 otherwise); any other L must be 8-aligned and not inside a page header.
 * Throws InvalidInputError otherwise.
 */
export function normalizeCheckpointLsn(lsn: Lsn, segmentSizeBytes: number = DEFAULT_WAL_SEGMENT_SIZE): Lsn {
  const seg = checkSegmentSize(segmentSizeBytes);
  if (lsn < 0n || lsn > 0xffff_ffff_ffff_ffffn) throw new InvalidInputError(`LSN ${lsn} is out of range`, { lsn });
  const pageOff = lsn % PAGE;
  const pageStart = lsn - pageOff;
  const hdr = BigInt(headerSizeAt(pageStart, seg));
  if (pageOff === 0n) return lsn + hdr;
  if (lsn % 8n !== 0n) {
    throw new InvalidInputError(`checkpoint LSN ${formatLsn(lsn)} is not 8-aligned, so no record can start there`, { lsn: formatLsn(lsn) });
  }
  if (pageOff < hdr) {
    throw new InvalidInputError(`checkpoint LSN ${formatLsn(lsn)} points inside the ${hdr}-byte header of the WAL page at ${formatLsn(pageStart)}`, { lsn: formatLsn(lsn) });
  }
  return lsn;
}

/** Throws unless `lsn` is a record position (already normalized: not a page boundary, not in a header). */
function requireRecordPosition(lsn: Lsn, segmentSizeBytes: number): void {
  if (lsn % PAGE === 0n) {
    throw new InvalidInputError(`LSN ${formatLsn(lsn)} is a page boundary, not a record position; normalize it with normalizeCheckpointLsn first`, { lsn: formatLsn(lsn) });
  }
  normalizeCheckpointLsn(lsn, segmentSizeBytes);
}

/**
 * The end (EndRecPtr) of a checkpoint record starting at `lsn`: MAXALIGN of the byte after its last
 * byte, counting the page headers it crosses. A page boundary when the record ends at a page end.
 */
export function checkpointRecordEnd(lsn: Lsn, segmentSizeBytes: number = DEFAULT_WAL_SEGMENT_SIZE): Lsn {
  requireRecordPosition(lsn, segmentSizeBytes);
  const seg = BigInt(segmentSizeBytes);
  let pos = lsn;
  let remaining = BigInt(CHECKPOINT_RECORD_SIZE_BYTES);
  for (let guard = 0; guard < 64; guard++) {
    const room = PAGE - (pos % PAGE);
    if (remaining <= room) {
      pos += remaining;
      return (pos + 7n) & ~7n;
    }
    remaining -= room;
    const next = pos + room;
    pos = next + BigInt(headerSizeAt(next, seg));
  }
  throw new InvalidInputError(`checkpointRecordEnd: record at ${formatLsn(lsn)} did not end within 64 pages`);
}

/** Where the next record after one ending at `endLsn` (an EndRecPtr) starts. */
export function nextRecordStart(endLsn: Lsn, segmentSizeBytes: number = DEFAULT_WAL_SEGMENT_SIZE): Lsn {
  const seg = checkSegmentSize(segmentSizeBytes);
  return endLsn % PAGE === 0n ? endLsn + BigInt(headerSizeAt(endLsn, seg)) : endLsn;
}

export interface ShutdownCheckpointOptions {
  /** The requested L; normalized with normalizeCheckpointLsn (the result is `recordLsn`). */
  lsn: Lsn;
  /** pg_control's system_identifier; goes into the long page headers. */
  systemId: bigint;
  /** Default 1. Must equal checkPoint.thisTimeLineId. */
  timeline?: number;
  /** Default 16 MiB. */
  segmentSizeBytes?: number;
  /** The checkpoint contents (next ids, oldest ids, time). redoLsn is replaced by the record's LSN. */
  checkPoint: CheckPoint;
  /** xl_prev; default 0. The server only requires it to be below the record's LSN. */
  prevLsn?: Lsn;
}

export interface WalSegmentImage {
  segNo: bigint;
  /** File name in pg_wal (timeline + segment number). */
  fileName: string;
  /** The whole segment file. */
  bytes: Buffer;
}

export interface ShutdownCheckpointWal {
  /** The segment holding the record start, and the next one when the record crosses into it. Write all. */
  segments: WalSegmentImage[];
  /** Where the record is: L normalized. pg_control.checkPoint and checkPointCopy.redo must be this. */
  recordLsn: Lsn;
  /** EndRecPtr of the record (see checkpointRecordEnd). */
  recordEndLsn: Lsn;
  /** Where the server will insert its first record (recordEndLsn, past a page header if on a boundary). */
  nextRecordLsn: Lsn;
  /** The CheckPoint as written (redo = recordLsn); use it for pg_control's checkPointCopy. */
  checkPoint: CheckPoint;
  /** The encoded record (114 bytes). */
  record: Buffer;
}

function writePageHeader(buf: Buffer, off: number, pageLsn: Lsn, seg: bigint, timeline: number, systemId: bigint, flags: number, remLen: number): void {
  const long = pageLsn % seg === 0n;
  buf.writeUInt16LE(XLOG_PAGE_MAGIC, off);
  buf.writeUInt16LE(flags | XLP_BKP_REMOVABLE | (long ? XLP_LONG_HEADER : 0), off + 2);
  buf.writeUInt32LE(timeline, off + 4);
  buf.writeBigUInt64LE(pageLsn, off + 8);
  buf.writeUInt32LE(remLen, off + 16);
  if (long) {
    buf.writeBigUInt64LE(systemId, off + 24);
    buf.writeUInt32LE(Number(seg), off + 32);
    buf.writeUInt32LE(XLOG_BLCKSZ, off + 36);
  }
}

/**
 * Builds the WAL segment(s) holding a XLOG_CHECKPOINT_SHUTDOWN record at L (see the module comment).
 * Throws InvalidInputError for an L that is not a record position, a prevLsn not below L, or a
 * checkpoint timeline that differs from `timeline`.
 */
export function buildShutdownCheckpointSegment(opts: ShutdownCheckpointOptions): ShutdownCheckpointWal {
  const segmentSizeBytes = opts.segmentSizeBytes ?? DEFAULT_WAL_SEGMENT_SIZE;
  const seg = checkSegmentSize(segmentSizeBytes);
  const timeline = opts.timeline ?? 1;
  if (!Number.isInteger(timeline) || timeline < 1 || timeline > 0xffff_ffff) {
    throw new InvalidInputError(`invalid timeline ${timeline}: must be an integer in [1, 2^32)`, { timeline });
  }
  if (opts.checkPoint.thisTimeLineId !== timeline) {
    throw new InvalidInputError(`CheckPoint.thisTimeLineId ${opts.checkPoint.thisTimeLineId} differs from the WAL timeline ${timeline}`, { timeline });
  }
  if (opts.systemId < 0n || opts.systemId > 0xffff_ffff_ffff_ffffn) throw new InvalidInputError(`system identifier ${opts.systemId} is out of range`);
  const recordLsn = normalizeCheckpointLsn(opts.lsn, segmentSizeBytes);
  const prevLsn = opts.prevLsn ?? 0n;
  if (prevLsn < 0n || prevLsn >= recordLsn) {
    throw new InvalidInputError(`xl_prev ${formatLsn(prevLsn)} must be below the checkpoint record's LSN ${formatLsn(recordLsn)}`, { lsn: formatLsn(recordLsn) });
  }
  const checkPoint: CheckPoint = { ...opts.checkPoint, redoLsn: recordLsn };
  const record = encodeRecord({ xid: 0, rmid: RM_XLOG_ID, info: XLOG_CHECKPOINT_SHUTDOWN, mainData: encodeCheckPoint(checkPoint) }, prevLsn);
  assert(record.byteLength === CHECKPOINT_RECORD_SIZE_BYTES, 'checkpoint record has the size the server checks', { sizeBytes: record.byteLength });
  const recordEndLsn = checkpointRecordEnd(recordLsn, segmentSizeBytes);
  const nextRecordLsn = nextRecordStart(recordEndLsn, segmentSizeBytes);

  const firstSegNo = recordLsn / seg;
  // The segment holding the record's last byte (the end may be the next segment's first byte).
  const lastSegNo = (recordEndLsn - 1n) / seg;
  const segments: WalSegmentImage[] = [];
  for (let segNo = firstSegNo; segNo <= lastSegNo; segNo++) {
    segments.push({ segNo, fileName: walSegmentFileName(timeline, segNo, segmentSizeBytes), bytes: Buffer.alloc(segmentSizeBytes) });
  }
  const segStart = firstSegNo * seg;
  const first = segments[0]!;

  // Headers before the record: pages [segStart, page of L]. rem_len counts the data bytes (page
  // headers excluded) from the page's data start to L; walk backwards from L's page.
  const recordPage = recordLsn - (recordLsn % PAGE);
  let rem = Number(recordLsn - recordPage) - headerSizeAt(recordPage, seg);
  for (let page = recordPage; ; page -= PAGE) {
    const hdr = headerSizeAt(page, seg);
    if (page !== recordPage) rem += XLOG_BLCKSZ - hdr;
    writePageHeader(first.bytes, Number(page - segStart), page, seg, timeline, opts.systemId, rem > 0 ? XLP_FIRST_IS_CONTRECORD : 0, rem);
    if (page === segStart) break;
  }

  // The record, continuing across page (and maybe segment) boundaries.
  let pos = recordLsn;
  let written = 0;
  for (let guard = 0; written < record.byteLength; guard++) {
    assert(guard < 64, 'checkpoint record layout terminates', { lsn: formatLsn(recordLsn) });
    if (pos % PAGE === 0n) {
      const target = segments[Number(pos / seg - firstSegNo)]!;
      writePageHeader(target.bytes, Number(pos % seg), pos, seg, timeline, opts.systemId, XLP_FIRST_IS_CONTRECORD, record.byteLength - written);
      pos += BigInt(headerSizeAt(pos, seg));
    }
    const room = Number(PAGE - (pos % PAGE));
    const n = Math.min(room, record.byteLength - written);
    const target = segments[Number(pos / seg - firstSegNo)]!;
    target.bytes.set(record.subarray(written, written + n), Number(pos % seg));
    written += n;
    pos += BigInt(n);
  }
  assert(((pos + 7n) & ~7n) === recordEndLsn, 'record layout ends where checkpointRecordEnd says', { lsn: formatLsn(recordLsn) });
  return { segments, recordLsn, recordEndLsn, nextRecordLsn, checkPoint, record };
}
