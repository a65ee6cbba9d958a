/**
 * A naive reference model of the storage engine, for the randomized and crash tests.
 *
 * The model keeps every write of every timeline in a plain array and answers "value of key K at
 * LSN L on timeline T" by brute force: gather the versions visible on T (its own writes up to L,
 * then its ancestor's up to the branch point, recursively), take the newest image, and apply the
 * records above it in LSN order. The record kinds used (multixact offset writes, CLOG status
 * bits) are re-implemented here from PostgreSQL's rules, independently of src/storage/redo.ts, so
 * the model never calls the code under test.
 */
import { SlruKind, keyFields, slruBlockKey, relBlockKey, relBlockOfKey, type Key } from '../../src/storage/key.ts';
import { encodeRecord } from '../../src/postgres/walwriter.ts';
import { rng } from '../unit/test-compressors.ts';
import type { Value } from '../../src/storage/value.ts';

export interface Rand {
  next(): number;
  int(n: number): number;
  pick<T>(items: readonly T[]): T;
}

/** The tests' seeded PRNG (rng, mulberry32) with the helpers the model's workloads use. */
export function prng(seed: number): Rand {
  const next = rng(seed);
  return {
    next,
    int: (n: number) => Math.floor(next() * n),
    pick: <T>(items: readonly T[]): T => items[Math.floor(next() * items.length)]!,
  };
}

export interface ModelWrite {
  lsn: bigint;
  key: Key;
  value: Value;
  /** For a will-init WAL record: the page it produces, computed by the model. */
  page?: Buffer;
}

const RM_XLOG_ID = 0;
const XLOG_FPI = 0xb0;

/**
 * A PostgreSQL XLOG FPI record carrying a full-page image (to apply) of a relation block, and the
 * page redo must produce from it: the image, with the hole zeroed, and pd_lsn set to the record's
 * end LSN (PostgreSQL leaves pd_lsn alone on a new page, pd_upper = 0).
 */
export function modelFpiRecord(rand: Rand, key: Key, recordLsn: bigint, versionLsn: bigint): { value: Value; page: Buffer } {
  const src = modelImage(rand);
  const isNew = rand.next() < 0.1; // PageIsNew: pd_upper = 0, pd_lsn is left alone
  const withHole = !isNew && rand.next() < 0.6;
  const holeOffset = withHole ? 24 + 8 * rand.int(100) : 0;
  const holeLength = withHole ? 8 * (1 + rand.int(500)) : 0;
  // A standard page header: the hole PostgreSQL leaves out is exactly [pd_lower, pd_upper).
  const lower = withHole ? holeOffset : 24 + 8 * rand.int(100);
  src.writeUInt16LE(0, 10); // pd_flags
  src.writeUInt16LE(lower, 12);
  src.writeUInt16LE(isNew ? 0 : withHole ? holeOffset + holeLength : lower, 14);
  src.writeUInt16LE(8192, 16);
  src.writeUInt16LE(8192 | 4, 18);
  if (withHole) src.fill(0, holeOffset, holeOffset + holeLength);
  const { rel, blockNumber } = relBlockOfKey(key);
  const record = encodeRecord({
    xid: 0, rmid: RM_XLOG_ID, info: XLOG_FPI,
    blocks: [{ id: 0, rnode: { spcNode: rel.spcNode, dbNode: rel.dbNode, relNode: rel.relNode }, forkNum: rel.forkNum, blkno: blockNumber,
      image: { page: src, holeOffset, holeLength, apply: true } }],
  }, recordLsn);
  const page = Buffer.from(src);
  if (page.readUInt16LE(14) !== 0) {
    page.writeUInt32LE(Number(versionLsn >> 32n), 0);
    page.writeUInt32LE(Number(versionLsn & 0xffffffffn), 4);
  }
  return { value: { kind: 'pgRecord', willInit: true, recordLsn, record: Buffer.from(record) }, page };
}

const PAGE = 8192;

/** Keys of the model's workload: relation blocks (images only) and SLRU pages (records too). */
export function modelKeys(): { imageKeys: Key[]; recordKeys: Key[] } {
  const imageKeys: Key[] = [];
  for (let rel = 0; rel < 3; rel++) {
    for (let blk = 0; blk < 12; blk++) {
      imageKeys.push(relBlockKey({ spcNode: 1663, dbNode: 5, relNode: 16384 + rel, forkNum: rel === 2 ? 1 : 0 }, blk * 7));
    }
  }
  const recordKeys: Key[] = [];
  for (let p = 0; p < 6; p++) recordKeys.push(slruBlockKey(SlruKind.multixactOffsets, p >> 1, (p * 5) % 32));
  for (let p = 0; p < 6; p++) recordKeys.push(slruBlockKey(SlruKind.clog, p, (p * 3) % 32));
  return { imageKeys, recordKeys };
}

/** A page image whose bytes depend on `seed` (cheap: a pattern plus a few random words). */
export function modelImage(rand: Rand): Buffer {
  const page = Buffer.alloc(PAGE);
  const word = (rand.int(0xffffffff) >>> 0) | 1;
  for (let i = 0; i < PAGE; i += 4) page.writeUInt32LE((word * (i + 1)) >>> 0, i);
  for (let j = 0; j < 8; j++) page.writeUInt32LE(rand.int(0xffffffff) >>> 0, rand.int(PAGE / 4) * 4);
  return page;
}

/** A record for `key` (an SLRU page key from modelKeys). */
export function modelRecord(rand: Rand, key: Key): Value {
  const f = keyFields(key);
  const pageNo = f.f4 * 32 + f.f6;
  if (f.f2 === SlruKind.multixactOffsets) {
    return { kind: 'multixactOffset', multi: pageNo * 2048 + rand.int(2048), offset: rand.int(0xffffffff) >>> 0 };
  }
  const xids: number[] = [];
  const n = 1 + rand.int(4);
  for (let i = 0; i < n; i++) xids.push(pageNo * 32768 + rand.int(32768));
  return {
    kind: 'clogSetStatus',
    status: 1 + rand.int(3),
    xids,
    timestampUs: rand.int(3) === 0 ? null : BigInt(rand.int(1_000_000_000)) * 1000n,
  };
}

/** Applies a record the way PostgreSQL's SLRU code lays the bits out (written from the rules). */
export function applyModelRecord(base: Buffer, value: Value): Buffer {
  if (value.kind === 'multixactOffset') {
    const page = Buffer.from(base);
    page.writeUInt32LE(value.offset, (value.multi % 2048) * 4);
    return page;
  }
  if (value.kind === 'clogSetStatus') {
    const page = Buffer.alloc(value.timestampUs === null ? base.length : PAGE + 8);
    base.copy(page, 0, 0, value.timestampUs === null ? base.length : PAGE);
    for (const xid of value.xids) {
      const inPage = xid % 32768;
      const byte = inPage >> 2;
      const shift = (inPage & 3) * 2;
      const current = (page[byte]! >> shift) & 3;
      // PostgreSQL's recovery never turns a committed xid back into sub-committed.
      if (value.status === 3 && current === 1) continue;
      page[byte] = (page[byte]! & ~(3 << shift)) | (value.status << shift);
    }
    if (value.timestampUs !== null) page.writeBigInt64BE(value.timestampUs, PAGE);
    return page;
  }
  throw new Error(`model cannot apply ${value.kind}`);
}

export class ModelTimeline {
  readonly id: string;
  readonly ancestor: ModelTimeline | null;
  readonly ancestorLsn: bigint;
  readonly writes: ModelWrite[] = [];
  /** Record boundaries: end LSN → start LSN. */
  readonly records: { endLsn: bigint; startLsn: bigint | null }[] = [];
  lastLsn: bigint;
  prevLsn: bigint | null;
  gcCutoff: bigint;

  constructor(opts: { id: string; ancestor: ModelTimeline | null; ancestorLsn: bigint; lastLsn: bigint; prevLsn: bigint | null; gcCutoff: bigint }) {
    this.id = opts.id;
    this.ancestor = opts.ancestor;
    this.ancestorLsn = opts.ancestorLsn;
    this.lastLsn = opts.lastLsn;
    this.prevLsn = opts.prevLsn;
    this.gcCutoff = opts.gcCutoff;
  }

  /** Versions of `key` visible at `lsn`, oldest first. */
  versions(key: Key, lsn: bigint): ModelWrite[] {
    const own = this.writes.filter((w) => w.key === key && w.lsn <= lsn);
    if (this.ancestor === null) return own;
    const limit = lsn < this.ancestorLsn ? lsn : this.ancestorLsn;
    return [...this.ancestor.versions(key, limit), ...own];
  }

  /** The expected value, or null when the key has no version at or below `lsn`. */
  expected(key: Key, lsn: bigint): Buffer | null {
    const versions = this.versions(key, lsn);
    let start = -1;
    for (let i = versions.length - 1; i >= 0; i--) {
      if (versions[i]!.value.kind === 'image' || versions[i]!.page !== undefined) {
        start = i;
        break;
      }
    }
    if (start < 0) {
      if (versions.length > 0) throw new Error('model workload wrote a record with no image below it');
      return null;
    }
    const base = versions[start]!;
    let page = base.page ?? (base.value as { image: Buffer }).image;
    for (let i = start + 1; i < versions.length; i++) page = applyModelRecord(page, versions[i]!.value);
    return page;
  }

  /** prev_record_lsn for a position that is a record end (null when unknown). */
  prevAt(endLsn: bigint): bigint | null {
    for (let i = this.records.length - 1; i >= 0; i--) if (this.records[i]!.endLsn === endLsn) return this.records[i]!.startLsn;
    return null;
  }

  /** Drops writes above `lsn` (they were not durable); returns them to be ingested again. */
  truncateAfter(lsn: bigint): { writes: ModelWrite[]; records: { endLsn: bigint; startLsn: bigint | null }[] } {
    const writes = this.writes.filter((w) => w.lsn > lsn);
    const records = this.records.filter((r) => r.endLsn > lsn);
    this.writes.splice(0, this.writes.length, ...this.writes.filter((w) => w.lsn <= lsn));
    this.records.splice(0, this.records.length, ...this.records.filter((r) => r.endLsn <= lsn));
    return { writes, records };
  }
}

/**
 * The crash test's workload: record i is a pure function of (seed, i), so a process that restarts
 * at any record boundary can continue the same stream, and the checker can recompute it.
 */
export const CRASH_BASE_LSN = 0x100_0000n;
export const CRASH_TENANT_ID = '11111111111111111111111111111111';
export const CRASH_TIMELINE_ID = '22222222222222222222222222222222';
export const CRASH_BRANCH_ID = '33333333333333333333333333333333';
/** The crash child branches when it ingests record BRANCH_AT_RECORD, at the end of BRANCH_POINT_RECORD. */
export const BRANCH_AT_RECORD = 400;
export const BRANCH_POINT_RECORD = 250;
export const CRASH_RECORD_BYTES = 64n;

export function crashRecordEnd(i: number): bigint {
  return CRASH_BASE_LSN + CRASH_RECORD_BYTES * BigInt(i + 1);
}

export function crashRecordIndexOfEnd(endLsn: bigint): number {
  return Number((endLsn - CRASH_BASE_LSN) / CRASH_RECORD_BYTES) - 1;
}

export function crashRecord(seed: number, i: number): { endLsn: bigint; startLsn: bigint; puts: { key: Key; value: Value }[] } {
  const { imageKeys, recordKeys } = modelKeys();
  const all = [...imageKeys, ...recordKeys];
  const rand = prng((seed ^ Math.imul(i + 1, 0x9e3779b1)) >>> 0);
  const endLsn = crashRecordEnd(i);
  const startLsn = endLsn - CRASH_RECORD_BYTES;
  if (i < all.length) return { endLsn, startLsn, puts: [{ key: all[i]!, value: { kind: 'image', image: modelImage(rand) } }] };
  const puts: { key: Key; value: Value }[] = [];
  const used = new Set<Key>();
  const n = 1 + rand.int(3);
  for (let j = 0; j < n; j++) {
    const key = rand.next() < 0.5 ? rand.pick(imageKeys) : rand.pick(recordKeys);
    if (used.has(key)) continue;
    used.add(key);
    const isRecordKey = recordKeys.includes(key);
    puts.push({ key, value: isRecordKey && rand.next() < 0.85 ? modelRecord(rand, key) : { kind: 'image', image: modelImage(rand) } });
  }
  return { endLsn, startLsn, puts };
}
