/**
 * WAL segment storage of one safekeeper timeline.
 *
 * The timeline directory holds the compute's WAL in files laid out exactly like pg_wal: one file
 * per segment, named `TTTTTTTTXXXXXXXXYYYYYYYY` with timeline id 1, and byte `o` of segment `n`
 * is the WAL byte at LSN `n * segmentSize + o`. The segment being written carries a `.partial`
 * suffix; a segment gets its final name only once all its bytes are written and fsynced. Because
 * the bytes are the compute's WAL bytes at the same offsets, a segment can be served to a
 * pageserver, uploaded, or read by pg_waldump as is, and "where is LSN x" needs no index.
 *
 * Positions (all LSNs, all only move forward except through truncate()):
 *  - writeLsn: end of the bytes written (the next byte expected; may be inside a record);
 *  - writeRecordLsn: end of the last complete record among them;
 *  - flushLsn: end of the bytes fsynced;
 *  - flushRecordLsn: end of the last complete record among the fsynced bytes — the position the
 *    safekeeper reports and votes with;
 *  - firstLsn: the oldest LSN still stored.
 * Invariants: firstLsn ≤ flushRecordLsn ≤ flushLsn ≤ writeLsn and flushRecordLsn ≤ writeRecordLsn
 * ≤ writeLsn; the file bytes in [firstLsn, writeLsn) equal the compute's WAL bytes there; a file
 * without `.partial` is complete and fsynced.
 *
 * Record ends. Every written byte also goes through a WalStreamDecoder, which checks page headers,
 * prev-links and CRCs and tells where records end. A record's end is its MAXALIGNed end
 * (DecodedRecord.endLsn; for XLOG_SWITCH the start of the next segment). That is PostgreSQL's
 * EndRecPtr and also what a committing backend waits for (XactLastRecEnd is the MAXALIGNed end
 * too), so a safekeeper reporting flush = flushRecordLsn releases a commit exactly when the commit
 * record and its padding are durable. A record counts only once all bytes up to that end are
 * written (the padding arrives with the record, since the compute only ever sends up to its own
 * flush position, which is MAXALIGNed). Damaged live input (a bad CRC, a broken page header,
 * zeros where a record should start) is an error naming the LSN, and nothing of that chunk is
 * written; the storage then refuses writes until truncate() restarts the decoder.
 *
 * Crash recovery (open). Only fsynced bytes are trusted, but nobody records exactly how far that
 * was, so recovery starts at `recoverFromLsn` (the control file's flushLsn: a record boundary known
 * to be durable), decodes forward through the segment files and stops at the end of the last
 * complete, valid record. Everything after it — a torn record, zeros, garbage, whole files — is
 * cut off, the surviving files are fsynced (their bytes may have come from the page cache of a
 * killed process) and renamed to what they are (complete → final name, the last one → `.partial`),
 * and the directory is fsynced. Hence writeLsn = flushLsn = the recovered end. WAL below
 * recoverFromLsn is not re-read; it must be present (checked by size) or open() fails, since the
 * control file says it was durable. One exception: when recoverFromLsn lies below the oldest
 * segment left (a removal overtook the persisted hint), the scan starts at that segment's first
 * page instead — removed segments were wholly flushed, so that start is just as valid.
 * Limitation (as in Neon): damage to fsynced WAL after recoverFromLsn looks like a torn tail and
 * is cut off too, so the timeline should persist its flushLsn often to keep that window small.
 *
 * Truncation (a new term whose WAL diverges from ours). The segment holding the cut is cut with
 * ftruncate and fsynced first; only then are later segments deleted. From that moment a recovery
 * stops at the cut, because it reads segments in order and a short segment ends the WAL, so
 * removed WAL can never come back. The caller's contract (timeline.ts does this): lower the
 * control file's flushLsn to ≤ the cut before calling truncate(), and persist the new term only
 * after truncate() returned — a crash in between leaves the old WAL with the old history, which
 * is consistent.
 *
 * Removal (removeSegmentsBelow) deletes whole segments from the oldest up, so what remains is
 * contiguous; it never deletes the segment that holds flushLsn (or ends at it), so a restart always
 * finds WAL to start recovery from. Callers should remove only WAL below the control file's
 * durable flushLsn (else recovery falls back to scanning from the oldest segment, see above).
 *
 * Concurrency. Mutating calls (write, flush, truncate, removeSegmentsBelow, close) run one at a
 * time in call order. read() runs concurrently: it only reads below flushLsn, which those bytes
 * never change (except through truncate, which callers do not run below what they serve), and it
 * retries the other file name when a rename overtakes it. After an I/O error in a mutating call
 * the storage refuses all further work: after a failed fsync, the kernel may have dropped dirty
 * pages, so the state of the files is unknown until the timeline is reopened and recovered.
 *
 * Cost of a write of n bytes: one memcpy of n bytes (the caller's buffer may be reused — the
 * replication driver does — and the decoder keeps the bytes of an unfinished record), the
 * decoder's per-record work (header checks and one CRC-32C pass over each completed record;
 * records are not copied unless they span chunks or pages), and one pwrite per segment touched
 * (two when the chunk crosses a segment boundary, plus an open() when a segment is created). A
 * flush is one fdatasync per segment written since the last flush (usually one), plus a rename
 * and a directory fsync only when a segment was completed or created. A read is an open, one
 * pread and a close per segment touched.
 */
import { open, readdir, rename, stat, unlink, type FileHandle } from 'node:fs/promises';
import path from 'node:path';
import { formatLsn, type Lsn } from '../postgres/lsn.ts';
import { SIZE_OF_LONG_PAGE_HEADER, SIZE_OF_SHORT_PAGE_HEADER, XLOG_BLCKSZ, parseWalSegmentFileName, walSegmentFileName } from '../postgres/walformat.ts';
import { WalStreamDecoder, type WalEnd } from '../postgres/walstream.ts';
import { fsyncDir, TEMP_SUFFIX } from '../util/durable.ts';
import { StrataError, assert, type ErrorContext } from '../util/errors.ts';
import type { Logger } from '../util/log.ts';

/** Segment files of a safekeeper always carry timeline id 1 (like Neon's). */
export const WAL_TIMELINE_ID = 1;
export const PARTIAL_SUFFIX = '.partial';
/** Recovery reads segment files in chunks of this size. */
export const WAL_RECOVERY_READ_CHUNK_BYTES = 1024 * 1024;
/** Largest read() result. */
export const WAL_READ_MAX_BYTES = 64 * 1024 * 1024;
/** Largest single write(). */
export const WAL_WRITE_MAX_BYTES = 256 * 1024 * 1024;

/** Errors of the WAL storage; `code` says which (see the codes below). */
export class WalStorageError extends StrataError {
  constructor(code: WalStorageErrorCode, message: string, context: ErrorContext = {}, options?: { cause?: unknown }) {
    super(code, message, context, options);
    this.name = 'WalStorageError';
  }
}

export type WalStorageErrorCode =
  | 'wal_removed' // read below firstLsn
  | 'safekeeper_wal_write_position' // write() not at writeLsn
  | 'safekeeper_wal_invalid' // live input is not valid WAL
  | 'safekeeper_wal_bad_argument' // truncate/read/write arguments out of range
  | 'safekeeper_wal_missing' // WAL that must exist (below recoverFromLsn or writeLsn) is not there
  | 'safekeeper_wal_corrupt' // a file that cannot be a segment of ours (too large, duplicate names)
  | 'safekeeper_wal_failed' // an earlier I/O error poisoned the storage
  | 'safekeeper_wal_closed';

/** Errors thrown before anything was changed: they leave the storage usable. */
const REFUSAL_CODES: ReadonlySet<string> = new Set<WalStorageErrorCode>([
  'safekeeper_wal_write_position', 'safekeeper_wal_invalid', 'safekeeper_wal_bad_argument', 'safekeeper_wal_closed', 'safekeeper_wal_failed',
]);

export interface WalStorageOptions {
  /** The timeline directory (must exist). */
  dir: string;
  segmentSizeBytes: number;
  /** The compute's system identifier; every long page header must carry it (0n: unknown, learned from the WAL). */
  systemId: bigint;
  /** Where this safekeeper's WAL begins: the first write() is at this LSN. */
  localStartLsn: Lsn;
  /** A record boundary known to be durable (control file flushLsn); ≥ localStartLsn. */
  recoverFromLsn: Lsn;
  log: Logger;
  /** Read chunk size during recovery (tests use small ones). */
  recoveryReadChunkBytes?: number;
}

interface SegmentFile {
  segNo: bigint;
  partial: boolean;
}

/** An open segment file being written. */
interface OpenSegment {
  segNo: bigint;
  fh: FileHandle;
}

export class WalStorage {
  readonly dir: string;
  readonly segmentSizeBytes: number;
  readonly systemId: bigint;
  readonly localStartLsn: Lsn;
  private readonly seg: bigint;
  private readonly log: Logger;

  private _writeLsn: Lsn;
  private _writeRecordLsn: Lsn;
  private _flushLsn: Lsn;
  private _flushRecordLsn: Lsn;
  private _firstLsn: Lsn;

  private decoder: WalStreamDecoder;
  /** A record whose bytes are all written but whose MAXALIGN padding (or switch padding) is not yet: its end. */
  private pendingRecordEnd: Lsn | null = null;
  /** Set when live input was invalid: writes are refused until truncate(). */
  private decoderEnd: WalEnd | null = null;

  /** The `.partial` segment holding writeLsn, when open. */
  private current: OpenSegment | null = null;
  private currentDirty = false;
  /** Segments written to their end but not yet fsynced and renamed. */
  private completed: OpenSegment[] = [];
  /** A segment file was created since the last directory fsync. */
  private dirDirty = false;

  private tail: Promise<unknown> = Promise.resolve();
  private failure: Error | null = null;
  private closed = false;

  private constructor(opts: WalStorageOptions) {
    this.dir = opts.dir;
    this.segmentSizeBytes = opts.segmentSizeBytes;
    this.seg = BigInt(opts.segmentSizeBytes);
    this.systemId = opts.systemId;
    this.localStartLsn = opts.localStartLsn;
    this.log = opts.log.child({ wal_dir: opts.dir });
    this._writeLsn = this._writeRecordLsn = this._flushLsn = this._flushRecordLsn = opts.localStartLsn;
    this._firstLsn = opts.localStartLsn;
    this.decoder = this.newDecoder(opts.localStartLsn);
  }

  /** Opens the WAL of a timeline, recovering it after a crash (see the module comment). */
  static async open(opts: WalStorageOptions): Promise<WalStorage> {
    const seg = opts.segmentSizeBytes;
    if (!Number.isInteger(seg) || seg < 1024 * 1024 || seg > 1024 * 1024 * 1024 || (seg & (seg - 1)) !== 0) {
      throw new WalStorageError('safekeeper_wal_bad_argument', `invalid WAL segment size ${seg}: PostgreSQL allows powers of two from 1 MiB to 1 GiB`, { dir: opts.dir });
    }
    checkRecordPosition(opts.localStartLsn, BigInt(seg), 'localStartLsn', opts.dir);
    checkRecordPosition(opts.recoverFromLsn, BigInt(seg), 'recoverFromLsn', opts.dir);
    if (opts.recoverFromLsn < opts.localStartLsn) {
      throw new WalStorageError('safekeeper_wal_bad_argument',
        `WAL recovery start ${formatLsn(opts.recoverFromLsn)} is below the timeline's local start ${formatLsn(opts.localStartLsn)} in ${opts.dir}`,
        { dir: opts.dir, lsn: formatLsn(opts.recoverFromLsn) });
    }
    const chunk = opts.recoveryReadChunkBytes ?? WAL_RECOVERY_READ_CHUNK_BYTES;
    if (!Number.isInteger(chunk) || chunk < 1 || chunk > 64 * 1024 * 1024) {
      throw new WalStorageError('safekeeper_wal_bad_argument', `recoveryReadChunkBytes ${chunk} must be an integer in 1 … 64 MiB`, { dir: opts.dir });
    }
    const st = new WalStorage(opts);
    await st.recover(opts.recoverFromLsn, chunk);
    return st;
  }

  get writeLsn(): Lsn {
    return this._writeLsn;
  }

  get writeRecordLsn(): Lsn {
    return this._writeRecordLsn;
  }

  get flushLsn(): Lsn {
    return this._flushLsn;
  }

  get flushRecordLsn(): Lsn {
    return this._flushRecordLsn;
  }

  get firstLsn(): Lsn {
    return this._firstLsn;
  }

  /** File name of segment `segNo` (without `.partial`). */
  segmentFileName(segNo: bigint): string {
    return walSegmentFileName(WAL_TIMELINE_ID, segNo, this.segmentSizeBytes);
  }

  private segPath(segNo: bigint, partial: boolean): string {
    return path.join(this.dir, this.segmentFileName(segNo) + (partial ? PARTIAL_SUFFIX : ''));
  }

  private newDecoder(startLsn: Lsn): WalStreamDecoder {
    return new WalStreamDecoder({
      startLsn, segmentSizeBytes: this.segmentSizeBytes, ...(this.systemId !== 0n ? { systemId: this.systemId } : {}),
    });
  }

  // -------------------------------------------------------------------------------------------
  // Serialisation and failure handling

  private exclusive<T>(what: string, fn: () => Promise<T>): Promise<T> {
    const run = this.tail.then(async () => {
      this.checkUsable(what);
      try {
        return await fn();
      } catch (err) {
        // Refusals change nothing; anything else (an fs error, a file that is not as it should
        // be, a broken invariant) happened in the middle of changing files whose state we no
        // longer know.
        if (!(err instanceof StrataError && REFUSAL_CODES.has(err.code))) {
          this.failure = err instanceof Error ? err : new Error(String(err));
          this.log.error('WAL storage failed; reopen the timeline to recover', { op: what, error: this.failure.message });
        }
        throw err;
      }
    });
    this.tail = run.catch(() => undefined);
    return run;
  }

  private checkUsable(what: string): void {
    if (this.closed) throw new WalStorageError('safekeeper_wal_closed', `WAL storage in ${this.dir} is closed (${what})`, { dir: this.dir });
    if (this.failure !== null) {
      throw new WalStorageError('safekeeper_wal_failed', `WAL storage in ${this.dir} failed earlier (${this.failure.message}); reopen the timeline to recover (${what})`,
        { dir: this.dir }, { cause: this.failure });
    }
  }

  // -------------------------------------------------------------------------------------------
  // Writing

  /**
   * Appends `data`, the WAL bytes at [startLsn, startLsn + data.length). startLsn must equal
   * writeLsn. The bytes are copied, so the caller may reuse its buffer as soon as this returns.
   */
  write(startLsn: Lsn, data: Uint8Array): Promise<void> {
    return this.exclusive('write', () => this.doWrite(startLsn, data));
  }

  private async doWrite(startLsn: Lsn, data: Uint8Array): Promise<void> {
    if (startLsn !== this._writeLsn) {
      throw new WalStorageError('safekeeper_wal_write_position',
        `WAL write at ${formatLsn(startLsn)} does not continue the stored WAL, which ends at ${formatLsn(this._writeLsn)} (${this.dir})`,
        { dir: this.dir, lsn: formatLsn(startLsn), writeLsn: formatLsn(this._writeLsn) });
    }
    if (this.decoderEnd !== null) {
      throw new WalStorageError('safekeeper_wal_invalid',
        `WAL in ${this.dir} was found invalid at ${formatLsn(this.decoderEnd.lsn)} (${this.decoderEnd.reason}); truncate before writing again`,
        { dir: this.dir, lsn: formatLsn(this.decoderEnd.lsn) });
    }
    if (data.byteLength === 0) return;
    if (data.byteLength > WAL_WRITE_MAX_BYTES) {
      throw new WalStorageError('safekeeper_wal_bad_argument', `WAL write of ${data.byteLength} bytes is larger than the limit ${WAL_WRITE_MAX_BYTES}`, { dir: this.dir });
    }
    const bytes = Buffer.from(data); // a copy: see the module comment
    const endLsn = startLsn + BigInt(bytes.length);

    // Validate first: nothing of a chunk with damaged WAL reaches the files.
    this.decoder.push(bytes);
    let recordEnd = this._writeRecordLsn;
    if (this.pendingRecordEnd !== null && this.pendingRecordEnd <= endLsn) {
      recordEnd = this.pendingRecordEnd;
      this.pendingRecordEnd = null;
    }
    const maxItems = Math.floor(bytes.length / 8) + 2; // a record takes at least 24 bytes
    for (let i = 0; ; i++) {
      assert(i <= maxItems, 'WAL decoder returned more records than the bytes can hold', { lsn: formatLsn(startLsn) });
      const item = this.decoder.next();
      if (item === null) break;
      if (item.kind === 'end') {
        this.decoderEnd = item;
        throw new WalStorageError('safekeeper_wal_invalid',
          `received WAL is invalid at ${formatLsn(item.lsn)}: ${item.reason} (chunk ${formatLsn(startLsn)}..${formatLsn(endLsn)} not written to ${this.dir})`,
          { dir: this.dir, lsn: formatLsn(item.lsn), endCode: item.code });
      }
      const end = item.record.endLsn;
      if (end <= endLsn) {
        recordEnd = end;
      } else {
        this.pendingRecordEnd = end; // the last record: its padding is still to come
      }
    }

    let off = 0;
    let lsn = startLsn;
    while (off < bytes.length) {
      const segNo = lsn / this.seg;
      const segOff = lsn % this.seg;
      const n = Number(this.seg - segOff < BigInt(bytes.length - off) ? this.seg - segOff : BigInt(bytes.length - off));
      const cur = await this.segmentForWrite(segNo, segOff);
      await writeFully(cur.fh, bytes, off, n, Number(segOff));
      this.currentDirty = true;
      off += n;
      lsn += BigInt(n);
      if (lsn % this.seg === 0n) {
        this.completed.push(cur);
        this.current = null;
        this.currentDirty = false;
      }
    }
    this._writeLsn = endLsn;
    this._writeRecordLsn = recordEnd;
  }

  /** The open `.partial` file of segment `segNo`, opening or creating it. */
  private async segmentForWrite(segNo: bigint, segOff: bigint): Promise<OpenSegment> {
    if (this.current !== null) {
      assert(this.current.segNo === segNo, 'WAL write goes to a segment other than the open one', { segNo: segNo.toString() });
      return this.current;
    }
    const p = this.segPath(segNo, true);
    let fh: FileHandle;
    if (segOff === 0n) {
      fh = await open(p, 'wx', 0o644); // a fresh segment: there must be no file yet
      this.dirDirty = true;
    } else {
      try {
        fh = await open(p, 'r+');
      } catch (err) {
        const lsn = segNo * this.seg + segOff;
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT' || lsn !== this.localStartLsn) {
          if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
            throw new WalStorageError('safekeeper_wal_missing', `WAL segment file ${p} holding ${formatLsn(lsn)} is missing`, { dir: this.dir, file: p, lsn: formatLsn(lsn) });
          }
          throw err;
        }
        // The first write of a timeline whose WAL starts inside a segment: the bytes before the
        // start stay a hole (zeros) and are never served.
        fh = await open(p, 'wx', 0o644);
        this.dirDirty = true;
      }
    }
    this.current = { segNo, fh };
    return this.current;
  }

  /**
   * Makes everything written durable: fsyncs completed segments and renames them to their final
   * names, fsyncs the open segment, fsyncs the directory when a file was created or renamed.
   */
  flush(): Promise<void> {
    return this.exclusive('flush', () => this.doFlush());
  }

  private async doFlush(): Promise<void> {
    const target = this._writeLsn;
    const targetRecord = this._writeRecordLsn;
    for (const c of this.completed) {
      await c.fh.datasync();
      await c.fh.close();
      await rename(this.segPath(c.segNo, true), this.segPath(c.segNo, false));
      this.dirDirty = true;
    }
    this.completed = [];
    if (this.current !== null && this.currentDirty) {
      await this.current.fh.datasync();
      this.currentDirty = false;
    }
    if (this.dirDirty) {
      await fsyncDir(this.dir);
      this.dirDirty = false;
    }
    this._flushLsn = target;
    this._flushRecordLsn = targetRecord;
  }

  // -------------------------------------------------------------------------------------------
  // Truncation and removal

  /**
   * Cuts the WAL at `lsn`, a record boundary in [firstLsn, writeLsn]: bytes at and after it are
   * removed durably before this returns, and all positions become `lsn`.
   */
  truncate(lsn: Lsn): Promise<void> {
    return this.exclusive('truncate', () => this.doTruncate(lsn));
  }

  private async doTruncate(lsn: Lsn): Promise<void> {
    const ctx = { dir: this.dir, lsn: formatLsn(lsn), writeLsn: formatLsn(this._writeLsn), firstLsn: formatLsn(this._firstLsn) };
    if (lsn > this._writeLsn) {
      throw new WalStorageError('safekeeper_wal_bad_argument', `cannot truncate WAL at ${formatLsn(lsn)}: beyond the written WAL, which ends at ${formatLsn(this._writeLsn)} (${this.dir})`, ctx);
    }
    if (lsn < this._firstLsn) {
      throw new WalStorageError('safekeeper_wal_bad_argument', `cannot truncate WAL at ${formatLsn(lsn)}: below the oldest stored WAL ${formatLsn(this._firstLsn)} (${this.dir})`, ctx);
    }
    if (lsn % this.seg === 0n && lsn === this._firstLsn && lsn > this.localStartLsn) {
      // Nothing would be left to show a restart where the WAL resumes.
      throw new WalStorageError('safekeeper_wal_bad_argument', `cannot truncate WAL at ${formatLsn(lsn)}: that would remove every stored segment (${this.dir})`, ctx);
    }
    checkRecordPosition(lsn, this.seg, 'truncate LSN', this.dir);

    // Forget the open handles; the files are handled by name below.
    const handles = [...this.completed, ...(this.current !== null ? [this.current] : [])];
    this.completed = [];
    this.current = null;
    this.currentDirty = false;
    for (const h of handles) await h.fh.close();

    const files = await this.listSegments();
    const cutSeg = lsn / this.seg;
    const cutOff = lsn % this.seg;
    // 1. Cut the segment holding lsn and make the cut durable: from now on a recovery stops here.
    const cutFile = files.get(cutSeg);
    if (cutOff !== 0n && cutFile !== undefined) {
      const fh = await open(this.segPath(cutSeg, cutFile.partial), 'r+');
      try {
        await fh.truncate(Number(cutOff));
        await fh.sync();
      } finally {
        await fh.close();
      }
    }
    // 2. Delete every later segment (and, at a segment boundary, the segment starting at lsn).
    const firstGone = cutOff === 0n ? cutSeg : cutSeg + 1n;
    const doomed = [...files.values()].filter((f) => f.segNo >= firstGone).sort((a, b) => (a.segNo > b.segNo ? -1 : 1));
    for (const f of doomed) {
      await unlink(this.segPath(f.segNo, f.partial));
      files.delete(f.segNo);
    }
    if (doomed.length > 0) await fsyncDir(this.dir);
    // 3. Names: the cut segment is partial again; complete segments written since the last flush
    //    get fsynced and their final names.
    if (cutOff !== 0n && cutFile !== undefined && !cutFile.partial) {
      await rename(this.segPath(cutSeg, false), this.segPath(cutSeg, true));
    }
    const firstSeg = this._firstLsn / this.seg;
    for (const f of [...files.values()].sort((a, b) => (a.segNo < b.segNo ? -1 : 1))) {
      if (f.segNo >= firstSeg && f.segNo < cutSeg && f.partial) await this.completeSegment(f.segNo);
    }
    await fsyncDir(this.dir);

    const cut = this._writeLsn - lsn;
    this._writeLsn = this._writeRecordLsn = this._flushLsn = this._flushRecordLsn = lsn;
    this.pendingRecordEnd = null;
    this.decoderEnd = null;
    this.decoder = this.newDecoder(lsn);
    this.dirDirty = false;
    this.log.info('WAL truncated', { lsn: formatLsn(lsn), removed_bytes: cut, removed_segments: doomed.length });
  }

  /** fsyncs a complete `.partial` segment and gives it its final name (directory fsync is the caller's). */
  private async completeSegment(segNo: bigint): Promise<void> {
    const p = this.segPath(segNo, true);
    const fh = await open(p, 'r+');
    try {
      const size = (await fh.stat()).size;
      if (size !== this.segmentSizeBytes) {
        throw new WalStorageError('safekeeper_wal_missing', `WAL segment file ${p} should be complete but has ${size} of ${this.segmentSizeBytes} bytes`,
          { dir: this.dir, file: p });
      }
      await fh.sync();
    } finally {
      await fh.close();
    }
    await rename(p, this.segPath(segNo, false));
  }

  /**
   * Deletes whole segments that end at or below `lsn`, oldest first, but never the segment that
   * holds flushLsn or ends exactly at it. Returns how many were deleted.
   */
  removeSegmentsBelow(lsn: Lsn): Promise<number> {
    return this.exclusive('removeSegmentsBelow', async () => {
      const files = [...(await this.listSegments()).values()].sort((a, b) => (a.segNo < b.segNo ? -1 : 1));
      const doomed: SegmentFile[] = [];
      let newFirst = this._firstLsn;
      for (const f of files) {
        const segEnd = (f.segNo + 1n) * this.seg;
        if (segEnd > lsn || segEnd >= this._flushLsn) break;
        doomed.push(f);
        if (segEnd > newFirst) newFirst = segEnd;
      }
      if (doomed.length === 0) return 0;
      // Move firstLsn first, so a concurrent read of a segment being deleted reports 'wal_removed'.
      this._firstLsn = newFirst;
      for (const f of doomed) await unlink(this.segPath(f.segNo, f.partial));
      await fsyncDir(this.dir);
      this.log.info('removed WAL segments', { count: doomed.length, first_lsn: formatLsn(newFirst) });
      return doomed.length;
    });
  }

  // -------------------------------------------------------------------------------------------
  // Reading

  /**
   * The stored bytes [startLsn, min(startLsn + maxBytes, flushLsn)). Reading below firstLsn fails
   * with code 'wal_removed'; reading beyond flushLsn is refused.
   */
  async read(startLsn: Lsn, maxBytes: number): Promise<Buffer> {
    this.checkUsable('read');
    if (!Number.isInteger(maxBytes) || maxBytes < 0) {
      throw new WalStorageError('safekeeper_wal_bad_argument', `WAL read size ${maxBytes} is not a non-negative integer`, { dir: this.dir });
    }
    if (startLsn < this._firstLsn) throw this.removedError(startLsn);
    const flush = this._flushLsn;
    if (startLsn > flush) {
      throw new WalStorageError('safekeeper_wal_bad_argument', `WAL read at ${formatLsn(startLsn)} is beyond the flushed WAL, which ends at ${formatLsn(flush)} (${this.dir})`,
        { dir: this.dir, lsn: formatLsn(startLsn), flushLsn: formatLsn(flush) });
    }
    const want = Math.min(maxBytes, WAL_READ_MAX_BYTES);
    const end = startLsn + BigInt(want) < flush ? startLsn + BigInt(want) : flush;
    const out = Buffer.allocUnsafe(Number(end - startLsn));
    let lsn = startLsn;
    while (lsn < end) {
      const segNo = lsn / this.seg;
      const segOff = lsn % this.seg;
      const segEnd = (segNo + 1n) * this.seg;
      const n = Number((segEnd < end ? segEnd : end) - lsn);
      const fh = await this.openForRead(segNo, lsn);
      try {
        const got = await readFully(fh, out, Number(lsn - startLsn), n, Number(segOff));
        if (got < n) {
          throw new WalStorageError('safekeeper_wal_missing',
            `WAL segment file ${this.segmentFileName(segNo)} in ${this.dir} ends before ${formatLsn(lsn + BigInt(n))}, which was flushed`, { dir: this.dir, lsn: formatLsn(lsn + BigInt(got)) });
        }
      } finally {
        await fh.close();
      }
      lsn += BigInt(n);
    }
    return out;
  }

  private async openForRead(segNo: bigint, lsn: Lsn): Promise<FileHandle> {
    // The file may be renamed (partial → final at flush, final → partial at truncate) while we
    // look: try both names, twice.
    for (let attempt = 0; attempt < 2; attempt++) {
      for (const partial of [false, true]) {
        try {
          return await open(this.segPath(segNo, partial), 'r');
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
        }
      }
    }
    if (lsn < this._firstLsn) throw this.removedError(lsn);
    throw new WalStorageError('safekeeper_wal_missing', `WAL segment file ${this.segmentFileName(segNo)} holding ${formatLsn(lsn)} is missing from ${this.dir}`,
      { dir: this.dir, lsn: formatLsn(lsn) });
  }

  private removedError(lsn: Lsn): WalStorageError {
    const name = this.segmentFileName(lsn / this.seg);
    return new WalStorageError('wal_removed',
      `requested WAL segment ${name} has already been removed: WAL at ${formatLsn(lsn)} is below the oldest stored LSN ${formatLsn(this._firstLsn)} (${this.dir})`,
      { dir: this.dir, segment: name, lsn: formatLsn(lsn), firstLsn: formatLsn(this._firstLsn) });
  }

  /** Closes the files. Does not flush: unflushed bytes are treated as after a crash on reopen. */
  close(): Promise<void> {
    if (this.closed) return Promise.resolve();
    const run = this.tail.then(async () => {
      if (this.closed) return;
      this.closed = true;
      const handles = [...this.completed, ...(this.current !== null ? [this.current] : [])];
      this.completed = [];
      this.current = null;
      for (const h of handles) await h.fh.close().catch(() => undefined);
    });
    this.tail = run.catch(() => undefined);
    return run;
  }

  // -------------------------------------------------------------------------------------------
  // Recovery

  /** Segment files of the directory (timeline 1), by segment number. */
  private async listSegments(): Promise<Map<bigint, SegmentFile>> {
    const files = new Map<bigint, SegmentFile>();
    for (const name of await readdir(this.dir)) {
      const p = parseWalSegmentFileName(name, this.segmentSizeBytes);
      if (p === null) continue;
      if (p.timeline !== WAL_TIMELINE_ID) {
        this.log.warn('ignoring a WAL segment file of another timeline id', { file: name });
        continue;
      }
      if (files.has(p.segNo)) {
        throw new WalStorageError('safekeeper_wal_corrupt',
          `both ${this.segmentFileName(p.segNo)} and ${this.segmentFileName(p.segNo)}${PARTIAL_SUFFIX} exist in ${this.dir}; the safekeeper never makes both`,
          { dir: this.dir, file: name });
      }
      files.set(p.segNo, { segNo: p.segNo, partial: p.partial });
    }
    return files;
  }

  private async recover(recoverFrom: Lsn, chunkBytes: number): Promise<void> {
    const seg = this.seg;
    const segSize = this.segmentSizeBytes;
    // Leftover temporary files next to segments (e.g. a copy being made) are garbage.
    let removedTemp = 0;
    for (const name of await readdir(this.dir)) {
      if (name.endsWith(TEMP_SUFFIX) && /^[0-9A-F]{24}/.test(name)) {
        await unlink(path.join(this.dir, name));
        removedTemp++;
      }
    }

    const all = await this.listSegments();
    const localSeg = this.localStartLsn / seg;
    const files = new Map<bigint, SegmentFile>();
    for (const f of all.values()) {
      if (f.segNo < localSeg) {
        this.log.warn('ignoring a WAL segment before the timeline\'s local start', { file: this.segmentFileName(f.segNo), local_start_lsn: formatLsn(this.localStartLsn) });
      } else {
        files.set(f.segNo, f);
      }
    }
    const segNos = [...files.keys()].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
    const oldest = segNos[0];
    const firstLsn = oldest === undefined || oldest * seg < this.localStartLsn ? this.localStartLsn : oldest * seg;
    const sizeOf = async (segNo: bigint): Promise<number> => {
      const f = files.get(segNo);
      assert(f !== undefined, 'size of a segment that is not there', { segNo: segNo.toString() });
      const size = (await stat(this.segPath(segNo, f.partial))).size;
      if (size > segSize) {
        throw new WalStorageError('safekeeper_wal_corrupt', `WAL segment file ${this.segPath(segNo, f.partial)} has ${size} bytes, more than the segment size ${segSize}`,
          { dir: this.dir });
      }
      return size;
    };

    // Segments are removed only wholly below the flushed WAL, oldest first. If the recovery hint
    // is older than the oldest segment left, the hint was persisted before a removal: the oldest
    // segment's start (a page boundary, where the decoder skips a continued record) is then an
    // equally valid place to scan from.
    let start = recoverFrom;
    if (recoverFrom < firstLsn) {
      this.log.warn('WAL recovery hint is below the oldest stored segment; recovering from that segment', {
        recover_from_lsn: formatLsn(recoverFrom), first_lsn: formatLsn(firstLsn),
      });
      start = firstLsn;
    } else if (recoverFrom > firstLsn) {
      // The WAL below recoverFrom was durable: every byte of [firstLsn, recoverFrom) must be there.
      const lastSeg = (recoverFrom - 1n) / seg;
      for (let s = firstLsn / seg; s <= lastSeg; s++) {
        const need = s < lastSeg ? segSize : Number(recoverFrom - s * seg);
        const size = files.has(s) ? await sizeOf(s) : -1;
        if (size < need) {
          throw new WalStorageError('safekeeper_wal_missing',
            `durable WAL up to ${formatLsn(recoverFrom)} is missing in ${this.dir}: segment ${this.segmentFileName(s)} ${size < 0 ? 'does not exist' : `has only ${size} of ${need} bytes`}`,
            { dir: this.dir, lsn: formatLsn(recoverFrom), segment: this.segmentFileName(s) });
        }
      }
    }

    // Decode forward from `start`, segment by segment, until the WAL ends.
    const decoder = this.newDecoder(start);
    let dataEnd = start;
    let lastEnd = start; // end of the last record returned
    let prevEnd = start; // end of the one before
    let walEnd: WalEnd | null = null;
    const drain = (): void => {
      for (let guard = 0; guard < 100_000_000; guard++) {
        const item = decoder.next();
        if (item === null) return;
        if (item.kind === 'end') {
          walEnd = item;
          return;
        }
        prevEnd = lastEnd;
        lastEnd = item.record.endLsn;
      }
    };
    for (let s = start / seg; walEnd === null; s++) {
      const f = files.get(s);
      if (f === undefined) break;
      const size = await sizeOf(s);
      const from = s === start / seg ? Number(start % seg) : 0;
      if (size <= from) break;
      const fh = await open(this.segPath(s, f.partial), 'r');
      try {
        for (let pos = from; pos < size && walEnd === null;) {
          const n = Math.min(chunkBytes, size - pos);
          const buf = Buffer.allocUnsafe(n); // fresh: the decoder keeps references
          const got = await readFully(fh, buf, 0, n, pos);
          if (got === 0) break;
          decoder.push(buf.subarray(0, got));
          pos += got;
          dataEnd = s * seg + BigInt(pos);
          drain();
          if (got < n) break; // the file shrank under us; what we have is what there is
        }
      } finally {
        await fh.close();
      }
      if (size < segSize) break; // a short segment is the end of the WAL
    }
    if (walEnd === null) {
      decoder.finish();
      drain();
    }
    // The last record counts only if its padding is there too.
    const end = lastEnd <= dataEnd ? lastEnd : prevEnd;
    const endReason = (walEnd as WalEnd | null)?.reason ?? 'end of the segment files';
    if (start !== recoverFrom && end === start) {
      throw new WalStorageError('safekeeper_wal_missing',
        `no valid WAL in the oldest stored segment ${this.segmentFileName(start / seg)} of ${this.dir}, and the durable WAL from ${formatLsn(recoverFrom)} is gone (${endReason})`,
        { dir: this.dir, lsn: formatLsn(recoverFrom) });
    }
    if (end < dataEnd) {
      this.log.warn('cutting WAL after the last complete record', {
        end_lsn: formatLsn(end), data_end_lsn: formatLsn(dataEnd), cut_bytes: dataEnd - end, reason: endReason,
      });
    }

    // Make the files say exactly that: nothing after `end`, complete segments final, the one
    // holding `end` partial, all fsynced.
    const endSeg = end / seg;
    const endOff = end % seg;
    const firstGone = endOff === 0n ? endSeg : endSeg + 1n;
    let changed = removedTemp > 0;
    for (const s of [...segNos].reverse()) {
      if (s < firstGone) break;
      const f = files.get(s)!;
      await unlink(this.segPath(s, f.partial));
      files.delete(s);
      changed = true;
    }
    if (endOff !== 0n) {
      const f = files.get(endSeg);
      if (f !== undefined) {
        const fh = await open(this.segPath(endSeg, f.partial), 'r+');
        try {
          if ((await fh.stat()).size > Number(endOff)) await fh.truncate(Number(endOff));
          await fh.sync();
        } finally {
          await fh.close();
        }
        if (!f.partial) {
          await rename(this.segPath(endSeg, false), this.segPath(endSeg, true));
          files.set(endSeg, { segNo: endSeg, partial: true });
          changed = true;
        }
      } else {
        assert(end === this.localStartLsn, 'recovered WAL ends inside a segment that has no file', { lsn: formatLsn(end) });
      }
    }
    for (const s of segNos) {
      const f = files.get(s);
      if (f === undefined || s >= endSeg) continue; // below endSeg every segment is complete
      if (f.partial) {
        await this.completeSegment(s);
        files.set(s, { segNo: s, partial: false });
        changed = true;
      }
    }
    if (changed || end < dataEnd) await fsyncDir(this.dir);

    this._firstLsn = firstLsn;
    this._writeLsn = this._writeRecordLsn = this._flushLsn = this._flushRecordLsn = end;
    this.decoder = this.newDecoder(end);
    this.log.info('WAL recovered', {
      recover_from_lsn: formatLsn(recoverFrom), scan_start_lsn: formatLsn(start), end_lsn: formatLsn(end), first_lsn: formatLsn(firstLsn), reason: endReason,
      removed_temp_files: removedTemp,
    });
  }
}

/** A position a record can start at: 8-aligned and not inside a page header. */
function checkRecordPosition(lsn: Lsn, seg: bigint, what: string, dir: string): void {
  const pageOff = lsn % BigInt(XLOG_BLCKSZ);
  const hdr = lsn % seg < BigInt(XLOG_BLCKSZ) ? SIZE_OF_LONG_PAGE_HEADER : SIZE_OF_SHORT_PAGE_HEADER;
  if (lsn < 0n || lsn % 8n !== 0n || (pageOff !== 0n && pageOff < BigInt(hdr))) {
    throw new WalStorageError('safekeeper_wal_bad_argument',
      `${what} ${formatLsn(lsn)} is not a record boundary (it must be 8-aligned and not inside a page header) (${dir})`, { dir, lsn: formatLsn(lsn) });
  }
}

async function writeFully(fh: FileHandle, buf: Buffer, off: number, len: number, position: number): Promise<void> {
  let done = 0;
  for (let guard = 0; done < len; guard++) {
    assert(guard < 1_000_000, 'pwrite makes no progress', { position });
    const { bytesWritten } = await fh.write(buf, off + done, len - done, position + done);
    done += bytesWritten;
  }
}

/** Reads up to len bytes; returns how many (fewer only at end of file). */
async function readFully(fh: FileHandle, buf: Buffer, off: number, len: number, position: number): Promise<number> {
  let done = 0;
  for (let guard = 0; done < len; guard++) {
    assert(guard < 1_000_000, 'pread makes no progress', { position });
    const { bytesRead } = await fh.read(buf, off + done, len - done, position + done);
    if (bytesRead === 0) break;
    done += bytesRead;
  }
  return done;
}
