/**
 * src/redo/page.ts on hand-built pages.
 *
 * Every expected page is written out here byte by byte from PostgreSQL 15's bufpage.c rules
 * (line pointer word = lp_off | lp_flags << 15 | lp_len << 17; items placed MAXALIGNed below
 * pd_upper; compaction packs items in line pointer order down from pd_special; ...), with the
 * positions worked out by hand in the comments — never computed with the code under test. Items
 * are filled with distinct byte patterns, their MAXALIGN padding included, so a tuple that lands
 * in the wrong place or loses its padding bytes shows up.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  LP_DEAD, LP_NORMAL, LP_REDIRECT, PD_ALL_VISIBLE, PD_HAS_FREE_LINES, PageCorruptError, itemIdGetFlags, itemIdGetLen,
  itemIdGetOff, itemIdSet, maxAlign, pageAddItem, pageGetFreeSpace, pageGetHeapFreeSpace, pageGetItem, pageGetLsn,
  pageGetMaxOffsetNumber, pageGetSpecialView, pageIndexMultiDelete, pageIndexTupleDelete, pageIndexTupleDeleteNoCompact,
  pageIndexTupleOverwrite, pageInit, pageIsNew, pageRepairFragmentation, pageSetLsn, pageSetPrunable,
  pageTruncateLinePointerArray, vmBlockOfHeapBlock, vmClearBits, vmGetBits, vmSetBits,
} from '../../src/redo/page.ts';

// ---------------------------------------------------------------------------------------------
// Independent page builders.

function header(page: Buffer, lower: number, upper: number, special: number, flags = 0): void {
  page.writeUInt16LE(flags, 10);
  page.writeUInt16LE(lower, 12);
  page.writeUInt16LE(upper, 14);
  page.writeUInt16LE(special, 16);
  page.writeUInt16LE(0x2004, 18);
}

function word(off: number, flags: number, len: number): number {
  return (off + flags * 0x8000 + len * 0x20000) >>> 0;
}

function setLp(page: Buffer, n: number, off: number, flags: number, len: number): void {
  page.writeUInt32LE(word(off, flags, len), 24 + 4 * (n - 1));
}

function lp(page: Buffer, n: number): [number, number, number] {
  const w = page.readUInt32LE(24 + 4 * (n - 1));
  return [w & 0x7fff, (w >>> 15) & 3, w >>> 17];
}

function lower(page: Buffer): number {
  return page.readUInt16LE(12);
}
function upper(page: Buffer): number {
  return page.readUInt16LE(14);
}
function flags(page: Buffer): number {
  return page.readUInt16LE(10);
}

/** Fills [from, to) with a pattern that starts at `seed` and counts up (mod 256). */
function fill(page: Buffer, from: number, to: number, seed: number): void {
  for (let i = from; i < to; i++) page[i] = (seed + i - from) & 0xff;
}

function pattern(len: number, seed: number): Buffer {
  const b = Buffer.alloc(len);
  fill(b, 0, len, seed);
  return b;
}

function catchError(fn: () => unknown): unknown {
  try {
    fn();
  } catch (err) {
    return err;
  }
  assert.fail('expected an error');
}

const HEAP = { overwrite: true, isHeap: true } as const;
const INDEX = { overwrite: false, isHeap: false } as const;

// ---------------------------------------------------------------------------------------------

test('pageInit writes the header of an empty page and zeroes the rest; special size is MAXALIGNed', () => {
  const page = Buffer.alloc(8192, 0x5a);
  pageInit(page, 10);
  const expected = Buffer.alloc(8192);
  header(expected, 24, 8176, 8176); // 8192 - MAXALIGN(10) = 8192 - 16
  assert.deepEqual(page, expected);
  assert.equal(pageGetMaxOffsetNumber(page), 0);
  assert.equal(pageGetSpecialView(page).length, 16);
  pageInit(page, 0);
  header(expected, 24, 8192, 8192);
  assert.deepEqual(page, expected);
  assert.equal(pageIsNew(Buffer.alloc(8192)), true);
  assert.equal(pageIsNew(page), false);
  assert.throws(() => pageInit(Buffer.alloc(8192), 8168), PageCorruptError);
});

test('page LSN is two little-endian u32 halves, high first', () => {
  const page = Buffer.alloc(8192);
  pageSetLsn(page, 0x1_2345_6789n);
  assert.deepEqual([...page.subarray(0, 8)], [0x01, 0, 0, 0, 0x89, 0x67, 0x45, 0x23]);
  assert.equal(pageGetLsn(page), 0x1_2345_6789n);
});

test('line pointer words pack lp_off, lp_flags, lp_len from the low bit', () => {
  const page = Buffer.alloc(8192);
  header(page, 32, 8192, 8192);
  itemIdSet(page, 1, LP_REDIRECT, 7, 0);
  itemIdSet(page, 2, LP_NORMAL, 8152, 37);
  assert.equal(page.readUInt32LE(24), 0x10007);
  assert.equal(page.readUInt32LE(28), (8152 | 1 << 15 | 37 << 17) >>> 0);
  assert.deepEqual([itemIdGetOff(page, 2), itemIdGetFlags(page, 2), itemIdGetLen(page, 2)], [8152, LP_NORMAL, 37]);
  assert.equal(pageGetMaxOffsetNumber(page), 2);
});

test('pageAddItem places items MAXALIGNed below pd_upper and appends line pointers', () => {
  const page = Buffer.alloc(8192);
  header(page, 24, 8192, 8192);
  const a = pattern(30, 0xa0);
  assert.equal(pageAddItem(page, a, 0, HEAP), 1);
  // 30 bytes round up to 32: upper 8192 - 32 = 8160; lower 24 + 4.
  assert.deepEqual(lp(page, 1), [8160, LP_NORMAL, 30]);
  assert.equal(lower(page), 28);
  assert.equal(upper(page), 8160);
  assert.deepEqual(page.subarray(8160, 8190), a);
  assert.deepEqual([...page.subarray(8190, 8192)], [0, 0]); // padding is not written
  assert.deepEqual(pageGetItem(page, 1), a);

  assert.equal(pageAddItem(page, pattern(5, 0xb0), 2, HEAP), 2);
  assert.deepEqual(lp(page, 2), [8152, LP_NORMAL, 5]);
  assert.equal(upper(page), 8152);

  // Index-style insert in front: line pointers 1..2 move to 2..3.
  assert.equal(pageAddItem(page, pattern(8, 0xc0), 1, INDEX), 1);
  assert.deepEqual(lp(page, 1), [8144, LP_NORMAL, 8]);
  assert.deepEqual(lp(page, 2), [8160, LP_NORMAL, 30]);
  assert.deepEqual(lp(page, 3), [8152, LP_NORMAL, 5]);
  assert.equal(lower(page), 36);
  assert.equal(upper(page), 8144);
});

test('pageAddItem: a page filled exactly, and one byte too many', () => {
  const page = Buffer.alloc(8192);
  header(page, 36, 8144, 8192);
  // Room: 8144 - 36 = 8108, minus 4 for the line pointer = 8104 = MAXALIGN(8104).
  assert.equal(pageGetFreeSpace(page), 8104);
  const before = Buffer.from(page);
  assert.equal(pageAddItem(page, pattern(8105, 1), 0, INDEX), 0); // 8105 rounds up to 8112
  assert.deepEqual(page, before);
  assert.equal(pageAddItem(page, pattern(8104, 1), 0, INDEX), 4);
  assert.equal(lower(page), 40);
  assert.equal(upper(page), 40);
  assert.equal(pageGetFreeSpace(page), 0);
  assert.equal(pageAddItem(page, Buffer.alloc(0), 0, INDEX), 0); // even an empty item needs a line pointer
});

test('pageAddItem with overwrite reuses only truly unused slots; refusals leave the page alone', () => {
  const page = Buffer.alloc(8192);
  header(page, 36, 8128, 8192);
  setLp(page, 1, 8160, LP_NORMAL, 32);
  setLp(page, 2, 0, 0, 0);
  setLp(page, 3, 8128, LP_NORMAL, 32);
  const before = Buffer.from(page);
  assert.equal(pageAddItem(page, pattern(8, 9), 1, HEAP), 0); // in use
  assert.equal(pageAddItem(page, pattern(8, 9), 5, HEAP), 0); // beyond maxoff + 1
  setLp(page, 2, 0, 0, 4); // "unused" but with a length: refused as well
  assert.equal(pageAddItem(page, pattern(8, 9), 2, HEAP), 0);
  setLp(page, 2, 0, 0, 0);
  assert.deepEqual(page, before);
  assert.equal(pageAddItem(page, pattern(8, 9), 2, HEAP), 2);
  assert.equal(lower(page), 36); // no new line pointer
  assert.equal(upper(page), 8120);
  assert.deepEqual(lp(page, 2), [8120, LP_NORMAL, 8]);
  assert.equal(pageAddItem(page, pattern(8, 9), 4, HEAP), 4); // maxoff + 1: appended
  assert.equal(lower(page), 40);
});

test('pageAddItem without an offset: the PD_HAS_FREE_LINES hint decides whether slots are searched', () => {
  const build = (hint: boolean, withUnused: boolean): Buffer => {
    const page = Buffer.alloc(8192);
    header(page, 36, 8128, 8192, hint ? PD_HAS_FREE_LINES : 0);
    setLp(page, 1, 8160, LP_NORMAL, 32);
    setLp(page, 2, withUnused ? 0 : 0, withUnused ? 0 : LP_DEAD, 0);
    setLp(page, 3, 8128, LP_NORMAL, 32);
    return page;
  };
  let page = build(true, true);
  assert.equal(pageAddItem(page, pattern(8, 1), 0, HEAP), 2);
  assert.equal(flags(page), PD_HAS_FREE_LINES); // a used hint is not cleared
  page = build(false, true);
  assert.equal(pageAddItem(page, pattern(8, 1), 0, HEAP), 4); // hint clear: trusted, append
  page = build(true, false);
  assert.equal(pageAddItem(page, pattern(8, 1), 0, HEAP), 4); // hint wrong: cleared, append
  assert.equal(flags(page), 0);
});

test('heap pages stop at MaxHeapTuplesPerPage = 291 line pointers', () => {
  const page = Buffer.alloc(8192);
  header(page, 24 + 291 * 4, 8192, 8192);
  for (let i = 1; i <= 291; i++) setLp(page, i, 0, LP_DEAD, 0);
  // 8192 - 1188 - 4 = 7000 bytes, but no line pointer may be added.
  assert.equal(pageGetFreeSpace(page), 7000);
  assert.equal(pageGetHeapFreeSpace(page), 0);
  assert.equal(pageAddItem(page, pattern(24, 1), 292, HEAP), 0);
  assert.equal(pageAddItem(page, pattern(24, 1), 0, HEAP), 0);
  page.writeUInt16LE(PD_HAS_FREE_LINES, 10);
  assert.equal(pageGetHeapFreeSpace(page), 0); // hint set, but no unused line pointer
  setLp(page, 5, 0, 0, 0);
  assert.equal(pageGetHeapFreeSpace(page), 7000);
  assert.equal(pageAddItem(page, pattern(24, 1), 0, HEAP), 5);
  page.writeUInt16LE(0, 10);
  const idx = Buffer.from(page);
  assert.equal(pageAddItem(idx, pattern(24, 1), 292, INDEX), 292); // index pages have no such limit
  header(page, 24 + 290 * 4, 8192, 8192);
  assert.equal(pageGetHeapFreeSpace(page), 8192 - 1184 - 4);
});

/** Five items: (lp, offset, length) = (1, 8152, 40) (2, 8104, 44) (3, 8064, 40) (4, 8040, 20) (5, 8000, 33). */
function fivePage(): Buffer {
  const page = Buffer.alloc(8192);
  header(page, 44, 8000, 8192);
  const items: [number, number][] = [[8152, 40], [8104, 44], [8064, 40], [8040, 20], [8000, 33]];
  items.forEach(([off, len], i) => {
    setLp(page, i + 1, off, LP_NORMAL, len);
    fill(page, off, off + maxAlign(len), 0x10 * (i + 1)); // padding bytes included
  });
  return page;
}

test('pageRepairFragmentation compacts in line pointer order, keeps redirect/dead, hints free lines', () => {
  const page = fivePage();
  const orig = Buffer.from(page);
  setLp(page, 2, 0, 0, 0); // now unused
  setLp(page, 1, 3, LP_REDIRECT, 0);
  setLp(page, 4, 0, LP_DEAD, 0);
  pageRepairFragmentation(page);
  // Survivors with storage: lp3 (40) -> 8192 - 40 = 8152, lp5 (aligned 40) -> 8112.
  assert.deepEqual(lp(page, 1), [3, LP_REDIRECT, 0]);
  assert.deepEqual(lp(page, 2), [0, 0, 0]);
  assert.deepEqual(lp(page, 3), [8152, LP_NORMAL, 40]);
  assert.deepEqual(lp(page, 4), [0, LP_DEAD, 0]);
  assert.deepEqual(lp(page, 5), [8112, LP_NORMAL, 33]);
  assert.equal(upper(page), 8112);
  assert.equal(lower(page), 44);
  assert.equal(flags(page) & PD_HAS_FREE_LINES, PD_HAS_FREE_LINES);
  assert.deepEqual(page.subarray(8152, 8192), orig.subarray(8064, 8104));
  assert.deepEqual(page.subarray(8112, 8152), orig.subarray(8000, 8040)); // with lp5's padding
});

test('pageRepairFragmentation truncates trailing unused line pointers (zeroed first) and clears the hint', () => {
  const page = fivePage();
  const orig = Buffer.from(page);
  page.writeUInt16LE(PD_HAS_FREE_LINES | PD_ALL_VISIBLE, 10);
  setLp(page, 1, 3, LP_REDIRECT, 0);
  setLp(page, 2, 0, LP_DEAD, 0);
  setLp(page, 4, 1234, 0, 0); // unused with a stale offset
  setLp(page, 5, 0, 0, 0);
  pageRepairFragmentation(page);
  assert.equal(lower(page), 36); // 5 - 2 trailing = 3 line pointers
  assert.equal(upper(page), 8152);
  assert.deepEqual(lp(page, 3), [8152, LP_NORMAL, 40]);
  assert.equal(page.readUInt32LE(24 + 12), 0); // old lp4 word zeroed before the cut
  assert.equal(flags(page), PD_ALL_VISIBLE); // no unused line pointer left below the cut
  assert.deepEqual(page.subarray(8152, 8192), orig.subarray(8064, 8104));
});

test('pageRepairFragmentation on tuples out of offset order (scratch copy path)', () => {
  const page = Buffer.alloc(8192);
  header(page, 36, 8000, 8192);
  setLp(page, 1, 8000, LP_NORMAL, 40);
  setLp(page, 2, 8152, LP_NORMAL, 40);
  setLp(page, 3, 8064, LP_NORMAL, 21);
  fill(page, 8000, 8040, 0x11);
  fill(page, 8152, 8192, 0x22);
  fill(page, 8064, 8088, 0x33);
  const orig = Buffer.from(page);
  pageRepairFragmentation(page);
  // Order by line pointer: lp1 -> 8152, lp2 -> 8112, lp3 (aligned 24) -> 8088.
  assert.deepEqual(lp(page, 1), [8152, LP_NORMAL, 40]);
  assert.deepEqual(lp(page, 2), [8112, LP_NORMAL, 40]);
  assert.deepEqual(lp(page, 3), [8088, LP_NORMAL, 21]);
  assert.equal(upper(page), 8088);
  assert.deepEqual(page.subarray(8152, 8192), orig.subarray(8000, 8040));
  assert.deepEqual(page.subarray(8112, 8152), orig.subarray(8152, 8192));
  assert.deepEqual(page.subarray(8088, 8112), orig.subarray(8064, 8088));
  assert.equal(flags(page), 0);
});

test('pageRepairFragmentation of a page with nothing left, and of corrupted pages', () => {
  const page = fivePage();
  for (let i = 1; i <= 5; i++) setLp(page, i, 0, 0, 0);
  page.writeUInt16LE(PD_HAS_FREE_LINES, 10);
  pageRepairFragmentation(page);
  assert.equal(lower(page), 24);
  assert.equal(upper(page), 8192);
  assert.equal(flags(page), 0);

  const bad = fivePage();
  bad.writeUInt16LE(8200, 12); // lower > upper
  assert.ok(catchError(() => pageRepairFragmentation(bad)) instanceof PageCorruptError);
  const bad2 = fivePage();
  setLp(bad2, 3, 7000, LP_NORMAL, 40); // below pd_upper
  const err = catchError(() => pageRepairFragmentation(bad2));
  assert.ok(err instanceof PageCorruptError);
  assert.match((err as Error).message, /corrupted line pointer: 7000/);
  const bad3 = fivePage();
  bad3.writeUInt16LE(8190, 16); // pd_special not MAXALIGNed
  bad3.writeUInt16LE(8000, 14);
  assert.ok(catchError(() => pageRepairFragmentation(bad3)) instanceof PageCorruptError);
});

test('pageTruncateLinePointerArray cuts trailing unused pointers but keeps the first one', () => {
  const page = Buffer.alloc(8192);
  header(page, 44, 8192, 8192);
  setLp(page, 1, 0, LP_DEAD, 0);
  setLp(page, 2, 0, 0, 0);
  setLp(page, 3, 0, LP_DEAD, 0);
  pageTruncateLinePointerArray(page);
  assert.equal(lower(page), 36); // 4 and 5 (unused) go, 3 stays
  assert.equal(flags(page), PD_HAS_FREE_LINES); // lp2 remains unused

  const all = Buffer.alloc(8192);
  header(all, 36, 8192, 8192);
  pageTruncateLinePointerArray(all);
  assert.equal(lower(all), 28); // one unused line pointer is left behind
  assert.equal(flags(all), PD_HAS_FREE_LINES);

  const full = Buffer.alloc(8192);
  header(full, 32, 8192, 8192, PD_HAS_FREE_LINES);
  setLp(full, 1, 0, LP_DEAD, 0);
  setLp(full, 2, 0, LP_DEAD, 0);
  pageTruncateLinePointerArray(full);
  assert.equal(lower(full), 32);
  assert.equal(flags(full), 0);
});

/** An index page with 16 bytes of special space and 16-byte items at 8160, 8144, 8128, ... */
function indexPage(n: number, lens: number[] = []): Buffer {
  const page = Buffer.alloc(8192);
  header(page, 24 + 4 * n, 8176 - 16 * n, 8176);
  for (let i = 0; i < n; i++) {
    const off = 8160 - 16 * i;
    setLp(page, i + 1, off, LP_NORMAL, lens[i] ?? 16);
    fill(page, off, off + 16, 0x20 * (i + 1));
  }
  fill(page, 8176, 8192, 0xee);
  return page;
}

test('pageIndexTupleDelete removes the line pointer and closes the gap', () => {
  const page = indexPage(3, [16, 12, 16]);
  const orig = Buffer.from(page);
  pageIndexTupleDelete(page, 2);
  assert.equal(lower(page), 32);
  assert.equal(upper(page), 8144);
  assert.deepEqual(lp(page, 1), [8160, LP_NORMAL, 16]);
  assert.deepEqual(lp(page, 2), [8144, LP_NORMAL, 16]); // old lp3 moved up by 16
  assert.deepEqual(page.subarray(8144, 8160), orig.subarray(8128, 8144));
  assert.deepEqual(page.subarray(8160, 8192), orig.subarray(8160, 8192));
  assert.ok(catchError(() => pageIndexTupleDelete(page, 3)) instanceof PageCorruptError);
  assert.ok(catchError(() => pageIndexTupleDelete(page, 0)) instanceof PageCorruptError);
});

test('pageIndexMultiDelete: compaction path (3+ items) and retail path (1-2 items)', () => {
  const page = indexPage(5);
  const orig = Buffer.from(page);
  pageIndexMultiDelete(page, [1, 3, 5]);
  // Kept: old 2 (8144) and old 4 (8112), packed down from pd_special 8176.
  assert.equal(lower(page), 32);
  assert.equal(upper(page), 8144);
  assert.deepEqual(lp(page, 1), [8160, LP_NORMAL, 16]);
  assert.deepEqual(lp(page, 2), [8144, LP_NORMAL, 16]);
  assert.deepEqual(page.subarray(8160, 8176), orig.subarray(8144, 8160));
  assert.deepEqual(page.subarray(8144, 8160), orig.subarray(8112, 8128));
  assert.deepEqual(page.subarray(8176, 8192), orig.subarray(8176, 8192));

  const two = indexPage(5);
  pageIndexMultiDelete(two, [2, 4]);
  assert.equal(lower(two), 36);
  assert.equal(upper(two), 8128);
  assert.deepEqual([lp(two, 1), lp(two, 2), lp(two, 3)], [[8160, 1, 16], [8144, 1, 16], [8128, 1, 16]]);
  assert.deepEqual(two.subarray(8144, 8160), orig.subarray(8128, 8144)); // old 3
  assert.deepEqual(two.subarray(8128, 8144), orig.subarray(8096, 8112)); // old 5

  // Items out of physical order (lp1 below lp3): one or two deletes keep the physical order.
  const mixed = Buffer.alloc(8192);
  header(mixed, 40, 8112, 8176);
  [[8128, 0x11], [8160, 0x22], [8144, 0x33], [8112, 0x44]].forEach(([off, seed], i) => {
    setLp(mixed, i + 1, off!, LP_NORMAL, 16);
    fill(mixed, off!, off! + 16, seed!);
  });
  const mixedOrig = Buffer.from(mixed);
  pageIndexMultiDelete(mixed, [2, 4]);
  // Delete 4 (at pd_upper: nothing moves), then 2 (8160): 8128..8160 moves up 16.
  assert.deepEqual([lp(mixed, 1), lp(mixed, 2)], [[8144, 1, 16], [8160, 1, 16]]);
  assert.equal(upper(mixed), 8144);
  assert.deepEqual(mixed.subarray(8144, 8160), mixedOrig.subarray(8128, 8144));
  assert.deepEqual(mixed.subarray(8160, 8176), mixedOrig.subarray(8144, 8160));

  const all = indexPage(3);
  pageIndexMultiDelete(all, [1, 2, 3]);
  assert.equal(lower(all), 24);
  assert.equal(upper(all), 8176);

  const bad = indexPage(5);
  const before = Buffer.from(bad);
  assert.ok(catchError(() => pageIndexMultiDelete(bad, [3, 1, 5])) instanceof PageCorruptError);
  assert.deepEqual(bad, before); // validated before anything is changed
});

test('pageIndexTupleDeleteNoCompact leaves an unused line pointer, except for the last one', () => {
  const page = indexPage(3);
  const orig = Buffer.from(page);
  pageIndexTupleDeleteNoCompact(page, 2);
  assert.equal(lower(page), 36);
  assert.equal(upper(page), 8144);
  assert.deepEqual(lp(page, 2), [0, 0, 0]);
  assert.deepEqual(lp(page, 3), [8144, LP_NORMAL, 16]);
  assert.deepEqual(page.subarray(8144, 8160), orig.subarray(8128, 8144));
  pageIndexTupleDeleteNoCompact(page, 3);
  assert.equal(lower(page), 32);
  assert.equal(upper(page), 8160);
});

test('pageIndexTupleOverwrite grows, shrinks, keeps lp_flags, refuses what does not fit', () => {
  const grow = indexPage(3);
  const orig = Buffer.from(grow);
  setLp(grow, 2, 8144, LP_DEAD, 16);
  const item30 = pattern(30, 0x70);
  assert.equal(pageIndexTupleOverwrite(grow, 2, item30), true);
  // 16 -> 32 bytes: data below the item (lp3, 8128..8144) moves down 16; item at 8144 - 16 = 8128.
  assert.equal(upper(grow), 8112);
  assert.deepEqual(lp(grow, 1), [8160, LP_NORMAL, 16]);
  assert.deepEqual(lp(grow, 2), [8128, LP_DEAD, 30]);
  assert.deepEqual(lp(grow, 3), [8112, LP_NORMAL, 16]);
  assert.deepEqual(grow.subarray(8128, 8158), item30);
  assert.deepEqual(grow.subarray(8112, 8128), orig.subarray(8128, 8144));

  const shrink = indexPage(3);
  assert.equal(pageIndexTupleOverwrite(shrink, 2, pattern(5, 0x71)), true);
  // 16 -> 8 bytes: lp3's data moves up 8 (8128 -> 8136); the item sits at 8144 + 8 = 8152.
  assert.equal(upper(shrink), 8136);
  assert.deepEqual(lp(shrink, 2), [8152, LP_NORMAL, 5]);
  assert.deepEqual(lp(shrink, 3), [8136, LP_NORMAL, 16]);
  assert.deepEqual(shrink.subarray(8136, 8152), orig.subarray(8128, 8144));

  const tight = indexPage(3);
  const before = Buffer.from(tight);
  // Free: 8128 - 36 = 8092; the item may grow to 16 + 8092 = 8108 bytes, i.e. 8104 once aligned.
  assert.equal(pageIndexTupleOverwrite(tight, 2, Buffer.alloc(8105)), false);
  assert.deepEqual(tight, before);
  assert.equal(pageIndexTupleOverwrite(tight, 2, Buffer.alloc(8104)), true);
  assert.equal(upper(tight), 40); // 8128 - (8104 - 16)
  assert.deepEqual(lp(tight, 2), [8144 - 8088, LP_NORMAL, 8104]);
});

test('visibility map bits: two per heap block after the 24-byte header, 32672 heap blocks per page', () => {
  const vm = Buffer.alloc(8192);
  pageInit(vm, 0);
  assert.equal(vmSetBits(vm, 0, 1), true);
  assert.equal(vm[24], 0x01);
  assert.equal(vmSetBits(vm, 5, 3), true); // byte 24 + 1, bits 2..3
  assert.equal(vm[25], 0x0c);
  assert.equal(vmSetBits(vm, 32671, 2), true); // last heap block of the page: byte 8191, bits 6..7
  assert.equal(vm[8191], 0x80);
  assert.equal(vmBlockOfHeapBlock(32671), 0);
  assert.equal(vmBlockOfHeapBlock(32672), 1);
  assert.equal(vmSetBits(vm, 32672, 2), true); // first heap block of VM page 1 -> byte 24 here
  assert.equal(vm[24], 0x03);
  assert.equal(vmSetBits(vm, 0, 3), false); // same bits: no change reported
  assert.equal(vmSetBits(vm, 5, 1), true); // differs from 3: reported although nothing changes
  assert.equal(vm[25], 0x0c);
  assert.equal(vmGetBits(vm, 5), 3);
  assert.equal(vmClearBits(vm, 5, 2), true);
  assert.equal(vm[25], 0x04);
  assert.equal(vmClearBits(vm, 5, 2), false);
  assert.equal(vmClearBits(vm, 0, 3), true);
  assert.equal(vm[24], 0x00);
});

test('pageSetPrunable keeps the oldest xid, comparing normal xids modulo 2^32', () => {
  const page = Buffer.alloc(8192);
  pageSetPrunable(page, 100);
  assert.equal(page.readUInt32LE(20), 100);
  pageSetPrunable(page, 50);
  assert.equal(page.readUInt32LE(20), 50);
  pageSetPrunable(page, 200);
  assert.equal(page.readUInt32LE(20), 50);
  page.writeUInt32LE(0xfffffff0, 20);
  pageSetPrunable(page, 5); // 5 comes after 0xfffffff0 across the wrap
  assert.equal(page.readUInt32LE(20), 0xfffffff0);
  page.writeUInt32LE(5, 20);
  pageSetPrunable(page, 0xfffffff0);
  assert.equal(page.readUInt32LE(20), 0xfffffff0);
});
