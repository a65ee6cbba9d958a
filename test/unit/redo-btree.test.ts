/**
 * nbtree redo (src/redo/btree.ts) and its record parsers (src/postgres/records/btree.ts) on
 * hand-built pages.
 *
 * Where the expected page comes from: PostgreSQL's redo rebuilds many btree pages by adding items
 * in item-number order to a freshly initialised page (split halves, dedup, new root, restored right
 * page), and its compacting deletes pack the surviving tuples the same way. This file has its own,
 * deliberately naive page builder (`btPage`: items laid out downwards from pd_special in order, line
 * pointers 1..n) that never calls src/redo/page.ts, so such expectations are whole-page byte
 * comparisons against an independent layout. In-place edits (simple inserts, posting splits) are
 * checked structurally: the logical item list, where the new bytes went, lower/upper, LSN. Posting
 * list contents are written out by hand (TID lists), not computed with the code under test.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { encodeRecord, type BlockSpec } from '../../src/postgres/walwriter.ts';
import { decodeXLogRecord, type DecodedRecord } from '../../src/postgres/xlogrecord.ts';
import { RM_BTREE_ID } from '../../src/postgres/rmgr.ts';
import {
  parseBtreeDedup, parseBtreeDedupIntervals, parseBtreeDelete, parseBtreeDeletionData, parseBtreeInsert,
  parseBtreeInsertData, parseBtreeMarkHalfDead, parseBtreeMetadata, parseBtreeNewroot, parseBtreeReusePage,
  parseBtreeSplit, parseBtreeSplitLeftData, parseBtreeTupleRun, parseBtreeUnlinkPage, parseBtreeVacuum,
} from '../../src/postgres/records/btree.ts';
import { WalRecordBodyError } from '../../src/postgres/records/common.ts';
import { btreeRedo } from '../../src/redo/btree.ts';
import { RedoError } from '../../src/redo/types.ts';

// ------------------------------------------------------------------------------------------------
// Constants written from the PostgreSQL 15 headers (nbtree.h, nbtxlog.h), not imported.

const OP = {
  INSERT_LEAF: 0x00, INSERT_UPPER: 0x10, INSERT_META: 0x20, SPLIT_L: 0x30, SPLIT_R: 0x40, INSERT_POST: 0x50,
  DEDUP: 0x60, DELETE: 0x70, UNLINK_PAGE: 0x80, UNLINK_PAGE_META: 0x90, NEWROOT: 0xa0, MARK_PAGE_HALFDEAD: 0xb0,
  VACUUM: 0xc0, REUSE_PAGE: 0xd0, META_CLEANUP: 0xe0,
} as const;
const F = { LEAF: 1, ROOT: 2, DELETED: 4, META: 8, HALF_DEAD: 16, SPLIT_END: 32, HAS_GARBAGE: 64, INCOMPLETE_SPLIT: 128, HAS_FULLXID: 256 } as const;
const SPECIAL = 8176;
const REL = { spcNode: 1663, dbNode: 5, relNode: 16400 };
const REC_LSN = 0x1_0000_1000n;
const END_LSN = 0x1_0000_1058n;
const OLD_LSN = 0x0_0fff_0000n;

// ------------------------------------------------------------------------------------------------
// Test-only tuple and page builders.

const align8 = (n: number): number => Math.ceil(n / 8) * 8;
type Tid = readonly [blk: number, off: number];

function tidBytes([blk, off]: Tid): Buffer {
  const b = Buffer.alloc(6);
  b.writeUInt16LE(blk >>> 16, 0);
  b.writeUInt16LE(blk & 0xffff, 2);
  b.writeUInt16LE(off, 4);
  return b;
}

/** A plain leaf tuple: heap TID, t_info = 16, int4 key, 4 bytes padding. */
function leaf(key: number, tid: Tid): Buffer {
  const t = Buffer.alloc(16);
  tidBytes(tid).copy(t, 0);
  t.writeUInt16LE(16, 6);
  t.writeInt32LE(key, 8);
  return t;
}

/** A leaf tuple with a longer key (`keyBytes` bytes after the header, a multiple of 8). */
function wideLeaf(keyBytes: number, fill: number, tid: Tid): Buffer {
  const t = Buffer.alloc(8 + keyBytes, fill);
  tidBytes(tid).copy(t, 0);
  t.writeUInt16LE(8 + keyBytes, 6);
  return t;
}

/** A posting list tuple: key part 16 bytes, then the TIDs at offset 16, size MAXALIGNed. */
function posting(key: number, tids: readonly Tid[]): Buffer {
  const size = align8(16 + 6 * tids.length);
  const t = Buffer.alloc(size);
  t.writeUInt16LE(0, 0);
  t.writeUInt16LE(16, 2); // block field = posting list offset
  t.writeUInt16LE(0x2000 | tids.length, 4); // BT_IS_POSTING | count
  t.writeUInt16LE(0x2000 | size, 6); // INDEX_ALT_TID_MASK | size
  t.writeInt32LE(key, 8);
  tids.forEach((tid, i) => tidBytes(tid).copy(t, 16 + 6 * i));
  return t;
}

/** A pivot tuple with one key attribute and a downlink (internal pages, high keys). */
function pivot(key: number, downlink: number): Buffer {
  const t = Buffer.alloc(16);
  t.writeUInt16LE(downlink >>> 16, 0);
  t.writeUInt16LE(downlink & 0xffff, 2);
  t.writeUInt16LE(1, 4); // natts = 1
  t.writeUInt16LE(0x2000 | 16, 6);
  t.writeInt32LE(key, 8);
  return t;
}

/** The "minus infinity" first pivot of an internal page: no key attributes. */
function minusInfinity(downlink: number): Buffer {
  const t = Buffer.alloc(8);
  t.writeUInt16LE(downlink >>> 16, 0);
  t.writeUInt16LE(downlink & 0xffff, 2);
  t.writeUInt16LE(0, 4);
  t.writeUInt16LE(0x2000 | 8, 6);
  return t;
}

interface Opaque { prev: number; next: number; level: number; flags: number; cycleid: number }

interface PageOpts { lsn?: bigint; pdFlags?: number; pruneXid?: number }

/** Lays the items out as sequential adds to a fresh page do: item 1 highest, packed downwards. */
function btPage(items: readonly Uint8Array[], o: Opaque, opts: PageOpts = {}): Buffer {
  const p = Buffer.alloc(8192);
  const lsn = opts.lsn ?? OLD_LSN;
  p.writeUInt32LE(Number(lsn >> 32n), 0);
  p.writeUInt32LE(Number(lsn & 0xffffffffn), 4);
  p.writeUInt16LE(opts.pdFlags ?? 0, 10);
  let upper = SPECIAL;
  items.forEach((it, i) => {
    upper -= align8(it.length);
    Buffer.from(it).copy(p, upper);
    p.writeUInt32LE((upper | (1 << 15) | (it.length << 17)) >>> 0, 24 + 4 * i);
  });
  p.writeUInt16LE(24 + 4 * items.length, 12);
  p.writeUInt16LE(upper, 14);
  p.writeUInt16LE(SPECIAL, 16);
  p.writeUInt16LE(0x2004, 18);
  p.writeUInt32LE(opts.pruneXid ?? 0, 20);
  p.writeUInt32LE(o.prev, SPECIAL);
  p.writeUInt32LE(o.next, SPECIAL + 4);
  p.writeUInt32LE(o.level, SPECIAL + 8);
  p.writeUInt16LE(o.flags, SPECIAL + 12);
  p.writeUInt16LE(o.cycleid, SPECIAL + 14);
  return p;
}

/** The tuple area of a page as PostgreSQL logs a right half / new root: pd_upper .. pd_special. */
function tupleArea(p: Buffer): Buffer {
  return Buffer.from(p.subarray(p.readUInt16LE(14), p.readUInt16LE(16)));
}

function lower(p: Buffer): number {
  return p.readUInt16LE(12);
}
function upper(p: Buffer): number {
  return p.readUInt16LE(14);
}
function lsnOf(p: Buffer): bigint {
  return (BigInt(p.readUInt32LE(0)) << 32n) | BigInt(p.readUInt32LE(4));
}
function opaqueOf(p: Buffer): Opaque {
  return { prev: p.readUInt32LE(SPECIAL), next: p.readUInt32LE(SPECIAL + 4), level: p.readUInt32LE(SPECIAL + 8), flags: p.readUInt16LE(SPECIAL + 12), cycleid: p.readUInt16LE(SPECIAL + 14) };
}

interface ItemView { off: number; lpOff: number; len: number; flags: number; bytes: Buffer }

function itemsOf(p: Buffer): ItemView[] {
  const n = (lower(p) - 24) / 4;
  const out: ItemView[] = [];
  for (let i = 0; i < n; i++) {
    const w = p.readUInt32LE(24 + 4 * i);
    const lpOff = w & 0x7fff;
    const len = w >>> 17;
    out.push({ off: i + 1, lpOff, len, flags: (w >>> 15) & 3, bytes: Buffer.from(p.subarray(lpOff, lpOff + len)) });
  }
  return out;
}

function itemBytes(p: Buffer): Buffer[] {
  return itemsOf(p).map((i) => i.bytes);
}

/** Byte-compares two pages and names the first difference. */
function assertSamePage(actual: Buffer, expected: Buffer, what: string): void {
  if (actual.equals(expected)) return;
  let i = 0;
  while (actual[i] === expected[i]) i++;
  assert.fail(`${what}: pages differ first at byte ${i} (actual ${actual[i]}, expected ${expected[i]}); ` +
    `lower ${lower(actual)}/${lower(expected)} upper ${upper(actual)}/${upper(expected)} ` +
    `opaque ${JSON.stringify(opaqueOf(actual))} vs ${JSON.stringify(opaqueOf(expected))}`);
}

/**
 * As assertSamePage, but the bytes between pd_lower and pd_upper do not count (after the same
 * lower/upper): deletions leave stale line pointers and tuple bytes there, in PostgreSQL too, and
 * its consistency check masks exactly that range (mask_unused_space).
 */
function assertSamePageIgnoringHole(actual: Buffer, expected: Buffer, what: string): void {
  assert.equal(lower(actual), lower(expected), `${what}: pd_lower`);
  assert.equal(upper(actual), upper(expected), `${what}: pd_upper`);
  const a = Buffer.from(actual);
  const e = Buffer.from(expected);
  a.fill(0, lower(a), upper(a));
  e.fill(0, lower(e), upper(e));
  assertSamePage(a, e, what);
}

function withLsn(p: Buffer, lsn: bigint): Buffer {
  const c = Buffer.from(p);
  c.writeUInt32LE(Number(lsn >> 32n), 0);
  c.writeUInt32LE(Number(lsn & 0xffffffffn), 4);
  return c;
}

// ------------------------------------------------------------------------------------------------
// Records.

class W {
  private readonly bytes: number[] = [];
  u8(v: number): this {
    this.bytes.push(v & 0xff);
    return this;
  }
  u16(v: number): this {
    return this.u8(v).u8(v >>> 8);
  }
  u32(v: number): this {
    return this.u16(v & 0xffff).u16(v >>> 16);
  }
  u64(v: bigint): this {
    return this.u32(Number(v & 0xffffffffn)).u32(Number(v >> 32n));
  }
  zeros(n: number): this {
    for (let i = 0; i < n; i++) this.u8(0);
    return this;
  }
  raw(b: Uint8Array): this {
    for (const x of b) this.bytes.push(x);
    return this;
  }
  get(): Buffer {
    return Buffer.from(this.bytes);
  }
}

interface Blk { id: number; blkno: number; data?: Uint8Array; willInit?: boolean }

function mkRec(info: number, main: Uint8Array | undefined, blocks: Blk[]): DecodedRecord {
  const specs: BlockSpec[] = blocks.map((b) => ({ id: b.id, rnode: REL, forkNum: 0, blkno: b.blkno, willInit: b.willInit ?? false, data: b.data }));
  const bytes = encodeRecord({ xid: 700, rmid: RM_BTREE_ID, info, blocks: specs, mainData: main }, 0n);
  return decodeXLogRecord(new Uint8Array(bytes), REC_LSN, END_LSN);
}

interface Meta { version: number; root: number; level: number; fastroot: number; fastlevel: number; delpages: number; allequal: boolean }

function metaData(m: Meta): Buffer {
  return new W().u32(m.version).u32(m.root).u32(m.level).u32(m.fastroot).u32(m.fastlevel).u32(m.delpages).u8(m.allequal ? 1 : 0).zeros(3).get();
}

/** The metapage as _bt_restore_meta leaves it, written field by field from BTMetaPageData's layout. */
function expectedMetapage(m: Meta, lsn: bigint): Buffer {
  const p = Buffer.alloc(8192);
  p.writeUInt32LE(Number(lsn >> 32n), 0);
  p.writeUInt32LE(Number(lsn & 0xffffffffn), 4);
  p.writeUInt16LE(72, 12); // pd_lower = 24 + sizeof(BTMetaPageData) 48
  p.writeUInt16LE(SPECIAL, 14);
  p.writeUInt16LE(SPECIAL, 16);
  p.writeUInt16LE(0x2004, 18);
  p.writeUInt32LE(0x053162, 24);
  p.writeUInt32LE(m.version, 28);
  p.writeUInt32LE(m.root, 32);
  p.writeUInt32LE(m.level, 36);
  p.writeUInt32LE(m.fastroot, 40);
  p.writeUInt32LE(m.fastlevel, 44);
  p.writeUInt32LE(m.delpages, 48);
  p.writeDoubleLE(-1, 56);
  p[64] = m.allequal ? 1 : 0;
  p.writeUInt16LE(F.META, SPECIAL + 12);
  return p;
}

function redo(page: Buffer, rec: DecodedRecord, blockId: number): Buffer {
  const p = Buffer.from(page);
  btreeRedo(p, rec, blockId, END_LSN);
  return p;
}

function assertRedoError(fn: () => unknown, pattern: RegExp): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof RedoError, `expected RedoError, got ${String(e)}`);
    assert.match(e.message, pattern);
    assert.match(e.message, /Btree\//);
    return true;
  });
}

const LEAF_MID: Opaque = { prev: 3, next: 7, level: 0, flags: F.LEAF, cycleid: 0 };
const LEAF_RIGHTMOST: Opaque = { prev: 3, next: 0, level: 0, flags: F.LEAF, cycleid: 0 };

// ------------------------------------------------------------------------------------------------
// Parsers.

test('parsers read every main-data struct at the PostgreSQL offsets', () => {
  const ins = mkRec(OP.INSERT_LEAF, new W().u16(7).get(), [{ id: 0, blkno: 1, data: leaf(1, [1, 1]) }]);
  assert.deepEqual(parseBtreeInsert(ins), { offnum: 7 });
  assert.deepEqual(parseBtreeInsertData(ins, false).tuple, new Uint8Array(leaf(1, [1, 1])));

  const post = mkRec(OP.INSERT_POST, new W().u16(3).get(), [{ id: 0, blkno: 1, data: new W().u16(2).raw(leaf(9, [4, 4])).get() }]);
  const pd = parseBtreeInsertData(post, true);
  assert.equal(pd.postingoff, 2);
  assert.deepEqual(Buffer.from(pd.tuple), leaf(9, [4, 4]));

  const split = mkRec(OP.SPLIT_L, new W().u32(2).u16(5).u16(4).u16(3).get(), [{ id: 0, blkno: 1, data: Buffer.concat([leaf(1, [1, 1]), pivot(5, 0)]) }, { id: 1, blkno: 9, data: leaf(2, [1, 2]), willInit: true }]);
  const sb = parseBtreeSplit(split);
  assert.deepEqual(sb, { level: 2, firstrightoff: 5, newitemoff: 4, postingoff: 3, newItemOnLeft: true });
  const sl = parseBtreeSplitLeftData(split, sb);
  assert.deepEqual(Buffer.from(sl.newItem!), leaf(1, [1, 1]));
  assert.deepEqual(Buffer.from(sl.leftHighKey), pivot(5, 0));
  const splitR = mkRec(OP.SPLIT_R, new W().u32(0).u16(5).u16(5).u16(0).get(), [{ id: 0, blkno: 1, data: pivot(5, 0) }, { id: 1, blkno: 9, data: leaf(2, [1, 2]), willInit: true }]);
  const sbr = parseBtreeSplit(splitR);
  assert.equal(sbr.newItemOnLeft, false);
  assert.equal(parseBtreeSplitLeftData(splitR, sbr).newItem, undefined);
  assert.deepEqual(parseBtreeTupleRun(split, 1).map((t) => Buffer.from(t)), [leaf(2, [1, 2])]);

  const dedup = mkRec(OP.DEDUP, new W().u16(2).get(), [{ id: 0, blkno: 1, data: new W().u16(2).u16(3).u16(6).u16(2).get() }]);
  assert.deepEqual(parseBtreeDedupIntervals(dedup, parseBtreeDedup(dedup)), [{ baseoff: 2, nitems: 3 }, { baseoff: 6, nitems: 2 }]);

  const delData = new W().u16(2).u16(9).u16(4).u16(2).u16(2).u16(0).u16(3).u16(1).u16(1).get();
  const vac = mkRec(OP.VACUUM, new W().u16(2).u16(2).get(), [{ id: 0, blkno: 1, data: delData }]);
  assert.deepEqual(parseBtreeVacuum(vac), { ndeleted: 2, nupdated: 2 });
  assert.deepEqual(parseBtreeDeletionData(vac, 2, 2), { deleted: [2, 9], updated: [{ offnum: 4, deletedTids: [0, 3] }, { offnum: 2, deletedTids: [1] }] });
  const del = mkRec(OP.DELETE, new W().u32(4242).u16(2).u16(2).get(), [{ id: 0, blkno: 1, data: delData }]);
  assert.deepEqual(parseBtreeDelete(del), { latestRemovedXid: 4242, ndeleted: 2, nupdated: 2 });

  const hd = mkRec(OP.MARK_PAGE_HALFDEAD, new W().u16(3).zeros(2).u32(10).u32(11).u32(12).u32(13).get(), [{ id: 0, blkno: 10, willInit: true }]);
  assert.deepEqual(parseBtreeMarkHalfDead(hd), { poffset: 3, leafblk: 10, leftblk: 11, rightblk: 12, topparent: 13 });

  const ul = mkRec(OP.UNLINK_PAGE_META, new W().u32(21).u32(22).u32(1).zeros(4).u64(0x1_0000_0203n).u32(24).u32(25).u32(26).get(), [{ id: 0, blkno: 23, willInit: true }]);
  assert.deepEqual(parseBtreeUnlinkPage(ul), { leftsib: 21, rightsib: 22, level: 1, safexid: 0x1_0000_0203n, leafleftsib: 24, leafrightsib: 25, leaftopparent: 26, hasMeta: true });

  const nr = mkRec(OP.NEWROOT, new W().u32(3).u32(1).get(), [{ id: 0, blkno: 3, willInit: true }]);
  assert.deepEqual(parseBtreeNewroot(nr), { rootblk: 3, level: 1 });

  const reuse = mkRec(OP.REUSE_PAGE, new W().u32(1663).u32(5).u32(16400).u32(77).u64(0x2_0000_0010n).get(), []);
  assert.deepEqual(parseBtreeReusePage(reuse), { node: REL, block: 77, latestRemovedFullXid: 0x2_0000_0010n });

  const m: Meta = { version: 4, root: 3, level: 1, fastroot: 3, fastlevel: 1, delpages: 2, allequal: true };
  const mc = mkRec(OP.META_CLEANUP, undefined, [{ id: 0, blkno: 0, data: metaData(m), willInit: true }]);
  assert.deepEqual(parseBtreeMetadata(mc, 0), { version: 4, root: 3, level: 1, fastroot: 3, fastlevel: 1, lastCleanupNumDelpages: 2, allequalimage: true });
});

test('parsers reject short or inconsistent bodies with WalRecordBodyError', () => {
  const short = mkRec(OP.SPLIT_L, new W().u32(0).u16(2).get(), [{ id: 0, blkno: 1, data: pivot(1, 0) }]);
  assert.throws(() => parseBtreeSplit(short), WalRecordBodyError);
  const badMeta = mkRec(OP.META_CLEANUP, undefined, [{ id: 0, blkno: 0, data: new Uint8Array(24) }]);
  assert.throws(() => parseBtreeMetadata(badMeta, 0), /exactly 28 bytes/);
  const trailing = mkRec(OP.SPLIT_R, new W().u32(0).u16(2).u16(2).u16(0).get(), [{ id: 0, blkno: 1, data: Buffer.concat([pivot(1, 0), Buffer.alloc(8)]) }]);
  assert.throws(() => parseBtreeSplitLeftData(trailing, parseBtreeSplit(trailing)), /follow the left high key/);
  const truncatedRun = mkRec(OP.NEWROOT, new W().u32(1).u32(1).get(), [{ id: 0, blkno: 1, data: leaf(1, [1, 1]).subarray(0, 12) }]);
  assert.throws(() => parseBtreeTupleRun(truncatedRun, 0), /block 0 data/);
  const shortDel = mkRec(OP.VACUUM, new W().u16(1).u16(1).get(), [{ id: 0, blkno: 1, data: new W().u16(2).u16(3).u16(2).u16(0).get() }]);
  assert.throws(() => parseBtreeDeletionData(shortDel, 1, 1), /posting list indexes/);
});

// ------------------------------------------------------------------------------------------------
// Inserts.

test('INSERT_LEAF adds the tuple at offnum, shifting later line pointers; bytes go just below pd_upper', () => {
  const items = [pivot(100, 0), leaf(10, [1, 1]), leaf(20, [1, 2]), leaf(40, [1, 4])];
  const before = btPage(items, LEAF_MID, { pdFlags: 0 });
  const newItem = leaf(30, [1, 3]);
  const rec = mkRec(OP.INSERT_LEAF, new W().u16(4).get(), [{ id: 0, blkno: 5, data: newItem }]);
  const after = redo(before, rec, 0);
  assert.deepEqual(itemBytes(after), [items[0], items[1], items[2], newItem, items[3]]);
  const its = itemsOf(after);
  assert.equal(its[3]!.lpOff, upper(before) - 16);
  assert.equal(upper(after), upper(before) - 16);
  assert.equal(lower(after), lower(before) + 4);
  // Old items did not move.
  for (const [i, o] of [[0, 0], [1, 1], [2, 2], [4, 3]] as const) assert.equal(its[i]!.lpOff, itemsOf(before)[o]!.lpOff);
  assert.equal(lsnOf(after), END_LSN);
  assert.deepEqual(opaqueOf(after), LEAF_MID);
  // Inserting past the end of the line pointer array is what PostgreSQL refuses.
  const bad = mkRec(OP.INSERT_LEAF, new W().u16(9).get(), [{ id: 0, blkno: 5, data: newItem }]);
  assertRedoError(() => redo(before, bad, 0), /failed to add new item/);
});

test('INSERT_LEAF on an exactly full page: a tuple that fills the gap fits, one byte group more does not', () => {
  // 400 16-byte tuples + one 128-byte tuple leave pd_upper - pd_lower = 8152 - 400*20 - 132 = 20.
  const items: Buffer[] = [wideLeaf(120, 7, [9, 9])];
  for (let i = 0; i < 400; i++) items.push(leaf(1000 + i, [2, i + 1]));
  const before = btPage(items, LEAF_RIGHTMOST);
  assert.equal(upper(before) - lower(before), 20);
  const fits = mkRec(OP.INSERT_LEAF, new W().u16(402).get(), [{ id: 0, blkno: 5, data: leaf(5000, [3, 1]) }]);
  const after = redo(before, fits, 0);
  assert.equal(upper(after), lower(after));
  assert.deepEqual(itemBytes(after).at(-1), leaf(5000, [3, 1]));
  const tooBig = mkRec(OP.INSERT_LEAF, new W().u16(402).get(), [{ id: 0, blkno: 5, data: wideLeaf(16, 1, [3, 1]) }]);
  assertRedoError(() => redo(before, tooBig, 0), /failed to add new item/);
});

test('INSERT_POST splits the posting list: the old tuple keeps its slot, the new item takes the max TID', () => {
  const items = [leaf(10, [1, 1]), posting(20, [[2, 1], [2, 3], [2, 5], [2, 7]]), leaf(30, [3, 1])];
  const before = btPage(items, LEAF_RIGHTMOST);
  const orig = leaf(20, [2, 4]);
  const rec = mkRec(OP.INSERT_POST, new W().u16(3).get(), [{ id: 0, blkno: 5, data: new W().u16(2).raw(orig).get() }]);
  const after = redo(before, rec, 0);
  assert.deepEqual(itemBytes(after), [items[0], posting(20, [[2, 1], [2, 3], [2, 4], [2, 5]]), leaf(20, [2, 7]), items[2]]);
  assert.equal(itemsOf(after)[1]!.lpOff, itemsOf(before)[1]!.lpOff, 'the posting list is rewritten in place');
  assert.equal(itemsOf(after)[2]!.lpOff, upper(before) - 16);
  assert.equal(lsnOf(after), END_LSN);
  // postingoff must be strictly inside the posting list.
  for (const bad of [0, 4]) {
    const r = mkRec(OP.INSERT_POST, new W().u16(3).get(), [{ id: 0, blkno: 5, data: new W().u16(bad).raw(orig).get() }]);
    assertRedoError(() => redo(before, r, 0), /cannot be split at TID index/);
  }
  // The tuple before offnum must be a posting list.
  const r2 = mkRec(OP.INSERT_POST, new W().u16(2).get(), [{ id: 0, blkno: 5, data: new W().u16(1).raw(orig).get() }]);
  assertRedoError(() => redo(before, r2, 0), /not a valid posting list/);
});

test('INSERT_UPPER adds the downlink and clears INCOMPLETE_SPLIT on the child; INSERT_META rebuilds the metapage', () => {
  const parentOpq: Opaque = { prev: 0, next: 0, level: 1, flags: F.ROOT, cycleid: 0 };
  const parent = btPage([minusInfinity(1), pivot(50, 2)], parentOpq);
  const child = btPage([pivot(80, 0), leaf(60, [1, 1])], { prev: 2, next: 9, level: 0, flags: F.LEAF | F.INCOMPLETE_SPLIT | F.HAS_GARBAGE, cycleid: 5 });
  const down = pivot(70, 9);
  const m: Meta = { version: 4, root: 4, level: 1, fastroot: 4, fastlevel: 1, delpages: 0, allequal: true };
  for (const op of [OP.INSERT_UPPER, OP.INSERT_META]) {
    const blocks: Blk[] = [{ id: 0, blkno: 4, data: down }, { id: 1, blkno: 2 }];
    if (op === OP.INSERT_META) blocks.push({ id: 2, blkno: 0, data: metaData(m), willInit: true });
    const rec = mkRec(op, new W().u16(3).get(), blocks);
    const p = redo(parent, rec, 0);
    assert.deepEqual(itemBytes(p), [minusInfinity(1), pivot(50, 2), down]);
    const c = redo(child, rec, 1);
    assertSamePage(c, withLsn(btPage([pivot(80, 0), leaf(60, [1, 1])], { prev: 2, next: 9, level: 0, flags: F.LEAF | F.HAS_GARBAGE, cycleid: 5 }), END_LSN), 'child');
    if (op === OP.INSERT_META) {
      assertSamePage(redo(Buffer.alloc(8192), rec, 2), expectedMetapage(m, END_LSN), 'metapage');
      // Whatever was on the metapage before is replaced.
      assertSamePage(redo(Buffer.alloc(8192, 0xee), rec, 2), expectedMetapage(m, END_LSN), 'metapage over garbage');
    } else {
      assertRedoError(() => redo(parent, mkRec(op, new W().u16(3).get(), blocks), 2), /no block reference 2/);
    }
  }
  // A leaf insert has no child block.
  const leafRec = mkRec(OP.INSERT_LEAF, new W().u16(1).get(), [{ id: 0, blkno: 4, data: leaf(1, [1, 1]) }, { id: 1, blkno: 2 }]);
  assertRedoError(() => redo(child, leafRec, 1), /unexpected block reference 1/);
});

// ------------------------------------------------------------------------------------------------
// Splits.

interface SplitCase {
  name: string;
  op: number;
  level: number;
  origOpaque: Opaque;
  origItems: Buffer[];
  firstright: number;
  newitemoff: number;
  postingoff: number;
  /** What block 0 logs: new item / original new item (or nothing), then the left high key. */
  loggedNewItem: Buffer | undefined;
  leftHikey: Buffer;
  expectLeftItems: Buffer[];
  rightItems: Buffer[];
  rightSibling: number | undefined;
}

function runSplit(c: SplitCase): void {
  const origBlk = 5;
  const rightBlk = 12;
  const before = btPage(c.origItems, c.origOpaque, { pdFlags: 1, pruneXid: 1234 });
  const isLeaf = c.level === 0;
  const rightOpq: Opaque = { prev: origBlk, next: c.rightSibling ?? 0, level: c.level, flags: isLeaf ? F.LEAF : 0, cycleid: 0 };
  const rightExpected = btPage(c.rightItems, rightOpq, { lsn: END_LSN });
  const blocks: Blk[] = [
    { id: 0, blkno: origBlk, data: Buffer.concat([...(c.loggedNewItem ? [c.loggedNewItem] : []), c.leftHikey]) },
    { id: 1, blkno: rightBlk, data: tupleArea(rightExpected), willInit: true },
  ];
  if (c.rightSibling !== undefined) blocks.push({ id: 2, blkno: c.rightSibling });
  if (!isLeaf) blocks.push({ id: 3, blkno: 30 });
  const rec = mkRec(c.op, new W().u32(c.level).u16(c.firstright).u16(c.newitemoff).u16(c.postingoff).get(), blocks);

  // Left: rebuilt on a fresh page (pd_flags, pd_prune_xid reset), special area kept except the fixes.
  const left = redo(before, rec, 0);
  const leftOpq: Opaque = { prev: c.origOpaque.prev, next: rightBlk, level: c.origOpaque.level, flags: F.INCOMPLETE_SPLIT | (isLeaf ? F.LEAF : 0), cycleid: 0 };
  assertSamePage(left, btPage([c.leftHikey, ...c.expectLeftItems], leftOpq, { lsn: END_LSN }), `${c.name}: left page`);

  // Right: restored from the logged tuple area onto a zeroed page.
  assertSamePage(redo(Buffer.alloc(8192), rec, 1), rightExpected, `${c.name}: right page`);

  if (c.rightSibling !== undefined) {
    const sibOpq: Opaque = { prev: origBlk, next: 40, level: c.level, flags: isLeaf ? F.LEAF : 0, cycleid: 3 };
    const sib = btPage([pivot(999, 0), leaf(900, [8, 8])], sibOpq);
    assertSamePage(redo(sib, rec, 2), withLsn(btPage([pivot(999, 0), leaf(900, [8, 8])], { ...sibOpq, prev: rightBlk }), END_LSN), `${c.name}: right sibling`);
  }
  if (!isLeaf) {
    const childOpq: Opaque = { prev: 0, next: 31, level: c.level - 1, flags: F.INCOMPLETE_SPLIT | (c.level === 1 ? F.LEAF : 0), cycleid: 0 };
    const child = btPage([pivot(5, 0)], childOpq);
    assertSamePage(redo(child, rec, 3), withLsn(btPage([pivot(5, 0)], { ...childOpq, flags: childOpq.flags & ~F.INCOMPLETE_SPLIT }), END_LSN), `${c.name}: child`);
  }
}

const L = (k: number): Buffer => leaf(k, [1, k]);

test('SPLIT_L: new item on the left, in the middle of the left half', () => {
  runSplit({
    name: 'split_l middle', op: OP.SPLIT_L, level: 0, origOpaque: { ...LEAF_MID, flags: F.LEAF | F.HAS_GARBAGE | F.SPLIT_END, cycleid: 9 },
    origItems: [pivot(100, 0), L(10), L(20), L(40), L(50), L(60)],
    firstright: 5, newitemoff: 4, postingoff: 0, loggedNewItem: L(30), leftHikey: pivot(45, 0),
    expectLeftItems: [L(10), L(20), L(30), L(40)],
    rightItems: [pivot(100, 0), L(50), L(60)], rightSibling: 7,
  });
});

test('SPLIT_L: new item is the last item of the left half (newitemoff == firstrightoff)', () => {
  runSplit({
    name: 'split_l at end', op: OP.SPLIT_L, level: 0, origOpaque: LEAF_MID,
    origItems: [pivot(100, 0), L(10), L(20), L(50), L(60)],
    firstright: 4, newitemoff: 4, postingoff: 0, loggedNewItem: L(30), leftHikey: pivot(31, 0),
    expectLeftItems: [L(10), L(20), L(30)],
    rightItems: [pivot(100, 0), L(50), L(60)], rightSibling: 7,
  });
});

test('SPLIT_L at the first item: the left page keeps only the new item', () => {
  runSplit({
    name: 'split_l first', op: OP.SPLIT_L, level: 0, origOpaque: LEAF_MID,
    origItems: [pivot(100, 0), L(20), L(30), L(40)],
    firstright: 2, newitemoff: 2, postingoff: 0, loggedNewItem: L(10), leftHikey: pivot(11, 0),
    expectLeftItems: [L(10)],
    rightItems: [pivot(100, 0), L(20), L(30), L(40)], rightSibling: 7,
  });
});

test('SPLIT_R at the last item of a rightmost page: only the new item goes right, no right sibling', () => {
  runSplit({
    name: 'split_r last', op: OP.SPLIT_R, level: 0, origOpaque: LEAF_RIGHTMOST,
    origItems: [L(10), L(20), L(30)],
    firstright: 4, newitemoff: 4, postingoff: 0, loggedNewItem: undefined, leftHikey: pivot(31, 0),
    expectLeftItems: [L(10), L(20), L(30)],
    rightItems: [L(40)], rightSibling: undefined,
  });
});

test('SPLIT_R in the middle: the left page keeps the items before firstrightoff', () => {
  runSplit({
    name: 'split_r middle', op: OP.SPLIT_R, level: 0, origOpaque: LEAF_MID,
    origItems: [pivot(100, 0), L(10), L(20), L(30), L(50)],
    firstright: 4, newitemoff: 5, postingoff: 0, loggedNewItem: undefined, leftHikey: pivot(25, 0),
    expectLeftItems: [L(10), L(20)],
    rightItems: [pivot(100, 0), L(30), L(40), L(50)], rightSibling: 7,
  });
});

test('SPLIT_L with a posting list split: the rewritten posting list and the final new item go left', () => {
  const P = posting(30, [[3, 1], [3, 3], [3, 5]]);
  runSplit({
    name: 'split_l posting', op: OP.SPLIT_L, level: 0, origOpaque: LEAF_MID,
    origItems: [pivot(100, 0), L(10), L(20), P, L(40), L(50)],
    firstright: 6, newitemoff: 5, postingoff: 2, loggedNewItem: leaf(30, [3, 4]), leftHikey: pivot(45, 0),
    expectLeftItems: [L(10), L(20), posting(30, [[3, 1], [3, 3], [3, 4]]), leaf(30, [3, 5]), L(40)],
    rightItems: [pivot(100, 0), L(50)], rightSibling: 7,
  });
});

test('SPLIT_R with a posting list split: the posting list is lastleft, the final new item firstright', () => {
  const P = posting(30, [[3, 1], [3, 3], [3, 5]]);
  runSplit({
    name: 'split_r posting', op: OP.SPLIT_R, level: 0, origOpaque: LEAF_MID,
    origItems: [pivot(100, 0), L(10), L(20), P, L(40)],
    firstright: 5, newitemoff: 5, postingoff: 1, loggedNewItem: leaf(30, [3, 2]), leftHikey: pivot(30, 0),
    expectLeftItems: [L(10), L(20), posting(30, [[3, 1], [3, 2], [3, 3]])],
    rightItems: [pivot(100, 0), leaf(30, [3, 5]), L(40)], rightSibling: 7,
  });
});

test('split records that place the new item or the split posting list off the left page are refused', () => {
  const before = btPage([pivot(100, 0), L(10), L(20), L(30)], LEAF_MID);
  const mk = (op: number, firstright: number, newitemoff: number, postingoff: number, item: Buffer | undefined): DecodedRecord =>
    mkRec(op, new W().u32(0).u16(firstright).u16(newitemoff).u16(postingoff).get(), [
      { id: 0, blkno: 5, data: Buffer.concat([...(item ? [item] : []), pivot(25, 0)]) },
      { id: 1, blkno: 12, data: L(30), willInit: true },
    ]);
  assertRedoError(() => redo(before, mk(OP.SPLIT_L, 3, 4, 0, L(25)), 0), /newitemoff 4 is not on the left page/);
  assertRedoError(() => redo(before, mk(OP.SPLIT_L, 7, 2, 0, L(5)), 0), /firstrightoff 7 is outside/);
  const withPosting = btPage([pivot(100, 0), L(10), posting(20, [[1, 1], [1, 5]]), L(30)], LEAF_MID);
  assertRedoError(() => redo(withPosting, mk(OP.SPLIT_R, 3, 4, 1, leaf(20, [1, 3])), 0), /posting list to split \(item 3\) is not on the left page/);
});

test('SPLIT_L of an internal page: no LEAF flag, the child loses INCOMPLETE_SPLIT', () => {
  runSplit({
    name: 'split internal', op: OP.SPLIT_L, level: 1, origOpaque: { prev: 0, next: 0, level: 1, flags: F.ROOT, cycleid: 0 },
    origItems: [minusInfinity(1), pivot(20, 2), pivot(40, 4), pivot(60, 6)],
    firstright: 4, newitemoff: 3, postingoff: 0, loggedNewItem: pivot(30, 3), leftHikey: pivot(40, 0),
    expectLeftItems: [minusInfinity(1), pivot(20, 2), pivot(30, 3), pivot(40, 4)],
    rightItems: [minusInfinity(6)], rightSibling: undefined,
  });
});

// ------------------------------------------------------------------------------------------------
// Deduplication.

test('DEDUP merges the logged intervals into posting lists and rebuilds the page in item order', () => {
  const items = [
    pivot(100, 0),
    leaf(1, [1, 1]), leaf(1, [1, 2]), leaf(1, [1, 3]),
    leaf(2, [2, 1]),
    posting(3, [[3, 1], [3, 2]]), leaf(3, [3, 4]),
    leaf(4, [4, 1]), leaf(4, [4, 2]),
  ];
  const before = btPage(items, { ...LEAF_MID, flags: F.LEAF | F.HAS_GARBAGE }, { pdFlags: 1, pruneXid: 77 });
  // Item 8/9 (key 4) are equal too, but the record does not list them: they stay apart.
  const rec = mkRec(OP.DEDUP, new W().u16(2).get(), [{ id: 0, blkno: 5, data: new W().u16(2).u16(3).u16(6).u16(2).get() }]);
  const after = redo(before, rec, 0);
  const expected = btPage([
    pivot(100, 0),
    posting(1, [[1, 1], [1, 2], [1, 3]]),
    leaf(2, [2, 1]),
    posting(3, [[3, 1], [3, 2], [3, 4]]),
    leaf(4, [4, 1]), leaf(4, [4, 2]),
  ], LEAF_MID, { lsn: END_LSN });
  assertSamePage(after, expected, 'dedup');

  // Intervals that do not match what the page allows are an error, not a guess.
  for (const [baseoff, nitems] of [[20, 2], [2, 1]] as const) {
    const wrong = mkRec(OP.DEDUP, new W().u16(1).get(), [{ id: 0, blkno: 5, data: new W().u16(baseoff).u16(nitems).get() }]);
    assertRedoError(() => redo(before, wrong, 0), /deduplication produced intervals/);
  }
});

test('DEDUP on a rightmost page (no high key) with a run that starts at the first item', () => {
  const items = [leaf(7, [1, 1]), leaf(7, [1, 2]), leaf(8, [1, 3])];
  const before = btPage(items, LEAF_RIGHTMOST);
  const rec = mkRec(OP.DEDUP, new W().u16(1).get(), [{ id: 0, blkno: 5, data: new W().u16(1).u16(2).get() }]);
  assertSamePage(redo(before, rec, 0), btPage([posting(7, [[1, 1], [1, 2]]), leaf(8, [1, 3])], LEAF_RIGHTMOST, { lsn: END_LSN }), 'dedup rightmost');
});

test('DEDUP refuses to build a posting list over the BTMaxItemSize cap (2704 bytes)', () => {
  // A 1000-byte key part: 1000 + 6*TIDs must stay within 2704, so at most 284 TIDs; logging 300
  // tuples in one interval cannot be replayed. Use a posting tuple with 283 TIDs plus 17 plain ones.
  const key = 992;
  const mk = (tid: Tid): Buffer => wideLeaf(key, 5, tid);
  const base = Buffer.alloc(align8(8 + key + 6 * 283));
  mk([1, 1]).copy(base, 0);
  base.writeUInt16LE(0, 0);
  base.writeUInt16LE(8 + key, 2);
  base.writeUInt16LE(0x2000 | 283, 4);
  base.writeUInt16LE(0x2000 | base.length, 6);
  for (let i = 0; i < 283; i++) tidBytes([1, i + 1]).copy(base, 8 + key + 6 * i);
  const items = [base, mk([2, 1]), mk([2, 2])];
  const before = btPage(items, LEAF_RIGHTMOST);
  // 283 + 1 TIDs = 1000 + 1704 = 2704: allowed. One more is not.
  const ok = mkRec(OP.DEDUP, new W().u16(1).get(), [{ id: 0, blkno: 5, data: new W().u16(1).u16(2).get() }]);
  const after = redo(before, ok, 0);
  assert.equal(itemsOf(after)[0]!.len, 2704);
  assert.equal(itemsOf(after).length, 2);
  const over = mkRec(OP.DEDUP, new W().u16(1).get(), [{ id: 0, blkno: 5, data: new W().u16(1).u16(3).get() }]);
  assertRedoError(() => redo(before, over, 0), /could not merge item 3/);
});

// ------------------------------------------------------------------------------------------------
// VACUUM / DELETE.

for (const op of [OP.VACUUM, OP.DELETE]) {
  const name = op === OP.VACUUM ? 'VACUUM' : 'DELETE';
  test(`${name} shrinks posting lists, deletes items, compacts, clears BTP_HAS_GARBAGE`, () => {
    const items = [
      pivot(100, 0),
      leaf(1, [1, 1]),
      posting(2, [[2, 1], [2, 2], [2, 3], [2, 4]]),
      leaf(3, [3, 1]),
      posting(4, [[4, 1], [4, 2]]),
      leaf(5, [5, 1]),
      leaf(6, [6, 1]),
    ];
    const opq: Opaque = { ...LEAF_MID, flags: F.LEAF | F.HAS_GARBAGE, cycleid: 4 };
    const before = btPage(items, opq, { pdFlags: 0, pruneXid: 0 });
    const main = op === OP.VACUUM ? new W().u16(3).u16(2).get() : new W().u32(999).u16(3).u16(2).get();
    // Delete items 4, 6, 7; shrink item 3 (drop TIDs 0 and 2) and item 5 (drop TID 1: a plain tuple
    // remains). Offsets refer to the page before the change.
    const data = new W().u16(4).u16(6).u16(7).u16(3).u16(5).u16(2).u16(0).u16(2).u16(1).u16(1).get();
    const rec = mkRec(op, main, [{ id: 0, blkno: 5, data }]);
    const after = redo(before, rec, 0);
    const expected = btPage([pivot(100, 0), leaf(1, [1, 1]), posting(2, [[2, 2], [2, 4]]), leaf(4, [4, 1])], { ...opq, flags: F.LEAF }, { lsn: END_LSN });
    assertSamePageIgnoringHole(after, expected, name);
  });
}

test('VACUUM with one or two deletions (the one-by-one path) and no updates', () => {
  const items = [leaf(1, [1, 1]), leaf(2, [1, 2]), leaf(3, [1, 3]), leaf(4, [1, 4])];
  const before = btPage(items, LEAF_RIGHTMOST);
  const rec = mkRec(OP.VACUUM, new W().u16(2).u16(0).get(), [{ id: 0, blkno: 5, data: new W().u16(1).u16(3).get() }]);
  assertSamePageIgnoringHole(redo(before, rec, 0), btPage([leaf(2, [1, 2]), leaf(4, [1, 4])], LEAF_RIGHTMOST, { lsn: END_LSN }), 'vacuum 2');
  const bad = mkRec(OP.VACUUM, new W().u16(1).u16(0).get(), [{ id: 0, blkno: 5, data: new W().u16(9).get() }]);
  assertRedoError(() => redo(before, bad, 0), /deleted offset 9/);
  // Deleting every TID of a posting list through an update is not what PostgreSQL logs.
  const p = btPage([posting(2, [[2, 1], [2, 2]])], LEAF_RIGHTMOST);
  const all = mkRec(OP.VACUUM, new W().u16(0).u16(1).get(), [{ id: 0, blkno: 5, data: new W().u16(1).u16(2).u16(0).u16(1).get() }]);
  assertRedoError(() => redo(p, all, 0), /cannot delete 2 of the 2 TIDs/);
});

// ------------------------------------------------------------------------------------------------
// Page deletion.

function halfDeadLeaf(prev: number, next: number, topParent: number, lsn: bigint): Buffer {
  const hikey = Buffer.alloc(8);
  hikey.writeUInt16LE(topParent >>> 16, 0);
  hikey.writeUInt16LE(topParent & 0xffff, 2);
  hikey.writeUInt16LE(0x2000 | 8, 6);
  return btPage([hikey], { prev, next, level: 0, flags: F.HALF_DEAD | F.LEAF, cycleid: 0 }, { lsn });
}

test('MARK_PAGE_HALFDEAD: the parent pivot takes the next downlink, the next pivot goes; the leaf is re-made', () => {
  const parentOpq: Opaque = { prev: 0, next: 50, level: 1, flags: 0, cycleid: 0 };
  const parent = btPage([pivot(500, 0), minusInfinity(10), pivot(20, 11), pivot(40, 12), pivot(60, 13)], parentOpq);
  const rec = mkRec(OP.MARK_PAGE_HALFDEAD, new W().u16(3).zeros(2).u32(11).u32(10).u32(12).u32(0x12345).get(), [
    { id: 0, blkno: 11, willInit: true }, { id: 1, blkno: 40 },
  ]);
  assertSamePageIgnoringHole(redo(parent, rec, 1), btPage([pivot(500, 0), minusInfinity(10), pivot(20, 12), pivot(60, 13)], parentOpq, { lsn: END_LSN }), 'parent');
  assertSamePage(redo(Buffer.alloc(8192), rec, 0), halfDeadLeaf(10, 12, 0x12345, END_LSN), 'half-dead leaf');
  const bad = mkRec(OP.MARK_PAGE_HALFDEAD, new W().u16(5).zeros(2).u32(11).u32(10).u32(12).u32(0).get(), [{ id: 0, blkno: 11, willInit: true }, { id: 1, blkno: 40 }]);
  assertRedoError(() => redo(parent, bad, 1), /offset 6 is not on the page/);
});

test('UNLINK_PAGE(_META): deleted target with safexid, sibling links, leaf top-parent link, metapage', () => {
  const main = new W().u32(21).u32(22).u32(1).zeros(4).u64(0x7_0000_1234n).u32(31).u32(32).u32(33).get();
  const m: Meta = { version: 4, root: 3, level: 2, fastroot: 22, fastlevel: 1, delpages: 7, allequal: false };
  const rec = mkRec(OP.UNLINK_PAGE_META, main, [
    { id: 0, blkno: 23, willInit: true }, { id: 1, blkno: 21 }, { id: 2, blkno: 22 }, { id: 3, blkno: 30, willInit: true },
    { id: 4, blkno: 0, data: metaData(m), willInit: true },
  ]);
  // Target: written from BTPageSetDeleted's description (pd_lower after an 8-byte safexid, no tuples).
  const target = Buffer.alloc(8192);
  target.writeUInt32LE(1, 0);
  target.writeUInt32LE(Number(END_LSN & 0xffffffffn), 4);
  target.writeUInt16LE(32, 12);
  target.writeUInt16LE(SPECIAL, 14);
  target.writeUInt16LE(SPECIAL, 16);
  target.writeUInt16LE(0x2004, 18);
  target.writeBigUInt64LE(0x7_0000_1234n, 24);
  target.writeUInt32LE(21, SPECIAL);
  target.writeUInt32LE(22, SPECIAL + 4);
  target.writeUInt32LE(1, SPECIAL + 8);
  target.writeUInt16LE(F.DELETED | F.HAS_FULLXID, SPECIAL + 12);
  assertSamePage(redo(Buffer.alloc(8192), rec, 0), target, 'deleted target');

  const leftOpq: Opaque = { prev: 20, next: 23, level: 1, flags: 0, cycleid: 0 };
  const left = btPage([pivot(10, 0), minusInfinity(5)], leftOpq);
  assertSamePage(redo(left, rec, 1), withLsn(btPage([pivot(10, 0), minusInfinity(5)], { ...leftOpq, next: 22 }), END_LSN), 'left sibling');
  const rightOpq: Opaque = { prev: 23, next: 0, level: 1, flags: 0, cycleid: 0 };
  const right = btPage([minusInfinity(6)], rightOpq);
  assertSamePage(redo(right, rec, 2), withLsn(btPage([minusInfinity(6)], { ...rightOpq, prev: 21 }), END_LSN), 'right sibling');
  assertSamePage(redo(Buffer.alloc(8192), rec, 3), halfDeadLeaf(31, 32, 33, END_LSN), 'leaf with new top parent');
  assertSamePage(redo(Buffer.alloc(8192), rec, 4), expectedMetapage(m, END_LSN), 'metapage');

  // A leaf target (level 0) gets BTP_LEAF too; plain UNLINK_PAGE has no metapage block.
  const leafMain = new W().u32(0).u32(22).u32(0).zeros(4).u64(99n).u32(0xffffffff).u32(0xffffffff).u32(0xffffffff).get();
  const rec2 = mkRec(OP.UNLINK_PAGE, leafMain, [{ id: 0, blkno: 23, willInit: true }, { id: 2, blkno: 22 }]);
  const t2 = redo(Buffer.alloc(8192), rec2, 0);
  assert.deepEqual(opaqueOf(t2), { prev: 0, next: 22, level: 0, flags: F.DELETED | F.HAS_FULLXID | F.LEAF, cycleid: 0 });
  assert.equal(t2.readBigUInt64LE(24), 99n);
  assertRedoError(() => redo(Buffer.alloc(8192), rec2, 1), /no block reference 1/);
});

// ------------------------------------------------------------------------------------------------
// New root, metapage, reuse.

test('NEWROOT: an empty leaf root, and a level-1 root restored from two logged downlinks', () => {
  const m: Meta = { version: 4, root: 3, level: 0, fastroot: 3, fastlevel: 0, delpages: 0, allequal: true };
  const r0 = mkRec(OP.NEWROOT, new W().u32(3).u32(0).get(), [{ id: 0, blkno: 3, willInit: true }, { id: 2, blkno: 0, data: metaData(m), willInit: true }]);
  assertSamePage(redo(Buffer.alloc(8192), r0, 0), btPage([], { prev: 0, next: 0, level: 0, flags: F.ROOT | F.LEAF, cycleid: 0 }, { lsn: END_LSN }), 'leaf root');
  assertSamePage(redo(Buffer.alloc(8192), r0, 2), expectedMetapage(m, END_LSN), 'metapage');

  const rootItems = [minusInfinity(1), pivot(50, 2)];
  const expectedRoot = btPage(rootItems, { prev: 0, next: 0, level: 1, flags: F.ROOT, cycleid: 0 }, { lsn: END_LSN });
  const m1 = { ...m, root: 4, level: 1, fastroot: 4, fastlevel: 1 };
  const r1 = mkRec(OP.NEWROOT, new W().u32(4).u32(1).get(), [
    { id: 0, blkno: 4, willInit: true, data: tupleArea(expectedRoot) }, { id: 1, blkno: 1 }, { id: 2, blkno: 0, data: metaData(m1), willInit: true },
  ]);
  assertSamePage(redo(Buffer.alloc(8192), r1, 0), expectedRoot, 'level-1 root');
  const childOpq: Opaque = { prev: 0, next: 2, level: 0, flags: F.LEAF | F.INCOMPLETE_SPLIT, cycleid: 0 };
  assertSamePage(redo(btPage([pivot(50, 0)], childOpq), r1, 1), withLsn(btPage([pivot(50, 0)], { ...childOpq, flags: F.LEAF }), END_LSN), 'left child');
  assertSamePage(redo(Buffer.alloc(8192), r1, 2), expectedMetapage(m1, END_LSN), 'metapage 1');
});

test('META_CLEANUP rebuilds the metapage; REUSE_PAGE touches no page', () => {
  const m: Meta = { version: 4, root: 9, level: 3, fastroot: 8, fastlevel: 2, delpages: 123, allequal: true };
  const rec = mkRec(OP.META_CLEANUP, undefined, [{ id: 0, blkno: 0, data: metaData(m), willInit: true }]);
  const old = expectedMetapage({ ...m, delpages: 5 }, OLD_LSN);
  assertSamePage(redo(old, rec, 0), expectedMetapage(m, END_LSN), 'meta cleanup');
  const reuse = mkRec(OP.REUSE_PAGE, new W().u32(1663).u32(5).u32(16400).u32(77).u64(1n).get(), []);
  assertRedoError(() => redo(old, reuse, 0), /no block reference 0/);
});

test('redo refuses pages that are not btree pages and unknown op codes', () => {
  const heapLike = Buffer.alloc(8192);
  heapLike.writeUInt16LE(24, 12);
  heapLike.writeUInt16LE(8192, 14);
  heapLike.writeUInt16LE(8192, 16);
  const rec = mkRec(OP.INSERT_LEAF, new W().u16(1).get(), [{ id: 0, blkno: 5, data: leaf(1, [1, 1]) }]);
  assertRedoError(() => redo(heapLike, rec, 0), /not a btree page/);
  const unknown = mkRec(0xf0, new W().u16(1).get(), [{ id: 0, blkno: 5, data: leaf(1, [1, 1]) }]);
  assertRedoError(() => redo(btPage([], LEAF_RIGHTMOST), unknown, 0), /unknown btree op code 0xf0/);
});
