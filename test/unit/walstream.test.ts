/**
 * The streaming WAL decoder against WAL laid out by WalWriter, with the shapes a real server makes
 * only by chance: record headers split across pages, records ending exactly at a page end, records
 * spanning segments, XLOG_SWITCH padding, and every way the WAL can end or be damaged.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { WalStreamDecoder, type WalEnd } from '../../src/postgres/walstream.ts';
import { WalWriter, type RecordSpec } from '../../src/postgres/walwriter.ts';
import type { DecodedRecord } from '../../src/postgres/xlogrecord.ts';
import { formatLsn } from '../../src/postgres/lsn.ts';
import { randomBytes, rng } from './test-compressors.ts';

const SEG = 1024 * 1024; // small segments keep the buffers small
const SYSID = 7318912345678901234n;
const START = 0x3000028n; // just after the long page header of a segment start (1 MiB segments)

function randomSpec(r: () => number): RecordSpec {
  const blocks: RecordSpec['blocks'] = [];
  const nblocks = Math.floor(r() * 3);
  for (let i = 0; i < nblocks; i++) {
    const withImage = r() < 0.3;
    const page = new Uint8Array(8192);
    page.set(randomBytes(r, 64), 0);
    page.set(randomBytes(r, 200), 8192 - 200);
    blocks.push({
      id: i, rnode: { spcNode: 1663, dbNode: 5, relNode: 16384 + Math.floor(r() * 2) }, forkNum: Math.floor(r() * 3),
      blkno: Math.floor(r() * 1000), willInit: r() < 0.2,
      ...(r() < 0.7 ? { data: randomBytes(r, 1 + Math.floor(r() * 300)) } : {}),
      ...(withImage ? { image: { page, holeOffset: 64, holeLength: 8192 - 64 - 200, apply: r() < 0.5 } } : {}),
    });
  }
  const big = r() < 0.05;
  return { xid: Math.floor(r() * 1e6), rmid: 10, info: 0x00, blocks, mainData: randomBytes(r, big ? 20000 + Math.floor(r() * 30000) : Math.floor(r() * 120)) };
}

interface Built {
  wal: Buffer;
  startLsn: bigint;
  records: { lsn: bigint; endLsn: bigint; bytes: Buffer }[];
}

function build(specs: RecordSpec[], startLsn = START): Built {
  const w = new WalWriter({ startLsn, segmentSizeBytes: SEG, systemId: SYSID });
  const records = specs.map((s) => w.append(s));
  return { wal: Buffer.from(w.bytesToPageEnd()), startLsn: w.bufferStartLsn, records };
}

function decodeAll(wal: Uint8Array, startLsn: bigint, chunkSizes: () => number, opts: { finish?: boolean; systemId?: bigint } = {}): { recs: DecodedRecord[]; end: WalEnd | null } {
  const d = new WalStreamDecoder({ startLsn, segmentSizeBytes: SEG, ...(opts.systemId !== undefined ? { systemId: opts.systemId } : {}) });
  const recs: DecodedRecord[] = [];
  let end: WalEnd | null = null;
  const drain = (): void => {
    for (let item = d.next(); item !== null; item = d.next()) {
      if (item.kind === 'end') {
        end = item;
        return;
      }
      recs.push(item.record);
    }
  };
  let off = 0;
  while (off < wal.byteLength && end === null) {
    const n = Math.max(1, Math.min(chunkSizes(), wal.byteLength - off));
    // Copy, as a socket would hand us fresh buffers.
    d.push(Uint8Array.prototype.slice.call(wal, off, off + n));
    off += n;
    drain();
  }
  if (end === null && opts.finish !== false) {
    d.finish();
    drain();
  }
  return { recs, end };
}

function sameAsBuilt(recs: DecodedRecord[], built: Built, from = 0): void {
  assert.equal(recs.length, built.records.length - from, 'record count');
  recs.forEach((r, i) => {
    const b = built.records[i + from]!;
    assert.equal(formatLsn(r.lsn), formatLsn(b.lsn), `record ${i} lsn`);
    assert.equal(formatLsn(r.endLsn), formatLsn(b.endLsn), `record ${i} end`);
    assert.ok(Buffer.from(r.bytes).equals(b.bytes), `record ${i} bytes`);
  });
}

test('random records decode exactly, in one chunk and in random chunks of any size', () => {
  const r = rng(42);
  const specs = Array.from({ length: 600 }, () => randomSpec(r));
  const built = build(specs);
  const whole = decodeAll(built.wal, built.startLsn, () => 1 << 30);
  sameAsBuilt(whole.recs, built);
  assert.equal(whole.end?.clean, true);
  for (const seed of [1, 2, 3]) {
    const cr = rng(seed);
    const sizes = [1, 2, 3, 7, 24, 100, 8191, 8192, 8193, 65536];
    const chunked = decodeAll(built.wal, built.startLsn, () => (cr() < 0.5 ? sizes[Math.floor(cr() * sizes.length)]! : 1 + Math.floor(cr() * 20000)));
    sameAsBuilt(chunked.recs, built);
    assert.deepEqual(chunked.end, whole.end);
  }
  // Spans: the big records cross pages and segment boundaries.
  assert.ok(built.records.some((x) => x.endLsn / BigInt(SEG) > x.lsn / BigInt(SEG)), 'some record crosses a segment boundary');
});

test('block references, images and main data are decoded as written', () => {
  const page = new Uint8Array(8192);
  page.fill(7, 0, 100);
  page.fill(9, 6000);
  const built = build([
    {
      xid: 77, rmid: 10, info: 0x80, origin: 3, mainData: Uint8Array.of(1, 2, 3),
      blocks: [
        { id: 0, rnode: { spcNode: 1663, dbNode: 5, relNode: 100 }, forkNum: 0, blkno: 4, willInit: true, data: Uint8Array.of(9, 9) },
        { id: 3, rnode: { spcNode: 1663, dbNode: 5, relNode: 100 }, forkNum: 2, blkno: 0, image: { page, holeOffset: 100, holeLength: 5900, apply: true } },
      ],
    },
  ]);
  const { recs } = decodeAll(built.wal, built.startLsn, () => 1 << 30);
  const rec = recs[0]!;
  assert.equal(rec.xid, 77);
  assert.equal(rec.origin, 3);
  assert.equal(rec.blocks.length, 2);
  const [b0, b3] = rec.blocks;
  assert.deepEqual([b0!.id, b0!.willInit, b0!.blkno, b0!.dataLength, b0!.image], [0, true, 4, 2, undefined]);
  assert.deepEqual(Array.from(rec.bytes.subarray(b0!.dataOffset, b0!.dataOffset + 2)), [9, 9]);
  assert.equal(b3!.id, 3);
  assert.equal(b3!.forkNum, 2);
  assert.deepEqual(b3!.rnode, { spcNode: 1663, dbNode: 5, relNode: 100 }, 'SAME_REL resolves to the previous relation');
  assert.deepEqual([b3!.image!.holeOffset, b3!.image!.holeLength, b3!.image!.lengthBytes, b3!.image!.apply], [100, 5900, 2292, true]);
  assert.deepEqual(Array.from(rec.bytes.subarray(rec.mainDataOffset, rec.mainDataOffset + rec.mainDataLength)), [1, 2, 3]);
});

/** A record of exactly `totLen` bytes (>= 26): header + short main data. */
function sized(totLen: number): RecordSpec {
  if (totLen < 26) throw new Error('too small');
  const main = totLen - 24 - 2;
  if (main < 256) return { xid: 1, rmid: 10, info: 0, mainData: new Uint8Array(main).fill(0xab) };
  return { xid: 1, rmid: 10, info: 0, mainData: new Uint8Array(totLen - 24 - 5).fill(0xcd) };
}

for (const left of [8, 16, 24]) {
  test(`a record whose header has only ${left} bytes left on the page`, () => {
    // First record starts at page offset 40 (long header) of a segment start; fill to 8192 - left.
    const start = BigInt(SEG) * 5n;
    const first = 8192 - left - 40;
    const built = build([sized(first), sized(300), sized(50)], start);
    assert.equal(Number(built.records[1]!.lsn % 8192n), 8192 - left, 'second record starts where intended');
    const res = decodeAll(built.wal, built.startLsn, () => 1 << 30);
    sameAsBuilt(res.recs, built);
    for (let cs = 1; cs <= 64; cs *= 2) sameAsBuilt(decodeAll(built.wal, built.startLsn, () => cs).recs, built);
  });
}

test('a record ending exactly at a page end: the next starts after the next page header', () => {
  const start = BigInt(SEG) * 2n;
  const built = build([sized(8192 - 40), sized(100)], start);
  assert.equal(built.records[0]!.endLsn, start + 8192n, 'end LSN is the page boundary itself');
  assert.equal(built.records[1]!.lsn, start + 8192n + 24n);
  sameAsBuilt(decodeAll(built.wal, built.startLsn, () => 1 << 30).recs, built);
});

test('XLOG_SWITCH: the rest of the segment is skipped and decoding goes on in the next segment', () => {
  const start = BigInt(SEG) * 7n;
  const built = build([sized(100), { xid: 0, rmid: 0, info: 0x40 }, sized(200), sized(300)], start);
  assert.equal(built.records[1]!.endLsn, start + BigInt(SEG), 'switch ends at the next segment');
  assert.equal(built.records[2]!.lsn, start + BigInt(SEG) + 40n);
  for (const cs of [1 << 30, 4096, 1000]) sameAsBuilt(decodeAll(built.wal, built.startLsn, () => cs).recs, built);
});

test('start at a record in the middle of a page, and at a page that begins with a continuation', () => {
  const r = rng(9);
  const specs = Array.from({ length: 200 }, () => randomSpec(r));
  const built = build(specs);
  // Mid-page start at record 50: feed the stream from that LSN (like START_REPLICATION at a record).
  const k = 50;
  const at = built.records[k]!.lsn;
  const from = built.wal.subarray(Number(at - built.startLsn));
  sameAsBuilt(decodeAll(from, at, () => 777).recs, built, k);
  // Page-boundary start: find a page whose first bytes continue a record; decoding must skip them.
  const crossing = built.records.findIndex((x, i) => i > 0 && x.lsn / 8192n !== (x.endLsn - 1n) / 8192n && x.endLsn % 8192n !== 0n);
  assert.ok(crossing > 0, 'some record crosses a page');
  const page = (built.records[crossing]!.endLsn / 8192n) * 8192n;
  const res = decodeAll(built.wal.subarray(Number(page - built.startLsn)), page, () => 5000);
  sameAsBuilt(res.recs, built, crossing + 1);
});

test('partial input: next() waits (null) until the record is complete', () => {
  const built = build([sized(5000), sized(30000)]);
  const d = new WalStreamDecoder({ startLsn: built.startLsn, segmentSizeBytes: SEG });
  d.push(built.wal.subarray(0, 3000));
  assert.equal(d.next(), null);
  d.push(built.wal.subarray(3000, 20000));
  const first = d.next();
  assert.equal(first?.kind, 'record');
  assert.equal(d.next(), null, 'the 30000-byte record is not complete yet');
  d.push(built.wal.subarray(20000));
  assert.equal(d.next()?.kind, 'record');
});

test('end of WAL: zeros, end of input, and a record cut off are clean or unclean as they should be', () => {
  const built = build([sized(100), sized(20000)]);
  const zeros = decodeAll(built.wal, built.startLsn, () => 1 << 30);
  assert.equal(zeros.end?.code, 'zeros');
  assert.equal(zeros.end?.clean, true);
  assert.equal(zeros.end?.lsn, built.records[1]!.endLsn);

  const exact = built.wal.subarray(0, Number(built.records[1]!.endLsn - built.startLsn));
  const eoi = decodeAll(exact, built.startLsn, () => 1 << 30);
  assert.equal(eoi.recs.length, 2);
  assert.equal(eoi.end?.code, 'end-of-input');
  assert.equal(eoi.end?.clean, true);

  const cut = built.wal.subarray(0, Number(built.records[1]!.lsn - built.startLsn) + 10000);
  const inc = decodeAll(cut, built.startLsn, () => 4096);
  assert.equal(inc.recs.length, 1);
  assert.equal(inc.end?.code, 'incomplete');
  assert.equal(inc.end?.clean, false);
  assert.equal(inc.end?.lsn, built.records[1]!.lsn, 'the end names the record that was cut off');
  assert.match(inc.end!.reason, /inside/);
});

test('damage is detected: flipped body byte, page magic, contrecord length, another system, garbage', () => {
  const built = build([sized(100), sized(20000), sized(100)]);
  const rel = (lsn: bigint): number => Number(lsn - built.startLsn);

  const flipped = Buffer.from(built.wal);
  flipped[rel(built.records[1]!.lsn) + 500]! ^= 0x10;
  const crc = decodeAll(flipped, built.startLsn, () => 1 << 30);
  assert.equal(crc.recs.length, 1);
  assert.equal(crc.end?.code, 'bad-crc');
  assert.equal(crc.end?.lsn, built.records[1]!.lsn);
  assert.match(crc.end!.reason, /checksum/);

  const magic = Buffer.from(built.wal);
  magic[8192] = 0x00; // the second page's magic; record 1 continues there
  const m = decodeAll(magic, built.startLsn, () => 1 << 30);
  assert.equal(m.recs.length, 1);
  assert.equal(m.end?.code, 'bad-page-header');
  assert.match(m.end!.reason, /magic/);

  const rem = Buffer.from(built.wal);
  rem.writeUInt32LE(rem.readUInt32LE(8192 + 16) + 8, 8192 + 16);
  const r2 = decodeAll(rem, built.startLsn, () => 1 << 30);
  assert.equal(r2.end?.code, 'bad-record-header');
  assert.match(r2.end!.reason, /contrecord length/);

  const other = decodeAll(built.wal, built.startLsn, () => 1 << 30, { systemId: SYSID + 1n });
  assert.equal(other.recs.length, 0);
  assert.equal(other.end?.code, 'bad-page-header');
  assert.match(other.end!.reason, /another database system/);

  const r = rng(5);
  const garbage = Buffer.from(randomBytes(r, 100000));
  const g = decodeAll(garbage, 0n, () => 1 << 30);
  assert.equal(g.recs.length, 0);
  assert.equal(g.end?.clean, false);

  const badLen = Buffer.from(built.wal);
  badLen.writeUInt32LE(10, rel(built.records[0]!.lsn));
  const bl = decodeAll(badLen, built.startLsn, () => 1 << 30);
  assert.equal(bl.end?.code, 'bad-record-header');
  assert.match(bl.end!.reason, /wanted 24, got 10/);

  const badPrev = Buffer.from(built.wal);
  badPrev.writeUInt32LE(0x1234, rel(built.records[2]!.lsn) + 8);
  const bp = decodeAll(badPrev, built.startLsn, () => 1 << 30);
  assert.equal(bp.recs.length, 2);
  assert.match(bp.end!.reason, /prev-link/);
});

test('the decoder refuses starts it cannot honour', () => {
  assert.throws(() => new WalStreamDecoder({ startLsn: 0x1000003n }), /8-aligned/);
  assert.throws(() => new WalStreamDecoder({ startLsn: 0x1002008n }), /inside a page header/);
  assert.throws(() => new WalStreamDecoder({ startLsn: 0x1000010n }), /inside/);
  assert.throws(() => new WalStreamDecoder({ startLsn: 0n, segmentSizeBytes: 3000 }), /segment size/);
});
