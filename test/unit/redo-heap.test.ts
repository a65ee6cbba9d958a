/**
 * Heap / Heap2 redo (src/redo/heap.ts) on hand-built pages and records.
 *
 * Records are encoded with the WAL writer and decoded as real WAL is. Expected pages are built
 * here independently: a small tuple builder lays out HeapTupleHeaderData (xmin @0, xmax @4,
 * cid @8, ctid @12 as bi_hi/bi_lo/posid, infomask2 @18, infomask @20, t_hoff @22) and line pointers
 * and positions are worked out by hand from heapam.c / bufpage.c rules (the comments say how).
 *
 * This matters most where PostgreSQL's consistency checking cannot help: heap_mask hides the
 * visibility hint bits of t_infomask (so the infobits/xmax bit handling is only checked here),
 * t_cid, pd_prune_xid, PD_ALL_VISIBLE / PD_HAS_FREE_LINES and the whole map of a VM page.
 * The real-WAL verifier (src/redo/verify.ts) covers the rest against PostgreSQL's own images.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { Lsn } from '../../src/postgres/lsn.ts';
import { RM_HEAP2_ID, RM_HEAP_ID } from '../../src/postgres/rmgr.ts';
import { encodeRecord } from '../../src/postgres/walwriter.ts';
import { decodeXLogRecord, type DecodedRecord } from '../../src/postgres/xlogrecord.ts';
import { WalRecordBodyError } from '../../src/postgres/records/common.ts';
import {
  parseHeapConfirm, parseHeapFreezePage, parseHeapFreezeTuples, parseHeapInplace, parseHeapNewCid, parseHeapPrune,
  parseHeapPruneOffsets, parseHeapTruncate, parseHeapUpdate, parseHeapUpdateNewTuple, parseHeapVacuum, parseHeapVacuumOffsets,
} from '../../src/postgres/records/heap.ts';
import { createHeap2Redo, heap2Redo, heapRedo } from '../../src/redo/heap.ts';
import { RedoError } from '../../src/redo/types.ts';

const RNODE = { spcNode: 1663, dbNode: 5, relNode: 16384 };
const REC_LSN = 0x3_0000_1000n;
const END_LSN = 0x3_0000_1088n;
const OLD_LSN = 0x2_0000_0040n;

// Heap constants as numbers (htup_details.h / heapam_xlog.h), written out independently here.
const XMIN_COMMITTED = 0x0100;
const XMAX_COMMITTED = 0x0400;
const XMAX_INVALID = 0x0800;
const COMBOCID = 0x0020;
const HASVARWIDTH = 0x0002;
const IS_MULTI = 0x1000;
const LOCK_ONLY = 0x0080;
const EXCL_LOCK = 0x0040;
const KEYSHR_LOCK = 0x0010;
const UPDATED = 0x2000;
const MOVED_OFF = 0x4000;
const KEYS_UPDATED = 0x2000;
const HOT_UPDATED = 0x4000;
const HEAP_ONLY = 0x8000;
const PD_HAS_FREE_LINES = 1;
const PD_ALL_VISIBLE = 4;

// ---------------------------------------------------------------------------------------------
// Builders.

interface BlockIn {
  id: number;
  blkno: number;
  data?: Buffer;
  forkNum?: number;
  willInit?: boolean;
}

function record(rmid: number, info: number, xid: number, main: Buffer, blocks: BlockIn[]): DecodedRecord {
  const bytes = encodeRecord({
    xid, rmid, info,
    blocks: blocks.map((b) => ({ id: b.id, rnode: RNODE, forkNum: b.forkNum ?? 0, blkno: b.blkno, willInit: b.willInit ?? false, ...(b.data ? { data: b.data } : {}) })),
    mainData: main,
  }, 0x3_0000_0f00n);
  return decodeXLogRecord(bytes, REC_LSN, END_LSN);
}

/** Little-endian field writer. */
class W {
  private readonly parts: number[] = [];
  u8(v: number): this { this.parts.push(v & 0xff); return this; }
  u16(v: number): this { this.parts.push(v & 0xff, (v >>> 8) & 0xff); return this; }
  u32(v: number): this { this.u16(v & 0xffff); return this.u16(v >>> 16); }
  raw(b: Uint8Array): this { this.parts.push(...b); return this; }
  done(): Buffer { return Buffer.from(this.parts); }
}

interface Tup {
  xmin: number;
  xmax?: number;
  cid?: number;
  ctid: [number, number];
  im2: number;
  im: number;
  hoff?: number;
  /** Bytes from offset 23 on: null bitmap / padding, then the columns. */
  body: Buffer;
}

function tup(t: Tup): Buffer {
  const b = Buffer.alloc(23 + t.body.length);
  b.writeUInt32LE(t.xmin >>> 0, 0);
  b.writeUInt32LE((t.xmax ?? 0) >>> 0, 4);
  b.writeUInt32LE((t.cid ?? 0) >>> 0, 8);
  b.writeUInt16LE(t.ctid[0] >>> 16, 12);
  b.writeUInt16LE(t.ctid[0] & 0xffff, 14);
  b.writeUInt16LE(t.ctid[1], 16);
  b.writeUInt16LE(t.im2, 18);
  b.writeUInt16LE(t.im, 20);
  b[22] = t.hoff ?? 24;
  t.body.copy(b, 23);
  return b;
}

/** xl_heap_header + tuple bytes from 23 on, as insert/update records carry them. */
function xlTuple(t: Tup): Buffer {
  return new W().u16(t.im2).u16(t.im).u8(t.hoff ?? 24).raw(t.body).done();
}

function emptyPage(flags = 0, lsn: Lsn = OLD_LSN): Buffer {
  const p = Buffer.alloc(8192);
  p.writeUInt32LE(Number(lsn >> 32n), 0);
  p.writeUInt32LE(Number(lsn & 0xffffffffn), 4);
  p.writeUInt16LE(flags, 10);
  p.writeUInt16LE(24, 12);
  p.writeUInt16LE(8192, 14);
  p.writeUInt16LE(8192, 16);
  p.writeUInt16LE(0x2004, 18);
  return p;
}

function setLp(page: Buffer, n: number, off: number, flags: number, len: number): void {
  page.writeUInt32LE((off + flags * 0x8000 + len * 0x20000) >>> 0, 24 + 4 * (n - 1));
}

function setLowerUpper(page: Buffer, lower: number, upper: number): void {
  page.writeUInt16LE(lower, 12);
  page.writeUInt16LE(upper, 14);
}

/** Puts a tuple at `off` with line pointer `n` (does not touch lower/upper). */
function put(page: Buffer, n: number, off: number, t: Buffer): void {
  setLp(page, n, off, 1, t.length);
  t.copy(page, off);
}

function setLsn(page: Buffer, lsn: Lsn): void {
  page.writeUInt32LE(Number(lsn >> 32n), 0);
  page.writeUInt32LE(Number(lsn & 0xffffffffn), 4);
}

function body(text: string): Buffer {
  return Buffer.concat([Buffer.from([0]), Buffer.from(text, 'latin1')]); // 1 padding byte, then data
}

function catchError(fn: () => unknown): unknown {
  try {
    fn();
  } catch (err) {
    return err;
  }
  assert.fail('expected an error');
}

function assertRedoError(fn: () => unknown, re: RegExp): void {
  const err = catchError(fn);
  assert.ok(err instanceof RedoError, `expected a RedoError, got ${String(err)}`);
  assert.match((err as Error).message, re);
}

// ---------------------------------------------------------------------------------------------
// HEAP INSERT

const T1: Tup = { xmin: 0, ctid: [0, 0], im2: 2, im: XMAX_INVALID | HASVARWIDTH, body: body('abcdefgh') }; // 23 + 9 = 32 bytes

test('INSERT: tuple header rebuilt (xmin = record xid, cid 0, combo cid bit dropped, ctid = own TID)', () => {
  const page = emptyPage(PD_ALL_VISIBLE);
  const logged = { ...T1, im: T1.im | COMBOCID };
  const rec = record(RM_HEAP_ID, 0x00, 1000, new W().u16(1).u8(0x01).done(), [{ id: 0, blkno: 7, data: xlTuple(logged) }]);
  heapRedo(page, rec, 0, END_LSN);
  const expected = emptyPage(0, END_LSN); // PD_ALL_VISIBLE cleared (XLH_INSERT_ALL_VISIBLE_CLEARED)
  setLowerUpper(expected, 28, 8160); // 32 bytes below 8192
  put(expected, 1, 8160, tup({ ...T1, xmin: 1000, ctid: [7, 1] }));
  assert.deepEqual(page, expected);
});

test('INSERT+INIT initialises the page first; large block numbers split into bi_hi/bi_lo', () => {
  const page = Buffer.alloc(8192);
  const rec = record(RM_HEAP_ID, 0x80, 1001, new W().u16(1).u8(0).done(), [{ id: 0, blkno: 0x12345, data: xlTuple(T1), willInit: true }]);
  heapRedo(page, rec, 0, END_LSN);
  const expected = emptyPage(0, END_LSN);
  setLowerUpper(expected, 28, 8160);
  put(expected, 1, 8160, tup({ ...T1, xmin: 1001, ctid: [0x12345, 1] }));
  assert.deepEqual(page, expected);
  assert.deepEqual([...page.subarray(8160 + 12, 8160 + 18)], [0x01, 0x00, 0x45, 0x23, 0x01, 0x00]);
});

test('INSERT reuses an unused line pointer, fills a page exactly, and refuses what PostgreSQL refuses', () => {
  const page = emptyPage(PD_HAS_FREE_LINES);
  const old = tup({ ...T1, xmin: 5, ctid: [3, 1] });
  put(page, 1, 8160, old);
  setLp(page, 2, 0, 0, 0);
  put(page, 3, 8128, old);
  setLowerUpper(page, 36, 8128);
  const rec = record(RM_HEAP_ID, 0x00, 1002, new W().u16(2).u8(0).done(), [{ id: 0, blkno: 3, data: xlTuple(T1) }]);
  heapRedo(page, rec, 0, END_LSN);
  const expected = emptyPage(PD_HAS_FREE_LINES, END_LSN); // the hint is left alone by a given offset
  put(expected, 1, 8160, old);
  put(expected, 3, 8128, old);
  put(expected, 2, 8096, tup({ ...T1, xmin: 1002, ctid: [3, 2] }));
  setLowerUpper(expected, 36, 8096);
  assert.deepEqual(page, expected);

  // Exactly full: lower 40 after the new line pointer must equal upper after the tuple.
  const full = emptyPage();
  setLowerUpper(full, 36, 8096 - 0);
  full.writeUInt16LE(40 + 32, 14); // upper 72: a 32-byte tuple lands at 40 = new lower
  for (let i = 1; i <= 3; i++) setLp(full, i, 0, 3, 0);
  const recFull = record(RM_HEAP_ID, 0x00, 1003, new W().u16(4).u8(0).done(), [{ id: 0, blkno: 3, data: xlTuple(T1) }]);
  heapRedo(full, recFull, 0, END_LSN);
  assert.equal(full.readUInt16LE(12), 40);
  assert.equal(full.readUInt16LE(14), 40);
  assert.equal(full.readUInt32LE(24 + 12), (40 | 1 << 15 | 32 << 17) >>> 0);

  const tooFull = emptyPage();
  tooFull.writeUInt16LE(36, 12);
  tooFull.writeUInt16LE(40 + 31, 14); // one byte short
  for (let i = 1; i <= 3; i++) setLp(tooFull, i, 0, 3, 0);
  assertRedoError(() => heapRedo(tooFull, recFull, 0, END_LSN), /failed to add tuple/);
  const gap = record(RM_HEAP_ID, 0x00, 1003, new W().u16(6).u8(0).done(), [{ id: 0, blkno: 3, data: xlTuple(T1) }]);
  assertRedoError(() => heapRedo(emptyPage(), gap, 0, END_LSN), /invalid max offset number/);
  const used = record(RM_HEAP_ID, 0x00, 1003, new W().u16(1).u8(0).done(), [{ id: 0, blkno: 3, data: xlTuple(T1) }]);
  assertRedoError(() => heapRedo(Buffer.from(expected), used, 0, END_LSN), /failed to add tuple/);
  assertRedoError(() => heapRedo(emptyPage(), used, 1, END_LSN), /only block reference 0/);
  const short = record(RM_HEAP_ID, 0x00, 1003, new W().u16(1).done(), [{ id: 0, blkno: 3, data: xlTuple(T1) }]);
  assertRedoError(() => heapRedo(emptyPage(), short, 0, END_LSN), /xl_heap_insert needs 3/);
});

// ---------------------------------------------------------------------------------------------
// HEAP DELETE

/** A page with one committed tuple at lp1 (8160) whose xmax bits and cid need rewriting. */
function pageWithVictim(flags = 0, pruneXid = 0): { page: Buffer; victim: Tup } {
  const victim: Tup = {
    xmin: 900, xmax: 555, cid: 77, ctid: [6, 9], im2: HOT_UPDATED | KEYS_UPDATED | 3,
    im: XMIN_COMMITTED | XMAX_INVALID | COMBOCID | HASVARWIDTH | MOVED_OFF, body: body('vvvvvvvv'),
  };
  const page = emptyPage(flags);
  put(page, 1, 8160, tup(victim));
  setLowerUpper(page, 28, 8160);
  page.writeUInt32LE(pruneXid, 20);
  return { page, victim };
}

test('DELETE: xmax bits replaced from infobits, HOT/KEYS flags, cid 0, ctid, prune xid, all-visible', () => {
  const { page, victim } = pageWithVictim(PD_ALL_VISIBLE | PD_HAS_FREE_LINES);
  // xl_heap_delete: xmax 2000, offnum 1, infobits KEYS_UPDATED (0x10), flags ALL_VISIBLE_CLEARED.
  const rec = record(RM_HEAP_ID, 0x10, 2000, new W().u32(2000).u16(1).u8(0x10).u8(0x01).done(), [{ id: 0, blkno: 4 }]);
  heapRedo(page, rec, 0, END_LSN);
  const expected = emptyPage(PD_HAS_FREE_LINES, END_LSN);
  // infomask: XMAX_INVALID, MOVED_OFF dropped; COMBOCID dropped by SetCmax; XMIN_COMMITTED, HASVARWIDTH stay.
  // infomask2: HOT_UPDATED cleared, KEYS_UPDATED from the infobits.
  put(expected, 1, 8160, tup({ ...victim, xmax: 2000, cid: 0, ctid: [4, 1], im: XMIN_COMMITTED | HASVARWIDTH, im2: KEYS_UPDATED | 3 }));
  setLowerUpper(expected, 28, 8160);
  expected.writeUInt32LE(2000, 20);
  assert.deepEqual(page, expected);
});

test('DELETE variants: lock bits from infobits, super-delete, partition move, prune xid kept if older', () => {
  let { page, victim } = pageWithVictim(0, 1500);
  // infobits IS_MULTI | LOCK_ONLY | EXCL_LOCK | KEYSHR_LOCK (0x0f).
  const multi = record(RM_HEAP_ID, 0x10, 2001, new W().u32(77777).u16(1).u8(0x0f).u8(0).done(), [{ id: 0, blkno: 4 }]);
  heapRedo(page, multi, 0, END_LSN);
  let expected = emptyPage(0, END_LSN);
  put(expected, 1, 8160, tup({ ...victim, xmax: 77777, cid: 0, ctid: [4, 1], im: XMIN_COMMITTED | HASVARWIDTH | IS_MULTI | LOCK_ONLY | EXCL_LOCK | KEYSHR_LOCK, im2: 3 }));
  setLowerUpper(expected, 28, 8160);
  expected.writeUInt32LE(1500, 20); // 1500 precedes 2001: kept
  assert.deepEqual(page, expected);

  ({ page, victim } = pageWithVictim(0, 0));
  const superDel = record(RM_HEAP_ID, 0x10, 2002, new W().u32(0).u16(1).u8(0).u8(0x08).done(), [{ id: 0, blkno: 4 }]);
  heapRedo(page, superDel, 0, END_LSN);
  expected = emptyPage(0, END_LSN);
  put(expected, 1, 8160, tup({ ...victim, xmin: 0, xmax: 555, cid: 0, ctid: [4, 1], im: XMIN_COMMITTED | HASVARWIDTH, im2: 3 }));
  setLowerUpper(expected, 28, 8160);
  expected.writeUInt32LE(2002, 20);
  assert.deepEqual(page, expected);

  ({ page, victim } = pageWithVictim(0, 0));
  const moved = record(RM_HEAP_ID, 0x10, 2003, new W().u32(2003).u16(1).u8(0).u8(0x10).done(), [{ id: 0, blkno: 4 }]);
  heapRedo(page, moved, 0, END_LSN);
  assert.deepEqual([...page.subarray(8160 + 12, 8160 + 18)], [0xff, 0xff, 0xff, 0xff, 0xfd, 0xff]);

  ({ page } = pageWithVictim());
  setLp(page, 1, 2, 2, 0); // a redirect, not a tuple
  assertRedoError(() => heapRedo(page, moved, 0, END_LSN), /invalid lp/);
  const beyond = record(RM_HEAP_ID, 0x10, 2003, new W().u32(2003).u16(2).u8(0).u8(0).done(), [{ id: 0, blkno: 4 }]);
  assertRedoError(() => heapRedo(pageWithVictim().page, beyond, 0, END_LSN), /invalid lp/);
});

// ---------------------------------------------------------------------------------------------
// HEAP UPDATE / HOT_UPDATE

const OLD_ROW: Tup = { xmin: 800, cid: 3, ctid: [2, 1], im2: 3, im: XMIN_COMMITTED | XMAX_INVALID | HASVARWIDTH, body: body('AAAAAxxxxxBBBBB') };

function updateMain(oldXmax: number, oldOff: number, infobits: number, flags: number, newXmax: number, newOff: number): Buffer {
  return new W().u32(oldXmax).u16(oldOff).u8(infobits).u8(flags).u32(newXmax).u16(newOff).done();
}

test('same-page UPDATE with prefix and suffix taken from the old tuple', () => {
  const page = emptyPage(PD_ALL_VISIBLE);
  const old = tup(OLD_ROW); // 23 + 16 = 39 bytes at 8192 - 40 = 8152
  put(page, 1, 8152, old);
  setLowerUpper(page, 28, 8152);
  // New row 'AAAAAyyyyyyyBBBBB': prefix 5, suffix 5; logged: pad byte + 'yyyyyyy'.
  const newRow: Tup = { xmin: 0, ctid: [0, 0], im2: 3, im: XMAX_INVALID | HASVARWIDTH | UPDATED, body: body('AAAAAyyyyyyyBBBBB') };
  const data = new W().u16(5).u16(5).u16(newRow.im2).u16(newRow.im).u8(24).raw(body('yyyyyyy')).done();
  // flags: OLD_ALL_VISIBLE_CLEARED | NEW_ALL_VISIBLE_CLEARED | PREFIX | SUFFIX; infobits KEYS_UPDATED.
  const rec = record(RM_HEAP_ID, 0x20, 3000, updateMain(3000, 1, 0x10, 0x63, 0x1234, 2), [{ id: 0, blkno: 2, data }]);
  heapRedo(page, rec, 0, END_LSN);
  const expected = emptyPage(0, END_LSN);
  put(expected, 1, 8152, tup({ ...OLD_ROW, xmax: 3000, cid: 0, ctid: [2, 2], im: XMIN_COMMITTED | HASVARWIDTH, im2: KEYS_UPDATED | 3 }));
  // New tuple: 23 + 18 = 41 bytes, aligned 48: 8152 - 48 = 8104.
  put(expected, 2, 8104, tup({ ...newRow, xmin: 3000, xmax: 0x1234, ctid: [2, 2] }));
  setLowerUpper(expected, 32, 8104);
  expected.writeUInt32LE(3000, 20);
  assert.deepEqual(page, expected);
});

test('HOT chain: two HOT updates then PRUNE with a redirect, relocating the survivors', () => {
  const page = emptyPage();
  put(page, 1, 8152, tup(OLD_ROW));
  setLowerUpper(page, 28, 8152);
  const v2: Tup = { xmin: 0, ctid: [0, 0], im2: HEAP_ONLY | 3, im: XMAX_INVALID | HASVARWIDTH | UPDATED, body: body('AAAAAxxxxxBBBB2') };
  const v3: Tup = { ...v2, body: body('AAAAAxxxxxBBBB3') };
  // HOT_UPDATE 1 -> 2 (suffix-free, prefix 14: only the last byte is logged).
  const d2 = new W().u16(14).u16(v2.im2).u16(v2.im).u8(24).raw(Buffer.from([0, 0x32])).done();
  heapRedo(page, record(RM_HEAP_ID, 0x40, 3100, updateMain(3100, 1, 0, 0x20, 0, 2), [{ id: 0, blkno: 2, data: d2 }]), 0, END_LSN);
  const d3 = new W().u16(v3.im2).u16(v3.im).u8(24).raw(v3.body).done();
  heapRedo(page, record(RM_HEAP_ID, 0x40, 3101, updateMain(3101, 2, 0, 0, 0, 3), [{ id: 0, blkno: 2, data: d3 }]), 0, END_LSN + 8n);

  const afterUpdates = emptyPage(0, END_LSN + 8n);
  const t1 = tup({ ...OLD_ROW, xmax: 3100, cid: 0, ctid: [2, 2], im: XMIN_COMMITTED | HASVARWIDTH, im2: HOT_UPDATED | 3 });
  const t2 = tup({ ...v2, xmin: 3100, xmax: 3101, ctid: [2, 3], im: HASVARWIDTH | UPDATED, im2: HOT_UPDATED | HEAP_ONLY | 3 });
  const t3 = tup({ ...v3, xmin: 3101, ctid: [2, 3] });
  put(afterUpdates, 1, 8152, t1);
  put(afterUpdates, 2, 8112, t2); // each 39 bytes, 40 aligned
  put(afterUpdates, 3, 8072, t3);
  setLowerUpper(afterUpdates, 36, 8072);
  afterUpdates.writeUInt32LE(3100, 20); // the first (older) xid stays the prune hint
  assert.deepEqual(page, afterUpdates);

  // PRUNE: redirect 1 -> 3, tuple 2 unused (heap-only, dead). latestRemovedXid 3100.
  const prune = record(RM_HEAP2_ID, 0x10, 0, new W().u32(3100).u16(1).u16(0).done(), [{ id: 0, blkno: 2, data: new W().u16(1).u16(3).u16(2).done() }]);
  heap2Redo(page, prune, 0, END_LSN + 16n);
  const expected = emptyPage(PD_HAS_FREE_LINES, END_LSN + 16n); // lp2 unused and not trailing
  setLp(expected, 1, 3, 2, 0);
  setLp(expected, 2, 0, 0, 0);
  put(expected, 3, 8152, t3); // the only tuple left moves to the end of the page
  setLowerUpper(expected, 36, 8152);
  expected.writeUInt32LE(3100, 20); // prune redo leaves pd_prune_xid alone
  // Bytes below the new pd_upper are free space: whatever PostgreSQL leaves there is not compared.
  page.fill(0, 36, 8152);
  assert.deepEqual(page, expected);
});

test('cross-page UPDATE: block 1 gets the old tuple change, block 0 the new tuple (+INIT)', () => {
  const oldPage = emptyPage(PD_ALL_VISIBLE);
  put(oldPage, 1, 8152, tup(OLD_ROW));
  setLowerUpper(oldPage, 28, 8152);
  const newRow: Tup = { xmin: 0, ctid: [0, 0], im2: 3, im: XMAX_INVALID | HASVARWIDTH | UPDATED, body: body('new row!') };
  const rec = record(RM_HEAP_ID, 0x20 | 0x80, 3200, updateMain(3200, 1, 0x10, 0x01, 0, 1), [
    { id: 0, blkno: 9, data: xlTuple(newRow), willInit: true },
    { id: 1, blkno: 2 },
  ]);
  const oldBefore = Buffer.from(oldPage);
  heapRedo(oldPage, rec, 1, END_LSN);
  const expectedOld = emptyPage(0, END_LSN);
  put(expectedOld, 1, 8152, tup({ ...OLD_ROW, xmax: 3200, cid: 0, ctid: [9, 1], im: XMIN_COMMITTED | HASVARWIDTH, im2: KEYS_UPDATED | 3 }));
  setLowerUpper(expectedOld, 28, 8152);
  expectedOld.writeUInt32LE(3200, 20);
  assert.deepEqual(oldPage, expectedOld);

  const newPage = Buffer.alloc(8192);
  heapRedo(newPage, rec, 0, END_LSN);
  const expectedNew = emptyPage(0, END_LSN);
  put(expectedNew, 1, 8160, tup({ ...newRow, xmin: 3200, ctid: [9, 1] })); // 23 + 9 = 32 bytes
  setLowerUpper(expectedNew, 28, 8160);
  assert.deepEqual(newPage, expectedNew);

  // Only NEW_ALL_VISIBLE_CLEARED (0x02): the old page keeps PD_ALL_VISIBLE, the new page loses it.
  const rec2 = record(RM_HEAP_ID, 0x20, 3201, updateMain(3201, 1, 0, 0x02, 0, 2), [{ id: 0, blkno: 9, data: xlTuple(newRow) }, { id: 1, blkno: 2 }]);
  const old2 = Buffer.from(oldBefore);
  heapRedo(old2, rec2, 1, END_LSN);
  assert.equal(old2.readUInt16LE(10), PD_ALL_VISIBLE);
  const new2 = emptyPage(PD_ALL_VISIBLE);
  put(new2, 1, 8160, tup({ ...newRow, xmin: 3200, ctid: [9, 1] }));
  setLowerUpper(new2, 28, 8160);
  heapRedo(new2, rec2, 0, END_LSN);
  assert.equal(new2.readUInt16LE(10), 0);
  assert.equal(new2.readUInt32LE(20), 0); // the new page gets no prune hint
  assert.deepEqual(new2.subarray(8128, 8160), tup({ ...newRow, xmin: 3201, ctid: [9, 2] })); // 32 bytes at 8160 - 32
  // Prefix compression needs the old tuple on the same page.
  const bad = record(RM_HEAP_ID, 0x20, 3200, updateMain(3200, 1, 0, 0x20, 0, 1), [
    { id: 0, blkno: 9, data: new W().u16(3).raw(xlTuple(newRow)).done() },
    { id: 1, blkno: 2 },
  ]);
  assertRedoError(() => heapRedo(emptyPage(), bad, 0, END_LSN), /prefix\/suffix from an old tuple on another page/);
  assertRedoError(() => heapRedo(Buffer.from(oldBefore), record(RM_HEAP_ID, 0x40, 1, updateMain(1, 1, 0, 0, 0, 1), [{ id: 0, blkno: 9, data: xlTuple(newRow) }, { id: 1, blkno: 2 }]), 1, END_LSN), /HOT update names two pages/);
  assertRedoError(() => heapRedo(emptyPage(), record(RM_HEAP_ID, 0x20, 1, updateMain(1, 1, 0, 0, 0, 1), [{ id: 0, blkno: 9, data: xlTuple(newRow) }]), 1, END_LSN), /only block references 0 and 1/);
});

// ---------------------------------------------------------------------------------------------
// CONFIRM, LOCK, INPLACE, no-ops

test('CONFIRM replaces the speculative token in t_ctid with the tuple\'s own TID', () => {
  const page = emptyPage();
  const spec: Tup = { ...T1, xmin: 1200, ctid: [0x1234, 0xfffe] };
  put(page, 1, 8160, tup(spec));
  setLowerUpper(page, 28, 8160);
  heapRedo(page, record(RM_HEAP_ID, 0x50, 1200, new W().u16(1).done(), [{ id: 0, blkno: 11 }]), 0, END_LSN);
  const expected = emptyPage(0, END_LSN);
  put(expected, 1, 8160, tup({ ...spec, ctid: [11, 1] }));
  setLowerUpper(expected, 28, 8160);
  assert.deepEqual(page, expected);
});

test('LOCK: lock-only lockers reset HOT_UPDATED and ctid; multi updaters keep them', () => {
  const base: Tup = { xmin: 900, xmax: 0, cid: 9, ctid: [4, 2], im2: HOT_UPDATED | KEYS_UPDATED | 3, im: XMIN_COMMITTED | XMAX_INVALID | XMAX_COMMITTED | HASVARWIDTH, body: body('locked!!') };
  const mk = (): Buffer => {
    const p = emptyPage();
    put(p, 1, 8160, tup(base));
    setLowerUpper(p, 28, 8160);
    return p;
  };
  // FOR UPDATE: infobits LOCK_ONLY | EXCL_LOCK (0x06).
  let page = mk();
  heapRedo(page, record(RM_HEAP_ID, 0x60, 1300, new W().u32(1300).u16(1).u8(0x06).u8(0x01).done(), [{ id: 0, blkno: 4 }]), 0, END_LSN);
  let expected = emptyPage(0, END_LSN);
  put(expected, 1, 8160, tup({ ...base, xmax: 1300, cid: 0, ctid: [4, 1], im: XMIN_COMMITTED | HASVARWIDTH | LOCK_ONLY | EXCL_LOCK, im2: 3 }));
  setLowerUpper(expected, 28, 8160);
  assert.deepEqual(page, expected); // no prune xid, no all-visible change for LOCK

  // A multixact with an updater: IS_MULTI | KEYSHR_LOCK (0x09) is not lock-only.
  page = mk();
  heapRedo(page, record(RM_HEAP_ID, 0x60, 1301, new W().u32(42).u16(1).u8(0x09).u8(0).done(), [{ id: 0, blkno: 4 }]), 0, END_LSN);
  expected = emptyPage(0, END_LSN);
  put(expected, 1, 8160, tup({ ...base, xmax: 42, cid: 0, im: XMIN_COMMITTED | HASVARWIDTH | IS_MULTI | KEYSHR_LOCK, im2: HOT_UPDATED | 3 }));
  setLowerUpper(expected, 28, 8160);
  assert.deepEqual(page, expected);

  // Pre-9.3 style exclusive lock without LOCK_ONLY (EXCL_LOCK alone) counts as lock-only.
  page = mk();
  heapRedo(page, record(RM_HEAP_ID, 0x60, 1302, new W().u32(1302).u16(1).u8(0x04).u8(0).done(), [{ id: 0, blkno: 4 }]), 0, END_LSN);
  assert.equal(page.readUInt16LE(8160 + 18), 3);
  assert.equal(page.readUInt16LE(8160 + 16), 1);

  // LOCK_UPDATED: xmax and infobits only; cid and ctid untouched.
  page = mk();
  heap2Redo(page, record(RM_HEAP2_ID, 0x60, 1303, new W().u32(4444).u16(1).u8(0x08).u8(0x01).done(), [{ id: 0, blkno: 4 }]), 0, END_LSN);
  expected = emptyPage(0, END_LSN);
  put(expected, 1, 8160, tup({ ...base, xmax: 4444, im: XMIN_COMMITTED | HASVARWIDTH | KEYSHR_LOCK, im2: HOT_UPDATED | 3 }));
  setLowerUpper(expected, 28, 8160);
  assert.deepEqual(page, expected);
});

test('INPLACE overwrites the bytes after t_hoff; the length must match', () => {
  const page = emptyPage();
  const row: Tup = { xmin: 1, ctid: [0, 1], im2: 2, im: XMIN_COMMITTED | XMAX_INVALID, body: body('12345678') };
  put(page, 1, 8160, tup(row));
  setLowerUpper(page, 28, 8160);
  heapRedo(page, record(RM_HEAP_ID, 0x70, 0, new W().u16(1).done(), [{ id: 0, blkno: 0, data: Buffer.from('abcdefgh') }]), 0, END_LSN);
  const expected = emptyPage(0, END_LSN);
  put(expected, 1, 8160, tup({ ...row, body: body('abcdefgh') }));
  setLowerUpper(expected, 28, 8160);
  assert.deepEqual(page, expected);
  assertRedoError(() => heapRedo(page, record(RM_HEAP_ID, 0x70, 0, new W().u16(1).done(), [{ id: 0, blkno: 0, data: Buffer.from('abc') }]), 0, END_LSN), /wrong tuple length/);
});

test('TRUNCATE, NEW_CID and REWRITE leave the page alone', () => {
  const page = pageWithVictim().page;
  const before = Buffer.from(page);
  heapRedo(page, record(RM_HEAP_ID, 0x30, 5, new W().u32(5).u32(1).u8(0).u8(0).u16(0).u32(16384).done(), [{ id: 0, blkno: 0 }]), 0, END_LSN);
  heap2Redo(page, record(RM_HEAP2_ID, 0x70, 5, Buffer.alloc(34), [{ id: 0, blkno: 0 }]), 0, END_LSN);
  heap2Redo(page, record(RM_HEAP2_ID, 0x00, 5, Buffer.alloc(40), [{ id: 0, blkno: 0 }]), 0, END_LSN);
  assert.deepEqual(page, before);
});

// ---------------------------------------------------------------------------------------------
// HEAP2 VACUUM, FREEZE_PAGE, VISIBLE, MULTI_INSERT

test('VACUUM marks dead line pointers unused and truncates the array', () => {
  const mk = (): Buffer => {
    const p = emptyPage();
    setLp(p, 1, 0, 3, 0);
    put(p, 2, 8160, tup({ ...T1, xmin: 3, ctid: [0, 2] }));
    setLp(p, 3, 0, 3, 0);
    setLp(p, 4, 0, 3, 0);
    setLowerUpper(p, 40, 8160);
    return p;
  };
  let page = mk();
  heap2Redo(page, record(RM_HEAP2_ID, 0x20, 0, new W().u16(2).done(), [{ id: 0, blkno: 0, data: new W().u16(3).u16(4).done() }]), 0, END_LSN);
  let expected = mk();
  setLsn(expected, END_LSN);
  setLp(expected, 3, 0, 0, 0);
  setLp(expected, 4, 0, 0, 0);
  expected.writeUInt16LE(32, 12); // 3 and 4 cut off; no unused pointer left: hint clear
  assert.deepEqual(page, expected);

  page = mk();
  heap2Redo(page, record(RM_HEAP2_ID, 0x20, 0, new W().u16(2).done(), [{ id: 0, blkno: 0, data: new W().u16(1).u16(4).done() }]), 0, END_LSN);
  expected = mk();
  setLsn(expected, END_LSN);
  setLp(expected, 1, 0, 0, 0);
  setLp(expected, 4, 0, 0, 0);
  expected.writeUInt16LE(36, 12);
  expected.writeUInt16LE(PD_HAS_FREE_LINES, 10); // lp1 unused before the cut
  assert.deepEqual(page, expected);

  assertRedoError(() => heap2Redo(mk(), record(RM_HEAP2_ID, 0x20, 0, new W().u16(1).done(), [{ id: 0, blkno: 0, data: new W().u16(2).done() }]), 0, END_LSN), /should be LP_DEAD/);
  assertRedoError(() => heap2Redo(mk(), record(RM_HEAP2_ID, 0x20, 0, new W().u16(2).done(), [{ id: 0, blkno: 0, data: new W().u16(1).done() }]), 0, END_LSN), /do not hold 2 offsets/);
});

test('FREEZE_PAGE writes xmax, infomask, infomask2 and the xvac field as planned', () => {
  const a: Tup = { xmin: 600, xmax: 700, cid: 5, ctid: [1, 1], im2: 2, im: XMAX_COMMITTED | MOVED_OFF, body: body('aaaaaaaa') };
  const b: Tup = { xmin: 601, xmax: 0, cid: 6, ctid: [1, 2], im2: 2, im: XMAX_INVALID, body: body('bbbbbbbb') };
  const page = emptyPage();
  put(page, 1, 8160, tup(a));
  put(page, 2, 8128, tup(b));
  setLowerUpper(page, 32, 8128);
  const frz = (xmax: number, off: number, im2: number, im: number, fl: number): Buffer => new W().u32(xmax).u16(off).u16(im2).u16(im).u8(fl).u8(0).done();
  const data = Buffer.concat([frz(0, 1, 2, XMIN_COMMITTED | 0x0200 | XMAX_INVALID, 0x02), frz(0, 2, 2, XMIN_COMMITTED | 0x0200 | XMAX_INVALID, 0x04)]);
  heap2Redo(page, record(RM_HEAP2_ID, 0x30, 0, new W().u32(650).u16(2).done(), [{ id: 0, blkno: 1, data }]), 0, END_LSN);
  const expected = emptyPage(0, END_LSN);
  put(expected, 1, 8160, tup({ ...a, xmax: 0, cid: 2, im: XMIN_COMMITTED | 0x0200 | XMAX_INVALID })); // XLH_FREEZE_XVAC: xvac = FrozenTransactionId
  put(expected, 2, 8128, tup({ ...b, cid: 0, im: XMIN_COMMITTED | 0x0200 | XMAX_INVALID })); // XLH_INVALID_XVAC: xvac = 0
  setLowerUpper(expected, 32, 8128);
  assert.deepEqual(page, expected);
  assertRedoError(() => heap2Redo(emptyPage(), record(RM_HEAP2_ID, 0x30, 0, new W().u32(650).u16(1).done(), [{ id: 0, blkno: 1, data: frz(0, 1, 2, 0, 0) }]), 0, END_LSN), /invalid lp/);
});

test('VISIBLE: VM page initialised and its bits set (LSN only when bits change); heap page flagged', () => {
  const vmRec = (heapBlk: number, vmBlk: number, flags: number): DecodedRecord =>
    record(RM_HEAP2_ID, 0x40, 0, new W().u32(700).u8(flags).done(), [{ id: 0, blkno: vmBlk, forkNum: 2 }, { id: 1, blkno: heapBlk }]);
  const vm = Buffer.alloc(8192);
  heap2Redo(vm, vmRec(5, 0, 3), 0, END_LSN);
  const expected = emptyPage(0, END_LSN);
  expected[24 + 1] = 0x0c; // heap block 5: byte 1 of the map, bits 2..3
  assert.deepEqual(vm, expected);

  // Same bits again under a later LSN: no change, LSN kept. Different flags: LSN advances.
  heap2Redo(vm, vmRec(5, 0, 3), 0, END_LSN + 100n);
  assert.deepEqual(vm, expected);
  heap2Redo(vm, vmRec(5, 0, 1), 0, END_LSN + 200n);
  setLsn(expected, END_LSN + 200n);
  assert.deepEqual(vm, expected);
  // A record not newer than the VM page does nothing.
  heap2Redo(vm, vmRec(6, 0, 1), 0, END_LSN + 200n);
  assert.deepEqual(vm, expected);

  // Heap block 40000 is bit pair 7328 of VM block 1: byte 24 + 1832, bits 0..1.
  const vm1 = emptyPage(0, 0n);
  heap2Redo(vm1, vmRec(40000, 1, 2), 0, END_LSN);
  assert.equal(vm1[24 + 1832], 0x02);
  assertRedoError(() => heap2Redo(emptyPage(), vmRec(40000, 0, 2), 0, END_LSN), /belongs to VM block 1/);

  const heap = emptyPage(PD_HAS_FREE_LINES);
  heap2Redo(heap, vmRec(5, 0, 3), 1, END_LSN);
  assert.deepEqual(heap, emptyPage(PD_HAS_FREE_LINES | PD_ALL_VISIBLE, OLD_LSN)); // LSN untouched
  const heap2 = emptyPage();
  createHeap2Redo({ hintBitsLogged: true })(heap2, vmRec(5, 0, 3), 1, END_LSN);
  assert.deepEqual(heap2, emptyPage(PD_ALL_VISIBLE, END_LSN));
});

/** xl_multi_insert_tuple + data, as the tuples of one record at 2-byte aligned positions. */
function multiData(tuples: Tup[]): Buffer {
  const parts: number[] = [];
  for (const t of tuples) {
    if (parts.length % 2 === 1) parts.push(0);
    const d = new W().u16(t.body.length).u16(t.im2).u16(t.im).u8(t.hoff ?? 24).raw(t.body).done();
    parts.push(...d);
  }
  return Buffer.from(parts);
}

test('MULTI_INSERT+INIT filling a page to MaxHeapTuplesPerPage (291 zero-column tuples)', () => {
  const empty: Tup = { xmin: 0, ctid: [0, 0], im2: 0, im: XMAX_INVALID, body: Buffer.from([0]) }; // 24 bytes
  const n = 291;
  const rec = record(RM_HEAP2_ID, 0x50 | 0x80, 4000, new W().u8(0x20).u8(0).u16(n).done(),
    [{ id: 0, blkno: 12, data: multiData(new Array(n).fill(empty)), willInit: true }]);
  const page = Buffer.alloc(8192);
  heap2Redo(page, rec, 0, END_LSN);
  const expected = emptyPage(PD_ALL_VISIBLE, END_LSN); // XLH_INSERT_ALL_FROZEN_SET
  for (let i = 1; i <= n; i++) put(expected, i, 8192 - 24 * i, tup({ ...empty, xmin: 4000, ctid: [12, i] }));
  setLowerUpper(expected, 24 + 4 * n, 8192 - 24 * n); // 1188 and 1208
  assert.deepEqual(page, expected);

  // A 292nd tuple does not fit the heap limit.
  const more = record(RM_HEAP2_ID, 0x50, 4001, new W().u8(0).u8(0).u16(1).u16(292).done(), [{ id: 0, blkno: 12, data: multiData([empty]) }]);
  assertRedoError(() => heap2Redo(page, more, 0, END_LSN), /failed to add tuple/);
});

test('MULTI_INSERT into an existing page: offsets from the record, odd-length tuples 2-byte aligned', () => {
  const page = emptyPage(PD_ALL_VISIBLE);
  const row = tup({ ...T1, xmin: 5, ctid: [3, 1] });
  put(page, 1, 8160, row);
  setLp(page, 2, 0, 0, 0);
  put(page, 3, 8128, row);
  setLowerUpper(page, 36, 8128);
  const a: Tup = { xmin: 0, ctid: [0, 0], im2: 1, im: XMAX_INVALID, body: body('1234') }; // datalen 5: 7 + 5 = 12
  const b: Tup = { xmin: 0, ctid: [0, 0], im2: 1, im: XMAX_INVALID, body: body('123') }; // datalen 4: 7 + 4 = 11 -> pad
  const c: Tup = { xmin: 0, ctid: [0, 0], im2: 1, im: XMAX_INVALID, body: body('12') };
  const data = multiData([b, a, c]);
  assert.equal(data.length, 11 + 1 + 12 + 10); // the padding byte after b is really there
  const rec = record(RM_HEAP2_ID, 0x50, 4100, new W().u8(0x01).u8(0).u16(3).u16(2).u16(4).u16(5).done(), [{ id: 0, blkno: 3, data }]);
  heap2Redo(page, rec, 0, END_LSN);
  const expected = emptyPage(0, END_LSN); // XLH_INSERT_ALL_VISIBLE_CLEARED
  put(expected, 1, 8160, row);
  put(expected, 3, 8128, row);
  put(expected, 2, 8096, tup({ ...b, xmin: 4100, ctid: [3, 2] })); // 27 -> 32
  put(expected, 4, 8064, tup({ ...a, xmin: 4100, ctid: [3, 4] })); // 28 -> 32
  put(expected, 5, 8032, tup({ ...c, xmin: 4100, ctid: [3, 5] })); // 26 -> 32
  setLowerUpper(expected, 44, 8032);
  assert.deepEqual(page, expected);

  const extra = Buffer.concat([data, Buffer.from([0, 0])]);
  const bad = record(RM_HEAP2_ID, 0x50, 4100, new W().u8(0).u8(0).u16(3).u16(2).u16(4).u16(5).done(), [{ id: 0, blkno: 3, data: extra }]);
  assertRedoError(() => heap2Redo(emptyPage(), bad, 0, END_LSN), /total tuple length mismatch/);
});

test('PRUNE with dead, unused and redirect entries checks offsets against the page', () => {
  const page = emptyPage();
  put(page, 1, 8160, tup({ ...T1, xmin: 1, ctid: [0, 1] }));
  setLowerUpper(page, 28, 8160);
  const rec = record(RM_HEAP2_ID, 0x10, 0, new W().u32(1).u16(0).u16(1).done(), [{ id: 0, blkno: 0, data: new W().u16(1).done() }]);
  heap2Redo(page, rec, 0, END_LSN);
  const expected = emptyPage(0, END_LSN);
  setLp(expected, 1, 0, 3, 0); // dead, no storage; nothing left to keep: upper = special
  setLowerUpper(expected, 28, 8192);
  page.fill(0, 28, 8192);
  assert.deepEqual(page, expected);
  const beyond = record(RM_HEAP2_ID, 0x10, 0, new W().u32(1).u16(0).u16(1).done(), [{ id: 0, blkno: 0, data: new W().u16(2).done() }]);
  assertRedoError(() => heap2Redo(emptyPage(), beyond, 0, END_LSN), /outside the line pointer array/);
  const odd = record(RM_HEAP2_ID, 0x10, 0, new W().u32(1).u16(1).u16(0).done(), [{ id: 0, blkno: 0, data: new W().u16(2).done() }]);
  assertRedoError(() => heap2Redo(emptyPage(), odd, 0, END_LSN), /redirect pairs/);
});

// ---------------------------------------------------------------------------------------------
// Body parsers added for redo (src/postgres/records/heap.ts), on hand-laid bytes.

test('record body parsers: truncate, new_cid, prune/vacuum/freeze arrays, update prefix/suffix header', () => {
  const trunc = record(RM_HEAP_ID, 0x30, 9, new W().u32(5).u32(2).u8(3).u8(0).u16(0).u32(16384).u32(16390).done(), []);
  assert.deepEqual(parseHeapTruncate(trunc), { dbId: 5, flags: 3, relids: [16384, 16390] });
  assert.throws(() => parseHeapTruncate(record(RM_HEAP_ID, 0x30, 9, new W().u32(5).u32(3).u8(0).u8(0).u16(0).u32(1).done(), [])), WalRecordBodyError);

  const cid = record(RM_HEAP2_ID, 0x70, 9, new W().u32(700).u32(1).u32(2).u32(0xffffffff).u32(1663).u32(5).u32(16384).u16(0x0001).u16(0x0002).u16(7).done(), []);
  assert.deepEqual(parseHeapNewCid(cid), {
    topXid: 700, cmin: 1, cmax: 2, combocid: 0xffffffff, targetNode: RNODE, targetBlock: 0x10002, targetOffset: 7,
  });

  const prune = record(RM_HEAP2_ID, 0x10, 0, new W().u32(99).u16(2).u16(1).done(), [{ id: 0, blkno: 1, data: new W().u16(1).u16(4).u16(2).u16(5).u16(3).u16(6).u16(7).done() }]);
  const pb = parseHeapPrune(prune);
  assert.deepEqual(pb, { latestRemovedXid: 99, nredirected: 2, ndead: 1 });
  assert.deepEqual(parseHeapPruneOffsets(prune, pb), { redirected: [1, 4, 2, 5], nowDead: [3], nowUnused: [6, 7] });

  const vac = record(RM_HEAP2_ID, 0x20, 0, new W().u16(2).done(), [{ id: 0, blkno: 1, data: new W().u16(8).u16(9).done() }]);
  assert.deepEqual(parseHeapVacuumOffsets(vac, parseHeapVacuum(vac)), [8, 9]);

  const frz = record(RM_HEAP2_ID, 0x30, 0, new W().u32(650).u16(1).done(), [{ id: 0, blkno: 1, data: new W().u32(12).u16(3).u16(0x0802).u16(0x0b00).u8(4).u8(0).done() }]);
  const fb = parseHeapFreezePage(frz);
  assert.deepEqual(fb, { cutoffXid: 650, ntuples: 1 });
  assert.deepEqual(parseHeapFreezeTuples(frz, fb), [{ xmax: 12, offset: 3, infomask2: 0x0802, infomask: 0x0b00, frzflags: 4 }]);

  const upd = record(RM_HEAP_ID, 0x40, 1, updateMain(1, 1, 0, 0x40, 0, 2), [{ id: 0, blkno: 1, data: new W().u16(6).u16(0x8003).u16(0x2802).u8(24).u8(0).u8(0x41).done() }]);
  const nt = parseHeapUpdateNewTuple(upd, parseHeapUpdate(upd));
  assert.deepEqual({ ...nt, data: [...nt.data] }, { prefixLen: 0, suffixLen: 6, infomask2: 0x8003, infomask: 0x2802, hoff: 24, data: [0, 0x41] });
  assert.equal(parseHeapConfirm(record(RM_HEAP_ID, 0x50, 1, new W().u16(77).done(), [])).offnum, 77);
  assert.equal(parseHeapInplace(record(RM_HEAP_ID, 0x70, 1, new W().u16(78).done(), [])).offnum, 78);
});
