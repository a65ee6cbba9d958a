/**
 * `pagectl metadata`: decode a timeline's 512-byte metadata file (read-only).
 */
import { closeSync, fstatSync, openSync, readSync } from 'node:fs';
import path from 'node:path';
import { formatLsn } from '../../postgres/lsn.ts';
import { METADATA_FILE_BYTES, METADATA_FILE_NAME, METADATA_FORMAT_VERSION, MetadataCorruptionError, decodeMetadata, type TimelineMetadata } from '../../pageserver/metadata.ts';
import { PagectlError, fsErrorMessage, isErrno, statOrFail } from './common.ts';

// ---------------------------------------------------------------------------------------------
// Metadata.

export interface MetadataFileInfo {
  path: string;
  /** The stored CRC-32C (verified by decodeMetadata). */
  checksum: number;
  metadata: TimelineMetadata;
}

/**
 * Reads and decodes a timeline metadata file (or `<dir>/metadata` when given a directory). The
 * size is checked before reading, so a wrong (possibly huge) file is never read into memory.
 */
export async function readMetadataFile(p: string): Promise<MetadataFileInfo> {
  const st = await statOrFail(p);
  const file = st.isDirectory() ? path.join(p, METADATA_FILE_NAME) : p;
  let fd: number;
  try {
    fd = openSync(file, 'r');
  } catch (err) {
    if (isErrno(err)) throw new PagectlError(fsErrorMessage(err, file), { path: file });
    throw err;
  }
  try {
    const size = fstatSync(fd).size;
    if (size !== METADATA_FILE_BYTES) {
      throw new MetadataCorruptionError(file, 'size', `file is ${size} bytes, expected exactly ${METADATA_FILE_BYTES}${size < METADATA_FILE_BYTES ? ' (truncated)' : ''}`);
    }
    const bytes = Buffer.alloc(METADATA_FILE_BYTES);
    let got = 0;
    for (let rounds = 0; got < METADATA_FILE_BYTES && rounds < 1000; rounds++) {
      const n = readSync(fd, bytes, got, METADATA_FILE_BYTES - got, got);
      if (n <= 0) break;
      got += n;
    }
    if (got !== METADATA_FILE_BYTES) throw new MetadataCorruptionError(file, 'size', `file shrank while being read (${got} of ${METADATA_FILE_BYTES} bytes)`);
    const metadata = decodeMetadata(bytes, { path: file });
    return { path: file, checksum: bytes.readUInt32LE(0), metadata };
  } finally {
    closeSync(fd);
  }
}

function hex32(n: number): string {
  return '0x' + (n >>> 0).toString(16).toUpperCase().padStart(8, '0');
}

export function metadataToJson(info: MetadataFileInfo): Record<string, unknown> {
  const md = info.metadata;
  return {
    path: info.path,
    formatVersion: METADATA_FORMAT_VERSION,
    checksum: hex32(info.checksum),
    diskConsistentLsn: formatLsn(md.diskConsistentLsn),
    prevRecordLsn: md.prevRecordLsn === null ? null : formatLsn(md.prevRecordLsn),
    ancestorTimelineId: md.ancestorTimelineId,
    ancestorLsn: formatLsn(md.ancestorLsn),
    latestGcCutoffLsn: formatLsn(md.latestGcCutoffLsn),
    initdbLsn: formatLsn(md.initdbLsn),
    pgVersion: md.pgVersion,
  };
}

export function metadataToText(info: MetadataFileInfo): string[] {
  const md = info.metadata;
  const rows: [string, string][] = [
    ['file', info.path],
    ['format_version', String(METADATA_FORMAT_VERSION)],
    ['checksum', `${hex32(info.checksum)} (CRC-32C, verified)`],
    ['disk_consistent_lsn', formatLsn(md.diskConsistentLsn)],
    ['prev_record_lsn', md.prevRecordLsn === null ? 'none' : formatLsn(md.prevRecordLsn)],
    ['ancestor_timeline', md.ancestorTimelineId ?? 'none'],
    ['ancestor_lsn', formatLsn(md.ancestorLsn)],
    ['latest_gc_cutoff_lsn', formatLsn(md.latestGcCutoffLsn)],
    ['initdb_lsn', formatLsn(md.initdbLsn)],
    ['pg_version', String(md.pgVersion)],
  ];
  return rows.map(([k, v]) => `${k.padEnd(21)} ${v}`);
}
