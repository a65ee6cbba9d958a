/**
 * The offline redo verifier: replays WAL with Strata's TypeScript redo and compares the result,
 * block by block, with the page images PostgreSQL logged for wal_consistency_checking.
 *
 * How it works. The verifier keeps the current version of every block it knows (a bounded cache,
 * see below). For each record, for each block reference, in block-id order:
 *   1. image marked for apply (a real full-page write): restore it; that is the new version (pd_lsn
 *      set to the record's end unless the page is new). No redo runs, nothing is compared — exactly
 *      what PostgreSQL does (comparing the image with itself would prove nothing). Counted 'restored'.
 *   2. otherwise, if Strata has redo for the rmgr: run it on the cached version (on a zeroed page
 *      when the block is willInit). Counted 'applied'. A block that is not cached and not willInit
 *      cannot be replayed: 'skipped_no_base' (not an error: the cache is bounded, and the WAL may
 *      start in the middle of things).
 *   3. if the block carries a consistency image (an image without APPLY): restore it, mask our page
 *      and the image with PostgreSQL's rm_mask rules for the rmgr (mask.ts), compare all 8192 bytes.
 *      Equal: 'verified'. Different: 'mismatched', and the first N mismatches are kept with the
 *      relation, block, LSN and the first differing byte offsets (masked values).
 *   The new version is stored. After a mismatch, a redo failure, an unsupported record or a missing
 *   base, the consistency image (when there is one) becomes the stored version — it is the primary's
 *   page after this record — so one error does not cascade into every later record of that block,
 *   and blocks of rmgrs without TypeScript redo stay usable as bases. Without an image the block is
 *   forgotten instead. Such replacements are counted as 'resynced'.
 *
 * Side effects PostgreSQL's redo has on pages that are not block references of the record:
 * - heap/heap2 records that clear PD_ALL_VISIBLE also clear the heap block's bits in the visibility
 *   map (visibilitymap_clear, no pd_lsn change). We apply that to cached VM pages so they hold what
 *   PostgreSQL's would. Note that a consistency check can never catch a wrong VM page: VISIBLE is a
 *   Heap2 record, heap_mask masks [pd_lower, pd_upper), and a VM page's whole bitmap lies there
 *   (pd_lower 24, pd_upper 8192). VM correctness is therefore tested by unit tests, not here.
 * - relations shrink or disappear without block references: smgr TRUNCATE (main fork from the new
 *   size; VM from the page holding the new end, which PostgreSQL partially clears; all of the FSM),
 *   smgr CREATE (a new, empty fork), transaction commit/abort with relations to drop, database
 *   create/drop (all pages of that database). Cached pages of those are forgotten. What would go
 *   wrong otherwise: a relfilenode or block number reused after a drop/truncate would find a stale
 *   page as its base. Most re-extensions start with a willInit record, which hides the problem, but
 *   not all (e.g. a page re-filled by a FILE_COPY database creation, which logs no page content),
 *   and the symptom would be a false mismatch. A record body we cannot parse clears the whole cache
 *   (safe, only costs coverage).
 * Not handled: FSM pages (never WAL-logged except as images; not compared); tablespace drops
 *   (dropping the databases' pages covers the cases seen in tests).
 *
 * Bounds. The cache holds at most `maxPages` pages (default 16384 = 128 MiB), least recently used
 * evicted first; an evicted block is re-learnt from its next image (every block reference carries one
 * under wal_consistency_checking = all), meanwhile its records count as 'skipped_no_base'. The
 * mismatch and failure lists keep the first `maxMismatchesKept` / `maxFailuresKept` entries and count
 * the rest. Scratch pages for images and masking are allocated once per verifier.
 *
 * Where the code is: this file holds the verifier itself (RedoVerifier, verifyWal,
 * runRedoVerifyOnFiles). The block cache is src/redo/verify/cache.ts; the report types, the
 * per-rmgr roll-up and the text formatting are src/redo/verify/report.ts. The public names of both
 * are re-exported here, so importers keep using this module.
 */
import { restoreBlockImage } from '../postgres/blockimage.ts';
import { formatLsn, type Lsn } from '../postgres/lsn.ts';
import { writePageLsn } from '../postgres/page.ts';
import {
  RM_DBASE_ID, RM_HEAP2_ID, RM_HEAP_ID, RM_SMGR_ID, RM_XACT_ID, recordTypeName, rmgrName,
} from '../postgres/rmgr.ts';
import { scanWal, type ScanWalOptions, type ScanWalResult } from '../postgres/walfiles.ts';
import {
  FORK_NAMES, FSM_FORKNUM, MAIN_FORKNUM, VISIBILITYMAP_FORKNUM, type BlockRef, type DecodedRecord, type RelFileNode,
} from '../postgres/xlogrecord.ts';
import {
  VISIBILITYMAP_ALL_FROZEN, VISIBILITYMAP_ALL_VISIBLE, XLOG_HEAP2_LOCK_UPDATED, XLOG_HEAP2_MULTI_INSERT, XLOG_HEAP_DELETE,
  XLOG_HEAP_HOT_UPDATE, XLOG_HEAP_INSERT, XLOG_HEAP_LOCK, XLOG_HEAP_OPMASK, XLOG_HEAP_UPDATE, parseHeapDelete,
  parseHeapInsert, parseHeapLock, parseHeapLockUpdated, parseHeapMultiInsert, parseHeapUpdate,
} from '../postgres/records/heap.ts';
import { XLOG_SMGR_CREATE, XLOG_SMGR_TRUNCATE, parseSmgrCreate, parseSmgrTruncate } from '../postgres/records/smgr.ts';
import {
  XLOG_XACT_ABORT, XLOG_XACT_ABORT_PREPARED, XLOG_XACT_COMMIT, XLOG_XACT_COMMIT_PREPARED, XLOG_XACT_OPMASK, parseXactFinish,
} from '../postgres/records/xact.ts';
import {
  XLOG_DBASE_CREATE_FILE_COPY, XLOG_DBASE_CREATE_WAL_LOG, XLOG_DBASE_DROP, parseDbaseCreateFileCopy, parseDbaseCreateWalLog,
  parseDbaseDrop,
} from '../postgres/records/dbase.ts';
import { StrataError } from '../util/errors.ts';
import { rmgrRedoFn } from './index.ts';
import { maskPage } from './mask.ts';
import { REDO_UNSUPPORTED, type BlockRedoFn } from './types.ts';
import { BlockCache, PAGE_BYTES, blockKey, sameRel, type CachedPage } from './verify/cache.ts';
import { emptyCounts, type ByteDiff, type RedoFailure, type RedoMismatch, type RedoTypeStats, type VerifyReport } from './verify/report.ts';

export { formatVerifyReport, statsByRmgr } from './verify/report.ts';
export type { ByteDiff, RedoFailure, RedoMismatch, RedoTypeStats, VerifyReport } from './verify/report.ts';

/** Heap blocks per visibility-map page: (8192 - 24-byte header) * 4 (two bits each). */
const VM_HEAPBLOCKS_PER_PAGE = (PAGE_BYTES - 24) * 4;
const VM_MAP_OFFSET = 24;

export const DEFAULT_MAX_PAGES = 16384;
export const DEFAULT_MAX_MISMATCHES_KEPT = 20;
export const DEFAULT_MAX_FAILURES_KEPT = 20;
export const DEFAULT_MAX_DIFFS_PER_MISMATCH = 16;

export interface VerifyOptions {
  /** Bound of the page cache (pages of 8 KiB). Default 16384 (128 MiB). */
  maxPages?: number;
  maxMismatchesKept?: number;
  maxFailuresKept?: number;
  /** Differing byte offsets kept per mismatch. */
  maxDiffsPerMismatch?: number;
  /** Which redo function serves an rmgr; default: the dispatcher's registry (index.ts). */
  redoFor?: (rmid: number) => BlockRedoFn | undefined;
  /** Called for every mismatch (also those not kept), e.g. to log it. */
  onMismatch?: (m: RedoMismatch) => void;
}

function relText(r: RelFileNode): string {
  return `${r.spcNode}/${r.dbNode}/${r.relNode}`;
}

const HEADER_FIELDS: readonly [number, string][] = [
  [0, 'pd_lsn'], [8, 'pd_checksum'], [10, 'pd_flags'], [12, 'pd_lower'], [14, 'pd_upper'], [16, 'pd_special'],
  [18, 'pd_pagesize_version'], [20, 'pd_prune_xid'],
];

function describeOffset(page: Uint8Array, offset: number): string {
  if (offset < 24) {
    let name = 'pd_lsn';
    for (const [at, n] of HEADER_FIELDS) if (offset >= at) name = n;
    return `header ${name}`;
  }
  const lower = page[12]! | (page[13]! << 8);
  const special = page[16]! | (page[17]! << 8);
  if (offset < lower) return `line pointer ${Math.floor((offset - 24) / 4) + 1}`;
  if (special > 0 && special <= PAGE_BYTES && offset >= special) return `special +${offset - special}`;
  return 'tuple area';
}

/**
 * The verifier's state machine, one record at a time (synchronous: images are restored with the
 * synchronous codecs). Use `verifyWal` / `runRedoVerifyOnFiles` unless you drive records yourself.
 */
export class RedoVerifier {
  readonly #maxMismatches: number;
  readonly #maxFailures: number;
  readonly #maxDiffs: number;
  readonly #redoFor: (rmid: number) => BlockRedoFn | undefined;
  readonly #onMismatch: ((m: RedoMismatch) => void) | undefined;
  readonly #cache: BlockCache;
  readonly #stats = new Map<string, RedoTypeStats>();
  readonly #mismatches: RedoMismatch[] = [];
  #mismatchesNotKept = 0;
  readonly #failures: RedoFailure[] = [];
  #failuresNotKept = 0;
  #records = 0;
  #firstLsn: Lsn | null = null;
  #lastEndLsn: Lsn | null = null;
  #resynced = 0;
  #vmClears = 0;
  /** Scratch: the restored consistency image, and the two masked copies. */
  readonly #image = Buffer.alloc(PAGE_BYTES);
  readonly #maskedOurs = Buffer.alloc(PAGE_BYTES);
  readonly #maskedTheirs = Buffer.alloc(PAGE_BYTES);

  constructor(opts: VerifyOptions = {}) {
    const positive = (name: string, v: number | undefined, d: number): number => {
      const x = v ?? d;
      if (!Number.isInteger(x) || x < 0) throw new RangeError(`${name} must be a non-negative integer, got ${x}`);
      return x;
    };
    this.#cache = new BlockCache(Math.max(1, positive('maxPages', opts.maxPages, DEFAULT_MAX_PAGES)));
    this.#maxMismatches = positive('maxMismatchesKept', opts.maxMismatchesKept, DEFAULT_MAX_MISMATCHES_KEPT);
    this.#maxFailures = positive('maxFailuresKept', opts.maxFailuresKept, DEFAULT_MAX_FAILURES_KEPT);
    this.#maxDiffs = positive('maxDiffsPerMismatch', opts.maxDiffsPerMismatch, DEFAULT_MAX_DIFFS_PER_MISMATCH);
    this.#redoFor = opts.redoFor ?? rmgrRedoFn;
    this.#onMismatch = opts.onMismatch;
  }

  // ---- bookkeeping -----------------------------------------------------------------------------

  #statsFor(rec: DecodedRecord): RedoTypeStats {
    const type = recordTypeName(rec.rmid, rec.info);
    const k = `${rec.rmid}\u0000${type}`;
    let s = this.#stats.get(k);
    if (s === undefined) {
      s = { rmid: rec.rmid, rmgr: rmgrName(rec.rmid), type, ...emptyCounts() };
      this.#stats.set(k, s);
    }
    return s;
  }

  #fail(rec: DecodedRecord, b: BlockRef | null, err: unknown): void {
    if (this.#failures.length >= this.#maxFailures) {
      this.#failuresNotKept++;
      return;
    }
    this.#failures.push({
      rmgr: rmgrName(rec.rmid), type: recordTypeName(rec.rmid, rec.info), lsn: formatLsn(rec.lsn),
      blockId: b?.id ?? null, rel: b === null ? null : relText(b.rnode), fork: b === null ? null : (FORK_NAMES[b.forkNum] ?? `fork${b.forkNum}`),
      blkno: b?.blkno ?? null,
      code: err instanceof StrataError ? err.code : 'error',
      message: err instanceof Error ? err.message : String(err),
    });
  }

  /** Restores the block's consistency image into #image; false (failure recorded) if it cannot. */
  #restoreCheckImage(rec: DecodedRecord, b: BlockRef, s: RedoTypeStats): boolean {
    try {
      restoreBlockImage(rec, b, this.#image);
      return true;
    } catch (err) {
      s.failed++;
      this.#fail(rec, b, err);
      return false;
    }
  }

  /** Replaces the block's version by its consistency image (pd_lsn as redo would set it), or forgets it. */
  #resyncOrForget(rec: DecodedRecord, b: BlockRef, key: string, s: RedoTypeStats, imageRestored: boolean): void {
    if (b.image !== undefined && (imageRestored || this.#restoreCheckImage(rec, b, s))) {
      const e = this.#cache.slot(key, b);
      this.#image.copy(e.page);
      if (!(e.page[14] === 0 && e.page[15] === 0)) writePageLsn(e.page, rec.endLsn);
      this.#resynced++;
      return;
    }
    this.#cache.forget(key);
  }

  // ---- the per-record step ---------------------------------------------------------------------

  /** Processes one record (records must come in WAL order). Never throws for WAL content problems. */
  apply(rec: DecodedRecord): void {
    this.#records++;
    this.#firstLsn ??= rec.lsn;
    this.#lastEndLsn = rec.endLsn;
    const s = this.#statsFor(rec);
    s.records++;
    for (const b of rec.blocks) this.#applyBlock(rec, b, s);
    this.#sideEffects(rec, s);
  }

  #applyBlock(rec: DecodedRecord, b: BlockRef, s: RedoTypeStats): void {
    s.blocks++;
    const key = blockKey(b.rnode, b.forkNum, b.blkno);
    const image = b.image;
    if (image !== undefined && image.apply) {
      const e = this.#cache.slot(key, b);
      try {
        restoreBlockImage(rec, b, e.page);
      } catch (err) {
        s.failed++;
        this.#fail(rec, b, err);
        this.#cache.forget(key);
        return;
      }
      if (!(e.page[14] === 0 && e.page[15] === 0)) writePageLsn(e.page, rec.endLsn);
      s.restored++;
      return;
    }

    const fn = this.#redoFor(rec.rmid);
    if (fn === undefined) {
      s.unsupported++;
      this.#resyncOrForget(rec, b, key, s, false);
      return;
    }
    let e: CachedPage | undefined;
    if (b.willInit) {
      e = this.#cache.slot(key, b);
      e.page.fill(0);
    } else {
      e = this.#cache.get(key);
      if (e === undefined) {
        s.skippedNoBase++;
        this.#resyncOrForget(rec, b, key, s, false);
        return;
      }
    }
    try {
      fn(e.page, rec, b.id, rec.endLsn);
    } catch (err) {
      // The page may be half-written: never keep it.
      if (err instanceof StrataError && err.code === REDO_UNSUPPORTED) {
        s.unsupported++;
      } else {
        s.failed++;
        this.#fail(rec, b, err);
      }
      this.#resyncOrForget(rec, b, key, s, false);
      return;
    }
    s.applied++;
    if (image === undefined) return;
    if (!this.#restoreCheckImage(rec, b, s)) {
      this.#cache.forget(key);
      return;
    }
    const ours = this.#maskedOurs;
    const theirs = this.#maskedTheirs;
    e.page.copy(ours);
    this.#image.copy(theirs);
    let reason: string | undefined;
    try {
      maskPage(rec.rmid, ours, b.blkno);
      maskPage(rec.rmid, theirs, b.blkno);
    } catch (err) {
      reason = `pages could not be masked: ${err instanceof Error ? err.message : String(err)}`;
    }
    if (reason === undefined && ours.equals(theirs)) {
      s.verified++;
      return;
    }
    s.mismatched++;
    const m = this.#describeMismatch(rec, b, reason);
    this.#onMismatch?.(m);
    if (this.#mismatches.length < this.#maxMismatches) this.#mismatches.push(m);
    else this.#mismatchesNotKept++;
    this.#resyncOrForget(rec, b, key, s, true);
  }

  #describeMismatch(rec: DecodedRecord, b: BlockRef, reason: string | undefined): RedoMismatch {
    const ours = this.#maskedOurs;
    const theirs = this.#maskedTheirs;
    let differing = 0;
    const firstDiffs: ByteDiff[] = [];
    if (reason === undefined) {
      for (let i = 0; i < PAGE_BYTES; i++) {
        if (ours[i] === theirs[i]) continue;
        differing++;
        if (firstDiffs.length < this.#maxDiffs) firstDiffs.push({ offset: i, where: describeOffset(this.#image, i), ours: ours[i]!, theirs: theirs[i]! });
      }
    }
    return {
      rmgr: rmgrName(rec.rmid), type: recordTypeName(rec.rmid, rec.info), lsn: formatLsn(rec.lsn), endLsn: formatLsn(rec.endLsn),
      blockId: b.id, rel: relText(b.rnode), fork: FORK_NAMES[b.forkNum] ?? `fork${b.forkNum}`, blkno: b.blkno,
      differingBytes: differing, firstDiffs, ...(reason !== undefined ? { reason } : {}),
    };
  }

  // ---- records that change pages without block references ---------------------------------------

  #sideEffects(rec: DecodedRecord, s: RedoTypeStats): void {
    const op = rec.info & 0xf0;
    try {
      switch (rec.rmid) {
        case RM_HEAP_ID:
        case RM_HEAP2_ID:
          this.#clearVmBits(rec);
          return;
        case RM_SMGR_ID:
          if (op === XLOG_SMGR_CREATE) {
            const c = parseSmgrCreate(rec);
            this.#cache.dropWhere((e) => sameRel(e, c.rnode) && e.forkNum === c.forkNum);
          } else if (op === XLOG_SMGR_TRUNCATE) {
            const t = parseSmgrTruncate(rec);
            const vmFrom = Math.floor(t.blkno / VM_HEAPBLOCKS_PER_PAGE);
            this.#cache.dropWhere((e) => sameRel(e, t.rnode) && (
              (t.truncateHeap && e.forkNum === MAIN_FORKNUM && e.blkno >= t.blkno) ||
              (t.truncateVm && e.forkNum === VISIBILITYMAP_FORKNUM && e.blkno >= vmFrom) ||
              (t.truncateFsm && e.forkNum === FSM_FORKNUM)));
          }
          return;
        case RM_XACT_ID: {
          const xop = rec.info & XLOG_XACT_OPMASK;
          if (xop === XLOG_XACT_COMMIT || xop === XLOG_XACT_ABORT || xop === XLOG_XACT_COMMIT_PREPARED || xop === XLOG_XACT_ABORT_PREPARED) {
            const rels = parseXactFinish(rec).relfilenodes;
            if (rels.length > 0) this.#cache.dropWhere((e) => rels.some((r) => sameRel(e, r)));
          }
          return;
        }
        case RM_DBASE_ID: {
          let db: number | null = null;
          if (op === XLOG_DBASE_CREATE_FILE_COPY) db = parseDbaseCreateFileCopy(rec).dbId;
          else if (op === XLOG_DBASE_CREATE_WAL_LOG) db = parseDbaseCreateWalLog(rec).dbId;
          else if (op === XLOG_DBASE_DROP) db = parseDbaseDrop(rec).dbId;
          if (db !== null) this.#cache.dropWhere((e) => e.dbNode === db);
          return;
        }
        default:
          return;
      }
    } catch (err) {
      // We cannot tell which pages the record invalidates: forget them all (coverage, not correctness).
      s.failed++;
      this.#fail(rec, null, err);
      this.#cache.dropWhere(() => true);
    }
  }

  /** PostgreSQL's visibilitymap_clear side effect of heap records, on cached VM pages. */
  #clearVmBits(rec: DecodedRecord): void {
    const op = rec.info & XLOG_HEAP_OPMASK;
    let newBlock: BlockRef | undefined;
    let oldBlock: BlockRef | undefined;
    let flags = VISIBILITYMAP_ALL_VISIBLE | VISIBILITYMAP_ALL_FROZEN;
    if (rec.rmid === RM_HEAP_ID) {
      if (op === XLOG_HEAP_INSERT) {
        if (parseHeapInsert(rec).allVisibleCleared) newBlock = rec.blocks[0];
      } else if (op === XLOG_HEAP_DELETE) {
        if (parseHeapDelete(rec).allVisibleCleared) newBlock = rec.blocks[0];
      } else if (op === XLOG_HEAP_UPDATE || op === XLOG_HEAP_HOT_UPDATE) {
        const u = parseHeapUpdate(rec);
        if (u.newAllVisibleCleared) newBlock = rec.blocks[0];
        if (u.oldAllVisibleCleared) oldBlock = rec.blocks[1] ?? rec.blocks[0];
      } else if (op === XLOG_HEAP_LOCK) {
        if (parseHeapLock(rec).allFrozenCleared) { newBlock = rec.blocks[0]; flags = VISIBILITYMAP_ALL_FROZEN; }
      } else {
        return;
      }
    } else {
      if (op === XLOG_HEAP2_MULTI_INSERT) {
        if (parseHeapMultiInsert(rec).allVisibleCleared) newBlock = rec.blocks[0];
      } else if (op === XLOG_HEAP2_LOCK_UPDATED) {
        if (parseHeapLockUpdated(rec).allFrozenCleared) { newBlock = rec.blocks[0]; flags = VISIBILITYMAP_ALL_FROZEN; }
      } else {
        return;
      }
    }
    for (const b of [newBlock, oldBlock]) {
      if (b === undefined) continue;
      const vmBlk = Math.floor(b.blkno / VM_HEAPBLOCKS_PER_PAGE);
      const e = this.#cache.peek(blockKey(b.rnode, VISIBILITYMAP_FORKNUM, vmBlk));
      if (e === undefined) continue;
      const inPage = b.blkno % VM_HEAPBLOCKS_PER_PAGE;
      const at = VM_MAP_OFFSET + (inPage >>> 2);
      e.page[at] = e.page[at]! & ~(flags << ((inPage & 3) * 2));
      this.#vmClears++;
    }
  }

  // ---- results -----------------------------------------------------------------------------------

  /** A copy of the verifier's current version of a block, if it has one (for tools and tests). */
  currentPage(rnode: RelFileNode, forkNum: number, blkno: number): Buffer | undefined {
    const e = this.#cache.peek(blockKey(rnode, forkNum, blkno));
    return e === undefined ? undefined : Buffer.from(e.page);
  }

  report(): VerifyReport {
    const types = [...this.#stats.values()].map((t) => ({ ...t }))
      .sort((a, b) => a.rmid - b.rmid || (a.type < b.type ? -1 : a.type > b.type ? 1 : 0));
    const totals = emptyCounts();
    for (const t of types) {
      for (const k of Object.keys(totals) as (keyof typeof totals)[]) totals[k] += t[k];
    }
    return {
      records: this.#records, firstLsn: this.#firstLsn, lastEndLsn: this.#lastEndLsn, types, totals,
      mismatches: [...this.#mismatches], mismatchesNotKept: this.#mismatchesNotKept,
      failures: [...this.#failures], failuresNotKept: this.#failuresNotKept,
      pages: {
        maxPages: this.#cache.maxPages, cachedAtEnd: this.#cache.size, evicted: this.#cache.evicted, dropped: this.#cache.dropped,
        resynced: this.#resynced, vmClears: this.#vmClears,
      },
    };
  }
}

/** Verifies a stream of records (in WAL order) and returns the report. */
export async function verifyWal(records: AsyncIterable<DecodedRecord> | Iterable<DecodedRecord>, opts: VerifyOptions = {}): Promise<VerifyReport> {
  const v = new RedoVerifier(opts);
  for await (const rec of records) v.apply(rec);
  return v.report();
}

/**
 * Verifies the WAL in segment files / directories (what `strata redo verify` will call). Records
 * are streamed (never all in memory). Returns the report and how the WAL read ended.
 */
export async function runRedoVerifyOnFiles(
  paths: string[],
  opts: VerifyOptions & { scan?: ScanWalOptions } = {},
): Promise<{ report: VerifyReport; end: ScanWalResult['end'] }> {
  const v = new RedoVerifier(opts);
  const r = await scanWal(paths, opts.scan ?? {}, (rec) => {
    v.apply(rec);
  });
  return { report: v.report(), end: r.end };
}
