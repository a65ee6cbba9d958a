/**
 * nbtree's on-page format, with no redo logic: the layout constants, little-endian byte helpers,
 * the special area (BTPageOpaqueData) and the index tuple header bits that mark pivot tuples and
 * posting lists. Every other btree redo module reads and writes pages through these, so they are
 * in one leaf module that imports nothing from its siblings. src/redo/btree.ts re-exports the
 * names that were public before the split (flags, sizes, readBtOpaque); the rest are shared only
 * inside src/redo/btree/.
 */
import { pageInit } from '../page.ts';

// ---------------------------------------------------------------------------------------------
// nbtree layout facts (PostgreSQL 15, BLCKSZ 8192, MAXALIGN 8).

/** sizeof(BTPageOpaqueData): btpo_prev u32, btpo_next u32, btpo_level u32, btpo_flags u16, btpo_cycleid u16. */
export const BT_OPAQUE_SIZE = 16;
/** pd_special of every nbtree page. */
export const BT_SPECIAL_OFFSET = 8192 - BT_OPAQUE_SIZE;
const OPQ_PREV = 0;
const OPQ_NEXT = 4;
const OPQ_LEVEL = 8;
const OPQ_FLAGS = 12;
const OPQ_CYCLEID = 14;

export const BTP_LEAF = 1 << 0;
export const BTP_ROOT = 1 << 1;
export const BTP_DELETED = 1 << 2;
export const BTP_META = 1 << 3;
export const BTP_HALF_DEAD = 1 << 4;
export const BTP_SPLIT_END = 1 << 5;
export const BTP_HAS_GARBAGE = 1 << 6;
export const BTP_INCOMPLETE_SPLIT = 1 << 7;
export const BTP_HAS_FULLXID = 1 << 8;

/** "No page" in sibling links. */
export const P_NONE = 0;
export const P_HIKEY = 1;
export const P_FIRSTKEY = 2;

export const BTREE_MAGIC = 0x053162;
/** BTMetaPageData sits right after the page header; sizeof is 48. */
export const META_OFFSET = 24;
export const META_SIZE = 48;

/** t_info bits. */
export const INDEX_ALT_TID_MASK = 0x2000;
export const INDEX_SIZE_MASK = 0x1fff;
/** Offset-number status bits of t_tid in tuples with INDEX_ALT_TID_MASK. */
const BT_OFFSET_MASK = 0x0fff;
export const BT_IS_POSTING = 0x2000;
/** sizeof(ItemPointerData). */
export const TID_SIZE = 6;
export const INDEX_TUPLE_HEADER_SIZE = 8;

/** BTMaxItemSize for an 8 KiB page: the posting-list size cap of the redo dedup pass. */
export const BT_MAX_ITEM_SIZE = 2704;

// ---------------------------------------------------------------------------------------------
// Small readers/writers (little-endian, explicit offsets; tuples may sit at odd offsets in a record).

export function u16(b: Uint8Array, o: number): number {
  return b[o]! | (b[o + 1]! << 8);
}
export function u32(b: Uint8Array, o: number): number {
  return (b[o]! | (b[o + 1]! << 8) | (b[o + 2]! << 16) | (b[o + 3]! << 24)) >>> 0;
}
export function setU16(b: Uint8Array, o: number, v: number): void {
  b[o] = v & 0xff;
  b[o + 1] = (v >>> 8) & 0xff;
}
export function setU32(b: Uint8Array, o: number, v: number): void {
  b[o] = v & 0xff;
  b[o + 1] = (v >>> 8) & 0xff;
  b[o + 2] = (v >>> 16) & 0xff;
  b[o + 3] = (v >>> 24) & 0xff;
}

// ---------------------------------------------------------------------------------------------
// The special area (BTPageOpaqueData).

export interface BtOpaque {
  prev: number;
  next: number;
  level: number;
  flags: number;
  cycleid: number;
}

export function specialOffset(page: Uint8Array): number {
  return u16(page, 16);
}

/** Reads the btree special area of `page` (pd_special must be 8176). */
export function readBtOpaque(page: Uint8Array): BtOpaque {
  const s = specialOffset(page);
  return { prev: u32(page, s + OPQ_PREV), next: u32(page, s + OPQ_NEXT), level: u32(page, s + OPQ_LEVEL), flags: u16(page, s + OPQ_FLAGS), cycleid: u16(page, s + OPQ_CYCLEID) };
}

export function writeBtOpaque(page: Uint8Array, o: BtOpaque): void {
  const s = specialOffset(page);
  setU32(page, s + OPQ_PREV, o.prev);
  setU32(page, s + OPQ_NEXT, o.next);
  setU32(page, s + OPQ_LEVEL, o.level);
  setU16(page, s + OPQ_FLAGS, o.flags);
  setU16(page, s + OPQ_CYCLEID, o.cycleid);
}

/** Initialises a btree page (all zeros, header, 16-byte special area), as _bt_pageinit. */
export function btPageInit(page: Buffer): void {
  pageInit(page, BT_OPAQUE_SIZE);
}

// ---------------------------------------------------------------------------------------------
// Index tuples and posting lists.

export function tupleIsPosting(t: Uint8Array): boolean {
  return (u16(t, 6) & INDEX_ALT_TID_MASK) !== 0 && (u16(t, 4) & BT_IS_POSTING) !== 0;
}

export function tupleIsPivot(t: Uint8Array): boolean {
  return (u16(t, 6) & INDEX_ALT_TID_MASK) !== 0 && (u16(t, 4) & BT_IS_POSTING) === 0;
}

/** Block-number field of t_tid (downlink, top parent link, or a posting list's byte offset). */
export function tidBlock(t: Uint8Array, o = 0): number {
  return ((u16(t, o) << 16) | u16(t, o + 2)) >>> 0;
}

export function setTidBlock(t: Uint8Array, o: number, blk: number): void {
  setU16(t, o, (blk >>> 16) & 0xffff);
  setU16(t, o + 2, blk & 0xffff);
}

export function postingCount(t: Uint8Array): number {
  return u16(t, 4) & BT_OFFSET_MASK;
}

export function postingOffset(t: Uint8Array): number {
  return tidBlock(t, 0);
}
