/**
 * Page masking for consistency checks: what PostgreSQL ignores when it compares the page its redo
 * produced with the page image the primary logged (wal_consistency_checking).
 *
 * The primary and the replaying side legitimately disagree on some bytes: the page LSN and
 * checksum, hint bits (set on the primary without WAL), the free gap between pd_lower and pd_upper
 * (its garbage is never logged), the command id of heap tuples (redo writes FirstCommandId), the
 * line-pointer flags of btree leaves (LP_DEAD is set without WAL), padding after tuples, and a few
 * btree special-area fields redo does not reproduce (BTP_SPLIT_END, the cycle id, BTP_HAS_GARBAGE).
 * PostgreSQL 15 expresses this per resource manager (rm_mask): both pages are masked with the same
 * function, then compared byte for byte over the whole block. We reproduce those masks with the
 * same effect, so "zero mismatches" here means what it means to PostgreSQL.
 *
 * Which rmgrs mask what (PostgreSQL 15):
 * - Heap, Heap2: LSN + checksum, header hint bits, unused space, and per normal tuple: xact hint
 *   bits in t_infomask (or only the xmax hints when xmin is frozen), t_cid, the ctid of speculative
 *   tuples (reset to the tuple's own position), and the MAXALIGN padding after every item with
 *   storage.
 * - Btree: LSN + checksum, header hint bits, unused space, the line-pointer flags of leaf pages,
 *   BTP_HAS_GARBAGE and BTP_SPLIT_END in btpo_flags, btpo_cycleid.
 * - Sequence, Generic: LSN + checksum, unused space.
 * - XLOG and every rmgr without an rm_mask: nothing (plain byte comparison).
 * - Hash, Gin, Gist, SPGist, BRIN have masks in PostgreSQL but no TypeScript redo here, so they are
 *   never compared: maskPage refuses them (MaskError 'mask_unsupported') rather than comparing
 *   with the wrong rules.
 *
 * All functions work in place on the buffer they are given; callers mask copies. The masked value
 * is zero everywhere (PostgreSQL's marker byte is 0). A page whose header bounds are inconsistent
 * cannot have its unused space masked; that is a MaskError('mask_failed'), as PostgreSQL errors out
 * there too. Every offset read from the page is bounds-checked before use, so a damaged page can
 * never make us write outside it.
 */
import { RM_BTREE_ID, RM_GENERIC_ID, RM_HEAP2_ID, RM_HEAP_ID, RM_SEQ_ID, RM_BRIN_ID, RM_GIN_ID, RM_GIST_ID, RM_HASH_ID, RM_SPGIST_ID, rmgrName } from '../postgres/rmgr.ts';
import { StrataError, type ErrorContext } from '../util/errors.ts';

const BLCKSZ = 8192;
const PAGE_HEADER_BYTES = 24;
const ITEM_ID_BYTES = 4;

// Page header field offsets.
const PD_CHECKSUM = 8;
const PD_FLAGS = 10;
const PD_LOWER = 12;
const PD_UPPER = 14;
const PD_SPECIAL = 16;
const PD_PRUNE_XID = 20;

const PD_HAS_FREE_LINES = 0x0001;
const PD_PAGE_FULL = 0x0002;
const PD_ALL_VISIBLE = 0x0004;

const LP_UNUSED = 0;
const LP_NORMAL = 1;

// Heap tuple header (HeapTupleHeaderData) offsets and t_infomask bits.
const HT_CID = 8;
const HT_CTID = 12;
const HT_INFOMASK = 20;
const HEAP_TUPLE_HEADER_BYTES = 23;
const HEAP_XMIN_FROZEN = 0x0300; // XMIN_COMMITTED | XMIN_INVALID
const HEAP_XMAX_COMMITTED = 0x0400;
const HEAP_XMAX_INVALID = 0x0800;
/** Every t_infomask bit that describes transaction state (all but the four layout bits). */
const HEAP_XACT_MASK = 0xfff0;
/** ip_posid of a speculative-insertion token in t_ctid. */
const SPEC_TOKEN_OFFSET_NUMBER = 0xfffe;

// Btree special area (BTPageOpaqueData, 16 bytes at pd_special).
const BTPO_BYTES = 16;
const BTPO_FLAGS = 12;
const BTPO_CYCLEID = 14;
const BTP_LEAF = 0x0001;
const BTP_SPLIT_END = 0x0020;
const BTP_HAS_GARBAGE = 0x0040;

export class MaskError extends StrataError {
  constructor(code: 'mask_failed' | 'mask_unsupported', message: string, context: ErrorContext = {}) {
    super(code, message, context);
    this.name = 'MaskError';
  }
}

function u16(p: Uint8Array, o: number): number {
  return p[o]! | (p[o + 1]! << 8);
}
function setU16(p: Uint8Array, o: number, v: number): void {
  p[o] = v & 0xff;
  p[o + 1] = (v >>> 8) & 0xff;
}
function itemIdWord(p: Uint8Array, off: number): number {
  const o = PAGE_HEADER_BYTES + (off - 1) * ITEM_ID_BYTES;
  return (p[o]! | (p[o + 1]! << 8) | (p[o + 2]! << 16) | (p[o + 3]! << 24)) >>> 0;
}
// ItemIdData is a 32-bit word: lp_off in bits 0..14, lp_flags in 15..16, lp_len in 17..31.
function lpOff(word: number): number {
  return word & 0x7fff;
}
function lpFlags(word: number): number {
  return (word >>> 15) & 0x3;
}
function lpLen(word: number): number {
  return word >>> 17;
}

function checkPageSize(page: Uint8Array): void {
  if (page.length !== BLCKSZ) throw new MaskError('mask_failed', `cannot mask a ${page.length}-byte buffer: a page is ${BLCKSZ} bytes`);
}

/** Number of line pointers (PageGetMaxOffsetNumber), clamped to what fits before pd_lower. */
function maxOffset(page: Uint8Array): number {
  const lower = u16(page, PD_LOWER);
  if (lower <= PAGE_HEADER_BYTES) return 0;
  return Math.min(Math.floor((lower - PAGE_HEADER_BYTES) / ITEM_ID_BYTES), Math.floor((BLCKSZ - PAGE_HEADER_BYTES) / ITEM_ID_BYTES));
}

/** pd_lsn and pd_checksum: always differ between the primary's image and a replayed page. */
export function maskLsnAndChecksum(page: Uint8Array): void {
  page.fill(0, 0, 8);
  setU16(page, PD_CHECKSUM, 0);
}

/** Header hints: pd_prune_xid and the PD_PAGE_FULL, PD_HAS_FREE_LINES, PD_ALL_VISIBLE flags. */
export function maskHeaderHintBits(page: Uint8Array): void {
  page.fill(0, PD_PRUNE_XID, PD_PRUNE_XID + 4);
  setU16(page, PD_FLAGS, u16(page, PD_FLAGS) & ~(PD_PAGE_FULL | PD_HAS_FREE_LINES | PD_ALL_VISIBLE));
}

/** Zeroes [pd_lower, pd_upper). Throws MaskError when the header bounds are inconsistent. */
export function maskUnusedSpace(page: Uint8Array): void {
  const lower = u16(page, PD_LOWER);
  const upper = u16(page, PD_UPPER);
  const special = u16(page, PD_SPECIAL);
  if (lower < PAGE_HEADER_BYTES || lower > upper || upper > special || special > BLCKSZ) {
    throw new MaskError('mask_failed', `cannot mask unused space: invalid page header (pd_lower ${lower}, pd_upper ${upper}, pd_special ${special})`,
      { pdLower: lower, pdUpper: upper, pdSpecial: special });
  }
  page.fill(0, lower, upper);
}

/** Sets the flags of every used line pointer to LP_UNUSED (offset and length stay). */
export function maskLpFlags(page: Uint8Array): void {
  const n = maxOffset(page);
  for (let off = 1; off <= n; off++) {
    const o = PAGE_HEADER_BYTES + (off - 1) * ITEM_ID_BYTES;
    const word = itemIdWord(page, off);
    if (lpFlags(word) === LP_UNUSED) continue;
    const masked = (word & ~(0x3 << 15)) >>> 0;
    page[o] = masked & 0xff;
    page[o + 1] = (masked >>> 8) & 0xff;
    page[o + 2] = (masked >>> 16) & 0xff;
    page[o + 3] = (masked >>> 24) & 0xff;
  }
}

/** Masks everything after the header, and pd_lower / pd_upper (for pages whose content is ignored). */
export function maskPageContent(page: Uint8Array): void {
  page.fill(0, PAGE_HEADER_BYTES, BLCKSZ);
  setU16(page, PD_LOWER, 0);
  setU16(page, PD_UPPER, 0);
}

/** The heap rmgrs' mask (Heap and Heap2). `blkno` is needed for speculative tuples' ctid. */
export function maskHeapPage(page: Uint8Array, blkno: number): void {
  checkPageSize(page);
  maskLsnAndChecksum(page);
  maskHeaderHintBits(page);
  maskUnusedSpace(page);
  const n = maxOffset(page);
  for (let off = 1; off <= n; off++) {
    const word = itemIdWord(page, off);
    const at = lpOff(word);
    const len = lpLen(word);
    if (lpFlags(word) === LP_NORMAL) {
      if (at + HEAP_TUPLE_HEADER_BYTES > BLCKSZ) {
        throw new MaskError('mask_failed', `heap page: line pointer ${off} points at ${at}, no room for a tuple header`, { offset: off, lpOff: at });
      }
      const infomask = u16(page, at + HT_INFOMASK);
      if ((infomask & HEAP_XMIN_FROZEN) !== HEAP_XMIN_FROZEN) {
        setU16(page, at + HT_INFOMASK, infomask & ~HEAP_XACT_MASK);
      } else {
        setU16(page, at + HT_INFOMASK, infomask & ~(HEAP_XMAX_INVALID | HEAP_XMAX_COMMITTED));
      }
      page.fill(0, at + HT_CID, at + HT_CID + 4);
      if (u16(page, at + HT_CTID + 4) === SPEC_TOKEN_OFFSET_NUMBER) {
        setU16(page, at + HT_CTID, (blkno >>> 16) & 0xffff);
        setU16(page, at + HT_CTID + 2, blkno & 0xffff);
        setU16(page, at + HT_CTID + 4, off);
      }
    }
    if (len !== 0) {
      const end = at + len;
      const padEnd = (end + 7) & ~7;
      if (padEnd > BLCKSZ) {
        throw new MaskError('mask_failed', `heap page: item ${off} [${at}, ${end}) runs past the page`, { offset: off, lpOff: at, lpLen: len });
      }
      page.fill(0, end, padEnd);
    }
  }
}

/** The btree rmgr's mask. */
export function maskBtreePage(page: Uint8Array): void {
  checkPageSize(page);
  maskLsnAndChecksum(page);
  maskHeaderHintBits(page);
  maskUnusedSpace(page);
  const special = u16(page, PD_SPECIAL);
  if (special + BTPO_BYTES > BLCKSZ) {
    throw new MaskError('mask_failed', `btree page: special area at ${special} is too small for BTPageOpaqueData`, { pdSpecial: special });
  }
  const flags = u16(page, special + BTPO_FLAGS);
  if ((flags & BTP_LEAF) !== 0) maskLpFlags(page);
  setU16(page, special + BTPO_FLAGS, flags & ~(BTP_HAS_GARBAGE | BTP_SPLIT_END));
  setU16(page, special + BTPO_CYCLEID, 0);
}

/** The Sequence and Generic rmgrs' mask: LSN, checksum and the unused space only. */
export function maskLsnChecksumAndUnused(page: Uint8Array): void {
  checkPageSize(page);
  maskLsnAndChecksum(page);
  maskUnusedSpace(page);
}

const PG_HAS_MASK_WE_LACK: ReadonlySet<number> = new Set([RM_HASH_ID, RM_GIN_ID, RM_GIST_ID, RM_SPGIST_ID, RM_BRIN_ID]);

/**
 * Masks `page` (in place) the way PostgreSQL 15's rm_mask of `rmid` does; rmgrs without an rm_mask
 * leave the page as is. Throws MaskError: 'mask_failed' for a page whose header does not allow the
 * masking, 'mask_unsupported' for an rmgr whose PostgreSQL mask is not reproduced here.
 */
export function maskPage(rmid: number, page: Uint8Array, blkno: number): void {
  switch (rmid) {
    case RM_HEAP_ID:
    case RM_HEAP2_ID:
      maskHeapPage(page, blkno);
      return;
    case RM_BTREE_ID:
      maskBtreePage(page);
      return;
    case RM_SEQ_ID:
    case RM_GENERIC_ID:
      maskLsnChecksumAndUnused(page);
      return;
    default:
      if (PG_HAS_MASK_WE_LACK.has(rmid)) {
        throw new MaskError('mask_unsupported', `no page mask for rmgr ${rmgrName(rmid)}: PostgreSQL masks its pages, Strata does not reproduce that mask`, { rmgr: rmgrName(rmid) });
      }
      checkPageSize(page);
  }
}
