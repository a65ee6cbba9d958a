/**
 * The small rmgrs' redo (XLOG FPI / FPI_FOR_HINT, Sequence, Generic), the dispatcher, and the
 * offline verifier on hand-built records (encoded with src/postgres/walwriter.ts, decoded with the
 * real record decoder).
 *
 * Expected pages are written out here from PostgreSQL's rules (sequence.c seq_redo + PageInit +
 * PageAddItem, generic_xlog.c applyPageRedo + generic_redo, xlogutils.c restoring backup blocks),
 * with byte positions worked out by hand; never from the code under test.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { Lsn } from '../../src/postgres/lsn.ts';
import { RM_BTREE_ID, RM_GENERIC_ID, RM_HASH_ID, RM_HEAP_ID, RM_SEQ_ID, RM_SMGR_ID, RM_XLOG_ID } from '../../src/postgres/rmgr.ts';
import { encodeRecord, type BlockSpec, type RecordSpec } from '../../src/postgres/walwriter.ts';
import { decodeXLogRecord, type DecodedRecord, type RelFileNode } from '../../src/postgres/xlogrecord.ts';
import { applyBlockImage, redoBlock, registerRmgrRedo, replayBlock, rmgrRedoFn, supportedRmgrs } from '../../src/redo/index.ts';
import { genericRedo } from '../../src/redo/generic.ts';
import { seqRedo } from '../../src/redo/sequence.ts';
import { RedoError, redoFailed, redoUnsupported, type BlockRedoFn } from '../../src/redo/types.ts';
import { formatVerifyReport, RedoVerifier, statsByRmgr, verifyWal, type RedoTypeStats } from '../../src/redo/verify.ts';
import { xlogRedo } from '../../src/redo/xlog.ts';

const REL: RelFileNode = { spcNode: 1663, dbNode: 5, relNode: 16384 };
const REL2: RelFileNode = { spcNode: 1663, dbNode: 5, relNode: 16390 };
const XLOG_FPI = 0xb0;
const XLOG_FPI_FOR_HINT = 0xa0;

let nextLsn = 0x0100_0000n;
/** Encodes `spec` and decodes it back as the real reader would, at increasing LSNs. */
function record(spec: RecordSpec): DecodedRecord {
  const lsn = nextLsn;
  const bytes = encodeRecord(spec, lsn - 0x40n);
  const endLsn = lsn + BigInt((bytes.length + 7) & ~7);
  nextLsn = endLsn + 0x18n;
  return decodeXLogRecord(bytes, lsn, endLsn);
}

function pdLsn(page: Uint8Array): Lsn {
  const b = Buffer.from(page.buffer, page.byteOffset, page.byteLength);
  return (BigInt(b.readUInt32LE(0)) << 32n) | BigInt(b.readUInt32LE(4));
}

function setPdLsn(page: Buffer, lsn: Lsn): void {
  page.writeUInt32LE(Number(lsn >> 32n), 0);
  page.writeUInt32LE(Number(lsn & 0xffff_ffffn), 4);
}

/** A page with header (lower, upper, special), 0xee in the hole and a byte pattern above upper. */
function patternPage(lower: number, upper: number, seed: number, special = 8192): Buffer {
  const p = Buffer.alloc(8192);
  for (let i = 24; i < 8192; i++) p[i] = (seed + i * 13) & 0xff;
  p.fill(0xee, lower, upper);
  p.writeUInt16LE(lower, 12);
  p.writeUInt16LE(upper, 14);
  p.writeUInt16LE(special, 16);
  p.writeUInt16LE(0x2004, 18);
  return p;
}

function fragment(offset: number, data: Uint8Array): Buffer {
  const h = Buffer.alloc(4);
  h.writeUInt16LE(offset, 0);
  h.writeUInt16LE(data.length, 2);
  return Buffer.concat([h, data]);
}

function catchError(fn: () => unknown): unknown {
  try {
    fn();
  } catch (err) {
    return err;
  }
  assert.fail('expected an error');
}

function isRedoError(code: 'redo_failed' | 'redo_unsupported') {
  return (e: unknown): boolean => e instanceof RedoError && e.code === code;
}

// ---------------------------------------------------------------------------------------------
// Sequence

/** A sequence tuple as nextval logs it: 24-byte header + last_value, log_cnt, is_called = 41 bytes. */
function seqTuple(lastValue: bigint, logCnt: bigint, isCalled: boolean): Buffer {
  const t = Buffer.alloc(41);
  t.writeUInt32LE(2, 0); // xmin FrozenTransactionId
  t.writeUInt16LE(3, 18); // natts
  t.writeUInt16LE(0x0800 | 0x0300, 20); // XMAX_INVALID | XMIN_FROZEN
  t[22] = 24; // t_hoff
  t.writeBigInt64LE(lastValue, 24);
  t.writeBigInt64LE(logCnt, 32);
  t[40] = isCalled ? 1 : 0;
  return t;
}

function seqRecord(tuple: Uint8Array): DecodedRecord {
  const xl = Buffer.alloc(12);
  xl.writeUInt32LE(REL.spcNode, 0);
  xl.writeUInt32LE(REL.dbNode, 4);
  xl.writeUInt32LE(REL.relNode, 8);
  return record({ xid: 0, rmid: RM_SEQ_ID, info: 0x00, blocks: [{ id: 0, rnode: REL, forkNum: 0, blkno: 0, willInit: true }], mainData: Buffer.concat([xl, tuple]) });
}

test('SEQ_LOG rebuilds the sequence page: empty page, 8-byte special with 0x1717, the tuple as item 1', () => {
  const tuple = seqTuple(33n, 32n, true);
  const rec = seqRecord(tuple);
  // Expected, from PageInit(BLCKSZ, MAXALIGN(4) = 8) then PageAddItem at offset 1:
  // pd_special = 8184; the 41-byte tuple takes MAXALIGN(41) = 48 bytes: pd_upper = 8136; pd_lower = 24 + 4.
  const expected = Buffer.alloc(8192);
  setPdLsn(expected, rec.endLsn);
  expected.writeUInt16LE(28, 12);
  expected.writeUInt16LE(8136, 14);
  expected.writeUInt16LE(8184, 16);
  expected.writeUInt16LE(0x2004, 18);
  expected.writeUInt32LE(8136 | (1 << 15) | (41 << 17), 24); // lp_off 8136, LP_NORMAL, lp_len 41
  tuple.copy(expected, 8136);
  expected.writeUInt32LE(0x1717, 8184);

  const fromZero = Buffer.alloc(8192);
  seqRedo(fromZero, rec, 0, rec.endLsn);
  assert.ok(fromZero.equals(expected), 'page rebuilt from a zeroed page');
  // The previous content never matters: the page is re-initialised.
  const fromGarbage = patternPage(100, 4000, 9);
  seqRedo(fromGarbage, rec, 0, rec.endLsn);
  assert.ok(fromGarbage.equals(expected), 'page rebuilt from an old page');
  // Through the dispatcher (willInit: replayBlock starts from zeroes).
  assert.ok(replayBlock(null, rec, rec.blocks[0]!).equals(expected));
});

test('SEQ_LOG: a record without a tuple or with a wrong block is refused', () => {
  const empty = record({ xid: 0, rmid: RM_SEQ_ID, info: 0, blocks: [{ id: 0, rnode: REL, forkNum: 0, blkno: 0, willInit: true }], mainData: Buffer.alloc(12) });
  assert.throws(() => seqRedo(Buffer.alloc(8192), empty, 0, empty.endLsn), isRedoError('redo_failed'));
  const rec = seqRecord(seqTuple(1n, 0n, false));
  assert.throws(() => seqRedo(Buffer.alloc(8192), rec, 1, rec.endLsn), isRedoError('redo_failed'));
  const badOp = record({ xid: 0, rmid: RM_SEQ_ID, info: 0x10, blocks: [{ id: 0, rnode: REL, forkNum: 0, blkno: 0, willInit: true }], mainData: Buffer.alloc(60) });
  assert.throws(() => seqRedo(Buffer.alloc(8192), badOp, 0, badOp.endLsn), isRedoError('redo_failed'));
});

// ---------------------------------------------------------------------------------------------
// Generic

function genericRecord(blocks: { rnode?: RelFileNode; blkno: number; delta?: Uint8Array; image?: BlockSpec['image'] }[]): DecodedRecord {
  return record({
    xid: 800, rmid: RM_GENERIC_ID, info: 0,
    blocks: blocks.map((b, i) => ({
      id: i, rnode: b.rnode ?? REL, forkNum: 0, blkno: b.blkno,
      ...(b.delta !== undefined && b.delta.length > 0 ? { data: b.delta } : {}),
      ...(b.image !== undefined ? { image: b.image } : {}),
    })),
  });
}

test('generic redo: fragments copied in order, the gap between pd_lower and pd_upper zeroed, pd_lsn set', () => {
  const base = patternPage(40, 8000, 1);
  // New pd_lower 44 / pd_upper 7990 (one more line pointer and a 10-byte item), written as fragments.
  const hdr = Buffer.alloc(4);
  hdr.writeUInt16LE(44, 0);
  hdr.writeUInt16LE(7990, 2);
  const lp = Buffer.from([1, 2, 3, 4]);
  const item = Buffer.from('0123456789');
  const lastByte = Buffer.from([0x5a]);
  const overwrite = Buffer.from([0xa1, 0xa2]);
  const delta = Buffer.concat([fragment(12, hdr), fragment(40, lp), fragment(7990, item), fragment(8191, lastByte), fragment(7991, overwrite)]);
  const rec = genericRecord([{ blkno: 3, delta }]);

  const expected = Buffer.from(base);
  expected[12] = 44; expected[13] = 0; expected[14] = 7990 & 0xff; expected[15] = 7990 >> 8;
  expected[40] = 1; expected[41] = 2; expected[42] = 3; expected[43] = 4;
  for (let i = 0; i < 10; i++) expected[7990 + i] = '0123456789'.charCodeAt(i);
  expected[8191] = 0x5a;
  expected[7991] = 0xa1; expected[7992] = 0xa2; // later fragments win
  expected.fill(0, 44, 7990);
  setPdLsn(expected, rec.endLsn);

  const page = Buffer.from(base);
  genericRedo(page, rec, 0, rec.endLsn);
  assert.ok(page.equals(expected));
  const viaReplay = replayBlock(base, rec, rec.blocks[0]!);
  assert.ok(viaReplay.equals(expected));
  assert.equal(base[50], 0xee, 'replayBlock does not modify the previous version');
});

test('generic redo: an empty delta still clears the gap and sets pd_lsn', () => {
  const base = patternPage(60, 7000, 2);
  const rec = genericRecord([{ blkno: 0 }]);
  const page = Buffer.from(base);
  genericRedo(page, rec, 0, rec.endLsn);
  const expected = Buffer.from(base);
  expected.fill(0, 60, 7000);
  setPdLsn(expected, rec.endLsn);
  assert.ok(page.equals(expected));
});

test('generic redo: malformed deltas are refused without writing outside the page', () => {
  const base = patternPage(40, 8000, 3);
  const cases: [string, Buffer][] = [
    ['fragment past the page end', fragment(8190, Buffer.from([1, 2, 3]))],
    ['truncated fragment header', Buffer.concat([fragment(100, Buffer.from([1])), Buffer.from([5, 0])])],
    ['fragment longer than the delta', Buffer.concat([Buffer.from([100, 0, 10, 0]), Buffer.from([1, 2, 3])])],
  ];
  for (const [what, delta] of cases) {
    const rec = genericRecord([{ blkno: 0, delta }]);
    assert.throws(() => genericRedo(Buffer.from(base), rec, 0, rec.endLsn), isRedoError('redo_failed'), what);
  }
  const lowerAboveUpper = Buffer.alloc(4);
  lowerAboveUpper.writeUInt16LE(9000 - 1000, 0);
  lowerAboveUpper.writeUInt16LE(7000, 2);
  const rec = genericRecord([{ blkno: 0, delta: fragment(12, lowerAboveUpper) }]);
  assert.throws(() => genericRedo(Buffer.from(base), rec, 0, rec.endLsn), isRedoError('redo_failed'), 'pd_lower > pd_upper');
});

// ---------------------------------------------------------------------------------------------
// XLOG FPI / FPI_FOR_HINT and the image split

test('FPI: the apply image is the new page, pd_lsn = record end; a new (all-zero) page keeps pd_lsn 0', () => {
  const page = patternPage(64, 6000, 4);
  setPdLsn(page, 0x55n);
  const rec = record({ xid: 0, rmid: RM_XLOG_ID, info: XLOG_FPI, blocks: [{ id: 0, rnode: REL, forkNum: 0, blkno: 9, image: { page, holeOffset: 64, holeLength: 6000 - 64, apply: true } }] });
  const expected = Buffer.from(page);
  expected.fill(0, 64, 6000); // the hole comes back as zeros
  setPdLsn(expected, rec.endLsn);
  const out = replayBlock(patternPage(30, 40, 7), rec, rec.blocks[0]!);
  assert.ok(out.equals(expected));

  const zero = Buffer.alloc(8192);
  const recZero = record({ xid: 0, rmid: RM_XLOG_ID, info: XLOG_FPI, blocks: [{ id: 0, rnode: REL, forkNum: 0, blkno: 10, image: { page: zero, holeOffset: 0, holeLength: 0, apply: true } }] });
  const outZero = applyBlockImage(recZero, recZero.blocks[0]!, recZero.endLsn);
  assert.ok(outZero.equals(zero), 'PageIsNew: pd_lsn not set');
});

test('XLOG redo for blocks without an apply image: FPI_FOR_HINT without image is a no-op, the rest is refused', () => {
  const hint = record({ xid: 0, rmid: RM_XLOG_ID, info: XLOG_FPI_FOR_HINT, blocks: [{ id: 0, rnode: REL, forkNum: 0, blkno: 1 }] });
  const page = patternPage(40, 100, 5);
  const before = Buffer.from(page);
  xlogRedo(page, hint, 0, hint.endLsn);
  assert.ok(page.equals(before), 'hint-only record changes nothing, not even pd_lsn');
  assert.ok(replayBlock(before, hint, hint.blocks[0]!).equals(before));

  const fpiNoImage = record({ xid: 0, rmid: RM_XLOG_ID, info: XLOG_FPI, blocks: [{ id: 0, rnode: REL, forkNum: 0, blkno: 1 }] });
  assert.throws(() => xlogRedo(Buffer.from(page), fpiNoImage, 0, fpiNoImage.endLsn), isRedoError('redo_failed'));
  const checkOnly = record({ xid: 0, rmid: RM_XLOG_ID, info: XLOG_FPI_FOR_HINT, blocks: [{ id: 0, rnode: REL, forkNum: 0, blkno: 1, image: { page, holeOffset: 0, holeLength: 0, apply: false } }] });
  assert.throws(() => xlogRedo(Buffer.from(page), checkOnly, 0, checkOnly.endLsn), isRedoError('redo_failed'));
  assert.throws(() => applyBlockImage(checkOnly, checkOnly.blocks[0]!, checkOnly.endLsn), isRedoError('redo_failed'));
  const nextOid = record({ xid: 0, rmid: RM_XLOG_ID, info: 0x30, blocks: [{ id: 0, rnode: REL, forkNum: 0, blkno: 1 }] });
  assert.throws(() => xlogRedo(Buffer.from(page), nextOid, 0, nextOid.endLsn), isRedoError('redo_failed'));
});

// ---------------------------------------------------------------------------------------------
// Dispatcher and errors

test('dispatcher: rmgrs without TypeScript redo are redo_unsupported, naming rmgr, type, LSN X/X and block', () => {
  const rec = record({ xid: 5, rmid: RM_HASH_ID, info: 0x20, blocks: [{ id: 0, rnode: REL, forkNum: 0, blkno: 12, data: Buffer.from([1]) }] });
  const err = catchError(() => redoBlock(Buffer.alloc(8192), rec, 0, rec.endLsn));
  assert.ok(err instanceof RedoError);
  assert.equal(err.code, 'redo_unsupported');
  assert.equal(err.context['rmgr'], 'Hash');
  assert.equal(err.context['recordType'], 'INSERT');
  assert.match(String(err.context['lsn']), /^[0-9A-F]+\/[0-9A-F]+$/);
  assert.equal(err.context['lsn'], `0/${rec.lsn.toString(16).toUpperCase()}`);
  assert.equal(err.context['blockId'], 0);
  assert.equal(err.context['rel'], '1663/5/16384');
  assert.equal(err.context['blkno'], 12);
  assert.match(err.message, /Hash\/INSERT record at 0\/[0-9A-F]+, block ref #0 \(rel 1663\/5\/16384 fork main blk 12\)/);
  const f = redoFailed(rec, undefined, 'bad');
  assert.equal(f.code, 'redo_failed');
  assert.equal(f.context['blockId'], undefined);
  assert.equal(redoUnsupported(rec, 3, 'x').context['blockId'], 3);
});

test('dispatcher: registry lists the small rmgrs; registering replaces and can be undone', () => {
  const ids = supportedRmgrs().map((r) => r.name);
  for (const n of ['XLOG', 'Sequence', 'Generic']) assert.ok(ids.includes(n), n);
  const rec = record({ xid: 5, rmid: RM_HASH_ID, info: 0x20, blocks: [{ id: 0, rnode: REL, forkNum: 0, blkno: 1, data: Buffer.from([1]) }] });
  let called = 0;
  const fn: BlockRedoFn = (page) => { called++; page[100] = 7; };
  const prev = registerRmgrRedo(RM_HASH_ID, fn);
  try {
    assert.equal(prev, undefined);
    const out = replayBlock(Buffer.alloc(8192), rec, rec.blocks[0]!);
    assert.equal(called, 1);
    assert.equal(out[100], 7);
  } finally {
    registerRmgrRedo(RM_HASH_ID, prev);
  }
  assert.equal(rmgrRedoFn(RM_HASH_ID), undefined);
  assert.throws(() => replayBlock(null, rec, rec.blocks[0]!), isRedoError('redo_failed'), 'no previous version and not willInit');
});

// ---------------------------------------------------------------------------------------------
// The verifier on synthetic WAL

function fpi(rnode: RelFileNode, blkno: number, page: Buffer): DecodedRecord {
  return record({ xid: 0, rmid: RM_XLOG_ID, info: XLOG_FPI, blocks: [{ id: 0, rnode, forkNum: 0, blkno, image: { page, holeOffset: 0, holeLength: 0, apply: true } }] });
}

/** What PostgreSQL's primary had after a generic change: base + fragments, gap zeroed (pd_lsn arbitrary). */
function primaryAfter(base: Buffer, frags: [number, Buffer][], garbageInGap: boolean): Buffer {
  const p = Buffer.from(base);
  for (const [off, data] of frags) data.copy(p, off);
  p.fill(garbageInGap ? 0x77 : 0, p.readUInt16LE(12), p.readUInt16LE(14));
  setPdLsn(p, 0x1234n); // consistency images carry the LSN from before the record
  p.writeUInt16LE(0xbeef, 8);
  return p;
}

function checkedGeneric(rnode: RelFileNode, blkno: number, frags: [number, Buffer][], image: Buffer | null): DecodedRecord {
  return genericRecord([{ rnode, blkno, delta: Buffer.concat(frags.map(([o, d]) => fragment(o, d))), ...(image ? { image: { page: image, holeOffset: 0, holeLength: 0, apply: false } } : {}) }]);
}

function row(types: RedoTypeStats[], rmgr: string, type: string): RedoTypeStats {
  const r = types.find((t) => t.rmgr === rmgr && t.type === type);
  assert.ok(r, `no row ${rmgr}/${type}`);
  return r;
}

test('verifier: restore, verify under masking, mismatch with offsets, resync, no base, unsupported, truncate', async () => {
  const base = patternPage(48, 7000, 6);
  const f1: [number, Buffer][] = [[7000 + 16, Buffer.from('abcd')]];
  const after1 = primaryAfter(base, f1, true);
  const f2: [number, Buffer][] = [[7100, Buffer.from('wxyz')]];
  const after2 = primaryAfter(after1, f2, false);
  after2[7500] = after2[7500]! ^ 0xff; // the primary has a byte our redo cannot produce
  const f3: [number, Buffer][] = [[7200, Buffer.from('!!')]];
  const after3 = primaryAfter(after2, f3, false);
  const other = patternPage(30, 8000, 8);
  const otherAfter = primaryAfter(other, [[8000, Buffer.from('q')]], false);
  const heapImage = patternPage(40, 8000, 9);

  const recs: DecodedRecord[] = [
    fpi(REL, 0, base), // restored
    checkedGeneric(REL, 0, f1, after1), // verified (gap garbage + LSN + checksum masked)
    checkedGeneric(REL, 0, f2, after2), // mismatch at 7500, then resync to after2
    checkedGeneric(REL, 0, f3, after3), // verified only because the verifier resynced
    checkedGeneric(REL2, 4, [[8000, Buffer.from('q')]], otherAfter), // no base: skipped, resynced from its image
    checkedGeneric(REL2, 4, [[8001, Buffer.from('r')]], primaryAfter(otherAfter, [[8001, Buffer.from('r')]], false)), // verified
    record({ xid: 9, rmid: RM_HEAP_ID, info: 0x00, blocks: [{ id: 0, rnode: REL2, forkNum: 0, blkno: 5, data: Buffer.from([1, 2]), image: { page: heapImage, holeOffset: 0, holeLength: 0, apply: false } }], mainData: Buffer.from([1, 0, 0]) }),
  ];
  // smgr TRUNCATE of REL to 0 blocks (heap fork): blkno u32, rnode, flags = SMGR_TRUNCATE_HEAP.
  const trunc = Buffer.alloc(20);
  trunc.writeUInt32LE(0, 0);
  trunc.writeUInt32LE(REL.spcNode, 4);
  trunc.writeUInt32LE(REL.dbNode, 8);
  trunc.writeUInt32LE(REL.relNode, 12);
  trunc.writeInt32LE(1, 16);
  recs.push(record({ xid: 0, rmid: RM_SMGR_ID, info: 0x20, mainData: trunc }));
  recs.push(checkedGeneric(REL, 0, [[7300, Buffer.from('z')]], null)); // REL blk 0 was truncated away: no base

  const seen: string[] = [];
  const report = await verifyWal(recs, {
    redoFor: (rmid) => (rmid === RM_HEAP_ID ? undefined : rmgrRedoFn(rmid)),
    onMismatch: (m) => seen.push(m.lsn),
  });
  const g = row(report.types, 'Generic', 'Generic');
  assert.equal(g.records, 6);
  assert.equal(g.applied, 4);
  assert.equal(g.verified, 3);
  assert.equal(g.mismatched, 1);
  assert.equal(g.skippedNoBase, 2);
  assert.equal(row(report.types, 'XLOG', 'FPI').restored, 1);
  assert.equal(row(report.types, 'Heap', 'INSERT').unsupported, 1);
  assert.equal(report.mismatches.length, 1);
  const m = report.mismatches[0]!;
  assert.equal(m.blkno, 0);
  assert.equal(m.rel, '1663/5/16384');
  assert.equal(m.lsn, `0/${recs[2]!.lsn.toString(16).toUpperCase()}`);
  assert.equal(m.differingBytes, 1);
  assert.deepEqual(m.firstDiffs.map((d) => d.offset), [7500]);
  assert.equal(m.firstDiffs[0]!.theirs, m.firstDiffs[0]!.ours ^ 0xff);
  assert.deepEqual(seen, [m.lsn]);
  assert.ok(report.pages.resynced >= 3, 'mismatch, no-base and unsupported blocks resynced from images');
  assert.equal(report.pages.dropped, 1, 'the truncated block');
  assert.equal(report.totals.verified, 3);
  const text = formatVerifyReport(report);
  assert.match(text, /Generic\s+Generic\s+6\s+6\s+0\s+4\s+3\s+1\s+0\s+0\s+2/);
  assert.match(text, /mismatches \(first 1\)/);
  assert.match(text, /7500 \(tuple area\)/);
  const byRmgr = statsByRmgr(report);
  assert.equal(byRmgr.find((r) => r.rmgr === 'Generic')!.verified, 3);
});

test('verifier: redo failures are counted and listed; the failed page is not reused', async () => {
  const base = patternPage(48, 7000, 10);
  const f1: [number, Buffer][] = [[7100, Buffer.from('k')]];
  const recs = [fpi(REL, 1, base), checkedGeneric(REL, 1, f1, null), checkedGeneric(REL, 1, [[7101, Buffer.from('l')]], null)];
  let calls = 0;
  const failing: BlockRedoFn = (page, rec, blockId) => {
    calls++;
    page.fill(1); // half-written before failing
    if (calls === 1) throw redoFailed(rec, blockId, 'injected');
  };
  const report = await verifyWal(recs, { redoFor: (rmid) => (rmid === RM_GENERIC_ID ? failing : rmgrRedoFn(rmid)) });
  const g = row(report.types, 'Generic', 'Generic');
  assert.equal(g.failed, 1);
  assert.equal(g.skippedNoBase, 1, 'after a failure without an image, the block is forgotten');
  assert.equal(report.failures.length, 1);
  assert.equal(report.failures[0]!.code, 'redo_failed');
  assert.equal(report.failures[0]!.blkno, 1);
  assert.match(report.failures[0]!.message, /injected/);
});

test('verifier: the page cache is bounded; evicted blocks count as skipped_no_base', () => {
  const run = (maxPages: number): ReturnType<RedoVerifier['report']> => {
    const v = new RedoVerifier({ maxPages });
    v.apply(fpi(REL, 0, patternPage(48, 7000, 11)));
    v.apply(fpi(REL, 1, patternPage(48, 7000, 12))); // with maxPages 1: evicts block 0
    v.apply(checkedGeneric(REL, 0, [[7100, Buffer.from('x')]], null));
    v.apply(checkedGeneric(REL, 1, [[7100, Buffer.from('x')]], null));
    return v.report();
  };
  const small = run(1);
  assert.equal(small.pages.evicted, 1);
  assert.equal(small.pages.cachedAtEnd, 1);
  assert.equal(row(small.types, 'Generic', 'Generic').skippedNoBase, 1);
  assert.equal(row(small.types, 'Generic', 'Generic').applied, 1);
  const big = run(2);
  assert.equal(big.pages.evicted, 0);
  assert.equal(row(big.types, 'Generic', 'Generic').skippedNoBase, 0);
  assert.equal(row(big.types, 'Generic', 'Generic').applied, 2);
});

test('verifier: heap records that clear PD_ALL_VISIBLE clear the visibility-map bits of cached VM pages', () => {
  const VM_FORK = 2;
  const v = new RedoVerifier({ redoFor: (rmid) => (rmid === RM_HEAP_ID ? undefined : rmgrRedoFn(rmid)) });
  // A VM page (PageInit with no special space: pd_lower 24, pd_upper 8192) with every bit set.
  const vm = Buffer.alloc(8192, 0xff);
  vm.fill(0, 0, 24);
  vm.writeUInt16LE(24, 12);
  vm.writeUInt16LE(8192, 14);
  vm.writeUInt16LE(8192, 16);
  vm.writeUInt16LE(0x2004, 18);
  const fpiRec = record({ xid: 0, rmid: RM_XLOG_ID, info: XLOG_FPI, blocks: [{ id: 0, rnode: REL, forkNum: VM_FORK, blkno: 0, image: { page: vm, holeOffset: 0, holeLength: 0, apply: true } }] });
  v.apply(fpiRec);
  // Two bits per heap block, four heap blocks per byte, the map starting at byte 24:
  // heap block 5 -> byte 25, bits 2..3; heap block 10 -> byte 26, bits 4..5; heap block 13 -> byte 27, bits 2..3.
  const heapBlock = (blkno: number): BlockSpec => ({ id: 0, rnode: REL, forkNum: 0, blkno, data: Buffer.alloc(8, 1) });
  // INSERT, flags XLH_INSERT_ALL_VISIBLE_CLEARED: both bits of heap block 5.
  v.apply(record({ xid: 10, rmid: RM_HEAP_ID, info: 0x00, blocks: [heapBlock(5)], mainData: Buffer.from([1, 0, 0x01]) }));
  // LOCK, flags XLH_LOCK_ALL_FROZEN_CLEARED: only the all-frozen bit (the higher one) of heap block 10.
  v.apply(record({ xid: 11, rmid: RM_HEAP_ID, info: 0x60, blocks: [heapBlock(10)], mainData: Buffer.from([11, 0, 0, 0, 1, 0, 0, 0x01]) }));
  // UPDATE with the old tuple on heap block 13 (block ref 1) and only OLD_ALL_VISIBLE_CLEARED: block 13 only.
  const upd = Buffer.alloc(14);
  upd[7] = 0x01;
  v.apply(record({ xid: 12, rmid: RM_HEAP_ID, info: 0x20, blocks: [heapBlock(20), { ...heapBlock(13), id: 1 }], mainData: upd }));
  // DELETE without the flag: nothing cleared (heap block 0 -> byte 24).
  v.apply(record({ xid: 13, rmid: RM_HEAP_ID, info: 0x10, blocks: [heapBlock(0)], mainData: Buffer.alloc(8) }));
  const page = v.currentPage(REL, VM_FORK, 0);
  assert.ok(page);
  assert.equal(page[24], 0xff, 'heap blocks 0..3 untouched');
  assert.equal(page[25], 0xff & ~(0b11 << 2), 'heap block 5: both bits cleared');
  assert.equal(page[26], 0xff & ~(0b10 << 4), 'heap block 10: only all-frozen cleared');
  assert.equal(page[27], 0xff & ~(0b11 << 2), 'heap block 13: both bits cleared');
  assert.equal(page[29], 0xff, 'heap block 20 (new page, flag not set) untouched');
  assert.equal(pdLsn(page), fpiRec.endLsn, 'clearing VM bits does not touch pd_lsn');
  assert.equal(v.report().pages.vmClears, 3);
});

test('verifier: a btree block with a consistency image and no registered redo is unsupported, never compared', () => {
  const v = new RedoVerifier({ redoFor: () => undefined });
  const img = patternPage(48, 7000, 13, 8176);
  v.apply(record({ xid: 1, rmid: RM_BTREE_ID, info: 0x00, blocks: [{ id: 0, rnode: REL, forkNum: 0, blkno: 1, data: Buffer.from([1]), image: { page: img, holeOffset: 0, holeLength: 0, apply: false } }], mainData: Buffer.from([1, 0]) }));
  const r = v.report();
  assert.equal(row(r.types, 'Btree', 'INSERT_LEAF').unsupported, 1);
  assert.equal(r.totals.verified + r.totals.mismatched, 0);
});
