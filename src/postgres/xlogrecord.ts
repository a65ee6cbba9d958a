/**
 * The PostgreSQL 15 WAL record: its fixed header, block references and main data.
 *
 * A record, once its bytes are reassembled (page headers removed), is laid out as:
 *
 *   XLogRecord header (24 bytes: tot_len, xid, prev, info, rmid, 2 pad, crc)
 *   block reference headers, ids 0..32 in increasing order, each followed by its image header
 *     (if it has an image), its RelFileNode (unless SAME_REL) and its block number
 *   optional origin (id 253 + u16) and top-level xid (id 252 + u32)
 *   main-data header (id 255 + u8 length, or id 254 + u32 length) — always last
 *   payloads: per block, image bytes then data bytes; main data last
 *
 * Fields inside the record are packed (not aligned), little-endian. Decoding never copies payloads:
 * a DecodedRecord points into the record's bytes with offsets and lengths.
 *
 * Invariants checked here (a violation makes the record invalid, as in PostgreSQL's reader):
 * block ids strictly increase; HAS_DATA is set exactly when the data length is non-zero; image
 * headers are consistent (hole, compression, length); SAME_REL has a previous relation; the header
 * lengths add up exactly to tot_len.
 */
import type { Lsn } from './lsn.ts';
import { PG_BLCKSZ, SIZE_OF_XLOG_RECORD } from './walformat.ts';

export const XLR_SPECIAL_REL_UPDATE = 0x01;
export const XLR_CHECK_CONSISTENCY = 0x02;
export const XLR_INFO_MASK = 0x0f;
export const XLR_RMGR_INFO_MASK = 0xf0;

export const XLR_MAX_BLOCK_ID = 32;
export const XLR_BLOCK_ID_DATA_SHORT = 255;
export const XLR_BLOCK_ID_DATA_LONG = 254;
export const XLR_BLOCK_ID_ORIGIN = 253;
export const XLR_BLOCK_ID_TOPLEVEL_XID = 252;

export const BKPBLOCK_FORK_MASK = 0x0f;
export const BKPBLOCK_HAS_IMAGE = 0x10;
export const BKPBLOCK_HAS_DATA = 0x20;
export const BKPBLOCK_WILL_INIT = 0x40;
export const BKPBLOCK_SAME_REL = 0x80;

export const BKPIMAGE_HAS_HOLE = 0x01;
export const BKPIMAGE_APPLY = 0x02;
export const BKPIMAGE_COMPRESS_PGLZ = 0x04;
export const BKPIMAGE_COMPRESS_LZ4 = 0x08;
export const BKPIMAGE_COMPRESS_ZSTD = 0x10;
export const BKPIMAGE_COMPRESSED_MASK = BKPIMAGE_COMPRESS_PGLZ | BKPIMAGE_COMPRESS_LZ4 | BKPIMAGE_COMPRESS_ZSTD;

export const MAIN_FORKNUM = 0;
export const FSM_FORKNUM = 1;
export const VISIBILITYMAP_FORKNUM = 2;
export const INIT_FORKNUM = 3;
export const FORK_NAMES = ['main', 'fsm', 'vm', 'init'] as const;
export type ForkName = (typeof FORK_NAMES)[number];

export type ImageCompression = 'none' | 'pglz' | 'lz4' | 'zstd';

export interface RelFileNode {
  spcNode: number;
  dbNode: number;
  relNode: number;
}

export interface BlockImageRef {
  /** Offset of the stored image bytes within DecodedRecord.bytes. */
  offset: number;
  /** Stored length (bimg_len): the page minus its hole, possibly compressed. */
  lengthBytes: number;
  holeOffset: number;
  holeLength: number;
  bimgInfo: number;
  /** BKPIMAGE_APPLY: redo restores this image. Without it the image exists for wal_consistency_checking only. */
  apply: boolean;
  compression: ImageCompression;
}

export interface BlockRef {
  id: number;
  forkNum: number;
  /** The raw fork_flags byte. */
  flags: number;
  willInit: boolean;
  rnode: RelFileNode;
  blkno: number;
  image: BlockImageRef | undefined;
  /** Offset and length of the block's data payload within DecodedRecord.bytes (length 0 when none). */
  dataOffset: number;
  dataLength: number;
}

export interface DecodedRecord {
  /** Start LSN of the record (ReadRecPtr). */
  lsn: Lsn;
  /** Where the next record may start: MAXALIGNed end, or the next segment after XLOG_SWITCH (EndRecPtr). */
  endLsn: Lsn;
  totLen: number;
  xid: number;
  prev: Lsn;
  info: number;
  rmid: number;
  crc: number;
  blocks: BlockRef[];
  /** Replication origin (0 = none). */
  origin: number;
  /** Top-level xid of a subtransaction's first record under wal_level=logical (0 = none). */
  toplevelXid: number;
  mainDataOffset: number;
  mainDataLength: number;
  /** The whole record (header included, page headers removed). Treat as read-only. */
  bytes: Uint8Array;
}

/** The rmgr-specific part of xl_info. */
export function recordOp(rec: DecodedRecord): number {
  return rec.info & XLR_RMGR_INFO_MASK;
}

export function mainData(rec: DecodedRecord): Uint8Array {
  return rec.bytes.subarray(rec.mainDataOffset, rec.mainDataOffset + rec.mainDataLength);
}

export function blockData(rec: DecodedRecord, block: BlockRef): Uint8Array {
  return rec.bytes.subarray(block.dataOffset, block.dataOffset + block.dataLength);
}

/** Sum of stored image lengths: pg_waldump's "fpi_len"; `totLen - fpiLen` is its "rec" length. */
export function fpiLength(rec: DecodedRecord): number {
  let n = 0;
  for (const b of rec.blocks) if (b.image) n += b.image.lengthBytes;
  return n;
}

/** Thrown by decodeXLogRecord; the stream decoder turns it into an end-of-WAL with the reason. */
export class RecordDecodeError extends Error {}

function tooShort(what: string, remaining: number, need: number): RecordDecodeError {
  return new RecordDecodeError(`record is too short to hold ${what} (${remaining} bytes left, need ${need})`);
}

function u16(b: Uint8Array, o: number): number {
  return b[o]! | (b[o + 1]! << 8);
}
function u32(b: Uint8Array, o: number): number {
  return (b[o]! | (b[o + 1]! << 8) | (b[o + 2]! << 16) | (b[o + 3]! << 24)) >>> 0;
}
export function readU64(b: Uint8Array, o: number): bigint {
  const hi = u32(b, o + 4);
  const lo = u32(b, o);
  // One bigint conversion instead of four when the value fits a double exactly (below 2^53).
  return hi < 0x20_0000 ? BigInt(hi * 0x1_0000_0000 + lo) : (BigInt(hi) << 32n) | BigInt(lo);
}

/**
 * Decodes the block references and main data of a complete record whose CRC has been verified.
 * `bytes` holds exactly tot_len bytes. Throws RecordDecodeError describing the first inconsistency.
 */
export function decodeXLogRecord(bytes: Uint8Array, lsn: Lsn, endLsn: Lsn): DecodedRecord {
  const totLen = u32(bytes, 0);
  if (bytes.byteLength !== totLen) throw new RecordDecodeError(`record holds ${bytes.byteLength} bytes but xl_tot_len is ${totLen}`);
  const blocks: BlockRef[] = [];
  let pos = SIZE_OF_XLOG_RECORD;
  let remaining = totLen - SIZE_OF_XLOG_RECORD;
  let dataTotal = 0;
  let maxBlockId = -1;
  let origin = 0;
  let toplevelXid = 0;
  let mainDataLength = 0;
  let prevRnode: RelFileNode | undefined;


  while (remaining > dataTotal) {
    if (remaining < 1) throw tooShort('a block id', remaining, 1);
    remaining -= 1;
    const id = bytes[pos++]!;
    if (id === XLR_BLOCK_ID_DATA_SHORT) {
      if (remaining < 1) throw tooShort('a short main-data length', remaining, 1);
      remaining -= 1;
      mainDataLength = bytes[pos++]!;
      dataTotal += mainDataLength;
      break;
    } else if (id === XLR_BLOCK_ID_DATA_LONG) {
      if (remaining < 4) throw tooShort('a long main-data length', remaining, 4);
      remaining -= 4;
      mainDataLength = u32(bytes, pos);
      pos += 4;
      dataTotal += mainDataLength;
      break;
    } else if (id === XLR_BLOCK_ID_ORIGIN) {
      if (remaining < 2) throw tooShort('a replication origin', remaining, 2);
      remaining -= 2;
      origin = u16(bytes, pos);
      pos += 2;
    } else if (id === XLR_BLOCK_ID_TOPLEVEL_XID) {
      if (remaining < 4) throw tooShort('a top-level xid', remaining, 4);
      remaining -= 4;
      toplevelXid = u32(bytes, pos);
      pos += 4;
    } else if (id <= XLR_MAX_BLOCK_ID) {
      if (id <= maxBlockId) throw new RecordDecodeError(`out-of-order block_id ${id} (after ${maxBlockId})`);
      maxBlockId = id;
      if (remaining < 3) throw tooShort(`block ${id} header`, remaining, 3);
      remaining -= 3;
      const flags = bytes[pos]!;
      const dataLength = u16(bytes, pos + 1);
      pos += 3;
      const hasData = (flags & BKPBLOCK_HAS_DATA) !== 0;
      if (hasData && dataLength === 0) throw new RecordDecodeError(`block ${id}: BKPBLOCK_HAS_DATA set, but no data included`);
      if (!hasData && dataLength !== 0) throw new RecordDecodeError(`block ${id}: BKPBLOCK_HAS_DATA not set, but data length is ${dataLength}`);
      dataTotal += dataLength;
      let image: BlockImageRef | undefined;
      if (flags & BKPBLOCK_HAS_IMAGE) {
        if (remaining < 5) throw tooShort(`block ${id} image header`, remaining, 5);
        remaining -= 5;
        const lengthBytes = u16(bytes, pos);
        const holeOffset = u16(bytes, pos + 2);
        const bimgInfo = bytes[pos + 4]!;
        pos += 5;
        const compressed = (bimgInfo & BKPIMAGE_COMPRESSED_MASK) !== 0;
        const hasHole = (bimgInfo & BKPIMAGE_HAS_HOLE) !== 0;
        let holeLength: number;
        if (compressed) {
          if (hasHole) {
            if (remaining < 2) throw tooShort(`block ${id} compressed hole length`, remaining, 2);
            remaining -= 2;
            holeLength = u16(bytes, pos);
            pos += 2;
          } else {
            holeLength = 0;
          }
        } else {
          holeLength = PG_BLCKSZ - lengthBytes;
        }
        dataTotal += lengthBytes;
        if (hasHole && (holeOffset === 0 || holeLength === 0 || lengthBytes === PG_BLCKSZ)) {
          throw new RecordDecodeError(`block ${id}: BKPIMAGE_HAS_HOLE set, but hole offset ${holeOffset} length ${holeLength} image length ${lengthBytes}`);
        }
        if (!hasHole && (holeOffset !== 0 || holeLength !== 0)) {
          throw new RecordDecodeError(`block ${id}: BKPIMAGE_HAS_HOLE not set, but hole offset ${holeOffset} length ${holeLength}`);
        }
        if (compressed && lengthBytes === PG_BLCKSZ) {
          throw new RecordDecodeError(`block ${id}: compressed image has the full block length ${lengthBytes}`);
        }
        if (!hasHole && !compressed && lengthBytes !== PG_BLCKSZ) {
          throw new RecordDecodeError(`block ${id}: uncompressed image without a hole has length ${lengthBytes}, expected ${PG_BLCKSZ}`);
        }
        if (holeOffset + holeLength > PG_BLCKSZ) {
          throw new RecordDecodeError(`block ${id}: hole at ${holeOffset} of length ${holeLength} runs past the page`);
        }
        const methods = bimgInfo & BKPIMAGE_COMPRESSED_MASK;
        let compression: ImageCompression = 'none';
        if (methods === BKPIMAGE_COMPRESS_PGLZ) compression = 'pglz';
        else if (methods === BKPIMAGE_COMPRESS_LZ4) compression = 'lz4';
        else if (methods === BKPIMAGE_COMPRESS_ZSTD) compression = 'zstd';
        else if (methods !== 0) throw new RecordDecodeError(`block ${id}: more than one compression method in bimg_info 0x${bimgInfo.toString(16)}`);
        if ((bimgInfo & ~0x1f) !== 0) throw new RecordDecodeError(`block ${id}: unknown bits in bimg_info 0x${bimgInfo.toString(16)}`);
        image = { offset: 0, lengthBytes, holeOffset, holeLength, bimgInfo, apply: (bimgInfo & BKPIMAGE_APPLY) !== 0, compression };
      }
      let rnode: RelFileNode;
      if (flags & BKPBLOCK_SAME_REL) {
        if (prevRnode === undefined) throw new RecordDecodeError(`block ${id}: BKPBLOCK_SAME_REL set but no previous relation`);
        rnode = prevRnode;
      } else {
        if (remaining < 12) throw tooShort(`block ${id} relation`, remaining, 12);
        remaining -= 12;
        rnode = { spcNode: u32(bytes, pos), dbNode: u32(bytes, pos + 4), relNode: u32(bytes, pos + 8) };
        pos += 12;
      }
      prevRnode = rnode;
      if (remaining < 4) throw tooShort(`block ${id} number`, remaining, 4);
      remaining -= 4;
      const blkno = u32(bytes, pos);
      pos += 4;
      blocks.push({ id, forkNum: flags & BKPBLOCK_FORK_MASK, flags, willInit: (flags & BKPBLOCK_WILL_INIT) !== 0, rnode, blkno, image, dataOffset: 0, dataLength });
    } else {
      throw new RecordDecodeError(`invalid block_id ${id}`);
    }
  }
  if (remaining !== dataTotal) {
    throw new RecordDecodeError(`record headers announce ${dataTotal} payload bytes but ${remaining} remain`);
  }
  // Payloads follow the headers in block order: image, then data; main data last.
  for (const b of blocks) {
    if (b.image) {
      b.image.offset = pos;
      pos += b.image.lengthBytes;
    }
    b.dataOffset = pos;
    pos += b.dataLength;
  }
  const mainDataOffset = pos;
  pos += mainDataLength;
  if (pos !== totLen) throw new RecordDecodeError(`payloads end at ${pos}, expected ${totLen}`);
  return {
    lsn, endLsn, totLen, xid: u32(bytes, 4), prev: readU64(bytes, 8), info: bytes[16]!, rmid: bytes[17]!, crc: u32(bytes, 20),
    blocks, origin, toplevelXid, mainDataOffset, mainDataLength, bytes,
  };
}
