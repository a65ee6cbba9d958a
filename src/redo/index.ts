/**
 * The TypeScript WAL redo dispatcher: which function replays which resource manager's records, and
 * the common steps around it that PostgreSQL's XLogReadBufferForRedo performs for every rmgr.
 *
 * Split of responsibilities (the same for the offline verifier and, later, page reconstruction in
 * the pageserver):
 * - The CALLER decides per block reference:
 *     image marked BKPIMAGE_APPLY  -> `applyBlockImage`: the image IS the new page (restored, then
 *                                     pd_lsn = record end unless the page is new). No redo runs.
 *     willInit                     -> a zeroed 8192-byte page is handed to the redo function.
 *     otherwise                    -> a private copy of the block's previous version is handed in.
 *   `replayBlock` packages exactly this decision.
 * - The REDO FUNCTION (BlockRedoFn, types.ts) only transforms the page for one block ref and sets
 *   pd_lsn where PostgreSQL does. It never sees apply images; a consistency-check image (no APPLY
 *   bit) is ignored by redo, exactly as PostgreSQL ignores it.
 * For XLOG_FPI every block carries an apply image, so XLOG redo (xlog.ts) never runs for it in
 * practice; it exists to fail loudly on a malformed FPI and to make FPI_FOR_HINT without image a
 * no-op. This matches src/storage/redo.ts (BuiltinRedo), which restores apply images itself and
 * sets pd_lsn to the version LSN (the record's end) the same way.
 *
 * Registry: one BlockRedoFn per rmid. The small rmgrs (XLOG, Sequence, Generic) are registered
 * here; heap/heap2 (src/redo/heap.ts) and btree (src/redo/btree.ts) are registered below as well,
 * so those modules stay free of any knowledge of the dispatcher. `registerRmgrRedo` also lets tests
 * and tools replace a function (e.g. to inject a fault and check the verifier notices).
 */
import { restoreBlockImage } from '../postgres/blockimage.ts';
import { writePageLsn } from '../postgres/page.ts';
import type { Lsn } from '../postgres/lsn.ts';
import { RM_BTREE_ID, RM_GENERIC_ID, RM_HEAP2_ID, RM_HEAP_ID, RM_SEQ_ID, RM_XLOG_ID, rmgrName } from '../postgres/rmgr.ts';
import type { BlockRef, DecodedRecord } from '../postgres/xlogrecord.ts';
import { redoFailed, redoUnsupported, type BlockRedoFn } from './types.ts';
import { xlogRedo } from './xlog.ts';
import { seqRedo } from './sequence.ts';
import { genericRedo } from './generic.ts';
import { heap2Redo, heapRedo } from './heap.ts';
import { btreeRedo } from './btree.ts';

export const PAGE_BYTES = 8192;

const registry: (BlockRedoFn | undefined)[] = new Array<BlockRedoFn | undefined>(256).fill(undefined);

/** Installs (or replaces) the redo function of `rmid`; returns the previous one. */
export function registerRmgrRedo(rmid: number, fn: BlockRedoFn | undefined): BlockRedoFn | undefined {
  if (!Number.isInteger(rmid) || rmid < 0 || rmid > 255) throw new RangeError(`rmgr id ${rmid} is not 0..255`);
  const prev = registry[rmid];
  registry[rmid] = fn;
  return prev;
}

/** The redo function of `rmid`, if Strata has one. */
export function rmgrRedoFn(rmid: number): BlockRedoFn | undefined {
  return registry[rmid];
}

/** The rmgrs with TypeScript redo, by id and PostgreSQL name. */
export function supportedRmgrs(): { rmid: number; name: string }[] {
  const out: { rmid: number; name: string }[] = [];
  for (let i = 0; i < registry.length; i++) if (registry[i] !== undefined) out.push({ rmid: i, name: rmgrName(i) });
  return out;
}

/**
 * Replays block ref `blockId` of `rec` on `page` (in place) with the rmgr's redo function. The page
 * must already be the previous version (or zeroes for willInit); see the module comment. Throws
 * RedoError: 'redo_unsupported' when the rmgr has no TypeScript redo.
 */
export function redoBlock(page: Buffer, rec: DecodedRecord, blockId: number, endLsn: Lsn): void {
  const fn = registry[rec.rmid];
  if (fn === undefined) throw redoUnsupported(rec, blockId, `Strata has no TypeScript redo for rmgr ${rmgrName(rec.rmid)}`);
  fn(page, rec, blockId, endLsn);
}

/** True when `pd_upper` is 0: PostgreSQL's PageIsNew (an all-zero page in practice). */
function pageIsNew(page: Uint8Array): boolean {
  return page[14] === 0 && page[15] === 0;
}

/**
 * Restores an apply image of `block` into `out` (8192 bytes; allocated when omitted) and sets pd_lsn
 * to `endLsn` unless the restored page is new, as PostgreSQL does when it restores a backup block.
 * Throws RedoError('redo_failed') when the image cannot be restored or is not marked for apply.
 */
export function applyBlockImage(rec: DecodedRecord, block: BlockRef, endLsn: Lsn, out?: Buffer): Buffer {
  if (block.image === undefined || !block.image.apply) {
    throw redoFailed(rec, block.id, block.image === undefined ? 'block has no full-page image to apply' : 'full-page image is for consistency checking only (no BKPIMAGE_APPLY)');
  }
  const page = out ?? Buffer.allocUnsafe(PAGE_BYTES);
  try {
    restoreBlockImage(rec, block, page);
  } catch (err) {
    throw redoFailed(rec, block.id, `full-page image cannot be restored: ${err instanceof Error ? err.message : String(err)}`, err);
  }
  if (!pageIsNew(page)) writePageLsn(page, endLsn);
  return page;
}

/**
 * The new version of one block after `rec`: the restored apply image, or redo run on a copy of
 * `previous` (zeroes when the block is re-initialised). `previous` is never modified. Throws
 * RedoError ('redo_failed' also when a previous version is needed but `previous` is null).
 */
export function replayBlock(previous: Uint8Array | null, rec: DecodedRecord, block: BlockRef): Buffer {
  if (block.image?.apply === true) return applyBlockImage(rec, block, rec.endLsn);
  let page: Buffer;
  if (block.willInit) {
    page = Buffer.alloc(PAGE_BYTES);
  } else {
    if (previous === null) throw redoFailed(rec, block.id, 'needs the previous version of the block, but there is none');
    if (previous.length !== PAGE_BYTES) throw redoFailed(rec, block.id, `previous version is ${previous.length} bytes, expected ${PAGE_BYTES}`);
    page = Buffer.from(previous);
  }
  redoBlock(page, rec, block.id, rec.endLsn);
  return page;
}

registerRmgrRedo(RM_XLOG_ID, xlogRedo);
registerRmgrRedo(RM_SEQ_ID, seqRedo);
registerRmgrRedo(RM_GENERIC_ID, genericRedo);
registerRmgrRedo(RM_HEAP_ID, heapRedo);
// Heap2 as for a cluster without wal_log_hints / checksums; the difference (pd_lsn of the heap page
// in VISIBLE) is masked in consistency checks. A tenant-aware caller registers createHeap2Redo(...).
registerRmgrRedo(RM_HEAP2_ID, heap2Redo);
registerRmgrRedo(RM_BTREE_ID, btreeRedo);
