/**
 * Page-level operations for WAL redo: the PostgreSQL 15 "bufpage" toolkit, on an 8192-byte Buffer,
 * in place.
 *
 * Why exact: redo output is compared byte for byte with PostgreSQL's own post-change images after
 * masking, and the masks hide hint bits, the LSN, the checksum and the free space between pd_lower
 * and pd_upper — but not where tuples sit, not the line pointer array, not pd_lower/pd_upper/pd_special.
 * So every operation here reproduces PostgreSQL's layout decisions exactly: which line pointer an
 * item gets, where its bytes go (items are placed downwards from pd_upper, MAXALIGNed), how
 * compaction orders tuples (by line pointer order, packed down from pd_special), which line
 * pointers get truncated, and when the PD_HAS_FREE_LINES hint is set or cleared.
 *
 * Layout reminders (x86-64, little-endian):
 * - Header: pd_lsn (u32 hi, u32 lo) @0, pd_checksum @8, pd_flags @10, pd_lower @12, pd_upper @14,
 *   pd_special @16, pd_pagesize_version @18, pd_prune_xid u32 @20.
 * - Line pointer n (1-based OffsetNumber) is the u32 at 24 + 4*(n-1), a C bitfield packed from the
 *   low bit: lp_off in bits 0..14, lp_flags in bits 15..16, lp_len in bits 17..31.
 * - "Unused" line pointers are all-zero words; redirects keep their target in lp_off with lp_len 0;
 *   dead pointers without storage are (flags = DEAD, off 0, len 0).
 *
 * Errors: where PostgreSQL quietly returns InvalidOffsetNumber / false (no room, refused slot) the
 * functions here return 0 / false too; where PostgreSQL raises ERROR or PANIC (corrupted header
 * pointers, line pointers outside the tuple area, bad offsets) they throw PageCorruptError, which
 * the rmgr redo functions turn into a RedoError naming the record and block.
 *
 * Allocation: nothing is allocated per call except the item views pageGetItem/pageGetSpecialView
 * return. Compaction uses one module-level scratch page and module-level typed arrays sized for
 * the largest possible line pointer array ((8192 - 24) / 4 = 2042 entries), so every loop and
 * buffer is bounded by the page size.
 */
import type { Lsn } from '../postgres/lsn.ts';
import { StrataError, type ErrorContext } from '../util/errors.ts';

export const BLCKSZ = 8192;
export const SIZE_OF_PAGE_HEADER = 24;
export const ITEM_ID_SIZE = 4;
export const PG_PAGE_LAYOUT_VERSION = 4;

export const LP_UNUSED = 0;
export const LP_NORMAL = 1;
export const LP_REDIRECT = 2;
export const LP_DEAD = 3;

export const PD_HAS_FREE_LINES = 0x0001;
export const PD_PAGE_FULL = 0x0002;
export const PD_ALL_VISIBLE = 0x0004;

/** InvalidOffsetNumber / FirstOffsetNumber. */
export const INVALID_OFFSET_NUMBER = 0;
export const FIRST_OFFSET_NUMBER = 1;

/** 23-byte HeapTupleHeaderData, MAXALIGNed to 24, plus a line pointer: (8192 - 24) / 28 = 291. */
export const MAX_HEAP_TUPLES_PER_PAGE = 291;
/** BLCKSZ - MAXALIGN(page header + one line pointer) = 8160. */
export const MAX_HEAP_TUPLE_SIZE = 8160;
/** (8192 - 24) / (MAXALIGN(8-byte IndexTupleData) + 4) = 680. */
export const MAX_INDEX_TUPLES_PER_PAGE = 680;
/** Most line pointers a page can physically hold (bounds every scan of the array). */
const MAX_LINE_POINTERS = (BLCKSZ - SIZE_OF_PAGE_HEADER) / ITEM_ID_SIZE;

// Header field offsets.
const PD_FLAGS = 10;
const PD_LOWER = 12;
const PD_UPPER = 14;
const PD_SPECIAL = 16;
const PD_PAGESIZE_VERSION = 18;
const PD_PRUNE_XID = 20;

/** A page whose header or line pointers are inconsistent (PostgreSQL raises ERROR/PANIC here). */
export class PageCorruptError extends StrataError {
  constructor(message: string, context: ErrorContext = {}) {
    super('page_corrupt', message, context);
    this.name = 'PageCorruptError';
  }
}

export function maxAlign(n: number): number {
  return (n + 7) & ~7;
}

export function shortAlign(n: number): number {
  return (n + 1) & ~1;
}

// ---------------------------------------------------------------------------------------------
// Header.

export function pageGetLsn(page: Buffer): Lsn {
  return (BigInt(page.readUInt32LE(0)) << 32n) | BigInt(page.readUInt32LE(4));
}

export function pageSetLsn(page: Buffer, lsn: Lsn): void {
  page.writeUInt32LE(Number(lsn >> 32n), 0);
  page.writeUInt32LE(Number(lsn & 0xffff_ffffn), 4);
}

export function pageGetFlags(page: Buffer): number {
  return page.readUInt16LE(PD_FLAGS);
}
export function pageSetFlags(page: Buffer, flags: number): void {
  page.writeUInt16LE(flags & 0xffff, PD_FLAGS);
}
export function pageGetLower(page: Buffer): number {
  return page.readUInt16LE(PD_LOWER);
}
export function pageSetLower(page: Buffer, v: number): void {
  page.writeUInt16LE(v, PD_LOWER);
}
export function pageGetUpper(page: Buffer): number {
  return page.readUInt16LE(PD_UPPER);
}
export function pageSetUpper(page: Buffer, v: number): void {
  page.writeUInt16LE(v, PD_UPPER);
}
export function pageGetSpecial(page: Buffer): number {
  return page.readUInt16LE(PD_SPECIAL);
}
export function pageSetSpecial(page: Buffer, v: number): void {
  page.writeUInt16LE(v, PD_SPECIAL);
}
export function pageGetPruneXid(page: Buffer): number {
  return page.readUInt32LE(PD_PRUNE_XID);
}
export function pageSetPruneXid(page: Buffer, xid: number): void {
  page.writeUInt32LE(xid >>> 0, PD_PRUNE_XID);
}

/** A page that was never initialised (pd_upper = 0, as an all-zero page has). */
export function pageIsNew(page: Buffer): boolean {
  return pageGetUpper(page) === 0;
}

export function pageHasFreeLinePointers(page: Buffer): boolean {
  return (pageGetFlags(page) & PD_HAS_FREE_LINES) !== 0;
}
export function pageSetHasFreeLinePointers(page: Buffer): void {
  pageSetFlags(page, pageGetFlags(page) | PD_HAS_FREE_LINES);
}
export function pageClearHasFreeLinePointers(page: Buffer): void {
  pageSetFlags(page, pageGetFlags(page) & ~PD_HAS_FREE_LINES);
}
export function pageIsAllVisible(page: Buffer): boolean {
  return (pageGetFlags(page) & PD_ALL_VISIBLE) !== 0;
}
export function pageSetAllVisible(page: Buffer): void {
  pageSetFlags(page, pageGetFlags(page) | PD_ALL_VISIBLE);
}
export function pageClearAllVisible(page: Buffer): void {
  pageSetFlags(page, pageGetFlags(page) & ~PD_ALL_VISIBLE);
}

/** Transaction ids 0..2 are the special ones (invalid, bootstrap, frozen). */
function xidIsNormal(xid: number): boolean {
  return xid >= 3;
}

/** TransactionIdPrecedes: modulo-2^32 comparison for normal xids, plain comparison otherwise. */
export function xidPrecedes(a: number, b: number): boolean {
  if (!xidIsNormal(a) || !xidIsNormal(b)) return a < b;
  return ((a - b) | 0) < 0;
}

/** Records `xid` as the page's oldest prunable xid unless an older one is already recorded. */
export function pageSetPrunable(page: Buffer, xid: number): void {
  const cur = pageGetPruneXid(page);
  if (cur === 0 || xidPrecedes(xid >>> 0, cur)) pageSetPruneXid(page, xid);
}

/**
 * Zeroes the page and writes a fresh header: no items, the special area (MAXALIGNed) at the end.
 * The LSN, checksum, flags and prune xid are all zero afterwards.
 */
export function pageInit(page: Buffer, specialSizeBytes: number): void {
  const special = maxAlign(specialSizeBytes);
  if (page.length !== BLCKSZ || special + SIZE_OF_PAGE_HEADER >= BLCKSZ) {
    throw new PageCorruptError(`cannot initialise a ${page.length}-byte page with ${special} bytes of special space`);
  }
  page.fill(0);
  page.writeUInt16LE(SIZE_OF_PAGE_HEADER, PD_LOWER);
  page.writeUInt16LE(BLCKSZ - special, PD_UPPER);
  page.writeUInt16LE(BLCKSZ - special, PD_SPECIAL);
  page.writeUInt16LE(BLCKSZ | PG_PAGE_LAYOUT_VERSION, PD_PAGESIZE_VERSION);
}

/** Number of line pointers (the largest OffsetNumber in use or not). */
export function pageGetMaxOffsetNumber(page: Buffer): number {
  const lower = pageGetLower(page);
  return lower <= SIZE_OF_PAGE_HEADER ? 0 : (lower - SIZE_OF_PAGE_HEADER) >>> 2;
}

/** The special area as a view (pd_special to the end of the page). */
export function pageGetSpecialView(page: Buffer): Buffer {
  return page.subarray(pageGetSpecial(page), BLCKSZ);
}

// ---------------------------------------------------------------------------------------------
// Line pointers.

function lpPos(off: number): number {
  return SIZE_OF_PAGE_HEADER + (off - 1) * ITEM_ID_SIZE;
}

/** The raw 32-bit line pointer word of OffsetNumber `off`. */
export function itemIdGetWord(page: Buffer, off: number): number {
  return page.readUInt32LE(lpPos(off));
}
export function itemIdGetOff(page: Buffer, off: number): number {
  return page.readUInt32LE(lpPos(off)) & 0x7fff;
}
export function itemIdGetFlags(page: Buffer, off: number): number {
  return (page.readUInt32LE(lpPos(off)) >>> 15) & 3;
}
export function itemIdGetLen(page: Buffer, off: number): number {
  return page.readUInt32LE(lpPos(off)) >>> 17;
}

/** Writes line pointer `off` as (flags, lpOff, lpLen). */
export function itemIdSet(page: Buffer, off: number, flags: number, lpOff: number, lpLen: number): void {
  page.writeUInt32LE(((lpOff & 0x7fff) | ((flags & 3) << 15) | ((lpLen & 0x7fff) << 17)) >>> 0, lpPos(off));
}

/** Changes lp_off of line pointer `off`, keeping its flags and length. */
function itemIdSetOffKeep(page: Buffer, off: number, lpOff: number): void {
  const p = lpPos(off);
  const w = page.readUInt32LE(p);
  page.writeUInt32LE(((w & ~0x7fff) | (lpOff & 0x7fff)) >>> 0, p);
}

/** The item's bytes (lp_off .. lp_off + lp_len) as a view into the page. */
export function pageGetItem(page: Buffer, off: number): Buffer {
  const w = page.readUInt32LE(lpPos(off));
  const start = w & 0x7fff;
  return page.subarray(start, start + (w >>> 17));
}

// ---------------------------------------------------------------------------------------------
// Free space.

/** pd_upper - pd_lower minus room for one more line pointer; 0 when even that does not fit. */
export function pageGetFreeSpace(page: Buffer): number {
  const space = pageGetUpper(page) - pageGetLower(page);
  return space < ITEM_ID_SIZE ? 0 : space - ITEM_ID_SIZE;
}

/** pd_upper - pd_lower, never negative. */
export function pageGetExactFreeSpace(page: Buffer): number {
  const space = pageGetUpper(page) - pageGetLower(page);
  return space < 0 ? 0 : space;
}

/**
 * Free space of a heap page: as pageGetFreeSpace, but 0 when the line pointer array already has
 * MAX_HEAP_TUPLES_PER_PAGE entries and none is reusable (the PD_HAS_FREE_LINES hint is trusted when
 * clear, and double-checked when set).
 */
export function pageGetHeapFreeSpace(page: Buffer): number {
  let space = pageGetFreeSpace(page);
  if (space > 0) {
    const nline = pageGetMaxOffsetNumber(page);
    if (nline >= MAX_HEAP_TUPLES_PER_PAGE) {
      if (pageHasFreeLinePointers(page)) {
        let found = false;
        for (let off = 1; off <= nline; off++) {
          if (itemIdGetFlags(page, off) === LP_UNUSED) {
            found = true;
            break;
          }
        }
        if (!found) space = 0;
      } else {
        space = 0;
      }
    }
  }
  return space;
}

// ---------------------------------------------------------------------------------------------
// Adding items.

export interface PageAddItemOptions {
  /** Reuse the given (unused) slot instead of shifting later line pointers up (PAI_OVERWRITE). */
  overwrite: boolean;
  /** Refuse offsets above MAX_HEAP_TUPLES_PER_PAGE (PAI_IS_HEAP). */
  isHeap: boolean;
}

function corruptPointers(page: Buffer): PageCorruptError {
  const lower = pageGetLower(page);
  const upper = pageGetUpper(page);
  const special = pageGetSpecial(page);
  return new PageCorruptError(`corrupted page pointers: lower = ${lower}, upper = ${upper}, special = ${special}`, { lower, upper, special });
}

/** The header checks PostgreSQL makes before reshuffling a page (special must also be MAXALIGNed). */
function checkPointers(page: Buffer, requireAlignedSpecial: boolean): void {
  const lower = pageGetLower(page);
  const upper = pageGetUpper(page);
  const special = pageGetSpecial(page);
  if (lower < SIZE_OF_PAGE_HEADER || lower > upper || upper > special || special > BLCKSZ ||
    (requireAlignedSpecial && (special & 7) !== 0)) {
    throw corruptPointers(page);
  }
}

/**
 * Adds `item` to the page (PageAddItemExtended). `off` = 0 picks the first reusable line pointer
 * (when the PD_HAS_FREE_LINES hint says there is one; a wrong hint is cleared) or appends a new
 * one. A given `off` inside the array either takes that unused slot (overwrite) or shifts the line
 * pointers from `off` on up by one (no overwrite). The item is copied just below pd_upper, its
 * start MAXALIGNed. Returns the offset used, or 0 when refused: slot in use (overwrite), offset
 * beyond the first free position, over MAX_HEAP_TUPLES_PER_PAGE (isHeap), or not enough room.
 */
export function pageAddItem(page: Buffer, item: Uint8Array, off: number, opts: PageAddItemOptions): number {
  const lowerNow = pageGetLower(page);
  const upperNow = pageGetUpper(page);
  const special = pageGetSpecial(page);
  if (lowerNow < SIZE_OF_PAGE_HEADER || lowerNow > upperNow || upperNow > special || special > BLCKSZ) {
    throw corruptPointers(page);
  }
  const size = item.length;
  const limit = pageGetMaxOffsetNumber(page) + 1;
  let needShuffle = false;
  let offset = off;
  if (offset !== INVALID_OFFSET_NUMBER) {
    if (opts.overwrite) {
      if (offset < limit) {
        const w = itemIdGetWord(page, offset);
        // In use (flags) or still holding storage (length): refuse.
        if (((w >>> 15) & 3) !== LP_UNUSED || (w >>> 17) !== 0) return INVALID_OFFSET_NUMBER;
      }
    } else if (offset < limit) {
      needShuffle = true;
    }
  } else if (pageHasFreeLinePointers(page)) {
    for (offset = FIRST_OFFSET_NUMBER; offset < limit; offset++) {
      const w = itemIdGetWord(page, offset);
      if (((w >>> 15) & 3) === LP_UNUSED && (w >>> 17) === 0) break;
    }
    if (offset >= limit) pageClearHasFreeLinePointers(page); // the hint was wrong
  } else {
    offset = limit;
  }
  if (offset > limit) return INVALID_OFFSET_NUMBER;
  if (opts.isHeap && offset > MAX_HEAP_TUPLES_PER_PAGE) return INVALID_OFFSET_NUMBER;

  const lower = offset === limit || needShuffle ? lowerNow + ITEM_ID_SIZE : lowerNow;
  const upper = upperNow - maxAlign(size);
  if (lower > upper) return INVALID_OFFSET_NUMBER;

  if (needShuffle) {
    const from = lpPos(offset);
    page.copyWithin(from + ITEM_ID_SIZE, from, from + (limit - offset) * ITEM_ID_SIZE);
  }
  itemIdSet(page, offset, LP_NORMAL, upper, size);
  page.set(item, upper);
  pageSetLower(page, lower);
  pageSetUpper(page, upper);
  return offset;
}

// ---------------------------------------------------------------------------------------------
// Compaction.

// Scratch state for compaction, shared by all calls (redo is single-threaded per process).
const scratchPage = Buffer.alloc(BLCKSZ);
const cIndex = new Uint16Array(MAX_LINE_POINTERS); // line pointer index (OffsetNumber - 1) the item will have
const cItemOff = new Int32Array(MAX_LINE_POINTERS); // current offset of the item's bytes
const cAlignedLen = new Int32Array(MAX_LINE_POINTERS); // MAXALIGN(lp_len)
const keptWords = new Uint32Array(MAX_LINE_POINTERS);

/**
 * Packs the `n` collected items down from pd_special in collection order (line pointer order),
 * moving each item's MAXALIGNed byte range and updating its lp_off, then sets pd_upper. When the
 * items are already in descending offset order (`presorted`) each one only moves towards the end
 * of the page and can be moved in place; otherwise the tuple area is first copied to scratch.
 */
function compactify(page: Buffer, n: number, presorted: boolean): void {
  let upper = pageGetSpecial(page);
  if (presorted) {
    for (let i = 0; i < n; i++) {
      const len = cAlignedLen[i]!;
      const from = cItemOff[i]!;
      upper -= len;
      if (from !== upper) page.copyWithin(upper, from, from + len);
      itemIdSetOffKeep(page, cIndex[i]! + 1, upper);
    }
  } else {
    const start = pageGetUpper(page);
    page.copy(scratchPage, start, start, upper);
    for (let i = 0; i < n; i++) {
      const len = cAlignedLen[i]!;
      const from = cItemOff[i]!;
      upper -= len;
      if (from !== upper) scratchPage.copy(page, upper, from, from + len);
      itemIdSetOffKeep(page, cIndex[i]! + 1, upper);
    }
  }
  pageSetUpper(page, upper);
}

/**
 * PageRepairFragmentation (heap pages, after pruning): unused line pointers are zeroed, the items
 * with storage are packed at the end of the page in line pointer order, trailing unused line
 * pointers are cut off the array, and PD_HAS_FREE_LINES says whether unused ones remain.
 */
export function pageRepairFragmentation(page: Buffer): void {
  checkPointers(page, true);
  const lower = pageGetLower(page);
  const upper = pageGetUpper(page);
  const special = pageGetSpecial(page);
  const nline = pageGetMaxOffsetNumber(page);
  let n = 0;
  let nunused = 0;
  let totalLen = 0;
  let finalUsed = 0;
  let lastOff = special;
  let presorted = true;
  for (let i = 1; i <= nline; i++) {
    const w = itemIdGetWord(page, i);
    if (((w >>> 15) & 3) !== LP_UNUSED) {
      const len = w >>> 17;
      if (len !== 0) {
        const itemOff = w & 0x7fff;
        if (lastOff > itemOff) lastOff = itemOff;
        else presorted = false;
        if (itemOff < upper || itemOff >= special) {
          throw new PageCorruptError(`corrupted line pointer: ${itemOff}`, { offnum: i, itemOff, upper, special });
        }
        cIndex[n] = i - 1;
        cItemOff[n] = itemOff;
        const al = maxAlign(len);
        cAlignedLen[n] = al;
        totalLen += al;
        n++;
      }
      finalUsed = i;
    } else {
      itemIdSet(page, i, LP_UNUSED, 0, 0);
      nunused++;
    }
  }
  if (n === 0) {
    pageSetUpper(page, special);
  } else {
    if (totalLen > special - lower) {
      throw new PageCorruptError(`corrupted item lengths: total ${totalLen}, available space ${special - lower}`, { totalLen });
    }
    compactify(page, n, presorted);
  }
  if (finalUsed !== nline) {
    const trailing = nline - finalUsed;
    nunused -= trailing;
    pageSetLower(page, pageGetLower(page) - ITEM_ID_SIZE * trailing);
  }
  if (nunused > 0) pageSetHasFreeLinePointers(page);
  else pageClearHasFreeLinePointers(page);
}

/**
 * PageTruncateLinePointerArray (heap pages, VACUUM's second pass): drops the run of unused line
 * pointers at the end of the array, but never the first one (a page keeps at least one line
 * pointer), and sets PD_HAS_FREE_LINES exactly when an unused one remains before the cut.
 */
export function pageTruncateLinePointerArray(page: Buffer): void {
  let countDone = false;
  let setHint = false;
  let trailing = 0;
  for (let i = pageGetMaxOffsetNumber(page); i >= FIRST_OFFSET_NUMBER; i--) {
    const used = itemIdGetFlags(page, i) !== LP_UNUSED;
    if (!countDone && i > FIRST_OFFSET_NUMBER) {
      if (!used) trailing++;
      else countDone = true;
    } else if (!used) {
      setHint = true;
      break;
    }
  }
  if (trailing > 0) pageSetLower(page, pageGetLower(page) - ITEM_ID_SIZE * trailing);
  if (setHint) pageSetHasFreeLinePointers(page);
  else pageClearHasFreeLinePointers(page);
}

// ---------------------------------------------------------------------------------------------
// Index page deletes and overwrite.

/** Validates offnum and its line pointer for the index delete/overwrite family; returns the word. */
function checkIndexItem(page: Buffer, off: number): { itemOff: number; len: number } {
  checkPointers(page, true);
  const nline = pageGetMaxOffsetNumber(page);
  if (!Number.isInteger(off) || off <= 0 || off > nline) {
    throw new PageCorruptError(`invalid index offnum: ${off}`, { offnum: off, maxOffset: nline });
  }
  const w = itemIdGetWord(page, off);
  const itemOff = w & 0x7fff;
  const len = w >>> 17;
  if (itemOff < pageGetUpper(page) || itemOff + len > pageGetSpecial(page) || (itemOff & 7) !== 0) {
    throw new PageCorruptError(`corrupted line pointer: offset = ${itemOff}, size = ${len}`, { offnum: off, itemOff, len });
  }
  return { itemOff, len };
}

/**
 * PageIndexTupleDelete: removes item `off` and its line pointer (later line pointers shift down
 * by one), closes the gap in the tuple area by moving the data below it up, and adjusts the
 * lp_off of every item that was below it.
 */
export function pageIndexTupleDelete(page: Buffer, off: number): void {
  const { itemOff, len } = checkIndexItem(page, off);
  const size = maxAlign(len);
  const lower = pageGetLower(page);
  const upper = pageGetUpper(page);
  const after = lpPos(off + 1);
  if (lower > after) page.copyWithin(lpPos(off), after, lower);
  if (itemOff > upper) page.copyWithin(upper + size, upper, itemOff);
  pageSetUpper(page, upper + size);
  pageSetLower(page, lower - ITEM_ID_SIZE);
  // PageIsEmpty: no line pointers left.
  const nline = pageGetMaxOffsetNumber(page);
  for (let i = 1; i <= nline; i++) {
    const w = itemIdGetWord(page, i);
    if ((w & 0x7fff) <= itemOff) itemIdSetOffKeep(page, i, (w & 0x7fff) + size);
  }
}

/**
 * PageIndexMultiDelete: removes the items at `offs` (ascending OffsetNumbers). Two or fewer are
 * deleted one by one from the last; more are removed by rebuilding the line pointer array from the
 * survivors and compacting their tuples down from pd_special.
 */
export function pageIndexMultiDelete(page: Buffer, offs: readonly number[]): void {
  const nitems = offs.length;
  if (nitems > MAX_INDEX_TUPLES_PER_PAGE) {
    throw new PageCorruptError(`cannot delete ${nitems} items from an index page (at most ${MAX_INDEX_TUPLES_PER_PAGE})`);
  }
  if (nitems <= 2) {
    for (let i = nitems - 1; i >= 0; i--) pageIndexTupleDelete(page, offs[i]!);
    return;
  }
  checkPointers(page, true);
  const lower = pageGetLower(page);
  const upper = pageGetUpper(page);
  const special = pageGetSpecial(page);
  const nline = pageGetMaxOffsetNumber(page);
  let n = 0;
  let next = 0;
  let totalLen = 0;
  let lastOff = special;
  let presorted = true;
  for (let off = 1; off <= nline; off++) {
    const w = itemIdGetWord(page, off);
    const itemOff = w & 0x7fff;
    const len = w >>> 17;
    if (itemOff < upper || itemOff + len > special || (itemOff & 7) !== 0) {
      throw new PageCorruptError(`corrupted line pointer: offset = ${itemOff}, size = ${len}`, { offnum: off, itemOff, len });
    }
    if (next < nitems && off === offs[next]) {
      next++;
    } else {
      cIndex[n] = n;
      cItemOff[n] = itemOff;
      if (lastOff > itemOff) lastOff = itemOff;
      else presorted = false;
      const al = maxAlign(len);
      cAlignedLen[n] = al;
      totalLen += al;
      keptWords[n] = w;
      n++;
    }
  }
  if (next !== nitems) {
    throw new PageCorruptError(`incorrect index offsets supplied (matched ${next} of ${nitems}; they must be ascending and within 1..${nline})`);
  }
  if (totalLen > special - lower) {
    throw new PageCorruptError(`corrupted item lengths: total ${totalLen}, available space ${special - lower}`, { totalLen });
  }
  for (let i = 0; i < n; i++) page.writeUInt32LE(keptWords[i]!, lpPos(i + 1));
  pageSetLower(page, SIZE_OF_PAGE_HEADER + n * ITEM_ID_SIZE);
  if (n > 0) compactify(page, n, presorted);
  else pageSetUpper(page, special);
}

/**
 * PageIndexTupleDeleteNoCompact: removes item `off`'s storage but keeps the line pointer (as
 * unused) unless it is the last one, which is dropped; no other line pointer moves.
 */
export function pageIndexTupleDeleteNoCompact(page: Buffer, off: number): void {
  const { itemOff, len } = checkIndexItem(page, off);
  const size = maxAlign(len);
  let nline = pageGetMaxOffsetNumber(page);
  if (off < nline) {
    itemIdSet(page, off, LP_UNUSED, 0, 0);
  } else {
    pageSetLower(page, pageGetLower(page) - ITEM_ID_SIZE);
    nline--;
  }
  const upper = pageGetUpper(page);
  if (itemOff > upper) page.copyWithin(upper + size, upper, itemOff);
  pageSetUpper(page, upper + size);
  if (pageGetLower(page) > SIZE_OF_PAGE_HEADER) {
    for (let i = 1; i <= nline; i++) {
      const w = itemIdGetWord(page, i);
      if ((w >>> 17) !== 0 && (w & 0x7fff) <= itemOff) itemIdSetOffKeep(page, i, (w & 0x7fff) + size);
    }
  }
}

/**
 * PageIndexTupleOverwrite: replaces item `off` with `item` at the same place in tuple order,
 * shifting the tuple data below it by the change in MAXALIGNed size; the line pointer keeps its
 * flags. Returns false (page unchanged) when the larger item does not fit.
 */
export function pageIndexTupleOverwrite(page: Buffer, off: number, item: Uint8Array): boolean {
  const { itemOff } = checkIndexItem(page, off);
  const oldSize = maxAlign(itemIdGetLen(page, off));
  const newSize = maxAlign(item.length);
  const upper = pageGetUpper(page);
  if (newSize > oldSize + (upper - pageGetLower(page))) return false;
  const diff = oldSize - newSize;
  if (diff !== 0) {
    page.copyWithin(upper + diff, upper, itemOff);
    pageSetUpper(page, upper + diff);
    const nline = pageGetMaxOffsetNumber(page);
    for (let i = 1; i <= nline; i++) {
      const w = itemIdGetWord(page, i);
      if ((w >>> 17) !== 0 && (w & 0x7fff) <= itemOff) itemIdSetOffKeep(page, i, (w & 0x7fff) + diff);
    }
  }
  const flags = itemIdGetFlags(page, off);
  itemIdSet(page, off, flags, itemOff + diff, item.length);
  page.set(item, itemOff + diff);
  return true;
}

// ---------------------------------------------------------------------------------------------
// Visibility map pages. A VM page is a standard page with no special area; its map starts right
// after the 24-byte header and holds 2 bits per heap block (bit 0 all-visible, bit 1 all-frozen),
// four heap blocks per byte, low bits first.

export const VISIBILITYMAP_ALL_VISIBLE = 0x01;
export const VISIBILITYMAP_ALL_FROZEN = 0x02;
export const VISIBILITYMAP_VALID_BITS = 0x03;
/** Offset of the map within a VM page: MAXALIGN(page header). */
export const VM_MAP_OFFSET = maxAlign(SIZE_OF_PAGE_HEADER);
/** Map bytes per VM page and heap blocks covered by one VM page (8168 * 4 = 32672). */
export const VM_MAP_SIZE_BYTES = BLCKSZ - VM_MAP_OFFSET;
export const VM_HEAPBLOCKS_PER_PAGE = VM_MAP_SIZE_BYTES * 4;

/** The VM block that holds the bits of heap block `heapBlk`. */
export function vmBlockOfHeapBlock(heapBlk: number): number {
  return Math.floor(heapBlk / VM_HEAPBLOCKS_PER_PAGE);
}

/** The two VM bits of heap block `heapBlk` on its VM page. */
export function vmGetBits(vmPage: Buffer, heapBlk: number): number {
  const inPage = heapBlk % VM_HEAPBLOCKS_PER_PAGE;
  return (vmPage[VM_MAP_OFFSET + (inPage >>> 2)]! >>> ((inPage & 3) * 2)) & VISIBILITYMAP_VALID_BITS;
}

/**
 * Sets `flags` for heap block `heapBlk` on its VM page (visibilitymap_set's page change). Returns
 * true when `flags` differed from the current bits — the case in which PostgreSQL dirties the page
 * and stamps its LSN (even if the OR changes nothing, e.g. setting ALL_VISIBLE when both are set).
 */
export function vmSetBits(vmPage: Buffer, heapBlk: number, flags: number): boolean {
  const inPage = heapBlk % VM_HEAPBLOCKS_PER_PAGE;
  const at = VM_MAP_OFFSET + (inPage >>> 2);
  const shift = (inPage & 3) * 2;
  const cur = (vmPage[at]! >>> shift) & VISIBILITYMAP_VALID_BITS;
  if (flags === cur) return false;
  vmPage[at] = vmPage[at]! | ((flags & VISIBILITYMAP_VALID_BITS) << shift);
  return true;
}

/** Clears `flags` for heap block `heapBlk` (visibilitymap_clear); true when a bit was set. */
export function vmClearBits(vmPage: Buffer, heapBlk: number, flags: number): boolean {
  const inPage = heapBlk % VM_HEAPBLOCKS_PER_PAGE;
  const at = VM_MAP_OFFSET + (inPage >>> 2);
  const mask = (flags & VISIBILITYMAP_VALID_BITS) << ((inPage & 3) * 2);
  if ((vmPage[at]! & mask) === 0) return false;
  vmPage[at] = vmPage[at]! & ~mask;
  return true;
}
