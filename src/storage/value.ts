/**
 * Values: what is stored under a key at an LSN.
 *
 * A value is either a full image of the key's content at that LSN, or a record that turns the
 * previous version into this one. Reading a key at LSN L means: find the newest image at or
 * below L (or a record that initialises the page from nothing — `willInit`), then apply every
 * record above it, oldest first, up to L.
 *
 * Record kinds:
 * - `pgRecord`: a PostgreSQL WAL record that touches this block, stored whole (header, block
 *   references, data), once per block it touches. The version LSN is the record's end LSN (what
 *   PostgreSQL's redo writes into pd_lsn); `recordLsn` is its start, to decode and to name it in
 *   errors. `willInit` when the record rebuilds the block from nothing (BKPBLOCK_WILL_INIT, or a
 *   full-page image to apply).
 * - storage-level records Strata derives from WAL records, for state PostgreSQL changes without
 *   registering the block in the record:
 *   - `clearVmBits`: heap insert/update/delete/lock clear visibility-map bits of heap blocks;
 *   - `clogSetStatus`: transaction commit/abort sets CLOG status bits of its xids (with the
 *     commit timestamp, so LSN↔time lookups can read it back from CLOG pages);
 *   - `multixactOffset` / `multixactMembers`: what creating a MultiXact writes to its SLRUs.
 *
 * Serialised form (docs/formats.md "Values"): one tag byte then a kind-specific little-endian
 * body. Images carry their bytes verbatim after the tag, so reading an image is a slice.
 */
import type { Lsn } from '../postgres/lsn.ts';
import { StrataError, InvalidInputError } from '../util/errors.ts';

export const ValueTag = {
  image: 0,
  pgRecord: 1,
  clearVmBits: 2,
  clogSetStatus: 3,
  multixactOffset: 4,
  multixactMembers: 5,
} as const;

/** CLOG transaction status values (clog.h). */
export const ClogStatus = {
  inProgress: 0,
  committed: 1,
  aborted: 2,
  subCommitted: 3,
} as const;

/** InvalidBlockNumber: "no heap block" in clearVmBits. */
export const NO_BLOCK = 0xffff_ffff;

export interface ImageValue {
  kind: 'image';
  /** The key's whole content: an 8192-byte page, or for non-page keys their own encoding. */
  image: Buffer;
}

export interface PgRecordValue {
  kind: 'pgRecord';
  willInit: boolean;
  /** Start LSN of the record (the version LSN is its end). */
  recordLsn: Lsn;
  /** The raw XLogRecord (header, block headers, data), page headers removed. */
  record: Buffer;
}

export interface ClearVmBitsValue {
  kind: 'clearVmBits';
  /** Heap blocks whose bits to clear; NO_BLOCK when absent. */
  newHeapBlock: number;
  oldHeapBlock: number;
  /** VISIBILITYMAP_ALL_VISIBLE (1) | VISIBILITYMAP_ALL_FROZEN (2). */
  flags: number;
}

export interface ClogSetStatusValue {
  kind: 'clogSetStatus';
  /** One of ClogStatus. */
  status: number;
  /** Xids on this CLOG page. */
  xids: number[];
  /** Commit timestamp (PostgreSQL TimestampTz, µs since 2000-01-01), or null. */
  timestampUs: bigint | null;
}

export interface MultixactOffsetValue {
  kind: 'multixactOffset';
  multi: number;
  offset: number;
  /**
   * PostgreSQL 15.x (recent minors) also sets the *next* multixact's offset to the end of this
   * one's members, so a reader can size this multixact before the next one is logged. When the
   * next multixact is on the same offsets page it rides along here (one value per key and LSN);
   * otherwise ingest stores it as a separate value under the next page's key.
   */
  next?: { multi: number; offset: number };
}

export interface MultixactMember {
  xid: number;
  /** MultiXactStatus (0..5). */
  status: number;
}

export interface MultixactMembersValue {
  kind: 'multixactMembers';
  /** Member offset of members[0]; member i is at startOffset + i (wrapping at 2^32). */
  startOffset: number;
  members: MultixactMember[];
}

export type StorageRecordValue = ClearVmBitsValue | ClogSetStatusValue | MultixactOffsetValue | MultixactMembersValue;
export type Value = ImageValue | PgRecordValue | StorageRecordValue;

/** A stored value is malformed: the bytes do not decode as any value. */
export class ValueDecodeError extends StrataError {
  constructor(message: string, context: Record<string, string | number | bigint | undefined> = {}) {
    super('value_corrupt', message, context);
    this.name = 'ValueDecodeError';
  }
}

/** True when the value needs no older version to be reconstructed. */
export function valueWillInit(v: Value): boolean {
  return v.kind === 'image' || (v.kind === 'pgRecord' && v.willInit);
}

const MAX_LIST_ENTRIES = 1 << 20;

export function encodedValueSize(v: Value): number {
  switch (v.kind) {
    case 'image': return 1 + v.image.length;
    case 'pgRecord': return 1 + 1 + 8 + v.record.length;
    case 'clearVmBits': return 1 + 1 + 4 + 4;
    case 'clogSetStatus': return 1 + 1 + 1 + 8 + 4 + 4 * v.xids.length;
    case 'multixactOffset': return 1 + 4 + 4 + (v.next === undefined ? 0 : 8);
    case 'multixactMembers': return 1 + 4 + 4 + 5 * v.members.length;
  }
}

function u32(n: number, what: string): number {
  if (!Number.isInteger(n) || n < 0 || n > 0xffff_ffff) throw new InvalidInputError(`${what} out of range: ${n}`);
  return n;
}

function u8(n: number, what: string): number {
  if (!Number.isInteger(n) || n < 0 || n > 0xff) throw new InvalidInputError(`${what} out of range: ${n}`);
  return n;
}

/** Writes the value at `offset`; returns the number of bytes written (= encodedValueSize). */
export function writeValue(v: Value, out: Buffer, offset: number): number {
  let o = offset;
  switch (v.kind) {
    case 'image':
      out[o++] = ValueTag.image;
      o += v.image.copy(out, o);
      break;
    case 'pgRecord':
      out[o++] = ValueTag.pgRecord;
      out[o++] = v.willInit ? 1 : 0;
      out.writeBigUInt64LE(v.recordLsn, o); o += 8;
      o += v.record.copy(out, o);
      break;
    case 'clearVmBits':
      out[o++] = ValueTag.clearVmBits;
      out[o++] = u8(v.flags, 'VM flags');
      out.writeUInt32LE(u32(v.newHeapBlock, 'heap block'), o); o += 4;
      out.writeUInt32LE(u32(v.oldHeapBlock, 'heap block'), o); o += 4;
      break;
    case 'clogSetStatus':
      if (v.xids.length > MAX_LIST_ENTRIES) throw new InvalidInputError(`too many xids in one CLOG record: ${v.xids.length}`);
      out[o++] = ValueTag.clogSetStatus;
      out[o++] = u8(v.status, 'CLOG status');
      out[o++] = v.timestampUs === null ? 0 : 1;
      out.writeBigInt64LE(v.timestampUs ?? 0n, o); o += 8;
      out.writeUInt32LE(v.xids.length, o); o += 4;
      for (const xid of v.xids) { out.writeUInt32LE(u32(xid, 'xid'), o); o += 4; }
      break;
    case 'multixactOffset':
      out[o++] = ValueTag.multixactOffset;
      out.writeUInt32LE(u32(v.multi, 'multixact id'), o); o += 4;
      out.writeUInt32LE(u32(v.offset, 'multixact offset'), o); o += 4;
      if (v.next !== undefined) {
        out.writeUInt32LE(u32(v.next.multi, 'next multixact id'), o); o += 4;
        out.writeUInt32LE(u32(v.next.offset, 'next multixact offset'), o); o += 4;
      }
      break;
    case 'multixactMembers':
      if (v.members.length > MAX_LIST_ENTRIES) throw new InvalidInputError(`too many multixact members: ${v.members.length}`);
      out[o++] = ValueTag.multixactMembers;
      out.writeUInt32LE(u32(v.startOffset, 'multixact offset'), o); o += 4;
      out.writeUInt32LE(v.members.length, o); o += 4;
      for (const m of v.members) {
        out.writeUInt32LE(u32(m.xid, 'xid'), o); o += 4;
        out[o++] = u8(m.status, 'multixact member status');
      }
      break;
  }
  return o - offset;
}

export function encodeValue(v: Value): Buffer {
  const out = Buffer.allocUnsafe(encodedValueSize(v));
  const n = writeValue(v, out, 0);
  if (n !== out.length) throw new ValueDecodeError(`value encoder wrote ${n} bytes, expected ${out.length}`);
  return out;
}

/** Reads only the willInit property of an encoded value. */
export function encodedValueWillInit(bytes: Uint8Array): boolean {
  return bytes[0] === ValueTag.image || (bytes[0] === ValueTag.pgRecord && bytes[1] === 1);
}

function need(bytes: Buffer, size: number, what: string): void {
  if (bytes.length < size) throw new ValueDecodeError(`${what} value is ${bytes.length} bytes, shorter than its ${size}-byte body`);
}

function exact(bytes: Buffer, size: number, what: string): void {
  if (bytes.length !== size) throw new ValueDecodeError(`${what} value is ${bytes.length} bytes, expected ${size}`);
}

/**
 * Decodes a serialised value. The result may share memory with `bytes` (images and records are
 * views), so callers that keep it must own `bytes`.
 */
export function decodeValue(bytes: Buffer): Value {
  if (bytes.length === 0) throw new ValueDecodeError('empty value');
  const tag = bytes[0]!;
  switch (tag) {
    case ValueTag.image:
      return { kind: 'image', image: bytes.subarray(1) };
    case ValueTag.pgRecord: {
      need(bytes, 10, 'WAL record');
      const flag = bytes[1]!;
      if (flag > 1) throw new ValueDecodeError(`WAL record value has invalid flags ${flag}`);
      return { kind: 'pgRecord', willInit: flag === 1, recordLsn: bytes.readBigUInt64LE(2), record: bytes.subarray(10) };
    }
    case ValueTag.clearVmBits:
      exact(bytes, 10, 'clear-VM-bits');
      return { kind: 'clearVmBits', flags: bytes[1]!, newHeapBlock: bytes.readUInt32LE(2), oldHeapBlock: bytes.readUInt32LE(6) };
    case ValueTag.clogSetStatus: {
      need(bytes, 15, 'CLOG status');
      const status = bytes[1]!;
      const hasTs = bytes[2]!;
      if (status > 3 || hasTs > 1) throw new ValueDecodeError(`CLOG status value has invalid status ${status} or timestamp flag ${hasTs}`);
      const count = bytes.readUInt32LE(11);
      if (count > MAX_LIST_ENTRIES) throw new ValueDecodeError(`CLOG status value claims ${count} xids`);
      exact(bytes, 15 + 4 * count, 'CLOG status');
      const xids = new Array<number>(count);
      for (let i = 0; i < count; i++) xids[i] = bytes.readUInt32LE(15 + 4 * i);
      return { kind: 'clogSetStatus', status, xids, timestampUs: hasTs === 1 ? bytes.readBigInt64LE(3) : null };
    }
    case ValueTag.multixactOffset:
      if (bytes.length !== 17) exact(bytes, 9, 'multixact offset');
      return bytes.length === 17
        ? { kind: 'multixactOffset', multi: bytes.readUInt32LE(1), offset: bytes.readUInt32LE(5), next: { multi: bytes.readUInt32LE(9), offset: bytes.readUInt32LE(13) } }
        : { kind: 'multixactOffset', multi: bytes.readUInt32LE(1), offset: bytes.readUInt32LE(5) };
    case ValueTag.multixactMembers: {
      need(bytes, 9, 'multixact members');
      const count = bytes.readUInt32LE(5);
      if (count > MAX_LIST_ENTRIES) throw new ValueDecodeError(`multixact members value claims ${count} members`);
      exact(bytes, 9 + 5 * count, 'multixact members');
      const members = new Array<MultixactMember>(count);
      for (let i = 0; i < count; i++) {
        const at = 9 + 5 * i;
        members[i] = { xid: bytes.readUInt32LE(at), status: bytes[at + 4]! };
      }
      return { kind: 'multixactMembers', startOffset: bytes.readUInt32LE(1), members };
    }
    default:
      throw new ValueDecodeError(`unknown value tag ${tag}`);
  }
}

/** One-line description for errors and dumps. */
export function describeValue(v: Value): string {
  switch (v.kind) {
    case 'image': return `image (${v.image.length} bytes)`;
    case 'pgRecord': return `WAL record ${v.willInit ? '(will init) ' : ''}of ${v.record.length} bytes`;
    case 'clearVmBits': return `clear VM bits 0x${v.flags.toString(16)} of heap blocks ${v.newHeapBlock === NO_BLOCK ? '-' : v.newHeapBlock}, ${v.oldHeapBlock === NO_BLOCK ? '-' : v.oldHeapBlock}`;
    case 'clogSetStatus': return `set CLOG status ${v.status} for ${v.xids.length} xids`;
    case 'multixactOffset': return `multixact ${v.multi} offset ${v.offset}${v.next === undefined ? '' : `, next ${v.next.multi} offset ${v.next.offset}`}`;
    case 'multixactMembers': return `${v.members.length} multixact members at offset ${v.startOffset}`;
  }
}
