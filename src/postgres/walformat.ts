/**
 * PostgreSQL 15 WAL layout constants and WAL page headers.
 *
 * The WAL is a byte stream cut into 8 KiB pages and 16 MiB segment files (the segment size is fixed
 * at initdb and recorded in every long page header). Every page starts with a header: a 24-byte
 * short header, or a 40-byte long header on the first page of a segment. Records start 8-aligned,
 * are written straight across page boundaries, and each page a record continues on says so with
 * XLP_FIRST_IS_CONTRECORD and the number of record bytes still to come (`remLen`).
 *
 * The decoder (walstream.ts) reads and checks page headers; docs/formats.md has the byte tables.
 */
export const XLOG_BLCKSZ = 8192;
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
