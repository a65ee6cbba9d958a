/**
 * WAL-ingest arithmetic and directory encodings. Expected values are worked out by hand from
 * PostgreSQL's definitions (the comments say how), not from the code under test.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  DirectoryCorruptError, decodeDbDir, decodeRelDir, decodeSize, decodeSlruDir, decodeTwoPhaseDir, encodeDbDir, encodeRelDir, encodeSize,
  encodeSlruDir, encodeTwoPhaseDir, relDirEntry, relDirEntryRel,
} from '../../src/pageserver/datadir/dirs.ts';
import {
  MAX_MEMBERS_SEGMENT, advanceNextXid, clogPageOfXid, clogPagePrecedes, membersSegmentsToTruncate, multixactMemberPage, multixactOffsetPage,
  multixactOffsetPagePrecedes, previousMultiXactId, segmentsToTruncate, transactionIdPrecedes,
} from '../../src/pageserver/walingest/xidmath.ts';
import { FSM_SLOTS_PER_PAGE, VM_HEAPBLOCKS_PER_PAGE, fsmLeafPhysicalBlock } from '../../src/pageserver/walingest/walingest.ts';

test('page geometry: CLOG, multixact, VM and FSM', () => {
  // CLOG: 2 bits per xid → 4 xids per byte → 32768 per 8 KiB page.
  assert.equal(clogPageOfXid(32767), 0);
  assert.equal(clogPageOfXid(32768), 1);
  // Offsets: 4 bytes per multixact → 2048 per page. Members: 409 groups of 4 → 1636 per page.
  assert.equal(multixactOffsetPage(2047), 0);
  assert.equal(multixactOffsetPage(2048), 1);
  assert.equal(multixactMemberPage(1635), 0);
  assert.equal(multixactMemberPage(1636), 1);
  // VM: (8192 − 24-byte header) bytes × 4 heap blocks per byte.
  assert.equal(VM_HEAPBLOCKS_PER_PAGE, 32672);
  // FSM: 8192 − 24 (header) − 4 (fp_next_slot) = 8164 nodes, 4095 of them non-leaf → 4069 leaves.
  assert.equal(FSM_SLOTS_PER_PAGE, 4069);
  // FSM blocks are laid out depth first: 0 = root, 1 = first level-1 page, 2.. = its leaves;
  // after 4069 leaves comes the second level-1 page (block 4071), then its first leaf (4072).
  assert.equal(fsmLeafPhysicalBlock(0), 2);
  assert.equal(fsmLeafPhysicalBlock(1), 3);
  assert.equal(fsmLeafPhysicalBlock(4068), 4070);
  assert.equal(fsmLeafPhysicalBlock(4069), 4072);
});

test('transaction id comparison is modulo 2^32 for normal xids', () => {
  assert.equal(transactionIdPrecedes(100, 200), true);
  assert.equal(transactionIdPrecedes(200, 100), false);
  assert.equal(transactionIdPrecedes(0xffff_fff0, 5), true, 'just before the wrap precedes just after it');
  assert.equal(transactionIdPrecedes(2, 0xffff_fff0), true, 'special xids (< 3) compare as plain numbers');
});

test('nextXid advances past every xid seen, rounded up to 1024, with the epoch on wraparound', () => {
  assert.equal(advanceNextXid(724n, 730), 1024n);
  assert.equal(advanceNextXid(1024n, 1023), null, 'an xid below nextXid changes nothing');
  assert.equal(advanceNextXid(1024n, 1024), 2048n, 'xid 1024 needs nextXid 1025, rounded to 2048');
  assert.equal(advanceNextXid(5000n, 2), null, 'special xids are ignored');
  // Epoch 0, nextXid 0xFFFFFF00; xid 0xFFFFFFF0 → 0xFFFFFFF1 rounds past 2^32 to 0, which is
  // not a normal xid: the next normal one is 3, in epoch 1.
  assert.equal(advanceNextXid(0xffff_ff00n, 0xffff_fff0), (1n << 32n) | 3n);
  // A 1024-multiple is on the same CLOG page as the real next xid or at the start of the next page.
  for (const xid of [32766, 32767, 65535]) {
    const n = Number(advanceNextXid(3n, xid)! & 0xffff_ffffn);
    assert.ok(clogPageOfXid(n) === clogPageOfXid(xid + 1) || n % 32768 === 0);
  }
});

test('SLRU truncation picks whole segments before the cutoff, with wraparound', () => {
  assert.equal(clogPagePrecedes(0, 1), true);
  assert.equal(clogPagePrecedes(1, 0), false);
  // The last CLOG page (xids just below 2^32) precedes page 0 after the wrap.
  assert.equal(clogPagePrecedes(131071, 0), true);
  // Cutoff page 70 is rounded down to 64, the start of segment 2: segments 0 and 1 go.
  assert.deepEqual(segmentsToTruncate([0, 1, 2, 3], 70, clogPagePrecedes), [0, 1]);
  assert.deepEqual(segmentsToTruncate([0, 1], 31, clogPagePrecedes), [], 'nothing before segment 0');
  assert.equal(multixactOffsetPagePrecedes(0, 1), true);
  assert.equal(previousMultiXactId(1), 0xffff_ffff, 'multixact 0 is invalid, so 1 follows 0xFFFFFFFF');
  // Members: segments from the old start's up to (not including) the new start's, wrapping.
  const perSegment = 1636 * 32;
  assert.deepEqual(membersSegmentsToTruncate(0, 2 * perSegment), [0, 1]);
  assert.deepEqual(membersSegmentsToTruncate(0xffff_ff00, perSegment + 5), [MAX_MEMBERS_SEGMENT, 0]);
  // 0xFFFFFFFF / 1636 = 2625285 pages → segment 82040.
  assert.equal(MAX_MEMBERS_SEGMENT, 82040);
});

test('directory values round-trip and reject damage', () => {
  const dbs = [{ spcNode: 1664, dbNode: 0, hasRelmap: true }, { spcNode: 1663, dbNode: 5, hasRelmap: false }];
  assert.deepEqual(decodeDbDir(encodeDbDir(dbs)), [dbs[1], dbs[0]], 'sorted by (tablespace, database)');
  const rels = new Set([relDirEntry(16384, 0), relDirEntry(16384, 2), relDirEntry(0xffff_ffff, 3)]);
  assert.deepEqual(decodeRelDir(encodeRelDir(rels)), rels);
  assert.deepEqual(relDirEntryRel(relDirEntry(0xffff_ffff, 3)), { relNode: 0xffff_ffff, forkNum: 3 });
  assert.deepEqual(decodeSlruDir(encodeSlruDir([3, 1, 2])), new Set([1, 2, 3]));
  assert.deepEqual(decodeTwoPhaseDir(encodeTwoPhaseDir([])), new Set());
  assert.equal(decodeSize(encodeSize(131072), 'relation'), 131072);

  const bad = encodeRelDir(rels);
  assert.throws(() => decodeRelDir(bad.subarray(0, bad.length - 1)), DirectoryCorruptError, 'truncated');
  const wrongKind = Buffer.from(bad);
  wrongKind[0] = 9;
  assert.throws(() => decodeRelDir(wrongKind), /kind 9/);
  const unsorted = Buffer.from(encodeSlruDir([1, 2]));
  unsorted.writeUInt32LE(5, 6);
  assert.throws(() => decodeSlruDir(unsorted), /not sorted/);
  assert.throws(() => encodeDbDir([dbs[0]!, dbs[0]!]), /duplicate/);
  assert.throws(() => decodeSize(Buffer.alloc(3), 'relation'), /3 bytes/);
});
