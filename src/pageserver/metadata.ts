/**
 * The timeline metadata file: `<timeline dir>/metadata`.
 *
 * This small file says how far a timeline's local layer files are complete (disk_consistent_lsn)
 * and records the timeline's ancestry and retention point. Startup trusts it to decide which layer
 * files are valid, so it must never be read half-written or silently wrong:
 *  - It is always exactly 512 bytes (one disk sector) and is replaced with writeFileDurable
 *    (temp file, fsync, rename, fsync dir), so a crash leaves the old or the new file.
 *  - The first 4 bytes are a CRC-32C over the other 508, header, body and padding alike, so every
 *    byte of the file is covered: any single corrupted byte (any burst up to 32 bits) is detected.
 *  - The layout is fixed-size: optional fields have a presence byte followed by their full-width
 *    value, which must be zero when absent. Decoding is therefore a set of checks at constant
 *    offsets, and there is exactly one valid encoding of each value (decode∘encode is the identity
 *    and encode∘decode reproduces the bytes).
 *  - Integers are little-endian. This is Strata's own format (documented in
 *    docs/formats-metadata.md); it is not byte-compatible with Neon's, which is big-endian with
 *    variable-length optionals.
 *
 * Anything unexpected while decoding (size, CRC, version, presence byte, non-zero padding or
 * absent-value bytes, a disk_consistent_lsn that is not 8-aligned) is a MetadataCorruptionError
 * naming the file and the problem; Strata never guesses a timeline's state from a damaged file.
 */
import { open } from 'node:fs/promises';
import path from 'node:path';
import { crc32cRange } from '../postgres/crc32c.ts';
import { formatLsn } from '../postgres/lsn.ts';
import type { Lsn } from '../postgres/lsn.ts';
import { InvalidInputError, StrataError, assert } from '../util/errors.ts';
import { ID_BYTES, idFromBytes, idToBytes, isCanonicalId } from '../util/ids.ts';
import { writeFileDurable } from '../util/durable.ts';

export interface TimelineMetadata {
  /** Everything up to this LSN is in local layer files (8-aligned). */
  readonly diskConsistentLsn: Lsn;
  /** Start of the last record before diskConsistentLsn, when known (needed to write a basebackup). */
  readonly prevRecordLsn: Lsn | null;
  /** Parent timeline of a branch; null for a timeline created from initdb. */
  readonly ancestorTimelineId: string | null;
  /** Branch point on the ancestor; 0 when there is no ancestor. */
  readonly ancestorLsn: Lsn;
  /** History below this LSN may have been garbage-collected. */
  readonly latestGcCutoffLsn: Lsn;
  /** LSN of the initdb checkpoint the timeline (or its root ancestor) started from. */
  readonly initdbLsn: Lsn;
  /** PostgreSQL major version (15). */
  readonly pgVersion: number;
}

export const METADATA_FILE_NAME = 'metadata';
export const METADATA_FILE_BYTES = 512;
export const METADATA_FORMAT_VERSION = 1;

/** Byte offsets (see docs/formats-metadata.md). */
export const METADATA_LAYOUT = Object.freeze({
  checksum: 0,
  size: 4,
  formatVersion: 6,
  diskConsistentLsn: 8,
  prevRecordLsnFlag: 16,
  prevRecordLsn: 17,
  ancestorTimelineFlag: 25,
  ancestorTimeline: 26,
  ancestorLsn: 42,
  latestGcCutoffLsn: 50,
  initdbLsn: 58,
  pgVersion: 66,
  /** Header + body; everything from here to 512 is zero padding. */
  end: 70,
});

const L = METADATA_LAYOUT;
const U64_MAX = 0xffff_ffff_ffff_ffffn;

export type MetadataProblem =
  | 'size'
  | 'checksum'
  | 'version'
  | 'header_size'
  | 'flag'
  | 'absent_value_not_zero'
  | 'padding'
  | 'alignment'
  | 'ancestor_lsn';

/** The metadata file at `path` is damaged or not ours; `problem` says what was wrong. */
export class MetadataCorruptionError extends StrataError {
  readonly path: string;
  readonly problem: MetadataProblem;

  constructor(filePath: string, problem: MetadataProblem, detail: string) {
    super('metadata_corruption', `timeline metadata ${filePath} is corrupt: ${detail}`, { path: filePath, problem });
    this.name = 'MetadataCorruptionError';
    this.path = filePath;
    this.problem = problem;
  }
}

function checkLsnField(name: string, v: Lsn): void {
  if (typeof v !== 'bigint' || v < 0n || v > U64_MAX) {
    throw new InvalidInputError(`timeline metadata: ${name} must be a bigint LSN in [0, 2^64), got ${String(v)}`, { field: name });
  }
}

/** Validates a metadata value before encoding; throws InvalidInputError naming the field. */
function validate(md: TimelineMetadata): void {
  checkLsnField('diskConsistentLsn', md.diskConsistentLsn);
  if (md.prevRecordLsn !== null) checkLsnField('prevRecordLsn', md.prevRecordLsn);
  checkLsnField('ancestorLsn', md.ancestorLsn);
  checkLsnField('latestGcCutoffLsn', md.latestGcCutoffLsn);
  checkLsnField('initdbLsn', md.initdbLsn);
  if (md.diskConsistentLsn % 8n !== 0n) {
    throw new InvalidInputError(`timeline metadata: diskConsistentLsn ${formatLsn(md.diskConsistentLsn)} is not 8-aligned`, { field: 'diskConsistentLsn' });
  }
  if (md.ancestorTimelineId !== null && !isCanonicalId(md.ancestorTimelineId)) {
    throw new InvalidInputError(`timeline metadata: ancestorTimelineId "${md.ancestorTimelineId}" is not 32 lower-case hex digits`, { field: 'ancestorTimelineId' });
  }
  if (md.ancestorTimelineId === null && md.ancestorLsn !== 0n) {
    throw new InvalidInputError(`timeline metadata: ancestorLsn ${formatLsn(md.ancestorLsn)} given without an ancestor timeline`, { field: 'ancestorLsn' });
  }
  if (!Number.isInteger(md.pgVersion) || md.pgVersion < 0 || md.pgVersion > 0xffff_ffff) {
    throw new InvalidInputError(`timeline metadata: pgVersion must be a 32-bit unsigned integer, got ${md.pgVersion}`, { field: 'pgVersion' });
  }
}

/** The 512-byte file image of `md`. */
export function encodeMetadata(md: TimelineMetadata): Uint8Array {
  validate(md);
  const buf = new Uint8Array(METADATA_FILE_BYTES);
  const dv = new DataView(buf.buffer);
  dv.setUint16(L.size, L.end, true);
  dv.setUint16(L.formatVersion, METADATA_FORMAT_VERSION, true);
  dv.setBigUint64(L.diskConsistentLsn, md.diskConsistentLsn, true);
  if (md.prevRecordLsn !== null) {
    buf[L.prevRecordLsnFlag] = 1;
    dv.setBigUint64(L.prevRecordLsn, md.prevRecordLsn, true);
  }
  if (md.ancestorTimelineId !== null) {
    buf[L.ancestorTimelineFlag] = 1;
    buf.set(idToBytes(md.ancestorTimelineId), L.ancestorTimeline);
  }
  dv.setBigUint64(L.ancestorLsn, md.ancestorLsn, true);
  dv.setBigUint64(L.latestGcCutoffLsn, md.latestGcCutoffLsn, true);
  dv.setBigUint64(L.initdbLsn, md.initdbLsn, true);
  dv.setUint32(L.pgVersion, md.pgVersion, true);
  dv.setUint32(L.checksum, crc32cRange(buf, L.size, METADATA_FILE_BYTES), true);
  return buf;
}

function allZero(bytes: Uint8Array, start: number, end: number): boolean {
  for (let i = start; i < end; i++) if (bytes[i] !== 0) return false;
  return true;
}

/** Decodes a metadata file image; `path` names the file in errors. */
export function decodeMetadata(bytes: Uint8Array, opts: { path: string }): TimelineMetadata {
  const file = opts.path;
  if (bytes.length !== METADATA_FILE_BYTES) {
    throw new MetadataCorruptionError(file, 'size', `file is ${bytes.length} bytes, expected exactly ${METADATA_FILE_BYTES}`);
  }
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.length);
  const stored = dv.getUint32(L.checksum, true);
  const actual = crc32cRange(bytes, L.size, METADATA_FILE_BYTES);
  if (stored !== actual) {
    throw new MetadataCorruptionError(file, 'checksum', `CRC-32C mismatch (stored ${hex32(stored)}, computed ${hex32(actual)})`);
  }
  const version = dv.getUint16(L.formatVersion, true);
  if (version !== METADATA_FORMAT_VERSION) {
    throw new MetadataCorruptionError(file, 'version', `unknown format_version ${version} (this build reads ${METADATA_FORMAT_VERSION})`);
  }
  const size = dv.getUint16(L.size, true);
  if (size !== L.end) {
    throw new MetadataCorruptionError(file, 'header_size', `size field is ${size}, format version ${version} has ${L.end}`);
  }
  if (!allZero(bytes, L.end, METADATA_FILE_BYTES)) {
    throw new MetadataCorruptionError(file, 'padding', `padding after byte ${L.end} is not all zero`);
  }
  const prevRecordLsn = optional(bytes, file, 'prev_record_lsn', L.prevRecordLsnFlag, L.prevRecordLsn, 8, () => dv.getBigUint64(L.prevRecordLsn, true));
  const ancestorTimelineId = optional(bytes, file, 'ancestor_timeline', L.ancestorTimelineFlag, L.ancestorTimeline, ID_BYTES, () =>
    idFromBytes(bytes.subarray(L.ancestorTimeline, L.ancestorTimeline + ID_BYTES)),
  );
  const diskConsistentLsn = dv.getBigUint64(L.diskConsistentLsn, true);
  if (diskConsistentLsn % 8n !== 0n) {
    throw new MetadataCorruptionError(file, 'alignment', `disk_consistent_lsn ${formatLsn(diskConsistentLsn)} is not 8-aligned`);
  }
  const ancestorLsn = dv.getBigUint64(L.ancestorLsn, true);
  if (ancestorTimelineId === null && ancestorLsn !== 0n) {
    throw new MetadataCorruptionError(file, 'ancestor_lsn', `ancestor_lsn is ${formatLsn(ancestorLsn)} but there is no ancestor timeline`);
  }
  return {
    diskConsistentLsn,
    prevRecordLsn,
    ancestorTimelineId,
    ancestorLsn,
    latestGcCutoffLsn: dv.getBigUint64(L.latestGcCutoffLsn, true),
    initdbLsn: dv.getBigUint64(L.initdbLsn, true),
    pgVersion: dv.getUint32(L.pgVersion, true),
  };
}

function optional<T>(bytes: Uint8Array, file: string, name: string, flagAt: number, valueAt: number, valueBytes: number, read: () => T): T | null {
  const flag = bytes[flagAt]!;
  if (flag === 1) return read();
  if (flag !== 0) throw new MetadataCorruptionError(file, 'flag', `${name} presence byte is ${flag}, expected 0 or 1`);
  if (!allZero(bytes, valueAt, valueAt + valueBytes)) {
    throw new MetadataCorruptionError(file, 'absent_value_not_zero', `${name} is marked absent but its bytes are not zero`);
  }
  return null;
}

function hex32(v: number): string {
  return '0x' + v.toString(16).padStart(8, '0');
}

function sameMetadata(a: TimelineMetadata, b: TimelineMetadata): boolean {
  return (
    a.diskConsistentLsn === b.diskConsistentLsn &&
    a.prevRecordLsn === b.prevRecordLsn &&
    a.ancestorTimelineId === b.ancestorTimelineId &&
    a.ancestorLsn === b.ancestorLsn &&
    a.latestGcCutoffLsn === b.latestGcCutoffLsn &&
    a.initdbLsn === b.initdbLsn &&
    a.pgVersion === b.pgVersion
  );
}

export function metadataPath(timelineDir: string): string {
  return path.join(timelineDir, METADATA_FILE_NAME);
}

/** Replaces `<timelineDir>/metadata` atomically and durably. */
export async function saveMetadata(timelineDir: string, md: TimelineMetadata): Promise<void> {
  const file = metadataPath(timelineDir);
  const bytes = encodeMetadata(md);
  // Pair assertion: the bytes we are about to make durable must decode to what we were given.
  const back = decodeMetadata(bytes, { path: `${file} (about to be written)` });
  assert(sameMetadata(md, back), 'timeline metadata does not survive encode/decode', { path: file });
  await writeFileDurable(file, bytes);
}

/** Reads and decodes `<timelineDir>/metadata`. A missing file is a StrataError with code `not_found`. */
export async function loadMetadata(timelineDir: string): Promise<TimelineMetadata> {
  const file = metadataPath(timelineDir);
  let fh;
  try {
    fh = await open(file, 'r');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
      throw new StrataError('not_found', `timeline metadata ${file} does not exist`, { path: file }, { cause: err });
    }
    throw err;
  }
  try {
    // Check the size first so that a wrong (possibly huge) file is never read into memory.
    const { size } = await fh.stat();
    if (size !== METADATA_FILE_BYTES) {
      throw new MetadataCorruptionError(file, 'size', `file is ${size} bytes, expected exactly ${METADATA_FILE_BYTES}`);
    }
    const bytes = new Uint8Array(METADATA_FILE_BYTES);
    let got = 0;
    while (got < METADATA_FILE_BYTES) {
      const { bytesRead } = await fh.read(bytes, got, METADATA_FILE_BYTES - got, got);
      if (bytesRead === 0) break;
      got += bytesRead;
    }
    if (got !== METADATA_FILE_BYTES) {
      throw new MetadataCorruptionError(file, 'size', `file shrank while being read (${got} of ${METADATA_FILE_BYTES} bytes)`);
    }
    return decodeMetadata(bytes, { path: file });
  } finally {
    await fh.close();
  }
}
