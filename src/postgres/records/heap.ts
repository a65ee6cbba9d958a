/**
 * Heap (RM_HEAP_ID) and Heap2 (RM_HEAP2_ID) record bodies — only the main-data headers that tell
 * the pageserver about visibility-map side effects.
 *
 * Redo of these records changes the heap page (block reference 0, or 1 for an update's old page)
 * and, when a flag says PD_ALL_VISIBLE was cleared, also clears the page's bits in the visibility
 * map — without a block reference to the VM page. A pageserver that stores VM pages separately has
 * to synthesize that VM change from these flags, so each body exposes the raw flags plus named
 * booleans (`allVisibleCleared`, `oldAllVisibleCleared`, `newAllVisibleCleared`, `allFrozenCleared`).
 * `initPage` is XLOG_HEAP_INIT_PAGE from xl_info (the page is rebuilt from scratch).
 *
 * Layouts (packed little-endian, offsets from the start of the main data):
 *   xl_heap_insert        offnum u16 @0, flags u8 @2                                   (3 bytes)
 *   xl_heap_delete        xmax u32 @0, offnum u16 @4, infobits u8 @6, flags u8 @7      (8)
 *   xl_heap_update        old_xmax @0, old_offnum @4, old_infobits @6, flags @7,
 *                         new_xmax @8, new_offnum u16 @12                              (14)
 *   xl_heap_lock          locking_xid @0, offnum @4, infobits i8 @6, flags @7          (8)
 *   xl_heap_lock_updated  xmax @0, offnum @4, infobits @6, flags @7                    (8)
 *   xl_heap_multi_insert  flags u8 @0, ntuples u16 @2, offsets u16[ntuples] @4 unless INIT_PAGE
 *   xl_heap_visible       cutoff_xid @0, flags u8 @4                                   (5)
 *
 * For redo the module also parses the remaining bodies and the block data that carries the page
 * change (redo needs the block data only when it has to change the page itself, i.e. when no
 * full-page image was applied; the main-data parsers therefore never look at block data):
 *   xl_heap_confirm / xl_heap_inplace   offnum u16 @0                                  (2)
 *   xl_heap_truncate      dbId @0, nrelids u32 @4, flags u8 @8, relids u32[] @12      (12+)
 *   xl_heap_prune         latestRemovedXid @0, nredirected u16 @4, ndead u16 @6        (8)
 *                         block 0 data: (from,to) pairs, dead offsets, then unused offsets to the end
 *   xl_heap_vacuum        nunused u16 @0 (2); block 0 data: nunused offsets
 *   xl_heap_freeze_page   cutoff_xid @0, ntuples u16 @4 (6); block 0 data: ntuples xl_heap_freeze_tuple
 *                         {xmax u32 @0, offset u16 @4, t_infomask2 @6, t_infomask @8, frzflags u8 @10}
 *                         of 12 bytes each (PostgreSQL 15's format; the "freeze plan" format is 16+)
 *   xl_heap_new_cid       top_xid, cmin, cmax, combocid, RelFileNode, ItemPointer       (34)
 *   insert block 0 data   xl_heap_header {t_infomask2 u16, t_infomask u16, t_hoff u8} (5) + the
 *                         tuple from byte 23 of its header on (null bitmap, padding, columns)
 *   update block 0 data   [prefixlen u16 if PREFIX_FROM_OLD][suffixlen u16 if SUFFIX_FROM_OLD]
 *                         xl_heap_header + the new tuple from byte 23, minus the prefix (after the
 *                         t_hoff - 23 bitmap bytes) and the suffix, which redo copies from the old tuple
 *   multi-insert block 0  per tuple, at a 2-byte aligned position: xl_multi_insert_tuple
 *                         {datalen u16, t_infomask2, t_infomask, t_hoff u8} (7) + datalen bytes
 *   inplace block 0 data  the tuple's new bytes from t_hoff on (same length as the old ones)
 */
import { blockData, type BlockRef, type DecodedRecord, type RelFileNode } from '../xlogrecord.ts';
import { formatLsn } from '../lsn.ts';
import { recordTypeName, rmgrName } from '../rmgr.ts';
import { BodyReader, WalRecordBodyError } from './common.ts';

export const XLOG_HEAP_INSERT = 0x00;
export const XLOG_HEAP_DELETE = 0x10;
export const XLOG_HEAP_UPDATE = 0x20;
export const XLOG_HEAP_TRUNCATE = 0x30;
export const XLOG_HEAP_HOT_UPDATE = 0x40;
export const XLOG_HEAP_CONFIRM = 0x50;
export const XLOG_HEAP_LOCK = 0x60;
export const XLOG_HEAP_INPLACE = 0x70;
export const XLOG_HEAP_OPMASK = 0x70;
export const XLOG_HEAP_INIT_PAGE = 0x80;

export const XLOG_HEAP2_REWRITE = 0x00;
export const XLOG_HEAP2_PRUNE = 0x10;
export const XLOG_HEAP2_VACUUM = 0x20;
export const XLOG_HEAP2_FREEZE_PAGE = 0x30;
export const XLOG_HEAP2_VISIBLE = 0x40;
export const XLOG_HEAP2_MULTI_INSERT = 0x50;
export const XLOG_HEAP2_LOCK_UPDATED = 0x60;
export const XLOG_HEAP2_NEW_CID = 0x70;

export const XLH_INSERT_ALL_VISIBLE_CLEARED = 1 << 0;
export const XLH_INSERT_LAST_IN_MULTI = 1 << 1;
export const XLH_INSERT_IS_SPECULATIVE = 1 << 2;
export const XLH_INSERT_CONTAINS_NEW_TUPLE = 1 << 3;
export const XLH_INSERT_ON_TOAST_RELATION = 1 << 4;
export const XLH_INSERT_ALL_FROZEN_SET = 1 << 5;

export const XLH_UPDATE_OLD_ALL_VISIBLE_CLEARED = 1 << 0;
export const XLH_UPDATE_NEW_ALL_VISIBLE_CLEARED = 1 << 1;
export const XLH_UPDATE_CONTAINS_OLD_TUPLE = 1 << 2;
export const XLH_UPDATE_CONTAINS_OLD_KEY = 1 << 3;
export const XLH_UPDATE_CONTAINS_NEW_TUPLE = 1 << 4;
export const XLH_UPDATE_PREFIX_FROM_OLD = 1 << 5;
export const XLH_UPDATE_SUFFIX_FROM_OLD = 1 << 6;

export const XLH_DELETE_ALL_VISIBLE_CLEARED = 1 << 0;
export const XLH_DELETE_CONTAINS_OLD_TUPLE = 1 << 1;
export const XLH_DELETE_CONTAINS_OLD_KEY = 1 << 2;
export const XLH_DELETE_IS_SUPER = 1 << 3;
export const XLH_DELETE_IS_PARTITION_MOVE = 1 << 4;

/** infobits_set of delete/update/lock records: which xmax-related infomask bits the tuple gets. */
export const XLHL_XMAX_IS_MULTI = 0x01;
export const XLHL_XMAX_LOCK_ONLY = 0x02;
export const XLHL_XMAX_EXCL_LOCK = 0x04;
export const XLHL_XMAX_KEYSHR_LOCK = 0x08;
export const XLHL_KEYS_UPDATED = 0x10;

/** frzflags of xl_heap_freeze_tuple. */
export const XLH_FREEZE_XVAC = 0x02;
export const XLH_INVALID_XVAC = 0x04;

export const XLH_TRUNCATE_CASCADE = 1 << 0;
export const XLH_TRUNCATE_RESTART_SEQS = 1 << 1;

/** Sizes of the packed structs redo reads. */
export const SIZE_OF_HEAP_HEADER = 5;
export const SIZE_OF_MULTI_INSERT_TUPLE = 7;
export const SIZE_OF_HEAP_FREEZE_TUPLE = 12;
/** HeapTupleHeaderData without its null bitmap (offsetof t_bits). */
export const SIZEOF_HEAP_TUPLE_HEADER = 23;

export const XLH_LOCK_ALL_FROZEN_CLEARED = 0x01;

export const VISIBILITYMAP_ALL_VISIBLE = 0x01;
export const VISIBILITYMAP_ALL_FROZEN = 0x02;

export interface HeapInsertBody {
  offnum: number;
  flags: number;
  allVisibleCleared: boolean;
  /** XLH_INSERT_ALL_FROZEN_SET (COPY FREEZE): the page is marked all-visible and all-frozen. */
  allFrozenSet: boolean;
  initPage: boolean;
}

export interface HeapDeleteBody {
  xmax: number;
  offnum: number;
  infobitsSet: number;
  flags: number;
  allVisibleCleared: boolean;
}

export interface HeapUpdateBody {
  oldXmax: number;
  oldOffnum: number;
  oldInfobitsSet: number;
  flags: number;
  newXmax: number;
  newOffnum: number;
  /** PD_ALL_VISIBLE cleared on the old tuple's page (block 1 if present, else block 0). */
  oldAllVisibleCleared: boolean;
  /** PD_ALL_VISIBLE cleared on the new tuple's page (block 0). */
  newAllVisibleCleared: boolean;
  initPage: boolean;
}

export interface HeapLockBody {
  /** May be a MultiXactId. */
  lockingXid: number;
  offnum: number;
  infobitsSet: number;
  flags: number;
  allFrozenCleared: boolean;
}

export interface HeapLockUpdatedBody {
  xmax: number;
  offnum: number;
  infobitsSet: number;
  flags: number;
  allFrozenCleared: boolean;
}

export interface HeapMultiInsertBody {
  flags: number;
  ntuples: number;
  allVisibleCleared: boolean;
  allFrozenSet: boolean;
  initPage: boolean;
}

export interface HeapVisibleBody {
  cutoffXid: number;
  /** VISIBILITYMAP_ALL_VISIBLE | VISIBILITYMAP_ALL_FROZEN bits to set. */
  flags: number;
  allVisible: boolean;
  allFrozen: boolean;
}

function initPage(rec: DecodedRecord): boolean {
  return (rec.info & XLOG_HEAP_INIT_PAGE) !== 0;
}

export function parseHeapInsert(rec: DecodedRecord): HeapInsertBody {
  const r = new BodyReader(rec);
  r.needTotal(3, 'xl_heap_insert');
  const flags = r.data[2]!;
  return {
    offnum: r.u16At(0),
    flags,
    allVisibleCleared: (flags & XLH_INSERT_ALL_VISIBLE_CLEARED) !== 0,
    allFrozenSet: (flags & XLH_INSERT_ALL_FROZEN_SET) !== 0,
    initPage: initPage(rec),
  };
}

export function parseHeapDelete(rec: DecodedRecord): HeapDeleteBody {
  const r = new BodyReader(rec);
  r.needTotal(8, 'xl_heap_delete');
  const flags = r.data[7]!;
  return { xmax: r.u32At(0), offnum: r.u16At(4), infobitsSet: r.data[6]!, flags, allVisibleCleared: (flags & XLH_DELETE_ALL_VISIBLE_CLEARED) !== 0 };
}

/** UPDATE and HOT_UPDATE. */
export function parseHeapUpdate(rec: DecodedRecord): HeapUpdateBody {
  const r = new BodyReader(rec);
  r.needTotal(14, 'xl_heap_update');
  const flags = r.data[7]!;
  return {
    oldXmax: r.u32At(0),
    oldOffnum: r.u16At(4),
    oldInfobitsSet: r.data[6]!,
    flags,
    newXmax: r.u32At(8),
    newOffnum: r.u16At(12),
    oldAllVisibleCleared: (flags & XLH_UPDATE_OLD_ALL_VISIBLE_CLEARED) !== 0,
    newAllVisibleCleared: (flags & XLH_UPDATE_NEW_ALL_VISIBLE_CLEARED) !== 0,
    initPage: initPage(rec),
  };
}

export function parseHeapLock(rec: DecodedRecord): HeapLockBody {
  const r = new BodyReader(rec);
  r.needTotal(8, 'xl_heap_lock');
  const flags = r.data[7]!;
  return { lockingXid: r.u32At(0), offnum: r.u16At(4), infobitsSet: r.data[6]!, flags, allFrozenCleared: (flags & XLH_LOCK_ALL_FROZEN_CLEARED) !== 0 };
}

export function parseHeapLockUpdated(rec: DecodedRecord): HeapLockUpdatedBody {
  const r = new BodyReader(rec);
  r.needTotal(8, 'xl_heap_lock_updated');
  const flags = r.data[7]!;
  return { xmax: r.u32At(0), offnum: r.u16At(4), infobitsSet: r.data[6]!, flags, allFrozenCleared: (flags & XLH_LOCK_ALL_FROZEN_CLEARED) !== 0 };
}

export function parseHeapMultiInsert(rec: DecodedRecord): HeapMultiInsertBody {
  const r = new BodyReader(rec);
  r.needTotal(4, 'xl_heap_multi_insert');
  const flags = r.data[0]!;
  const ntuples = r.u16At(2);
  const init = initPage(rec);
  if (!init) {
    // Without INIT_PAGE the offsets array follows; check it is all there (it is not returned).
    r.pos = 4;
    r.need(2 * ntuples, `offsets of ${ntuples} tuples`);
  }
  return {
    flags,
    ntuples,
    allVisibleCleared: (flags & XLH_INSERT_ALL_VISIBLE_CLEARED) !== 0,
    allFrozenSet: (flags & XLH_INSERT_ALL_FROZEN_SET) !== 0,
    initPage: init,
  };
}

export function parseHeapVisible(rec: DecodedRecord): HeapVisibleBody {
  const r = new BodyReader(rec);
  r.needTotal(5, 'xl_heap_visible');
  const flags = r.data[4]!;
  return {
    cutoffXid: r.u32At(0),
    flags,
    allVisible: (flags & VISIBILITYMAP_ALL_VISIBLE) !== 0,
    allFrozen: (flags & VISIBILITYMAP_ALL_FROZEN) !== 0,
  };
}


// ---------------------------------------------------------------------------------------------
// Bodies and block data used by redo.

/** Throws a WalRecordBodyError about block `blockId`'s data of `rec`. */
function blockDataFail(rec: DecodedRecord, blockId: number, what: string): never {
  const rmgr = rmgrName(rec.rmid);
  const type = recordTypeName(rec.rmid, rec.info);
  const lsn = formatLsn(rec.lsn);
  throw new WalRecordBodyError(`${rmgr} ${type} at ${lsn}: block ${blockId} data: ${what}`, { rmgr, recordType: type, lsn, blockId });
}

function findBlock(rec: DecodedRecord, blockId: number): BlockRef | undefined {
  const blocks = rec.blocks;
  for (let i = 0; i < blocks.length; i++) if (blocks[i]!.id === blockId) return blocks[i];
  return undefined;
}

/** The data payload of block `blockId` (empty when the block carries none); throws if the block is absent. */
export function heapBlockData(rec: DecodedRecord, blockId: number): Uint8Array {
  const b = findBlock(rec, blockId);
  if (b === undefined) blockDataFail(rec, blockId, 'the record has no such block reference');
  return blockData(rec, b);
}

function u16le(b: Uint8Array, o: number): number {
  return b[o]! | (b[o + 1]! << 8);
}
function u32le(b: Uint8Array, o: number): number {
  return (b[o]! | (b[o + 1]! << 8) | (b[o + 2]! << 16) | (b[o + 3]! << 24)) >>> 0;
}

export interface HeapOffnumBody {
  offnum: number;
}

/** xl_heap_confirm (speculative insertion confirmed). */
export function parseHeapConfirm(rec: DecodedRecord): HeapOffnumBody {
  const r = new BodyReader(rec);
  r.needTotal(2, 'xl_heap_confirm');
  return { offnum: r.u16At(0) };
}

/** xl_heap_inplace (catalog tuple overwritten in place). */
export function parseHeapInplace(rec: DecodedRecord): HeapOffnumBody {
  const r = new BodyReader(rec);
  r.needTotal(2, 'xl_heap_inplace');
  return { offnum: r.u16At(0) };
}

export interface HeapTruncateBody {
  dbId: number;
  flags: number;
  relids: number[];
}

/** xl_heap_truncate (for logical decoding; the page changes are separate SMGR records). */
export function parseHeapTruncate(rec: DecodedRecord): HeapTruncateBody {
  const r = new BodyReader(rec);
  r.needTotal(12, 'xl_heap_truncate');
  const nrelids = r.u32At(4);
  r.pos = 12;
  if (nrelids > 0x7fff_ffff) r.fail(`xl_heap_truncate relation count ${nrelids} is not valid`);
  return { dbId: r.u32At(0), flags: r.data[8]!, relids: r.u32Array(nrelids, 'xl_heap_truncate relids') };
}

export interface HeapPruneBody {
  latestRemovedXid: number;
  nredirected: number;
  ndead: number;
}

export function parseHeapPrune(rec: DecodedRecord): HeapPruneBody {
  const r = new BodyReader(rec);
  r.needTotal(8, 'xl_heap_prune');
  return { latestRemovedXid: r.u32At(0), nredirected: r.u16At(4), ndead: r.u16At(6) };
}

export interface HeapPruneOffsets {
  /** Flattened (from, to) pairs: from[i] = redirected[2i], to[i] = redirected[2i+1]. */
  redirected: number[];
  nowDead: number[];
  nowUnused: number[];
}

/** The offset arrays of a PRUNE record's block 0 data (the unused count is what is left over). */
export function parseHeapPruneOffsets(rec: DecodedRecord, body: HeapPruneBody): HeapPruneOffsets {
  const data = heapBlockData(rec, 0);
  const fixed = 4 * body.nredirected + 2 * body.ndead;
  if (data.length < fixed || (data.length - fixed) % 2 !== 0) {
    blockDataFail(rec, 0, `${data.length} bytes do not hold ${body.nredirected} redirect pairs and ${body.ndead} dead offsets followed by whole unused offsets`);
  }
  const redirected = new Array<number>(2 * body.nredirected);
  for (let i = 0; i < redirected.length; i++) redirected[i] = u16le(data, 2 * i);
  let p = 4 * body.nredirected;
  const nowDead = new Array<number>(body.ndead);
  for (let i = 0; i < body.ndead; i++, p += 2) nowDead[i] = u16le(data, p);
  const nowUnused = new Array<number>((data.length - p) / 2);
  for (let i = 0; i < nowUnused.length; i++, p += 2) nowUnused[i] = u16le(data, p);
  return { redirected, nowDead, nowUnused };
}

export interface HeapVacuumBody {
  nunused: number;
}

export function parseHeapVacuum(rec: DecodedRecord): HeapVacuumBody {
  const r = new BodyReader(rec);
  r.needTotal(2, 'xl_heap_vacuum');
  return { nunused: r.u16At(0) };
}

/** The now-unused offsets of a VACUUM record's block 0 data. */
export function parseHeapVacuumOffsets(rec: DecodedRecord, body: HeapVacuumBody): number[] {
  const data = heapBlockData(rec, 0);
  if (data.length < 2 * body.nunused) blockDataFail(rec, 0, `${data.length} bytes do not hold ${body.nunused} offsets`);
  const out = new Array<number>(body.nunused);
  for (let i = 0; i < body.nunused; i++) out[i] = u16le(data, 2 * i);
  return out;
}

export interface HeapFreezePageBody {
  cutoffXid: number;
  ntuples: number;
}

export function parseHeapFreezePage(rec: DecodedRecord): HeapFreezePageBody {
  const r = new BodyReader(rec);
  r.needTotal(6, 'xl_heap_freeze_page');
  return { cutoffXid: r.u32At(0), ntuples: r.u16At(4) };
}

export interface HeapFreezeTuple {
  xmax: number;
  offset: number;
  infomask2: number;
  infomask: number;
  frzflags: number;
}

/** The xl_heap_freeze_tuple array of a FREEZE_PAGE record's block 0 data. */
export function parseHeapFreezeTuples(rec: DecodedRecord, body: HeapFreezePageBody): HeapFreezeTuple[] {
  const data = heapBlockData(rec, 0);
  if (data.length < SIZE_OF_HEAP_FREEZE_TUPLE * body.ntuples) {
    blockDataFail(rec, 0, `${data.length} bytes do not hold ${body.ntuples} freeze entries of ${SIZE_OF_HEAP_FREEZE_TUPLE} bytes`);
  }
  const out = new Array<HeapFreezeTuple>(body.ntuples);
  for (let i = 0, p = 0; i < body.ntuples; i++, p += SIZE_OF_HEAP_FREEZE_TUPLE) {
    out[i] = { xmax: u32le(data, p), offset: u16le(data, p + 4), infomask2: u16le(data, p + 6), infomask: u16le(data, p + 8), frzflags: data[p + 10]! };
  }
  return out;
}

export interface HeapNewCidBody {
  topXid: number;
  cmin: number;
  cmax: number;
  combocid: number;
  targetNode: RelFileNode;
  targetBlock: number;
  targetOffset: number;
}

export function parseHeapNewCid(rec: DecodedRecord): HeapNewCidBody {
  const r = new BodyReader(rec);
  r.needTotal(34, 'xl_heap_new_cid');
  return {
    topXid: r.u32At(0), cmin: r.u32At(4), cmax: r.u32At(8), combocid: r.u32At(12),
    targetNode: { spcNode: r.u32At(16), dbNode: r.u32At(20), relNode: r.u32At(24) },
    targetBlock: ((r.u16At(28) << 16) | r.u16At(30)) >>> 0, targetOffset: r.u16At(32),
  };
}

/** A tuple as WAL carries it: the header fields redo cannot derive, and the bytes after byte 23. */
export interface XlHeapTuple {
  infomask2: number;
  infomask: number;
  hoff: number;
  /** Null bitmap [+ padding] + column data (view into the record). */
  data: Uint8Array;
}

/** The new tuple of an INSERT record (block 0 data: xl_heap_header + tuple bytes). */
export function parseHeapInsertTuple(rec: DecodedRecord): XlHeapTuple {
  const data = heapBlockData(rec, 0);
  if (data.length <= SIZE_OF_HEAP_HEADER) blockDataFail(rec, 0, `${data.length} bytes cannot hold an xl_heap_header and a tuple`);
  return { infomask2: u16le(data, 0), infomask: u16le(data, 2), hoff: data[4]!, data: data.subarray(SIZE_OF_HEAP_HEADER) };
}

export interface HeapUpdateNewTuple extends XlHeapTuple {
  /** Bytes of column data shared with the old tuple's start (after its t_hoff) and end. */
  prefixLen: number;
  suffixLen: number;
}

/** The new tuple of an UPDATE / HOT_UPDATE record (block 0 data). */
export function parseHeapUpdateNewTuple(rec: DecodedRecord, body: HeapUpdateBody): HeapUpdateNewTuple {
  const data = heapBlockData(rec, 0);
  let p = 0;
  let prefixLen = 0;
  let suffixLen = 0;
  const need = ((body.flags & XLH_UPDATE_PREFIX_FROM_OLD) !== 0 ? 2 : 0) + ((body.flags & XLH_UPDATE_SUFFIX_FROM_OLD) !== 0 ? 2 : 0) + SIZE_OF_HEAP_HEADER;
  if (data.length < need) blockDataFail(rec, 0, `${data.length} bytes cannot hold the prefix/suffix lengths and an xl_heap_header (${need})`);
  if ((body.flags & XLH_UPDATE_PREFIX_FROM_OLD) !== 0) { prefixLen = u16le(data, p); p += 2; }
  if ((body.flags & XLH_UPDATE_SUFFIX_FROM_OLD) !== 0) { suffixLen = u16le(data, p); p += 2; }
  return {
    prefixLen, suffixLen, infomask2: u16le(data, p), infomask: u16le(data, p + 2), hoff: data[p + 4]!,
    data: data.subarray(p + SIZE_OF_HEAP_HEADER),
  };
}

export interface HeapMultiInsertTuple extends XlHeapTuple {
  offnum: number;
}

/**
 * The tuples of a MULTI_INSERT record: offsets from the main data (or 1..n with INIT_PAGE), tuple
 * headers and data from block 0, each xl_multi_insert_tuple at a 2-byte aligned position. The
 * tuples must use up the block data exactly.
 */
export function parseHeapMultiInsertTuples(rec: DecodedRecord, body: HeapMultiInsertBody): HeapMultiInsertTuple[] {
  const main = new BodyReader(rec);
  const data = heapBlockData(rec, 0);
  const out = new Array<HeapMultiInsertTuple>(body.ntuples);
  let p = 0;
  for (let i = 0; i < body.ntuples; i++) {
    const offnum = body.initPage ? 1 + i : main.u16At(4 + 2 * i);
    p = (p + 1) & ~1;
    if (p + SIZE_OF_MULTI_INSERT_TUPLE > data.length) blockDataFail(rec, 0, `tuple ${i} header at ${p} runs past the ${data.length} bytes`);
    const datalen = u16le(data, p);
    const start = p + SIZE_OF_MULTI_INSERT_TUPLE;
    if (start + datalen > data.length) blockDataFail(rec, 0, `tuple ${i} (${datalen} bytes at ${start}) runs past the ${data.length} bytes`);
    out[i] = { offnum, infomask2: u16le(data, p + 2), infomask: u16le(data, p + 4), hoff: data[p + 6]!, data: data.subarray(start, start + datalen) };
    p = start + datalen;
  }
  if (p !== data.length) blockDataFail(rec, 0, `${body.ntuples} tuples end at ${p}, but the data is ${data.length} bytes (total tuple length mismatch)`);
  return out;
}
