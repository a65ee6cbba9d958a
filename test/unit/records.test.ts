/**
 * Typed WAL record bodies (src/postgres/records). Records are built by hand: a tiny test-only
 * writer lays out main data the way PostgreSQL 15's XLogRegisterData calls do (offsets taken from
 * the C structs, checked with offsetof on x86-64), and wraps it into a record that xlogrecord.ts's
 * decoder turns into a DecodedRecord. Expected values are the inputs the test wrote.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { crc32c } from '../../src/postgres/crc32c.ts';
import { formatLsn } from '../../src/postgres/lsn.ts';
import { recordTypeName, RM_XLOG_ID, RM_XACT_ID, RM_SMGR_ID, RM_CLOG_ID, RM_DBASE_ID, RM_MULTIXACT_ID, RM_RELMAP_ID, RM_STANDBY_ID, RM_HEAP2_ID, RM_HEAP_ID, RM_BTREE_ID, RM_TBLSPC_ID } from '../../src/postgres/rmgr.ts';
import { decodeXLogRecord as decodeRawRecord, type DecodedRecord, type RelFileNode } from '../../src/postgres/xlogrecord.ts';
import {
  WalRecordBodyError, decodeRecordBody, encodeCheckPoint, parseCheckPoint, parseRelMapFile, RelMapFileError,
  pgTimestampToDate, pgTimestampToUnixMs, unixMsToPgTimestamp, pgTimeToDate, twoPhaseFileBytes, twoPhaseFileName,
  type CheckPoint, type TypedRecord,
} from '../../src/postgres/records/index.ts';

// ------------------------------------------------------------------------------------------------
// Test-only writer.

class W {
  private bytes: number[] = [];
  get length(): number {
    return this.bytes.length;
  }
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
  i32(v: number): this {
    return this.u32(v >>> 0);
  }
  u64(v: bigint): this {
    const x = BigInt.asUintN(64, v);
    return this.u32(Number(x & 0xffffffffn)).u32(Number(x >> 32n));
  }
  i64(v: bigint): this {
    return this.u64(v);
  }
  raw(b: Uint8Array | number[]): this {
    for (const x of b) this.bytes.push(x);
    return this;
  }
  cstr(s: string): this {
    return this.raw(new TextEncoder().encode(s)).u8(0);
  }
  rnode(r: RelFileNode): this {
    return this.u32(r.spcNode).u32(r.dbNode).u32(r.relNode);
  }
  zeros(n: number): this {
    for (let i = 0; i < n; i++) this.bytes.push(0);
    return this;
  }
  /** Pads with `fill` to a multiple of 8 (twophase.c leaves padding uninitialized; 0xEE proves we skip it). */
  align8(fill = 0xee): this {
    while (this.bytes.length % 8 !== 0) this.bytes.push(fill);
    return this;
  }
  done(): Uint8Array {
    return Uint8Array.from(this.bytes);
  }
}

interface RecOpts {
  xid?: number;
  lsn?: bigint;
  /** Block reference headers to put before the main data (no payload). */
  blocks?: { id: number; rnode: RelFileNode; blkno: number; forkNum?: number }[];
}

const DEFAULT_LSN = 0x16b3748n;

/** Wraps main data into a full record (header + block headers + main-data header) and decodes it. */
function makeRecord(rmid: number, info: number, main: Uint8Array, opts: RecOpts = {}): DecodedRecord {
  const body = new W();
  for (const b of opts.blocks ?? []) {
    body.u8(b.id).u8(b.forkNum ?? 0).u16(0).rnode(b.rnode).u32(b.blkno);
  }
  if (main.length > 0) {
    if (main.length < 256) body.u8(255).u8(main.length);
    else body.u8(254).u32(main.length);
  }
  body.raw(main);
  const bodyBytes = body.done();
  const totLen = 24 + bodyBytes.length;
  const hdr = new W().u32(totLen).u32(opts.xid ?? 0).u64(0x16b3700n).u8(info).u8(rmid).u16(0).u32(0).done();
  const all = new Uint8Array(totLen);
  all.set(hdr, 0);
  all.set(bodyBytes, 24);
  const lsn = opts.lsn ?? DEFAULT_LSN;
  return decodeRawRecord(all, lsn, lsn + BigInt((totLen + 7) & ~7));
}

function decode(rmid: number, info: number, main: Uint8Array, opts: RecOpts = {}): TypedRecord {
  const rec = makeRecord(rmid, info, main, opts);
  const t = decodeRecordBody(rec);
  assert.ok(t !== null, 'expected a typed record');
  // The `type` discriminant is pg_waldump's name (rmgr.ts), for every record we interpret.
  assert.equal(t.type, recordTypeName(rmid, info));
  return t;
}

/** Asserts that decoding throws a WalRecordBodyError naming rmgr, type and LSN, and `what`. */
function assertBodyError(rmid: number, info: number, main: Uint8Array, rmgr: string, type: string, what: RegExp, lsn = 0x1_0000_0a08n): WalRecordBodyError {
  const rec = makeRecord(rmid, info, main, { lsn });
  let caught: unknown;
  try {
    decodeRecordBody(rec);
  } catch (e) {
    caught = e;
  }
  assert.ok(caught instanceof WalRecordBodyError, `expected WalRecordBodyError, got ${String(caught)}`);
  const err = caught;
  const prefix = `${rmgr} ${type} at ${formatLsn(lsn)}: `;
  assert.ok(err.message.startsWith(prefix), `message "${err.message}" should start with "${prefix}"`);
  assert.match(err.message, what);
  assert.equal(err.code, 'wal_record_body');
  assert.equal(err.context.rmgr, rmgr);
  assert.equal(err.context.recordType, type);
  assert.equal(err.context.lsn, '1/A08');
  return err;
}

/** The body type of the union member whose rmgr is R and whose type list includes T. */
type BodyOf<R, T> = TypedRecord extends infer M ? (M extends { rmgr: R; type: infer MT; body: infer B } ? (T extends MT ? B : never) : never) : never;

function expectBody<R extends TypedRecord['rmgr'], T extends TypedRecord['type']>(t: TypedRecord, rmgr: R, type: T): BodyOf<R, T> {
  assert.equal(t.rmgr, rmgr);
  assert.equal(t.type, type);
  return t.body as unknown as BodyOf<R, T>;
}

// ------------------------------------------------------------------------------------------------
// XACT commit / abort

const XINFO = {
  DBINFO: 0x01, SUBXACTS: 0x02, RELFILENODES: 0x04, INVALS: 0x08, TWOPHASE: 0x10, ORIGIN: 0x20, AE_LOCKS: 0x40, GID: 0x80,
  DROPPED_STATS: 0x100,
} as const;

interface XactSpec {
  time: bigint;
  xinfo: number;
  dbId: number;
  tsId: number;
  subxacts: number[];
  rels: RelFileNode[];
  stats: { kind: number; dboid: number; objoid: number }[];
  invals: Uint8Array; // 16 * n bytes
  twophaseXid: number;
  gid: string;
  originLsn: bigint;
  originTime: bigint;
}

/** Lays out a commit/abort body as XactLogCommitRecord / XactLogAbortRecord do. */
function writeXact(s: XactSpec, isCommit: boolean, hasInfo: boolean): Uint8Array {
  const w = new W().i64(s.time);
  if (!hasInfo) return w.done();
  w.u32(s.xinfo);
  if (s.xinfo & XINFO.DBINFO) w.u32(s.dbId).u32(s.tsId);
  if (s.xinfo & XINFO.SUBXACTS) {
    w.i32(s.subxacts.length);
    for (const x of s.subxacts) w.u32(x);
  }
  if (s.xinfo & XINFO.RELFILENODES) {
    w.i32(s.rels.length);
    for (const r of s.rels) w.rnode(r);
  }
  if (s.xinfo & XINFO.DROPPED_STATS) {
    w.i32(s.stats.length);
    for (const st of s.stats) w.i32(st.kind).u32(st.dboid).u32(st.objoid);
  }
  if (isCommit && s.xinfo & XINFO.INVALS) w.i32(s.invals.length / 16).raw(s.invals);
  if (s.xinfo & XINFO.TWOPHASE) {
    w.u32(s.twophaseXid);
    if (s.xinfo & XINFO.GID) w.cstr(s.gid);
  }
  if (s.xinfo & XINFO.ORIGIN) w.u64(s.originLsn).i64(s.originTime);
  return w.done();
}

const invalBytes = (n: number): Uint8Array => Uint8Array.from({ length: 16 * n }, (_, i) => (i * 7 + 3) & 0xff);

function xactSpec(xinfo: number, gid = 'g1'): XactSpec {
  return {
    time: 760_000_000_123_456n,
    xinfo,
    dbId: 16384,
    tsId: 1663,
    subxacts: [901, 902, 0xfffffff0],
    rels: [{ spcNode: 1663, dbNode: 16384, relNode: 24576 }, { spcNode: 1664, dbNode: 0, relNode: 4294967295 }],
    stats: [{ kind: 2, dboid: 16384, objoid: 24576 }, { kind: -1, dboid: 0, objoid: 7 }],
    invals: invalBytes(3),
    twophaseXid: 777,
    gid,
    originLsn: 0xabcdef_01234567n,
    originTime: -5n,
  };
}

const OPS = [
  { info: 0x00, type: 'COMMIT', op: 'commit', commit: true, prepared: false },
  { info: 0x20, type: 'ABORT', op: 'abort', commit: false, prepared: false },
  { info: 0x30, type: 'COMMIT_PREPARED', op: 'commit_prepared', commit: true, prepared: true },
  { info: 0x40, type: 'ABORT_PREPARED', op: 'abort_prepared', commit: false, prepared: true },
] as const;

test('XACT commit/abort: every combination of xinfo flags', () => {
  const optional = [XINFO.DBINFO, XINFO.SUBXACTS, XINFO.RELFILENODES, XINFO.DROPPED_STATS, XINFO.INVALS, XINFO.ORIGIN, XINFO.AE_LOCKS, XINFO.GID];
  let checked = 0;
  for (const o of OPS) {
    for (let mask = 0; mask < 1 << optional.length; mask++) {
      let xinfo = 0;
      optional.forEach((bit, i) => {
        if (mask & (1 << i)) xinfo |= bit;
      });
      // Prepared variants always carry the two-phase xid; plain ones never do (GID only inside it).
      if (o.prepared) xinfo |= XINFO.TWOPHASE;
      // Odd gid lengths put the origin struct at every alignment.
      const gid = 'x'.repeat(mask % 9);
      const s = xactSpec(xinfo, gid);
      const main = writeXact(s, o.commit, true);
      const t = decode(RM_XACT_ID, o.info | 0x80, main, { xid: 4242 });
      const b = expectBody(t, 'Transaction', o.type);
      assert.equal(b.op, o.op);
      assert.equal(b.xactTimeUs, s.time);
      assert.equal(b.xinfo, xinfo);
      assert.equal(b.dbId, xinfo & XINFO.DBINFO ? 16384 : 0);
      assert.equal(b.tsId, xinfo & XINFO.DBINFO ? 1663 : 0);
      assert.deepEqual(b.subxacts, xinfo & XINFO.SUBXACTS ? s.subxacts : []);
      assert.deepEqual(b.relfilenodes, xinfo & XINFO.RELFILENODES ? s.rels : []);
      assert.deepEqual(b.droppedStats, xinfo & XINFO.DROPPED_STATS ? s.stats : []);
      if (o.commit && xinfo & XINFO.INVALS) {
        assert.equal(b.invalidations.count, 3);
        assert.deepEqual([...b.invalidations.bytes], [...s.invals]);
      } else {
        assert.equal(b.invalidations.count, 0);
        assert.equal(b.invalidations.bytes.length, 0);
      }
      assert.equal(b.twophaseXid, o.prepared ? 777 : 0);
      assert.equal(b.xid, o.prepared ? 777 : 4242);
      assert.equal(b.gid, o.prepared && xinfo & XINFO.GID ? gid : null);
      assert.equal(b.originLsn, xinfo & XINFO.ORIGIN ? s.originLsn : 0n);
      assert.equal(b.originTimeUs, xinfo & XINFO.ORIGIN ? s.originTime : 0n);
      assert.equal(b.aeLocks, (xinfo & XINFO.AE_LOCKS) !== 0);
      checked++;
    }
  }
  assert.equal(checked, 4 * 256);
});

test('XACT commit without XLOG_XACT_HAS_INFO has only the time', () => {
  const t = decode(RM_XACT_ID, 0x00, new W().i64(123n).done(), { xid: 9 });
  const b = expectBody(t, 'Transaction', 'COMMIT');
  assert.equal(b.xinfo, 0);
  assert.equal(b.xactTimeUs, 123n);
  assert.equal(b.xid, 9);
  assert.deepEqual(b.subxacts, []);
  assert.equal(b.gid, null);
});

test('XACT abort ignores the INVALS bit as PostgreSQL does (abort records never carry messages)', () => {
  // Abort with INVALS + ORIGIN: if the parser read an inval count it would misplace the origin.
  const main = new W().i64(1n).u32(XINFO.INVALS | XINFO.ORIGIN).u64(0x55n).i64(66n).done();
  const b = expectBody(decode(RM_XACT_ID, 0xa0, main), 'Transaction', 'ABORT');
  assert.equal(b.originLsn, 0x55n);
  assert.equal(b.originTimeUs, 66n);
  assert.equal(b.invalidations.count, 0);
});

test('XACT completion flags in xinfo (bits 29..31)', () => {
  const xinfo = (0x20000000 | 0x40000000 | 0x80000000 | XINFO.AE_LOCKS) >>> 0;
  const b = expectBody(decode(RM_XACT_ID, 0x80, new W().i64(5n).u32(xinfo).done()), 'Transaction', 'COMMIT');
  assert.equal(b.xinfo, xinfo);
  assert.equal(b.applyFeedback, true);
  assert.equal(b.relcacheInitFileInval, true);
  assert.equal(b.forceSyncCommit, true);
  assert.equal(b.aeLocks, true);
});

test('XACT commit: truncated and garbage main data', () => {
  // The brief's example: 12 bytes, subxact count 5.
  const main = new W().i64(1n).u32(XINFO.SUBXACTS).i32(5).done();
  const e = assertBodyError(RM_XACT_ID, 0x80, main, 'Transaction', 'COMMIT', /main data is 16 bytes, subxact count 5 needs 20 bytes at offset 16 \(20 missing\)/);
  assert.equal(e.context.mainDataBytes, 16);
  assertBodyError(RM_XACT_ID, 0x80, new W().i64(1n).u32(XINFO.SUBXACTS).i32(-1).done(), 'Transaction', 'COMMIT', /subxact count -1 is negative/);
  assertBodyError(RM_XACT_ID, 0x80, new W().i64(1n).done(), 'Transaction', 'COMMIT', /xinfo needs 4 bytes at offset 8/);
  assertBodyError(RM_XACT_ID, 0x00, new W().u32(1).done(), 'Transaction', 'COMMIT', /main data is 4 bytes, xact_time needs 8/);
  assertBodyError(RM_XACT_ID, 0xa0, new W().i64(1n).u32(XINFO.RELFILENODES).i32(2).rnode({ spcNode: 1, dbNode: 2, relNode: 3 }).done(), 'Transaction', 'ABORT', /relfilenode count 2/);
  // GID without its NUL.
  assertBodyError(RM_XACT_ID, 0xb0, new W().i64(1n).u32(XINFO.TWOPHASE | XINFO.GID).u32(5).raw([0x61, 0x62]).done(), 'Transaction', 'COMMIT_PREPARED', /gid has no terminating NUL/);
  // Origin cut short after an odd-length gid.
  assertBodyError(RM_XACT_ID, 0xc0, new W().i64(1n).u32(XINFO.TWOPHASE | XINFO.GID | XINFO.ORIGIN).u32(5).cstr('abc').u64(1n).done(), 'Transaction', 'ABORT_PREPARED', /origin timestamp needs 8 bytes at offset 28/);
  // COMMIT_PREPARED without the two-phase xid.
  assertBodyError(RM_XACT_ID, 0xb0, new W().i64(1n).u32(0).done(), 'Transaction', 'COMMIT_PREPARED', /without a two-phase xid/);
  assertBodyError(RM_XACT_ID, 0x80, new W().i64(1n).u32(XINFO.INVALS).i32(0x7fffffff).done(), 'Transaction', 'COMMIT', /invalidation message count 2147483647/);
  assertBodyError(RM_XACT_ID, 0x70, new W().done(), 'Transaction', 'UNKNOWN (70)', /not a record type PostgreSQL 15 writes/);
});

// ------------------------------------------------------------------------------------------------
// PREPARE (two-phase state file)

interface PrepareSpec {
  xid: number;
  db: number;
  preparedAt: bigint;
  owner: number;
  gid: string;
  subxacts: number[];
  commitRels: RelFileNode[];
  abortRels: RelFileNode[];
  commitStats: { kind: number; dboid: number; objoid: number }[];
  abortStats: { kind: number; dboid: number; objoid: number }[];
  ninval: number;
  initFileInval: boolean;
  originLsn: bigint;
  originTime: bigint;
}

/** Lays out a 2PC state body as StartPrepare/EndPrepare do (each save_state_data chunk MAXALIGNed). */
function writePrepare(s: PrepareSpec, tweak?: (w: W) => void): Uint8Array {
  const gidBytes = new TextEncoder().encode(s.gid);
  const w = new W()
    .u32(0x57f94534).u32(0) // total_len patched below
    .u32(s.xid).u32(s.db).i64(s.preparedAt).u32(s.owner)
    .i32(s.subxacts.length).i32(s.commitRels.length).i32(s.abortRels.length).i32(s.commitStats.length).i32(s.abortStats.length).i32(s.ninval)
    .u8(s.initFileInval ? 1 : 0).u8(0xee).u16(gidBytes.length + 1)
    .u64(s.originLsn).i64(s.originTime);
  assert.equal(w.length, 72);
  w.raw(gidBytes).u8(0).align8();
  if (s.subxacts.length) {
    for (const x of s.subxacts) w.u32(x);
    w.align8();
  }
  for (const rels of [s.commitRels, s.abortRels]) {
    if (rels.length) {
      for (const r of rels) w.rnode(r);
      w.align8();
    }
  }
  for (const stats of [s.commitStats, s.abortStats]) {
    if (stats.length) {
      for (const st of stats) w.i32(st.kind).u32(st.dboid).u32(st.objoid);
      w.align8();
    }
  }
  if (s.ninval) w.raw(invalBytes(s.ninval)).align8();
  // A lock record (TwoPhaseRecordOnDisk {len 12, rmid 1, info 0} + 12 bytes padded) and the end sentinel.
  w.u32(12).u8(1).u8(0).u16(0).align8().u32(1).u32(2).u32(3).align8();
  w.u32(0).u8(0).u8(0).u16(0).align8();
  tweak?.(w);
  const out = w.done();
  new DataView(out.buffer).setUint32(4, out.length + 4, true);
  return out;
}

const prepareSpec = (gid: string): PrepareSpec => ({
  xid: 1234, db: 5, preparedAt: 800_000_000_000_001n, owner: 10, gid,
  subxacts: [1235, 1236, 1237],
  commitRels: [{ spcNode: 1663, dbNode: 5, relNode: 16400 }],
  abortRels: [{ spcNode: 1663, dbNode: 5, relNode: 16401 }, { spcNode: 1663, dbNode: 5, relNode: 16402 }],
  commitStats: [{ kind: 2, dboid: 5, objoid: 16400 }],
  abortStats: [{ kind: 2, dboid: 5, objoid: 16401 }, { kind: 3, dboid: 5, objoid: 16402 }, { kind: 2, dboid: 0, objoid: 1 }],
  ninval: 2, initFileInval: true, originLsn: 0x1_0000_0000n, originTime: 42n,
});

test('XACT PREPARE: header, gid, arrays at every gid length, raw state bytes', () => {
  for (let gidLen = 0; gidLen <= 17; gidLen++) {
    const s = prepareSpec('G'.repeat(gidLen));
    const main = writePrepare(s);
    const b = expectBody(decode(RM_XACT_ID, 0x10, main, { xid: 1234 }), 'Transaction', 'PREPARE');
    assert.equal(b.magic, 0x57f94534);
    assert.equal(b.totalLenBytes, main.length + 4);
    assert.equal(b.xid, 1234);
    assert.equal(b.dbId, 5);
    assert.equal(b.preparedAtUs, s.preparedAt);
    assert.equal(b.owner, 10);
    assert.equal(b.gid, s.gid);
    assert.deepEqual(b.subxacts, s.subxacts);
    assert.deepEqual(b.commitRels, s.commitRels);
    assert.deepEqual(b.abortRels, s.abortRels);
    assert.deepEqual(b.commitStats, s.commitStats);
    assert.deepEqual(b.abortStats, s.abortStats);
    assert.equal(b.invalidations.count, 2);
    assert.deepEqual([...b.invalidations.bytes], [...invalBytes(2)]);
    assert.equal(b.initFileInval, true);
    assert.equal(b.originLsn, 0x1_0000_0000n);
    assert.equal(b.originTimeUs, 42n);
    assert.deepEqual([...b.stateData], [...main]);
  }
  // Empty arrays: no segments, no padding.
  const empty: PrepareSpec = { ...prepareSpec('tx'), subxacts: [], commitRels: [], abortRels: [], commitStats: [], abortStats: [], ninval: 0, initFileInval: false };
  const b = expectBody(decode(RM_XACT_ID, 0x10, writePrepare(empty)), 'Transaction', 'PREPARE');
  assert.deepEqual(b.subxacts, []);
  assert.deepEqual(b.abortRels, []);
  assert.equal(b.invalidations.count, 0);
  assert.equal(b.gid, 'tx');
  assert.equal(b.initFileInval, false);
});

test('XACT PREPARE: the pg_twophase file is the body plus its CRC-32C', () => {
  const main = writePrepare(prepareSpec('gid-1'));
  const file = twoPhaseFileBytes(main);
  assert.equal(file.length, main.length + 4);
  assert.deepEqual([...file.subarray(0, main.length)], [...main]);
  assert.equal(new DataView(file.buffer).getUint32(main.length, true), crc32c(main));
  // total_len in the header equals the file size, as ReadTwoPhaseFile requires.
  assert.equal(new DataView(file.buffer).getUint32(4, true), file.length);
  assert.equal(twoPhaseFileName(0x2a), '0000002A');
  assert.equal(twoPhaseFileName(0xfffffffe), 'FFFFFFFE');
});

test('XACT PREPARE: bad magic, wrong total_len, truncated arrays', () => {
  const good = writePrepare(prepareSpec('g'));
  const badMagic = good.slice();
  badMagic[0] = 0;
  assertBodyError(RM_XACT_ID, 0x10, badMagic, 'Transaction', 'PREPARE', /magic is 0x57f94500, expected 0x57f94534/);
  const badLen = good.slice();
  new DataView(badLen.buffer).setUint32(4, 99, true);
  assertBodyError(RM_XACT_ID, 0x10, badLen, 'Transaction', 'PREPARE', /total_len is 99/);
  assertBodyError(RM_XACT_ID, 0x10, good.subarray(0, 60), 'Transaction', 'PREPARE', /main data is 60 bytes, TwoPhaseFileHeader needs 72/);
  // A huge subxact count with a consistent total_len: the array does not fit.
  const huge = good.slice();
  new DataView(huge.buffer).setInt32(28, 100000, true);
  assertBodyError(RM_XACT_ID, 0x10, huge, 'Transaction', 'PREPARE', /subxact count 100000/);
});

test('XACT ASSIGNMENT and INVALIDATION', () => {
  const a = expectBody(decode(RM_XACT_ID, 0x50, new W().u32(700).i32(3).u32(701).u32(702).u32(703).done()), 'Transaction', 'ASSIGNMENT');
  assert.deepEqual(a, { xtop: 700, subxacts: [701, 702, 703] });
  const i = expectBody(decode(RM_XACT_ID, 0x60, new W().i32(2).raw(invalBytes(2)).done()), 'Transaction', 'INVALIDATION');
  assert.deepEqual(i, { count: 2 });
  assertBodyError(RM_XACT_ID, 0x50, new W().u32(700).i32(3).u32(701).done(), 'Transaction', 'ASSIGNMENT', /subxact count 3 needs 12 bytes at offset 8 \(8 missing\)/);
  assertBodyError(RM_XACT_ID, 0x60, new W().i32(2).raw(invalBytes(1)).done(), 'Transaction', 'INVALIDATION', /invalidation message count 2/);
});

// ------------------------------------------------------------------------------------------------
// SMGR, DBASE, RELMAP, CLOG, MULTIXACT

test('SMGR CREATE and TRUNCATE', () => {
  const rn = { spcNode: 1663, dbNode: 5, relNode: 16384 };
  for (const fork of [0, 1, 2, 3]) {
    const c = expectBody(decode(RM_SMGR_ID, 0x10 | 0x01, new W().rnode(rn).i32(fork).done()), 'Storage', 'CREATE');
    assert.deepEqual(c, { rnode: rn, forkNum: fork });
  }
  for (const flags of [1, 2, 4, 7, 6]) {
    const t = expectBody(decode(RM_SMGR_ID, 0x20 | 0x01, new W().u32(17).rnode(rn).i32(flags).done()), 'Storage', 'TRUNCATE');
    assert.deepEqual(t, { blkno: 17, rnode: rn, flags, truncateHeap: (flags & 1) !== 0, truncateVm: (flags & 2) !== 0, truncateFsm: (flags & 4) !== 0 });
  }
  assertBodyError(RM_SMGR_ID, 0x10, new W().rnode(rn).i32(4).done(), 'Storage', 'CREATE', /fork number 4 is not 0..3/);
  assertBodyError(RM_SMGR_ID, 0x10, new W().rnode(rn).done(), 'Storage', 'CREATE', /main data is 12 bytes, xl_smgr_create needs 16/);
  assertBodyError(RM_SMGR_ID, 0x20, new W().u32(1).rnode(rn).done(), 'Storage', 'TRUNCATE', /xl_smgr_truncate needs 20/);
  assertBodyError(RM_SMGR_ID, 0x30, new W().done(), 'Storage', 'UNKNOWN (30)', /not a record type/);
});

test('DBASE CREATE_FILE_COPY, CREATE_WAL_LOG, DROP', () => {
  assert.deepEqual(expectBody(decode(RM_DBASE_ID, 0x00, new W().u32(16390).u32(1663).u32(1).u32(1664).done()), 'Database', 'CREATE_FILE_COPY'),
    { dbId: 16390, tablespaceId: 1663, srcDbId: 1, srcTablespaceId: 1664 });
  assert.deepEqual(expectBody(decode(RM_DBASE_ID, 0x10, new W().u32(16391).u32(1663).done()), 'Database', 'CREATE_WAL_LOG'), { dbId: 16391, tablespaceId: 1663 });
  assert.deepEqual(expectBody(decode(RM_DBASE_ID, 0x20, new W().u32(16391).i32(2).u32(1663).u32(16500).done()), 'Database', 'DROP'), { dbId: 16391, tablespaceIds: [1663, 16500] });
  assert.deepEqual(expectBody(decode(RM_DBASE_ID, 0x20, new W().u32(16391).i32(0).done()), 'Database', 'DROP'), { dbId: 16391, tablespaceIds: [] });
  assertBodyError(RM_DBASE_ID, 0x00, new W().u32(1).u32(2).u32(3).done(), 'Database', 'CREATE_FILE_COPY', /main data is 12 bytes, xl_dbase_create_file_copy_rec needs 16/);
  assertBodyError(RM_DBASE_ID, 0x10, new W().u32(1).done(), 'Database', 'CREATE_WAL_LOG', /needs 8/);
  assertBodyError(RM_DBASE_ID, 0x20, new W().u32(16391).i32(3).u32(1663).done(), 'Database', 'DROP', /tablespace count 3 needs 12 bytes at offset 8 \(8 missing\)/);
});

/** A relmap file built independently of the parser: magic, count, pairs, CRC over [0, 504). */
function relmapFile(mappings: [number, number][], padFill = 0): Uint8Array {
  const w = new W().i32(0x592717).i32(mappings.length);
  for (const [oid, fn] of mappings) w.u32(oid).u32(fn);
  w.zeros(504 - w.length);
  const head = w.done();
  return new W().raw(head).u32(crc32c(head)).u32(padFill).done();
}

test('RELMAP UPDATE and parseRelMapFile', () => {
  const maps: [number, number][] = [[1259, 1259], [1249, 1249], [2662, 16555]];
  const file = relmapFile(maps, 0xdeadbeef);
  assert.equal(file.length, 512);
  const b = expectBody(decode(RM_RELMAP_ID, 0x00, new W().u32(16384).u32(1663).i32(512).raw(file).done()), 'RelMap', 'UPDATE');
  assert.equal(b.dbId, 16384);
  assert.equal(b.tsId, 1663);
  assert.equal(b.nbytes, 512);
  assert.deepEqual([...b.data], [...file]);
  const parsed = parseRelMapFile(b.data);
  assert.equal(parsed.numMappings, 3);
  assert.deepEqual(parsed.mappings, maps.map(([oid, filenode]) => ({ oid, filenode })));
  // Shared map: dbId 0.
  assert.equal(expectBody(decode(RM_RELMAP_ID, 0x00, new W().u32(0).u32(1664).i32(512).raw(relmapFile([])).done()), 'RelMap', 'UPDATE').dbId, 0);
  // Full map (62 mappings) parses; 63 does not.
  const full = Array.from({ length: 62 }, (_, i): [number, number] => [i + 1, i + 1000]);
  assert.equal(parseRelMapFile(relmapFile(full)).mappings.length, 62);
  const tooMany = relmapFile(full);
  new DataView(tooMany.buffer).setInt32(4, 63, true);
  assert.throws(() => parseRelMapFile(tooMany), (e: unknown) => e instanceof RelMapFileError && /63 mappings/.test(e.message));
  const badCrc = relmapFile(maps);
  badCrc[20]! ^= 1;
  assert.throws(() => parseRelMapFile(badCrc), (e: unknown) => e instanceof RelMapFileError && /CRC/.test(e.message));
  const badMagic = relmapFile(maps);
  badMagic[0] = 0;
  assert.throws(() => parseRelMapFile(badMagic), (e: unknown) => e instanceof RelMapFileError && /magic/.test(e.message));
  assert.throws(() => parseRelMapFile(file.subarray(0, 511)), RelMapFileError);
  assertBodyError(RM_RELMAP_ID, 0x00, new W().u32(1).u32(2).i32(500).raw(file.subarray(0, 500)).done(), 'RelMap', 'UPDATE', /relmap size is 500/);
  assertBodyError(RM_RELMAP_ID, 0x00, new W().u32(1).u32(2).i32(512).raw(file.subarray(0, 100)).done(), 'RelMap', 'UPDATE', /relmap data of 512 bytes needs 512 bytes at offset 12 \(412 missing\)/);
});

test('CLOG ZEROPAGE and TRUNCATE', () => {
  assert.deepEqual(expectBody(decode(RM_CLOG_ID, 0x00, new W().i32(3).done()), 'CLOG', 'ZEROPAGE'), { pageno: 3 });
  assert.deepEqual(expectBody(decode(RM_CLOG_ID, 0x10, new W().i32(12).u32(3000000).u32(5).done()), 'CLOG', 'TRUNCATE'), { pageno: 12, oldestXact: 3000000, oldestXactDb: 5 });
  assertBodyError(RM_CLOG_ID, 0x00, new W().u16(3).done(), 'CLOG', 'ZEROPAGE', /pageno needs 4 bytes/);
  assertBodyError(RM_CLOG_ID, 0x00, new W().i32(-2).done(), 'CLOG', 'ZEROPAGE', /page number -2 is negative/);
  assertBodyError(RM_CLOG_ID, 0x10, new W().i32(1).u32(2).done(), 'CLOG', 'TRUNCATE', /xl_clog_truncate needs 12/);
});

test('MULTIXACT ZERO pages, CREATE_ID, TRUNCATE_ID', () => {
  assert.deepEqual(expectBody(decode(RM_MULTIXACT_ID, 0x00, new W().i32(0).done()), 'MultiXact', 'ZERO_OFF_PAGE'), { pageno: 0 });
  assert.deepEqual(expectBody(decode(RM_MULTIXACT_ID, 0x10, new W().i32(9).done()), 'MultiXact', 'ZERO_MEM_PAGE'), { pageno: 9 });
  const members = [{ xid: 740, status: 0 }, { xid: 741, status: 5 }, { xid: 742, status: 3 }];
  const w = new W().u32(17).u32(40).i32(3);
  for (const m of members) w.u32(m.xid).u32(m.status);
  assert.deepEqual(expectBody(decode(RM_MULTIXACT_ID, 0x20, w.done()), 'MultiXact', 'CREATE_ID'), { mid: 17, moff: 40, nmembers: 3, members });
  assert.deepEqual(expectBody(decode(RM_MULTIXACT_ID, 0x30, new W().u32(5).u32(1).u32(100).u32(0).u32(250).done()), 'MultiXact', 'TRUNCATE_ID'),
    { oldestMultiDb: 5, startTruncOff: 1, endTruncOff: 100, startTruncMemb: 0, endTruncMemb: 250 });
  assertBodyError(RM_MULTIXACT_ID, 0x20, new W().u32(17).u32(40).i32(2).u32(740).u32(0).done(), 'MultiXact', 'CREATE_ID', /member count 2 needs 16 bytes at offset 12 \(8 missing\)/);
  assertBodyError(RM_MULTIXACT_ID, 0x20, new W().u32(17).u32(40).i32(1).u32(740).u32(6).done(), 'MultiXact', 'CREATE_ID', /member 0 \(xid 740\) has status 6/);
  assertBodyError(RM_MULTIXACT_ID, 0x30, new W().u32(5).u32(1).u32(100).u32(0).done(), 'MultiXact', 'TRUNCATE_ID', /xl_multixact_truncate needs 20/);
});

// ------------------------------------------------------------------------------------------------
// XLOG

const sampleCheckPoint: CheckPoint = {
  redoLsn: 0x1_2345_6788n, thisTimeLineId: 3, prevTimeLineId: 2, fullPageWrites: true,
  nextXid: (7n << 32n) | 0xfffffff0n, nextOid: 24576, nextMulti: 12, nextMultiOffset: 40,
  oldestXid: 716, oldestXidDb: 1, oldestMulti: 1, oldestMultiDb: 5, timeUnixSec: 1_700_000_000n,
  oldestCommitTsXid: 0, newestCommitTsXid: 0, oldestActiveXid: 0xfffffff0,
};

/** The CheckPoint laid out by hand from pg_control.h's offsets (independent of encodeCheckPoint). */
function handCheckPoint(c: CheckPoint, pad = 0): Uint8Array {
  return new W()
    .u64(c.redoLsn).u32(c.thisTimeLineId).u32(c.prevTimeLineId).u8(c.fullPageWrites ? 1 : 0).raw(Array(7).fill(pad))
    .u64(c.nextXid).u32(c.nextOid).u32(c.nextMulti).u32(c.nextMultiOffset).u32(c.oldestXid).u32(c.oldestXidDb)
    .u32(c.oldestMulti).u32(c.oldestMultiDb).raw(Array(4).fill(pad)).i64(c.timeUnixSec)
    .u32(c.oldestCommitTsXid).u32(c.newestCommitTsXid).u32(c.oldestActiveXid).raw(Array(4).fill(pad))
    .done();
}

test('XLOG CHECKPOINT records carry the whole CheckPoint', () => {
  const bytes = handCheckPoint(sampleCheckPoint, 0xaa);
  assert.equal(bytes.length, 88);
  for (const [info, type] of [[0x00, 'CHECKPOINT_SHUTDOWN'], [0x10, 'CHECKPOINT_ONLINE']] as const) {
    const b = expectBody(decode(RM_XLOG_ID, info, bytes), 'XLOG', type);
    assert.deepEqual(b, { ...sampleCheckPoint, nextXidEpoch: 7, nextXid32: 0xfffffff0 });
  }
  assertBodyError(RM_XLOG_ID, 0x10, bytes.subarray(0, 80), 'XLOG', 'CHECKPOINT_ONLINE', /main data is 80 bytes, CheckPoint needs 88/);
});

test('encodeCheckPoint and parseCheckPoint round-trip and match the hand layout', () => {
  const enc = encodeCheckPoint(sampleCheckPoint);
  assert.deepEqual([...enc], [...handCheckPoint(sampleCheckPoint, 0)]);
  assert.deepEqual(parseCheckPoint(enc), { ...sampleCheckPoint, nextXidEpoch: 7, nextXid32: 0xfffffff0 });
  // Encoding a parsed struct (extra split fields and all) reproduces the bytes when padding is zero.
  assert.deepEqual([...encodeCheckPoint(parseCheckPoint(enc))], [...enc]);
  const edge: CheckPoint = {
    ...sampleCheckPoint, redoLsn: 0xffff_ffff_ffff_fff8n, fullPageWrites: false, nextXid: 0xffff_ffff_ffff_ffffn, timeUnixSec: -1n,
    nextOid: 0xffffffff, thisTimeLineId: 1, prevTimeLineId: 1,
  };
  assert.deepEqual(parseCheckPoint(encodeCheckPoint(edge)), { ...edge, nextXidEpoch: 0xffffffff, nextXid32: 0xffffffff });
  assert.throws(() => encodeCheckPoint({ ...sampleCheckPoint, nextOid: -1 }), /nextOid/);
  assert.throws(() => encodeCheckPoint({ ...sampleCheckPoint, oldestXid: 2 ** 32 }), /oldestXid/);
  assert.throws(() => encodeCheckPoint({ ...sampleCheckPoint, nextXid: 1n << 64n }), /nextXid/);
  assert.throws(() => parseCheckPoint(enc.subarray(0, 87)), /87 bytes, expected 88/);
  assert.equal(pgTimeToDate(sampleCheckPoint.timeUnixSec).toISOString(), '2023-11-14T22:13:20.000Z');
});

test('XLOG NEXTOID, SWITCH, NOOP, FPI, BACKUP_END, PARAMETER_CHANGE, RESTORE_POINT, FPW_CHANGE, END_OF_RECOVERY, OVERWRITE_CONTRECORD', () => {
  assert.deepEqual(expectBody(decode(RM_XLOG_ID, 0x30, new W().u32(40000).done()), 'XLOG', 'NEXTOID'), { nextOid: 40000 });
  assert.deepEqual(expectBody(decode(RM_XLOG_ID, 0x40, new Uint8Array(0)), 'XLOG', 'SWITCH'), {});
  assert.deepEqual(expectBody(decode(RM_XLOG_ID, 0x20, new Uint8Array(0)), 'XLOG', 'NOOP'), {});
  const blk = { id: 0, rnode: { spcNode: 1663, dbNode: 5, relNode: 1259 }, blkno: 0 };
  const fpi = makeRecord(RM_XLOG_ID, 0xb0, new Uint8Array(0), { blocks: [blk] });
  assert.deepEqual(decodeRecordBody(fpi), { rmgr: 'XLOG', type: 'FPI', body: {} });
  assert.equal(fpi.blocks.length, 1);
  assert.deepEqual(decode(RM_XLOG_ID, 0xa0, new Uint8Array(0), { blocks: [blk] }), { rmgr: 'XLOG', type: 'FPI_FOR_HINT', body: {} });
  assert.deepEqual(expectBody(decode(RM_XLOG_ID, 0x50, new W().u64(0x3000028n).done()), 'XLOG', 'BACKUP_END'), { startLsn: 0x3000028n });

  const pc = new W().i32(100).i32(8).i32(10).i32(2).i32(64).i32(1).u8(1).u8(0).u16(0).done();
  assert.deepEqual(expectBody(decode(RM_XLOG_ID, 0x60, pc), 'XLOG', 'PARAMETER_CHANGE'), {
    maxConnections: 100, maxWorkerProcesses: 8, maxWalSenders: 10, maxPreparedXacts: 2, maxLocksPerXact: 64,
    walLevel: 1, walLevelName: 'replica', walLogHints: true, trackCommitTimestamp: false,
  });
  const pc2 = new W().i32(1).i32(2).i32(3).i32(4).i32(5).i32(7).u8(0).u8(1).u16(0).done();
  const b2 = expectBody(decode(RM_XLOG_ID, 0x60, pc2), 'XLOG', 'PARAMETER_CHANGE');
  assert.equal(b2.walLevelName, '?');
  assert.equal(b2.trackCommitTimestamp, true);
  assertBodyError(RM_XLOG_ID, 0x60, pc.subarray(0, 24), 'XLOG', 'PARAMETER_CHANGE', /xl_parameter_change needs 28/);

  const rp = new W().i64(1234567n).cstr('before_upgrade').done();
  const rpFull = new W().raw(rp).zeros(72 - rp.length).done();
  assert.deepEqual(expectBody(decode(RM_XLOG_ID, 0x70, rpFull), 'XLOG', 'RESTORE_POINT'), { timeUs: 1234567n, name: 'before_upgrade' });
  assertBodyError(RM_XLOG_ID, 0x70, new W().i64(1n).raw(Array(64).fill(0x41)).done(), 'XLOG', 'RESTORE_POINT', /no terminating NUL/);
  assertBodyError(RM_XLOG_ID, 0x70, rp, 'XLOG', 'RESTORE_POINT', /xl_restore_point needs 72/);

  assert.deepEqual(expectBody(decode(RM_XLOG_ID, 0x80, Uint8Array.of(1)), 'XLOG', 'FPW_CHANGE'), { fullPageWrites: true });
  assert.deepEqual(expectBody(decode(RM_XLOG_ID, 0x80, Uint8Array.of(0)), 'XLOG', 'FPW_CHANGE'), { fullPageWrites: false });
  assert.deepEqual(expectBody(decode(RM_XLOG_ID, 0x90, new W().i64(-77n).u32(4).u32(3).done()), 'XLOG', 'END_OF_RECOVERY'), { endTimeUs: -77n, thisTimeLineId: 4, prevTimeLineId: 3 });
  assert.deepEqual(expectBody(decode(RM_XLOG_ID, 0xd0, new W().u64(0x5fffff8n).i64(99n).done()), 'XLOG', 'OVERWRITE_CONTRECORD'), { overwrittenLsn: 0x5fffff8n, timeUs: 99n });
  assertBodyError(RM_XLOG_ID, 0x30, new Uint8Array(0), 'XLOG', 'NEXTOID', /main data is 0 bytes, nextOid needs 4/);
  assertBodyError(RM_XLOG_ID, 0x90, new W().i64(1n).done(), 'XLOG', 'END_OF_RECOVERY', /needs 16/);
  assertBodyError(RM_XLOG_ID, 0xc0, new Uint8Array(0), 'XLOG', 'UNKNOWN (c0)', /not a record type/);
});

// ------------------------------------------------------------------------------------------------
// HEAP / HEAP2

test('HEAP INSERT, DELETE, UPDATE, HOT_UPDATE, LOCK flags', () => {
  const blk = { id: 0, rnode: { spcNode: 1663, dbNode: 5, relNode: 16384 }, blkno: 3 };
  for (const init of [0, 0x80]) {
    for (const flags of [0x00, 0x01, 0x08, 0x21, 0xff]) {
      const ins = expectBody(decode(RM_HEAP_ID, 0x00 | init, new W().u16(7).u8(flags).done(), { blocks: [blk] }), 'Heap', init ? 'INSERT+INIT' : 'INSERT');
      assert.deepEqual(ins, { offnum: 7, flags, allVisibleCleared: (flags & 1) !== 0, allFrozenSet: (flags & 0x20) !== 0, initPage: init !== 0 });
      const upd = new W().u32(900).u16(12).u8(0x14).u8(flags).u32(901).u16(13).done();
      for (const [op, name] of [[0x20, 'UPDATE'], [0x40, 'HOT_UPDATE']] as const) {
        const u = expectBody(decode(RM_HEAP_ID, op | init, upd), 'Heap', init ? (`${name}+INIT` as const) : name);
        assert.deepEqual(u, {
          oldXmax: 900, oldOffnum: 12, oldInfobitsSet: 0x14, flags, newXmax: 901, newOffnum: 13,
          oldAllVisibleCleared: (flags & 1) !== 0, newAllVisibleCleared: (flags & 2) !== 0, initPage: init !== 0,
        });
      }
    }
  }
  for (const flags of [0, 1, 0x1e]) {
    assert.deepEqual(expectBody(decode(RM_HEAP_ID, 0x10, new W().u32(555).u16(4).u8(0x02).u8(flags).done()), 'Heap', 'DELETE'),
      { xmax: 555, offnum: 4, infobitsSet: 2, flags, allVisibleCleared: (flags & 1) !== 0 });
    assert.deepEqual(expectBody(decode(RM_HEAP_ID, 0x60, new W().u32(556).u16(5).u8(0x03).u8(flags).done()), 'Heap', 'LOCK'),
      { lockingXid: 556, offnum: 5, infobitsSet: 3, flags, allFrozenCleared: (flags & 1) !== 0 });
  }
  assertBodyError(RM_HEAP_ID, 0x00, new W().u16(7).done(), 'Heap', 'INSERT', /main data is 2 bytes, xl_heap_insert needs 3/);
  assertBodyError(RM_HEAP_ID, 0x10, new W().u32(1).u16(1).u8(0).done(), 'Heap', 'DELETE', /xl_heap_delete needs 8/);
  assertBodyError(RM_HEAP_ID, 0x40, new W().u32(1).u16(1).u8(0).u8(0).u32(1).done(), 'Heap', 'HOT_UPDATE', /xl_heap_update needs 14/);
  assertBodyError(RM_HEAP_ID, 0x60, new W().u32(1).done(), 'Heap', 'LOCK', /xl_heap_lock needs 8/);
  // DELETE never has INIT_PAGE in PostgreSQL 15.
  assertBodyError(RM_HEAP_ID, 0x90, new W().u32(1).u16(1).u8(0).u8(0).done(), 'Heap', 'UNKNOWN (90)', /not a record type/);
  // Heap ops the pageserver does not need bodies for.
  for (const op of [0x30, 0x50, 0x70]) assert.equal(decodeRecordBody(makeRecord(RM_HEAP_ID, op, new W().u16(1).done())), null);
});

test('HEAP2 MULTI_INSERT, LOCK_UPDATED, VISIBLE', () => {
  for (const flags of [0, 1, 0x20, 0x21]) {
    const withOffsets = new W().u8(flags).u8(0).u16(3).u16(1).u16(2).u16(3).done();
    assert.deepEqual(expectBody(decode(RM_HEAP2_ID, 0x50, withOffsets), 'Heap2', 'MULTI_INSERT'),
      { flags, ntuples: 3, allVisibleCleared: (flags & 1) !== 0, allFrozenSet: (flags & 0x20) !== 0, initPage: false });
    const noOffsets = new W().u8(flags).u8(0).u16(3).done();
    assert.deepEqual(expectBody(decode(RM_HEAP2_ID, 0xd0, noOffsets), 'Heap2', 'MULTI_INSERT+INIT'),
      { flags, ntuples: 3, allVisibleCleared: (flags & 1) !== 0, allFrozenSet: (flags & 0x20) !== 0, initPage: true });
  }
  assertBodyError(RM_HEAP2_ID, 0x50, new W().u8(0).u8(0).u16(3).u16(1).done(), 'Heap2', 'MULTI_INSERT', /offsets of 3 tuples needs 6 bytes at offset 4 \(4 missing\)/);
  assert.deepEqual(expectBody(decode(RM_HEAP2_ID, 0x60, new W().u32(1000).u16(9).u8(0x01).u8(1).done()), 'Heap2', 'LOCK_UPDATED'),
    { xmax: 1000, offnum: 9, infobitsSet: 1, flags: 1, allFrozenCleared: true });
  for (const flags of [1, 2, 3]) {
    assert.deepEqual(expectBody(decode(RM_HEAP2_ID, 0x40, new W().u32(730).u8(flags).done()), 'Heap2', 'VISIBLE'),
      { cutoffXid: 730, flags, allVisible: (flags & 1) !== 0, allFrozen: (flags & 2) !== 0 });
  }
  assertBodyError(RM_HEAP2_ID, 0x40, new W().u32(730).done(), 'Heap2', 'VISIBLE', /xl_heap_visible needs 5/);
  assertBodyError(RM_HEAP2_ID, 0x60, new W().u32(730).done(), 'Heap2', 'LOCK_UPDATED', /xl_heap_lock_updated needs 8/);
  for (const op of [0x00, 0x10, 0x20, 0x30, 0x70]) assert.equal(decodeRecordBody(makeRecord(RM_HEAP2_ID, op, new W().u32(1).done())), null);
});

// ------------------------------------------------------------------------------------------------
// STANDBY

test('STANDBY RUNNING_XACTS, LOCK, INVALIDATIONS', () => {
  const rx = new W().i32(2).i32(3).u8(0).zeros(3).u32(750).u32(740).u32(749).u32(740).u32(745).u32(741).u32(742).u32(746).done();
  assert.deepEqual(expectBody(decode(RM_STANDBY_ID, 0x10, rx), 'Standby', 'RUNNING_XACTS'), {
    xcnt: 2, subxcnt: 3, subxidOverflow: false, nextXid: 750, oldestRunningXid: 740, latestCompletedXid: 749, xids: [740, 745], subxids: [741, 742, 746],
  });
  const empty = new W().i32(0).i32(0).u8(1).zeros(3).u32(751).u32(751).u32(750).done();
  assert.deepEqual(expectBody(decode(RM_STANDBY_ID, 0x10, empty), 'Standby', 'RUNNING_XACTS'), {
    xcnt: 0, subxcnt: 0, subxidOverflow: true, nextXid: 751, oldestRunningXid: 751, latestCompletedXid: 750, xids: [], subxids: [],
  });
  assertBodyError(RM_STANDBY_ID, 0x10, new W().i32(2).i32(3).u8(0).zeros(3).u32(750).u32(740).u32(749).u32(740).done(), 'Standby', 'RUNNING_XACTS',
    /xcnt 2 \+ subxcnt 3 xids needs 20 bytes at offset 24 \(16 missing\)/);
  assertBodyError(RM_STANDBY_ID, 0x10, new W().i32(1).done(), 'Standby', 'RUNNING_XACTS', /xl_running_xacts needs 24/);

  const lk = new W().i32(2).u32(760).u32(5).u32(16384).u32(761).u32(5).u32(16390).done();
  assert.deepEqual(expectBody(decode(RM_STANDBY_ID, 0x00, lk), 'Standby', 'LOCK'), { locks: [{ xid: 760, dbOid: 5, relOid: 16384 }, { xid: 761, dbOid: 5, relOid: 16390 }] });
  assertBodyError(RM_STANDBY_ID, 0x00, lk.subarray(0, 20), 'Standby', 'LOCK', /lock count 2 needs 24 bytes at offset 4 \(8 missing\)/);

  const inv = new W().u32(5).u32(1663).u8(1).zeros(3).i32(2).raw(invalBytes(2)).done();
  assert.deepEqual(expectBody(decode(RM_STANDBY_ID, 0x20, inv), 'Standby', 'INVALIDATIONS'), { dbId: 5, tsId: 1663, relcacheInitFileInval: true, count: 2 });
  assertBodyError(RM_STANDBY_ID, 0x20, inv.subarray(0, 40), 'Standby', 'INVALIDATIONS', /invalidation message count 2/);
});

// ------------------------------------------------------------------------------------------------
// Dispatcher and helpers

test('records the pageserver does not interpret decode to null', () => {
  assert.equal(decodeRecordBody(makeRecord(RM_BTREE_ID, 0x00, new W().u16(1).done())), null);
  assert.equal(decodeRecordBody(makeRecord(RM_TBLSPC_ID, 0x00, new W().u32(1).cstr('/x').done())), null);
  assert.equal(decodeRecordBody(makeRecord(130, 0x00, new W().u32(1).done())), null);
});

test('error messages use the record LSN in %X/%X form and carry the offset', () => {
  const e = assertBodyError(RM_CLOG_ID, 0x10, new W().i32(1).done(), 'CLOG', 'TRUNCATE', /main data is 4 bytes, xl_clog_truncate needs 12/);
  assert.equal(e.name, 'WalRecordBodyError');
  assert.equal(e.context.info, '0x10');
  assert.equal(e.context.neededBytes, 12);
});

test('PostgreSQL timestamp helpers', () => {
  // 2000-01-01 is 0; one day later is 86400e6 µs.
  assert.equal(pgTimestampToDate(0n).toISOString(), '2000-01-01T00:00:00.000Z');
  assert.equal(pgTimestampToDate(86_400_000_000n + 1500n).toISOString(), '2000-01-02T00:00:00.001Z');
  assert.equal(pgTimestampToUnixMs(-1n), 946_684_799_999); // rounds towards -infinity
  assert.equal(pgTimestampToUnixMs(-0x8000_0000_0000_0000n), -Infinity);
  assert.equal(pgTimestampToUnixMs(0x7fff_ffff_ffff_ffffn), Infinity);
  assert.equal(unixMsToPgTimestamp(Date.UTC(2024, 0, 1)), 757_382_400_000_000n);
  assert.equal(pgTimestampToDate(unixMsToPgTimestamp(Date.UTC(2031, 4, 6, 7, 8, 9, 123))).getTime(), Date.UTC(2031, 4, 6, 7, 8, 9, 123));
});
