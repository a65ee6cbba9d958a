/**
 * B-tree (RM_BTREE_ID, nbtree) record bodies of PostgreSQL 15: the main-data structs and the
 * per-block payloads that redo needs to rebuild index pages.
 *
 * nbtree splits its WAL payload between the main data (a small fixed struct per record type) and
 * block data attached to individual block references (index tuples, offset arrays, metapage
 * contents). PostgreSQL may drop a block's data when it logs a full-page image of that block for
 * redo instead, so block payloads are parsed separately, per block, only when redo of that block is
 * actually needed. Every parse is bounds-checked and reports rmgr, record type, LSN and (for block
 * data) the block reference id.
 *
 * Main-data layouts (x86-64, little-endian, offsets from the start of the main data):
 *   xl_btree_insert           offnum u16 @0                                              (2)
 *   xl_btree_split            level u32 @0, firstrightoff u16 @4, newitemoff u16 @6,
 *                             postingoff u16 @8                                          (10)
 *   xl_btree_dedup            nintervals u16 @0                                          (2)
 *   xl_btree_vacuum           ndeleted u16 @0, nupdated u16 @2                           (4)
 *   xl_btree_delete           latestRemovedXid u32 @0, ndeleted u16 @4, nupdated u16 @6  (8)
 *   xl_btree_mark_page_halfdead  poffset u16 @0, (2 pad), leafblk @4, leftblk @8,
 *                             rightblk @12, topparent @16                                (20)
 *   xl_btree_unlink_page      leftsib @0, rightsib @4, level @8, (4 pad), safexid u64 @16,
 *                             leafleftsib @24, leafrightsib @28, leaftopparent @32       (36)
 *   xl_btree_newroot          rootblk @0, level @4                                       (8)
 *   xl_btree_reuse_page       RelFileNode @0, block @12, latestRemovedFullXid u64 @16    (24)
 *   META_CLEANUP              no main data (the metadata is block 0's data)
 *
 * Block payloads:
 *   xl_btree_metadata (metapage block data, exactly 28 bytes): version @0, root @4, level @8,
 *     fastroot @12, fastlevel @16, last_cleanup_num_delpages @20, allequalimage bool @24.
 *   insert, block 0: [postingoff u16, INSERT_POST only] then the new index tuple.
 *   split, block 0: [new item (SPLIT_L, or any split with postingoff != 0), MAXALIGNed] then the
 *     left page's new high key (MAXALIGNed) — nothing after it.
 *   split block 1 / newroot block 0: a run of index tuples, each MAXALIGNed, in reverse item
 *     order (the bytes between pd_upper and pd_special of the page that was built).
 *   dedup, block 0: BTDedupInterval[nintervals] {baseoff u16, nitems u16}.
 *   vacuum/delete, block 0: deleted offsets u16[ndeleted], updated offsets u16[nupdated], then per
 *     updated tuple an xl_btree_update {ndeletedtids u16, posting-list indexes u16[ndeletedtids]}.
 *
 * An index tuple's size is the low 13 bits of t_info, the u16 at byte 6 of the tuple.
 */
import type { ErrorContext } from '../../util/errors.ts';
import { blockData, type BlockRef, type DecodedRecord, type RelFileNode } from '../xlogrecord.ts';
import { BodyReader, maxAlign } from './common.ts';

export const XLOG_BTREE_INSERT_LEAF = 0x00;
export const XLOG_BTREE_INSERT_UPPER = 0x10;
export const XLOG_BTREE_INSERT_META = 0x20;
export const XLOG_BTREE_SPLIT_L = 0x30;
export const XLOG_BTREE_SPLIT_R = 0x40;
export const XLOG_BTREE_INSERT_POST = 0x50;
export const XLOG_BTREE_DEDUP = 0x60;
export const XLOG_BTREE_DELETE = 0x70;
export const XLOG_BTREE_UNLINK_PAGE = 0x80;
export const XLOG_BTREE_UNLINK_PAGE_META = 0x90;
export const XLOG_BTREE_NEWROOT = 0xa0;
export const XLOG_BTREE_MARK_PAGE_HALFDEAD = 0xb0;
export const XLOG_BTREE_VACUUM = 0xc0;
export const XLOG_BTREE_REUSE_PAGE = 0xd0;
export const XLOG_BTREE_META_CLEANUP = 0xe0;

/** sizeof(xl_btree_metadata). */
export const SIZE_OF_BTREE_METADATA = 28;
/** sizeof(IndexTupleData): t_tid (6 bytes) + t_info (u16). */
export const SIZE_OF_INDEX_TUPLE_HEADER = 8;
/** t_info bits holding the tuple size. */
export const INDEX_SIZE_MASK = 0x1fff;

export interface BtreeMetadata {
  version: number;
  root: number;
  level: number;
  fastroot: number;
  fastlevel: number;
  lastCleanupNumDelpages: number;
  allequalimage: boolean;
}

export interface BtreeInsertBody {
  /** Offset the new tuple goes to on block 0. */
  offnum: number;
}

export interface BtreeSplitBody {
  /** Tree level of the page being split (0 = leaf). */
  level: number;
  /** First item of the original page that moved to the right page. */
  firstrightoff: number;
  /** Where the new item went in the original page's item numbering. */
  newitemoff: number;
  /** Non-zero: the left page needs a posting list split at this TID index of the tuple before newitemoff. */
  postingoff: number;
  /** SPLIT_L: the new item went to the left page. */
  newItemOnLeft: boolean;
}

export interface BtreeDedupBody {
  nintervals: number;
}

export interface BtreeDedupInterval {
  baseoff: number;
  nitems: number;
}

export interface BtreeVacuumBody {
  ndeleted: number;
  nupdated: number;
}

export interface BtreeDeleteBody {
  latestRemovedXid: number;
  ndeleted: number;
  nupdated: number;
}

export interface BtreeMarkHalfDeadBody {
  /** Offset in the top parent of the downlink that stays (the next one is removed). */
  poffset: number;
  leafblk: number;
  leftblk: number;
  rightblk: number;
  topparent: number;
}

export interface BtreeUnlinkPageBody {
  leftsib: number;
  rightsib: number;
  level: number;
  safexid: bigint;
  leafleftsib: number;
  leafrightsib: number;
  leaftopparent: number;
  /** UNLINK_PAGE_META: block 4 is the metapage, rebuilt from its block data. */
  hasMeta: boolean;
}

export interface BtreeNewrootBody {
  rootblk: number;
  level: number;
}

export interface BtreeReusePageBody {
  node: RelFileNode;
  block: number;
  latestRemovedFullXid: bigint;
}

/** Block 0 payload of an insert record. */
export interface BtreeInsertData {
  /** INSERT_POST: TID index inside the posting list being split; 0 otherwise. */
  postingoff: number;
  /** The tuple as logged (for INSERT_POST the original new item, before the swap). */
  tuple: Uint8Array;
}

/** Block 0 payload of a split record. */
export interface BtreeSplitLeftData {
  /** The new item (SPLIT_L) or the original new item of a posting list split; absent otherwise. */
  newItem: Uint8Array | undefined;
  /** The left page's new high key, MAXALIGNed length. */
  leftHighKey: Uint8Array;
}

/** One updated posting list tuple of a vacuum/delete record. */
export interface BtreeUpdatedTuple {
  offnum: number;
  /** 0-based indexes into the posting list of the TIDs to remove (ascending). */
  deletedTids: number[];
}

/** Block 0 payload of a vacuum/delete record. */
export interface BtreeDeletionData {
  deleted: number[];
  updated: BtreeUpdatedTuple[];
}

/**
 * A bounds-checked reader over one block's data payload: same cursor API as the main-data reader,
 * with errors that say which block's data was short.
 */
class BlockDataReader extends BodyReader {
  readonly blockId: number;

  constructor(rec: DecodedRecord, block: BlockRef) {
    super(rec, blockData(rec, block));
    this.blockId = block.id;
  }

  override fail(what: string, extra: ErrorContext = {}): never {
    return super.fail(`block ${this.blockId} data: ${what}`, { blockId: this.blockId, blockDataBytes: this.data.byteLength, ...extra });
  }

  override need(n: number, what: string): void {
    if (this.pos + n > this.data.byteLength) {
      this.fail(`${this.data.byteLength} bytes, ${what} needs ${n} bytes at offset ${this.pos}`, { neededBytes: n });
    }
  }
}

/** Reads an index tuple's size (t_info & INDEX_SIZE_MASK) at `off`; the caller checked 8 bytes are there. */
export function indexTupleSize(b: Uint8Array, off = 0): number {
  return (b[off + 6]! | (b[off + 7]! << 8)) & INDEX_SIZE_MASK;
}

function findBlock(rec: DecodedRecord, id: number): BlockRef | undefined {
  for (const b of rec.blocks) if (b.id === id) return b;
  return undefined;
}

/** The block reference `id`; the error reader is only built when it is missing. */
function requireBlock(rec: DecodedRecord, id: number): BlockRef {
  const b = findBlock(rec, id);
  if (b === undefined) return new BodyReader(rec).fail(`the record has no block reference ${id}`);
  return b;
}

// ---------------------------------------------------------------------------------------------
// Main data.

export function parseBtreeInsert(rec: DecodedRecord): BtreeInsertBody {
  const r = new BodyReader(rec);
  r.needTotal(2, 'xl_btree_insert');
  return { offnum: r.u16At(0) };
}

/** SPLIT_L and SPLIT_R. */
export function parseBtreeSplit(rec: DecodedRecord): BtreeSplitBody {
  const r = new BodyReader(rec);
  r.needTotal(10, 'xl_btree_split');
  return {
    level: r.u32At(0),
    firstrightoff: r.u16At(4),
    newitemoff: r.u16At(6),
    postingoff: r.u16At(8),
    newItemOnLeft: (rec.info & 0xf0) === XLOG_BTREE_SPLIT_L,
  };
}

export function parseBtreeDedup(rec: DecodedRecord): BtreeDedupBody {
  const r = new BodyReader(rec);
  r.needTotal(2, 'xl_btree_dedup');
  return { nintervals: r.u16At(0) };
}

export function parseBtreeVacuum(rec: DecodedRecord): BtreeVacuumBody {
  const r = new BodyReader(rec);
  r.needTotal(4, 'xl_btree_vacuum');
  return { ndeleted: r.u16At(0), nupdated: r.u16At(2) };
}

export function parseBtreeDelete(rec: DecodedRecord): BtreeDeleteBody {
  const r = new BodyReader(rec);
  r.needTotal(8, 'xl_btree_delete');
  return { latestRemovedXid: r.u32At(0), ndeleted: r.u16At(4), nupdated: r.u16At(6) };
}

export function parseBtreeMarkHalfDead(rec: DecodedRecord): BtreeMarkHalfDeadBody {
  const r = new BodyReader(rec);
  r.needTotal(20, 'xl_btree_mark_page_halfdead');
  return { poffset: r.u16At(0), leafblk: r.u32At(4), leftblk: r.u32At(8), rightblk: r.u32At(12), topparent: r.u32At(16) };
}

/** UNLINK_PAGE and UNLINK_PAGE_META. */
export function parseBtreeUnlinkPage(rec: DecodedRecord): BtreeUnlinkPageBody {
  const r = new BodyReader(rec);
  r.needTotal(36, 'xl_btree_unlink_page');
  return {
    leftsib: r.u32At(0),
    rightsib: r.u32At(4),
    level: r.u32At(8),
    safexid: r.u64At(16),
    leafleftsib: r.u32At(24),
    leafrightsib: r.u32At(28),
    leaftopparent: r.u32At(32),
    hasMeta: (rec.info & 0xf0) === XLOG_BTREE_UNLINK_PAGE_META,
  };
}

export function parseBtreeNewroot(rec: DecodedRecord): BtreeNewrootBody {
  const r = new BodyReader(rec);
  r.needTotal(8, 'xl_btree_newroot');
  return { rootblk: r.u32At(0), level: r.u32At(4) };
}

export function parseBtreeReusePage(rec: DecodedRecord): BtreeReusePageBody {
  const r = new BodyReader(rec);
  r.needTotal(24, 'xl_btree_reuse_page');
  const node = r.relFileNode('xl_btree_reuse_page.node');
  return { node, block: r.u32At(12), latestRemovedFullXid: r.u64At(16) };
}

// ---------------------------------------------------------------------------------------------
// Block data.

/** The xl_btree_metadata carried as the data of metapage block `blockId` (exactly 28 bytes). */
export function parseBtreeMetadata(rec: DecodedRecord, blockId: number): BtreeMetadata {
  const r = new BlockDataReader(rec, requireBlock(rec, blockId));
  if (r.length !== SIZE_OF_BTREE_METADATA) {
    r.fail(`xl_btree_metadata must be exactly ${SIZE_OF_BTREE_METADATA} bytes`);
  }
  return {
    version: r.u32At(0),
    root: r.u32At(4),
    level: r.u32At(8),
    fastroot: r.u32At(12),
    fastlevel: r.u32At(16),
    lastCleanupNumDelpages: r.u32At(20),
    allequalimage: r.data[24]! !== 0,
  };
}

/** Reads one index tuple at the cursor; `aligned` advances by MAXALIGN(size) (the split/restore format). */
function readTuple(r: BodyReader, what: string, aligned: boolean): Uint8Array {
  r.need(SIZE_OF_INDEX_TUPLE_HEADER, `${what} header`);
  const size = indexTupleSize(r.data, r.pos);
  if (size < SIZE_OF_INDEX_TUPLE_HEADER) r.fail(`${what} has size ${size}, below the ${SIZE_OF_INDEX_TUPLE_HEADER}-byte tuple header`);
  const step = aligned ? maxAlign(size) : size;
  r.need(step, `${what} of ${size} bytes`);
  const t = r.data.subarray(r.pos, r.pos + step);
  r.pos += step;
  return t;
}

/** Block 0 data of INSERT_LEAF/UPPER/META (`posting` false) or INSERT_POST (`posting` true). */
export function parseBtreeInsertData(rec: DecodedRecord, posting: boolean): BtreeInsertData {
  const r = new BlockDataReader(rec, requireBlock(rec, 0));
  const postingoff = posting ? r.u16('postingoff') : 0;
  r.need(SIZE_OF_INDEX_TUPLE_HEADER, 'new index tuple header');
  const size = indexTupleSize(r.data, r.pos);
  // PostgreSQL adds exactly the logged bytes; the tuple's own size must agree for a posting split
  // (the swapped tuple is rebuilt from it). A plain insert takes the data length as the item size.
  if (posting && size !== r.remaining) r.fail(`original new item says ${size} bytes but ${r.remaining} bytes were logged`);
  return { postingoff, tuple: r.data.subarray(r.pos) };
}

/** Block 0 data of a split (see the module comment for when a new item is present). */
export function parseBtreeSplitLeftData(rec: DecodedRecord, body: BtreeSplitBody): BtreeSplitLeftData {
  const r = new BlockDataReader(rec, requireBlock(rec, 0));
  let newItem: Uint8Array | undefined;
  if (body.newItemOnLeft || body.postingoff !== 0) newItem = readTuple(r, 'new item', true);
  const leftHighKey = readTuple(r, 'left high key', true);
  if (r.remaining !== 0) r.fail(`${r.remaining} bytes follow the left high key`);
  return { newItem, leftHighKey };
}

/**
 * Splits a run of MAXALIGNed index tuples (split block 1, newroot block 0) into views, in the order
 * they are stored (highest item number first).
 */
export function parseBtreeTupleRun(rec: DecodedRecord, blockId: number): Uint8Array[] {
  const r = new BlockDataReader(rec, requireBlock(rec, blockId));
  const out: Uint8Array[] = [];
  // Each tuple takes at least 8 bytes, so the loop ends after at most length/8 steps.
  while (r.remaining > 0) out.push(readTuple(r, `tuple ${out.length}`, true));
  return out;
}

export function parseBtreeDedupIntervals(rec: DecodedRecord, body: BtreeDedupBody): BtreeDedupInterval[] {
  const r = new BlockDataReader(rec, requireBlock(rec, 0));
  r.need(4 * body.nintervals, `${body.nintervals} dedup intervals`);
  const out = new Array<BtreeDedupInterval>(body.nintervals);
  for (let i = 0; i < body.nintervals; i++) out[i] = { baseoff: r.u16At(4 * i), nitems: r.u16At(4 * i + 2) };
  return out;
}

/** Block 0 data of VACUUM and DELETE. */
export function parseBtreeDeletionData(rec: DecodedRecord, ndeleted: number, nupdated: number): BtreeDeletionData {
  const r = new BlockDataReader(rec, requireBlock(rec, 0));
  const deleted = new Array<number>(ndeleted);
  r.need(2 * ndeleted, `${ndeleted} deleted offsets`);
  for (let i = 0; i < ndeleted; i++) deleted[i] = r.u16('deleted offset');
  r.need(2 * nupdated, `${nupdated} updated offsets`);
  const offs = new Array<number>(nupdated);
  for (let i = 0; i < nupdated; i++) offs[i] = r.u16('updated offset');
  const updated = new Array<BtreeUpdatedTuple>(nupdated);
  for (let i = 0; i < nupdated; i++) {
    const n = r.u16(`xl_btree_update ${i} ndeletedtids`);
    r.need(2 * n, `xl_btree_update ${i}: ${n} posting list indexes`);
    const tids = new Array<number>(n);
    for (let j = 0; j < n; j++) tids[j] = r.u16('posting list index');
    updated[i] = { offnum: offs[i]!, deletedTids: tids };
  }
  return { deleted, updated };
}
