/**
 * Page deletion redo: MARK_PAGE_HALFDEAD (the leaf becomes a half-dead page holding only a dummy
 * high key with the top parent link; the parent's downlink moves and a pivot goes) and
 * UNLINK_PAGE / UNLINK_PAGE_META (the target becomes a deleted page carrying its safexid, the
 * siblings' links are repointed, an internal target's leaf gets its new top parent, and the
 * metapage is rebuilt). Both stages of deletion build the same half-dead leaf, so they share this
 * module.
 */
import type { Lsn } from '../../postgres/lsn.ts';
import { parseBtreeMarkHalfDead, parseBtreeUnlinkPage } from '../../postgres/records/btree.ts';
import type { DecodedRecord } from '../../postgres/xlogrecord.ts';
import { pageIndexTupleDelete, pageSetLsn } from '../page.ts';
import { TupleError, addItemOrFail, itemOrFail, requireBtPage } from './common.ts';
import {
  BT_SPECIAL_OFFSET, BTP_DELETED, BTP_HALF_DEAD, BTP_HAS_FULLXID, BTP_LEAF, INDEX_ALT_TID_MASK, INDEX_TUPLE_HEADER_SIZE, P_HIKEY,
  btPageInit, readBtOpaque, setTidBlock, setU16, tidBlock, writeBtOpaque,
} from './layout.ts';
import { restoreMeta } from './meta.ts';

/** A half-dead leaf: empty but for a dummy high key whose t_tid block is the top parent link. */
function writeHalfDeadLeaf(page: Buffer, prev: number, next: number, topParent: number, endLsn: Lsn): void {
  btPageInit(page);
  writeBtOpaque(page, { prev, next, level: 0, flags: BTP_HALF_DEAD | BTP_LEAF, cycleid: 0 });
  const hikey = Buffer.alloc(INDEX_TUPLE_HEADER_SIZE);
  setTidBlock(hikey, 0, topParent);
  // Zero key attributes, no heap TID: a pivot tuple with INDEX_ALT_TID_MASK and offset field 0.
  setU16(hikey, 6, INDEX_TUPLE_HEADER_SIZE | INDEX_ALT_TID_MASK);
  addItemOrFail(page, hikey, P_HIKEY, 'half-dead high key');
  pageSetLsn(page, endLsn);
}

export function redoMarkHalfDead(page: Buffer, rec: DecodedRecord, blockId: number, endLsn: Lsn): void {
  const body = parseBtreeMarkHalfDead(rec);
  if (blockId === 1) {
    // The subtree's parent: the pivot at poffset takes over the downlink of the next pivot, which
    // is removed (the subtree's key space merges into its right sibling's).
    requireBtPage(page);
    const next = itemOrFail(page, body.poffset + 1, 'pivot after poffset');
    const target = itemOrFail(page, body.poffset, 'pivot at poffset');
    setTidBlock(target, 0, tidBlock(next, 0));
    pageIndexTupleDelete(page, body.poffset + 1);
    pageSetLsn(page, endLsn);
    return;
  }
  if (blockId !== 0) throw new TupleError(`unexpected block reference ${blockId}`);
  writeHalfDeadLeaf(page, body.leftblk, body.rightblk, body.topparent, endLsn);
}

export function redoUnlink(page: Buffer, rec: DecodedRecord, blockId: number, endLsn: Lsn): void {
  const body = parseBtreeUnlinkPage(rec);
  switch (blockId) {
    case 0: {
      btPageInit(page);
      writeBtOpaque(page, {
        prev: body.leftsib,
        next: body.rightsib,
        level: body.level,
        flags: BTP_DELETED | BTP_HAS_FULLXID | (body.level === 0 ? BTP_LEAF : 0),
        cycleid: 0,
      });
      // A deleted page keeps only its safexid (BTDeletedPageData) right after the header.
      setU16(page, 12, 24 + 8);
      setU16(page, 14, BT_SPECIAL_OFFSET);
      page.writeBigUInt64LE(body.safexid, 24);
      pageSetLsn(page, endLsn);
      return;
    }
    case 1: {
      requireBtPage(page);
      const o = readBtOpaque(page);
      o.next = body.rightsib;
      writeBtOpaque(page, o);
      pageSetLsn(page, endLsn);
      return;
    }
    case 2: {
      requireBtPage(page);
      const o = readBtOpaque(page);
      o.prev = body.leftsib;
      writeBtOpaque(page, o);
      pageSetLsn(page, endLsn);
      return;
    }
    case 3:
      writeHalfDeadLeaf(page, body.leafleftsib, body.leafrightsib, body.leaftopparent, endLsn);
      return;
    case 4:
      if (!body.hasMeta) throw new TupleError('block reference 4 (metapage) in an UNLINK_PAGE record without META');
      restoreMeta(page, rec, 4, endLsn);
      return;
    default:
      throw new TupleError(`unexpected block reference ${blockId}`);
  }
}
