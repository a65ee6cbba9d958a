/**
 * Verify mode at ingest (tenant redo_mode = verify): one block reference that carries a
 * consistency-check image (an image without BKPIMAGE_APPLY, which only wal_consistency_checking
 * produces) is replayed with Strata's TypeScript redo on the block's previous version, and the
 * result is compared with PostgreSQL's image under PostgreSQL's masking rules for the rmgr.
 *
 * Why this exists next to the offline verifier (verify.ts): the offline verifier keeps its own page
 * cache and needs WAL files; in the pageserver the previous version of every block is already
 * stored, so this module needs no cache at all. It is handed the previous page (or a function that
 * reads it, so that no read happens when none is needed) and only decides and compares:
 *
 *   no TypeScript redo for the rmgr          -> 'unsupported' (nothing read)
 *   not willInit and no previous version     -> 'no_base'
 *   redo throws RedoError 'redo_unsupported' -> 'unsupported'
 *   redo throws anything else                -> 'failed' (with the error's message)
 *   masked pages equal                       -> 'verified'
 *   masked pages differ, or cannot be masked -> 'mismatched' (differing byte count, first offsets)
 *
 * The replay itself is index.ts's replayBlock (copy of the previous version, or zeroes for
 * willInit, then the registered redo function: tests inject faults with registerRmgrRedo), and the
 * masks are mask.ts's maskPage; nothing of either is repeated here.
 *
 * Invariants. The previous version and the image are never modified (our page is replayBlock's
 * private copy; the image is masked in a scratch copy), so the caller can go on storing the image
 * as the page: PostgreSQL's page stays the truth whatever we compute. Nothing is retained between
 * calls except the optional caller-owned scratch page.
 *
 * `RedoVerifyTally` is the per-timeline state the results go into: counters per (rmgr, record
 * type) and result, and the first N mismatches with where they happened. It is bounded by
 * construction — at most 256 rmgrs x 16 record types of counters (the record type is the high
 * nibble of xl_info, as pg_waldump names them for every rmgr that references blocks), at most
 * `maxMismatchesKept` mismatches, each with at most `maxDiffs` offsets — so a long-running
 * timeline in verify mode holds a few kilobytes however much WAL it ingests. The metrics scrape and
 * the HTTP report read it; ingest writes it.
 */
import { rmgrName, recordTypeName } from '../postgres/rmgr.ts';
import type { BlockRef, DecodedRecord } from '../postgres/xlogrecord.ts';
import { AssertionFailedError, StrataError } from '../util/errors.ts';
import { PAGE_BYTES, replayBlock, rmgrRedoFn } from './index.ts';
import { maskPage } from './mask.ts';
import { REDO_UNSUPPORTED } from './types.ts';

/** Result kinds, also the `result` label of pageserver_redo_verify_blocks_total. */
export const IngestVerifyResult = {
  verified: 'verified',
  mismatched: 'mismatched',
  unsupported: 'unsupported',
  failed: 'failed',
  noBase: 'no_base',
} as const;
export type IngestVerifyResult = (typeof IngestVerifyResult)[keyof typeof IngestVerifyResult];

/** Every result kind, in the order of RedoVerifyTypeCounts.counts. */
export const INGEST_VERIFY_RESULTS: readonly IngestVerifyResult[] = [
  IngestVerifyResult.verified, IngestVerifyResult.mismatched, IngestVerifyResult.unsupported, IngestVerifyResult.failed,
  IngestVerifyResult.noBase,
];
const RESULT_INDEX: Readonly<Record<IngestVerifyResult, number>> = {
  verified: 0, mismatched: 1, unsupported: 2, failed: 3, no_base: 4,
};

export const DEFAULT_MAX_DIFFS = 16;
export const DEFAULT_MAX_MISMATCHES_KEPT = 20;

/** One differing byte after masking: its offset in the page, our value and the image's. */
export interface PageByteDiff {
  offset: number;
  ours: number;
  theirs: number;
}

export interface BlockVerifyOutcome {
  readonly kind: IngestVerifyResult;
  /** Bytes that differ after masking ('mismatched' only; 0 when the pages could not be masked). */
  readonly differingBytes: number;
  /** The first differing bytes, at most `maxDiffs` ('mismatched' only). */
  readonly firstDiffs: readonly PageByteDiff[];
  /** Why: the redo error ('failed', 'unsupported'), or why the pages could not be compared. */
  readonly reason: string | null;
}

/** The previous version of the block: the page, null when there is none, or a function reading it. */
export type PreviousVersion = Uint8Array | null | (() => Uint8Array | null);

export interface BlockVerifyOptions {
  /** Differing offsets reported at most (default 16). */
  maxDiffs?: number;
  /** An 8192-byte buffer this call may overwrite (the masked copy of the image); allocated when absent. */
  scratch?: Buffer;
}

// The common results carry nothing: shared, so that a verified block allocates no result object.
const VERIFIED: BlockVerifyOutcome = Object.freeze({ kind: IngestVerifyResult.verified, differingBytes: 0, firstDiffs: Object.freeze([]), reason: null });
const NO_BASE: BlockVerifyOutcome = Object.freeze({ kind: IngestVerifyResult.noBase, differingBytes: 0, firstDiffs: Object.freeze([]), reason: null });

function outcome(kind: IngestVerifyResult, reason: string): BlockVerifyOutcome {
  return { kind, differingBytes: 0, firstDiffs: [], reason };
}

function message(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/**
 * Replays `block` of `rec` on the previous version with the TypeScript redo and compares the
 * result with `image` (the block's consistency image, restored: 8192 bytes) after masking both
 * with the rmgr's mask. Neither `previous` nor `image` is modified. Never throws for anything the
 * WAL, the pages or the redo can do; throws only on caller errors (an apply image, a wrong size).
 */
export function verifyBlockRedo(previous: PreviousVersion, rec: DecodedRecord, block: BlockRef, image: Uint8Array,
  opts: BlockVerifyOptions = {}): BlockVerifyOutcome {
  // (Checks written out rather than through assert(): no message string is built per block.)
  if (block.image === undefined || block.image.apply) {
    throw new AssertionFailedError('verifyBlockRedo is for consistency-check images only (image without BKPIMAGE_APPLY)', { blockId: block.id });
  }
  if (image.length !== PAGE_BYTES) throw new AssertionFailedError(`image is ${image.length} bytes, expected ${PAGE_BYTES}`, { blockId: block.id });
  if (rmgrRedoFn(rec.rmid) === undefined) return outcome(IngestVerifyResult.unsupported, `Strata has no TypeScript redo for rmgr ${rmgrName(rec.rmid)}`);

  let base: Uint8Array | null = null;
  if (!block.willInit) {
    try {
      base = typeof previous === 'function' ? previous() : previous;
    } catch (err) {
      return { ...NO_BASE, reason: `previous version unreadable: ${message(err)}` };
    }
    if (base === null) return NO_BASE;
  }

  let ours: Buffer;
  try {
    ours = replayBlock(base, rec, block);
  } catch (err) {
    const unsupported = err instanceof StrataError && err.code === REDO_UNSUPPORTED;
    return outcome(unsupported ? IngestVerifyResult.unsupported : IngestVerifyResult.failed, message(err));
  }

  const theirs = opts.scratch ?? Buffer.allocUnsafe(PAGE_BYTES);
  if (theirs.length !== PAGE_BYTES) throw new AssertionFailedError(`scratch is ${theirs.length} bytes, expected ${PAGE_BYTES}`);
  theirs.set(image);
  try {
    maskPage(rec.rmid, ours, block.blkno);
    maskPage(rec.rmid, theirs, block.blkno);
  } catch (err) {
    // An rmgr whose PostgreSQL mask is not reproduced cannot be compared: not a mismatch.
    if (err instanceof StrataError && err.code === 'mask_unsupported') return outcome(IngestVerifyResult.unsupported, message(err));
    return { kind: IngestVerifyResult.mismatched, differingBytes: 0, firstDiffs: [], reason: `pages could not be masked: ${message(err)}` };
  }
  if (ours.equals(theirs)) return VERIFIED;

  const maxDiffs = opts.maxDiffs ?? DEFAULT_MAX_DIFFS;
  const firstDiffs: PageByteDiff[] = [];
  let differing = 0;
  for (let i = 0; i < PAGE_BYTES; i++) {
    if (ours[i] === theirs[i]) continue;
    differing++;
    if (firstDiffs.length < maxDiffs) firstDiffs.push({ offset: i, ours: ours[i]!, theirs: theirs[i]! });
  }
  return { kind: IngestVerifyResult.mismatched, differingBytes: differing, firstDiffs, reason: null };
}

// ------------------------------------------------------------------------------------------------
// Per-timeline tally.

/** Counters of one (rmgr, record type): `counts[i]` is the number of blocks with INGEST_VERIFY_RESULTS[i]. */
export interface RedoVerifyTypeCounts {
  readonly rmid: number;
  readonly rmgr: string;
  readonly recordType: string;
  readonly counts: Float64Array;
}

/** The count of one result in `t`. */
export function resultCount(t: RedoVerifyTypeCounts, result: IngestVerifyResult): number {
  return t.counts[RESULT_INDEX[result]]!;
}

/** A kept mismatch: where it happened and how the pages differ. */
export interface KeptRedoMismatch {
  lsn: string;
  rmgr: string;
  recordType: string;
  /** The storage key, described (describeKey). */
  key: string;
  /** spcNode/dbNode/relNode. */
  rel: string;
  fork: string;
  blkno: number;
  differingBytes: number;
  firstDiffs: readonly PageByteDiff[];
  reason: string | null;
}

export interface RedoVerifyTallyOptions {
  maxMismatchesKept?: number;
}

export class RedoVerifyTally {
  readonly maxMismatchesKept: number;
  /** Key: rmid * 16 + (xl_info >> 4). */
  readonly #byType = new Map<number, RedoVerifyTypeCounts>();
  readonly #mismatches: KeptRedoMismatch[] = [];
  #mismatchesNotKept = 0;

  constructor(opts: RedoVerifyTallyOptions = {}) {
    const n = opts.maxMismatchesKept ?? DEFAULT_MAX_MISMATCHES_KEPT;
    if (!Number.isInteger(n) || n < 0) throw new RangeError(`maxMismatchesKept must be a non-negative integer, got ${n}`);
    this.maxMismatchesKept = n;
  }

  /** Counts one block of `rec` with `result`. No allocation once the record type has been seen. */
  count(rec: DecodedRecord, result: IngestVerifyResult): void {
    const key = rec.rmid * 16 + ((rec.info >>> 4) & 0x0f);
    let t = this.#byType.get(key);
    if (t === undefined) {
      t = { rmid: rec.rmid, rmgr: rmgrName(rec.rmid), recordType: recordTypeName(rec.rmid, rec.info & 0xf0), counts: new Float64Array(INGEST_VERIFY_RESULTS.length) };
      this.#byType.set(key, t);
    }
    const i = RESULT_INDEX[result];
    t.counts[i] = t.counts[i]! + 1;
  }

  /** Keeps `m` if fewer than maxMismatchesKept are kept; true when kept (the caller logs those). */
  keepMismatch(m: KeptRedoMismatch): boolean {
    if (this.#mismatches.length >= this.maxMismatchesKept) {
      this.#mismatchesNotKept++;
      return false;
    }
    this.#mismatches.push(m);
    return true;
  }

  /** Counters per record type, by rmid then record type name. */
  types(): RedoVerifyTypeCounts[] {
    return [...this.#byType.values()].sort((a, b) => a.rmid - b.rmid || (a.recordType < b.recordType ? -1 : a.recordType > b.recordType ? 1 : 0));
  }

  /** Sum of one result over every record type. */
  total(result: IngestVerifyResult): number {
    const i = RESULT_INDEX[result];
    let n = 0;
    for (const t of this.#byType.values()) n += t.counts[i]!;
    return n;
  }

  get mismatches(): readonly KeptRedoMismatch[] {
    return this.#mismatches;
  }

  get mismatchesNotKept(): number {
    return this.#mismatchesNotKept;
  }
}
