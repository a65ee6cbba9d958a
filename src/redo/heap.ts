/**
 * Redo of the Heap and Heap2 resource managers, one block at a time.
 *
 * Each call applies one record's change to one of its block references, on a private page copy
 * the caller hands in (zeroed when the block reference has WILL_INIT). The result must be the page
 * PostgreSQL 15's own redo produces, byte for byte wherever heap_mask does not hide differences,
 * so every step below reproduces what heap redo does to the page: which infomask bits it clears
 * and sets, what it writes into xmin/xmax/cid/ctid, where PageAddItem puts a tuple (with overwrite
 * semantics: the offset from the record is used as is), how pruning compacts, and when the page
 * LSN is set (always to the record's end LSN, except on the heap page of XLOG_HEAP2_VISIBLE, where
 * PostgreSQL sets it only when hint bits are WAL-logged: data checksums or wal_log_hints).
 *
 * Block references:
 * - UPDATE / HOT_UPDATE: block 0 is the page that receives the new tuple; block 1, present only
 *   when the old tuple lives on another page, is the old tuple's page. Called for block 1 we update
 *   the old tuple only; for block 0 with a block 1 present, we add the new tuple only; for block 0
 *   alone we do both, old first (the new tuple may copy a prefix and suffix from the old one, which
 *   PostgreSQL only does on the same page).
 * - HEAP2 VISIBLE: block 0 is the visibility-map page (set the two bits of the heap block, stamp
 *   the VM page LSN when the bits change), block 1 the heap page (PD_ALL_VISIBLE).
 * - Records that clear visibility-map bits (the *_ALL_VISIBLE_CLEARED / ALL_FROZEN_CLEARED flags)
 *   do so without a block reference to the VM page; Strata stores that change separately, so here
 *   only the heap page's PD_ALL_VISIBLE flag is cleared, as PostgreSQL clears it.
 * - TRUNCATE, NEW_CID and REWRITE change no page: they have no page block references, and a call
 *   for one leaves the page untouched.
 *
 * The caller decides whether redo is needed at all (a full-page image applied, or a page LSN at or
 * past the record, mean PostgreSQL skips the block); these functions always apply the change. The
 * VM page of VISIBLE keeps PostgreSQL's extra "only when the record is newer than the page" test.
 *
 * Anything PostgreSQL would PANIC on (a line pointer that is not a normal tuple, an offset beyond
 * the array, a tuple that does not fit) or that we cannot reproduce exactly (prefix compression
 * across pages) is a RedoError; nothing is guessed.
 *
 * Allocation: new tuples are assembled in one module-level buffer of MaxHeapTupleSize bytes and
 * copied into the page; the per-record parse objects are the only other allocations.
 */
import type { Lsn } from '../postgres/lsn.ts';
import { VISIBILITYMAP_FORKNUM, type BlockRef, type DecodedRecord } from '../postgres/xlogrecord.ts';
import {
  SIZEOF_HEAP_TUPLE_HEADER, XLH_DELETE_ALL_VISIBLE_CLEARED, XLH_DELETE_IS_PARTITION_MOVE, XLH_DELETE_IS_SUPER,
  XLH_FREEZE_XVAC, XLH_INSERT_ALL_FROZEN_SET, XLH_INSERT_ALL_VISIBLE_CLEARED, XLH_INVALID_XVAC,
  XLH_UPDATE_NEW_ALL_VISIBLE_CLEARED, XLH_UPDATE_OLD_ALL_VISIBLE_CLEARED, XLH_UPDATE_PREFIX_FROM_OLD,
  XLH_UPDATE_SUFFIX_FROM_OLD, XLHL_KEYS_UPDATED, XLHL_XMAX_EXCL_LOCK, XLHL_XMAX_IS_MULTI, XLHL_XMAX_KEYSHR_LOCK,
  XLHL_XMAX_LOCK_ONLY, XLOG_HEAP2_FREEZE_PAGE, XLOG_HEAP2_LOCK_UPDATED, XLOG_HEAP2_MULTI_INSERT, XLOG_HEAP2_NEW_CID,
  XLOG_HEAP2_PRUNE, XLOG_HEAP2_REWRITE, XLOG_HEAP2_VACUUM, XLOG_HEAP2_VISIBLE, XLOG_HEAP_CONFIRM, XLOG_HEAP_DELETE,
  XLOG_HEAP_HOT_UPDATE, XLOG_HEAP_INPLACE, XLOG_HEAP_INSERT, XLOG_HEAP_LOCK, XLOG_HEAP_OPMASK,
  XLOG_HEAP_TRUNCATE, XLOG_HEAP_UPDATE, heapBlockData, parseHeapConfirm, parseHeapDelete, parseHeapFreezePage,
  parseHeapFreezeTuples, parseHeapInplace, parseHeapInsert, parseHeapInsertTuple, parseHeapLock, parseHeapLockUpdated,
  parseHeapMultiInsert, parseHeapMultiInsertTuples, parseHeapPrune, parseHeapPruneOffsets, parseHeapUpdate,
  parseHeapUpdateNewTuple, parseHeapVacuum, parseHeapVacuumOffsets, parseHeapVisible,
} from '../postgres/records/heap.ts';
import {
  LP_DEAD, LP_NORMAL, LP_REDIRECT, LP_UNUSED, MAX_HEAP_TUPLE_SIZE, itemIdGetWord, itemIdSet, pageAddItem,
  pageClearAllVisible, pageGetLsn, pageGetMaxOffsetNumber, pageInit, pageIsNew, pageRepairFragmentation,
  pageSetAllVisible, pageSetLsn, pageSetPrunable, pageTruncateLinePointerArray, vmBlockOfHeapBlock, vmSetBits,
} from './page.ts';
import { RedoError, redoFailed, type BlockRedoFn } from './types.ts';

// HeapTupleHeaderData field offsets.
const T_XMIN = 0;
const T_XMAX = 4;
const T_CID = 8; // t_cid, or t_xvac for pre-9.0 VACUUM FULL moved tuples
const T_CTID = 12; // bi_hi u16, bi_lo u16, ip_posid u16
const T_INFOMASK2 = 18;
const T_INFOMASK = 20;
const T_HOFF = 22;

// t_infomask bits.
const HEAP_XMAX_KEYSHR_LOCK = 0x0010;
const HEAP_COMBOCID = 0x0020;
const HEAP_XMAX_EXCL_LOCK = 0x0040;
const HEAP_XMAX_LOCK_ONLY = 0x0080;
const HEAP_XMAX_COMMITTED = 0x0400;
const HEAP_XMAX_INVALID = 0x0800;
const HEAP_XMAX_IS_MULTI = 0x1000;
const HEAP_MOVED = 0x4000 | 0x8000;
const HEAP_LOCK_MASK = HEAP_XMAX_EXCL_LOCK | HEAP_XMAX_KEYSHR_LOCK;
const HEAP_XMAX_BITS = HEAP_XMAX_COMMITTED | HEAP_XMAX_INVALID | HEAP_XMAX_IS_MULTI | HEAP_LOCK_MASK | HEAP_XMAX_LOCK_ONLY;
// t_infomask2 bits.
const HEAP_KEYS_UPDATED = 0x2000;
const HEAP_HOT_UPDATED = 0x4000;

const FROZEN_TRANSACTION_ID = 2;
const INVALID_BLOCK_NUMBER = 0xffff_ffff;
const MOVED_PARTITIONS_OFFSET_NUMBER = 0xfffd;

/** Where new tuples are assembled before PageAddItem copies them onto the page. */
const tupleBuf = Buffer.alloc(MAX_HEAP_TUPLE_SIZE);

function findBlock(rec: DecodedRecord, blockId: number): BlockRef | undefined {
  const blocks = rec.blocks;
  for (let i = 0; i < blocks.length; i++) if (blocks[i]!.id === blockId) return blocks[i];
  return undefined;
}

function requireBlock(rec: DecodedRecord, blockId: number): BlockRef {
  const b = findBlock(rec, blockId);
  if (b === undefined) throw redoFailed(rec, blockId, `the record has no block reference ${blockId}`);
  return b;
}

function writeCtid(page: Buffer, tupleAt: number, blkno: number, offnum: number): void {
  page.writeUInt16LE(blkno >>> 16, tupleAt + T_CTID);
  page.writeUInt16LE(blkno & 0xffff, tupleAt + T_CTID + 2);
  page.writeUInt16LE(offnum, tupleAt + T_CTID + 4);
}

/**
 * The page offset of the normal tuple at `offnum`; a RedoError (PostgreSQL: "invalid lp") when the
 * offset is past the line pointer array or the line pointer is not LP_NORMAL with a full header.
 */
function normalTupleAt(page: Buffer, rec: DecodedRecord, blockId: number, offnum: number): number {
  const maxOff = pageGetMaxOffsetNumber(page);
  if (offnum < 1 || offnum > maxOff) {
    throw redoFailed(rec, blockId, `invalid lp: offset ${offnum} is outside the page's line pointer array (1..${maxOff})`);
  }
  const w = itemIdGetWord(page, offnum);
  const flags = (w >>> 15) & 3;
  const off = w & 0x7fff;
  const len = w >>> 17;
  if (flags !== LP_NORMAL) throw redoFailed(rec, blockId, `invalid lp: line pointer ${offnum} has flags ${flags}, not LP_NORMAL`);
  if (len < SIZEOF_HEAP_TUPLE_HEADER || off + len > page.length) {
    throw redoFailed(rec, blockId, `invalid lp: line pointer ${offnum} (offset ${off}, length ${len}) does not hold a heap tuple`);
  }
  return off;
}

/** Replaces the xmax-related infomask bits with those named by a record's infobits_set. */
function applyInfobits(page: Buffer, at: number, infobits: number): void {
  let im = page.readUInt16LE(at + T_INFOMASK) & ~(HEAP_XMAX_IS_MULTI | HEAP_XMAX_LOCK_ONLY | HEAP_XMAX_KEYSHR_LOCK | HEAP_XMAX_EXCL_LOCK);
  let im2 = page.readUInt16LE(at + T_INFOMASK2) & ~HEAP_KEYS_UPDATED;
  if (infobits & XLHL_XMAX_IS_MULTI) im |= HEAP_XMAX_IS_MULTI;
  if (infobits & XLHL_XMAX_LOCK_ONLY) im |= HEAP_XMAX_LOCK_ONLY;
  if (infobits & XLHL_XMAX_EXCL_LOCK) im |= HEAP_XMAX_EXCL_LOCK;
  if (infobits & XLHL_XMAX_KEYSHR_LOCK) im |= HEAP_XMAX_KEYSHR_LOCK;
  if (infobits & XLHL_KEYS_UPDATED) im2 |= HEAP_KEYS_UPDATED;
  page.writeUInt16LE(im, at + T_INFOMASK);
  page.writeUInt16LE(im2, at + T_INFOMASK2);
}

/** Start of an xmax change: drop every xmax bit, the MOVED bits and KEYS_UPDATED. */
function clearXmaxBits(page: Buffer, at: number): void {
  page.writeUInt16LE(page.readUInt16LE(at + T_INFOMASK) & ~(HEAP_XMAX_BITS | HEAP_MOVED), at + T_INFOMASK);
  page.writeUInt16LE(page.readUInt16LE(at + T_INFOMASK2) & ~HEAP_KEYS_UPDATED, at + T_INFOMASK2);
}

/** Redo writes FirstCommandId (0) as the command id, never a combo cid. */
function setFirstCommandId(page: Buffer, at: number): void {
  page.writeUInt32LE(0, at + T_CID);
  page.writeUInt16LE(page.readUInt16LE(at + T_INFOMASK) & ~HEAP_COMBOCID, at + T_INFOMASK);
}

function clearFlag2(page: Buffer, at: number, bit: number): void {
  page.writeUInt16LE(page.readUInt16LE(at + T_INFOMASK2) & ~bit, at + T_INFOMASK2);
}

/**
 * Fills tupleBuf's fixed header for a tuple redo creates: zeroes, then infomask2/infomask (combo
 * cid bit dropped)/t_hoff from the record, xmin = the record's xid, cid = 0, xmax and ctid given.
 */
function writeNewTupleHeader(rec: DecodedRecord, infomask2: number, infomask: number, hoff: number, xmax: number, blkno: number, offnum: number): void {
  tupleBuf.fill(0, 0, SIZEOF_HEAP_TUPLE_HEADER);
  tupleBuf.writeUInt32LE(rec.xid >>> 0, T_XMIN);
  tupleBuf.writeUInt32LE(xmax >>> 0, T_XMAX);
  writeCtid(tupleBuf, 0, blkno, offnum);
  tupleBuf.writeUInt16LE(infomask2, T_INFOMASK2);
  tupleBuf.writeUInt16LE(infomask & ~HEAP_COMBOCID, T_INFOMASK);
  tupleBuf[T_HOFF] = hoff;
}

/** PageAddItem with overwrite + heap semantics at exactly `offnum`; a RedoError when refused. */
function addTuple(page: Buffer, rec: DecodedRecord, blockId: number, len: number, offnum: number): void {
  const maxOff = pageGetMaxOffsetNumber(page);
  if (offnum > maxOff + 1 || offnum < 1) {
    throw redoFailed(rec, blockId, `invalid max offset number: the tuple goes to offset ${offnum} but the page has ${maxOff} line pointers`);
  }
  if (pageAddItem(page, tupleBuf.subarray(0, len), offnum, ADD_HEAP_OVERWRITE) !== offnum) {
    throw redoFailed(rec, blockId, `failed to add tuple: ${len} bytes at offset ${offnum} (slot in use, beyond the heap limit, or not enough space)`);
  }
}
const ADD_HEAP_OVERWRITE = { overwrite: true, isHeap: true } as const;

function checkNewTupleLength(rec: DecodedRecord, blockId: number, len: number): void {
  if (len > MAX_HEAP_TUPLE_SIZE) throw redoFailed(rec, blockId, `new tuple of ${len} bytes exceeds MaxHeapTupleSize ${MAX_HEAP_TUPLE_SIZE}`);
}

// ---------------------------------------------------------------------------------------------
// HEAP

function redoInsert(page: Buffer, rec: DecodedRecord, blockId: number, endLsn: Lsn): void {
  const block = blockId === 0 ? requireBlock(rec, 0) : onlyBlockZero(rec, blockId);
  const body = parseHeapInsert(rec);
  if (body.initPage) pageInit(page, 0);
  const maxOff = pageGetMaxOffsetNumber(page);
  if (maxOff + 1 < body.offnum) throw redoFailed(rec, blockId, `invalid max offset number: insert at ${body.offnum}, page has ${maxOff} line pointers`);
  const t = parseHeapInsertTuple(rec);
  const len = SIZEOF_HEAP_TUPLE_HEADER + t.data.length;
  checkNewTupleLength(rec, blockId, len);
  writeNewTupleHeader(rec, t.infomask2, t.infomask, t.hoff, 0, block.blkno, body.offnum);
  tupleBuf.set(t.data, SIZEOF_HEAP_TUPLE_HEADER);
  addTuple(page, rec, blockId, len, body.offnum);
  pageSetLsn(page, endLsn);
  if (body.flags & XLH_INSERT_ALL_VISIBLE_CLEARED) pageClearAllVisible(page);
}

function redoDelete(page: Buffer, rec: DecodedRecord, blockId: number, endLsn: Lsn): void {
  const block = blockId === 0 ? requireBlock(rec, 0) : onlyBlockZero(rec, blockId);
  const body = parseHeapDelete(rec);
  const at = normalTupleAt(page, rec, blockId, body.offnum);
  clearXmaxBits(page, at);
  clearFlag2(page, at, HEAP_HOT_UPDATED);
  applyInfobits(page, at, body.infobitsSet);
  if (body.flags & XLH_DELETE_IS_SUPER) page.writeUInt32LE(0, at + T_XMIN);
  else page.writeUInt32LE(body.xmax >>> 0, at + T_XMAX);
  setFirstCommandId(page, at);
  pageSetPrunable(page, rec.xid);
  if (body.flags & XLH_DELETE_ALL_VISIBLE_CLEARED) pageClearAllVisible(page);
  if (body.flags & XLH_DELETE_IS_PARTITION_MOVE) writeCtid(page, at, INVALID_BLOCK_NUMBER, MOVED_PARTITIONS_OFFSET_NUMBER);
  else writeCtid(page, at, block.blkno, body.offnum);
  pageSetLsn(page, endLsn);
}

function redoUpdate(page: Buffer, rec: DecodedRecord, blockId: number, endLsn: Lsn, hot: boolean): void {
  const body = parseHeapUpdate(rec);
  const newBlock = requireBlock(rec, 0);
  const oldBlock = findBlock(rec, 1);
  const samePage = oldBlock === undefined;
  if (blockId !== 0 && !(blockId === 1 && !samePage)) throw redoFailed(rec, blockId, 'an update changes only block references 0 and 1');
  if (!samePage && hot) throw redoFailed(rec, blockId, 'a HOT update names two pages');
  const doOld = samePage || blockId === 1;
  const doNew = blockId === 0;

  let oldAt = -1;
  let oldLen = 0;
  if (doOld) {
    oldAt = normalTupleAt(page, rec, blockId, body.oldOffnum);
    oldLen = itemIdGetWord(page, body.oldOffnum) >>> 17;
    clearXmaxBits(page, oldAt);
    if (hot) page.writeUInt16LE(page.readUInt16LE(oldAt + T_INFOMASK2) | HEAP_HOT_UPDATED, oldAt + T_INFOMASK2);
    else clearFlag2(page, oldAt, HEAP_HOT_UPDATED);
    applyInfobits(page, oldAt, body.oldInfobitsSet);
    page.writeUInt32LE(body.oldXmax >>> 0, oldAt + T_XMAX);
    setFirstCommandId(page, oldAt);
    writeCtid(page, oldAt, newBlock.blkno, body.newOffnum);
    pageSetPrunable(page, rec.xid);
    if (body.flags & XLH_UPDATE_OLD_ALL_VISIBLE_CLEARED) pageClearAllVisible(page);
    pageSetLsn(page, endLsn);
  }
  if (!doNew) return;

  if (!samePage && body.initPage) pageInit(page, 0);
  const maxOff = pageGetMaxOffsetNumber(page);
  if (maxOff + 1 < body.newOffnum) throw redoFailed(rec, blockId, `invalid max offset number: new tuple at ${body.newOffnum}, page has ${maxOff} line pointers`);
  const t = parseHeapUpdateNewTuple(rec, body);
  const { prefixLen, suffixLen } = t;
  if ((prefixLen > 0 || suffixLen > 0 || (body.flags & (XLH_UPDATE_PREFIX_FROM_OLD | XLH_UPDATE_SUFFIX_FROM_OLD)) !== 0) && !samePage) {
    throw redoFailed(rec, blockId, 'the new tuple copies a prefix/suffix from an old tuple on another page');
  }
  const tupLen = t.data.length;
  const len = SIZEOF_HEAP_TUPLE_HEADER + tupLen + prefixLen + suffixLen;
  checkNewTupleLength(rec, blockId, len);
  writeNewTupleHeader(rec, t.infomask2, t.infomask, t.hoff, body.newXmax, newBlock.blkno, body.newOffnum);
  let p = SIZEOF_HEAP_TUPLE_HEADER;
  if (prefixLen > 0) {
    const bitmapLen = t.hoff - SIZEOF_HEAP_TUPLE_HEADER;
    if (bitmapLen < 0 || bitmapLen > tupLen) throw redoFailed(rec, blockId, `new tuple t_hoff ${t.hoff} does not fit its ${tupLen} logged bytes`);
    const oldHoff = page[oldAt + T_HOFF]!;
    if (oldHoff + prefixLen > oldLen) throw redoFailed(rec, blockId, `prefix of ${prefixLen} bytes is longer than the old tuple's data (${oldLen - oldHoff})`);
    tupleBuf.set(t.data.subarray(0, bitmapLen), p);
    p += bitmapLen;
    page.copy(tupleBuf, p, oldAt + oldHoff, oldAt + oldHoff + prefixLen);
    p += prefixLen;
    tupleBuf.set(t.data.subarray(bitmapLen), p);
    p += tupLen - bitmapLen;
  } else {
    tupleBuf.set(t.data, p);
    p += tupLen;
  }
  if (suffixLen > 0) {
    if (suffixLen > oldLen) throw redoFailed(rec, blockId, `suffix of ${suffixLen} bytes is longer than the old tuple (${oldLen})`);
    page.copy(tupleBuf, p, oldAt + oldLen - suffixLen, oldAt + oldLen);
  }
  addTuple(page, rec, blockId, len, body.newOffnum);
  if (body.flags & XLH_UPDATE_NEW_ALL_VISIBLE_CLEARED) pageClearAllVisible(page);
  pageSetLsn(page, endLsn);
}

function redoConfirm(page: Buffer, rec: DecodedRecord, blockId: number, endLsn: Lsn): void {
  const block = blockId === 0 ? requireBlock(rec, 0) : onlyBlockZero(rec, blockId);
  const { offnum } = parseHeapConfirm(rec);
  const at = normalTupleAt(page, rec, blockId, offnum);
  writeCtid(page, at, block.blkno, offnum);
  pageSetLsn(page, endLsn);
}

/** HEAP_XMAX_IS_LOCKED_ONLY: LOCK_ONLY, or (not multi) exactly the exclusive-lock bit of the lock mask. */
function xmaxIsLockedOnly(infomask: number): boolean {
  return (infomask & HEAP_XMAX_LOCK_ONLY) !== 0 || (infomask & (HEAP_XMAX_IS_MULTI | HEAP_LOCK_MASK)) === HEAP_XMAX_EXCL_LOCK;
}

function redoLock(page: Buffer, rec: DecodedRecord, blockId: number, endLsn: Lsn): void {
  const block = blockId === 0 ? requireBlock(rec, 0) : onlyBlockZero(rec, blockId);
  const body = parseHeapLock(rec);
  const at = normalTupleAt(page, rec, blockId, body.offnum);
  clearXmaxBits(page, at);
  applyInfobits(page, at, body.infobitsSet);
  if (xmaxIsLockedOnly(page.readUInt16LE(at + T_INFOMASK))) {
    clearFlag2(page, at, HEAP_HOT_UPDATED);
    writeCtid(page, at, block.blkno, body.offnum);
  }
  page.writeUInt32LE(body.lockingXid >>> 0, at + T_XMAX);
  setFirstCommandId(page, at);
  pageSetLsn(page, endLsn);
}

function redoInplace(page: Buffer, rec: DecodedRecord, blockId: number, endLsn: Lsn): void {
  if (blockId !== 0) onlyBlockZero(rec, blockId);
  const { offnum } = parseHeapInplace(rec);
  const at = normalTupleAt(page, rec, blockId, offnum);
  const hoff = page[at + T_HOFF]!;
  const len = itemIdGetWord(page, offnum) >>> 17;
  const data = heapBlockData(rec, 0);
  if (len - hoff !== data.length) {
    throw redoFailed(rec, blockId, `wrong tuple length: the tuple has ${len - hoff} data bytes after t_hoff, the record ${data.length}`);
  }
  page.set(data, at + hoff);
  pageSetLsn(page, endLsn);
}

function onlyBlockZero(rec: DecodedRecord, blockId: number): never {
  throw redoFailed(rec, blockId, 'this record type changes only block reference 0');
}

/** Redo of one Heap (rmgr 10) record for one block. */
export const heapRedo: BlockRedoFn = (page, rec, blockId, endLsn) => {
  try {
    switch (rec.info & XLOG_HEAP_OPMASK) {
      case XLOG_HEAP_INSERT: redoInsert(page, rec, blockId, endLsn); return;
      case XLOG_HEAP_DELETE: redoDelete(page, rec, blockId, endLsn); return;
      case XLOG_HEAP_UPDATE: redoUpdate(page, rec, blockId, endLsn, false); return;
      case XLOG_HEAP_HOT_UPDATE: redoUpdate(page, rec, blockId, endLsn, true); return;
      case XLOG_HEAP_TRUNCATE: return; // for logical decoding only; SMGR records change the storage
      case XLOG_HEAP_CONFIRM: redoConfirm(page, rec, blockId, endLsn); return;
      case XLOG_HEAP_LOCK: redoLock(page, rec, blockId, endLsn); return;
      case XLOG_HEAP_INPLACE: redoInplace(page, rec, blockId, endLsn); return;
    }
  } catch (err) {
    throw asRedoError(rec, blockId, err);
  }
};

// ---------------------------------------------------------------------------------------------
// HEAP2

function checkOffsetInArray(rec: DecodedRecord, blockId: number, maxOff: number, off: number, what: string): void {
  if (off < 1 || off > maxOff) throw redoFailed(rec, blockId, `${what} offset ${off} is outside the line pointer array (1..${maxOff})`);
}

function redoPrune(page: Buffer, rec: DecodedRecord, blockId: number, endLsn: Lsn): void {
  if (blockId !== 0) onlyBlockZero(rec, blockId);
  const body = parseHeapPrune(rec);
  const { redirected, nowDead, nowUnused } = parseHeapPruneOffsets(rec, body);
  const maxOff = pageGetMaxOffsetNumber(page);
  for (let i = 0; i < redirected.length; i += 2) {
    const from = redirected[i]!;
    const to = redirected[i + 1]!;
    checkOffsetInArray(rec, blockId, maxOff, from, 'redirect');
    checkOffsetInArray(rec, blockId, maxOff, to, 'redirect target');
    itemIdSet(page, from, LP_REDIRECT, to, 0);
  }
  for (const off of nowDead) {
    checkOffsetInArray(rec, blockId, maxOff, off, 'dead');
    itemIdSet(page, off, LP_DEAD, 0, 0);
  }
  for (const off of nowUnused) {
    checkOffsetInArray(rec, blockId, maxOff, off, 'unused');
    itemIdSet(page, off, LP_UNUSED, 0, 0);
  }
  pageRepairFragmentation(page);
  pageSetLsn(page, endLsn);
}

function redoVacuum(page: Buffer, rec: DecodedRecord, blockId: number, endLsn: Lsn): void {
  if (blockId !== 0) onlyBlockZero(rec, blockId);
  const body = parseHeapVacuum(rec);
  const offsets = parseHeapVacuumOffsets(rec, body);
  const maxOff = pageGetMaxOffsetNumber(page);
  for (const off of offsets) {
    checkOffsetInArray(rec, blockId, maxOff, off, 'now-unused');
    const w = itemIdGetWord(page, off);
    if (((w >>> 15) & 3) !== LP_DEAD || (w >>> 17) !== 0) {
      throw redoFailed(rec, blockId, `line pointer ${off} should be LP_DEAD without storage, but has flags ${(w >>> 15) & 3} and length ${w >>> 17}`);
    }
    itemIdSet(page, off, LP_UNUSED, 0, 0);
  }
  pageTruncateLinePointerArray(page);
  pageSetLsn(page, endLsn);
}

function redoFreezePage(page: Buffer, rec: DecodedRecord, blockId: number, endLsn: Lsn): void {
  if (blockId !== 0) onlyBlockZero(rec, blockId);
  const body = parseHeapFreezePage(rec);
  const tuples = parseHeapFreezeTuples(rec, body);
  for (const f of tuples) {
    const at = normalTupleAt(page, rec, blockId, f.offset);
    page.writeUInt32LE(f.xmax >>> 0, at + T_XMAX);
    if (f.frzflags & XLH_FREEZE_XVAC) page.writeUInt32LE(FROZEN_TRANSACTION_ID, at + T_CID);
    if (f.frzflags & XLH_INVALID_XVAC) page.writeUInt32LE(0, at + T_CID);
    page.writeUInt16LE(f.infomask, at + T_INFOMASK);
    page.writeUInt16LE(f.infomask2, at + T_INFOMASK2);
  }
  pageSetLsn(page, endLsn);
}

function redoVisible(page: Buffer, rec: DecodedRecord, blockId: number, endLsn: Lsn, hintBitsLogged: boolean): void {
  const body = parseHeapVisible(rec);
  if (blockId === 1) {
    requireBlock(rec, 1);
    pageSetAllVisible(page);
    if (hintBitsLogged) pageSetLsn(page, endLsn);
    return;
  }
  if (blockId !== 0) throw redoFailed(rec, blockId, 'VISIBLE changes only block references 0 (VM page) and 1 (heap page)');
  const vmBlock = requireBlock(rec, 0);
  const heapBlock = requireBlock(rec, 1);
  if (vmBlock.forkNum !== VISIBILITYMAP_FORKNUM) throw redoFailed(rec, 0, `block reference 0 is in fork ${vmBlock.forkNum}, not the visibility map`);
  const heapBlk = heapBlock.blkno;
  if (vmBlockOfHeapBlock(heapBlk) !== vmBlock.blkno) {
    throw redoFailed(rec, 0, `heap block ${heapBlk} belongs to VM block ${vmBlockOfHeapBlock(heapBlk)}, not ${vmBlock.blkno}`);
  }
  if ((body.flags & 3) === 0) throw redoFailed(rec, 0, `no visibility-map bit to set (flags 0x${body.flags.toString(16)})`);
  if (pageIsNew(page)) pageInit(page, 0);
  if (endLsn > pageGetLsn(page)) {
    if (vmSetBits(page, heapBlk, body.flags & 3)) pageSetLsn(page, endLsn);
  }
}

function redoMultiInsert(page: Buffer, rec: DecodedRecord, blockId: number, endLsn: Lsn): void {
  const block = blockId === 0 ? requireBlock(rec, 0) : onlyBlockZero(rec, blockId);
  const body = parseHeapMultiInsert(rec);
  if (body.initPage) pageInit(page, 0);
  const tuples = parseHeapMultiInsertTuples(rec, body);
  for (const t of tuples) {
    const maxOff = pageGetMaxOffsetNumber(page);
    if (maxOff + 1 < t.offnum) throw redoFailed(rec, blockId, `invalid max offset number: tuple at ${t.offnum}, page has ${maxOff} line pointers`);
    const len = SIZEOF_HEAP_TUPLE_HEADER + t.data.length;
    checkNewTupleLength(rec, blockId, len);
    writeNewTupleHeader(rec, t.infomask2, t.infomask, t.hoff, 0, block.blkno, t.offnum);
    tupleBuf.set(t.data, SIZEOF_HEAP_TUPLE_HEADER);
    addTuple(page, rec, blockId, len, t.offnum);
  }
  pageSetLsn(page, endLsn);
  if (body.flags & XLH_INSERT_ALL_VISIBLE_CLEARED) pageClearAllVisible(page);
  if (body.flags & XLH_INSERT_ALL_FROZEN_SET) pageSetAllVisible(page);
}

function redoLockUpdated(page: Buffer, rec: DecodedRecord, blockId: number, endLsn: Lsn): void {
  if (blockId !== 0) onlyBlockZero(rec, blockId);
  const body = parseHeapLockUpdated(rec);
  const at = normalTupleAt(page, rec, blockId, body.offnum);
  clearXmaxBits(page, at);
  applyInfobits(page, at, body.infobitsSet);
  page.writeUInt32LE(body.xmax >>> 0, at + T_XMAX);
  pageSetLsn(page, endLsn);
}

export interface Heap2RedoOptions {
  /**
   * Whether hint-bit changes are WAL-logged on the primary (data checksums or wal_log_hints = on;
   * PostgreSQL's XLogHintBitIsNeeded). Only then does VISIBLE redo stamp the heap page's LSN.
   */
  hintBitsLogged: boolean;
}

/** Redo of Heap2 (rmgr 9) records, for a cluster with the given hint-bit logging. */
export function createHeap2Redo(opts: Heap2RedoOptions): BlockRedoFn {
  const hintBitsLogged = opts.hintBitsLogged;
  return (page, rec, blockId, endLsn) => {
    try {
      switch (rec.info & XLOG_HEAP_OPMASK) {
        case XLOG_HEAP2_REWRITE: return; // logical rewrite mapping files, no page change
        case XLOG_HEAP2_PRUNE: redoPrune(page, rec, blockId, endLsn); return;
        case XLOG_HEAP2_VACUUM: redoVacuum(page, rec, blockId, endLsn); return;
        case XLOG_HEAP2_FREEZE_PAGE: redoFreezePage(page, rec, blockId, endLsn); return;
        case XLOG_HEAP2_VISIBLE: redoVisible(page, rec, blockId, endLsn, hintBitsLogged); return;
        case XLOG_HEAP2_MULTI_INSERT: redoMultiInsert(page, rec, blockId, endLsn); return;
        case XLOG_HEAP2_LOCK_UPDATED: redoLockUpdated(page, rec, blockId, endLsn); return;
        case XLOG_HEAP2_NEW_CID: return; // logical decoding only
      }
    } catch (err) {
      throw asRedoError(rec, blockId, err);
    }
  };
}

/** Heap2 redo for clusters without data checksums and with wal_log_hints = off (PostgreSQL's default). */
export const heap2Redo: BlockRedoFn = createHeap2Redo({ hintBitsLogged: false });

function asRedoError(rec: DecodedRecord, blockId: number, err: unknown): RedoError {
  if (err instanceof RedoError) return err;
  return redoFailed(rec, blockId, err instanceof Error ? err.message : String(err), err);
}
