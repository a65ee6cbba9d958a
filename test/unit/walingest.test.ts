/**
 * WalIngest on hand-built PostgreSQL 15 records.
 *
 * Every test starts a timeline, writes an "import" state by hand (database and relation
 * directories, sizes, pages, SLRU directories and pages, the two-phase directory, the CheckPoint),
 * then feeds records built with encodeRecord (main data laid out byte by byte as PostgreSQL 15's
 * XLogRegisterData calls do) and decoded with decodeXLogRecord, at increasing 8-aligned LSNs
 * (end = start + MAXALIGN(xl_tot_len)). Results are read back through DatadirView at
 * last_record_lsn.
 *
 * Expected values come from PostgreSQL 15's redo rules, cited next to each assertion (file and
 * function in src/backend of PostgreSQL 15.18); byte positions are worked out by hand in comments,
 * never computed with the code under test.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { formatLsn, type Lsn } from '../../src/postgres/lsn.ts';
import { encodeRecord, type BlockSpec, type RecordSpec } from '../../src/postgres/walwriter.ts';
import { decodeXLogRecord, type DecodedRecord, type RelFileNode } from '../../src/postgres/xlogrecord.ts';
import { encodeCheckPoint, type CheckPoint } from '../../src/postgres/records/xlog.ts';
import { crc32c } from '../../src/postgres/crc32c.ts';
import {
  RM_CLOG_ID, RM_DBASE_ID, RM_HEAP_ID, RM_MULTIXACT_ID, RM_RELMAP_ID, RM_SMGR_ID, RM_XACT_ID, RM_XLOG_ID,
} from '../../src/postgres/rmgr.ts';
import {
  CHECKPOINT_KEY, DBDIR_KEY, ForkNumber, SlruKind, TWOPHASEDIR_KEY, relBlockKey, relDirKey, relMapFileKey, relSizeKey,
  slruBlockKey, slruDirKey, slruSegmentSizeKey, twoPhaseFileKey, type Key, type RelTag,
} from '../../src/storage/key.ts';
import type { Value } from '../../src/storage/value.ts';
import { TenantManager } from '../../src/pageserver/tenantmgr.ts';
import type { Timeline } from '../../src/pageserver/timeline/timeline.ts';
import { WalIngest, type WalIngestOptions } from '../../src/pageserver/walingest/walingest.ts';
import { IngestError } from '../../src/pageserver/datadir/writer.ts';
import { DatadirView } from '../../src/pageserver/datadir/view.ts';
import {
  encodeDbDir, encodeRelDir, encodeSize, encodeSlruDir, encodeTwoPhaseDir, relDirEntry, type DbDirEntry,
} from '../../src/pageserver/datadir/dirs.ts';

process.env['STRATA_LOG'] ??= 'error';

// ------------------------------------------------------------------------------------------------
// PostgreSQL 15 constants used to build records (from the C headers, restated here).

const BLCKSZ = 8192;
/** xl_info generic flag XLR_CHECK_CONSISTENCY (xlogrecord.h). */
const XLR_CHECK_CONSISTENCY = 0x02;
/** XLOG rmgr op codes (pg_control.h). */
const XLOG_CHECKPOINT_SHUTDOWN = 0x00;
const XLOG_CHECKPOINT_ONLINE = 0x10;
const XLOG_NEXTOID = 0x30;
const XLOG_FPI = 0xb0;
/** heapam_xlog.h. */
const XLOG_HEAP_INSERT = 0x00;
const XLOG_HEAP_UPDATE = 0x20;
const XLOG_HEAP_LOCK = 0x60;
const XLOG_HEAP_INIT_PAGE = 0x80;
const XLH_INSERT_ALL_VISIBLE_CLEARED = 0x01;
const XLH_UPDATE_OLD_ALL_VISIBLE_CLEARED = 0x01;
const XLH_UPDATE_NEW_ALL_VISIBLE_CLEARED = 0x02;
const XLH_LOCK_ALL_FROZEN_CLEARED = 0x01;
/** xact.h. */
const XLOG_XACT_COMMIT = 0x00;
const XLOG_XACT_PREPARE = 0x10;
const XLOG_XACT_ABORT = 0x20;
const XLOG_XACT_COMMIT_PREPARED = 0x30;
const XLOG_XACT_ABORT_PREPARED = 0x40;
const XLOG_XACT_HAS_INFO = 0x80;
const XINFO_HAS_SUBXACTS = 0x02;
const XINFO_HAS_RELFILENODES = 0x04;
const XINFO_HAS_TWOPHASE = 0x10;
/** storage_xlog.h. */
const XLOG_SMGR_CREATE = 0x10;
const XLOG_SMGR_TRUNCATE = 0x20;
const SMGR_TRUNCATE_HEAP = 0x01;
const SMGR_TRUNCATE_VM = 0x02;
const SMGR_TRUNCATE_FSM = 0x04;
/** dbcommands_xlog.h. */
const XLOG_DBASE_CREATE_FILE_COPY = 0x00;
const XLOG_DBASE_CREATE_WAL_LOG = 0x10;
const XLOG_DBASE_DROP = 0x20;
/** relmapper.h. */
const XLOG_RELMAP_UPDATE = 0x00;
/** clog.h. */
const CLOG_ZEROPAGE = 0x00;
const CLOG_TRUNCATE = 0x10;
/** multixact.h. */
const XLOG_MULTIXACT_ZERO_OFF_PAGE = 0x00;
const XLOG_MULTIXACT_ZERO_MEM_PAGE = 0x10;
const XLOG_MULTIXACT_CREATE_ID = 0x20;
const XLOG_MULTIXACT_TRUNCATE_ID = 0x30;
/** twophase.c TWOPHASE_MAGIC. */
const TWOPHASE_MAGIC = 0x57f94534;

const SPC = 1663;
const DB = 5;
const REL: RelTag = { spcNode: SPC, dbNode: DB, relNode: 16400, forkNum: ForkNumber.main };
const NODE: RelFileNode = { spcNode: SPC, dbNode: DB, relNode: 16400 };
const fork = (rel: RelTag, forkNum: number): RelTag => ({ ...rel, forkNum });

// ------------------------------------------------------------------------------------------------
// Little-endian body writer.

class W {
  private readonly bytes: number[] = [];
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
    return this.u32(Number(x & 0xffff_ffffn)).u32(Number(x >> 32n));
  }
  raw(b: Uint8Array | number[]): this {
    for (const x of b) this.bytes.push(x);
    return this;
  }
  rnode(r: RelFileNode): this {
    return this.u32(r.spcNode).u32(r.dbNode).u32(r.relNode);
  }
  align8(): this {
    while (this.bytes.length % 8 !== 0) this.bytes.push(0);
    return this;
  }
  done(): Buffer {
    return Buffer.from(this.bytes);
  }
}

// ------------------------------------------------------------------------------------------------
// Pages.

/**
 * A standard heap page (bufpage.h PageHeaderData): pd_lsn @0 (xlogid, xrecoff), pd_checksum @8,
 * pd_flags @10, pd_lower @12, pd_upper @14, pd_special @16, pd_pagesize_version @18 (8192 | 4),
 * pd_prune_xid @20. Line pointers up to pd_lower and tuples from pd_upper are filled with
 * `fill`; the gap between them (the hole) is zero.
 */
function heapPage(fill: number, lower = 40, upper = 8000, oldLsn = 0x0000_0001_0000_0100n): Buffer {
  const p = Buffer.alloc(BLCKSZ);
  p.fill(fill, 24, lower);
  p.fill((fill + 1) & 0xff, upper, BLCKSZ);
  setLsn(p, oldLsn);
  p.writeUInt16LE(lower, 12);
  p.writeUInt16LE(upper, 14);
  p.writeUInt16LE(BLCKSZ, 16);
  p.writeUInt16LE(BLCKSZ | 4, 18);
  return p;
}

/** PageSetLSN: pd_lsn is {uint32 xlogid (high half), uint32 xrecoff (low half)}. */
function setLsn(p: Buffer, lsn: Lsn): void {
  p.writeUInt32LE(Number(lsn >> 32n), 0);
  p.writeUInt32LE(Number(lsn & 0xffff_ffffn), 4);
}

function withLsn(p: Buffer, lsn: Lsn): Buffer {
  const c = Buffer.from(p);
  setLsn(c, lsn);
  return c;
}

/** A visibility-map page as PageInit(page, BLCKSZ, 0) leaves it, its map bytes [24, 8192) set to `fill`. */
function vmPage(fill: number): Buffer {
  const p = Buffer.alloc(BLCKSZ);
  p.writeUInt16LE(24, 12);
  p.writeUInt16LE(BLCKSZ, 14);
  p.writeUInt16LE(BLCKSZ, 16);
  p.writeUInt16LE(BLCKSZ | 4, 18);
  p.fill(fill, 24);
  return p;
}

const ZERO = Buffer.alloc(BLCKSZ);
const filled = (fill: number): Buffer => Buffer.alloc(BLCKSZ, fill);

// ------------------------------------------------------------------------------------------------
// The import state.

const BASE_CHECKPOINT: CheckPoint = {
  redoLsn: 0x0100_0000n, thisTimeLineId: 1, prevTimeLineId: 1, fullPageWrites: true, nextXid: 1000n, nextOid: 20000,
  nextMulti: 1, nextMultiOffset: 0, oldestXid: 727, oldestXidDb: 1, oldestMulti: 1, oldestMultiDb: 1,
  timeUnixSec: 1_700_000_000n, oldestCommitTsXid: 0, newestCommitTsXid: 0, oldestActiveXid: 0,
};

interface BaseRel {
  rel: RelTag;
  size: number;
  pages?: Record<number, Buffer>;
}

interface BaseState {
  /** Default: global (1664/0) and databases 1663/1 and 1663/5, all with relmaps. */
  dbs?: DbDirEntry[];
  rels?: BaseRel[];
  /** Relation directories written as given (overriding what `rels` implies for that database). */
  relDirs?: { spcNode: number; dbNode: number; entries: number[] }[];
  relmaps?: { spcNode: number; dbNode: number; map: Buffer }[];
  /** Per SLRU kind: segment number → its pages. */
  slru?: Partial<Record<SlruKind, Record<number, Buffer[]>>>;
  twoPhase?: Record<number, Buffer>;
  checkpoint?: Partial<CheckPoint>;
}

const DEFAULT_DBS: DbDirEntry[] = [
  { spcNode: 1664, dbNode: 0, hasRelmap: true },
  { spcNode: SPC, dbNode: 1, hasRelmap: true },
  { spcNode: SPC, dbNode: DB, hasRelmap: true },
];

const START_LSN = 0x0100_0000n;
const IMPORT_LSN = START_LSN + 8n;

function writeBase(tl: Timeline, base: BaseState): void {
  const put = (key: Key, image: Buffer): void => tl.put(key, IMPORT_LSN, { kind: 'image', image } satisfies Value);
  const dbs = base.dbs ?? DEFAULT_DBS;
  put(DBDIR_KEY, encodeDbDir(dbs));
  const dirs = new Map<string, { spcNode: number; dbNode: number; entries: number[] }>();
  for (const d of dbs) dirs.set(`${d.spcNode}/${d.dbNode}`, { spcNode: d.spcNode, dbNode: d.dbNode, entries: [] });
  for (const r of base.rels ?? []) {
    const k = `${r.rel.spcNode}/${r.rel.dbNode}`;
    let d = dirs.get(k);
    if (d === undefined) dirs.set(k, d = { spcNode: r.rel.spcNode, dbNode: r.rel.dbNode, entries: [] });
    d.entries.push(relDirEntry(r.rel.relNode, r.rel.forkNum));
    put(relSizeKey(r.rel), encodeSize(r.size));
    for (const [blk, page] of Object.entries(r.pages ?? {})) put(relBlockKey(r.rel, Number(blk)), page);
  }
  for (const d of base.relDirs ?? []) dirs.set(`${d.spcNode}/${d.dbNode}`, d);
  for (const d of dirs.values()) put(relDirKey(d.spcNode, d.dbNode), encodeRelDir(d.entries));
  for (const m of base.relmaps ?? []) put(relMapFileKey(m.spcNode, m.dbNode), m.map);
  for (const kind of [SlruKind.clog, SlruKind.multixactMembers, SlruKind.multixactOffsets]) {
    const segs = base.slru?.[kind] ?? {};
    put(slruDirKey(kind), encodeSlruDir(Object.keys(segs).map(Number)));
    for (const [seg, pages] of Object.entries(segs)) {
      put(slruSegmentSizeKey(kind, Number(seg)), encodeSize(pages.length));
      pages.forEach((p, i) => put(slruBlockKey(kind, Number(seg), i), p));
    }
  }
  const tp = base.twoPhase ?? {};
  put(TWOPHASEDIR_KEY, encodeTwoPhaseDir(Object.keys(tp).map(Number)));
  for (const [xid, state] of Object.entries(tp)) put(twoPhaseFileKey(Number(xid)), state);
  put(CHECKPOINT_KEY, Buffer.from(encodeCheckPoint({ ...BASE_CHECKPOINT, ...base.checkpoint })));
  tl.finishRecord(IMPORT_LSN, null);
}

const maxAlign = (n: number): number => (n + 7) & ~7;

class Harness {
  readonly tl: Timeline;
  readonly ingest: WalIngest;
  /** Where the next record starts, and the LSN of the previous one (xl_prev). */
  next: Lsn = IMPORT_LSN;
  prev: Lsn = START_LSN;

  constructor(tl: Timeline, opts: WalIngestOptions) {
    this.tl = tl;
    this.ingest = new WalIngest(tl, opts);
  }

  /** Encodes and decodes a record at the current position without ingesting it. */
  build(spec: RecordSpec): DecodedRecord {
    const bytes = encodeRecord(spec, this.prev);
    return decodeXLogRecord(bytes, this.next, this.next + BigInt(maxAlign(bytes.length)));
  }

  /** Builds and ingests a record; the position moves past it. */
  feed(spec: RecordSpec): DecodedRecord {
    const rec = this.build(spec);
    this.ingest.ingest(rec);
    this.prev = rec.lsn;
    this.next = rec.endLsn;
    return rec;
  }

  view(): DatadirView {
    return new DatadirView(this.tl, this.tl.lastRecordLsn);
  }
}

async function withTimeline(base: BaseState, fn: (h: Harness) => void | Promise<void>, opts: WalIngestOptions = {}): Promise<void> {
  const dir = await mkdtemp(path.join(tmpdir(), 'strata-walingest-'));
  let mgr: TenantManager | null = null;
  try {
    mgr = await TenantManager.open({ workdir: dir, pageCacheBytes: 1 << 20, blockCacheBytes: 1 << 20, waitLsnTimeoutMs: 2000 });
    const tenant = await mgr.createTenant();
    const tl = await tenant.createTimeline({ pgVersion: 15, startLsn: START_LSN });
    writeBase(tl, base);
    await fn(new Harness(tl, opts));
  } finally {
    if (mgr !== null) await mgr.shutdown({ flush: false }).catch(() => undefined);
    await rm(dir, { recursive: true, force: true });
  }
}

function errorOf(fn: () => unknown): Error & { code?: string } {
  try {
    fn();
  } catch (err) {
    assert.ok(err instanceof Error, `expected an Error, got ${String(err)}`);
    return err as Error & { code?: string };
  }
  assert.fail('expected an error, nothing was thrown');
}

// ------------------------------------------------------------------------------------------------
// Record builders (main-data layouts of PostgreSQL 15, x86-64).

function fpiRecord(blocks: BlockSpec[]): RecordSpec {
  // XLOG_FPI: log_newpage / log_newpages; only block references, every image with BKPIMAGE_APPLY.
  return { xid: 0, rmid: RM_XLOG_ID, info: XLOG_FPI, blocks };
}

/** xl_heap_insert: offnum u16 @0, flags u8 @2 (SizeOfHeapInsert = 3). */
function heapInsert(xid: number, blkno: number, flags: number, extra: Partial<BlockSpec> = {}, info = XLOG_HEAP_INSERT): RecordSpec {
  return {
    xid, rmid: RM_HEAP_ID, info,
    blocks: [{ id: 0, rnode: NODE, forkNum: 0, blkno, data: Uint8Array.from([1, 2, 3, 4, 5, 6, 7, 8]), ...extra }],
    mainData: new W().u16(1).u8(flags).done(),
  };
}

interface XactBody {
  time: bigint;
  subxacts?: number[];
  rels?: RelFileNode[];
  twophaseXid?: number;
}

/**
 * xl_xact_commit / xl_xact_abort with XLOG_XACT_HAS_INFO (xact.h): xact_time i64, xinfo u32, then
 * in this order the parts xinfo announces: subxacts {int nsubxacts; xids}, relfilenodes
 * {int nrels; RelFileNode[]}, twophase {xid}.
 */
function xactFinish(op: number, xid: number, b: XactBody): RecordSpec {
  let xinfo = 0;
  if (b.subxacts !== undefined) xinfo |= XINFO_HAS_SUBXACTS;
  if (b.rels !== undefined) xinfo |= XINFO_HAS_RELFILENODES;
  if (b.twophaseXid !== undefined) xinfo |= XINFO_HAS_TWOPHASE;
  const w = new W().u64(b.time).u32(xinfo);
  if (b.subxacts !== undefined) {
    w.i32(b.subxacts.length);
    for (const x of b.subxacts) w.u32(x);
  }
  if (b.rels !== undefined) {
    w.i32(b.rels.length);
    for (const r of b.rels) w.rnode(r);
  }
  if (b.twophaseXid !== undefined) w.u32(b.twophaseXid);
  return { xid, rmid: RM_XACT_ID, info: op | XLOG_XACT_HAS_INFO, mainData: w.done() };
}

/**
 * A PREPARE body (twophase.c StartPrepare/EndPrepare): the 72-byte TwoPhaseFileHeader, the GID,
 * the subxact array (each chunk MAXALIGNed), then the end-of-records sentinel
 * TwoPhaseRecordOnDisk {len 0, rmid TWOPHASE_RM_END_ID 0, info 0}. total_len counts the body plus
 * the CRC the file gets on disk.
 */
function prepareBody(xid: number, subxacts: number[], gid: string): Buffer {
  const gidBytes = new TextEncoder().encode(gid);
  const w = new W()
    .u32(TWOPHASE_MAGIC).u32(0).u32(xid).u32(DB).u64(800_000_000_000_001n).u32(10)
    .i32(subxacts.length).i32(0).i32(0).i32(0).i32(0).i32(0)
    .u8(0).u8(0).u16(gidBytes.length + 1).u64(0n).u64(0n);
  assert.equal(w.length, 72);
  w.raw(gidBytes).u8(0).align8();
  if (subxacts.length > 0) {
    for (const x of subxacts) w.u32(x);
    w.align8();
  }
  w.u32(0).u8(0).u8(0).u16(0).align8();
  const out = w.done();
  out.writeUInt32LE(out.length + 4, 4);
  return out;
}

/** xl_smgr_create: RelFileNode rnode (12 bytes), ForkNumber forkNum (int). */
function smgrCreate(node: RelFileNode, forkNum: number): RecordSpec {
  return { xid: 0, rmid: RM_SMGR_ID, info: XLOG_SMGR_CREATE, mainData: new W().rnode(node).i32(forkNum).done() };
}

/** xl_smgr_truncate: BlockNumber blkno, RelFileNode rnode, int flags (20 bytes). */
function smgrTruncate(node: RelFileNode, blkno: number, flags: number): RecordSpec {
  return { xid: 0, rmid: RM_SMGR_ID, info: XLOG_SMGR_TRUNCATE, mainData: new W().u32(blkno).rnode(node).i32(flags).done() };
}

/** Records whose main data is a single int pageno (CLOG ZEROPAGE, multixact ZERO_*_PAGE). */
function pagenoRecord(rmid: number, info: number, pageno: number): RecordSpec {
  return { xid: 0, rmid, info, mainData: new W().i32(pageno).done() };
}

/** xl_multixact_create: mid u32, moff u32, nmembers i32, members {xid u32, status u32}[]. */
function multixactCreate(mid: number, moff: number, members: { xid: number; status: number }[]): RecordSpec {
  const w = new W().u32(mid).u32(moff).i32(members.length);
  for (const m of members) w.u32(m.xid).u32(m.status);
  return { xid: 0, rmid: RM_MULTIXACT_ID, info: XLOG_MULTIXACT_CREATE_ID, mainData: w.done() };
}

/** A valid pg_filenode.map (relmapper.c RelMapFile): magic, num_mappings, 62 pairs, CRC-32C of [0, 504), pad. */
function relmapFile(mappings: [number, number][]): Buffer {
  const b = Buffer.alloc(512);
  b.writeInt32LE(0x592717, 0);
  b.writeInt32LE(mappings.length, 4);
  mappings.forEach(([oid, node], i) => {
    b.writeUInt32LE(oid, 8 + 8 * i);
    b.writeUInt32LE(node, 12 + 8 * i);
  });
  b.writeUInt32LE(crc32c(b.subarray(0, 504)), 504);
  return b;
}

// ================================================================================================
// 1. Full-page images.

test('FPI with BKPIMAGE_APPLY: the page is the image with pd_lsn = the record end (with and without a hole)', async () => {
  const p0 = heapPage(0x10);
  const p1 = heapPage(0x20);
  await withTimeline({ rels: [{ rel: REL, size: 3, pages: { 0: p0, 1: p1, 2: heapPage(0x30) } }] }, (h) => {
    const img1 = heapPage(0x41, 40, 8000); // hole [40, 8000) cut out of the record
    const img2 = heapPage(0x51, 8000, 8100); // stored whole (no hole given)
    const rec = h.feed(fpiRecord([
      { id: 0, rnode: NODE, forkNum: 0, blkno: 1, image: { page: img1, holeOffset: 40, holeLength: 7960, apply: true } },
      { id: 1, rnode: NODE, forkNum: 0, blkno: 2, image: { page: img2, holeOffset: 0, holeLength: 0, apply: true } },
    ]));
    const v = h.view();
    // xlogutils.c XLogReadBufferForRedoExtended: RestoreBlockImage, then, unless PageIsNew
    // (pd_upper == 0), PageSetLSN(page, record->EndRecPtr).
    assert.deepEqual(v.relPage(REL, 1), withLsn(img1, rec.endLsn));
    assert.deepEqual(v.relPage(REL, 2), withLsn(img2, rec.endLsn));
    assert.deepEqual(v.relPage(REL, 0), p0, 'a block the record does not reference is untouched');
    assert.equal(v.relSize(REL), 3, 'blocks inside the fork do not change its size');
    assert.equal(h.tl.lastRecordLsn, rec.endLsn);
  });
});

test('a wal_consistency_checking image (no BKPIMAGE_APPLY) is stored as the page in images mode', async () => {
  await withTimeline({ rels: [{ rel: REL, size: 2, pages: { 0: heapPage(0x10), 1: heapPage(0x20) } }] }, (h) => {
    // The image is taken after the change (the buffer is modified before XLogInsert), so it is the
    // page redo produces; redo then sets pd_lsn to the record's end (heap_xlog_insert PageSetLSN).
    const img = heapPage(0x61);
    const rec = h.feed(heapInsert(900, 1, 0, { image: { page: img, holeOffset: 40, holeLength: 7960, apply: false } },
      XLOG_HEAP_INSERT | XLR_CHECK_CONSISTENCY));
    assert.deepEqual(h.view().relPage(REL, 1), withLsn(img, rec.endLsn));
  });
  // With consistency images ignored the record is kept instead, and reading replays it with the
  // TypeScript heap redo — which refuses this hand-made record (its tuple does not fit the synthetic
  // page), proving the record, not the image, was used.
  await withTimeline({ rels: [{ rel: REL, size: 2, pages: { 0: heapPage(0x10), 1: heapPage(0x20) } }] }, (h) => {
    const img = heapPage(0x61);
    h.feed(heapInsert(900, 1, 0, { image: { page: img, holeOffset: 40, holeLength: 7960, apply: false } },
      XLOG_HEAP_INSERT | XLR_CHECK_CONSISTENCY));
    const e = errorOf(() => h.view().relPage(REL, 1));
    assert.equal(e.code, 'redo_failed', e.message);
    assert.match(e.message, /Heap\/INSERT/);
  }, { consistencyImages: 'ignore' });
});

test('an image of a new page (pd_upper = 0) keeps its pd_lsn', async () => {
  await withTimeline({ rels: [{ rel: REL, size: 1, pages: { 0: heapPage(0x10) } }] }, (h) => {
    const img = Buffer.alloc(BLCKSZ);
    setLsn(img, 0x0000_0000_00de_ad00n);
    img.fill(0xab, 100, 200); // pd_upper (bytes 14..15) stays 0: PageIsNew
    h.feed(fpiRecord([{ id: 0, rnode: NODE, forkNum: 0, blkno: 0, image: { page: img, holeOffset: 0, holeLength: 0, apply: true } }]));
    // XLogReadBufferForRedoExtended: "if (!PageIsNew(page)) PageSetLSN(...)" — a new page keeps its bytes.
    assert.deepEqual(h.view().relPage(REL, 0), img);
  });
});

// ================================================================================================
// 2. Implicit extension.

test('a record on block 5 of a 2-block fork extends it to 6 blocks with zero pages in between', async () => {
  const p0 = heapPage(0x10);
  const p1 = heapPage(0x20);
  await withTimeline({ rels: [{ rel: REL, size: 2, pages: { 0: p0, 1: p1 } }] }, (h) => {
    const img = heapPage(0x71);
    const rec = h.feed(fpiRecord([{ id: 0, rnode: NODE, forkNum: 0, blkno: 5, image: { page: img, holeOffset: 40, holeLength: 7960, apply: true } }]));
    const v = h.view();
    // XLogReadBufferExtended: a block at or past the end extends the fork one P_NEW page at a
    // time (ReadBuffer of P_NEW: all-zero pages) until the block exists.
    assert.equal(v.relSize(REL), 6);
    for (const blk of [2, 3, 4]) assert.deepEqual(v.relPage(REL, blk), ZERO, `block ${blk} is a zero page`);
    assert.deepEqual(v.relPage(REL, 5), withLsn(img, rec.endLsn));
    assert.deepEqual(v.relPage(REL, 0), p0);
    assert.deepEqual(v.relPage(REL, 1), p1);
  });
});

test('a record on a fork (or relation) that does not exist creates it in the relation directory', async () => {
  await withTimeline({ rels: [{ rel: REL, size: 1, pages: { 0: heapPage(0x10) } }] }, (h) => {
    const fsm = fork(REL, ForkNumber.fsm);
    const other: RelTag = { spcNode: SPC, dbNode: DB, relNode: 16500, forkNum: 0 };
    assert.equal(h.view().relExists(fsm), false);
    const img = filled(0x22);
    const rec = h.feed(fpiRecord([
      { id: 0, rnode: NODE, forkNum: ForkNumber.fsm, blkno: 2, image: { page: img, holeOffset: 0, holeLength: 0, apply: true } },
      { id: 1, rnode: { spcNode: SPC, dbNode: DB, relNode: 16500 }, forkNum: 0, blkno: 0, image: { page: heapPage(0x33), holeOffset: 0, holeLength: 0, apply: true } },
    ]));
    const v = h.view();
    // XLogReadBufferExtended: smgrcreate(smgr, forknum, true) when the fork is missing, then extend.
    assert.deepEqual(v.relDir(SPC, DB), new Set([
      relDirEntry(16400, ForkNumber.main), relDirEntry(16400, ForkNumber.fsm), relDirEntry(16500, ForkNumber.main),
    ]));
    assert.equal(v.relSize(fsm), 3);
    assert.deepEqual(v.relPage(fsm, 0), ZERO);
    assert.deepEqual(v.relPage(fsm, 1), ZERO);
    assert.deepEqual(v.relPage(fsm, 2), withLsn(img, rec.endLsn), 'pd_upper 0x2222 is not 0: pd_lsn is set');
    assert.equal(v.relSize(other), 1);
  });
});

// ================================================================================================
// 3. Block references without an image.

test('a block reference without an image: reading replays the record, and an error names it when that fails', async () => {
  const p0 = heapPage(0x10);
  await withTimeline({ rels: [{ rel: REL, size: 2, pages: { 0: p0, 1: heapPage(0x20) } }] }, (h) => {
    // Hand-made Heap INSERTs whose tuples the TypeScript heap redo refuses (they do not fit the
    // synthetic pages): the records are what reading uses, and the errors say which record failed.
    const ins = h.feed(heapInsert(900, 1, 0));
    const init = h.feed(heapInsert(901, 2, 0, { willInit: true }, XLOG_HEAP_INSERT | XLOG_HEAP_INIT_PAGE));
    const v = h.view();
    const e1 = errorOf(() => v.relPage(REL, 1));
    assert.equal(e1.code, 'redo_failed', e1.message);
    assert.match(e1.message, /INSERT/);
    assert.ok(e1.message.includes(formatLsn(ins.lsn)), `"${e1.message}" names the record LSN ${formatLsn(ins.lsn)}`);
    // A page the record re-initialises (BKPBLOCK_WILL_INIT) is built by heap redo from zeroes:
    // one tuple at offset 1 (xmin 901), pd_lsn = the record's end.
    const p2 = v.relPage(REL, 2);
    assert.equal(p2.readUInt16LE(12), 24 + 4, 'pd_lower: one line pointer');
    assert.equal(p2.readBigUInt64LE(0), ((init.endLsn & 0xffffffffn) << 32n) | (init.endLsn >> 32n), 'pd_lsn is the record end');
    const lp = p2.readUInt32LE(24);
    const off = lp & 0x7fff;
    assert.equal(p2.readUInt32LE(off), 901, 'xmin of the inserted tuple');
    assert.equal(v.relSize(REL), 3, 'the INIT_PAGE insert on block 2 extended the fork');
    assert.deepEqual(v.relPage(REL, 0), p0);
  });
});

// ================================================================================================
// 4. Transaction commit and abort.

/** CLOG segment 0 with pages 0 and 1 (xids 0..65535). */
const CLOG_TWO_PAGES: BaseState['slru'] = { [SlruKind.clog]: { 0: [ZERO, ZERO] } };

test('XACT COMMIT: CLOG bits of the xid and its subxacts on two pages, commit timestamp trailer, nextXid', async () => {
  await withTimeline({ slru: CLOG_TWO_PAGES }, (h) => {
    const time = 760_000_000_123_456n;
    h.feed(xactFinish(XLOG_XACT_COMMIT, 32760, { time, subxacts: [32761, 32770, 32771] }));
    const v = h.view();
    // clog.c: 2 bits per xid, 4 xids per byte, CLOG_XACTS_PER_PAGE = 32768; byte =
    // (xid % 32768) / 4, shift = (xid % 4) * 2; TRANSACTION_STATUS_COMMITTED = 1. After
    // TransactionIdSetTreeStatus every xid of the tree is committed (sub-committed is transient).
    const page0 = Buffer.alloc(BLCKSZ + 8);
    page0[8190] = 0x01 | (0x01 << 2); // 32760 (shift 0), 32761 (shift 2)
    const page1 = Buffer.alloc(BLCKSZ + 8);
    page1[0] = (0x01 << 4) | (0x01 << 6); // 32770 = page 1 xid 2 (shift 4), 32771 (shift 6)
    // The commit timestamp: 8 big-endian bytes after each page the commit touched (Strata/Neon format).
    page0.writeBigInt64BE(time, BLCKSZ);
    page1.writeBigInt64BE(time, BLCKSZ);
    assert.deepEqual(v.slruPage(SlruKind.clog, 0, 0), page0);
    assert.deepEqual(v.slruPage(SlruKind.clog, 0, 1), page1);
    // xact_redo_commit: AdvanceNextFullTransactionIdPastXid(max xid) → 32772, kept rounded up to
    // a multiple of 1024 → 33792.
    assert.equal(v.checkpoint().nextXid, 33792n);
  });
});

test('XACT ABORT: CLOG status 2 for the xid and its subxacts, no timestamp trailer', async () => {
  await withTimeline({ slru: CLOG_TWO_PAGES }, (h) => {
    h.feed(xactFinish(XLOG_XACT_ABORT, 40000, { time: 760_000_000_999_999n, subxacts: [40001] }));
    const v = h.view();
    // 40000 is on page 1 at index 40000 - 32768 = 7232 → byte 1808, shift 0; 40001 → shift 2.
    // TRANSACTION_STATUS_ABORTED = 2. Commit timestamps are only recorded for commits
    // (TransactionTreeSetCommitTsData is called from the commit paths only).
    const page1 = Buffer.alloc(BLCKSZ);
    page1[1808] = 0x02 | (0x02 << 2);
    assert.deepEqual(v.slruPage(SlruKind.clog, 0, 1), page1);
    assert.deepEqual(v.slruPage(SlruKind.clog, 0, 0), ZERO);
    // xact_redo_abort advances nextXid past 40001 → 40002, rounded up to 1024 → 40960.
    assert.equal(v.checkpoint().nextXid, 40960n);
  });
});

test('XACT COMMIT with dropped relfilenodes removes every fork of those relations', async () => {
  const other: RelTag = { spcNode: SPC, dbNode: DB, relNode: 16401, forkNum: 0 };
  await withTimeline({
    slru: CLOG_TWO_PAGES,
    rels: [
      { rel: REL, size: 1, pages: { 0: heapPage(1) } }, { rel: fork(REL, ForkNumber.fsm), size: 1, pages: { 0: filled(2) } },
      { rel: fork(REL, ForkNumber.vm), size: 1, pages: { 0: vmPage(0) } }, { rel: other, size: 1, pages: { 0: heapPage(3) } },
    ],
  }, (h) => {
    h.feed(xactFinish(XLOG_XACT_COMMIT, 1500, { time: 1n, rels: [NODE] }));
    const v = h.view();
    // xact_redo_commit → DropRelationFiles(xnodes): smgrdounlinkall removes every fork.
    assert.deepEqual(v.relDir(SPC, DB), new Set([relDirEntry(16401, ForkNumber.main)]));
    for (const f of [0, 1, 2, 3]) assert.equal(v.relExists(fork(REL, f)), false, `fork ${f} of the dropped relation`);
    assert.equal(v.relPage(other, 0)[30], 3, 'other relations keep their pages');
    // And the xid is committed: 1500 → byte 375, shift 0.
    assert.equal(v.slruPage(SlruKind.clog, 0, 0)[375], 0x01);
  });
});

// ================================================================================================
// 5. Two-phase commit.

test('PREPARE adds the two-phase state; COMMIT_PREPARED / ABORT_PREPARED set CLOG and remove it', async () => {
  await withTimeline({ slru: CLOG_TWO_PAGES }, (h) => {
    const s1 = prepareBody(2000, [2001, 2002], 'gid-one');
    const s2 = prepareBody(2100, [], 'gid-two');
    h.feed({ xid: 2000, rmid: RM_XACT_ID, info: XLOG_XACT_PREPARE, mainData: s1 });
    h.feed({ xid: 2100, rmid: RM_XACT_ID, info: XLOG_XACT_PREPARE, mainData: s2 });
    let v = h.view();
    // xact_redo PREPARE → PrepareRedoAdd: the state file body (what pg_twophase/<xid> holds before its CRC).
    assert.deepEqual(v.twoPhaseXids(), new Set([2000, 2100]));
    assert.deepEqual(v.twoPhaseState(2000), s1);
    assert.deepEqual(v.twoPhaseState(2100), s2);

    // COMMIT PREPARED is logged by another backend (xl_xid 0); the xid is in xl_xact_twophase.
    h.feed(xactFinish(XLOG_XACT_COMMIT_PREPARED, 0, { time: 5n, subxacts: [2001, 2002], twophaseXid: 2000 }));
    v = h.view();
    // 2000 → byte 500 shift 0, 2001 shift 2, 2002 shift 4, all committed (1).
    assert.equal(v.slruPage(SlruKind.clog, 0, 0)[500], 0x01 | (0x01 << 2) | (0x01 << 4));
    // xact_redo_commit for a two-phase xid: PrepareRedoRemove.
    assert.deepEqual(v.twoPhaseXids(), new Set([2100]));

    h.feed(xactFinish(XLOG_XACT_ABORT_PREPARED, 0, { time: 6n, twophaseXid: 2100 }));
    v = h.view();
    assert.equal(v.slruPage(SlruKind.clog, 0, 0)[525], 0x02, '2100 → byte 525, shift 0, aborted');
    assert.deepEqual(v.twoPhaseXids(), new Set());
  });
});

// ================================================================================================
// 6. Storage manager.

test('SMGR CREATE is idempotent: an existing fork keeps its size and pages; a new one starts empty', async () => {
  const p0 = heapPage(0x10);
  await withTimeline({ rels: [{ rel: REL, size: 2, pages: { 0: p0, 1: heapPage(0x20) } }] }, (h) => {
    // smgr_redo CREATE: smgrcreate(reln, forkNum, true) — isRedo: an existing file is left alone.
    h.feed(smgrCreate(NODE, ForkNumber.main));
    h.feed(smgrCreate(NODE, ForkNumber.vm));
    h.feed(smgrCreate(NODE, ForkNumber.vm));
    h.feed(smgrCreate({ spcNode: SPC, dbNode: DB, relNode: 16402 }, ForkNumber.main));
    const v = h.view();
    assert.equal(v.relSize(REL), 2);
    assert.deepEqual(v.relPage(REL, 0), p0);
    assert.equal(v.relSize(fork(REL, ForkNumber.vm)), 0);
    assert.deepEqual(v.relDir(SPC, DB), new Set([
      relDirEntry(16400, ForkNumber.main), relDirEntry(16400, ForkNumber.vm), relDirEntry(16402, ForkNumber.main),
    ]));
    assert.equal(v.relSize({ spcNode: SPC, dbNode: DB, relNode: 16402, forkNum: 0 }), 0);
  });
});

test('SMGR TRUNCATE HEAP|VM|FSM at heap block 32677: main cut, VM page 1 keeps bits of heap blocks 32672..32676', async () => {
  const vm = fork(REL, ForkNumber.vm);
  const fsm = fork(REL, ForkNumber.fsm);
  const fsmPages = { 0: filled(0x11), 1: filled(0x12), 2: filled(0x13) };
  await withTimeline({
    rels: [{ rel: REL, size: 40000 }, { rel: vm, size: 3, pages: { 0: vmPage(0xff), 1: vmPage(0xff), 2: vmPage(0xff) } }, { rel: fsm, size: 3, pages: fsmPages }],
  }, (h) => {
    h.feed(smgrTruncate(NODE, 32677, SMGR_TRUNCATE_HEAP | SMGR_TRUNCATE_VM | SMGR_TRUNCATE_FSM));
    const v = h.view();
    assert.equal(v.relSize(REL), 32677);
    // visibilitymap_prepare_truncate(32677): HEAPBLOCKS_PER_PAGE = (8192 - 24) * 4 = 32672;
    // truncBlock = 1, truncByte = (5 / 4) = 1, truncOffset = (5 % 4) * 2 = 2: bytes after map[1]
    // are zeroed, map[1] &= (1 << 2) - 1, and the VM keeps truncBlock + 1 = 2 pages. In recovery
    // the page is not WAL-logged, so its header (pd_lsn) is unchanged.
    assert.equal(v.relSize(vm), 2);
    const expected = vmPage(0);
    expected[24] = 0xff; // heap blocks 32672..32675
    expected[25] = 0x03; // heap block 32676 (bits 0-1) kept, 32677 (bits 2-3) onwards cleared
    assert.deepEqual(v.relPage(vm, 1), expected);
    assert.deepEqual(v.relPage(vm, 0), vmPage(0xff));
    // FreeSpaceMapPrepareTruncateRel(32677): SlotsPerFSMPage = 4069, so logical leaf page 8, slot
    // 125; its physical block (fsm_logical_to_physical) is 10, past the 3-block FSM: "nothing to
    // do; the FSM was already smaller".
    assert.equal(v.relSize(fsm), 3);
    assert.deepEqual(v.relPage(fsm, 2), fsmPages[2]);
  });
});

test('SMGR TRUNCATE VM exactly at heap block 32672: the VM keeps 1 page and nothing is rewritten', async () => {
  const vm = fork(REL, ForkNumber.vm);
  await withTimeline({ rels: [{ rel: REL, size: 40000 }, { rel: vm, size: 3, pages: { 0: vmPage(0xff), 1: vmPage(0xff), 2: vmPage(0xff) } }] }, (h) => {
    h.feed(smgrTruncate(NODE, 32672, SMGR_TRUNCATE_VM));
    const v = h.view();
    // truncBlock = 1, truncByte = 0, truncOffset = 0: no partial page; newnblocks = truncBlock = 1.
    assert.equal(v.relSize(vm), 1);
    assert.deepEqual(v.relPage(vm, 0), vmPage(0xff));
    assert.deepEqual(v.relPage(vm, 1), vmPage(0xff), 'the cut-off page was not rewritten (its stored value is the imported one)');
    assert.equal(v.relSize(REL), 40000, 'without SMGR_TRUNCATE_HEAP the main fork is not cut');
  });
});

test('SMGR TRUNCATE at heap block 10: FSM cut to its leaf page 0 (physical block 2) + 1 = 3 blocks, that page zeroed', async () => {
  const vm = fork(REL, ForkNumber.vm);
  const fsm = fork(REL, ForkNumber.fsm);
  await withTimeline({
    rels: [
      { rel: REL, size: 40 }, { rel: vm, size: 1, pages: { 0: vmPage(0xff) } },
      { rel: fsm, size: 5, pages: { 0: filled(0x11), 1: filled(0x12), 2: filled(0x13), 3: filled(0x14), 4: filled(0x15) } },
    ],
  }, (h) => {
    h.feed(smgrTruncate(NODE, 10, SMGR_TRUNCATE_HEAP | SMGR_TRUNCATE_VM | SMGR_TRUNCATE_FSM));
    const v = h.view();
    assert.equal(v.relSize(REL), 10);
    // fsm_get_location(10): leaf logical page 0, slot 10 > 0, so new_nfsmblocks =
    // fsm_logical_to_physical(page 0) + 1: root 0, level-1 page 1, leaf 2 → 3 blocks.
    assert.equal(v.relSize(fsm), 3);
    // PostgreSQL clears slots >= 10 of that leaf page (fsm_truncate_avail); a zero FSM page (no free
    // space recorded) is an equally valid hint and is what Strata stores.
    assert.deepEqual(v.relPage(fsm, 2), ZERO);
    assert.deepEqual(v.relPage(fsm, 0), filled(0x11));
    assert.deepEqual(v.relPage(fsm, 1), filled(0x12));
    // VM: truncBlock 0, truncByte 10 / 4 = 2, truncOffset (10 % 4) * 2 = 4 → map[2] &= 0x0f.
    const expected = vmPage(0);
    expected[24] = 0xff;
    expected[25] = 0xff;
    expected[26] = 0x0f;
    assert.equal(v.relSize(vm), 1);
    assert.deepEqual(v.relPage(vm, 0), expected);
  });
});

// ================================================================================================
// 7. Databases.

test('DBASE CREATE_FILE_COPY copies relmap, relation directory, sizes and pages of the template', async () => {
  const T = 1; // template database
  const tRel: RelTag = { spcNode: SPC, dbNode: T, relNode: 1259, forkNum: 0 };
  const tFsm = fork(tRel, ForkNumber.fsm);
  const tRel2: RelTag = { spcNode: SPC, dbNode: T, relNode: 2619, forkNum: 0 };
  const map = relmapFile([[1259, 1259], [1249, 1249]]);
  const pages = { 0: heapPage(0x10), 1: heapPage(0x20) };
  await withTimeline({
    rels: [{ rel: tRel, size: 2, pages }, { rel: tFsm, size: 1, pages: { 0: filled(0x44) } }, { rel: tRel2, size: 0 }],
    relmaps: [{ spcNode: SPC, dbNode: T, map }],
  }, (h) => {
    // xl_dbase_create_file_copy_rec: db_id, tablespace_id, src_db_id, src_tablespace_id.
    h.feed({ xid: 700, rmid: RM_DBASE_ID, info: XLOG_DBASE_CREATE_FILE_COPY, mainData: new W().u32(16384).u32(SPC).u32(T).u32(SPC).done() });
    // A later change to the template must not reach the copy (copydir copies the files as they are).
    h.feed(fpiRecord([{ id: 0, rnode: { spcNode: SPC, dbNode: T, relNode: 1259 }, forkNum: 0, blkno: 0, image: { page: heapPage(0x77), holeOffset: 0, holeLength: 0, apply: true } }]));
    const v = h.view();
    // dbase_redo CREATE_FILE_COPY: copydir(src_path, dst_path) — every file, pg_filenode.map included.
    assert.ok(v.dbDir().some((e) => e.spcNode === SPC && e.dbNode === 16384 && e.hasRelmap));
    assert.deepEqual(v.relDir(SPC, 16384), new Set([relDirEntry(1259, 0), relDirEntry(1259, 1), relDirEntry(2619, 0)]));
    const nRel = { ...tRel, dbNode: 16384 };
    assert.equal(v.relSize(nRel), 2);
    assert.equal(v.relSize(fork(nRel, ForkNumber.fsm)), 1);
    assert.equal(v.relSize({ ...tRel2, dbNode: 16384 }), 0);
    assert.deepEqual(v.relPage(nRel, 0), pages[0], 'byte-for-byte copy (pd_lsn included), as of the CREATE record');
    assert.deepEqual(v.relPage(nRel, 1), pages[1]);
    assert.deepEqual(v.relPage(fork(nRel, ForkNumber.fsm), 0), filled(0x44));
    assert.deepEqual(v.relmap(SPC, 16384), map);
  });
});

test('DBASE CREATE_WAL_LOG starts an empty database; DROP removes it and its relations', async () => {
  await withTimeline({
    rels: [{ rel: REL, size: 1, pages: { 0: heapPage(1) } }],
    // A stale relation directory for OID 16390 (say, from a database dropped long ago).
    relDirs: [{ spcNode: SPC, dbNode: 16390, entries: [relDirEntry(16500, 0)] }],
  }, (h) => {
    // xl_dbase_create_wal_log_rec: db_id, tablespace_id. dbase_redo only creates the directory
    // (and PG_VERSION); the contents follow as their own records.
    h.feed({ xid: 701, rmid: RM_DBASE_ID, info: XLOG_DBASE_CREATE_WAL_LOG, mainData: new W().u32(16390).u32(SPC).done() });
    let v = h.view();
    assert.deepEqual(v.dbDir().find((e) => e.dbNode === 16390), { spcNode: SPC, dbNode: 16390, hasRelmap: false });
    assert.deepEqual(v.relDir(SPC, 16390), new Set());

    // xl_dbase_drop_rec: db_id, int ntablespaces, tablespace_ids[]. dbase_redo DROP removes the
    // database directory in every listed tablespace.
    h.feed({ xid: 702, rmid: RM_DBASE_ID, info: XLOG_DBASE_DROP, mainData: new W().u32(DB).i32(1).u32(SPC).done() });
    v = h.view();
    assert.equal(v.dbDir().some((e) => e.spcNode === SPC && e.dbNode === DB), false);
    assert.equal(v.relExists(REL), false);
    assert.deepEqual(v.relDir(SPC, DB), new Set());
    assert.ok(v.dbDir().some((e) => e.dbNode === 16390), 'other databases stay');
  });
});

// ================================================================================================
// 8. Relation map.

test('RELMAP UPDATE writes the 512-byte map and marks the database as having one', async () => {
  await withTimeline({
    dbs: [{ spcNode: 1664, dbNode: 0, hasRelmap: false }, { spcNode: SPC, dbNode: DB, hasRelmap: false }],
  }, (h) => {
    const local = relmapFile([[1259, 16600]]);
    const shared = relmapFile([[1262, 1262], [2964, 2964]]);
    // xl_relmap_update: dbid, tsid, int32 nbytes, data[nbytes]; relmap_redo writes the file.
    h.feed({ xid: 0, rmid: RM_RELMAP_ID, info: XLOG_RELMAP_UPDATE, mainData: new W().u32(DB).u32(SPC).i32(512).raw(local).done() });
    h.feed({ xid: 0, rmid: RM_RELMAP_ID, info: XLOG_RELMAP_UPDATE, mainData: new W().u32(0).u32(1664).i32(512).raw(shared).done() });
    const v = h.view();
    assert.deepEqual(v.relmap(SPC, DB), local);
    assert.deepEqual(v.relmap(1664, 0), shared);
    assert.deepEqual(v.dbDir(), [{ spcNode: SPC, dbNode: DB, hasRelmap: true }, { spcNode: 1664, dbNode: 0, hasRelmap: true }]);
  });
});

// ================================================================================================
// 9. CLOG pages.

test('CLOG ZEROPAGE zeroes the page, zero-fills a gap and creates new segments', async () => {
  await withTimeline({ slru: { [SlruKind.clog]: { 0: [filled(0x55)] } } }, (h) => {
    // clog_redo ZEROPAGE: ZeroCLOGPage(pageno) — the page becomes all zeros. Pages never written
    // read back as zeros (SLRU files have holes there).
    h.feed(pagenoRecord(RM_CLOG_ID, CLOG_ZEROPAGE, 3));
    h.feed(pagenoRecord(RM_CLOG_ID, CLOG_ZEROPAGE, 0));
    h.feed(pagenoRecord(RM_CLOG_ID, CLOG_ZEROPAGE, 33)); // segment 1 (32 pages per segment), page 1
    const v = h.view();
    assert.deepEqual(v.slruSegments(SlruKind.clog), new Set([0, 1]));
    assert.equal(v.slruSegmentSize(SlruKind.clog, 0), 4);
    for (const blk of [0, 1, 2, 3]) assert.deepEqual(v.slruPage(SlruKind.clog, 0, blk), ZERO, `segment 0 page ${blk}`);
    assert.equal(v.slruSegmentSize(SlruKind.clog, 1), 2);
    assert.deepEqual(v.slruPage(SlruKind.clog, 1, 0), ZERO);
    assert.deepEqual(v.slruPage(SlruKind.clog, 1, 1), ZERO);
  });
});

test('CLOG TRUNCATE drops whole segments before the cutoff and moves oldestXid forward only', async () => {
  await withTimeline({
    slru: { [SlruKind.clog]: { 0: [ZERO], 1: [ZERO], 2: [ZERO], 3: [ZERO] } },
    checkpoint: { oldestXid: 1000, oldestXidDb: 1, nextXid: 3_000_000n },
  }, (h) => {
    // xl_clog_truncate: int pageno, TransactionId oldestXact, Oid oldestXactDb.
    const oldest = 70 * 32768 + 5;
    h.feed({ xid: 0, rmid: RM_CLOG_ID, info: CLOG_TRUNCATE, mainData: new W().i32(70).u32(oldest).u32(DB).done() });
    let v = h.view();
    // SimpleLruTruncate(70): cutoff rounded down to a segment start, 64; a segment goes when its
    // first and last pages both precede it (SlruMayDeleteSegment): segments 0 (0..31) and
    // 1 (32..63); segment 2 holds page 64 itself.
    assert.deepEqual(v.slruSegments(SlruKind.clog), new Set([2, 3]));
    // The primary calls SetTransactionIdLimit(frozenXID, oldestxid_datoid) right after
    // TruncateCLOG (vac_truncate_clog); a basebackup at any LSN needs that horizon.
    let cp = v.checkpoint();
    assert.equal(cp.oldestXid, oldest);
    assert.equal(cp.oldestXidDb, DB);
    assert.equal(cp.nextXid, 3_000_000n);
    // An older horizon does not move it back.
    h.feed({ xid: 0, rmid: RM_CLOG_ID, info: CLOG_TRUNCATE, mainData: new W().i32(70).u32(2_000_000).u32(7).done() });
    v = h.view();
    cp = v.checkpoint();
    assert.equal(cp.oldestXid, oldest);
    assert.equal(cp.oldestXidDb, DB);
    assert.deepEqual(v.slruSegments(SlruKind.clog), new Set([2, 3]));
  });
});

// ================================================================================================
// 10. MultiXacts.

/** Offset of multixact `mid`'s entry in its offsets page: 4 bytes per multixact, 2048 per page. */
const offsetEntry = (page: Buffer, mid: number): number => page.readUInt32LE((mid % 2048) * 4);

test('MULTIXACT CREATE_ID: offsets of mid and mid+1 on one page, members, nextMulti / nextMultiOffset, nextXid', async () => {
  await withTimeline({
    slru: { [SlruKind.multixactOffsets]: { 0: [ZERO] }, [SlruKind.multixactMembers]: { 0: [ZERO] } },
    checkpoint: { nextMulti: 5, nextMultiOffset: 10 },
  }, (h) => {
    h.feed(multixactCreate(5, 10, [{ xid: 70000, status: 4 }, { xid: 70001, status: 5 }]));
    const v = h.view();
    // RecordNewMultiXact (15.18): the offset of `multi` and, in the same page, of multi + 1
    // (= offset + nmembers).
    const off = v.slruPage(SlruKind.multixactOffsets, 0, 0);
    assert.equal(offsetEntry(off, 5), 10);
    assert.equal(offsetEntry(off, 6), 12);
    // Members: groups of 4 (4 flag bytes, then 4 xids: 20 bytes); offset 10 → group 2 (bytes
    // 40..59), slot 2: flag byte 42, xid at 40 + 4 + 8 = 52; offset 11 → slot 3: flag 43, xid 56.
    const mem = v.slruPage(SlruKind.multixactMembers, 0, 0);
    assert.equal(mem[42], 4);
    assert.equal(mem[43], 5);
    assert.equal(mem.readUInt32LE(52), 70000);
    assert.equal(mem.readUInt32LE(56), 70001);
    // multixact_redo: MultiXactAdvanceNextMXact(mid + 1, moff + nmembers), and nextXid past the
    // largest member xid (70001 → 70002, rounded up to 1024 → 70656).
    const cp = v.checkpoint();
    assert.equal(cp.nextMulti, 6);
    assert.equal(cp.nextMultiOffset, 12);
    assert.equal(cp.nextXid, 70656n);
  });
});

test('MULTIXACT ZERO_OFF_PAGE / ZERO_MEM_PAGE, then CREATE_ID 2047 writes the next offset on page 1', async () => {
  await withTimeline({
    slru: { [SlruKind.multixactOffsets]: { 0: [ZERO] }, [SlruKind.multixactMembers]: { 0: [ZERO] } },
    checkpoint: { nextMulti: 2047, nextMultiOffset: 20 },
  }, (h) => {
    // 15.18 GetNewMultiXactId → ExtendMultiXactOffset(result + 1): page 1 is zeroed (and logged)
    // before multixact 2047 is created.
    h.feed(pagenoRecord(RM_MULTIXACT_ID, XLOG_MULTIXACT_ZERO_OFF_PAGE, 1));
    h.feed(pagenoRecord(RM_MULTIXACT_ID, XLOG_MULTIXACT_ZERO_MEM_PAGE, 40)); // members segment 1, page 8
    h.feed(multixactCreate(2047, 20, [{ xid: 900, status: 0 }]));
    const v = h.view();
    assert.equal(v.slruSegmentSize(SlruKind.multixactOffsets, 0), 2);
    assert.deepEqual(v.slruSegments(SlruKind.multixactMembers), new Set([0, 1]));
    assert.equal(v.slruSegmentSize(SlruKind.multixactMembers, 1), 9);
    for (let b = 0; b < 9; b++) assert.deepEqual(v.slruPage(SlruKind.multixactMembers, 1, b), ZERO);
    // 2047 is the last entry of page 0 (byte 8188); 2048 is entry 0 of page 1.
    assert.equal(offsetEntry(v.slruPage(SlruKind.multixactOffsets, 0, 0), 2047), 20);
    assert.equal(offsetEntry(v.slruPage(SlruKind.multixactOffsets, 0, 1), 2048), 21);
    assert.equal(v.checkpoint().nextMulti, 2048);
    assert.equal(v.checkpoint().nextMultiOffset, 21);
  });
});

test('MULTIXACT CREATE_ID 2047 when offsets page 1 does not exist: recovery initialises it (PostgreSQL 15.18)', async () => {
  await withTimeline({
    slru: { [SlruKind.multixactOffsets]: { 0: [ZERO] }, [SlruKind.multixactMembers]: { 0: [ZERO] } },
    checkpoint: { nextMulti: 2047, nextMultiOffset: 20 },
  }, (h) => {
    // WAL written by 15.0..15.15 (before "Set next multixid's offset when creating a new
    // multixid", 15.16) has no ZERO_OFF_PAGE for page 1 before this record. RecordNewMultiXact in
    // recovery (15.18): "the next page might not be initialized yet. Initialize it now." —
    // SimpleLruZeroPage(next_pageno), then the next multixact's offset (moff + nmembers = 21) is
    // written at its entry 0; the later ZERO_OFF_PAGE for that page is skipped
    // (pre_initialized_offsets_page), so the offset survives.
    h.feed(multixactCreate(2047, 20, [{ xid: 900, status: 0 }]));
    const v = h.view();
    assert.equal(offsetEntry(v.slruPage(SlruKind.multixactOffsets, 0, 0), 2047), 20);
    assert.equal(v.slruSegmentSize(SlruKind.multixactOffsets, 0), 2, 'offsets page 1 exists after the record');
    assert.equal(offsetEntry(v.slruPage(SlruKind.multixactOffsets, 0, 1), 2048), 21);
  });
});

test('MULTIXACT CREATE_ID with members spanning two members pages (1636 members per page)', async () => {
  await withTimeline({
    slru: { [SlruKind.multixactOffsets]: { 0: [ZERO] }, [SlruKind.multixactMembers]: { 0: [ZERO, ZERO] } },
    checkpoint: { nextMulti: 10, nextMultiOffset: 1634 },
  }, (h) => {
    const members = [{ xid: 5001, status: 1 }, { xid: 5002, status: 2 }, { xid: 5003, status: 3 }, { xid: 5004, status: 5 }];
    h.feed(multixactCreate(10, 1634, members));
    const v = h.view();
    // MULTIXACT_MEMBERS_PER_PAGE = (8192 / 20) * 4 = 409 * 4 = 1636.
    // Offsets 1634, 1635 → page 0, group 408 (bytes 8160..8179), slots 2 and 3:
    // flags at 8162 / 8163, xids at 8160 + 4 + 8 = 8172 and 8176.
    const p0 = v.slruPage(SlruKind.multixactMembers, 0, 0);
    assert.deepEqual([p0[8162], p0[8163], p0.readUInt32LE(8172), p0.readUInt32LE(8176)], [1, 2, 5001, 5002]);
    // Offsets 1636, 1637 → page 1, group 0, slots 0 and 1: flags at 0 / 1, xids at 4 and 8.
    const p1 = v.slruPage(SlruKind.multixactMembers, 0, 1);
    assert.deepEqual([p1[0], p1[1], p1.readUInt32LE(4), p1.readUInt32LE(8)], [3, 5, 5003, 5004]);
    // Nothing else was written on either page.
    const rest0 = Buffer.from(p0);
    rest0.fill(0, 8160, 8180);
    assert.deepEqual(rest0, ZERO);
    const rest1 = Buffer.from(p1);
    rest1.fill(0, 0, 20);
    assert.deepEqual(rest1, ZERO);
    const off = v.slruPage(SlruKind.multixactOffsets, 0, 0);
    assert.equal(offsetEntry(off, 10), 1634);
    assert.equal(offsetEntry(off, 11), 1638);
    assert.equal(v.checkpoint().nextMulti, 11);
    assert.equal(v.checkpoint().nextMultiOffset, 1638);
  });
});

test('MULTIXACT TRUNCATE_ID drops members and offsets segments and sets oldestMulti', async () => {
  await withTimeline({
    slru: {
      [SlruKind.multixactOffsets]: { 0: [ZERO], 1: [ZERO], 2: [ZERO] },
      [SlruKind.multixactMembers]: { 0: [ZERO], 1: [ZERO], 2: [ZERO], 3: [ZERO] },
    },
    checkpoint: { oldestMulti: 1, oldestMultiDb: 1, nextMulti: 140000, nextMultiOffset: 200000 },
  }, (h) => {
    // xl_multixact_truncate: oldestMultiDB, startTruncOff, endTruncOff, startTruncMemb, endTruncMemb.
    const endOff = 2 * 65536 + 10; // offsets: 2048 per page, 32 pages per segment = 65536 per segment
    const endMemb = 2 * 52352 + 5; // members: 1636 per page → 52352 per segment
    h.feed({
      xid: 0, rmid: RM_MULTIXACT_ID, info: XLOG_MULTIXACT_TRUNCATE_ID,
      mainData: new W().u32(DB).u32(1).u32(endOff).u32(100).u32(endMemb).done(),
    });
    const v = h.view();
    // PerformMembersTruncation: segments from start's (0) up to, not including, end's (2).
    assert.deepEqual(v.slruSegments(SlruKind.multixactMembers), new Set([2, 3]));
    // PerformOffsetsTruncation: SimpleLruTruncate(page of PreviousMultiXactId(endOff) = 131081 / 2048
    // = 64): segments 0 and 1 precede it.
    assert.deepEqual(v.slruSegments(SlruKind.multixactOffsets), new Set([2]));
    // SetMultiXactIdLimit(endTruncOff, oldestMultiDB).
    const cp = v.checkpoint();
    assert.equal(cp.oldestMulti, endOff);
    assert.equal(cp.oldestMultiDb, DB);
    assert.equal(cp.nextMulti, 140000);
  });
});

// ================================================================================================
// 11. XLOG counters.

test('XLOG NEXTOID, CHECKPOINT_ONLINE (nextXid never moves back) and CHECKPOINT_SHUTDOWN (exact nextOid)', async () => {
  await withTimeline({ checkpoint: { nextXid: 5120n, nextOid: 20000 } }, (h) => {
    const checkpointRecord = (info: number, c: Partial<CheckPoint>): RecordSpec => ({
      xid: 0, rmid: RM_XLOG_ID, info, mainData: Buffer.from(encodeCheckPoint({ ...BASE_CHECKPOINT, ...c })),
    });
    // xlog_redo NEXTOID: ShmemVariableCache->nextOid = the record's value.
    h.feed({ xid: 0, rmid: RM_XLOG_ID, info: XLOG_NEXTOID, mainData: new W().u32(30000).done() });
    assert.equal(h.view().checkpoint().nextOid, 30000);
    // xlog_redo CHECKPOINT_ONLINE: nextXid only if FullTransactionIdPrecedes(current, record's).
    h.feed(checkpointRecord(XLOG_CHECKPOINT_ONLINE, { nextXid: 4000n, nextOid: 30000 }));
    assert.equal(h.view().checkpoint().nextXid, 5120n);
    h.feed(checkpointRecord(XLOG_CHECKPOINT_ONLINE, { nextXid: 9000n, nextOid: 30000 }));
    assert.equal(h.view().checkpoint().nextXid, 9000n);
    // xlog_redo CHECKPOINT_SHUTDOWN: nextOid = checkPoint.nextOid, exactly (even if lower).
    h.feed(checkpointRecord(XLOG_CHECKPOINT_SHUTDOWN, { nextXid: 9500n, nextOid: 24576 }));
    const cp = h.view().checkpoint();
    assert.equal(cp.nextOid, 24576);
    assert.equal(cp.nextXid, 9500n);
  });
});

// ================================================================================================
// 12. Visibility-map bits cleared by heap records.

test('heap INSERT / LOCK / UPDATE clear the visibility-map bits of their heap blocks on the right VM pages', async () => {
  const vm = fork(REL, ForkNumber.vm);
  await withTimeline({
    rels: [{ rel: REL, size: 40000 }, { rel: vm, size: 2, pages: { 0: vmPage(0xff), 1: vmPage(0xff) } }],
  }, (h) => {
    // heap_xlog_insert with XLH_INSERT_ALL_VISIBLE_CLEARED: visibilitymap_clear(blkno,
    // VISIBILITYMAP_VALID_BITS). Heap block 32673 → VM page 1 (32672 per page), index 1 → map
    // byte 0, bits 2-3.
    h.feed(heapInsert(900, 32673, XLH_INSERT_ALL_VISIBLE_CLEARED));
    let v = h.view();
    const page1 = vmPage(0xff);
    page1[24] = 0xff & ~0x0c;
    assert.deepEqual(v.relPage(vm, 1), page1);
    assert.deepEqual(v.relPage(vm, 0), vmPage(0xff), 'VM page 0 untouched');

    // heap_xlog_lock with XLH_LOCK_ALL_FROZEN_CLEARED: only VISIBILITYMAP_ALL_FROZEN (the high bit
    // of the pair). Heap block 32674 → page 1, index 2 → bits 4-5, frozen = bit 5 (0x20).
    // xl_heap_lock: locking_xid u32, offnum u16, infobits_set u8, flags u8.
    h.feed({
      xid: 901, rmid: RM_HEAP_ID, info: XLOG_HEAP_LOCK,
      blocks: [{ id: 0, rnode: NODE, forkNum: 0, blkno: 32674 }],
      mainData: new W().u32(901).u16(1).u8(0).u8(XLH_LOCK_ALL_FROZEN_CLEARED).done(),
    });
    v = h.view();
    page1[24] = page1[24]! & ~0x20;
    assert.deepEqual(v.relPage(vm, 1), page1);

    // heap_xlog_update: block 0 is the new page, block 1 the old one; each flag clears its page's
    // bits. Old heap block 5 → VM page 0, byte 1, bits 2-3; new heap block 32680 → VM page 1,
    // index 8 → byte 2, bits 0-1. xl_heap_update: old_xmax, old_offnum, old_infobits_set, flags,
    // new_xmax, new_offnum (14 bytes).
    h.feed({
      xid: 902, rmid: RM_HEAP_ID, info: XLOG_HEAP_UPDATE,
      blocks: [
        { id: 0, rnode: NODE, forkNum: 0, blkno: 32680, data: Uint8Array.from([9, 9, 9, 9, 9, 9]) },
        { id: 1, rnode: NODE, forkNum: 0, blkno: 5 },
      ],
      mainData: new W().u32(902).u16(3).u8(0).u8(XLH_UPDATE_OLD_ALL_VISIBLE_CLEARED | XLH_UPDATE_NEW_ALL_VISIBLE_CLEARED).u32(0).u16(4).done(),
    });
    v = h.view();
    const page0 = vmPage(0xff);
    page0[25] = 0xff & ~0x0c;
    page1[26] = 0xff & ~0x03;
    assert.deepEqual(v.relPage(vm, 0), page0);
    assert.deepEqual(v.relPage(vm, 1), page1);
  });
});

// ================================================================================================
// 13. Atomicity.

test('a record that fails half-way changes nothing, and the next valid record ingests fine', async () => {
  await withTimeline({
    slru: { [SlruKind.clog]: { 0: [ZERO] }, [SlruKind.multixactOffsets]: { 0: [ZERO] }, [SlruKind.multixactMembers]: { 0: [ZERO] } },
    checkpoint: { nextMulti: 5, nextMultiOffset: 10 },
  }, (h) => {
    const before = h.tl.lastRecordLsn;
    const cpBefore = h.view().checkpoint();

    // CREATE_ID of multixact 3000: its offsets page (1) was never created → IngestError.
    const bad1 = h.build(multixactCreate(3000, 10, [{ xid: 70000, status: 0 }]));
    const e1 = errorOf(() => h.ingest.ingest(bad1));
    assert.ok(e1 instanceof IngestError, `expected an IngestError, got ${e1.name}: ${e1.message}`);
    assert.ok(e1.message.includes('CREATE_ID') && e1.message.includes(formatLsn(bad1.lsn)), e1.message);

    // CREATE_ID of multixact 5 with members at offset 1636 (members page 1, missing): the
    // offsets of 5 and 6 are written in the record before it fails, and must be rolled back.
    const bad2 = h.build(multixactCreate(5, 1636, [{ xid: 80000, status: 0 }]));
    assert.ok(errorOf(() => h.ingest.ingest(bad2)) instanceof IngestError);

    // COMMIT of 32760 (CLOG page 0, exists) with subxact 32770 (page 1, missing): page 0 and
    // nextXid are changed in the record before it fails.
    const bad3 = h.build(xactFinish(XLOG_XACT_COMMIT, 32760, { time: 1n, subxacts: [32770] }));
    assert.ok(errorOf(() => h.ingest.ingest(bad3)) instanceof IngestError);

    assert.equal(h.tl.lastRecordLsn, before);
    const v = h.view();
    assert.deepEqual(v.checkpoint(), cpBefore);
    assert.deepEqual(v.slruPage(SlruKind.multixactOffsets, 0, 0), ZERO);
    assert.deepEqual(v.slruPage(SlruKind.multixactMembers, 0, 0), ZERO);
    assert.deepEqual(v.slruPage(SlruKind.clog, 0, 0), ZERO);
    assert.equal(v.slruSegmentSize(SlruKind.multixactOffsets, 0), 1);

    // The failed records left nothing behind: a valid record at the same position ingests.
    const ok = h.feed(xactFinish(XLOG_XACT_COMMIT, 32760, { time: 2n }));
    assert.equal(h.tl.lastRecordLsn, ok.endLsn);
    const after = h.view();
    assert.equal(after.slruPage(SlruKind.clog, 0, 0)[8190], 0x01);
    assert.equal(after.checkpoint().nextXid, 32768n, '32760 + 1 = 32761, rounded up to 1024 → 32768');
    assert.equal(after.checkpoint().nextMulti, 5, 'the failed CREATE_IDs did not move nextMulti');
  });
});

// ================================================================================================
// 14. Malformed bodies.

test('a malformed body (truncated main data) is an IngestError naming the record type and LSN', async () => {
  await withTimeline({ rels: [{ rel: REL, size: 4 }] }, (h) => {
    const before = h.tl.lastRecordLsn;
    // xl_smgr_truncate is 20 bytes; 10 are given.
    const bad = h.build({ xid: 0, rmid: RM_SMGR_ID, info: XLOG_SMGR_TRUNCATE, mainData: new W().u32(1).u32(SPC).u16(DB).done() });
    const e = errorOf(() => h.ingest.ingest(bad));
    assert.ok(e instanceof IngestError, `expected an IngestError (code ingest_failed), got ${e.name} (code ${e.code}): ${e.message}`);
    assert.equal(e.code, 'ingest_failed');
    assert.match(e.message, /TRUNCATE/);
    assert.ok(e.message.includes(formatLsn(bad.lsn)), e.message);
    assert.equal(h.tl.lastRecordLsn, before);
    assert.equal(h.view().relSize(REL), 4);
  });
});

test('a COMMIT whose subxact count runs past the main data is an IngestError; the next record ingests', async () => {
  await withTimeline({ slru: CLOG_TWO_PAGES }, (h) => {
    // xinfo says subxacts follow; nsubxacts = 5 but only 2 xids are present.
    const main = new W().u64(1n).u32(XINFO_HAS_SUBXACTS).i32(5).u32(1001).u32(1002).done();
    const bad = h.build({ xid: 1000, rmid: RM_XACT_ID, info: XLOG_XACT_COMMIT | XLOG_XACT_HAS_INFO, mainData: main });
    const e = errorOf(() => h.ingest.ingest(bad));
    assert.ok(e instanceof IngestError, `expected an IngestError (code ingest_failed), got ${e.name} (code ${e.code}): ${e.message}`);
    assert.match(e.message, /COMMIT/);
    assert.ok(e.message.includes(formatLsn(bad.lsn)), e.message);
    h.feed(xactFinish(XLOG_XACT_COMMIT, 1000, { time: 1n }));
    assert.equal(h.view().slruPage(SlruKind.clog, 0, 0)[250], 0x01, '1000 → byte 250, shift 0');
  });
});
