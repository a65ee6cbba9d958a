/**
 * Streaming WAL decoder.
 *
 * Takes PostgreSQL WAL bytes in chunks of any size — from segment files or a replication stream,
 * which carry exactly the same bytes — and returns complete, CRC-verified, decoded records.
 *
 * Why one decoder for both: a pageserver reads WAL from a walsender (chunks end anywhere, often
 * mid-record), tools read it from files (chunks end at read-buffer boundaries); the WAL format is
 * the same and the same bugs would hide in two readers.
 *
 * How it works. The decoder keeps a queue of pushed chunks (bytequeue.ts) and a read position. Positions are
 * tracked as JS numbers relative to `base` (the start of the segment holding the start LSN) so the
 * per-byte arithmetic stays in fast integer math; LSNs become bigints only at the API boundary.
 * At each page boundary it reads and validates the page header (magic, flags, page address, the
 * long header's system id / segment size / block size, timeline monotonicity). A record is decoded
 * when all its bytes are buffered: a record that lies in one chunk is returned as a view of that
 * chunk (no copy); a record that crosses page headers or chunks is reassembled into a fresh
 * buffer. Continuation pages are validated as soon as they arrive (XLP_FIRST_IS_CONTRECORD set,
 * xlp_rem_len equal to the bytes still missing), so a garbage length never makes the decoder wait
 * for data that will not come.
 *
 * End of WAL is a value, not an exception: `next()` returns `{ kind: 'end', lsn, code, reason }`
 * for zeros, a stale page of a recycled segment, an invalid page or record header, a bad CRC, an invalid record body, or (after
 * `finish()`) input that stops at or inside a record. The end is sticky. `clean` tells whether it
 * is a normal end (zeros, a stale page, or input ending at a record boundary) or evidence of damage.
 *
 * Invariants:
 *  - `pos` is always either a page boundary or an 8-aligned record start after a page header.
 *  - every returned record passed its CRC, and its xl_prev equals the previous record's LSN (when
 *    the previous record is known).
 *  - chunks handed to push() are never written to; returned records may be views into them, so the
 *    caller must not reuse a chunk's memory after pushing it.
 */
import { ByteQueue, RecordSlab } from './bytequeue.ts';
import { crc32cRange } from './crc32c.ts';
import { formatLsn, type Lsn } from './lsn.ts';
import { isKnownRmid, RM_XLOG_ID } from './rmgr.ts';
import {
  DEFAULT_WAL_SEGMENT_SIZE, SIZE_OF_LONG_PAGE_HEADER, SIZE_OF_SHORT_PAGE_HEADER, SIZE_OF_XLOG_RECORD,
  XLOG_BLCKSZ, XLOG_PAGE_MAGIC, XLOG_RECORD_MAX_SIZE, XLP_ALL_FLAGS, XLP_FIRST_IS_CONTRECORD, XLP_LONG_HEADER,
} from './walformat.ts';
import { decodeXLogRecord, RecordDecodeError, type DecodedRecord } from './xlogrecord.ts';
import { InvalidInputError } from '../util/errors.ts';

/** Why decoding stopped. */
export const WAL_END_CODES = [
  'end-of-input', // finish() was called and the input ends exactly at a record boundary
  'zeros', // a zero record length or an all-zero page header: the normal end of written WAL
  'stale-page', // a page from an older part of the WAL (a recycled segment): the normal end of written WAL
  'incomplete', // finish() was called and the input ends inside a record or page header
  'bad-page-header',
  'bad-record-header',
  'bad-crc',
  'bad-record', // header and CRC fine, but the block references / lengths are inconsistent
] as const;
export type WalEndCode = (typeof WAL_END_CODES)[number];

export interface WalEnd {
  kind: 'end';
  /** Where decoding stopped: the start of the record (or page) that could not be read. */
  lsn: Lsn;
  code: WalEndCode;
  reason: string;
  /** True for a normal end of WAL (zeros, or input ending at a record boundary). */
  clean: boolean;
}

/** A page header that cannot be read: `stale` when it is an older page (the normal end of WAL). */
interface PageProblem {
  stale: boolean;
  reason: string;
}

export interface WalRecordItem {
  kind: 'record';
  record: DecodedRecord;
}

export type WalStreamItem = WalRecordItem | WalEnd;

export interface WalStreamDecoderOptions {
  /**
   * Where to start: the LSN of a record, or a page boundary. At a page boundary, the tail of a
   * record that began on an earlier page (XLP_FIRST_IS_CONTRECORD) is skipped, as pg_waldump does.
   * The first pushed byte must be the byte at this LSN.
   */
  startLsn: Lsn;
  segmentSizeBytes?: number;
  /** When known, every long page header must carry it. Otherwise learned from the first one. */
  systemId?: bigint;
  /** When known, the first record's xl_prev must equal it. */
  prevLsn?: Lsn;
  /** Limit on bytes buffered ahead of the read position (default: the largest record + 2 segments). */
  maxBufferedBytes?: number;
}

const PAGE = XLOG_BLCKSZ;
const ZERO_SCRATCH_SIZE = SIZE_OF_LONG_PAGE_HEADER;

export class WalStreamDecoder {
  readonly segmentSizeBytes: number;
  private systemId: bigint | undefined;
  private readonly maxBufferedBytes: number;

  /** LSN of offset 0. A segment boundary, so page/segment math works on the offsets. */
  private readonly base: Lsn;
  /** `base` as a number (exact below 2^53, which covers 8 PiB of WAL). */
  private readonly baseNum: number;
  /** Read position, as an offset from base. */
  private pos: number;
  /** Chunks not yet fully consumed, and the offset of each one's first byte. */
  private readonly queue: ByteQueue;
  private readonly slab = new RecordSlab();
  private inputFinished = false;
  private ended: WalEnd | null = null;

  /** Skip the continuation at the start page (only when starting at a page boundary). */
  private findFirst: boolean;
  private minTimeline = 0;
  private prevRecordLsn: Lsn | undefined;
  /** Timeline of the last page header read. */
  private currentTimeline = 0;

  /** A multi-page record being waited for: the offset up to which continuation pages were validated. */
  private pendingStart = -1;
  private pendingCheckedUpTo = -1;
  private pendingGathered = 0;
  private pendingLastEnd = -1;

  private readonly scratch = new Uint8Array(ZERO_SCRATCH_SIZE);

  constructor(opts: WalStreamDecoderOptions) {
    this.segmentSizeBytes = opts.segmentSizeBytes ?? DEFAULT_WAL_SEGMENT_SIZE;
    const seg = this.segmentSizeBytes;
    if (!Number.isInteger(seg) || seg < 1024 * 1024 || seg > 1024 * 1024 * 1024 || (seg & (seg - 1)) !== 0) {
      throw new InvalidInputError(`invalid WAL segment size ${seg}: PostgreSQL allows powers of two from 1 MiB to 1 GiB`);
    }
    if (opts.startLsn % 8n !== 0n) {
      throw new InvalidInputError(`WAL start ${formatLsn(opts.startLsn)} is not 8-aligned, so it cannot be a record start`);
    }
    this.systemId = opts.systemId;
    if (opts.prevLsn !== undefined) this.setPrev(opts.prevLsn);
    this.maxBufferedBytes = opts.maxBufferedBytes ?? XLOG_RECORD_MAX_SIZE + 2 * seg;
    this.base = opts.startLsn - (opts.startLsn % BigInt(seg));
    this.baseNum = Number(this.base);
    this.pos = Number(opts.startLsn - this.base);
    const pageOff = this.pos % PAGE;
    if (pageOff !== 0 && pageOff < SIZE_OF_SHORT_PAGE_HEADER) {
      throw new InvalidInputError(`WAL start ${formatLsn(opts.startLsn)} points inside a page header`);
    }
    if (this.pos % seg !== 0 && this.pos % seg < SIZE_OF_LONG_PAGE_HEADER && pageOff === this.pos % seg) {
      throw new InvalidInputError(`WAL start ${formatLsn(opts.startLsn)} points inside a segment's long page header`);
    }
    this.findFirst = pageOff === 0;
    this.queue = new ByteQueue(this.pos);
  }

  /** LSN of the next byte the decoder expects to be pushed. */
  get inputLsn(): Lsn {
    return this.base + BigInt(this.queue.end);
  }

  /** LSN where the next record (or page) will be read. */
  get readLsn(): Lsn {
    return this.base + BigInt(this.pos);
  }

  /** The system identifier, once known (given, or read from the first long page header). */
  get systemIdentifier(): bigint | undefined {
    return this.systemId;
  }

  /** LSN of the last record returned (xl_prev of the next one). */
  get lastRecordLsn(): Lsn | undefined {
    return this.prevRecordLsn;
  }

  /** Appends the next bytes of the stream. The decoder keeps a reference: do not modify `chunk` afterwards. */
  push(chunk: Uint8Array): void {
    if (this.inputFinished) throw new InvalidInputError('WAL decoder: push() after finish()');
    if (chunk.byteLength === 0) return;
    if (this.ended !== null) return; // nothing more will be decoded; drop the bytes
    // A plain Uint8Array view: its subarray() is much cheaper than Buffer's in the per-record path.
    const buf = new Uint8Array(chunk.buffer, chunk.byteOffset, chunk.byteLength);
    if (this.queue.end + buf.byteLength - this.pos > this.maxBufferedBytes) {
      throw new InvalidInputError(
        `WAL decoder buffer limit: ${this.queue.end + buf.byteLength - this.pos} bytes ahead of ${formatLsn(this.readLsn)} exceed ${this.maxBufferedBytes}; call next() after each push()`,
      );
    }
    this.queue.append(buf, this.pos); // bytes before pos: padding after XLOG_SWITCH that we skip
  }

  /** Declares the end of input: an incomplete record at the end becomes an 'incomplete' end. */
  finish(): void {
    this.inputFinished = true;
  }

  /** The next record, the end of WAL, or null when more bytes are needed. */
  next(): WalStreamItem | null {
    if (this.ended !== null) return this.ended;
    for (let guard = 0; guard < 1_000_000; guard++) {
      const pageOff = this.pos % PAGE;
      if (pageOff === 0) {
        const r = this.readPageHeaderAt(this.pos, true);
        if (r === null) return this.needMore(this.pos, 'a page header');
        if (typeof r === 'object') return r;
        continue; // header consumed (and possibly a continuation skipped)
      }
      return this.readRecord();
    }
    // Every iteration consumes a page; a million pages without a record is 8 GB of continuation.
    return this.end(this.pos, 'bad-page-header', 'no record start found in 8 GB of continuation pages');
  }

  // -------------------------------------------------------------------------------------------
  // Page headers

  /**
   * Reads and validates the page header at `pageStart`. When `advance`, moves `pos` past it (and
   * past a skipped continuation). Returns null when bytes are missing, a WalEnd on error, or the
   * header size.
   */
  private readPageHeaderAt(pageStart: number, advance: boolean): number | WalEnd | null {
    const segOff = pageStart % this.segmentSizeBytes;
    const hdrSize = segOff === 0 ? SIZE_OF_LONG_PAGE_HEADER : SIZE_OF_SHORT_PAGE_HEADER;
    if (this.queue.end < pageStart + hdrSize) {
      if (this.inputFinished && this.queue.end <= pageStart && advance && this.pendingStart < 0) {
        return this.end(pageStart, 'end-of-input', `input ends at page boundary ${this.fmt(pageStart)}`, true);
      }
      return null;
    }
    const h = this.queue.view(pageStart, hdrSize, this.scratch);
    const magic = h[0]! | (h[1]! << 8);
    const info = h[2]! | (h[3]! << 8);
    if (magic === 0 && isAllZero(h, hdrSize)) {
      return this.end(pageStart, 'zeros', `WAL page at ${this.fmt(pageStart)} is all zeros (end of written WAL)`, true);
    }
    const problem = this.checkPageHeader(h, pageStart, segOff, magic, info);
    if (problem !== null) return this.end(pageStart, problem.stale ? 'stale-page' : 'bad-page-header', problem.reason, problem.stale);
    if (!advance) return hdrSize;
    const remLen = readU32(h, 16);
    const isCont = (info & XLP_FIRST_IS_CONTRECORD) !== 0;
    if (this.findFirst) {
      if (isCont) {
        // The page starts with the tail of a record that began before our start: skip it.
        const tail = hdrSize + align8(remLen);
        if (tail >= PAGE) {
          this.advanceTo(pageStart + PAGE);
          return hdrSize;
        }
        this.advanceTo(pageStart + tail);
      } else {
        this.advanceTo(pageStart + hdrSize);
      }
      this.findFirst = false;
      return hdrSize;
    }
    if (isCont) {
      return this.end(pageStart, 'bad-page-header', `WAL page at ${this.fmt(pageStart)} continues a record (XLP_FIRST_IS_CONTRECORD), but a new record was expected there`);
    }
    this.advanceTo(pageStart + hdrSize);
    return hdrSize;
  }

  private checkPageHeader(h: Uint8Array, pageStart: number, segOff: number, magic: number, info: number): PageProblem | null {
    if (magic !== XLOG_PAGE_MAGIC) {
      return { stale: false, reason: `invalid magic number 0x${magic.toString(16).toUpperCase().padStart(4, '0')} in WAL page at ${this.fmt(pageStart)} (PostgreSQL 15 WAL has 0xD110)` };
    }
    if ((info & ~XLP_ALL_FLAGS) !== 0) return { stale: false, reason: `invalid info bits 0x${info.toString(16)} in WAL page at ${this.fmt(pageStart)}` };
    const isLong = (info & XLP_LONG_HEADER) !== 0;
    if (segOff === 0 && !isLong) return { stale: false, reason: `WAL page at ${this.fmt(pageStart)} starts a segment but has no long header` };
    if (segOff !== 0 && isLong) return { stale: false, reason: `unexpected long page header in the middle of a segment at ${this.fmt(pageStart)}` };
    const expectedAbs = this.baseNum + pageStart;
    const addrMatches = expectedAbs <= Number.MAX_SAFE_INTEGER
      ? readU32(h, 8) === expectedAbs % 0x1_0000_0000 && readU32(h, 12) === Math.floor(expectedAbs / 0x1_0000_0000)
      : ((BigInt(readU32(h, 12)) << 32n) | BigInt(readU32(h, 8))) === this.base + BigInt(pageStart);
    if (isLong) {
      const sysid = (BigInt(readU32(h, 28)) << 32n) | BigInt(readU32(h, 24));
      const segSize = readU32(h, 32);
      const blcksz = readU32(h, 36);
      if (segSize !== this.segmentSizeBytes) return { stale: false, reason: `WAL segment at ${this.fmt(pageStart)} has segment size ${segSize}, expected ${this.segmentSizeBytes}` };
      if (blcksz !== PAGE) return { stale: false, reason: `WAL segment at ${this.fmt(pageStart)} has WAL block size ${blcksz}, expected ${PAGE}` };
      if (this.systemId !== undefined && sysid !== this.systemId) {
        return { stale: false, reason: `WAL segment at ${this.fmt(pageStart)} belongs to another database system: system identifier ${sysid}, expected ${this.systemId}` };
      }
      if (addrMatches) this.systemId ??= sysid;
    }
    if (!addrMatches) {
      const pageAddr = (BigInt(readU32(h, 12)) << 32n) | BigInt(readU32(h, 8));
      const expected = this.base + BigInt(pageStart);
      if (pageAddr < expected && pageAddr % BigInt(PAGE) === 0n) {
        // Recycled segments keep their old pages: an older page address is the normal end of written WAL.
        return { stale: true, reason: `WAL page at ${this.fmt(pageStart)} holds older WAL (page address ${formatLsn(pageAddr)}): end of written WAL` };
      }
      return { stale: false, reason: `unexpected page address ${formatLsn(pageAddr)} in WAL page at ${this.fmt(pageStart)} (a recycled segment, or WAL from elsewhere)` };
    }
    const tli = readU32(h, 4);
    if (tli < this.minTimeline) return { stale: false, reason: `out-of-sequence timeline ID ${tli} (after ${this.minTimeline}) in WAL page at ${this.fmt(pageStart)}` };
    this.minTimeline = tli;
    this.currentTimeline = tli;
    return null;
  }

  // -------------------------------------------------------------------------------------------
  // Records

  private readRecord(): WalStreamItem | null {
    const start = this.pos;
    const pageStart = start - (start % PAGE);
    const pageEnd = pageStart + PAGE;
    const onFirstPage = pageEnd - start; // >= 8, a multiple of 8

    // Fast path for most records: wholly on this page and in one chunk, header and CRC valid.
    // It makes one view (the record's bytes) and no copies; anything else takes the general path
    // below, which also produces the error descriptions.
    const ci = this.queue.find(start);
    if (ci >= 0) {
      const c = this.queue.chunks[ci]!;
      const rel = start - this.queue.starts[ci]!;
      if (rel + SIZE_OF_XLOG_RECORD <= c.length) {
        const totLen = readU32(c, rel);
        if (totLen >= SIZE_OF_XLOG_RECORD && totLen <= onFirstPage && rel + totLen <= c.length &&
            this.checkRecordHeader(c, rel, start) === null &&
            crc32cRange(c, rel, rel + 20, crc32cRange(c, rel + SIZE_OF_XLOG_RECORD, rel + totLen)) === readU32(c, rel + 20)) {
          return this.finishRecord(c.subarray(rel, rel + totLen), start, start + totLen);
        }
      }
    }
    if (this.queue.end < start + 4) return this.needMore(start, 'a record header');
    const totLen = this.queue.u32At(start, this.scratch);
    if (totLen === 0) {
      return this.end(start, 'zeros', `invalid record length at ${this.fmt(start)}: wanted 24, got 0 (end of written WAL)`, true);
    }
    if (totLen < SIZE_OF_XLOG_RECORD) {
      return this.end(start, 'bad-record-header', `invalid record length at ${this.fmt(start)}: wanted 24, got ${totLen}`);
    }
    if (totLen > XLOG_RECORD_MAX_SIZE) {
      return this.end(start, 'bad-record-header', `record length ${totLen} at ${this.fmt(start)} is larger than PostgreSQL's maximum ${XLOG_RECORD_MAX_SIZE}`);
    }
    let headerChecked = false;
    if (onFirstPage >= SIZE_OF_XLOG_RECORD) {
      if (this.queue.end < start + SIZE_OF_XLOG_RECORD) return this.needMore(start, 'a record header');
      const problem = this.checkRecordHeader(this.queue.view(start, SIZE_OF_XLOG_RECORD, this.scratch), 0, start);
      if (problem !== null) return this.end(start, 'bad-record-header', problem);
      headerChecked = true;
    }

    let bytes: Uint8Array;
    let endOff: number; // unaligned end of the record's last byte + 1
    if (totLen <= onFirstPage) {
      if (this.queue.end < start + totLen) return this.needMore(start, `a ${totLen}-byte record`);
      bytes = this.queue.view(start, totLen, null);
      endOff = start + totLen;
    } else {
      // Validate continuation pages as they become available, then reassemble.
      if (this.pendingStart !== start) {
        this.pendingStart = start;
        this.pendingCheckedUpTo = pageEnd;
        this.pendingGathered = onFirstPage;
      }
      while (this.pendingGathered < totLen) {
        const p = this.pendingCheckedUpTo;
        const hs = this.readPageHeaderAt(p, false);
        if (hs === null) return this.needMore(start, `continuation page ${this.fmt(p)} of a ${totLen}-byte record`);
        if (typeof hs === 'object') {
          // Report the end at the record that could not be completed, with the page's problem.
          return this.end(start, hs.code, `record at ${this.fmt(start)} cannot be completed: ${hs.reason}`, hs.clean);
        }
        const h = this.queue.view(p, hs, this.scratch);
        const info = h[2]! | (h[3]! << 8);
        const remLen = readU32(h, 16);
        if ((info & XLP_FIRST_IS_CONTRECORD) === 0) {
          return this.end(start, 'bad-record-header', `there is no contrecord flag at ${this.fmt(p)} for the record at ${this.fmt(start)}`);
        }
        const want = totLen - this.pendingGathered;
        if (remLen !== want) {
          return this.end(start, 'bad-record-header', `invalid contrecord length ${remLen} (expected ${want}) at ${this.fmt(p)} for the record at ${this.fmt(start)}`);
        }
        const take = Math.min(want, PAGE - hs);
        this.pendingGathered += take;
        this.pendingCheckedUpTo = p + PAGE;
        this.pendingLastEnd = p + hs + take;
      }
      endOff = this.pendingLastEnd;
      if (this.queue.end < endOff) return this.needMore(start, `a ${totLen}-byte record`);
      bytes = this.gather(start, totLen, this.slab.alloc(totLen));
      this.pendingStart = -1;
      if (!headerChecked) {
        // The 24-byte header was split across pages; check it now that it is whole.
        const problem = this.checkRecordHeader(bytes, 0, start);
        if (problem !== null) return this.end(start, 'bad-record-header', problem);
      }
    }

    // CRC-32C: the body after the 24-byte header first, then the header's first 20 bytes.
    const storedCrc = readU32(bytes, 20);
    const crc = crc32cRange(bytes, 0, 20, crc32cRange(bytes, SIZE_OF_XLOG_RECORD, totLen));
    if (crc !== storedCrc) {
      return this.end(start, 'bad-crc', `incorrect resource manager data checksum in record at ${this.fmt(start)} (stored 0x${storedCrc.toString(16)}, computed 0x${crc.toString(16)})`);
    }
    return this.finishRecord(bytes, start, endOff);
  }

  /** Decodes a checked record (header and CRC valid) and moves past it. */
  private finishRecord(bytes: Uint8Array, start: number, endOff: number): WalStreamItem {
    const lsn = this.lsnAt(start);
    let next = align8(endOff);
    const rmid = bytes[17]!;
    const isSwitch = rmid === RM_XLOG_ID && (bytes[16]! & 0xf0) === 0x40;
    if (isSwitch) {
      // After XLOG_SWITCH the rest of the segment is padding (zeros without page headers).
      const seg = this.segmentSizeBytes;
      next = Math.ceil(next / seg) * seg;
    }
    let record: DecodedRecord;
    try {
      record = decodeXLogRecord(bytes, lsn, this.lsnAt(next));
    } catch (e) {
      if (e instanceof RecordDecodeError) {
        return this.end(start, 'bad-record', `invalid record at ${this.fmt(start)}: ${e.message}`);
      }
      throw e;
    }
    this.prevRecordLsn = lsn;
    this.setPrevHalves(start);
    this.advanceTo(next);
    return { kind: 'record', record };
  }

  private prevLo = 0;
  private prevHi = 0;
  private setPrev(lsn: Lsn): void {
    this.prevRecordLsn = lsn;
    this.prevLo = Number(lsn & 0xffff_ffffn);
    this.prevHi = Number(lsn >> 32n);
  }

  /** setPrev for a record at offset `start`, in number math when the LSN fits in 2^53 (always, in practice). */
  private setPrevHalves(start: number): void {
    const abs = this.baseNum + start;
    if (abs <= Number.MAX_SAFE_INTEGER) {
      this.prevLo = abs % 0x1_0000_0000;
      this.prevHi = (abs - this.prevLo) / 0x1_0000_0000;
    } else {
      this.setPrev(this.base + BigInt(start));
    }
  }

  private checkRecordHeader(h: Uint8Array, o: number, start: number): string | null {
    const rmid = h[o + 17]!;
    if (!isKnownRmid(rmid)) return `invalid resource manager ID ${rmid} at ${this.fmt(start)}`;
    if (this.prevRecordLsn !== undefined) {
      // Compare halves as numbers: no bigint work on the per-record path unless it fails.
      if (readU32(h, o + 8) !== this.prevLo || readU32(h, o + 12) !== this.prevHi) {
        const prev = (BigInt(readU32(h, o + 12)) << 32n) | BigInt(readU32(h, o + 8));
        return `record with incorrect prev-link ${formatLsn(prev)} at ${this.fmt(start)} (previous record is at ${formatLsn(this.prevRecordLsn)})`;
      }
    } else if (((BigInt(readU32(h, o + 12)) << 32n) | BigInt(readU32(h, o + 8))) >= this.base + BigInt(start)) {
      const prev = (BigInt(readU32(h, o + 12)) << 32n) | BigInt(readU32(h, o + 8));
      return `record with incorrect prev-link ${formatLsn(prev)} at ${this.fmt(start)} (not before the record)`;
    }
    return null;
  }

  // -------------------------------------------------------------------------------------------
  // Byte access over the chunk queue

  /** Copies `len` record bytes starting at `off` into `out`, skipping page headers on the way. */
  private gather(off: number, len: number, out: Uint8Array): Uint8Array {
    let written = 0;
    let p = off;
    while (written < len) {
      const pageOff = p % PAGE;
      if (pageOff === 0) {
        p += p % this.segmentSizeBytes === 0 ? SIZE_OF_LONG_PAGE_HEADER : SIZE_OF_SHORT_PAGE_HEADER;
        continue;
      }
      const n = Math.min(len - written, PAGE - pageOff);
      this.queue.copyOut(p, n, out, written);
      written += n;
      p += n;
    }
    return out;
  }

  /** Moves the read position and drops chunks that lie wholly before it. */
  private advanceTo(off: number): void {
    this.pos = off;
    this.queue.dropBefore(off);
    // After XLOG_SWITCH, `off` may lie beyond the bytes received so far: the padding still
    // arrives through push() and is dropped there.
  }

  private needMore(at: number, what: string): WalEnd | null {
    if (!this.inputFinished) return null;
    if (this.queue.end <= at && this.pendingStart < 0) {
      return this.end(at, 'end-of-input', `input ends at ${this.fmt(at)}, a record boundary`, true);
    }
    return this.end(at, 'incomplete', `input ends at ${this.fmt(this.queue.end)} inside ${what} starting at ${this.fmt(at)}`);
  }

  private end(at: number, code: WalEndCode, reason: string, clean = false): WalEnd {
    this.ended = { kind: 'end', lsn: this.base + BigInt(at), code, reason, clean };
    this.queue.clear();
    return this.ended;
  }

  /** The LSN of an offset: one bigint conversion on the per-record path (exact below 2^53). */
  private lsnAt(off: number): Lsn {
    const abs = this.baseNum + off;
    return abs <= Number.MAX_SAFE_INTEGER ? BigInt(abs) : this.base + BigInt(off);
  }

  private fmt(off: number): string {
    return formatLsn(this.base + BigInt(off));
  }

  /** Timeline ID of the last page header read (0 before the first). */
  get timeline(): number {
    return this.currentTimeline;
  }
}

function readU32(b: Uint8Array, o: number): number {
  return (b[o]! | (b[o + 1]! << 8) | (b[o + 2]! << 16) | (b[o + 3]! << 24)) >>> 0;
}

/** MAXALIGN for offsets that may exceed 2^31 (no bitwise ops). */
function align8(n: number): number {
  const r = n % 8;
  return r === 0 ? n : n + 8 - r;
}

function isAllZero(b: Uint8Array, n: number): boolean {
  for (let i = 0; i < n; i++) if (b[i] !== 0) return false;
  return true;
}
