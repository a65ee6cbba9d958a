/**
 * The write side of the data-directory mapping: turns "this record creates relation X, extends it
 * to 10 blocks, drops database Y, prepares xid Z" into key/value puts at the record's end LSN.
 *
 * One DatadirWriter per timeline, owned by that timeline's single WAL ingest. It keeps decoded
 * copies of the directory and size values it has read (relation sizes and directories, the
 * database directory, SLRU directories and segment sizes, the two-phase directory, and the
 * running CheckPoint) so a record needs no layer reads in the common case. Correctness of those
 * caches rests on one fact: nothing else writes this timeline, so the cache equals storage at
 * last_record_lsn. They are bounded (MAX_CACHED_VALUES) and simply dropped when full; storage
 * remains the truth.
 *
 * Records are atomic. `begin(endLsn)` opens a modification; every change goes into its pending
 * overlay (reads see the overlay first, so later parts of a record see earlier parts); `commit()`
 * encodes the changed directories once, puts every value at the record's end LSN and calls
 * finishRecord — all in one synchronous step, as the timeline requires. `abort()` drops the
 * overlay, so a record that fails half-way changes nothing, caches included.
 */
import type { Lsn } from '../../postgres/lsn.ts';
import { formatLsn } from '../../postgres/lsn.ts';
import { PG_BLCKSZ } from '../../postgres/walformat.ts';
import { encodeCheckPoint, parseCheckPoint, type CheckPoint } from '../../postgres/records/xlog.ts';
import { AssertionFailedError, StrataError, assert, type ErrorContext } from '../../util/errors.ts';
import {
  CHECKPOINT_KEY, DBDIR_KEY, SLRU_PAGES_PER_SEGMENT, TWOPHASEDIR_KEY, describeKey, relBlockKey, relDirKey, relMapFileKey,
  relSizeKey, slruBlockKey, slruDirKey, slruSegmentSizeKey, twoPhaseFileKey, type Key, type RelTag, type SlruKind,
} from '../../storage/key.ts';
import type { Value } from '../../storage/value.ts';
import { KeyNotFoundError, reconstructAt } from '../timeline/read.ts';
import type { Timeline } from '../timeline/timeline.ts';
import {
  decodeDbDir, decodeRelDir, decodeSize, decodeSlruDir, decodeTwoPhaseDir, encodeDbDir, encodeRelDir, encodeSize, encodeSlruDir,
  encodeTwoPhaseDir, relDirEntry, type DbDirEntry,
} from './dirs.ts';

export const PAGE_BYTES = PG_BLCKSZ;
export const ZERO_PAGE: Buffer = Buffer.alloc(PAGE_BYTES);

/** Decoded cache entries, tagged by what they decode. */
type Decoded =
  | { t: 'size'; n: number }
  | { t: 'reldir'; set: Set<number> }
  | { t: 'dbdir'; list: DbDirEntry[] }
  | { t: 'slrudir'; set: Set<number> }
  | { t: 'twophase'; set: Set<number> };

/** Upper bound on cached decoded values (each is small; relation directories are the largest). */
const MAX_CACHED_VALUES = 200_000;
/** A record may create at most this many values (CREATE DATABASE copies a whole database). */
const MAX_VALUES_PER_RECORD = 50_000_000;

export class IngestError extends StrataError {
  constructor(message: string, context: ErrorContext) {
    super('ingest_failed', message, context);
    this.name = 'IngestError';
  }
}

function encodeDecoded(d: Decoded): Buffer {
  switch (d.t) {
    case 'size': return encodeSize(d.n);
    case 'reldir': return encodeRelDir(d.set);
    case 'dbdir': return encodeDbDir(d.list);
    case 'slrudir': return encodeSlruDir(d.set);
    case 'twophase': return encodeTwoPhaseDir(d.set);
  }
}

export class DatadirWriter {
  readonly timeline: Timeline;
  private readonly cache = new Map<Key, Decoded>();
  private checkpointState: CheckPoint | null = null;

  // The open modification.
  private lsn: Lsn = -1n;
  private readonly pendingValues = new Map<Key, Value>();
  private readonly pendingDecoded = new Map<Key, Decoded>();
  private pendingCheckpoint: CheckPoint | null = null;

  constructor(timeline: Timeline) {
    this.timeline = timeline;
  }

  get inRecord(): boolean {
    return this.lsn >= 0n;
  }

  /** The LSN values of the open record are written at (its end LSN). */
  get recordLsn(): Lsn {
    if (this.lsn < 0n) throw new AssertionFailedError('no record open', this.timeline.context());
    return this.lsn;
  }

  begin(endLsn: Lsn): void {
    assert(this.lsn < 0n, 'a record is already open', this.timeline.context({ lsn: formatLsn(endLsn) }));
    if (endLsn <= this.timeline.lastRecordLsn) {
      throw new IngestError(`record end ${formatLsn(endLsn)} is not after the last ingested record ${formatLsn(this.timeline.lastRecordLsn)}`,
        this.timeline.context({ lsn: formatLsn(endLsn) }));
    }
    this.lsn = endLsn;
  }

  abort(): void {
    this.lsn = -1n;
    this.pendingValues.clear();
    this.pendingDecoded.clear();
    this.pendingCheckpoint = null;
  }

  /** Writes everything the record produced and marks it ingested: one synchronous step. */
  commit(startLsn: Lsn | null): void {
    const lsn = this.recordLsn;
    const tl = this.timeline;
    try {
      for (const [key, d] of this.pendingDecoded) this.pendingValues.set(key, { kind: 'image', image: encodeDecoded(d) });
      if (this.pendingCheckpoint !== null) {
        this.pendingValues.set(CHECKPOINT_KEY, { kind: 'image', image: Buffer.from(encodeCheckPoint(this.pendingCheckpoint)) });
      }
      for (const [key, value] of this.pendingValues) tl.put(key, lsn, value);
      tl.finishRecord(lsn, startLsn);
    } catch (err) {
      // Some values may be in the open layer already, above last_record_lsn: no reader sees them,
      // but re-ingesting the record would write them twice, so the timeline stops here.
      this.abort();
      this.cache.clear();
      tl.setBroken(`ingest of the record ending at ${formatLsn(lsn)} failed half-way: ${err instanceof Error ? err.message : String(err)}`);
      throw err;
    }
    if (this.cache.size + this.pendingDecoded.size > MAX_CACHED_VALUES) this.cache.clear();
    for (const [key, d] of this.pendingDecoded) this.cache.set(key, d);
    if (this.pendingCheckpoint !== null) this.checkpointState = this.pendingCheckpoint;
    this.lsn = -1n;
    this.pendingValues.clear();
    this.pendingDecoded.clear();
    this.pendingCheckpoint = null;
  }

  /** Forget cached state (after anything else changed the timeline, e.g. a failed commit). */
  resetCaches(): void {
    this.cache.clear();
    this.checkpointState = null;
  }

  // ---------------------------------------------------------------------------------------------
  // Raw access.

  /** Committed value of a key at last_record_lsn, or null if it has none. */
  readCommitted(key: Key): Buffer | null {
    const tl = this.timeline;
    if (tl.lastRecordLsn === 0n) return null;
    try {
      return reconstructAt(tl, key, tl.lastRecordLsn);
    } catch (err) {
      if (err instanceof KeyNotFoundError) return null;
      throw err;
    }
  }

  /** Puts a value in the open record. */
  put(key: Key, value: Value): void {
    if (this.lsn < 0n) throw new AssertionFailedError('put outside a record', this.timeline.context({ key: describeKey(key) }));
    const existing = this.pendingValues.get(key);
    if (existing !== undefined && existing.kind !== 'image' && value.kind !== 'image') {
      // Two storage records for one key at one LSN cannot both be kept: ingest must merge them.
      throw new AssertionFailedError('two non-image values for one key in one record', this.timeline.context({ key: describeKey(key), lsn: formatLsn(this.lsn) }));
    }
    if (this.pendingValues.size >= MAX_VALUES_PER_RECORD) {
      throw new IngestError(`record at ${formatLsn(this.lsn)} produces more than ${MAX_VALUES_PER_RECORD} values`, this.timeline.context());
    }
    this.pendingValues.set(key, value);
  }

  pendingValue(key: Key): Value | undefined {
    return this.pendingValues.get(key);
  }

  private decoded(key: Key): Decoded | null {
    const pending = this.pendingDecoded.get(key);
    if (pending !== undefined) return pending;
    const cached = this.cache.get(key);
    if (cached !== undefined) return cached;
    return null;
  }

  private setDecoded(key: Key, d: Decoded): void {
    if (this.lsn < 0n) throw new AssertionFailedError('change outside a record', this.timeline.context({ key: describeKey(key) }));
    this.pendingDecoded.set(key, d);
  }

  // ---------------------------------------------------------------------------------------------
  // Checkpoint.

  /** The running CheckPoint (nextXid, nextOid, …) as of this record; copy-on-write. */
  get checkpoint(): CheckPoint {
    if (this.pendingCheckpoint !== null) return this.pendingCheckpoint;
    if (this.checkpointState === null) {
      const buf = this.readCommitted(CHECKPOINT_KEY);
      if (buf === null) throw new IngestError('the timeline has no checkpoint value: it was not imported', this.timeline.context());
      this.checkpointState = parseCheckPoint(buf);
    }
    return this.checkpointState;
  }

  /** Replaces the running CheckPoint for this record (written at commit). */
  setCheckpoint(cp: CheckPoint): void {
    assert(this.lsn >= 0n, 'checkpoint change outside a record', this.timeline.context());
    this.pendingCheckpoint = cp;
  }

  // ---------------------------------------------------------------------------------------------
  // Databases and relations.

  dbDir(): DbDirEntry[] {
    const d = this.decoded(DBDIR_KEY);
    if (d !== null) return (d as { list: DbDirEntry[] }).list;
    const buf = this.readCommitted(DBDIR_KEY);
    if (buf === null) throw new IngestError('the timeline has no database directory: it was not imported', this.timeline.context());
    const list = decodeDbDir(buf);
    this.cache.set(DBDIR_KEY, { t: 'dbdir', list });
    return list;
  }

  /** Adds (or updates the relmap flag of) a database entry. Creates its relation directory if missing. */
  ensureDb(spcNode: number, dbNode: number, hasRelmap: boolean): void {
    const list = this.dbDir();
    const i = list.findIndex((e) => e.spcNode === spcNode && e.dbNode === dbNode);
    if (i >= 0 && (list[i]!.hasRelmap || !hasRelmap)) return;
    const next = list.filter((_, j) => j !== i);
    next.push({ spcNode, dbNode, hasRelmap: hasRelmap || (i >= 0 && list[i]!.hasRelmap) });
    this.setDecoded(DBDIR_KEY, { t: 'dbdir', list: next });
    if (i < 0 && this.readRelDir(spcNode, dbNode) === null) this.setDecoded(relDirKey(spcNode, dbNode), { t: 'reldir', set: new Set() });
  }

  /** Removes a database: its entry and (by emptying its relation directory) all its relations. */
  dropDb(spcNode: number, dbNode: number): void {
    const list = this.dbDir();
    const next = list.filter((e) => !(e.spcNode === spcNode && e.dbNode === dbNode));
    if (next.length !== list.length) this.setDecoded(DBDIR_KEY, { t: 'dbdir', list: next });
    if (this.readRelDir(spcNode, dbNode) !== null) this.setDecoded(relDirKey(spcNode, dbNode), { t: 'reldir', set: new Set() });
  }

  /** Replaces a database's relation directory (CREATE DATABASE starts it afresh). */
  setRelDir(spcNode: number, dbNode: number, entries: Set<number>): void {
    this.setDecoded(relDirKey(spcNode, dbNode), { t: 'reldir', set: entries });
  }

  private readRelDir(spcNode: number, dbNode: number): Set<number> | null {
    const key = relDirKey(spcNode, dbNode);
    const d = this.decoded(key);
    if (d !== null) return (d as { set: Set<number> }).set;
    const buf = this.readCommitted(key);
    if (buf === null) return null;
    const set = decodeRelDir(buf);
    this.cache.set(key, { t: 'reldir', set });
    return set;
  }

  relDir(spcNode: number, dbNode: number): Set<number> {
    return this.readRelDir(spcNode, dbNode) ?? new Set();
  }

  relExists(rel: RelTag): boolean {
    return this.relDir(rel.spcNode, rel.dbNode).has(relDirEntry(rel.relNode, rel.forkNum));
  }

  /** Size in blocks, or null when the fork does not exist. */
  relSize(rel: RelTag): number | null {
    if (!this.relExists(rel)) return null;
    const key = relSizeKey(rel);
    const d = this.decoded(key);
    if (d !== null) return (d as { n: number }).n;
    const buf = this.readCommitted(key);
    if (buf === null) throw new IngestError(`relation fork ${describeKey(key)} is listed but has no size`, this.timeline.context({ key: describeKey(key) }));
    const n = decodeSize(buf, 'relation');
    this.cache.set(key, { t: 'size', n });
    return n;
  }

  setRelSize(rel: RelTag, blocks: number): void {
    this.setDecoded(relSizeKey(rel), { t: 'size', n: blocks });
  }

  /** Creates a relation fork with size 0 unless it exists (SMGR CREATE is idempotent, as in redo). */
  createRel(rel: RelTag): void {
    if (this.relExists(rel)) return;
    this.ensureDb(rel.spcNode, rel.dbNode, false);
    const set = new Set(this.relDir(rel.spcNode, rel.dbNode));
    set.add(relDirEntry(rel.relNode, rel.forkNum));
    this.setRelDir(rel.spcNode, rel.dbNode, set);
    this.setRelSize(rel, 0);
  }

  /** Drops a relation fork if it exists (its blocks become unreachable). */
  dropRel(rel: RelTag): void {
    if (!this.relExists(rel)) return;
    const set = new Set(this.relDir(rel.spcNode, rel.dbNode));
    set.delete(relDirEntry(rel.relNode, rel.forkNum));
    this.setRelDir(rel.spcNode, rel.dbNode, set);
  }

  /**
   * Stores a block value, extending the fork first when the block is past its end: the fork is
   * created if missing, and blocks between the old end and this one become zero pages, which is
   * what PostgreSQL's storage manager leaves there when a relation is extended.
   */
  putRelBlock(rel: RelTag, blockNumber: number, value: Value): void {
    let size = this.relSize(rel);
    if (size === null) {
      this.createRel(rel);
      size = 0;
    }
    if (blockNumber >= size) {
      for (let b = size; b < blockNumber; b++) this.put(relBlockKey(rel, b), { kind: 'image', image: ZERO_PAGE });
      this.setRelSize(rel, blockNumber + 1);
    }
    this.put(relBlockKey(rel, blockNumber), value);
  }

  /** Current committed page of a relation block (for records whose effect depends on it). */
  readRelBlock(rel: RelTag, blockNumber: number): Buffer | null {
    return this.readCommitted(relBlockKey(rel, blockNumber));
  }

  putRelmap(spcNode: number, dbNode: number, map: Buffer): void {
    this.ensureDb(spcNode, dbNode, true);
    this.put(relMapFileKey(spcNode, dbNode), { kind: 'image', image: map });
  }

  // ---------------------------------------------------------------------------------------------
  // SLRUs.

  slruSegments(kind: SlruKind): Set<number> {
    const key = slruDirKey(kind);
    const d = this.decoded(key);
    if (d !== null) return (d as { set: Set<number> }).set;
    const buf = this.readCommitted(key);
    if (buf === null) throw new IngestError(`the timeline has no SLRU directory for kind ${kind}: it was not imported`, this.timeline.context());
    const set = decodeSlruDir(buf);
    this.cache.set(key, { t: 'slrudir', set });
    return set;
  }

  slruSegmentSize(kind: SlruKind, segNo: number): number | null {
    if (!this.slruSegments(kind).has(segNo)) return null;
    const key = slruSegmentSizeKey(kind, segNo);
    const d = this.decoded(key);
    if (d !== null) return (d as { n: number }).n;
    const buf = this.readCommitted(key);
    if (buf === null) throw new IngestError(`SLRU segment ${describeKey(key)} is listed but has no size`, this.timeline.context());
    const n = decodeSize(buf, 'SLRU segment');
    this.cache.set(key, { t: 'size', n });
    return n;
  }

  /** Stores an SLRU page, creating the segment and zero-filling up to it as needed. */
  putSlruPage(kind: SlruKind, segNo: number, blockNumber: number, value: Value): void {
    if (blockNumber >= SLRU_PAGES_PER_SEGMENT) throw new AssertionFailedError('SLRU block out of range', this.timeline.context({ blockNumber }));
    let size = this.slruSegmentSize(kind, segNo);
    if (size === null) {
      const set = new Set(this.slruSegments(kind));
      set.add(segNo);
      this.setDecoded(slruDirKey(kind), { t: 'slrudir', set });
      size = 0;
    }
    if (blockNumber >= size) {
      for (let b = size; b < blockNumber; b++) this.put(slruBlockKey(kind, segNo, b), { kind: 'image', image: ZERO_PAGE });
      this.setDecoded(slruSegmentSizeKey(kind, segNo), { t: 'size', n: blockNumber + 1 });
    }
    this.put(slruBlockKey(kind, segNo, blockNumber), value);
  }

  slruPageExists(kind: SlruKind, segNo: number, blockNumber: number): boolean {
    const size = this.slruSegmentSize(kind, segNo);
    return size !== null && blockNumber < size;
  }

  dropSlruSegment(kind: SlruKind, segNo: number): void {
    const segs = this.slruSegments(kind);
    if (!segs.has(segNo)) return;
    const set = new Set(segs);
    set.delete(segNo);
    this.setDecoded(slruDirKey(kind), { t: 'slrudir', set });
  }

  // ---------------------------------------------------------------------------------------------
  // Two-phase state.

  twoPhaseXids(): Set<number> {
    const d = this.decoded(TWOPHASEDIR_KEY);
    if (d !== null) return (d as { set: Set<number> }).set;
    const buf = this.readCommitted(TWOPHASEDIR_KEY);
    if (buf === null) throw new IngestError('the timeline has no two-phase directory: it was not imported', this.timeline.context());
    const set = decodeTwoPhaseDir(buf);
    this.cache.set(TWOPHASEDIR_KEY, { t: 'twophase', set });
    return set;
  }

  putTwoPhase(xid: number, state: Buffer): void {
    const set = new Set(this.twoPhaseXids());
    set.add(xid);
    this.setDecoded(TWOPHASEDIR_KEY, { t: 'twophase', set });
    this.put(twoPhaseFileKey(xid), { kind: 'image', image: state });
  }

  dropTwoPhase(xid: number): void {
    const xids = this.twoPhaseXids();
    if (!xids.has(xid)) return;
    const set = new Set(xids);
    set.delete(xid);
    this.setDecoded(TWOPHASEDIR_KEY, { t: 'twophase', set });
  }
}
