/**
 * PostgreSQL 15 WAL layout constants and WAL page headers.
 *
 * The WAL is a byte stream cut into 8 KiB pages and 16 MiB segment files (the segment size is fixed
 * at initdb and recorded in every long page header). Every page starts with a header: a 24-byte
 * short header, or a 40-byte long header on the first page of a segment. Records start 8-aligned,
 * are written straight across page boundaries, and each page a record continues on says so with
 * XLP_FIRST_IS_CONTRECORD and the number of record bytes still to come (`remLen`).
 *
 * See docs/formats.md ("PostgreSQL WAL as Strata reads it") for the byte tables.
 */
import { formatLsn, type Lsn } from './lsn.ts';

export const XLOG_BLCKSZ = 8192;
export const XLOG_BLCKSZ_BIG = 8192n;
export const DEFAULT_WAL_SEGMENT_SIZE = 16 * 1024 * 1024;
/** PG15's XLOG_PAGE_MAGIC. It changes with every major version. */
export const XLOG_PAGE_MAGIC = 0xd110;
export const PG_BLCKSZ = 8192;

export const SIZE_OF_SHORT_PAGE_HEADER = 24;
export const SIZE_OF_LONG_PAGE_HEADER = 40;
export const SIZE_OF_XLOG_RECORD = 24;

export const XLP_FIRST_IS_CONTRECORD = 0x0001;
export const XLP_LONG_HEADER = 0x0002;
export const XLP_BKP_REMOVABLE = 0x0004;
export const XLP_FIRST_IS_OVERWRITE_CONTRECORD = 0x0008;
export const XLP_ALL_FLAGS = 0x000f;

/** PG15 refuses records larger than this (xlogrecord.h XLogRecordMaxSize). */
export const XLOG_RECORD_MAX_SIZE = 1020 * 1024 * 1024;

export interface WalPageHeader {
  magic: number;
  info: number;
  timeline: number;
  pageAddr: Lsn;
  remLen: number;
  /** Present on long headers only. */
  systemId: bigint | undefined;
  segmentSizeBytes: number | undefined;
  blockSizeBytes: number | undefined;
  /** 24 or 40: where the page's data starts. */
  headerSizeBytes: number;
}

/** Reads a page header. `buf[off]` must be the first byte of a WAL page; needs 24 (or 40) bytes. */
export function readPageHeader(buf: Uint8Array, off: number): WalPageHeader {
  const dv = new DataView(buf.buffer, buf.byteOffset + off, Math.min(SIZE_OF_LONG_PAGE_HEADER, buf.byteLength - off));
  const info = dv.getUint16(2, true);
  const isLong = (info & XLP_LONG_HEADER) !== 0;
  return {
    magic: dv.getUint16(0, true),
    info,
    timeline: dv.getUint32(4, true),
    pageAddr: dv.getBigUint64(8, true),
    remLen: dv.getUint32(16, true),
    systemId: isLong ? dv.getBigUint64(24, true) : undefined,
    segmentSizeBytes: isLong ? dv.getUint32(32, true) : undefined,
    blockSizeBytes: isLong ? dv.getUint32(36, true) : undefined,
    headerSizeBytes: isLong ? SIZE_OF_LONG_PAGE_HEADER : SIZE_OF_SHORT_PAGE_HEADER,
  };
}

/** Size of the header a page would have, from its first two bytes of flags. */
export function pageHeaderSize(info: number): number {
  return (info & XLP_LONG_HEADER) !== 0 ? SIZE_OF_LONG_PAGE_HEADER : SIZE_OF_SHORT_PAGE_HEADER;
}

export interface PageHeaderExpectations {
  pageLsn: Lsn;
  segmentSizeBytes: number;
  /** When known, long headers must carry this system identifier. */
  systemId: bigint | undefined;
  /** Pages may not go back to a lower timeline than the last page read. */
  minTimeline: number;
}

/**
 * Checks a page header the way PostgreSQL's reader does. Returns a description of the first
 * problem, or null when the header is valid.
 */
export function validatePageHeader(h: WalPageHeader, exp: PageHeaderExpectations): string | null {
  const segOffset = Number(exp.pageLsn % BigInt(exp.segmentSizeBytes));
  if (h.magic !== XLOG_PAGE_MAGIC) {
    return `invalid magic number ${hex4(h.magic)} in WAL page at ${formatLsn(exp.pageLsn)} (PostgreSQL 15 writes ${hex4(XLOG_PAGE_MAGIC)})`;
  }
  if ((h.info & ~XLP_ALL_FLAGS) !== 0) {
    return `invalid info bits ${hex4(h.info)} in WAL page at ${formatLsn(exp.pageLsn)}`;
  }
  if (segOffset === 0 && (h.info & XLP_LONG_HEADER) === 0) {
    return `WAL page at ${formatLsn(exp.pageLsn)} starts a segment but has no long header`;
  }
  if (h.info & XLP_LONG_HEADER) {
    if (segOffset !== 0) return `unexpected long page header in the middle of a segment at ${formatLsn(exp.pageLsn)}`;
    if (exp.systemId !== undefined && h.systemId !== exp.systemId) {
      return `WAL segment at ${formatLsn(exp.pageLsn)} is from another database system: its system identifier is ${h.systemId}, expected ${exp.systemId}`;
    }
    if (h.segmentSizeBytes !== exp.segmentSizeBytes) {
      return `WAL segment at ${formatLsn(exp.pageLsn)} has segment size ${h.segmentSizeBytes}, expected ${exp.segmentSizeBytes}`;
    }
    if (h.blockSizeBytes !== XLOG_BLCKSZ) {
      return `WAL segment at ${formatLsn(exp.pageLsn)} has WAL block size ${h.blockSizeBytes}, expected ${XLOG_BLCKSZ}`;
    }
  }
  if (h.pageAddr !== exp.pageLsn) {
    return `unexpected page address ${formatLsn(h.pageAddr)} in WAL page at ${formatLsn(exp.pageLsn)} (a recycled or foreign segment)`;
  }
  if (h.timeline < exp.minTimeline) {
    return `out-of-sequence timeline ID ${h.timeline} (after ${exp.minTimeline}) in WAL page at ${formatLsn(exp.pageLsn)}`;
  }
  return null;
}

function hex4(v: number): string {
  return '0x' + v.toString(16).toUpperCase().padStart(4, '0');
}

/** `TTTTTTTTXXXXXXXXYYYYYYYY` for a segment number on a timeline. */
export function walSegmentFileName(timeline: number, segNo: bigint, segmentSizeBytes: number): string {
  const segsPerXlogId = 0x1_0000_0000n / BigInt(segmentSizeBytes);
  const hi = segNo / segsPerXlogId;
  const lo = segNo % segsPerXlogId;
  return [BigInt(timeline), hi, lo].map((v) => v.toString(16).toUpperCase().padStart(8, '0')).join('');
}

const SEGMENT_NAME = /^([0-9A-F]{8})([0-9A-F]{8})([0-9A-F]{8})(\.partial)?$/;

/** Parses a WAL segment file name; returns null when the name is not one. */
export function parseWalSegmentFileName(name: string, segmentSizeBytes: number): { timeline: number; segNo: bigint; partial: boolean } | null {
  const m = SEGMENT_NAME.exec(name);
  if (m === null) return null;
  const segsPerXlogId = 0x1_0000_0000n / BigInt(segmentSizeBytes);
  const lo = BigInt('0x' + m[3]);
  if (lo >= segsPerXlogId) return null;
  return { timeline: parseInt(m[1]!, 16), segNo: BigInt('0x' + m[2]) * segsPerXlogId + lo, partial: m[4] !== undefined };
}
