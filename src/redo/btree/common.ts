/**
 * Helpers shared by the per-record btree redo modules: the TupleError that the entry point turns
 * into a RedoError, block-reference lookup, checked item access and insertion, the temporary page
 * used by the rebuild-on-a-copy operations (split left half, dedup), clearing INCOMPLETE_SPLIT and
 * re-adding a logged tuple run. They are here, not in one record module, because several record
 * types use each of them; keeping them in one place keeps every caller's checks identical.
 */
import type { Lsn } from '../../postgres/lsn.ts';
import { parseBtreeTupleRun } from '../../postgres/records/btree.ts';
import type { BlockRef, DecodedRecord } from '../../postgres/xlogrecord.ts';
import { BLCKSZ, pageAddItem, pageGetItem, pageGetMaxOffsetNumber, pageInit, pageSetLsn } from '../page.ts';
import {
  BT_OPAQUE_SIZE, BT_SPECIAL_OFFSET, BTP_INCOMPLETE_SPLIT, INDEX_TUPLE_HEADER_SIZE, readBtOpaque, specialOffset, writeBtOpaque,
} from './layout.ts';

/** Problems are reported to the caller, which wraps them into a RedoError naming record and block. */
export class TupleError extends Error {}

// ---------------------------------------------------------------------------------------------
// Block references, items and temporary pages.

const scratch = Buffer.alloc(BLCKSZ);

export function findBlock(rec: DecodedRecord, id: number): BlockRef | undefined {
  for (const b of rec.blocks) if (b.id === id) return b;
  return undefined;
}

export function blockNumberOf(rec: DecodedRecord, id: number): number {
  const b = findBlock(rec, id);
  if (b === undefined) throw new TupleError(`the record has no block reference ${id}`);
  return b.blkno;
}

export function requireBtPage(page: Buffer): void {
  const special = specialOffset(page);
  if (special !== BT_SPECIAL_OFFSET) {
    throw new TupleError(`page is not a btree page: pd_special is ${special}, expected ${BT_SPECIAL_OFFSET}`);
  }
}

export function addItemOrFail(page: Buffer, item: Uint8Array, off: number, what: string): void {
  if (pageAddItem(page, item, off, { overwrite: false, isHeap: false }) === 0) {
    throw new TupleError(`failed to add ${what} (${item.byteLength} bytes) at offset ${off}`);
  }
}

export function itemOrFail(page: Buffer, off: number, what: string): Buffer {
  const max = pageGetMaxOffsetNumber(page);
  if (off < 1 || off > max) throw new TupleError(`${what}: offset ${off} is not on the page (max offset ${max})`);
  const item = pageGetItem(page, off);
  if (item.byteLength < INDEX_TUPLE_HEADER_SIZE) throw new TupleError(`${what}: item ${off} has ${item.byteLength} bytes`);
  return item;
}

/** Starts a fresh temporary copy of `page`'s special area in `scratch` (PageGetTempPageCopySpecial). */
export function tempPageCopySpecial(page: Buffer): Buffer {
  requireBtPage(page);
  pageInit(scratch, BT_OPAQUE_SIZE);
  page.copy(scratch, BT_SPECIAL_OFFSET, BT_SPECIAL_OFFSET, BLCKSZ);
  return scratch;
}

export function clearIncompleteSplit(page: Buffer, endLsn: Lsn): void {
  requireBtPage(page);
  const o = readBtOpaque(page);
  o.flags &= ~BTP_INCOMPLETE_SPLIT;
  writeBtOpaque(page, o);
  pageSetLsn(page, endLsn);
}

/** Re-adds a run of tuples stored highest item number first (the bytes pd_upper..pd_special of a page). */
export function restoreTupleRun(page: Buffer, rec: DecodedRecord, blockId: number): void {
  const tuples = parseBtreeTupleRun(rec, blockId);
  const n = tuples.length;
  for (let i = n - 1; i >= 0; i--) addItemOrFail(page, tuples[i]!, n - i, `restored tuple ${n - i}`);
}
