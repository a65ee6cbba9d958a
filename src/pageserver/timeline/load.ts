/**
 * Reopening a timeline directory after a restart (or a crash).
 *
 * The metadata file is the truth: `disk_consistent_lsn` says how much WAL is in layer files.
 * Everything else in the directory is checked against it:
 * - temporary files (`*.___temp`) are leftovers of writes that never completed: removed;
 * - layer files holding data beyond disk_consistent_lsn (a delta whose range ends after
 *   disk_consistent_lsn + 1, an image above it) were written by a flush whose metadata update
 *   never happened: removed, because ingestion resumes at disk_consistent_lsn and will write
 *   that range again;
 * - the L0 delta files must tile the LSN range from the timeline's first layer to
 *   disk_consistent_lsn + 1 with no gap (every flush writes one, even without values), and a
 *   branch's first layer starts right after its branch point: a missing file (lost disk block,
 *   operator mistake) would otherwise let reads find an older version and return it as current;
 * - every other layer file is opened (summary and index fence checked) and added to the map.
 *   A layer that fails its checks makes the timeline Broken with the reason, instead of serving
 *   reads that might need it.
 * Unknown files are left alone and logged.
 */
import { readdir, unlink } from 'node:fs/promises';
import path from 'node:path';
import { formatLsn } from '../../postgres/lsn.ts';
import { TEMP_SUFFIX, fsyncDir } from '../../util/durable.ts';
import { StrataError } from '../../util/errors.ts';
import { parseLayerFileName, type ParsedLayerFileName } from '../../storage/layerfile/format.ts';
import { openLayerFile } from './layerfiles.ts';
import type { Timeline } from './timeline.ts';

export interface LoadReport {
  layersLoaded: number;
  tempFilesRemoved: string[];
  futureLayersRemoved: string[];
  unknownFiles: string[];
}

/** Scans the timeline's directory into its layer map. The timeline is still Loading. */
export async function loadTimelineLayers(timeline: Timeline): Promise<LoadReport> {
  const report: LoadReport = { layersLoaded: 0, tempFilesRemoved: [], futureLayersRemoved: [], unknownFiles: [] };
  const dcl = timeline.diskConsistentLsn;
  const names = (await readdir(timeline.dir)).sort();
  const toOpen: { name: string; parsed: ParsedLayerFileName }[] = [];
  for (const name of names) {
    if (name === 'metadata') continue;
    if (name.endsWith(TEMP_SUFFIX)) {
      await unlink(path.join(timeline.dir, name));
      report.tempFilesRemoved.push(name);
      continue;
    }
    const parsed = parseLayerFileName(name);
    if (parsed === null) {
      report.unknownFiles.push(name);
      continue;
    }
    const future = parsed.kind === 'delta' ? parsed.lsnRange.end > dcl + 1n : parsed.lsnRange.start > dcl;
    if (future) {
      await unlink(path.join(timeline.dir, name));
      report.futureLayersRemoved.push(name);
      continue;
    }
    toOpen.push({ name, parsed });
  }
  if (report.tempFilesRemoved.length > 0 || report.futureLayersRemoved.length > 0) await fsyncDir(timeline.dir);

  toOpen.sort((a, b) => (a.parsed.lsnRange.start < b.parsed.lsnRange.start ? -1 : a.parsed.lsnRange.start > b.parsed.lsnRange.start ? 1 : 0));
  checkDeltaCoverage(timeline, toOpen.filter((t) => t.parsed.kind === 'delta'));
  for (const { name } of toOpen) {
    timeline.layers.addHistoric(openLayerFile(timeline, name));
    report.layersLoaded++;
  }
  for (const name of report.tempFilesRemoved) timeline.log.info('removed temporary file left by an interrupted write', { file: name });
  for (const name of report.futureLayersRemoved) {
    timeline.log.info('removed layer file beyond disk_consistent_lsn (its WAL will be ingested again)', { file: name, disk_consistent_lsn: formatLsn(dcl) });
  }
  for (const name of report.unknownFiles) timeline.log.warn('unknown file in timeline directory left alone', { file: name });
  return report;
}

/** Throws when the L0 deltas leave an LSN gap below disk_consistent_lsn (see the module comment). */
function checkDeltaCoverage(timeline: Timeline, deltas: { name: string; parsed: ParsedLayerFileName }[]): void {
  // `deltas` is sorted by start LSN.
  const fail = (what: string): never => {
    throw new StrataError('layer_missing', `timeline ${timeline.timelineId}: ${what}; refusing to serve reads that could skip it`, timeline.context());
  };
  const isBranch = timeline.ancestor !== null;
  if (deltas.length === 0) {
    if (isBranch && timeline.diskConsistentLsn > timeline.ancestorLsn) {
      fail(`no layer file holds the WAL from the branch point ${formatLsn(timeline.ancestorLsn)} to disk_consistent_lsn ${formatLsn(timeline.diskConsistentLsn)}`);
    }
    return;
  }
  const first = deltas[0]!.parsed.lsnRange.start;
  if (isBranch && first !== timeline.ancestorLsn + 1n) {
    fail(`the first layer file starts at ${formatLsn(first)}, not right after the branch point ${formatLsn(timeline.ancestorLsn)}`);
  }
  for (let i = 1; i < deltas.length; i++) {
    const prevEnd = deltas[i - 1]!.parsed.lsnRange.end;
    const start = deltas[i]!.parsed.lsnRange.start;
    if (start !== prevEnd) fail(`layer files leave the LSN range [${formatLsn(prevEnd)}, ${formatLsn(start)}) uncovered (between ${deltas[i - 1]!.name} and ${deltas[i]!.name})`);
  }
  const lastEnd = deltas[deltas.length - 1]!.parsed.lsnRange.end;
  if (lastEnd !== timeline.diskConsistentLsn + 1n) {
    fail(`the newest layer file ends at ${formatLsn(lastEnd)} but disk_consistent_lsn is ${formatLsn(timeline.diskConsistentLsn)}: layer files are missing`);
  }
}
