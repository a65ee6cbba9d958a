/**
 * WAL ingest: every decoded PostgreSQL 15 record becomes key/value updates at its end LSN.
 *
 * Two kinds of effect (Neon brief §10):
 * 1. Per block reference, for every record: the block's new version. A full-page image is the
 *    page after the change (postgres15.md §2.1), so an image marked for apply, and in "images"
 *    redo mode also a wal_consistency_checking image, is stored as the page itself with pd_lsn set
 *    to the record's end (what redo would write; not for new pages, pd_upper = 0). Anything else
 *    stores the record, to be replayed on the previous version at read time. A block past the
 *    end of its relation extends it (zero pages in between), as PostgreSQL's smgr does.
 * 2. Per resource manager, the state PostgreSQL keeps outside relation pages: CLOG status (with
 *    commit timestamps), relation and database creation / drop / truncation, relmaps, two-phase
 *    state, SLRU page creation and truncation, multixacts, visibility-map bits cleared by heap
 *    records, and the running CheckPoint (nextXid, nextOid, nextMulti, oldest*) the basebackup
 *    needs to start a compute at any LSN.
 *
 * Each record is applied atomically through DatadirWriter (begin → changes → commit). A record
 * that cannot be ingested throws an IngestError naming it; the caller stops ingesting that
 * timeline rather than skip a record, since everything after it would build on a hole.
 * Records are copied when kept (the decoder hands out views into shared read buffers).
 *
 * Verify mode (the tenant's redo_mode = verify, read per record through WalIngestOptions.redoMode,
 * by default the timeline's live tenant config): a consistency image is still stored as the page
 * — PostgreSQL's page is the truth — and, before that, compared with Strata's redo applied to the
 * block's previous version (src/redo/ingestverify.ts). The previous version is read through the
 * timeline at last_record_lsn, i.e. with everything ingested before this record (each record is
 * committed to the open layer before the next one starts, so records of the same batch are
 * included), or from this record's own pending values. The result only goes into the timeline's
 * RedoVerifyTally (metrics, GET …/redo_verify) and the log; it never changes what is stored, and a
 * problem while comparing never fails the record.
 *
 * Every record WAL reaches a timeline through (walreceiver from a compute or safekeepers, WAL
 * files at bootstrap, a pg_basebackup import) is ingested here, so this is where the
 * pageserver_wal_ingest_records_received / _bytes_received counters move: once per record, after it
 * is applied (a record that fails is retried by the next session and counted then), by the WAL
 * span it covers (end − start LSN, page headers included, like the bytes a walsender streams).
 */
import { restoreBlockImage, restoreBlockImageAsync } from '../../postgres/blockimage.ts';
import { writePageLsn } from '../../postgres/page.ts';
import { VM_HEAPBLOCKS_PER_PAGE } from '../../storage/redo.ts';
import { formatLsn } from '../../postgres/lsn.ts';
import { IngestVerifyResult, verifyBlockRedo, type BlockVerifyOutcome } from '../../redo/ingestverify.ts';
import {
  parseClogTruncate, parseClogZeroPage, parseDbaseCreateFileCopy, parseDbaseCreateWalLog, parseDbaseDrop, parseHeapDelete,
  parseHeapInsert, parseHeapLock, parseHeapLockUpdated, parseHeapMultiInsert, parseHeapUpdate, parseMultiXactCreate,
  parseMultiXactTruncate, parseMultiXactZeroPage, parseNextOid, parseRelmapUpdate, parseSmgrCreate, parseSmgrTruncate,
  parseXactFinish, parseXactPrepare, parseCheckpointRecord,
  CLOG_TRUNCATE, CLOG_ZEROPAGE, XLOG_DBASE_CREATE_FILE_COPY, XLOG_DBASE_CREATE_WAL_LOG, XLOG_DBASE_DROP, XLOG_HEAP2_LOCK_UPDATED,
  XLOG_HEAP2_MULTI_INSERT, XLOG_HEAP_DELETE, XLOG_HEAP_HOT_UPDATE, XLOG_HEAP_INSERT, XLOG_HEAP_LOCK, XLOG_HEAP_OPMASK,
  XLOG_HEAP_UPDATE, XLOG_MULTIXACT_CREATE_ID, XLOG_MULTIXACT_TRUNCATE_ID, XLOG_MULTIXACT_ZERO_MEM_PAGE,
  XLOG_MULTIXACT_ZERO_OFF_PAGE, XLOG_RELMAP_UPDATE, XLOG_SMGR_CREATE, XLOG_SMGR_TRUNCATE, XLOG_XACT_ABORT,
  XLOG_XACT_ABORT_PREPARED, XLOG_XACT_COMMIT, XLOG_XACT_COMMIT_PREPARED, XLOG_XACT_OPMASK, XLOG_XACT_PREPARE,
  XLOG_CHECKPOINT_ONLINE, XLOG_CHECKPOINT_SHUTDOWN, XLOG_NEXTOID, VISIBILITYMAP_ALL_FROZEN, VISIBILITYMAP_ALL_VISIBLE,
  type CheckPoint,
} from '../../postgres/records/index.ts';
import {
  RM_CLOG_ID, RM_DBASE_ID, RM_HEAP2_ID, RM_HEAP_ID, RM_MULTIXACT_ID, RM_RELMAP_ID, RM_SMGR_ID, RM_XACT_ID, RM_XLOG_ID,
  recordTypeName, rmgrName,
} from '../../postgres/rmgr.ts';
import { FORK_NAMES, type BlockRef, type DecodedRecord } from '../../postgres/xlogrecord.ts';
import { StrataError } from '../../util/errors.ts';
import { ForkNumber, SlruKind, describeKey, relBlockKey, relMapFileKey, slruBlockKey, type RelTag } from '../../storage/key.ts';
import { ClogStatus, NO_BLOCK, type MultixactMember, type Value } from '../../storage/value.ts';
import { DatadirWriter, IngestError, PAGE_BYTES, ZERO_PAGE } from '../datadir/writer.ts';
import { relDirEntryRel } from '../datadir/dirs.ts';
import type { Timeline } from '../timeline/timeline.ts';
import type { TimelineMetrics } from '../metrics.ts';
import type { RedoMode } from '../tenantconfig.ts';
import {
  FIRST_MULTIXACT_ID, advanceNextXid, checkpointWithXids, clogPageOfXid, clogPagePrecedes, membersSegmentsToTruncate,
  multiXactIdPrecedes, multiXactOffsetPrecedes, multixactMemberPage, multixactOffsetPage, multixactOffsetPagePrecedes,
  previousMultiXactId, segmentOfPage, segmentsToTruncate, transactionIdPrecedes,
} from './xidmath.ts';

const VM_MAP_OFFSET = 24;
const VM_MAP_BYTES = PAGE_BYTES - VM_MAP_OFFSET;
/** FSM leaf slots per page (fsm_internals.h: NodesPerPage − NonLeafNodesPerPage). */
export const FSM_SLOTS_PER_PAGE = (PAGE_BYTES - 24 - 4) - (PAGE_BYTES / 2 - 1);
const FSM_TREE_DEPTH = 3;

/** Error codes that mean "this record cannot be ingested" (wrapped into an IngestError naming it). */
const RECORD_PROBLEM_CODES = new Set([
  'wal_record_body', 'wal_image_invalid', 'decompression_failed', 'invalid_input', 'directory_corrupt', 'value_corrupt', 'assertion_failed',
]);

/** How block images without BKPIMAGE_APPLY (wal_consistency_checking) are used. */
export type ConsistencyImageUse = 'store-image' | 'ignore';

export interface WalIngestOptions {
  /** 'store-image' (redo_mode = images): such an image is the page. Default 'store-image'. */
  consistencyImages?: ConsistencyImageUse;
  /**
   * The tenant's redo_mode now (it can change while ingest runs); 'verify' compares every stored
   * consistency image with Strata's redo. Default: the timeline's tenant config
   * (timeline.resources.config().redoMode).
   */
  redoMode?: () => RedoMode;
}

export { VM_HEAPBLOCKS_PER_PAGE };

/** Counters for metrics and logs. */
export interface IngestStats {
  records: number;
  walBytes: number;
  images: number;
  storedRecords: number;
}

/** FSM physical block of the leaf page that covers logical FSM page `logicalPage` (freespace.c). */
export function fsmLeafPhysicalBlock(logicalPage: number): number {
  let leaf = logicalPage;
  let pages = 0;
  for (let l = 0; l < FSM_TREE_DEPTH; l++) {
    pages += leaf + 1;
    leaf = Math.floor(leaf / FSM_SLOTS_PER_PAGE);
  }
  return pages - 1;
}

export class WalIngest {
  readonly timeline: Timeline;
  readonly writer: DatadirWriter;
  private readonly consistencyImages: ConsistencyImageUse;
  private readonly metrics: TimelineMetrics;
  private readonly redoMode: () => RedoMode;
  /** Verify mode's masked copy of the image; allocated on first use, reused. */
  private verifyScratch: Buffer | null = null;
  readonly stats: IngestStats = { records: 0, walBytes: 0, images: 0, storedRecords: 0 };
  /** Pages restored ahead of time by prepareImages(), by block reference; consumed by ingest(). */
  private readonly prepared = new Map<BlockRef, Buffer>();

  constructor(timeline: Timeline, opts: WalIngestOptions = {}) {
    this.timeline = timeline;
    this.writer = new DatadirWriter(timeline);
    this.consistencyImages = opts.consistencyImages ?? 'store-image';
    this.metrics = timeline.resources.metrics;
    const resources = timeline.resources;
    this.redoMode = opts.redoMode ?? (() => resources.config().redoMode);
  }

  /**
   * Restores the zstd-compressed images of `records` (the ones ingest will store as pages)
   * concurrently on the native thread pool, so that ingest() finds them ready: on Node < 22.15
   * the synchronous zstd decoder is pure JavaScript and was the bottleneck of ingest. Optional:
   * ingest() restores anything not prepared itself. Call with a bounded batch (one XLogData
   * message) and ingest those records next; the results are held until then.
   */
  async prepareImages(records: readonly DecodedRecord[]): Promise<void> {
    this.prepared.clear(); // leftovers of a batch that was not ingested (a failed session)
    const jobs: Promise<void>[] = [];
    for (const rec of records) {
      for (const block of rec.blocks) {
        const image = block.image;
        if (image === undefined || image.compression !== 'zstd' || !(image.apply || this.consistencyImages === 'store-image')) continue;
        jobs.push(restoreBlockImageAsync(rec, block, Buffer.allocUnsafe(PAGE_BYTES)).then((page) => {
          this.prepared.set(block, page as Buffer);
        }));
      }
    }
    // A failed restore is reported by ingest() for the record it belongs to (restoring again).
    await Promise.allSettled(jobs);
  }

  /** Ingests one record (synchronously; atomic). */
  ingest(rec: DecodedRecord): void {
    const w = this.writer;
    w.begin(rec.endLsn);
    try {
      this.apply(rec);
      w.commit(rec.lsn);
    } catch (err) {
      w.abort();
      // Problems with the record itself (its body, an image, a stored directory it changes) are
      // reported as an IngestError naming the record; anything else (I/O, timeline state) as is.
      if (err instanceof StrataError && !(err instanceof IngestError) && !RECORD_PROBLEM_CODES.has(err.code)) throw err;
      throw new IngestError(
        `cannot ingest ${recordTypeName(rec.rmid, rec.info)} record at ${formatLsn(rec.lsn)}: ${err instanceof Error ? err.message : String(err)}`,
        this.timeline.context({ lsn: formatLsn(rec.lsn), endLsn: formatLsn(rec.endLsn), record: recordTypeName(rec.rmid, rec.info) }));
    }
    this.stats.records++;
    this.stats.walBytes += rec.totLen;
    this.metrics.walRecordIngested(Number(rec.endLsn - rec.lsn));
    if (this.prepared.size > 0) for (const b of rec.blocks) this.prepared.delete(b);
  }

  private apply(rec: DecodedRecord): void {
    const w = this.writer;
    // Every xid in the WAL must stay below the nextXid a basebackup hands out.
    // (A VM page gets a value from a heap record only via the clears below: heap records that clear
    // bits do not register the VM buffer, and the writer asserts if two storage values collide.)
    if (rec.xid !== 0) this.advanceXid(rec.xid);

    if (rec.blocks.length > 0) this.ingestBlocks(rec);

    const op = rec.info & 0xf0;
    switch (rec.rmid) {
      case RM_HEAP_ID:
      case RM_HEAP2_ID:
        this.clearVmBits(rec);
        break;
      case RM_XACT_ID:
        this.ingestXact(rec);
        break;
      case RM_SMGR_ID:
        if (op === XLOG_SMGR_CREATE) {
          const b = parseSmgrCreate(rec);
          w.createRel({ ...b.rnode, forkNum: b.forkNum });
        } else if (op === XLOG_SMGR_TRUNCATE) {
          this.ingestSmgrTruncate(rec);
        }
        break;
      case RM_DBASE_ID:
        this.ingestDbase(rec, op);
        break;
      case RM_RELMAP_ID:
        if (op === XLOG_RELMAP_UPDATE) {
          const b = parseRelmapUpdate(rec);
          w.putRelmap(b.tsId, b.dbId, Buffer.from(b.data));
        }
        break;
      case RM_CLOG_ID:
        if (op === CLOG_ZEROPAGE) {
          const { segNo, blockNumber } = segmentOfPage(parseClogZeroPage(rec).pageno);
          w.putSlruPage(SlruKind.clog, segNo, blockNumber, { kind: 'image', image: ZERO_PAGE });
        } else if (op === CLOG_TRUNCATE) {
          const b = parseClogTruncate(rec);
          const cp = w.checkpoint;
          if (transactionIdPrecedes(cp.oldestXid, b.oldestXact)) w.setCheckpoint({ ...cp, oldestXid: b.oldestXact, oldestXidDb: b.oldestXactDb });
          for (const seg of segmentsToTruncate(w.slruSegments(SlruKind.clog), b.pageno, clogPagePrecedes)) w.dropSlruSegment(SlruKind.clog, seg);
        }
        break;
      case RM_MULTIXACT_ID:
        this.ingestMultixact(rec, op);
        break;
      case RM_XLOG_ID:
        this.ingestXlog(rec, op);
        break;
      default:
        // Index, sequence, generic and other rmgrs only change pages (handled per block);
        // standby, logical messages, replication origins and tablespaces need nothing stored.
        break;
    }
  }

  /** The per-record case of advanceXids, without allocating (it runs for every record). */
  private advanceXid(xid: number): void {
    const cp = this.writer.checkpoint;
    const next = advanceNextXid(cp.nextXid, xid);
    if (next !== null) this.writer.setCheckpoint({ ...cp, nextXid: next });
  }

  private advanceXids(xids: Iterable<number>): void {
    const next = checkpointWithXids(this.writer.checkpoint, xids);
    if (next !== null) this.writer.setCheckpoint(next);
  }

  // ---------------------------------------------------------------------------------------------
  // Blocks.

  private ingestBlocks(rec: DecodedRecord): void {
    let recordCopy: Buffer | null = null;
    for (const block of rec.blocks) {
      const rel: RelTag = { spcNode: block.rnode.spcNode, dbNode: block.rnode.dbNode, relNode: block.rnode.relNode, forkNum: block.forkNum };
      if (rel.relNode === 0) throw new IngestError(`block reference ${block.id} names relfilenode 0`, this.timeline.context());
      let value: Value;
      const image = block.image;
      if (image !== undefined && (image.apply || this.consistencyImages === 'store-image')) {
        const page = this.pageFromImage(rec, block);
        if (!image.apply && this.redoMode() === 'verify') this.verifyRedo(rec, block, rel, page);
        value = { kind: 'image', image: page };
        this.stats.images++;
      } else {
        recordCopy ??= Buffer.from(rec.bytes);
        value = { kind: 'pgRecord', willInit: block.willInit, recordLsn: rec.lsn, record: recordCopy };
        this.stats.storedRecords++;
      }
      this.writer.putRelBlock(rel, block.blkno, value);
    }
  }

  private pageFromImage(rec: DecodedRecord, block: BlockRef): Buffer {
    let page = this.prepared.get(block);
    if (page !== undefined) {
      this.prepared.delete(block);
    } else {
      page = Buffer.allocUnsafe(PAGE_BYTES);
      restoreBlockImage(rec, block, page);
    }
    const pdUpper = page.readUInt16LE(14);
    if (pdUpper !== 0) writePageLsn(page, rec.endLsn);
    return page;
  }

  /**
   * Verify mode: compares Strata's redo of `block` with its consistency image `page` (which is
   * stored as the page whatever the outcome) and counts the result. Never throws.
   */
  private verifyRedo(rec: DecodedRecord, block: BlockRef, rel: RelTag, page: Buffer): void {
    const tally = this.metrics.redoVerify;
    let result: BlockVerifyOutcome;
    try {
      this.verifyScratch ??= Buffer.allocUnsafe(PAGE_BYTES);
      result = verifyBlockRedo(() => this.previousVersion(rel, block.blkno), rec, block, page, { scratch: this.verifyScratch });
    } catch (err) {
      result = { kind: IngestVerifyResult.failed, differingBytes: 0, firstDiffs: [], reason: err instanceof Error ? err.message : String(err) };
    }
    tally.count(rec, result.kind);
    if (result.kind !== IngestVerifyResult.mismatched) return;
    const r = block.rnode;
    const m = {
      lsn: formatLsn(rec.lsn), rmgr: rmgrName(rec.rmid), recordType: recordTypeName(rec.rmid, rec.info),
      key: describeKey(relBlockKey(rel, block.blkno)), rel: `${r.spcNode}/${r.dbNode}/${r.relNode}`,
      fork: FORK_NAMES[block.forkNum] ?? `fork${block.forkNum}`, blkno: block.blkno,
      differingBytes: result.differingBytes, firstDiffs: result.firstDiffs, reason: result.reason,
    };
    if (tally.keepMismatch(m)) {
      this.timeline.log.warn('redo verify: Strata\'s redo differs from the consistency image (the image is stored)', {
        key: m.key, lsn: m.lsn, end_lsn: formatLsn(rec.endLsn), rmgr: m.rmgr, record_type: m.recordType, block_id: block.id,
        differing_bytes: m.differingBytes, first_diffs: m.firstDiffs.map((d) => `${d.offset}:${d.ours}/${d.theirs}`).join(','),
        ...(m.reason !== null ? { reason: m.reason } : {}),
      });
      if (tally.mismatches.length === tally.maxMismatchesKept) {
        this.timeline.log.warn('redo verify: mismatch log limit reached; further mismatches are only counted', { limit: tally.maxMismatchesKept });
      }
    }
  }

  /**
   * The block's version before the current record, or null when it has none: past the end of (or
   * in a missing) relation fork, as PostgreSQL's redo would find no page; from this record's own
   * pending values when an earlier block reference of it wrote one; else read at last_record_lsn.
   */
  private previousVersion(rel: RelTag, blkno: number): Buffer | null {
    const w = this.writer;
    const size = w.relSize(rel);
    if (size === null || blkno >= size) return null;
    const key = relBlockKey(rel, blkno);
    const pending = w.pendingValue(key);
    if (pending !== undefined) return pending.kind === 'image' ? pending.image : null;
    return w.readCommitted(key);
  }

  /** Heap records that clear PD_ALL_VISIBLE also clear the page's visibility-map bits. */
  private clearVmBits(rec: DecodedRecord): void {
    const op = rec.info & XLOG_HEAP_OPMASK;
    let newBlock: BlockRef | undefined;
    let oldBlock: BlockRef | undefined;
    let flags = VISIBILITYMAP_ALL_VISIBLE | VISIBILITYMAP_ALL_FROZEN;
    if (rec.rmid === RM_HEAP_ID) {
      switch (op) {
        case XLOG_HEAP_INSERT:
          if (parseHeapInsert(rec).allVisibleCleared) newBlock = rec.blocks[0];
          break;
        case XLOG_HEAP_DELETE:
          if (parseHeapDelete(rec).allVisibleCleared) newBlock = rec.blocks[0];
          break;
        case XLOG_HEAP_UPDATE:
        case XLOG_HEAP_HOT_UPDATE: {
          const b = parseHeapUpdate(rec);
          if (b.newAllVisibleCleared) newBlock = rec.blocks[0];
          if (b.oldAllVisibleCleared) oldBlock = rec.blocks[1] ?? rec.blocks[0];
          break;
        }
        case XLOG_HEAP_LOCK:
          if (parseHeapLock(rec).allFrozenCleared) { newBlock = rec.blocks[0]; flags = VISIBILITYMAP_ALL_FROZEN; }
          break;
        default:
          return;
      }
    } else {
      switch (op) {
        case XLOG_HEAP2_MULTI_INSERT:
          if (parseHeapMultiInsert(rec).allVisibleCleared) newBlock = rec.blocks[0];
          break;
        case XLOG_HEAP2_LOCK_UPDATED:
          if (parseHeapLockUpdated(rec).allFrozenCleared) { newBlock = rec.blocks[0]; flags = VISIBILITYMAP_ALL_FROZEN; }
          break;
        default:
          return;
      }
    }
    if (newBlock === undefined && oldBlock === undefined) return;
    const ref = (newBlock ?? oldBlock)!;
    const vmRel: RelTag = { ...ref.rnode, forkNum: ForkNumber.vm };
    const vmSize = this.writer.relSize(vmRel);
    if (vmSize === null) return; // no visibility map: nothing to clear
    const newHeap = newBlock?.blkno ?? NO_BLOCK;
    const oldHeap = oldBlock?.blkno ?? NO_BLOCK;
    const newVm = newHeap === NO_BLOCK ? -1 : Math.floor(newHeap / VM_HEAPBLOCKS_PER_PAGE);
    const oldVm = oldHeap === NO_BLOCK ? -1 : Math.floor(oldHeap / VM_HEAPBLOCKS_PER_PAGE);
    if (newVm === oldVm) {
      if (newVm < vmSize) this.writer.put(relBlockKey(vmRel, newVm), { kind: 'clearVmBits', newHeapBlock: newHeap, oldHeapBlock: oldHeap, flags });
      return;
    }
    if (newVm >= 0 && newVm < vmSize) this.writer.put(relBlockKey(vmRel, newVm), { kind: 'clearVmBits', newHeapBlock: newHeap, oldHeapBlock: NO_BLOCK, flags });
    if (oldVm >= 0 && oldVm < vmSize) this.writer.put(relBlockKey(vmRel, oldVm), { kind: 'clearVmBits', newHeapBlock: NO_BLOCK, oldHeapBlock: oldHeap, flags });
  }


  // ---------------------------------------------------------------------------------------------
  // Transactions.

  private ingestXact(rec: DecodedRecord): void {
    const w = this.writer;
    const op = rec.info & XLOG_XACT_OPMASK;
    if (op === XLOG_XACT_COMMIT || op === XLOG_XACT_ABORT || op === XLOG_XACT_COMMIT_PREPARED || op === XLOG_XACT_ABORT_PREPARED) {
      const b = parseXactFinish(rec);
      const committed = op === XLOG_XACT_COMMIT || op === XLOG_XACT_COMMIT_PREPARED;
      const xids = [b.xid, ...b.subxacts];
      this.advanceXids(xids);
      // Group by CLOG page: one storage record per page.
      const byPage = new Map<number, number[]>();
      for (const xid of xids) {
        const page = clogPageOfXid(xid);
        let list = byPage.get(page);
        if (list === undefined) byPage.set(page, list = []);
        list.push(xid);
      }
      for (const [page, list] of byPage) {
        const { segNo, blockNumber } = segmentOfPage(page);
        if (!w.slruPageExists(SlruKind.clog, segNo, blockNumber)) {
          throw new IngestError(`CLOG page ${page} for xid ${list[0]} does not exist (no ZEROPAGE record for it was ingested)`, this.timeline.context({ xid: list[0] }));
        }
        w.put(slruBlockKey(SlruKind.clog, segNo, blockNumber), {
          kind: 'clogSetStatus', status: committed ? ClogStatus.committed : ClogStatus.aborted, xids: list,
          timestampUs: committed ? b.xactTimeUs : null,
        });
      }
      for (const node of b.relfilenodes) {
        for (let fork = 0; fork <= 3; fork++) w.dropRel({ ...node, forkNum: fork });
      }
      if (op === XLOG_XACT_COMMIT_PREPARED || op === XLOG_XACT_ABORT_PREPARED) w.dropTwoPhase(b.xid);
    } else if (op === XLOG_XACT_PREPARE) {
      const b = parseXactPrepare(rec);
      this.advanceXids([b.xid, ...b.subxacts]);
      w.putTwoPhase(b.xid, Buffer.from(b.stateData));
    }
  }

  // ---------------------------------------------------------------------------------------------
  // Storage manager.

  private ingestSmgrTruncate(rec: DecodedRecord): void {
    const w = this.writer;
    const b = parseSmgrTruncate(rec);
    const main: RelTag = { ...b.rnode, forkNum: ForkNumber.main };
    if (b.truncateHeap) {
      const size = w.relSize(main);
      if (size !== null && size > b.blkno) w.setRelSize(main, b.blkno);
    }
    if (b.truncateFsm) {
      const fsm: RelTag = { ...b.rnode, forkNum: ForkNumber.fsm };
      const size = w.relSize(fsm);
      if (size !== null) {
        const slot = b.blkno % FSM_SLOTS_PER_PAGE;
        const phys = fsmLeafPhysicalBlock(Math.floor(b.blkno / FSM_SLOTS_PER_PAGE));
        let newSize = phys;
        if (slot !== 0) {
          // PostgreSQL clears the truncated slots of the last FSM page; the FSM is only a hint,
          // so a zero page (no free space recorded) is an equally valid and simpler result.
          if (phys < size) w.put(relBlockKey(fsm, phys), { kind: 'image', image: ZERO_PAGE });
          newSize = phys + 1;
        }
        if (size > newSize) w.setRelSize(fsm, newSize);
      }
    }
    if (b.truncateVm) {
      const vm: RelTag = { ...b.rnode, forkNum: ForkNumber.vm };
      const size = w.relSize(vm);
      if (size !== null) {
        const truncBlock = Math.floor(b.blkno / VM_HEAPBLOCKS_PER_PAGE);
        const inPage = b.blkno % VM_HEAPBLOCKS_PER_PAGE;
        const truncByte = Math.floor(inPage / 4);
        const truncOffset = (inPage % 4) * 2;
        let newSize = truncBlock;
        if (truncByte !== 0 || truncOffset !== 0) {
          newSize = truncBlock + 1;
          if (truncBlock < size) w.put(relBlockKey(vm, truncBlock), { kind: 'image', image: this.vmPageTruncated(vm, truncBlock, truncByte, truncOffset) });
        }
        if (size > newSize) w.setRelSize(vm, newSize);
      }
    }
  }

  /** visibilitymap_prepare_truncate: clear the bits of heap blocks at and after the cut. */
  private vmPageTruncated(vm: RelTag, block: number, truncByte: number, truncOffset: number): Buffer {
    let current: Buffer | null = null;
    try {
      current = this.writer.readRelBlock(vm, block);
    } catch (err) {
      // Clearing every bit is always safe for the VM ("not known all-visible"); say so loudly.
      this.timeline.log.warn('visibility map page unreadable at truncation; storing it with all bits cleared', {
        block, reason: err instanceof Error ? err.message : String(err),
      });
    }
    if (current === null || current.length !== PAGE_BYTES) return ZERO_PAGE;
    const page = Buffer.from(current);
    page.fill(0, VM_MAP_OFFSET + truncByte + 1, VM_MAP_OFFSET + VM_MAP_BYTES);
    page[VM_MAP_OFFSET + truncByte] = page[VM_MAP_OFFSET + truncByte]! & ((1 << truncOffset) - 1);
    return page;
  }

  // ---------------------------------------------------------------------------------------------
  // Databases.

  private ingestDbase(rec: DecodedRecord, op: number): void {
    const w = this.writer;
    if (op === XLOG_DBASE_CREATE_FILE_COPY) {
      const b = parseDbaseCreateFileCopy(rec);
      // The new database is a copy of the template as of this record: relmap, every relation
      // fork with its size and every block (as images; they are read at the last ingested LSN).
      const src = w.relDir(b.srcTablespaceId, b.srcDbId);
      const srcMap = w.readCommitted(relMapFileKey(b.srcTablespaceId, b.srcDbId));
      w.ensureDb(b.tablespaceId, b.dbId, false);
      w.setRelDir(b.tablespaceId, b.dbId, new Set(src));
      if (srcMap !== null) w.putRelmap(b.tablespaceId, b.dbId, Buffer.from(srcMap));
      for (const entry of src) {
        const { relNode, forkNum } = relDirEntryRel(entry);
        const from: RelTag = { spcNode: b.srcTablespaceId, dbNode: b.srcDbId, relNode, forkNum };
        const to: RelTag = { spcNode: b.tablespaceId, dbNode: b.dbId, relNode, forkNum };
        const size = w.relSize(from) ?? 0;
        w.setRelSize(to, size);
        for (let blk = 0; blk < size; blk++) {
          const page = w.readRelBlock(from, blk);
          if (page === null) throw new IngestError(`template block ${blk} of ${relNode} fork ${forkNum} is missing`, this.timeline.context());
          w.put(relBlockKey(to, blk), { kind: 'image', image: Buffer.from(page) });
        }
      }
    } else if (op === XLOG_DBASE_CREATE_WAL_LOG) {
      // The contents follow as their own records (relmap update, smgr creates, page images);
      // the database starts empty, even if an older one with this OID was dropped.
      const b = parseDbaseCreateWalLog(rec);
      w.ensureDb(b.tablespaceId, b.dbId, false);
      w.setRelDir(b.tablespaceId, b.dbId, new Set());
    } else if (op === XLOG_DBASE_DROP) {
      const b = parseDbaseDrop(rec);
      for (const spc of b.tablespaceIds) w.dropDb(spc, b.dbId);
    }
  }

  // ---------------------------------------------------------------------------------------------
  // MultiXacts.

  private ingestMultixact(rec: DecodedRecord, op: number): void {
    const w = this.writer;
    if (op === XLOG_MULTIXACT_ZERO_OFF_PAGE || op === XLOG_MULTIXACT_ZERO_MEM_PAGE) {
      const kind = op === XLOG_MULTIXACT_ZERO_OFF_PAGE ? SlruKind.multixactOffsets : SlruKind.multixactMembers;
      const { segNo, blockNumber } = segmentOfPage(parseMultiXactZeroPage(rec).pageno);
      w.putSlruPage(kind, segNo, blockNumber, { kind: 'image', image: ZERO_PAGE });
    } else if (op === XLOG_MULTIXACT_CREATE_ID) {
      const b = parseMultiXactCreate(rec);
      let next = (b.mid + 1) >>> 0;
      if (next < FIRST_MULTIXACT_ID) next = FIRST_MULTIXACT_ID;
      let nextOffset = (b.moff + b.nmembers) >>> 0;
      if (nextOffset === 0) nextOffset = 1; // GetNewMultiXactId skips offset 0
      // Offsets: this multixact's, and the next one's (RecordNewMultiXact sets both).
      const page = multixactOffsetPage(b.mid);
      const nextPage = multixactOffsetPage(next);
      const here = segmentOfPage(page);
      this.requireSlruPage(SlruKind.multixactOffsets, here.segNo, here.blockNumber, `multixact ${b.mid}`);
      if (nextPage === page) {
        w.put(slruBlockKey(SlruKind.multixactOffsets, here.segNo, here.blockNumber),
          { kind: 'multixactOffset', multi: b.mid, offset: b.moff, next: { multi: next, offset: nextOffset } });
      } else {
        w.put(slruBlockKey(SlruKind.multixactOffsets, here.segNo, here.blockNumber), { kind: 'multixactOffset', multi: b.mid, offset: b.moff });
        const there = segmentOfPage(nextPage);
        if (w.slruPageExists(SlruKind.multixactOffsets, there.segNo, there.blockNumber)) {
          w.put(slruBlockKey(SlruKind.multixactOffsets, there.segNo, there.blockNumber), { kind: 'multixactOffset', multi: next, offset: nextOffset });
        } else {
          // WAL from PostgreSQL before 15.16 logs the next page's ZERO_OFF_PAGE only later;
          // recovery then creates the page here (RecordNewMultiXact): a zero page holding the
          // next multixact's offset, stored as one image.
          const pageImage = Buffer.alloc(PAGE_BYTES);
          pageImage.writeUInt32LE(nextOffset, (next % 2048) * 4);
          w.putSlruPage(SlruKind.multixactOffsets, there.segNo, there.blockNumber, { kind: 'image', image: pageImage });
        }
      }
      // Members: the whole list under every members page it touches; redo writes each page's share.
      const members: MultixactMember[] = b.members.map((m) => ({ xid: m.xid, status: m.status }));
      const pages = new Set<number>();
      for (let i = 0; i < b.nmembers; i++) pages.add(multixactMemberPage((b.moff + i) >>> 0));
      for (const p of pages) {
        const at = segmentOfPage(p);
        this.requireSlruPage(SlruKind.multixactMembers, at.segNo, at.blockNumber, `members of multixact ${b.mid}`);
        w.put(slruBlockKey(SlruKind.multixactMembers, at.segNo, at.blockNumber), { kind: 'multixactMembers', startOffset: b.moff, members });
      }
      // CheckPoint: nextMulti / nextMultiOffset past this one; member xids below nextXid.
      const cp = w.checkpoint;
      let updated: CheckPoint = cp;
      if (multiXactIdPrecedes(cp.nextMulti, next) || cp.nextMulti < FIRST_MULTIXACT_ID) updated = { ...updated, nextMulti: next };
      if (multiXactOffsetPrecedes(cp.nextMultiOffset, nextOffset)) updated = { ...updated, nextMultiOffset: nextOffset };
      if (updated !== cp) w.setCheckpoint(updated);
      this.advanceXids(b.members.map((m) => m.xid));
    } else if (op === XLOG_MULTIXACT_TRUNCATE_ID) {
      const b = parseMultiXactTruncate(rec);
      const cp = w.checkpoint;
      if (multiXactIdPrecedes(cp.oldestMulti, b.endTruncOff)) w.setCheckpoint({ ...cp, oldestMulti: b.endTruncOff, oldestMultiDb: b.oldestMultiDb });
      for (const seg of membersSegmentsToTruncate(b.startTruncMemb, b.endTruncMemb)) w.dropSlruSegment(SlruKind.multixactMembers, seg);
      const cutoff = multixactOffsetPage(previousMultiXactId(b.endTruncOff));
      for (const seg of segmentsToTruncate(w.slruSegments(SlruKind.multixactOffsets), cutoff, multixactOffsetPagePrecedes)) {
        w.dropSlruSegment(SlruKind.multixactOffsets, seg);
      }
    }
  }

  private requireSlruPage(kind: SlruKind, segNo: number, blockNumber: number, what: string): void {
    if (!this.writer.slruPageExists(kind, segNo, blockNumber)) {
      throw new IngestError(`${what}: SLRU page ${segNo * 32 + blockNumber} of kind ${kind} does not exist (its ZERO_PAGE record was not ingested)`,
        this.timeline.context());
    }
  }

  // ---------------------------------------------------------------------------------------------
  // XLOG: checkpoints and OID allocation.

  private ingestXlog(rec: DecodedRecord, op: number): void {
    const w = this.writer;
    if (op === XLOG_NEXTOID) {
      w.setCheckpoint({ ...w.checkpoint, nextOid: parseNextOid(rec).nextOid });
    } else if (op === XLOG_CHECKPOINT_SHUTDOWN || op === XLOG_CHECKPOINT_ONLINE) {
      const c = parseCheckpointRecord(rec);
      const cp = w.checkpoint;
      // A checkpoint record states the cluster's counters as of its start; ours may be ahead
      // (rounded nextXid, NEXTOID's prefetch), so counters only move forward. The oldest-*
      // horizons and the time are taken from the record when it is newer.
      let next: CheckPoint = { ...cp, redoLsn: c.redoLsn, thisTimeLineId: c.thisTimeLineId, prevTimeLineId: c.prevTimeLineId, fullPageWrites: c.fullPageWrites, timeUnixSec: c.timeUnixSec };
      if (c.nextXid > cp.nextXid) next.nextXid = c.nextXid;
      if (op === XLOG_CHECKPOINT_SHUTDOWN) next.nextOid = c.nextOid; // exact at shutdown
      else if (((c.nextOid - cp.nextOid) | 0) > 0) next.nextOid = c.nextOid;
      if (multiXactIdPrecedes(cp.nextMulti, c.nextMulti)) next.nextMulti = c.nextMulti;
      if (multiXactOffsetPrecedes(cp.nextMultiOffset, c.nextMultiOffset)) next.nextMultiOffset = c.nextMultiOffset;
      if (transactionIdPrecedes(cp.oldestXid, c.oldestXid)) next = { ...next, oldestXid: c.oldestXid, oldestXidDb: c.oldestXidDb };
      if (multiXactIdPrecedes(cp.oldestMulti, c.oldestMulti)) next = { ...next, oldestMulti: c.oldestMulti, oldestMultiDb: c.oldestMultiDb };
      next.oldestCommitTsXid = c.oldestCommitTsXid;
      next.newestCommitTsXid = c.newestCommitTsXid;
      next.oldestActiveXid = c.oldestActiveXid;
      w.setCheckpoint(next);
    }
  }
}
