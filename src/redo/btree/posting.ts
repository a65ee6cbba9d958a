/**
 * Posting lists and deduplication: checking a posting list tuple, forming one from a key and a TID
 * array, the posting list split of INSERT_POST / SPLIT_*, the shrinking that VACUUM and DELETE
 * apply, and DEDUP redo, which replays the deduplication pass and checks it against the logged
 * intervals. These share the posting list format rules (TID array offset, count bits, the size
 * cap), so they live together; the dedup TID workspace is a module-level buffer for the same
 * no-allocation reason as the scratch page.
 */
import type { Lsn } from '../../postgres/lsn.ts';
import { indexTupleSize, parseBtreeDedup, parseBtreeDedupIntervals, type BtreeDedupInterval } from '../../postgres/records/btree.ts';
import type { DecodedRecord } from '../../postgres/xlogrecord.ts';
import { BLCKSZ, itemIdGetLen, maxAlign, pageAddItem, pageGetItem, pageGetMaxOffsetNumber, pageSetLsn } from '../page.ts';
import { TupleError, addItemOrFail, itemOrFail, requireBtPage, tempPageCopySpecial } from './common.ts';
import {
  BT_IS_POSTING, BT_MAX_ITEM_SIZE, BTP_HAS_GARBAGE, INDEX_ALT_TID_MASK, INDEX_SIZE_MASK, INDEX_TUPLE_HEADER_SIZE, P_FIRSTKEY,
  P_HIKEY, P_NONE, TID_SIZE, postingCount, postingOffset, readBtOpaque, setTidBlock, setU16, tupleIsPivot,
  tupleIsPosting, u16, writeBtOpaque,
} from './layout.ts';

/** Checks that a posting list tuple's TID array lies inside the tuple; returns the TID count. */
function checkedPosting(t: Uint8Array, what: string): number {
  const n = postingCount(t);
  const off = postingOffset(t);
  const size = indexTupleSize(t);
  if (n < 2 || off < INDEX_TUPLE_HEADER_SIZE || off + n * TID_SIZE > size || size > t.byteLength) {
    throw new TupleError(`${what} is not a valid posting list tuple (size ${size}, ${n} TIDs at offset ${off})`);
  }
  return n;
}

/**
 * Builds a tuple from the key part (`keySize` bytes) of `base` and the given heap TIDs, as
 * deduplication and posting-list shrinking do: one TID gives a plain tuple (the TID in t_tid),
 * more give a posting list starting right after the key (the key size is MAXALIGNed already).
 */
function formTuple(base: Uint8Array, keySize: number, tids: Uint8Array, ntids: number): Buffer {
  const size = ntids > 1 ? maxAlign(keySize + ntids * TID_SIZE) : keySize;
  if (keySize !== maxAlign(keySize) || size > INDEX_SIZE_MASK) {
    throw new TupleError(`cannot form a tuple of key size ${keySize} with ${ntids} TIDs`);
  }
  const t = Buffer.alloc(size);
  t.set(base.subarray(0, keySize), 0);
  let info = (u16(t, 6) & ~INDEX_SIZE_MASK) | size;
  if (ntids > 1) {
    info |= INDEX_ALT_TID_MASK;
    setU16(t, 6, info);
    setU16(t, 4, ntids | BT_IS_POSTING);
    setTidBlock(t, 0, keySize);
    t.set(tids.subarray(0, ntids * TID_SIZE), keySize);
  } else {
    info &= ~INDEX_ALT_TID_MASK;
    setU16(t, 6, info);
    t.set(tids.subarray(0, TID_SIZE), 0);
  }
  return t;
}

/**
 * The posting list split done when a new TID falls inside an existing posting list's TID range:
 * the new tuple's TID is put at index `postingoff` (later TIDs shift up one; the highest falls
 * off), and the new tuple takes over that highest TID instead. Returns the rewritten posting list
 * (same size as the original); `newItem` (a private copy) is modified in place.
 */
export function swapPosting(newItem: Uint8Array, oposting: Uint8Array, postingoff: number): Buffer {
  const n = checkedPosting(oposting, 'the posting list being split');
  if (!(postingoff > 0 && postingoff < n)) {
    throw new TupleError(`posting list tuple with ${n} TIDs cannot be split at TID index ${postingoff}`);
  }
  if (newItem.byteLength < INDEX_TUPLE_HEADER_SIZE || tupleIsPosting(newItem) || tupleIsPivot(newItem)) {
    throw new TupleError('the new item of a posting list split must be a plain leaf tuple');
  }
  const size = indexTupleSize(oposting);
  const nposting = Buffer.from(oposting.subarray(0, size));
  const base = postingOffset(oposting);
  const at = base + postingoff * TID_SIZE;
  nposting.copyWithin(at + TID_SIZE, at, base + (n - 1) * TID_SIZE);
  nposting.set(newItem.subarray(0, TID_SIZE), at);
  // The new item now carries the original highest TID.
  newItem.set(oposting.subarray(base + (n - 1) * TID_SIZE, base + n * TID_SIZE), 0);
  return nposting;
}

/**
 * Removes the TIDs at the given (ascending, 0-based) posting list indexes; at least one TID must
 * remain. The result is a posting list, or a plain tuple when one TID is left.
 */
export function shrinkPosting(orig: Uint8Array, deletedTids: readonly number[]): Buffer {
  const n = checkedPosting(orig, 'the updated tuple');
  const keep = n - deletedTids.length;
  if (!(keep > 0 && keep < n)) throw new TupleError(`cannot delete ${deletedTids.length} of the ${n} TIDs of a posting list`);
  const base = postingOffset(orig);
  const tids = Buffer.allocUnsafe(keep * TID_SIZE);
  let kept = 0;
  let d = 0;
  for (let i = 0; i < n; i++) {
    if (d < deletedTids.length && deletedTids[d] === i) {
      d++;
      continue;
    }
    if (kept === keep) break;
    tids.set(orig.subarray(base + i * TID_SIZE, base + (i + 1) * TID_SIZE), kept * TID_SIZE);
    kept++;
  }
  if (kept !== keep || d !== deletedTids.length) {
    throw new TupleError(`posting list indexes to delete [${deletedTids.join(',')}] are not ascending indexes below ${n}`);
  }
  return formTuple(orig, base, tids, keep);
}

// ---------------------------------------------------------------------------------------------
// Deduplication replay.

/** Working state of one deduplication pass (one pending posting list at a time). */
/** TID workspace of the dedup pass: a posting list never exceeds BT_MAX_ITEM_SIZE bytes. */
const dedupTids = Buffer.alloc(BLCKSZ);

class DedupPass {
  private readonly htids = dedupTids;
  private nhtids = 0;
  private base: Uint8Array = new Uint8Array(0);
  private baseoff = 0;
  private basetupsize = 0;
  nitems = 0;
  /** The intervals this pass produced (posting lists actually formed). */
  readonly intervals: BtreeDedupInterval[] = [];

  get pendingBaseoff(): number {
    return this.baseoff;
  }

  start(base: Uint8Array, off: number): void {
    if (tupleIsPivot(base)) throw new TupleError(`item ${off} is a pivot tuple on a leaf page`);
    if (tupleIsPosting(base)) {
      const n = checkedPosting(base, `item ${off}`);
      const po = postingOffset(base);
      this.htids.set(base.subarray(po, po + n * TID_SIZE), 0);
      this.nhtids = n;
      this.basetupsize = po;
    } else {
      this.htids.set(base.subarray(0, TID_SIZE), 0);
      this.nhtids = 1;
      this.basetupsize = indexTupleSize(base);
    }
    this.nitems = 1;
    this.base = base;
    this.baseoff = off;
  }

  /** Adds `t`'s TIDs to the pending posting list; false when the result would exceed the size cap. */
  save(t: Uint8Array, off: number): boolean {
    if (tupleIsPivot(t)) throw new TupleError(`item ${off} is a pivot tuple on a leaf page`);
    let n = 1;
    let from = 0;
    if (tupleIsPosting(t)) {
      n = checkedPosting(t, `item ${off}`);
      from = postingOffset(t);
    }
    if (maxAlign(this.basetupsize + (this.nhtids + n) * TID_SIZE) > BT_MAX_ITEM_SIZE) return false;
    this.htids.set(t.subarray(from, from + n * TID_SIZE), this.nhtids * TID_SIZE);
    this.nhtids += n;
    this.nitems++;
    return true;
  }

  /** Writes the pending tuple to `newPage` as its next item. */
  finish(newPage: Buffer): void {
    const off = pageGetMaxOffsetNumber(newPage) + 1;
    let tuple: Uint8Array;
    if (this.nitems === 1) {
      tuple = this.base.subarray(0, indexTupleSize(this.base));
    } else {
      tuple = formTuple(this.base, this.basetupsize, this.htids, this.nhtids);
      this.intervals.push({ baseoff: this.baseoff, nitems: this.nitems });
    }
    if (pageAddItem(newPage, tuple, off, { overwrite: false, isHeap: false }) === 0) {
      throw new TupleError(`deduplication could not add item ${off} (${tuple.byteLength} bytes) to the page`);
    }
    this.nhtids = 0;
    this.nitems = 0;
  }
}

// ---------------------------------------------------------------------------------------------
// DEDUP redo.

export function redoDedup(page: Buffer, rec: DecodedRecord, endLsn: Lsn): void {
  const body = parseBtreeDedup(rec);
  const logged = parseBtreeDedupIntervals(rec, body);
  requireBtPage(page);
  const opaque = readBtOpaque(page);
  const minOff = opaque.next === P_NONE ? P_HIKEY : P_FIRSTKEY;
  const maxOff = pageGetMaxOffsetNumber(page);
  if (maxOff < minOff) throw new TupleError('deduplication of a page without data items');
  const newPage = tempPageCopySpecial(page);
  if (opaque.next !== P_NONE) {
    const len = itemIdGetLen(page, P_HIKEY);
    addItemOrFail(newPage, pageGetItem(page, P_HIKEY).subarray(0, len), P_HIKEY, 'high key');
  }
  const pass = new DedupPass();
  for (let off = minOff; off <= maxOff; off++) {
    const t = itemOrFail(page, off, 'dedup');
    if (off === minOff) {
      pass.start(t, off);
      continue;
    }
    const next = logged[pass.intervals.length];
    if (next !== undefined && pass.pendingBaseoff === next.baseoff && pass.nitems < next.nitems) {
      if (!pass.save(t, off)) throw new TupleError(`deduplication could not merge item ${off} into the posting list at ${next.baseoff}`);
    } else {
      pass.finish(newPage);
      pass.start(t, off);
    }
  }
  pass.finish(newPage);
  const got = pass.intervals;
  if (got.length !== logged.length || got.some((g, i) => g.baseoff !== logged[i]!.baseoff || g.nitems !== logged[i]!.nitems)) {
    throw new TupleError(
      `deduplication produced intervals ${got.map((g) => `${g.baseoff}x${g.nitems}`).join(',')} but the record logged ` +
      `${logged.map((g) => `${g.baseoff}x${g.nitems}`).join(',')}`,
    );
  }
  if (opaque.flags & BTP_HAS_GARBAGE) {
    const o = readBtOpaque(newPage);
    o.flags &= ~BTP_HAS_GARBAGE;
    writeBtOpaque(newPage, o);
  }
  newPage.copy(page, 0, 0, BLCKSZ);
  pageSetLsn(page, endLsn);
}
