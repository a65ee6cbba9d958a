/**
 * The base of the bufpage toolkit: page header fields, line pointer words, free-space accounting
 * and PageAddItem — everything the other page operations build on.
 *
 * Why a separate leaf module: the compaction and visibility-map modules use these constants while
 * they load (scratch arrays sized from the line pointer limit, the VM map offset). If they imported
 * them from src/redo/page.ts, which re-exports them in turn, the import cycle would let a sibling
 * run before the constants exist. So they import from here, and page.ts only re-exports.
 *
 * A few helpers are exported for those siblings only (MAX_LINE_POINTERS, lpPos, itemIdSetOffKeep,
 * checkPointers) and are not part of page.ts's public surface. The layout facts and the exactness
 * rules that every function here follows are in the comment of src/redo/page.ts.
 */
import type { Lsn } from '../../postgres/lsn.ts';
import { StrataError, type ErrorContext } from '../../util/errors.ts';

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
export const MAX_LINE_POINTERS = (BLCKSZ - SIZE_OF_PAGE_HEADER) / ITEM_ID_SIZE;

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

export function lpPos(off: number): number {
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
export function itemIdSetOffKeep(page: Buffer, off: number, lpOff: number): void {
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
export function checkPointers(page: Buffer, requireAlignedSpecial: boolean): void {
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
