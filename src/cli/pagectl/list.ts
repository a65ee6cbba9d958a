/**
 * `pagectl layer list`: find the timelines under a work, tenant or timeline directory and list
 * every layer file with its ranges, size and entry count (summary checks only, no values read).
 */
import { readdir } from 'node:fs/promises';
import path from 'node:path';
import { formatLsn, type Lsn } from '../../postgres/lsn.ts';
import { keyToHex, type Key } from '../../storage/key.ts';
import { LayerCorruptionError, parseLayerFileName } from '../../storage/layerfile/format.ts';
import { METADATA_FILE_NAME, type TimelineMetadata } from '../../pageserver/metadata.ts';
import { TEMP_SUFFIX } from '../../util/durable.ts';
import { tryParseId } from '../../util/ids.ts';
import { MAX_LAYER_FILES, MAX_TIMELINES, PagectlError, fsErrorMessage, isErrno, lsnRangeText, openReader, statOrFail, statOrNull } from './common.ts';
import { readMetadataFile } from './metadata.ts';

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

export function plural(n: number, one: string, many = one + 's'): string {
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
