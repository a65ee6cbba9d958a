/**
 * The metapage and new roots: rebuilding the metapage from a logged xl_btree_metadata (used by
 * INSERT_META, UNLINK_PAGE_META, NEWROOT and META_CLEANUP) and NEWROOT redo (a fresh root page,
 * filled from the log when it is internal, plus the left child's INCOMPLETE_SPLIT and the
 * metapage). The metapage is always rebuilt from scratch rather than edited, so its layout is
 * kept in this one place.
 */
import type { Lsn } from '../../postgres/lsn.ts';
import { parseBtreeMetadata, parseBtreeNewroot } from '../../postgres/records/btree.ts';
import type { DecodedRecord } from '../../postgres/xlogrecord.ts';
import { pageSetLsn } from '../page.ts';
import { TupleError, clearIncompleteSplit, restoreTupleRun } from './common.ts';
import {
  BTP_LEAF, BTP_META, BTP_ROOT, BTREE_MAGIC, META_OFFSET, META_SIZE, P_NONE, btPageInit, setU16, setU32, writeBtOpaque,
} from './layout.ts';

/** Rebuilds the metapage from the xl_btree_metadata in block `blockId`'s data. */
export function restoreMeta(page: Buffer, rec: DecodedRecord, blockId: number, endLsn: Lsn): void {
  const md = parseBtreeMetadata(rec, blockId);
  btPageInit(page);
  setU32(page, META_OFFSET + 0, BTREE_MAGIC);
  setU32(page, META_OFFSET + 4, md.version);
  setU32(page, META_OFFSET + 8, md.root);
  setU32(page, META_OFFSET + 12, md.level);
  setU32(page, META_OFFSET + 16, md.fastroot);
  setU32(page, META_OFFSET + 20, md.fastlevel);
  setU32(page, META_OFFSET + 24, md.lastCleanupNumDelpages);
  // btm_last_cleanup_num_heap_tuples is deprecated; redo always stores -1.0.
  page.writeDoubleLE(-1.0, META_OFFSET + 32);
  page[META_OFFSET + 40] = md.allequalimage ? 1 : 0;
  writeBtOpaque(page, { prev: 0, next: 0, level: 0, flags: BTP_META, cycleid: 0 });
  // pd_lower covers the metadata, so compressed/hole-punched images keep it.
  setU16(page, 12, META_OFFSET + META_SIZE);
  pageSetLsn(page, endLsn);
}

export function redoNewroot(page: Buffer, rec: DecodedRecord, blockId: number, endLsn: Lsn): void {
  const body = parseBtreeNewroot(rec);
  switch (blockId) {
    case 0:
      btPageInit(page);
      writeBtOpaque(page, { prev: P_NONE, next: P_NONE, level: body.level, flags: BTP_ROOT | (body.level === 0 ? BTP_LEAF : 0), cycleid: 0 });
      if (body.level > 0) restoreTupleRun(page, rec, 0);
      pageSetLsn(page, endLsn);
      return;
    case 1:
      return clearIncompleteSplit(page, endLsn);
    case 2:
      return restoreMeta(page, rec, 2, endLsn);
    default:
      throw new TupleError(`unexpected block reference ${blockId}`);
  }
}
