/**
 * Redo of PostgreSQL 15 B-tree (nbtree) WAL records, one block at a time.
 *
 * Why per block: the caller (verifier, later the pageserver) owns block lookup and full-page
 * images, and asks for "record R applied to block reference B". So every record type is split into
 * what it does to each of its block references, independently of the others:
 *
 *   INSERT_LEAF/POST  0 leaf: add the tuple (POST: first split the posting list it lands in)
 *   INSERT_UPPER      0 internal page: add the downlink; 1 child: clear BTP_INCOMPLETE_SPLIT
 *   INSERT_META       as UPPER, plus 2 metapage: rebuilt from the logged metadata
 *   SPLIT_L/SPLIT_R   0 left (original) page rebuilt; 1 new right page rebuilt from the logged
 *                     tuples; 2 old right sibling: btpo_prev; 3 child (internal split): clear flag
 *   DEDUP             0 leaf: the deduplication pass replayed from the logged intervals
 *   VACUUM/DELETE     0 leaf: shrink posting lists, then delete items, clear BTP_HAS_GARBAGE
 *   MARK_PAGE_HALFDEAD  0 leaf re-initialised half-dead; 1 parent: downlink moved, pivot removed
 *   UNLINK_PAGE(_META) 0 target → deleted page; 1 left sibling: btpo_next; 2 right sibling:
 *                     btpo_prev; 3 leaf (when the target is internal): half-dead with new top
 *                     parent link; 4 metapage (META only)
 *   NEWROOT           0 new root (tuples from the log when level > 0); 1 left child: clear flag;
 *                     2 metapage
 *   META_CLEANUP      0 metapage
 *   REUSE_PAGE        no blocks (it only exists for hot-standby conflicts)
 *
 * Exactness: verification compares our result with PostgreSQL's post-redo page byte for byte
 * (after btree masking: LSN/checksum, hint bits, unused space, leaf line-pointer flags,
 * BTP_HAS_GARBAGE, BTP_SPLIT_END, cycle id). So the physical layout matters, not just the logical
 * content: pages that PostgreSQL rebuilds on a scratch page (split left half, dedup) are rebuilt the
 * same way here — a freshly initialised page (header fields other than lower/upper/special/version
 * become zero, e.g. pd_flags and pd_prune_xid) with items added in item-number order; pages it
 * re-initialises (right half, new root, half-dead and deleted pages, metapage) start from an
 * all-zero page; in-place edits use the same bufpage operations (src/redo/page.ts) as PostgreSQL.
 * Item lengths follow PostgreSQL exactly: old items keep their line-pointer length, logged tuples
 * of the tuple-run format are added with MAXALIGNed sizes, the dedup pass uses the tuple's own size.
 *
 * Posting lists (deduplicated leaf tuples): t_info has INDEX_ALT_TID_MASK, t_tid's offset field
 * has BT_IS_POSTING plus the TID count (12 bits), t_tid's block field is the byte offset of the
 * TID array inside the tuple (MAXALIGNed; the tuple size is MAXALIGN(offset + 6 * count)). A
 * tuple with a single TID is never a posting list. Pivot tuples (internal pages, high keys) have
 * INDEX_ALT_TID_MASK without BT_IS_POSTING; their t_tid block field is the downlink (or, in a
 * half-dead leaf's high key, the top parent link).
 *
 * Anything PostgreSQL would PANIC/ERROR on, or only assert, and that would leave us unable to
 * reproduce the page (an item that does not fit, an offset past the end, a posting split at an
 * impossible TID index, dedup intervals that do not match the page) is a RedoError: a wrong page
 * is worse than none.
 *
 * Scratch pages: the two rebuild-on-a-temporary-page operations use one module-level 8 KiB buffer
 * (JavaScript runs one redo at a time), so replay allocates only the small tuples it must form.
 *
 * Where the code is: this file holds the dispatch from record type to block handler and the
 * btreeRedo entry point, and re-exports the names other modules and tests use. The handlers are in
 * src/redo/btree/: layout.ts (page and tuple format), common.ts (shared helpers), insert.ts
 * (INSERT_*, SPLIT_*), posting.ts (posting lists, DEDUP), vacuum.ts (VACUUM, DELETE), pagedel.ts
 * (MARK_PAGE_HALFDEAD, UNLINK_PAGE*), meta.ts (metapage, NEWROOT, META_CLEANUP).
 */
import type { Lsn } from '../postgres/lsn.ts';
import {
  XLOG_BTREE_DEDUP, XLOG_BTREE_DELETE, XLOG_BTREE_INSERT_LEAF, XLOG_BTREE_INSERT_META, XLOG_BTREE_INSERT_POST,
  XLOG_BTREE_INSERT_UPPER, XLOG_BTREE_MARK_PAGE_HALFDEAD, XLOG_BTREE_META_CLEANUP, XLOG_BTREE_NEWROOT,
  XLOG_BTREE_REUSE_PAGE, XLOG_BTREE_SPLIT_L, XLOG_BTREE_SPLIT_R, XLOG_BTREE_UNLINK_PAGE, XLOG_BTREE_UNLINK_PAGE_META,
  XLOG_BTREE_VACUUM,
} from '../postgres/records/btree.ts';
import { WalRecordBodyError } from '../postgres/records/common.ts';
import type { DecodedRecord } from '../postgres/xlogrecord.ts';
import { BLCKSZ, PageCorruptError } from './page.ts';
import { redoFailed, type BlockRedoFn, RedoError } from './types.ts';
import { TupleError, findBlock } from './btree/common.ts';
import { redoInsert, redoSplit } from './btree/insert.ts';
import { restoreMeta, redoNewroot } from './btree/meta.ts';
import { redoMarkHalfDead, redoUnlink } from './btree/pagedel.ts';
import { redoDedup } from './btree/posting.ts';
import { redoDeletion } from './btree/vacuum.ts';

export {
  BT_MAX_ITEM_SIZE, BT_OPAQUE_SIZE, BT_SPECIAL_OFFSET, BTP_DELETED, BTP_HALF_DEAD, BTP_HAS_FULLXID, BTP_HAS_GARBAGE,
  BTP_INCOMPLETE_SPLIT, BTP_LEAF, BTP_META, BTP_ROOT, BTP_SPLIT_END, BTREE_MAGIC, P_FIRSTKEY, P_HIKEY, P_NONE, readBtOpaque,
} from './btree/layout.ts';
export type { BtOpaque } from './btree/layout.ts';
export { shrinkPosting, swapPosting } from './btree/posting.ts';

function redoBlock(page: Buffer, rec: DecodedRecord, blockId: number, endLsn: Lsn): void {
  if (page.byteLength !== BLCKSZ) throw new TupleError(`page buffer is ${page.byteLength} bytes, expected ${BLCKSZ}`);
  if (findBlock(rec, blockId) === undefined) throw new TupleError(`the record has no block reference ${blockId}`);
  const op = rec.info & 0xf0;
  switch (op) {
    case XLOG_BTREE_INSERT_LEAF:
    case XLOG_BTREE_INSERT_UPPER:
    case XLOG_BTREE_INSERT_META:
    case XLOG_BTREE_INSERT_POST:
      return redoInsert(page, rec, blockId, endLsn, op);
    case XLOG_BTREE_SPLIT_L:
    case XLOG_BTREE_SPLIT_R:
      return redoSplit(page, rec, blockId, endLsn);
    case XLOG_BTREE_DEDUP:
      if (blockId !== 0) throw new TupleError(`unexpected block reference ${blockId}`);
      return redoDedup(page, rec, endLsn);
    case XLOG_BTREE_VACUUM:
    case XLOG_BTREE_DELETE:
      if (blockId !== 0) throw new TupleError(`unexpected block reference ${blockId}`);
      return redoDeletion(page, rec, endLsn, op);
    case XLOG_BTREE_MARK_PAGE_HALFDEAD:
      return redoMarkHalfDead(page, rec, blockId, endLsn);
    case XLOG_BTREE_UNLINK_PAGE:
    case XLOG_BTREE_UNLINK_PAGE_META:
      return redoUnlink(page, rec, blockId, endLsn);
    case XLOG_BTREE_NEWROOT:
      return redoNewroot(page, rec, blockId, endLsn);
    case XLOG_BTREE_META_CLEANUP:
      if (blockId !== 0) throw new TupleError(`unexpected block reference ${blockId}`);
      return restoreMeta(page, rec, 0, endLsn);
    case XLOG_BTREE_REUSE_PAGE:
      // Registers no blocks: a block reference here means the record is not what PostgreSQL writes.
      throw new TupleError('REUSE_PAGE records change no page');
    default:
      throw new TupleError(`unknown btree op code 0x${op.toString(16)}`);
  }
}

/**
 * Applies one btree record to one of its blocks (see the module comment for what each block
 * reference means). Throws RedoError naming the record and block on anything it cannot replay.
 */
export const btreeRedo: BlockRedoFn = (page, rec, blockId, endLsn) => {
  try {
    redoBlock(page, rec, blockId, endLsn);
  } catch (e) {
    if (e instanceof RedoError) throw e;
    if (e instanceof TupleError || e instanceof WalRecordBodyError || e instanceof PageCorruptError) throw redoFailed(rec, blockId, e.message, e);
    throw e;
  }
};
