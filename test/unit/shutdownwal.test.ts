/**
 * The synthesized shutdown-checkpoint WAL: position rules (normalization, record end), the page
 * headers we write (read back by hand here), and the record read back by the streaming decoder
 * starting at L, at L's page start and at the segment start (the pg_waldump way of finding the
 * first record). Positions cover the record in the middle of a page, right after a page header,
 * right after a segment's long header, with its 24-byte header split across pages, ending exactly
 * at a page end, and crossing into the next segment. Expected LSNs are worked out by hand from the
 * layout rules (8-aligned records, 24/40-byte page headers, 114-byte record).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  buildShutdownCheckpointSegment, checkpointRecordEnd, CHECKPOINT_RECORD_SIZE_BYTES, nextRecordStart, normalizeCheckpointLsn,
  type ShutdownCheckpointWal,
} from '../../src/postgres/shutdownwal.ts';
import { WalStreamDecoder, type WalEnd } from '../../src/postgres/walstream.ts';
import { parseCheckpointRecord, type CheckPoint } from '../../src/postgres/records/xlog.ts';
import type { DecodedRecord } from '../../src/postgres/xlogrecord.ts';
import { formatLsn } from '../../src/postgres/lsn.ts';
import { InvalidInputError } from '../../src/util/errors.ts';

const SEG16 = 16 * 1024 * 1024;
const SEG1 = 1024 * 1024;
const PAGE = 8192n;
const SYSID = 7711829222292583808n;

function cp(): CheckPoint {
  return {
    redoLsn: 0n, thisTimeLineId: 1, prevTimeLineId: 1, fullPageWrites: true, nextXid: 750n, nextOid: 24576,
    nextMulti: 1, nextMultiOffset: 0, oldestXid: 716, oldestXidDb: 1, oldestMulti: 1, oldestMultiDb: 1,
    timeUnixSec: 1_790_000_000n, oldestCommitTsXid: 0, newestCommitTsXid: 0, oldestActiveXid: 0,
  };
}

test('normalizeCheckpointLsn: page boundaries move past the header, other positions must be record positions', () => {
  // Mid-page, 8-aligned: unchanged.
  assert.equal(normalizeCheckpointLsn(0x5_2a3c58n, SEG16), 0x5_2a3c58n);
  // A page boundary inside a segment: + 24 (short header).
  assert.equal(normalizeCheckpointLsn(0x5_2a2000n, SEG16), 0x5_2a2018n);
  // A segment boundary: + 40 (long header). 16 MiB and 1 MiB segments.
  assert.equal(normalizeCheckpointLsn(0x7_000000n, SEG16), 0x7_000028n);
  assert.equal(normalizeCheckpointLsn(0x3_00000n, SEG1), 0x3_00028n);
  // 0x100000 is a segment start for 1 MiB segments but only a page start for 16 MiB ones.
  assert.equal(normalizeCheckpointLsn(0x100000n, SEG16), 0x100018n);
  // Right after the headers: already record positions.
  assert.equal(normalizeCheckpointLsn(0x5_2a2018n, SEG16), 0x5_2a2018n);
  assert.equal(normalizeCheckpointLsn(0x7_000028n, SEG16), 0x7_000028n);
  // High LSNs keep their precision.
  assert.equal(normalizeCheckpointLsn(0xffff_0000_0100_0000n, SEG16), 0xffff_0000_0100_0028n);

  const bad = [0x5_2a3c5an, 0x5_2a3c5cn, 0x5_2a2010n, 0x5_2a2008n, 0x7_000020n, 0x7_000018n];
  for (const lsn of bad) {
    assert.throws(() => normalizeCheckpointLsn(lsn, SEG16), InvalidInputError, formatLsn(lsn));
  }
  assert.throws(() => normalizeCheckpointLsn(0x5_2a3c58n, 3_000_000), /segment size/);
});

test('checkpointRecordEnd counts alignment and the page headers the record crosses', () => {
  // 114 bytes → 120 with alignment.
  assert.equal(checkpointRecordEnd(0x5_2a3c58n, SEG16), 0x5_2a3c58n + 120n);
  // Crossing a page: 48 bytes on the first page, a 24-byte header, 66 bytes → 72 aligned.
  const pageEnd = 0x5_2a4000n;
  assert.equal(checkpointRecordEnd(pageEnd - 48n, SEG16), pageEnd + 24n + 72n);
  // Header split across pages (8 and 16 bytes left on the page).
  assert.equal(checkpointRecordEnd(pageEnd - 8n, SEG16), pageEnd + 24n + 106n + 6n);
  assert.equal(checkpointRecordEnd(pageEnd - 16n, SEG16), pageEnd + 24n + 98n + 6n);
  // Crossing a segment: the next page has the 40-byte long header.
  const segEnd = 0x8_000000n;
  assert.equal(checkpointRecordEnd(segEnd - 16n, SEG16), segEnd + 40n + 98n + 6n);
  // Ending at the page end after alignment: the end is the boundary itself.
  assert.equal(checkpointRecordEnd(pageEnd - 120n, SEG16), pageEnd);
  assert.equal(nextRecordStart(pageEnd, SEG16), pageEnd + 24n);
  assert.equal(nextRecordStart(segEnd, SEG16), segEnd + 40n);
  assert.equal(nextRecordStart(pageEnd - 8n, SEG16), pageEnd - 8n);
  // 114 bytes exactly fill what is left of the page only if 114 were a multiple of 8; 120 is the smallest exact fit.
  assert.equal(checkpointRecordEnd(pageEnd - 112n, SEG16), pageEnd + 24n + 8n);
  // A page boundary is not a record position.
  assert.throws(() => checkpointRecordEnd(pageEnd, SEG16), InvalidInputError);
  assert.throws(() => checkpointRecordEnd(pageEnd + 8n, SEG16), InvalidInputError);
});

interface Decoded {
  recs: DecodedRecord[];
  end: WalEnd | null;
}

function decode(wal: ShutdownCheckpointWal, startLsn: bigint, segSize: number, chunkBytes = 65536): Decoded {
  const d = new WalStreamDecoder({ startLsn, segmentSizeBytes: segSize, systemId: SYSID });
  const seg = BigInt(segSize);
  const first = wal.segments[0]!;
  const startOff = Number(startLsn - first.segNo * seg);
  const recs: DecodedRecord[] = [];
  let end: WalEnd | null = null;
  const all = Buffer.concat(wal.segments.map((s) => s.bytes)).subarray(startOff);
  for (let off = 0; off < all.byteLength && end === null; off += chunkBytes) {
    d.push(all.subarray(off, off + chunkBytes));
    for (let item = d.next(); item !== null; item = d.next()) {
      if (item.kind === 'end') {
        end = item;
        break;
      }
      recs.push(item.record);
    }
  }
  if (end === null) {
    // The input stopped (the record ends exactly at the end of the last segment we have).
    d.finish();
    for (let item = d.next(); item !== null; item = d.next()) {
      if (item.kind === 'end') {
        end = item;
        break;
      }
      recs.push(item.record);
    }
  }
  return { recs, end };
}

function pageHeader(buf: Buffer, off: number): { magic: number; info: number; tli: number; pageAddr: bigint; remLen: number; sysid?: bigint; segSize?: number; blcksz?: number } {
  const info = buf.readUInt16LE(off + 2);
  return {
    magic: buf.readUInt16LE(off),
    info,
    tli: buf.readUInt32LE(off + 4),
    pageAddr: buf.readBigUInt64LE(off + 8),
    remLen: buf.readUInt32LE(off + 16),
    ...((info & 2) !== 0 ? { sysid: buf.readBigUInt64LE(off + 24), segSize: buf.readUInt32LE(off + 32), blcksz: buf.readUInt32LE(off + 36) } : {}),
  };
}

interface Case {
  name: string;
  lsn: bigint;
  segSize: number;
  expectRecordLsn: bigint;
  expectEnd: bigint;
  expectSegments: number;
}

const CASES: Case[] = [
  { name: 'mid-page', lsn: 0x5_2a3c58n, segSize: SEG16, expectRecordLsn: 0x5_2a3c58n, expectEnd: 0x5_2a3c58n + 120n, expectSegments: 1 },
  { name: 'page boundary (normalized)', lsn: 0x5_2a2000n, segSize: SEG16, expectRecordLsn: 0x5_2a2018n, expectEnd: 0x5_2a2018n + 120n, expectSegments: 1 },
  { name: 'segment boundary (normalized)', lsn: 0x7_000000n, segSize: SEG16, expectRecordLsn: 0x7_000028n, expectEnd: 0x7_000028n + 120n, expectSegments: 1 },
  { name: 'first page, mid-page', lsn: 0x7_000400n, segSize: SEG16, expectRecordLsn: 0x7_000400n, expectEnd: 0x7_000400n + 120n, expectSegments: 1 },
  { name: 'crosses a page', lsn: 0x5_2a4000n - 48n, segSize: SEG16, expectRecordLsn: 0x5_2a4000n - 48n, expectEnd: 0x5_2a4000n + 24n + 72n, expectSegments: 1 },
  { name: 'header split 8/16', lsn: 0x5_2a4000n - 8n, segSize: SEG16, expectRecordLsn: 0x5_2a4000n - 8n, expectEnd: 0x5_2a4000n + 24n + 112n, expectSegments: 1 },
  { name: 'ends at the page end', lsn: 0x5_2a4000n - 120n, segSize: SEG16, expectRecordLsn: 0x5_2a4000n - 120n, expectEnd: 0x5_2a4000n, expectSegments: 1 },
  { name: 'ends at the segment end', lsn: 0x8_000000n - 120n, segSize: SEG16, expectRecordLsn: 0x8_000000n - 120n, expectEnd: 0x8_000000n, expectSegments: 1 },
  { name: 'crosses a segment', lsn: 0x8_000000n - 16n, segSize: SEG16, expectRecordLsn: 0x8_000000n - 16n, expectEnd: 0x8_000000n + 40n + 104n, expectSegments: 2 },
  { name: '1 MiB segments, crosses a segment', lsn: 0x30_00000n - 64n, segSize: SEG1, expectRecordLsn: 0x30_00000n - 64n, expectEnd: 0x30_00000n + 40n + 56n, expectSegments: 2 },
];

for (const c of CASES) {
  test(`buildShutdownCheckpointSegment: ${c.name}`, () => {
    const prevLsn = c.expectRecordLsn - 0x1000n;
    const wal = buildShutdownCheckpointSegment({ lsn: c.lsn, systemId: SYSID, timeline: 1, segmentSizeBytes: c.segSize, checkPoint: cp(), prevLsn });
    const seg = BigInt(c.segSize);
    assert.equal(wal.recordLsn, c.expectRecordLsn);
    assert.equal(wal.recordEndLsn, c.expectEnd);
    assert.equal(wal.recordEndLsn, checkpointRecordEnd(wal.recordLsn, c.segSize));
    assert.equal(wal.checkPoint.redoLsn, c.expectRecordLsn);
    assert.equal(wal.record.byteLength, 114);
    assert.equal(wal.segments.length, c.expectSegments);
    for (const [i, s] of wal.segments.entries()) {
      assert.equal(s.bytes.byteLength, c.segSize);
      assert.equal(s.segNo, c.expectRecordLsn / seg + BigInt(i));
    }
    // File name: timeline, then segNo split at 4 GiB / segSize.
    const segNo = c.expectRecordLsn / seg;
    const perId = 0x1_0000_0000n / seg;
    const hex = (v: bigint): string => v.toString(16).toUpperCase().padStart(8, '0');
    assert.equal(wal.segments[0]!.fileName, `00000001${hex(segNo / perId)}${hex(segNo % perId)}`);

    // Page 0: long header with sysid, segment size, block size.
    const first = wal.segments[0]!.bytes;
    const h0 = pageHeader(first, 0);
    assert.equal(h0.magic, 0xd110);
    assert.equal(h0.info & 0x2, 0x2);
    assert.equal(h0.info & ~0xf, 0);
    assert.equal(h0.tli, 1);
    assert.equal(h0.pageAddr, segNo * seg);
    assert.equal(h0.sysid, SYSID);
    assert.equal(h0.segSize, c.segSize);
    assert.equal(h0.blcksz, 8192);
    // L's page: CONTRECORD iff there are bytes before L, and rem_len = those bytes.
    const recPage = c.expectRecordLsn - (c.expectRecordLsn % PAGE);
    const hdrSize = recPage % seg === 0n ? 40n : 24n;
    const hp = pageHeader(first, Number(recPage - segNo * seg));
    assert.equal(hp.pageAddr, recPage);
    assert.equal(hp.remLen, Number(c.expectRecordLsn - recPage - hdrSize));
    assert.equal(hp.info & 1, hp.remLen > 0 ? 1 : 0);
    // The record bytes at L (the part on L's page).
    const onPage = Math.min(114, Number(PAGE - (c.expectRecordLsn % PAGE)));
    const at = Number(c.expectRecordLsn - segNo * seg);
    assert.ok(first.subarray(at, at + onPage).equals(wal.record.subarray(0, onPage)));
    if (onPage < 114) {
      // Continuation page: CONTRECORD, rem_len = bytes still to come.
      const next = recPage + PAGE;
      const target = wal.segments[Number(next / seg - segNo)]!.bytes;
      const hn = pageHeader(target, Number(next % seg));
      assert.equal(hn.pageAddr, next);
      assert.equal(hn.info & 1, 1);
      assert.equal(hn.remLen, 114 - onPage);
      assert.equal(hn.info & 2, next % seg === 0n ? 2 : 0);
    }
    // Everything after the record's end (EndRecPtr) is zeros.
    const last = wal.segments[wal.segments.length - 1]!;
    const endOff = Number(wal.recordEndLsn - last.segNo * seg);
    if (endOff < c.segSize) assert.ok(last.bytes.subarray(endOff).every((b) => b === 0), 'zeros after the record');

    // Decoder from L, from L's page start, from the segment start, in small and large chunks.
    for (const [from, chunk] of [[c.expectRecordLsn, 65536], [recPage, 8192], [segNo * seg, 1000], [segNo * seg, 1 << 20]] as const) {
      const { recs, end } = decode(wal, from, c.segSize, chunk);
      assert.equal(recs.length, 1, `one record when reading from ${formatLsn(from)}; end: ${end?.reason}`);
      const r = recs[0]!;
      assert.equal(r.lsn, c.expectRecordLsn);
      assert.equal(r.endLsn, c.expectEnd, 'decoder end = recordEndLsn');
      assert.equal(r.rmid, 0);
      assert.equal(r.info, 0x00);
      assert.equal(r.xid, 0);
      assert.equal(r.prev, prevLsn);
      assert.equal(r.totLen, CHECKPOINT_RECORD_SIZE_BYTES);
      const body = parseCheckpointRecord(r);
      assert.equal(body.redoLsn, c.expectRecordLsn);
      assert.equal(body.nextXid, 750n);
      assert.equal(body.nextOid, 24576);
      assert.equal(body.timeUnixSec, 1_790_000_000n);
      assert.ok(end !== null && end.clean, `clean end after the record, got ${end?.code}: ${end?.reason}`);
      if (c.expectEnd % seg === 0n) {
        assert.equal(end.code, 'end-of-input'); // the next segment is not part of what we built
        assert.equal(end.lsn, c.expectEnd);
      } else {
        assert.equal(end.code, 'zeros');
        // At a page boundary the next page is all zeros (no header yet): the end is the boundary.
        assert.equal(end.lsn, c.expectEnd);
      }
    }
  });
}

test('every page before L carries a continuation header whose rem_len reaches exactly L', () => {
  const lsn = 0x5_2a3c58n; // page 0x2a3 of segment 5
  const wal = buildShutdownCheckpointSegment({ lsn, systemId: SYSID, segmentSizeBytes: SEG16, checkPoint: cp() });
  const buf = wal.segments[0]!.bytes;
  const segStart = 0x5_000000n;
  for (let page = segStart; page <= lsn - (lsn % PAGE); page += PAGE) {
    const h = pageHeader(buf, Number(page - segStart));
    const hdr = page === segStart ? 40n : 24n;
    assert.equal(h.pageAddr, page);
    assert.equal(h.info & 1, 1);
    // Data bytes from this page's data start to L, minus the headers of the pages in between.
    const pagesBetween = (lsn - (lsn % PAGE) - page) / PAGE;
    assert.equal(BigInt(h.remLen), lsn - (page + hdr) - pagesBetween * 24n, `page ${formatLsn(page)}`);
  }
  assert.equal(wal.checkPoint.redoLsn, lsn);
  assert.equal(wal.nextRecordLsn, lsn + 120n);
});

test('buildShutdownCheckpointSegment rejects bad inputs', () => {
  const base = { systemId: SYSID, segmentSizeBytes: SEG16, checkPoint: cp() };
  assert.throws(() => buildShutdownCheckpointSegment({ ...base, lsn: 0x5_2a3c5cn }), InvalidInputError);
  assert.throws(() => buildShutdownCheckpointSegment({ ...base, lsn: 0x5_2a3c58n, prevLsn: 0x5_2a3c58n }), /xl_prev/);
  assert.throws(() => buildShutdownCheckpointSegment({ ...base, lsn: 0x5_2a3c58n, timeline: 2 }), /thisTimeLineId 1 differs from the WAL timeline 2/);
  assert.throws(() => buildShutdownCheckpointSegment({ ...base, lsn: 0x5_2a3c58n, timeline: 0, checkPoint: { ...cp(), thisTimeLineId: 0 } }), /invalid timeline/);
  // Timeline 2 with a matching checkpoint: file name and page headers carry it.
  const w = buildShutdownCheckpointSegment({ ...base, lsn: 0x5_2a3c58n, timeline: 2, checkPoint: { ...cp(), thisTimeLineId: 2 } });
  assert.equal(w.segments[0]!.fileName, '000000020000000000000005');
  assert.equal(w.segments[0]!.bytes.readUInt32LE(4), 2);
});
