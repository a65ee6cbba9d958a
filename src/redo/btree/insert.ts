/**
 * Insertion and page split redo: INSERT_LEAF/UPPER/META/POST (add the item, or split the posting
 * list it lands in first; clear the child's INCOMPLETE_SPLIT; rebuild the metapage) and
 * SPLIT_L/SPLIT_R for all four block references. The left half of a split is rebuilt on the
 * temporary page in item order, exactly as PostgreSQL does it, because the physical item layout is
 * compared after masking; the right half is re-initialised and filled from the logged tuples.
 */
import type { Lsn } from '../../postgres/lsn.ts';
import {
  XLOG_BTREE_INSERT_LEAF, XLOG_BTREE_INSERT_META, XLOG_BTREE_INSERT_POST, indexTupleSize, parseBtreeInsert, parseBtreeInsertData,
  parseBtreeSplit, parseBtreeSplitLeftData,
} from '../../postgres/records/btree.ts';
import type { DecodedRecord } from '../../postgres/xlogrecord.ts';
import { BLCKSZ, itemIdGetLen, maxAlign, pageGetItem, pageGetMaxOffsetNumber, pageSetLsn } from '../page.ts';
import {
  TupleError, addItemOrFail, blockNumberOf, clearIncompleteSplit, findBlock, itemOrFail, requireBtPage, restoreTupleRun,
  tempPageCopySpecial,
} from './common.ts';
import { BTP_INCOMPLETE_SPLIT, BTP_LEAF, P_FIRSTKEY, P_HIKEY, P_NONE, btPageInit, readBtOpaque, writeBtOpaque } from './layout.ts';
import { restoreMeta } from './meta.ts';
import { swapPosting } from './posting.ts';

export function redoInsert(page: Buffer, rec: DecodedRecord, blockId: number, endLsn: Lsn, op: number): void {
  const isLeaf = op === XLOG_BTREE_INSERT_LEAF || op === XLOG_BTREE_INSERT_POST;
  if (blockId === 1 && !isLeaf) return clearIncompleteSplit(page, endLsn);
  if (blockId === 2 && op === XLOG_BTREE_INSERT_META) return restoreMeta(page, rec, 2, endLsn);
  if (blockId !== 0) throw new TupleError(`unexpected block reference ${blockId}`);
  requireBtPage(page);
  const { offnum } = parseBtreeInsert(rec);
  const posting = op === XLOG_BTREE_INSERT_POST;
  const data = parseBtreeInsertData(rec, posting);
  if (!posting) {
    addItemOrFail(page, data.tuple, offnum, 'new item');
  } else {
    const oposting = itemOrFail(page, offnum - 1, 'posting list to split');
    const newItem = Buffer.from(data.tuple);
    const nposting = swapPosting(newItem, oposting, data.postingoff);
    // The rewritten posting list has the old one's size: overwrite it in place.
    if (nposting.byteLength !== maxAlign(nposting.byteLength) || nposting.byteLength > oposting.byteLength) {
      throw new TupleError(`posting list at ${offnum - 1} has size ${nposting.byteLength}, not MAXALIGNed or larger than its item`);
    }
    oposting.set(nposting, 0);
    addItemOrFail(page, newItem, offnum, 'posting split new item');
  }
  pageSetLsn(page, endLsn);
}

function redoSplitLeft(page: Buffer, rec: DecodedRecord, endLsn: Lsn): void {
  const body = parseBtreeSplit(rec);
  const isLeaf = body.level === 0;
  const data = parseBtreeSplitLeftData(rec, body);
  const rightBlk = blockNumberOf(rec, 1);
  requireBtPage(page);
  const orig = readBtOpaque(page);

  let newItem: Uint8Array | undefined = data.newItem;
  let nposting: Buffer | undefined;
  let replacePostingOff = 0;
  if (body.postingoff !== 0) {
    if (newItem === undefined) throw new TupleError('posting list split without a logged new item');
    replacePostingOff = body.newitemoff - 1;
    const copy = Buffer.from(newItem);
    nposting = swapPosting(copy, itemOrFail(page, replacePostingOff, 'posting list to split'), body.postingoff);
    newItem = copy;
  }
  const newItemSize = newItem === undefined ? 0 : maxAlign(indexTupleSize(newItem));
  const maxOff = pageGetMaxOffsetNumber(page);
  const firstData = orig.next === P_NONE ? P_HIKEY : P_FIRSTKEY;
  if (body.firstrightoff < firstData || body.firstrightoff > maxOff + 1) {
    throw new TupleError(`firstrightoff ${body.firstrightoff} is outside the page's data items ${firstData}..${maxOff}`);
  }
  // PostgreSQL never logs a left-page new item or posting list that the rebuild loop would skip.
  if (body.newItemOnLeft && (body.newitemoff < firstData || body.newitemoff > body.firstrightoff)) {
    throw new TupleError(`newitemoff ${body.newitemoff} is not on the left page (data items ${firstData}..${body.firstrightoff - 1})`);
  }
  if (body.postingoff !== 0 && (replacePostingOff < firstData || replacePostingOff >= body.firstrightoff)) {
    throw new TupleError(`the posting list to split (item ${replacePostingOff}) is not on the left page`);
  }

  const left = tempPageCopySpecial(page);
  addItemOrFail(left, data.leftHighKey, P_HIKEY, 'left high key');
  let leftOff = P_HIKEY + 1;
  let off = firstData;
  for (; off < body.firstrightoff; off++) {
    if (off === replacePostingOff) {
      addItemOrFail(left, nposting!, leftOff++, 'replacement posting list');
      continue;
    }
    if (body.newItemOnLeft && off === body.newitemoff) {
      addItemOrFail(left, newItem!.subarray(0, newItemSize), leftOff++, 'new item');
    }
    const len = itemIdGetLen(page, off);
    addItemOrFail(left, pageGetItem(page, off).subarray(0, len), leftOff++, `old item ${off}`);
  }
  if (body.newItemOnLeft && off === body.newitemoff) {
    addItemOrFail(left, newItem!.subarray(0, newItemSize), leftOff++, 'new item');
  }
  left.copy(page, 0, 0, BLCKSZ);
  writeBtOpaque(page, {
    prev: orig.prev,
    next: rightBlk,
    level: orig.level,
    flags: BTP_INCOMPLETE_SPLIT | (isLeaf ? BTP_LEAF : 0),
    cycleid: 0,
  });
  pageSetLsn(page, endLsn);
}

export function redoSplit(page: Buffer, rec: DecodedRecord, blockId: number, endLsn: Lsn): void {
  switch (blockId) {
    case 0:
      return redoSplitLeft(page, rec, endLsn);
    case 1: {
      const body = parseBtreeSplit(rec);
      const sib = findBlock(rec, 2);
      btPageInit(page);
      writeBtOpaque(page, {
        prev: blockNumberOf(rec, 0),
        next: sib === undefined ? P_NONE : sib.blkno,
        level: body.level,
        flags: body.level === 0 ? BTP_LEAF : 0,
        cycleid: 0,
      });
      restoreTupleRun(page, rec, 1);
      pageSetLsn(page, endLsn);
      return;
    }
    case 2: {
      requireBtPage(page);
      const o = readBtOpaque(page);
      o.prev = blockNumberOf(rec, 1);
      writeBtOpaque(page, o);
      pageSetLsn(page, endLsn);
      return;
    }
    case 3:
      return clearIncompleteSplit(page, endLsn);
    default:
      throw new TupleError(`unexpected block reference ${blockId}`);
  }
}
