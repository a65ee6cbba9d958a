/**
 * src/redo/ingestverify.ts on hand-built pages and records: the block comparison of verify mode
 * (our redo on the previous version vs. PostgreSQL's consistency image, both masked) and the
 * per-timeline tally.
 *
 * Records are Generic records (generic_xlog.c: block data = fragments `u16 offset, u16 length,
 * bytes`, applied in order, then [pd_lower, pd_upper) zeroed), encoded with walwriter.ts and
 * decoded by the real decoder. Expected pages are written out here from those rules, byte
 * positions by hand; never computed with the code under test.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { RM_GENERIC_ID, RM_HASH_ID, RM_HEAP_ID } from '../../src/postgres/rmgr.ts';
import { encodeRecord, type BlockSpec, type RecordSpec } from '../../src/postgres/walwriter.ts';
import { decodeXLogRecord, type DecodedRecord, type RelFileNode } from '../../src/postgres/xlogrecord.ts';
import { registerRmgrRedo } from '../../src/redo/index.ts';
import {
  INGEST_VERIFY_RESULTS, RedoVerifyTally, resultCount, verifyBlockRedo, type KeptRedoMismatch,
} from '../../src/redo/ingestverify.ts';
import { redoUnsupported } from '../../src/redo/types.ts';
import { AssertionFailedError } from '../../src/util/errors.ts';

const REL: RelFileNode = { spcNode: 1663, dbNode: 5, relNode: 16384 };

let nextLsn = 0x0200_0000n;
/** Encodes `spec` and decodes it back as the real reader would, at increasing LSNs. */
function record(spec: RecordSpec): DecodedRecord {
  const lsn = nextLsn;
  const bytes = encodeRecord(spec, lsn - 0x40n);
  const endLsn = lsn + BigInt((bytes.length + 7) & ~7);
  nextLsn = endLsn + 0x18n;
  return decodeXLogRecord(bytes, lsn, endLsn);
}

/** A page with header (lower, upper, special 8192), 0xee in the hole and a byte pattern above upper. */
function patternPage(lower: number, upper: number, seed: number): Buffer {
  const p = Buffer.alloc(8192);
  for (let i = 24; i < 8192; i++) p[i] = (seed + i * 13) & 0xff;
  p.fill(0xee, lower, upper);
  p.writeUInt16LE(lower, 12);
  p.writeUInt16LE(upper, 14);
  p.writeUInt16LE(8192, 16);
  p.writeUInt16LE(0x2004, 18);
  return p;
}

function fragment(offset: number, data: Uint8Array): Buffer {
  const h = Buffer.alloc(4);
  h.writeUInt16LE(offset, 0);
  h.writeUInt16LE(data.length, 2);
  return Buffer.concat([h, data]);
}

/** A Generic record changing block 3 of REL by `frags`, carrying `image` as a consistency image (no APPLY). */
function checkedGeneric(frags: [number, Buffer][], image: Buffer, opts: { rmid?: number; willInit?: boolean; apply?: boolean } = {}): DecodedRecord {
  const block: BlockSpec = {
    id: 0, rnode: REL, forkNum: 0, blkno: 3, data: Buffer.concat(frags.map(([o, d]) => fragment(o, d))),
    image: { page: image, holeOffset: 0, holeLength: 0, apply: opts.apply ?? false },
    ...(opts.willInit === true ? { willInit: true } : {}),
  };
  return record({ xid: 800, rmid: opts.rmid ?? RM_GENERIC_ID, info: 0x02 /* XLR_CHECK_CONSISTENCY */, blocks: [block] });
}

/** What the primary had after the change: base + fragments, with what the masks ignore made different. */
function primaryAfter(base: Buffer, frags: [number, Buffer][]): Buffer {
  const p = Buffer.from(base);
  for (const [off, data] of frags) data.copy(p, off);
  p.fill(0x77, p.readUInt16LE(12), p.readUInt16LE(14)); // garbage in the unused gap
  p.writeUInt32LE(0x1234, 4); // another pd_lsn
  p.writeUInt16LE(0xbeef, 8); // a checksum
  return p;
}

test('verified: our redo equals the image once LSN, checksum and unused space are masked; nothing is modified', () => {
  const base = patternPage(40, 7000, 1);
  const frags: [number, Buffer][] = [[7100, Buffer.from('abc')], [7500, Buffer.from('Z')]];
  const image = primaryAfter(base, frags);
  const rec = checkedGeneric(frags, image);
  const baseCopy = Buffer.from(base);
  const imageCopy = Buffer.from(image);
  const scratch = Buffer.alloc(8192);
  for (const opts of [{}, { scratch }]) {
    const r = verifyBlockRedo(base, rec, rec.blocks[0]!, image, opts);
    assert.equal(r.kind, 'verified', r.reason ?? '');
    assert.equal(r.differingBytes, 0);
  }
  assert.ok(base.equals(baseCopy), 'previous version untouched');
  assert.ok(image.equals(imageCopy), 'image untouched');
  // The same through a reader function.
  let reads = 0;
  assert.equal(verifyBlockRedo(() => { reads++; return base; }, rec, rec.blocks[0]!, image).kind, 'verified');
  assert.equal(reads, 1);
});

test('mismatched: differing bytes in the tuple area are counted, the first ones reported with both values', () => {
  const base = patternPage(40, 7000, 2);
  const frags: [number, Buffer][] = [[7100, Buffer.from('abc')]];
  const image = primaryAfter(base, frags);
  // Five bytes the record does not explain: 7200..7204 inverted.
  const want: { offset: number; ours: number; theirs: number }[] = [];
  for (let off = 7200; off < 7205; off++) {
    want.push({ offset: off, ours: base[off]!, theirs: base[off]! ^ 0xff });
    image[off] = base[off]! ^ 0xff;
  }
  const rec = checkedGeneric(frags, image);
  const r = verifyBlockRedo(base, rec, rec.blocks[0]!, image, { maxDiffs: 2 });
  assert.equal(r.kind, 'mismatched');
  assert.equal(r.differingBytes, 5);
  assert.deepEqual(r.firstDiffs, want.slice(0, 2));
  assert.equal(r.reason, null);
});

test('no_base: no previous version (null, or the reader finds none / fails); willInit needs none and reads none', () => {
  const base = patternPage(40, 7000, 3);
  const frags: [number, Buffer][] = [[7100, Buffer.from('q')]];
  const image = primaryAfter(base, frags);
  const rec = checkedGeneric(frags, image);
  assert.equal(verifyBlockRedo(null, rec, rec.blocks[0]!, image).kind, 'no_base');
  assert.equal(verifyBlockRedo(() => null, rec, rec.blocks[0]!, image).kind, 'no_base');
  const failing = verifyBlockRedo(() => { throw new Error('layer file gone'); }, rec, rec.blocks[0]!, image);
  assert.equal(failing.kind, 'no_base');
  assert.match(failing.reason ?? '', /layer file gone/);

  // willInit: the redo starts from zeroes. Fragments write a whole small page: header fields
  // pd_lower 28 (offset 12), pd_upper 8000 (14), pd_special 8192 (16), layout version (18),
  // one line pointer at 24 and an item at 8000.
  const hdr = Buffer.alloc(8);
  hdr.writeUInt16LE(28, 0);
  hdr.writeUInt16LE(8000, 2);
  hdr.writeUInt16LE(8192, 4);
  hdr.writeUInt16LE(0x2004, 6);
  const initFrags: [number, Buffer][] = [[12, hdr], [24, Buffer.from([0x40, 0x9f, 0x10, 0x00])], [8000, Buffer.from('new item')]];
  const fresh = Buffer.alloc(8192);
  for (const [off, data] of initFrags) data.copy(fresh, off);
  const initRec = checkedGeneric(initFrags, fresh, { willInit: true });
  let reads = 0;
  assert.equal(verifyBlockRedo(() => { reads++; return base; }, initRec, initRec.blocks[0]!, fresh).kind, 'verified');
  assert.equal(reads, 0, 'a willInit block does not read its previous version');
});

test('unsupported: an rmgr without TypeScript redo (nothing read), or a redo that declines the record', () => {
  const base = patternPage(40, 7000, 4);
  const image = primaryAfter(base, []);
  const hashRec = checkedGeneric([[7100, Buffer.from('x')]], image, { rmid: RM_HASH_ID });
  let reads = 0;
  const r = verifyBlockRedo(() => { reads++; return base; }, hashRec, hashRec.blocks[0]!, image);
  assert.equal(r.kind, 'unsupported');
  assert.match(r.reason ?? '', /Hash/);
  assert.equal(reads, 0);

  const rec = checkedGeneric([[7100, Buffer.from('x')]], image);
  const prev = registerRmgrRedo(RM_GENERIC_ID, (_page, record, blockId) => { throw redoUnsupported(record, blockId, 'not this one'); });
  try {
    const d = verifyBlockRedo(base, rec, rec.blocks[0]!, image);
    assert.equal(d.kind, 'unsupported');
    assert.match(d.reason ?? '', /not this one/);
  } finally {
    registerRmgrRedo(RM_GENERIC_ID, prev);
  }
});

test('failed: the redo throws (a fragment past the end of the page)', () => {
  const base = patternPage(40, 7000, 5);
  const image = primaryAfter(base, []);
  const rec = checkedGeneric([[8190, Buffer.from('0123456789')]], image);
  const r = verifyBlockRedo(base, rec, rec.blocks[0]!, image);
  assert.equal(r.kind, 'failed');
  assert.match(r.reason ?? '', /redo failed for Generic/);
});

test('pages that cannot be masked are a mismatch with a reason; an apply image or a wrong size is a caller error', () => {
  const base = patternPage(40, 7000, 6);
  const image = primaryAfter(base, [[7100, Buffer.from('a')]]);
  image.writeUInt16LE(7500, 12); // pd_lower 7500 > pd_upper 7000: unused space cannot be masked
  const rec = checkedGeneric([[7100, Buffer.from('a')]], image);
  const r = verifyBlockRedo(base, rec, rec.blocks[0]!, image);
  assert.equal(r.kind, 'mismatched');
  assert.equal(r.differingBytes, 0);
  assert.match(r.reason ?? '', /could not be masked/);

  const applied = checkedGeneric([[7100, Buffer.from('a')]], image, { apply: true });
  assert.throws(() => verifyBlockRedo(base, applied, applied.blocks[0]!, image), AssertionFailedError);
  assert.throws(() => verifyBlockRedo(base, rec, rec.blocks[0]!, image.subarray(0, 4096)), AssertionFailedError);
});

test('tally: counts per rmgr and record type (high nibble of xl_info), first N mismatches kept', () => {
  const t = new RedoVerifyTally({ maxMismatchesKept: 2 });
  const heap = (info: number): DecodedRecord => ({ rmid: RM_HEAP_ID, info } as DecodedRecord);
  t.count(heap(0x00), 'verified');
  t.count(heap(0x02), 'verified'); // XLR_CHECK_CONSISTENCY does not make another type
  t.count(heap(0x80), 'mismatched');
  t.count(heap(0x80), 'no_base');
  t.count({ rmid: RM_GENERIC_ID, info: 0 } as DecodedRecord, 'failed');
  const types = t.types().map((x) => [x.rmgr, x.recordType, ...INGEST_VERIFY_RESULTS.map((r) => resultCount(x, r))]);
  assert.deepEqual(types, [
    ['Heap', 'INSERT', 2, 0, 0, 0, 0],
    ['Heap', 'INSERT+INIT', 0, 1, 0, 0, 1],
    ['Generic', 'Generic', 0, 0, 0, 1, 0],
  ]);
  assert.equal(t.total('verified'), 2);
  assert.deepEqual(INGEST_VERIFY_RESULTS, ['verified', 'mismatched', 'unsupported', 'failed', 'no_base']);

  const m = (lsn: string): KeptRedoMismatch => ({ lsn, rmgr: 'Heap', recordType: 'INSERT', key: 'k', rel: '1/2/3', fork: 'main', blkno: 0, differingBytes: 1, firstDiffs: [], reason: null });
  assert.equal(t.keepMismatch(m('0/10')), true);
  assert.equal(t.keepMismatch(m('0/20')), true);
  assert.equal(t.keepMismatch(m('0/30')), false);
  assert.deepEqual(t.mismatches.map((x) => x.lsn), ['0/10', '0/20']);
  assert.equal(t.mismatchesNotKept, 1);
  assert.throws(() => new RedoVerifyTally({ maxMismatchesKept: -1 }), RangeError);
});
