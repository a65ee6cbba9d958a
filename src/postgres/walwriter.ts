/**
 * Writing PostgreSQL 15 WAL: encoding records and laying them out into pages.
 *
 * Strata writes WAL in two places: the basebackup's synthesized XLOG_CHECKPOINT_SHUTDOWN record
 * (so a vanilla PostgreSQL starts at an LSN without recovery), and tests that need WAL shapes a
 * real server makes only by chance (a record header split across pages, a record ending exactly at
 * a page end, a record spanning a segment boundary, padding after XLOG_SWITCH).
 *
 * The layout rules are the reader's rules in reverse: records start 8-aligned; a page that a record
 * continues on gets XLP_FIRST_IS_CONTRECORD and xlp_rem_len = bytes of the record still to come;
 * the first page of a segment has the 40-byte long header; after XLOG_SWITCH the rest of the
 * segment is zeros without page headers. The CRC covers the record body, then the header's first
 * 20 bytes.
 */
import { crc32c } from './crc32c.ts';
import type { Lsn } from './lsn.ts';
import { InvalidInputError } from '../util/errors.ts';
import {
  DEFAULT_WAL_SEGMENT_SIZE, PG_BLCKSZ, SIZE_OF_LONG_PAGE_HEADER, SIZE_OF_SHORT_PAGE_HEADER, SIZE_OF_XLOG_RECORD,
  XLOG_BLCKSZ, XLOG_PAGE_MAGIC, XLP_BKP_REMOVABLE, XLP_FIRST_IS_CONTRECORD, XLP_LONG_HEADER,
} from './walformat.ts';
import {
  BKPBLOCK_HAS_DATA, BKPBLOCK_HAS_IMAGE, BKPBLOCK_SAME_REL, BKPBLOCK_WILL_INIT, BKPIMAGE_APPLY, BKPIMAGE_HAS_HOLE,
  XLR_BLOCK_ID_DATA_LONG, XLR_BLOCK_ID_DATA_SHORT, XLR_BLOCK_ID_ORIGIN, XLR_BLOCK_ID_TOPLEVEL_XID, type RelFileNode,
} from './xlogrecord.ts';

export interface BlockSpec {
  id: number;
  rnode: RelFileNode;
  forkNum: number;
  blkno: number;
  willInit?: boolean;
  /** Block data payload. */
  data?: Uint8Array;
  /** An uncompressed full-page image (8192 bytes); the hole [holeOffset, holeOffset+holeLength) is left out. */
  image?: { page: Uint8Array; holeOffset: number; holeLength: number; apply: boolean };
}

export interface RecordSpec {
  xid: number;
  rmid: number;
  /** Full xl_info byte (rmgr bits and generic flags). */
  info: number;
  blocks?: BlockSpec[];
  origin?: number;
  toplevelXid?: number;
  mainData?: Uint8Array;
}

/** Encodes a record. `prev` is xl_prev (the previous record's LSN). */
export function encodeRecord(spec: RecordSpec, prev: Lsn): Buffer {
  const headers: number[] = [];
  const payloads: Uint8Array[] = [];
  const u16 = (v: number): void => void headers.push(v & 0xff, (v >> 8) & 0xff);
  const u32 = (v: number): void => void headers.push(v & 0xff, (v >>> 8) & 0xff, (v >>> 16) & 0xff, (v >>> 24) & 0xff);
  let prevRel: RelFileNode | undefined;
  for (const b of spec.blocks ?? []) {
    const data = b.data ?? new Uint8Array(0);
    let flags = b.forkNum & 0x0f;
    if (b.image) flags |= BKPBLOCK_HAS_IMAGE;
    if (data.byteLength > 0) flags |= BKPBLOCK_HAS_DATA;
    if (b.willInit) flags |= BKPBLOCK_WILL_INIT;
    const same = prevRel !== undefined && prevRel.spcNode === b.rnode.spcNode && prevRel.dbNode === b.rnode.dbNode && prevRel.relNode === b.rnode.relNode;
    if (same) flags |= BKPBLOCK_SAME_REL;
    headers.push(b.id, flags);
    u16(data.byteLength);
    if (b.image) {
      const { page, holeOffset, holeLength, apply } = b.image;
      if (page.byteLength !== PG_BLCKSZ) throw new InvalidInputError(`block ${b.id}: an image must be ${PG_BLCKSZ} bytes`);
      const stored = Buffer.concat([page.subarray(0, holeOffset), page.subarray(holeOffset + holeLength)]);
      u16(stored.byteLength);
      u16(holeOffset);
      headers.push((holeLength > 0 ? BKPIMAGE_HAS_HOLE : 0) | (apply ? BKPIMAGE_APPLY : 0));
      payloads.push(stored);
    }
    if (!same) {
      u32(b.rnode.spcNode);
      u32(b.rnode.dbNode);
      u32(b.rnode.relNode);
    }
    u32(b.blkno);
    payloads.push(data);
    prevRel = b.rnode;
  }
  if (spec.origin !== undefined) {
    headers.push(XLR_BLOCK_ID_ORIGIN);
    u16(spec.origin);
  }
  if (spec.toplevelXid !== undefined) {
    headers.push(XLR_BLOCK_ID_TOPLEVEL_XID);
    u32(spec.toplevelXid);
  }
  const main = spec.mainData ?? new Uint8Array(0);
  if (main.byteLength > 0) {
    if (main.byteLength < 256) {
      headers.push(XLR_BLOCK_ID_DATA_SHORT, main.byteLength);
    } else {
      headers.push(XLR_BLOCK_ID_DATA_LONG);
      u32(main.byteLength);
    }
    payloads.push(main);
  }
  const body = Buffer.concat([Buffer.from(headers), ...payloads]);
  const totLen = SIZE_OF_XLOG_RECORD + body.byteLength;
  const rec = Buffer.alloc(totLen);
  rec.writeUInt32LE(totLen, 0);
  rec.writeUInt32LE(spec.xid >>> 0, 4);
  rec.writeBigUInt64LE(prev, 8);
  rec[16] = spec.info;
  rec[17] = spec.rmid;
  body.copy(rec, SIZE_OF_XLOG_RECORD);
  const crc = crc32c(rec.subarray(0, 20), crc32c(rec.subarray(SIZE_OF_XLOG_RECORD)));
  rec.writeUInt32LE(crc, 20);
  return rec;
}

export interface WalWriterOptions {
  /** Where the first record goes (8-aligned, not inside a page header); or a page boundary. */
  startLsn: Lsn;
  segmentSizeBytes?: number;
  systemId: bigint;
  timeline?: number;
  /** xl_prev of the first record (default 0). */
  prevLsn?: Lsn;
}

/**
 * Lays records out into WAL pages in memory. `bytes()` returns the stream from the start of the
 * page holding `startLsn` up to the end of the last record (page headers included); pages before
 * startLsn's offset are zero-filled except for their header, which marks the area before the
 * first record as a continuation so readers that start at the page skip it.
 */
export class WalWriter {
  readonly segmentSizeBytes: number;
  readonly systemId: bigint;
  readonly timeline: number;
  /** LSN of the first byte of the buffer (a page boundary). */
  readonly bufferStartLsn: Lsn;
  private buf: Buffer;
  private used: number; // bytes of buf written so far (offset of the next free byte)
  private lastRecordLsn: Lsn;
  private readonly headersWritten = new Set<number>();

  constructor(opts: WalWriterOptions) {
    this.segmentSizeBytes = opts.segmentSizeBytes ?? DEFAULT_WAL_SEGMENT_SIZE;
    this.systemId = opts.systemId;
    this.timeline = opts.timeline ?? 1;
    this.bufferStartLsn = opts.startLsn - (opts.startLsn % BigInt(XLOG_BLCKSZ));
    this.buf = Buffer.alloc(4 * XLOG_BLCKSZ);
    this.lastRecordLsn = opts.prevLsn ?? 0n;
    const startOff = Number(opts.startLsn - this.bufferStartLsn);
    const hs = this.headerSizeAt(0);
    if (startOff !== 0 && startOff < hs) throw new InvalidInputError('WalWriter: start LSN points inside a page header');
    // The page holding the start: header, with the bytes before the start marked as a continuation.
    const skipped = startOff === 0 ? 0 : startOff - hs;
    this.writePageHeader(0, skipped > 0 ? XLP_FIRST_IS_CONTRECORD : 0, skipped);
    this.used = startOff === 0 ? hs : startOff;
  }

  /** LSN where the next record would start. */
  get nextLsn(): Lsn {
    let off = this.used;
    if (off % XLOG_BLCKSZ === 0) off += this.headerSizeAt(off);
    return this.bufferStartLsn + BigInt(off);
  }

  get prevLsn(): Lsn {
    return this.lastRecordLsn;
  }

  /** Encodes and appends a record; returns its LSN and end LSN. */
  append(spec: RecordSpec): { lsn: Lsn; endLsn: Lsn; bytes: Buffer } {
    const rec = encodeRecord(spec, this.lastRecordLsn);
    return { ...this.appendEncoded(rec), bytes: rec };
  }

  /** Appends an already encoded record (its xl_prev is taken as is). */
  appendEncoded(rec: Uint8Array): { lsn: Lsn; endLsn: Lsn } {
    if (this.used % XLOG_BLCKSZ === 0) {
      this.ensure(this.used + SIZE_OF_LONG_PAGE_HEADER);
      const hs = this.headerSizeAt(this.used);
      this.writePageHeader(this.used, 0, 0);
      this.used += hs;
    }
    const lsn = this.bufferStartLsn + BigInt(this.used);
    let written = 0;
    while (written < rec.byteLength) {
      if (this.used % XLOG_BLCKSZ === 0) {
        const hs = this.headerSizeAt(this.used);
        this.ensure(this.used + hs);
        this.writePageHeader(this.used, XLP_FIRST_IS_CONTRECORD, rec.byteLength - written);
        this.used += hs;
      }
      const room = XLOG_BLCKSZ - (this.used % XLOG_BLCKSZ);
      const n = Math.min(room, rec.byteLength - written);
      this.ensure(this.used + n);
      this.buf.set(rec.subarray(written, written + n), this.used);
      this.used += n;
      written += n;
    }
    this.used = Math.ceil(this.used / 8) * 8;
    const isSwitch = rec[17] === 0 && (rec[16]! & 0xf0) === 0x40;
    if (isSwitch) {
      const segAbs = Number((this.bufferStartLsn + BigInt(this.used)) % BigInt(this.segmentSizeBytes));
      if (segAbs !== 0) this.used += this.segmentSizeBytes - segAbs; // zeros, no page headers
      this.ensure(this.used);
    }
    this.lastRecordLsn = lsn;
    return { lsn, endLsn: this.bufferStartLsn + BigInt(this.used) };
  }

  /** The WAL bytes from bufferStartLsn to the end of the last record. */
  bytes(): Buffer {
    return this.buf.subarray(0, this.used);
  }

  /** The WAL bytes padded with zeros to the end of the current page. */
  bytesToPageEnd(): Buffer {
    const end = Math.ceil(this.used / XLOG_BLCKSZ) * XLOG_BLCKSZ;
    this.ensure(end);
    return this.buf.subarray(0, end);
  }

  private headerSizeAt(off: number): number {
    const abs = this.bufferStartLsn + BigInt(off);
    return abs % BigInt(this.segmentSizeBytes) === 0n ? SIZE_OF_LONG_PAGE_HEADER : SIZE_OF_SHORT_PAGE_HEADER;
  }

  private writePageHeader(off: number, flags: number, remLen: number): void {
    if (this.headersWritten.has(off)) return;
    this.headersWritten.add(off);
    this.ensure(off + SIZE_OF_LONG_PAGE_HEADER);
    const long = this.headerSizeAt(off) === SIZE_OF_LONG_PAGE_HEADER;
    const b = this.buf;
    b.writeUInt16LE(XLOG_PAGE_MAGIC, off);
    b.writeUInt16LE(flags | XLP_BKP_REMOVABLE | (long ? XLP_LONG_HEADER : 0), off + 2);
    b.writeUInt32LE(this.timeline, off + 4);
    b.writeBigUInt64LE(this.bufferStartLsn + BigInt(off), off + 8);
    b.writeUInt32LE(remLen, off + 16);
    if (long) {
      b.writeBigUInt64LE(this.systemId, off + 24);
      b.writeUInt32LE(this.segmentSizeBytes, off + 32);
      b.writeUInt32LE(XLOG_BLCKSZ, off + 36);
    }
  }

  private ensure(size: number): void {
    if (size <= this.buf.byteLength) return;
    let n = this.buf.byteLength;
    while (n < size) n *= 2;
    const nb = Buffer.alloc(n);
    this.buf.copy(nb, 0, 0, this.used);
    this.buf = nb;
  }
}
