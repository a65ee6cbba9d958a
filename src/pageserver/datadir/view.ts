/**
 * A read-only view of a timeline as a PostgreSQL data directory at one LSN: which databases,
 * relation forks, SLRU segments and prepared transactions exist, their sizes and their pages.
 *
 * The basebackup walks a view; the WAL ingest reads through one (via DatadirWriter) to learn the
 * state a record applies to. Every accessor reads keys with reconstructAt, so the LSN must
 * already be ingested (callers wait for it first). A value that should exist but does not is a
 * KeyNotFoundError naming key, LSN and timeline: the view never guesses.
 */
import type { Lsn } from '../../postgres/lsn.ts';
import { parseCheckPoint, type CheckPoint } from '../../postgres/records/xlog.ts';
import {
  CHECKPOINT_KEY, CONTROLFILE_KEY, DBDIR_KEY, TWOPHASEDIR_KEY, relBlockKey, relDirKey, relMapFileKey, relSizeKey, slruBlockKey,
  slruDirKey, slruSegmentSizeKey, twoPhaseFileKey, type Key, type RelTag, type SlruKind,
} from '../../storage/key.ts';
import { KeyNotFoundError, reconstructAt } from '../timeline/read.ts';
import type { Timeline } from '../timeline/timeline.ts';
import {
  decodeDbDir, decodeRelDir, decodeSize, decodeSlruDir, decodeTwoPhaseDir, relDirEntry, type DbDirEntry,
} from './dirs.ts';

export class DatadirView {
  readonly timeline: Timeline;
  readonly lsn: Lsn;

  constructor(timeline: Timeline, lsn: Lsn) {
    this.timeline = timeline;
    this.lsn = lsn;
  }

  /** The value of `key`; the buffer may be shared with a cache, so do not modify it. */
  get(key: Key): Buffer {
    return reconstructAt(this.timeline, key, this.lsn);
  }

  /** Like get(), but null when no version of the key exists. */
  tryGet(key: Key): Buffer | null {
    try {
      return reconstructAt(this.timeline, key, this.lsn);
    } catch (err) {
      if (err instanceof KeyNotFoundError) return null;
      throw err;
    }
  }

  dbDir(): DbDirEntry[] {
    return decodeDbDir(this.get(DBDIR_KEY));
  }

  /** Relation forks of a database, as relDirEntry numbers; empty when it has no directory yet. */
  relDir(spcNode: number, dbNode: number): Set<number> {
    const buf = this.tryGet(relDirKey(spcNode, dbNode));
    return buf === null ? new Set() : decodeRelDir(buf);
  }

  relExists(rel: RelTag): boolean {
    return this.relDir(rel.spcNode, rel.dbNode).has(relDirEntry(rel.relNode, rel.forkNum));
  }

  /** Size in blocks of an existing relation fork. */
  relSize(rel: RelTag): number {
    return decodeSize(this.get(relSizeKey(rel)), 'relation');
  }

  relPage(rel: RelTag, blockNumber: number): Buffer {
    return this.get(relBlockKey(rel, blockNumber));
  }

  relmap(spcNode: number, dbNode: number): Buffer {
    return this.get(relMapFileKey(spcNode, dbNode));
  }

  slruSegments(kind: SlruKind): Set<number> {
    return decodeSlruDir(this.get(slruDirKey(kind)));
  }

  slruSegmentSize(kind: SlruKind, segNo: number): number {
    return decodeSize(this.get(slruSegmentSizeKey(kind, segNo)), 'SLRU segment');
  }

  slruPage(kind: SlruKind, segNo: number, blockNumber: number): Buffer {
    return this.get(slruBlockKey(kind, segNo, blockNumber));
  }

  twoPhaseXids(): Set<number> {
    return decodeTwoPhaseDir(this.get(TWOPHASEDIR_KEY));
  }

  /** The two-phase state of a prepared transaction, as its PREPARE record logged it (no CRC). */
  twoPhaseState(xid: number): Buffer {
    return this.get(twoPhaseFileKey(xid));
  }

  controlFile(): Buffer {
    return this.get(CONTROLFILE_KEY);
  }

  checkpoint(): CheckPoint {
    return parseCheckPoint(this.get(CHECKPOINT_KEY));
  }
}
