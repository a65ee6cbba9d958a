/**
 * The page operations that move existing items rather than add one: PageRepairFragmentation and
 * PageTruncateLinePointerArray (heap pruning and vacuum), and the index-page family — single and
 * multi delete, delete without compaction, and in-place overwrite.
 *
 * They belong together because they share one piece of state: the compaction scratch (a spare page
 * and per-line-pointer typed arrays sized for the largest possible line pointer array). It lives at
 * module level so that no call allocates, which is safe because redo runs one page at a time.
 * Importers use src/redo/page.ts, which re-exports everything public from here.
 */
import {
  BLCKSZ, FIRST_OFFSET_NUMBER, ITEM_ID_SIZE, LP_UNUSED, MAX_INDEX_TUPLES_PER_PAGE, MAX_LINE_POINTERS, PageCorruptError,
  SIZE_OF_PAGE_HEADER, checkPointers, itemIdGetFlags, itemIdGetLen, itemIdGetWord, itemIdSet, itemIdSetOffKeep, lpPos,
  maxAlign, pageClearHasFreeLinePointers, pageGetLower, pageGetMaxOffsetNumber, pageGetSpecial, pageGetUpper,
  pageSetHasFreeLinePointers, pageSetLower, pageSetUpper,
} from './core.ts';

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
