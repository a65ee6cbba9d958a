/**
 * XLOG resource manager redo for block references: XLOG_FPI and XLOG_FPI_FOR_HINT.
 *
 * Both records consist only of block references whose payload is a full-page image. In every
 * normal case the image carries BKPIMAGE_APPLY, and the caller restores it (index.ts
 * applyBlockImage): the image is the new page and no redo function runs for that block. So this
 * function only sees the leftovers:
 * - FPI_FOR_HINT without any image: written when full_page_writes was off; the record only said
 *   "a hint bit changed here". PostgreSQL's redo leaves the page untouched (pd_lsn included), and
 *   so do we.
 * - XLOG_FPI without an apply image, or FPI_FOR_HINT with a consistency-only image: PostgreSQL's
 *   redo errors out for these (the image was the whole point of the record). We throw
 *   'redo_failed' too: we cannot know the page's new content.
 * - Any other XLOG record type never references blocks in PostgreSQL 15: 'redo_failed'.
 */
import type { Lsn } from '../postgres/lsn.ts';
import { recordOp, type DecodedRecord } from '../postgres/xlogrecord.ts';
import { redoFailed } from './types.ts';

export const XLOG_FPI_FOR_HINT = 0xa0;
export const XLOG_FPI = 0xb0;

export function xlogRedo(page: Buffer, rec: DecodedRecord, blockId: number, endLsn: Lsn): void {
  void page;
  void endLsn;
  const op = recordOp(rec);
  const block = rec.blocks.find((b) => b.id === blockId);
  if (block === undefined) throw redoFailed(rec, blockId, 'record has no block reference with this id');
  if (op === XLOG_FPI || op === XLOG_FPI_FOR_HINT) {
    if (block.image?.apply === true) {
      throw redoFailed(rec, blockId, 'block has a full-page image for apply: the caller must restore it instead of running redo');
    }
    if (op === XLOG_FPI_FOR_HINT && block.image === undefined) return; // hint-only, nothing to replay
    throw redoFailed(rec, blockId, block.image === undefined
      ? 'XLOG_FPI block reference without a full-page image'
      : 'full-page image is not marked for apply; PostgreSQL cannot replay this block either');
  }
  throw redoFailed(rec, blockId, 'this XLOG record type does not reference blocks in PostgreSQL 15');
}
