/**
 * Shared pieces for the typed WAL record bodies: the error type, a bounds-checked little-endian
 * reader over a record's main data, and PostgreSQL timestamp conversions.
 *
 * Why a reader object: every body parser walks the main data front to back, and every step must
 * be checked against the end of the buffer — a record that passed its CRC can still carry counts
 * that do not fit (a bug on the writing side, or a parser that disagrees with PostgreSQL about the
 * layout). The reader turns each such mismatch into one WalRecordBodyError naming the resource
 * manager, the record type, the record's LSN, the offset and what was being read, so a failure on
 * real WAL points straight at the record to look at with pg_waldump.
 *
 * Invariants:
 * - The reader never reads past `data.byteLength`; every read goes through `need()`.
 * - Counts read from the WAL are signed 32-bit in PostgreSQL; a negative count is an error, and a
 *   count is only accepted when its whole array fits in the bytes that remain, so loops over
 *   arrays are bounded by the main-data size.
 * - Fields inside a record are packed at the offsets PostgreSQL's C structs give them (x86-64,
 *   MAXALIGN 8); the parsers read at explicit offsets, never assuming the buffer itself is aligned.
 * - Bytes past the last field a parser needs are ignored, as PostgreSQL's redo ignores them.
 */
import { InvalidInputError, StrataError, type ErrorContext } from '../../util/errors.ts';
import { formatLsn } from '../lsn.ts';
import { rmgrName, recordTypeName } from '../rmgr.ts';
import { mainData, type DecodedRecord, type RelFileNode } from '../xlogrecord.ts';

/** A record's main data (or block data) does not have the layout its rmgr and type call for. */
export class WalRecordBodyError extends StrataError {
  constructor(message: string, context: ErrorContext = {}) {
    super('wal_record_body', message, context);
    this.name = 'WalRecordBodyError';
  }
}

/** Size of a RelFileNode on disk: spcNode, dbNode, relNode (u32 each). */
export const SIZE_OF_REL_FILE_NODE = 12;
/** Size of one SharedInvalidationMessage (a 16-byte union). */
export const SIZE_OF_SHARED_INVAL_MESSAGE = 16;
/** MAXALIGN on x86-64. */
export const MAXIMUM_ALIGNOF = 8;

export function maxAlign(n: number): number {
  return (n + (MAXIMUM_ALIGNOF - 1)) & ~(MAXIMUM_ALIGNOF - 1);
}

const utf8 = new TextDecoder('utf-8');

/** Decodes C-string bytes (server encoding is assumed to be UTF-8 or ASCII; bad bytes become U+FFFD). */
export function decodeCString(bytes: Uint8Array): string {
  return utf8.decode(bytes);
}

/**
 * Bounds-checked cursor over one record's main data. `pos` is the offset of the next read,
 * relative to the start of the main data.
 */
export class BodyReader {
  readonly rec: DecodedRecord;
  readonly data: Uint8Array;
  readonly view: DataView;
  pos = 0;

  constructor(rec: DecodedRecord, data: Uint8Array = mainData(rec)) {
    this.rec = rec;
    this.data = data;
    this.view = new DataView(data.buffer, data.byteOffset, data.byteLength);
  }

  /** Names are only looked up when an error is reported (this reader is created for every record). */
  get rmgr(): string {
    return rmgrName(this.rec.rmid);
  }

  get type(): string {
    return recordTypeName(this.rec.rmid, this.rec.info);
  }

  get length(): number {
    return this.data.byteLength;
  }

  get remaining(): number {
    return this.data.byteLength - this.pos;
  }

  /** Throws a WalRecordBodyError: "<rmgr> <type> at <lsn>: <what>". */
  fail(what: string, extra: ErrorContext = {}): never {
    const lsn = formatLsn(this.rec.lsn);
    throw new WalRecordBodyError(`${this.rmgr} ${this.type} at ${lsn}: ${what}`, {
      rmgr: this.rmgr,
      recordType: this.type,
      lsn,
      info: `0x${this.rec.info.toString(16).padStart(2, '0')}`,
      mainDataBytes: this.data.byteLength,
      offset: this.pos,
      ...extra,
    });
  }

  /** Checks that `n` bytes are available at the cursor. */
  need(n: number, what: string): void {
    if (this.pos + n > this.data.byteLength) {
      const missing = this.pos + n - this.data.byteLength;
      this.fail(`main data is ${this.data.byteLength} bytes, ${what} needs ${n} bytes at offset ${this.pos} (${missing} missing)`, { neededBytes: n });
    }
  }

  /** Checks that the main data holds at least `n` bytes in total (a fixed-size struct). */
  needTotal(n: number, what: string): void {
    if (this.data.byteLength < n) {
      this.fail(`main data is ${this.data.byteLength} bytes, ${what} needs ${n}`, { neededBytes: n });
    }
  }

  skip(n: number, what: string): void {
    this.need(n, what);
    this.pos += n;
  }

  /** Advances the cursor to the next multiple of 8 from the start of the data (2PC state files). */
  alignTo8(what: string): void {
    const aligned = maxAlign(this.pos);
    if (aligned > this.data.byteLength) this.need(aligned - this.pos, what);
    this.pos = aligned;
  }

  u8(what: string): number {
    this.need(1, what);
    return this.data[this.pos++]!;
  }

  bool(what: string): boolean {
    return this.u8(what) !== 0;
  }

  u16(what: string): number {
    this.need(2, what);
    const v = this.view.getUint16(this.pos, true);
    this.pos += 2;
    return v;
  }

  u32(what: string): number {
    this.need(4, what);
    const v = this.view.getUint32(this.pos, true);
    this.pos += 4;
    return v;
  }

  i32(what: string): number {
    this.need(4, what);
    const v = this.view.getInt32(this.pos, true);
    this.pos += 4;
    return v;
  }

  u64(what: string): bigint {
    this.need(8, what);
    const v = this.view.getBigUint64(this.pos, true);
    this.pos += 8;
    return v;
  }

  i64(what: string): bigint {
    this.need(8, what);
    const v = this.view.getBigInt64(this.pos, true);
    this.pos += 8;
    return v;
  }

  /** Fixed-offset reads (no cursor movement); the caller has checked the size with needTotal. */
  u16At(off: number): number {
    return this.view.getUint16(off, true);
  }
  u32At(off: number): number {
    return this.view.getUint32(off, true);
  }
  i32At(off: number): number {
    return this.view.getInt32(off, true);
  }
  u64At(off: number): bigint {
    return this.view.getBigUint64(off, true);
  }
  i64At(off: number): bigint {
    return this.view.getBigInt64(off, true);
  }

  /**
   * Validates an element count read from the WAL: not negative and `count * itemSize` bytes present
   * at the cursor. `what` names the array ("subxact count 5").
   */
  checkCount(count: number, itemSize: number, what: string): void {
    if (count < 0) this.fail(`${what} is negative`, { count });
    this.need(count * itemSize, what);
  }

  /** Reads a signed 32-bit count followed by that many u32s (xids, oids). */
  countedU32s(label: string): number[] {
    const n = this.i32(`${label} count`);
    return this.u32Array(n, label);
  }

  u32Array(n: number, label: string): number[] {
    this.checkCount(n, 4, `${label} count ${n}`);
    const out = new Array<number>(n);
    for (let i = 0; i < n; i++) out[i] = this.view.getUint32(this.pos + 4 * i, true);
    this.pos += 4 * n;
    return out;
  }

  relFileNode(what: string): RelFileNode {
    this.need(SIZE_OF_REL_FILE_NODE, what);
    const p = this.pos;
    this.pos += SIZE_OF_REL_FILE_NODE;
    return { spcNode: this.view.getUint32(p, true), dbNode: this.view.getUint32(p + 4, true), relNode: this.view.getUint32(p + 8, true) };
  }

  relFileNodeArray(n: number, label: string): RelFileNode[] {
    this.checkCount(n, SIZE_OF_REL_FILE_NODE, `${label} count ${n}`);
    const out = new Array<RelFileNode>(n);
    for (let i = 0; i < n; i++) out[i] = this.relFileNode(label);
    return out;
  }

  /** `n` raw bytes at the cursor (a view into the record, not a copy). */
  bytes(n: number, what: string): Uint8Array {
    this.need(n, what);
    const out = this.data.subarray(this.pos, this.pos + n);
    this.pos += n;
    return out;
  }

  /** A NUL-terminated string starting at the cursor; the cursor moves past the NUL. */
  cString(what: string): string {
    const end = this.data.indexOf(0, this.pos);
    if (end < 0) this.fail(`${what} has no terminating NUL in the ${this.remaining} bytes left at offset ${this.pos}`);
    const s = decodeCString(this.data.subarray(this.pos, end));
    this.pos = end + 1;
    return s;
  }
}

// ---------------------------------------------------------------------------------------------
// Timestamps. TimestampTz is int64 microseconds since 2000-01-01 00:00:00 UTC (PostgreSQL's
// epoch); pg_time_t (CheckPoint.time) is plain Unix seconds.

/** 2000-01-01T00:00:00Z in Unix milliseconds. */
export const PG_EPOCH_UNIX_MS = 946_684_800_000;
const PG_EPOCH_UNIX_US = 946_684_800_000_000n;

/** TimestampTz's -infinity and +infinity (DT_NOBEGIN, DT_NOEND). */
export const PG_TIMESTAMP_MINUS_INFINITY = -0x8000_0000_0000_0000n;
export const PG_TIMESTAMP_PLUS_INFINITY = 0x7fff_ffff_ffff_ffffn;

/** TimestampTz (µs since 2000-01-01) → Unix microseconds, exact. */
export function pgTimestampToUnixUs(pgUs: bigint): bigint {
  return pgUs + PG_EPOCH_UNIX_US;
}

/**
 * TimestampTz → Unix milliseconds, rounded down (towards -infinity) to whole ms. The infinities map
 * to -Infinity / +Infinity.
 */
export function pgTimestampToUnixMs(pgUs: bigint): number {
  if (pgUs === PG_TIMESTAMP_MINUS_INFINITY) return -Infinity;
  if (pgUs === PG_TIMESTAMP_PLUS_INFINITY) return Infinity;
  let ms = pgUs / 1000n;
  if (pgUs % 1000n < 0n) ms -= 1n;
  return Number(ms) + PG_EPOCH_UNIX_MS;
}

/** TimestampTz → Date (sub-millisecond digits dropped; infinities and far dates give an Invalid Date). */
export function pgTimestampToDate(pgUs: bigint): Date {
  return new Date(pgTimestampToUnixMs(pgUs));
}

/** Unix milliseconds (an integer) → TimestampTz. */
export function unixMsToPgTimestamp(ms: number): bigint {
  if (!Number.isSafeInteger(ms)) throw new InvalidInputError(`cannot convert ${ms} ms to a PostgreSQL timestamp: not a safe integer`, { ms });
  return (BigInt(ms) - BigInt(PG_EPOCH_UNIX_MS)) * 1000n;
}

export function dateToPgTimestamp(d: Date): bigint {
  return unixMsToPgTimestamp(d.getTime());
}

/** pg_time_t (Unix seconds, as in CheckPoint.time and pg_control.time) → Date. */
export function pgTimeToDate(unixSec: bigint): Date {
  return new Date(Number(unixSec) * 1000);
}

/** Splits a FullTransactionId (epoch << 32 | xid). */
export function fullXidEpoch(full: bigint): number {
  return Number((full >> 32n) & 0xffff_ffffn);
}
export function fullXidXid(full: bigint): number {
  return Number(full & 0xffff_ffffn);
}
