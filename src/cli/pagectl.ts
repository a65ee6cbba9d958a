/**
 * `strata pagectl`: offline inspection of a pageserver's files (Neon's pagectl, read-only).
 *
 *   pagectl layer list <dir>     every layer file of every timeline under a work directory, a
 *                                tenant directory or a timeline directory, one row each
 *   pagectl layer dump <file>    one layer file: its summary, then one line per entry
 *   pagectl metadata <file>      the 512-byte timeline metadata file, decoded
 *
 * Design:
 * - Only the existing readers interpret bytes (LayerFileReader, decodeMetadata, decodeValue), so
 *   the tool sees a file exactly as the pageserver would and refuses what it would refuse. Nothing
 *   is ever written, renamed or removed: unlike the pageserver's loader, which deletes temporary
 *   files and layers beyond disk_consistent_lsn, this tool only reports them.
 * - "All or nothing" output: a command that meets a missing, damaged or foreign file prints one
 *   line on stderr, exits 1, and writes nothing on stdout. `list` and `metadata` therefore build
 *   their whole output before writing it (bounded by the number of layer files, not their size).
 *   `dump` must stream (a layer can hold millions of entries) in bounded memory, so it reads the
 *   file twice: a verification pass (every index block's and every value's CRC, every value
 *   decoded, the summary's counts and ranges against the entries, values back to back), then the
 *   printing pass. Only a file that changes between the two passes can end a dump half-way; that
 *   too ends with an error line and exit status 1.
 * - `list` opens each layer (summary CRC, geometry, real size, fence CRC, name vs. summary, and
 *   tenant/timeline vs. the directory names) but does not read index blocks or values; `dump`
 *   checks everything.
 * - Exit status: 0 success, 1 a file problem (missing, damaged, not what it should be), 2 usage.
 */
import { closeSync, fstatSync, openSync, readSync, type Stats } from 'node:fs';
import { readdir, stat } from 'node:fs/promises';
import path from 'node:path';
import type { Writable } from 'node:stream';
import { InvalidArgumentError, type Command } from 'commander';
import { formatLsn, formatLsnPadded, type Lsn } from '../postgres/lsn.ts';
import { recordTypeName, rmgrName } from '../postgres/rmgr.ts';
import { SIZE_OF_XLOG_RECORD } from '../postgres/walformat.ts';
import { describeKey, isRelBlockKey, keyToHex, type Key } from '../storage/key.ts';
import { ClogStatus, NO_BLOCK, decodeValue, describeValue, valueWillInit, type Value } from '../storage/value.ts';
import { BlockCache } from '../storage/layerfile/blockcache.ts';
import { FdCache } from '../storage/layerfile/fdcache.ts';
import { LayerCorruptionError, parseLayerFileName, describeKeyForError, type LayerSummary } from '../storage/layerfile/format.ts';
import { LayerFileReader, type LayerEntryRef } from '../storage/layerfile/reader.ts';
import {
  METADATA_FILE_BYTES, METADATA_FILE_NAME, METADATA_FORMAT_VERSION, MetadataCorruptionError, decodeMetadata, type TimelineMetadata,
} from '../pageserver/metadata.ts';
import { TEMP_SUFFIX } from '../util/durable.ts';
import { StrataError } from '../util/errors.ts';
import { tryParseId } from '../util/ids.ts';
import { LineWriter } from './output.ts';

// ---------------------------------------------------------------------------------------------
// Errors and small helpers.

/** A file or directory that is not what pagectl was asked to read. Exit status 1. */
export class PagectlError extends StrataError {
  constructor(message: string, context: Record<string, string | number | undefined> = {}) {
    super('pagectl', message, context);
    this.name = 'PagectlError';
  }
}

/** Bounds on what one invocation reads (a directory with more is refused, not half-listed). */
const MAX_TIMELINES = 100_000;
const MAX_LAYER_FILES = 1_000_000;

/** Turns an fs error into one readable line naming the path. */
function fsErrorMessage(err: NodeJS.ErrnoException, p: string): string {
  switch (err.code) {
    case 'ENOENT': return `${p}: no such file or directory`;
    case 'EACCES': return `${p}: permission denied`;
    case 'EISDIR': return `${p} is a directory, expected a file`;
    case 'ENOTDIR': return `${p}: a component of the path is not a directory`;
    default: return `${p}: ${err.message}`;
  }
}

function isErrno(err: unknown): err is NodeJS.ErrnoException {
  return err instanceof Error && typeof (err as NodeJS.ErrnoException).code === 'string' && !(err instanceof StrataError);
}

async function statOrNull(p: string): Promise<Stats | null> {
  try {
    return await stat(p);
  } catch (err) {
    if (isErrno(err) && (err.code === 'ENOENT' || err.code === 'ENOTDIR')) return null;
    throw err;
  }
}

async function statOrFail(p: string): Promise<Stats> {
  try {
    return await stat(p);
  } catch (err) {
    if (isErrno(err)) throw new PagectlError(fsErrorMessage(err, p), { path: p });
    throw err;
  }
}

/** "[0/14EE6C9, 0/16B3D81)" for a delta, "0/14EE6C8" for an image. */
export function lsnRangeText(kind: 'delta' | 'image', start: Lsn, end: Lsn): string {
  return kind === 'image' ? formatLsn(start) : `[${formatLsn(start)}, ${formatLsn(end)})`;
}

/** The tenant and timeline ids of a path laid out as `…/tenants/<t>/timelines/<tl>/<file>`, else null. */
export function idsFromLayerPath(filePath: string): { tenantId: string; timelineId: string } | null {
  const abs = path.resolve(filePath);
  const timelineDir = path.dirname(abs);
  const timelinesDir = path.dirname(timelineDir);
  const tenantDir = path.dirname(timelinesDir);
  const tenantsDir = path.dirname(tenantDir);
  if (path.basename(timelinesDir) !== 'timelines' || path.basename(tenantsDir) !== 'tenants') return null;
  const timelineId = tryParseId(path.basename(timelineDir));
  const tenantId = tryParseId(path.basename(tenantDir));
  return timelineId === null || tenantId === null ? null : { tenantId, timelineId };
}

function openReader(filePath: string, expect: { tenantId: string; timelineId: string } | null): LayerFileReader {
  // list opens one file at a time and dump reads index blocks into the reader's private buffer,
  // so the caches only need to satisfy their own minimums.
  const opts = { blockCache: new BlockCache({ maxBytes: 4 * 8192 }), fdCache: new FdCache({ maxOpenFiles: 2 }) };
  try {
    return LayerFileReader.open(filePath, expect === null ? opts : { ...opts, expect });
  } catch (err) {
    if (isErrno(err)) throw new PagectlError(fsErrorMessage(err, filePath), { path: filePath });
    throw err;
  }
}

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

// ---------------------------------------------------------------------------------------------
// layer list.

export type PagectlDirKind = 'workdir' | 'tenant' | 'timeline';

export interface TimelineDirRef {
  dir: string;
  /** From the directory names when they are ids (then layer files must match them). */
  tenantId: string | null;
  timelineId: string | null;
}

export interface ScannedDirs {
  kind: PagectlDirKind;
  timelines: TimelineDirRef[];
  /** Entries skipped because they are not ids (temporary or deleted leftovers, foreign files). */
  ignored: string[];
}

async function isDir(p: string): Promise<boolean> {
  return (await statOrNull(p))?.isDirectory() === true;
}

async function sortedEntries(dir: string): Promise<string[]> {
  try {
    return (await readdir(dir)).sort();
  } catch (err) {
    if (isErrno(err)) throw new PagectlError(fsErrorMessage(err, dir), { path: dir });
    throw err;
  }
}

/** Timeline directories under `tenantDir/timelines`, in id order. */
async function scanTenant(tenantDir: string, tenantId: string | null, out: ScannedDirs): Promise<void> {
  const timelinesDir = path.join(tenantDir, 'timelines');
  for (const name of await sortedEntries(timelinesDir)) {
    const full = path.join(timelinesDir, name);
    const timelineId = tryParseId(name);
    if (timelineId === null || !(await isDir(full))) {
      out.ignored.push(full);
      continue;
    }
    if (out.timelines.length >= MAX_TIMELINES) throw new PagectlError(`more than ${MAX_TIMELINES} timelines under ${tenantDir}; list a tenant or timeline directory instead`);
    out.timelines.push({ dir: full, tenantId, timelineId });
  }
}

/**
 * Classifies `p` as a pageserver work directory (has `tenants/`), a tenant directory (has
 * `timelines/`) or a timeline directory (has a `metadata` file), and finds its timeline
 * directories. Anything else is a PagectlError.
 */
export async function scanPagectlDir(p: string): Promise<ScannedDirs> {
  const st = await statOrFail(p);
  if (!st.isDirectory()) {
    throw new PagectlError(`${p} is not a directory: give a pageserver work directory, a tenant directory or a timeline directory`, { path: p });
  }
  const abs = path.resolve(p);
  if (await isDir(path.join(p, 'tenants'))) {
    const out: ScannedDirs = { kind: 'workdir', timelines: [], ignored: [] };
    const tenantsDir = path.join(p, 'tenants');
    for (const name of await sortedEntries(tenantsDir)) {
      const full = path.join(tenantsDir, name);
      const tenantId = tryParseId(name);
      if (tenantId === null || !(await isDir(path.join(full, 'timelines')))) {
        out.ignored.push(full);
        continue;
      }
      await scanTenant(full, tenantId, out);
    }
    return out;
  }
  if (await isDir(path.join(p, 'timelines'))) {
    const out: ScannedDirs = { kind: 'tenant', timelines: [], ignored: [] };
    await scanTenant(p, tryParseId(path.basename(abs)), out);
    return out;
  }
  if ((await statOrNull(path.join(p, METADATA_FILE_NAME)))?.isFile() === true) {
    const parent = path.dirname(abs);
    const ids = path.basename(parent) === 'timelines'
      ? { tenantId: tryParseId(path.basename(path.dirname(parent))), timelineId: tryParseId(path.basename(abs)) }
      : { tenantId: null, timelineId: tryParseId(path.basename(abs)) };
    return { kind: 'timeline', timelines: [{ dir: p, ...ids }], ignored: [] };
  }
  throw new PagectlError(`${p} is not a pageserver work directory (no tenants/), a tenant directory (no timelines/) or a timeline directory (no metadata file)`, { path: p });
}

export interface LayerListEntry {
  file: string;
  kind: 'delta' | 'image';
  keyStart: Key;
  keyEnd: Key;
  lsnStart: Lsn;
  lsnEnd: Lsn;
  sizeBytes: number;
  entryCount: number;
  keyCount: number;
  /** Holds WAL beyond the timeline's disk_consistent_lsn: the pageserver deletes it at startup. */
  beyondDiskConsistentLsn: boolean;
}

export interface TimelineListing {
  dir: string;
  tenantId: string | null;
  timelineId: string | null;
  metadata: TimelineMetadata;
  /** The creation-in-progress mark is present (the pageserver removes such a timeline at startup). */
  uninit: boolean;
  layers: LayerListEntry[];
  /** Temporary files (interrupted writes) and unknown files; `metadata` and the markers are not listed. */
  otherFiles: string[];
  sizeBytes: number;
  entryCount: number;
}

export interface LayerListing {
  path: string;
  kind: PagectlDirKind;
  timelines: TimelineListing[];
  ignored: string[];
  layerCount: number;
  sizeBytes: number;
  entryCount: number;
}

const TIMELINE_MARKERS = new Set([METADATA_FILE_NAME, 'uninit', 'wal-source.json']);

function compareLayers(a: LayerListEntry, b: LayerListEntry): number {
  if (a.lsnStart !== b.lsnStart) return a.lsnStart < b.lsnStart ? -1 : 1;
  if (a.lsnEnd !== b.lsnEnd) return a.lsnEnd < b.lsnEnd ? -1 : 1;
  if (a.keyStart !== b.keyStart) return a.keyStart < b.keyStart ? -1 : 1;
  return a.file < b.file ? -1 : a.file > b.file ? 1 : 0;
}

async function listTimeline(ref: TimelineDirRef, counter: { files: number }): Promise<TimelineListing> {
  const { metadata } = await readMetadataFile(path.join(ref.dir, METADATA_FILE_NAME));
  const expect = ref.tenantId !== null && ref.timelineId !== null ? { tenantId: ref.tenantId, timelineId: ref.timelineId } : null;
  const dcl = metadata.diskConsistentLsn;
  const listing: TimelineListing = {
    dir: ref.dir, tenantId: ref.tenantId, timelineId: ref.timelineId, metadata, uninit: false, layers: [], otherFiles: [], sizeBytes: 0, entryCount: 0,
  };
  for (const name of await sortedEntries(ref.dir)) {
    if (name === 'uninit') listing.uninit = true;
    if (TIMELINE_MARKERS.has(name)) continue;
    const full = path.join(ref.dir, name);
    const parsed = name.endsWith(TEMP_SUFFIX) ? null : parseLayerFileName(name);
    if (parsed === null || (await statOrNull(full))?.isFile() !== true) {
      listing.otherFiles.push(name);
      continue;
    }
    if (++counter.files > MAX_LAYER_FILES) throw new PagectlError(`more than ${MAX_LAYER_FILES} layer files; list a tenant or timeline directory instead`);
    const reader = openReader(full, expect);
    try {
      const s = reader.summary;
      if (expect === null && ref.timelineId !== null && s.timelineId !== ref.timelineId) {
        throw new LayerCorruptionError(`layer file ${full}: belongs to timeline ${s.timelineId}, but lies in the directory of timeline ${ref.timelineId}`, { path: full });
      }
      listing.layers.push({
        file: name, kind: s.kind, keyStart: s.keyRange.start, keyEnd: s.keyRange.end, lsnStart: s.lsnRange.start, lsnEnd: s.lsnRange.end,
        sizeBytes: s.fileSizeBytes, entryCount: s.entryCount, keyCount: s.keyCount,
        beyondDiskConsistentLsn: s.kind === 'delta' ? s.lsnRange.end > dcl + 1n : s.lsnRange.start > dcl,
      });
      listing.sizeBytes += s.fileSizeBytes;
      listing.entryCount += s.entryCount;
    } finally {
      reader.close();
    }
  }
  listing.layers.sort(compareLayers);
  return listing;
}

/** Everything `pagectl layer list` prints, read before anything is printed. */
export async function listLayers(p: string): Promise<LayerListing> {
  const scanned = await scanPagectlDir(p);
  const counter = { files: 0 };
  const listing: LayerListing = { path: p, kind: scanned.kind, timelines: [], ignored: scanned.ignored, layerCount: 0, sizeBytes: 0, entryCount: 0 };
  for (const ref of scanned.timelines) {
    const tl = await listTimeline(ref, counter);
    listing.timelines.push(tl);
    listing.layerCount += tl.layers.length;
    listing.sizeBytes += tl.sizeBytes;
    listing.entryCount += tl.entryCount;
  }
  return listing;
}

export function layerListingToJson(l: LayerListing): Record<string, unknown> {
  return {
    path: l.path,
    kind: l.kind,
    timelines: l.timelines.map((t) => ({
      dir: t.dir,
      tenantId: t.tenantId,
      timelineId: t.timelineId,
      diskConsistentLsn: formatLsn(t.metadata.diskConsistentLsn),
      ancestorTimelineId: t.metadata.ancestorTimelineId,
      ancestorLsn: formatLsn(t.metadata.ancestorLsn),
      uninit: t.uninit,
      layers: t.layers.map((x) => ({
        file: x.file, kind: x.kind, keyStart: keyToHex(x.keyStart), keyEnd: keyToHex(x.keyEnd),
        lsnStart: formatLsn(x.lsnStart), lsnEnd: formatLsn(x.lsnEnd), sizeBytes: x.sizeBytes, entryCount: x.entryCount, keyCount: x.keyCount,
        beyondDiskConsistentLsn: x.beyondDiskConsistentLsn,
      })),
      otherFiles: t.otherFiles,
      layerCount: t.layers.length,
      sizeBytes: t.sizeBytes,
      entryCount: t.entryCount,
    })),
    ignored: l.ignored,
    total: { timelines: l.timelines.length, layerCount: l.layerCount, sizeBytes: l.sizeBytes, entryCount: l.entryCount },
  };
}

function plural(n: number, one: string, many = one + 's'): string {
  return `${n} ${n === 1 ? one : many}`;
}

const DIR_KIND_NAMES: Record<PagectlDirKind, string> = { workdir: 'pageserver work directory', tenant: 'tenant directory', timeline: 'timeline directory' };

export function layerListingToText(l: LayerListing): string[] {
  const lines: string[] = [`${DIR_KIND_NAMES[l.kind]} ${l.path}: ${plural(l.timelines.length, 'timeline')}`];
  let beyond = 0;
  for (const t of l.timelines) {
    const md = t.metadata;
    lines.push('');
    lines.push(`tenant ${t.tenantId ?? '?'} timeline ${t.timelineId ?? '?'}${t.uninit ? '  (uninit mark: creation did not finish; removed at startup)' : ''}`);
    lines.push(`  disk_consistent_lsn ${formatLsn(md.diskConsistentLsn)}, ancestor ${md.ancestorTimelineId === null ? 'none' : `${md.ancestorTimelineId} at ${formatLsn(md.ancestorLsn)}`}`);
    if (t.layers.length > 0) {
      lines.push(`  ${'kind'.padEnd(6)} ${'LSN range'.padEnd(26)} ${'size (bytes)'.padStart(13)} ${'entries'.padStart(9)} ${'keys'.padStart(9)}  key range`);
      for (const x of t.layers) {
        if (x.beyondDiskConsistentLsn) beyond++;
        lines.push(`  ${x.kind.padEnd(6)} ${lsnRangeText(x.kind, x.lsnStart, x.lsnEnd).padEnd(26)} ${String(x.sizeBytes).padStart(13)} ${String(x.entryCount).padStart(9)} ${String(x.keyCount).padStart(9)}  ${keyToHex(x.keyStart)}-${keyToHex(x.keyEnd)}${x.beyondDiskConsistentLsn ? ' *' : ''}`);
      }
    }
    lines.push(`  ${plural(t.layers.length, 'layer file')}, ${t.sizeBytes} bytes, ${plural(t.entryCount, 'entry', 'entries')}`);
    if (t.otherFiles.length > 0) lines.push(`  other files: ${t.otherFiles.join(', ')}`);
  }
  if (beyond > 0) lines.push('', '* holds WAL beyond disk_consistent_lsn: the pageserver deletes it at startup and ingests that WAL again');
  if (l.ignored.length > 0) lines.push('', `ignored (not tenant/timeline directories): ${l.ignored.join(', ')}`);
  lines.push('', `total: ${plural(l.timelines.length, 'timeline')}, ${plural(l.layerCount, 'layer file')}, ${l.sizeBytes} bytes, ${plural(l.entryCount, 'entry', 'entries')}`);
  return lines;
}

// ---------------------------------------------------------------------------------------------
// layer dump: values.

const CLOG_STATUS_NAMES: Record<number, string> = {
  [ClogStatus.inProgress]: 'in-progress', [ClogStatus.committed]: 'committed', [ClogStatus.aborted]: 'aborted', [ClogStatus.subCommitted]: 'sub-committed',
};
/** PostgreSQL timestamps count microseconds from 2000-01-01 00:00 UTC. */
const PG_EPOCH_MS = 946_684_800_000;
/** Lists in JSON output are cut after this many items (the count is always given). */
const JSON_LIST_LIMIT = 64;

function pgTimestampText(us: bigint): string {
  const ms = Number(us / 1000n) + PG_EPOCH_MS;
  const d = new Date(ms);
  return Number.isNaN(d.getTime()) ? `${us}us` : d.toISOString();
}

function blockText(b: number): number | null {
  return b === NO_BLOCK ? null : b;
}

/** Fields of a stored WAL record's header (XLogRecord), or null when it is too short to hold one. */
function recordHeader(rec: Buffer): { totLen: number; xid: number; info: number; rmid: number } | null {
  if (rec.length < SIZE_OF_XLOG_RECORD) return null;
  return { totLen: rec.readUInt32LE(0), xid: rec.readUInt32LE(4), info: rec[16]!, rmid: rec[17]! };
}

export interface ValueDescription {
  kind: Value['kind'];
  text: string;
  json: Record<string, unknown>;
}

/** A dump line's value part, for a decoded value stored under `key`. */
export function describeLayerValue(key: Key, v: Value): ValueDescription {
  switch (v.kind) {
    case 'image': {
      const json: Record<string, unknown> = { kind: 'image', imageBytes: v.image.length };
      let text = `image ${v.image.length} bytes`;
      if (isRelBlockKey(key) && v.image.length === 8192) {
        // pd_lsn: two little-endian u32 halves (xlogid, xrecoff) at the start of the page header.
        const pageLsn = (BigInt(v.image.readUInt32LE(0)) << 32n) | BigInt(v.image.readUInt32LE(4));
        json['pageLsn'] = formatLsn(pageLsn);
        text += `, page LSN ${formatLsn(pageLsn)}`;
      }
      return { kind: v.kind, text, json };
    }
    case 'pgRecord': {
      const h = recordHeader(v.record);
      if (h === null) {
        return {
          kind: v.kind,
          text: `pgRecord start ${formatLsn(v.recordLsn)}: ${v.record.length} bytes, too short for a record header${v.willInit ? ', will init' : ''}`,
          json: { kind: 'pgRecord', recordLsn: formatLsn(v.recordLsn), recordBytes: v.record.length, willInit: v.willInit, problem: 'shorter than a record header' },
        };
      }
      const rmgr = rmgrName(h.rmid);
      const type = recordTypeName(h.rmid, h.info);
      return {
        kind: v.kind,
        text: `pgRecord ${rmgr}/${type} xid ${h.xid} start ${formatLsn(v.recordLsn)} len ${h.totLen}${v.willInit ? ' will-init' : ''}`,
        json: { kind: 'pgRecord', rmgr, type, xid: h.xid, recordLsn: formatLsn(v.recordLsn), recordBytes: v.record.length, willInit: v.willInit },
      };
    }
    case 'clogSetStatus': {
      const status = CLOG_STATUS_NAMES[v.status] ?? `status ${v.status}`;
      const n = v.xids.length;
      const xids = n === 0 ? 'no xids' : n === 1 ? `xid ${v.xids[0]}` : `${n} xids ${v.xids[0]}..${v.xids[n - 1]}`;
      const ts = v.timestampUs === null ? null : pgTimestampText(v.timestampUs);
      return {
        kind: v.kind,
        text: `clogSetStatus ${status} ${xids}${ts === null ? '' : ` at ${ts}`}`,
        json: { kind: 'clogSetStatus', status, xidCount: n, xids: v.xids.slice(0, JSON_LIST_LIMIT), timestamp: ts },
      };
    }
    case 'clearVmBits':
      return {
        kind: v.kind,
        text: `clearVmBits flags 0x${v.flags.toString(16)} new heap blk ${blockText(v.newHeapBlock) ?? '-'}, old heap blk ${blockText(v.oldHeapBlock) ?? '-'}`,
        json: { kind: 'clearVmBits', flags: v.flags, newHeapBlock: blockText(v.newHeapBlock), oldHeapBlock: blockText(v.oldHeapBlock) },
      };
    case 'multixactOffset':
      return {
        kind: v.kind,
        text: `multixactOffset ${describeValue(v)}`,
        json: { kind: 'multixactOffset', multi: v.multi, offset: v.offset, ...(v.next === undefined ? {} : { next: v.next }) },
      };
    case 'multixactMembers':
      return {
        kind: v.kind,
        text: `multixactMembers ${describeValue(v)}`,
        json: { kind: 'multixactMembers', startOffset: v.startOffset, memberCount: v.members.length, members: v.members.slice(0, JSON_LIST_LIMIT) },
      };
  }
}

// ---------------------------------------------------------------------------------------------
// layer dump: verification pass.

export interface LayerVerification {
  entries: number;
  keys: number;
  indexBlocks: number;
  valueBytes: number;
  valueKinds: Partial<Record<Value['kind'], number>>;
}

function corrupt(reader: LayerFileReader, what: string, ref: LayerEntryRef | null): LayerCorruptionError {
  const where = ref === null ? '' : ` at ${describeKeyForError(ref.key)} LSN ${formatLsn(ref.lsn)}`;
  return new LayerCorruptionError(`layer file ${reader.path}${where}: ${what}`, { path: reader.path, ...(ref === null ? {} : { key: keyToHex(ref.key), lsn: formatLsn(ref.lsn) }) });
}

/** Decodes an entry's value (already CRC-checked by readValue); a failure is corruption. */
function decodeEntryValue(reader: LayerFileReader, ref: LayerEntryRef, bytes: Buffer): Value {
  try {
    return decodeValue(bytes);
  } catch (err) {
    throw corrupt(reader, `value passed its CRC but does not decode: ${(err as Error).message}`, ref);
  }
}

/**
 * Reads the whole file as the pageserver could and checks it against its summary: every index
 * block (CRC, header, order: LayerFileReader.indexEntries), every value (CRC, decodes, agrees with
 * the entry's willInit flag), keys and LSNs inside the summary's ranges, one entry per key at the
 * image LSN for images, the entry and key counts, and values stored back to back in entry order
 * filling the values region exactly. Throws LayerCorruptionError on the first problem.
 */
export function verifyLayer(reader: LayerFileReader): LayerVerification {
  const s: LayerSummary = reader.summary;
  const result: LayerVerification = { entries: 0, keys: 0, indexBlocks: s.indexBlockCount, valueBytes: 0, valueKinds: {} };
  let prevKey: Key | null = null;
  let nextOffset = s.valuesOffset;
  for (const ref of reader.indexEntries()) {
    if (++result.entries > s.entryCount) throw corrupt(reader, `more index entries than the summary's ${s.entryCount}`, ref);
    if (ref.key < s.keyRange.start || ref.key >= s.keyRange.end) throw corrupt(reader, 'key outside the layer\'s key range', ref);
    if (ref.lsn < s.lsnRange.start || ref.lsn >= s.lsnRange.end) throw corrupt(reader, `LSN outside the layer's LSN range ${lsnRangeText(s.kind, s.lsnRange.start, s.lsnRange.end)}`, ref);
    if (ref.key !== prevKey) {
      result.keys++;
      prevKey = ref.key;
    } else if (s.kind === 'image') {
      throw corrupt(reader, 'an image layer holds two entries for one key', ref);
    }
    if (ref.offset !== nextOffset) throw corrupt(reader, `value at offset ${ref.offset}, expected ${nextOffset} (values are stored back to back in entry order)`, ref);
    nextOffset += ref.length;
    const bytes = reader.readValue(ref);
    const v = decodeEntryValue(reader, ref, bytes);
    if (valueWillInit(v) !== ref.willInit) throw corrupt(reader, `index willInit flag (${ref.willInit}) disagrees with the ${v.kind} value`, ref);
    result.valueBytes += ref.length;
    result.valueKinds[v.kind] = (result.valueKinds[v.kind] ?? 0) + 1;
  }
  if (result.entries !== s.entryCount) throw corrupt(reader, `the index holds ${result.entries} entries, the summary says ${s.entryCount}`, null);
  if (result.keys !== s.keyCount) throw corrupt(reader, `the index holds ${result.keys} distinct keys, the summary says ${s.keyCount}`, null);
  if (result.valueBytes !== s.valuesLengthBytes) throw corrupt(reader, `the entries' values add up to ${result.valueBytes} bytes, the summary's values region is ${s.valuesLengthBytes}`, null);
  return result;
}

// ---------------------------------------------------------------------------------------------
// layer dump: output.

export interface DumpOptions {
  json?: boolean;
  /** Print at most this many entries (the whole file is verified regardless). */
  limit?: number;
}

export interface PagectlStreams {
  stdout: Writable;
  stderr: { write(s: string): unknown };
}

function summaryJson(reader: LayerFileReader, v: LayerVerification): Record<string, unknown> {
  const s = reader.summary;
  return {
    type: 'layer',
    file: reader.path,
    formatVersion: s.formatVersion,
    kind: s.kind,
    tenantId: s.tenantId,
    timelineId: s.timelineId,
    keyStart: keyToHex(s.keyRange.start),
    keyEnd: keyToHex(s.keyRange.end),
    keyStartDescription: describeKey(s.keyRange.start),
    keyEndDescription: describeKey(s.keyRange.end),
    lsnStart: formatLsn(s.lsnRange.start),
    lsnEnd: formatLsn(s.lsnRange.end),
    sizeBytes: s.fileSizeBytes,
    entryCount: s.entryCount,
    keyCount: s.keyCount,
    index: { blocks: s.indexBlockCount, offset: s.indexOffset, lengthBytes: s.indexLengthBytes, fenceLengthBytes: s.fenceLengthBytes },
    values: { offset: s.valuesOffset, lengthBytes: s.valuesLengthBytes, kinds: v.valueKinds },
    checksums: { verified: true, summary: 1, fence: 1, indexBlocks: v.indexBlocks, values: v.entries },
  };
}

function summaryText(reader: LayerFileReader, v: LayerVerification): string[] {
  const s = reader.summary;
  const kinds = Object.entries(v.valueKinds).map(([k, n]) => `${k} ${n}`).join(', ');
  const rows: [string, string][] = [
    ['layer file', reader.path],
    ['format version', String(s.formatVersion)],
    ['kind', s.kind],
    ['tenant', s.tenantId],
    ['timeline', s.timelineId],
    ['key range', `${keyToHex(s.keyRange.start)}-${keyToHex(s.keyRange.end)} (${describeKey(s.keyRange.start)} .. ${describeKey(s.keyRange.end)}, end exclusive)`],
    ['LSN range', s.kind === 'image' ? `${formatLsn(s.lsnRange.start)} (image)` : lsnRangeText(s.kind, s.lsnRange.start, s.lsnRange.end)],
    ['size', `${s.fileSizeBytes} bytes`],
    ['entries', `${s.entryCount} (${plural(s.keyCount, 'distinct key')})`],
    ['values', `${s.valuesLengthBytes} bytes at offset ${s.valuesOffset}${kinds === '' ? '' : `: ${kinds}`}`],
    ['index', `${plural(s.indexBlockCount, 'block')} of 8192 bytes at offset ${s.indexOffset}, fence ${s.fenceLengthBytes} bytes at offset ${s.fenceOffset}`],
    ['checksums', `verified: summary, fence, ${plural(v.indexBlocks, 'index block')}, ${plural(v.entries, 'value')}`],
  ];
  return rows.map(([k, val]) => `${k.padEnd(15)} ${val}`);
}

/**
 * `pagectl layer dump`: verifies the whole file, then prints its summary and entries (streamed,
 * bounded memory). Returns the exit status; errors before the first output line write nothing.
 */
export async function runLayerDump(file: string, opts: DumpOptions, io: PagectlStreams): Promise<number> {
  const st = await statOrFail(file);
  if (st.isDirectory()) throw new PagectlError(`${file} is a directory, expected a layer file`, { path: file });
  const reader = openReader(file, idsFromLayerPath(file));
  try {
    const verified = verifyLayer(reader);
    const out = new LineWriter(io.stdout);
    const limit = opts.limit ?? Infinity;
    let printed = 0;
    try {
      const head = opts.json ? [JSON.stringify(summaryJson(reader, verified))] : [...summaryText(reader, verified), '', 'key                                  LSN          size  value  |  key description'];
      for (const line of head) await out.line(line);
      for (const ref of reader.indexEntries()) {
        if (printed >= limit || !out.open) break;
        const v = decodeEntryValue(reader, ref, reader.readValue(ref));
        const d = describeLayerValue(ref.key, v);
        const line = opts.json
          ? JSON.stringify({ type: 'entry', key: keyToHex(ref.key), keyDescription: describeKey(ref.key), lsn: formatLsn(ref.lsn), sizeBytes: ref.length, value: d.json })
          : `${keyToHex(ref.key)} ${formatLsnPadded(ref.lsn).padEnd(12)} ${String(ref.length).padStart(5)}  ${d.text}  |  ${describeKey(ref.key)}`;
        printed++;
        const p = out.line(line);
        if (p !== null) await p;
      }
      const rest = verified.entries - printed;
      if (opts.json) {
        await out.line(JSON.stringify({ type: 'end', entries: verified.entries, printed, truncated: rest > 0 }));
      } else if (rest > 0 && out.open) {
        await out.line(`... ${plural(rest, 'more entry', 'more entries')} not shown (--limit ${opts.limit ?? ''})`);
      }
    } finally {
      await out.end();
    }
    return 0;
  } finally {
    reader.close();
  }
}

// ---------------------------------------------------------------------------------------------
// Wiring.

function reportError(err: unknown, io: PagectlStreams): number {
  if (err instanceof StrataError) {
    io.stderr.write(`strata pagectl: error: ${err.message}\n`);
    return err.code === 'invalid_input' ? 2 : 1;
  }
  if (isErrno(err)) {
    io.stderr.write(`strata pagectl: error: ${err.message}\n`);
    return 1;
  }
  throw err;
}

async function writeAll(lines: string[], out: Writable): Promise<void> {
  const w = new LineWriter(out);
  for (const line of lines) {
    if (!w.open) break;
    const p = w.line(line);
    if (p !== null) await p;
  }
  await w.end();
}

function parseLimit(text: string): number {
  if (!/^\d+$/.test(text) || !Number.isSafeInteger(Number(text))) throw new InvalidArgumentError('expected a non-negative integer');
  return Number(text);
}

const DUMP_HELP = `
Output: the layer's summary (format version, kind, tenant and timeline, key and LSN ranges, sizes,
index geometry, value kinds), then one line per entry in (key, LSN) order: key in hex, LSN, the
stored value's size in bytes, the value (image; pgRecord with resource manager/record type, xid,
start LSN; clogSetStatus; clearVmBits; multixact...), and the key described.

The whole file is verified before anything is printed (every index block and value CRC, every value
decoded, counts and ranges against the summary); a damaged file prints one error line and exits 1.
--limit only limits what is printed.

--json prints NDJSON (one JSON object per line), so that a large layer streams and each line can be
parsed on its own (jq -c, grep): first {"type":"layer",...} with the summary, then one
{"type":"entry",...} per entry, then {"type":"end","entries":N,"printed":M,"truncated":bool}.
LSNs are "X/X" strings, keys 36 hex digits.`;

const LIST_HELP = `
<dir> may be a pageserver work directory (<dir>/tenants/<tenant>/timelines/<timeline>/), a tenant
directory or a timeline directory. For each timeline: its disk_consistent_lsn and ancestor, then one
row per layer file (kind, LSN range, size, entries, distinct keys, key range), sorted by LSN; then a
total line. Each file's summary and fence are checked (not its index blocks and values: use
"layer dump"); any damaged or foreign file prints one error line and exits 1. Nothing is modified:
temporary files and layers beyond disk_consistent_lsn (marked *) are reported, not removed.
--json prints one JSON document.`;

/** Adds `pagectl layer list|dump` and `pagectl metadata` to the `strata` command line. */
export function registerPagectlCommands(program: Command, setExitCode: (n: number) => void, io: PagectlStreams = { stdout: process.stdout, stderr: process.stderr }): void {
  const pagectl = program
    .command('pagectl')
    .description('inspect pageserver files offline (layer files, timeline metadata); read-only');
  const layer = pagectl.command('layer').description('layer files: list them, dump one');

  layer
    .command('list')
    .description('list the layer files of every timeline under a work, tenant or timeline directory')
    .argument('<dir>', 'pageserver work directory, tenant directory or timeline directory')
    .option('--json', 'print one JSON document')
    .addHelpText('after', LIST_HELP)
    .action(async (dir: string, opts: { json?: boolean }) => {
      try {
        const listing = await listLayers(dir);
        const lines = opts.json ? [JSON.stringify(layerListingToJson(listing), null, 2)] : layerListingToText(listing);
        await writeAll(lines, io.stdout);
        setExitCode(0);
      } catch (err) {
        setExitCode(reportError(err, io));
      }
    });

  layer
    .command('dump')
    .description('print a layer file\'s summary and its entries (key, LSN, value kind, size)')
    .argument('<file>', 'a delta or image layer file')
    .option('--json', 'NDJSON: one JSON object per line (see below)')
    .option('--limit <n>', 'print at most n entries', parseLimit)
    .addHelpText('after', DUMP_HELP)
    .action(async (file: string, opts: { json?: boolean; limit?: number }) => {
      try {
        setExitCode(await runLayerDump(file, opts, io));
      } catch (err) {
        setExitCode(reportError(err, io));
      }
    });

  pagectl
    .command('metadata')
    .description('decode a timeline metadata file (512 bytes) and print its fields')
    .argument('<file>', 'the metadata file, or the timeline directory holding it')
    .option('--json', 'print one JSON object')
    .action(async (file: string, opts: { json?: boolean }) => {
      try {
        const info = await readMetadataFile(file);
        await writeAll(opts.json ? [JSON.stringify(metadataToJson(info), null, 2)] : metadataToText(info), io.stdout);
        setExitCode(0);
      } catch (err) {
        setExitCode(reportError(err, io));
      }
    });
}
