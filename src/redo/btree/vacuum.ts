/**
 * VACUUM and DELETE redo on a leaf page: posting lists named in the record lose the listed TIDs
 * (overwritten in place, so item offsets stay valid), then whole items are removed with
 * PageIndexMultiDelete, and BTP_HAS_GARBAGE is cleared. Both record types carry the same deletion
 * payload and differ only in their fixed header, hence one module.
 */
import type { Lsn } from '../../postgres/lsn.ts';
import {
  XLOG_BTREE_VACUUM, parseBtreeDelete, parseBtreeDeletionData, parseBtreeVacuum, type BtreeUpdatedTuple,
} from '../../postgres/records/btree.ts';
import type { DecodedRecord } from '../../postgres/xlogrecord.ts';
import { pageGetMaxOffsetNumber, pageIndexMultiDelete, pageIndexTupleOverwrite, pageSetLsn } from '../page.ts';
import { TupleError, itemOrFail, requireBtPage } from './common.ts';
import { BTP_HAS_GARBAGE, readBtOpaque, writeBtOpaque } from './layout.ts';
import { shrinkPosting } from './posting.ts';

/** VACUUM and DELETE: posting lists shrink first (offsets stay valid), then whole items go. */
export function redoDeletion(page: Buffer, rec: DecodedRecord, endLsn: Lsn, op: number): void {
  const counts = op === XLOG_BTREE_VACUUM ? parseBtreeVacuum(rec) : parseBtreeDelete(rec);
  const data = parseBtreeDeletionData(rec, counts.ndeleted, counts.nupdated);
  requireBtPage(page);
  applyPostingUpdates(page, data.updated);
  if (data.deleted.length > 0) {
    const max = pageGetMaxOffsetNumber(page);
    for (const off of data.deleted) {
      if (off < 1 || off > max) throw new TupleError(`deleted offset ${off} is not on the page (max offset ${max})`);
    }
    pageIndexMultiDelete(page, data.deleted);
  }
  const o = readBtOpaque(page);
  o.flags &= ~BTP_HAS_GARBAGE;
  writeBtOpaque(page, o);
  pageSetLsn(page, endLsn);
}

function applyPostingUpdates(page: Buffer, updated: readonly BtreeUpdatedTuple[]): void {
  for (const u of updated) {
    const orig = itemOrFail(page, u.offnum, 'updated posting list');
    const shrunk = shrinkPosting(orig, u.deletedTids);
    if (!pageIndexTupleOverwrite(page, u.offnum, shrunk)) {
      throw new TupleError(`failed to overwrite posting list at ${u.offnum} with its ${shrunk.byteLength}-byte update`);
    }
  }
}
