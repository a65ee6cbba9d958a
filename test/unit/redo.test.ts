/**
 * Page reconstruction (src/storage/redo.ts) on hand-built pages.
 *
 * Expected pages come from small reference functions written here from PostgreSQL's rules
 * (visibilitymap.c, clog.c, multixact.c, xlogutils.c), and from byte positions worked out by hand
 * for the boundary cases; never from the code under test.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { Lsn } from '../../src/postgres/lsn.ts';
import { encodeRecord, type BlockSpec } from '../../src/postgres/walwriter.ts';
import { AssertionFailedError, StrataError } from '../../src/util/errors.ts';
import { ForkNumber, SlruKind, keyToHex, relBlockKey, relSizeKey, slruBlockKey, type Key, type RelTag } from '../../src/storage/key.ts';
import type { ReconstructRecord, ReconstructState } from '../../src/storage/layer.ts';
import { BuiltinRedo, RedoError, RedoUnsupportedError, reconstructPage, type Redo, type RedoContext } from '../../src/storage/redo.ts';
import { ClogStatus, NO_BLOCK, type MultixactMember, type Value } from '../../src/storage/value.ts';
import { randomBytes, rng } from './test-compressors.ts';
import { pageGetItem, pageGetLsn, pageGetMaxOffsetNumber, pageInit, pageSetLsn } from '../../src/redo/page.ts';

const redo = new BuiltinRedo();
const REL: RelTag = { spcNode: 1663, dbNode: 5, relNode: 16384, forkNum: ForkNumber.main };
const VM_REL: RelTag = { ...REL, forkNum: ForkNumber.vm };
const REQUEST_LSN = 0x16b3800n;

function ctxFor(key: Key, requestLsn: Lsn = REQUEST_LSN): RedoContext {
  return { tenantId: 'tenant-a', timelineId: 'timeline-b', key, requestLsn };
}

function rec(lsn: Lsn, value: Value): ReconstructRecord {
  return { lsn, value };
}

function catchError(fn: () => unknown): unknown {
  try {
    fn();
  } catch (err) {
    return err;
  }
  assert.fail('expected an error');
}

/** A standard page header: pd_lsn, lower, upper, special, version 0x2004. */
function writeHeader(page: Buffer, lsn: Lsn, lower: number, upper: number, special = 8192): void {
  page.writeUInt32LE(Number(lsn >> 32n), 0);
  page.writeUInt32LE(Number(lsn & 0xffffffffn), 4);
  page.writeUInt16LE(0, 8);
  page.writeUInt16LE(0, 10);
  page.writeUInt16LE(lower, 12);
  page.writeUInt16LE(upper, 14);
  page.writeUInt16LE(special, 16);
  page.writeUInt16LE(0x2004, 18);
  page.writeUInt32LE(0, 20);
}

function pdLsn(page: Buffer): Lsn {
  return (BigInt(page.readUInt32LE(0)) << 32n) | BigInt(page.readUInt32LE(4));
}

// ---------------------------------------------------------------------------------------------
// References written from PostgreSQL's rules.

/** visibilitymap.c: map after the 24-byte header, 4 heap blocks per byte, 2 bits each. */
function refVmClear(page: Buffer, vmBlock: number, heapBlock: number, flags: number): void {
  const perPage = (8192 - 24) * 4;
  if (heapBlock === NO_BLOCK || Math.trunc(heapBlock / perPage) !== vmBlock) return;
  const index = heapBlock - vmBlock * perPage;
  const byte = 24 + Math.trunc(index / 4);
  const shift = 2 * (index % 4);
  page[byte] = page[byte]! & ~(flags << shift) & 0xff;
}

/** clog.c: 32768 xids per page, 4 per byte, 2 bits each; in recovery sub-commit keeps a commit. */
function refClogSet(page: Buffer, xid: number, status: number): void {
  const index = xid % 32768;
  const byte = Math.trunc(index / 4);
  const shift = 2 * (index % 4);
  const current = (page[byte]! >> shift) & 3;
  if (status === 3 && current === 1) return;
  page[byte] = (page[byte]! & ~(3 << shift) & 0xff) | (status << shift);
}

function clogStatusOf(page: Buffer, xid: number): number {
  const index = xid % 32768;
  return (page[Math.trunc(index / 4)]! >> (2 * (index % 4))) & 3;
}

/** multixact.c: groups of 20 bytes (4 flag bytes, 4 xids), 409 groups = 1636 members per page. */
function refMemberWrite(page: Buffer, offset: number, member: MultixactMember): void {
  const inPage = offset % 1636;
  const group = Math.trunc(inPage / 4);
  const slot = inPage % 4;
  page[group * 20 + slot] = member.status;
  page.writeUInt32LE(member.xid, group * 20 + 4 + slot * 4);
}

// ---------------------------------------------------------------------------------------------
// Visibility map.

function vmPage(fill: number | (() => number), lsn: Lsn = 0x1_0000_2000n): Buffer {
  const page = Buffer.alloc(8192);
  writeHeader(page, lsn, 24, 8192);
  for (let i = 24; i < 8192; i++) page[i] = typeof fill === 'number' ? fill : fill();
  return page;
}

function clearVm(newHeapBlock: number, oldHeapBlock: number, flags: number): Value {
  return { kind: 'clearVmBits', newHeapBlock, oldHeapBlock, flags };
}

test('clearVmBits: heap blocks at byte and page boundaries clear exactly their bits', () => {
  const key0 = relBlockKey(VM_REL, 0);
  const key1 = relBlockKey(VM_REL, 1);
  const base = vmPage(0xff);
  const baseCopy = Buffer.from(base);

  // Heap blocks 0 and 3 share byte 24 (bits 0-1 and 6-7); both flags cleared.
  let out = redo.apply(ctxFor(key0), { lsn: 100n, image: base }, [rec(200n, clearVm(0, 3, 3))]);
  let expected = Buffer.from(base);
  expected[24] = 0x3c;
  assert.deepEqual(out, expected);

  // Heap block 4 is the first of byte 25; only ALL_VISIBLE.
  out = redo.apply(ctxFor(key0), { lsn: 100n, image: base }, [rec(200n, clearVm(4, NO_BLOCK, 1))]);
  expected = Buffer.from(base);
  expected[25] = 0xfe;
  assert.deepEqual(out, expected);

  // 32671 is the last heap block of VM block 0 (last byte, bits 6-7), 32672 the first of VM block 1.
  const value = clearVm(32671, 32672, 2);
  out = redo.apply(ctxFor(key0), { lsn: 100n, image: base }, [rec(200n, value)]);
  expected = Buffer.from(base);
  expected[8191] = 0x7f;
  assert.deepEqual(out, expected);
  out = redo.apply(ctxFor(key1), { lsn: 100n, image: base }, [rec(200n, value)]);
  expected = Buffer.from(base);
  expected[24] = 0xfd;
  assert.deepEqual(out, expected);

  // Page header (and pd_lsn) untouched, base never modified, a new buffer every time.
  assert.equal(pdLsn(out), 0x1_0000_2000n);
  assert.deepEqual(base, baseCopy);
  assert.notEqual(out.buffer, base.buffer);
});

test('clearVmBits: random pages and blocks match the reference', () => {
  const r = rng(7);
  for (let round = 0; round < 50; round++) {
    const vmBlock = Math.floor(r() * 3);
    const key = relBlockKey(VM_REL, vmBlock);
    const base = vmPage(() => Math.floor(r() * 256));
    const expected = Buffer.from(base);
    const records: ReconstructRecord[] = [];
    let lsn = 1000n;
    for (let i = 0; i < 1 + Math.floor(r() * 6); i++) {
      const inPage = () => vmBlock * 32672 + Math.floor(r() * 32672);
      const newBlk = inPage();
      const oldBlk = r() < 0.3 ? NO_BLOCK : r() < 0.5 ? inPage() : Math.floor(r() * 3 * 32672);
      const flags = 1 + Math.floor(r() * 3);
      refVmClear(expected, vmBlock, newBlk, flags);
      refVmClear(expected, vmBlock, oldBlk, flags);
      lsn += 8n + BigInt(Math.floor(r() * 100)) * 8n;
      records.push(rec(lsn, clearVm(newBlk, oldBlk, flags)));
    }
    assert.deepEqual(redo.apply(ctxFor(key), { lsn: 500n, image: base }, records), expected, `round ${round}`);
  }
});

test('clearVmBits: wrong page, wrong key, bad flags and a missing base are errors', () => {
  const key1 = relBlockKey(VM_REL, 1);
  const base = { lsn: 100n, image: vmPage(0xff) };
  // Heap blocks 0 and 32671 belong to VM block 0, not 1.
  let err = catchError(() => redo.apply(ctxFor(key1), base, [rec(200n, clearVm(0, 32671, 1))]));
  assert.ok(err instanceof RedoError);
  assert.match(err.message, /rel 1663\/5\/16384 vm blk 1/);
  assert.match(err.message, /wrong key/);

  err = catchError(() => redo.apply(ctxFor(relBlockKey(REL, 1)), base, [rec(200n, clearVm(32672, NO_BLOCK, 1))]));
  assert.ok(err instanceof RedoError);
  assert.match(err.message, /not a visibility-map block/);

  err = catchError(() => redo.apply(ctxFor(key1), base, [rec(200n, clearVm(32672, NO_BLOCK, 4))]));
  assert.ok(err instanceof RedoError);
  assert.match(err.message, /invalid visibility-map flags/);

  err = catchError(() => redo.apply(ctxFor(key1), null, [rec(200n, clearVm(32672, NO_BLOCK, 1))]));
  assert.ok(err instanceof RedoError);
  assert.equal(err.code, 'redo_failed');
  assert.match(err.message, /no base image/);
  assert.equal(err.context.versionLsn, '0/C8');
  assert.equal(err.context.tenantId, 'tenant-a');
  assert.equal(err.context.timelineId, 'timeline-b');
});

// ---------------------------------------------------------------------------------------------
// CLOG.

const CLOG_SEG = 1;
const CLOG_BLK = 1;
const CLOG_PAGE = CLOG_SEG * 32 + CLOG_BLK; // 33
const FIRST_XID = CLOG_PAGE * 32768; // 1081344
const LAST_XID = FIRST_XID + 32767; // 1114111
const clogKey = slruBlockKey(SlruKind.clog, CLOG_SEG, CLOG_BLK);

function clogSet(status: number, xids: number[], timestampUs: bigint | null = null): Value {
  return { kind: 'clogSetStatus', status, xids, timestampUs };
}

test('clogSetStatus: the four statuses at byte and page boundaries', () => {
  const base = Buffer.alloc(8192, 0xff); // every xid "sub-committed" to start with
  const records = [
    rec(200n, clogSet(ClogStatus.committed, [FIRST_XID])),
    rec(300n, clogSet(ClogStatus.aborted, [FIRST_XID + 1])),
    rec(400n, clogSet(ClogStatus.subCommitted, [FIRST_XID + 2])),
    rec(500n, clogSet(ClogStatus.inProgress, [FIRST_XID + 3])),
    rec(600n, clogSet(ClogStatus.committed, [FIRST_XID + 4, LAST_XID])),
  ];
  const out = redo.apply(ctxFor(clogKey), { lsn: 100n, image: base }, records);
  const expected = Buffer.alloc(8192, 0xff);
  // byte 0: xid0 01, xid1 10, xid2 11, xid3 00 → 0b00_11_10_01
  expected[0] = 0x39;
  // byte 1: first xid of the byte committed → low bits 01
  expected[1] = 0xfd;
  // last byte: last xid of the page (bits 6-7) committed
  expected[8191] = 0x7f;
  assert.deepEqual(out, expected);
  assert.equal(out.length, 8192);
  assert.deepEqual(base, Buffer.alloc(8192, 0xff));
});

test('clogSetStatus: random xids match the reference; sub-commit keeps a commit', () => {
  const r = rng(11);
  const base = Buffer.from(randomBytes(r, 8192));
  const expected = Buffer.from(base);
  const records: ReconstructRecord[] = [];
  for (let i = 0; i < 40; i++) {
    const status = Math.floor(r() * 4);
    const xids = Array.from({ length: 1 + Math.floor(r() * 20) }, () => FIRST_XID + Math.floor(r() * 32768));
    for (const x of xids) refClogSet(expected, x, status);
    records.push(rec(1000n + BigInt(i) * 8n, clogSet(status, xids)));
  }
  assert.deepEqual(redo.apply(ctxFor(clogKey), { lsn: 999n, image: base }, records), expected);

  const committed = Buffer.alloc(8192);
  committed[10] = 0x01 << 4; // xid FIRST_XID + 42 committed (byte 10, bits 4-5)
  const out = redo.apply(ctxFor(clogKey), { lsn: 1n, image: committed }, [rec(2n, clogSet(ClogStatus.subCommitted, [FIRST_XID + 42]))]);
  assert.equal(clogStatusOf(out, FIRST_XID + 42), ClogStatus.committed);
});

test('clogSetStatus: commit timestamp trailer is added, replaced and kept', () => {
  const base = Buffer.alloc(8192);
  const ts1 = 0x0102030405060708n;
  const ts2 = -5n; // TimestampTz is signed
  let out = redo.apply(ctxFor(clogKey), { lsn: 100n, image: base }, [rec(200n, clogSet(ClogStatus.committed, [FIRST_XID + 100], ts1))]);
  assert.equal(out.length, 8200);
  assert.deepEqual([...out.subarray(8192)], [1, 2, 3, 4, 5, 6, 7, 8]); // big-endian
  assert.equal(out[25], 0x01);
  // The first 8 bytes (no page LSN on SLRU pages) are untouched apart from status bits.
  assert.deepEqual(out.subarray(0, 8), Buffer.alloc(8));

  // A later commit replaces the trailer; an abort without timestamp keeps it.
  out = redo.apply(ctxFor(clogKey), { lsn: 200n, image: out }, [
    rec(300n, clogSet(ClogStatus.committed, [FIRST_XID + 101], ts2)),
    rec(400n, clogSet(ClogStatus.aborted, [FIRST_XID + 102])),
  ]);
  assert.equal(out.length, 8200);
  assert.deepEqual([...out.subarray(8192)], [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfb]);
  assert.equal(out[25], 0x01 | (0x01 << 2) | (0x02 << 4));

  // An 8192-byte base and an abort: no trailer appears.
  out = redo.apply(ctxFor(clogKey), { lsn: 100n, image: base }, [rec(200n, clogSet(ClogStatus.aborted, [FIRST_XID]))]);
  assert.equal(out.length, 8192);
  assert.equal(out[0], 0x02);
  assert.deepEqual(base, Buffer.alloc(8192));
});

test('clogSetStatus: xid of another page, bad base size, wrong key are errors', () => {
  let err = catchError(() => redo.apply(ctxFor(clogKey), { lsn: 1n, image: Buffer.alloc(8192) },
    [rec(0x16b3748n, clogSet(ClogStatus.committed, [FIRST_XID, LAST_XID + 1]))]));
  assert.ok(err instanceof RedoError);
  assert.match(err.message, /xid 1114112, which belongs to CLOG page 34, not to this page 33/);
  assert.match(err.message, /clog seg 1 blk 1/);
  assert.match(err.message, /version 0\/16B3748/);
  assert.match(err.message, new RegExp(keyToHex(clogKey)));

  err = catchError(() => redo.apply(ctxFor(clogKey), { lsn: 1n, image: Buffer.alloc(8193) }, [rec(2n, clogSet(1, [FIRST_XID]))]));
  assert.ok(err instanceof RedoError);
  assert.match(err.message, /8193 bytes/);
  // 8200 is fine
  const out = redo.apply(ctxFor(clogKey), { lsn: 1n, image: Buffer.alloc(8200, 0) }, [rec(2n, clogSet(1, [FIRST_XID]))]);
  assert.equal(out.length, 8200);

  err = catchError(() => redo.apply(ctxFor(slruBlockKey(SlruKind.multixactOffsets, CLOG_SEG, CLOG_BLK)),
    { lsn: 1n, image: Buffer.alloc(8192) }, [rec(2n, clogSet(1, [FIRST_XID]))]));
  assert.ok(err instanceof RedoError);
  assert.match(err.message, /not a CLOG page/);
});

// ---------------------------------------------------------------------------------------------
// Multixact.

test('multixactOffset: first and last entry of a page, wrap page, other page', () => {
  const key = slruBlockKey(SlruKind.multixactOffsets, 0, 3); // multis 6144..8191
  const base = Buffer.alloc(8192, 0xaa);
  const out = redo.apply(ctxFor(key), { lsn: 1n, image: base }, [
    rec(2n, { kind: 'multixactOffset', multi: 6144, offset: 0x11223344 }),
    rec(3n, { kind: 'multixactOffset', multi: 8191, offset: 0xfffffffe }),
  ]);
  const expected = Buffer.alloc(8192, 0xaa);
  expected.set([0x44, 0x33, 0x22, 0x11], 0);
  expected.set([0xfe, 0xff, 0xff, 0xff], 8188);
  assert.deepEqual(out, expected);

  // The last multixact id 0xFFFFFFFF: page 2097151 = segment 65535, block 31, entry 2047.
  const lastKey = slruBlockKey(SlruKind.multixactOffsets, 65535, 31);
  const last = redo.apply(ctxFor(lastKey), { lsn: 1n, image: Buffer.alloc(8192) }, [rec(2n, { kind: 'multixactOffset', multi: 0xffffffff, offset: 7 })]);
  assert.equal(last.readUInt32LE(8188), 7);
  assert.equal(last.subarray(0, 8188).every((b) => b === 0), true);

  const err = catchError(() => redo.apply(ctxFor(key), { lsn: 1n, image: base }, [rec(2n, { kind: 'multixactOffset', multi: 8192, offset: 1 })]));
  assert.ok(err instanceof RedoError);
  assert.match(err.message, /multixact 8192, which belongs to offsets page 4, not to this page 3/);
});

test('multixactOffset with the next multixact: both entries on one page, or only the one on this page', () => {
  const key = slruBlockKey(SlruKind.multixactOffsets, 0, 3); // multis 6144..8191
  const out = redo.apply(ctxFor(key), { lsn: 1n, image: Buffer.alloc(8192) }, [
    rec(2n, { kind: 'multixactOffset', multi: 6150, offset: 100, next: { multi: 6151, offset: 103 } }),
  ]);
  assert.equal(out.readUInt32LE(6 * 4), 100);
  assert.equal(out.readUInt32LE(7 * 4), 103);
  // Last multixact of page 3: its next (8192) is on page 4, written there, skipped here.
  const here = redo.apply(ctxFor(key), { lsn: 1n, image: Buffer.alloc(8192) }, [
    rec(2n, { kind: 'multixactOffset', multi: 8191, offset: 5, next: { multi: 8192, offset: 9 } }),
  ]);
  assert.equal(here.readUInt32LE(8188), 5);
  assert.equal(here.subarray(0, 8188).every((b) => b === 0), true);
  const nextKey = slruBlockKey(SlruKind.multixactOffsets, 0, 4);
  const there = redo.apply(ctxFor(nextKey), { lsn: 1n, image: Buffer.alloc(8192) }, [
    rec(2n, { kind: 'multixactOffset', multi: 8191, offset: 5, next: { multi: 8192, offset: 9 } }),
  ]);
  assert.equal(there.readUInt32LE(0), 9);
  assert.equal(there.subarray(4).every((b) => b === 0), true);
});

test('multixactMembers: page and group boundaries, list spanning two pages', () => {
  const page0 = slruBlockKey(SlruKind.multixactMembers, 0, 0);
  const page1 = slruBlockKey(SlruKind.multixactMembers, 0, 1);
  const members = [
    { xid: 0x01020304, status: 0 },
    { xid: 0x05060708, status: 1 },
    { xid: 0x090a0b0c, status: 4 },
    { xid: 0x0d0e0f10, status: 5 },
  ];
  const value: Value = { kind: 'multixactMembers', startOffset: 1634, members };
  // Offsets 1634, 1635 are the last two of page 0 (group 408 at byte 8160, slots 2 and 3);
  // 1636, 1637 the first two of page 1 (group 0, slots 0 and 1).
  const out0 = redo.apply(ctxFor(page0), { lsn: 1n, image: Buffer.alloc(8192) }, [rec(2n, value)]);
  const exp0 = Buffer.alloc(8192);
  exp0[8162] = 0;
  exp0[8163] = 1;
  exp0.writeUInt32LE(0x01020304, 8172);
  exp0.writeUInt32LE(0x05060708, 8176);
  assert.deepEqual(out0, exp0);
  const out1 = redo.apply(ctxFor(page1), { lsn: 1n, image: Buffer.alloc(8192) }, [rec(2n, value)]);
  const exp1 = Buffer.alloc(8192);
  exp1[0] = 4;
  exp1[1] = 5;
  exp1.writeUInt32LE(0x090a0b0c, 4);
  exp1.writeUInt32LE(0x0d0e0f10, 8);
  assert.deepEqual(out1, exp1);

  // Group boundary inside page 0: offsets 3 (group 0, slot 3) and 4 (group 1, slot 0).
  const base = Buffer.alloc(8192, 0xee);
  const out = redo.apply(ctxFor(page0), { lsn: 1n, image: base }, [rec(2n, { kind: 'multixactMembers', startOffset: 3, members: members.slice(0, 2) })]);
  const exp = Buffer.alloc(8192, 0xee);
  exp[3] = 0;
  exp.writeUInt32LE(0x01020304, 16);
  exp[20] = 1;
  exp.writeUInt32LE(0x05060708, 24);
  assert.deepEqual(out, exp);
  assert.deepEqual(base, Buffer.alloc(8192, 0xee));
});

test('multixactMembers: offsets wrap at 2^32', () => {
  // 0xFFFFFFFE and 0xFFFFFFFF are on the last members page (2625285 = segment 82040, block 5):
  // in-page index 1034 and 1035 → group 258 (byte 5160), slots 2 and 3. Offset 0 is on page 0.
  const lastKey = slruBlockKey(SlruKind.multixactMembers, 82040, 5);
  const members = [{ xid: 111, status: 2 }, { xid: 222, status: 3 }, { xid: 333, status: 1 }];
  const value: Value = { kind: 'multixactMembers', startOffset: 0xfffffffe, members };
  const last = redo.apply(ctxFor(lastKey), { lsn: 1n, image: Buffer.alloc(8192) }, [rec(2n, value)]);
  const expLast = Buffer.alloc(8192);
  expLast[5162] = 2;
  expLast[5163] = 3;
  expLast.writeUInt32LE(111, 5172);
  expLast.writeUInt32LE(222, 5176);
  assert.deepEqual(last, expLast);
  const first = redo.apply(ctxFor(slruBlockKey(SlruKind.multixactMembers, 0, 0)), { lsn: 1n, image: Buffer.alloc(8192) }, [rec(2n, value)]);
  const expFirst = Buffer.alloc(8192);
  expFirst[0] = 1;
  expFirst.writeUInt32LE(333, 4);
  assert.deepEqual(first, expFirst);

  // Random lists against the reference.
  const r = rng(5);
  for (let round = 0; round < 30; round++) {
    const pageNo = Math.floor(r() * 64);
    const start = pageNo * 1636 + Math.floor(r() * 1636) - 10;
    const list = Array.from({ length: 1 + Math.floor(r() * 30) }, () => ({ xid: Math.floor(r() * 2 ** 32), status: Math.floor(r() * 6) }));
    const base = Buffer.from(randomBytes(r, 8192));
    const expected = Buffer.from(base);
    list.forEach((m, i) => {
      const off = (start + i) % 2 ** 32;
      if (Math.trunc(off / 1636) === pageNo) refMemberWrite(expected, off, m);
    });
    const key = slruBlockKey(SlruKind.multixactMembers, Math.trunc(pageNo / 32), pageNo % 32);
    const v: Value = { kind: 'multixactMembers', startOffset: start >>> 0, members: list };
    const touches = list.some((_, i) => Math.trunc(((start + i) >>> 0) / 1636) === pageNo);
    if (touches) {
      assert.deepEqual(redo.apply(ctxFor(key), { lsn: 1n, image: base }, [rec(2n, v)]), expected, `round ${round}`);
    } else {
      assert.ok(catchError(() => redo.apply(ctxFor(key), { lsn: 1n, image: base }, [rec(2n, v)])) instanceof RedoError);
    }
  }
});

test('multixactMembers: no member on this page, bad status are errors', () => {
  const page1 = slruBlockKey(SlruKind.multixactMembers, 0, 1);
  let err = catchError(() => redo.apply(ctxFor(page1), { lsn: 1n, image: Buffer.alloc(8192) },
    [rec(2n, { kind: 'multixactMembers', startOffset: 0, members: [{ xid: 5, status: 0 }] })]));
  assert.ok(err instanceof RedoError);
  assert.match(err.message, /no member on members page 1/);
  err = catchError(() => redo.apply(ctxFor(page1), { lsn: 1n, image: Buffer.alloc(8192) },
    [rec(2n, { kind: 'multixactMembers', startOffset: 1636, members: [{ xid: 5, status: 6 }] })]));
  assert.ok(err instanceof RedoError);
  assert.match(err.message, /invalid status 6/);
});

// ---------------------------------------------------------------------------------------------
// PostgreSQL records.

const REC_LSN = 0x16b3700n;
const VERSION_LSN = 0x16b3748n;

/** A heap-like page: line pointers up to `lower`, tuples from `upper`, zeros in between. */
function heapPage(r: () => number, lower: number, upper: number, lsn: Lsn): Buffer {
  const page = Buffer.alloc(8192);
  page.set(randomBytes(r, lower - 24), 24);
  page.set(randomBytes(r, 8192 - upper), upper);
  writeHeader(page, lsn, lower, upper);
  return page;
}

function pgRecordValue(blocks: BlockSpec[], opts: { rmid?: number; info?: number; recordLsn?: Lsn; willInit?: boolean } = {}): Value {
  const record = encodeRecord({ xid: 1234, rmid: opts.rmid ?? 10, info: opts.info ?? 0x00, blocks, mainData: new Uint8Array([1, 2, 3]) }, 0x16b3600n);
  const willInit = opts.willInit ?? blocks.some((b) => b.willInit === true || b.image?.apply === true);
  return { kind: 'pgRecord', willInit, recordLsn: opts.recordLsn ?? REC_LSN, record };
}

test('pgRecord: an apply image is restored and pd_lsn set to the version LSN', () => {
  const r = rng(3);
  const page = heapPage(r, 48, 7000, 0x1111n);
  const other = heapPage(r, 40, 8000, 0x2222n);
  // Two blocks of the same relation: the key selects block 3.
  const value = pgRecordValue([
    { id: 0, rnode: REL, forkNum: 0, blkno: 2, image: { page: other, holeOffset: 40, holeLength: 8000 - 40, apply: true } },
    { id: 1, rnode: REL, forkNum: 0, blkno: 3, data: new Uint8Array([9, 9]), image: { page, holeOffset: 48, holeLength: 7000 - 48, apply: true } },
  ]);
  const key = relBlockKey(REL, 3);
  const base = heapPage(r, 32, 8100, 0x100n);
  const baseCopy = Buffer.from(base);
  for (const b of [{ lsn: 0x100n, image: base }, null]) {
    const out = reconstructOne(key, b, [rec(VERSION_LSN, value)]);
    const expected = Buffer.from(page);
    expected.writeUInt32LE(0, 0);
    expected.writeUInt32LE(0x16b3748, 4);
    assert.deepEqual(out, expected);
    assert.equal(pdLsn(out), VERSION_LSN);
  }
  assert.deepEqual(base, baseCopy);
});

function reconstructOne(key: Key, base: { lsn: Lsn; image: Buffer } | null, records: ReconstructRecord[]): Buffer {
  return redo.apply(ctxFor(key), base, records);
}

test('pgRecord: a new (all-zero) page image keeps pd_lsn zero', () => {
  const zero = new Uint8Array(8192);
  const value = pgRecordValue([{ id: 0, rnode: REL, forkNum: 0, blkno: 7, image: { page: zero, holeOffset: 0, holeLength: 0, apply: true } }],
    { rmid: 0, info: 0xb0 });
  const out = reconstructOne(relBlockKey(REL, 7), null, [rec(VERSION_LSN, value)]);
  assert.deepEqual(out, Buffer.alloc(8192));
});

test('pgRecord: a block without an image is unsupported, and the error names record, key and LSNs', () => {
  const key = relBlockKey(REL, 3);
  // Gin (rmgr 13) has no TypeScript redo.
  const value = pgRecordValue([{ id: 0, rnode: REL, forkNum: 0, blkno: 3, data: new Uint8Array([1, 2, 3, 4]) }], { rmid: 13, info: 0x10 });
  const base = { lsn: 0x100n, image: heapPage(rng(1), 32, 8100, 0x100n) };
  const err = catchError(() => reconstructOne(key, base, [rec(VERSION_LSN, value)]));
  assert.ok(err instanceof RedoUnsupportedError, String(err));
  assert.ok(err instanceof StrataError);
  assert.equal(err.code, 'redo_unsupported');
  assert.match(err.message,
    /^cannot reconstruct rel 1663\/5\/16384 main blk 3 at 0\/16B3800 .*: Gin\/CREATE_PTREE record at 0\/16B3700 \(version 0\/16B3748\) needs redo that Strata does not have for rmgr Gin \(no full-page image\)$/);
  assert.match(err.message, /tenant tenant-a, timeline timeline-b/);
  assert.match(err.message, new RegExp(keyToHex(key)));
  assert.equal(err.context.rmgr, 'Gin');
  assert.equal(err.context.recordType, 'CREATE_PTREE');
  assert.equal(err.context.recordLsn, '0/16B3700');
  assert.equal(err.context.versionLsn, '0/16B3748');
  assert.equal(err.context.requestLsn, '0/16B3800');
  assert.equal(err.context.key, keyToHex(key));
  assert.equal(err.context.keyDesc, 'rel 1663/5/16384 main blk 3');

  // Without a base the same record lacks its base image: a RedoError.
  const noBase = catchError(() => reconstructOne(key, null, [rec(VERSION_LSN, value)]));
  assert.ok(noBase instanceof RedoError);
  assert.match(noBase.message, /no base image/);
});

test('pgRecord: unsupported cases — no apply flag, will-init without image, block absent, non-relation key', () => {
  const r = rng(9);
  const page = heapPage(r, 48, 7000, 0x1n);
  const key = relBlockKey(REL, 3);
  const base = { lsn: 0x100n, image: heapPage(r, 32, 8100, 0x100n) };

  const checkOnly = pgRecordValue([{ id: 0, rnode: REL, forkNum: 0, blkno: 3, image: { page, holeOffset: 48, holeLength: 7000 - 48, apply: false } }], { rmid: 13 });
  let err = catchError(() => reconstructOne(key, base, [rec(VERSION_LSN, checkOnly)]));
  assert.ok(err instanceof RedoUnsupportedError);
  assert.match(err.message, /consistency checking only/);

  const init = pgRecordValue([{ id: 0, rnode: REL, forkNum: 0, blkno: 3, willInit: true, data: new Uint8Array([5]) }], { rmid: 13, info: 0x80 });
  err = catchError(() => reconstructOne(key, null, [rec(VERSION_LSN, init)]));
  assert.ok(err instanceof RedoUnsupportedError);
  assert.match(err.message, /Gin\/DELETE_LISTPAGE record/);

  const elsewhere = pgRecordValue([{ id: 0, rnode: REL, forkNum: 0, blkno: 4, image: { page, holeOffset: 48, holeLength: 7000 - 48, apply: true } }]);
  err = catchError(() => reconstructOne(key, base, [rec(VERSION_LSN, elsewhere)]));
  assert.ok(err instanceof RedoUnsupportedError);
  assert.match(err.message, /does not reference this block/);
  // Same block number, other fork: not this block either.
  err = catchError(() => reconstructOne(relBlockKey(VM_REL, 4), { lsn: 1n, image: vmPage(0) }, [rec(VERSION_LSN, elsewhere)]));
  assert.ok(err instanceof RedoUnsupportedError);

  err = catchError(() => reconstructOne(relSizeKey(REL), { lsn: 1n, image: Buffer.alloc(4) }, [rec(VERSION_LSN, elsewhere)]));
  assert.ok(err instanceof RedoUnsupportedError);
  assert.match(err.message, /not a relation block/);
});

test('pgRecord without an image: the TypeScript redo replays it on the previous version (Heap INSERT)', () => {
  const key = relBlockKey(REL, 3);
  const empty = Buffer.alloc(8192);
  pageInit(empty, 0);
  pageSetLsn(empty, 0x100n);
  // xl_heap_insert {offnum 1, flags 0}; block data: xl_heap_header {infomask2 1, infomask 0x0800, hoff 24}, 1 pad byte, int4 42.
  const mainData = Buffer.from([1, 0, 0]);
  const blockData = Buffer.from([1, 0, 0x00, 0x08, 24, 0, 42, 0, 0, 0]);
  const record = encodeRecord({ xid: 700, rmid: 10, info: 0x00, blocks: [{ id: 0, rnode: REL, forkNum: 0, blkno: 3, data: blockData }], mainData }, REC_LSN);
  const value: Value = { kind: 'pgRecord', willInit: false, recordLsn: REC_LSN, record };
  const out = reconstructOne(key, { lsn: 0x100n, image: empty }, [rec(VERSION_LSN, value)]);
  assert.equal(pageGetMaxOffsetNumber(out), 1, 'one tuple added');
  const item = pageGetItem(out, 1);
  assert.equal(item.length, 23 + 5, 'tuple header (23) + the bytes after xl_heap_header');
  assert.equal(item.readUInt32LE(0), 700, 'xmin is the record\'s xid');
  assert.equal(item.readInt32LE(24), 42);
  assert.equal(pageGetLsn(out), VERSION_LSN, 'pd_lsn = the version (end) LSN');
  assert.equal(pageGetLsn(empty), 0x100n, 'the base is never written');

  // A record the redo cannot apply exactly (offnum 5 on an empty page) is an error naming key and record.
  const bad = encodeRecord({ xid: 700, rmid: 10, info: 0x00, blocks: [{ id: 0, rnode: REL, forkNum: 0, blkno: 3, data: blockData }], mainData: Buffer.from([5, 0, 0]) }, REC_LSN);
  const err = catchError(() => reconstructOne(key, { lsn: 0x100n, image: empty }, [rec(VERSION_LSN, { kind: 'pgRecord', willInit: false, recordLsn: REC_LSN, record: bad })]));
  assert.ok(err instanceof RedoError, String(err));
  assert.match(err.message, /rel 1663\/5\/16384 main blk 3/);
  assert.match(err.message, /Heap\/INSERT record at 0\/16B3700/);

  // Without a previous version (and not re-initialised) there is nothing to replay on.
  const none = catchError(() => reconstructOne(key, null, [rec(VERSION_LSN, value)]));
  assert.ok(none instanceof RedoError);
  assert.match(none.message, /no base image/);
});

// ---------------------------------------------------------------------------------------------
// reconstructPage.

class SpyRedo implements Redo {
  calls: { base: { lsn: Lsn; image: Buffer } | null; lsns: Lsn[] }[] = [];
  apply(_ctx: RedoContext, base: { lsn: Lsn; image: Buffer } | null, records: ReconstructRecord[]): Buffer {
    this.calls.push({ base, lsns: records.map((r) => r.lsn) });
    return Buffer.alloc(1);
  }
}

test('reconstructPage: image only, no data, no base, will-init, ordering', () => {
  const key = relBlockKey(VM_REL, 0);
  const image = vmPage(0x55);
  const spy = new SpyRedo();
  assert.equal(reconstructPage(spy, ctxFor(key), { records: [], image: { lsn: 5n, image } }), image);
  assert.equal(spy.calls.length, 0);

  let err = catchError(() => reconstructPage(spy, ctxFor(key), { records: [], image: null }));
  assert.ok(err instanceof RedoError);
  assert.match(err.message, /^cannot reconstruct rel 1663\/5\/16384 vm blk 0 at 0\/16B3800 .*no data/);

  err = catchError(() => reconstructPage(spy, ctxFor(key), { records: [rec(9n, clearVm(1, NO_BLOCK, 1))], image: null }));
  assert.ok(err instanceof RedoError);
  assert.match(err.message, /no base image/);

  // Newest-first state → oldest-first call; the base is the image.
  const state: ReconstructState = {
    records: [rec(30n, clearVm(1, NO_BLOCK, 1)), rec(20n, clearVm(2, NO_BLOCK, 1)), rec(10n, clearVm(3, NO_BLOCK, 1))],
    image: { lsn: 5n, image },
  };
  reconstructPage(spy, ctxFor(key), state);
  assert.deepEqual(spy.calls[0]!.lsns, [10n, 20n, 30n]);
  assert.equal(spy.calls[0]!.base?.image, image);
  assert.deepEqual(state.records.map((x) => x.lsn), [30n, 20n, 10n]); // state untouched

  // A will-init oldest record: no base, even if an image is there.
  const init = pgRecordValue([{ id: 0, rnode: VM_REL, forkNum: 2, blkno: 0, image: { page: image, holeOffset: 0, holeLength: 0, apply: true } }]);
  reconstructPage(spy, ctxFor(key), { records: [rec(30n, clearVm(1, NO_BLOCK, 1)), rec(20n, init)], image: null });
  assert.equal(spy.calls[1]!.base, null);
  assert.deepEqual(spy.calls[1]!.lsns, [20n, 30n]);

  // Broken invariants are assertion failures.
  err = catchError(() => reconstructPage(spy, ctxFor(key), { records: [rec(20n, clearVm(1, NO_BLOCK, 1)), rec(20n, clearVm(2, NO_BLOCK, 1))], image: { lsn: 5n, image } }));
  assert.ok(err instanceof AssertionFailedError);
  err = catchError(() => reconstructPage(spy, ctxFor(key), { records: [rec(5n, clearVm(1, NO_BLOCK, 1))], image: { lsn: 5n, image } }));
  assert.ok(err instanceof AssertionFailedError);
  // BuiltinRedo checks the order too.
  err = catchError(() => redo.apply(ctxFor(key), { lsn: 5n, image }, [rec(20n, clearVm(1, NO_BLOCK, 1)), rec(10n, clearVm(2, NO_BLOCK, 1))]));
  assert.ok(err instanceof AssertionFailedError);
});

test('reconstructPage: mixed records on a VM page apply oldest first (FPI in the middle)', () => {
  const key = relBlockKey(VM_REL, 1);
  const r = rng(21);
  const image = vmPage(() => Math.floor(r() * 256), 0x50n);
  const fpiPage = vmPage(() => Math.floor(r() * 256), 0x77n);
  const fpi = pgRecordValue([{ id: 0, rnode: VM_REL, forkNum: 2, blkno: 1, image: { page: fpiPage, holeOffset: 0, holeLength: 0, apply: true } }],
    { rmid: 9, info: 0x40, recordLsn: 0x280n }); // Heap2/VISIBLE
  const state: ReconstructState = {
    records: [
      rec(0x400n, clearVm(32672 + 9, 32672 + 4000, 3)),
      rec(0x300n, fpi),
      rec(0x200n, clearVm(32672 + 5, NO_BLOCK, 1)),
    ],
    image: { lsn: 0x100n, image },
  };
  const out = reconstructPage(redo, ctxFor(key), state);
  // Expected: the FPI page (pd_lsn = its version LSN), then only the record after it.
  const expected = Buffer.from(fpiPage);
  expected.writeUInt32LE(0, 0);
  expected.writeUInt32LE(0x300, 4);
  refVmClear(expected, 1, 32672 + 9, 3);
  refVmClear(expected, 1, 32672 + 4000, 3);
  assert.deepEqual(out, expected);
  assert.deepEqual(state.image!.image, image);

  // Without the FPI both clears apply to the image, pd_lsn stays.
  const out2 = reconstructPage(redo, ctxFor(key), { records: [state.records[0]!, state.records[2]!], image: { lsn: 0x100n, image } });
  const expected2 = Buffer.from(image);
  refVmClear(expected2, 1, 32672 + 5, 1);
  refVmClear(expected2, 1, 32672 + 9, 3);
  refVmClear(expected2, 1, 32672 + 4000, 3);
  assert.deepEqual(out2, expected2);
  assert.equal(pdLsn(out2), 0x50n);
});

test('reconstructPage: CLOG records apply oldest first; the last timestamp wins', () => {
  const r = rng(33);
  const image = Buffer.from(randomBytes(r, 8192));
  const a = FIRST_XID + 7;
  const b = FIRST_XID + 8;
  const c = FIRST_XID + 30000;
  const state: ReconstructState = {
    records: [
      rec(0x400n, clogSet(ClogStatus.aborted, [c])),
      rec(0x300n, clogSet(ClogStatus.committed, [b], 2000n)),
      rec(0x200n, clogSet(ClogStatus.committed, [a, c], 1000n)),
    ],
    image: { lsn: 0x100n, image },
  };
  const out = reconstructPage(redo, ctxFor(clogKey), state);
  const expected = Buffer.alloc(8200);
  image.copy(expected);
  refClogSet(expected, a, 1);
  refClogSet(expected, c, 1);
  refClogSet(expected, b, 1);
  refClogSet(expected, c, 2);
  expected.writeBigInt64BE(2000n, 8192);
  assert.deepEqual(out, expected);
  assert.equal(clogStatusOf(out, c), ClogStatus.aborted);
});
