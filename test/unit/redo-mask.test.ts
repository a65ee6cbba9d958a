/**
 * PostgreSQL's consistency-check masks (src/redo/mask.ts) on hand-built pages.
 *
 * Each test builds two pages that differ only in what PostgreSQL's rm_mask of that rmgr ignores
 * (bufmask.c, heap_mask, btree_mask, seq_mask, generic_mask) and checks they compare equal after
 * masking, and that a difference in a byte the mask must keep still shows. Byte positions come from
 * PostgreSQL's struct layouts (PageHeaderData, ItemIdData, HeapTupleHeaderData, BTPageOpaqueData),
 * written out here by hand.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  MaskError, maskBtreePage, maskHeaderHintBits, maskHeapPage, maskLpFlags, maskLsnAndChecksum, maskPage, maskPageContent,
  maskUnusedSpace,
} from '../../src/redo/mask.ts';
import { RM_BTREE_ID, RM_GENERIC_ID, RM_HASH_ID, RM_HEAP2_ID, RM_HEAP_ID, RM_SEQ_ID, RM_XLOG_ID } from '../../src/postgres/rmgr.ts';

const LP_UNUSED = 0;
const LP_NORMAL = 1;
const LP_REDIRECT = 2;
const LP_DEAD = 3;

interface Item {
  flags: number;
  bytes: Uint8Array;
}

/** A page with the given items placed top-down below `special`, line pointers from 24. */
function buildPage(items: Item[], specialBytes = 0, fill = 0): Buffer {
  const page = Buffer.alloc(8192, fill);
  const special = 8192 - specialBytes;
  let upper = special;
  page.fill(0, 0, 24);
  for (let i = 0; i < items.length; i++) {
    const it = items[i]!;
    let off = 0;
    if (it.bytes.length > 0) {
      upper -= (it.bytes.length + 7) & ~7;
      page.fill(0, upper, upper + ((it.bytes.length + 7) & ~7));
      page.set(it.bytes, upper);
      off = upper;
    }
    page.writeUInt32LE((off | (it.flags << 15) | (it.bytes.length << 17)) >>> 0, 24 + 4 * i);
  }
  if (specialBytes > 0) page.fill(0, special, 8192);
  page.writeUInt16LE(24 + 4 * items.length, 12);
  page.writeUInt16LE(upper, 14);
  page.writeUInt16LE(special, 16);
  page.writeUInt16LE(0x2004, 18);
  return page;
}

/** A heap tuple: 23-byte header (+1 pad to t_hoff 24) and `dataLen` data bytes. */
function heapTuple(opts: { xmin: number; infomask: number; cid?: number; ctid?: [number, number]; dataLen: number; seed: number }): Uint8Array {
  const t = Buffer.alloc(24 + opts.dataLen);
  t.writeUInt32LE(opts.xmin, 0);
  t.writeUInt32LE(0, 4);
  t.writeUInt32LE(opts.cid ?? 0, 8);
  const [blk, pos] = opts.ctid ?? [0, 1];
  t.writeUInt16LE(blk >>> 16, 12);
  t.writeUInt16LE(blk & 0xffff, 14);
  t.writeUInt16LE(pos, 16);
  t.writeUInt16LE(3, 18); // natts
  t.writeUInt16LE(opts.infomask, 20);
  t[22] = 24;
  for (let i = 0; i < opts.dataLen; i++) t[24 + i] = (opts.seed + i * 7) & 0xff;
  return t;
}

function masked(fn: (p: Buffer) => void, p: Buffer): Buffer {
  const c = Buffer.from(p);
  fn(c);
  return c;
}

test('mask_page_lsn_and_checksum zeroes exactly pd_lsn and pd_checksum', () => {
  const p = Buffer.alloc(8192, 0xaa);
  maskLsnAndChecksum(p);
  for (let i = 0; i < 10; i++) assert.equal(p[i], 0, `byte ${i}`);
  assert.equal(p[10], 0xaa, 'pd_flags untouched');
  assert.equal(p[11], 0xaa);
});

test('header hint bits: prune xid and the three hint flags cleared, other flag bits kept', () => {
  const p = buildPage([]);
  p.writeUInt32LE(12345, 20);
  p.writeUInt16LE(0x0007 | 0x0100, 10); // HAS_FREE_LINES | PAGE_FULL | ALL_VISIBLE | an unrelated bit
  maskHeaderHintBits(p);
  assert.equal(p.readUInt32LE(20), 0);
  assert.equal(p.readUInt16LE(10), 0x0100);
});

test('unused space: [pd_lower, pd_upper) zeroed, nothing else; invalid bounds refused', () => {
  const p = buildPage([{ flags: LP_NORMAL, bytes: new Uint8Array(40).fill(9) }], 16, 0x55);
  const lower = p.readUInt16LE(12);
  const upper = p.readUInt16LE(14);
  maskUnusedSpace(p);
  for (let i = lower; i < upper; i++) assert.equal(p[i], 0);
  assert.equal(p[upper], 9, 'first tuple byte kept');
  assert.equal(p.readUInt16LE(12), lower);
  const bad = buildPage([]);
  bad.writeUInt16LE(9000, 14); // pd_upper past pd_special
  assert.throws(() => maskUnusedSpace(bad), (e: unknown) => e instanceof MaskError && e.code === 'mask_failed');
  const zero = Buffer.alloc(8192);
  assert.throws(() => maskUnusedSpace(zero), MaskError, 'an all-zero page has pd_lower 0 < 24: PostgreSQL refuses it too');
});

test('lp flags: every used line pointer becomes LP_UNUSED, offsets and lengths kept', () => {
  const items: Item[] = [
    { flags: LP_NORMAL, bytes: new Uint8Array(16).fill(1) },
    { flags: LP_DEAD, bytes: new Uint8Array(16).fill(2) },
    { flags: LP_REDIRECT, bytes: new Uint8Array(0) },
    { flags: LP_UNUSED, bytes: new Uint8Array(0) },
  ];
  const p = buildPage(items);
  const before = [0, 1, 2, 3].map((i) => p.readUInt32LE(24 + 4 * i));
  maskLpFlags(p);
  for (let i = 0; i < 4; i++) {
    const w = p.readUInt32LE(24 + 4 * i);
    assert.equal((w >>> 15) & 3, LP_UNUSED, `item ${i + 1} flags`);
    assert.equal(w & 0x7fff, before[i]! & 0x7fff, `item ${i + 1} lp_off`);
    assert.equal(w >>> 17, before[i]! >>> 17, `item ${i + 1} lp_len`);
  }
});

test('page content mask: everything after the header and pd_lower/pd_upper', () => {
  const p = buildPage([{ flags: LP_NORMAL, bytes: new Uint8Array(16).fill(3) }], 16, 0x77);
  p.writeUInt16LE(5, 10);
  maskPageContent(p);
  for (let i = 24; i < 8192; i++) assert.equal(p[i], 0);
  assert.equal(p.readUInt16LE(12), 0);
  assert.equal(p.readUInt16LE(14), 0);
  assert.equal(p.readUInt16LE(10), 5, 'pd_flags kept');
  assert.equal(p.readUInt16LE(16), 8192 - 16, 'pd_special kept');
});

test('heap mask: hint bits, cid, speculative ctid and padding are ignored; tuple data and xmin are not', () => {
  const HEAP_XMIN_COMMITTED = 0x0100;
  const HEAP_XMIN_INVALID = 0x0200;
  const HEAP_XMAX_COMMITTED = 0x0400;
  const HEAP_XMAX_INVALID = 0x0800;
  const HEAP_UPDATED = 0x2000;
  const HEAP_HASNULL = 0x0001;
  const HEAP_HASVARWIDTH = 0x0002;
  const frozen = HEAP_XMIN_COMMITTED | HEAP_XMIN_INVALID;
  // Item 1: plain tuple, 13 data bytes (37 bytes: 3 padding bytes after it).
  // Item 2: frozen xmin. Item 3: speculative insertion (ctid posid 0xfffe). Item 4: dead with storage.
  const make = (v: 'replay' | 'primary'): Buffer => {
    const primary = v === 'primary';
    const p = buildPage([
      { flags: LP_NORMAL, bytes: heapTuple({ xmin: 700, infomask: HEAP_HASVARWIDTH | (primary ? HEAP_XMIN_COMMITTED | HEAP_XMAX_INVALID | HEAP_UPDATED : 0), cid: primary ? 17 : 0, dataLen: 13, seed: 1 }) },
      { flags: LP_NORMAL, bytes: heapTuple({ xmin: 2, infomask: HEAP_HASNULL | frozen | (primary ? HEAP_XMAX_INVALID | HEAP_XMAX_COMMITTED : 0), dataLen: 8, seed: 2 }) },
      { flags: LP_NORMAL, bytes: heapTuple({ xmin: 701, infomask: 0, ctid: primary ? [0, 0xfffe] : [7, 3], dataLen: 5, seed: 3 }) },
      { flags: LP_DEAD, bytes: new Uint8Array(27).fill(4) },
    ]);
    const lower = p.readUInt16LE(12);
    const upper = p.readUInt16LE(14);
    if (primary) {
      p.fill(0xee, lower, upper); // garbage in the unused space
      p.writeUInt32LE(999, 20); // prune xid
      p.writeUInt16LE(0x0004 | 0x0002, 10); // ALL_VISIBLE | PAGE_FULL
      p.writeUInt32LE(0x12, 0);
      p.writeUInt16LE(0xbeef, 8);
      // padding bytes after item 1 (37 bytes long) and item 4 (27 bytes)
      const off1 = p.readUInt32LE(24) & 0x7fff;
      p.fill(0xcd, off1 + 37, off1 + 40);
      const off4 = p.readUInt32LE(36) & 0x7fff;
      p.fill(0xcd, off4 + 27, off4 + 32);
    }
    return p;
  };
  const replay = make('replay');
  const primary = make('primary');
  assert.notDeepEqual(replay, primary);
  const blkno = 7;
  const a = masked((p) => maskHeapPage(p, blkno), replay);
  const b = masked((p) => maskHeapPage(p, blkno), primary);
  assert.ok(a.equals(b), 'pages equal after heap_mask');
  // The speculative tuple's ctid became (blkno, its own offset 3).
  const off3 = b.readUInt32LE(32) & 0x7fff;
  assert.deepEqual([b.readUInt16LE(off3 + 12), b.readUInt16LE(off3 + 14), b.readUInt16LE(off3 + 16)], [0, 7, 3]);
  // Frozen tuple: xmin hint bits are kept (only xmax hints masked).
  const off2 = b.readUInt32LE(28) & 0x7fff;
  assert.equal(b.readUInt16LE(off2 + 20) & frozen, frozen);
  // Item 1: only the four layout bits survive.
  const off1 = b.readUInt32LE(24) & 0x7fff;
  assert.equal(b.readUInt16LE(off1 + 20), HEAP_HASVARWIDTH);

  // Differences the mask must not hide.
  for (const [what, change] of [
    ['a data byte', (p: Buffer) => { const o = p.readUInt32LE(24) & 0x7fff; p[o + 30] = p[o + 30]! ^ 1; }],
    ['xmin', (p: Buffer) => { const o = p.readUInt32LE(24) & 0x7fff; p.writeUInt32LE(701, o); }],
    ['t_infomask2', (p: Buffer) => { const o = p.readUInt32LE(24) & 0x7fff; p.writeUInt16LE(4, o + 18); }],
    ['a frozen tuple\'s xmin hints', (p: Buffer) => { const o = p.readUInt32LE(28) & 0x7fff; p.writeUInt16LE(p.readUInt16LE(o + 20) & ~HEAP_XMIN_INVALID, o + 20); }],
    ['a line pointer flag', (p: Buffer) => { p.writeUInt32LE((p.readUInt32LE(24) & ~(3 << 15)) | (LP_DEAD << 15), 24); }],
    ['pd_special', (p: Buffer) => { p.writeUInt16LE(8184, 16); }],
  ] as const) {
    const c = Buffer.from(primary);
    change(c);
    assert.ok(!masked((p) => maskHeapPage(p, blkno), c).equals(a), `a change of ${what} must survive heap_mask`);
  }
  // Heap2 uses the same mask through the dispatcher.
  const viaDispatch = Buffer.from(primary);
  maskPage(RM_HEAP2_ID, viaDispatch, blkno);
  assert.ok(viaDispatch.equals(b));
  const viaHeap = Buffer.from(primary);
  maskPage(RM_HEAP_ID, viaHeap, blkno);
  assert.ok(viaHeap.equals(b));
});

test('btree mask: leaf line-pointer flags, BTP_HAS_GARBAGE, BTP_SPLIT_END and cycle id ignored', () => {
  const BTP_LEAF = 0x01;
  const BTP_ROOT = 0x02;
  const BTP_SPLIT_END = 0x20;
  const BTP_HAS_GARBAGE = 0x40;
  const make = (leaf: boolean, primary: boolean): Buffer => {
    const p = buildPage([
      { flags: primary ? LP_DEAD : LP_NORMAL, bytes: new Uint8Array(16).fill(1) },
      { flags: LP_NORMAL, bytes: new Uint8Array(16).fill(2) },
    ], 16);
    const sp = 8192 - 16;
    p.writeUInt32LE(3, sp); // btpo_prev
    p.writeUInt32LE(9, sp + 4); // btpo_next
    p.writeUInt32LE(leaf ? 0 : 1, sp + 8); // btpo_level
    p.writeUInt16LE((leaf ? BTP_LEAF : 0) | BTP_ROOT | (primary ? BTP_SPLIT_END | BTP_HAS_GARBAGE : 0), sp + 12);
    p.writeUInt16LE(primary ? 77 : 0, sp + 14);
    return p;
  };
  const leafA = masked(maskBtreePage, make(true, false));
  const leafB = masked(maskBtreePage, make(true, true));
  assert.ok(leafA.equals(leafB), 'leaf pages equal after btree_mask');
  assert.equal(leafB.readUInt16LE(8192 - 16 + 12), BTP_LEAF | BTP_ROOT, 'other btpo_flags kept');
  // On an internal page the line-pointer flags are WAL-logged: an LP_DEAD difference must show.
  const innerA = masked(maskBtreePage, make(false, false));
  const innerB = masked(maskBtreePage, make(false, true));
  assert.ok(!innerA.equals(innerB), 'internal page: lp flags are compared');
  const fixed = make(false, true);
  fixed.writeUInt32LE((fixed.readUInt32LE(24) & ~(3 << 15)) | (LP_NORMAL << 15), 24);
  assert.ok(masked(maskBtreePage, fixed).equals(innerA), 'internal page: only lp flags differed');
  // btpo_next is not masked.
  const next = make(true, true);
  next.writeUInt32LE(10, 8192 - 16 + 4);
  assert.ok(!masked(maskBtreePage, next).equals(leafA));
  const viaDispatch = make(true, true);
  maskPage(RM_BTREE_ID, viaDispatch, 0);
  assert.ok(viaDispatch.equals(leafA));
});

test('sequence and generic masks: LSN, checksum and unused space only (hint bits are compared)', () => {
  for (const rmid of [RM_SEQ_ID, RM_GENERIC_ID]) {
    const base = buildPage([{ flags: LP_NORMAL, bytes: new Uint8Array(41).fill(5) }], 8);
    const other = Buffer.from(base);
    other.writeUInt32LE(0xabcdef, 4);
    other.writeUInt16LE(0x1234, 8);
    other.fill(0x99, other.readUInt16LE(12), other.readUInt16LE(14));
    const a = Buffer.from(base);
    const b = Buffer.from(other);
    maskPage(rmid, a, 0);
    maskPage(rmid, b, 0);
    assert.ok(a.equals(b), `rmid ${rmid}: equal after mask`);
    const prune = Buffer.from(other);
    prune.writeUInt32LE(5, 20);
    maskPage(rmid, prune, 0);
    assert.ok(!prune.equals(a), `rmid ${rmid}: pd_prune_xid is not masked`);
    const pad = Buffer.from(other);
    pad[(pad.readUInt32LE(24) & 0x7fff) + 41] = 1; // padding after the 41-byte item: not masked here
    maskPage(rmid, pad, 0);
    assert.ok(!pad.equals(a), `rmid ${rmid}: item padding is not masked`);
  }
});

test('maskPage: XLOG has no mask (no change); rmgrs whose mask is not reproduced are refused', () => {
  const p = buildPage([{ flags: LP_NORMAL, bytes: new Uint8Array(8).fill(1) }]);
  p.writeUInt32LE(0x1234, 4);
  const c = Buffer.from(p);
  maskPage(RM_XLOG_ID, c, 0);
  assert.ok(c.equals(p));
  assert.throws(() => maskPage(RM_HASH_ID, Buffer.from(p), 0), (e: unknown) => e instanceof MaskError && e.code === 'mask_unsupported');
  assert.throws(() => maskPage(RM_HEAP_ID, Buffer.alloc(100), 0), MaskError);
});

test('heap mask never writes outside the page for a corrupt line pointer', () => {
  const p = buildPage([{ flags: LP_NORMAL, bytes: new Uint8Array(30).fill(1) }]);
  p.writeUInt32LE((8180 | (LP_NORMAL << 15) | (30 << 17)) >>> 0, 24);
  assert.throws(() => maskHeapPage(p, 0), MaskError);
});
