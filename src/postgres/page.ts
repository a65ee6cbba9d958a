/**
 * PostgreSQL 15 data pages (relation blocks of BLCKSZ = 8192 bytes): the page header and its checks.
 *
 * Every relation page (heap, index, FSM, VM, sequence, init fork) starts with the 24-byte
 * PageHeaderData, little-endian on x86-64:
 *   0 pd_lsn (two u32: high half, then low half — not a u64), 8 pd_checksum u16, 10 pd_flags u16,
 *   12 pd_lower u16, 14 pd_upper u16, 16 pd_special u16, 18 pd_pagesize_version u16, 20 pd_prune_xid u32.
 * Line pointers grow up from 24 to pd_lower, tuples grow down from pd_upper to pd_special, and the
 * special area (index AMs) runs from pd_special to the end. A page of all zeros is a valid "new"
 * page (what extending a relation produces).
 *
 * The checks here mirror what PostgreSQL accepts when it reads a page (PageIsVerifiedExtended,
 * without the checksum, which full-page images carry stale anyway): known flag bits only,
 * pd_pagesize_version 0x2004, 24 <= pd_lower <= pd_upper <= pd_special <= 8192, pd_special
 * MAXALIGNed. Redo code will grow this module with line-pointer and tuple helpers.
 */
import type { Lsn } from './lsn.ts';
import { PG_BLCKSZ } from './walformat.ts';

export const SIZE_OF_PAGE_HEADER = 24;
export const PG_PAGE_LAYOUT_VERSION = 4;
/** pd_pagesize_version of every PG15 page: BLCKSZ | layout version = 0x2004. */
export const PAGE_SIZE_VERSION = PG_BLCKSZ | PG_PAGE_LAYOUT_VERSION;

export const PD_HAS_FREE_LINES = 0x0001;
export const PD_PAGE_FULL = 0x0002;
export const PD_ALL_VISIBLE = 0x0004;
export const PD_VALID_FLAG_BITS = 0x0007;

export interface PageHeader {
  /** pd_lsn, assembled from its two halves. */
  lsn: Lsn;
  checksum: number;
  flags: number;
  lower: number;
  upper: number;
  special: number;
  pagesizeVersion: number;
  pruneXid: number;
}

function u16(b: Uint8Array, o: number): number {
  return b[o]! | (b[o + 1]! << 8);
}
function u32(b: Uint8Array, o: number): number {
  return (b[o]! | (b[o + 1]! << 8) | (b[o + 2]! << 16) | (b[o + 3]! << 24)) >>> 0;
}

/** pd_lsn of the page starting at `offset`. */
export function readPageLsn(page: Uint8Array, offset = 0): Lsn {
  return (BigInt(u32(page, offset)) << 32n) | BigInt(u32(page, offset + 4));
}

/** Sets pd_lsn of the page starting at `offset` (xlogid, then xrecoff, little-endian u32s). */
export function writePageLsn(page: Uint8Array, lsn: Lsn, offset = 0): void {
  const dv = new DataView(page.buffer, page.byteOffset + offset, 8);
  dv.setUint32(0, Number(lsn >> 32n), true);
  dv.setUint32(4, Number(lsn & 0xffff_ffffn), true);
}

/** Reads the 24-byte header of the data page starting at `offset`. The page must hold at least 24 bytes. */
export function readPageHeader(page: Uint8Array, offset = 0): PageHeader {
  if (page.length - offset < SIZE_OF_PAGE_HEADER) {
    throw new RangeError(`page buffer has ${page.length - offset} bytes at offset ${offset}, a page header needs ${SIZE_OF_PAGE_HEADER}`);
  }
  return {
    lsn: readPageLsn(page, offset),
    checksum: u16(page, offset + 8),
    flags: u16(page, offset + 10),
    lower: u16(page, offset + 12),
    upper: u16(page, offset + 14),
    special: u16(page, offset + 16),
    pagesizeVersion: u16(page, offset + 18),
    pruneXid: u32(page, offset + 20),
  };
}

/** True when every byte of the page is zero (PostgreSQL's "new" page, valid on disk). */
export function isAllZeroPage(page: Uint8Array): boolean {
  // Compare 4 bytes at a time when the buffer is aligned for it; pages are small, this is not hot.
  if ((page.byteOffset & 3) === 0 && (page.length & 3) === 0) {
    const words = new Uint32Array(page.buffer, page.byteOffset, page.length >>> 2);
    for (let i = 0; i < words.length; i++) if (words[i] !== 0) return false;
    return true;
  }
  for (let i = 0; i < page.length; i++) if (page[i] !== 0) return false;
  return true;
}

/**
 * Checks the header of an 8192-byte page. Returns null when it is valid (or the page is all zeros),
 * otherwise a sentence describing the first problem.
 */
export function pageHeaderProblem(page: Uint8Array): string | null {
  if (page.length !== PG_BLCKSZ) return `page is ${page.length} bytes, expected ${PG_BLCKSZ}`;
  const h = readPageHeader(page);
  if (h.upper === 0 && isAllZeroPage(page)) return null;
  if (h.pagesizeVersion !== PAGE_SIZE_VERSION) {
    return `pd_pagesize_version is 0x${h.pagesizeVersion.toString(16)}, expected 0x${PAGE_SIZE_VERSION.toString(16)}`;
  }
  if ((h.flags & ~PD_VALID_FLAG_BITS) !== 0) return `pd_flags 0x${h.flags.toString(16)} has unknown bits`;
  if (h.lower < SIZE_OF_PAGE_HEADER) return `pd_lower ${h.lower} is inside the ${SIZE_OF_PAGE_HEADER}-byte page header`;
  if (!(h.lower <= h.upper && h.upper <= h.special && h.special <= PG_BLCKSZ)) {
    return `pd_lower ${h.lower}, pd_upper ${h.upper}, pd_special ${h.special} are not ordered within ${PG_BLCKSZ} bytes`;
  }
  if ((h.special & 7) !== 0) return `pd_special ${h.special} is not a multiple of 8`;
  return null;
}
