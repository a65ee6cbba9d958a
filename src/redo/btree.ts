/**
 * Redo of PostgreSQL 15 B-tree (nbtree) WAL records, one block at a time.
 *
 * Why per block: the caller (verifier, later the pageserver) owns block lookup and full-page
 * images, and asks for "record R applied to block reference B". So every record type is split into
 * what it does to each of its block references, independently of the others:
 *
 *   INSERT_LEAF/POST  0 leaf: add the tuple (POST: first split the posting list it lands in)
 *   INSERT_UPPER      0 internal page: add the downlink; 1 child: clear BTP_INCOMPLETE_SPLIT
 *   INSERT_META       as UPPER, plus 2 metapage: rebuilt from the logged metadata
 *   SPLIT_L/SPLIT_R   0 left (original) page rebuilt; 1 new right page rebuilt from the logged
 *                     tuples; 2 old right sibling: btpo_prev; 3 child (internal split): clear flag
 *   DEDUP             0 leaf: the deduplication pass replayed from the logged intervals
 *   VACUUM/DELETE     0 leaf: shrink posting lists, then delete items, clear BTP_HAS_GARBAGE
 *   MARK_PAGE_HALFDEAD  0 leaf re-initialised half-dead; 1 parent: downlink moved, pivot removed
 *   UNLINK_PAGE(_META) 0 target → deleted page; 1 left sibling: btpo_next; 2 right sibling:
 *                     btpo_prev; 3 leaf (when the target is internal): half-dead with new top
 *                     parent link; 4 metapage (META only)
 *   NEWROOT           0 new root (tuples from the log when level > 0); 1 left child: clear flag;
 *                     2 metapage
 *   META_CLEANUP      0 metapage
 *   REUSE_PAGE        no blocks (it only exists for hot-standby conflicts)
 *
 * Exactness: verification compares our result with PostgreSQL's post-redo page byte for byte
 * (after btree masking: LSN/checksum, hint bits, unused space, leaf line-pointer flags,
 * BTP_HAS_GARBAGE, BTP_SPLIT_END, cycle id). So the physical layout matters, not just the logical
 * content: pages that PostgreSQL rebuilds on a scratch page (split left half, dedup) are rebuilt the
 * same way here — a freshly initialised page (header fields other than lower/upper/special/version
 * become zero, e.g. pd_flags and pd_prune_xid) with items added in item-number order; pages it
 * re-initialises (right half, new root, half-dead and deleted pages, metapage) start from an
 * all-zero page; in-place edits use the same bufpage operations (src/redo/page.ts) as PostgreSQL.
 * Item lengths follow PostgreSQL exactly: old items keep their line-pointer length, logged tuples
 * of the tuple-run format are added with MAXALIGNed sizes, the dedup pass uses the tuple's own size.
 *
 * Posting lists (deduplicated leaf tuples): t_info has INDEX_ALT_TID_MASK, t_tid's offset field
 * has BT_IS_POSTING plus the TID count (12 bits), t_tid's block field is the byte offset of the
 * TID array inside the tuple (MAXALIGNed; the tuple size is MAXALIGN(offset + 6 * count)). A
 * tuple with a single TID is never a posting list. Pivot tuples (internal pages, high keys) have
 * INDEX_ALT_TID_MASK without BT_IS_POSTING; their t_tid block field is the downlink (or, in a
 * half-dead leaf's high key, the top parent link).
 *
 * Anything PostgreSQL would PANIC/ERROR on, or only assert, and that would leave us unable to
 * reproduce the page (an item that does not fit, an offset past the end, a posting split at an
 * impossible TID index, dedup intervals that do not match the page) is a RedoError: a wrong page
 * is worse than none.
 *
 * Scratch pages: the two rebuild-on-a-temporary-page operations use one module-level 8 KiB buffer
 * (JavaScript runs one redo at a time), so replay allocates only the small tuples it must form.
 */
import type { Lsn } from '../postgres/lsn.ts';
import {
  XLOG_BTREE_DEDUP, XLOG_BTREE_DELETE, XLOG_BTREE_INSERT_LEAF, XLOG_BTREE_INSERT_META, XLOG_BTREE_INSERT_POST,
  XLOG_BTREE_INSERT_UPPER, XLOG_BTREE_MARK_PAGE_HALFDEAD, XLOG_BTREE_META_CLEANUP, XLOG_BTREE_NEWROOT,
  XLOG_BTREE_REUSE_PAGE, XLOG_BTREE_SPLIT_L, XLOG_BTREE_SPLIT_R, XLOG_BTREE_UNLINK_PAGE, XLOG_BTREE_UNLINK_PAGE_META,
  XLOG_BTREE_VACUUM, indexTupleSize, parseBtreeDedup, parseBtreeDedupIntervals, parseBtreeDelete, parseBtreeDeletionData,
  parseBtreeInsert, parseBtreeInsertData, parseBtreeMarkHalfDead, parseBtreeMetadata, parseBtreeNewroot,
  parseBtreeSplit, parseBtreeSplitLeftData, parseBtreeTupleRun, parseBtreeUnlinkPage, parseBtreeVacuum,
  type BtreeDedupInterval, type BtreeUpdatedTuple,
} from '../postgres/records/btree.ts';
import { WalRecordBodyError } from '../postgres/records/common.ts';
import type { BlockRef, DecodedRecord } from '../postgres/xlogrecord.ts';
import {
  BLCKSZ, itemIdGetLen, maxAlign, pageAddItem, pageGetItem, pageGetMaxOffsetNumber, pageIndexMultiDelete,
  pageIndexTupleDelete, pageIndexTupleOverwrite, pageInit, pageSetLsn, PageCorruptError,
} from './page.ts';
import { redoFailed, type BlockRedoFn, RedoError } from './types.ts';

// ---------------------------------------------------------------------------------------------
// nbtree layout facts (PostgreSQL 15, BLCKSZ 8192, MAXALIGN 8).

/** sizeof(BTPageOpaqueData): btpo_prev u32, btpo_next u32, btpo_level u32, btpo_flags u16, btpo_cycleid u16. */
export const BT_OPAQUE_SIZE = 16;
/** pd_special of every nbtree page. */
export const BT_SPECIAL_OFFSET = 8192 - BT_OPAQUE_SIZE;
const OPQ_PREV = 0;
const OPQ_NEXT = 4;
const OPQ_LEVEL = 8;
const OPQ_FLAGS = 12;
const OPQ_CYCLEID = 14;

export const BTP_LEAF = 1 << 0;
export const BTP_ROOT = 1 << 1;
export const BTP_DELETED = 1 << 2;
export const BTP_META = 1 << 3;
export const BTP_HALF_DEAD = 1 << 4;
export const BTP_SPLIT_END = 1 << 5;
export const BTP_HAS_GARBAGE = 1 << 6;
export const BTP_INCOMPLETE_SPLIT = 1 << 7;
export const BTP_HAS_FULLXID = 1 << 8;

/** "No page" in sibling links. */
export const P_NONE = 0;
export const P_HIKEY = 1;
export const P_FIRSTKEY = 2;

export const BTREE_MAGIC = 0x053162;
/** BTMetaPageData sits right after the page header; sizeof is 48. */
const META_OFFSET = 24;
const META_SIZE = 48;

/** t_info bits. */
const INDEX_ALT_TID_MASK = 0x2000;
const INDEX_SIZE_MASK = 0x1fff;
/** Offset-number status bits of t_tid in tuples with INDEX_ALT_TID_MASK. */
const BT_OFFSET_MASK = 0x0fff;
const BT_IS_POSTING = 0x2000;
/** sizeof(ItemPointerData). */
const TID_SIZE = 6;
const INDEX_TUPLE_HEADER_SIZE = 8;

/** BTMaxItemSize for an 8 KiB page: the posting-list size cap of the redo dedup pass. */
export const BT_MAX_ITEM_SIZE = 2704;

// ---------------------------------------------------------------------------------------------
// Small readers/writers (little-endian, explicit offsets; tuples may sit at odd offsets in a record).

function u16(b: Uint8Array, o: number): number {
  return b[o]! | (b[o + 1]! << 8);
}
function u32(b: Uint8Array, o: number): number {
  return (b[o]! | (b[o + 1]! << 8) | (b[o + 2]! << 16) | (b[o + 3]! << 24)) >>> 0;
}
function setU16(b: Uint8Array, o: number, v: number): void {
  b[o] = v & 0xff;
  b[o + 1] = (v >>> 8) & 0xff;
}
function setU32(b: Uint8Array, o: number, v: number): void {
  b[o] = v & 0xff;
  b[o + 1] = (v >>> 8) & 0xff;
  b[o + 2] = (v >>> 16) & 0xff;
  b[o + 3] = (v >>> 24) & 0xff;
}

// ---------------------------------------------------------------------------------------------
// The special area (BTPageOpaqueData).

export interface BtOpaque {
  prev: number;
  next: number;
  level: number;
  flags: number;
  cycleid: number;
}

function specialOffset(page: Uint8Array): number {
  return u16(page, 16);
}

/** Reads the btree special area of `page` (pd_special must be 8176). */
export function readBtOpaque(page: Uint8Array): BtOpaque {
  const s = specialOffset(page);
  return { prev: u32(page, s + OPQ_PREV), next: u32(page, s + OPQ_NEXT), level: u32(page, s + OPQ_LEVEL), flags: u16(page, s + OPQ_FLAGS), cycleid: u16(page, s + OPQ_CYCLEID) };
}

function writeBtOpaque(page: Uint8Array, o: BtOpaque): void {
  const s = specialOffset(page);
  setU32(page, s + OPQ_PREV, o.prev);
  setU32(page, s + OPQ_NEXT, o.next);
  setU32(page, s + OPQ_LEVEL, o.level);
  setU16(page, s + OPQ_FLAGS, o.flags);
  setU16(page, s + OPQ_CYCLEID, o.cycleid);
}

/** Initialises a btree page (all zeros, header, 16-byte special area), as _bt_pageinit. */
function btPageInit(page: Buffer): void {
  pageInit(page, BT_OPAQUE_SIZE);
}

// ---------------------------------------------------------------------------------------------
// Index tuples and posting lists.

function tupleIsPosting(t: Uint8Array): boolean {
  return (u16(t, 6) & INDEX_ALT_TID_MASK) !== 0 && (u16(t, 4) & BT_IS_POSTING) !== 0;
}

function tupleIsPivot(t: Uint8Array): boolean {
  return (u16(t, 6) & INDEX_ALT_TID_MASK) !== 0 && (u16(t, 4) & BT_IS_POSTING) === 0;
}

/** Block-number field of t_tid (downlink, top parent link, or a posting list's byte offset). */
function tidBlock(t: Uint8Array, o = 0): number {
  return ((u16(t, o) << 16) | u16(t, o + 2)) >>> 0;
}

function setTidBlock(t: Uint8Array, o: number, blk: number): void {
  setU16(t, o, (blk >>> 16) & 0xffff);
  setU16(t, o + 2, blk & 0xffff);
}

function postingCount(t: Uint8Array): number {
  return u16(t, 4) & BT_OFFSET_MASK;
}

function postingOffset(t: Uint8Array): number {
  return tidBlock(t, 0);
}

/** Problems are reported to the caller, which wraps them into a RedoError naming record and block. */
class TupleError extends Error {}

/** Checks that a posting list tuple's TID array lies inside the tuple; returns the TID count. */
function checkedPosting(t: Uint8Array, what: string): number {
  const n = postingCount(t);
  const off = postingOffset(t);
  const size = indexTupleSize(t);
  if (n < 2 || off < INDEX_TUPLE_HEADER_SIZE || off + n * TID_SIZE > size || size > t.byteLength) {
    throw new TupleError(`${what} is not a valid posting list tuple (size ${size}, ${n} TIDs at offset ${off})`);
  }
  return n;
}

/**
 * Builds a tuple from the key part (`keySize` bytes) of `base` and the given heap TIDs, as
 * deduplication and posting-list shrinking do: one TID gives a plain tuple (the TID in t_tid),
 * more give a posting list starting right after the key (the key size is MAXALIGNed already).
 */
function formTuple(base: Uint8Array, keySize: number, tids: Uint8Array, ntids: number): Buffer {
  const size = ntids > 1 ? maxAlign(keySize + ntids * TID_SIZE) : keySize;
  if (keySize !== maxAlign(keySize) || size > INDEX_SIZE_MASK) {
    throw new TupleError(`cannot form a tuple of key size ${keySize} with ${ntids} TIDs`);
  }
  const t = Buffer.alloc(size);
  t.set(base.subarray(0, keySize), 0);
  let info = (u16(t, 6) & ~INDEX_SIZE_MASK) | size;
  if (ntids > 1) {
    info |= INDEX_ALT_TID_MASK;
    setU16(t, 6, info);
    setU16(t, 4, ntids | BT_IS_POSTING);
    setTidBlock(t, 0, keySize);
    t.set(tids.subarray(0, ntids * TID_SIZE), keySize);
  } else {
    info &= ~INDEX_ALT_TID_MASK;
    setU16(t, 6, info);
    t.set(tids.subarray(0, TID_SIZE), 0);
  }
  return t;
}

/**
 * The posting list split done when a new TID falls inside an existing posting list's TID range:
 * the new tuple's TID is put at index `postingoff` (later TIDs shift up one; the highest falls
 * off), and the new tuple takes over that highest TID instead. Returns the rewritten posting list
 * (same size as the original); `newItem` (a private copy) is modified in place.
 */
export function swapPosting(newItem: Uint8Array, oposting: Uint8Array, postingoff: number): Buffer {
  const n = checkedPosting(oposting, 'the posting list being split');
  if (!(postingoff > 0 && postingoff < n)) {
    throw new TupleError(`posting list tuple with ${n} TIDs cannot be split at TID index ${postingoff}`);
  }
  if (newItem.byteLength < INDEX_TUPLE_HEADER_SIZE || tupleIsPosting(newItem) || tupleIsPivot(newItem)) {
    throw new TupleError('the new item of a posting list split must be a plain leaf tuple');
  }
  const size = indexTupleSize(oposting);
  const nposting = Buffer.from(oposting.subarray(0, size));
  const base = postingOffset(oposting);
  const at = base + postingoff * TID_SIZE;
  nposting.copyWithin(at + TID_SIZE, at, base + (n - 1) * TID_SIZE);
  nposting.set(newItem.subarray(0, TID_SIZE), at);
  // The new item now carries the original highest TID.
  newItem.set(oposting.subarray(base + (n - 1) * TID_SIZE, base + n * TID_SIZE), 0);
  return nposting;
}

/**
 * Removes the TIDs at the given (ascending, 0-based) posting list indexes; at least one TID must
 * remain. The result is a posting list, or a plain tuple when one TID is left.
 */
export function shrinkPosting(orig: Uint8Array, deletedTids: readonly number[]): Buffer {
  const n = checkedPosting(orig, 'the updated tuple');
  const keep = n - deletedTids.length;
  if (!(keep > 0 && keep < n)) throw new TupleError(`cannot delete ${deletedTids.length} of the ${n} TIDs of a posting list`);
  const base = postingOffset(orig);
  const tids = Buffer.allocUnsafe(keep * TID_SIZE);
  let kept = 0;
  let d = 0;
  for (let i = 0; i < n; i++) {
    if (d < deletedTids.length && deletedTids[d] === i) {
      d++;
      continue;
    }
    if (kept === keep) break;
    tids.set(orig.subarray(base + i * TID_SIZE, base + (i + 1) * TID_SIZE), kept * TID_SIZE);
    kept++;
  }
  if (kept !== keep || d !== deletedTids.length) {
    throw new TupleError(`posting list indexes to delete [${deletedTids.join(',')}] are not ascending indexes below ${n}`);
  }
  return formTuple(orig, base, tids, keep);
}

// ---------------------------------------------------------------------------------------------
// Deduplication replay.

/** Working state of one deduplication pass (one pending posting list at a time). */
/** TID workspace of the dedup pass: a posting list never exceeds BT_MAX_ITEM_SIZE bytes. */
const dedupTids = Buffer.alloc(BLCKSZ);

class DedupPass {
  private readonly htids = dedupTids;
  private nhtids = 0;
  private base: Uint8Array = new Uint8Array(0);
  private baseoff = 0;
  private basetupsize = 0;
  nitems = 0;
  /** The intervals this pass produced (posting lists actually formed). */
  readonly intervals: BtreeDedupInterval[] = [];

  get pendingBaseoff(): number {
    return this.baseoff;
  }

  start(base: Uint8Array, off: number): void {
    if (tupleIsPivot(base)) throw new TupleError(`item ${off} is a pivot tuple on a leaf page`);
    if (tupleIsPosting(base)) {
      const n = checkedPosting(base, `item ${off}`);
      const po = postingOffset(base);
      this.htids.set(base.subarray(po, po + n * TID_SIZE), 0);
      this.nhtids = n;
      this.basetupsize = po;
    } else {
      this.htids.set(base.subarray(0, TID_SIZE), 0);
      this.nhtids = 1;
      this.basetupsize = indexTupleSize(base);
    }
    this.nitems = 1;
    this.base = base;
    this.baseoff = off;
  }

  /** Adds `t`'s TIDs to the pending posting list; false when the result would exceed the size cap. */
  save(t: Uint8Array, off: number): boolean {
    if (tupleIsPivot(t)) throw new TupleError(`item ${off} is a pivot tuple on a leaf page`);
    let n = 1;
    let from = 0;
    if (tupleIsPosting(t)) {
      n = checkedPosting(t, `item ${off}`);
      from = postingOffset(t);
    }
    if (maxAlign(this.basetupsize + (this.nhtids + n) * TID_SIZE) > BT_MAX_ITEM_SIZE) return false;
    this.htids.set(t.subarray(from, from + n * TID_SIZE), this.nhtids * TID_SIZE);
    this.nhtids += n;
    this.nitems++;
    return true;
  }

  /** Writes the pending tuple to `newPage` as its next item. */
  finish(newPage: Buffer): void {
    const off = pageGetMaxOffsetNumber(newPage) + 1;
    let tuple: Uint8Array;
    if (this.nitems === 1) {
      tuple = this.base.subarray(0, indexTupleSize(this.base));
    } else {
      tuple = formTuple(this.base, this.basetupsize, this.htids, this.nhtids);
      this.intervals.push({ baseoff: this.baseoff, nitems: this.nitems });
    }
    if (pageAddItem(newPage, tuple, off, { overwrite: false, isHeap: false }) === 0) {
      throw new TupleError(`deduplication could not add item ${off} (${tuple.byteLength} bytes) to the page`);
    }
    this.nhtids = 0;
    this.nitems = 0;
  }
}

// ---------------------------------------------------------------------------------------------
// Redo, per record type and block.

const scratch = Buffer.alloc(BLCKSZ);

function findBlock(rec: DecodedRecord, id: number): BlockRef | undefined {
  for (const b of rec.blocks) if (b.id === id) return b;
  return undefined;
}

function blockNumberOf(rec: DecodedRecord, id: number): number {
  const b = findBlock(rec, id);
  if (b === undefined) throw new TupleError(`the record has no block reference ${id}`);
  return b.blkno;
}

function requireBtPage(page: Buffer): void {
  const special = specialOffset(page);
  if (special !== BT_SPECIAL_OFFSET) {
    throw new TupleError(`page is not a btree page: pd_special is ${special}, expected ${BT_SPECIAL_OFFSET}`);
  }
}

function addItemOrFail(page: Buffer, item: Uint8Array, off: number, what: string): void {
  if (pageAddItem(page, item, off, { overwrite: false, isHeap: false }) === 0) {
    throw new TupleError(`failed to add ${what} (${item.byteLength} bytes) at offset ${off}`);
  }
}

function itemOrFail(page: Buffer, off: number, what: string): Buffer {
  const max = pageGetMaxOffsetNumber(page);
  if (off < 1 || off > max) throw new TupleError(`${what}: offset ${off} is not on the page (max offset ${max})`);
  const item = pageGetItem(page, off);
  if (item.byteLength < INDEX_TUPLE_HEADER_SIZE) throw new TupleError(`${what}: item ${off} has ${item.byteLength} bytes`);
  return item;
}

/** Starts a fresh temporary copy of `page`'s special area in `scratch` (PageGetTempPageCopySpecial). */
function tempPageCopySpecial(page: Buffer): Buffer {
  requireBtPage(page);
  pageInit(scratch, BT_OPAQUE_SIZE);
  page.copy(scratch, BT_SPECIAL_OFFSET, BT_SPECIAL_OFFSET, BLCKSZ);
  return scratch;
}

function clearIncompleteSplit(page: Buffer, endLsn: Lsn): void {
  requireBtPage(page);
  const o = readBtOpaque(page);
  o.flags &= ~BTP_INCOMPLETE_SPLIT;
  writeBtOpaque(page, o);
  pageSetLsn(page, endLsn);
}

/** Rebuilds the metapage from the xl_btree_metadata in block `blockId`'s data. */
function restoreMeta(page: Buffer, rec: DecodedRecord, blockId: number, endLsn: Lsn): void {
  const md = parseBtreeMetadata(rec, blockId);
  btPageInit(page);
  setU32(page, META_OFFSET + 0, BTREE_MAGIC);
  setU32(page, META_OFFSET + 4, md.version);
  setU32(page, META_OFFSET + 8, md.root);
  setU32(page, META_OFFSET + 12, md.level);
  setU32(page, META_OFFSET + 16, md.fastroot);
  setU32(page, META_OFFSET + 20, md.fastlevel);
  setU32(page, META_OFFSET + 24, md.lastCleanupNumDelpages);
  // btm_last_cleanup_num_heap_tuples is deprecated; redo always stores -1.0.
  page.writeDoubleLE(-1.0, META_OFFSET + 32);
  page[META_OFFSET + 40] = md.allequalimage ? 1 : 0;
  writeBtOpaque(page, { prev: 0, next: 0, level: 0, flags: BTP_META, cycleid: 0 });
  // pd_lower covers the metadata, so compressed/hole-punched images keep it.
  setU16(page, 12, META_OFFSET + META_SIZE);
  pageSetLsn(page, endLsn);
}

/** Re-adds a run of tuples stored highest item number first (the bytes pd_upper..pd_special of a page). */
function restoreTupleRun(page: Buffer, rec: DecodedRecord, blockId: number): void {
  const tuples = parseBtreeTupleRun(rec, blockId);
  const n = tuples.length;
  for (let i = n - 1; i >= 0; i--) addItemOrFail(page, tuples[i]!, n - i, `restored tuple ${n - i}`);
}

/** A half-dead leaf: empty but for a dummy high key whose t_tid block is the top parent link. */
function writeHalfDeadLeaf(page: Buffer, prev: number, next: number, topParent: number, endLsn: Lsn): void {
  btPageInit(page);
  writeBtOpaque(page, { prev, next, level: 0, flags: BTP_HALF_DEAD | BTP_LEAF, cycleid: 0 });
  const hikey = Buffer.alloc(INDEX_TUPLE_HEADER_SIZE);
  setTidBlock(hikey, 0, topParent);
  // Zero key attributes, no heap TID: a pivot tuple with INDEX_ALT_TID_MASK and offset field 0.
  setU16(hikey, 6, INDEX_TUPLE_HEADER_SIZE | INDEX_ALT_TID_MASK);
  addItemOrFail(page, hikey, P_HIKEY, 'half-dead high key');
  pageSetLsn(page, endLsn);
}

function redoInsert(page: Buffer, rec: DecodedRecord, blockId: number, endLsn: Lsn, op: number): void {
  const isLeaf = op === XLOG_BTREE_INSERT_LEAF || op === XLOG_BTREE_INSERT_POST;
  if (blockId === 1 && !isLeaf) return clearIncompleteSplit(page, endLsn);
  if (blockId === 2 && op === XLOG_BTREE_INSERT_META) return restoreMeta(page, rec, 2, endLsn);
  if (blockId !== 0) throw new TupleError(`unexpected block reference ${blockId}`);
  requireBtPage(page);
  const { offnum } = parseBtreeInsert(rec);
  const posting = op === XLOG_BTREE_INSERT_POST;
  const data = parseBtreeInsertData(rec, posting);
  if (!posting) {
    addItemOrFail(page, data.tuple, offnum, 'new item');
  } else {
    const oposting = itemOrFail(page, offnum - 1, 'posting list to split');
    const newItem = Buffer.from(data.tuple);
    const nposting = swapPosting(newItem, oposting, data.postingoff);
    // The rewritten posting list has the old one's size: overwrite it in place.
    if (nposting.byteLength !== maxAlign(nposting.byteLength) || nposting.byteLength > oposting.byteLength) {
      throw new TupleError(`posting list at ${offnum - 1} has size ${nposting.byteLength}, not MAXALIGNed or larger than its item`);
    }
    oposting.set(nposting, 0);
    addItemOrFail(page, newItem, offnum, 'posting split new item');
  }
  pageSetLsn(page, endLsn);
}

function redoSplitLeft(page: Buffer, rec: DecodedRecord, endLsn: Lsn): void {
  const body = parseBtreeSplit(rec);
  const isLeaf = body.level === 0;
  const data = parseBtreeSplitLeftData(rec, body);
  const rightBlk = blockNumberOf(rec, 1);
  requireBtPage(page);
  const orig = readBtOpaque(page);

  let newItem: Uint8Array | undefined = data.newItem;
  let nposting: Buffer | undefined;
  let replacePostingOff = 0;
  if (body.postingoff !== 0) {
    if (newItem === undefined) throw new TupleError('posting list split without a logged new item');
    replacePostingOff = body.newitemoff - 1;
    const copy = Buffer.from(newItem);
    nposting = swapPosting(copy, itemOrFail(page, replacePostingOff, 'posting list to split'), body.postingoff);
    newItem = copy;
  }
  const newItemSize = newItem === undefined ? 0 : maxAlign(indexTupleSize(newItem));
  const maxOff = pageGetMaxOffsetNumber(page);
  const firstData = orig.next === P_NONE ? P_HIKEY : P_FIRSTKEY;
  if (body.firstrightoff < firstData || body.firstrightoff > maxOff + 1) {
    throw new TupleError(`firstrightoff ${body.firstrightoff} is outside the page's data items ${firstData}..${maxOff}`);
  }
  // PostgreSQL never logs a left-page new item or posting list that the rebuild loop would skip.
  if (body.newItemOnLeft && (body.newitemoff < firstData || body.newitemoff > body.firstrightoff)) {
    throw new TupleError(`newitemoff ${body.newitemoff} is not on the left page (data items ${firstData}..${body.firstrightoff - 1})`);
  }
  if (body.postingoff !== 0 && (replacePostingOff < firstData || replacePostingOff >= body.firstrightoff)) {
    throw new TupleError(`the posting list to split (item ${replacePostingOff}) is not on the left page`);
  }

  const left = tempPageCopySpecial(page);
  addItemOrFail(left, data.leftHighKey, P_HIKEY, 'left high key');
  let leftOff = P_HIKEY + 1;
  let off = firstData;
  for (; off < body.firstrightoff; off++) {
    if (off === replacePostingOff) {
      addItemOrFail(left, nposting!, leftOff++, 'replacement posting list');
      continue;
    }
    if (body.newItemOnLeft && off === body.newitemoff) {
      addItemOrFail(left, newItem!.subarray(0, newItemSize), leftOff++, 'new item');
    }
    const len = itemIdGetLen(page, off);
    addItemOrFail(left, pageGetItem(page, off).subarray(0, len), leftOff++, `old item ${off}`);
  }
  if (body.newItemOnLeft && off === body.newitemoff) {
    addItemOrFail(left, newItem!.subarray(0, newItemSize), leftOff++, 'new item');
  }
  left.copy(page, 0, 0, BLCKSZ);
  writeBtOpaque(page, {
    prev: orig.prev,
    next: rightBlk,
    level: orig.level,
    flags: BTP_INCOMPLETE_SPLIT | (isLeaf ? BTP_LEAF : 0),
    cycleid: 0,
  });
  pageSetLsn(page, endLsn);
}

function redoSplit(page: Buffer, rec: DecodedRecord, blockId: number, endLsn: Lsn): void {
  switch (blockId) {
    case 0:
      return redoSplitLeft(page, rec, endLsn);
    case 1: {
      const body = parseBtreeSplit(rec);
      const sib = findBlock(rec, 2);
      btPageInit(page);
      writeBtOpaque(page, {
        prev: blockNumberOf(rec, 0),
        next: sib === undefined ? P_NONE : sib.blkno,
        level: body.level,
        flags: body.level === 0 ? BTP_LEAF : 0,
        cycleid: 0,
      });
      restoreTupleRun(page, rec, 1);
      pageSetLsn(page, endLsn);
      return;
    }
    case 2: {
      requireBtPage(page);
      const o = readBtOpaque(page);
      o.prev = blockNumberOf(rec, 1);
      writeBtOpaque(page, o);
      pageSetLsn(page, endLsn);
      return;
    }
    case 3:
      return clearIncompleteSplit(page, endLsn);
    default:
      throw new TupleError(`unexpected block reference ${blockId}`);
  }
}

function redoDedup(page: Buffer, rec: DecodedRecord, endLsn: Lsn): void {
  const body = parseBtreeDedup(rec);
  const logged = parseBtreeDedupIntervals(rec, body);
  requireBtPage(page);
  const opaque = readBtOpaque(page);
  const minOff = opaque.next === P_NONE ? P_HIKEY : P_FIRSTKEY;
  const maxOff = pageGetMaxOffsetNumber(page);
  if (maxOff < minOff) throw new TupleError('deduplication of a page without data items');
  const newPage = tempPageCopySpecial(page);
  if (opaque.next !== P_NONE) {
    const len = itemIdGetLen(page, P_HIKEY);
    addItemOrFail(newPage, pageGetItem(page, P_HIKEY).subarray(0, len), P_HIKEY, 'high key');
  }
  const pass = new DedupPass();
  for (let off = minOff; off <= maxOff; off++) {
    const t = itemOrFail(page, off, 'dedup');
    if (off === minOff) {
      pass.start(t, off);
      continue;
    }
    const next = logged[pass.intervals.length];
    if (next !== undefined && pass.pendingBaseoff === next.baseoff && pass.nitems < next.nitems) {
      if (!pass.save(t, off)) throw new TupleError(`deduplication could not merge item ${off} into the posting list at ${next.baseoff}`);
    } else {
      pass.finish(newPage);
      pass.start(t, off);
    }
  }
  pass.finish(newPage);
  const got = pass.intervals;
  if (got.length !== logged.length || got.some((g, i) => g.baseoff !== logged[i]!.baseoff || g.nitems !== logged[i]!.nitems)) {
    throw new TupleError(
      `deduplication produced intervals ${got.map((g) => `${g.baseoff}x${g.nitems}`).join(',')} but the record logged ` +
      `${logged.map((g) => `${g.baseoff}x${g.nitems}`).join(',')}`,
    );
  }
  if (opaque.flags & BTP_HAS_GARBAGE) {
    const o = readBtOpaque(newPage);
    o.flags &= ~BTP_HAS_GARBAGE;
    writeBtOpaque(newPage, o);
  }
  newPage.copy(page, 0, 0, BLCKSZ);
  pageSetLsn(page, endLsn);
}

/** VACUUM and DELETE: posting lists shrink first (offsets stay valid), then whole items go. */
function redoDeletion(page: Buffer, rec: DecodedRecord, endLsn: Lsn, op: number): void {
  const counts = op === XLOG_BTREE_VACUUM ? parseBtreeVacuum(rec) : parseBtreeDelete(rec);
  const data = parseBtreeDeletionData(rec, counts.ndeleted, counts.nupdated);
  requireBtPage(page);
  applyPostingUpdates(page, data.updated);
  if (data.deleted.length > 0) {
    const max = pageGetMaxOffsetNumber(page);
    for (const off of data.deleted) {
      if (off < 1 || off > max) throw new TupleError(`deleted offset ${off} is not on the page (max offset ${max})`);
    }
    pageIndexMultiDelete(page, data.deleted);
  }
  const o = readBtOpaque(page);
  o.flags &= ~BTP_HAS_GARBAGE;
  writeBtOpaque(page, o);
  pageSetLsn(page, endLsn);
}

function applyPostingUpdates(page: Buffer, updated: readonly BtreeUpdatedTuple[]): void {
  for (const u of updated) {
    const orig = itemOrFail(page, u.offnum, 'updated posting list');
    const shrunk = shrinkPosting(orig, u.deletedTids);
    if (!pageIndexTupleOverwrite(page, u.offnum, shrunk)) {
      throw new TupleError(`failed to overwrite posting list at ${u.offnum} with its ${shrunk.byteLength}-byte update`);
    }
  }
}

function redoMarkHalfDead(page: Buffer, rec: DecodedRecord, blockId: number, endLsn: Lsn): void {
  const body = parseBtreeMarkHalfDead(rec);
  if (blockId === 1) {
    // The subtree's parent: the pivot at poffset takes over the downlink of the next pivot, which
    // is removed (the subtree's key space merges into its right sibling's).
    requireBtPage(page);
    const next = itemOrFail(page, body.poffset + 1, 'pivot after poffset');
    const target = itemOrFail(page, body.poffset, 'pivot at poffset');
    setTidBlock(target, 0, tidBlock(next, 0));
    pageIndexTupleDelete(page, body.poffset + 1);
    pageSetLsn(page, endLsn);
    return;
  }
  if (blockId !== 0) throw new TupleError(`unexpected block reference ${blockId}`);
  writeHalfDeadLeaf(page, body.leftblk, body.rightblk, body.topparent, endLsn);
}

function redoUnlink(page: Buffer, rec: DecodedRecord, blockId: number, endLsn: Lsn): void {
  const body = parseBtreeUnlinkPage(rec);
  switch (blockId) {
    case 0: {
      btPageInit(page);
      writeBtOpaque(page, {
        prev: body.leftsib,
        next: body.rightsib,
        level: body.level,
        flags: BTP_DELETED | BTP_HAS_FULLXID | (body.level === 0 ? BTP_LEAF : 0),
        cycleid: 0,
      });
      // A deleted page keeps only its safexid (BTDeletedPageData) right after the header.
      setU16(page, 12, 24 + 8);
      setU16(page, 14, BT_SPECIAL_OFFSET);
      page.writeBigUInt64LE(body.safexid, 24);
      pageSetLsn(page, endLsn);
      return;
    }
    case 1: {
      requireBtPage(page);
      const o = readBtOpaque(page);
      o.next = body.rightsib;
      writeBtOpaque(page, o);
      pageSetLsn(page, endLsn);
      return;
    }
    case 2: {
      requireBtPage(page);
      const o = readBtOpaque(page);
      o.prev = body.leftsib;
      writeBtOpaque(page, o);
      pageSetLsn(page, endLsn);
      return;
    }
    case 3:
      writeHalfDeadLeaf(page, body.leafleftsib, body.leafrightsib, body.leaftopparent, endLsn);
      return;
    case 4:
      if (!body.hasMeta) throw new TupleError('block reference 4 (metapage) in an UNLINK_PAGE record without META');
      restoreMeta(page, rec, 4, endLsn);
      return;
    default:
      throw new TupleError(`unexpected block reference ${blockId}`);
  }
}

function redoNewroot(page: Buffer, rec: DecodedRecord, blockId: number, endLsn: Lsn): void {
  const body = parseBtreeNewroot(rec);
  switch (blockId) {
    case 0:
      btPageInit(page);
      writeBtOpaque(page, { prev: P_NONE, next: P_NONE, level: body.level, flags: BTP_ROOT | (body.level === 0 ? BTP_LEAF : 0), cycleid: 0 });
      if (body.level > 0) restoreTupleRun(page, rec, 0);
      pageSetLsn(page, endLsn);
      return;
    case 1:
      return clearIncompleteSplit(page, endLsn);
    case 2:
      return restoreMeta(page, rec, 2, endLsn);
    default:
      throw new TupleError(`unexpected block reference ${blockId}`);
  }
}

function redoBlock(page: Buffer, rec: DecodedRecord, blockId: number, endLsn: Lsn): void {
  if (page.byteLength !== BLCKSZ) throw new TupleError(`page buffer is ${page.byteLength} bytes, expected ${BLCKSZ}`);
  if (findBlock(rec, blockId) === undefined) throw new TupleError(`the record has no block reference ${blockId}`);
  const op = rec.info & 0xf0;
  switch (op) {
    case XLOG_BTREE_INSERT_LEAF:
    case XLOG_BTREE_INSERT_UPPER:
    case XLOG_BTREE_INSERT_META:
    case XLOG_BTREE_INSERT_POST:
      return redoInsert(page, rec, blockId, endLsn, op);
    case XLOG_BTREE_SPLIT_L:
    case XLOG_BTREE_SPLIT_R:
      return redoSplit(page, rec, blockId, endLsn);
    case XLOG_BTREE_DEDUP:
      if (blockId !== 0) throw new TupleError(`unexpected block reference ${blockId}`);
      return redoDedup(page, rec, endLsn);
    case XLOG_BTREE_VACUUM:
    case XLOG_BTREE_DELETE:
      if (blockId !== 0) throw new TupleError(`unexpected block reference ${blockId}`);
      return redoDeletion(page, rec, endLsn, op);
    case XLOG_BTREE_MARK_PAGE_HALFDEAD:
      return redoMarkHalfDead(page, rec, blockId, endLsn);
    case XLOG_BTREE_UNLINK_PAGE:
    case XLOG_BTREE_UNLINK_PAGE_META:
      return redoUnlink(page, rec, blockId, endLsn);
    case XLOG_BTREE_NEWROOT:
      return redoNewroot(page, rec, blockId, endLsn);
    case XLOG_BTREE_META_CLEANUP:
      if (blockId !== 0) throw new TupleError(`unexpected block reference ${blockId}`);
      return restoreMeta(page, rec, 0, endLsn);
    case XLOG_BTREE_REUSE_PAGE:
      // Registers no blocks: a block reference here means the record is not what PostgreSQL writes.
      throw new TupleError('REUSE_PAGE records change no page');
    default:
      throw new TupleError(`unknown btree op code 0x${op.toString(16)}`);
  }
}

/**
 * Applies one btree record to one of its blocks (see the module comment for what each block
 * reference means). Throws RedoError naming the record and block on anything it cannot replay.
 */
export const btreeRedo: BlockRedoFn = (page, rec, blockId, endLsn) => {
  try {
    redoBlock(page, rec, blockId, endLsn);
  } catch (e) {
    if (e instanceof RedoError) throw e;
    if (e instanceof TupleError || e instanceof WalRecordBodyError || e instanceof PageCorruptError) throw redoFailed(rec, blockId, e.message, e);
    throw e;
  }
};
