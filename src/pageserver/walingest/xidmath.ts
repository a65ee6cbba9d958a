/**
 * Transaction-id and SLRU arithmetic of PostgreSQL 15, as the WAL ingest needs it: modular xid
 * and multixact comparisons, which CLOG / multixact page holds an id, and which SLRU segments a
 * truncation removes. Written from PostgreSQL's definitions (transam.h, clog.c, multixact.c,
 * slru.c); the wraparound rules are the subtle part, so they live here alone and are unit-tested.
 */
import type { CheckPoint } from '../../postgres/records/xlog.ts';
import { SLRU_PAGES_PER_SEGMENT } from '../../storage/key.ts';
import { CLOG_XACTS_PER_PAGE, MULTIXACT_MEMBERS_PER_PAGE, MULTIXACT_OFFSETS_PER_PAGE } from '../../storage/redo.ts';

export { CLOG_XACTS_PER_PAGE, MULTIXACT_MEMBERS_PER_PAGE, MULTIXACT_OFFSETS_PER_PAGE };

export const FIRST_NORMAL_TRANSACTION_ID = 3;
export const FIRST_MULTIXACT_ID = 1;
/** Neon's XID_CHECKPOINT_INTERVAL: nextXid is kept rounded up to this (a divisor of a CLOG page). */
export const XID_ROUNDING = 1024;

export function transactionIdIsNormal(xid: number): boolean {
  return xid >= FIRST_NORMAL_TRANSACTION_ID;
}

/** TransactionIdPrecedes: modulo-2^32 comparison for normal xids, plain for special ones. */
export function transactionIdPrecedes(a: number, b: number): boolean {
  if (!transactionIdIsNormal(a) || !transactionIdIsNormal(b)) return a < b;
  return ((a - b) | 0) < 0;
}

export function multiXactIdPrecedes(a: number, b: number): boolean {
  return ((a - b) | 0) < 0;
}

/** MultiXactOffsetPrecedes: offsets compare modulo 2^32 too. */
export function multiXactOffsetPrecedes(a: number, b: number): boolean {
  return ((a - b) | 0) < 0;
}

export function clogPageOfXid(xid: number): number {
  return Math.floor(xid / CLOG_XACTS_PER_PAGE);
}

export function multixactOffsetPage(multi: number): number {
  return Math.floor(multi / MULTIXACT_OFFSETS_PER_PAGE);
}

export function multixactMemberPage(offset: number): number {
  return Math.floor(offset / MULTIXACT_MEMBERS_PER_PAGE);
}

export function segmentOfPage(pageNo: number): { segNo: number; blockNumber: number } {
  return { segNo: Math.floor(pageNo / SLRU_PAGES_PER_SEGMENT), blockNumber: pageNo % SLRU_PAGES_PER_SEGMENT };
}

/**
 * nextXid after seeing `xid` in the WAL: max(nextXid, xid + 1), rounded up to XID_ROUNDING, with
 * the epoch bumped on wraparound. Rounding cuts checkpoint-value writes to one per 1024 xids and
 * is safe: 1024 divides a CLOG page, so a rounded nextXid lies on the page of the real one or at
 * the very start of the next page (which TrimCLOG does not read). Returns null when unchanged.
 */
export function advanceNextXid(nextXid: bigint, xid: number): bigint | null {
  if (!transactionIdIsNormal(xid)) return null;
  let candidate = (xid + 1) >>> 0;
  if (candidate < FIRST_NORMAL_TRANSACTION_ID) candidate = FIRST_NORMAL_TRANSACTION_ID;
  candidate = ((candidate + XID_ROUNDING - 1) & ~(XID_ROUNDING - 1)) >>> 0;
  if (candidate < FIRST_NORMAL_TRANSACTION_ID) candidate = FIRST_NORMAL_TRANSACTION_ID; // wrapped to 0
  const oldXid = Number(nextXid & 0xffff_ffffn);
  if (((candidate - oldXid) | 0) <= 0) return null;
  let epoch = nextXid >> 32n;
  if (candidate < oldXid) epoch += 1n;
  return (epoch << 32n) | BigInt(candidate);
}

/** A copy of `cp` with nextXid advanced past `xids`, or null when nothing changed. */
export function checkpointWithXids(cp: CheckPoint, xids: Iterable<number>): CheckPoint | null {
  let next = cp.nextXid;
  let changed = false;
  for (const xid of xids) {
    const n = advanceNextXid(next, xid);
    if (n !== null) {
      next = n;
      changed = true;
    }
  }
  return changed ? { ...cp, nextXid: next } : null;
}

/** CLOGPagePrecedes (clog.c): does CLOG page a precede page b, taking wraparound into account? */
export function clogPagePrecedes(a: number, b: number): boolean {
  const xid1 = (a * CLOG_XACTS_PER_PAGE + FIRST_NORMAL_TRANSACTION_ID + 1) >>> 0;
  const xid2 = (b * CLOG_XACTS_PER_PAGE + FIRST_NORMAL_TRANSACTION_ID + 1) >>> 0;
  return transactionIdPrecedes(xid1, xid2) && transactionIdPrecedes(xid1, (xid2 + CLOG_XACTS_PER_PAGE - 1) >>> 0);
}

/** MultiXactOffsetPagePrecedes (multixact.c). */
export function multixactOffsetPagePrecedes(a: number, b: number): boolean {
  const m1 = (a * MULTIXACT_OFFSETS_PER_PAGE + FIRST_MULTIXACT_ID) >>> 0;
  const m2 = (b * MULTIXACT_OFFSETS_PER_PAGE + FIRST_MULTIXACT_ID) >>> 0;
  return multiXactIdPrecedes(m1, m2) && multiXactIdPrecedes(m1, (m2 + MULTIXACT_OFFSETS_PER_PAGE - 1) >>> 0);
}

/**
 * SimpleLruTruncate's choice (slru.c): with the cutoff rounded down to a segment start, a segment
 * goes when both its first and its last page precede the cutoff.
 */
export function segmentsToTruncate(segments: Iterable<number>, cutoffPage: number, pagePrecedes: (a: number, b: number) => boolean): number[] {
  const cutoff = cutoffPage - (cutoffPage % SLRU_PAGES_PER_SEGMENT);
  const out: number[] = [];
  for (const seg of segments) {
    const first = seg * SLRU_PAGES_PER_SEGMENT;
    if (pagePrecedes(first, cutoff) && pagePrecedes(first + SLRU_PAGES_PER_SEGMENT - 1, cutoff)) out.push(seg);
  }
  return out;
}

/** Highest members segment (the one holding offset 0xFFFFFFFF); members segments wrap after it. */
export const MAX_MEMBERS_SEGMENT = Math.floor(Math.floor(0xffff_ffff / MULTIXACT_MEMBERS_PER_PAGE) / SLRU_PAGES_PER_SEGMENT);

/** PerformMembersTruncation: members segments from start's up to (not including) end's, wrapping. */
export function membersSegmentsToTruncate(startOffset: number, endOffset: number): number[] {
  const start = Math.floor(multixactMemberPage(startOffset) / SLRU_PAGES_PER_SEGMENT);
  const end = Math.floor(multixactMemberPage(endOffset) / SLRU_PAGES_PER_SEGMENT);
  const out: number[] = [];
  for (let seg = start; seg !== end && out.length <= MAX_MEMBERS_SEGMENT; seg = seg === MAX_MEMBERS_SEGMENT ? 0 : seg + 1) out.push(seg);
  return out;
}

/** PreviousMultiXactId. */
export function previousMultiXactId(multi: number): number {
  return multi === FIRST_MULTIXACT_ID ? 0xffff_ffff : multi - 1;
}
