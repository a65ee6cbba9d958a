import { test } from 'node:test';
import assert from 'node:assert/strict';
import { checkPageHeaderAgainstHole, restoreBlockImage, WalImageError } from '../../src/postgres/blockimage.ts';
import { DecompressionError } from '../../src/postgres/compression/errors.ts';
import { isAllZeroPage, pageHeaderProblem, readPageHeader } from '../../src/postgres/page.ts';
import {
  BKPBLOCK_HAS_IMAGE, BKPIMAGE_APPLY, BKPIMAGE_COMPRESS_LZ4, BKPIMAGE_COMPRESS_PGLZ, BKPIMAGE_COMPRESS_ZSTD, BKPIMAGE_HAS_HOLE,
  decodeXLogRecord, type BlockRef, type DecodedRecord, type ImageCompression,
} from '../../src/postgres/xlogrecord.ts';
import { lz4CompressBlock, pglzCompress, rng, syntheticPage, zstdCompress } from './test-compressors.ts';

const METHOD_BIT = { none: 0, pglz: BKPIMAGE_COMPRESS_PGLZ, lz4: BKPIMAGE_COMPRESS_LZ4, zstd: BKPIMAGE_COMPRESS_ZSTD } as const;
const COMPRESS = { pglz: pglzCompress, lz4: lz4CompressBlock, zstd: (d: Uint8Array) => zstdCompress(d) } as const;
const METHODS: ImageCompression[] = ['none', 'pglz', 'lz4', 'zstd'];
const REC_LSN = 0x16b3748n;

interface FpiSpec {
  compression: ImageCompression;
  /** [offset, length] of the hole to cut out, or null for a full-page image. */
  hole: [number, number] | null;
  /** Bytes stored as the image; default: the page minus the hole, compressed. */
  stored?: Uint8Array;
  /** hole_length to write in the compressed-image header (default: the real one). */
  declaredHoleLength?: number;
  forkNum?: number;
  blkno?: number;
}

/** Builds the bytes of an XLOG FPI-like record with one block image, then decodes it with the real decoder. */
function fpiRecord(page: Uint8Array, spec: FpiSpec): { rec: DecodedRecord; block: BlockRef; stored: Uint8Array } {
  const [holeOffset, holeLength] = spec.hole ?? [0, 0];
  const raw = new Uint8Array(8192 - holeLength);
  raw.set(page.subarray(0, holeOffset));
  raw.set(page.subarray(holeOffset + holeLength), holeOffset);
  const stored = spec.stored ?? (spec.compression === 'none' ? raw : COMPRESS[spec.compression](raw));
  const compressed = spec.compression !== 'none';
  const bimgInfo = (spec.hole ? BKPIMAGE_HAS_HOLE : 0) | BKPIMAGE_APPLY | METHOD_BIT[spec.compression];
  const hdr: number[] = [];
  const u16 = (v: number): void => { hdr.push(v & 0xff, (v >>> 8) & 0xff); };
  const u32 = (v: number): void => { u16(v & 0xffff); u16(v >>> 16); };
  hdr.push(0, (spec.forkNum ?? 0) | BKPBLOCK_HAS_IMAGE);
  u16(0);
  u16(stored.length);
  u16(holeOffset);
  hdr.push(bimgInfo);
  if (compressed && spec.hole) u16(spec.declaredHoleLength ?? holeLength);
  u32(1663); u32(5); u32(16384);
  u32(spec.blkno ?? 7);
  const totLen = 24 + hdr.length + stored.length;
  const bytes = new Uint8Array(totLen);
  const dv = new DataView(bytes.buffer);
  dv.setUint32(0, totLen, true);
  dv.setUint32(4, 0, true);
  dv.setBigUint64(8, REC_LSN - 0x40n, true);
  bytes[16] = 0xb0; // XLOG_FPI
  bytes[17] = 0; // RM_XLOG_ID
  bytes.set(hdr, 24);
  bytes.set(stored, 24 + hdr.length);
  const rec = decodeXLogRecord(bytes, REC_LSN, REC_LSN + BigInt((totLen + 7) & ~7));
  const block = rec.blocks[0];
  assert.ok(block?.image, 'test record has an image');
  return { rec, block, stored };
}

function holeOf(page: Uint8Array): [number, number] {
  const h = readPageHeader(page);
  return [h.lower, h.upper - h.lower];
}

function expectImageError(fn: () => unknown, pattern: RegExp): WalImageError {
  let caught: unknown;
  try {
    fn();
  } catch (err) {
    caught = err;
  }
  assert.ok(caught instanceof WalImageError, `expected WalImageError, got ${String(caught)}`);
  assert.equal(caught.code, 'wal_image_invalid');
  assert.match(caught.message, pattern);
  return caught;
}

test('restore: every method, with and without a hole, gives back the original page', () => {
  const r = rng(21);
  let cases = 0;
  for (const tuples of [1, 3, 30, 120, 400]) {
    for (const specialBytes of [0, 16]) {
      const { page } = syntheticPage(r, { tuples, specialBytes, lsnHi: 1, lsnLo: 0x2345678 });
      for (const compression of METHODS) {
        for (const withHole of [true, false]) {
          const { rec, block } = fpiRecord(page, { compression, hole: withHole ? holeOf(page) : null });
          const restored = restoreBlockImage(rec, block);
          assert.equal(restored.length, 8192);
          assert.deepEqual(restored, page, `${compression} hole=${withHole} tuples=${tuples}`);
          assert.equal(checkPageHeaderAgainstHole(restored, block.image!), null);
          cases++;
        }
      }
    }
  }
  assert.equal(cases, 5 * 2 * 4 * 2);
});

test('restore: the hole is zero-filled even in a dirty reused buffer, and larger buffers are fine', () => {
  const { page } = syntheticPage(rng(22), { tuples: 20 });
  for (const compression of METHODS) {
    const { rec, block } = fpiRecord(page, { compression, hole: holeOf(page) });
    const out = new Uint8Array(8192).fill(0xff);
    const restored = restoreBlockImage(rec, block, out);
    assert.equal(restored.buffer, out.buffer, 'restored into the caller buffer');
    assert.deepEqual(restored, page);
    const big = new Uint8Array(10000).fill(0xff);
    const r2 = restoreBlockImage(rec, block, big);
    assert.equal(r2.length, 8192);
    assert.deepEqual(r2, page);
    assert.equal(big[8192], 0xff, 'bytes past the page are left alone');
    expectImageError(() => restoreBlockImage(rec, block, new Uint8Array(8191)), /output buffer has 8191 bytes/);
  }
});

test('restore: an all-zero page (no hole) round-trips and is a valid header', () => {
  const page = new Uint8Array(8192);
  for (const compression of METHODS) {
    const { rec, block } = fpiRecord(page, { compression, hole: null });
    const restored = restoreBlockImage(rec, block);
    assert.ok(isAllZeroPage(restored));
    assert.equal(checkPageHeaderAgainstHole(restored, block.image!), null);
  }
});

test('restore errors name the record, block, relation, fork and cause', () => {
  const { page } = syntheticPage(rng(23), { tuples: 25 });
  const [off, len] = holeOf(page);
  // The record claims a hole 8 bytes shorter than the one cut out: 8 bytes too few come out.
  const { rec, block } = fpiRecord(page, { compression: 'pglz', hole: [off, len], declaredHoleLength: len - 8, forkNum: 2, blkno: 99 });
  const e = expectImageError(() => restoreBlockImage(rec, block), new RegExp(`decompressed ${8192 - len} bytes, expected ${8192 - len + 8}`));
  assert.match(e.message, /0\/16B3748/);
  assert.match(e.message, /block ref #0/);
  assert.match(e.message, /rel 1663\/5\/16384 fork vm blk 99/);
  assert.match(e.message, /pglz/);
  assert.equal(e.context['lsn'], '0/16B3748');
  assert.equal(e.context['relNode'], 16384);
  assert.equal(e.context['fork'], 'vm');
  assert.equal(e.context['blkno'], 99);
  assert.ok(e.cause instanceof DecompressionError);
  // Same with the other codecs (zstd notices from its frame header, lz4 from the decoded size).
  for (const compression of ['lz4', 'zstd'] as const) {
    const x = fpiRecord(page, { compression, hole: [off, len], declaredHoleLength: len - 8 });
    expectImageError(() => restoreBlockImage(x.rec, x.block), new RegExp(`expected ${8192 - len + 8}`));
  }
});

test('restore: truncated or extended compressed images are always rejected, never returned as a page', () => {
  const { page } = syntheticPage(rng(24), { tuples: 60 });
  const hole = holeOf(page);
  for (const compression of ['pglz', 'lz4', 'zstd'] as const) {
    const good = fpiRecord(page, { compression, hole }).stored;
    const cuts = compression === 'zstd' ? [1, 2, 3, 7, 50, good.length - 10] : Array.from({ length: good.length - 1 }, (_, i) => i + 1);
    for (const cut of cuts) {
      const { rec, block } = fpiRecord(page, { compression, hole, stored: good.subarray(0, good.length - cut) });
      const e = expectImageError(() => restoreBlockImage(rec, block), new RegExp(compression));
      assert.ok(e.cause instanceof DecompressionError, `${compression} cut ${cut}: cause is a DecompressionError`);
    }
    const { rec, block } = fpiRecord(page, { compression, hole, stored: Uint8Array.from([...good, 0, 1, 2, 3]) });
    expectImageError(() => restoreBlockImage(rec, block), new RegExp(compression));
  }
});

test('restore: random damage to a compressed image gives a WalImageError or an 8192-byte page, nothing else', () => {
  const r = rng(25);
  const { page } = syntheticPage(r, { tuples: 60 });
  const hole = holeOf(page);
  for (const compression of ['pglz', 'lz4', 'zstd'] as const) {
    const good = fpiRecord(page, { compression, hole }).stored;
    let rejected = 0;
    const trials = compression === 'zstd' ? 200 : 1000;
    for (let t = 0; t < trials; t++) {
      const bad = good.slice();
      bad[(r() * bad.length) | 0]! ^= 1 + ((r() * 255) | 0);
      const { rec, block } = fpiRecord(page, { compression, hole, stored: bad });
      try {
        assert.equal(restoreBlockImage(rec, block).length, 8192);
      } catch (err) {
        assert.ok(err instanceof WalImageError, `${compression}: untyped ${String(err)}`);
        rejected++;
      }
    }
    assert.ok(rejected > 0, `${compression}: no damage was detected at all`);
  }
});

test('restore: a page whose pd_lower/pd_upper disagree with the hole is rejected', () => {
  const { page } = syntheticPage(rng(26), { tuples: 10 });
  const [off, len] = holeOf(page);
  for (const compression of METHODS) {
    // cut a hole 8 bytes later than pd_lower (those 8 bytes are zeros in the page anyway)
    const { rec, block } = fpiRecord(page, { compression, hole: [off + 8, len - 8] });
    expectImageError(() => restoreBlockImage(rec, block), new RegExp(`pd_lower ${off}, pd_upper ${off + len}, but the image's hole is \\[${off + 8}, ${off + len}\\)`));
  }
});

test('restore: a block without an image, or an uncompressed image of the wrong size, is an error', () => {
  const { page } = syntheticPage(rng(27), { tuples: 10 });
  const { rec, block } = fpiRecord(page, { compression: 'none', hole: holeOf(page) });
  expectImageError(() => restoreBlockImage(rec, { ...block, image: undefined }), /has no image/);
  const wrong = { ...block, image: { ...block.image!, holeLength: block.image!.holeLength - 8 } };
  expectImageError(() => restoreBlockImage(rec, wrong), /uncompressed image is \d+ bytes, expected \d+/);
  const outside = { ...block, image: { ...block.image!, offset: rec.bytes.length - 10 } };
  expectImageError(() => restoreBlockImage(rec, outside), /outside the/);
});

// ---------------------------------------------------------------- page headers

function headerPage(fields: { lower?: number; upper?: number; special?: number; version?: number; flags?: number }): Uint8Array {
  const p = new Uint8Array(8192);
  const dv = new DataView(p.buffer);
  dv.setUint32(0, 0x1, true); // pd_lsn high half
  dv.setUint32(4, 0x2345678, true); // pd_lsn low half
  dv.setUint16(8, 0xbeef, true);
  dv.setUint16(10, fields.flags ?? 0x4, true);
  dv.setUint16(12, fields.lower ?? 28, true);
  dv.setUint16(14, fields.upper ?? 8000, true);
  dv.setUint16(16, fields.special ?? 8176, true);
  dv.setUint16(18, fields.version ?? 0x2004, true);
  dv.setUint32(20, 12345, true);
  return p;
}

test('readPageHeader reads every field; pd_lsn is high half first', () => {
  const h = readPageHeader(headerPage({}));
  assert.deepEqual(h, { lsn: 0x1_02345678n, checksum: 0xbeef, flags: 4, lower: 28, upper: 8000, special: 8176, pagesizeVersion: 0x2004, pruneXid: 12345 });
  assert.throws(() => readPageHeader(new Uint8Array(20)), RangeError);
});

test('page header checks', () => {
  assert.equal(pageHeaderProblem(headerPage({})), null);
  assert.equal(pageHeaderProblem(new Uint8Array(8192)), null, 'all-zero new page');
  assert.match(pageHeaderProblem(headerPage({ version: 0x2005 }))!, /pd_pagesize_version/);
  assert.match(pageHeaderProblem(headerPage({ flags: 0x10 }))!, /pd_flags/);
  assert.match(pageHeaderProblem(headerPage({ lower: 20 }))!, /pd_lower 20/);
  assert.match(pageHeaderProblem(headerPage({ lower: 8100 }))!, /not ordered/);
  assert.match(pageHeaderProblem(headerPage({ upper: 8180 }))!, /not ordered/);
  assert.match(pageHeaderProblem(headerPage({ special: 8200, upper: 8196 }))!, /not ordered/);
  assert.match(pageHeaderProblem(headerPage({ special: 8170 }))!, /multiple of 8/);
  assert.match(pageHeaderProblem(new Uint8Array(4096))!, /4096 bytes/);
  const zeroUpperNotNew = new Uint8Array(8192);
  zeroUpperNotNew[5000] = 1;
  assert.notEqual(pageHeaderProblem(zeroUpperNotNew), null, 'a page with pd_upper 0 but content is not "new"');

  const p = headerPage({ lower: 40, upper: 7000 });
  const image = { offset: 0, lengthBytes: 8192 - 6960, holeOffset: 40, holeLength: 6960, bimgInfo: BKPIMAGE_HAS_HOLE, apply: true, compression: 'none' as const };
  assert.equal(checkPageHeaderAgainstHole(p, image), null);
  assert.match(checkPageHeaderAgainstHole(p, { ...image, holeOffset: 48, holeLength: 6952 })!, /do not match the hole/);
  assert.match(checkPageHeaderAgainstHole(p, { ...image, holeLength: 6900 })!, /do not match the hole/);
  assert.equal(checkPageHeaderAgainstHole(p, { ...image, holeOffset: 0, holeLength: 0, bimgInfo: 0 }), null, 'no hole: header checks only');
  assert.match(checkPageHeaderAgainstHole(headerPage({ version: 0 }), image)!, /pd_pagesize_version/);
});
